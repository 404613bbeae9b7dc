"""Label-free estimate of a model's quality, fitted on the bundle's holdout at training time.

Classification (the idea of NannyML's CBPE, written here from the method): the predicted
probabilities are calibrated on the holdout (isotonic regression per class, one against the rest,
rows renormalised for more than two classes). If the calibrated probability of class k for a
record is p_k, the record is of class k with probability p_k, so the expected entries of the
confusion matrix are sums of p_k, and accuracy, precision, recall and F1 per class follow. ROC
AUC (binary) is the AUC of the scores binned on holdout quantiles with each bin holding p
expected positives and (1 - p) expected negatives.

Regression (the idea of NannyML's DLE): two gradient-boosted regressors, fitted on the holdout's
inputs and prediction, predict the record's absolute error and squared error; expected MAE is
the mean of the first, expected RMSE the square root of the mean of the second.

Everything the exporter needs per window is a vector of sums over records (``sums``), so the
sums of time slices add up to the sums of their window exactly and the estimate of a window
costs the same whatever its number of records.

The band (``Z`` = 95 %) adds two variances:
- sampling: given calibrated probabilities (or expected losses), how far the realized metric of
  this window's records scatters around its expectation (Bernoulli variances for the confusion
  entries, delta method for ratios, Hanley-McNeil for ROC AUC; var |e| = E e^2 - (E|e|)^2 and
  var e^2 = 2 (E e^2)^2, Gaussian errors, for regression);
- calibration: the part of the holdout's cross-fitted error (5 folds: fit on four, estimate the
  fifth, compare with the fifth's realized metric) that sampling does not explain, one constant
  per metric, recorded in the bundle.
It does not cover concept drift: when P(y | x) changes, calibrated probabilities are wrong in a
way no label-free method can see (docs/quality.md shows it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpulse.predictor import python_scalar
from mlpulse.schema import FeatureSchema, OutputSpec, label_key

VERSION = 1
Z = 1.959964  # two-sided 95 % band
FOLDS = 5  # cross-fitting folds for the calibration part of the band
AUC_BINS = 100  # quantile bins of the positive score for the binned ROC AUC
MIN_HOLDOUT = 100  # fewer holdout rows than this: no estimator (nothing to calibrate on)
ESTIMATOR_FILE = "quality_estimator.skops"  # regression only: the expected-loss models
# The only types the expected-loss file may hold beyond skops' defaults (written by us, loaded by
# the exporter without the deployment naming anything).
TRUSTED_TYPES = ("numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor")
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse")


class EstimatorError(Exception):
    """The bundle's quality_estimator is unreadable, of another version or altered."""


@dataclass(frozen=True)
class Estimate:
    metric: str
    cls: str  # "" for whole-model metrics
    value: float
    lower: float
    upper: float
    sampling_se: float  # standard error from sampling alone (without the calibration part)


def _key(metric: str, cls: str) -> str:
    return f"{metric}|{cls}"


# -- classification ---------------------------------------------------------------------------


class ClassificationEstimator:
    """Confidence-based estimate for a classifier with probabilities (binary or multiclass)."""

    method = "cbpe"

    def __init__(self, classes: Sequence[str], positive: str | None, calibration: list[tuple[np.ndarray, np.ndarray]],
                 auc_edges: np.ndarray | None, sigma: dict[str, float] | None = None):
        self.classes = tuple(classes)
        self.k = len(self.classes)
        self.binary = self.k == 2
        self.positive = self.classes.index(positive) if self.binary else None
        self.calibration = calibration  # binary: one curve (the positive class); else one per class
        self.auc_edges = auc_edges if self.binary else None
        self.sigma = dict(sigma or {})
        self.n_auc = len(auc_edges) + 1 if self.auc_edges is not None else 0
        self.width = 1 + 5 * self.k + 2 * self.n_auc

    # fitting -------------------------------------------------------------------------------

    @classmethod
    def _fit_curves(cls, classes, positive, proba, y_idx):
        from sklearn.isotonic import IsotonicRegression

        k = len(classes)
        targets = [classes.index(positive)] if k == 2 else range(k)
        curves = []
        for j in targets:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, j], y_idx == j)
            curves.append((np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)))
        edges = None
        if k == 2:
            score = proba[:, classes.index(positive)]
            edges = np.unique(np.quantile(score, np.linspace(0, 1, AUC_BINS + 1)[1:-1]))
        return curves, edges

    @classmethod
    def fit(cls, classes: Sequence[str], positive: str | None, proba: np.ndarray, predicted: Sequence[str],
            truth: Sequence[str], seed: int = 0) -> tuple[ClassificationEstimator, dict[str, Any]]:
        """Fit on the holdout: ``proba`` rows x classes (in ``classes`` order), the served predicted
        class and the true class as label text. Returns the estimator and its holdout check."""
        classes = tuple(classes)
        proba = np.asarray(proba, float)
        y_idx = _indices(truth, classes)
        pred_idx = _indices(predicted, classes)
        curves, edges = cls._fit_curves(classes, positive, proba, y_idx)
        est = cls(classes, positive, curves, edges)
        folds = np.random.default_rng(seed).permutation(len(y_idx)) % FOLDS
        pieces = []
        for f in range(FOLDS):
            train, test = folds != f, folds == f
            c, e = cls._fit_curves(classes, positive, proba[train], y_idx[train])
            part = cls(classes, positive, c, edges)  # same bins, so out-of-fold sums add up
            s = part.sums(proba[test], pred_idx[test])
            pieces.append((s, realized_classification(classes, positive, y_idx[test], pred_idx[test], proba[test])))
        est.sigma, check = _cross_fit_sigma(est, pieces)
        return est, check

    # evaluation ----------------------------------------------------------------------------

    def calibrated(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, float)
        if self.binary:
            x, y = self.calibration[0]
            p = np.interp(proba[:, self.positive], x, y)
            out = np.empty_like(proba)
            out[:, self.positive], out[:, 1 - self.positive] = p, 1.0 - p
            return out
        out = np.column_stack([np.interp(proba[:, j], x, y) for j, (x, y) in enumerate(self.calibration)])
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=np.full_like(out, 1.0 / self.k), where=total > 0)

    def sums(self, proba: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """The mergeable sums of records (raw probabilities, predicted class indices)."""
        out = np.zeros(self.width)
        if len(predicted) == 0:
            return out
        pc = self.calibrated(proba)
        onehot = np.asarray(predicted)[:, None] == np.arange(self.k)[None, :]
        var = pc * (1.0 - pc)
        out[0] = len(predicted)
        block = np.stack([onehot.sum(0), (pc * onehot).sum(0), (var * onehot).sum(0), pc.sum(0), var.sum(0)], axis=1)
        out[1:1 + 5 * self.k] = block.ravel()
        if self.n_auc:
            score = np.asarray(proba, float)[:, self.positive]
            b = np.searchsorted(self.auc_edges, score, side="right")
            base = 1 + 5 * self.k
            out[base:base + self.n_auc] = np.bincount(b, minlength=self.n_auc)
            out[base + self.n_auc:] = np.bincount(b, weights=pc[:, self.positive], minlength=self.n_auc)
        return out

    def estimate(self, sums: np.ndarray, min_count: int = 1) -> list[Estimate]:
        n = float(sums[0])
        if n < max(1, min_count):
            return []
        blk = np.asarray(sums[1:1 + 5 * self.k]).reshape(self.k, 5)
        npred, t, vt, p, vp = blk.T
        raw: list[tuple[str, str, float, float]] = [("accuracy", "", t.sum() / n, vt.sum() / n ** 2)]
        for j, cls in enumerate(self.classes):
            f, vf = p[j] - t[j], max(vp[j] - vt[j], 0.0)
            if npred[j] > 0:
                raw.append(("precision", cls, t[j] / npred[j], vt[j] / npred[j] ** 2))
            if p[j] > 0:
                raw.append(("recall", cls, t[j] / p[j], (f ** 2 * vt[j] + t[j] ** 2 * vf) / p[j] ** 4))
            d = npred[j] + p[j]
            if d > 0:
                raw.append(("f1", cls, 2 * t[j] / d, 4 * ((npred[j] + f) ** 2 * vt[j] + t[j] ** 2 * vf) / d ** 4))
        if self.n_auc:
            base = 1 + 5 * self.k
            counts, pos = sums[base:base + self.n_auc], sums[base + self.n_auc:]
            auc = _binned_auc(counts, pos)
            if auc is not None:
                raw.append(("roc_auc", "", *auc))
        out = []
        for metric, cls, value, var in raw:
            se = math.sqrt(max(var, 0.0))
            total = math.sqrt(se ** 2 + self.sigma.get(_key(metric, cls), 0.0) ** 2)
            out.append(Estimate(metric, cls, float(value), max(0.0, value - Z * total), min(1.0, value + Z * total), se))
        return out

    # storage -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "positive": self.classes[self.positive] if self.binary else None,
                "calibration": [{"class": self.classes[self.positive] if self.binary else self.classes[j],
                                 "x": x.tolist(), "y": y.tolist()} for j, (x, y) in enumerate(self.calibration)],
                "auc_edges": self.auc_edges.tolist() if self.auc_edges is not None else None,
                "calibration_sigma": self.sigma}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClassificationEstimator:
        curves = [(np.asarray(c["x"], float), np.asarray(c["y"], float)) for c in d["calibration"]]
        edges = np.asarray(d["auc_edges"], float) if d.get("auc_edges") is not None else None
        return cls(d["classes"], d.get("positive"), curves, edges, d.get("calibration_sigma"))


def _binned_auc(counts: np.ndarray, pos: np.ndarray) -> tuple[float, float] | None:
    """Expected ROC AUC of binned scores (ties in a bin count one half) and its Hanley-McNeil variance."""
    neg = counts - pos
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 1e-9 or n_neg <= 1e-9:
        return None
    below = np.cumsum(neg) - neg  # negatives in lower bins
    auc = float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + max(n_pos - 1, 0) * (q1 - auc ** 2) + max(n_neg - 1, 0) * (q2 - auc ** 2)) / (n_pos * n_neg)
    return auc, var


def _indices(labels: Sequence[Any], classes: tuple[str, ...]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(label_key(v) if not isinstance(v, str) else v, -1) for v in labels], dtype=int)


def realized_classification(classes: Sequence[str], positive: str | None, y_idx: np.ndarray, pred_idx: np.ndarray,
                            proba: np.ndarray) -> dict[str, float]:
    """The metrics the estimate stands for, on true labels: ``mlpulse.quality.realized``'s (the same
    computation the exporter runs on joined labels), keyed as the estimate keys them."""
    from mlpulse.quality.realized import realized

    output = OutputSpec(task="classification", classes=tuple(classes), positive_class=positive)
    names = np.array(list(classes), dtype=object)
    estimated = {"accuracy", "precision", "recall", "f1"} | ({"roc_auc"} if len(classes) == 2 else set())
    return {_key(metric, cls): value for metric, cls, value in realized(output, names[y_idx], names[pred_idx], proba)
            if metric in estimated}


# -- regression -------------------------------------------------------------------------------


def design_matrix(schema: FeatureSchema, records: Sequence[dict[str, Any]], predictions: Sequence[float]) -> np.ndarray:
    """Inputs + prediction as the expected-loss models see them: numbers as floats, categories as
    their index in the schema (NaN when missing or unseen), NaN for anything unusable."""
    cols = []
    for spec in schema.features:
        if spec.kind == "numeric":
            cols.append([_number(r.get(spec.name)) for r in records])
        else:
            lookup = {c: i for i, c in enumerate(spec.categories or ())}
            cols.append([lookup.get(r.get(spec.name), math.nan) if isinstance(r.get(spec.name), str) else math.nan
                         for r in records])
    cols.append([_number(v) for v in predictions])
    return np.array(cols, dtype=float).T.reshape(len(records), len(cols))


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v)


def _categorical_mask(schema: FeatureSchema) -> list[bool]:
    # HistGradientBoosting takes at most 255 categories per feature; beyond, the index is a number.
    return [s.kind == "categorical" and len(s.categories or ()) <= 254 for s in schema.features] + [False]


class RegressionEstimator:
    """Expected-loss estimate for a regressor: models of |error| and error^2 on inputs + prediction."""

    method = "dle"
    width = 5  # n, sum E|e|, sum E e^2, sum var|e|, sum (E e^2)^2

    def __init__(self, schema: FeatureSchema, models: dict[str, Any], sigma: dict[str, float] | None = None):
        self.schema, self.models, self.sigma = schema, models, dict(sigma or {})

    @staticmethod
    def _fit_models(schema: FeatureSchema, x: np.ndarray, err: np.ndarray, seed: int) -> dict[str, Any]:
        from sklearn.ensemble import HistGradientBoostingRegressor

        def model():
            return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
                                                 early_stopping=False, categorical_features=_categorical_mask(schema),
                                                 random_state=seed)

        return {"abs": model().fit(x, np.abs(err)), "sq": model().fit(x, err ** 2)}

    @classmethod
    def fit(cls, schema: FeatureSchema, records: Sequence[dict[str, Any]], predictions: Sequence[float],
            truth: Sequence[float], seed: int = 0) -> tuple[RegressionEstimator, dict[str, Any]]:
        x = design_matrix(schema, records, predictions)
        err = np.asarray(truth, float) - np.asarray(predictions, float)
        est = cls(schema, cls._fit_models(schema, x, err, seed))
        folds = np.random.default_rng(seed).permutation(len(err)) % FOLDS
        pieces = []
        for f in range(FOLDS):
            train, test = folds != f, folds == f
            part = cls(schema, cls._fit_models(schema, x[train], err[train], seed))
            pieces.append((part.sums_from_matrix(x[test]), realized_regression(err[test])))
        est.sigma, check = _cross_fit_sigma(est, pieces)
        return est, check

    def sums_from_matrix(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(self.width)
        if len(x) == 0:
            return out
        a = np.clip(self.models["abs"].predict(x), 0.0, None)
        s = np.maximum(self.models["sq"].predict(x), a ** 2)  # E e^2 >= (E|e|)^2
        out[:] = (len(x), a.sum(), s.sum(), (s - a ** 2).sum(), (s ** 2).sum())
        return out

    def sums(self, records: Sequence[dict[str, Any]], predictions: Sequence[float]) -> np.ndarray:
        return self.sums_from_matrix(design_matrix(self.schema, records, predictions))

    def estimate(self, sums: np.ndarray, min_count: int = 1) -> list[Estimate]:
        n, a, s, va, s2 = (float(v) for v in sums)
        if n < max(1, min_count):
            return []
        mse = s / n
        rmse = math.sqrt(mse)
        raw = [("mae", a / n, va / n ** 2), ("rmse", rmse, (2 * s2 / n ** 2) / (4 * mse) if mse > 0 else 0.0)]
        out = []
        for metric, value, var in raw:
            se = math.sqrt(max(var, 0.0))
            total = math.sqrt(se ** 2 + self.sigma.get(_key(metric, ""), 0.0) ** 2)
            out.append(Estimate(metric, "", value, max(0.0, value - Z * total), value + Z * total, se))
        return out


def realized_regression(err: np.ndarray) -> dict[str, float]:
    """MAE and RMSE of the errors (prediction minus truth), as ``mlpulse.quality.realized`` computes them."""
    from mlpulse.quality.realized import realized

    err = np.asarray(err, dtype=float)
    return {_key(metric, ""): value for metric, _cls, value in realized(OutputSpec(task="regression"), np.zeros(len(err)), err)
            if metric in ("mae", "rmse")}


# -- shared -----------------------------------------------------------------------------------


def _cross_fit_sigma(est, pieces: list[tuple[np.ndarray, dict[str, float]]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Per metric: the calibration standard deviation (cross-fitted squared error minus the
    sampling variance, never below 0), the cross-fitted mean absolute error, and the estimate on
    the whole holdout from the out-of-fold sums (the reference the alert compares with)."""
    errors: dict[str, list[tuple[float, float]]] = {}
    for sums, realized in pieces:
        for e in est.estimate(sums):
            k = _key(e.metric, e.cls)
            if k in realized:
                errors.setdefault(k, []).append((e.value - realized[k], e.sampling_se ** 2))
    sigma, check = {}, []
    for k, pairs in errors.items():
        d = np.array([p[0] for p in pairs])
        v = np.array([p[1] for p in pairs])
        sigma[k] = float(math.sqrt(max(float(np.mean(d ** 2) - np.mean(v)), 0.0)))
        metric, cls = k.split("|", 1)
        check.append({"metric": metric, "class": cls, "mean_abs_error": float(np.mean(np.abs(d))), "folds": len(d)})
    total = np.sum([p[0] for p in pieces], axis=0)
    reference = [{"metric": e.metric, "class": e.cls, "value": e.value} for e in est.estimate(total)]
    return sigma, {"cross_fit": check, "reference": reference}


# -- the bundle's record ----------------------------------------------------------------------


def fit_for_bundle(directory: str | Path, output: OutputSpec, schema: FeatureSchema,
                   records: Sequence[dict[str, Any]], truth: Sequence[Any], values: Sequence[float],
                   labels: Sequence[Any] | None, proba: np.ndarray | None, seed: int = 0) -> dict[str, Any]:
    """Fit the estimator on the holdout and return ``metadata["quality_estimator"]``; for
    regression also write ``ESTIMATOR_FILE`` into ``directory`` (before the metadata, which
    records its sha256). A model the estimate cannot serve gets a record saying why."""
    base = {"version": VERSION, "z": Z, "folds": FOLDS}
    if len(records) < MIN_HOLDOUT:
        return {**base, "method": None, "reason": f"holdout of {len(records)} rows, fewer than {MIN_HOLDOUT}"}
    if output.task == "classification":
        if proba is None or not output.probabilities:
            return {**base, "method": None, "reason": "the model gives labels only (no predict_proba): nothing to "
                    "calibrate, so no label-free estimate"}
        keys = output.class_keys
        positive = label_key(output.positive_class) if output.kind == "binary" else None
        est, check = ClassificationEstimator.fit(keys, positive, proba, [label_key(python_scalar(v)) for v in labels],
                                                 [label_key(python_scalar(v)) for v in truth], seed)
        return {**base, "method": est.method, **est.to_json(), **check}
    est, check = RegressionEstimator.fit(schema, records, values, truth, seed)
    import skops.io as sio

    path = Path(directory) / ESTIMATOR_FILE
    sio.dump(est.models, path)
    return {**base, "method": est.method, "file": ESTIMATOR_FILE,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "calibration_sigma": est.sigma, **check}


def load_for_bundle(directory: str | Path, metadata: dict[str, Any], schema: FeatureSchema):
    """The estimator a bundle records, or None (old bundle, or a model it cannot serve).
    Raises EstimatorError when the record is there but unusable."""
    record = metadata.get("quality_estimator")
    if not record or not record.get("method"):
        return None
    if record.get("version") != VERSION:
        raise EstimatorError(f"quality_estimator version {record.get('version')!r}, this library reads {VERSION}")
    try:
        if record["method"] == "cbpe":
            return ClassificationEstimator.from_json(record)
        if record["method"] == "dle":
            import skops.io as sio

            data = (Path(directory) / record["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise EstimatorError(f"{record['file']} does not match its sha256 in the metadata: altered")
            refused = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
            if refused:
                raise EstimatorError(f"{record['file']} holds types that are not trusted: {refused}")
            models = sio.loads(data, trusted=list(TRUSTED_TYPES))
            return RegressionEstimator(schema, models, record.get("calibration_sigma"))
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise EstimatorError(f"quality_estimator unreadable: {type(e).__name__}: {e}") from None
    raise EstimatorError(f"unknown quality_estimator method {record['method']!r}")


def reference_values(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The estimate on the whole holdout (out-of-fold): what a live estimate is compared with."""
    record = metadata.get("quality_estimator") or {}
    return list(record.get("reference") or []) if record.get("method") else []
