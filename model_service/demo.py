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

from model_service.runner import ROOT, Stack, free_port, service_env, start_service
from model_service.traffic import Phase, phase_records, send

PHASES = (Phase("baseline", 600), Phase("drift", 600), Phase("invalid", 40), Phase("baseline", 300))


def _metric_lines(url: str, prefixes: tuple[str, ...]) -> list[str]:
    text = requests.get(url, timeout=10).text
    return [ln for ln in text.splitlines() if ln.startswith(prefixes)]


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
            print(f"model service  {url}  (gunicorn, {args.workers} workers)")
            print(f"  metrics      {url}/metrics")
            print(f"  API          {url}/openapi.json")
            print(f"  event log    {work / 'events'}/*.jsonl")
            print(f"  server log   {work / 'service.log'}")
            for i, phase in enumerate(PHASES):
                statuses = send(url, phase_records(phase, 5000 + i), batch=1, concurrency=4)
                print(f"traffic {phase.scenario:>9}: {phase.records} records -> "
                      + ", ".join(f"HTTP {k}: {v}" for k, v in sorted(statuses.items())), flush=True)
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
