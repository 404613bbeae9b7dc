"""The shared event log with real files and real processes."""

import multiprocessing as mp
import os

from mlpulse.events import ACTIVE_NAME, EventLog
from tests.helpers import read_events


def _writer(directory, worker, n, max_bytes, backup):
    log = EventLog(directory, max_bytes=max_bytes, backup_count=backup)
    pad = "x" * (worker * 300)  # lines of different lengths make interleaving visible
    for i in range(n):
        log.write("prediction", {"worker": worker, "i": i, "pad": pad})
    log.close()


def run_writers(directory, workers, n, max_bytes, backup):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(directory, w, n, max_bytes, backup)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0


def test_lines_from_several_processes_are_whole_and_complete(tmp_path):
    run_writers(tmp_path, workers=4, n=2000, max_bytes=1 << 30, backup=5)
    events = read_events(tmp_path)  # json.loads on every line: a cut line fails here
    assert len(events) == 8000
    for w in range(4):
        assert [e["i"] for e in events if e["worker"] == w] == list(range(2000))


def test_rotation_under_concurrency_loses_nothing_and_keeps_retention(tmp_path):
    run_writers(tmp_path, workers=3, n=1500, max_bytes=64 * 1024, backup=1000)
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) > 10  # it rotated many times
    assert all(f.stat().st_size < 64 * 1024 + 2000 for f in files)
    events = read_events(tmp_path)
    assert sorted((e["worker"], e["i"]) for e in events) == [(w, i) for w in range(3) for i in range(1500)]


def test_retention_deletes_oldest_rotated_files(tmp_path):
    log = EventLog(tmp_path, max_bytes=2000, backup_count=3)
    for i in range(500):
        log.write("prediction", {"i": i})
    log.close()
    rotated = sorted(p.name for p in tmp_path.glob("predictions-*.jsonl"))
    assert len(rotated) == 3
    kept = read_events(tmp_path)
    assert kept[-1]["i"] == 499  # the newest events survive
    assert kept[0]["i"] > 0  # the oldest were deleted


def test_event_fields_and_timestamp(tmp_path):
    log = EventLog(tmp_path)
    log.write("prediction", {"request_id": "r1", "model": {"name": "m", "version": "1"}})
    log.close()
    (e,) = read_events(tmp_path)
    assert e["event"] == "prediction" and e["request_id"] == "r1" and e["model"]["name"] == "m"
    assert e["@timestamp"].endswith("+00:00")
    assert set(e) == {"event", "request_id", "model", "@timestamp"}


def test_writer_reopens_after_external_rotation(tmp_path):
    log = EventLog(tmp_path)
    log.write("prediction", {"i": 1})
    os.rename(tmp_path / ACTIVE_NAME, tmp_path / "predictions-old.jsonl")  # e.g. logrotate
    log.write("prediction", {"i": 2})
    log.close()
    assert [e["i"] for e in read_events(tmp_path / ".")] == [1, 2]
    assert (tmp_path / ACTIVE_NAME).exists()


def test_write_many_formats_like_write_and_keeps_lines_whole(tmp_path):
    log = EventLog(tmp_path, max_bytes=3000, backup_count=100)
    log.write("prediction", {"i": -1, "nested": {"a": [1, 2]}})
    for b in range(30):
        log.write_many([("prediction", {"i": b * 10 + j, "nested": {"a": [1, 2]}}) for j in range(10)])
    log.close()
    events = read_events(tmp_path)
    assert sorted(e["i"] for e in events) == list(range(-1, 300))
    first, other = events[0], next(e for e in events if e["i"] == 0)
    assert set(first) == set(other) and first["nested"] == other["nested"]


def test_lines_are_the_bytes_python_json_logger_writes(tmp_path):
    """write_many encodes with orjson directly; python-json-logger's formatter, fed the same record,
    must give the same line but for the timestamp's value."""
    import logging
    import re

    from mlpulse.events import json_safe

    events = [
        ("prediction", {"request_id": "r1", "model": {"name": "m", "version": "1"}, "record_index": 0,
                        "batch_size": 2, "inputs": {"x": 1.5, "n": None, "big": 2**62, "s": "é\u2028\"q"},
                        "prediction": {"value": 0.25, "class": "yes", "probabilities": {"no": 0.75, "yes": 0.25}},
                        "latency_ms": 1.234, "violations": [{"feature": "x", "field": "x", "reason": "out_of_range"}]}),
        ("prediction.refused", {"request_id": "r2", "raw_inputs": "{\"a\": [1, {}]}", "violations": []}),
        ("request.refused", {"reason": "malformed_json", "detail": "x" * 5000, "body_bytes": 7}),
        ("prediction", {"inputs": {"huge": 2**80, "bad": "\ud800"}}),  # orjson refuses: json_safe
    ]
    log = EventLog(tmp_path)
    log.write_many(events)
    log.close()
    written = (tmp_path / ACTIVE_NAME).read_bytes().splitlines(keepends=True)
    assert len(written) == len(events)
    stamp = re.compile(rb'"@timestamp":"[^"]+"')
    for line, (event, fields) in zip(written, events):
        record = logging.LogRecord("t", logging.INFO, "", 0, event, None, None)
        record.__dict__.update(fields)
        try:
            expected = (log.handler.formatter.format(record) + "\n").encode()
        except TypeError:
            record = logging.LogRecord("t", logging.INFO, "", 0, event, None, None)
            record.__dict__.update(json_safe(fields))
            expected = (log.handler.formatter.format(record) + "\n").encode()
        assert stamp.sub(b"T", line) == stamp.sub(b"T", expected)
        assert stamp.search(line) and b'"@timestamp":"20' in line
