"""The training reference profile: binned counts per feature and for the prediction.

A profile holds enough to compute every drift statistic on binned counts alone, without the raw
training data. Its format (``reference.json``) is a contract read by the service (histogram
buckets), the exporter (drift statistics) and the Elasticsearch source (range aggregations).

Binning, for a numeric entry with ``edges`` e[0] < e[1] < ... < e[m-1]: bin 0 holds values below
e[0], bin i (1 <= i <= m-1) holds e[i-1] <= v < e[i], bin m holds values >= e[m-1]. Every bin is
half-open [from, to), the semantics of an Elasticsearch range aggregation. The edges
(profile_version 2; docs/drift-statistics.md gives the reasons and the measurements) are:

- inside the training range [min, max], when the feature has at most ``DISCRETE_MAX_VALUES``
  distinct training values (integers, counts, flags, rounded values): the minimum and the
  midpoints between consecutive values, so each value has a bin of its own (``discrete``: true),
  binned tests equal the raw ones, and a live value between two training values counts for the
  nearer one;
- otherwise the training quantiles at ``bins`` equal steps plus ``TAIL_LEVELS`` (narrower bins in
  the tails), plus every tied value holding at least 1/``bins`` of the reference and the float just
  above it (a tie is never split, and a heavy one has a bin of its own);
- inside every stretch without training values wider than one sd, edges at ``OUTER_STEP`` x 2^j
  sd from both of its ends (an outlier cluster far from the bulk does not make one wide bin);
- then the float just above the maximum (the last inner bin holds exactly the maximum), and on
  each side ``OUTER_BINS`` edges at ``OUTER_STEP`` x 2^j reference standard deviations beyond the
  training range, so values outside it are located within a factor of two of their distance.

``bin_means`` holds the mean of the reference values in each bin (None for an empty bin): the
Wasserstein distance places each bin's mass there. Profile version 1 (quantile bins, one open bin
on each side, no ``bin_means``) still loads; its statistics are computed as before.
A categorical entry has one bin per category, in schema order, then one "unseen" bin.
Missing values are counted apart (``missing``) and are in no bin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mlpulse.schema import FeatureSchema, FeatureSpec

PROFILE_VERSION = 2
# Versions this code reads: 1 (quantile bins only) is read as it is, without re-binning.
READABLE_PROFILE_VERSIONS = (1, 2)
DEFAULT_BINS = 20
# A numeric feature with at most this many distinct training values gets one bin per value. 100
# covers counts, ratings, ages in years, pixel intensities in coarse steps and rounded measurements
# (the real count-like features we replayed had 17 to 66 distinct values) and keeps a feature's
# evaluation at about 120 bins; above it values are treated as continuous.
DISCRETE_MAX_VALUES = 100
# Quantile levels added to the ``bins`` equal steps: narrower tail bins, so a tail's mass is located
# (Wasserstein) and a change of a tail is not diluted in a 5 % bin.
TAIL_LEVELS = (0.005, 0.01, 0.025, 0.975, 0.99, 0.995)
# Bins beyond the training range on each side: edges at OUTER_STEP * 2**j reference standard
# deviations (j = 0 .. OUTER_BINS - 1) beyond the minimum and the maximum, up to 128 sd.
OUTER_BINS = 10
OUTER_STEP = 0.25
# Inside the training range, a stretch without training values wider than GAP_STEPS * OUTER_STEP
# sd (1 sd) gets edges at OUTER_STEP * 2**j sd from both of its ends (the MAX_GAPS widest such
# stretches), so a live value falling into it is located as well as one beyond the range.
GAP_STEPS = 4
MAX_GAPS = 32


def numeric_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Bin edges for the finite, non-missing ``values`` (see the module docstring)."""
    return _edges(np.asarray(values, dtype=float), bins)[0]


def _edges(values: np.ndarray, bins: int) -> tuple[list[float], bool]:
    """(edges, discrete) for finite values."""
    if values.size == 0:
        return [], False
    uniq, counts = np.unique(values, return_counts=True)
    top = np.nextafter(uniq[-1], np.inf)
    discrete = bool(uniq.size <= DISCRETE_MAX_VALUES)
    if discrete:  # one bin per value; a live value between two of them goes to the nearer one
        inner = np.r_[uniq[0], (uniq[:-1] + uniq[1:]) / 2.0, top]
    else:
        levels = np.union1d(np.linspace(0.0, 1.0, bins + 1), TAIL_LEVELS)
        atoms = uniq[counts * bins >= values.size]  # ties holding at least 1/bins of the reference
        inner = np.r_[np.quantile(values, levels), atoms, np.nextafter(atoms, np.inf), top]
    std = float(values.std())
    step = OUTER_STEP * (std if std > 0 else max(abs(float(uniq[0])), 1.0))
    beyond = step * 2.0 ** np.arange(OUTER_BINS)
    if not discrete:
        inner = np.r_[inner, _gap_edges(uniq, step)]
    edges = np.unique(np.r_[uniq[0] - beyond, inner, top + beyond])
    return [float(e) for e in edges if np.isfinite(e)], discrete


def _gap_edges(uniq: np.ndarray, step: float) -> np.ndarray:
    """Edges inside every stretch without training values wider than ``GAP_STEPS`` steps: at
    ``step`` x 2^j from both of its ends up to its middle. A quantile bin spanning such a gap (a
    bulk and an outlier cluster far from it) would otherwise place a live value in the gap at the
    bin's reference mean, far from where it is."""
    gaps = np.diff(uniq)
    wide = np.flatnonzero(gaps > GAP_STEPS * step)
    if wide.size == 0:
        return np.zeros(0)
    out = []
    for i in wide[np.argsort(-gaps[wide], kind="stable")][:MAX_GAPS]:
        a, b = float(uniq[i]), float(uniq[i + 1])
        ds = step * 2.0 ** np.arange(int(np.log2((b - a) / 2.0 / step)) + 1)
        out += [a + ds, b - ds]
    return np.concatenate(out)


def training_range_bins(entry: dict[str, Any]) -> tuple[int, int]:
    """(first, last): the bins of a numeric entry that lie inside the training range [min, max].

    Bins before ``first`` hold values below the training minimum, bins after ``last`` values above
    the maximum (one bin on each side in profile version 1, ``OUTER_BINS`` + 1 in version 2).
    """
    edges = np.asarray(entry["edges"], dtype=float)
    if "min" not in entry or edges.size == 0:
        return 1, max(edges.size - 1, 1)
    first = int(np.searchsorted(edges, entry["min"], side="right"))
    last = int(np.searchsorted(edges, entry["max"], side="right"))
    return first, last


def numeric_bin_index(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Bin index (0 .. len(edges)) of each value; values must be finite and not missing."""
    return np.searchsorted(np.asarray(edges, dtype=float), values, side="right")


def categorical_bin_index(categories: Sequence[str], values: Iterable[str]) -> np.ndarray:
    """Bin index of each category; anything unknown goes to the last ("unseen") bin."""
    lookup = {c: i for i, c in enumerate(categories)}
    unseen = len(categories)
    return np.fromiter((lookup.get(v, unseen) for v in values), dtype=np.int64)


def histogram_buckets(entry: dict[str, Any], bins: int = DEFAULT_BINS) -> list[float]:
    """Prometheus histogram upper bounds for a numeric profile entry: training quantiles.

    A live histogram then has the reference's resolution, where default buckets would put most
    values in one bucket. The bounds are edges inside the training range; when there are more than
    ``bins`` + 1 of them (one bin per value, tail bins), the first edge reaching each of ``bins``
    equal steps of the reference's cumulative share, so the buckets fill about evenly. Prometheus
    buckets are ``v <= le`` while profile bins are ``[from, to)``: a value exactly on an edge lands
    one bucket lower here, so drift statistics never read these buckets; they use the exporter's
    counts over the profile's own bins.
    """
    edges = np.asarray(entry["edges"], dtype=float)
    if edges.size == 0:
        return []
    first, last = training_range_bins(entry)
    inner = edges[first - 1: last]  # e[first-1] is the minimum, e[last-1] the last edge <= maximum
    if inner.size > bins + 1:
        counts = np.asarray(entry["bin_counts"], dtype=float)
        below = np.cumsum(counts)[first - 1: last]  # reference values below each edge
        share = below / max(counts.sum(), 1.0)
        picks = np.searchsorted(share, np.linspace(0.0, 1.0, bins + 1)[1:-1], side="left")
        inner = inner[np.unique(np.r_[0, np.minimum(picks, inner.size - 1), inner.size - 1])]
    # The edge just above a heavy tie (its own bin) would be an unreadable bucket such as 5e-324.
    keep = np.r_[True, inner[1:] > np.nextafter(inner[:-1], np.inf)]
    return [float(e) for e in inner[keep]]


def _numeric_entry(values: np.ndarray, missing: int, bins: int) -> dict[str, Any]:
    edges, discrete = _edges(values, bins)
    idx = numeric_bin_index(edges, values) if edges else np.zeros(0, dtype=np.int64)
    counts = np.bincount(idx, minlength=len(edges) + 1) if edges else []
    sums = np.bincount(idx, weights=values, minlength=len(edges) + 1) if edges else []
    entry: dict[str, Any] = {
        "kind": "numeric",
        "count": int(values.size),
        "missing": int(missing),
        "discrete": discrete,
        "edges": edges,
        "bin_counts": [int(c) for c in counts],
        # Clipped into the bin: a mean of values in [a, b) can round a hair outside it.
        "bin_means": [float(min(max(s / c, edges[i - 1] if i else -np.inf), edges[i] if i < len(edges) else np.inf))
                      if c else None for i, (s, c) in enumerate(zip(sums, counts))],
    }
    if values.size:
        entry.update(
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            std=float(values.std()),  # population std (ddof=0), like the exporter's windowed std
        )
    return entry


def _categorical_entry(values: list[str], categories: Sequence[str], missing: int) -> dict[str, Any]:
    idx = categorical_bin_index(categories, values)
    counts = np.bincount(idx, minlength=len(categories) + 1)
    return {
        "kind": "categorical",
        "count": len(values),
        "missing": int(missing),
        "categories": list(categories),
        "bin_counts": [int(c) for c in counts],
    }


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def profile_column(spec: FeatureSpec, column: Iterable[Any], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Profile one column of raw values (None or NaN count as missing)."""
    column = list(column)
    present = [v for v in column if not _is_missing(v)]
    if spec.kind == "categorical":
        return _categorical_entry([str(v) for v in present], spec.categories, len(column) - len(present))
    arr = np.asarray(present, dtype=float)
    arr = arr[np.isfinite(arr)]  # NaN of any float type and +-inf count as missing: no edge may be inf
    return _numeric_entry(arr, len(column) - arr.size, bins)


def build_profile(
    schema: FeatureSchema,
    columns: dict[str, Sequence[Any]],
    prediction: Sequence[float],
    predicted_class: Sequence[str] | None = None,
    classes: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    class_probabilities: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Build the reference profile from training (or holdout) data and the model's outputs.

    ``columns`` maps each feature name to its raw values (a list, or anything list() accepts, such
    as a pandas Series). ``prediction`` is the model's score (positive-class probability for a
    classifier, the value for a regressor); ``predicted_class`` the predicted labels, if any.
    ``class_probabilities`` (a multiclass model's probabilities of every class, pooled) gives the
    buckets of the service's per-class probability histogram; it plays no part in drift.
    """
    features = {}
    n_rows = None
    for spec in schema.features:
        col = list(columns[spec.name])
        if n_rows is None:
            n_rows = len(col)
        elif len(col) != n_rows:
            raise ValueError(f"column {spec.name!r} has {len(col)} rows, expected {n_rows}")
        features[spec.name] = profile_column(spec, col, bins)
    pred = np.asarray(prediction, dtype=float)
    finite = pred[np.isfinite(pred)]
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "row_count": int(n_rows or 0),
        "bins": bins,
        "features": features,
        "prediction": _numeric_entry(finite, int(pred.size - finite.size), bins),
    }
    if predicted_class is not None:
        profile["predicted_class"] = _categorical_entry([str(c) for c in predicted_class], classes, 0)
    if class_probabilities is not None:
        pooled = np.asarray(class_probabilities, dtype=float).ravel()
        pooled = pooled[np.isfinite(pooled)]
        profile["class_probability"] = _numeric_entry(pooled, 0, bins)
    return profile


def check_profile(profile: dict[str, Any], schema: FeatureSchema) -> None:
    """Raise ValueError if ``profile`` does not fit the schema or is not a version we read."""
    version = profile.get("profile_version")
    if version not in READABLE_PROFILE_VERSIONS:
        raise ValueError(f"unsupported profile_version {version!r}: this mlpulse reads versions "
                         f"{list(READABLE_PROFILE_VERSIONS)}; rebuild the bundle with this mlpulse "
                         "(e.g. make bundle) or run the mlpulse that built it")
    missing = [n for n in schema.names if n not in profile.get("features", {})]
    if missing:
        raise ValueError(f"reference profile lacks features {missing}")
    for name, entry in list(profile["features"].items()) + [("prediction", profile["prediction"])]:
        nbins = len(entry["bin_counts"])
        expected = len(entry["edges"]) + 1 if entry["kind"] == "numeric" else len(entry["categories"]) + 1
        if entry["count"] and nbins != expected:
            raise ValueError(f"profile entry {name!r} has {nbins} bins, expected {expected}")


def outdated_profile(profile: dict[str, Any]) -> str | None:
    """Why a readable profile should be rebuilt (None when it is current): a version 1 profile
    keeps its quantile bins, which merge tied values of discrete features (docs/drift-statistics.md)."""
    if profile.get("profile_version") == 1:
        return ("profile_version 1: its quantile bins merge the tied values of discrete features and "
                "its Wasserstein distance spreads tail bins evenly; rebuild the bundle with this mlpulse "
                "(e.g. make bundle) for per-value bins and bin means")
    return None
