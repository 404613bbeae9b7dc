"""The file source: tail the event log, bin each scored event into its model version's ring.

Events are read in bounded batches (``tail.EventTail``), binned over the reference's own bins
(``windows.Reference.bin_event``) and added to time slices (``windows.Ring``) with one vectorised
update per model version and slice. A window is the sum of its slices. The tail's position and
the rings are checkpointed together, so a restart neither repeats nor skips an event.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import math
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlpulse.events import EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.tail import EventTail
from mlpulse.exporter.windows import Reference, Ring

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)
OUTCOMES = ("scored", "refused", "other", "unknown_model", "too_old", "invalid")


def event_timestamp(event: dict[str, Any]) -> float | None:
    """Unix seconds of an event's ``@timestamp``; None when it has none that parses."""
    try:
        return dt.datetime.fromisoformat(event["@timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


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
        self.join = None  # the feedback join (mlpulse.exporter.quality), attached by the exporter
        self._saved_join: dict[str, Any] | None = None
        if config.checkpoint:
            _state, extra = self.tail.load_checkpoint(config.checkpoint)
            self._saved_rings = extra.get("rings", {})
            self._saved_join = extra.get("join")

    def attach_join(self, join) -> None:
        """Hand every batch to ``join`` from now on; its state is checkpointed with the tail's position."""
        self.join = join
        if self._saved_join is not None:
            join.restore(self._saved_join)
            self._saved_join = None

    def track(self, ref: Reference) -> None:
        key = (ref.name, ref.version)
        self.references[key] = ref
        self.rings[key] = ring = Ring(ref.width, self.slice_seconds, self.n_slices)
        blob = self._saved_rings.pop(f"{ref.name}\x1f{ref.version}", None)
        if blob is not None:
            try:
                with np.load(io.BytesIO(base64.b64decode(blob))) as data:
                    ring.restore({k: data[k] for k in data.files})
            except (ValueError, OSError, KeyError) as e:
                log.warning("window counts of %s not restored: %s", key, e)

    # -- ingestion ----------------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self.join is not None:  # one call per batch (realized quality)
            self.join.ingest(events, event_timestamp)
        oldest = now - self.horizon
        counts = self.events
        batches: dict[tuple[Key, int], tuple[list[int], list[float]]] = {}
        for e in events:
            kind = e.get("event")
            if kind not in (EVENT_SCORED, EVENT_REFUSED):
                counts["other"] += 1
                continue
            ts = event_timestamp(e)
            model = e.get("model")
            if ts is None or not isinstance(model, dict):
                counts["invalid"] += 1
                continue
            self.newest_event = max(self.newest_event, ts)
            if kind == EVENT_REFUSED:
                counts["refused"] += 1
                continue
            key = (model.get("name"), model.get("version"))
            ref = self.references.get(key)
            if ref is None:  # counted, never guessed: its own bundle must be deployed
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
            score = pred.get("value")
            ring = self.rings[key]
            batch = batches.get((key, ring.slice_of(ts)))
            if batch is None:
                batch = batches[(key, ring.slice_of(ts))] = ([], [])
            ref.bin_event(inputs, score, pred.get("class"), batch[0])
            if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
                batch[1].append(float(score))
            counts["scored"] += 1
        # One vectorised update per (model version, slice) instead of one per event.
        for (key, slice_id), (positions, scores) in batches.items():
            self.rings[key].add(slice_id, positions, scores)

    def poll(self) -> int:
        """Read what the files hold now (in bounded batches) and bin it; returns events read."""
        total = 0
        while True:
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
            buf = io.BytesIO()
            np.savez_compressed(buf, **ring.state())
            rings[f"{name}\x1f{version}"] = base64.b64encode(buf.getvalue()).decode()
        extra = {"rings": rings, "slice": self.slice_seconds}
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
        yield GaugeMetricFamily("mlpulse_exporter_files_tracked", "Event files open", value=stats.files_tracked)
        yield GaugeMetricFamily("mlpulse_exporter_events_dir_missing", "1 if the events directory was missing at "
                                "the last listing", value=float(stats.missing_dir))

    def describe(self) -> str:
        return f"tailing {self.config.events}"

    def close(self) -> None:
        self.tail.close()
