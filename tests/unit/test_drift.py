"""Drift statistics on binned counts, checked against scipy/numpy on the raw samples they bin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlpulse import drift
from mlpulse.drift import FeatureDrift, Moments
from mlpulse.profile import (
    build_profile,
    categorical_bin_index,
    numeric_bin_index,
    numeric_edges,
    profile_column,
)
from mlpulse.schema import FeatureSchema, FeatureSpec

NUM = FeatureSpec("x", "numeric", "float", nullable=True)
CATS = ("a", "b", "c", "d")
CAT = FeatureSpec("c", "categorical", "str", nullable=True, categories=CATS)
CAT_P = [0.5, 0.3, 0.15, 0.05]


@pytest.fixture(scope="module")
def ref_raw() -> np.ndarray:
    return np.random.default_rng(20240601).normal(10.0, 2.0, 5000)


@pytest.fixture(scope="module")
def entry(ref_raw) -> dict:
    return profile_column(NUM, ref_raw.tolist())


@pytest.fixture(scope="module")
def cat_entry() -> dict:
    values = np.random.default_rng(7).choice(CATS, 4000, p=CAT_P)
    return profile_column(CAT, values.tolist())


def live(seed: int, n: int, loc: float = 10.0, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, n)


def bin_numeric(entry: dict, values: np.ndarray) -> np.ndarray:
    edges = entry["edges"]
    return np.bincount(numeric_bin_index(edges, values), minlength=len(edges) + 1)


def bin_categorical(entry: dict, values) -> np.ndarray:
    cats = entry["categories"]
    return np.bincount(categorical_bin_index(cats, values), minlength=len(cats) + 1)


def proportions(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    return c / c.sum()


# Samples against the reference N(10, 2): same distribution, shifted, wider, partly and wholly
# outside the training range, and small.
CASES = [
    (1, 2000, 10.0, 2.0),
    (2, 300, 10.0, 2.0),
    (3, 2000, 11.0, 2.0),
    (4, 1500, 10.0, 3.5),
    (5, 1000, 14.0, 2.0),
    (6, 800, 40.0, 1.0),
    (7, 120, 9.0, 1.0),
]


def test_reference_is_the_profile_binning(ref_raw, entry):
    assert entry["edges"] == numeric_edges(ref_raw)
    assert entry["bin_counts"] == list(bin_numeric(entry, ref_raw))
    assert entry["std"] == pytest.approx(ref_raw.std())


# --- Kolmogorov-Smirnov ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed,n,loc,scale", CASES)
def test_ks_binned_within_stated_bound_of_ks_2samp(ref_raw, entry, seed, n, loc, scale):
    cur_raw = live(seed, n, loc, scale)
    ref, cur = np.asarray(entry["bin_counts"]), bin_numeric(entry, cur_raw)
    d, p = drift.ks_binned(ref, cur)
    raw = stats.ks_2samp(ref_raw, cur_raw, method="asymp")
    # Binned D <= raw D <= binned D + the largest probability mass of one bin in either sample.
    assert d <= raw.statistic + 1e-12
    assert raw.statistic - d <= max(proportions(ref).max(), proportions(cur).max()) + 1e-12
    # Same p-value formula as ks_2samp's asymptotic mode, so a smaller D gives a larger p.
    en = len(ref_raw) * n / (len(ref_raw) + n)
    assert p == pytest.approx(stats.kstwo.sf(d, np.round(en)), rel=1e-12, abs=1e-300)
    assert p >= raw.pvalue - 1e-12


def test_ks_binned_equals_ks_2samp_when_binning_is_lossless():
    rng = np.random.default_rng(11)
    ref_raw = rng.integers(0, 10, 3000).astype(float)
    cur_raw = rng.integers(1, 11, 700).astype(float)  # 10 is above the training maximum
    # One bin per integer. Not numeric_edges: it replaces the maximum's own edge by the float just
    # above it, so the two largest distinct values of integer data share the last inner bin.
    edges = list(np.arange(10) + 0.5)
    both = np.concatenate([ref_raw, cur_raw])
    pairs = np.unique(np.c_[numeric_bin_index(edges, both), both], axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs)  # no bin holds two distinct values
    ref = np.bincount(numeric_bin_index(edges, ref_raw), minlength=len(edges) + 1)
    cur = np.bincount(numeric_bin_index(edges, cur_raw), minlength=len(edges) + 1)
    d, p = drift.ks_binned(ref, cur)
    raw = stats.ks_2samp(ref_raw, cur_raw, method="asymp")
    assert d == pytest.approx(raw.statistic, abs=1e-12)
    assert p == pytest.approx(raw.pvalue, rel=1e-9)


def test_ks_large_windows_use_the_kolmogorov_limit_within_one_percent():
    ref = np.array([0, 6000, 8000, 6000, 0])
    cur = np.array([0, 300_000, 430_000, 270_000, 0])
    d, p = drift.ks_binned(ref, cur)
    en = 20_000 * 1_000_000 / 1_020_000
    assert en > drift.KS_FINITE_N_MAX
    assert d == pytest.approx(0.03)
    exact = stats.kstwo.sf(d, np.round(en))
    assert p == pytest.approx(exact, rel=0.01) and p >= exact  # conservative


# --- chi-square -----------------------------------------------------------------------------------


def grouped_contingency_pvalue(ref, cur) -> float:
    """scipy's contingency-table test on the bins grouped as documented (adjacent bins until the
    smaller sample expects CHI2_MIN_EXPECTED values per group)."""
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    n, m = ref.sum(), cur.sum()
    group = drift.chi2_groups(ref + cur, min(n, m), n + m)
    k = group.max() + 1
    table = np.vstack([np.bincount(group, weights=ref, minlength=k), np.bincount(group, weights=cur, minlength=k)])
    assert (min(n, m) * table.sum(axis=0) / (n + m) >= drift.CHI2_MIN_EXPECTED).all()
    return stats.chi2_contingency(table, correction=False).pvalue


def test_chi2_is_scipys_two_sample_test_on_the_grouped_bins(ref_raw, entry):
    for cur_raw in (live(21, 1500, 10.3, 2.0), live(22, 1000, 11.0, 4.0)):  # the second spills over both ends
        ref, cur = np.asarray(entry["bin_counts"], dtype=float), bin_numeric(entry, cur_raw)
        expected = grouped_contingency_pvalue(ref, cur)
        assert drift.chi2_pvalue(ref, cur) == pytest.approx(expected, rel=1e-10, abs=1e-300)
    assert drift.chi2_pvalue(ref, cur) < 1e-10


def test_chi2_categorical_equals_scipy(cat_entry):
    values = np.random.default_rng(23).choice(CATS, 900, p=[0.45, 0.3, 0.2, 0.05])
    ref, cur = np.asarray(cat_entry["bin_counts"], dtype=float), bin_categorical(cat_entry, values)
    assert ref[-1] == 0 and cur[-1] == 0  # no unseen category on either side: nothing to group
    expected = stats.chi2_contingency(np.vstack([ref[:-1], cur[:-1]]), correction=False).pvalue
    assert drift.chi2_pvalue(ref, cur, ordered=False) == pytest.approx(expected, rel=1e-10)


def test_chi2_single_value_outside_training_is_not_significant(entry):
    cur = bin_numeric(entry, live(24, 300))
    cur[1:-1] = np.round(np.asarray(entry["bin_counts"][1:-1]) / 5000 * 300)  # exactly as expected
    base = drift.chi2_pvalue(entry["bin_counts"], cur)
    cur[-1] = 1  # one value above the training maximum
    assert drift.chi2_pvalue(entry["bin_counts"], cur) > 0.5 and base > 0.5


# --- Jensen-Shannon, PSI, L-infinity --------------------------------------------------------------


@pytest.mark.parametrize("seed,n,loc,scale", CASES)
def test_js_equals_scipy_on_binned_numeric(entry, seed, n, loc, scale):
    ref, cur = entry["bin_counts"], bin_numeric(entry, live(seed, n, loc, scale))
    expected = jensenshannon(proportions(ref), proportions(cur), base=2)
    assert drift.js_distance(ref, cur) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert 0.0 <= drift.js_distance(ref, cur) <= 1.0


def test_js_and_linf_on_categorical(cat_entry):
    values = np.random.default_rng(31).choice([*CATS, "zzz"], 1000, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    ref, cur = cat_entry["bin_counts"], bin_categorical(cat_entry, values)
    assert cur[-1] > 0  # "zzz" went to the unseen bin
    p, q = proportions(ref), proportions(cur)
    assert drift.js_distance(ref, cur) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-10)
    assert drift.linf(ref, cur) == pytest.approx(np.abs(p - q).max(), rel=1e-12)
    # Disjoint supports: the largest distance.
    assert drift.js_distance([5, 0], [0, 3]) == pytest.approx(1.0)
    assert drift.linf([5, 0], [0, 3]) == 1.0


def test_psi_matches_its_formula_with_smoothing(entry):
    ref, cur = entry["bin_counts"], bin_numeric(entry, live(41, 2000, 11.0))
    k, eps = len(ref), drift.PSI_EPS
    p = (proportions(ref) + eps) / (1 + k * eps)
    q = (proportions(cur) + eps) / (1 + k * eps)
    assert drift.psi(ref, cur) == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
    # Symmetric, zero on identical proportions, finite with empty bins on one side only.
    assert drift.psi(ref, cur) == pytest.approx(drift.psi(cur, ref), rel=1e-12)
    assert drift.psi([10, 20, 0], [1, 2, 0]) == pytest.approx(0.0, abs=1e-15)
    assert math.isfinite(drift.psi([10, 0], [0, 10])) and drift.psi([10, 0], [0, 10]) > 10


def test_psi_of_a_normal_shift_is_about_its_squared_size(ref_raw, entry):
    # For a shift of delta standard deviations PSI (the J-divergence) is delta**2: 0.2 ~ 0.45 sd.
    cur = bin_numeric(entry, live(42, 200_000, 10.0 + 0.45 * 2.0))
    assert drift.psi(entry["bin_counts"], cur) == pytest.approx(0.45**2, rel=0.15)


# --- Wasserstein ----------------------------------------------------------------------------------


def wasserstein_bound(entry: dict, ref, cur, cur_raw: np.ndarray) -> float:
    """The documented bound: sum over bins of width * (p_i + q_i), outer widths to the sample extremes.

    With the window min/max given, the outer bins are ordinary bins of that width; without them
    their mass sits on the edge and the same width applies to the error.
    """
    e = np.asarray(entry["edges"])
    p, q = proportions(ref), proportions(cur)
    widths = np.diff(e)
    lo, hi = min(cur_raw.min(), e[0]), max(cur_raw.max(), e[-1])
    total = np.sum(widths * (p[1:-1] + q[1:-1])) + (e[0] - lo) * (p[0] + q[0]) + (hi - e[-1]) * (p[-1] + q[-1])
    return total / entry["std"]


@pytest.mark.parametrize("seed,n,loc,scale", CASES)
@pytest.mark.parametrize("with_extremes", [False, True])
def test_wasserstein_within_stated_bound_of_scipy(ref_raw, entry, seed, n, loc, scale, with_extremes):
    cur_raw = live(seed, n, loc, scale)
    ref, cur = entry["bin_counts"], bin_numeric(entry, cur_raw)
    extremes = {"lo": cur_raw.min(), "hi": cur_raw.max()} if with_extremes else {}
    w = drift.wasserstein_binned(entry["edges"], ref, cur, entry["std"], **extremes)
    raw = stats.wasserstein_distance(ref_raw, cur_raw) / ref_raw.std()
    bound = wasserstein_bound(entry, ref, cur, cur_raw)
    assert abs(w - raw) <= bound + 1e-12
    if cur[0] == 0 and cur[-1] == 0:
        # Inside the training range, the practical error is far smaller than the worst case; it
        # comes mostly from the wide outermost quantile bins (see docs/drift-statistics.md).
        assert abs(w - raw) <= 0.2 * raw + 0.03


def test_wasserstein_integral_equals_scipy_on_the_uniform_within_bin_model():
    # Independent check of the piecewise-linear integral (including sign changes inside a bin):
    # scipy on a fine grid of points spreading each bin's mass uniformly.
    edges = [0.0, 1.0, 3.0, 4.0]
    ref, cur = np.array([0, 5, 1, 4, 0]), np.array([2, 0, 6, 1, 1])
    lo, hi = -2.0, 6.0
    bounds = [lo, *edges, hi]
    pts, wr, wc = [], [], []
    for i in range(len(ref)):
        grid = np.linspace(bounds[i], bounds[i + 1], 4001)
        mid = (grid[:-1] + grid[1:]) / 2
        pts.append(mid)
        wr.append(np.full(mid.size, ref[i] / mid.size))
        wc.append(np.full(mid.size, cur[i] / mid.size))
    pts, wr, wc = np.concatenate(pts), np.concatenate(wr), np.concatenate(wc)
    keep_r, keep_c = wr > 0, wc > 0
    expected = stats.wasserstein_distance(pts[keep_r], pts[keep_c], wr[keep_r], wc[keep_c])
    got = drift.wasserstein_binned(edges, ref, cur, 1.0, lo=lo, hi=hi)
    assert got == pytest.approx(expected, rel=1e-5)
    # Without extremes the outer mass sits on the edges: a smaller distance here.
    assert drift.wasserstein_binned(edges, ref, cur, 1.0) < got


def test_wasserstein_normalisation_and_constant_reference():
    assert drift.wasserstein_binned([0.0, 1.0], [0, 4, 0], [0, 4, 0], 0.0) == 0.0
    # A constant reference has std 0: Evidently's floor 0.001 keeps the division finite.
    w = drift.wasserstein_binned([5.0, 6.0], [0, 10, 0], [0, 0, 10], 0.0, hi=7.0)
    assert w == pytest.approx(0.5 * 1.0 / drift.WASSERSTEIN_STD_FLOOR + 0.5 * 1.0 / drift.WASSERSTEIN_STD_FLOOR)


# --- moments --------------------------------------------------------------------------------------


def test_moments_match_numpy_on_raw_data():
    x = np.random.default_rng(51).gamma(2.0, 3.0, 10_000) + 1e6  # a large offset tests stability
    m = Moments.from_values(x)
    assert m.count == x.size
    assert m.mean == pytest.approx(x.mean(), rel=1e-14)
    assert m.std == pytest.approx(x.std(), rel=1e-10)
    assert m.variance == pytest.approx(x.var(), rel=1e-10)
    assert (m.min, m.max) == (x.min(), x.max())


def test_moments_merged_over_many_slices_equal_the_window():
    rng = np.random.default_rng(52)
    x = rng.normal(0.2, 0.1, 20_000)
    cuts = np.sort(rng.integers(0, x.size, 300))
    slices = np.split(x, cuts)  # includes empty slices (repeated cut points)
    assert any(s.size == 0 for s in slices)
    parts = [Moments.from_values(s) for s in slices]
    for total in (Moments.merge_all(parts), sum(parts, Moments())):
        assert total.count == x.size
        assert total.mean == pytest.approx(x.mean(), rel=1e-12)
        assert total.std == pytest.approx(x.std(), rel=1e-10)
        assert (total.min, total.max) == (x.min(), x.max())
    # Merging is order-independent up to rounding.
    rev = Moments.merge_all(reversed(parts))
    assert rev.mean == pytest.approx(x.mean(), rel=1e-12) and rev.std == pytest.approx(x.std(), rel=1e-10)


def test_moments_empty_and_non_finite():
    empty = Moments.from_values([])
    assert empty == Moments() and empty.count == 0
    assert empty.std is None and empty.variance is None
    assert empty.summary() == {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    one = Moments.from_values([np.nan, 3.0, np.inf])  # non-finite values are missing, not data
    assert one.summary() == {"count": 1, "mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0}
    assert empty.merge(one) == one and one.merge(empty) == one


# --- multiple testing, drift share ----------------------------------------------------------------


def test_bh_matches_scipy_and_ignores_none():
    rng = np.random.default_rng(61)
    ps = np.concatenate([rng.uniform(0, 1, 30), rng.uniform(0, 0.01, 10), [0.0, 1.0, 0.5, 0.5]])
    assert drift.adjust_pvalues(list(ps), "bh") == pytest.approx(stats.false_discovery_control(ps, method="bh"))
    with_none = [None, *ps[:5], None, *ps[5:], None]
    out = drift.adjust_pvalues(with_none, "bh")
    assert out[0] is None and out[6] is None and out[-1] is None
    assert [v for v in out if v is not None] == pytest.approx(stats.false_discovery_control(ps, method="bh"))


def test_bonferroni_none_and_degenerate_inputs():
    ps = [0.01, None, 0.2, 0.5]
    assert drift.adjust_pvalues(ps, "bonferroni") == [pytest.approx(0.03), None, pytest.approx(0.6), 1.0]
    assert drift.adjust_pvalues(ps, "none") == [0.01, None, 0.2, 0.5]
    assert drift.adjust_pvalues([], "bh") == []
    assert drift.adjust_pvalues([None, None], "bh") == [None, None]
    with pytest.raises(ValueError, match="method"):
        drift.adjust_pvalues([0.1], "holm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drift.adjust_pvalues([float("nan")], "bh")


def test_drift_share():
    assert drift.drift_share([True, False, None, True, False]) == 0.5
    assert drift.drift_share([None, None]) is None
    assert drift.drift_share([]) is None
    assert drift.drift_share([False]) == 0.0


# --- evaluate one feature, decide drift -----------------------------------------------------------


def test_no_drift_is_low_and_not_drifted(entry):
    res = drift.evaluate_feature(entry, bin_numeric(entry, live(71, 3000)), missing=30)
    assert res.scored and res.kind == "numeric" and res.count == 3000
    assert res.missing_ratio == pytest.approx(30 / 3030)
    assert res.psi < 0.05 and res.js < 0.1 and res.wasserstein_norm < 0.1 and res.ks_stat < 0.05
    assert res.ks_pvalue > 0.01
    # A two-sample test: 3000 live values against 5000 reference values are not "significant"
    # (the goodness-of-fit test used before treated the reference proportions as exact and was).
    assert res.chi2_pvalue > 0.01
    assert res.out_of_range_ratio < 0.01 and res.linf is None and res.unseen_ratio is None
    for method in ("psi", "js", "wasserstein"):
        assert drift.is_drifted(res, method) is False


def test_shifted_distribution_is_drifted(entry):
    res = drift.evaluate_feature(entry, bin_numeric(entry, live(72, 3000, 12.0)))  # +1 sd
    assert res.psi > 0.5 and res.js > 0.3 and res.wasserstein_norm == pytest.approx(1.0, abs=0.15)
    assert res.ks_pvalue < 1e-10 and res.chi2_pvalue < 1e-10
    for method in ("psi", "js", "wasserstein"):
        assert drift.is_drifted(res, method) is True


def test_is_drifted_thresholds_and_guard():
    res = FeatureDrift("numeric", 1000, 0, 0.0, psi=0.25, js=0.08, chi2_pvalue=0.02, wasserstein_norm=0.3)
    assert drift.is_drifted(res) is False  # PSI above 0.2 but p = 0.02 is not below alpha = 0.01
    assert drift.is_drifted(res, alpha=0.05) is True
    assert drift.is_drifted(res, pvalue=0.001) is True  # e.g. an adjusted p-value
    assert drift.is_drifted(res, "js", alpha=None) is False
    assert drift.is_drifted(res, "js", threshold=0.05, alpha=None) is True
    assert drift.is_drifted(res, "wasserstein", alpha=None) is True
    with pytest.raises(ValueError, match="method"):
        drift.is_drifted(res, "kl")  # type: ignore[arg-type]


def test_small_windows_need_significance_not_only_an_effect_size(entry):
    # At 100 values the sampling noise of PSI over 20 bins is about 0.2: the chi-square guard
    # stops most of those windows from being flagged, and a real shift still is.
    flags_plain, flags_guarded = [], []
    for seed in range(200):
        res = drift.evaluate_feature(entry, bin_numeric(entry, live(1000 + seed, 100)))
        flags_plain.append(drift.is_drifted(res, alpha=None))
        flags_guarded.append(drift.is_drifted(res))
    assert drift.drift_share(flags_plain) > 0.3
    assert drift.drift_share(flags_guarded) <= 0.05
    shifted = drift.evaluate_feature(entry, bin_numeric(entry, live(99, 100, 13.0)))
    assert drift.is_drifted(shifted) is True


def test_categorical_feature(cat_entry):
    same = drift.evaluate_feature(cat_entry, bin_categorical(cat_entry, np.random.default_rng(81).choice(CATS, 2000, p=CAT_P)))
    assert same.kind == "categorical" and same.psi < 0.02 and same.linf < 0.03 and same.unseen_ratio == 0.0
    assert same.ks_stat is None and same.wasserstein_norm is None and same.out_of_range_ratio is None
    assert drift.is_drifted(same) is False and drift.is_drifted(same, "wasserstein") is False  # falls back to JS
    values = np.random.default_rng(82).choice([*CATS, "new"], 2000, p=[0.2, 0.2, 0.2, 0.2, 0.2])
    moved = drift.evaluate_feature(cat_entry, bin_categorical(cat_entry, values))
    assert moved.unseen_ratio == pytest.approx(np.mean(values == "new"))
    assert moved.linf == pytest.approx(abs(CAT_P[0] - 0.2), abs=0.05)
    assert moved.chi2_pvalue < 1e-10 and drift.is_drifted(moved) is True


def test_min_count_gives_no_scores_not_zeros(entry):
    res = drift.evaluate_feature(entry, bin_numeric(entry, live(91, 99)), missing=1)
    assert not res.scored and res.reason == "below_min_count"
    assert res.count == 99 and res.missing_ratio == pytest.approx(0.01)
    scores = ("psi", "js", "chi2_pvalue", "ks_stat", "ks_pvalue", "wasserstein_norm", "out_of_range_ratio")
    assert all(getattr(res, s) is None for s in scores)
    assert drift.is_drifted(res) is None
    assert drift.evaluate_feature(entry, bin_numeric(entry, live(91, 99)), min_count=50).scored


# --- edge cases -----------------------------------------------------------------------------------


def test_empty_window_and_all_missing(entry, cat_entry):
    zeros = np.zeros(len(entry["bin_counts"]))
    empty = drift.evaluate_feature(entry, zeros, min_count=0)  # even with no minimum
    assert empty.reason == "below_min_count" and empty.count == 0 and empty.missing_ratio is None
    assert empty.psi is None and drift.is_drifted(empty) is None
    all_missing = drift.evaluate_feature(cat_entry, np.zeros(len(cat_entry["bin_counts"])), missing=250)
    assert all_missing.missing_ratio == 1.0 and all_missing.psi is None and all_missing.linf is None
    assert drift.drift_share([drift.is_drifted(empty), drift.is_drifted(all_missing)]) is None
    # The pure statistics refuse an empty distribution loudly instead of returning nan.
    for fn in (drift.psi, drift.js_distance, drift.chi2_pvalue, drift.ks_binned, drift.linf):
        with pytest.raises(ValueError, match="without any value"):
            fn(entry["bin_counts"], zeros)


def test_empty_reference_has_no_scores():
    empty_entry = profile_column(NUM, [None, None])
    res = drift.evaluate_feature(empty_entry, [], missing=3)
    assert res.reason == "empty_reference" and res.missing_ratio == 1.0 and res.psi is None


def test_single_category():
    spec = FeatureSpec("one", "categorical", "str", categories=("only",))
    one = profile_column(spec, ["only"] * 500)
    assert one["bin_counts"] == [500, 0]
    same = drift.evaluate_feature(one, bin_categorical(one, ["only"] * 200))
    assert (same.psi, same.js, same.linf, same.chi2_pvalue, same.unseen_ratio) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert drift.is_drifted(same) is False
    unseen = drift.evaluate_feature(one, bin_categorical(one, ["only"] * 150 + ["other"] * 50))
    assert unseen.unseen_ratio == 0.25 and unseen.linf == 0.25
    # 50 of 200 where 500 training values had none: the 2 x 2 two-sample test.
    expected = stats.chi2_contingency([[500, 0], [150, 50]], correction=False).pvalue
    assert unseen.chi2_pvalue == pytest.approx(expected, rel=1e-9)
    assert unseen.chi2_pvalue < 1e-20 and drift.is_drifted(unseen) is True


def test_constant_numeric_feature():
    const = profile_column(NUM, [5.0] * 400)
    same = drift.evaluate_feature(const, bin_numeric(const, np.full(150, 5.0)))
    assert same.psi == 0.0 and same.ks_stat == 0.0 and same.wasserstein_norm == 0.0 and same.chi2_pvalue == 1.0
    moved = drift.evaluate_feature(const, bin_numeric(const, np.full(150, 6.0)), live_min=6.0, live_max=6.0)
    assert moved.out_of_range_ratio == 1.0 and moved.ks_stat == 1.0 and moved.chi2_pvalue < 1e-100
    assert all(math.isfinite(v) for v in (moved.psi, moved.js, moved.wasserstein_norm, moved.ks_pvalue))
    assert drift.is_drifted(moved) is True


def test_all_live_values_outside_training_range(ref_raw, entry):
    cur_raw = live(101, 500, 40.0, 1.0)
    assert cur_raw.min() > ref_raw.max()
    cur = bin_numeric(entry, cur_raw)
    res = drift.evaluate_feature(entry, cur, live_min=cur_raw.min(), live_max=cur_raw.max())
    assert res.out_of_range_ratio == 1.0 and res.ks_stat == pytest.approx(1.0) and res.js == pytest.approx(1.0)
    assert math.isfinite(res.psi) and res.psi > 5
    assert 0.0 <= res.chi2_pvalue < 1e-100 and 0.0 <= res.ks_pvalue < 1e-100
    # The bins beyond the range double in width: values there are placed within a factor two of
    # their distance (here 15 sd), with or without the window's extremes.
    raw_w = stats.wasserstein_distance(ref_raw, cur_raw) / ref_raw.std()
    assert raw_w / 2 <= res.wasserstein_norm <= 2 * raw_w
    assert raw_w / 2 <= drift.evaluate_feature(entry, cur).wasserstein_norm <= 2 * raw_w
    assert drift.is_drifted(res) is True


def test_empty_bins_on_either_side():
    # A reference bin with zero count (training never had that category) and live empty bins.
    spec = FeatureSpec("c", "categorical", "str", categories=("a", "b", "c"))
    ref_entry = profile_column(spec, ["a"] * 300 + ["c"] * 200)
    assert ref_entry["bin_counts"] == [300, 0, 200, 0]
    cur = bin_categorical(ref_entry, ["a"] * 100 + ["b"] * 40 + ["c"] * 60)
    res = drift.evaluate_feature(ref_entry, cur)
    values = [res.psi, res.js, res.chi2_pvalue, res.linf]
    assert all(v is not None and math.isfinite(v) for v in values)
    # Categories largest first (a, c, b, unseen); the empty "unseen" joins "b": a 2 x 3 table.
    expected = stats.chi2_contingency([[300, 200, 0], [100, 60, 40]], correction=False).pvalue
    assert res.chi2_pvalue == pytest.approx(expected, rel=1e-12)
    assert res.linf == pytest.approx(0.2)  # "b" went from 0 to 20 %
    live_empty = drift.evaluate_feature(ref_entry, bin_categorical(ref_entry, ["a"] * 150))
    assert live_empty.js == pytest.approx(jensenshannon([0.6, 0, 0.4, 0], [1, 0, 0, 0], base=2))
    assert math.isfinite(live_empty.psi) and live_empty.chi2_pvalue < 1e-15


def test_contract_violations_raise():
    entry = profile_column(NUM, np.arange(200.0).tolist())
    with pytest.raises(ValueError, match="bins"):
        drift.evaluate_feature(entry, [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        drift.evaluate_feature(entry, -np.ones(len(entry["bin_counts"])))
    with pytest.raises(ValueError, match="equal length"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="increasing"):
        drift.wasserstein_binned([1.0, 1.0], [1, 1, 1], [1, 1, 1], 1.0)


def test_prediction_entry_from_build_profile_and_moments():
    rng = np.random.default_rng(111)
    schema = FeatureSchema(features=(NUM, CAT))
    n = 3000
    columns = {"x": rng.normal(0, 1, n).tolist(), "c": rng.choice(CATS, n, p=CAT_P).tolist()}
    pred = rng.beta(2, 8, n)
    profile = build_profile(schema, columns, pred)
    entry = profile["prediction"]
    live_pred = rng.beta(2, 5, 2000)  # the model now scores higher
    res = drift.evaluate_feature(entry, bin_numeric(entry, live_pred))
    assert res.psi > 0.2 and drift.is_drifted(res) is True
    window = Moments.merge_all(Moments.from_values(s) for s in np.array_split(live_pred, 17))
    assert window.mean == pytest.approx(live_pred.mean()) and window.std == pytest.approx(live_pred.std())
    assert isinstance(res, FeatureDrift) and res.as_dict()["psi"] == res.psi
