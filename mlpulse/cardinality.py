"""Label budgets: how many series one model version costs, computed from its bundle before it is
loaded, and whether it fits ([cardinality.md](../docs/cardinality.md)).

One function per side, both reading only the bundle's metadata, schema, output spec and reference
profile (never the model), so the service and the exporter refuse the same bundle for the same
reason, and the cardinality table of the docs is these formulas:

- ``service_series``: the model-labelled series one replica of the service exposes for the bundle
  (``mlpulse.metrics.model.ModelMetrics`` and ``mlpulse.metrics.feedback.FeedbackMetrics``);
- ``exporter_series``: the most series the exporter serves for the version over its windows
  (``mlpulse.exporter.core`` and ``mlpulse.exporter.quality``).

Both are upper bounds that full traffic reaches: every child the service creates exists from start,
and the exporter's series of a window are present once the window holds ``min_count`` values of
every feature. Nothing a client sends (unknown fields, unseen categories, forged model names) adds
a series on either side: unknown fields count under ``_unknown``, unseen categories in the
feature's own series, events of an unknown model version in one outcome counter.

``check`` raises ``BudgetError`` with a ``reason`` (one of ``REFUSALS``), which the exporter uses as
the ``reason`` label of ``mlpulse_exporter_bundle_errors_total``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlpulse.events import WRITE_ERROR_CAUSES
from mlpulse.metrics import bins
from mlpulse.profile import histogram_buckets
from mlpulse.quality import estimate
from mlpulse.quality.realized import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlpulse.schema import REASONS, FeatureSchema, OutputSpec

# Model names and versions become label values and file names: a bounded, plain alphabet.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_LABEL_TEXT = 128  # feature names and class texts, which are label values too
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Why a bundle is refused (the ``reason`` label); ``invalid`` is a bundle that does not load at all.
REFUSALS = ("invalid", "name", "version", "label", "classes", "series")
BUDGET_REFUSALS = REFUSALS[1:]  # the bundle loads but does not fit its label budget

# Series counts that do not depend on the bundle (kept beside the code that creates them).
INFERENCE_SAMPLES = 12 + 3  # mlpulse.metrics.model.INFERENCE_BUCKETS, +Inf, _sum, _count
BATCH_SAMPLES = 10 + 3  # BATCH_BUCKETS, +Inf, _sum, _count
DELAY_SAMPLES = 8 + 3  # mlpulse.exporter.quality.DELAY_BUCKETS, +Inf, _sum, _count
NUMERIC_SLOT = 12  # per window: values, missing ratio, 4 scores, 2 p-values, 2 adjusted, out of range, detected
CATEGORICAL_SLOT = 9  # per window: values, missing ratio, 3 scores, 1 p-value, 1 adjusted, unseen, detected
PER_WINDOW = 7  # drift share, features evaluated, window predictions, 4 prediction moments


class BudgetError(ValueError):
    """A bundle over its label budget; ``reason`` is one of ``BUDGET_REFUSALS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Budget:
    """Per model version. ``max_series`` applies to each side (one service replica, the exporter)."""

    max_series: int = 10_000
    max_classes: int = 100

    def __post_init__(self) -> None:
        if self.max_series < 1 or self.max_classes < 1:
            raise ValueError("max_series and max_classes must be at least 1")


def quality_metrics(output: OutputSpec, estimated: bool = False) -> int:
    """Quality (metric, class) pairs of a version at most: whole-model metrics plus precision,
    recall and f1 per class, realized (``mlpulse.quality.realized``) or estimated without labels
    (``mlpulse.quality.estimate``, fewer metrics)."""
    classification, regression = ((estimate.CLASSIFICATION_METRICS, estimate.REGRESSION_METRICS) if estimated
                                  else (CLASSIFICATION_METRICS, REGRESSION_METRICS))
    if output.task == "regression":
        return len(regression)
    return len(classification) - 3 + 3 * len(output.classes)


def service_series(schema: FeatureSchema, output: OutputSpec, profile: Mapping[str, Any], libraries: int,
                   request_error_reasons: int, feedback_reasons: int | None, bin_metrics: bool = False) -> int:
    """Model-labelled samples one service replica exposes under gunicorn (multiprocess: no
    ``_created``). ``libraries``: tracked libraries in the metadata; ``feedback_reasons``: None
    without the feedback endpoint; ``bin_metrics``: the per-bin counters are on
    (``MLPULSE_BIN_METRICS``, docs/prometheus-drift.md)."""
    features, classes = len(schema.names), len(output.classes)
    n = 3 + 2 * libraries  # info, trained, loaded; dependency info and mismatch per library
    n += INFERENCE_SAMPLES + BATCH_SAMPLES
    n += len(histogram_buckets(profile["prediction"]) or [0.0]) + 3  # prediction histogram
    if output.kind == "multiclass" and output.probabilities and "class_probability" in profile:
        n += classes * (len(histogram_buckets(profile["class_probability"]) or [0.0]) + 3)
    n += 2  # prediction squares, non-finite
    n += classes + 2  # predicted class; records scored, refused
    n += (features + 1) * len(REASONS) + features  # violations (with _unknown), missing
    n += request_error_reasons + len(WRITE_ERROR_CAUSES) + 1  # request errors, write errors, files lost
    if feedback_reasons is not None:
        n += 3 + feedback_reasons + 3  # labels by outcome, refusals by reason, ledger errors by operation
    if bin_metrics:
        n += sum(bins.series_bound(profile, schema))
    return n


def exporter_series(schema: FeatureSchema, output: OutputSpec, profile: Mapping[str, Any], windows: int,
                    quality_windows: int) -> int:
    """Series the exporter serves for one model version at most, over ``windows`` drift windows
    and ``quality_windows`` realized-quality windows (0: realized quality off)."""
    numeric = sum(1 for f in schema.names if profile["features"][f]["kind"] == "numeric")
    numeric += profile["prediction"]["kind"] == "numeric"
    categorical = len(schema.names) + 1 - numeric + ("predicted_class" in profile)
    k, k_estimated = quality_metrics(output), quality_metrics(output, estimated=True)
    n = windows * (NUMERIC_SLOT * numeric + CATEGORICAL_SLOT * categorical + PER_WINDOW)
    n += (3 * windows + 1) * k_estimated  # label-free estimate with its band, and its holdout reference
    if quality_windows:
        n += quality_windows * (k + 2) + k  # realized, labelled, labelled ratio; baseline
        n += DELAY_SAMPLES + 1  # label delay histogram, last label timestamp
    return n + 1  # mlpulse_exporter_reference_info


def check_labels(name: Any, version: Any, schema: FeatureSchema, output: OutputSpec, budget: Budget | None) -> None:
    """Name, version, feature names and class texts usable as label values; classes within
    ``budget`` (None: any number, as ``mlpulse bundle create`` checks: the budget is the operator's)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BudgetError("name", f"model name {str(name)[:80]!r} is not 1-64 of A-Z a-z 0-9 . _ - "
                                  "(starting with a letter or digit)")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise BudgetError("version", f"version {str(version)[:80]!r} is not 1-64 of A-Z a-z 0-9 . _ + - "
                                     "(starting with a letter or digit)")
    for kind, texts in (("feature", schema.names), ("class", output.class_keys)):
        for text in texts:
            if not text or len(text) > MAX_LABEL_TEXT or _CONTROL.search(text):
                raise BudgetError("label", f"{kind} {text[:80]!r} is not a usable label value (1 to "
                                           f"{MAX_LABEL_TEXT} characters, no control character)")
    if budget is not None and len(output.classes) > budget.max_classes:
        raise BudgetError("classes", f"{len(output.classes)} classes, over the budget of {budget.max_classes} "
                                     "class label values per model version")


def check(metadata: Mapping[str, Any], schema: FeatureSchema, output: OutputSpec, budget: Budget, series: int,
          side: str) -> None:
    """Refuse a bundle whose labels or ``series`` (one of the two functions above) exceed ``budget``."""
    check_labels(metadata.get("name"), metadata.get("version"), schema, output, budget)
    if series > budget.max_series:
        raise BudgetError("series", f"{metadata['name']} {metadata['version']}: {series} {side} series, over the "
                                    f"budget of {budget.max_series} per model version")


def check_service(metadata: Mapping[str, Any], schema: FeatureSchema, output: OutputSpec,
                  profile: Mapping[str, Any], budget: Budget, request_error_reasons: Sequence[str],
                  feedback_reasons: Sequence[str] | None, bin_metrics: bool = False) -> int:
    """The service's check at start-up; returns the bound."""
    n = service_series(schema, output, profile, len(metadata.get("libraries") or {}), len(request_error_reasons),
                       None if feedback_reasons is None else len(feedback_reasons), bin_metrics)
    check(metadata, schema, output, budget, n, "service")
    return n
