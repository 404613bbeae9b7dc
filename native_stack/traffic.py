"""Sending records to the model service: ``send`` (bounded, concurrent, optionally rate-limited),
``invalid_records`` (records it must refuse), and a command that plays a schedule:

    python -m native_stack.traffic --url http://127.0.0.1:8000 --schedule ci

Traffic goes only to the URL given (loopback in the demo and the tests), in bounded counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from native_stack.scenarios import records_for
from native_stack.schedule import Schedule, play


def invalid_records(n: int, seed: int) -> list[dict]:
    """Records with one refusable problem each, cycling through the kinds (the malformed_burst scenario)."""
    return records_for(["malformed_burst"], n, seed)


def send(url: str, records: list[dict], batch: int = 1, concurrency: int = 4, rate: float = 0.0,
         session: requests.Session | None = None) -> Counter:
    """POST ``records`` in batches; returns the count of HTTP statuses (by request)."""
    session = session or requests.Session()
    batches = [records[i:i + batch] for i in range(0, len(records), batch)]
    statuses: Counter = Counter()
    interval = 1.0 / rate if rate > 0 else 0.0

    def post(b: list[dict]) -> int:
        body = json.dumps(b[0] if batch == 1 else b)  # json.dumps writes NaN for the invalid phase
        try:
            return session.post(f"{url}/v1/predict", data=body, timeout=30,
                                headers={"Content-Type": "application/json"}).status_code
        except requests.RequestException:
            return 0  # 0 = no answer

    with ThreadPoolExecutor(concurrency) as pool:
        futures = []
        for b in batches:
            futures.append(pool.submit(post, b))
            if interval:
                time.sleep(interval)
        for f in futures:
            statuses[f.result()] += 1
    return statuses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    ap.add_argument("--schedule", default="ci", help="a schedule file, or a name in native_stack/schedules")
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args(argv)
    schedule = Schedule.load(args.schedule)
    for phase, statuses in zip(schedule.phases, play(args.url, schedule, args.seed)):
        print(f"{phase.name}: " + ", ".join(f"HTTP {k}: {v}" for k, v in sorted(statuses.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
