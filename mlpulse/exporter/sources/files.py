"""The file source: tail the event log, bin each scored event into its model version's ring.

Events are read in batches of ``BATCH_LINES`` lines (``tail.EventTail``, orjson per line) and
sorted by outcome: a batch whose predictions are all well formed field by field for all of them
at once (``FileSource._sort_clean``), any other event by event (``FileSource._sort``, the
definition; a test holds the two equal). The scored events are binned per model version over the
reference's own bins with numpy over columns (``windows.Reference.bin_rows``) and added to time
slices (``windows.Ring``) with one vectorised update per model version and slice; hooks
(``FileSource.batch_hooks``) then see the batch. A window is the sum of its slices. The tail's
position and the rings are checkpointed together, so a restart neither repeats nor skips an event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import logging
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlpulse.events import EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.tail import EventTail
from mlpulse.exporter.windows import Reference, Ring, arrays_from_text, arrays_to_text, version_key
from mlpulse.quality.live import LiveEstimate

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)
# Lines per batch. A batch's decoded events then stay in the core's cache from decoding through
# binning to the hooks: at 10,000 lines (about 30 MB of objects) they did not, and the same ingest
# took 1.3 to 1.5 times as long (docs/performance.md, "Exporter ingest").
BATCH_LINES = 2_000
# What _sort_clean reads of every prediction event at once.
_TIMESTAMP, _MODEL, _INPUTS, _PREDICTION = (operator.itemgetter(k) for k in ("@timestamp", "model", "inputs", "prediction"))
_NAME_VERSION = operator.itemgetter("name", "version")
_DICT = {dict}
_NO_PREDICTION: dict[str, Any] = {}  # an event without a prediction object reads as one with nothing in it
OUTCOMES = ("scored", "refused", "other", "unknown_model", "too_old", "invalid")


def event_timestamp(event: dict[str, Any]) -> float | None:
    """Unix seconds of an event's ``@timestamp``; None when it has none that parses."""
    try:
        return dt.datetime.fromisoformat(event["@timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class ScoredEvents:
    """One model version's scored events of a batch (inside the horizon), as columns of what the
    binning reads, beside the decoded event objects themselves."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def scores(self) -> list[Any]:
        """Each event's ``prediction.value`` (None where absent)."""
        return list(map(dict.get, self.predictions, itertools.repeat("value")))

    def classes(self) -> list[Any]:
        """Each event's ``prediction.class`` (None where absent)."""
        return list(map(dict.get, self.predictions, itertools.repeat("class")))

    def column(self, name: str) -> list[Any]:
        """One input feature's raw values (None where absent)."""
        return list(map(dict.get, self.inputs, itertools.repeat(name)))


@dataclass
class IngestBatch:
    """What a per-batch hook receives (``FileSource.batch_hooks``), once per ``ingest`` call, after
    the batch is binned: ``events``, every decoded event of the batch in file order (any kind:
    scored, refused, feedback, ...; nothing filtered); ``scored``, per (model name, version) in
    order of first appearance, the scored events the drift windows took, with their timestamps,
    inputs and prediction objects as columns (``ScoredEvents``; ``scores()`` and ``classes()`` read
    the last); ``now``, the clock of the batch; ``stamps``, aligned with ``events``,
    the parsed ``@timestamp`` of every prediction and refused event (None for other kinds, which
    the ingest does not parse, and where it does not parse), so no hook parses them again. A hook
    must not modify them."""

    events: list[dict[str, Any]]
    scored: dict[Key, ScoredEvents]
    now: float
    stamps: list[float | None]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a batch is decoded and binned: decoding allocates a
    dict per JSON object, which triggers collections that walk every young object, yet decoded
    JSON holds no reference cycles to find. Measured, it is a third of the time of a poll
    (docs/performance.md, "Exporter ingest"); the batch is bounded, so the pause is too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class FileSource:
    def __init__(self, config: Any, slice_seconds: float, n_slices: int, clock):
        self.config = config
        self.clock = clock
        self.slice_seconds = slice_seconds
        self.n_slices = n_slices
        self.horizon = (n_slices - 1) * slice_seconds  # the largest window
        self.references: dict[Key, Reference] = {}
        self.rings: dict[Key, Ring] = {}
        self.events = dict.fromkeys(OUTCOMES, 0)  # events read, by what became of them
        self.newest_event = 0.0
        self.tail = EventTail(config.events, start=config.start)
        self._saved_rings: dict[str, str] = {}
        # Called with each ingested batch (IngestBatch): the seam for readers of other event kinds.
        self.batch_hooks: list[Callable[[IngestBatch], None]] = []
        self.quality = LiveEstimate(slice_seconds, n_slices)  # label-free estimate (mlpulse.quality)
        self._saved_quality: dict[str, dict] = {}
        self.batch_hooks.append(lambda batch: self.quality.ingest(batch.scored))
        self.join = None  # the feedback join (mlpulse.exporter.quality), attached by the exporter
        self._saved_join: dict[str, Any] | None = None
        if config.checkpoint:
            _state, extra = self.tail.load_checkpoint(config.checkpoint)
            self._saved_rings = extra.get("rings", {})
            self._saved_quality = extra.get("quality", {})
            self._saved_join = extra.get("join")

    def attach_join(self, join) -> None:
        """Hand every batch to ``join`` from now on (a batch hook: it reads every event, feedback
        included); its state is checkpointed with the tail's position."""
        self.join = join
        self.batch_hooks.append(lambda batch: join.ingest(batch.events, event_timestamp, batch.stamps))
        if self._saved_join is not None:
            join.restore(self._saved_join)
            self._saved_join = None

    def track(self, ref: Reference) -> None:
        key = (ref.name, ref.version)
        self.references[key] = ref
        self.rings[key] = ring = Ring(ref.width, self.slice_seconds, self.n_slices)
        blob = self._saved_rings.pop(version_key(ref.name, ref.version), None)
        if blob is not None:
            try:
                ring.restore(arrays_from_text(blob))
            except (ValueError, OSError, KeyError) as e:
                log.warning("window counts of %s not restored: %s", key, e)

    def untrack(self, ref: Reference) -> None:
        key = (ref.name, ref.version)
        self.references.pop(key, None)
        self.rings.pop(key, None)
        self.quality.untrack(key)

    def track_estimate(self, ref: Reference, estimator) -> None:
        """Keep the label-free estimate's sums of a tracked version (None: its bundle has none)."""
        key = (ref.name, ref.version)
        self.quality.track(key, estimator)
        self.quality.restore(key, self._saved_quality.pop(version_key(ref.name, ref.version), None))

    def estimate_window(self, ref: Reference, now: float, n_slices: int, min_count: int):
        """The label-free estimate over the last ``n_slices`` slices; None when not estimated."""
        return self.quality.estimate((ref.name, ref.version), now, n_slices, min_count)

    # -- ingestion ----------------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]], now: float | None = None) -> None:
        """Sort a batch of decoded events by what becomes of them, then bin the scored ones per
        model version with ``Reference.bin_rows`` (numpy over columns) and add them to the ring
        with one update per (model version, slice). Per-batch hooks then see the whole batch."""
        now = self.clock() if now is None else now
        oldest = now - self.horizon
        sorted_ = self._sort_clean(events, oldest)
        scored, stamps = sorted_ if sorted_ is not None else self._sort(events, oldest)
        for key, batch in scored.items():
            ring = self.rings[key]
            positions, values = self.references[key].bin_rows(batch.inputs, batch.scores(), batch.classes())
            slices = np.floor(np.asarray(batch.ts) / ring.slice_seconds).astype(np.int64)
            finite = np.isfinite(values)
            for slice_id in np.unique(slices):
                rows = slices == slice_id
                ring.add(int(slice_id), positions[rows].ravel(), values[rows & finite])
        if self.batch_hooks:
            batch_view = IngestBatch(events, scored, now, stamps)
            for hook in self.batch_hooks:
                hook(batch_view)

    def _sort(self, events: list[dict[str, Any]], oldest: float
              ) -> tuple[dict[Key, ScoredEvents], list[float | None]]:
        """The definition: each event's outcome, one at a time; returns the scored events per model
        version and every event's parsed timestamp (None for kinds not parsed)."""
        references = self.references
        scored: dict[Key, ScoredEvents] = {}
        stamps: list[float | None] = []
        stamp = stamps.append
        newest = self.newest_event
        # Counted in locals and added once: this loop runs for every event it is given.
        other = invalid = refused = unknown = too_old = 0
        for e in events:
            kind = e.get("event")
            if kind != EVENT_SCORED and kind != EVENT_REFUSED:
                other += 1
                stamp(None)
                continue
            ts = event_timestamp(e)
            stamp(ts)
            model = e.get("model")
            if ts is None or not isinstance(model, dict):
                invalid += 1
                continue
            if ts > newest:
                newest = ts
            if kind == EVENT_REFUSED:
                refused += 1
                continue
            key = (model.get("name"), model.get("version"))
            try:
                known = key in references
            except TypeError:  # a name or version that is no JSON scalar (a list, an object)
                known = False
            if not known:  # counted, never guessed: its own bundle must be deployed
                unknown += 1
                continue
            if ts <= oldest:
                too_old += 1
                continue
            inputs = e.get("inputs")
            pred = e.get("prediction") or _NO_PREDICTION
            if not isinstance(inputs, dict) or not isinstance(pred, dict):
                invalid += 1
                continue
            batch = scored.get(key)
            if batch is None:
                batch = scored[key] = ScoredEvents()
            batch.events.append(e)
            batch.ts.append(ts)
            batch.inputs.append(inputs)
            batch.predictions.append(pred)
        self.newest_event = newest
        counts = self.events
        counts["other"] += other
        counts["invalid"] += invalid
        counts["refused"] += refused
        counts["unknown_model"] += unknown
        counts["too_old"] += too_old
        counts["scored"] += len(events) - other - invalid - refused - unknown - too_old
        return scored, stamps

    def _sort_clean(self, events: list[dict[str, Any]], oldest: float
                    ) -> tuple[dict[Key, ScoredEvents], list[float | None]] | None:
        """``_sort``'s result without a Python step per prediction, for the batch the service
        usually writes: every prediction event well formed (a parsable ``@timestamp``, a ``model``
        object naming a tracked version, an ``inputs`` and a ``prediction`` object), inside the
        horizon. Each field is read for all of them at once by C-level ``map``; the other kinds
        (refusals, feedback, ...) go through ``_sort``. None, having changed nothing, when any
        prediction is not such an event: the caller then sorts the whole batch with ``_sort``."""
        try:
            kinds = list(map(dict.get, events, itertools.repeat("event")))
        except TypeError:  # not a dict
            return None
        n_scored = kinds.count(EVENT_SCORED)
        if n_scored == 0:
            return None
        whole = n_scored == len(events)
        scored_events = events if whole else [e for e, k in zip(events, kinds) if k == EVENT_SCORED]
        try:
            ts = list(map(dt.datetime.timestamp, map(dt.datetime.fromisoformat, map(_TIMESTAMP, scored_events))))
            models = list(map(_MODEL, scored_events))
            if set(map(type, models)) != _DICT or min(ts) <= oldest:
                return None
            keys = list(map(_NAME_VERSION, models))
            distinct = set(keys)
            inputs = list(map(_INPUTS, scored_events))
            predictions = list(map(_PREDICTION, scored_events))
        except Exception:  # noqa: BLE001 -- whatever _sort does with such an event, it decides
            return None
        if not distinct <= self.references.keys() or set(map(type, inputs)) != _DICT \
                or set(map(type, predictions)) != _DICT:
            return None
        if len(distinct) == 1:
            scored = {keys[0]: ScoredEvents(scored_events, ts, inputs, predictions)}
        else:  # several versions interleaved (a canary): split by version, in file order
            rows: dict[Key, list[int]] = {k: [] for k in dict.fromkeys(keys)}  # versions in order of appearance
            for i, k in enumerate(keys):
                rows[k].append(i)
            scored = {k: ScoredEvents([scored_events[i] for i in r], [ts[i] for i in r], [inputs[i] for i in r],
                                      [predictions[i] for i in r]) for k, r in rows.items()}
        if whole:
            stamps: list[float | None] = ts
        else:
            rest = [e for e, k in zip(events, kinds) if k != EVENT_SCORED]
            _, rest_stamps = self._sort(rest, oldest)  # no prediction among them: nothing scored
            mine, theirs = iter(ts), iter(rest_stamps)
            stamps = [next(mine) if k == EVENT_SCORED else next(theirs) for k in kinds]
        self.newest_event = max(self.newest_event, max(ts))
        self.events["scored"] += n_scored
        return scored, stamps

    def poll(self) -> int:
        """Read what the files hold now (in bounded batches) and bin it; returns events read."""
        total = 0
        while True:
            with _collector_paused():
                events = self.tail.poll(BATCH_LINES)
                self.ingest(events)
                total += len(events)
                # Freed before the collector resumes, so its next pass walks what the batch left
                # alive (the join's held predictions), not every object the batch decoded.
                del events
            if not self.tail.more:
                return total

    def window(self, ref: Reference, now: float, n_slices: int):
        ring = self.rings[(ref.name, ref.version)]
        return ring.window(ring.slice_of(now), n_slices)

    # -- checkpoint ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if not self.config.checkpoint:
            return
        rings = {}
        for (name, version), ring in self.rings.items():
            rings[version_key(name, version)] = arrays_to_text(ring.state())
        extra = {"rings": rings, "slice": self.slice_seconds, "quality": self.quality.state()}
        if self.join is not None:
            extra["join"] = self.join.state()
        self.tail.save_checkpoint(self.config.checkpoint, extra)

    # -- health -------------------------------------------------------------------------------

    def collect(self):
        stats = self.tail.stats
        events = CounterMetricFamily("mlpulse_exporter_events", "Events read, by what became of them",
                                     labels=["outcome"])
        for outcome, n in self.events.items():
            events.add_metric([outcome], n)
        yield events
        malformed = CounterMetricFamily("mlpulse_exporter_malformed_lines", "Lines skipped, by kind",
                                        labels=["kind"])
        for kind, n in {**stats.malformed, "oversize": stats.oversize}.items():
            malformed.add_metric([kind], n)
        yield malformed
        yield CounterMetricFamily("mlpulse_exporter_bytes_read", "Bytes read from event files", value=stats.bytes_read)
        yield CounterMetricFamily("mlpulse_exporter_truncations", "Event files that shrank or were rewritten",
                                  value=stats.truncations)
        yield CounterMetricFamily("mlpulse_exporter_read_errors", "Errors reading event files",
                                  value=stats.read_errors)
        # What was lost, by cause: files gone before they were read to the end, an unterminated last
        # line of a deleted file, a checkpoint that could not be read (a fresh start), a remembered
        # file identity that now holds other content.
        lost = CounterMetricFamily("mlpulse_exporter_events_lost", "Event data the exporter could not read, by "
                                   "cause", labels=["cause"])
        for cause, n in (("file_deleted_unread", stats.files_lost), ("partial_line_dropped", stats.partial_dropped),
                         ("checkpoint_unreadable", stats.checkpoint_errors),
                         ("file_replaced", stats.fingerprint_mismatches)):
            lost.add_metric([cause], n)
        yield lost
        yield from self.quality.collect()
        yield GaugeMetricFamily("mlpulse_exporter_files_tracked", "Event files open", value=stats.files_tracked)
        yield GaugeMetricFamily("mlpulse_exporter_events_dir_missing", "1 if the events directory was missing at "
                                "the last listing", value=float(stats.missing_dir))

    def describe(self) -> str:
        return f"tailing {self.config.events}"

    def close(self) -> None:
        self.tail.close()
