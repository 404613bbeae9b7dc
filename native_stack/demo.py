"""``make demo``: the native stack on 127.0.0.1, with traffic, until Ctrl-C or for a set time.

Starts the model service under gunicorn (and the drift exporter when it is available), sends
baseline, drifted and invalid traffic in phases, prints where to look, and stops every process it
started on exit, whatever the exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from mlpulse.bundle import read_metadata
from native_stack.processes import (
    ROOT,
    Stack,
    exporter_env,
    free_port,
    service_env,
    start_exporter,
    start_service,
)
from native_stack.traffic import INVALID, Phase, phase_records, send

PHASES = (Phase("baseline", 1000), Phase("drift", 1000), Phase("missing", 1000), Phase(INVALID, 40))
# A short window next to the usual ones, so each phase can be shown on its own.
DEMO_WINDOW = "20s"


def _metric_lines(url: str, prefixes: tuple[str, ...]) -> list[str]:
    text = requests.get(url, timeout=10).text
    return [ln for ln in text.splitlines() if ln.startswith(prefixes)]


def _window(url: str) -> dict[tuple[str, str], float]:
    """{(metric[:statistic], feature): value} of the demo window, from the exporter's /metrics."""
    out = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in family.samples:
            if s.labels.get("window") != DEMO_WINDOW:
                continue
            name = s.name + (":" + s.labels["statistic"] if "statistic" in s.labels else "")
            out[(name, s.labels.get("feature", ""))] = s.value
    return out


def _wait_window(url: str, count: float, timeout: float = 60.0) -> dict[tuple[str, str], float]:
    deadline = time.monotonic() + timeout
    while True:
        w = _window(url)
        if w.get(("mlpulse_window_predictions", ""), 0.0) == count or time.monotonic() > deadline:
            return w
        time.sleep(0.5)


def _print_drift(w: dict[tuple[str, str], float], features: list[str]) -> None:
    print(f"    {'feature':<22}{'PSI':>8}{'JS':>8}{'missing':>9}{'outside':>9}  drift")
    for f in features:
        psi = w.get(("mlpulse_drift_score:psi", f))
        if psi is None:
            continue
        oor = w.get(("mlpulse_drift_out_of_range_ratio", f), w.get(("mlpulse_drift_unseen_ratio", f), 0.0))
        flag = "DRIFT" if w.get(("mlpulse_drift_detected", f)) == 1 else ""
        print(f"    {f:<22}{psi:>8.3f}{w.get(('mlpulse_drift_score:js_distance', f), 0):>8.3f}"
              f"{w.get(('mlpulse_drift_missing_ratio', f), 0):>9.1%}{oor:>9.1%}  {flag}")
    share = w.get(("mlpulse_drift_share", ""))
    if share is not None:
        print(f"    drift share of input features: {share:.0%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "var" / "bundle")
    ap.add_argument("--workdir", type=Path, default=ROOT / "var" / "demo", help="events, logs, metrics files")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: run until Ctrl-C)")
    ap.add_argument("--port", type=int, default=0, help="service port (0: a free one)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    # SIGTERM stops the demo as Ctrl-C does, so the stack is always torn down.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    work = args.workdir.resolve()
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with Stack() as stack:
        try:
            env = service_env(args.bundle.resolve(), work / "events", work / "multiproc", port, args.workers)
            start_service(stack, env, work / "service.log")
            exporter_port = free_port()
            exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
            start_exporter(stack, exporter_env(work / "events", args.bundle.resolve(), exporter_port,
                                               work / "exporter-checkpoint.json",
                                               MLPULSE_EXPORTER_WINDOWS=f"{DEMO_WINDOW},5m,1h",
                                               MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_EVALUATE_EVERY="1s"),
                           work / "exporter.log")
            print(f"model service  {url}  (gunicorn, {args.workers} workers)")
            print(f"  metrics      {url}/metrics")
            print(f"  API          {url}/openapi.json")
            print(f"  event log    {work / 'events'}/*.jsonl")
            print(f"  server log   {work / 'service.log'}")
            print(f"drift exporter {exporter_url}  (windows {DEMO_WINDOW}, 5m, 1h)")
            print(f"  log          {work / 'exporter.log'}")
            features = [f["name"] for f in read_metadata(args.bundle)["features"]] + ["_prediction"]
            for i, phase in enumerate(PHASES):
                statuses = send(url, phase_records(phase, 5000 + i), batch=10, concurrency=4)
                print(f"\ntraffic {phase.scenario}: {phase.records} records -> "
                      + ", ".join(f"HTTP {k}: {v} requests" for k, v in sorted(statuses.items())), flush=True)
                if phase.scenario == INVALID:
                    continue
                _print_drift(_wait_window(exporter_url, phase.records), features)
                if i + 1 < len(PHASES) and PHASES[i + 1].scenario != INVALID:
                    print(f"    (waiting for the {DEMO_WINDOW} window to empty)", flush=True)
                    _wait_window(exporter_url, 0)
            print("\nservice metrics after the traffic:")
            for line in _metric_lines(f"{url}/metrics", ("mlpulse_records_total", "mlpulse_request_errors_total{",
                                                        "mlpulse_prediction_count", "mlpulse_prediction_sum")):
                if not line.endswith(" 0.0"):
                    print("  " + line)
            if args.seconds <= 0:
                print("\nrunning; Ctrl-C stops every process started here", flush=True)
            while args.seconds <= 0 or time.monotonic() - started < args.seconds:
                time.sleep(0.5)
                for p in stack.processes:
                    if p.popen.poll() is not None:
                        print(f"{p.name} exited with {p.popen.returncode}:\n{p.log_tail()}", file=sys.stderr)
                        return 1
        except KeyboardInterrupt:
            print("\nstopping")
    print("stopped every process the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
