"""Label budgets (mlpulse.cardinality): the bound of a model version's series computed from its
bundle, checked against what the exporter serves under full and hostile traffic; bundles over
budget refused and counted by reason, on the exporter and the service alike; versions beyond
max_versions_per_model retired with their series."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil

import pytest
from prometheus_client import generate_latest

from mlpulse import cardinality
from mlpulse.bundle import load_bundle, load_reference
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
from mlpulse.serving.app import REQUEST_ERROR_REASONS, ServiceConfig, create_app
from mlpulse.serving.feedback import FEEDBACK_REFUSE_REASONS
from model_service.data import generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES
from tests.helpers import samples, value

NOW = 1_800_000_000.0
ML = {"model": "credit-default", "version": "1.0.0"}
DRIFT_FAMILIES = ("mlpulse_drift_", "mlpulse_window_")


def exporter_for(bundles, tmp_path, **kw) -> Exporter:
    (tmp_path / "events").mkdir(parents=True, exist_ok=True)
    cfg = ExporterConfig(events=str(tmp_path / "events" / "*.jsonl"), bundles=str(bundles), checkpoint="", **kw)
    cfg.validate()
    return Exporter(cfg, clock=lambda: NOW)


def scrape(exp: Exporter) -> dict:
    exp.evaluate(NOW)
    return samples(generate_latest(exp.registry()).decode())


def version_series(m: dict, name: str, version: str, prefixes=None) -> int:
    return sum(1 for (metric, lab), _ in m.items() if dict(lab).get("model") == name
               and dict(lab).get("version") == version and (prefixes is None or metric.startswith(prefixes)))


def events(model, n, seed, name="credit-default", version="1.0.0"):
    records = to_records(generate(n, seed=seed))
    proba = model.predict_proba(rows_for_model(records))[:, 0]
    stamp = dt.datetime.fromtimestamp(NOW - 1, dt.UTC).isoformat()
    return [{"event": "prediction", "@timestamp": stamp, "model": {"name": name, "version": version},
             "inputs": r, "prediction": {"value": float(p), "class": "default" if p >= 0.5 else "no_default"}}
            for r, p in zip(records, proba)]


def hostile(base: list[dict]) -> list[dict]:
    """Every kind of input a client or another writer can put in an event line."""
    rng = random.Random(7)
    out = []
    for i, e in enumerate(base):
        e = json.loads(json.dumps(e))
        inputs = e["inputs"]
        key = rng.choice(sorted(inputs))
        inputs[f"unknown_{i}"] = i  # a new field name every line
        inputs[key] = rng.choice([f"unseen-{i}", "x" * 5000, float("nan"), [1, 2], {"a": 1}, True, None, 10 ** 30])
        if i % 3 == 0:
            e["model"] = {"name": f"forged-{i}", "version": e["model"]["version"]}
        elif i % 3 == 1:
            e["model"] = {"name": e["model"]["name"], "version": f"9.{i}"}
        e["prediction"]["class"] = f"class-{i}"
        out.append(e)
    return out


@pytest.fixture(scope="module")
def model(bundle_dir):
    return load_bundle(bundle_dir, trusted=TRUSTED_TYPES).model


def test_exporter_series_reach_the_bound_and_hostile_events_add_none(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    _, schema, output, profile = load_reference(bundle_dir)
    bound = cardinality.exporter_series(schema, output, profile, windows=3, quality_windows=4)
    estimated = (3 * 3 + 1) * cardinality.quality_metrics(output, estimated=True)
    drift_bound = cardinality.exporter_series(schema, output, profile, windows=3, quality_windows=0) - 1 - estimated
    exp.source.ingest(events(model, 3000, seed=1))
    m = scrape(exp)
    assert version_series(m, **{"name": "credit-default", "version": "1.0.0"}, prefixes=DRIFT_FAMILIES) == drift_bound
    # The estimate's holdout values: one per estimated (metric, class), the unit of its share of the
    # bound (these events carry no probabilities, so no window is estimated).
    assert version_series(m, "credit-default", "1.0.0", prefixes=("mlpulse_quality_estimated",)) == \
        cardinality.quality_metrics(output, estimated=True) == 2 + 3 * len(output.classes)
    full = version_series(m, "credit-default", "1.0.0")
    assert full <= bound
    total = len(m)

    exp.source.ingest(hostile(events(model, 3000, seed=2)))
    m = scrape(exp)
    assert version_series(m, "credit-default", "1.0.0", prefixes=DRIFT_FAMILIES) == drift_bound
    assert version_series(m, "credit-default", "1.0.0") == full
    assert len(m) == total, "hostile events must not add a single series"
    assert {dict(lab).get("model") for (_, lab) in m} <= {None, "credit-default"}
    assert value(m, "mlpulse_exporter_events_total", outcome="unknown_model") == 2000


def with_metadata(src, dst, **changes):
    shutil.copytree(src, dst)
    md = json.loads((dst / "metadata.json").read_text())
    md.update(changes)
    (dst / "metadata.json").write_text(json.dumps(md))
    return dst


@pytest.mark.parametrize(("changes", "reason"), [
    ({"name": "credit default"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"version": "1.0/../2"}, "version"),
    ({"version": 3}, "version"),
])
def test_bad_names_and_versions_are_refused_by_reason(bundle_dir, tmp_path, changes, reason):
    bundles = tmp_path / "bundles"
    with_metadata(bundle_dir, bundles / "a")
    with_metadata(bundle_dir, bundles / "b", **changes)
    exp = exporter_for(bundles, tmp_path)
    assert list(exp.references) == [("credit-default", "1.0.0")]
    m = scrape(exp)
    assert value(m, "mlpulse_exporter_bundle_errors_total", reason=reason) == 1
    assert sum(value(m, "mlpulse_exporter_bundle_errors_total", reason=r) for r in cardinality.REFUSALS) == 1
    with pytest.raises(cardinality.BudgetError) as e:
        create_app(ServiceConfig(bundle_dir=str(bundles / "b"), events_dir=str(tmp_path / "ev")))
    assert e.value.reason == reason


def test_series_and_class_budgets_refuse_on_both_sides_alike(bundle_dir, tmp_path):
    _, schema, output, profile = load_reference(bundle_dir)
    need = cardinality.exporter_series(schema, output, profile, 3, 4)
    exp = exporter_for(bundle_dir, tmp_path, max_series_per_version=need)  # exactly at the bound: loads
    assert ("credit-default", "1.0.0") in exp.references
    with pytest.raises(Exception, match="fits its label budget"):  # the only bundle refused: nothing to do
        exporter_for(bundle_dir, tmp_path, max_series_per_version=need - 1)
    with pytest.raises(Exception, match="fits its label budget"):
        exporter_for(bundle_dir, tmp_path, max_classes=1)

    events_dir = str(tmp_path / "ev")
    app = create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=events_dir))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    mine = [s for s in text.splitlines() if 'model="credit-default"' in s and not s.startswith("#")
            and "_created{" not in s]
    bound = cardinality.check_service(*load_reference(bundle_dir), budget=cardinality.Budget(),
                                      request_error_reasons=
REQUEST_ERROR_REASONS, feedback_reasons=FEEDBACK_REFUSE_REASONS)
    assert len(mine) == bound
    with pytest.raises(cardinality.BudgetError, match="service series") as e:
        create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=events_dir, max_series=bound - 1))
    assert e.value.reason == "series"
    with pytest.raises(cardinality.BudgetError) as e:
        create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=events_dir, max_classes=1))
    assert e.value.reason == "classes"


def test_the_service_bound_counts_the_bin_metrics_when_they_are_on(bundle_dir, tmp_path):
    """With MLPULSE_BIN_METRICS the replica exposes the bins' series too, and the budget knows it."""
    args = dict(budget=cardinality.Budget(), request_error_reasons=REQUEST_ERROR_REASONS,
                feedback_reasons=FEEDBACK_REFUSE_REASONS)
    off = cardinality.check_service(*load_reference(bundle_dir), **args)
    on = cardinality.check_service(*load_reference(bundle_dir), **args, bin_metrics=True)
    app = create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"), bin_metrics=True))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    mine = [s for s in text.splitlines() if 'model="credit-default"' in s and not s.startswith("#")
            and "_created{" not in s]
    assert on > off and len(mine) == on
    with pytest.raises(cardinality.BudgetError, match="service series"):
        create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev2"), bin_metrics=True,
                                 max_series=on - 1))


def test_versions_beyond_the_budget_are_retired_with_their_series(bundle_dir, tmp_path, model):
    bundles = tmp_path / "bundles"
    for i in range(3):
        with_metadata(bundle_dir, bundles / f"v{i}", version=f"{i}.0", trained_at=f"2026-01-0{i + 1}T00:00:00+00:00")
    exp = exporter_for(bundles, tmp_path, max_versions_per_model=2)
    assert sorted(exp.references) == [("credit-default", "1.0"), ("credit-default", "2.0")]
    for v in ("0.0", "1.0", "2.0"):
        exp.source.ingest(events(model, 200, seed=3, version=v))
    m = scrape(exp)
    assert value(m, "mlpulse_exporter_versions_retired") == 1
    assert value(m, "mlpulse_exporter_events_total", outcome="unknown_model") == 200
    assert version_series(m, "credit-default", "1.0") > 0

    # A newer version arrives: the oldest live one (1.0) is retired and its series go.
    with_metadata(bundle_dir, bundles / "v3", version="3.0", trained_at="2026-01-04T00:00:00+00:00")
    exp.load_bundles()
    m = scrape(exp)
    assert sorted(exp.references) == [("credit-default", "2.0"), ("credit-default", "3.0")]
    assert version_series(m, "credit-default", "1.0") == 0
    assert value(m, "mlpulse_exporter_versions_retired") == 2
    exp.load_bundles()  # retired versions are not loaded again
    assert sorted(exp.references) == [("credit-default", "2.0"), ("credit-default", "3.0")]


def test_hidden_and_half_written_bundles_are_never_loaded(bundle_dir, tmp_path):
    bundles = tmp_path / "bundles"
    with_metadata(bundle_dir, bundles / "a")
    with_metadata(bundle_dir, bundles / ".b.partial", version="2.0")  # being copied in: hidden
    exp = exporter_for(bundles, tmp_path)
    half = with_metadata(bundle_dir, bundles / "c", version="3.0")
    ref = (half / "reference.json").read_bytes()
    (half / "reference.json").write_bytes(ref[: len(ref) // 2])  # cut: its sha256 does not match
    exp.load_bundles()
    assert sorted(exp.references) == [("credit-default", "1.0.0")]
    assert value(scrape(exp), "mlpulse_exporter_bundle_errors_total", reason="invalid") == 1
    (half / "reference.json").write_bytes(ref)
    (bundles / ".b.partial").rename(bundles / "b")
    exp.load_bundles()
    assert sorted(exp.references) == [("credit-default", v) for v in ("1.0.0", "2.0", "3.0")]
