"""Realized quality: the metrics of labelled predictions, computed by scikit-learn's own functions.

One function, ``realized``, for the holdout baseline at training (``quality_baseline`` in the bundle)
and for the exporter's windows of joined labels, so both are the same computation. Names follow the
shared contract (``metric``, ``class`` labels; whole-model metrics have ``class=""``):

| task | metrics |
|---|---|
| classification | ``accuracy``; ``precision``, ``recall``, ``f1`` per class; with probabilities ``roc_auc`` (one-vs-rest for several classes), ``log_loss``, ``brier`` (binary), ``calibration_error`` |
| regression | ``mae``, ``rmse``, ``bias`` (mean of prediction minus truth: positive over-predicts) |

A metric the data cannot define (a class never predicted nor seen, one class only for ROC AUC) is
left out, never written as 0. ``calibration_error`` is the expected calibration error over
``CALIBRATION_BINS`` equal-width bins of the positive class's probability (binary) or of the top
class's confidence (several classes): sklearn's ``calibration_curve`` gives each bin's observed and
predicted frequency, weighted here by the bin's share of the records.

scikit-learn is imported when first needed: the exporter without it exports no realized quality
(said once in its log); the service extra and the ``quality`` extra install it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlpulse.schema import OutputSpec, label_key

CALIBRATION_BINS = 10
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier",
                          "calibration_error")
REGRESSION_METRICS = ("mae", "rmse", "bias")
# Metrics where a larger value is better (the others are errors); the alert compares in that sense.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc"})

Value = tuple[str, str, float]  # (metric, class, value)


def _calibration_error(hit: np.ndarray, prob: np.ndarray, n_bins: int) -> float:
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(hit, prob, n_bins=n_bins, strategy="uniform")
    # The same bins as calibration_curve (uniform edges, right-closed by searchsorted), for their weights.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], prob), minlength=n_bins)
    weights = counts[counts > 0] / len(prob)
    return float(np.sum(weights * np.abs(prob_true - prob_pred)))


def realized(output: OutputSpec, truth: Sequence[Any], predicted: Sequence[Any],
             probabilities: np.ndarray | None = None, n_bins: int = CALIBRATION_BINS) -> list[Value]:
    """The metrics of ``predicted`` against ``truth``. Classification: class labels as their text
    (``label_key``), ``probabilities`` rows in ``output.class_keys`` order (or None). Regression: numbers."""
    from sklearn import metrics as m

    if output.task == "regression":
        y, p = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
        if len(y) == 0:
            return []
        return [("mae", "", float(m.mean_absolute_error(y, p))),
                ("rmse", "", float(m.root_mean_squared_error(y, p))),
                ("bias", "", float(np.mean(p - y)))]
    keys = list(output.class_keys)
    y = np.array([label_key(v) for v in truth], dtype=object)
    p = np.array([label_key(v) for v in predicted], dtype=object)
    if len(y) == 0:
        return []
    out: list[Value] = [("accuracy", "", float(m.accuracy_score(y, p)))]
    precision, recall, f1, _support = m.precision_recall_fscore_support(y, p, labels=keys, zero_division=np.nan)
    for k, pr, rc, f in zip(keys, precision, recall, f1):
        out.extend((name, k, float(v)) for name, v in (("precision", pr), ("recall", rc), ("f1", f))
                   if np.isfinite(v))
    if probabilities is None:
        return out
    proba = np.asarray(probabilities, dtype=float)
    present = set(y)
    if output.kind == "binary":
        pos = keys.index(label_key(output.positive_class))
        hit = (y == keys[pos]).astype(int)
        if len(present) == 2:
            out.append(("roc_auc", "", float(m.roc_auc_score(hit, proba[:, pos]))))
        out.append(("brier", "", float(m.brier_score_loss(hit, proba[:, pos]))))
        out.append(("calibration_error", "", _calibration_error(hit, proba[:, pos], n_bins)))
    else:
        if present == set(keys):  # columns in sorted label order, as roc_auc_score requires
            order = np.argsort(np.array(keys, dtype=object))
            out.append(("roc_auc", "", float(m.roc_auc_score(y, proba[:, order], multi_class="ovr",
                                                               labels=sorted(keys)))))
        top = proba.argmax(axis=1)
        hit = (np.array(keys, dtype=object)[top] == y).astype(int)
        out.append(("calibration_error", "", _calibration_error(hit, proba[np.arange(len(top)), top], n_bins)))
    # log_loss reads the columns in sorted label order.
    order = np.argsort(np.array(keys, dtype=object))
    out.append(("log_loss", "", float(m.log_loss(y, proba[:, order], labels=sorted(keys)))))
    return out


def baseline_entries(values: list[Value]) -> list[dict[str, Any]]:
    """The bundle's ``quality_baseline``: ``[{"metric", "class", "value"}, ...]``."""
    return [{"metric": metric, "class": cls, "value": value} for metric, cls, value in values]
