"""The label-free estimate against the truth, on data where the truth is known: the synthetic
credit data (its model and holdout as training writes them) and data sets bundled with
scikit-learn. Realized quality is always scikit-learn's on the true labels.

Scenarios: baseline traffic (the estimate within a stated tolerance, the truth inside the band);
a covariate shift with the concept unchanged, made by selecting records on their inputs so that
P(y | x) is untouched by construction (the estimate tracks the realized change); a concept drift,
same inputs with changed truth (the estimate cannot see it: shown, as docs/quality.md says).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mlpulse.bundle import load_bundle
from mlpulse.quality.estimate import (
    ClassificationEstimator,
    EstimatorError,
    RegressionEstimator,
    load_for_bundle,
    realized_classification,
    realized_regression,
)
from mlpulse.schema import FeatureSchema, FeatureSpec
from model_service.data import SCHEMA, generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES, train

CLASSES = ("no_default", "default")


def by_key(estimates):
    return {f"{e.metric}|{e.cls}": e for e in estimates}


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    """The example model trained as `make bundle` does, on 20000 rows (holdout 4000)."""
    path = tmp_path_factory.mktemp("credit")
    train(path, rows=20_000, seed=11)
    bundle = load_bundle(path, trusted=TRUSTED_TYPES)
    return bundle, load_for_bundle(path, bundle.metadata, bundle.schema)


def score_credit(bundle, frame):
    """Raw probabilities (no_default, default), served class indices and true class indices."""
    p = bundle.model.predict_proba(rows_for_model(to_records(frame)))[:, list(bundle.model.classes_).index("default")]
    return np.column_stack([1 - p, p]), (p >= 0.5).astype(int), frame["default"].to_numpy()


def compare(est, proba, pred, y):
    estimates = by_key(est.estimate(est.sums(proba, pred)))
    realized = realized_classification(est.classes, est.classes[est.positive] if est.binary else None, y, pred, proba)
    return estimates, realized


def test_training_records_the_calibration_and_the_bundle_loads_it(credit):
    bundle, est = credit
    record = bundle.metadata["quality_estimator"]
    assert record["method"] == "cbpe" and record["version"] == 1 and isinstance(est, ClassificationEstimator)
    assert est.classes == CLASSES and est.classes[est.positive] == "default"
    json.dumps(record)  # JSON all the way
    # The out-of-fold estimate on the holdout is close to the holdout's realized accuracy.
    ref = {(r["metric"], r["class"]): r["value"] for r in record["reference"]}
    assert abs(ref[("accuracy", "")] - bundle.metadata["metrics"]["accuracy"]) < 0.01
    assert abs(ref[("roc_auc", "")] - bundle.metadata["metrics"]["roc_auc"]) < 0.02


def test_credit_baseline_within_tolerance_and_inside_the_band(credit):
    bundle, est = credit
    proba, pred, y = score_credit(bundle, generate(20_000, seed=101))
    estimates, realized = compare(est, proba, pred, y)
    assert set(estimates) == set(realized)  # every metric, both classes, ROC AUC
    for k, real in realized.items():
        e = estimates[k]
        assert e.lower <= real <= e.upper, (k, e, real)
    # The stated tolerance (docs/quality.md): accuracy and ROC AUC within 0.01, per class within 0.03.
    assert abs(estimates["accuracy|"].value - realized["accuracy|"]) < 0.01
    assert abs(estimates["roc_auc|"].value - realized["roc_auc|"]) < 0.01
    for k in realized:
        assert abs(estimates[k].value - realized[k]) < 0.03, k


def test_credit_covariate_shift_is_tracked(credit):
    """Riskier applicants (selected on their inputs only): more defaults, lower accuracy, and the
    estimate follows the realized drop."""
    bundle, est = credit
    pool = generate(60_000, seed=202)
    base = pool.iloc[:15_000]
    risk = 1 / (1 + np.exp(-(pool["interest_rate"] - 15) / 2 - 3 * (pool["credit_utilization"] - 0.5)))
    shifted = pool[np.random.default_rng(3).random(len(pool)) < risk.to_numpy()]
    assert len(shifted) > 5000
    e0, r0 = compare(est, *score_credit(bundle, base))
    e1, r1 = compare(est, *score_credit(bundle, shifted))
    drop = r0["accuracy|"] - r1["accuracy|"]
    assert drop > 0.05  # the shift really costs accuracy
    assert abs((e0["accuracy|"].value - e1["accuracy|"].value) - drop) < 0.015
    for k in ("accuracy|", "roc_auc|", "f1|default", "recall|default", "precision|default"):
        assert e1[k].lower <= r1[k] <= e1[k].upper, (k, e1[k], r1[k])


def test_credit_concept_drift_is_missed(credit):
    """Same inputs, changed truth (a quarter of the repaying applicants now default): realized
    accuracy falls, the estimate does not move and its band no longer holds the truth. Only
    labels reveal this (the realized metrics)."""
    bundle, est = credit
    frame = generate(20_000, seed=303)
    proba, pred, y = score_credit(bundle, frame)
    flipped = np.where((y == 0) & (np.random.default_rng(4).random(len(y)) < 0.25), 1, y)
    e0, r0 = compare(est, proba, pred, y)
    e1, r1 = compare(est, proba, pred, flipped)
    assert r0["accuracy|"] - r1["accuracy|"] > 0.15
    assert e1["accuracy|"].value == e0["accuracy|"].value  # nothing the estimate reads changed
    assert not e1["accuracy|"].lower <= r1["accuracy|"] <= e1["accuracy|"].upper


def test_sums_of_parts_are_the_sums_of_the_whole(credit):
    bundle, est = credit
    proba, pred, _ = score_credit(bundle, generate(3000, seed=5))
    parts = sum(est.sums(proba[i:i + 700], pred[i:i + 700]) for i in range(0, 3000, 700))
    np.testing.assert_allclose(parts, est.sums(proba, pred), rtol=1e-12)
    assert est.estimate(est.sums(proba[:10], pred[:10]), min_count=200) == []


# -- data sets bundled with scikit-learn ---------------------------------------------------------


def three_way(x, y, seed=0):
    """Model training, holdout (the estimator's) and analysis parts."""
    x_fit, x_rest, y_fit, y_rest = train_test_split(x, y, test_size=0.6, random_state=seed)
    x_hold, x_live, y_hold, y_live = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed + 1)
    return x_fit, y_fit, x_hold, y_hold, x_live, y_live


@pytest.mark.parametrize("loader", [load_breast_cancer, load_digits], ids=["breast_cancer", "digits"])
def test_real_classification_truth_inside_the_band(loader):
    x, y = loader(return_X_y=True)
    x_fit, y_fit, x_hold, y_hold, x_live, y_live = three_way(x, y)
    model = LogisticRegression(max_iter=5000, C=0.05).fit(x_fit, y_fit)
    classes = tuple(str(c) for c in model.classes_)
    positive = classes[1] if len(classes) == 2 else None
    est, check = ClassificationEstimator.fit(classes, positive, model.predict_proba(x_hold),
                                             [str(v) for v in model.predict(x_hold)], [str(v) for v in y_hold])
    assert {c["metric"] for c in check["cross_fit"]} >= {"accuracy", "precision", "recall", "f1"}
    pred = np.searchsorted(model.classes_, model.predict(x_live))
    proba = model.predict_proba(x_live)
    estimates, realized = compare(est, proba, pred, np.searchsorted(model.classes_, y_live))
    for k in ("accuracy|", "roc_auc|") if positive else ("accuracy|",):
        assert estimates[k].lower <= realized[k] <= estimates[k].upper, (k, estimates[k], realized[k])
        assert abs(estimates[k].value - realized[k]) < 0.05
    # A covariate shift by selection (the larger half of the first feature): still inside the band.
    keep = x_live[:, 0] > np.median(x_live[:, 0]) if positive else x_live[:, 10] > np.median(x_live[:, 10])
    e, r = compare(est, proba[keep], pred[keep], np.searchsorted(model.classes_, y_live[keep]))
    assert e["accuracy|"].lower <= r["accuracy|"] <= e["accuracy|"].upper


def test_diabetes_expected_loss_inside_the_band():
    x, y = load_diabetes(return_X_y=True)
    from sklearn.linear_model import Ridge

    x_fit, y_fit, x_hold, y_hold, x_live, y_live = three_way(x, y, seed=2)
    model = Ridge(alpha=0.1).fit(x_fit, y_fit)
    schema = FeatureSchema(tuple(FeatureSpec(f"x{i}", "numeric", "float") for i in range(x.shape[1])))

    def records(rows):
        return [{f"x{i}": float(v) for i, v in enumerate(r)} for r in rows]

    est, _ = RegressionEstimator.fit(schema, records(x_hold), model.predict(x_hold), y_hold)
    estimates = by_key(est.estimate(est.sums(records(x_live), model.predict(x_live))))
    realized = realized_regression(y_live - model.predict(x_live))
    for k in ("mae|", "rmse|"):
        assert estimates[k].lower <= realized[k] <= estimates[k].upper, (k, estimates[k], realized[k])


def heteroscedastic(n, seed, low=0.0, high=1.0):
    """y = 3x + noise whose spread grows with x, x uniform in [low, high) (the concept stays)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, n)
    group = rng.choice(["a", "b"], n)
    y = 3 * x + rng.normal(0, 0.1 + 1.0 * np.clip(x, 0, None) + 0.3 * (group == "b"), n)
    return [{"x": float(a), "g": g} for a, g in zip(x, group)], y


def test_expected_loss_tracks_a_covariate_shift_into_noisier_inputs():
    schema = FeatureSchema((FeatureSpec("x", "numeric", "float"), FeatureSpec("g", "categorical", "str",
                                                                              categories=("a", "b"))))

    def predict(recs):
        return np.array([3 * r["x"] for r in recs])  # the right concept: errors are pure noise

    # The holdout covers the inputs the shift moves to: trees do not extrapolate beyond it
    # (docs/quality.md, limits).
    hold, y_hold = heteroscedastic(6000, 1, 0.0, 1.5)
    est, _ = RegressionEstimator.fit(schema, hold, predict(hold), y_hold)
    results = {}
    for name, low in (("base", 0.0), ("shifted", 0.4)):
        recs, y = heteroscedastic(4000, 7, low, low + 1.0)
        e = by_key(est.estimate(est.sums(recs, predict(recs))))
        r = realized_regression(y - predict(recs))
        for k in ("mae|", "rmse|"):
            assert e[k].lower <= r[k] <= e[k].upper, (name, k, e[k], r[k])
        results[name] = (e["mae|"].value, r["mae|"])
    real_rise = results["shifted"][1] - results["base"][1]
    assert real_rise > 0.15 and abs((results["shifted"][0] - results["base"][0]) - real_rise) < 0.05


def test_bundle_without_a_record_has_no_estimator_and_a_bad_one_is_refused(credit):
    bundle, _ = credit
    meta = dict(bundle.metadata)
    meta.pop("quality_estimator")
    assert load_for_bundle(bundle.path, meta, bundle.schema) is None  # an old bundle still loads
    with pytest.raises(EstimatorError, match="version"):
        load_for_bundle(bundle.path, {"quality_estimator": {**bundle.metadata["quality_estimator"], "version": 99}},
                        bundle.schema)
    assert SCHEMA.names == bundle.schema.names


def test_bundle_create_records_an_estimator_per_task_and_says_why_labels_only_get_none(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import RidgeClassifier

    from mlpulse.bundle import read_metadata
    from mlpulse.bundle_create import create_bundle

    iris = load_iris(as_frame=True).frame
    x = iris.drop(columns="target")
    create_bundle(tmp_path / "iris", LogisticRegression(max_iter=2000).fit(x, iris["target"]), iris, "target",
                  holdout_fraction=0.7)
    record = read_metadata(tmp_path / "iris")["quality_estimator"]
    assert record["method"] == "cbpe" and record["classes"] == ["0", "1", "2"] and record["positive"] is None
    plan = create_bundle(tmp_path / "ridge", RidgeClassifier().fit(x, iris["target"]), iris, "target",
                         holdout_fraction=0.7)
    record = read_metadata(tmp_path / "ridge")["quality_estimator"]
    assert record["method"] is None and "labels only" in record["reason"]
    assert any("no label-free quality estimate" in n for n in plan.notes)
