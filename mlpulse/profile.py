"""The training reference profile: binned counts per feature and for the prediction.

A profile holds enough to compute every drift statistic on binned counts alone, without the raw
training data. Its format (``reference.json``) is a contract read by the service (histogram
buckets), the exporter (drift statistics) and the Elasticsearch source (range aggregations).

Binning, for a numeric entry with ``edges`` e[0] < e[1] < ... < e[m-1]:

- bin 0 holds values below e[0] (below the training minimum),
- bin i (1 <= i <= m-1) holds e[i-1] <= v < e[i],
- bin m holds values >= e[m-1] (above the training maximum).

Every bin is half-open [from, to), the semantics of an Elasticsearch range aggregation. The edges
are the unique training quantiles (the minimum and maximum included) plus one more, the float just
above the maximum: the last inner bin holds exactly the maximum value.
A categorical entry has one bin per category, in schema order, then one "unseen" bin.
Missing values are counted apart (``missing``) and are in no bin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mlpulse.schema import FeatureSchema, FeatureSpec

PROFILE_VERSION = 1
DEFAULT_BINS = 20


def numeric_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Quantile edges for the finite, non-missing ``values`` (see the module docstring)."""
    if values.size == 0:
        return []
    qs = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    # One more edge just above the maximum: the maximum gets a bin of its own, so a 0/1 feature has
    # two inner bins and the top values of an integer feature are not merged.
    qs = np.append(qs, np.nextafter(qs[-1], np.inf))
    return [float(q) for q in qs]


def numeric_bin_index(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Bin index (0 .. len(edges)) of each value; values must be finite and not missing."""
    return np.searchsorted(np.asarray(edges, dtype=float), values, side="right")


def categorical_bin_index(categories: Sequence[str], values: Iterable[str]) -> np.ndarray:
    """Bin index of each category; anything unknown goes to the last ("unseen") bin."""
    lookup = {c: i for i, c in enumerate(categories)}
    unseen = len(categories)
    return np.fromiter((lookup.get(v, unseen) for v in values), dtype=np.int64)


def histogram_buckets(entry: dict[str, Any]) -> list[float]:
    """Prometheus histogram upper bounds for a numeric profile entry: the training quantiles.

    A live histogram then has the reference's resolution, where default buckets would put most
    values in one bucket. Prometheus buckets are ``v <= le`` while profile bins are ``[from, to)``:
    a value exactly on an edge lands one bucket lower here, so drift statistics never read these
    buckets; they use the exporter's counts over the profile's own bins.
    """
    return [float(e) for e in entry["edges"][:-1]]


def _numeric_entry(values: np.ndarray, missing: int, bins: int) -> dict[str, Any]:
    edges = numeric_edges(values, bins)
    counts = np.bincount(numeric_bin_index(edges, values), minlength=len(edges) + 1) if edges else []
    entry: dict[str, Any] = {
        "kind": "numeric",
        "count": int(values.size),
        "missing": int(missing),
        "edges": edges,
        "bin_counts": [int(c) for c in counts],
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
    if profile.get("profile_version") != PROFILE_VERSION:
        raise ValueError(f"unsupported profile_version {profile.get('profile_version')!r}, expected {PROFILE_VERSION}")
    missing = [n for n in schema.names if n not in profile.get("features", {})]
    if missing:
        raise ValueError(f"reference profile lacks features {missing}")
    for name, entry in list(profile["features"].items()) + [("prediction", profile["prediction"])]:
        nbins = len(entry["bin_counts"])
        expected = len(entry["edges"]) + 1 if entry["kind"] == "numeric" else len(entry["categories"]) + 1
        if entry["count"] and nbins != expected:
            raise ValueError(f"profile entry {name!r} has {nbins} bins, expected {expected}")
