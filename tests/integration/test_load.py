"""A bounded load test on loopback: the real service under gunicorn with several workers, valid and
invalid traffic at once for a fixed time (60 s, ``MLPULSE_LOAD_SECONDS`` to change it). Afterwards
the answers, the scraped counters, the histogram counts and the event lines agree exactly. A
chunked body over the size limit is refused by the real server, not cut."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import pytest
import requests

from model_service.data import generate, to_records
from native_stack.processes import Stack, free_port, service_env, start_service
from tests.helpers import read_events, samples, value

pytestmark = pytest.mark.integration
SECONDS = float(os.environ.get("MLPULSE_LOAD_SECONDS", "60"))
ML = {"model": "credit-default", "version": "1.0.0"}


def test_counters_histograms_and_lines_agree_under_concurrent_load(bundle_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    records = to_records(generate(500, seed=77))
    tally: Counter = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def valid(seed: int) -> None:
        s, i = requests.Session(), seed
        while time.monotonic() < deadline:
            n = 1 + i % 7
            batch = [records[(i + k) % len(records)] for k in range(n)]
            r = s.post(f"{url}/v1/predict", json=batch if n > 1 else batch[0], timeout=30)
            with lock:
                tally[("status", r.status_code)] += 1
                if r.status_code == 200:
                    tally["scored"] += n
            i += 1

    bad_bodies = [
        (b'{"age": ', "application/json", "malformed_json", 0),
        (b"[]", "application/json", "empty_batch", 0),
        (json.dumps({"age": "old"}).encode(), "application/json", "invalid_records", 1),
        (json.dumps([records[0], {"nope": 1}]).encode(), "application/json", "invalid_records", 2),
        (json.dumps(records[0]).encode(), "text/plain", "unsupported_media_type", 0),
        (b"[" * 40 + b"]" * 40, "application/json", "body_too_deep", 0),
    ]

    def invalid(seed: int) -> None:
        s, i = requests.Session(), seed
        while time.monotonic() < deadline:
            body, ctype, reason, n_records = bad_bodies[i % len(bad_bodies)]
            r = s.post(f"{url}/v1/predict", data=body, headers={"Content-Type": ctype}, timeout=30)
            with lock:
                tally[("status", r.status_code)] += 1
                tally[("reason", reason)] += 1
                tally["refused"] += n_records
            i += 1

    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, tmp_path / "events", tmp_path / "mp", port, workers=3),
                      tmp_path / "service.log")
        threads = [threading.Thread(target=valid, args=(k * 11,)) for k in range(3)]
        threads += [threading.Thread(target=invalid, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        # A chunked body (no Content-Length) over the limit: refused by the real server.
        big = json.dumps(records * 6).encode()
        assert len(big) > 1 << 20

        def chunks():
            for i in range(0, len(big), 64 << 10):
                yield big[i:i + (64 << 10)]
        r = requests.post(f"{url}/v1/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 413, r.text
        tally[("reason", "body_too_large")] += 1

        m = samples(requests.get(f"{url}/metrics", timeout=10).text)

    assert tally["scored"] > 100 and tally[("status", 500)] == 0
    assert value(m, "mlpulse_records_total", outcome="scored", **ML) == tally["scored"]
    assert value(m, "mlpulse_records_total", outcome="refused", **ML) == tally["refused"]
    assert value(m, "mlpulse_prediction_count", **ML) == tally["scored"]
    for reason in ("malformed_json", "empty_batch", "invalid_records", "unsupported_media_type", "body_too_deep",
                   "body_too_large"):
        assert value(m, "mlpulse_request_errors_total", reason=reason, **ML) == tally[("reason", reason)], reason
    requests_total = sum(v for k, v in tally.items() if isinstance(k, tuple) and k[0] == "status")
    assert value(m, "mlpulse_http_requests_total", route="/v1/predict") == requests_total + 1  # + the chunked one
    assert value(m, "mlpulse_event_write_errors_total", **ML) == 0

    events = Counter(e["event"] for e in read_events(tmp_path / "events"))
    assert events["prediction"] == tally["scored"]
    assert events["prediction.refused"] == tally["refused"]
    request_level = sum(tally[("reason", r)] for r in ("malformed_json", "empty_batch", "unsupported_media_type",
                                                        "body_too_deep", "body_too_large"))
    assert events["request.refused"] == request_level
