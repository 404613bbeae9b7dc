"""Binned counts of live events in time slices, summed into sliding windows.

One ``Reference`` per model version lays every binned quantity (each feature's bins, the
prediction's bins, the predicted class's bins, and the missing counts) side by side in one vector,
so a time slice is one row of a ring buffer and a window is the sum of the rows whose slice falls
inside it. Evaluating a window costs slices x bins, whatever the number of events.

The prediction's exact moments are kept per slice as (count, mean, M2, min, max) and merged over
a window with Chan's parallel formula, so the windowed mean and standard deviation are exact.
"""

from __future__ import annotations

import base64
import bisect
import io
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpulse.drift import Moments
from mlpulse.schema import FeatureSchema, OutputSpec

PREDICTION = "_prediction"  # feature label of the prediction score
PREDICTED_CLASS = "_predicted_class"  # feature label of the predicted class


@dataclass(frozen=True)
class Slot:
    """Where one binned quantity lives in the slice vector."""

    name: str
    kind: str  # numeric | categorical
    offset: int  # first bin
    nbins: int
    missing: int  # index of its missing counter
    edges: tuple[float, ...] = ()  # numeric
    lookup: dict[str, int] | None = None  # categorical: category -> bin; anything else -> last bin


class Reference:
    """A model version's reference profile and the layout of its live counts."""

    def __init__(self, name: str, version: str, schema: FeatureSchema, output: OutputSpec,
                 profile: dict[str, Any]):
        self.name, self.version, self.schema, self.output, self.profile = name, version, schema, output, profile
        entries = [(f, profile["features"][f]) for f in schema.names] + [(PREDICTION, profile["prediction"])]
        if "predicted_class" in profile:
            entries.append((PREDICTED_CLASS, profile["predicted_class"]))
        self.slots: dict[str, Slot] = {}
        offset = 0
        for name_, entry in entries:
            if entry["kind"] == "numeric":
                n = len(entry["edges"]) + 1
                slot = Slot(name_, "numeric", offset, n, -1, edges=tuple(entry["edges"]))
            else:
                cats = entry["categories"]
                slot = Slot(name_, "categorical", offset, len(cats) + 1, -1,
                            lookup={c: i for i, c in enumerate(cats)})
            self.slots[name_] = slot
            offset += slot.nbins
        # Missing counters follow the bins, one per slot.
        for i, name_ in enumerate(list(self.slots)):
            s = self.slots[name_]
            self.slots[name_] = Slot(s.name, s.kind, s.offset, s.nbins, offset + i, s.edges, s.lookup)
        self.width = offset + len(self.slots)
        self.entries = dict(entries)
        self._features = [self.slots[f] for f in schema.names]
        self._prediction = self.slots[PREDICTION]
        self._predicted_class = self.slots.get(PREDICTED_CLASS)
        # Prepared once: each numeric slot's edges as an array, each categorical slot's vector
        # position of every category and of null (``_categorical_positions``).
        self._edges = {s.name: np.asarray(s.edges, dtype=float) for s in self.slots.values() if s.kind == "numeric"}
        self._positions = {s.name: {**{c: s.offset + i for c, i in s.lookup.items()}, None: s.missing}
                           for s in self.slots.values() if s.kind == "categorical"}

    def bin_rows(self, inputs: Sequence[dict[str, Any]], scores: Sequence[Any], classes: Sequence[Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``bin_columns`` for scored events' ``inputs`` objects, their scores and classes."""
        return self.bin_columns(_columns(inputs, self.schema.names), scores, classes)

    def bin_columns(self, columns: dict[str, Sequence[Any]], scores: Sequence[Any], classes: Sequence[Any] | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The vector positions to increment for n rows given as columns (raw values as the events
        hold them, or numpy arrays), one column of positions per slot: (n, slots) int64; and the
        scores as floats (NaN where there is no number). Exactly what ``bin_event`` gives row by
        row, in numpy: one searchsorted per numeric slot, one dict lookup per categorical value
        (``_categorical_positions``)."""
        n = len(scores)
        # Fortran order: each slot's positions are written to contiguous memory.
        out = np.empty((n, len(self._features) + 1 + (self._predicted_class is not None)), dtype=np.int64, order="F")
        for j, slot in enumerate(self._features):
            column = columns[slot.name]
            if slot.kind == "numeric":
                out[:, j] = self._numeric_positions(slot, _as_floats(column))
            else:
                out[:, j] = self._categorical_positions(slot, column)
        x = _as_floats(scores)
        out[:, len(self._features)] = self._numeric_positions(self._prediction, x)
        if self._predicted_class is not None:
            out[:, -1] = self._categorical_positions(self._predicted_class, classes if classes is not None else [None] * n)
        return out, x

    def count_columns(self, columns: dict[str, Sequence[Any]], scores: Sequence[Any], classes: Sequence[Any] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The count vector of n rows given as ``bin_columns`` takes them, all in one slice: exactly
        ``np.bincount(bin_columns(...)[0].ravel(), minlength=width)``, and the scores as floats.
        For a batch comparison from raw rows (no time slices): a numeric slot's counts come from
        its values sorted once and its edges located in them (``_numeric_counts``), cheaper than
        locating every value among the edges."""
        n = len(scores)
        counts = np.zeros(self.width, dtype=np.int64)
        for slot in self._features:
            column = columns[slot.name]
            if slot.kind == "numeric":
                self._numeric_counts(slot, _as_floats(column), counts)
            else:
                counts += np.bincount(self._categorical_positions(slot, column), minlength=self.width)
        x = _as_floats(scores)
        self._numeric_counts(self._prediction, x, counts)
        if self._predicted_class is not None:
            column = classes if classes is not None else [None] * n
            counts += np.bincount(self._categorical_positions(self._predicted_class, column), minlength=self.width)
        return counts, x

    def _numeric_positions(self, slot: Slot, x: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self._edges[slot.name], x, side="right")
        positions += slot.offset
        positions[np.isnan(x)] = slot.missing
        return positions

    def _numeric_counts(self, slot: Slot, x: np.ndarray, counts: np.ndarray) -> None:
        """Add to ``counts`` the bins of ``x`` (``_numeric_positions``, counted): bin i holds the
        values v with e[i-1] <= v < e[i], i.e. (values below e[i]) - (values below e[i-1]); NaN
        sorts last and is missing; -inf and inf are in the outermost bins, as row by row."""
        ordered = np.sort(x)
        present = len(ordered) - int(np.count_nonzero(np.isnan(x)))
        below = np.searchsorted(ordered[:present], self._edges[slot.name], side="left")
        counts[slot.offset: slot.offset + slot.nbins] += np.diff(np.r_[0, below, present])
        counts[slot.missing] += len(ordered) - present

    def _categorical_positions(self, slot: Slot, column: Sequence[Any]) -> np.ndarray:
        """One C-level dict lookup per value (texts and null); whatever the lookup does not know is
        then placed one by one: a text in the unseen bin, anything else (a number, a boolean, NaN)
        as missing. A column with unhashable values (lists, objects) goes down the per-value path."""
        if isinstance(column, np.ndarray):
            column = column.tolist()  # iterating a list is faster than an object array
        get = self._positions[slot.name].get
        try:
            positions = np.fromiter(map(get, column, itertools.repeat(-1)), dtype=np.int64, count=len(column))
        except TypeError:  # an unhashable value
            return np.fromiter((_position(slot, v) for v in column), dtype=np.int64, count=len(column))
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            unseen = slot.offset + slot.nbins - 1
            positions[unknown] = [unseen if isinstance(column[i], str) else slot.missing for i in unknown.tolist()]
        return positions

    def bin_event(self, inputs: dict[str, Any], score: Any, cls: Any, out: list[int]) -> None:
        """Append to ``out`` the vector positions to increment for one scored event (the per-event
        definition ``bin_columns`` reproduces; the tests compare both)."""
        for slot in self._features:
            out.append(_position(slot, inputs.get(slot.name)))
        out.append(_position(self._prediction, score))
        if self._predicted_class is not None:
            out.append(_position(self._predicted_class, cls))


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Sequence[Any]]:
    """Rows' values as columns (None where a row has no such key). Each row is read once, by one
    C-level ``itemgetter`` call, and the rows transposed by ``zip``: reading column by column walks
    every row object once per column, which costs three times as much on wide rows."""
    if not rows or not names:
        return {n: () for n in names}
    if len(names) == 1:  # itemgetter of one key gives the value, not a 1-tuple
        return {names[0]: list(map(dict.get, rows, itertools.repeat(names[0])))}
    getter = operator.itemgetter(*names)
    try:
        table = list(map(getter, rows))
    except KeyError:  # a row without some key: every row read with .get
        table = [tuple(map(row.get, names)) for row in rows]
    return dict(zip(names, zip(*table)))


_NUMBER_TYPES = frozenset((int, float, type(None)))


def _float(value: int | float) -> float:
    """A JSON number as a float; an integer beyond the float range is that infinity (JSON allows
    any integer, and the service accepts what its schema lets through)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _number(value: Any) -> float:
    """A raw value as ``_position`` reads a number: NaN for anything that is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return _float(value)


def _as_floats(column: Sequence[Any]) -> np.ndarray:
    """Raw values as floats, NaN for missing and for anything not a number (booleans included)."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiu":
        return column.astype(float)
    if set(map(type, column)) <= _NUMBER_TYPES:  # JSON numbers and nulls: numpy converts None to NaN
        try:
            return np.array(column, dtype=float).reshape(len(column))
        except OverflowError:  # an integer beyond the float range: the exact path below
            pass
    return np.fromiter(map(_number, column), dtype=float, count=len(column))


def _position(slot: Slot, value: Any) -> int:
    if value is None:
        return slot.missing
    if slot.kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return slot.missing  # a scored event has numbers here; anything else cannot be binned
        v = _float(value)
        if v != v:
            return slot.missing
        return slot.offset + bisect.bisect_right(slot.edges, v)
    if not isinstance(value, str):
        return slot.missing
    return slot.offset + slot.lookup.get(value, slot.nbins - 1)


class Ring:
    """Per-slice count vectors and prediction moments in a ring buffer of ``n_slices`` slices."""

    def __init__(self, width: int, slice_seconds: float, n_slices: int):
        self.slice_seconds = slice_seconds
        self.n = n_slices
        self.ids = np.full(n_slices, -1, dtype=np.int64)  # which slice each row holds
        self.counts = np.zeros((n_slices, width), dtype=np.int64)
        # prediction moments per slice: count, mean, M2, min, max
        self.mcount = np.zeros(n_slices)
        self.mmean = np.zeros(n_slices)
        self.m2 = np.zeros(n_slices)
        self.mmin = np.full(n_slices, np.inf)
        self.mmax = np.full(n_slices, -np.inf)

    def slice_of(self, ts: float) -> int:
        return int(math.floor(ts / self.slice_seconds))

    def _row(self, slice_id: int) -> int:
        row = slice_id % self.n
        if self.ids[row] != slice_id:  # the row held an expired slice: reuse it
            self.ids[row] = slice_id
            self.counts[row] = 0
            self.mcount[row] = self.mmean[row] = self.m2[row] = 0.0
            self.mmin[row], self.mmax[row] = np.inf, -np.inf
        return row

    def add(self, slice_id: int, positions: Sequence[int], scores: Sequence[float]) -> None:
        """Add a batch of events of one slice: all their bin positions, and their finite scores."""
        row = self._row(slice_id)
        self.counts[row] += np.bincount(positions, minlength=self.counts.shape[1])
        if len(scores) == 0:
            return
        merged = Moments(int(self.mcount[row]), self.mmean[row], self.m2[row], self.mmin[row],
                         self.mmax[row]).merge(Moments.from_values(scores))
        self.mcount[row], self.mmean[row], self.m2[row] = merged.count, merged.mean, merged.m2
        self.mmin[row], self.mmax[row] = merged.min, merged.max

    def put(self, slice_id: int, counts: np.ndarray, moments: Moments) -> None:
        """Set one slice's counts and prediction moments, replacing what it held (for loading
        counts made elsewhere, such as a benchmark's synthetic windows)."""
        row = self._row(slice_id)
        self.counts[row] = counts
        self.mcount[row], self.mmean[row], self.m2[row] = moments.count, moments.mean, moments.m2
        self.mmin[row], self.mmax[row] = moments.min, moments.max

    def clear(self) -> None:
        """Forget every slice."""
        self.ids[:] = -1

    def window(self, now_slice: int, n_slices: int) -> tuple[np.ndarray, dict[str, float]]:
        """Summed counts and merged moments of the last ``n_slices`` slices up to ``now_slice``."""
        mask = (self.ids > now_slice - n_slices) & (self.ids <= now_slice)
        counts = self.counts[mask].sum(axis=0)
        n = self.mcount[mask]
        total = float(n.sum())
        if total == 0:
            return counts, {"count": 0.0}
        mean = float((n * self.mmean[mask]).sum() / total)
        m2 = float(self.m2[mask].sum() + (n * (self.mmean[mask] - mean) ** 2).sum())
        return counts, {"count": total, "mean": mean, "std": math.sqrt(m2 / total),
                        "min": float(self.mmin[mask].min()), "max": float(self.mmax[mask].max())}

    def state(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "counts": self.counts, "mcount": self.mcount, "mmean": self.mmean,
                "m2": self.m2, "mmin": self.mmin, "mmax": self.mmax}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        if state["counts"].shape != self.counts.shape:
            raise ValueError("checkpoint ring has another shape (windows, slice or reference changed)")
        for k, v in state.items():
            getattr(self, k)[...] = v


# -- checkpoint encoding ----------------------------------------------------------------------
# Ring state goes into the file source's JSON checkpoint as compressed npz in base64, one entry
# per model version under ``version_key``: the drift ring, the estimate's sums, the join's delays.


def version_key(name: str, version: str) -> str:
    """A model version as one JSON object key (unit separator between name and version)."""
    return f"{name}\x1f{version}"


def arrays_to_text(arrays: dict[str, np.ndarray]) -> str:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return base64.b64encode(buf.getvalue()).decode()


def arrays_from_text(text: str) -> dict[str, np.ndarray]:
    """``arrays_to_text`` read back; raises ValueError, OSError or KeyError on a damaged text."""
    with np.load(io.BytesIO(base64.b64decode(text))) as data:
        return {k: data[k] for k in data.files}
