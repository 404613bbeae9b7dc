"""The real service under gunicorn with several workers: exact metrics, whole event lines, and
bounded multiprocess files across worker restarts."""

import json
import time

import pytest
import requests

from model_service.data import generate, to_records
from native_stack.processes import Stack, free_port, service_env, start_service
from native_stack.traffic import send
from tests.helpers import read_events, samples, value

pytestmark = pytest.mark.integration
ML = {"model": "credit-default", "version": "1.0.0"}


@pytest.fixture
def service(bundle_dir, tmp_path):
    def start(workers=2, **extra):
        port = free_port()
        env = service_env(bundle_dir, tmp_path / "events", tmp_path / "multiproc", port, workers, **extra)
        start_service(stack, env, tmp_path / "service.log")
        return f"http://127.0.0.1:{port}", env

    with Stack() as stack:
        yield start


def scrape(url):
    return samples(requests.get(f"{url}/metrics", timeout=10).text)


def test_counts_and_events_are_exact_across_workers(service, tmp_path):
    url, env = service(workers=3)
    session = requests.Session()
    records = to_records(generate(80, seed=41))
    singles, batches = records[:60], [records[60 + 4 * i: 64 + 4 * i] for i in range(5)]
    assert send(url, singles, concurrency=6, session=session) == {200: 60}
    for b in batches:
        assert session.post(f"{url}/v1/predict", json=b, timeout=10).status_code == 200
    bad = [dict(r, age="old") for r in records[:10]]
    assert send(url, bad, concurrency=4, session=session) == {422: 10}
    for _ in range(3):
        r = session.post(f"{url}/v1/predict", data="{oops", headers={"Content-Type": "application/json"})
        assert r.status_code == 400

    # Whichever worker answers the scrape, it reports every worker's totals.
    for _ in range(4):
        m = scrape(url)
        post = {"method": "POST", "route": "/v1/predict"}
        assert value(m, "mlpulse_http_requests_total", status="200", **post) == 65
        assert value(m, "mlpulse_http_requests_total", status="422", **post) == 10
        assert value(m, "mlpulse_http_requests_total", status="400", **post) == 3
        assert value(m, "mlpulse_http_request_duration_seconds_count", status="200", **post) == 65
        assert value(m, "mlpulse_http_request_duration_seconds_bucket", status="200", le="+Inf", **post) == 65
        assert value(m, "mlpulse_prediction_count", **ML) == 80
        assert value(m, "mlpulse_prediction_bucket", le="+Inf", **ML) == 80
        assert value(m, "mlpulse_batch_size_count", **ML) == 65
        assert value(m, "mlpulse_records_total", outcome="scored", **ML) == 80
        assert value(m, "mlpulse_records_total", outcome="refused", **ML) == 10
        assert value(m, "mlpulse_input_violations_total", feature="age", reason="wrong_type", **ML) == 10
        assert value(m, "mlpulse_request_errors_total", reason="malformed_json", **ML) == 3
        assert value(m, "mlpulse_http_requests_in_flight") == 1  # the scrape itself
        assert value(m, "mlpulse_model_info", **ML) == 1
    pids = {dict(lab)["pid"] for (name, lab) in m if name == "mlpulse_process_resident_memory_bytes"}
    assert len(pids) == 3, "one series per live worker"
    assert all(value(m, "mlpulse_process_resident_memory_bytes", pid=p) > 10e6 for p in pids)

    events = read_events(tmp_path / "events")  # every line parses: none cut or interleaved
    kinds = [e["event"] for e in events]
    assert kinds.count("prediction") == 80
    assert kinds.count("prediction.refused") == 10
    assert kinds.count("request.refused") == 3
    assert sorted(json.dumps(e["inputs"], sort_keys=True) for e in events if e["event"] == "prediction") == sorted(
        json.dumps(r, sort_keys=True) for r in records)


def test_worker_restarts_keep_files_bounded_and_counters_monotonic(service, tmp_path):
    url, env = service(workers=2, MODEL_SERVICE_MAX_REQUESTS="20")
    multiproc = tmp_path / "multiproc"
    session = requests.Session()
    records = to_records(generate(40, seed=43))
    sent, previous, file_counts, scrape_seconds = 0, -1.0, [], []
    for _ in range(8):
        for rec in records:
            for _attempt in range(3):  # a connection may hit a worker as it recycles
                try:
                    r = session.post(f"{url}/v1/predict", json=rec, timeout=30)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            else:
                pytest.fail("the service refused three connections in a row")
            assert r.status_code == 200
            sent += 1
        time.sleep(0.3)  # let the master reap exited workers
        start = time.perf_counter()
        m = scrape(url)
        scrape_seconds.append(time.perf_counter() - start)
        total = value(m, "mlpulse_records_total", outcome="scored", **ML)
        assert total == sent, "no request lost or counted twice across restarts"
        assert total >= previous
        previous = total
        live = {dict(lab)["pid"] for (name, lab) in m if name == "mlpulse_process_cpu_seconds"}
        assert len(live) <= 3, "series of dead workers are dropped (one may be exiting)"
        file_counts.append(len(list(multiproc.glob("*.db"))))
    boots = (tmp_path / "service.log").read_text().count("Booting worker")
    assert boots >= 2 + 12, f"workers were recycled many times ({boots} boots)"
    # Without folding, every dead worker would leave its counter and histogram files behind.
    assert max(file_counts) <= 12, file_counts
    # No growth: the last count is within the first half's largest (every worker's files present).
    # A scrape during a recycle sees fewer, 7 instead of 12, and did so in both of the first two
    # rounds of one CI run, so a baseline of only the earliest rounds was flaky.
    assert file_counts[-1] <= max(file_counts[: len(file_counts) // 2]), file_counts
    assert sorted(scrape_seconds)[len(scrape_seconds) // 2] < 0.5
