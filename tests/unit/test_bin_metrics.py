"""The service's bin counters (MLPULSE_BIN_METRICS, mlpulse.metrics.bins): the exporter's binning on
the same records, and a series count that no input can raise above the bound docs/metrics.md states."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mlpulse.bundle import load_reference
from mlpulse.exporter.windows import PREDICTED_CLASS, PREDICTION, Reference
from mlpulse.metrics import bins
from mlpulse.serving.app import create_app
from model_service.data import generate, to_records
from tests.helpers import read_events, samples

BIN_METRICS = ("mlpulse_feature_bin_total", "mlpulse_reference_bin_ratio")


@pytest.fixture
def bin_app(config):
    # Nothing refused: every hostile record below is scored and counted (the worst case).
    return create_app(dataclasses.replace(config, bin_metrics=True, refuse_reasons=()))


def bin_series(client) -> dict[str, dict[frozenset, float]]:
    parsed = samples(client.get("/metrics").get_data(as_text=True))
    return {m: {lab: v for (n, lab), v in parsed.items() if n == m} for m in BIN_METRICS}


def test_switch():
    assert bins.enabled({}) is False and bins.enabled({bins.ENV: "0"}) is False
    assert bins.enabled({bins.ENV: "1"}) is True and bins.enabled({bins.ENV: "true"}) is True
    with pytest.raises(ValueError, match=bins.ENV):
        bins.enabled({bins.ENV: "maybe"})


def test_off_by_default(client):
    assert not any(n.startswith("mlpulse_feature_bin") for (n, _) in samples(client.get("/metrics").get_data(as_text=True)))


def test_counts_equal_the_exporters_binning_of_the_events(bin_app, config):
    client = bin_app.test_client()
    records = to_records(generate(300, seed=4, scenario="drift"))
    # Small batches are binned record by record, larger ones over columns: both paths.
    sizes = [1, 3, bins.SMALL_BATCH, bins.SMALL_BATCH + 1]
    sizes += [300 - sum(sizes) - 240] + [60] * 4
    start = 0
    for n in sizes:
        assert client.post("/v1/predict", json=records[start:start + n]).status_code == 200
        start += n
    assert start == 300
    series = bin_series(client)
    events = [e for e in read_events(config.events_dir) if "inputs" in e]
    assert len(events) == 300
    meta = load_reference(config.bundle_dir)
    ref = Reference(meta[0]["name"], meta[0]["version"], meta[1], meta[2], meta[3])
    positions, _ = ref.bin_rows([e["inputs"] for e in events], [e["prediction"].get("value") for e in events],
                                [e["prediction"].get("class") for e in events])
    counts = np.bincount(positions.ravel(), minlength=ref.width)
    for feature, slot in ref.slots.items():
        got = {lab_dict["bin"]: v for lab, v in series["mlpulse_feature_bin_total"].items()
               if (lab_dict := dict(lab))["feature"] == feature}
        want = {str(i): float(counts[slot.offset + i]) for i in range(slot.nbins)}
        want[bins.MISSING_BIN] = float(counts[slot.missing])
        assert got == want, feature
        total = sum(ref.entries[feature]["bin_counts"])
        ratios = {dict(lab)["bin"]: v for lab, v in series["mlpulse_reference_bin_ratio"].items()
                  if dict(lab)["feature"] == feature}
        assert ratios == {str(i): c / total for i, c in enumerate(ref.entries[feature]["bin_counts"])}
    assert {PREDICTION, PREDICTED_CLASS} <= {dict(lab)["feature"] for lab in series["mlpulse_feature_bin_total"]}


def hostile_records(n: int, seed: int) -> list[dict]:
    """Records built to add series: unknown fields, huge and unseen texts, NaN, inf, huge numbers,
    wrong types, thousands of distinct values."""
    rng = np.random.default_rng(seed)
    base = to_records(generate(n, seed=seed))
    out = []
    for i, rec in enumerate(base):
        rec = dict(rec)
        kind = i % 8
        if kind == 0:
            rec[f"unknown_{i}"] = "x" * 1000
        elif kind == 1:
            rec["marital_status"] = f"unseen-{i}-" + "y" * 5000
        elif kind == 2:
            rec["income"] = float(rng.normal() * 1e12)  # thousands of distinct values, far outside
        elif kind == 3:
            rec["age"] = math.inf if i % 16 == 3 else -math.inf
        elif kind == 4:
            rec["age"] = "forty"
            rec["home_ownership"] = 12345
        elif kind == 5:
            rec["loan_amount"] = [1, 2, 3]
            rec["loan_purpose"] = {"nested": True}
        elif kind == 6:
            rec["income"] = None
            rec["credit_utilization"] = True
        else:
            rec["debt_to_income"] = 1e308 * (1 if i % 2 else -1)
            rec["loan_amount"] = 10 ** 400 * (1 if i % 16 == 7 else -1)  # JSON allows it; no float holds it
        out.append(rec)
    return out


def test_series_stay_at_the_bound_under_hostile_input(bin_app, config):
    client = bin_app.test_client()
    meta = load_reference(config.bundle_dir)
    counters, gauges = bins.series_bound(meta[3], meta[1])
    before = bin_series(client)
    assert (len(before["mlpulse_feature_bin_total"]), len(before["mlpulse_reference_bin_ratio"])) == (counters, gauges)
    statuses = set()
    for i in range(0, 2000, 100):
        statuses.add(client.post("/v1/predict", json=hostile_records(100, seed=i)).status_code)
    assert 200 in statuses
    after = bin_series(client)
    assert (len(after["mlpulse_feature_bin_total"]), len(after["mlpulse_reference_bin_ratio"])) == (counters, gauges)
    assert set(after["mlpulse_feature_bin_total"]) == set(before["mlpulse_feature_bin_total"])
    # They were counted: the unseen bin of marital_status and the missing bin of age grew.
    unseen = str(len(meta[3]["features"]["marital_status"]["categories"]))
    assert after["mlpulse_feature_bin_total"][frozenset({"model": meta[0]["name"], "version": meta[0]["version"],
                                                         "feature": "marital_status", "bin": unseen}.items())] > 0
    # The bound docs/metrics.md states: per model version and replica, sum of (bins + 1) over the
    # input features, _prediction and _predicted_class.
    entries = [meta[3]["features"][n] for n in meta[1].names] + [meta[3]["prediction"], meta[3]["predicted_class"]]
    assert counters == sum(len(e["bin_counts"]) + 1 for e in entries)
