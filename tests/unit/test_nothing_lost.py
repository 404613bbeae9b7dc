"""Nothing lost, nothing open, at the service: limits that hold whatever the encoding, a failed write
rolled back and counted by cause, retention that waits for its readers within a disk budget, a
bundle pinned by digest, and inputs dropped or masked before they reach the log."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlpulse.bundle import BundleError, bundle_digest, load_bundle, load_reference
from mlpulse.cli import main
from mlpulse.events import EventLog
from mlpulse.serving.app import ServiceConfig, create_app
from model_service.data import generate, to_records
from tests.helpers import ROOT, read_events, samples, value

RECORD = to_records(generate(1, seed=5))[0]


def metrics(client) -> dict:
    return samples(client.get("/metrics").get_data(as_text=True))


# -- limits -------------------------------------------------------------------------------------

def test_a_body_not_in_utf8_is_refused_not_guessed(client, config):
    body = json.dumps(RECORD).encode("utf-16")
    r = client.post("/v1/predict", data=body, content_type="application/json")
    assert r.status_code == 400 and "not UTF-8" in r.get_json()["detail"]
    assert [e["event"] for e in read_events(config.events_dir)] == ["request.refused"]


def test_a_body_nested_deeper_than_a_record_is_refused_with_its_line(client, config):
    deep = "[" * 900 + "]" * 900
    r = client.post("/v1/predict", data=deep, content_type="application/json")
    assert r.status_code == 422 and r.get_json()["type"].endswith("body-too-deep")
    (event,) = read_events(config.events_dir)
    assert event["event"] == "request.refused" and event["reason"] == "body_too_deep"
    assert value(metrics(client), "mlpulse_request_errors_total", reason="body_too_deep") == 1


def test_a_chunked_body_over_the_limit_is_refused_not_cut(bundle_dir, tmp_path):
    cfg = ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"), max_body_bytes=2000)
    client = create_app(cfg).test_client()
    big = json.dumps([RECORD] * 40).encode()
    assert len(big) > 2000

    # A chunked body reaches the app as a terminated input stream without a Content-Length.
    for body, status in ((big, 413), (json.dumps(RECORD).encode(), 200)):
        r = client.post("/v1/predict", input_stream=io.BytesIO(body), content_type="application/json",
                        environ_overrides={"wsgi.input_terminated": True})
        assert r.status_code == status, r.get_json()
    assert value(metrics(client), "mlpulse_request_errors_total", reason="body_too_large") == 1


def test_405_names_the_allowed_methods(client):
    r = client.get("/v1/predict")
    assert r.status_code == 405 and r.headers["Allow"] == "OPTIONS, POST"
    assert r.mimetype == "application/problem+json"


# -- writes that fail ---------------------------------------------------------------------------

def test_a_full_disk_leaves_no_fragment_and_is_counted_by_cause(bundle_dir, tmp_path):
    """The file size limit (RLIMIT_FSIZE) stands in for a full disk: the kernel accepts part of a
    write, then refuses the rest with EFBIG, as it does with ENOSPC."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from mlpulse.serving.app import ServiceConfig, create_app
        client = create_app(ServiceConfig(bundle_dir={str(bundle_dir)!r}, events_dir={str(tmp_path / "ev")!r})).test_client()
        record = {json.dumps(RECORD)}
        assert client.post("/v1/predict", json=[record] * 3).status_code == 200
        size = __import__("os").path.getsize({str(tmp_path / "ev" / "predictions.jsonl")!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, resource.RLIM_INFINITY))
        statuses = [client.post("/v1/predict", json=[record] * 3).status_code for _ in range(3)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        statuses.append(client.post("/v1/predict", json=[record] * 3).status_code)
        print(json.dumps({{"statuses": statuses, "metrics": client.get("/metrics").get_data(as_text=True)}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["statuses"] == [200, 200, 200, 200]  # the service kept answering
    lost = value(samples(out["metrics"]), "mlpulse_event_write_errors_total", cause="disk_full")
    events = read_events(tmp_path / "ev")  # raises on a cut or interleaved line
    assert len(events) + lost == 15 and lost >= 3  # every record is a line or a counted loss
    assert [e["record_index"] for e in events[-3:]] == [0, 1, 2]  # writes resume once space is back


# -- retention that knows its readers ------------------------------------------------------------

def fill(log: EventLog, n: int) -> None:
    for i in range(n):
        log.write("prediction", {"request_id": f"r{i}", "padding": "x" * 200})


def rotated(directory: Path) -> list[Path]:
    return sorted(directory.glob("predictions-*.jsonl"))


def exporter_checkpoint(path: Path, files: list[Path], offsets: list[int]) -> None:
    entries = [{"dev": f.stat().st_dev, "ino": f.stat().st_ino, "offset": o, "skip": False, "fp_len": 0, "fp": "",
                "name": f.name} for f, o in zip(files, offsets)]
    path.write_text(json.dumps({"version": 1, "tail": {"version": 1, "files": entries}, "extra": {}}))


def sincedb(path: Path, files: list[Path], offsets: list[int]) -> None:
    lines = [f"{f.stat().st_ino} {os.major(f.stat().st_dev)} {os.minor(f.stat().st_dev)} {o} 1.0 {f}"
             for f, o in zip(files, offsets)]
    path.write_text("\n".join(lines) + "\n")


def test_retention_keeps_what_a_reader_has_not_finished(tmp_path):
    events = tmp_path / "ev"
    checkpoint, since = tmp_path / "checkpoint.json", tmp_path / "sincedb"
    losses = []
    log = EventLog(events, max_bytes=2000, backup_count=2, readers=[checkpoint, since],
                   max_total_bytes=60_000, on_loss=lambda cause, n: losses.append((cause, n)))
    fill(log, 30)  # about 3 rotations
    first = rotated(events)
    assert len(first) >= 3  # nobody has read anything: nothing was deleted beyond backup_count
    exporter_checkpoint(checkpoint, first, [f.stat().st_size for f in first])
    sincedb(since, first[:1], [first[0].stat().st_size])  # Logstash finished only the oldest
    fill(log, 10)
    now = rotated(events)
    assert first[0] not in now  # both readers were done with it
    assert all(f in now for f in first[1:])  # Logstash was not
    sincedb(since, first[1:], [f.stat().st_size for f in first[1:]])
    fill(log, 10)
    assert not any(f in rotated(events) for f in first[1:])
    assert losses == []


def test_the_disk_budget_wins_and_the_loss_is_reported(bundle_dir, tmp_path):
    reader = tmp_path / "stopped-reader.json"  # a reader that never writes its position
    cfg = ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"), events_max_bytes=4000,
                        events_backup_count=1, events_readers=(str(reader),), events_max_total_bytes=30_000)
    client = create_app(cfg).test_client()
    for _ in range(30):
        assert client.post("/v1/predict", json=[RECORD] * 4).status_code == 200
    total = sum(p.stat().st_size for p in (tmp_path / "ev").glob("*.jsonl"))
    assert total <= 30_000 + 4000 + 8000  # the budget, plus the active file and one request's lines
    assert value(metrics(client), "mlpulse_event_files_lost_total", cause="budget") >= 1


# -- a pinned bundle ----------------------------------------------------------------------------

def test_a_pinned_bundle_refuses_any_edit(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    digest = bundle_digest(copy)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert main(["bundle", "digest", str(copy)]) == 0
    load_bundle(copy, trusted=load_bundle_types(copy), pinned=digest)
    load_reference(copy, pinned=digest)  # the exporter checks the same digest, without loading the model
    metadata = json.loads((copy / "metadata.json").read_text())
    metadata["decision_threshold"] = 0.01  # an edit the sha256s inside the bundle cannot see
    (copy / "metadata.json").write_text(json.dumps(metadata))
    load_bundle(copy, trusted=load_bundle_types(copy))  # unpinned: still loads
    for load in (lambda: load_bundle(copy, trusted=load_bundle_types(copy), pinned=digest),
                 lambda: load_reference(copy, pinned=digest)):
        with pytest.raises(BundleError, match="not the pinned"):
            load()
    with pytest.raises(BundleError, match="not the pinned"):
        create_app(ServiceConfig(bundle_dir=str(copy), events_dir=str(tmp_path / "ev"), bundle_digest=digest))


def load_bundle_types(directory: Path) -> list[str]:
    return json.loads((directory / "metadata.json").read_text())["trusted_types"]


# -- personal data ------------------------------------------------------------------------------

def test_configured_inputs_are_dropped_or_masked_in_the_log_only(bundle_dir, tmp_path):
    cfg = ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"),
                        events_drop_fields=("income",), events_mask_fields=("marital_status",))
    client = create_app(cfg).test_client()
    r = client.post("/v1/predict", json={**RECORD, "marital_status": "single"})
    assert r.status_code == 200
    (event,) = read_events(tmp_path / "ev")
    assert "income" not in event["inputs"] and event["inputs"]["marital_status"] == "***"
    assert event["inputs"]["age"] == RECORD["age"]
    with pytest.raises(ValueError, match="both dropped and masked"):
        ServiceConfig(bundle_dir=str(bundle_dir), events_drop_fields=("a",), events_mask_fields=("a",)).check()
