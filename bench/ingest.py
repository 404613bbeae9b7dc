"""The exporter's ingest (``Exporter.poll``: tail, decode, bin, hooks) beside a previous revision's,
on the same event file, in one run.

    python -m bench.ingest [--rounds R] [--previous REV] [--json out.json]
    python -m bench.ingest --quick          # ~1 min smoke run

The data are ``bench.drift``'s: 100k scored events of 22 inputs (16 numeric, 6 categorical) as
the service writes them, in one JSON-lines file, and the reference bundle they are binned against.
``previous`` (default ``PREVIOUS``) is checked out with ``git worktree add`` into a temporary
directory, which the run removes again. Each measurement is a fresh Python process running one
tree's own ``mlpulse`` (``PYTHONPATH`` set to that tree): it builds an exporter reading the file
from the beginning (one 1h window of 10s slices, the defaults otherwise), times one ``poll`` in CPU
seconds and reports what the exporter counted. Each round runs, in a fresh random order, both trees
with the realized-quality join on (the default) and off (``quality_windows`` empty, the drift
ingest alone), and the current tree again with other batch sizes (``--batch-lines``, replacing
``files.BATCH_LINES``). Every run must count the same events, outcome by outcome. Figures are medians over
rounds; ratios are taken within a round.

This is a measurement: it prints whether the target is met and exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.machine import machine
from native_stack.processes import ROOT

PREVIOUS = "fabe9ad"  # main before the ingest loops were tightened (issue 16)
TARGET = 150_000  # events per CPU second through Exporter.poll (issue 16)

# Run in each tree's own process: only the exporter's public configuration, stable across revisions.
WORKER = """
import gc, json, sys, time
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
events, bundle, join, now = sys.argv[1], sys.argv[2], sys.argv[3] == "on", float(sys.argv[4])
if len(sys.argv) > 5:  # another batch size than the tree's own (the current tree only)
    import mlpulse.exporter.sources.files as files
    files.BATCH_LINES = int(sys.argv[5])
config = ExporterConfig(events=events, bundles=bundle, windows="1h", slice="10s", start="beginning", checkpoint="",
                        **({} if join else {"quality_windows": ""}))
config.validate()
exporter = Exporter(config, clock=lambda: now)
gc.freeze()  # as the exporter's process does after start-up (mlpulse/exporter/__main__.py)
started = time.process_time()
read = exporter.poll()
cpu = time.process_time() - started
print(json.dumps({"cpu_seconds": cpu, "read": read, "events": exporter.source.events,
                  "malformed": dict(exporter.source.tail.stats.malformed)}))
"""


def measure(tree: Path, events: Path, bundle: Path, join: str, now: float, batch: int | None = None) -> dict[str, Any]:
    extra = [] if batch is None else [str(batch)]
    out = subprocess.run([sys.executable, "-c", WORKER, str(events), str(bundle), join, repr(now), *extra], cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench import drift

    n = 20_000 if args.quick else 100_000
    rounds = 2 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="mlpulse-bench-ingest-"))
    previous = work / "previous"
    result: dict[str, Any] = {"machine": machine(("numpy", "orjson")), "previous": args.previous, "rounds": rounds,
                              "events": n}
    try:
        ref = drift.make_sample(n, seed=1, drifted=False)
        cur = drift.make_sample(n, seed=2, drifted=True)
        bench = drift.Bench(work)
        drift.write_bundle(bench.bundle, ref)
        lines = drift.make_events(drift.records(cur.frame), cur.score, cur.cls, drift.spread(n, 3600.0))
        path = bench.events_dir / "predictions.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(previous), args.previous], cwd=ROOT,
                       check=True)
        trees = {"previous": previous, "current": ROOT}
        # (tree, join, batch lines): each tree as it is, and the current one with other batch sizes
        jobs: list[tuple[str, str, int | None]] = [(name, join, None) for name in trees for join in ("on", "off")]
        jobs += [("current", join, b) for b in args.batch_lines for join in ("on", "off")]
        figures: list[dict[str, dict[str, Any]]] = []
        for r in range(rounds):
            random.Random(r).shuffle(jobs)
            got = {f"{name}/join {join}" + (f"/{b} lines" if b else ""):
                   measure(trees[name], bench.events_dir / "*.jsonl", bench.bundle, join, drift.NOW, b)
                   for name, join, b in jobs}
            figures.append(got)
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {n / v['cpu_seconds']:,.0f}/CPU s"
                                                          for k, v in sorted(got.items())), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(previous)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    result["rounds_figures"] = figures
    first = figures[0]
    result["same_counts"] = all((v["events"], v["malformed"]) == (first["current/join on"]["events"],
                                                                first["current/join on"]["malformed"])
                                for rd in figures for v in rd.values())
    result["per_cpu_second"] = {k: statistics.median(n / rd[k]["cpu_seconds"] for rd in figures) for k in first}
    result["ratio_current_over_previous"] = {
        join: statistics.median(rd[f"previous/join {join}"]["cpu_seconds"] / rd[f"current/join {join}"]["cpu_seconds"]
                                for rd in figures) for join in ("on", "off")}
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    n = result["events"]
    print(f"\nExporter.poll on {n:,} events of 22 inputs, median of {result['rounds']} rounds ({m['date']}, "
          f"{m.get('cpus', '?')} CPUs)")
    print(f"   {'tree / join / batch':<36}{'events per CPU s':>18}{'us/event':>10}")
    for k, v in sorted(result["per_cpu_second"].items()):
        print(f"   {k:<36}{v:>18,.0f}{1e6 / v:>10.2f}")
    ratio = result["ratio_current_over_previous"]
    print(f"   current / previous ({result['previous']}): {ratio['on']:.2f}x with the join, {ratio['off']:.2f}x without")
    print(f"   every run counted the same events, outcome by outcome: {'yes' if result['same_counts'] else 'NO'}")
    for join, label in (("on", "with the realized-quality join (the default)"), ("off", "drift ingest alone")):
        v = result["per_cpu_second"][f"current/join {join}"]
        verdict = "MET" if v >= TARGET and n >= 100_000 else "NOT MET"
        print(f"   target >= {TARGET:,} events per CPU second, {label}: {verdict} ({v:,.0f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1 min smoke run: 20k events, 2 rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--previous", default=PREVIOUS, help=f"the revision to compare with (default {PREVIOUS})")
    ap.add_argument("--batch-lines", type=lambda v: [int(x) for x in v.split(",") if x], default=[10_000, 1_000],
                    help="other batch sizes to run the current tree with, comma-separated (default 10000,1000)")
    ap.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
