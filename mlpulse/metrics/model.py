"""Model metrics: inference latency, batch size, the prediction distribution, classes, input quality,
model identity and staleness, and training-versus-serving library versions.

Labels are bounded by construction: model name and version (one bundle per process), feature
names from the schema, reasons from ``mlpulse.schema.REASONS``, classes from the output schema.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlpulse.bundle import library_versions
from mlpulse.events import WRITE_ERROR_CAUSES
from mlpulse.metrics.bins import BinMetrics
from mlpulse.profile import histogram_buckets
from mlpulse.schema import REASONS, UNKNOWN_FEATURE, FeatureSchema, OutputSpec, Violation

INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _timestamp(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


class ModelMetrics:
    def __init__(
        self,
        *,
        name: str,
        version: str,
        schema: FeatureSchema,
        output: OutputSpec,
        profile: dict[str, Any],
        trained_at: str,
        trained_libraries: dict[str, str],
        registry: CollectorRegistry | None,
        request_error_reasons: Sequence[str] = (),
        bin_metrics: bool = False,
    ):
        """``request_error_reasons``: the reasons the service refuses a request as a whole for; their
        series exist from the start (at 0). The service owns that list, not the library.
        ``bin_metrics``: also count every scored record in the reference profile's bins
        (``mlpulse.metrics.bins``, for drift computed by Prometheus)."""
        self.labels = {"model": name, "version": version}
        mv = ("model", "version")
        kw: dict[str, Any] = {"registry": registry}
        live = {"registry": registry, "multiprocess_mode": "livemax"}

        self.info = Gauge("mlpulse_model_info", "The model this worker serves (always 1)", mv, **live)
        self.trained = Gauge("mlpulse_model_trained_timestamp_seconds", "When the served model was trained, Unix seconds", mv, **live)
        self.loaded = Gauge("mlpulse_model_loaded_timestamp_seconds", "When a worker last loaded the model, Unix seconds", mv, **live)
        self.dependency = Gauge(
            "mlpulse_model_dependency_info",
            "Library versions at training and at serving (always 1)",
            mv + ("library", "trained", "serving"),
            **live,
        )
        self.mismatch = Gauge(
            "mlpulse_model_dependency_mismatch",
            "1 if a library's serving version differs from its training version, else 0",
            mv + ("library",),
            **live,
        )
        self.inference = Histogram("mlpulse_inference_duration_seconds", "Time in the model's predict call, per batch",
                                   mv, buckets=INFERENCE_BUCKETS, **kw)
        self.batch = Histogram("mlpulse_batch_size", "Records per scored batch", mv, buckets=BATCH_BUCKETS, **kw)
        self.prediction = Histogram(
            "mlpulse_prediction",
            "Prediction score per record (positive-class probability or regression value); buckets are the "
            "reference profile's quantile edges",
            mv,
            # A model without a score (labels only) has no edges: one bucket, never observed.
            buckets=histogram_buckets(profile["prediction"]) or [0.0],
            **kw,
        )
        # A multiclass model's probability of every class, bucketed by the reference's pooled class
        # probabilities (one bucket layout per metric, so one for all classes).
        self.class_probability = None
        if output.kind == "multiclass" and output.probabilities and "class_probability" in profile:
            self.class_probability = Histogram(
                "mlpulse_class_probability", "Probability the model gives each class, per record; buckets are the "
                "reference's quantile edges of all class probabilities", mv + ("class",),
                buckets=histogram_buckets(profile["class_probability"]) or [0.0], **kw)
        self.squares = Counter("mlpulse_prediction_squares", "Sum of squared prediction scores, for a windowed "
                               "standard deviation with mlpulse_prediction_sum and _count", mv, **kw)
        self.nonfinite = Counter("mlpulse_prediction_nonfinite", "Predictions that were NaN or infinite", mv, **kw)
        self.classes = Counter("mlpulse_predicted_class", "Scored records by predicted class", mv + ("class",), **kw)
        self.records = Counter("mlpulse_records", "Records received, by outcome (scored or refused)", mv + ("outcome",), **kw)
        self.violations = Counter("mlpulse_input_violations", "Input problems by feature and reason, in scored and "
                                  "refused records", mv + ("feature", "reason"), **kw)
        self.missing = Counter("mlpulse_input_missing", "Missing (null or absent) values by feature, in scored "
                               "records", mv + ("feature",), **kw)
        self.request_errors = Counter("mlpulse_request_errors", "Prediction requests refused as a whole, by reason",
                                      mv + ("reason",), **kw)
        self.event_errors = Counter("mlpulse_event_write_errors", "Prediction events that could not be written, by "
                                    "cause (disk_full, permission, io, encode)", mv + ("cause",), **kw)
        self.event_files_lost = Counter("mlpulse_event_files_lost", "Rotated event files deleted before every "
                                        "registered reader had read them, by cause (budget: the disk budget)",
                                        mv + ("cause",), **kw)

        # Children created up front: every series exists from the first scrape, so rate() and
        # absent-based rules work before the first bad record.
        self._inference = self.inference.labels(name, version)
        self._batch = self.batch.labels(name, version)
        self._prediction = self.prediction.labels(name, version)
        self._squares = self.squares.labels(name, version)
        self._nonfinite = self.nonfinite.labels(name, version)
        self._classes = {c: self.classes.labels(name, version, c) for c in output.class_keys}
        self._class_probability = [self.class_probability.labels(name, version, c) for c in output.class_keys] \
            if self.class_probability is not None else []
        self._records = {o: self.records.labels(name, version, o) for o in ("scored", "refused")}
        features = schema.names + [UNKNOWN_FEATURE]
        self._violations = {(f, r): self.violations.labels(name, version, f, r) for f in features for r in REASONS}
        self._missing = {f: self.missing.labels(name, version, f) for f in schema.names}
        self._request_errors = {r: self.request_errors.labels(name, version, r) for r in request_error_reasons}
        self._event_errors = {c: self.event_errors.labels(name, version, c) for c in WRITE_ERROR_CAUSES}
        self._event_files_lost = {c: self.event_files_lost.labels(name, version, c) for c in ("budget",)}
        self.bins = BinMetrics(name=name, version=version, schema=schema, output=output, profile=profile,
                               registry=registry) if bin_metrics else None
        self._trained_at = _timestamp(trained_at)
        self._trained_libraries = trained_libraries

    def mark_loaded(self) -> None:
        """Set the identity, staleness and dependency gauges; call in every worker after loading."""
        name, version = self.labels["model"], self.labels["version"]
        self.info.labels(name, version).set(1)
        self.trained.labels(name, version).set(self._trained_at)
        self.loaded.labels(name, version).set(time.time())
        serving = library_versions()
        for lib, trained in sorted(self._trained_libraries.items()):
            now = serving.get(lib, "absent")
            self.dependency.labels(name, version, lib, trained, now).set(1)
            self.mismatch.labels(name, version, lib).set(0 if now == trained else 1)

    def observe_inference(self, seconds: float, batch_size: int) -> None:
        self._inference.observe(seconds)
        self._batch.observe(batch_size)

    def observe_predictions(self, scores: Sequence[float] | None, classes: Sequence[str] | None = None,
                            probabilities: Any = None, *, count: int | None = None) -> None:
        """One scored batch: ``scores`` (None for a model without one), the predicted classes' texts,
        every class's probability (rows x classes, multiclass) and the number of records."""
        squares = 0.0
        for s in scores if scores is not None else ():
            s = float(s)
            if not math.isfinite(s):
                self._nonfinite.inc()
                continue
            self._prediction.observe(s)
            squares += s * s
        self._squares.inc(squares)
        for c in classes or ():
            self._classes[c].inc()
        if probabilities is not None and self._class_probability:
            for row in probabilities:
                for child, p in zip(self._class_probability, row):
                    child.observe(float(p))
        self._records["scored"].inc(count if count is not None else (len(scores) if scores is not None else 0))

    def observe_refused(self, n_records: int) -> None:
        self._records["refused"].inc(n_records)

    def observe_violations(self, violations: Iterable[Violation]) -> None:
        for v in violations:
            self._violations[(v.feature, v.reason)].inc()

    def observe_missing(self, values: dict[str, Any]) -> None:
        """One record's missing values (None), per feature."""
        self.observe_missing_batch([values])

    def observe_missing_batch(self, rows: Sequence[dict[str, Any]]) -> None:
        """``observe_missing`` for a batch: one increment per feature with missing values."""
        counts: dict[str, int] = {}
        for values in rows:
            for feature, value in values.items():
                if value is None:
                    counts[feature] = counts.get(feature, 0) + 1
        for feature, n in counts.items():
            self._missing[feature].inc(n)

    def observe_bins(self, rows: Sequence[dict[str, Any]], scores: Sequence[Any], classes: Sequence[Any]) -> None:
        """A scored batch in the reference bins (a no-op unless the bin metrics are on)."""
        if self.bins is not None:
            self.bins.observe_batch(rows, scores, classes)

    def observe_request_error(self, reason: str) -> None:
        """Count a refused request; a reason not declared up front gets its series now (reasons are
        the service's own constants, never client input, so the label stays bounded)."""
        child = self._request_errors.get(reason)
        if child is None:
            child = self._request_errors[reason] = self.request_errors.labels(*self.labels.values(), reason)
        child.inc()

    def observe_event_error(self, cause: str = "io", n: int = 1) -> None:
        self._event_errors[cause if cause in self._event_errors else "io"].inc(n)

    def observe_event_files_lost(self, cause: str, n: int) -> None:
        self._event_files_lost[cause].inc(n)
