"""A user's own model, end to end: bundled with ``mlpulse bundle create``, served with ``mlpulse
serve`` under gunicorn with 2 workers, driven with traffic holding missing values and unseen
categories, with the exporter running. For a binary classifier, a multiclass classifier and a
regressor, each fitted on a data set shipped with scikit-learn (plus one text column derived from
it, so categories are exercised): the metrics, event lines and drift series exist and are right."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.traffic import send
from tests.helpers import read_events, samples, value, wait_for

pytestmark = pytest.mark.integration
WINDOW = "1h"
N = 240  # records sent; 20 of them with a missing value, 12 with an unseen category


def with_text_column(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The data set plus a categorical column ``band`` (the tercile of ``source``)."""
    band = pd.qcut(frame[source], 3, labels=["low", "mid", "high"]).astype(str)
    return frame.assign(band=band)


def pipeline(frame: pd.DataFrame, estimator):
    numeric = [c for c in frame.columns if c not in ("band", "target")]
    pre = ColumnTransformer([
        ("num", SimpleImputer(), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore")), ["band"]),
    ])
    return make_pipeline(pre, estimator).fit(frame.drop(columns="target"), frame["target"])


CASES = {
    "binary": (lambda: with_text_column(load_breast_cancer(as_frame=True).frame.iloc[:, list(range(6)) + [30]],
                                        "mean area"), lambda: LogisticRegression(max_iter=5000)),
    "multiclass": (lambda: with_text_column(load_wine(as_frame=True).frame, "alcohol"),
                   lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0)),
    "regression": (lambda: with_text_column(load_diabetes(as_frame=True).frame, "bmi"), lambda: Ridge()),
}


def traffic(frame: pd.DataFrame, missing: str) -> list[dict]:
    rows = json.loads(frame.drop(columns="target").sample(N, replace=True, random_state=5).to_json(orient="records"))
    for r in rows[:20]:
        r[missing] = None
    for r in rows[20:32]:
        r["band"] = "never-seen"
    return rows


@pytest.mark.parametrize("task", list(CASES))
def test_own_model_bundled_served_and_watched(task, tmp_path):
    make_frame, make_estimator = CASES[task]
    frame = make_frame()
    model = pipeline(frame, make_estimator())
    frame.to_csv(tmp_path / "data.csv", index=False)
    sio.dump(model, tmp_path / "model.skops")
    bundle = tmp_path / "bundles" / task
    created = subprocess.run([sys.executable, "-m", "mlpulse", "bundle", "create", "--data", str(tmp_path / "data.csv"),
                              "--target", "target", "--model", str(tmp_path / "model.skops"), "--out", str(bundle),
                              "--name", f"own-{task}"], capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    assert f"task: {task}" in created.stdout and "band: categorical, 3 categories, nullable" in created.stdout

    missing = frame.columns[0]
    rows = traffic(frame, missing)
    port, exporter_port = free_port(), free_port()
    url, exporter = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{exporter_port}/metrics"
    ml = {"model": f"own-{task}", "version": "1"}
    with Stack() as stack:
        start_service(stack, service_env(bundle, tmp_path / "events", tmp_path / "mp", port, workers=2),
                      tmp_path / "service.log")
        start_exporter(stack, exporter_env(tmp_path / "events", bundle, exporter_port, MLPULSE_EXPORTER_MIN_COUNT="50",
                                           MLPULSE_EXPORTER_EVALUATE_EVERY="1s", MLPULSE_EXPORTER_POLL_EVERY="0.2s"),
                       tmp_path / "exporter.log")
        assert send(url, rows, batch=8, concurrency=4) == {200: N // 8}
        m = samples(requests.get(f"{url}/metrics", timeout=10).text)
        assert value(m, "mlpulse_records_total", outcome="scored", **ml) == N
        assert value(m, "mlpulse_input_missing_total", feature=missing, **ml) == 20
        assert value(m, "mlpulse_input_violations_total", feature="band", reason="unseen_category", **ml) == 12
        assert value(m, "mlpulse_prediction_count", **ml) == N
        if task == "regression":
            assert not [k for k in m if k[0] == "mlpulse_predicted_class_total"]
        else:
            classes = [str(c) for c in sorted(frame["target"].unique())]
            assert sum(value(m, "mlpulse_predicted_class_total", **{"class": c}, **ml) for c in classes) == N
        if task == "multiclass":
            assert value(m, "mlpulse_class_probability_count", **{"class": classes[0]}, **ml) == N

        events = read_events(tmp_path / "events")
        assert len(events) == N and all(e["event"] == "prediction" for e in events)
        predictions = [e["prediction"] for e in events]
        if task == "regression":
            assert all(set(p) == {"value"} and np.isfinite(p["value"]) for p in predictions)
        else:
            assert all(isinstance(p["class"], str) and p["class"] in classes for p in predictions)
            assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-9 for p in predictions)

        def evaluated(m):  # every record read and the window evaluated with all of them
            counts = [v for (name, lab), v in m.items() if name == "mlpulse_window_predictions"
                      and dict(lab).get("window") == WINDOW]
            return m if counts == [N] else None

        m = wait_for(lambda: evaluated(samples(requests.get(exporter, timeout=10).text)), 60, "the whole window")
        scored = {dict(lab)["feature"] for (name, lab), v in m.items()
                  if name == "mlpulse_drift_score" and dict(lab)["window"] == WINDOW}
        expected = set(frame.columns) - {"target"} | {"_prediction"}
        if task != "regression":
            expected.add("_predicted_class")
        assert scored == expected
        assert value(m, "mlpulse_drift_missing_ratio", feature=missing, window=WINDOW, **ml) == pytest.approx(20 / N)
        assert value(m, "mlpulse_drift_unseen_ratio", feature="band", window=WINDOW, **ml) == pytest.approx(12 / N)
        assert value(m, "mlpulse_window_predictions", window=WINDOW, **ml) == N
        assert value(m, "mlpulse_exporter_events_total", outcome="scored") == N
