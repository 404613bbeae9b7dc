"""What the feedback ledger costs on the predict path: the same app with and without it, side by side.

    python -m bench.feedback [--bundle var/bundle] [--requests N] [--rounds R] [--batch B]

Two instances of ``mlpulse.serving.app.create_app`` from one bundle, both fully monitored (metrics
and event log): ``ledger`` writes one row per request to the SQLite ledger (WAL, synchronous=NORMAL),
``no-ledger`` has feedback turned off (``MLPULSE_FEEDBACK_LEDGER=off``). Requests go through Flask's
test client. In each of R rounds, for each request index both variants serve the same request once,
in a fresh random order; the figure is the median over requests of the paired difference (ledger
minus no-ledger), which cancels the machine's slow drifts, and the ratio of the medians, per round.
The ledger's own call (``Ledger.record_prediction``) is also timed alone, in the same run.

A measurement: it prints the figures and exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.machine import machine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="var/bundle", help="bundle directory (default var/bundle; make bundle)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1, help="records per request")
    args = ap.parse_args(argv)

    from mlpulse.serving.app import ServiceConfig, create_app
    from mlpulse.serving.ledger import Ledger
    from model_service.data import generate, to_records

    work = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    apps = {
        "ledger": create_app(ServiceConfig(bundle_dir=args.bundle, events_dir=str(work / "ev-ledger"))),
        "no-ledger": create_app(ServiceConfig(bundle_dir=args.bundle, events_dir=str(work / "ev-none"),
                                              feedback_ledger="off")),
    }
    clients = {k: a.test_client() for k, a in apps.items()}
    records = to_records(generate(args.requests * args.batch, seed=42))
    bodies = [json.dumps(records[i * args.batch:(i + 1) * args.batch]) for i in range(args.requests)]
    for c in clients.values():  # warm-up
        for b in bodies[:20]:
            c.post("/v1/predict", data=b, content_type="application/json")

    rng = random.Random(0)
    paired, ratios, medians = [], [], {k: [] for k in clients}
    for r in range(args.rounds):
        times = {k: [] for k in clients}
        for i, body in enumerate(bodies):
            order = list(clients)
            rng.shuffle(order)
            for name in order:
                t0 = time.perf_counter_ns()
                resp = clients[name].post("/v1/predict", data=body, content_type="application/json",
                                          headers={"X-Request-ID": f"bench-{r}-{i}"})
                times[name].append(time.perf_counter_ns() - t0)
                assert resp.status_code == 200, resp.get_data(as_text=True)
        paired.append(statistics.median(a - b for a, b in zip(times["ledger"], times["no-ledger"])) / 1000)
        for k in clients:
            medians[k].append(statistics.median(times[k]) / 1000)
        ratios.append(medians["ledger"][-1] / medians["no-ledger"][-1])

    ledger = Ledger(str(work / "alone.sqlite"), horizon=86400)
    alone = []
    for i in range(2000):
        t0 = time.perf_counter_ns()
        ledger.record_prediction(f"alone-{i}", "1", args.batch)
        alone.append(time.perf_counter_ns() - t0)

    join_ratios = exporter_ingest(args.bundle, work, args.rounds)

    print(f"machine: {machine(['flask', 'prometheus-client'])}")
    print(f"{args.rounds} rounds x {args.requests} requests of {args.batch} record(s), interleaved")
    for k in clients:
        print(f"  {k:10s} median per request {statistics.median(medians[k]):9.1f} us")
    print(f"  added by the ledger (paired median): {statistics.median(paired):.1f} us "
          f"(rounds {min(paired):.1f} .. {max(paired):.1f})")
    print(f"  ratio ledger / no-ledger: {statistics.median(ratios):.3f} (rounds {min(ratios):.3f} .. {max(ratios):.3f})")
    print(f"  Ledger.record_prediction alone: median {statistics.median(alone) / 1000:.1f} us, "
          f"p99 {sorted(alone)[int(len(alone) * 0.99)] / 1000:.1f} us")
    print(f"  exporter ingest with / without the join (20k prediction events, median of rounds): "
          f"{statistics.median(join_ratios):.2f} (rounds {min(join_ratios):.2f} .. {max(join_ratios):.2f})")
    return 0


def exporter_ingest(bundle: str, work: Path, rounds: int) -> list[float]:
    """Time of ``FileSource.ingest`` on the same batch with the join and without it (quality_windows
    ''), alternating per round; returns the ratios."""
    import datetime as dt

    from mlpulse.bundle import load_bundle
    from mlpulse.exporter.config import ExporterConfig
    from mlpulse.exporter.core import Exporter
    from model_service.data import generate, rows_for_model, to_records
    from model_service.train import TRUSTED_TYPES

    model = load_bundle(bundle, trusted=TRUSTED_TYPES).model
    records = to_records(generate(20_000, seed=7))
    proba = model.predict_proba(rows_for_model(records))
    now = time.time()
    stamp = dt.datetime.fromtimestamp(now - 5, dt.UTC).isoformat()
    events = [{"event": "prediction", "@timestamp": stamp, "request_id": f"b{i // 10}", "record_index": i % 10,
               "model": {"name": "credit-default", "version": "1.0.0"}, "inputs": r,
               "prediction": {"value": float(p[0]), "class": "default" if p[0] >= 0.5 else "no_default",
                              "probabilities": {"default": float(p[0]), "no_default": float(p[1])}}}
              for i, (r, p) in enumerate(zip(records, proba))]
    (work / "ev-exp").mkdir(exist_ok=True)
    ratios = []
    for _ in range(rounds):
        took = {}
        for windows in random.sample(["", "5m,1h,24h,7d"], 2):
            cfg = ExporterConfig(events=str(work / "ev-exp" / "*.jsonl"), bundles=bundle, checkpoint="",
                                 quality_windows=windows)
            exp = Exporter(cfg)
            t0 = time.perf_counter()
            exp.source.ingest(events, now=now)
            took[windows] = time.perf_counter() - t0
            exp.close()
        ratios.append(took["5m,1h,24h,7d"] / took[""])
    return ratios


if __name__ == "__main__":
    raise SystemExit(main())
