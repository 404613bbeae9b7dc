"""The whole alerting path with real processes on 127.0.0.1: the service under gunicorn, the drift
exporter, Prometheus and Alertmanager from Debian's packages, and the project's webhook receiver.

Prometheus and Alertmanager run on copies generated from the committed files, which stay the
single source of truth; the copies differ only in targets, intervals, ``for`` (3 s), group
timings, and the drift window label (``1h`` in the rules, ``30s`` here so a drift can appear and
resolve within the test).
"""

import json
import threading
import time

import pytest
import requests

from model_service.data import SCENARIOS, generate, to_records
from native_stack.monitoring import ALERTMANAGER, PROMETHEUS
from native_stack.processes import Stack
from native_stack.traffic import send
from tests.helpers import start_alerting_stack, wait_for

pytestmark = pytest.mark.integration
WINDOW = "30s"
HEARTBEAT = {"Watchdog"}  # always firing by design: it proves the path works, it is no alert


class Traffic(threading.Thread):
    """Steady traffic of the current scenario until stopped, so no rate-based rule sees a gap."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.scenario, self.stopped = url, "baseline", threading.Event()

    def run(self) -> None:
        seed = 0
        session = requests.Session()
        while not self.stopped.is_set():
            seed += 1
            send(self.url, to_records(generate(100, seed=1000 + seed, scenario=self.scenario)), batch=10,
                 concurrency=2, session=session)
            time.sleep(0.2)


def notifications(path):
    """Every alert of every notification the webhook received, in order."""
    if not path.exists():
        return []
    return [a for line in path.read_text().splitlines() for a in json.loads(line)["alerts"]]


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER), reason="Debian's prometheus / prometheus-alertmanager "
                    "not installed (make test installs them)")
def test_drift_alert_reaches_the_receiver_resolves_and_is_inhibited_when_the_service_is_down(bundle_dir, tmp_path):
    with Stack() as stack:
        # Both servers behind basic auth, as in compose: Prometheus authenticates to Alertmanager
        # (and to itself) with the password files, the test with the passwords.
        run = start_alerting_stack(stack, bundle_dir, tmp_path, WINDOW)
        service, mon = run.service, run.mon
        received = mon.notifications
        prom_url, prom_auth = mon.prometheus, mon.prometheus_auth

        traffic = Traffic(run.url)
        traffic.start()
        try:
            # 1. Baseline: the rules are evaluated (the heartbeat fires) and nothing reaches the receiver.
            wait_for(lambda: any(a["labels"]["alertname"] == "Watchdog" and a["state"] == "firing" for a in
                                   requests.get(f"{prom_url}/api/v1/alerts", auth=prom_auth, timeout=5)
                                   .json()["data"]["alerts"]), 60, "the rules to be evaluated")
            time.sleep(35)  # longer than the window, the for and the group timings together
            noise = [a["labels"] for a in notifications(received) if a["labels"]["alertname"] not in HEARTBEAT]
            assert noise == [], f"baseline traffic raised alerts: {noise}"

            # 2. Drift: FeatureDrift arrives for exactly the shifted features, fully labelled.
            traffic.scenario = "drift"

            def drift_alerts(status):
                return {a["labels"]["feature"]: a for a in notifications(received)
                        if a["labels"]["alertname"] == "FeatureDrift" and a["status"] == status}

            firing = wait_for(lambda: (d := drift_alerts("firing")) and set(d) >= set(SCENARIOS["drift"]) and d,
                                120, "FeatureDrift for every shifted feature")
            assert set(firing) == set(SCENARIOS["drift"])
            for feature, alert in firing.items():
                labels, notes = alert["labels"], alert["annotations"]
                assert labels["severity"] == "warning" and labels["team"] == "ds"
                assert labels["model"] == "credit-default" and labels["version"] == "1.0.0"
                assert labels["stack"] == "mlpulse"  # external label of the committed config
                assert feature in notes["summary"] and "PSI" in notes["description"]
                assert notes["runbook_url"].endswith("docs/runbooks.md#featuredrift")

            # 3. Back to normal: the drift leaves the window and every FeatureDrift resolves.
            traffic.scenario = "baseline"
            wait_for(lambda: set(drift_alerts("resolved")) >= set(SCENARIOS["drift"]), 120,
                       "FeatureDrift resolved for every feature")

            # 4. Drift again, then the service dies: ModelServiceDown arrives and silences the drift.
            before = len(notifications(received))
            traffic.scenario = "drift"
            wait_for(lambda: any(a["labels"]["alertname"] == "FeatureDrift" and a["status"] == "firing"
                                   for a in notifications(received)[before:]), 120, "FeatureDrift again")
        finally:
            traffic.stopped.set()
            traffic.join(60)
        service.stop()
        down = wait_for(lambda: [a for a in notifications(received) if a["labels"]["alertname"] == "ModelServiceDown"
                                   and a["status"] == "firing"], 60, "ModelServiceDown")
        assert down[0]["labels"]["severity"] == "critical" and down[0]["labels"]["model"] == "credit-default"

        def drift_inhibited():
            alerts = requests.get(f"{mon.alertmanager}/api/v2/alerts",
                                  params={"filter": 'alertname="FeatureDrift"'}, auth=mon.alertmanager_auth,
                                  timeout=5).json()
            return alerts and all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]
                                  for a in alerts) and alerts

        inhibited = wait_for(drift_inhibited, 30, "FeatureDrift inhibited by ModelServiceDown")
        assert {a["labels"]["feature"] for a in inhibited} <= set(SCENARIOS["drift"])
