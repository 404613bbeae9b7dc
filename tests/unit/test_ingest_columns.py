"""The vectorised ingest (``FileSource.ingest`` over ``Reference.bin_rows``) gives exactly the counts
of the per-event path (``Reference.bin_event`` one event at a time: the previous ingest, kept in
``bench/per_event.py`` as the oracle and the benchmark's baseline) on the same lines: malformed lines, other and refused events, unknown models, events
too old, broken inputs, missing values, out-of-range numbers, unseen categories, wrong types."""

import datetime as dt
import json
import random

import numpy as np
import pytest

from bench.per_event import per_event_ingest
from mlpulse.events import EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.sources.files import IngestBatch, event_timestamp
from mlpulse.exporter.tail import EventTail
from model_service.data import SCHEMA, generate, to_records
from tests.unit.test_exporter import NOW, exporter_for

KEY = ("credit-default", "1.0.0")


def hostile_lines(n, seed):
    """JSON lines of scored events with every kind of value the binning must place, mixed with
    lines that must not be binned at all."""
    rng = random.Random(seed)
    records = to_records(generate(n, seed=seed))
    weird = [None, True, False, "12", [], {}, 1e308, -1e308, 10**15, -5, 0, "", "unseen", 3.5]
    lines = []
    for rec in records:
        ts = NOW - rng.choice([1, 30, 299, 301, 3599, 7200, 90000, 3 * 86400])
        rec = dict(rec)
        for spec in SCHEMA.features:
            r = rng.random()
            if r < 0.05:
                rec[spec.name] = rng.choice(weird)
            elif r < 0.08:
                rec.pop(spec.name)
            elif r < 0.1 and spec.kind == "numeric":
                rec[spec.name] = (spec.maximum or 0) * 10 + 1  # out of range
            elif r < 0.12 and spec.kind == "categorical":
                rec[spec.name] = f"new-{rng.randint(0, 3)}"  # unseen category
        score = rng.random()
        pred = {"value": rng.choice([score] * 8 + [None, "x", True, 2.5]),
                "class": rng.choice(["default", "no_default", "no_default", None, "other", 1])}
        event = {"event": "prediction", "@timestamp": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(),
                 "model": {"name": "credit-default", "version": rng.choice(["1.0.0"] * 9 + ["9.9.9"])},
                 "inputs": rec, "prediction": pred}
        r = rng.random()
        if r < 0.03:
            event["event"] = "prediction.refused"
        elif r < 0.05:
            event["event"] = "feedback"
        elif r < 0.06:
            event["@timestamp"] = "yesterday"
        elif r < 0.07:
            event["inputs"] = ["not", "an", "object"]
        elif r < 0.08:
            event["prediction"] = 0.3
        elif r < 0.09:
            event["model"] = "credit-default"
        lines.append(json.dumps(event).encode())
        r = rng.random()
        if r < 0.02:
            lines.append(b'{"event": "prediction", "inputs": {')  # cut JSON
        elif r < 0.03:
            lines.append(b"\xff\xfe not utf-8")
        elif r < 0.04:
            lines.append(b"[1, 2, 3]")
        elif r < 0.05:
            lines.append(b"")
    return lines


@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_ingest_counts_equal_the_per_event_path(bundle_dir, tmp_path, seed):
    lines = hostile_lines(3000, seed)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "predictions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    exp = exporter_for(bundle_dir, tmp_path, start="beginning")
    seen = []
    exp.source.batch_hooks.append(seen.append)
    assert exp.source.poll() > 0

    with EventTail(str(tmp_path / "events" / "*.jsonl"), start="beginning") as tail:
        events = []
        while True:
            events += tail.poll()
            if not tail.more:
                break
        assert sum(tail.stats.malformed.values()) > 0, "the lines must hold malformed ones"
    counts, rings, newest = per_event_ingest(exp.source, events, NOW)

    assert exp.source.events == counts
    assert min(counts.values()) > 0, f"every outcome must occur: {counts}"
    assert exp.source.newest_event == newest
    ring, oracle = exp.source.rings[KEY], rings[KEY]
    assert np.array_equal(ring.ids, oracle.ids)
    assert np.array_equal(ring.counts, oracle.counts)
    assert ring.counts[:, :].sum() > 0
    assert np.array_equal(ring.mcount, oracle.mcount)
    for name in ("mmean", "m2", "mmin", "mmax"):
        np.testing.assert_allclose(getattr(ring, name), getattr(oracle, name), rtol=1e-12, atol=0)
    # The hooks saw every decoded event once, and the scored ones as columns.
    assert all(isinstance(b, IngestBatch) for b in seen)
    assert sum(len(b.events) for b in seen) == len(events)
    assert sum(len(b.scored[KEY].events) for b in seen if KEY in b.scored) == counts["scored"]
    first = next(b.scored[KEY] for b in seen if KEY in b.scored)
    assert first.column("age") == [r.get("age") for r in first.inputs]
    # Each event's parsed timestamp, aligned: predictions and refusals parsed once, others not.
    for b in seen:
        assert b.stamps == [event_timestamp(e) if e.get("event") in (EVENT_SCORED, EVENT_REFUSED) else None
                            for e in b.events]
    assert any(t is not None for b in seen for t in b.stamps)


def test_bin_columns_takes_numpy_columns_as_the_events_hold_them(bundle_dir, tmp_path):
    exp = exporter_for(bundle_dir, tmp_path)
    ref = exp.references[KEY]
    frame = generate(500, seed=4)
    rows = to_records(frame)
    scores = list(np.linspace(0, 1, 500))
    classes = ["default"] * 250 + ["no_default"] * 250
    from_rows, _ = ref.bin_rows(rows, scores, classes)
    columns = {s.name: (frame[s.name].to_numpy(dtype=float) if s.kind == "numeric" and frame[s.name].notna().all()
                        else frame[s.name].tolist()) for s in SCHEMA.features}
    from_columns, _ = ref.bin_columns(columns, np.asarray(scores), classes)
    assert np.array_equal(from_rows, from_columns)
    expected = []
    for r, s, c in zip(rows, scores, classes):
        ref.bin_event(r, s, c, expected)
    assert np.array_equal(np.sort(from_rows.ravel()), np.sort(np.asarray(expected)))


def hostile_columns(n, seed):
    """Columns as a batch comparison hands them over (numpy arrays of a DataFrame, or lists), holding
    every value the binning must place: NaN, infinities, null, booleans, numbers as text, texts as
    numbers, unseen categories, unhashable values."""
    rng = np.random.default_rng(seed)
    frame = generate(n, seed=seed)
    columns = {}
    for k, spec in enumerate(SCHEMA.features):
        values = frame[spec.name].to_numpy()
        if spec.kind == "numeric":
            x = values.astype(float)
            x[rng.random(n) < 0.05] = np.nan
            x[rng.random(n) < 0.01] = np.inf
            x[rng.random(n) < 0.01] = -np.inf
            x[rng.random(n) < 0.02] = (spec.maximum or 0) * 10 + 1
            kind = k % 4
            if kind == 0:  # float64, what a DataFrame's numeric column gives
                columns[spec.name] = x
            elif kind == 1:  # float32 and whole numbers as int64
                columns[spec.name] = x.astype(np.float32) if np.isnan(x).any() else x.astype(np.int64)
            elif kind == 2:  # an object column with everything JSON can hold
                obj = x.astype(object)
                for i in np.flatnonzero(rng.random(n) < 0.1):
                    obj[i] = [None, True, False, "12", "", 10**15, -(10**400), 3.5][i % 8]
                columns[spec.name] = obj
            else:  # the same as a list, with unhashable values too
                obj = [None if v != v else v for v in x.tolist()]
                for i in np.flatnonzero(rng.random(n) < 0.1):
                    obj[i] = [None, True, "12", [], {}, 10**400][i % 6]
                columns[spec.name] = obj
        else:
            obj = values.astype(object)
            for i in np.flatnonzero(rng.random(n) < 0.1):
                obj[i] = [None, "unseen", "", 1, 1.0, True, float("nan"), spec.categories[0].upper()][i % 8]
            kind = k % 4
            if kind == 0:
                columns[spec.name] = obj
            elif kind == 1:  # fixed-width text, as numpy gives it
                columns[spec.name] = np.array([v if isinstance(v, str) else "other" for v in obj.tolist()])
            elif kind == 2:
                columns[spec.name] = obj.tolist() + []
                columns[spec.name][::97] = [[]] * len(columns[spec.name][::97])  # unhashable
            else:
                columns[spec.name] = np.zeros(n, dtype=np.int64)  # numbers for categories
    scores = rng.random(n)
    scores[::13] = np.nan
    scores[::29] = np.inf
    classes = np.array(["default", "no_default", "other", None, 1], dtype=object)[rng.integers(0, 5, n)]
    return columns, scores, classes


@pytest.mark.parametrize("seed", [3, 4])
def test_numpy_columns_bin_and_count_as_the_per_value_path(bundle_dir, tmp_path, seed):
    """``bin_columns`` and ``count_columns`` on numpy columns (and lists) of hostile values give what
    ``bin_event`` gives value by value on the same values as Python objects."""
    exp = exporter_for(bundle_dir, tmp_path)
    ref = exp.references[KEY]
    n = 2000
    columns, scores, classes = hostile_columns(n, seed)
    as_python = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in columns.items()}
    expected = []
    for i in range(n):
        ref.bin_event({k: v[i] for k, v in as_python.items()}, scores.tolist()[i], classes.tolist()[i], expected)
    expected = np.asarray(expected).reshape(n, -1)

    positions, values = ref.bin_columns(columns, scores, classes)
    assert np.array_equal(positions, expected)
    counts, values2 = ref.count_columns(columns, scores, classes)
    assert np.array_equal(counts, np.bincount(expected.ravel(), minlength=ref.width))
    np.testing.assert_array_equal(values, scores)
    np.testing.assert_array_equal(values2, scores)
    # The hostile values did land everywhere: missing counted in nearly every slot, the unseen bins and
    # both outermost numeric bins (infinities) in most.
    slots = list(ref.slots.values())
    assert sum(counts[s.missing] > 0 for s in slots) >= len(slots) - 2  # fixed-width text has no null
    assert sum(counts[s.offset + s.nbins - 1] > 0 for s in slots if s.kind == "categorical") >= 2
    assert sum(counts[s.offset] > 0 and counts[s.offset + s.nbins - 1] > 0 for s in slots if s.kind == "numeric") >= 4
