"""The file source: tail the event log, bin each scored event into its model version's ring.

Events are read in bounded batches (``tail.EventTail``, orjson per line), sorted by outcome in one
pass, binned per model version over the reference's own bins with numpy over columns
(``windows.Reference.bin_rows``) and added to time slices (``windows.Ring``) with one vectorised
update per model version and slice; hooks (``FileSource.batch_hooks``) then see the batch. A window is the sum of its slices. The tail's position and
the rings are checkpointed together, so a restart neither repeats nor skips an event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
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
    scores: list[Any] = field(default_factory=list)
    classes: list[Any] = field(default_factory=list)

    def add(self, event: dict[str, Any], ts: float, inputs: dict[str, Any], prediction: dict[str, Any]) -> None:
        self.events.append(event)
        self.ts.append(ts)
        self.inputs.append(inputs)
        self.scores.append(prediction.get("value"))
        self.classes.append(prediction.get("class"))

    def column(self, name: str) -> list[Any]:
        """One input feature's raw values (None where absent)."""
        return [r.get(name) for r in self.inputs]


@dataclass
class IngestBatch:
    """What a per-batch hook receives (``FileSource.batch_hooks``), once per ``ingest`` call, after
    the batch is binned: ``events``, every decoded event of the batch in file order (any kind:
    scored, refused, feedback, ...; nothing filtered); ``scored``, per (model name, version) the
    scored events the drift windows took, with their timestamps, inputs, scores and classes as
    columns (``ScoredEvents``); ``now``, the clock of the batch; ``stamps``, aligned with ``events``,
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
        counts = self.events
        scored: dict[Key, ScoredEvents] = {}
        stamps: list[float | None] = []
        for e in events:
            kind = e.get("event")
            if kind not in (EVENT_SCORED, EVENT_REFUSED):
                counts["other"] += 1
                stamps.append(None)
                continue
            ts = event_timestamp(e)
            stamps.append(ts)
            model = e.get("model")
            if ts is None or not isinstance(model, dict):
                counts["invalid"] += 1
                continue
            self.newest_event = max(self.newest_event, ts)
            if kind == EVENT_REFUSED:
                counts["refused"] += 1
                continue
            key = (model.get("name"), model.get("version"))
            if key not in self.references:  # counted, never guessed: its own bundle must be deployed
                counts["unknown_model"] += 1
                continue
            if ts <= oldest:
                counts["too_old"] += 1
                continue
            inputs = e.get("inputs")
            pred = e.get("prediction") or {}
            if not isinstance(inputs, dict) or not isinstance(pred, dict):
                counts["invalid"] += 1
                continue
            batch = scored.get(key)
            if batch is None:
                batch = scored[key] = ScoredEvents()
            batch.add(e, ts, inputs, pred)
            counts["scored"] += 1
        for key, batch in scored.items():
            ring = self.rings[key]
            positions, values = self.references[key].bin_rows(batch.inputs, batch.scores, batch.classes)
            slices = np.floor(np.asarray(batch.ts) / ring.slice_seconds).astype(np.int64)
            finite = np.isfinite(values)
            for slice_id in np.unique(slices):
                rows = slices == slice_id
                ring.add(int(slice_id), positions[rows].ravel(), values[rows & finite])
        if self.batch_hooks:
            batch_view = IngestBatch(events, scored, now, stamps)
            for hook in self.batch_hooks:
                hook(batch_view)

    def poll(self) -> int:
        """Read what the files hold now (in bounded batches) and bin it; returns events read."""
        total = 0
        while True:
            with _collector_paused():
                events = self.tail.poll()
                self.ingest(events)
            total += len(events)
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
