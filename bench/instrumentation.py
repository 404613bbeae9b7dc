"""What mlpulse's instrumentation costs per request, against the same app without it and against
prometheus-flask-exporter's default metrics on the same app.

    python -m bench.instrumentation [--requests N] [--rounds R] [--batch B] [--json out.json]
    python -m bench.instrumentation --quick            # ~15 s smoke run
    python -m bench.instrumentation --profile          # cProfile of the mlpulse variant instead
    python -m bench.instrumentation --components       # each piece of mlpulse's work timed alone

Variants, each its own instance of ``mlpulse.serving.app.create_app`` built from the same bundle:

    bare                         monitored=False: no metric, no event log
    mlpulse                      every mlpulse metric + the event log (single-process metrics)
    mlpulse-no-events            mlpulse with the event log swapped for a no-op: the metrics' share
    mlpulse-bins                 mlpulse with MLPULSE_BIN_METRICS on (the reference bin counters)
    prometheus-flask-exporter    bare + PrometheusMetrics(app) with its default metrics only
    harness                      the test client around an empty WSGI app: the floor of every figure

prometheus_client picks its value class (``values.ValueClass``: a locked float, or an mmap-backed
value for multiprocess mode) once, when ``prometheus_client.values`` is imported, from
PROMETHEUS_MULTIPROC_DIR. Multiprocess mode (what runs under gunicorn) therefore cannot share a
process with the others: a second Python process is started with the variable set before any import
and hosts ``bare``, ``mlpulse`` and ``prometheus-flask-exporter`` again (suffixed ``-multiprocess``);
their added costs are taken against that process's own ``bare``.

Every request goes through Flask's test client (the app's WSGI callable, no network). Request ``i``
of a scenario carries the same records in every variant. After a warm-up, each of R rounds runs the
scenarios in random order; within a scenario, for each request index (a "slot"), every variant
serves that request once, the variants in a fresh random order per slot. Each request is timed with
``time.perf_counter_ns``. Per variant the table gives the median and p90 of all timed requests,
``median(variant) - median(bare)``, and the *paired* added cost: the median over slots of the
variant's time minus its bare app's time in the same slot, which cancels the machine's slow drifts
(on a shared 2-core machine the same request takes 10 ms one second and 17 ms the next). Ratios are
computed per round; the figure is their median over the rounds, with their range.

This is a measurement: it prints whether the targets are met and exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import machine

MP_ENV = "PROMETHEUS_MULTIPROC_DIR"
RECORDS = 2000  # distinct records cycled through by every variant
RECORD_SEED = 11
HEALTHZ_FACTOR = 10  # /healthz is ~40x cheaper than a prediction: time 10x as many
TARGET_SHARE = 0.15  # mlpulse's added cost must stay under 15% of the bare request (median)

BASE = "bare"
MLPULSE = "mlpulse"
NO_EVENTS = "mlpulse-no-events"
BINS = "mlpulse-bins"
PFE = "prometheus-flask-exporter"
HARNESS = "harness"
MP = "-multiprocess"
LOCAL_VARIANTS = (BASE, MLPULSE, NO_EVENTS, BINS, PFE, HARNESS)
MP_VARIANTS = (BASE + MP, MLPULSE + MP, BINS + MP, PFE + MP)
TARGET_VARIANTS = (MLPULSE, MLPULSE + MP)


# --------------------------------------------------------------------------------------------
# Apps and requests (used in both processes)
# --------------------------------------------------------------------------------------------


def _null_wsgi(environ: dict, start_response: Callable) -> list[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


class _NoEvents:
    """Replaces an app's EventLog: every write does nothing."""

    def write(self, event: str, fields: dict[str, Any]) -> None:
        pass

    def write_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        pass  # what Scorer calls: without it the variant logged a traceback per request

    def close(self) -> None:
        pass


class Host:
    """The variants of one process, their test clients and the request payloads."""

    def __init__(self, workdir: Path, batch: int, variants: tuple[str, ...]):
        from prometheus_client import CollectorRegistry, values
        from prometheus_flask_exporter import PrometheusMetrics
        from werkzeug.test import Client

        from mlpulse.serving.app import ServiceConfig, create_app

        self.value_class = values.ValueClass.__name__
        self.records: list[dict[str, Any]] = json.loads((workdir / "records.json").read_text())
        self.batch = batch
        self.events_dir = workdir / f"events-{os.getpid()}"
        self.clients: dict[str, Any] = {}
        for v in variants:
            name = v.removesuffix(MP)
            config = ServiceConfig(bundle_dir=str(workdir / "bundle"), events_dir=str(self.events_dir / v))
            if name == BASE:
                app = create_app(config, monitored=False)
            elif name in (MLPULSE, NO_EVENTS, BINS):
                app = create_app(dataclasses.replace(config, bin_metrics=name == BINS))
                if name == NO_EVENTS:
                    scorer = app.extensions["mlpulse_scorer"]
                    scorer.events.close()
                    scorer.events = _NoEvents()
            elif name == PFE:
                app = create_app(config, monitored=False)
                PrometheusMetrics(app, registry=CollectorRegistry(auto_describe=True))  # default metrics only
            elif name == HARNESS:
                self.clients[v] = Client(_null_wsgi)
                continue
            else:
                raise ValueError(f"unknown variant {v}")
            self.clients[v] = app.test_client()

    def payload(self, scenario: str, i: int) -> Any:
        n = len(self.records)
        if scenario == "predict-1":
            return self.records[i % n]
        return [self.records[(i * self.batch + k) % n] for k in range(self.batch)]

    def run(self, variant: str, scenario: str, start: int, count: int) -> tuple[list[int], list[int]]:
        """Time requests ``start`` to ``start + count - 1``: wall-clock and thread CPU time, in ns."""
        client = self.clients[variant]
        perf, cpu = time.perf_counter_ns, time.thread_time_ns
        wall_ns, cpu_ns = [], []
        for i in range(start, start + count):
            if scenario == "healthz":
                c0 = cpu()
                t0 = perf()
                resp = client.get("/healthz")
                t1 = perf()
                c1 = cpu()
            else:
                body = self.payload(scenario, i)
                c0 = cpu()
                t0 = perf()
                resp = client.post("/v1/predict", json=body)
                t1 = perf()
                c1 = cpu()
            if resp.status_code != 200:
                raise RuntimeError(f"{variant} {scenario}: HTTP {resp.status_code}: {resp.get_data()[:300]!r}")
            wall_ns.append(t1 - t0)
            cpu_ns.append(c1 - c0)
        return wall_ns, cpu_ns

    def event_lines(self) -> dict[str, int]:
        """Event lines written per variant: a check that the event log really ran."""
        counts = {}
        for d in sorted(self.events_dir.glob("*")):
            counts[d.name] = sum(sum(1 for _ in f.open("rb")) for f in d.glob("predictions*.jsonl"))
        return counts


class RemoteHost:
    """The multiprocess-mode variants, hosted by a child Python process started with
    PROMETHEUS_MULTIPROC_DIR set, so prometheus_client picks its mmap-backed value class."""

    def __init__(self, workdir: Path, batch: int):
        mp_dir = workdir / "prometheus-multiproc"
        mp_dir.mkdir()
        env = dict(os.environ, **{MP_ENV: str(mp_dir)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.instrumentation", "--worker", str(workdir), "--batch", str(batch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
        )
        hello = self._read()
        self.value_class = hello["value_class"]
        self.pid = hello["pid"]

    def _read(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the multiprocess worker exited (code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def call(self, **msg: Any) -> Any:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        return self._read()

    def run(self, variant: str, scenario: str, start: int, count: int) -> tuple[list[int], list[int]]:
        answer = self.call(op="run", variant=variant, scenario=scenario, start=start, count=count)
        return answer["wall_ns"], answer["cpu_ns"]

    def event_lines(self) -> dict[str, int]:
        return self.call(op="events")["lines"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(op="exit")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def worker_main(workdir: str, batch: int) -> int:
    """The child process: JSON requests on stdin, JSON answers on stdout (nothing else)."""
    proto = sys.stdout
    sys.stdout = sys.stderr  # anything printed by a library must not corrupt the protocol
    host = Host(Path(workdir), batch, MP_VARIANTS)

    def answer(obj: Any) -> None:
        print(json.dumps(obj), file=proto, flush=True)

    answer({"value_class": host.value_class, "pid": os.getpid()})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "run":
            wall_ns, cpu_ns = host.run(msg["variant"], msg["scenario"], msg["start"], msg["count"])
            answer({"wall_ns": wall_ns, "cpu_ns": cpu_ns})
        elif msg["op"] == "events":
            answer({"lines": host.event_lines()})
        else:
            answer({"bye": True})
            break
    return 0


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def base_of(variant: str) -> str | None:
    if variant == HARNESS:
        return None
    return BASE + MP if variant.endswith(MP) else BASE


def pfe_of(variant: str) -> str:
    return PFE + MP if variant.endswith(MP) else PFE


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


Blocks = list[dict[str, list[int]]]  # one dict per slot: variant -> the ns of its requests in that slot


def _paired(blocks: Blocks, v: str, ref: str) -> list[float]:
    """Per slot: the variant's median minus the reference's median, in microseconds."""
    return [(statistics.median(b[v]) - statistics.median(b[ref])) / 1000 for b in blocks]


def summarize(wall: dict[str, list[Blocks]], cpu: dict[str, list[Blocks]], variants: list[str]) -> dict[str, Any]:
    """wall[scenario] = one list of slots per round (cpu alike)."""
    out: dict[str, Any] = {}
    for scen, rounds in wall.items():
        slots = [b for r in rounds for b in r]
        pooled = {v: [t / 1000 for b in slots for t in b[v]] for v in variants}
        med = {v: statistics.median(pooled[v]) for v in variants}
        round_med = {v: [statistics.median(t / 1000 for b in r for t in b[v]) for r in rounds] for v in variants}
        rows: dict[str, Any] = {}
        for v in variants:
            row: dict[str, Any] = {
                "n": len(pooled[v]),
                "median_us": med[v],
                "p90_us": percentile(pooled[v], 0.9),
                "cpu_median_us": statistics.median(t / 1000 for r in cpu[scen] for b in r for t in b[v]),
                "round_medians_us": round_med[v],
            }
            ref = base_of(v)
            if ref is not None and v != ref:
                added_rounds = [statistics.median(_paired(r, v, ref)) for r in rounds]
                share_rounds = [a / m for a, m in zip(added_rounds, round_med[ref])]
                row.update({
                    "delta_median_us": med[v] - med[ref],
                    "added_us": statistics.median(_paired(slots, v, ref)),
                    "added_us_rounds": added_rounds,
                    "added_share_rounds": share_rounds,
                    "added_us_round_median": statistics.median(added_rounds),
                    "added_share_round_median": statistics.median(share_rounds),
                    "added_share_round_min": min(share_rounds),
                    "added_share_round_max": max(share_rounds),
                })
                row["added_share"] = row["added_us"] / med[ref]
            if HARNESS in med and ref is not None:
                row["minus_harness_us"] = med[v] - med[HARNESS]
            rows[v] = row
        for v in variants:  # mlpulse's added cost against prometheus-flask-exporter's, same metric mode
            if v.startswith(MLPULSE):
                p = pfe_of(v)
                if p not in rows:
                    continue
                row = rows[v]
                minus_rounds = [statistics.median(_paired(r, v, p)) for r in rounds]
                row.update({
                    "vs_pfe": _ratio(row["added_us"], rows[p]["added_us"]),
                    "vs_pfe_round_median": _ratio(row["added_us_round_median"], rows[p]["added_us_round_median"]),
                    "minus_pfe_us": statistics.median(_paired(slots, v, p)),
                    "minus_pfe_us_rounds": minus_rounds,
                    "minus_pfe_us_round_median": statistics.median(minus_rounds),
                })
        for v in variants:  # the bin metrics' own cost: mlpulse-bins against mlpulse, same metric mode
            if v.startswith(BINS):
                ref = MLPULSE + (MP if v.endswith(MP) else "")
                extra_rounds = [statistics.median(_paired(r, v, ref)) for r in rounds]
                share_rounds = [a / m for a, m in zip(extra_rounds, round_med[ref])]
                rows[v].update({
                    "bins_extra_us": statistics.median(_paired(slots, v, ref)),
                    "bins_extra_us_rounds": extra_rounds,
                    "bins_extra_share_round_median": statistics.median(share_rounds),
                    "bins_extra_share_round_min": min(share_rounds),
                    "bins_extra_share_round_max": max(share_rounds),
                })
        out[scen] = rows
    return out


def _noise(xs: list[float]) -> float:
    """Twice the standard error of the per-round values: a difference smaller than this is noise."""
    return 2 * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.inf


def _verdict(margin: float, noise: float) -> str:
    """margin > 0 means the target is met."""
    if abs(margin) < noise:
        return "UNSURE"
    return "MET" if margin > 0 else "NOT MET"


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The two targets, for every /v1/predict scenario and both metric modes, judged on the medians
    over the rounds (the "median of several runs"); UNSURE when the margin is within 2 standard
    errors of the per-round values."""
    out = []
    for scen, rows in summary.items():
        if scen == "healthz":
            continue
        for v in TARGET_VARIANTS:
            if v not in rows:
                continue
            r, p = rows[v], rows[pfe_of(v)]
            share, noise = r["added_share_round_median"], _noise(r["added_share_rounds"])
            out.append({"scenario": scen, "variant": v, "target": f"added < {TARGET_SHARE:.0%} of bare",
                        "value": share, "noise": noise, "verdict": _verdict(TARGET_SHARE - share, noise)})
            mine, theirs = r["added_us_round_median"], p["added_us_round_median"]
            noise = _noise([a - b for a, b in zip(r["added_us_rounds"], p["added_us_rounds"])])
            out.append({"scenario": scen, "variant": v, "target": f"added <= {pfe_of(v)}'s",
                        "value": r["vs_pfe_round_median"], "added_us": mine, "pfe_added_us": theirs,
                        "pfe_noise_us": _noise(p["added_us_rounds"]), "noise_us": noise,
                        "verdict": _verdict(theirs - mine, noise)})
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt_us(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def fmt_pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.1f}%"


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def print_table(summary: dict[str, Any], variants: list[str], titles: dict[str, str]) -> None:
    head = (f"{'variant':<38} {'median':>8} {'p90':>8} {'Δmedian':>8} {'added':>8} {'added %':>8} "
            f"{'per round: added % (min..max)':>31} {'vs pfe':>7}")
    for scen, rows in summary.items():
        print(f"\n{titles[scen]}   (microseconds per request)")
        print(head)
        print("-" * len(head))
        for v in variants:
            r = rows[v]
            rounds = ""
            if "added_share_round_median" in r:
                rounds = (f"{fmt_pct(r['added_share_round_median'])} ({fmt_pct(r['added_share_round_min'])}.."
                          f"{fmt_pct(r['added_share_round_max'])})")
            vs = fmt_ratio(r["vs_pfe_round_median"]) if "vs_pfe_round_median" in r else ""
            print(f"{v:<38} {fmt_us(r['median_us']):>8} {fmt_us(r['p90_us']):>8} "
                  f"{fmt_us(r.get('delta_median_us')):>8} {fmt_us(r.get('added_us')):>8} "
                  f"{fmt_pct(r.get('added_share')):>8} {rounds:>31} {vs:>7}")


LEGEND = """
median, p90: of every timed request. Δmedian: median(variant) - median(its bare app).
added: paired added cost, the median over slots of (variant - its bare app) on the same request.
added %: added / median(bare). per round: added % computed in each round; median (min..max) over rounds.
vs pfe: mlpulse's added cost / prometheus-flask-exporter's, same metric mode (medians over rounds).
The bare app of a *-multiprocess variant is bare-multiprocess (same process). harness: the test client
around an empty WSGI app; it is part of every figure (no variant can go under it)."""


def print_verdicts(vs: list[dict[str, Any]]) -> None:
    print("\nTargets (medians over the rounds; UNSURE: the margin is within 2 standard errors of the rounds):")
    for v in vs:
        if "pfe_added_us" in v:
            diff = v["added_us"] - v["pfe_added_us"]
            detail = (f"{v['added_us']:.0f} vs {v['pfe_added_us']:.0f} us, difference {diff:+.0f} "
                      f"± {v['noise_us']:.0f} us, ratio {fmt_ratio(v['value'])}")
            if abs(v["pfe_added_us"]) < v["pfe_noise_us"]:
                detail += " (pfe's own added cost is within noise here: the ratio means little)"
        else:
            detail = f"{v['value'] * 100:.1f}% ± {v['noise'] * 100:.1f}%"
        print(f"  [{v['verdict']:<7}] {v['scenario']:<10} {v['variant']:<20} {v['target']:<49} {detail}")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def prepare(workdir: Path, bundle: str) -> None:
    """Copy the bundle (so a concurrent re-training cannot change it mid-run) and write the records."""
    from model_service.data import generate, to_records

    src = Path(bundle)
    if not (src / "metadata.json").exists():
        raise SystemExit(f"no model bundle in {bundle}: run `python -m model_service.train --out {bundle}` first")
    shutil.copytree(src, workdir / "bundle")
    records = to_records(generate(RECORDS, RECORD_SEED))
    (workdir / "records.json").write_text(json.dumps(records))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    titles = {
        "healthz": "GET /healthz (no model: the HTTP metrics alone)",
        "predict-1": "POST /v1/predict, 1 record per request",
        f"predict-{args.batch}": f"POST /v1/predict, {args.batch} records per request",
    }
    scenarios = list(titles)
    factor = {s: HEALTHZ_FACTOR if s == "healthz" else 1 for s in scenarios}
    n_requests = {s: args.requests * factor[s] for s in scenarios}
    meta = machine(("flask", "werkzeug", "prometheus-client", "prometheus-flask-exporter", "python-json-logger",
                    "orjson", "scikit-learn"))
    meta["args"] = {k: v for k, v in vars(args).items() if k not in ("json", "worker", "profile")}
    print(f"mlpulse instrumentation benchmark, {meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs, "
          f"load average at start {meta['loadavg_at_start']}")

    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.bundle)
        local = Host(workdir, args.batch, LOCAL_VARIANTS)
        if local.value_class != "MutexValue":
            raise SystemExit(f"prometheus_client runs in multiprocess mode here ({local.value_class}): unset {MP_ENV}")
        remote = RemoteHost(workdir, args.batch)
        try:
            print(f"single-process variants: this process (pid {os.getpid()}), prometheus_client value class "
                  f"{local.value_class}")
            print(f"multiprocess variants: a second Python process (pid {remote.pid}) started with {MP_ENV} set, "
                  f"value class {remote.value_class}\n  (prometheus_client fixes the class when it is imported, "
                  "so the two modes cannot share a process)")
            hosts: dict[str, Host | RemoteHost] = {v: local for v in LOCAL_VARIANTS}
            hosts.update({v: remote for v in MP_VARIANTS})
            variants = list(LOCAL_VARIANTS) + list(MP_VARIANTS)
            started = time.monotonic()

            # Warm-up, untimed: first requests, metric children, event files, caches.
            for scen in scenarios:
                for v in variants:
                    hosts[v].run(v, scen, 0, args.warmup * factor[scen])

            wall: dict[str, list[Blocks]] = {s: [] for s in scenarios}
            cpu: dict[str, list[Blocks]] = {s: [] for s in scenarios}
            for r in range(args.rounds):
                order = scenarios[:]
                rng.shuffle(order)
                for scen in order:
                    wall[scen].append([])
                    cpu[scen].append([])
                    first = (r + 1) * n_requests[scen]  # new records every round, the same in every variant
                    for start in range(first, first + n_requests[scen], args.block):
                        count = min(args.block, first + n_requests[scen] - start)
                        w_slot, c_slot = {}, {}
                        vs = variants[:]
                        rng.shuffle(vs)
                        for v in vs:
                            w_slot[v], c_slot[v] = hosts[v].run(v, scen, start, count)
                        wall[scen][-1].append(w_slot)
                        cpu[scen][-1].append(c_slot)
                print(f"  round {r + 1}/{args.rounds} done, {time.monotonic() - started:.0f} s", flush=True)
            elapsed = time.monotonic() - started
            events = {"single-process": local.event_lines(), "multiprocess": remote.event_lines()}
        finally:
            remote.close()

    summary = summarize(wall, cpu, variants)
    result = {
        "meta": meta,
        "value_classes": {"single-process": local.value_class, "multiprocess": remote.value_class},
        "scenarios": titles,
        "requests_per_round": n_requests,
        "event_lines": events,
        "elapsed_s": round(elapsed, 1),
        "results": summary,
        "targets": verdicts(summary),
    }
    print_table(summary, variants, titles)
    print(LEGEND)
    cpu_share = {s: summary[s][BASE]["cpu_median_us"] / summary[s][BASE]["median_us"] for s in scenarios}
    print("thread CPU time / wall time of bare (medians): "
          + ", ".join(f"{s} {x:.2f}" for s, x in cpu_share.items())
          + " (near 1: the spread is the CPU's speed, not preemption)")
    for scen in scenarios:
        for v in (BINS, BINS + MP):
            row = summary[scen][v]
            print(f"bin metrics ({v} - mlpulse, paired), {scen}: {fmt_us(row['bins_extra_us'])} us, "
                  f"{fmt_pct(row['bins_extra_share_round_median'])} of the mlpulse request per round "
                  f"({fmt_pct(row['bins_extra_share_round_min'])} .. {fmt_pct(row['bins_extra_share_round_max'])})")
    print(f"event lines written (check): {events}")
    print_verdicts(result["targets"])
    if args.quick:
        print("--quick: a smoke run; too few requests for these figures and verdicts to mean much")
    print(f"\n{args.rounds} rounds of {n_requests} requests per variant, {elapsed:.0f} s")
    return result


def components(args: argparse.Namespace) -> None:
    """Each piece of mlpulse's per-request work timed alone, interleaved, for one request of
    ``--batch`` records: what the end-to-end figures are made of. Metric pieces run in whatever mode
    this process is in (set PROMETHEUS_MULTIPROC_DIR for multiprocess mode)."""
    import logging
    import uuid

    import orjson
    from flask import Response
    from prometheus_client import values

    from mlpulse.events import EVENT_SCORED, SharedFileHandler

    rng = random.Random(args.seed)
    n = args.batch
    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.bundle)
        if os.environ.get(MP_ENV):
            Path(os.environ[MP_ENV]).mkdir(parents=True, exist_ok=True)
        host = Host(workdir, n, (MLPULSE,))
        app = host.clients[MLPULSE].application
        scorer, http = app.extensions["mlpulse_scorer"], app.extensions["mlpulse_metrics"]
        metrics, log = scorer.metrics, scorer.events
        records = host.records[:n]
        checked = [scorer.bundle.schema.check(r) for r in records]
        result = scorer.predict([c.values for c in checked])
        answers, texts = scorer._predictions(result)
        proba = result.values
        known = set(scorer.bundle.schema.names)
        # The scored events as Scorer._score and Scorer.log build them.
        events = [{"request_id": uuid.uuid4().hex, "model": scorer.model_fields, "record_index": i, "batch_size": n,
                   "inputs": {k: v for k, v in rec.items() if k in known},
                   "prediction": dict(answer, **{"class": text}),
                   "latency_ms": 1.234, "violations": []}
                  for i, (rec, answer, text) in enumerate(zip(records, answers, texts))]
        logger, handler = log.logger, log.handler
        side = SharedFileHandler(workdir / "side-events")  # raw writes, apart from the app's file
        lines = [(handler.format(logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, EVENT_SCORED, (),
                                                   None, None, e)) + "\n").encode() for e in events]
        print(f"one event line: {sum(map(len, lines)) // n} bytes; prometheus_client value class "
              f"{values.ValueClass.__name__}")

        def model_metrics() -> None:  # the calls Scorer.score and Scorer._score make
            for c in checked:
                metrics.observe_violations(c.violations)
            metrics.observe_inference(0.001, n)
            metrics.observe_predictions(proba, [t for t in texts if t is not None], result.probabilities, count=n)
            metrics.observe_missing_batch([c.values for c in checked])

        from prometheus_client import CollectorRegistry

        from mlpulse.metrics.bins import BinMetrics

        bundle = scorer.bundle
        bin_metrics = BinMetrics(name=bundle.name, version=bundle.version, schema=bundle.schema, output=bundle.output,
                                 profile=bundle.profile, registry=CollectorRegistry())
        scores = [a.get("value") for a in answers]

        def http_hooks() -> None:
            http._before()
            http._after(response)
            http._teardown(None)

        def event_log() -> None:
            for e in events:
                log.write(EVENT_SCORED, e)

        def orjson_direct() -> None:
            stamp = dt.datetime.now(dt.UTC).isoformat()
            for e in events:
                orjson.dumps({"event": EVENT_SCORED, **e, "@timestamp": stamp}) + b"\n"

        cases: dict[str, Callable[[], Any]] = {
            "FlaskMetrics hooks (before + after + teardown)": http_hooks,
            "ModelMetrics calls of the request": model_metrics,
            "BinMetrics.observe_batch (MLPULSE_BIN_METRICS=1)": lambda: bin_metrics.observe_batch(records, scores, texts),
            f"EventLog.write x{n} (all of the event log)": event_log,
            f"  of which SharedFileHandler.write_line x{n}": lambda: [side.write_line(x) for x in lines],
            f"(alternative) orjson.dumps of the {n} event dicts": orjson_direct,
            f"(alternative) one write_line of the {n} lines joined": lambda: side.write_line(b"".join(lines)),
        }
        reps, rounds = 20, (6 if args.quick else 30)
        times: dict[str, list[float]] = {k: [] for k in cases}
        with app.test_request_context("/v1/predict", method="POST", json=records):
            response = Response("{}")
            for fn in cases.values():  # warm-up
                fn()
            for _ in range(rounds):
                order = list(cases)
                rng.shuffle(order)
                for name in order:
                    fn = cases[name]
                    t0 = time.perf_counter_ns()
                    for _ in range(reps):
                        fn()
                    times[name].append((time.perf_counter_ns() - t0) / reps / 1000)
        side.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    rest = med[f"EventLog.write x{n} (all of the event log)"] - med[f"  of which SharedFileHandler.write_line x{n}"]
    print(f"\nmlpulse's work for one POST /v1/predict of {n} records, timed piece by piece "
          f"(median of {rounds} interleaved rounds of {reps})")
    print(f"{'piece':<58} {'us/request':>10} {'us/record':>10}")
    for k in cases:
        print(f"{k:<58} {med[k]:>10.1f} {med[k] / n:>10.2f}")
        if "write_line x" in k:
            label = "  of which logging + LogRecord + python-json-logger"
            print(f"{label:<58} {rest:>10.1f} {rest / n:>10.2f}")
    print("(alternative) rows are not mlpulse code: what the same work costs without the logging module, "
          "and with one write per request")


def profile(args: argparse.Namespace) -> None:
    """cProfile of the mlpulse variant (single-process metrics) on POST /v1/predict with a batch."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.bundle)
        host = Host(workdir, args.batch, (MLPULSE,))
        scen = f"predict-{args.batch}" if args.batch > 1 else "predict-1"
        host.run(MLPULSE, scen, 0, args.warmup)
        prof = cProfile.Profile()
        prof.enable()
        host.run(MLPULSE, scen, args.warmup, args.requests)
        prof.disable()
        print(f"cProfile: {args.requests} requests of {scen} on the mlpulse variant (profiler overhead included; "
              "compare functions with each other, not with the benchmark's figures)")
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(
            r"mlpulse/(events|metrics)|prometheus_client|pythonjsonlogger|logging/__init__", 30)
        text = out.getvalue()
        paths = sysconfig.get_paths()
        for prefix, short in ((paths["purelib"], "site-packages"), (paths["stdlib"], "stdlib"), (os.getcwd(), ".")):
            text = text.replace(prefix + os.sep, short + "/")
        print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instrumentation", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=80,
                   help="timed /v1/predict requests per variant per round (/healthz: 10x as many)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the ratios are the median over them")
    p.add_argument("--batch", type=int, default=20, help="records per request in the batch scenario")
    p.add_argument("--block", type=int, default=1, help="requests per variant per slot (1: strict alternation)")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests per variant and scenario first")
    p.add_argument("--bundle", default="var/bundle", help="model bundle directory")
    p.add_argument("--seed", type=int, default=1, help="seed of the random variant order")
    p.add_argument("--json", help="write every number to this file")
    p.add_argument("--quick", action="store_true", help="a ~15 s smoke run (12 requests, 2 rounds)")
    p.add_argument("--profile", action="store_true", help="profile the mlpulse variant instead of comparing")
    p.add_argument("--components", action="store_true",
                   help="time each piece of mlpulse's per-request work alone instead of comparing")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.batch)
    if args.quick:
        args.requests, args.rounds, args.warmup = 12, 2, 3
    if min(args.requests, args.rounds, args.batch, args.block) < 1 or args.warmup < 0:
        p.error("--requests, --rounds, --batch and --block must be positive")
    if args.profile:
        profile(args)
        return 0
    if args.components:
        components(args)
        return 0
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
