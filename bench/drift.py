"""What the drift exporter costs: ingest rate, evaluation time against window size, and the same
drift comparison done by Evidently's DataDriftPreset, measured side by side in one run.

    python -m bench.drift [--quick] [--json out.json]
    .venv-bench/bin/python -m bench.drift      # with Evidently (see docs/performance.md)

Data: the service's 14 features (``model_service.data``) plus 5 numeric and 3 categorical
synthetic columns, 22 features (16 numeric, 6 categorical), and a synthetic score as the
prediction. The reference is 100k baseline rows profiled with ``mlpulse.profile.build_profile``
and written as a bundle; the current sample is 100k rows of the service's "drift" scenario (income,
interest_rate, credit_utilization, loan_purpose shift) with some extra columns shifted strongly,
one moderately (0.25 sd: between Evidently's and mlpulse's default sensitivities) and some by a
negligible amount. ``COLUMN_SHIFT`` says which.

1. Ingest: events as the service writes them (dicts with event, @timestamp, model, inputs,
   prediction) through ``Exporter.ingest``; the same events as JSON lines in a file through
   ``EventTail.poll`` alone (and through the previous tail, a line at a time: ``bench/per_line.py``),
   and through ``Exporter.poll`` (tail + ingest).
2. Evaluation time against window rows (10k .. 10M): a 1h window (360 slices of 10s) and the
   default configuration (5m, 1h and 24h windows, all three evaluated, rows in the 24h window).
   Windows up to the current sample's size are filled with events through ``Exporter.ingest``;
   larger ones in bulk: per-slice counts drawn (multinomial) from the current sample's binned
   proportions and written with ``Ring.restore``. The evaluation only ever sees counts.
3. Evidently vs mlpulse on the same 100k-row reference and current sample: Evidently's
   ``Report([DataDriftPreset()]).run`` with default settings, against mlpulse's ``Exporter.evaluate``
   of a window holding the same 100k rows ("evaluate only": what the exporter pays per
   evaluation), against binning the 100k rows into counts with the profile's own binning plus the
   evaluation ("bin + evaluate": a batch comparison from raw rows, given the DataFrame's numpy
   columns, ``Reference.count_columns``), and against ingesting the 100k
   events one by one plus the evaluation (the streaming path, for scale), with the per-column
   verdicts of Evidently, of mlpulse's defaults (PSI 0.2, chi-square alpha 0.01, BH) and of
   mlpulse with ``method="wasserstein"`` (Evidently's methods and thresholds). Rounds interleave
   the variants, so slow drifts of the machine's load hit all of them alike.

Evidently is optional: without it importable the run measures mlpulse only and says so. This is a
measurement: it prints whether the targets are met and always exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bench.machine import machine, main_with_json
from bench.per_event import per_event_ingest
from bench.per_line import PerLineTail
from mlpulse import drift
from mlpulse.bundle import save_bundle
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
from mlpulse.exporter.sources.files import _collector_paused, event_timestamp
from mlpulse.exporter.tail import EventTail
from mlpulse.exporter.windows import PREDICTED_CLASS, Reference
from mlpulse.profile import build_profile
from mlpulse.schema import FeatureSchema, FeatureSpec, OutputSpec
from model_service.data import SCENARIOS, generate
from model_service.data import SCHEMA as SERVICE_SCHEMA

MODEL_NAME, MODEL_VERSION = "bench-wide", "1.0.0"
CLASSES = ("negative", "positive")
OUTPUT = OutputSpec(task="classification", classes=CLASSES, positive_class="positive")
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a whole number of slices: the exporter's fixed clock
SLICE = "10s"
ONE_WINDOW = "1h"
DEFAULT_WINDOWS = ExporterConfig.windows  # 5m,1h,24h
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
TARGET_SPEEDUP = 100.0
# "Flat": no window size's evaluation takes more than 1.5x the 10k-row window's (it must not grow with
# rows). Smaller windows may be slower: up to KS_FINITE_N_MAX the KS p-value is the exact kstwo.
FLAT_MAX_RATIO = 1.5

CHANNELS = ("web", "mobile", "branch", "partner")
REGIONS = tuple(f"region_{i}" for i in range(10))
DEVICES = ("ios", "android", "desktop")
EXTRA_FEATURES = (
    FeatureSpec("sensor_a", "numeric", "float", description="normal(0, 1); current +0.25 sd"),
    FeatureSpec("sensor_b", "numeric", "float", nullable=True, description="normal(50, 10); current +1 sd"),
    FeatureSpec("latency_ms", "numeric", "float", description="lognormal; unchanged"),
    FeatureSpec("ratio", "numeric", "float", description="beta(2, 2); current beta(2.1, 2)"),
    FeatureSpec("retries", "numeric", "int", description="poisson(3); current poisson(4.5)"),
    FeatureSpec("channel", "categorical", "str", categories=CHANNELS, description="unchanged"),
    FeatureSpec("region", "categorical", "str", nullable=True, categories=REGIONS,
                description="current: proportions reversed"),
    FeatureSpec("device", "categorical", "str", categories=DEVICES, description="current: 2 points moved"),
)
WIDE_SCHEMA = FeatureSchema(SERVICE_SCHEMA.features + EXTRA_FEATURES)
NUMERIC = [f.name for f in WIDE_SCHEMA.features if f.kind == "numeric"]
CATEGORICAL = [f.name for f in WIDE_SCHEMA.features if f.kind == "categorical"]
# What the current sample does to each column (by construction, not a measurement).
COLUMN_SHIFT: dict[str, str] = {
    **{name: ("strong" if name in SCENARIOS["drift"] else "none") for name in SERVICE_SCHEMA.names},
    "sensor_a": "moderate",
    "sensor_b": "strong",
    "latency_ms": "none",
    "ratio": "small",
    "retries": "strong",
    "channel": "none",
    "region": "strong",
    "device": "small",
}
REGION_P = np.array([0.2, 0.15, 0.12, 0.1, 0.1, 0.08, 0.08, 0.07, 0.05, 0.05])


# -- data -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    frame: pd.DataFrame  # features only: numeric as float with NaN, categorical as object with None
    score: np.ndarray
    cls: list[str]


def make_sample(n: int, seed: int, drifted: bool) -> Sample:
    df = generate(n, seed=seed, scenario="drift" if drifted else "baseline")[SERVICE_SCHEMA.names].copy()
    rng = np.random.default_rng(seed + 10_000)
    df["sensor_a"] = rng.normal(0.25 if drifted else 0.0, 1.0, n).round(4)
    sensor_b = rng.normal(60.0 if drifted else 50.0, 10.0, n).round(3)
    df["sensor_b"] = np.where(rng.random(n) < 0.02, np.nan, sensor_b)
    df["latency_ms"] = rng.lognormal(math.log(30.0), 0.5, n).round(2)
    df["ratio"] = rng.beta(2.1 if drifted else 2.0, 2.0, n).round(4)
    df["retries"] = rng.poisson(4.5 if drifted else 3.0, n)
    df["channel"] = rng.choice(CHANNELS, n, p=[0.5, 0.3, 0.15, 0.05])
    region = rng.choice(REGIONS, n, p=REGION_P[::-1] if drifted else REGION_P).astype(object)
    region[rng.random(n) < 0.01] = None
    df["region"] = region
    df["device"] = rng.choice(DEVICES, n, p=[0.42, 0.35, 0.23] if drifted else [0.40, 0.35, 0.25])
    for name in NUMERIC:
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    for name in CATEGORICAL:
        df[name] = df[name].astype(object).where(df[name].notna(), None)
    # A synthetic positive-class probability: moves with the drifted inputs, like a real model's.
    rate = df["interest_rate"].fillna(11.0).to_numpy()
    util = df["credit_utilization"].fillna(0.34).to_numpy()
    sb = df["sensor_b"].fillna(50.0).to_numpy()
    logit = -1.6 + 0.12 * (rate - 11) + 1.5 * (util - 0.34) + 0.03 * (sb - 50) + rng.normal(0, 0.5, n)
    score = 1.0 / (1.0 + np.exp(-logit))
    cls = np.where(score >= 0.5, CLASSES[1], CLASSES[0]).tolist()
    return Sample(df[WIDE_SCHEMA.names], score, cls)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The ``inputs`` objects the service would log: numbers as JSON numbers, missing as null."""
    columns = []
    for spec in WIDE_SCHEMA.features:
        values = frame[spec.name].tolist()
        if spec.kind == "numeric":
            conv = int if spec.dtype == "int" else float
            values = [None if v != v else conv(v) for v in values]
        else:
            values = [v if isinstance(v, str) else None for v in values]
        columns.append(values)
    names = WIDE_SCHEMA.names
    return [dict(zip(names, row)) for row in zip(*columns)]


def spread(n: int, window_seconds: float) -> np.ndarray:
    """n timestamps evenly over the window's slices up to NOW (all inside the window)."""
    slice_s = 10.0
    start = NOW - window_seconds + slice_s  # first second of the oldest slice the window holds
    return start + (np.arange(n) + 1) * ((NOW - start) / n)


def make_events(inputs: list[dict[str, Any]], score: np.ndarray, cls: list[str], ts: np.ndarray) -> list[dict]:
    """Scored events shaped like the service's (docs/events.md), cycling through ``inputs``."""
    out = []
    model = {"name": MODEL_NAME, "version": MODEL_VERSION}
    k = len(inputs)
    for i, t in enumerate(ts.tolist()):
        j = i % k
        s = float(score[j])
        out.append({
            "event": "prediction",
            "request_id": f"{i:x}",
            "model": model,
            "record_index": 0,
            "batch_size": 1,
            "inputs": inputs[j],
            "prediction": {"value": s, "class": cls[j], "probabilities": {CLASSES[0]: 1.0 - s, CLASSES[1]: s}},
            "latency_ms": 1.5,
            "violations": [],
            "@timestamp": dt.datetime.fromtimestamp(t, dt.UTC).isoformat(),
        })
    return out


def write_bundle(directory: Path, ref: Sample) -> None:
    from sklearn.dummy import DummyClassifier  # the exporter never loads the model: any fitted one does

    profile = build_profile(
        WIDE_SCHEMA,
        {name: ref.frame[name].tolist() for name in WIDE_SCHEMA.names},
        prediction=ref.score,
        predicted_class=ref.cls,
        classes=CLASSES,
    )
    model = DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), ["negative", "positive"] * 2)
    save_bundle(directory, model, name=MODEL_NAME, version=MODEL_VERSION,
                trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                schema=WIDE_SCHEMA, output=OUTPUT, profile=profile, metrics={})


# -- mlpulse helpers --------------------------------------------------------------------------------


class Bench:
    def __init__(self, workdir: Path):
        self.bundle = workdir / "bundle"
        self.events_dir = workdir / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self.empty_dir = workdir / "no-events"
        self.empty_dir.mkdir(exist_ok=True)

    def exporter(self, windows: str, *, method: str = "psi", events: bool = False, join: bool = True) -> Exporter:
        """An exporter on the bench's bundle; ``join=False`` turns the realized-quality join off
        (``quality_windows`` empty): the drift ingest alone."""
        directory = self.events_dir if events else self.empty_dir
        config = ExporterConfig(events=str(directory / "*.jsonl"), bundles=str(self.bundle), windows=windows,
                                slice=SLICE, start="beginning", checkpoint="", method=method,
                                **({} if join else {"quality_windows": ""}))
        config.validate()
        return Exporter(config, clock=lambda: NOW)


def key_of(exporter: Exporter) -> tuple[str, str]:
    return next(iter(exporter.references))


def bin_sample(ref: Reference, sample: Sample) -> tuple[np.ndarray, drift.Moments]:
    """The count vector of a whole sample in the reference's layout, counted column by column with
    the exporter's batch binning (``Reference.count_columns``: ``bin_columns``, what its ingest
    runs, counted). It gets what Evidently gets, the DataFrame, read as its numpy columns
    (``frame[c].to_numpy()``: float64 with NaN, object with None)."""
    columns = {n: sample.frame[n].to_numpy() for n in ref.schema.names}
    counts, values = ref.count_columns(columns, np.asarray(sample.score, dtype=float),
                                       sample.cls if PREDICTED_CLASS in ref.slots else None)
    return counts, drift.Moments.from_values(values)


def fill_bulk(exporter: Exporter, rows: int, vec: np.ndarray, moments: drift.Moments, seed: int) -> None:
    """Spread ``rows`` rows over every slice of the largest window: per slice and per slot, counts
    drawn from the slot's proportions in ``vec`` (bins and missing), put with Ring.put."""
    key = key_of(exporter)
    ref, ring = exporter.references[key], exporter.source.rings[key]
    n_window = int(round(max(exporter.windows) / exporter.slice_seconds))
    now_slice = ring.slice_of(NOW)
    per_slice = np.full(n_window, rows // n_window, dtype=np.int64)
    per_slice[: rows % n_window] += 1
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_window, ref.width), dtype=np.int64)
    for slot in ref.slots.values():
        cols = list(range(slot.offset, slot.offset + slot.nbins)) + [slot.missing]
        p = vec[cols].astype(float)
        counts[:, cols] = rng.multinomial(per_slice, p / p.sum())
    variance = moments.variance or 0.0
    for i, slice_id in enumerate(range(now_slice - n_window + 1, now_slice + 1)):
        n = int(per_slice[i])
        ring.put(slice_id, counts[i], drift.Moments(n, moments.mean, variance * n, moments.min, moments.max))


def load_counts(exporter: Exporter, vec: np.ndarray, moments: drift.Moments) -> None:
    """Put one whole sample's counts in the newest slice of an otherwise empty ring."""
    ring = exporter.source.rings[key_of(exporter)]
    ring.clear()
    ring.put(ring.slice_of(NOW), vec, moments)


def window_counts(exporter: Exporter, window_seconds: float) -> np.ndarray:
    ring = exporter.source.rings[key_of(exporter)]
    counts, _ = ring.window(ring.slice_of(NOW), int(round(window_seconds / exporter.slice_seconds)))
    return counts


def results_by_feature(exporter: Exporter, window: str) -> dict[str, dict[str, float]]:
    """feature -> {psi, js_distance, wasserstein_norm, ..., p_adj, drifted} from the last evaluation."""
    out: dict[str, dict[str, float]] = {}
    for metric, labels, value in exporter.results:
        if labels.get("window") != window or "feature" not in labels:
            continue
        d = out.setdefault(labels["feature"], {})
        if metric == "mlpulse_drift_score":
            d[labels["statistic"]] = value
        elif metric == "mlpulse_drift_pvalue_adjusted":
            d["p_adj"] = value
        elif metric == "mlpulse_drift_detected":
            d["drifted"] = value
    return out


def window_rows(exporter: Exporter) -> int:
    """Predictions in the largest window, as the exporter reports them."""
    from mlpulse.durations import format_duration

    largest = format_duration(max(exporter.windows))
    for metric, labels, value in exporter.results:
        if metric == "mlpulse_window_predictions" and labels["window"] == largest:
            return int(value)
    return 0


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_cpu(fn: Callable[[], Any], cpu: list[float]) -> float:
    """``timed``, also appending the process's CPU seconds to ``cpu``: "on one core" on a machine
    whose cores are shared, where the wall time counts the other processes' turns too."""
    c0 = time.process_time()
    wall = timed(fn)
    cpu.append(time.process_time() - c0)
    return wall


# -- Evidently --------------------------------------------------------------------------------------


def load_evidently() -> tuple[Any, str | None]:
    """(module namespace, None) or (None, why it is skipped)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import evidently
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset
    except Exception as e:  # ImportError, or a broken install (e.g. evidently 0.7 with pandas 3)
        return None, f"{type(e).__name__}: {e}"
    ns = argparse.Namespace(Report=Report, Dataset=Dataset, DataDefinition=DataDefinition,
                            DataDriftPreset=DataDriftPreset, version=getattr(evidently, "__version__", "?"))
    return ns, None


class EvidentlyRun:
    def __init__(self, ev: Any, ref: pd.DataFrame, cur: pd.DataFrame):
        self.ev, self.ref_df, self.cur_df = ev, ref, cur
        self.definition = ev.DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
        self.ref_ds = self.cur_ds = None

    def datasets(self) -> None:
        self.ref_ds = self.ev.Dataset.from_pandas(self.ref_df, data_definition=self.definition)
        self.cur_ds = self.ev.Dataset.from_pandas(self.cur_df, data_definition=self.definition)

    def run(self, include_tests: bool = False) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.ev.Report([self.ev.DataDriftPreset()], include_tests=include_tests).run(
                current_data=self.cur_ds, reference_data=self.ref_ds)

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """column -> method, threshold, score, drifted, from a run with the preset's tests on."""
        d = self.run(include_tests=True).dict()
        out: dict[str, dict[str, Any]] = {}
        for m in d["metrics"]:
            cfg = m.get("config", {})
            if cfg.get("type", "").endswith("ValueDrift"):
                out[cfg["column"]] = {"method": cfg.get("method"), "threshold": cfg.get("threshold"),
                                      "score": float(m["value"])}
        for t in d["tests"]:
            params = (t.get("metric_config") or {}).get("params", {})
            if params.get("type", "").endswith("ValueDrift") and params.get("column") in out:
                out[params["column"]]["drifted"] = t["status"] == "FAIL"
        return out


# -- the run ----------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    n_rows = 20_000 if quick else 100_000
    ingest_rounds = 2 if quick else 3
    eval_reps = 5 if quick else 15
    cmp_rounds = 1 if quick else 3
    cmp_reps = 5 if quick else 10
    result: dict[str, Any] = {"machine": machine(("numpy", "scipy", "pandas", "orjson", "evidently")), "quick": quick, "rows": n_rows,
                              "features": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)}}
    ev, ev_skip = load_evidently()
    result["evidently"] = {"version": ev.version if ev else None, "skipped": ev_skip}

    print(f"mlpulse drift bench ({'quick' if quick else 'full'}): {result['machine']['date']}, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          + ", ".join(f"{k} {v}" for k, v in result["machine"]["packages"].items()))
    print(f"data: {len(WIDE_SCHEMA.names)} features ({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical), "
          f"reference {n_rows:,} rows, current {n_rows:,} rows")
    t0 = time.perf_counter()
    ref = make_sample(n_rows, seed=1, drifted=False)
    cur = make_sample(n_rows, seed=2, drifted=True)
    cur_inputs = records(cur.frame)
    workdir = Path(tempfile.mkdtemp(prefix="mlpulse-bench-drift-"))
    try:
        bench = Bench(workdir)
        write_bundle(bench.bundle, ref)
        hour = 3600.0
        events = make_events(cur_inputs, cur.score, cur.cls, spread(n_rows, hour))
        lines = b"".join(orjson.dumps(e) + b"\n" for e in events)
        (bench.events_dir / "predictions.jsonl").write_bytes(lines)
        print(f"prepared in {time.perf_counter() - t0:.1f} s (event file {len(lines) / 1e6:.1f} MB)\n")
        result["ingest"] = measure_ingest(bench, events, len(lines), ingest_rounds)
        result["evaluation"] = measure_evaluation(bench, cur, cur_inputs, eval_reps)
        result["comparison"] = compare(bench, ref, cur, events, ev, ev_skip, cmp_rounds, cmp_reps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["targets"] = targets(result)
    print_targets(result["targets"])
    return result


def paused(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with the cycle collector paused, as the file source runs each batch."""
    with _collector_paused():
        return fn(*args)


def measure_ingest(bench: Bench, events: list[dict], file_bytes: int, rounds: int) -> dict[str, Any]:
    n = len(events)
    times: dict[str, list[float]] = {k: [] for k in ("per_event", "ingest", "tail_per_line", "tail", "join", "tail+ingest",
                                                     "tail+ingest, no join")}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    stamps = [event_timestamp(e) for e in events]  # the file source parses them before its hooks run
    for _ in range(rounds):
        exp = bench.exporter(ONE_WINDOW)
        # The previous path, one event at a time (bin_event), kept in the tests as the oracle.
        times["per_event"].append(timed_cpu(lambda exp=exp: [per_event_ingest(exp.source, events[i:i + 10_000], NOW)
                                                             for i in range(0, n, 10_000)], cpu["per_event"]))
        times["ingest"].append(timed_cpu(lambda exp=exp: [paused(exp.source.ingest, events[i:i + 10_000])
                                                          for i in range(0, n, 10_000)], cpu["ingest"]))
        assert exp.source.events["scored"] == n, exp.source.events

        def tail_only(cls: type[EventTail] = EventTail) -> None:
            with cls(str(bench.events_dir / "*.jsonl"), start="beginning") as tail:
                got = 0
                while True:
                    with _collector_paused():  # as the file source polls
                        got += len(tail.poll())
                    if not tail.more:
                        break
            assert got == n, got

        # The previous tail (a line at a time) and the current one (a chunk's lines at once).
        times["tail_per_line"].append(timed_cpu(lambda: tail_only(PerLineTail), cpu["tail_per_line"]))
        times["tail"].append(timed_cpu(tail_only, cpu["tail"]))
        # The join alone on the decoded events, as the file source hands them to it (stamps parsed).
        exp = bench.exporter(ONE_WINDOW)
        times["join"].append(timed_cpu(lambda exp=exp: [paused(exp.join.ingest, events[i:i + 10_000], event_timestamp,
                                                               stamps[i:i + 10_000])
                                                        for i in range(0, n, 10_000)], cpu["join"]))
        assert len(exp.join.held) == n, len(exp.join.held)
        for key, join in (("tail+ingest", True), ("tail+ingest, no join", False)):
            exp = bench.exporter(ONE_WINDOW, events=True, join=join)
            times[key].append(timed_cpu(exp.poll, cpu[key]))
            assert exp.source.events["scored"] == n, exp.source.events
            exp.source.tail.close()
    out = {"events": n, "rounds": rounds, "file_bytes": file_bytes, "seconds": times, "cpu_seconds": cpu}
    print(f"1. Ingest rate: {n:,} events, {len(WIDE_SCHEMA.names)} inputs each, median of {rounds} rounds")
    print(f"   {'path':<44}{'events/s':>12}{'us/event':>10}{'MB/s':>8}{'per CPU s':>12}")
    labels = {"per_event": "per-event binning (the previous ingest)",
              "ingest": "Exporter.ingest (event dicts in memory)",
              "tail_per_line": "the previous tail, a line at a time",
              "tail": "EventTail.poll only (read + orjson parse)",
              "join": "the realized-quality join alone (Join.ingest)",
              "tail+ingest": "Exporter.poll (EventTail.poll + ingest)",
              "tail+ingest, no join": "Exporter.poll, join off (quality_windows \"\")"}
    for k, label in labels.items():
        s = median(times[k])
        c = median(cpu[k])
        out[f"{k}_events_per_second"] = n / s
        out[f"{k}_events_per_cpu_second"] = n / c
        mbs = f"{file_bytes / s / 1e6:8.1f}" if k.startswith("tail") else f"{'':>8}"
        print(f"   {label:<44}{n / s:>12,.0f}{s / n * 1e6:>10.1f}{mbs}{n / c:>12,.0f}")
    out["decoders"] = measure_decoders((bench.events_dir / "predictions.jsonl").read_bytes().splitlines(), rounds)
    print()
    return out


def typed_decoder(msgspec: Any) -> Any:
    """A msgspec decoder typed for the bench's events: a struct holding only what the ingest reads,
    the inputs a struct of this schema (numbers or null, texts or null), other fields skipped. What
    a typed decoder would cost to decode; the exporter does not use one (docs/architecture.md)."""
    model = msgspec.defstruct("Model", [("name", str), ("version", str)])
    inputs = msgspec.defstruct("Inputs", [(f.name, (float | None) if f.kind == "numeric" else (str | None), None)
                                          for f in WIDE_SCHEMA.features])
    prediction = msgspec.defstruct("Prediction", [("value", float | None, None),
                                                  ("cls", str | None, msgspec.field(default=None, name="class"))])
    event = msgspec.defstruct("Event", [("event", str), ("ts", str, msgspec.field(name="@timestamp")),
                                        ("model", model | None, None), ("inputs", inputs | None, None),
                                        ("prediction", prediction | None, None)])
    return msgspec.json.Decoder(event)


def measure_decoders(lines: list[bytes], rounds: int) -> dict[str, float]:
    """Lines/s of the JSON decoders the exporter could use, one line at a time, with Python's cycle
    collector running and paused (the exporter pauses it per batch); msgspec only if importable."""
    import gc

    decoders: dict[str, Callable[[bytes], Any]] = {"orjson": orjson.loads}
    try:
        import msgspec

        decoders["msgspec (untyped)"] = msgspec.json.Decoder().decode
        decoders["msgspec (typed)"] = typed_decoder(msgspec).decode
    except ImportError:
        pass
    out: dict[str, float] = {}
    for name, decode in decoders.items():
        for paused in (False, True):
            best: list[float] = []
            cpu: list[float] = []
            for _ in range(rounds):
                if paused:
                    gc.disable()
                try:
                    best.append(timed_cpu(lambda decode=decode: [decode(line) for line in lines], cpu))
                finally:
                    gc.enable()
            label = f"{name}{', collector paused' if paused else ''}"
            out[label] = len(lines) / median(best)
            out[f"{label}, per CPU second"] = len(lines) / median(cpu)
    print("   JSON decoders, lines/s (per CPU second): " + "; ".join(
        f"{k} {v:,.0f} ({out[k + ', per CPU second']:,.0f})" for k, v in out.items() if not k.endswith("CPU second")))
    return out


def measure_evaluation(bench: Bench, cur: Sample, cur_inputs: list[dict], reps: int) -> dict[str, Any]:
    configs = {"one_1h_window": ONE_WINDOW, "default_windows": DEFAULT_WINDOWS}
    exporters: dict[tuple[str, int], Exporter] = {}
    fill: dict[int, str] = {}
    vec = moments = None
    for cname, windows in configs.items():
        for size in SIZES:
            exp = bench.exporter(windows)
            if size <= len(cur_inputs):
                evs = make_events(cur_inputs, cur.score, cur.cls, spread(size, max(exp.windows)))
                for i in range(0, size, 10_000):
                    exp.source.ingest(evs[i:i + 10_000])
                fill[size] = "events"
            else:
                if vec is None:
                    ref = exp.references[key_of(exp)]
                    vec, moments = bin_sample(ref, cur)
                fill_bulk(exp, size, vec, moments, seed=size)
                fill[size] = "bulk counts"
            exporters[(cname, size)] = exp
    times: dict[tuple[str, int], list[float]] = {k: [] for k in exporters}
    for exp in exporters.values():  # warm-up
        exp.evaluate(NOW)
    for _ in range(reps):
        for k, exp in exporters.items():
            times[k].append(timed(lambda exp=exp: exp.evaluate(NOW)))
    rows = {k: window_rows(exp) for k, exp in exporters.items()}
    out: dict[str, Any] = {"reps": reps, "slice": SLICE, "configs": configs, "sizes": {},
                           "seconds": {f"{c}/{size}": v for (c, size), v in times.items()}}
    print(f"2. Evaluation time of Exporter.evaluate against window rows (median of {reps}, interleaved)")
    print(f"   {'rows':>12}  {'filled with':<12}{'1h window, 360 slices':>24}{'5m+1h+24h windows':>22}")
    for size in SIZES:
        a, b = median(times[("one_1h_window", size)]), median(times[("default_windows", size)])
        out["sizes"][str(size)] = {"fill": fill[size], "one_1h_window_ms": a * 1e3, "default_windows_ms": b * 1e3,
                                   "rows_seen": {c: rows[(c, size)] for c in configs}}
        print(f"   {size:>12,}  {fill[size]:<12}{a * 1e3:>21.2f} ms{b * 1e3:>19.2f} ms")
    for c in configs:
        ms = [out["sizes"][str(s)][f"{c}_ms"] for s in SIZES]
        out[f"{c}_max_over_10k"] = max(ms) / ms[0]
        out[f"{c}_max_over_min"] = max(ms) / min(ms)
        out[f"{c}_10M_over_10k"] = ms[-1] / ms[0]
    print(f"   {'10M / 10k':>12}  {'':<12}{out['one_1h_window_10M_over_10k']:>23.2f}x"
          f"{out['default_windows_10M_over_10k']:>20.2f}x")
    print("   (rows seen by the exporter in the largest window: "
          + ", ".join(f"{rows[('one_1h_window', s)]:,}" for s in SIZES) + ")\n")
    return out


def compare(bench: Bench, ref: Sample, cur: Sample, events: list[dict], ev: Any, ev_skip: str | None,
            rounds: int, reps: int) -> dict[str, Any]:
    n = len(cur.score)
    # mlpulse, evaluate only: a 1h window holding the current sample, ingested as events.
    exp = bench.exporter(ONE_WINDOW)
    for i in range(0, n, 10_000):
        exp.source.ingest(events[i:i + 10_000])
    reference = exp.references[key_of(exp)]
    ingested = window_counts(exp, 3600.0)
    # The same sample binned column by column must give exactly the same counts.
    vec, moments = bin_sample(reference, cur)
    counts_match = bool(np.array_equal(ingested, vec))
    # bin + evaluate: a second exporter whose window is rebuilt from the binned sample each time.
    exp_bin = bench.exporter(ONE_WINDOW)

    def bin_and_evaluate() -> None:
        v, m = bin_sample(reference, cur)
        load_counts(exp_bin, v, m)
        exp_bin.evaluate(NOW)

    # Evidently's methods in mlpulse (numeric: normalised Wasserstein 0.1, categorical: JS 0.1).
    exp_w = bench.exporter(ONE_WINDOW, method="wasserstein")
    exp_w.source.rings[key_of(exp_w)].restore(exp.source.rings[key_of(exp)].state())

    exp.evaluate(NOW)
    bin_and_evaluate()
    exp_w.evaluate(NOW)
    ev_run = None
    ev_verdicts: dict[str, dict[str, Any]] = {}
    if ev is not None:
        ev_run = EvidentlyRun(ev, ref.frame, cur.frame)
        ev_run.datasets()
        ev_verdicts = ev_run.verdicts()  # also the warm-up run
    t_eval: list[float] = []
    t_bin: list[float] = []
    t_ing: list[float] = []
    t_ev: list[float] = []
    t_ds: list[float] = []
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        if ev_run is not None:
            t_ds.append(timed(ev_run.datasets))
            t_ev.append(timed(ev_run.run))
        e = [timed(lambda: exp.evaluate(NOW)) for _ in range(reps)]
        b = [timed(bin_and_evaluate) for _ in range(reps)]
        fresh = bench.exporter(ONE_WINDOW)
        t_ing.append(timed(lambda fresh=fresh: ([fresh.source.ingest(events[i:i + 10_000]) for i in range(0, n, 10_000)],
                                                fresh.evaluate(NOW))))
        t_eval += e
        t_bin += b
        if ev_run is not None:
            per_round.append({"evaluate": t_ev[-1] / median(e), "bin_evaluate": t_ev[-1] / median(b),
                              "ingest_evaluate": t_ev[-1] / t_ing[-1]})
    out: dict[str, Any] = {
        "rows": n, "rounds": rounds, "reps": reps, "counts_match_ingest": counts_match,
        "mlpulse_evaluate_ms": median(t_eval) * 1e3, "mlpulse_bin_evaluate_ms": median(t_bin) * 1e3,
        "mlpulse_ingest_evaluate_ms": median(t_ing) * 1e3,
        "seconds": {"mlpulse_evaluate": t_eval, "mlpulse_bin_evaluate": t_bin, "mlpulse_ingest_evaluate": t_ing,
                    "evidently_run": t_ev, "evidently_datasets": t_ds},
    }
    print(f"3. Evidently DataDriftPreset vs mlpulse, reference {len(ref.score):,} rows vs current {n:,} rows, "
          f"{len(WIDE_SCHEMA.names)} columns")
    print(f"   binned counts of the ingested events == counts binned column by column: {counts_match}")
    print(f"   {'variant':<58}{'median':>12}")
    if ev_run is not None:
        out.update(evidently_run_s=median(t_ev), evidently_datasets_s=median(t_ds),
                   ratio_vs_evaluate=median(t_ev) / median(t_eval),
                   ratio_vs_bin_evaluate=median(t_ev) / median(t_bin),
                   ratio_vs_ingest_evaluate=median(t_ev) / median(t_ing), per_round=per_round)
        print(f"   {f'Evidently {ev.version} Report([DataDriftPreset()]).run (default)':<58}{median(t_ev):>10.2f} s"
              f"   ({rounds} runs)")
        print(f"   {'Evidently Dataset.from_pandas, reference + current':<58}{median(t_ds):>10.2f} s")
    print(f"   {'mlpulse Exporter.evaluate (evaluate only)':<58}{median(t_eval) * 1e3:>9.2f} ms   ({len(t_eval)} runs)")
    print(f"   {f'mlpulse bin {n // 1000}k rows into counts + Exporter.evaluate':<58}{median(t_bin) * 1e3:>9.2f} ms"
          f"   ({len(t_bin)} runs)")
    print(f"   {f'mlpulse Exporter.ingest of the {n // 1000}k events + Exporter.evaluate':<58}"
          f"{median(t_ing) * 1e3:>9.0f} ms   ({len(t_ing)} runs)")
    if ev_run is not None:
        lo = min(r["bin_evaluate"] for r in per_round)
        hi = max(r["bin_evaluate"] for r in per_round)
        print(f"   ratio Evidently / mlpulse evaluate only: {out['ratio_vs_evaluate']:,.0f}x; "
              f"/ bin + evaluate: {out['ratio_vs_bin_evaluate']:,.0f}x (rounds {lo:,.0f}x .. {hi:,.0f}x); "
              f"/ ingest events + evaluate: {out['ratio_vs_ingest_evaluate']:,.1f}x")
    else:
        print(f"   Evidently skipped: {ev_skip}")
    out["columns"] = verdict_table(results_by_feature(exp, ONE_WINDOW), results_by_feature(exp_w, ONE_WINDOW),
                                   ev_verdicts)
    agree = {
        "psi": sum(1 for c in out["columns"] if c.get("evidently_drifted") is not None
                   and c["evidently_drifted"] == c["mlpulse_drifted"]),
        "wasserstein": sum(1 for c in out["columns"] if c.get("evidently_drifted") is not None
                           and c["evidently_drifted"] == c["mlpulse_w_drifted"]),
    }
    out["agreement"] = agree if ev_verdicts else None
    if ev_verdicts:
        m = len(out["columns"])
        print(f"   verdicts agree on {agree['psi']}/{m} columns with mlpulse defaults (psi 0.2, chi2 alpha 0.01, BH), "
              f"{agree['wasserstein']}/{m} with method=wasserstein (Evidently's methods and thresholds)")
    print()
    return out


def verdict_table(psi_res: dict[str, dict[str, float]], w_res: dict[str, dict[str, float]],
                  ev: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    print(f"\n   {'column':<21}{'kind':<6}{'shift':<9}| {'Evidently method':<17}{'score':>7} {'drift':<6}"
          f"| {'mlpulse psi':>11}{'p_adj':>9} {'drift':<6}| {'W or JS':>8} {'drift':<5}")

    def yn(x: Any) -> str:
        return "-" if x is None else ("YES" if x else "no")

    for spec in WIDE_SCHEMA.features:
        name = spec.name
        r, w, e = psi_res.get(name, {}), w_res.get(name, {}), ev.get(name, {})
        stat = drift.METHODS["wasserstein"].for_kind(spec.kind).statistic
        row = {
            "column": name, "kind": spec.kind, "shift": COLUMN_SHIFT[name],
            "evidently_method": e.get("method"), "evidently_threshold": e.get("threshold"),
            "evidently_score": e.get("score"), "evidently_drifted": e.get("drifted"),
            "mlpulse_psi": r.get(drift.METHODS["psi"].statistic), "mlpulse_js": r.get(drift.METHODS["js"].statistic),
            "mlpulse_wasserstein_norm": r.get(drift.METHODS["wasserstein"].statistic), "mlpulse_p_adj": r.get("p_adj"),
            "mlpulse_drifted": bool(r["drifted"]) if "drifted" in r else None,
            "mlpulse_w_statistic": stat, "mlpulse_w_score": w.get(stat),
            "mlpulse_w_drifted": bool(w["drifted"]) if "drifted" in w else None,
        }
        rows.append(row)
        method = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensen-shannon"}.get(
            e.get("method"), e.get("method") or "-")
        es = f"{e['score']:7.3f}" if "score" in e else f"{'-':>7}"
        flag = " <-- differ" if e and row["evidently_drifted"] != row["mlpulse_drifted"] else ""
        print(f"   {name:<21}{spec.kind[:4]:<6}{row['shift']:<9}| {method:<17}{es} {yn(row['evidently_drifted']):<6}"
              f"| {row['mlpulse_psi']:>11.4f}{row['mlpulse_p_adj']:>9.1e} {yn(row['mlpulse_drifted']):<6}"
              f"| {row['mlpulse_w_score']:>8.3f} {yn(row['mlpulse_w_drifted']):<5}{flag}")
    return rows


def targets(result: dict[str, Any]) -> dict[str, Any]:
    ev = result["evaluation"]
    cmp_ = result["comparison"]
    t: dict[str, Any] = {
        "flat": {
            "one_1h_window_10M_over_10k": ev["one_1h_window_10M_over_10k"],
            "default_windows_10M_over_10k": ev["default_windows_10M_over_10k"],
            "limit": FLAT_MAX_RATIO,
            "one_1h_window_max_over_10k": ev["one_1h_window_max_over_10k"],
            "default_windows_max_over_10k": ev["default_windows_max_over_10k"],
            "met": max(ev["one_1h_window_max_over_10k"], ev["default_windows_max_over_10k"]) <= FLAT_MAX_RATIO,
        }
    }
    if "ratio_vs_bin_evaluate" in cmp_:
        m = len(cmp_["columns"])
        full = cmp_["rows"] >= 100_000
        t["speedup"] = {"evaluate_only": cmp_["ratio_vs_evaluate"], "bin_evaluate": cmp_["ratio_vs_bin_evaluate"],
                        "ingest_evaluate": cmp_["ratio_vs_ingest_evaluate"],
                        "target": TARGET_SPEEDUP, "rows": cmp_["rows"],
                        # what the exporter pays per evaluation (binning is paid at ingest, event by event)
                        "met": full and cmp_["ratio_vs_evaluate"] >= TARGET_SPEEDUP,
                        # a batch comparison from raw rows, binning included
                        "met_bin_evaluate": full and cmp_["ratio_vs_bin_evaluate"] >= TARGET_SPEEDUP}
        t["agreement"] = {"columns": m, "agree_default": cmp_["agreement"]["psi"],
                          "agree_wasserstein": cmp_["agreement"]["wasserstein"],
                          "met": cmp_["agreement"]["psi"] == m,
                          "differ": [c["column"] for c in cmp_["columns"]
                                     if c["evidently_drifted"] != c["mlpulse_drifted"]]}
    else:
        t["speedup"] = t["agreement"] = {"met": None, "skipped": result["evidently"]["skipped"]}
    return t


def print_targets(t: dict[str, Any]) -> None:
    def verdict(x: bool | None) -> str:
        return "skipped" if x is None else ("MET" if x else "NOT MET")

    f = t["flat"]
    print("Targets")
    print(f"   evaluation flat from 10k to 10M rows (no size above {f['limit']}x the 10k time): {verdict(f['met'])} "
          f"(10M/10k: {f['one_1h_window_10M_over_10k']:.2f}x one window, {f['default_windows_10M_over_10k']:.2f}x "
          "default windows)")
    s, a = t["speedup"], t["agreement"]
    if s.get("met") is None:
        print(f"   >= {TARGET_SPEEDUP:.0f}x faster than Evidently, same verdicts: skipped ({s['skipped']})")
        return
    small = " (needs 100k rows: run without --quick)" if s["rows"] < 100_000 else ""
    print(f"   >= {s['target']:.0f}x faster than Evidently on {s['rows']:,} rows{small}:")
    print(f"      per evaluation (Exporter.evaluate): {verdict(s['met'])}, {s['evaluate_only']:,.0f}x")
    print(f"      batch from raw rows (bin + evaluate): {verdict(s['met_bin_evaluate'])}, {s['bin_evaluate']:,.0f}x")
    print(f"      (streaming: ingest every event + evaluate: {s['ingest_evaluate']:,.1f}x; not a target)")
    print(f"   same drifted columns as Evidently: {verdict(a['met'])} ({a['agree_default']}/{a['columns']} with "
          f"mlpulse defaults, {a['agree_wasserstein']}/{a['columns']} with method=wasserstein"
          + (f"; differ: {', '.join(a['differ'])}" if a["differ"] else "") + ")")


def main(argv: list[str] | None = None) -> int:
    return main_with_json(run, __doc__, "~30 s smoke run: 20k-row samples, fewer repetitions", argv)


if __name__ == "__main__":
    sys.exit(main())
