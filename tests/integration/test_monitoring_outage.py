"""Prometheus and Alertmanager down and back: the service keeps serving while either is gone, and an
alert that fired during Alertmanager's outage reaches the receiver once it is back."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import requests

from native_stack.monitoring import ALERTMANAGER, PROMETHEUS, start_monitoring
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service, wait_http
from native_stack.scenarios import records_for
from native_stack.traffic import send
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
WINDOW = "20s"


class Traffic(threading.Thread):
    """Scenario traffic in the background, every answer counted."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.scenario, self.stopped, self.statuses = url, "baseline", threading.Event(), Counter()

    def run(self) -> None:
        k = 0
        while not self.stopped.is_set():
            self.statuses.update(send(self.url, records_for([self.scenario], 50, seed=k), batch=10, concurrency=2))
            k += 1
            self.stopped.wait(0.2)


def delivered(path, alertname: str) -> bool:
    if not path.exists():
        return False
    return any(a["labels"]["alertname"] == alertname and a["status"] == "firing"
               for line in path.read_text().splitlines() for a in json.loads(line)["alerts"])


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER), reason="Debian's prometheus / prometheus-alertmanager "
                    "not installed (make test installs them)")
def test_serving_survives_monitoring_outages_and_alerts_arrive_after(bundle_dir, tmp_path):
    svc, exp = free_port(), free_port()
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, tmp_path / "events", tmp_path / "mp", svc, workers=2),
                      tmp_path / "service.log")
        start_exporter(stack, exporter_env(tmp_path / "events", bundle_dir, exp, None, MLPULSE_EXPORTER_WINDOWS=WINDOW,
                                           MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_EVALUATE_EVERY="1s",
                                           MLPULSE_EXPORTER_POLL_EVERY="0.2s"), tmp_path / "exporter.log")
        mon = start_monitoring(stack, tmp_path, {"model-service": f"127.0.0.1:{svc}",
                                                 "drift-exporter": f"127.0.0.1:{exp}"},
                               window=WINDOW, for_override="0s")
        am = next(p for p in stack.processes if p.name == "alertmanager")
        prom = next(p for p in stack.processes if p.name == "prometheus")
        traffic = Traffic(f"http://127.0.0.1:{svc}")
        traffic.start()
        try:
            # Alertmanager gone: a drift fires in Prometheus and cannot be delivered; serving goes on.
            am.stop()
            traffic.scenario = "unit_change"
            wait_for(lambda: any(a["labels"]["alertname"] == "FeatureDrift" and a["state"] == "firing"
                                 for a in requests.get(f"{mon.prometheus}/api/v1/alerts", auth=mon.prometheus_auth,
                                                       timeout=5).json()["data"]["alerts"]),
                     90, "FeatureDrift firing in Prometheus")
            assert not delivered(mon.notifications, "FeatureDrift")
            # Back: Prometheus resends what is firing, and it reaches the receiver.
            restarted = stack.start("alertmanager", am.popen.args, am.log)
            wait_http(f"{mon.alertmanager}/-/ready", 30, restarted.popen, auth=mon.alertmanager_auth)
            wait_for(lambda: delivered(mon.notifications, "FeatureDrift"), 120, "FeatureDrift delivered after the outage")

            # Prometheus gone and back: serving goes on, and so does scraping afterwards.
            prom.stop()
            served = sum(traffic.statuses.values())
            wait_for(lambda: sum(traffic.statuses.values()) > served + 10, 60, "requests served while Prometheus is down")
            restarted = stack.start("prometheus", prom.popen.args, prom.log)
            wait_http(f"{mon.prometheus}/-/ready", 60, restarted.popen, auth=mon.prometheus_auth)
            wait_for(lambda: mon.query('up{job="model-service"} == 1'), 60, "the service scraped again")
        finally:
            traffic.stopped.set()
            traffic.join(60)
        assert set(traffic.statuses) == {200}, traffic.statuses
