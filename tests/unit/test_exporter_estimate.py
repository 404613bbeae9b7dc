"""The exporter's label-free estimate: per drift window, from per-slice sums fed by the file
source's batch hook, equal to the estimator run on the window's raw events; absent below
min_count and for bundles without an estimator; kept across a restart; regression bundles too."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from mlpulse.bundle import load_bundle, read_metadata
from mlpulse.bundle_create import create_bundle
from mlpulse.bundle_create import to_records as table_records
from mlpulse.quality.estimate import ESTIMATOR_FILE, load_for_bundle
from model_service.data import generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES
from tests.helpers import samples
from tests.unit.test_exporter import NOW, exporter_for

ML = {"model": "credit-default", "version": "1.0.0"}


@pytest.fixture(scope="module")
def model(bundle_dir):
    return load_bundle(bundle_dir, trusted=TRUSTED_TYPES).model


def stamp(ts):
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def events_for(model, n, seed, ts):
    """Scored events as the service logs them, with both class probabilities."""
    records = to_records(generate(n, seed=seed))
    p = model.predict_proba(rows_for_model(records))[:, list(model.classes_).index("default")]
    return [{"event": "prediction", "@timestamp": stamp(ts), "model": {"name": ML["model"], "version": ML["version"]}, "inputs": r,
             "prediction": {"value": float(q), "class": "default" if q >= 0.5 else "no_default",
                            "probabilities": {"no_default": float(1 - q), "default": float(q)}}}
            for r, q in zip(records, p)], p


def estimated(exporter, window, prefix="mlpulse_quality_estimated"):
    exporter.evaluate(NOW)
    m = samples(generate_latest(exporter.registry()).decode())
    return {(name, d["metric"], d["class"]): v for (name, lab), v in m.items()
            if name.startswith(prefix) and (d := dict(lab)).get("window", window) == window}


def test_window_estimate_equals_the_estimator_on_the_raw_events(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    recent, p1 = events_for(model, 1500, seed=1, ts=NOW - 30)  # in 5m, 1h and 24h
    older, p2 = events_for(model, 1500, seed=2, ts=NOW - 1800)  # in 1h and 24h
    exp.source.ingest(recent[:700])
    exp.source.ingest(recent[700:] + older)  # batches and slices split the records differently
    est = load_for_bundle(bundle_dir, read_metadata(bundle_dir), exp.references[("credit-default", "1.0.0")].schema)
    p = np.concatenate([p1, p2])
    want = {(e.metric, e.cls): e for e in est.estimate(est.sums(np.column_stack([1 - p, p]), (p >= 0.5).astype(int)))}
    got = estimated(exp, "1h")
    assert {k[1:] for k in got if k[0] == "mlpulse_quality_estimated"} == set(want)
    for (metric, cls), e in want.items():
        assert got[("mlpulse_quality_estimated", metric, cls)] == pytest.approx(e.value, rel=1e-9)
        assert got[("mlpulse_quality_estimated_lower", metric, cls)] == pytest.approx(e.lower, rel=1e-9)
        assert got[("mlpulse_quality_estimated_upper", metric, cls)] == pytest.approx(e.upper, rel=1e-9)
        assert e.lower <= e.value <= e.upper
    # The 5m window holds only the recent records; the holdout reference is served once per version.
    assert estimated(exp, "5m")[("mlpulse_quality_estimated", "accuracy", "")] != got[
        ("mlpulse_quality_estimated", "accuracy", "")]
    ref = estimated(exp, "", "mlpulse_quality_estimated_reference")
    assert ("mlpulse_quality_estimated_reference", "accuracy", "") in ref
    m = samples(generate_latest(exp.registry()).decode())
    assert m[("mlpulse_exporter_quality_records_total", frozenset({"outcome": "estimated"}.items()))] == 3000


def test_too_few_records_or_no_probabilities_leave_the_estimate_absent(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path, min_count=200)
    events, _ = events_for(model, 150, seed=3, ts=NOW - 10)
    bare = [{**e, "prediction": {k: v for k, v in e["prediction"].items() if k != "probabilities"}} for e in events]
    exp.source.ingest(events + bare)
    assert not any(k[0] == "mlpulse_quality_estimated" for k in estimated(exp, "1h"))
    m = samples(generate_latest(exp.registry()).decode())
    assert m[("mlpulse_exporter_quality_records_total", frozenset({"outcome": "no_probabilities"}.items()))] == 150


def test_an_old_bundle_without_estimator_loads_and_has_no_estimate(bundle_dir, tmp_path, model):
    old = tmp_path / "old"
    old.mkdir()
    for f in bundle_dir.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    meta = json.loads((old / "metadata.json").read_text())
    del meta["quality_estimator"]
    (old / "metadata.json").write_text(json.dumps(meta))
    exp = exporter_for(old, tmp_path)
    exp.source.ingest(events_for(model, 500, seed=4, ts=NOW - 10)[0])
    assert estimated(exp, "1h") == {}
    assert sum(exp.health.bundle_errors.values()) == 0


def test_estimate_survives_a_restart_from_the_checkpoint(bundle_dir, tmp_path, model):
    events, _ = events_for(model, 800, seed=5, ts=NOW - 20)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "predictions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    cp = str(tmp_path / "cp.json")
    first = exporter_for(bundle_dir, tmp_path, checkpoint=cp, start="beginning")
    first.poll()
    before = estimated(first, "1h")
    first.save_checkpoint()
    first.close()
    second = exporter_for(bundle_dir, tmp_path, checkpoint=cp, start="beginning")
    second.poll()  # nothing new: everything comes from the checkpoint
    assert estimated(second, "1h") == before and before


def test_a_regression_bundle_exports_expected_mae_and_rmse(tmp_path):
    frame = load_diabetes(as_frame=True).frame
    x = frame.drop(columns="target")
    model = LinearRegression().fit(x.iloc[:200], frame["target"].iloc[:200])
    out = tmp_path / "bundles" / "diabetes"
    create_bundle(out, model, frame.iloc[200:], "target", name="diabetes", version="1", holdout_fraction=0.9)
    meta = read_metadata(out)
    assert meta["quality_estimator"]["method"] == "dle" and (out / ESTIMATOR_FILE).exists()
    exp = exporter_for(out.parent, tmp_path, min_count=50)
    live = frame.iloc[:150]
    records = table_records(live, load_bundle(out).schema)
    pred = model.predict(pd.DataFrame.from_records(records, columns=x.columns))
    exp.source.ingest([{"event": "prediction", "@timestamp": stamp(NOW - 5), "model": {"name": "diabetes",
                        "version": "1"}, "inputs": r, "prediction": {"value": float(v)}} for r, v in zip(records, pred)])
    got = estimated(exp, "1h")
    assert {k[1] for k in got} == {"mae", "rmse"}
    assert got[("mlpulse_quality_estimated_lower", "mae", "")] < got[("mlpulse_quality_estimated", "mae", "")]
    # An altered expected-loss file is refused: counted, the version's drift still monitored.
    (out / ESTIMATOR_FILE).write_bytes((out / ESTIMATOR_FILE).read_bytes() + b"x")
    exp2 = exporter_for(out.parent, tmp_path, min_count=50)
    assert exp2.health.bundle_errors == {"invalid": 1} and ("diabetes", "1") in exp2.references
