"""A harmless covariate shift does not page: real processes on 127.0.0.1 (the service under
gunicorn with two workers, the exporter, Prometheus, Alertmanager and the webhook receiver).

The shift sends only older applicants (records of the synthetic credit data selected on age, so
the relation between inputs and default is untouched): age and credit history drift, FeatureDrift
fires, but the model is no worse on them, so the label-free estimate holds. The drift alerts then
carry impact="none" and Alertmanager routes them to the informational receiver `ds-info`: the
webhook sees them under that receiver only, nothing reaches a paging receiver, and
EstimatedQualityDropping stays quiet. Time is compressed as in test_alerting_e2e.py (the rules'
1h window is the exporter's 30s window here, every `for` 3 s).
"""

import json
import threading
import time

import pytest
import requests

from model_service.data import generate, to_records
from native_stack.monitoring import ALERTMANAGER, PROMETHEUS
from native_stack.processes import Stack
from native_stack.traffic import send
from tests.helpers import start_alerting_stack, wait_for

pytestmark = pytest.mark.integration
WINDOW = "30s"
DRIFT_ALERTS = {"FeatureDrift", "PredictionDrift", "DriftShareHigh", "UnseenCategories", "FeatureOutOfRange"}
QUIET_RECEIVERS = {"watchdog", "ds-info"}  # the heartbeat, and information


class Traffic(threading.Thread):
    """Steady traffic: baseline records, or after ``shift()`` only applicants aged 55 and over."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.older, self.stopped = url, False, threading.Event()

    def run(self) -> None:
        seed = 0
        session = requests.Session()
        while not self.stopped.is_set():
            seed += 1
            frame = generate(400 if self.older else 100, seed=2000 + seed)
            if self.older:
                frame = frame[frame["age"] >= 55].head(100)
            send(self.url, to_records(frame), batch=10, concurrency=2, session=session)
            time.sleep(0.2)


def payloads(path):
    """Every notification the webhook received (receiver and alerts)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER), reason="Debian's prometheus / prometheus-alertmanager "
                    "not installed (make test installs them)")
def test_a_harmless_shift_is_routed_as_information_while_estimated_quality_holds(bundle_dir, tmp_path):
    with Stack() as stack:
        run = start_alerting_stack(stack, bundle_dir, tmp_path, WINDOW)
        mon = run.mon
        traffic = Traffic(run.url)
        traffic.start()
        try:
            # 1. Baseline: the window fills, the estimate exists and holds.
            wait_for(lambda: mon.query('model_version:mlpulse_quality_impact:1h{impact="none"}'), 90,
                     "the estimate to hold on baseline traffic")
            accuracy = mon.query(f'mlpulse_quality_estimated{{window="{WINDOW}", metric="accuracy"}}')
            assert 0.7 < float(accuracy[0]["value"][1]) < 0.95

            # 2. The harmless shift: FeatureDrift reaches the webhook, under ds-info only.
            traffic.older = True

            def drift_notifications():
                return [(p["receiver"], a) for p in payloads(mon.notifications) for a in p["alerts"]
                        if a["labels"]["alertname"] in DRIFT_ALERTS and a["status"] == "firing"]

            got = wait_for(lambda: (d := drift_notifications()) and {a["labels"].get("feature") for _, a in d}
                           >= {"age"} and d, 90, "FeatureDrift of age at the webhook")
            time.sleep(5)  # let every drift alert of the shift arrive (group_interval 2s)
            got = drift_notifications()
            assert "age" in {a["labels"].get("feature") for _, a in got}
            for receiver, alert in got:
                assert receiver == "ds-info", (receiver, alert["labels"])
                assert alert["labels"]["impact"] == "none", alert["labels"]
            # Alertmanager holds the same alerts, routed to ds-info.
            am = [a for a in mon.alerts() if a["labels"]["alertname"] in DRIFT_ALERTS]
            assert am and all([r["name"] for r in a["receivers"]] == ["ds-info"] for a in am), am
            # The estimate still holds on the shifted window, and nothing paged anyone.
            assert mon.query('model_version:mlpulse_quality_impact:1h{impact="none"}')
            alerts = requests.get(f"{mon.prometheus}/api/v1/alerts", auth=mon.prometheus_auth,
                                  timeout=5).json()["data"]["alerts"]
            assert not [a for a in alerts if a["labels"]["alertname"] == "EstimatedQualityDropping"]
            # Nothing of the shift paged anyone (latency alerts of a loaded machine are not ours).
            paged = [(p["receiver"], a["labels"]["alertname"]) for p in payloads(mon.notifications)
                     for a in p["alerts"] if p["receiver"] not in QUIET_RECEIVERS
                     and a["labels"]["alertname"] in DRIFT_ALERTS | {"EstimatedQualityDropping"}]
            assert paged == [], paged
        finally:
            traffic.stopped.set()
            traffic.join(60)
