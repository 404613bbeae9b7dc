"""The exporter's windows, statistics and checkpoints on real bundles and real event files."""

import datetime as dt
import json
import shutil

import numpy as np
import pytest
from prometheus_client import generate_latest

from mlpulse.bundle import load_bundle
from mlpulse.exporter.config import ConfigError, ExporterConfig, load_config
from mlpulse.exporter.core import Exporter
from mlpulse.profile import categorical_bin_index, numeric_bin_index
from model_service.data import SCENARIOS, SCHEMA, generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES
from tests.helpers import samples, value

NOW = 1_800_000_000.0  # a fixed clock: tests never depend on the wall time
ML = {"model": "credit-default", "version": "1.0.0"}


@pytest.fixture(scope="module")
def model(bundle_dir):
    return load_bundle(bundle_dir, trusted=TRUSTED_TYPES).model


def make_events(model, n, seed, scenario="baseline", ts=NOW - 1, version="1.0.0"):
    records = to_records(generate(n, seed=seed, scenario=scenario))
    proba = model.predict_proba(rows_for_model(records))[:, 0]  # classes_ sorted: "default" first
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
    return [{"event": "prediction", "@timestamp": stamp, "model": {"name": "credit-default", "version": version},
             "inputs": r, "prediction": {"value": float(p), "class": "default" if p >= 0.5 else "no_default"}}
            for r, p in zip(records, proba)], records, proba


def exporter_for(bundle_dir, tmp_path, **kw):
    (tmp_path / "events").mkdir(parents=True, exist_ok=True)
    cfg = ExporterConfig(events=str(tmp_path / "events" / "*.jsonl"), bundles=str(bundle_dir),
                         checkpoint=kw.pop("checkpoint", ""), **kw)
    cfg.validate()
    return Exporter(cfg, clock=lambda: NOW)


def two_versions(bundle_dir, root):
    """Bundles for 1.0.0 and 2.0.0 under ``root``: the same files, another version in the metadata."""
    shutil.copytree(bundle_dir, root / "v1")
    shutil.copytree(bundle_dir, root / "v2")
    md = json.loads((root / "v2" / "metadata.json").read_text())
    md["version"] = "2.0.0"
    (root / "v2" / "metadata.json").write_text(json.dumps(md))
    return root


def scrape(exporter):
    return samples(generate_latest(exporter.registry()).decode())


def drifted(m, window="1h"):
    return {dict(lab)["feature"] for (name, lab), v in m.items()
            if name == "mlpulse_drift_detected" and dict(lab)["window"] == window and v == 1}


def test_window_counts_and_moments_equal_numpy_on_raw_data(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    events, records, proba = make_events(model, 3000, seed=5)
    exp.source.ingest(events)
    ref = exp.references[("credit-default", "1.0.0")]
    ring = exp.source.rings[("credit-default", "1.0.0")]
    counts, moments = ring.window(ring.slice_of(NOW), 360)
    for spec in SCHEMA.features:
        slot = ref.slots[spec.name]
        raw = [r[spec.name] for r in records]
        present = [v for v in raw if v is not None]
        if spec.kind == "numeric":
            idx = numeric_bin_index(ref.entries[spec.name]["edges"], np.array(present, dtype=float))
        else:
            idx = categorical_bin_index(spec.categories, present)
        expected = np.bincount(idx, minlength=slot.nbins)
        assert counts[slot.offset: slot.offset + slot.nbins].tolist() == expected.tolist(), spec.name
        assert counts[slot.missing] == len(raw) - len(present)
    assert moments["count"] == 3000
    assert moments["mean"] == pytest.approx(proba.mean(), rel=1e-12)
    assert moments["std"] == pytest.approx(proba.std(), rel=1e-9)
    assert moments["min"] == proba.min() and moments["max"] == proba.max()
    m = scrape_after_eval(exp)
    assert value(m, "mlpulse_window_prediction", statistic="mean", window="5m", **ML) == pytest.approx(proba.mean())
    assert value(m, "mlpulse_window_predictions", window="24h", **ML) == 3000


def scrape_after_eval(exp, now=NOW):
    exp.evaluate(now)
    return scrape(exp)


def test_baseline_shows_no_drift_and_shifted_traffic_exactly_the_shifted_features(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    exp.source.ingest(make_events(model, 4000, seed=8)[0])
    m = scrape_after_eval(exp)
    assert drifted(m) == set()
    assert value(m, "mlpulse_drift_share", window="1h", **ML) == 0
    assert value(m, "mlpulse_drift_features_evaluated", window="1h", **ML) == len(SCHEMA.features)

    shifted = exporter_for(bundle_dir, tmp_path / "b")
    shifted.source.ingest(make_events(model, 4000, seed=9, scenario="drift")[0])
    m = scrape_after_eval(shifted)
    assert drifted(m) - {"_prediction", "_predicted_class"} == set(SCENARIOS["drift"])
    assert value(m, "mlpulse_drift_share", window="1h", **ML) == pytest.approx(4 / 14)
    income_oor = value(m, "mlpulse_drift_out_of_range_ratio", feature="income", window="1h", **ML)
    assert income_oor > 0.5  # income sent in thousands falls below the training minimum


def test_missing_feed_is_seen_as_missing_ratio(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    exp.source.ingest(make_events(model, 2000, seed=10, scenario="missing")[0])
    m = scrape_after_eval(exp)
    assert value(m, "mlpulse_drift_missing_ratio", feature="employment_years", window="1h", **ML) == \
        pytest.approx(0.6, abs=0.05)
    assert value(m, "mlpulse_drift_missing_ratio", feature="age", window="1h", **ML) == 0


def test_windows_slide_and_small_windows_have_no_scores(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path, min_count=100)
    old, _, _ = make_events(model, 500, seed=11, ts=NOW - 2 * 3600)  # only in the 24h window
    recent, _, _ = make_events(model, 50, seed=12, ts=NOW - 10)  # below min_count everywhere
    ancient, _, _ = make_events(model, 7, seed=13, ts=NOW - 3 * 86400)
    exp.source.ingest(old + recent + ancient)
    m = scrape_after_eval(exp)
    assert value(m, "mlpulse_window_predictions", window="5m", **ML) == 50
    assert value(m, "mlpulse_window_predictions", window="1h", **ML) == 50
    assert value(m, "mlpulse_window_predictions", window="24h", **ML) == 550
    assert value(m, "mlpulse_exporter_events_total", outcome="too_old") == 7
    scores = {dict(lab)["window"] for (name, lab) in m if name == "mlpulse_drift_score"}
    assert scores == {"24h"}, "below min_count the series is absent, not zero"
    # An hour later the recent events left the 1h window too.
    m = scrape_after_eval(exp, NOW + 3600)
    assert value(m, "mlpulse_window_predictions", window="1h", **ML) == 0


def test_unknown_versions_are_counted_and_new_bundles_get_their_own_reference(bundle_dir, tmp_path, model):
    exp = exporter_for(bundle_dir, tmp_path)
    v2_events, _, _ = make_events(model, 200, seed=14, version="2.0.0")
    exp.source.ingest(v2_events)
    assert exp.source.events["unknown_model"] == 200
    bundles = two_versions(bundle_dir, tmp_path / "bundles")
    exp.config.bundles = str(bundles)
    exp.load_bundles()
    exp.source.ingest(v2_events)
    m = scrape_after_eval(exp)
    assert value(m, "mlpulse_window_predictions", window="5m", model="credit-default", version="2.0.0") == 200
    assert value(m, "mlpulse_exporter_reference_info", version="2.0.0") == 1


def test_restart_from_checkpoint_neither_repeats_nor_loses(bundle_dir, tmp_path, model):
    events, _, _ = make_events(model, 1000, seed=15)
    log = tmp_path / "events" / "predictions.jsonl"
    log.parent.mkdir()
    lines = [json.dumps(e) + "\n" for e in events]
    log.write_text("".join(lines[:600]))
    cp = str(tmp_path / "cp.json")
    first = exporter_for(bundle_dir, tmp_path, checkpoint=cp, start="beginning")
    first.poll()
    first.save_checkpoint()
    first.close()
    with open(log, "a") as f:  # written while the exporter was down
        f.write("".join(lines[600:]))
    second = exporter_for(bundle_dir, tmp_path, checkpoint=cp, start="beginning")
    second.poll()
    m = scrape_after_eval(second)
    assert value(m, "mlpulse_window_predictions", window="1h", **ML) == 1000
    assert second.source.events["scored"] == 400  # only what came after the checkpoint was read


def test_malformed_lines_are_counted_and_skipped(bundle_dir, tmp_path, model):
    events, _, _ = make_events(model, 10, seed=16)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "predictions.jsonl").write_bytes(
        b"not json\n\xff\xfe\n[1]\n" + "".join(json.dumps(e) + "\n" for e in events).encode())
    exp = exporter_for(bundle_dir, tmp_path, start="beginning")
    exp.poll()
    m = scrape_after_eval(exp)
    assert value(m, "mlpulse_exporter_malformed_lines_total", kind="json") == 1
    assert value(m, "mlpulse_exporter_malformed_lines_total", kind="utf8") == 1
    assert value(m, "mlpulse_exporter_malformed_lines_total", kind="not_object") == 1
    assert value(m, "mlpulse_exporter_events_total", outcome="scored") == 10


def test_configuration_errors_name_the_problem(bundle_dir, tmp_path):
    ev = tmp_path / "ev"
    ev.mkdir()
    base = ["--events", str(ev / "*.jsonl"), "--bundles", str(bundle_dir), "--checkpoint", ""]
    assert load_config(base, environ={}).windows == "5m,1h,24h"
    cases = [
        (["--windows", "5m,7s"], "multiples of slice"),
        (["--method", "magic"], "method"),
        (["--correction", "holm"], "correction"),
        (["--min-count", "0"], "min_count"),
        (["--windows", "5 minutes"], "duration"),
        (["--port", "x"], "port"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(base + extra, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--events", str(tmp_path / "nope" / "*.jsonl"), "--bundles", str(bundle_dir)], environ={})
    with pytest.raises(ConfigError, match="no bundle"):
        load_config(["--events", str(ev / "*.jsonl"), "--bundles", str(tmp_path)], environ={})
    toml = tmp_path / "exporter.toml"
    toml.write_text('min_count = 250\nwindows = "1m,10m"\n')
    cfg = load_config(base + ["--config", str(toml)], environ={"MLPULSE_EXPORTER_MIN_COUNT": "300"})
    assert cfg.min_count == 300 and cfg.windows == "1m,10m"  # environment over file
    toml.write_text("surprise = 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(base + ["--config", str(toml)], environ={})


def test_cli_fails_at_start_with_a_message(bundle_dir, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mlpulse.exporter", "--events", str(tmp_path / "missing" / "*.jsonl")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
    import shutil

    shutil.copytree(bundle_dir, tmp_path / "tampered")
    with open(tmp_path / "tampered" / "reference.json", "a") as f:
        f.write(" ")
    (tmp_path / "ev").mkdir()
    r = subprocess.run([sys.executable, "-m", "mlpulse.exporter", "--events", str(tmp_path / "ev" / "*.jsonl"),
                        "--bundles", str(tmp_path / "tampered"), "--checkpoint", ""],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "was altered" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mlpulse.exporter", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--min-count" in r.stdout and "MLPULSE_EXPORTER_" in r.stdout


def test_container_config_file_is_valid(bundle_dir, tmp_path):
    from tests.helpers import ROOT

    (tmp_path / "ev").mkdir()
    cfg = load_config(["--config", str(ROOT / "exporter" / "exporter.toml"), "--events", str(tmp_path / "ev" / "*.jsonl"),
                       "--bundles", str(bundle_dir), "--checkpoint", str(tmp_path / "cp.json")], environ={})
    assert cfg.windows == "5m,1h,24h" and cfg.bind == "0.0.0.0" and cfg.correction == "bh"
