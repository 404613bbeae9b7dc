"""The capacity model's inputs, each measured on this machine in one run (``docs/scaling.md``).

    python -m bench.capacity [--quick] [--json var/bench/capacity.json]
    make bench-capacity

1. **Series**: the service (``mlpulse serve``, gunicorn, ``WORKERS`` workers, the bundle of
   ``make bundle``) after traffic of single records and 20-record batches, ``GET /metrics``
   counted by metric family; the same for a real exporter process after it has evaluated its
   windows. Each family's series are split by the labels a deployment scales with (``feature``,
   ``le``, ``class``, ``window``, ``pid``, a bin label), so the doc can scale them to other bundles.
   When the service has a switch for per-feature bin counters (``BIN_SWITCH``), it is started
   once without and once with it and both columns are reported; without the switch, one column.
2. **Event bytes**: the lines that same traffic wrote, by batch size.
3. **Requests/s per worker**: ``bench.serving``'s closed loop (one client, so one busy worker)
   against that service, 1 and 20 records per request.
4. **Exporter CPU**: a real exporter process tailing a file that a writer in this process
   appends to at fixed rates (``RATES`` events/s, lines of the service's own events re-stamped
   now), evaluation held off (``evaluate_every`` 1 h), CPU seconds per wall second from
   ``/proc`` (psutil); its maximum ingest from ``BULK`` lines appended at once (events per CPU
   second: one core); the evaluation alone in a second exporter evaluating every second with no
   new events (CPU seconds per evaluation of the default windows).
5. **Searches per evaluation** of the Elasticsearch source: a real exporter process with
   ``source = elasticsearch`` against ``tests.standins.elasticsearch``'s search stand-in (it is not
   Elasticsearch; only the number and size of the searches the exporter sends are read from it).
6. **Prometheus**: Debian's Prometheus scraping the captured service and exporter bodies, served
   as static files by ``python -m http.server``, as ``k`` models (one service target and one
   exporter target each, told apart by a ``model_slot`` label) for each of ``PROM_MODELS``, every
   ``PROM_INTERVAL``; from its own ``/metrics``: ``prometheus_tsdb_head_series``, the rate of
   ``prometheus_tsdb_head_samples_appended_total``, the Go heap; from ``/proc``: CPU seconds and
   RSS. Bytes per series and CPU per 1,000 samples/s are the slopes between the sizes.

The pure arithmetic of the model (series, samples/s, RAM, bytes, cores for 1, 10 and 100
models) is ``mlpulse``-free and lives in ``capacity_table`` below (``tests/unit/test_capacity.py``).
This is a measurement: it prints the table and exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "var" / "bundle"
JSON_OUT = ROOT / "var" / "bench" / "capacity.json"
WORKERS = 2
BIN_SWITCH = "MLPULSE_BIN_METRICS"  # the per-feature bin counters' switch, once the service has it
SCALING_LABELS = ("feature", "bin", "le", "class", "window", "pid")  # what a deployment's size changes
RATES = (1_000, 5_000, 20_000)  # events/s appended for the exporter
BULK = 200_000  # lines appended at once: the exporter's maximum ingest
PROM_MODELS = (10, 40, 100)  # models (1 service + 1 exporter target each) per Prometheus run
PROM_INTERVAL = 2.0  # s between scrapes in the bench (the committed configuration scrapes every 15 s)
SCRAPE_INTERVAL = 15.0  # s, prometheus/prometheus.yml: what the capacity table assumes

# -- the capacity model: pure arithmetic ----------------------------------------------------------

MODELS = (1, 10, 100)
REQUEST_RATES = (100.0, 10_000.0)  # requests/s over the whole fleet, 1 record each
# Decisions of the model (docs/scaling.md, "Decisions"):
UTILISATION = 0.6  # a worker or core is planned at 60 % busy: headroom for bursts and restarts
MIN_REPLICAS = 2  # per model: a rolling restart never leaves a model unserved
ES_RATIO = (0.7, 1.2)  # on-disk bytes per raw JSON byte, primary copy: an estimate (docs/scaling.md)
ES_REPLICAS = 1
PROM_RAM_BUDGET = 16 * 2**30  # bytes of RAM one Prometheus is planned with
PROM_RAM_HEADROOM = 2.0  # the bench measures a fresh head; queries, compaction and churn come on top
PROM_CORE_BUDGET = 4.0  # cores one Prometheus is planned with
PROM_BYTES_PER_SAMPLE = 2.0  # on disk, compressed: the upper end of Prometheus's documented 1-2 bytes


@dataclass(frozen=True)
class Inputs:
    """The measured inputs the table is computed from (every one from this bench's JSON)."""

    service_series_fixed: float  # per replica, besides its workers
    service_series_per_worker: float
    exporter_series_fixed: float  # per exporter process
    exporter_series_per_model: float  # per model version it evaluates
    bytes_per_event: float  # one scored event line, single-record requests
    worker_rps: float  # single-record requests/s one worker answers
    exporter_cpu_per_kevents: float  # CPU seconds per second per 1,000 events/s ingested
    exporter_eval_cpu_per_model: float  # CPU seconds per evaluation, per model version (default windows)
    evaluate_every: float  # s
    windows: int  # windows per model version (each one Elasticsearch search per evaluation)
    prom_bytes_per_series: float
    prom_cpu_per_ksamples: float  # cores per 1,000 samples/s appended
    workers_per_replica: int = WORKERS
    scrape_interval: float = SCRAPE_INTERVAL


def capacity_row(inp: Inputs, models: int, rps: float) -> dict[str, float]:
    """The sizes of every component for ``models`` models sharing ``rps`` single-record
    requests/s evenly (one version each)."""
    per_model = rps / models
    workers_per_model = max(inp.workers_per_replica * MIN_REPLICAS,
                            math.ceil(per_model / (inp.worker_rps * UTILISATION)))
    replicas_per_model = math.ceil(workers_per_model / inp.workers_per_replica)
    replicas = replicas_per_model * models
    workers = replicas * inp.workers_per_replica
    service_series = replicas * (inp.service_series_fixed + inp.workers_per_replica * inp.service_series_per_worker)
    events = rps  # one scored line per record
    exporter_cores = (events / 1000 * inp.exporter_cpu_per_kevents
                      + models * inp.exporter_eval_cpu_per_model / inp.evaluate_every)
    exporters = max(1, math.ceil(exporter_cores / UTILISATION))  # one process uses at most one core
    exporter_series = exporters * inp.exporter_series_fixed + models * inp.exporter_series_per_model
    series = service_series + exporter_series
    samples = series / inp.scrape_interval
    prom_ram = series * inp.prom_bytes_per_series
    prom_cores = samples / 1000 * inp.prom_cpu_per_ksamples
    event_bytes_day = events * inp.bytes_per_event * 86_400
    return {
        "models": models, "rps": rps, "replicas": replicas, "workers": workers,
        "service_series": service_series, "exporter_series": exporter_series, "series": series,
        "samples_per_s": samples, "prometheus_ram_bytes": prom_ram, "prometheus_cores": prom_cores,
        "prometheus_disk_bytes_per_day": samples * PROM_BYTES_PER_SAMPLE * 86_400,
        "prometheus_shards": max(math.ceil(prom_ram * PROM_RAM_HEADROOM / PROM_RAM_BUDGET), math.ceil(prom_cores / PROM_CORE_BUDGET), 1),
        "events_per_s": events, "event_bytes_per_day": event_bytes_day,
        "es_bytes_per_day_low": event_bytes_day * ES_RATIO[0] * (1 + ES_REPLICAS),
        "es_bytes_per_day_high": event_bytes_day * ES_RATIO[1] * (1 + ES_REPLICAS),
        "exporter_cores": exporter_cores, "exporters": exporters,
        "es_searches_per_s": models * inp.windows / inp.evaluate_every,
    }


def capacity_table(inp: Inputs, models: Sequence[int] = MODELS,
                   rates: Sequence[float] = REQUEST_RATES) -> list[dict[str, float]]:
    return [capacity_row(inp, m, r) for m in models for r in rates]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def split_series(families: dict[str, list[dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per family: its series, the scaling labels it carries (``SCALING_LABELS``), how many distinct
    values each takes, its cells (distinct tuples of those labels) and series per cell."""
    out = {}
    for name, label_sets in sorted(families.items()):
        dims = [d for d in SCALING_LABELS if any(d in labels for labels in label_sets)]
        cells = {tuple(labels.get(d, "") for d in dims) for labels in label_sets}
        out[name] = {"series": len(label_sets), "dims": dims,
                     "distinct": {d: len({labels[d] for labels in label_sets if d in labels}) for d in dims},
                     "cells": len(cells), "per_cell": len(label_sets) / max(1, len(cells))}
    return out


def by_dims(split: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Series summed over the families that scale with the same labels ("" = fixed)."""
    out: dict[str, int] = defaultdict(int)
    for f in split.values():
        out["+".join(f["dims"]) or "fixed"] += f["series"]
    return dict(sorted(out.items()))


# -- measuring ------------------------------------------------------------------------------------


def families_of(text: str) -> dict[str, list[dict[str, str]]]:
    """{family: [labels of each series]} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(dict(s.labels) for s in fam.samples)
    return out


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def rss_bytes(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def scrape(url: str, auth: tuple[str, str] | None = None) -> str:
    import requests

    r = requests.get(url, timeout=10, auth=auth)
    r.raise_for_status()
    return r.text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    want = set(labels.items())
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and want <= set(s.labels.items()))


def has_bin_switch() -> bool:
    return any(BIN_SWITCH in p.read_text(encoding="utf-8") for p in (ROOT / "mlpulse").rglob("*.py"))


def measure_service(work: Path, bundle: Path, switch: str | None, quick: bool) -> dict[str, Any]:
    """Start the service, send traffic, scrape it; events and requests/s per worker too."""
    import orjson

    from bench.serving import load
    from model_service.data import generate, to_records
    from native_stack.processes import Stack, free_port, service_env, start_service
    from native_stack.traffic import invalid_records, send

    tag = "bins" if switch else "plain"
    port = free_port()
    extra = {BIN_SWITCH: switch} if switch else {}
    env = service_env(bundle, work / tag / "events", work / tag / "mp", port, workers=WORKERS, **extra)
    url = f"http://127.0.0.1:{port}"
    records = to_records(generate(600, seed=11))
    with Stack() as stack:
        start_service(stack, env, work / tag / "service.log")
        single = send(url, records[:400], batch=1, concurrency=WORKERS)
        batched = send(url, records[:400], batch=20, concurrency=WORKERS)
        refused = send(url, invalid_records(20, seed=5), batch=1, concurrency=WORKERS)
        time.sleep(5.5)  # the workers' process metrics are written every 5 s
        body = scrape(f"{url}/metrics")
        result: dict[str, Any] = {"statuses": {"single": dict(single), "batch20": dict(batched),
                                               "invalid": dict(refused)}, "body": body}
        if switch is None:  # requests/s per worker: bench.serving's closed loop, one busy worker at a time
            n = 100 if quick else 300
            bodies1 = [orjson.dumps(r) for r in records[:200]]
            bodies20 = [orjson.dumps(records[i:i + 20]) for i in range(0, 400, 20)]
            load(port, bodies1, 20)
            result["closed_loop"] = {"1": load(port, bodies1, n), "20": load(port, bodies20, n // 3)}
    lines: dict[str, list[int]] = defaultdict(list)
    for path in (work / tag / "events").glob("*.jsonl"):
        for line in path.read_bytes().splitlines(keepends=True):
            e = orjson.loads(line)
            key = f"{e['event']}/{e.get('batch_size', '-')}" if e["event"] == "prediction" else e["event"]
            lines[key].append(len(line))
    result["event_bytes"] = {k: {"lines": len(v), "mean_bytes": statistics.fmean(v)} for k, v in sorted(lines.items())}
    result["events_dir"] = str(work / tag / "events")
    return result


class Writer:
    """Appends the service's own scored lines, re-stamped with the current time, to one file."""

    def __init__(self, path: Path, templates: list[bytes]):
        import orjson

        self.path = path
        self.parts = []
        for line in templates:
            stamp = orjson.loads(line)["@timestamp"].encode()
            head, _, tail = line.partition(stamp)
            self.parts.append((head, tail))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.written = 0

    def lines(self, n: int) -> bytes:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").encode()
        k = len(self.parts)
        return b"".join(self.parts[(self.written + i) % k][0] + stamp + self.parts[(self.written + i) % k][1]
                        for i in range(n))

    def write(self, n: int) -> None:
        data = self.lines(n)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.written += n

    def at_rate(self, rate: float, seconds: float, tick: float = 0.05) -> float:
        """Append ``rate`` lines/s for ``seconds``; returns the rate achieved."""
        start, sent = time.monotonic(), 0
        while (now := time.monotonic()) - start < seconds:
            due = int(rate * (now - start)) - sent
            if due > 0:
                self.write(due)
                sent += due
            time.sleep(tick)
        return sent / (time.monotonic() - start)

    def close(self) -> None:
        os.close(self.fd)


def scored_templates(events_dir: Path) -> list[bytes]:
    import orjson

    out = []
    for path in sorted(Path(events_dir).glob("*.jsonl")):
        for line in path.read_bytes().splitlines(keepends=True):
            e = orjson.loads(line)
            if e["event"] == "prediction" and e.get("batch_size") == 1:
                out.append(line)
    return out


def events_read(port: int) -> float:
    return metric(scrape(f"http://127.0.0.1:{port}/metrics"), "mlpulse_exporter_events_total")


def wait_events(port: int, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (n := events_read(port)) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"exporter read {n} of {at_least} events in {timeout} s")
        time.sleep(0.2)
    return n


def measure_exporter(work: Path, bundle: Path, templates: list[bytes], quick: bool) -> dict[str, Any]:
    """Ingest CPU at fixed rates, maximum ingest, evaluation CPU, the evaluated exporter's series."""
    from mlpulse.exporter.config import ExporterConfig
    from native_stack.processes import Stack, exporter_env, free_port, start_exporter

    out: dict[str, Any] = {"rates": []}
    seconds = 5.0 if quick else 10.0
    with Stack() as stack:
        # Ingest only: the first evaluation runs at start on empty windows, the next in an hour.
        port = free_port()
        env = exporter_env(work / "ingest", bundle, port, None, MLPULSE_EXPORTER_EVALUATE_EVERY="1h",
                           MLPULSE_EXPORTER_START="end")
        writer = Writer(work / "ingest" / "predictions.jsonl", templates)
        proc = start_exporter(stack, env, work / "exporter-ingest.log")
        pid = proc.popen.pid
        time.sleep(1.0)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds / 2)
        out["idle_cpu_per_s"] = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        for rate in RATES:
            writer.at_rate(rate, 1.5)  # settle
            n0, c0, t0 = events_read(port), cpu_seconds(pid), time.monotonic()
            achieved = writer.at_rate(rate, seconds)
            wait_events(port, writer.written, 30)
            n1, c1, t1 = events_read(port), cpu_seconds(pid), time.monotonic()
            ev_rate = (n1 - n0) / (t1 - t0)
            cpu = (c1 - c0) / (t1 - t0)
            out["rates"].append({"target": rate, "written_per_s": achieved, "read_per_s": ev_rate,
                                 "cpu_per_s": cpu, "cpu_per_kevents": (cpu - out["idle_cpu_per_s"]) / (ev_rate / 1000)})
        bulk = BULK // 4 if quick else BULK
        n0, c0, t0 = events_read(port), cpu_seconds(pid), time.monotonic()
        writer.write(bulk)
        n1 = wait_events(port, n0 + bulk, 120)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        out["bulk"] = {"events": n1 - n0, "cpu_seconds": c1 - c0, "wall_seconds": t1 - t0,
                       "events_per_cpu_second": (n1 - n0) / (c1 - c0), "events_per_wall_second": (n1 - n0) / (t1 - t0)}
        writer.close()
        proc.stop()

        # Evaluation only: a window's worth of events read at start, then one evaluation a second.
        port = free_port()
        ev = Writer(work / "evaluate" / "predictions.jsonl", templates)
        ev.write(5_000)
        ev.close()
        env = exporter_env(work / "evaluate", bundle, port, None, MLPULSE_EXPORTER_EVALUATE_EVERY="1s",
                           MLPULSE_EXPORTER_START="beginning")
        proc = start_exporter(stack, env, work / "exporter-evaluate.log")
        pid = proc.popen.pid
        wait_events(port, 5_000, 60)
        time.sleep(2.0)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        durations = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            durations.append(metric(scrape(f"http://127.0.0.1:{port}/metrics"),
                                    "mlpulse_exporter_evaluation_duration_seconds"))
        c1, t1 = cpu_seconds(pid), time.monotonic()
        out["evaluation"] = {"cpu_per_s": (c1 - c0) / (t1 - t0), "evaluate_every": 1.0,
                             "cpu_per_evaluation": (c1 - c0) / (t1 - t0) - out["idle_cpu_per_s"],
                             "duration_median": statistics.median(durations)}
        out["body"] = scrape(f"http://127.0.0.1:{port}/metrics")
        out["windows"] = len(ExporterConfig.windows.split(","))
    return out


def measure_es_searches(work: Path, bundle: Path, templates: list[bytes]) -> dict[str, Any]:
    """Searches per evaluation of the Elasticsearch source: a real exporter process evaluating every
    second against the search stand-in; its own counter over its evaluations."""
    import orjson

    from mlpulse.bundle import read_metadata
    from mlpulse.schema import FeatureSchema
    from native_stack.processes import Stack, exporter_env, free_port, start_exporter
    from tests.standins.elasticsearch import ElasticsearchSearchStandIn, mapping_for_schema

    schema = FeatureSchema.from_list(read_metadata(str(bundle))["features"])
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    events = []
    for line in templates[:300]:
        e = orjson.loads(line)
        e["@timestamp"] = now
        events.append(e)
    with ElasticsearchSearchStandIn(events, mapping_for_schema(schema)) as es:
        port = free_port()
        env = exporter_env(work / "es-unused", bundle, port, None, MLPULSE_EXPORTER_SOURCE="elasticsearch",
                           MLPULSE_EXPORTER_ELASTICSEARCH_URL=es.url, MLPULSE_EXPORTER_EVALUATE_EVERY="1s")
        with Stack() as stack:
            start_exporter(stack, env, work / "exporter-es.log")
            time.sleep(4.5)
            body = scrape(f"http://127.0.0.1:{port}/metrics")
        bodies = [b for b in es.bodies if b is not None]
    searches = metric(body, "mlpulse_exporter_elasticsearch_searches_total")
    spans = [next(f["range"]["@timestamp"] for f in b["query"]["bool"]["filter"] if "range" in f) for b in bodies]
    asked: dict[int, int] = defaultdict(int)  # window length (ms) -> searches for it
    for span in spans:
        asked[span["lt"] - span["gte"]] += 1
    # One model version: an evaluation asks each window once, so every length is asked as often as
    # there were evaluations, and the searches per evaluation are the lengths asked.
    return {"searches": searches, "bodies": len(bodies), "asked_per_window_ms": dict(sorted(asked.items())),
            "models": 1, "errors": metric(body, "mlpulse_exporter_elasticsearch_errors_total"),
            "searches_per_evaluation": len(asked), "evaluations": min(asked.values(), default=0),
            "mean_body_bytes": statistics.fmean(len(json.dumps(b)) for b in bodies) if bodies else float("nan")}


PROM_CONFIG = """\
global:
  scrape_interval: {interval}ms
  scrape_timeout: {timeout}ms
scrape_configs:
{jobs}
"""


def prometheus_config(file_port: int, models: int, interval: float) -> str:
    jobs = []
    for job in ("service", "exporter"):
        groups = "\n".join(f"      - targets: ['127.0.0.1:{file_port}']\n        labels: {{model_slot: 'm{i}'}}"
                           for i in range(models))
        jobs.append(f"  - job_name: {job}\n    metrics_path: /{job}/metrics\n    static_configs:\n{groups}")
    ms = round(interval * 1000)
    return PROM_CONFIG.format(interval=ms, timeout=min(ms, 10_000), jobs="\n".join(jobs))


def measure_prometheus(work: Path, service_body: str, exporter_body: str, quick: bool) -> dict[str, Any]:
    from mlpulse.prometheus.native import write_web_auth
    from native_stack.monitoring import PROMETHEUS
    from native_stack.processes import Stack, free_port, wait_http

    if PROMETHEUS is None:
        return {"skipped": "prometheus is not installed (make system-deps)"}
    files = work / "replay"
    for job, body in (("service", service_body), ("exporter", exporter_body)):
        (files / job).mkdir(parents=True, exist_ok=True)
        (files / job / "metrics").write_text(body)
    sizes = PROM_MODELS[:2] if quick else PROM_MODELS
    # The series one model's two targets add: the bodies' samples, plus what Prometheus adds per target
    # (up, scrape_duration_seconds, scrape_samples_scraped, scrape_samples_post_metric_relabeling,
    # scrape_series_added).
    per_model = sum(len(v) for body in (service_body, exporter_body) for v in families_of(body).values()) + 2 * 5
    measure = 8.0 if quick else 14.0
    runs = []
    with Stack() as stack:
        file_port = free_port()
        server = stack.start("replay", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                        "--directory", str(files), str(file_port)], work / "replay.log")
        wait_http(f"http://127.0.0.1:{file_port}/service/metrics", 30, server.popen)
        web = write_web_auth(work / "prometheus-auth", "prometheus")
        for models in sizes:
            cfg = work / f"prometheus-{models}.yml"
            cfg.write_text(prometheus_config(file_port, models, PROM_INTERVAL))
            port = free_port()
            proc = stack.start(f"prometheus-{models}", [PROMETHEUS, f"--config.file={cfg}",
                                                         f"--storage.tsdb.path={work / f'prom-data-{models}'}",
                                                         f"--web.listen-address=127.0.0.1:{port}", web.flag],
                               work / f"prometheus-{models}.log")
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/-/ready", 60, proc.popen, auth=web.auth)
            # Every target scraped once, so the head holds the bodies' series once per model; on a
            # loaded machine the first scrapes of the largest size can take longer than a few intervals.
            expected = models * per_model
            time.sleep(3 * PROM_INTERVAL)
            deadline = time.monotonic() + 30
            while (metric(scrape(f"{url}/metrics", web.auth), "prometheus_tsdb_head_series") < expected
                   and time.monotonic() < deadline):
                time.sleep(PROM_INTERVAL)
            pid = proc.popen.pid
            m0, c0, t0 = scrape(f"{url}/metrics", web.auth), cpu_seconds(pid), time.monotonic()
            time.sleep(measure)
            m1, c1, t1 = scrape(f"{url}/metrics", web.auth), cpu_seconds(pid), time.monotonic()
            appended = (metric(m1, "prometheus_tsdb_head_samples_appended_total")
                        - metric(m0, "prometheus_tsdb_head_samples_appended_total"))
            runs.append({"models": models, "targets": 2 * models,
                         "head_series": metric(m1, "prometheus_tsdb_head_series"),
                         "samples_per_s": appended / (t1 - t0), "cpu_per_s": (c1 - c0) / (t1 - t0),
                         "rss_bytes": rss_bytes(pid), "heap_inuse_bytes": metric(m1, "go_memstats_heap_inuse_bytes"),
                         "expected_series": expected,
                         # a scrape that timed out appends nothing: the samples/s fall short of
                         # expected / interval and the targets down say why
                         "targets_up": targets_up(url, web.auth)})
            proc.stop()
            stack.processes.remove(proc)
    xs = [r["head_series"] for r in runs]
    out: dict[str, Any] = {"interval": PROM_INTERVAL, "measure_seconds": measure, "runs": runs}
    if len(runs) >= 2:
        out["bytes_per_series_rss"] = slope(xs, [r["rss_bytes"] for r in runs])
        out["bytes_per_series_heap"] = slope(xs, [r["heap_inuse_bytes"] for r in runs])
        out["cpu_per_ksamples"] = slope([r["samples_per_s"] / 1000 for r in runs], [r["cpu_per_s"] for r in runs])
        out["cpu_per_ksamples_mean"] = statistics.fmean(r["cpu_per_s"] / (r["samples_per_s"] / 1000) for r in runs)
    return out


def targets_up(url: str, auth: tuple[str, str]) -> float:
    """Targets whose last scrape succeeded (``sum(up)``, from Prometheus's query API)."""
    import requests

    r = requests.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, auth=auth, timeout=10)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def per_slot_window(families: dict[str, list[dict[str, str]]]) -> dict[str, float]:
    """Exporter series per (feature slot, window), numeric and categorical slots apart: a numeric
    slot is one with an out-of-range ratio, a categorical one has an unseen ratio."""
    kinds = {"numeric": "mlpulse_drift_out_of_range_ratio", "categorical": "mlpulse_drift_unseen_ratio"}
    out = {}
    for kind, family in kinds.items():
        slots = {labels["feature"] for labels in families.get(family, [])}
        cells = {(labels["feature"], labels["window"]) for labels in families.get(family, [])}
        n = sum(1 for v in families.values() for labels in v
                if "window" in labels and labels.get("feature") in slots)
        out[kind] = {"slots": len(slots), "series_per_slot_window": n / max(1, len(cells))}
    return out


def reference_layout(bundle: Path) -> dict[str, Any]:
    """The bundle's features and bins, as the exporter lays them out (``Reference``): what the
    series and the bin counters scale with."""
    from mlpulse.bundle import load_reference
    from mlpulse.exporter.windows import Reference

    meta, schema, output, profile = load_reference(str(bundle))
    ref = Reference(meta["name"], meta["version"], schema, output, profile)
    features = [ref.slots[name] for name in schema.names]
    return {"features": len(features), "numeric": sum(s.kind == "numeric" for s in features),
            "categorical": sum(s.kind == "categorical" for s in features),
            "feature_bins": sum(s.nbins for s in features),
            "slots": len(ref.slots), "counters_per_slice": ref.width,
            "classes": len(output.classes or ())}


def per_worker(families: dict[str, list[dict[str, str]]]) -> int:
    return sum(len(v) for v in families.values() if any("pid" in labels for labels in v))


def model_labelled(families: dict[str, list[dict[str, str]]]) -> int:
    """Series of the families that carry a ``model`` label: what the label budget counts
    (``mlpulse.cardinality``); the HTTP and per-worker process families carry none."""
    return sum(len(v) for v in families.values() if any("model" in labels for labels in v))


def cardinality_bounds(bundle: Path) -> dict[str, int]:
    """``mlpulse.cardinality``'s series for the bundle, as the service and the exporter compute
    them at start-up with their defaults (feedback endpoint on, the default windows)."""
    from mlpulse import cardinality
    from mlpulse.bundle import load_reference
    from mlpulse.exporter.config import ExporterConfig
    from mlpulse.serving.app import REQUEST_ERROR_REASONS
    from mlpulse.serving.feedback import FEEDBACK_REFUSE_REASONS

    meta, schema, output, profile = load_reference(str(bundle))
    libraries = len(meta.get("libraries") or {})
    service = {tag: cardinality.service_series(schema, output, profile, libraries, len(REQUEST_ERROR_REASONS),
                                               len(FEEDBACK_REFUSE_REASONS), bin_metrics=tag == "bins")
               for tag in ("plain", "bins")}
    exporter = cardinality.exporter_series(schema, output, profile, len(ExporterConfig.windows.split(",")),
                                           len(ExporterConfig.quality_windows.split(",")))
    return {"service_plain": service["plain"], "service_bins": service["bins"], "exporter": exporter}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.machine import machine

    bundle = Path(args.bundle)
    if not (bundle / "metadata.json").exists():
        raise SystemExit(f"no bundle in {bundle}: make bundle")
    result: dict[str, Any] = {"machine": machine(("prometheus-client", "gunicorn", "numpy", "orjson", "psutil")),
                              "workers": WORKERS, "bin_switch": BIN_SWITCH if has_bin_switch() else None}
    work = Path(tempfile.mkdtemp(prefix="mlpulse-bench-capacity-"))
    try:
        service: dict[str, Any] = {"plain": measure_service(work, bundle, None, args.quick)}
        if result["bin_switch"]:
            service["bins"] = measure_service(work, bundle, "1", args.quick)
        print("service measured", flush=True)
        templates = scored_templates(Path(service["plain"]["events_dir"]))
        exporter = measure_exporter(work, bundle, templates, args.quick)
        print("exporter measured", flush=True)
        es = measure_es_searches(work, bundle, templates)
        prom = measure_prometheus(work, service["plain"]["body"], exporter["body"], args.quick)
        print("prometheus measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for column in service.values():
        fams = families_of(column.pop("body"))
        column["split"] = split_series(fams)
        column["by_dims"] = by_dims(column["split"])
        column["series"] = sum(f["series"] for f in column["split"].values())
        column["series_per_worker"] = per_worker(fams) / WORKERS
        column["model_labelled"] = model_labelled(fams)
    fams = families_of(exporter.pop("body"))
    exporter["split"] = split_series(fams)
    exporter["by_dims"] = by_dims(exporter["split"])
    exporter["series"] = sum(f["series"] for f in exporter["split"].values())
    # One model version here: everything labelled with a model is per model, the rest per process.
    exporter["series_per_model"] = sum(len(v) for v in fams.values() if any("model" in labels for labels in v))
    exporter["series_fixed"] = exporter["series"] - exporter["series_per_model"]
    exporter["per_slot_window"] = per_slot_window(fams)
    result.update(service=service, exporter=exporter, elasticsearch_source=es, prometheus=prom,
                  reference=reference_layout(bundle), cardinality=cardinality_bounds(bundle))
    plain = service["plain"]
    if "cpu_per_ksamples" in prom:
        inputs = Inputs(
            service_series_fixed=plain["series"] - WORKERS * plain["series_per_worker"],
            service_series_per_worker=plain["series_per_worker"],
            exporter_series_fixed=exporter["series_fixed"], exporter_series_per_model=exporter["series_per_model"],
            bytes_per_event=plain["event_bytes"]["prediction/1"]["mean_bytes"],
            worker_rps=plain["closed_loop"]["1"]["rps"],
            exporter_cpu_per_kevents=statistics.median(r["cpu_per_kevents"] for r in exporter["rates"]),
            exporter_eval_cpu_per_model=exporter["evaluation"]["cpu_per_evaluation"],
            evaluate_every=10.0, windows=exporter["windows"],
            prom_bytes_per_series=prom["bytes_per_series_rss"], prom_cpu_per_ksamples=prom["cpu_per_ksamples_mean"])
        result["inputs"] = inputs.__dict__
        result["table"] = capacity_table(inputs)
        if "bins" in service:  # the same model with the service's bin counters switched on
            bins = service["bins"]
            result["inputs_bins"] = {**inputs.__dict__, "service_series_per_worker": bins["series_per_worker"],
                                     "service_series_fixed": bins["series"] - WORKERS * bins["series_per_worker"]}
            result["table_bins"] = capacity_table(Inputs(**result["inputs_bins"]))
    report(result)
    return result


def _b(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def report(r: dict[str, Any]) -> None:
    print(f"\nmlpulse capacity bench: {r['machine']['date']}, load at start {r['machine']['loadavg_at_start']}")
    for tag, col in r["service"].items():
        print(f"\nService series ({tag}: {WORKERS} workers): {col['series']} "
              f"({col['series_per_worker']:.0f} per worker)")
        if "model_labelled" in col and "cardinality" in r:
            print(f"   model-labelled {col['model_labelled']} (mlpulse.cardinality.service_series: "
                  f"{r['cardinality']['service_' + tag]}), not model-labelled {col['series'] - col['model_labelled']}")
        for dims, n in col["by_dims"].items():
            print(f"   {dims:<22}{n:>7}")
    for name, f in r["service"]["plain"]["split"].items():
        print(f"   {name:<48}{f['series']:>6}  {'x'.join(f'{d}={n}' for d, n in f['distinct'].items())}")
    if "reference" in r:
        x = r["reference"]
        print(f"\nBundle: {x['features']} features ({x['numeric']} numeric, {x['categorical']} categorical), "
              f"{x['feature_bins']} bins over the features, {x['classes']} classes, {x['slots']} exporter slots, "
              f"{x['counters_per_slice']} counters per slice")
    e = r["exporter"]
    print(f"\nExporter series: {e['series']} ({e['series_per_model']} per model version, {e['series_fixed']} per process)")
    if "cardinality" in r:
        print(f"   mlpulse.cardinality.exporter_series (its upper bound): {r['cardinality']['exporter']}")
    for dims, n in e["by_dims"].items():
        print(f"   {dims:<22}{n:>7}")
    for kind, x in e.get("per_slot_window", {}).items():
        print(f"   {kind} slots: {x['slots']}, {x['series_per_slot_window']:.0f} series per slot and window")
    for name, f in e["split"].items():
        print(f"   {name:<48}{f['series']:>6}  {'x'.join(f'{d}={n}' for d, n in f['distinct'].items())}")
    print("\nEvent lines (mean bytes, newline included)")
    for k, v in r["service"]["plain"]["event_bytes"].items():
        print(f"   {k:<22}{v['lines']:>7} lines {v['mean_bytes']:>9.1f} B")
    cl = r["service"]["plain"]["closed_loop"]
    print(f"\nService, one worker busy (closed loop): {cl['1']['rps']:.0f} requests/s at 1 record "
          f"(p50 {cl['1']['p50_ms']:.2f} ms), {cl['20']['rps']:.0f} at 20 records")
    print(f"\nExporter ingest (idle {e['idle_cpu_per_s']:.3f} CPU s/s)")
    for x in e["rates"]:
        print(f"   {x['target']:>7,} events/s asked: written {x['written_per_s']:>8,.0f}/s, read {x['read_per_s']:>8,.0f}/s, "
              f"CPU {x['cpu_per_s']:.3f} s/s = {x['cpu_per_kevents']:.4f} per 1k events/s")
    b = e["bulk"]
    print(f"   {b['events']:,.0f} lines at once: {b['events_per_cpu_second']:,.0f} events per CPU second, "
          f"{b['events_per_wall_second']:,.0f} per wall second")
    ev = e["evaluation"]
    print(f"   evaluation of {e['windows']} windows, one model: {ev['cpu_per_evaluation']:.3f} CPU s each "
          f"(its own gauge: {ev['duration_median']:.3f} s)")
    s = r["elasticsearch_source"]
    print(f"\nElasticsearch source (against the search stand-in): {s['searches']:.0f} searches sent, "
          f"{s['searches_per_evaluation']} per evaluation ({s['evaluations']} evaluations: {s['asked_per_window_ms']}), "
          f"{s['mean_body_bytes']:,.0f} B per search body")
    p = r["prometheus"]
    if "runs" in p:
        print(f"\nPrometheus, scrape every {p['interval']} s")
        for x in p["runs"]:
            print(f"   {x['models']:>4} models ({x['targets']} targets): {x['head_series']:>9,.0f} series "
                  f"(expected {x.get('expected_series', float('nan')):,.0f}), "
                  f"{x.get('targets_up', float('nan')):.0f} targets up, "
                  f"{x['samples_per_s']:>9,.0f} samples/s, CPU {x['cpu_per_s']:.3f} s/s, RSS {_b(x['rss_bytes'])}, "
                  f"heap {_b(x['heap_inuse_bytes'])}")
        if "bytes_per_series_rss" in p:
            print(f"   slopes: {p['bytes_per_series_rss']:,.0f} B RSS and {p['bytes_per_series_heap']:,.0f} B heap per "
                  f"series; CPU per 1k samples/s {p['cpu_per_ksamples']:.4f} (slope), "
                  f"{p['cpu_per_ksamples_mean']:.4f} (mean ratio)")
    else:
        print(f"\nPrometheus: {p.get('skipped')}")
    if "table" in r:
        print_table(r["table"])
    if "table_bins" in r:
        print(f"\nWith the service's bin counters ({BIN_SWITCH}=1):")
        print_table(r["table_bins"])


def print_table(table: Iterable[dict[str, float]]) -> None:
    print("\nCapacity (requests/s over all models, 1 record each; scrape every 15 s)")
    print(f"   {'models':>6}{'req/s':>8}{'replicas':>9}{'series':>10}{'samples/s':>11}{'prom RAM':>11}"
          f"{'prom cores':>11}{'events/day':>12}{'ES/day (est.)':>24}{'exp. cores':>11}{'exporters':>10}")
    for row in table:
        es = f"{_b(row['es_bytes_per_day_low'])}..{_b(row['es_bytes_per_day_high'])}"
        print(f"   {row['models']:>6}{row['rps']:>8,.0f}{row['replicas']:>9}{row['series']:>10,.0f}"
              f"{row['samples_per_s']:>11,.0f}{_b(row['prometheus_ram_bytes']):>11}{row['prometheus_cores']:>11.2f}"
              f"{_b(row['event_bytes_per_day']):>12}{es:>24}{row['exporter_cores']:>11.2f}{row['exporters']:>10}")


def markdown_table(table: Iterable[dict[str, float]]) -> str:
    """The table of docs/scaling.md, from a run's rows."""
    head = ("| models | requests/s | replicas (workers) | series | samples/s | Prometheus RAM | Prometheus cores "
            "| Prometheus disk/day | event bytes/day | ES storage/day (estimate) | exporter cores (processes) "
            "| ES searches/s |")
    lines = [head, "|" + "---:|" * head.count(" | ") + "---:|"]
    for r in table:
        lines.append(
            f"| {r['models']} | {r['rps']:,.0f} | {r['replicas']} ({r['workers']}) | {r['series']:,.0f} "
            f"| {r['samples_per_s']:,.0f} | {_b(r['prometheus_ram_bytes'])} | {r['prometheus_cores']:.2f} "
            f"| {_b(r.get('prometheus_disk_bytes_per_day', float('nan')))} | {_b(r['event_bytes_per_day'])} "
            f"| {_b(r['es_bytes_per_day_low'])} to {_b(r['es_bytes_per_day_high'])} "
            f"| {r['exporter_cores']:.2f} ({r['exporters']}) | {r['es_searches_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter phases, two Prometheus sizes (~1.5 min)")
    ap.add_argument("--bundle", default=str(BUNDLE))
    ap.add_argument("--json", metavar="FILE", default=str(JSON_OUT), help=f"every figure as JSON (default {JSON_OUT})")
    ap.add_argument("--from-json", metavar="FILE", help="print a saved run again, and the table as Markdown; "
                    "the table is recomputed from the saved inputs, so a change of the model's decisions shows")
    ap.add_argument("--worker-rps", type=float, help="with --from-json: the table with this many single-record "
                    "requests/s per worker instead of the measured one (e.g. make bench-serving's, on a quiet machine)")
    args = ap.parse_args(argv)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        if "inputs" in result:
            if args.worker_rps:
                result["inputs"]["worker_rps"] = args.worker_rps
            result["table"] = capacity_table(Inputs(**result["inputs"]))
            if "inputs_bins" in result:
                if args.worker_rps:
                    result["inputs_bins"]["worker_rps"] = args.worker_rps
                result["table_bins"] = capacity_table(Inputs(**result["inputs_bins"]))
        report(result)
        print("\n" + markdown_table(result.get("table", [])))
        if "table_bins" in result:
            print(f"\nWith {BIN_SWITCH}=1:\n" + markdown_table(result["table_bins"]))
        return 0
    started = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = time.perf_counter() - started
    print(f"\ndone in {result['wall_seconds']:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
