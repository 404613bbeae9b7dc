"""Prometheus and Alertmanager down and back: the service keeps serving while either is gone, and an
alert that fired during Alertmanager's outage reaches the receiver once it is back."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import requests

from native_stack.monitoring import ALERTMANAGER, PROMETHEUS
from native_stack.processes import Stack, wait_http
from native_stack.scenarios import records_for
from native_stack.traffic import send
from tests.helpers import start_alerting_stack, wait_for

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
    with Stack() as stack:
        run = start_alerting_stack(stack, bundle_dir, tmp_path, WINDOW, for_override="0s")
        mon = run.mon
        am = next(p for p in stack.processes if p.name == "alertmanager")
        prom = next(p for p in stack.processes if p.name == "prometheus")
        traffic = Traffic(run.url)
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
