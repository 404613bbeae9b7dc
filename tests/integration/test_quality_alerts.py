"""Delayed labels reach the alert receiver: the service under gunicorn (2 workers) takes labels on
POST /v1/feedback, the exporter joins them to the predictions, Prometheus evaluates the committed
rules (the ``1h`` window replaced by ``30s`` and every ``for`` by 3 s, as in test_alerting_e2e.py) and
Alertmanager sends ModelQualityBelowBaseline to the project's webhook when the truth moves under
unchanged inputs (concept drift), while the drift alerts stay quiet."""

import json
import threading
import time

import pytest
import requests

from native_stack.labels import DelayedLabels
from native_stack.monitoring import ALERTMANAGER, PROMETHEUS
from native_stack.processes import Stack
from native_stack.schedule import Phase, play_phase
from tests.helpers import samples, start_alerting_stack, wait_for

pytestmark = pytest.mark.integration
WINDOW = "30s"
DRIFT_ALERTS = {"FeatureDrift", "PredictionDrift", "DriftShareHigh"}


def _record() -> dict:
    from model_service.data import generate, to_records

    return to_records(generate(1, seed=99))[0]


def received(path) -> list[dict]:
    if not path.exists():
        return []
    return [a for line in path.read_text().splitlines() for a in json.loads(line)["alerts"]]


def quality(exporter: str, metric: str) -> float | None:
    m = samples(requests.get(exporter, timeout=5).text)
    found = [v for (name, lab), v in m.items() if name == "mlpulse_quality_realized"
             and dict(lab).get("metric") == metric and dict(lab).get("class") == "" and dict(lab)["window"] == WINDOW]
    return found[0] if found else None


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER), reason="Debian's prometheus / prometheus-alertmanager "
                    "not installed (make test installs them)")
def test_delayed_labels_showing_a_quality_drop_reach_the_receiver(bundle_dir, tmp_path):
    with Stack() as stack:
        run = start_alerting_stack(stack, bundle_dir, tmp_path, WINDOW, MLPULSE_EXPORTER_QUALITY_WINDOWS=WINDOW,
                                   MLPULSE_EXPORTER_MIN_LABELS="200")
        url, exporter, mon = run.url, run.exporter, run.mon
        labels = DelayedLabels(url, delay=2.0)
        stop = threading.Event()
        phase = {"now": "baseline"}

        def traffic() -> None:
            seed = 0
            while not stop.is_set():
                seed += 1
                play_phase(url, Phase(phase["now"], (phase["now"],), 5.0, rate=5, batch=20, labels=1.0,
                                      label_delay=2.0), 2000 + seed, stop, labels=labels)

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            # 1. Baseline: labels join, realized accuracy near the holdout's, nothing pages.
            baseline = json.loads((bundle_dir / "metadata.json").read_text())["quality_baseline"]
            accuracy = next(b["value"] for b in baseline if b["metric"] == "accuracy" and b["class"] == "")
            got = wait_for(lambda: quality(exporter, "accuracy"), 60, "realized accuracy on baseline traffic")
            assert abs(got - accuracy) < 0.05, (got, accuracy)
            wait_for(lambda: mon.query('mlpulse_quality_baseline{metric="accuracy"}'), 30, "the baseline scraped")
            time.sleep(15)  # longer than the window's refill, the for and the group timings
            names = {a["labels"]["alertname"] for a in received(mon.notifications)}
            assert "ModelQualityBelowBaseline" not in names, names

            # 2. Concept drift: the same inputs, another truth. Labels show it, drift does not.
            phase["now"] = "concept_drift"
            alert = wait_for(lambda: next((a for a in received(mon.notifications)
                                           if a["labels"]["alertname"] == "ModelQualityBelowBaseline"
                                           and a["status"] == "firing"), None),
                             90, "ModelQualityBelowBaseline at the webhook")
            assert alert["labels"]["team"] == "ds" and alert["labels"]["model"] == "credit-default"
            assert alert["labels"]["metric"] in {"accuracy", "roc_auc", "log_loss", "brier"}
            assert alert["annotations"]["runbook_url"].endswith("#modelqualitybelowbaseline")
            # Once the window holds only the new world's labels, accuracy itself is far below the line.
            wait_for(lambda: (quality(exporter, "accuracy") or 1) < accuracy * 0.9, 40, "realized accuracy to drop")
            names = {a["labels"]["alertname"] for a in received(mon.notifications)}
            assert not names & DRIFT_ALERTS, f"inputs did not move, yet {names & DRIFT_ALERTS}"
            m = samples(requests.get(exporter, timeout=5).text)
            events = {dict(lab)["outcome"]: v for (n, lab), v in m.items()
                      if n == "mlpulse_exporter_feedback_events_total"}
            assert events["joined"] > 1000 and events["invalid"] == 0 and events["unknown_model"] == 0
            assert labels.statuses.get(200, 0) > 0 and set(labels.statuses) == {200}, labels.statuses
            # Idempotent across the workers: the same label sent again, whichever worker answers.
            r = requests.post(f"{url}/v1/predict", json=[{}], timeout=10)
            assert r.status_code == 422  # a refused request leaves nothing to label
            rid = requests.post(f"{url}/v1/predict", json={**_record()}, timeout=10).headers["X-Request-ID"]
            item = {"request_id": rid, "label": "default"}
            outcomes = [requests.post(f"{url}/v1/feedback", json=item, timeout=10).json()["results"][0]["outcome"]
                        for _ in range(4)]
            assert outcomes == ["new", "duplicate", "duplicate", "duplicate"]
            assert requests.post(f"{url}/v1/feedback", json={"request_id": r.headers["X-Request-ID"],
                                                              "label": "default"}, timeout=10).status_code == 404
        finally:
            stop.set()
            thread.join(timeout=30)
            labels.close()
