"""Realized quality in the exporter: feedback events joined to the prediction events they label.

The file source hands every batch of decoded events to ``Join.ingest`` (one call per batch). The
join keeps, per record ``(request_id, record_index)``:

- **held predictions**: time, model version, predicted class / probabilities or value, and the label
  once it arrives. At most ``feedback_max_predictions`` of them and none older than
  ``feedback_horizon``; beyond either the oldest go first, counted in
  ``mlpulse_exporter_feedback_evicted_total{kind="prediction", cause}``. A label for a prediction
  no longer held is counted (``outcome="prediction_gone"``) and not used.
- **pending labels**: feedback read before its prediction (another worker's line written later, a
  replay), held until the prediction arrives; at most ``feedback_max_pending``, none older than the
  horizon, evictions counted (``kind="pending"``).

The same label again is a duplicate; another label replaces the record's label (an update); a
request id used again replaces the earlier prediction (as the service's ledger does). Nothing is
double counted, whatever the order of arrival.

Windows are by **prediction time**: window ``w`` holds the labelled predictions made in the last
``w``. A window with fewer than ``min_labels`` labels exports no realized score (absent series, as
drift does), but still its label count and labelled share. The metrics are
``mlpulse.quality.realized`` (scikit-learn's functions) on the window's joined records.

Restart: the join state is written into the file source's checkpoint with the tail position, so
after a restart it is exactly what the events read so far made it (docs/exporter.md, "Realized
quality").
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import operator
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from mlpulse.events import EVENT_FEEDBACK, EVENT_SCORED
from mlpulse.exporter.windows import version_key
from mlpulse.schema import OutputSpec, label_key

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)
Rec = tuple[str, int]  # (request_id, record_index)
# What became of each feedback event read.
OUTCOMES = ("joined", "updated", "duplicate", "held", "prediction_gone", "unknown_model", "invalid")
EVICTIONS = (("prediction", "cap"), ("prediction", "horizon"), ("pending", "cap"), ("pending", "horizon"))
# Label delay (label time minus prediction time): a minute to a quarter.
DELAY_BUCKETS = (60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 90 * 86400.0)
STATE_VERSION = 1


_FLOAT = {float}


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


class _Model:
    """What the join needs of a model version: its output, class order and baseline."""

    def __init__(self, output: OutputSpec, baseline: list[dict[str, Any]] | None):
        self.output = output
        self.keys = list(output.class_keys)
        self.texts = {k: k for k in self.keys}  # one string object per class, whatever event it came from
        self.baseline = baseline or []
        self.delays = np.zeros(len(DELAY_BUCKETS) + 1, dtype=np.int64)
        self.delay_sum = 0.0
        self.last_label = 0.0  # time of the newest first label joined (LabelsNotArriving)

    def prediction(self, pred: Any) -> Any:
        """The stored form of an event's prediction, or None if it cannot be scored."""
        if not isinstance(pred, dict):
            return None
        if self.output.task == "regression":
            return _number(pred.get("value"))
        cls = pred.get("class")
        if cls is None:
            return None
        text = label_key(cls)
        probs = pred.get("probabilities")
        if self.output.probabilities:
            if not isinstance(probs, dict):
                return None
            row = tuple(map(probs.get, self.keys))
            # Finite floats as they are (what the service writes; an overflowing sum only sends a
            # row down the exact path); anything else through _number, which refuses it or makes it a float.
            if set(map(type, row)) != _FLOAT or not math.isfinite(sum(row)):
                row = tuple(map(_number, row))
                if None in row:
                    return None
            return (text, row)
        return (text, None)

    def predictions(self, events: list[dict[str, Any]]) -> list[Any] | None:
        """``prediction`` of each event's ``prediction`` object, read for all at once, when every
        one is of the form the service writes: a finite float value (regression), or a text class
        with, where the model has them, finite float probabilities of every class. None otherwise
        (a caller then takes the events one by one)."""
        preds = list(map(dict.get, events, itertools.repeat("prediction")))
        if set(map(type, preds)) != _DICT:  # absent (None) or no object: one by one
            return None
        if self.output.task == "regression":
            values = list(map(dict.get, preds, itertools.repeat("value")))
            return values if set(map(type, values)) == _FLOAT and math.isfinite(sum(values)) else None
        classes = list(map(dict.get, preds, itertools.repeat("class")))
        if set(map(type, classes)) != _STR:  # a text class is its own label_key
            return None
        classes = list(map(self.texts.get, classes, classes))  # held as the model's own strings
        if not self.output.probabilities:
            return list(zip(classes, itertools.repeat(None)))
        probs = list(map(dict.get, preds, itertools.repeat("probabilities")))
        if len(self.keys) < 2 or set(map(type, probs)) != _DICT:
            return None
        try:
            rows = list(map(operator.itemgetter(*self.keys), probs))
        except KeyError:
            return None
        if set(map(type, itertools.chain.from_iterable(rows))) != _FLOAT \
                or not math.isfinite(sum(map(sum, rows))):  # an overflowing sum only sends the run one by one
            return None
        return list(zip(classes, rows))


class _Times:
    """The times of one model version's held predictions, by the position each got when held.
    Positions grow with every prediction held, in the held table's own order, so the oldest go
    first (the cap, the horizon) and a request id used again leaves a hole (NaN). Counting the
    predictions made in a window is one numpy comparison, whatever the number held."""

    def __init__(self) -> None:
        self.buf = np.empty(1024)
        self.base = 0  # the position of buf[0]
        self.lo = 0  # buf[lo:size] spans the live positions
        self.size = 0
        self.live = 0

    def _room(self, k: int) -> None:
        if self.size + k <= len(self.buf):
            return
        live = self.size - self.lo
        if live + k > len(self.buf) // 2:  # more than half full once the dead front is dropped: grow
            buf = np.empty(max(2 * len(self.buf), 2 * (live + k)))
        else:
            buf = self.buf
        buf[:live] = self.buf[self.lo:self.size]
        self.buf, self.base, self.size, self.lo = buf, self.base + self.lo, live, 0

    def add(self, ts: Sequence[float]) -> range:
        """Hold these times; their positions."""
        k = len(ts)
        self._room(k)
        self.buf[self.size:self.size + k] = ts
        self.size += k
        self.live += k
        return range(self.base + self.size - k, self.base + self.size)

    def remove(self, positions: Sequence[int]) -> None:
        at = np.asarray(positions, dtype=np.int64) - self.base
        self.buf[at] = np.nan
        self.live -= len(at)
        if at.min() > self.lo:  # the oldest is still held
            return
        lo = self.lo  # past the dead front, a chunk at a time: lo only grows, so this is O(1) amortized
        while lo < self.size:
            live = np.flatnonzero(~np.isnan(self.buf[lo:lo + 256]))
            if live.size:
                lo += int(live[0])
                break
            lo += 256
        self.lo = min(lo, self.size)

    def holes(self) -> int:
        """Dead positions between the oldest and the newest held (request ids used again)."""
        return self.size - self.lo - self.live

    def count_after(self, starts: Sequence[float]) -> list[int]:
        """Held predictions made after each of ``starts``."""
        times = self.buf[self.lo:self.size]
        return [int(np.count_nonzero(times > s)) for s in starts]


# What the clean paths read of every event of a run at once.
_MODEL, _REQUEST_ID = operator.itemgetter("model"), operator.itemgetter("request_id")
_NAME_VERSION = operator.itemgetter("name", "version")
_DICT, _STR, _INT = {dict}, {str}, {int}


class Join:
    def __init__(self, windows: list[float], min_labels: int, horizon: float, max_predictions: int,
                 max_pending: int, n_bins: int = 10):
        self.windows, self.min_labels, self.horizon = sorted(windows), min_labels, horizon
        self.max_predictions, self.max_pending, self.n_bins = max_predictions, max_pending, n_bins
        self.models: dict[Key, _Model] = {}
        # record -> (prediction ts, model key, prediction, label or None, label ts, position in _Times).
        # Tuples, replaced whole when labelled: a tuple of numbers and texts is dropped from the cycle
        # collector's tracking after its first pass, which a list never is (the table holds up to its cap).
        self.held: OrderedDict[Rec, tuple[Any, ...]] = OrderedDict()
        self.times: dict[Key, _Times] = {}  # per version, the held predictions' times (the windows' counts)
        self.labelled: dict[Rec, None] = {}  # the held records with a label: what a window's scores read
        self.pending: OrderedDict[Rec, list[Any]] = OrderedDict()  # record -> [label, label ts, model key]
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.evicted = dict.fromkeys(EVICTIONS, 0)
        self.results: list[tuple[str, dict[str, str], float]] = []
        self.sklearn = True

    def track(self, name: str, version: str, output: OutputSpec, metadata: dict[str, Any]) -> None:
        baseline = metadata.get("quality_baseline")
        if baseline is None:
            log.info("bundle %s %s has no quality_baseline: realized quality is exported without a baseline",
                     name, version)
        self.models[(name, version)] = _Model(output, baseline if isinstance(baseline, list) else None)
        self.times.setdefault((name, version), _Times())  # a version tracked again keeps its held times

    def untrack(self, name: str, version: str) -> None:
        """A retired version: its model, held predictions and pending labels go."""
        key = (name, version)
        self.models.pop(key, None)
        self.times.pop(key, None)
        for table, at in ((self.held, 1), (self.pending, 2)):
            for rec in [r for r, entry in table.items() if entry[at] == key]:
                del table[rec]
                self.labelled.pop(rec, None)

    # -- ingestion ----------------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]], timestamp, stamps: Sequence[float | None] | None = None) -> None:
        """One batch of decoded events; ``timestamp(event)`` is the file source's parser, and
        ``stamps`` (aligned with ``events``) the predictions' timestamps it already parsed.

        Events are taken in file order: each run of consecutive predictions together
        (``_predictions``), each feedback event on its own, so a label meets exactly the
        predictions read before it, as one event at a time."""
        kinds = list(map(dict.get, events, itertools.repeat("event")))
        if stamps is None:
            stamps = [timestamp(e) if k == EVENT_SCORED else None for e, k in zip(events, kinds)]
        start = 0
        for i in [i for i, k in enumerate(kinds) if k != EVENT_SCORED] + [len(events)]:
            if i > start:
                self._predictions(events[start:i], stamps[start:i])
            if i < len(events) and kinds[i] == EVENT_FEEDBACK:
                self._feedback(events[i], timestamp(events[i]))
            start = i + 1

    def _predictions(self, events: list[dict[str, Any]], stamps: Sequence[float | None]) -> None:
        """Hold a run of prediction events, in order (their timestamps parsed in ``stamps``)."""
        if self._hold_clean(events, stamps):
            return
        # One at a time (the definition). This loop runs for every prediction of a run that is not
        # clean, so its lookups are bound once.
        models, held, pending, times = self.models, self.held, self.pending, self.times
        hold, drop_held, take_pending = held.__setitem__, held.pop, pending.pop
        cap = self.max_predictions
        for e, ts in zip(events, stamps):
            model = e.get("model")
            if ts is None or not isinstance(model, dict):
                continue
            key = (model.get("name"), model.get("version"))
            try:
                m = models.get(key)
            except TypeError:  # a name or version that is no JSON scalar
                continue
            rid, idx = e.get("request_id"), e.get("record_index", 0)
            if m is None or not isinstance(rid, str) or not isinstance(idx, int):
                continue
            pred = m.prediction(e.get("prediction"))
            if pred is None:
                continue
            rec = (rid, idx)
            old = drop_held(rec, None)  # a request id used again names the newer request
            if old is not None:
                self._forget([(rec, old)])
            entry = (ts, key, pred, None, 0.0, times[key].add((ts,))[0])
            hold(rec, entry)
            if pending:
                waiting = take_pending(rec, None)
                if waiting is not None and waiting[1] >= ts:  # a label given before this prediction is not its label
                    self._label(rec, entry, waiting[0], waiting[1], new_outcome="joined")
            if len(held) > cap:
                self._forget([held.popitem(last=False)])
                self.evicted[("prediction", "cap")] += 1

    def _hold_clean(self, events: list[dict[str, Any]], stamps: Sequence[float | None]) -> bool:
        """What ``_predictions`` does one event at a time, with each field read for the whole run by
        C-level ``map``, for a clean run: every event with a timestamp, a ``model`` object of one
        tracked version, a text ``request_id`` and an integer ``record_index`` (no boolean) naming
        records distinct within the run and without a pending label, and a prediction its model
        reads without a per-value decision (``_Model.predictions``). False, having changed
        nothing, for any other run."""
        try:
            models = list(map(_MODEL, events))
            if set(map(type, models)) != _DICT or None in stamps:
                return False
            keys = set(map(_NAME_VERSION, models))
            if len(keys) != 1:
                return False
            key = keys.pop()
            m = self.models.get(key)
            rids = list(map(_REQUEST_ID, events))
            indexes = list(map(dict.get, events, itertools.repeat("record_index"), itertools.repeat(0)))
        except (KeyError, TypeError):  # a missing name or version, an unhashable one
            return False
        if m is None or set(map(type, rids)) != _STR or set(map(type, indexes)) != _INT:
            return False
        recs = list(zip(rids, indexes))
        unique = set(recs)
        # (Both tests walk the run's records, not the tables: the tables hold up to their caps.)
        if len(unique) != len(recs) or (self.pending and any(map(self.pending.__contains__, unique))):
            return False
        preds = m.predictions(events)
        if preds is None:
            return False
        held = self.held
        again = list(filter(held.__contains__, unique))  # request ids used again: the newer request, at the end
        if again and len(held) + len(recs) - len(again) > self.max_predictions:
            return False  # one at a time, the cap may evict such a record before its new prediction is read
        if again:
            self._forget([(rec, held.pop(rec)) for rec in again])
        held.update(zip(recs, zip(stamps, itertools.repeat(key), preds, itertools.repeat(None), itertools.repeat(0.0),
                                  self.times[key].add(stamps))))
        over = len(held) - self.max_predictions
        if over > 0:
            self._forget([held.popitem(last=False) for _ in range(over)])
            self.evicted[("prediction", "cap")] += over
        return True

    def _feedback(self, e: dict[str, Any], ts: float | None) -> None:
        fb = e.get("feedback")
        model = e.get("model")
        if ts is None or not isinstance(fb, dict) or not isinstance(model, dict):
            self.outcomes["invalid"] += 1
            return
        rid, idx, label = fb.get("request_id"), fb.get("record_index"), fb.get("label")
        if not isinstance(rid, str) or not isinstance(idx, int) or not isinstance(label, str):
            self.outcomes["invalid"] += 1
            return
        key = (model.get("name"), model.get("version"))
        try:
            known = key in self.models
        except TypeError:  # a name or version that is no JSON scalar
            known = False
        if not known:
            self.outcomes["unknown_model"] += 1
            return
        entry = self.held.get((rid, idx))
        if entry is not None:
            self._label((rid, idx), entry, label, ts)
            return
        if fb.get("predicted_at") and self._predicted_before_window(fb["predicted_at"], ts):
            self.outcomes["prediction_gone"] += 1
            return
        self.pending.pop((rid, idx), None)
        self.pending[(rid, idx)] = [label, ts, key]
        self.outcomes["held"] += 1
        if len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.evicted[("pending", "cap")] += 1

    def _predicted_before_window(self, predicted_at: Any, ts: float) -> bool:
        """Whether the labelled prediction is older than anything held: it will never be read again."""
        import datetime as dt

        try:
            when = dt.datetime.fromisoformat(predicted_at).timestamp()
        except (TypeError, ValueError):
            return False
        oldest = next(iter(self.held.values()))[0] if self.held else None
        return when < ts - self.horizon or (oldest is not None and when < oldest)

    def _label(self, rec: Rec, entry: tuple[Any, ...], label: str, ts: float, new_outcome: str = "joined") -> None:
        if entry[3] is None:
            self.held[rec] = entry[:3] + (label, ts) + entry[5:]
            self.labelled[rec] = None
            m = self.models[entry[1]]
            delay = max(0.0, ts - entry[0])
            m.delays[int(np.searchsorted(DELAY_BUCKETS, delay))] += 1
            m.delay_sum += delay
            m.last_label = max(m.last_label, ts)
            self.outcomes[new_outcome] += 1
        elif entry[3] == label:
            self.outcomes["duplicate"] += 1
        else:
            self.held[rec] = entry[:3] + (label, ts) + entry[5:]
            self.outcomes["updated"] += 1

    def _forget(self, gone: list[tuple[Rec, tuple[Any, ...]]]) -> None:
        """Records no longer held (evicted, expired, replaced): out of the times and the labelled."""
        by_key: dict[Key, list[int]] = {}
        for rec, entry in gone:
            by_key.setdefault(entry[1], []).append(entry[5])
            if entry[3] is not None:
                del self.labelled[rec]
        for key, positions in by_key.items():
            times = self.times[key]
            times.remove(positions)
            # Ids used again and again behind an old record: renumbered when the holes outnumber every
            # record held, so the O(held) walk of _renumber is paid at most once per that many removals.
            if times.holes() > max(1024, len(self.held)):
                self._renumber(key)

    def _renumber(self, key: Key) -> None:
        """New positions for a version's held predictions, without the holes (walks every held record)."""
        recs = [r for r, e in self.held.items() if e[1] == key]
        times = self.times[key] = _Times()
        for rec, pos in zip(recs, times.add([self.held[r][0] for r in recs])):
            self.held[rec] = self.held[rec][:5] + (pos,)

    def expire(self, now: float) -> None:
        cutoff = now - self.horizon
        gone = []
        while self.held and next(iter(self.held.values()))[0] < cutoff:
            gone.append(self.held.popitem(last=False))
        if gone:
            self._forget(gone)
            self.evicted[("prediction", "horizon")] += len(gone)
        while self.pending and next(iter(self.pending.values()))[1] < cutoff:
            self.pending.popitem(last=False)
            self.evicted[("pending", "horizon")] += 1

    # -- evaluation ---------------------------------------------------------------------------

    def in_windows(self, now: float) -> dict[Key, list[tuple[int, list[tuple[Any, ...]]]]]:
        """Per model version and window (``self.windows``' order): the number of held predictions
        made in it (after its start), and the labelled ones. The counts are one numpy comparison per
        version and window (``_Times``); only the labelled records are walked, so the cost does not
        grow with the unlabelled predictions held."""
        if not self.windows:
            return {}
        starts = [now - w for w in self.windows]  # shortest window first: latest start first
        latest_first = [-s for s in starts]  # ascending, for bisect
        labels: dict[Key, list[list[tuple[Any, ...]]]] = {key: [[] for _ in starts] for key in self.times}
        held = self.held
        for rec in self.labelled:
            entry = held[rec]
            i = bisect.bisect_right(latest_first, -entry[0])  # the shortest window it was made after the start of
            if i < len(starts):
                labels[entry[1]][i].append(entry)
        out: dict[Key, list[tuple[int, list[tuple[Any, ...]]]]] = {}
        for key, times in self.times.items():
            labelled: list[tuple[Any, ...]] = []
            rows = []
            for n, ls in zip(times.count_after(starts), labels[key]):  # a window holds what its shorter ones hold
                labelled = labelled + ls
                rows.append((n, labelled))
            out[key] = rows
        return out

    def evaluate(self, now: float, window_label) -> None:
        from mlpulse.quality.realized import realized

        self.expire(now)
        out: list[tuple[str, dict[str, str], float]] = []
        held = self.in_windows(now)
        none = [(0, [])] * len(self.windows)
        for key, m in self.models.items():
            mv = {"model": key[0], "version": key[1]}
            for b in m.baseline:
                value = _number(b.get("value")) if isinstance(b, dict) else None
                if value is not None:
                    out.append(("mlpulse_quality_baseline", {**mv, "metric": str(b.get("metric")),
                                                             "class": str(b.get("class", ""))}, value))
            for w, (n, labelled) in zip(self.windows, held.get(key, none)):
                base = {**mv, "window": window_label(w)}
                out.append(("mlpulse_quality_labelled", base, float(len(labelled))))
                if n:
                    out.append(("mlpulse_quality_labelled_ratio", base, len(labelled) / n))
                if len(labelled) < self.min_labels or not self.sklearn:
                    continue
                try:
                    values = self._realized(realized, m, labelled)
                except ImportError:
                    self.sklearn = False
                    log.warning("scikit-learn is not installed: no realized quality (pip install 'mlpulse[quality]')")
                    continue
                for metric, cls, value in values:
                    out.append(("mlpulse_quality_realized", {**base, "metric": metric, "class": cls}, value))
        self.results = out

    def _realized(self, realized, m: _Model, labelled: list[list[Any]]):
        truth = [e[3] for e in labelled]
        if m.output.task == "regression":
            return realized(m.output, [float(t) for t in truth], [e[2] for e in labelled])
        proba = np.array([e[2][1] for e in labelled], dtype=float) if m.output.probabilities else None
        return realized(m.output, truth, [e[2][0] for e in labelled], proba, self.n_bins)

    # -- checkpoint ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        keys = list(self.models)
        index = {k: i for i, k in enumerate(keys)}

        def pred(p):
            return list(p) if isinstance(p, tuple) else p

        return {
            "version": STATE_VERSION,
            "models": [list(k) for k in keys],
            "held": [[r[0], r[1], e[0], index[e[1]], pred(e[2]), e[3], e[4]] for r, e in self.held.items()
                     if e[1] in index],
            "pending": [[r[0], r[1], p[0], p[1], index[p[2]]] for r, p in self.pending.items() if p[2] in index],
            "outcomes": self.outcomes, "evicted": [[k, c, n] for (k, c), n in self.evicted.items()],
            "delays": {version_key(*k): [m.delays.tolist(), m.delay_sum, m.last_label]
                       for k, m in self.models.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a state written by ``state`` (models not tracked now are dropped)."""
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"join state version {state.get('version')!r}")
            keys = [tuple(k) for k in state["models"]]
            for rid, idx, ts, ki, p, label, lts in state["held"]:
                key = keys[ki]
                if key in self.models:
                    p = (p[0], tuple(p[1]) if p[1] is not None else None) if isinstance(p, list) else p
                    rec = (rid, idx)
                    old = self.held.pop(rec, None)  # a record written twice: the later one, as when read
                    if old is not None:
                        self._forget([(rec, old)])
                    self.held[rec] = (float(ts), key, p, label, lts, self.times[key].add((float(ts),))[0])
                    if label is not None:
                        self.labelled[rec] = None
            for rid, idx, label, lts, ki in state["pending"]:
                if keys[ki] in self.models:
                    self.pending[(rid, idx)] = [label, lts, keys[ki]]
            self.outcomes.update({k: int(v) for k, v in state["outcomes"].items() if k in self.outcomes})
            for k, c, n in state["evicted"]:
                if (k, c) in self.evicted:
                    self.evicted[(k, c)] = int(n)
            for name, (counts, total, last) in state["delays"].items():
                m = self.models.get(tuple(name.split("\x1f", 1)))
                if m is not None and len(counts) == len(m.delays):
                    m.delays[:] = counts
                    m.delay_sum, m.last_label = float(total), float(last)
            # Within the caps, which may be smaller than when the state was written: the oldest go, counted.
            over = len(self.held) - self.max_predictions
            if over > 0:
                self._forget([self.held.popitem(last=False) for _ in range(over)])
                self.evicted[("prediction", "cap")] += over
            while len(self.pending) > self.max_pending:
                self.pending.popitem(last=False)
                self.evicted[("pending", "cap")] += 1
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            log.warning("join state not restored (%s): realized quality starts empty", e)
            self.held.clear()
            self.pending.clear()
            self.labelled.clear()
            self.times = {key: _Times() for key in self.models}

    # -- Prometheus ---------------------------------------------------------------------------

    def collect(self):
        """The join's own families; its per-window ``results`` (``HELP``) the exporter's collector
        turns into gauges with its own."""
        delay = HistogramMetricFamily("mlpulse_label_delay_seconds", "Time from a prediction to its first label "
                                      "(feedback joined by the exporter)", labels=["model", "version"])
        for (name, version), m in self.models.items():
            cumulative = np.cumsum(m.delays)
            buckets = [(f"{b:g}", float(c)) for b, c in zip(DELAY_BUCKETS, cumulative[:-1])]
            delay.add_metric([name, version], buckets + [("+Inf", float(cumulative[-1]))], m.delay_sum)
        yield delay
        last = GaugeMetricFamily("mlpulse_label_last_timestamp_seconds", "When the newest label joined to a "
                                 "prediction was given (0: none yet)", labels=["model", "version"])
        for (name, version), m in self.models.items():
            last.add_metric([name, version], m.last_label)
        yield last
        events = CounterMetricFamily("mlpulse_exporter_feedback_events", "Feedback events read, by what became of "
                                     "them", labels=["outcome"])
        for outcome, n in self.outcomes.items():
            events.add_metric([outcome], n)
        yield events
        evicted = CounterMetricFamily("mlpulse_exporter_feedback_evicted", "Predictions and pending labels the join "
                                      "dropped, by kind and cause (cap or horizon)", labels=["kind", "cause"])
        for (kind, cause), n in self.evicted.items():
            evicted.add_metric([kind, cause], n)
        yield evicted
        yield GaugeMetricFamily("mlpulse_exporter_feedback_predictions_held", "Predictions held for the join",
                                value=len(self.held))
        yield GaugeMetricFamily("mlpulse_exporter_feedback_pending_held", "Labels held until their prediction is "
                                "read", value=len(self.pending))


HELP = {
    "mlpulse_quality_realized": "Realized quality of the labelled predictions made in the window (scikit-learn's "
    "metric on the joined labels; absent below min_labels)",
    "mlpulse_quality_baseline": "The metric on the bundle's holdout at training (quality_baseline)",
    "mlpulse_quality_labelled": "Predictions made in the window that have a label",
    "mlpulse_quality_labelled_ratio": "Share of the predictions made in the window (held by the join) that have a "
    "label",
}
