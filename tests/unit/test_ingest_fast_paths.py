"""The ingest's clean-batch paths give exactly what the event-at-a-time definitions give.

``FileSource._sort_clean`` (every prediction of a batch read field by field with C-level ``map``)
against ``FileSource._sort``, and ``Join._hold_clean`` (a run of predictions held at once) against
the join's loop, on the same batches: clean ones, canary batches of two versions, predictions
mixed with refusals, feedback and other kinds, and batches holding one event of one of 17 ways a
prediction can be off (no timestamp, a bad one, a model that is no object, an unknown or unhashable
version, a missing name, too old, no inputs object, a prediction that is no object, an empty one,
none at all, a boolean or missing record index, a request id that is no text or used twice in a
run, an integer or a missing probability, a class that is no text). Each run also checks that the clean paths did take most batches, so the
comparison cannot pass by never using them."""

import datetime as dt
import json
import random

import numpy as np
import pytest

from mlpulse.events import EVENT_FEEDBACK, EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.quality import Join
from mlpulse.exporter.sources.files import FileSource
from tests.unit.test_exporter import NOW, exporter_for, two_versions
from tests.unit.test_quality import KEYS

MODEL = "credit-default"


def iso(ts):
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def clean_prediction(rng, i, version):
    p = rng.random()
    rid = f"r{i}" if rng.random() > 0.05 else f"r{rng.randrange(1, i + 1)}"  # now and then a request id used again
    return {"event": EVENT_SCORED, "@timestamp": iso(NOW - rng.uniform(1, 3000)), "request_id": rid,
            "record_index": rng.randrange(3), "model": {"name": MODEL, "version": version},
            "inputs": {"age": rng.randrange(18, 90), "income": rng.uniform(0, 2e5), "loan_purpose": "car"},
            "prediction": {"value": p, "class": KEYS[p < 0.5], "probabilities": {KEYS[0]: p, KEYS[1]: 1 - p}}}


def spoil(e, how):
    """One of 17 ways a prediction event can be off."""
    e = json.loads(json.dumps(e))
    how %= 17
    if how == 0:
        del e["@timestamp"]
    elif how == 1:
        e["@timestamp"] = "yesterday"
    elif how == 2:
        e["model"] = MODEL
    elif how == 3:
        e["model"]["version"] = "9.9.9"
    elif how == 4:
        e["model"]["version"] = ["1.0.0"]
    elif how == 5:
        e["@timestamp"] = iso(NOW - 30 * 86400)
    elif how == 6:
        e["inputs"] = ["not", "an", "object"]
    elif how == 7:
        e["prediction"] = 0.3
    elif how == 8:
        e["record_index"] = True
    elif how == 9:
        del e["record_index"]
    elif how == 10:
        e["prediction"]["probabilities"][KEYS[0]] = 1
    elif how == 11:
        del e["prediction"]["probabilities"][KEYS[1]]
    elif how == 12:
        e["prediction"]["class"] = 1
    elif how == 13:
        e["request_id"] = 7
    elif how == 14:
        del e["model"]["name"]
    elif how == 15:
        del e["prediction"]
    else:
        e["prediction"] = {}
    return e


def batches(seed, versions):
    rng = random.Random(seed)
    out, i = [], 0
    for b in range(100):
        kind = b % 5  # clean; canary; mixed kinds; one spoiled; a request id used twice
        n = rng.randrange(1, 200)
        batch = []
        for _ in range(n):
            i += 1
            batch.append(clean_prediction(rng, i, versions[rng.randrange(len(versions))] if kind == 1 else versions[0]))
        if kind == 2:
            for _ in range(rng.randrange(1, 6)):
                at = rng.randrange(len(batch) + 1)
                e = dict(rng.choice(batch))
                e["event"] = rng.choice([EVENT_REFUSED, EVENT_FEEDBACK, "something.else"])
                if e["event"] == EVENT_FEEDBACK:  # a label for a prediction read before, or one still to come
                    rid = rng.choice([rng.randrange(1, i + 1), i + rng.randrange(1, 300)])
                    e["feedback"] = {"request_id": f"r{rid}", "record_index": rng.randrange(3),
                                     "label": rng.choice(KEYS)}
                batch.insert(at, e)
        elif kind == 3:
            at = rng.randrange(len(batch))
            batch[at] = spoil(batch[at], b // 5)
        elif kind == 4:
            batch.append(dict(rng.choice(batch)))
        out.append(batch)
    return out


@pytest.fixture()
def bundles(bundle_dir, tmp_path):
    return two_versions(bundle_dir, tmp_path / "bundles")


def windows(join):
    return {key: [(n, sorted(e[:5] for e in labelled)) for n, labelled in rows]
            for key, rows in join.in_windows(NOW).items()}


def assert_same(fast, slow):
    a, b = fast.source, slow.source
    assert (a.events, a.newest_event) == (b.events, b.newest_event)
    assert a.rings.keys() == b.rings.keys()
    for key, ring in a.rings.items():
        other = b.rings[key]
        for name in ("ids", "counts", "mcount", "mmean", "m2", "mmin", "mmax"):
            assert np.array_equal(getattr(ring, name), getattr(other, name)), (key, name)
    x, y = fast.join, slow.join
    # Held records in order, without their position in the version's time array (an internal
    # numbering the two paths may give differently), and the window counts those times give.
    assert [(r, e[:5]) for r, e in x.held.items()] == [(r, e[:5]) for r, e in y.held.items()]
    assert list(x.pending.items()) == list(y.pending.items())
    assert windows(x) == windows(y)
    assert (x.outcomes, x.evicted) == (y.outcomes, y.evicted)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_paths_equal_the_event_at_a_time_definitions(bundles, tmp_path, monkeypatch, seed):
    kw = dict(start="beginning", quality_windows="5m,1h", feedback_max_predictions=3000, feedback_max_pending=5)
    fast = exporter_for(str(bundles), tmp_path / "fast", **kw)
    slow = exporter_for(str(bundles), tmp_path / "slow", **kw)
    versions = sorted(v for _, v in fast.references)
    assert versions == ["1.0.0", "2.0.0"]
    seen = {"fast": [], "slow": []}
    fast.source.batch_hooks.append(seen["fast"].append)
    slow.source.batch_hooks.append(seen["slow"].append)
    taken = {"sort": 0, "hold": 0}
    sort_clean, hold_clean = FileSource._sort_clean, Join._hold_clean

    def counted_sort(self, *a):
        got = sort_clean(self, *a)
        taken["sort"] += got is not None
        return got

    def counted_hold(self, *a):
        got = hold_clean(self, *a)
        taken["hold"] += got
        return got

    for batch in batches(seed, versions):
        with monkeypatch.context() as m:
            m.setattr(FileSource, "_sort_clean", counted_sort)
            m.setattr(Join, "_hold_clean", counted_hold)
            fast.source.ingest(json.loads(json.dumps(batch)), now=NOW)
        with monkeypatch.context() as m:  # the definitions alone
            m.setattr(FileSource, "_sort_clean", lambda self, *a: None)
            m.setattr(Join, "_hold_clean", lambda self, *a: False)
            slow.source.ingest(json.loads(json.dumps(batch)), now=NOW)
        assert_same(fast, slow)
        a, b = seen["fast"][-1], seen["slow"][-1]
        assert a.stamps == b.stamps and a.events == b.events
        assert a.scored.keys() == b.scored.keys()
        for key in a.scored:
            x, y = a.scored[key], b.scored[key]
            assert (x.events, x.ts, x.inputs, x.predictions) == (y.events, y.ts, y.inputs, y.predictions)
    counts, join = fast.source.events, fast.join
    assert min(counts.values()) > 0, counts
    assert join.outcomes["joined"] > 0 and join.evicted[("pending", "cap")] > 0, (join.outcomes, join.evicted)
    assert all(ring.counts.sum() > 0 for ring in fast.source.rings.values())  # both versions binned
    # The clean paths took the clean, canary and mixed batches (60 of the 100); the rest went one by one.
    assert taken["sort"] >= 55 and taken["hold"] >= 55, taken
