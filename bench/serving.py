"""The request path over HTTP, side by side with the previous service, and the bare classifier's own
cost on the same rows (the floor), in one run.

    python -m bench.serving [--rounds R] [--requests N] [--previous REV] [--json out.json]
    python -m bench.serving --quick          # ~1 min smoke run

``previous`` (default ``PREVIOUS``, the last commit before the service scored rows without a
DataFrame) is checked out with ``git worktree add`` into a temporary directory, which the run
removes again; each tree trains its own bundle with its own ``model_service.train`` (same rows,
same seed) and serves it with its own ``mlpulse serve`` under gunicorn, one worker each, on free
loopback ports. Load is closed-loop: one client, one request at a time, a new connection per
request (gunicorn's sync worker closes it after each answer), the same records for both services.
Each round runs, in a fresh random order, both services at 1 and 20 records per request and the
floor: ``predict_proba`` of the current bundle's model on the same rows, in this process, one
OpenMP thread (as a worker has), and the same after 0.5 ms asleep per call (the idle floor: the
worker sleeps between requests, and a call after a sleep runs slower on shared vCPUs); the model's
time inside the worker is read from the current service's events (``latency_ms``). Figures are medians over rounds of each round's figure; the ratios
are taken within a round, then their median (the machine is shared: only ratios compare).

This is a measurement: it prints whether the targets are met and exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.machine import machine
from native_stack.processes import ROOT, Stack, free_port, service_env, wait_http

PREVIOUS = "7661c47"  # main before issue 16: the DataFrame + ColumnTransformer request path
TRAIN_ROWS = 50_000
SEED = 7
BATCHES = (1, 20)
RECORDS = 400  # distinct records, cycled
TARGET_THROUGHPUT = 4.0  # current single-record requests/s over previous
TARGET_FLOOR = 2.0  # current single-record p50 over the bare predict_proba
IDLE = 0.0005  # s asleep before each call of the idle floor: about a worker's wait between requests here


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def train(tree: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "model_service.train", "--out", str(out), "--rows", str(TRAIN_ROWS),
                    "--seed", str(SEED)], cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                   check=True, stdout=subprocess.DEVNULL)


def post(port: int, body: bytes | None) -> float:
    """One request on a new connection: POST /v1/predict, or GET /healthz when ``body`` is None."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if body is None:
        conn.request("GET", "/healthz")
    else:
        conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status} from port {port}")
    return time.perf_counter() - start


def load(port: int, bodies: list[bytes | None], n: int) -> dict[str, float]:
    t = [post(port, bodies[i % len(bodies)]) for i in range(n)]
    return {"rps": n / sum(t), "p50_ms": statistics.median(t) * 1e3, "p99_ms": percentile(t, 0.99) * 1e3}


class Floor:
    """The current model's own predict_proba on the rows the service builds for the same records."""

    def __init__(self, bundle: Path, records: list[dict[str, Any]]):
        from threadpoolctl import threadpool_limits

        from mlpulse.bundle import load_bundle
        from mlpulse.predictor import Predictor
        from mlpulse.serving.app import trusted_types

        b = load_bundle(str(bundle), trusted=trusted_types(str(bundle), ()))
        threadpool_limits(limits=1, user_api="openmp")
        self.model = b.model
        predictor = Predictor.for_bundle(b)
        checked = [b.schema.check(r).values for r in records]
        self.rows = {k: [predictor._encode(checked[i:i + k]) for i in range(0, len(checked) - k + 1, k)]
                     for k in BATCHES}

    def run(self, batch: int, n: int, idle: float = 0.0) -> dict[str, float]:
        """``idle`` seconds asleep before each call: a worker in a closed loop waits for the next
        request, and a model call right after a wait is slower than one in a tight loop."""
        rows = self.rows[batch]
        t = []
        for i in range(n):
            x = rows[i % len(rows)]
            if idle:
                time.sleep(idle)
            s = time.perf_counter()
            self.model.predict_proba(x)
            t.append(time.perf_counter() - s)
        return {"rps": n / sum(t), "p50_ms": statistics.median(t) * 1e3, "p99_ms": percentile(t, 0.99) * 1e3}


def worker_model_ms(events: Path) -> float:
    """Median model call inside the current service's worker over its single-record requests: the
    ``latency_ms`` its scored events carry (the predictor's call, timed by the service)."""
    ms = []
    for path in events.glob("*.jsonl*"):
        for line in path.read_bytes().splitlines():
            e = orjson.loads(line)
            if e.get("event") == "prediction" and e.get("batch_size") == 1 and "latency_ms" in e:
                ms.append(e["latency_ms"])
    return statistics.median(ms) if ms else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model_service.data import generate, to_records

    work = Path(tempfile.mkdtemp(prefix="mlpulse-bench-serving-"))
    previous = work / "previous"
    records = to_records(generate(RECORDS, seed=SEED + 1))
    bodies = {k: [orjson.dumps(records[i] if k == 1 else records[i:i + k]) for i in range(0, RECORDS - k + 1, k)]
              for k in BATCHES}
    result: dict[str, Any] = {"machine": machine(("numpy", "scikit-learn", "flask", "gunicorn", "orjson")),
                              "previous": args.previous, "rounds": args.rounds, "requests": args.requests}
    stack = Stack()
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(previous), args.previous], cwd=ROOT,
                       check=True)
        trees = {"previous": previous, "current": ROOT}
        ports = {}
        for name, tree in trees.items():
            train(tree, work / name / "bundle")
            port = ports[name] = free_port()
            # Each service from its own tree: its mlpulse, its app, its model_service.
            env = service_env(work / name / "bundle", work / name / "events", work / name / "mp", port,
                              workers=1, PYTHONPATH=str(tree))
            proc = stack.start(f"service-{name}", [sys.executable, "-m", "mlpulse", "serve", env["MODEL_BUNDLE_DIR"]],
                               work / name / "service.log", env, cwd=tree)
            wait_http(f"http://127.0.0.1:{port}/readyz", 120, proc.popen)
        floor = Floor(work / "current" / "bundle", records)
        # healthz: the HTTP and Flask floor of the current service (no body, no model).
        bodies[0] = [None]
        jobs = [(name, k) for name in (*trees, "floor") for k in BATCHES] + [("current", 0)]
        for name, k in jobs:  # warm-up
            floor.run(k, 20) if name == "floor" else load(ports[name], bodies[k], 20)
        jobs.append(("idle", 1))
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            random.Random(r).shuffle(jobs)
            got = {}
            for name, k in jobs:
                got[f"{name}/{k}"] = (floor.run(k, args.requests) if name == "floor"
                                      else floor.run(k, args.requests, IDLE) if name == "idle"
                                      else load(ports[name], bodies[k], args.requests))
            rounds.append(got)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{j} {v['p50_ms']:.2f} ms" for j, v in sorted(got.items())),
                  flush=True)
        result["worker_model_ms"] = worker_model_ms(work / "current" / "events")
    finally:
        stack.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(previous)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    result["rounds_figures"] = rounds
    result["median"] = {j: {m: statistics.median(rd[j][m] for rd in rounds) for m in ("rps", "p50_ms", "p99_ms")}
                        for j in rounds[0]}
    result["ratios"] = {"p50_current_over_healthz_plus_floor/1": statistics.median(
        rd["current/1"]["p50_ms"] / (rd["current/0"]["p50_ms"] + rd["floor/1"]["p50_ms"]) for rd in rounds)}
    result["ratios"].update({
        f"throughput_current_over_previous/{k}": statistics.median(rd[f"current/{k}"]["rps"] / rd[f"previous/{k}"]["rps"]
                                                                  for rd in rounds) for k in BATCHES})
    result["ratios"]["p50_current_over_idle_floor/1"] = statistics.median(
        rd["current/1"]["p50_ms"] / rd["idle/1"]["p50_ms"] for rd in rounds)
    result["ratios"].update({
        f"p50_current_over_floor/{k}": statistics.median(rd[f"current/{k}"]["p50_ms"] / rd[f"floor/{k}"]["p50_ms"]
                                                         for rd in rounds) for k in BATCHES})
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    m, ratios = result["median"], result["ratios"]
    print(f"\nmlpulse serving bench: {result['machine']['date']}, {result['rounds']} rounds x {result['requests']} "
          f"requests, 1 gunicorn worker, closed loop; previous = {result['previous']}")
    print(f"   {'what':<34}{'records':>8}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}")
    titles = {"previous": "previous service (HTTP)", "current": "current service (HTTP)",
              "floor": "bare predict_proba (in process)"}
    for name, title in titles.items():
        for k in BATCHES:
            f = m[f"{name}/{k}"]
            print(f"   {title:<34}{k:>8}{f['rps']:>12,.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}")
    h = m["current/0"]
    print(f"   {'current service GET /healthz (HTTP)':<34}{'-':>8}{h['rps']:>12,.0f}{h['p50_ms']:>9.2f}{h['p99_ms']:>9.2f}")
    for k in BATCHES:
        print(f"   {k} record(s): current / previous requests/s {ratios[f'throughput_current_over_previous/{k}']:.1f}x; "
              f"current p50 / floor p50 {ratios[f'p50_current_over_floor/{k}']:.2f}x")
    i = m["idle/1"]
    print(f"   {'bare predict_proba after 0.5 ms idle':<34}{1:>8}{i['rps']:>12,.0f}{i['p50_ms']:>9.2f}{i['p99_ms']:>9.2f}")
    print(f"   model call inside the current worker (its events' latency_ms), 1 record: p50 "
          f"{result['worker_model_ms']:.2f} ms")
    print(f"   1 record: current p50 / idle floor p50 {ratios['p50_current_over_idle_floor/1']:.2f}x")
    print(f"   1 record: current p50 / (healthz p50 + floor p50) "
          f"{ratios['p50_current_over_healthz_plus_floor/1']:.2f}x (what the service adds beyond HTTP and the model)")
    t = ratios["throughput_current_over_previous/1"]
    f = ratios["p50_current_over_floor/1"]
    print("Targets")
    print(f"   single-record throughput >= {TARGET_THROUGHPUT:.0f}x the previous: {'MET' if t >= TARGET_THROUGHPUT else 'NOT MET'} "
          f"({t:.1f}x)")
    print(f"   single-record p50 within {TARGET_FLOOR:.0f}x the bare predict_proba: "
          f"{'MET' if f <= TARGET_FLOOR else 'NOT MET'} ({f:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300, help="requests per service, batch size and round")
    ap.add_argument("--previous", default=PREVIOUS, help=f"the revision to compare with (default {PREVIOUS})")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 100 requests")
    ap.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 2, 100
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
