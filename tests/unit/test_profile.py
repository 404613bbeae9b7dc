import json

import numpy as np
import pandas as pd
import pytest

from mlpulse.profile import (
    DISCRETE_MAX_VALUES,
    OUTER_BINS,
    build_profile,
    check_profile,
    histogram_buckets,
    numeric_bin_index,
    numeric_edges,
    profile_column,
    training_range_bins,
)
from mlpulse.schema import FeatureSpec
from model_service.data import SCHEMA, generate


@pytest.fixture(scope="module")
def frame():
    return generate(5000, seed=11)


@pytest.fixture(scope="module")
def profile(frame):
    pred = np.random.default_rng(0).beta(2, 8, len(frame))
    return build_profile(SCHEMA, {n: frame[n].tolist() for n in SCHEMA.names}, pred,
                         np.where(pred >= 0.5, "default", "no_default"), ("no_default", "default"))


def test_profile_is_json_and_valid(profile):
    check_profile(json.loads(json.dumps(profile)), SCHEMA)
    assert profile["row_count"] == 5000


@pytest.mark.parametrize("name", [f.name for f in SCHEMA.features if f.kind == "numeric"])
def test_numeric_entry_matches_numpy_on_raw_data(frame, profile, name):
    entry = profile["features"][name]
    raw = pd.to_numeric(frame[name], errors="coerce")
    present = raw.dropna().to_numpy(dtype=float)
    assert entry["missing"] == int(raw.isna().sum())
    assert entry["count"] == present.size
    assert entry["min"] == present.min() and entry["max"] == present.max()
    assert entry["mean"] == pytest.approx(present.mean(), rel=1e-12)
    assert entry["std"] == pytest.approx(present.std(), rel=1e-12)
    edges = entry["edges"]
    first, last = training_range_bins(entry)
    uniq = np.unique(present)
    if uniq.size <= DISCRETE_MAX_VALUES:  # one bin per value: the minimum, then the midpoints
        assert entry["discrete"] is True
        assert edges[first - 1:last] == [uniq[0], *((uniq[:-1] + uniq[1:]) / 2)]
    else:  # the training quantiles are among the edges
        assert entry["discrete"] is False
        assert set(np.quantile(present, np.linspace(0, 1, 21))) <= set(edges)
    assert edges[last] == np.nextafter(present.max(), np.inf)
    assert first - 1 == OUTER_BINS and len(edges) - 1 - last == OUTER_BINS  # the bins beyond the range
    # Bin counts and means recounted independently with explicit half-open intervals.
    bounds = [-np.inf, *edges, np.inf]
    inside = [(present >= lo) & (present < hi) for lo, hi in zip(bounds, bounds[1:])]
    assert entry["bin_counts"] == [int(m.sum()) for m in inside]
    assert entry["bin_means"] == [pytest.approx(present[m].mean(), rel=1e-12) if m.any() else None for m in inside]
    assert sum(entry["bin_counts"][:first]) == 0 and sum(entry["bin_counts"][last + 1:]) == 0


@pytest.mark.parametrize("name", [f.name for f in SCHEMA.features if f.kind == "categorical"])
def test_categorical_entry_matches_pandas(frame, profile, name):
    entry = profile["features"][name]
    counts = frame[name].value_counts(dropna=True)
    assert entry["categories"] == list(SCHEMA[name].categories)
    assert entry["bin_counts"][:-1] == [int(counts.get(c, 0)) for c in entry["categories"]]
    assert entry["bin_counts"][-1] == 0  # no unseen category in training
    assert entry["missing"] == int(frame[name].isna().sum())


def test_prediction_and_class_entries(profile):
    assert profile["prediction"]["count"] == 5000
    assert sum(profile["prediction"]["bin_counts"]) == 5000
    assert sum(profile["predicted_class"]["bin_counts"]) == 5000


def test_live_values_outside_training_fall_in_outer_bins():
    values = np.arange(100, dtype=float)
    entry = profile_column(FeatureSpec("x", "numeric", "float"), values.tolist())
    first, last = training_range_bins(entry)
    assert entry["edges"] == numeric_edges(values)
    idx = numeric_bin_index(entry["edges"], np.array([-1.0, 0.0, 98.4, 98.9, 99.0, 99.5, 1e9]))
    assert list(idx) == [first - 1, first, last - 1, last, last, last + 1, len(entry["edges"])]


def test_constant_and_empty_columns():
    spec = FeatureSpec("x", "numeric", "float", nullable=True)
    const = profile_column(spec, [5.0] * 10 + [None])
    first, last = training_range_bins(const)
    assert first == last and const["edges"][first - 1:first + 1] == [5.0, float(np.nextafter(5.0, np.inf))]
    assert const["bin_counts"][first] == 10 and sum(const["bin_counts"]) == 10 and const["missing"] == 1
    empty = profile_column(spec, [None, None, float("inf"), np.float32("nan")])
    assert empty["count"] == 0 and empty["missing"] == 4 and empty["bin_counts"] == []


def test_binary_feature_keeps_both_values_apart():
    entry = profile_column(FeatureSpec("flag", "numeric", "int"), [0] * 70 + [1] * 30)
    zero, one = numeric_bin_index(entry["edges"], np.array([0.0, 1.0]))
    assert zero != one
    assert entry["bin_counts"][zero] == 70 and entry["bin_counts"][one] == 30


def test_histogram_buckets_follow_the_reference(profile):
    buckets = histogram_buckets(profile["prediction"])
    assert buckets == sorted(buckets)
    assert buckets[-1] == profile["prediction"]["max"]
    assert len(buckets) >= 15  # 20 quantile bins, not a handful of default buckets


def test_check_profile_refuses_wrong_version_and_missing_feature(profile):
    with pytest.raises(ValueError, match="profile_version"):
        check_profile({**profile, "profile_version": 99}, SCHEMA)
    features = dict(profile["features"])
    features.pop("age")
    with pytest.raises(ValueError, match="age"):
        check_profile({**profile, "features": features}, SCHEMA)
