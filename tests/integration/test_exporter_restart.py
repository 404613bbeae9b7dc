"""The exporter killed mid-stream (SIGKILL, no goodbye) and started again from its checkpoint: its
window holds every record exactly once, neither counted twice nor skipped."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from model_service.data import generate, to_records
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.traffic import send
from tests.helpers import samples, wait_for

pytestmark = pytest.mark.integration
ML = {"model": "credit-default", "version": "1.0.0"}


def window_count(url: str) -> float:
    m = samples(requests.get(url, timeout=5).text)
    found = [v for (name, lab), v in m.items() if name == "mlpulse_window_predictions" and dict(lab)["window"] == "1h"]
    return found[0] if found else 0.0


def test_a_killed_exporter_resumes_without_double_count_or_skip(bundle_dir, tmp_path):
    port, exporter_port = free_port(), free_port()
    url, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{exporter_port}/metrics"
    env = exporter_env(tmp_path / "events", bundle_dir, exporter_port, tmp_path / "checkpoint.json",
                       MLPULSE_EXPORTER_WINDOWS="1h", MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_START="beginning",
                       MLPULSE_EXPORTER_EVALUATE_EVERY="0.5s", MLPULSE_EXPORTER_POLL_EVERY="0.1s",
                       MLPULSE_EXPORTER_CHECKPOINT_EVERY="0.3s")
    records = to_records(generate(3000, seed=91))
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, tmp_path / "events", tmp_path / "mp", port, workers=2),
                      tmp_path / "service.log")
        exporter = start_exporter(stack, env, tmp_path / "exporter.log")
        sent = []
        traffic = threading.Thread(target=lambda: sent.append(send(url, records, batch=10, concurrency=2, rate=60)))
        traffic.start()
        wait_for(lambda: window_count(metrics) > 500, 60, "the exporter reading the first records")
        time.sleep(1.0)  # at least one checkpoint since
        exporter.popen.send_signal(signal.SIGKILL)
        exporter.popen.wait()
        time.sleep(1.5)  # records keep arriving while it is down
        start_exporter(stack, env, tmp_path / "exporter-2.log")
        traffic.join()
        assert sent == [{200: len(records) // 10}]
        wait_for(lambda: window_count(metrics) == len(records), 60, f"a window of exactly {len(records)} records")
        time.sleep(2)  # and it stays exact: nothing read twice later
        assert window_count(metrics) == len(records)
