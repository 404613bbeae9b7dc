"""Profile version 2 binning: one bin per value for discrete features, ties, tails, gaps, the bins
beyond the training range, bin means, histogram buckets, and version 1 profiles still read."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mlpulse import drift
from mlpulse.bundle import load_reference, sha256_file
from mlpulse.profile import (
    DEFAULT_BINS,
    DISCRETE_MAX_VALUES,
    OUTER_BINS,
    PROFILE_VERSION,
    check_profile,
    histogram_buckets,
    numeric_bin_index,
    profile_column,
    training_range_bins,
)
from mlpulse.schema import FeatureSchema, FeatureSpec, OutputSpec

NUM = FeatureSpec("x", "numeric", "float")


def counts_of(entry, values):
    return np.bincount(numeric_bin_index(entry["edges"], np.asarray(values, dtype=float)),
                       minlength=len(entry["edges"]) + 1)


def test_discrete_feature_gets_one_bin_per_value_up_to_the_cap():
    rng = np.random.default_rng(1)
    values = rng.integers(0, DISCRETE_MAX_VALUES, 20_000).astype(float)  # exactly the cap
    entry = profile_column(NUM, values.tolist())
    assert entry["discrete"] is True
    first, last = training_range_bins(entry)
    assert last - first + 1 == DISCRETE_MAX_VALUES
    inner = np.asarray(entry["edges"][first - 1:last])
    assert inner[0] == 0.0 and np.allclose(inner[1:], np.arange(DISCRETE_MAX_VALUES - 1) + 0.5)
    assert entry["bin_counts"][first:last + 1] == np.bincount(values.astype(int)).tolist()
    assert entry["bin_means"][first:last + 1] == [float(v) for v in range(DISCRETE_MAX_VALUES)]
    # A live value between two training values counts for the nearer one.
    assert numeric_bin_index(entry["edges"], np.array([4.4, 4.6])).tolist() == [first + 4, first + 5]
    more = profile_column(NUM, np.r_[values, 0.5].tolist())  # one more distinct value: continuous
    assert more["discrete"] is False and len(more["edges"]) < len(entry["edges"])


def test_heavy_ties_get_a_bin_of_their_own_and_are_never_split():
    rng = np.random.default_rng(2)
    values = np.where(rng.random(10_000) < 0.4, 0.0, rng.gamma(2.0, 1.0, 10_000))
    entry = profile_column(NUM, values.tolist())
    assert entry["discrete"] is False
    zero = numeric_bin_index(entry["edges"], np.array([0.0]))[0]
    assert entry["bin_counts"][zero] == int((values == 0).sum())  # the tie alone in its bin
    assert entry["bin_means"][zero] == 0.0
    assert numeric_bin_index(entry["edges"], np.array([1e-9]))[0] == zero + 1


def test_continuous_edges_are_quantiles_with_tail_levels_and_bins_beyond_the_range():
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 2.0, 10_000)
    entry = profile_column(NUM, values.tolist())
    edges = np.asarray(entry["edges"])
    levels = np.union1d(np.linspace(0, 1, DEFAULT_BINS + 1), [0.005, 0.01, 0.025, 0.975, 0.99, 0.995])
    assert set(np.quantile(values, levels)) <= set(edges.tolist())
    first, last = training_range_bins(entry)
    assert first == OUTER_BINS + 1 and len(edges) - last - 1 == OUTER_BINS
    assert edges[last] == np.nextafter(values.max(), np.inf)
    std = values.std()
    below = values.min() - edges[:first - 1]
    above = edges[last + 1:] - edges[last]
    assert np.allclose(np.sort(below), 0.25 * std * 2.0 ** np.arange(OUTER_BINS))
    assert np.allclose(above, 0.25 * std * 2.0 ** np.arange(OUTER_BINS))
    assert sum(entry["bin_counts"][:first]) == 0 and sum(entry["bin_counts"][last + 1:]) == 0
    # The means are the reference's own, bin by bin.
    idx = numeric_bin_index(edges, values)
    for i in np.unique(idx):
        assert entry["bin_means"][i] == pytest.approx(values[idx == i].mean(), rel=1e-9, abs=1e-12)


def test_a_gap_between_the_bulk_and_an_outlier_cluster_is_split():
    rng = np.random.default_rng(4)
    values = np.where(rng.random(5000) < 0.002, 1000.0 + rng.random(5000), rng.normal(0, 1, 5000))
    entry = profile_column(NUM, values.tolist())
    bulk_max = values[values < 500].max()
    inside = [e for e in entry["edges"] if bulk_max < e < 1000.0]
    assert len(inside) >= 6
    # A live value at 22 is placed within a factor two of its distance to the bulk.
    point = drift.bin_points(entry)[numeric_bin_index(entry["edges"], np.array([22.0]))[0]]
    assert 11.0 <= point <= 44.0


def test_histogram_buckets_stay_inside_the_training_range_and_few():
    rng = np.random.default_rng(5)
    for values in (rng.integers(0, 90, 5000).astype(float), rng.lognormal(0, 1, 5000),
                   np.where(rng.random(5000) < 0.4, 0.0, rng.gamma(2.0, 1.0, 5000))):
        entry = profile_column(NUM, values.tolist())
        buckets = histogram_buckets(entry)
        assert buckets == sorted(set(buckets)) and 2 <= len(buckets) <= DEFAULT_BINS + 1
        assert buckets[0] == values.min() and buckets[-1] <= values.max()
        assert all(b > 1e-300 or b <= 0 for b in buckets)  # no edge "just above a tie" such as 5e-324


def v1_entry(values: np.ndarray) -> dict:
    """A numeric entry as profile version 1 wrote it: 20 quantile edges and one more."""
    qs = np.unique(np.quantile(values, np.linspace(0, 1, 21)))
    edges = [float(q) for q in np.append(qs, np.nextafter(qs[-1], np.inf))]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"kind": "numeric", "count": int(values.size), "missing": 0, "edges": edges,
            "bin_counts": [int(c) for c in counts], "min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean()), "std": float(values.std())}


def test_version_1_entries_are_evaluated_as_before():
    rng = np.random.default_rng(6)
    ref = rng.normal(0, 1, 4000)
    entry = v1_entry(ref)
    cur = np.r_[rng.normal(0.5, 1, 500), [10.0, -10.0]]
    res = drift.evaluate_feature(entry, counts_of(entry, cur))
    assert training_range_bins(entry) == (1, len(entry["edges"]) - 1)
    assert res.out_of_range_ratio == pytest.approx(np.mean((cur < ref.min()) | (cur > ref.max())))
    assert res.out_of_range_ratio >= 2 / 502
    r, c = entry["bin_counts"], counts_of(entry, cur)
    assert res.wasserstein_norm == pytest.approx(drift.wasserstein_binned(entry["edges"], r, c, entry["std"]))
    assert drift.is_drifted(res) is True


def write_bundle(tmp_path, profile: dict, schema: FeatureSchema):
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "reference.json").write_text(json.dumps(profile))
    metadata = {"name": "m", "version": "1", "trained_at": "2026-01-01T00:00:00+00:00",
                "features": schema.to_list(), "output": OutputSpec(task="regression").to_dict(),
                "model_sha256": "0" * 64, "reference_sha256": sha256_file(path / "reference.json")}
    (path / "metadata.json").write_text(json.dumps(metadata))
    return path


def test_a_version_1_bundle_still_loads_and_says_how_to_upgrade(tmp_path, caplog):
    rng = np.random.default_rng(7)
    schema = FeatureSchema(features=(NUM,))
    profile = {"profile_version": 1, "created_at": "2026-01-01T00:00:00+00:00", "row_count": 1000, "bins": 20,
               "features": {"x": v1_entry(rng.normal(size=1000))}, "prediction": v1_entry(rng.random(1000))}
    with caplog.at_level(logging.WARNING, logger="mlpulse.bundle"):
        _, _, _, loaded = load_reference(write_bundle(tmp_path, profile, schema))
    assert loaded["profile_version"] == 1 and loaded["features"]["x"] == profile["features"]["x"]
    assert "profile_version 1" in caplog.text and "rebuild" in caplog.text


def test_an_unknown_profile_version_is_refused_with_the_fix():
    schema = FeatureSchema(features=(NUM,))
    entry = profile_column(NUM, [1.0, 2.0, 3.0])
    profile = {"profile_version": PROFILE_VERSION + 1, "features": {"x": entry}, "prediction": entry}
    with pytest.raises(ValueError, match=r"profile_version 3.*rebuild the bundle"):
        check_profile(profile, schema)
    check_profile({**profile, "profile_version": PROFILE_VERSION}, schema)
