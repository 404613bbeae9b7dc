"""Each traffic scenario, played against the real service and exporter, moves exactly what it
declares (``native_stack.scenarios``) and nothing else: the drifted input features, the missing and
out-of-range shares, refusals, and records of a model version the exporter has no reference for.
The alerts each scenario declares are checked as the conditions of their rules on the scenario's
own series, with the committed thresholds (``prometheus/rules/thresholds.yml``): the rules read
5-minute rates and a 15-minute offset that a suite cannot wait for, so firing them is proven by
promtool (``prometheus/tests``) and, live for a whole schedule, by ``test_demo.py``."""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from mlpulse.grafana.dashboards import load_thresholds
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.scenarios import SCENARIOS, records_for
from native_stack.schedule import Schedule
from native_stack.traffic import send
from tests.helpers import ROOT, samples, value, wait_for

pytestmark = pytest.mark.integration
WINDOW = "10m"  # a fresh exporter per scenario (it skips what was written before it started)
N = 1000
ML = {"model": "credit-default", "version": "1.0.0"}
OUTPUTS = {"_prediction", "_predicted_class"}  # may follow an input's drift: not a scenario's own effect
T = load_thresholds(ROOT / "prometheus" / "rules" / "thresholds.yml")
# Raised through delayed labels, not by the scenario's own series: proven by test_quality_alerts.py.
QUALITY_ALERTS = {"ModelQualityBelowBaseline"}


def data_alerts(drifted: set, missing: set, outside: set, unseen: set, refused: bool, other_model: bool) -> set:
    """The data alerts whose rule conditions hold for a scenario's own series (see the module)."""
    return ({"FeatureDrift"} if drifted else set()) | ({"MissingValuesSpike"} if missing else set()) \
        | ({"FeatureOutOfRange"} if outside else set()) | ({"UnseenCategories"} if unseen else set()) \
        | ({"ClientErrorRatioHigh", "InputViolationsSpike"} if refused else set()) \
        | ({"ModelVersionChanged", "DriftReferenceMissing"} if other_model else set())


def scrape(url: str) -> dict:
    return samples(requests.get(url, timeout=10).text)


def window(m: dict, metric: str) -> dict[str, float]:
    return {dict(lab)["feature"]: v for (name, lab), v in m.items()
            if name == metric and dict(lab).get("window") == WINDOW and dict(lab).get("version") == "1.0.0"}


def window_count(m: dict) -> float:
    found = [v for (name, lab), v in m.items() if name == "mlpulse_window_predictions"
             and dict(lab)["window"] == WINDOW and dict(lab)["version"] == "1.0.0"]
    return found[0] if found else 0.0


def scrape_until(url: str, predicate, timeout: float, what: str) -> dict:
    """The first scrape of ``url`` for which ``predicate`` holds."""
    def attempt():
        m = scrape(url)
        return m if predicate(m) else None
    return wait_for(attempt, timeout, what)


def unknown(m: dict) -> float:
    return value(m, "mlpulse_exporter_events_total", outcome="unknown_model")


def test_every_scenario_moves_exactly_what_it_declares(bundle_dir, tmp_path):
    port, other_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    other_bundle = tmp_path / "other-bundle"  # the same model under a version the exporter does not know
    shutil.copytree(bundle_dir, other_bundle)
    md = json.loads((other_bundle / "metadata.json").read_text())
    md["version"] = "9.9.9"
    (other_bundle / "metadata.json").write_text(json.dumps(md))
    events = tmp_path / "events"
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, events, tmp_path / "mp", port, workers=2), tmp_path / "svc.log")
        start_service(stack, service_env(other_bundle, events, tmp_path / "mp2", other_port, workers=1),
                      tmp_path / "other.log")
        for k, (name, sc) in enumerate(SCENARIOS.items()):
            if sc.service_down:  # stopping the service, and the inhibition it brings: test_alerting_e2e
                continue
            exporter_port = free_port()
            metrics = f"http://127.0.0.1:{exporter_port}/metrics"
            exporter = start_exporter(stack, exporter_env(events, bundle_dir, exporter_port, MLPULSE_EXPORTER_START="end",
                                                          MLPULSE_EXPORTER_WINDOWS=WINDOW, MLPULSE_EXPORTER_SLICE="1s",
                                                          MLPULSE_EXPORTER_EVALUATE_EVERY="0.5s",
                                                          MLPULSE_EXPORTER_POLL_EVERY="0.2s"),
                                      tmp_path / f"exporter-{name}.log")
            scrape_until(metrics, lambda m: "mlpulse_exporter_events_total" in {n for n, _ in m}, 30, "the exporter")
            before = scrape(metrics)
            records = records_for([name], N, seed=500 + k)
            target = f"http://127.0.0.1:{other_port}" if sc.other_model else url
            statuses = send(target, records, batch=25, concurrency=4)
            if sc.refused:
                assert statuses == {422: N // 25}, name
                m = scrape(f"{url}/metrics")
                assert value(m, "mlpulse_records_total", outcome="refused", **ML) >= N, name
                m = scrape_until(metrics, lambda m: value(m, "mlpulse_exporter_events_total", outcome="refused") == N,
                                 30, "the refused records read by the exporter")
                assert window_count(m) == 0, "refused records must not enter the window"
                assert 1.0 > T["client_error_ratio"] and 1.0 > T["violation_ratio"]  # every request, every record
                assert data_alerts(set(), set(), set(), set(), True, False) == set(sc.alerts) - QUALITY_ALERTS, name
                exporter.stop()
                continue
            assert statuses == {200: N // 25}, name
            if sc.other_model:
                counted = unknown(before) + N
                m = scrape_until(metrics, lambda m, counted=counted: unknown(m) == counted, 30,
                                 "the other version's records counted as unknown_model")
                assert window_count(m) == 0, "records of another version must not enter 1.0.0's window"
                info = samples(requests.get(f"{target}/metrics", timeout=10).text)
                assert value(info, "mlpulse_model_info", model="credit-default", version="9.9.9") == 1
                assert data_alerts(set(), set(), set(), set(), False, True) == set(sc.alerts) - QUALITY_ALERTS, name
                exporter.stop()
                continue
            m = scrape_until(metrics, lambda m: window_count(m) == N, 40, f"the whole {name} window")
            drifted = {f for f, v in window(m, "mlpulse_drift_detected").items() if v == 1} - OUTPUTS
            assert drifted == set(sc.drifted), name
            missing = {f for f, v in window(m, "mlpulse_drift_missing_ratio").items() if v > T["missing_ratio"]}
            assert missing - OUTPUTS == set(sc.missing), name
            outside = {f for f, v in window(m, "mlpulse_drift_out_of_range_ratio").items()
                       if v > T["out_of_range_ratio"]} - OUTPUTS
            assert outside == set(sc.out_of_range), name
            unseen = {f for f, v in window(m, "mlpulse_drift_unseen_ratio").items() if v > T["unseen_ratio"]}
            assert data_alerts(drifted, missing, outside, unseen, False, False) == set(sc.alerts) - QUALITY_ALERTS, name
            exporter.stop()


def test_schedules_load_and_name_only_known_scenarios(tmp_path):
    for name in ("demo", "ci"):
        schedule = Schedule.load(name)
        assert schedule.phases and all(s in SCENARIOS for p in schedule.phases for s in p.scenarios)
    bad = tmp_path / "bad.yml"
    bad.write_text("phases:\n  - {scenarios: [nope], seconds: 1, rate: 1}\n")
    with pytest.raises(ValueError, match="unknown scenarios"):
        Schedule.load(bad)
