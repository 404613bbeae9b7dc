"""The exporter's side of the label-free estimate: per-slice sums, fed once per batch of events.

``LiveEstimate.ingest`` receives, once per batch the file source ingests (one of its batch hooks),
the scored events its drift windows took, per model version with their timestamps, and adds each model version's
estimator sums (``estimate.*Estimator.sums``) to time slices. The sums of a window's slices are
the sums of its records, so ``window`` costs slices x sums and the estimate is exact whatever
the split into slices. Slices follow the drift ring's clock (same slice length, same ids).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily

from mlpulse.exporter.windows import arrays_from_text, arrays_to_text, version_key
from mlpulse.quality.estimate import ClassificationEstimator, RegressionEstimator

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (model name, version)
OUTCOMES = ("estimated", "no_probabilities", "unknown_class", "no_prediction")


class SumRing:
    """Per-slice sum vectors in a ring of ``n_slices`` rows (the drift ring's slice ids)."""

    def __init__(self, width: int, slice_seconds: float, n_slices: int):
        self.slice_seconds, self.n = slice_seconds, n_slices
        self.ids = np.full(n_slices, -1, dtype=np.int64)
        self.sums = np.zeros((n_slices, width))

    def add(self, slice_id: int, sums: np.ndarray) -> None:
        row = slice_id % self.n
        if self.ids[row] != slice_id:  # the row held an expired slice
            self.ids[row], self.sums[row] = slice_id, 0.0
        self.sums[row] += sums

    def window(self, now_slice: int, n_slices: int) -> np.ndarray:
        mask = (self.ids > now_slice - n_slices) & (self.ids <= now_slice)
        return self.sums[mask].sum(axis=0)


class LiveEstimate:
    def __init__(self, slice_seconds: float, n_slices: int):
        self.slice_seconds, self.n_slices = slice_seconds, n_slices
        self.estimators: dict[Key, Any] = {}
        self.rings: dict[Key, SumRing] = {}
        self.records = dict.fromkeys(OUTCOMES, 0)  # scored events of estimated versions, by outcome

    def track(self, key: Key, estimator: Any) -> None:
        if estimator is None:
            log.info("no label-free quality estimate for %s %s: its bundle records none", *key)
            return
        self.estimators[key] = estimator
        self.rings[key] = SumRing(estimator.width, self.slice_seconds, self.n_slices)

    def untrack(self, key: Key) -> None:
        self.estimators.pop(key, None)
        self.rings.pop(key, None)

    def ingest(self, scored: dict[Key, Any]) -> None:
        """The one hook per batch (``FileSource.batch_hooks``): per model version, the scored events
        the drift windows took, with their timestamps (``files.ScoredEvents``), so the estimate
        counts exactly the records the drift statistics count."""
        for key, batch in scored.items():
            est = self.estimators.get(key)
            if est is None:
                continue
            groups: dict[int, list[dict[str, Any]]] = {}
            for e, ts in zip(batch.events, batch.ts):
                groups.setdefault(math.floor(ts / self.slice_seconds), []).append(e)
            for slice_id, group in groups.items():
                sums = self._classification(est, group) if isinstance(est, ClassificationEstimator) \
                    else self._regression(est, group)
                self.rings[key].add(slice_id, sums)

    def _classification(self, est: ClassificationEstimator, events: list[dict[str, Any]]) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(est.classes)}
        rows, predicted = [], []
        for e in events:
            pred = e.get("prediction") if isinstance(e.get("prediction"), dict) else {}
            probs = pred.get("probabilities")
            cls = lookup.get(pred.get("class"))
            if not isinstance(probs, dict):
                self.records["no_probabilities"] += 1
                continue
            if cls is None:
                self.records["unknown_class"] += 1
                continue
            row = [probs.get(c) for c in est.classes]
            if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) for p in row):
                self.records["no_probabilities"] += 1
                continue
            rows.append(row)
            predicted.append(cls)
        self.records["estimated"] += len(rows)
        return est.sums(np.array(rows, float).reshape(len(rows), est.k), np.array(predicted, dtype=int))

    def _regression(self, est: RegressionEstimator, events: list[dict[str, Any]]) -> np.ndarray:
        inputs, values = [], []
        for e in events:
            pred = e.get("prediction") if isinstance(e.get("prediction"), dict) else {}
            v = pred.get("value")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not isinstance(e.get("inputs"), dict):
                self.records["no_prediction"] += 1
                continue
            inputs.append(e["inputs"])
            values.append(float(v))
        self.records["estimated"] += len(values)
        return est.sums(inputs, values)

    def window(self, key: Key, now: float, n_slices: int) -> np.ndarray | None:
        ring = self.rings.get(key)
        return None if ring is None else ring.window(math.floor(now / self.slice_seconds), n_slices)

    def estimate(self, key: Key, now: float, n_slices: int, min_count: int):
        """The estimates of a window (empty below ``min_count`` records); None when not estimated."""
        sums = self.window(key, now, n_slices)
        return None if sums is None else self.estimators[key].estimate(sums, min_count)

    # -- checkpoint ---------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        """Each version's ring as compressed npz in base64 (JSON-safe, as the drift ring is saved)."""
        return {version_key(name, version): arrays_to_text({"ids": ring.ids, "sums": ring.sums})
                for (name, version), ring in self.rings.items()}

    def restore(self, key: Key, blob: str | None) -> None:
        ring = self.rings.get(key)
        if ring is None or not blob:
            return
        try:
            data = arrays_from_text(blob)
            ids, sums = data["ids"], data["sums"]
        except (ValueError, OSError, KeyError) as e:
            log.warning("estimate sums of %s not restored: %s", key, e)
            return
        if sums.shape != ring.sums.shape:
            log.warning("estimate sums of %s not restored: another shape (windows, slice or estimator changed)", key)
            return
        ring.ids[:], ring.sums[:] = ids, sums

    def collect(self):
        fam = CounterMetricFamily("mlpulse_exporter_quality_records", "Scored events of model versions with a "
                                  "label-free estimate, by what became of them", labels=["outcome"])
        for outcome, n in self.records.items():
            fam.add_metric([outcome], n)
        yield fam
