"""The exporter: events in, binned windows, drift statistics out as Prometheus metrics.

``Exporter.poll`` has the source take in new events; ``Exporter.evaluate`` sums each window and computes the statistics of ``mlpulse.drift``;
``Exporter.collect`` serves the latest results. A statistic the window cannot support (fewer than
``min_count`` values) is an absent series, never a zero.

The windows come from a ``sources.Source`` (the event files, or Elasticsearch): the exporter asks
it for each model version's window and turns the counts into statistics the same way whatever
the source.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlpulse import cardinality, drift
from mlpulse.bundle import BundleError, load_reference
from mlpulse.durations import format_duration, parse_duration
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.quality import HELP as REALIZED_HELP
from mlpulse.exporter.quality import Join
from mlpulse.exporter.sources import Source, open_source
from mlpulse.exporter.windows import PREDICTION, Reference
from mlpulse.quality.estimate import EstimatorError, load_for_bundle, reference_values

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)


def _seconds(iso: str) -> float:
    """``trained_at`` as Unix seconds, so offsets and formats compare as instants; -inf if unreadable."""
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return -math.inf


@dataclass
class Health:
    evaluations: int = 0
    evaluation_seconds: float = 0.0
    last_evaluation: float = 0.0
    bundle_errors: dict[str, int] = field(default_factory=dict)  # by reason (mlpulse.cardinality.REFUSALS)


class Exporter:
    def __init__(self, config: ExporterConfig, clock=time.time, source: Source | None = None):
        self.config = config
        self.clock = clock
        self.windows = config.window_seconds()
        self.slice_seconds = parse_duration(config.slice)
        self.n_slices = int(round(max(self.windows) / self.slice_seconds)) + 1
        self.references: dict[Key, Reference] = {}
        self.trained_at: dict[Key, str] = {}
        self.retired: set[Key] = set()  # versions over max_versions_per_model, not loaded again
        self.budget = config.budget()
        self.estimate_reference: dict[Key, list[dict]] = {}  # the estimate on each bundle's holdout
        self._said_no_estimate = False
        self.health = Health()
        self.results: list[tuple[str, dict[str, str], float]] = []  # (metric, labels, value)
        self.source = source or open_source(config, self.slice_seconds, self.n_slices, clock)
        self.join = None  # realized quality: the file source hands it its batches
        if hasattr(self.source, "attach_join") and config.quality_window_seconds():
            self.join = Join(config.quality_window_seconds(), config.min_labels,
                             parse_duration(config.feedback_horizon), config.feedback_max_predictions,
                             config.feedback_max_pending)
        self.load_bundles(strict=True)
        if not self.references:
            raise BundleError(f"no bundle in {config.bundles!r} fits its label budget (see the log)")
        if self.join is not None:
            self.source.attach_join(self.join)

    # -- references ---------------------------------------------------------------------------

    def load_bundles(self, strict: bool = False) -> None:
        """Load every bundle not yet known. At start-up (strict) a bundle that does not load stops
        the exporter; later, it is logged and counted and the others keep working. A bundle over its
        label budget (``mlpulse.cardinality``) is refused and counted at any time, never fatal: one
        model's bundle must not stop the monitoring of the others. Each model keeps at most
        ``max_versions_per_model`` versions live, the most recently trained."""
        found: dict[Key, tuple] = {}
        for path in self.config.bundle_dirs():
            try:
                metadata, schema, output, profile = load_reference(path, pinned=self.config.bundle_digests or None)
                cardinality.check(metadata, schema, output, self.budget, self.series_bound(schema, output, profile),
                                  "exporter")
            except BundleError:
                if strict:
                    raise
                self._refused("invalid")
                log.exception("cannot load bundle %s", path)
                continue
            except cardinality.BudgetError as e:
                self._refused(e.reason)
                log.error("bundle %s refused (%s): %s", path, e.reason, e)
                continue
            key = (metadata["name"], metadata["version"])
            if key not in self.references and key not in self.retired and key not in found:
                found[key] = (path, metadata, schema, output, profile)
        self._retire_over_budget(found)
        for key, (path, metadata, schema, output, profile) in found.items():
            ref = Reference(key[0], key[1], schema, output, profile)
            self.references[key] = ref
            self.trained_at[key] = str(metadata.get("trained_at", ""))
            self.source.track(ref)
            self._track_estimate(path, metadata, ref)
            if self.join is not None:
                self.join.track(key[0], key[1], output, metadata)
            log.info("reference loaded for %s %s from %s", key[0], key[1], path)

    def series_bound(self, schema, output, profile) -> int:
        """The most series this exporter serves for a version with this bundle (its windows)."""
        return cardinality.exporter_series(schema, output, profile, len(self.windows),
                                           len(self.config.quality_window_seconds()) if self.join else 0)

    def _refused(self, reason: str) -> None:
        self.health.bundle_errors[reason] = self.health.bundle_errors.get(reason, 0) + 1

    def _retire_over_budget(self, found: dict[Key, tuple]) -> None:
        """Keep the ``max_versions_per_model`` most recently trained versions of each model (by
        ``trained_at``, then version text); the others are retired: a new bundle among them is not
        loaded, a loaded one stops being tracked and its series disappear at the next evaluation.
        A retired version is not loaded again until a restart; its events count as unknown_model."""
        trained = dict(self.trained_at)
        trained.update({k: str(v[1].get("trained_at", "")) for k, v in found.items()})
        by_model: dict[str, list[Key]] = {}
        for key in trained:
            by_model.setdefault(key[0], []).append(key)
        for keys in by_model.values():
            keys.sort(key=lambda k: (_seconds(trained[k]), k[1]), reverse=True)
            for key in keys[self.config.max_versions_per_model:]:
                self.retired.add(key)
                found.pop(key, None)
                if key in self.references:
                    self._untrack(key)
                log.warning("model %s version %s retired: over max_versions_per_model=%d", key[0], key[1],
                            self.config.max_versions_per_model)

    def _untrack(self, key: Key) -> None:
        ref = self.references.pop(key)
        self.trained_at.pop(key, None)
        self.estimate_reference.pop(key, None)
        self.source.untrack(ref)
        if self.join is not None:
            self.join.untrack(*key)

    def _track_estimate(self, path, metadata: dict, ref: Reference) -> None:
        """Hand the bundle's label-free estimator to the source, where it supports one (the file
        source; Elasticsearch does not yet: no estimate series, said once)."""
        track = getattr(self.source, "track_estimate", None)
        if track is None:
            if not self._said_no_estimate:  # once, not per bundle
                self._said_no_estimate = True
                log.info("%s: no label-free quality estimate from this source", self.source.describe())
            return
        try:
            estimator = load_for_bundle(path, metadata, ref.schema)
        except EstimatorError as e:  # the drift of this version is still monitored
            self._refused("invalid")
            log.error("label-free estimate of %s %s disabled: %s", ref.name, ref.version, e)
            estimator = None
        if estimator is not None:
            self.estimate_reference[(ref.name, ref.version)] = reference_values(metadata)
        track(ref, estimator)

    # -- ingestion ----------------------------------------------------------------------------

    def poll(self) -> int:
        """Have the source take in what arrived; returns events read."""
        return self.source.poll()

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> None:
        started = time.perf_counter()
        now = self.clock() if now is None else now
        results: list[tuple[str, dict[str, str], float]] = []
        for ref in self.references.values():
            for w in self.windows:
                window = self.source.window(ref, now, int(round(w / self.slice_seconds)))
                if window is not None:  # the source could not answer: the window's series are absent
                    results.extend(self._window_results(ref, *window, format_duration(w)))
                results.extend(self._estimate_results(ref, now, w))
            for r in self.estimate_reference.get((ref.name, ref.version), ()):
                results.append(("mlpulse_quality_estimated_reference", {"model": ref.name, "version": ref.version,
                                "metric": r["metric"], "class": r["class"]}, float(r["value"])))
        self.results = results
        if self.join is not None:
            self.join.evaluate(now, format_duration)
        self.health.evaluations += 1
        self.health.evaluation_seconds = time.perf_counter() - started
        self.health.last_evaluation = now

    def _window_results(self, ref: Reference, counts: np.ndarray, moments: dict[str, float], window: str):
        cfg = self.config
        base = {"model": ref.name, "version": ref.version, "window": window}
        out = []

        def emit(metric: str, labels: dict[str, str], value: float | None) -> None:
            if value is not None and math.isfinite(value):
                out.append((metric, {**base, **labels}, float(value)))

        evaluated: dict[str, drift.FeatureDrift] = {}
        for name, slot in ref.slots.items():
            cur = counts[slot.offset: slot.offset + slot.nbins]
            live_min = moments.get("min") if name == PREDICTION else None
            live_max = moments.get("max") if name == PREDICTION else None
            evaluated[name] = drift.evaluate_feature(ref.entries[name], cur, int(counts[slot.missing]),
                                                     min_count=cfg.min_count, live_min=live_min, live_max=live_max)
        names = list(evaluated)
        # Each test corrected across the model's features and outputs; the decision combines them.
        adjusted = drift.adjust_pvalues([evaluated[n].chi2_pvalue for n in names], cfg.correction)
        adjusted_ks = drift.adjust_pvalues([evaluated[n].ks_pvalue for n in names], cfg.correction)
        flags = {}
        for name, p_adj, ks_adj in zip(names, adjusted, adjusted_ks):
            r = evaluated[name]
            f = {"feature": name}
            emit("mlpulse_drift_window_values", f, r.count)
            emit("mlpulse_drift_missing_ratio", f, r.missing_ratio)
            if not r.scored:
                continue
            for score in drift.SCORES:
                emit("mlpulse_drift_score", {**f, "statistic": score.statistic}, getattr(r, score.attribute))
            for test, value in (("chi2", r.chi2_pvalue), ("ks", r.ks_pvalue)):
                emit("mlpulse_drift_pvalue", {**f, "test": test}, value)
            emit("mlpulse_drift_pvalue_adjusted", {**f, "test": "chi2", "correction": cfg.correction}, p_adj)
            emit("mlpulse_drift_pvalue_adjusted", {**f, "test": "ks", "correction": cfg.correction}, ks_adj)
            emit("mlpulse_drift_out_of_range_ratio", f, r.out_of_range_ratio)
            emit("mlpulse_drift_unseen_ratio", f, r.unseen_ratio)
            flag = drift.is_drifted(r, cfg.method, cfg.threshold or None, cfg.alpha if cfg.alpha < 1 else None,
                                    pvalue=p_adj, ks_pvalue=ks_adj, decision=cfg.decision)
            flags[name] = flag
            emit("mlpulse_drift_detected", f, float(flag))
        inputs = [flags.get(n) for n in ref.schema.names]
        emit("mlpulse_drift_share", {}, drift.drift_share(inputs))
        emit("mlpulse_drift_features_evaluated", {}, sum(1 for x in inputs if x is not None))
        emit("mlpulse_window_predictions", {}, moments.get("count", 0.0))
        if moments.get("count", 0) >= 1:
            for stat in ("mean", "std", "min", "max"):
                emit("mlpulse_window_prediction", {"statistic": stat}, moments[stat])
        return out

    def _estimate_results(self, ref: Reference, now: float, w: float):
        """The label-free estimate of one window with its band (mlpulse.quality.estimate)."""
        window = getattr(self.source, "estimate_window", None)
        estimates = window(ref, now, int(round(w / self.slice_seconds)), self.config.min_count) if window else None
        out = []
        base = {"model": ref.name, "version": ref.version, "window": format_duration(w)}
        for e in estimates or ():
            labels = {**base, "metric": e.metric, "class": e.cls}
            for metric, value in (("mlpulse_quality_estimated", e.value), ("mlpulse_quality_estimated_lower", e.lower),
                                  ("mlpulse_quality_estimated_upper", e.upper)):
                if math.isfinite(value):
                    out.append((metric, labels, float(value)))
        return out

    # -- checkpoint ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        self.source.save_checkpoint()

    # -- Prometheus ---------------------------------------------------------------------------

    def collect(self):
        families: dict[str, GaugeMetricFamily] = {}
        results = self.results if self.join is None else self.results + self.join.results
        for metric, labels, value in results:
            fam = families.get(metric)
            if fam is None:
                fam = families[metric] = GaugeMetricFamily(metric, METRIC_HELP[metric], labels=list(labels))
            fam.add_metric(list(labels.values()), value)
        yield from families.values()

        h = self.health
        if self.join is not None:
            yield from self.join.collect()
        yield from self.source.collect()
        errors = CounterMetricFamily("mlpulse_exporter_bundle_errors", "Bundles that could not be loaded (after "
                                     "start-up) or were refused over their label budget, by reason",
                                     labels=["reason"])
        for reason in cardinality.REFUSALS:
            errors.add_metric([reason], h.bundle_errors.get(reason, 0))
        yield errors
        yield GaugeMetricFamily("mlpulse_exporter_versions_retired", "Model versions not served because their model "
                                "has more than max_versions_per_model newer ones", value=len(self.retired))
        newest = self.source.newest_event
        if newest:
            yield GaugeMetricFamily("mlpulse_exporter_newest_event_timestamp_seconds",
                                    "Timestamp of the newest event read", value=newest)
            yield GaugeMetricFamily("mlpulse_exporter_lag_seconds", "Now minus the newest event's timestamp",
                                    value=max(0.0, self.clock() - newest))
        yield GaugeMetricFamily("mlpulse_exporter_evaluation_duration_seconds",
                                "Time the last evaluation of every window took", value=h.evaluation_seconds)
        yield GaugeMetricFamily("mlpulse_exporter_last_evaluation_timestamp_seconds",
                                "When the last evaluation finished", value=h.last_evaluation)
        refs = GaugeMetricFamily("mlpulse_exporter_reference_info", "Model versions with a loaded reference",
                                 labels=["model", "version", "trained_at"])
        for (name, version), ref in self.references.items():
            refs.add_metric([name, version, str(ref.profile.get("created_at", ""))], 1)
        yield refs

    def describe_source(self) -> str:
        return self.source.describe()

    def close(self) -> None:
        """Release the event source (open files, or the Elasticsearch transport)."""
        self.source.close()

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(self)
        return registry

    def describe(self):  # no fixed families: tells the registry not to call collect() at register time
        return []


METRIC_HELP = {
    "mlpulse_drift_score": "Drift effect size of a feature (or _prediction / _predicted_class) in a window",
    "mlpulse_drift_pvalue": "Raw p-value of a drift test (information: large windows make any p-value tiny)",
    "mlpulse_drift_pvalue_adjusted": "Two-sample chi-square or KS p-value corrected across the model's features",
    "mlpulse_drift_detected": "1 if the feature drifted in the window (by default: effect size over threshold and "
    "the drift test below alpha; see docs/drift-statistics.md)",
    "mlpulse_drift_share": "Share of evaluated input features that drifted in the window",
    "mlpulse_drift_features_evaluated": "Input features with enough values to be evaluated in the window",
    "mlpulse_drift_window_values": "Non-missing values of the feature in the window",
    "mlpulse_drift_missing_ratio": "Missing values over all values of the feature in the window",
    "mlpulse_drift_out_of_range_ratio": "Share of live values outside the training minimum and maximum",
    "mlpulse_drift_unseen_ratio": "Share of live values in categories training never saw",
    "mlpulse_quality_estimated": "Label-free estimate of a quality metric in the window (CBPE-like for classifiers, "
    "expected loss for regressors; docs/quality.md)",
    "mlpulse_quality_estimated_lower": "Lower end of the estimate's 95 % band (sampling and calibration)",
    "mlpulse_quality_estimated_upper": "Upper end of the estimate's 95 % band (sampling and calibration)",
    "mlpulse_quality_estimated_reference": "The estimate on the bundle's holdout (out-of-fold), what a window's "
    "estimate is compared with",
    "mlpulse_window_predictions": "Scored records in the window",
    "mlpulse_window_prediction": "Exact mean, std (population), min and max of the prediction score in the window",
    **REALIZED_HELP,  # realized quality: the join's per-window results (mlpulse.exporter.quality)
}
