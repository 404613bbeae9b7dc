"""Synthetic traffic for the model service, in phases that reproduce what goes wrong in production.

    python -m native_stack.traffic --url http://127.0.0.1:8000 --phase baseline:500 --phase drift:500

A phase is ``scenario:records``; scenarios are those of ``model_service.data.SCENARIOS`` plus
``invalid``, which sends records the service must refuse (wrong types, unknown fields, NaN). Traffic
goes only to the URL given (loopback in the demo and tests), in bounded counts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from model_service.data import SCENARIOS, generate, to_records

INVALID = "invalid"


def invalid_records(n: int, seed: int) -> list[dict]:
    """Records with one refusable problem each, cycling through the kinds."""
    base = to_records(generate(n, seed=seed))
    breakers = [
        lambda r: r.update(age="forty"),  # wrong_type
        lambda r: r.update(unexpected_field=1),  # unknown_field
        lambda r: r.pop("loan_amount"),  # missing_required
        lambda r: r.update(interest_rate=float("nan")),  # non_finite (sent as NaN)
    ]
    for rec, brk in zip(base, itertools.cycle(breakers)):
        brk(rec)
    return base


@dataclass
class Phase:
    scenario: str
    records: int

    @classmethod
    def parse(cls, text: str) -> Phase:
        name, _, count = text.partition(":")
        if name not in SCENARIOS and name != INVALID:
            raise argparse.ArgumentTypeError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS) + [INVALID]}")
        try:
            return cls(name, int(count or 200))
        except ValueError:
            raise argparse.ArgumentTypeError(f"records must be a number in {text!r}") from None


def phase_records(phase: Phase, seed: int) -> list[dict]:
    if phase.scenario == INVALID:
        return invalid_records(phase.records, seed)
    return to_records(generate(phase.records, seed=seed, scenario=phase.scenario))


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
    ap.add_argument("--phase", type=Phase.parse, action="append", help="scenario:records (repeatable)")
    ap.add_argument("--batch", type=int, default=1, help="records per request")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--rate", type=float, default=0.0, help="requests per second per phase (0: as fast as possible)")
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args(argv)
    for i, phase in enumerate(args.phase or [Phase("baseline", 200)]):
        statuses = send(args.url, phase_records(phase, args.seed + i), args.batch, args.concurrency, args.rate)
        print(f"{phase.scenario:>9}: {phase.records} records -> " +
              ", ".join(f"HTTP {k}: {v}" for k, v in sorted(statuses.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
