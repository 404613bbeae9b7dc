"""The exporter's ingest as it was before it binned columns: every event binned on its own with
``Reference.bin_event``. The oracle of ``tests/unit/test_ingest_columns.py`` and the baseline of
``bench.drift``'s ingest rate; not used by the exporter."""

from __future__ import annotations

import math
from typing import Any

from mlpulse.events import EVENT_REFUSED, EVENT_SCORED
from mlpulse.exporter.sources.files import OUTCOMES, event_timestamp
from mlpulse.exporter.windows import Ring


def per_event_ingest(source: Any, events: list[dict[str, Any]], now: float) -> tuple[dict, dict, float]:
    """The ingest as it was before columns: every event binned on its own with ``bin_event``."""
    counts, rings, newest = dict.fromkeys(OUTCOMES, 0), {}, 0.0
    oldest = now - source.horizon
    batches = {}
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
        newest = max(newest, ts)
        if kind == EVENT_REFUSED:
            counts["refused"] += 1
            continue
        key = (model.get("name"), model.get("version"))
        ref = source.references.get(key)
        if ref is None:
            counts["unknown_model"] += 1
            continue
        if ts <= oldest:
            counts["too_old"] += 1
            continue
        inputs, pred = e.get("inputs"), e.get("prediction") or {}
        if not isinstance(inputs, dict) or not isinstance(pred, dict):
            counts["invalid"] += 1
            continue
        score = pred.get("value")
        ring = rings.setdefault(key, Ring(ref.width, source.slice_seconds, source.n_slices))
        batch = batches.setdefault((key, ring.slice_of(ts)), ([], []))
        ref.bin_event(inputs, score, pred.get("class"), batch[0])
        if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
            batch[1].append(float(score))
        counts["scored"] += 1
    for (key, slice_id), (positions, scores) in batches.items():
        rings[key].add(slice_id, positions, scores)
    return counts, rings, newest
