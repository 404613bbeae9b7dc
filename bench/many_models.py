"""What many model versions cost one exporter: evaluation time, memory and series, for N versions.

    python -m bench.many_models [--bundle var/bundle] [--versions 1,10,50] [--rounds R] [--events E]

For each N, one ``mlpulse.exporter.core.Exporter`` with the default windows (5m, 1h, 24h on 10 s
slices, so 8641 slices per ring) loads N versions of the same bundle (copies whose metadata names
another version), and its file source ingests E scored events per version in the last minute, so
every statistic of every window is computed. Memory is what ``tracemalloc`` sees allocated while
the exporter is built and filled (numpy reports its arrays to it); the process's peak resident
size is printed too. Evaluation: in each of R rounds, every exporter's ``evaluate()`` (all
versions, all windows) is timed once, the exporters in a fresh random order; the figures are the
median per N, per version, and the ratio to the smallest N's median in the same round. Series
are counted in one scrape of each exporter and compared with ``mlpulse.cardinality``'s bound.

A measurement: it prints the figures and exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import random
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.machine import machine

NOW = 1_800_000_000.0


def build(bundle: Path, work: Path, n: int, events_per_version: int, records: list[dict], scores: list[float]):
    from mlpulse.exporter.config import ExporterConfig
    from mlpulse.exporter.core import Exporter

    bundles = work / f"bundles-{n}"
    for i in range(n):
        target = bundles / f"v{i}"
        shutil.copytree(bundle, target)
        md = json.loads((target / "metadata.json").read_text())
        md["version"] = f"bench.{i}"
        (target / "metadata.json").write_text(json.dumps(md))
    (work / "events").mkdir(exist_ok=True)
    cfg = ExporterConfig(events=str(work / "events" / "*.jsonl"), bundles=str(bundles), checkpoint="",
                         max_versions_per_model=n)
    cfg.validate()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    exp = Exporter(cfg, clock=lambda: NOW)
    name = md["name"]
    for i in range(n):
        events = []
        for j in range(events_per_version):
            stamp = dt.datetime.fromtimestamp(NOW - 60 + 60 * j / events_per_version, dt.UTC).isoformat()
            p = scores[j % len(scores)]
            events.append({"event": "prediction", "@timestamp": stamp, "model": {"name": name, "version": f"bench.{i}"},
                           "inputs": records[j % len(records)],
                           "prediction": {"value": p, "class": "default" if p >= 0.5 else "no_default"}})
        exp.source.ingest(events, now=NOW)
    exp.evaluate(NOW)
    memory = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return exp, memory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="var/bundle", help="bundle directory (default var/bundle; make bundle)")
    ap.add_argument("--versions", default="1,10,50", help="numbers of model versions, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--events", type=int, default=500, help="scored events per version")
    args = ap.parse_args(argv)

    from prometheus_client import generate_latest

    from mlpulse import cardinality
    from mlpulse.bundle import load_bundle, load_reference
    from model_service.data import generate, rows_for_model, to_records
    from model_service.train import TRUSTED_TYPES

    bundle = Path(args.bundle)
    sizes = sorted({int(x) for x in args.versions.split(",") if x.strip()})
    records = to_records(generate(args.events, seed=11))
    model = load_bundle(bundle, trusted=TRUSTED_TYPES).model
    scores = [float(p) for p in model.predict_proba(rows_for_model(records))[:, 0]]
    _, schema, output, profile = load_reference(bundle)
    work = Path(tempfile.mkdtemp(prefix="bench-many-models-"))
    try:
        exporters, memory = {}, {}
        for n in sizes:
            exporters[n], memory[n] = build(bundle, work, n, args.events, records, scores)
        rng = random.Random(0)
        times = {n: [] for n in sizes}
        ratios = {n: [] for n in sizes}
        for _ in range(args.rounds):
            order = list(sizes)
            rng.shuffle(order)
            this = {}
            for n in order:
                started = time.perf_counter()
                exporters[n].evaluate(NOW)
                this[n] = time.perf_counter() - started
                times[n].append(this[n])
            for n in sizes:
                ratios[n].append(this[n] / this[sizes[0]])
        bound = cardinality.exporter_series(schema, output, profile, len(exporters[sizes[0]].windows),
                                            len(exporters[sizes[0]].config.quality_window_seconds()))
        print(json.dumps(machine(["numpy", "prometheus-client"])))
        print(f"{args.events} scored events per version, windows 5m,1h,24h on 10 s slices, {args.rounds} rounds")
        print(f"versions | evaluate median s | per version ms | ratio to N={sizes[0]} (rounds min..max) | "
              "memory MiB | per version MiB | series | bound per version")
        for n in sizes:
            exp = exporters[n]
            text = generate_latest(exp.registry()).decode()
            versioned = sum(1 for line in text.splitlines() if line and not line.startswith("#")
                            and 'version="bench.' in line)
            med = statistics.median(times[n])
            print(f"{n} | {med:.3f} | {1000 * med / n:.1f} | {statistics.median(ratios[n]):.2f} "
                  f"({min(ratios[n]):.2f}..{max(ratios[n]):.2f}) | {memory[n] / 2**20:.0f} | "
                  f"{memory[n] / n / 2**20:.1f} | {versioned} | {bound} (x{n} = {bound * n})")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident size of this process (all exporters together): {peak:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
