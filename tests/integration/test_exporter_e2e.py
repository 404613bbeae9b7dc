"""End to end: the real service under gunicorn writes events, the real exporter process reads
them, and its scraped metrics show no drift for baseline traffic and drift on exactly the shifted
features for shifted traffic."""

import time

import pytest
import requests

from model_service.data import SCENARIOS, generate, to_records
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.traffic import send
from tests.helpers import samples, value

pytestmark = pytest.mark.integration
ML = {"model": "credit-default", "version": "1.0.0"}
WINDOW = "20s"  # short windows so one test can show a clean baseline, then a clean shift


def wait_for(url, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = samples(requests.get(url, timeout=5).text)
        if predicate(m):
            return m
        time.sleep(0.5)
    raise AssertionError(f"condition not met within {timeout}s; last scrape had {len(m)} samples")


def drifted(m):
    return {dict(lab)["feature"] for (name, lab), v in m.items()
            if name == "mlpulse_drift_detected" and dict(lab)["window"] == WINDOW and v == 1}


def window_count(m):
    try:
        return value(m, "mlpulse_window_predictions", window=WINDOW, **ML)
    except AssertionError:
        return 0


def test_service_and_exporter(bundle_dir, tmp_path):
    port, exporter_port = free_port(), free_port()
    url, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{exporter_port}/metrics"
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, tmp_path / "events", tmp_path / "mp", port, workers=2),
                      tmp_path / "service.log")
        start_exporter(stack, exporter_env(tmp_path / "events", bundle_dir, exporter_port,
                                           tmp_path / "checkpoint.json",
                                           MLPULSE_EXPORTER_WINDOWS=WINDOW, MLPULSE_EXPORTER_SLICE="1s",
                                           MLPULSE_EXPORTER_EVALUATE_EVERY="1s", MLPULSE_EXPORTER_POLL_EVERY="0.2s"),
                       tmp_path / "exporter.log")
        n = 1500
        assert send(url, to_records(generate(n, seed=61)), batch=25, concurrency=4) == {200: n // 25}
        m = wait_for(metrics, lambda m: window_count(m) == n)
        assert drifted(m) == set(), "baseline traffic must show no drift"
        assert value(m, "mlpulse_drift_share", window=WINDOW, **ML) == 0
        assert value(m, "mlpulse_exporter_events_total", outcome="scored") == n

        # Let the baseline leave the window, then send shifted traffic.
        wait_for(metrics, lambda m: window_count(m) == 0, timeout=40)
        assert send(url, to_records(generate(n, seed=62, scenario="drift")), batch=25, concurrency=4) == {200: n // 25}
        m = wait_for(metrics, lambda m: window_count(m) == n)
        assert drifted(m) - {"_prediction", "_predicted_class"} == set(SCENARIOS["drift"])
        assert value(m, "mlpulse_drift_share", window=WINDOW, **ML) == pytest.approx(4 / 14)
        assert value(m, "mlpulse_exporter_events_total", outcome="scored") == 2 * n
        assert value(m, "mlpulse_exporter_lag_seconds") < 30
        assert value(m, "mlpulse_exporter_malformed_lines_total", kind="json") == 0
