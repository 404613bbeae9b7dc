"""Many models on one exporter, with real processes: the credit model and a multiclass model bundled
by ``mlpulse bundle create`` from scikit-learn's wine data, each served by its own gunicorn, one
exporter watching the directory of their bundles. A new version copied in while it runs (staged
in a hidden directory, then renamed) is served within one rescan; each model's events bin into its
own series only; and under hostile traffic (unknown fields, unseen categories, huge strings, NaN,
wrong types, forged model names and versions, thousands of distinct values) the series of every
model version stay exactly at the bound ``mlpulse.cardinality`` computes from its bundle, on the
service (per replica) and on the exporter."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests
import skops.io as sio
from sklearn.datasets import load_wine
from sklearn.ensemble import HistGradientBoostingClassifier

from mlpulse import cardinality
from mlpulse.bundle import load_reference
from mlpulse.serving.app import REQUEST_ERROR_REASONS
from mlpulse.serving.feedback import FEEDBACK_REFUSE_REASONS
from model_service.data import generate, to_records
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.traffic import send
from tests.helpers import samples, value, wait_for

pytestmark = pytest.mark.integration
WINDOWS, QUALITY_WINDOWS = "10m", "10m,1h"
DRIFT = ("mlpulse_drift_", "mlpulse_window_")
CREDIT = {"model": "credit-default", "version": "1.0.0"}
WINE = {"model": "wine", "version": "1"}
CREDIT2 = {"model": "credit-default", "version": "2.0.0"}


def per_version(m: dict, ml: dict, prefixes=None) -> int:
    return sum(1 for (name, lab), _ in m.items() if {**dict(lab), **ml} == dict(lab)
               and (prefixes is None or name.startswith(prefixes)))


def service_bound(bundle) -> int:
    return cardinality.check_service(*load_reference(bundle), budget=cardinality.Budget(),
                                     request_error_reasons=REQUEST_ERROR_REASONS,
                                     feedback_reasons=FEEDBACK_REFUSE_REASONS)


def exporter_bounds(bundle) -> tuple[int, int]:
    """(all series, drift and window series) of one version on this exporter (1 drift window, 2
    quality windows)."""
    _, schema, output, profile = load_reference(bundle)
    total = cardinality.exporter_series(schema, output, profile, 1, 2)
    drift = (cardinality.exporter_series(schema, output, profile, 1, 0) - 1
             - 4 * cardinality.quality_metrics(output, estimated=True))
    return total, drift


def hostile_records(records: list[dict], seed: int) -> list[dict]:
    """Records a client could send: every field kind of trouble, a new field name and value each."""
    out = []
    for i, r in enumerate(records):
        r = dict(r)
        key = sorted(r)[i % len(r)]
        r[key] = [f"never-seen-{seed}-{i}", "x" * 4000, float("nan"), {"a": i}, True, None, 1e308 * 10][i % 7]
        r[f"extra_{seed}_{i}"] = "y" * (i % 50)
        out.append(r)
    return out


def forged_lines(n: int, stamp: str) -> list[dict]:
    """Event lines another writer could append: forged and unknown model names and versions,
    garbage inputs and classes, for the exporter."""
    lines = []
    for i in range(n):
        model = [{"name": f"forged-{i}", "version": "1"}, {"name": "credit-default", "version": f"9.{i}"},
                 {"name": "x" * 3000, "version": None}, "not-an-object"][i % 4]
        lines.append({"event": "prediction", "@timestamp": stamp, "model": model, "request_id": f"f{i}",
                      "inputs": {f"k{i}": "v" * (i % 100), "age": [i]},
                      "prediction": {"value": i, "class": f"c{i}"}})
    return lines


def credit_v2_events(n: int, stamp: str) -> list[dict]:
    return [{"event": "prediction", "@timestamp": stamp, "model": {"name": "credit-default", "version": "2.0.0"}, "request_id": f"v2-{i}",
             "record_index": 0, "inputs": r, "prediction": {"value": 0.3, "class": "no_default"}}
            for i, r in enumerate(to_records(generate(n, seed=90 + n)))]


def write_lines(path, lines: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")


@pytest.fixture(scope="module")
def wine_bundle(tmp_path_factory):
    work = tmp_path_factory.mktemp("wine")
    frame = load_wine(as_frame=True).frame
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame.drop(columns="target"),
                                                                              frame["target"])
    frame.to_csv(work / "data.csv", index=False)
    sio.dump(model, work / "model.skops")
    out = work / "wine"
    created = subprocess.run([sys.executable, "-m", "mlpulse", "bundle", "create", "--data", str(work / "data.csv"),
                              "--target", "target", "--model", str(work / "model.skops"), "--out", str(out),
                              "--name", "wine", "--version", "1"], capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    return out, frame


def test_many_models_one_exporter_bounded_series_and_bundles_dropped_in(bundle_dir, wine_bundle, tmp_path):
    wine_dir, wine_frame = wine_bundle
    bundles, events = tmp_path / "bundles", tmp_path / "events"
    shutil.copytree(bundle_dir, bundles / "credit-1.0.0")
    shutil.copytree(wine_dir, bundles / "wine-1")
    credit_port, wine_port, exp_port = free_port(), free_port(), free_port()
    credit_url, wine_url = f"http://127.0.0.1:{credit_port}", f"http://127.0.0.1:{wine_port}"
    exporter = f"http://127.0.0.1:{exp_port}/metrics"
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, events, tmp_path / "mp-credit", credit_port, workers=1),
                      tmp_path / "credit.log")
        start_service(stack, service_env(wine_dir, events, tmp_path / "mp-wine", wine_port, workers=1),
                      tmp_path / "wine.log")
        start_exporter(stack, exporter_env(events, bundles, exp_port, MLPULSE_EXPORTER_WINDOWS=WINDOWS,
                                           MLPULSE_EXPORTER_QUALITY_WINDOWS=QUALITY_WINDOWS,
                                           MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_MIN_COUNT="50",
                                           MLPULSE_EXPORTER_EVALUATE_EVERY="0.5s",
                                           MLPULSE_EXPORTER_POLL_EVERY="0.2s",
                                           MLPULSE_EXPORTER_RESCAN_BUNDLES_EVERY="1s"), tmp_path / "exporter.log")

        credit = to_records(generate(400, seed=71))
        wine = json.loads(wine_frame.drop(columns="target").sample(240, replace=True, random_state=3)
                          .to_json(orient="records"))
        assert send(credit_url, credit, batch=20, concurrency=2) == {200: 20}
        assert send(wine_url, wine, batch=20, concurrency=2) == {200: 12}

        def window(ml, n):
            def check():
                m = samples(requests.get(exporter, timeout=10).text)
                try:
                    return m if value(m, "mlpulse_window_predictions", window=WINDOWS, **ml) == n else None
                except AssertionError:
                    return None
            return check

        wait_for(window(CREDIT, 400), 60, "credit's window")
        m = wait_for(window(WINE, 240), 60, "wine's window")
        clean = {}
        for ml, bundle in ((CREDIT, bundle_dir), (WINE, wine_dir)):
            total, drift = exporter_bounds(bundle)
            assert per_version(m, ml, DRIFT) == drift, ml
            assert per_version(m, ml) <= total, ml
            clean[ml["model"]] = per_version(m, ml)
        for url, bundle in ((credit_url, bundle_dir), (wine_url, wine_dir)):
            s = samples(requests.get(f"{url}/metrics", timeout=10).text)
            name = load_reference(bundle)[0]["name"]
            assert sum(1 for (_, lab) in s if dict(lab).get("model") == name) == service_bound(bundle)

        # Hostile traffic: to both services, and forged lines straight into the events directory.
        statuses = send(credit_url, hostile_records(credit[:70], 1), batch=1, concurrency=2)
        statuses += send(wine_url, hostile_records(wine[:70], 2), batch=1, concurrency=2)
        assert sum(statuses.values()) == 140 and set(statuses) <= {200, 422}
        stamp = dt.datetime.now(dt.UTC).isoformat()
        write_lines(events / "forged.jsonl", forged_lines(3000, stamp))
        nan = credit_v2_events(100, stamp)
        for line in nan:
            line["prediction"]["value"] = float("nan")  # json.dumps writes NaN: not JSON, a malformed line
        write_lines(events / "forged.jsonl", nan)

        # Drop a new version in: staged in a hidden directory (never read), then one rename.
        staging = bundles / ".credit-2.0.0.partial"
        shutil.copytree(bundle_dir, staging)
        md = json.loads((staging / "metadata.json").read_text())
        md.update(version="2.0.0", trained_at=dt.datetime.now(dt.UTC).isoformat())
        (staging / "metadata.json").write_text(json.dumps(md))
        time.sleep(1.5)  # a rescan happens while it is staged
        assert per_version(samples(requests.get(exporter, timeout=10).text), CREDIT2) == 0
        os.rename(staging, bundles / "credit-2.0.0")
        dropped = time.monotonic()
        wait_for(lambda: per_version(samples(requests.get(exporter, timeout=10).text), CREDIT2), 10,
                 "the new version's series")
        assert time.monotonic() - dropped < 1 + 4  # one rescan interval, plus evaluation and scrape on shared cores
        write_lines(events / "v2.jsonl", credit_v2_events(300, dt.datetime.now(dt.UTC).isoformat()))
        m = wait_for(window(CREDIT2, 300), 30, "the new version's window")

        # Each model's events in its own series only; the forged lines in one counter.
        assert value(m, "mlpulse_window_predictions", window=WINDOWS, **CREDIT) >= 400
        assert value(m, "mlpulse_window_predictions", window=WINDOWS, **WINE) >= 240
        assert value(m, "mlpulse_exporter_events_total", outcome="unknown_model") == 2250
        assert value(m, "mlpulse_exporter_events_total", outcome="invalid") == 750
        assert value(m, "mlpulse_exporter_malformed_lines_total", kind="json") == 100
        assert {dict(lab)["model"] for (_, lab) in m if "model" in dict(lab)} == {"credit-default", "wine"}
        assert {(dict(lab)["model"], dict(lab)["version"]) for (_, lab) in m if "model" in dict(lab)} == {
            ("credit-default", "1.0.0"), ("credit-default", "2.0.0"), ("wine", "1")}
        for ml, bundle in ((CREDIT, bundle_dir), (WINE, wine_dir), (CREDIT2, bundle_dir)):
            total, drift = exporter_bounds(bundle)
            assert per_version(m, ml, DRIFT) == drift, ml
            assert per_version(m, ml) <= total, ml
        assert per_version(m, CREDIT) == clean["credit-default"]
        assert per_version(m, WINE) == clean["wine"]
        for url, bundle in ((credit_url, bundle_dir), (wine_url, wine_dir)):
            s = samples(requests.get(f"{url}/metrics", timeout=10).text)
            name = load_reference(bundle)[0]["name"]
            assert sum(1 for (_, lab) in s if dict(lab).get("model") == name) == service_bound(bundle)
            assert value(s, "mlpulse_input_violations_total", feature="_unknown", reason="unknown_field") == 70
