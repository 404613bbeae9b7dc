"""Drift computed by Prometheus (docs/prometheus-drift.md) against the exporter, on the same events.

Two replicas of the service (gunicorn, bin metrics on) on 127.0.0.1, scraped every second by a real
Prometheus running the generated drift rules for a 15 s window and the committed alerts (their 1h
window read as 15 s, `for` 0s). Shifted traffic is split between the replicas; the recorded PSI,
JS distance and shares, summed over both replicas, must equal what the exporter's own code gives
on the event files both replicas wrote, to 1e-9; the window's values must be the same whole
numbers; FeatureDrift fires from this path, with no exporter running.
"""

from __future__ import annotations

import shutil
import time

import pytest
import requests

from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
from mlpulse.prometheus.drift_rules import JS, PSI, RULES_FILE, SOURCE, render_rules
from model_service.data import generate, to_records
from native_stack.monitoring import start_monitoring
from native_stack.processes import Stack, free_port, service_env, start_service
from native_stack.traffic import send
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

WINDOW = "15s"
STATS = ("mlpulse_drift_window_values", "mlpulse_drift_missing_ratio", "mlpulse_drift_out_of_range_ratio",
         "mlpulse_drift_unseen_ratio")


def query_at(mon, promql: str, at: float) -> list[dict]:
    r = requests.get(f"{mon.prometheus}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"},
                     auth=mon.prometheus_auth, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def by_feature(result: list[dict], *extra: str) -> dict[tuple[str, ...], float]:
    return {(s["metric"]["feature"], *(s["metric"][e] for e in extra)): float(s["value"][1]) for s in result}


def exporter_results(work, bundle_dir) -> dict[tuple[str, ...], float]:
    """The exporter over every event file of both replicas (copied side by side into one
    directory), one window holding all of them."""
    merged = work / "merged"
    merged.mkdir()
    for name in ("a", "b"):
        for path in (work / name / "events").glob("*.jsonl"):
            shutil.copyfile(path, merged / f"{name}-{path.name}")
    cfg = ExporterConfig(events=str(merged / "*.jsonl"), bundles=str(bundle_dir), checkpoint="", start="beginning",
                         windows="1h", slice="1s")
    cfg.validate()
    exporter = Exporter(cfg)
    try:
        assert exporter.poll() > 0
        exporter.evaluate()
        return {(m, lab["feature"], lab.get("statistic", "")): v for m, lab, v in exporter.results
                if "feature" in lab}
    finally:
        exporter.close()


def test_prometheus_drift_equals_the_exporters_on_two_replicas(bundle_dir, tmp_path):
    with Stack() as stack:
        ports = [free_port(), free_port()]
        for name, port, workers in (("a", ports[0], 2), ("b", ports[1], 1)):
            start_service(stack, service_env(bundle_dir, tmp_path / name / "events", tmp_path / name / "mp", port,
                                             workers=workers, MLPULSE_BIN_METRICS="1"), tmp_path / f"service-{name}.log")
        mon = start_monitoring(stack, tmp_path, {"model-service": [f"127.0.0.1:{p}" for p in ports]},
                               window=WINDOW, for_override="0s",
                               rules={RULES_FILE.name: render_rules([WINDOW])})
        # The window's first sample must come from before the traffic and after the first scrape of
        # both replicas: wait for both, then as long again as the window minus the traffic's time.
        wait_for(lambda: len(mon.query('count by (instance) (mlpulse_feature_bin_total)')) == 2, 30,
                 "both replicas' bin counters scraped")
        time.sleep(9)
        t1 = time.time()
        records = to_records(generate(1200, seed=11, scenario="drift"))
        assert send(f"http://127.0.0.1:{ports[0]}", records[:700], batch=50, concurrency=2) == {200: 14}
        assert send(f"http://127.0.0.1:{ports[1]}", records[700:], batch=25, concurrency=2) == {200: 20}
        t2 = time.time()
        assert t2 - t1 < 10, "the traffic took too long for the 15 s window to hold it with a sample before it"
        # An evaluation whose window starts before t1 and whose last samples come after t2.
        at = t1 + 14.0
        wait_for(lambda: time.time() > at + 1.5, 20, "the evaluation at t1 + 14 s")

        ours = {}
        for metric in STATS:
            ours |= {(metric, f, ""): v for (f,), v in
                     by_feature(query_at(mon, f'{metric}{{window="{WINDOW}", source="{SOURCE}"}}', at)).items()}
        ours |= {("mlpulse_drift_score", f, s): v for (f, s), v in by_feature(
            query_at(mon, f'mlpulse_drift_score{{window="{WINDOW}", source="{SOURCE}"}}', at), "statistic").items()}
        theirs = exporter_results(tmp_path, bundle_dir)
        theirs = {k: v for k, v in theirs.items()
                  if k[0] in STATS or (k[0] == "mlpulse_drift_score" and k[2] in (PSI, JS))}

        assert theirs[("mlpulse_drift_window_values", "_prediction", "")] == 1200  # every record scored
        assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-9, rel=0), key
        gap = max(abs(ours[k] - v) for k, v in theirs.items())
        # increase() alone would extrapolate each replica by its own factor: the counts the rules
        # use instead are whole numbers (docs/prometheus-drift.md).
        plain = by_feature(query_at(mon, f'sum by (feature) (increase(mlpulse_feature_bin_total{{bin!="missing"}}'
                                         f'[{WINDOW}]))', at))
        print(f"largest difference from the exporter: {gap:.3g}; increase() alone / exact values of _prediction: "
              f"{plain[('_prediction',)] / ours[('mlpulse_drift_window_values', '_prediction', '')]:.6f}")
        assert all(v == int(v) for (m, _, _), v in ours.items() if m == "mlpulse_drift_window_values")
        assert theirs[("mlpulse_drift_score", "income", PSI)] > 0.2  # the scenario shifts income

        # FeatureDrift fired from this path: the only drift source here is Prometheus' own.
        fired = query_at(mon, 'ALERTS{alertname="FeatureDrift", alertstate="firing", feature="income"}', at)
        assert fired and fired[0]["metric"]["impact"] == "unknown"
        detected = by_feature(query_at(mon, f'mlpulse_drift_detected{{window="{WINDOW}", source="{SOURCE}"}}', at))
        assert detected[("income",)] == 1.0
