"""The exporter: events in, binned windows, drift statistics out as Prometheus metrics.

``Exporter.ingest`` bins scored events into per-slice counts (``windows.Ring``) of their model
version; ``Exporter.evaluate`` sums each window and computes the statistics of ``mlpulse.drift``;
``Exporter.collect`` serves the latest results. A statistic the window cannot support (fewer than
``min_count`` values) is an absent series, never a zero.

With ``source = elasticsearch`` nothing is ingested: each window is one aggregation search over
the indexed events (``elastic_source``) giving the same counts and moments as the ring would, and
the same ``_window_results`` turns them into statistics.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlpulse import drift
from mlpulse.bundle import BundleError, load_reference
from mlpulse.events import EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.config import ExporterConfig, format_duration, parse_duration
from mlpulse.exporter.elastic_source import ElasticsearchSource
from mlpulse.exporter.tail import EventTail
from mlpulse.exporter.windows import PREDICTION, Reference, Ring

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)


@dataclass
class Health:
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("scored", "refused", "other", "unknown_model", "too_old", "invalid"), 0))
    newest_event: float = 0.0  # Unix seconds of the newest event read
    evaluations: int = 0
    evaluation_seconds: float = 0.0
    last_evaluation: float = 0.0
    bundle_errors: int = 0


def _timestamp(event: dict[str, Any]) -> float | None:
    try:
        return dt.datetime.fromisoformat(event["@timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class Exporter:
    def __init__(self, config: ExporterConfig, clock=time.time):
        self.config = config
        self.clock = clock
        self.windows = config.window_seconds()
        self.slice_seconds = parse_duration(config.slice)
        self.n_slices = int(round(max(self.windows) / self.slice_seconds)) + 1
        self.references: dict[Key, Reference] = {}
        self.rings: dict[Key, Ring] = {}
        self.health = Health()
        self.results: list[tuple[str, dict[str, str], float]] = []  # (metric, labels, value)
        self.elastic = ElasticsearchSource.from_config(config) if config.source == "elasticsearch" else None
        self.load_bundles(strict=True)
        if self.elastic is not None:
            return  # nothing to tail, no ring, no checkpoint
        self.tail = EventTail(config.events, start=config.start)
        if config.checkpoint:
            _state, extra = self.tail.load_checkpoint(config.checkpoint)
            self._restore_rings(extra.get("rings", {}))

    # -- references ---------------------------------------------------------------------------

    def load_bundles(self, strict: bool = False) -> None:
        """Load every bundle not yet known. At start-up (strict) a bad bundle stops the exporter;
        later, a bad new bundle is logged and counted and the others keep working."""
        for path in self.config.bundle_dirs():
            try:
                metadata, schema, output, profile = load_reference(path)
            except BundleError:
                if strict:
                    raise
                self.health.bundle_errors += 1
                log.exception("cannot load bundle %s", path)
                continue
            key = (metadata["name"], metadata["version"])
            if key in self.references:
                continue
            ref = Reference(key[0], key[1], schema, output, profile)
            self.references[key] = ref
            if self.elastic is None:
                self.rings[key] = Ring(ref.width, self.slice_seconds, self.n_slices)
            log.info("reference loaded for %s %s from %s", key[0], key[1], path)

    # -- ingestion ----------------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        oldest = now - max(self.windows)
        counts = self.health.events
        batches: dict[tuple[Key, int], tuple[list[int], list[float]]] = {}
        for e in events:
            kind = e.get("event")
            if kind not in (EVENT_SCORED, EVENT_REFUSED):
                counts["other"] += 1
                continue
            ts = _timestamp(e)
            model = e.get("model")
            if ts is None or not isinstance(model, dict):
                counts["invalid"] += 1
                continue
            self.health.newest_event = max(self.health.newest_event, ts)
            if kind == EVENT_REFUSED:
                counts["refused"] += 1
                continue
            key = (model.get("name"), model.get("version"))
            ref = self.references.get(key)
            if ref is None:  # counted, never guessed: its own bundle must be deployed
                counts["unknown_model"] += 1
                continue
            if ts <= oldest:
                counts["too_old"] += 1
                continue
            inputs = e.get("inputs")
            pred = e.get("prediction") or {}
            if not isinstance(inputs, dict) or not isinstance(pred, dict):
                counts["invalid"] += 1
                continue
            score = pred.get("value")
            ring = self.rings[key]
            batch = batches.get((key, ring.slice_of(ts)))
            if batch is None:
                batch = batches[(key, ring.slice_of(ts))] = ([], [])
            ref.bin_event(inputs, score, pred.get("class"), batch[0])
            if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
                batch[1].append(float(score))
            counts["scored"] += 1
        # One vectorised update per (model version, slice) instead of one per event.
        for (key, slice_id), (positions, scores) in batches.items():
            self.rings[key].add(slice_id, positions, scores)

    def poll(self) -> int:
        """Read what the files hold now (in bounded batches) and bin it; returns events read."""
        if self.elastic is not None:
            return 0  # Elasticsearch is searched at evaluation
        total = 0
        while True:
            events = self.tail.poll()
            self.ingest(events)
            total += len(events)
            if not self.tail.more:
                return total

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> None:
        started = time.perf_counter()
        now = self.clock() if now is None else now
        results: list[tuple[str, dict[str, str], float]] = []
        for key, ref in self.references.items():
            for w in self.windows:
                window = self._window(key, ref, now, int(round(w / self.slice_seconds)))
                if window is not None:  # a failed search: the window's series are absent
                    results.extend(self._window_results(ref, *window, format_duration(w)))
        if self.elastic is not None:
            self.health.newest_event = max(self.health.newest_event, self.elastic.newest_event)
        self.results = results
        self.health.evaluations += 1
        self.health.evaluation_seconds = time.perf_counter() - started
        self.health.last_evaluation = now

    def _window(self, key: Key, ref: Reference, now: float, n_slices: int):
        """(counts, moments) of the last ``n_slices`` slices: summed from the ring, or one search
        (None if it failed)."""
        if self.elastic is not None:
            return self.elastic.window(ref, now, self.slice_seconds, n_slices)
        ring = self.rings[key]
        return ring.window(ring.slice_of(now), n_slices)

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
        adjusted = drift.adjust_pvalues([evaluated[n].chi2_pvalue for n in names], cfg.correction)
        flags = {}
        for name, p_adj in zip(names, adjusted):
            r = evaluated[name]
            f = {"feature": name}
            emit("mlpulse_drift_window_values", f, r.count)
            emit("mlpulse_drift_missing_ratio", f, r.missing_ratio)
            if not r.scored:
                continue
            for stat, value in (("psi", r.psi), ("js_distance", r.js), ("ks_statistic", r.ks_stat),
                                ("wasserstein_norm", r.wasserstein_norm), ("linf", r.linf)):
                emit("mlpulse_drift_score", {**f, "statistic": stat}, value)
            for test, value in (("chi2", r.chi2_pvalue), ("ks", r.ks_pvalue)):
                emit("mlpulse_drift_pvalue", {**f, "test": test}, value)
            emit("mlpulse_drift_pvalue_adjusted", {**f, "test": "chi2", "correction": cfg.correction}, p_adj)
            emit("mlpulse_drift_out_of_range_ratio", f, r.out_of_range_ratio)
            emit("mlpulse_drift_unseen_ratio", f, r.unseen_ratio)
            flag = drift.is_drifted(r, cfg.method, cfg.threshold or None,
                                    cfg.alpha if cfg.alpha < 1 else None, pvalue=p_adj)
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

    # -- checkpoint ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if not self.config.checkpoint or self.elastic is not None:
            return
        rings = {}
        for (name, version), ring in self.rings.items():
            buf = io.BytesIO()
            np.savez_compressed(buf, **ring.state())
            rings[f"{name}\x1f{version}"] = base64.b64encode(buf.getvalue()).decode()
        self.tail.save_checkpoint(self.config.checkpoint, {"rings": rings, "slice": self.slice_seconds})

    def _restore_rings(self, rings: dict[str, str]) -> None:
        for key_text, blob in rings.items():
            key = tuple(key_text.split("\x1f", 1))
            ring = self.rings.get(key)  # type: ignore[arg-type]
            if ring is None:
                continue
            try:
                with np.load(io.BytesIO(base64.b64decode(blob))) as data:
                    ring.restore({k: data[k] for k in data.files})
            except (ValueError, OSError, KeyError) as e:
                log.warning("window counts of %s not restored: %s", key, e)

    # -- Prometheus ---------------------------------------------------------------------------

    def collect(self):
        families: dict[str, GaugeMetricFamily] = {}
        for metric, labels, value in self.results:
            fam = families.get(metric)
            if fam is None:
                fam = families[metric] = GaugeMetricFamily(metric, METRIC_HELP[metric], labels=list(labels))
            fam.add_metric(list(labels.values()), value)
        yield from families.values()

        h = self.health
        if self.elastic is None:
            yield from self._collect_files()
        else:
            yield from self._collect_elasticsearch()
        yield CounterMetricFamily("mlpulse_exporter_bundle_errors", "Bundles found after start-up that could not "
                                  "be loaded", value=h.bundle_errors)
        if h.newest_event:
            yield GaugeMetricFamily("mlpulse_exporter_newest_event_timestamp_seconds",
                                    "Timestamp of the newest event read", value=h.newest_event)
            yield GaugeMetricFamily("mlpulse_exporter_lag_seconds", "Now minus the newest event's timestamp",
                                    value=max(0.0, self.clock() - h.newest_event))
        yield GaugeMetricFamily("mlpulse_exporter_evaluation_duration_seconds",
                                "Time the last evaluation of every window took", value=h.evaluation_seconds)
        yield GaugeMetricFamily("mlpulse_exporter_last_evaluation_timestamp_seconds",
                                "When the last evaluation finished", value=h.last_evaluation)
        refs = GaugeMetricFamily("mlpulse_exporter_reference_info", "Model versions with a loaded reference",
                                 labels=["model", "version", "trained_at"])
        for (name, version), ref in self.references.items():
            refs.add_metric([name, version, str(ref.profile.get("created_at", ""))], 1)
        yield refs

    def _collect_files(self):
        h, stats = self.health, self.tail.stats
        events = CounterMetricFamily("mlpulse_exporter_events", "Events read, by what became of them",
                                     labels=["outcome"])
        for outcome, n in h.events.items():
            events.add_metric([outcome], n)
        yield events
        malformed = CounterMetricFamily("mlpulse_exporter_malformed_lines", "Lines skipped, by kind",
                                        labels=["kind"])
        for kind, n in {**stats.malformed, "oversize": stats.oversize}.items():
            malformed.add_metric([kind], n)
        yield malformed
        yield CounterMetricFamily("mlpulse_exporter_bytes_read", "Bytes read from event files", value=stats.bytes_read)
        yield CounterMetricFamily("mlpulse_exporter_truncations", "Event files that shrank or were rewritten",
                                  value=stats.truncations)
        yield CounterMetricFamily("mlpulse_exporter_read_errors", "Errors reading event files",
                                  value=stats.read_errors)
        yield GaugeMetricFamily("mlpulse_exporter_files_tracked", "Event files open", value=stats.files_tracked)
        yield GaugeMetricFamily("mlpulse_exporter_events_dir_missing", "1 if the events directory was missing at "
                                "the last listing", value=float(stats.missing_dir))

    def _collect_elasticsearch(self):
        es = self.elastic
        yield CounterMetricFamily("mlpulse_exporter_elasticsearch_searches", "Window searches sent to Elasticsearch",
                                  value=es.searches)
        errors = CounterMetricFamily("mlpulse_exporter_elasticsearch_errors", "Window searches that gave no window "
                                     "(its series absent), by kind", labels=["kind"])
        for kind, n in es.errors.items():
            errors.add_metric([kind], n)
        yield errors

    def describe_source(self) -> str:
        if self.elastic is not None:
            return f"searching {self.config.elasticsearch_url} index {self.config.elasticsearch_index}"
        return f"tailing {self.config.events}"

    def close(self) -> None:
        """Release the event source (open files, or the Elasticsearch transport)."""
        (self.elastic if self.elastic is not None else self.tail).close()

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(self)
        return registry

    def describe(self):  # no fixed families: tells the registry not to call collect() at register time
        return []


METRIC_HELP = {
    "mlpulse_drift_score": "Drift effect size of a feature (or _prediction / _predicted_class) in a window",
    "mlpulse_drift_pvalue": "Raw p-value of a drift test (information: large windows make any p-value tiny)",
    "mlpulse_drift_pvalue_adjusted": "Chi-square p-value corrected across the model's features",
    "mlpulse_drift_detected": "1 if the feature drifted in the window (effect size over threshold, p below alpha)",
    "mlpulse_drift_share": "Share of evaluated input features that drifted in the window",
    "mlpulse_drift_features_evaluated": "Input features with enough values to be evaluated in the window",
    "mlpulse_drift_window_values": "Non-missing values of the feature in the window",
    "mlpulse_drift_missing_ratio": "Missing values over all values of the feature in the window",
    "mlpulse_drift_out_of_range_ratio": "Share of live values outside the training minimum and maximum",
    "mlpulse_drift_unseen_ratio": "Share of live values in categories training never saw",
    "mlpulse_window_predictions": "Scored records in the window",
    "mlpulse_window_prediction": "Exact mean, std (population), min and max of the prediction score in the window",
}
