"""The label-free quality estimate against realized quality, side by side with NannyML's CBPE and
DLE on the same reference and analysis data, in one run.

    python -m bench.quality_estimate [--quick] [--json out.json]
    make bench-quality        # in .venv-nannyml, with NannyML (docs/quality.md)

Reference = the data the estimators are fitted on (the model's holdout); analysis = windows of
records with their true labels, scored by the same model. Per window: the realized metric
(scikit-learn on the true labels), mlpulse's estimate (``mlpulse.quality.estimate``: the sums of
the window's records, then the estimate) and NannyML's (``CBPE`` / ``DLE`` with the window as one
chunk), their absolute errors, and the time each takes per window. Scenarios:

- credit (binary, the example model trained as ``make bundle`` does, 20k rows): baseline windows;
  covariate shift (riskier applicants selected on their inputs, so P(y | x) is unchanged);
  concept drift (same inputs, a quarter of the repaying applicants relabelled as defaults).
- breast_cancer (binary) and digits (10 classes) from scikit-learn, logistic regression: one
  analysis window each.
- regression: diabetes (scikit-learn, ridge), and a heteroscedastic synthetic regression whose
  covariate shift moves inputs into its noisier region (NannyML's DLE, LightGBM, vs mlpulse's
  gradient-boosted expected loss).

NannyML is optional: without it importable the run compares mlpulse with realized quality only
and says so. Rounds interleave the two estimators. This is a measurement: it always exits 0.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.machine import machine, main_with_json
from mlpulse.bundle import load_bundle
from mlpulse.quality.estimate import (
    ClassificationEstimator,
    RegressionEstimator,
    load_for_bundle,
    realized_classification,
    realized_regression,
)
from mlpulse.schema import FeatureSchema, FeatureSpec

# NannyML sends usage statistics unless told not to; a benchmark sends nothing anywhere.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
try:
    import nannyml as nml
except ImportError:  # measured against realized quality only
    nml = None

INGEST: dict[str, float] = {}  # filled by run_classification


def timed(fn, rounds: int) -> tuple[Any, float]:
    """fn's result and its median time over ``rounds`` calls, seconds."""
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


# -- classification -----------------------------------------------------------------------------


def classification_frame(proba: np.ndarray, pred: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({f"p_{c}": proba[:, i] for i, c in enumerate(classes)})
    frame["y_pred"] = np.asarray(classes)[pred]
    frame["y_true"] = np.asarray(classes)[y]
    return frame


def nannyml_cbpe(classes, positive, reference: pd.DataFrame):
    binary = len(classes) == 2
    # NannyML's binary CBPE wants 0/1 labels and the positive class's probability.
    metrics = ["accuracy", "roc_auc", "f1", "precision", "recall"] if binary else ["accuracy", "f1", "precision",
                                                                                   "recall"]
    est = nml.CBPE(metrics=metrics, y_pred_proba=f"p_{positive}" if binary else {c: f"p_{c}" for c in classes},
                   y_pred="y_pred", y_true="y_true", chunk_size=len(reference),
                   problem_type="classification_binary" if binary else "classification_multiclass")
    return est.fit(_binary_labels(reference, positive) if binary else reference)


def _binary_labels(frame: pd.DataFrame, positive: str) -> pd.DataFrame:
    out = frame.copy()
    out["y_pred"] = (out["y_pred"] == positive).astype(int)
    out["y_true"] = (out["y_true"] == positive).astype(int)
    return out


def nannyml_values(result, metrics) -> dict[str, float]:
    """The estimated value of each metric in the (single-chunk) result."""
    df = result.filter(period="analysis").to_df()
    out = {}
    for m in metrics:
        if (m, "value") in df.columns:
            out[m] = float(df[(m, "value")].iloc[-1])
    return out


def compare_classification(name: str, classes, positive, est: ClassificationEstimator, cbpe, windows, rounds: int):
    """``windows``: (label, proba, pred, y) analysis windows."""
    rows = []
    whole = ("accuracy", "roc_auc") if positive else ("accuracy",)
    for label, proba, pred, y in windows:
        realized = realized_classification(classes, positive, y, pred, proba)
        ours, t_ours = timed(lambda p=proba, c=pred: {e.metric if not e.cls else f"{e.metric}|{e.cls}": e
                                                          for e in est.estimate(est.sums(p, c))}, rounds)
        row = {"data": name, "window": label, "rows": len(y)}
        for m in whole:
            e = ours[m]
            row[m] = {"realized": realized[f"{m}|"], "mlpulse": e.value, "mlpulse_band": [e.lower, e.upper],
                      "mlpulse_in_band": bool(e.lower <= realized[f"{m}|"] <= e.upper)}
        row["mlpulse_seconds"] = t_ours
        if cbpe is not None:
            frame = classification_frame(proba, pred, y, classes)
            if positive:
                frame = _binary_labels(frame, positive)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res, t_nml = timed(lambda f=frame: cbpe.estimate(f), rounds)
            nml_values = nannyml_values(res, whole)
            for m in whole:
                if m in nml_values:
                    row[m]["nannyml"] = nml_values[m]
            row["nannyml_seconds"] = t_nml
        rows.append(row)
    return rows


def credit_windows(quick: bool):
    from model_service.data import generate, rows_for_model, to_records
    from model_service.train import TRUSTED_TYPES, train

    tmp = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    train(tmp, rows=10_000 if quick else 20_000, seed=11)
    bundle = load_bundle(tmp, trusted=TRUSTED_TYPES)
    est = load_for_bundle(tmp, bundle.metadata, bundle.schema)
    pos = list(bundle.model.classes_).index("default")

    def score(frame):
        p = bundle.model.predict_proba(rows_for_model(to_records(frame)))[:, pos]
        return np.column_stack([1 - p, p]), (p >= 0.5).astype(int), frame["default"].to_numpy()

    size = 2000
    n_windows = 2 if quick else 3
    windows = []
    pool = generate(size * n_windows * 8, seed=202)
    for i in range(n_windows):
        windows.append((f"baseline {i + 1}", *score(pool.iloc[i * size:(i + 1) * size])))
    risk = 1 / (1 + np.exp(-(pool["interest_rate"] - 15) / 2 - 3 * (pool["credit_utilization"] - 0.5)))
    shifted = pool[np.random.default_rng(3).random(len(pool)) < risk.to_numpy()]
    for i in range(n_windows):
        windows.append((f"covariate shift {i + 1}", *score(shifted.iloc[i * size:(i + 1) * size])))
    rng = np.random.default_rng(4)
    for i in range(n_windows):
        proba, pred, y = score(pool.iloc[(n_windows + i) * size:(n_windows + i + 1) * size])
        windows.append((f"concept drift {i + 1}", proba, pred, np.where((y == 0) & (rng.random(len(y)) < 0.25), 1, y)))
    # The reference as NannyML sees it: the holdout the bundle's estimator was fitted on.
    from sklearn.model_selection import train_test_split

    df = generate(10_000 if quick else 20_000, seed=11)
    _, hold = train_test_split(df, test_size=0.2, random_state=11, stratify=df["default"])
    return bundle, est, score(hold), windows


def run_classification(quick: bool, rounds: int) -> list[dict]:
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    rows = []
    classes = ("no_default", "default")
    bundle, est, (hp, hpred, hy), windows = credit_windows(quick)
    INGEST.update(ingest_cost(bundle, quick))
    cbpe = nannyml_cbpe(classes, "default", classification_frame(hp, hpred, hy, classes)) if nml else None
    rows += compare_classification("credit", classes, "default", est, cbpe, windows, rounds)
    for loader in (load_breast_cancer, load_digits):
        x, y = loader(return_X_y=True)
        x_fit, x_rest, y_fit, y_rest = train_test_split(x, y, test_size=0.6, random_state=0)
        x_hold, x_live, y_hold, y_live = train_test_split(x_rest, y_rest, test_size=0.5, random_state=1)
        model = LogisticRegression(max_iter=5000, C=0.05).fit(x_fit, y_fit)
        cls = tuple(str(c) for c in model.classes_)
        positive = cls[1] if len(cls) == 2 else None
        hp, hpred = model.predict_proba(x_hold), np.searchsorted(model.classes_, model.predict(x_hold))
        est, _ = ClassificationEstimator.fit(cls, positive, hp, [cls[i] for i in hpred],
                                             [str(v) for v in y_hold])
        cbpe = nannyml_cbpe(cls, positive, classification_frame(hp, hpred, np.searchsorted(model.classes_, y_hold),
                                                                cls)) if nml else None
        live = (model.predict_proba(x_live), np.searchsorted(model.classes_, model.predict(x_live)),
                np.searchsorted(model.classes_, y_live))
        rows += compare_classification(loader.__name__.removeprefix("load_"), cls, positive, est, cbpe,
                                       [("holdout-like", *live)], rounds)
    return rows


# -- regression ---------------------------------------------------------------------------------


def compare_regression(name, schema, est: RegressionEstimator, dle, windows, rounds: int):
    rows = []
    cols = schema.names
    for label, records, pred, y in windows:
        realized = realized_regression(y - pred)
        ours, t_ours = timed(lambda r=records, p=pred: {e.metric: e for e in est.estimate(est.sums(r, p))}, rounds)
        row = {"data": name, "window": label, "rows": len(y), "mlpulse_seconds": t_ours}
        for m in ("mae", "rmse"):
            e = ours[m]
            row[m] = {"realized": realized[f"{m}|"], "mlpulse": e.value, "mlpulse_band": [e.lower, e.upper],
                      "mlpulse_in_band": bool(e.lower <= realized[f"{m}|"] <= e.upper)}
        if dle is not None:
            frame = regression_frame(cols, records, pred, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res, t_nml = timed(lambda f=frame: dle.estimate(f), rounds)
            for m, v in nannyml_values(res, ("mae", "rmse")).items():
                row[m]["nannyml"] = v
            row["nannyml_seconds"] = t_nml
        rows.append(row)
    return rows


def regression_frame(cols, records, pred, y) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=cols)
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].astype("category")
    frame["y_pred"], frame["y_true"] = pred, y
    return frame


def heteroscedastic(n, seed, low, high):
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, n)
    group = rng.choice(["a", "b"], n)
    y = 3 * x + rng.normal(0, 0.1 + 1.0 * x + 0.3 * (group == "b"), n)
    return [{"x": float(a), "g": str(g)} for a, g in zip(x, group)], 3 * x, y


def run_regression(rounds: int) -> list[dict]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    rows = []
    x, y = load_diabetes(return_X_y=True)
    x_fit, x_rest, y_fit, y_rest = train_test_split(x, y, test_size=0.6, random_state=2)
    x_hold, x_live, y_hold, y_live = train_test_split(x_rest, y_rest, test_size=0.5, random_state=3)
    model = Ridge(alpha=0.1).fit(x_fit, y_fit)
    schema = FeatureSchema(tuple(FeatureSpec(f"x{i}", "numeric", "float") for i in range(x.shape[1])))

    def recs(rows_):
        return [{f"x{i}": float(v) for i, v in enumerate(r)} for r in rows_]

    est, _ = RegressionEstimator.fit(schema, recs(x_hold), model.predict(x_hold), y_hold)
    dle = _dle(schema.names, regression_frame(schema.names, recs(x_hold), model.predict(x_hold), y_hold))
    rows += compare_regression("diabetes", schema, est, dle,
                               [("holdout-like", recs(x_live), model.predict(x_live), y_live)], rounds)
    schema = FeatureSchema((FeatureSpec("x", "numeric", "float"),
                            FeatureSpec("g", "categorical", "str", categories=("a", "b"))))
    hold, hp, hy = heteroscedastic(6000, 1, 0.0, 1.5)
    est, _ = RegressionEstimator.fit(schema, hold, hp, hy)
    dle = _dle(schema.names, regression_frame(schema.names, hold, hp, hy))
    windows = [("baseline", *heteroscedastic(2000, 7, 0.0, 1.0)),
               ("covariate shift", *heteroscedastic(2000, 8, 0.4, 1.4))]
    rows += compare_regression("heteroscedastic", schema, est, dle, windows, rounds)
    return rows


def _dle(cols, reference: pd.DataFrame):
    if nml is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nml.DLE(feature_column_names=list(cols), y_pred="y_pred", y_true="y_true", metrics=["mae", "rmse"],
                       chunk_size=len(reference)).fit(reference)


# -- exporter ingest ----------------------------------------------------------------------------


def ingest_cost(bundle, quick: bool) -> dict[str, float]:
    """Events/s through the file source's ingest with the estimate's batch hook and without it
    (the same bundle with its quality_estimator removed), interleaved rounds."""
    import datetime as dt
    import shutil

    from mlpulse.exporter.config import ExporterConfig
    from mlpulse.exporter.core import Exporter
    from model_service.data import generate, rows_for_model, to_records

    now = 1_767_225_600.0
    work = Path(tempfile.mkdtemp(prefix="bench-quality-ingest-"))
    plain = work / "plain"
    shutil.copytree(bundle.path, plain)
    (work / "events").mkdir()
    meta = json.loads((plain / "metadata.json").read_text())
    meta.pop("quality_estimator")
    (plain / "metadata.json").write_text(json.dumps(meta))
    records = to_records(generate(5000 if quick else 20_000, seed=9))
    p = bundle.model.predict_proba(rows_for_model(records))[:, list(bundle.model.classes_).index("default")]
    stamp = dt.datetime.fromtimestamp(now - 5, dt.UTC).isoformat()
    events = [{"event": "prediction", "@timestamp": stamp, "model": {"name": bundle.name, "version": bundle.version},
               "inputs": r, "prediction": {"value": float(q), "class": "default" if q >= 0.5 else "no_default",
                                           "probabilities": {"no_default": float(1 - q), "default": float(q)}}}
              for r, q in zip(records, p)]

    def exporter(path):
        cfg = ExporterConfig(events=str(work / "events" / "*.jsonl"), bundles=str(path), checkpoint="")
        cfg.validate()
        return Exporter(cfg, clock=lambda: now)

    times: dict[str, list[float]] = {"with estimate": [], "without": []}
    for _ in range(3):
        for name, path in (("with estimate", bundle.path), ("without", plain)):
            exp = exporter(path)
            t = time.perf_counter()
            for i in range(0, len(events), 1000):  # the tail's batches
                exp.source.ingest(events[i:i + 1000], now)
            times[name].append(time.perf_counter() - t)
    rates = {k: len(events) / statistics.median(v) for k, v in times.items()}
    rates["ratio"] = rates["with estimate"] / rates["without"]
    print(f"\nexporter ingest, {len(events)} events in batches of 1000: {rates['without']:.0f} events/s without "
          f"the estimate, {rates['with estimate']:.0f} with it (ratio {rates['ratio']:.2f})")
    return rates


# -- report -------------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        for m in ("accuracy", "roc_auc", "mae", "rmse"):
            if m not in row:
                continue
            cell = row[m]
            scenario = row["window"].rsplit(" ", 1)[0] if row["window"][-1].isdigit() else row["window"]
            key = f"{row['data']} {scenario} {m}"
            agg = out.setdefault(key, {"windows": 0, "mlpulse_abs_error": [], "nannyml_abs_error": [],
                                       "in_band": 0})
            agg["windows"] += 1
            agg["mlpulse_abs_error"].append(abs(cell["mlpulse"] - cell["realized"]))
            agg["in_band"] += int(cell["mlpulse_in_band"])
            if "nannyml" in cell:
                agg["nannyml_abs_error"].append(abs(cell["nannyml"] - cell["realized"]))
    for agg in out.values():
        for k in ("mlpulse_abs_error", "nannyml_abs_error"):
            agg[k] = float(np.mean(agg[k])) if agg[k] else None
    return out


def print_rows(rows: list[dict]) -> None:
    print(f"{'data':16} {'window':20} {'metric':9} {'realized':>9} {'mlpulse':>9} {'band':>17} {'nannyml':>9} "
          f"{'ms ours':>8} {'ms nml':>8}")
    for row in rows:
        for m in ("accuracy", "roc_auc", "mae", "rmse"):
            if m not in row:
                continue
            c = row[m]
            nml_v = f"{c['nannyml']:9.4f}" if "nannyml" in c else f"{'-':>9}"
            t_nml = f"{row['nannyml_seconds'] * 1e3:8.1f}" if "nannyml_seconds" in row else f"{'-':>8}"
            print(f"{row['data']:16} {row['window']:20} {m:9} {c['realized']:9.4f} {c['mlpulse']:9.4f} "
                  f"[{c['mlpulse_band'][0]:7.4f},{c['mlpulse_band'][1]:7.4f}] {nml_v} "
                  f"{row['mlpulse_seconds'] * 1e3:8.2f} {t_nml}")


def run(args) -> dict[str, Any]:
    rounds = 3 if args.quick else 5
    info = machine(["numpy", "scikit-learn", "pandas", "nannyml", "lightgbm"])
    print(json.dumps(info))
    if nml is None:
        print("NannyML is not importable here: mlpulse against realized quality only (make bench-quality "
              "installs it in .venv-nannyml)")
    rows = run_classification(args.quick, rounds) + run_regression(rounds)
    print_rows(rows)
    summary = summarize(rows)
    print(f"\n{'scenario':40} {'windows':>7} {'|err| mlpulse':>13} {'|err| nannyml':>13} {'in band':>7}")
    for key, agg in summary.items():
        nml_e = f"{agg['nannyml_abs_error']:13.4f}" if agg["nannyml_abs_error"] is not None else f"{'-':>13}"
        print(f"{key:40} {agg['windows']:7d} {agg['mlpulse_abs_error']:13.4f} {nml_e} "
              f"{agg['in_band']:4d}/{agg['windows']}")
    ours = [r["mlpulse_seconds"] for r in rows]
    theirs = [r["nannyml_seconds"] for r in rows if "nannyml_seconds" in r]
    print(f"\ntime per window, median: mlpulse {statistics.median(ours) * 1e3:.2f} ms"
          + (f", NannyML {statistics.median(theirs) * 1e3:.1f} ms" if theirs else ""))
    return {"machine": info, "rows": rows, "summary": summary, "ingest": INGEST, "nannyml": nml is not None}


def main(argv: list[str] | None = None) -> int:
    return main_with_json(run, __doc__, "smaller credit model and fewer windows and rounds", argv)


if __name__ == "__main__":
    sys.exit(main())
