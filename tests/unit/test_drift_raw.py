"""Every binned statistic against scipy on the raw samples, per feature type (profile version 2).

Feature types: discrete (few distinct values, one bin each), continuous, skewed, heavy-tailed and
outlier-laden. The stated bounds are in docs/drift-statistics.md; the false-alarm rate and power
on real data are measured by ``bench/drift_calibration.py``, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlpulse import drift
from mlpulse.profile import DISCRETE_MAX_VALUES, numeric_bin_index, profile_column, training_range_bins
from mlpulse.schema import FeatureSpec

NUM = FeatureSpec("x", "numeric", "float")


def population(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "discrete":
        return rng.poisson(6.0, n).astype(float)
    if kind == "continuous":
        return rng.normal(10.0, 2.0, n)
    if kind == "skewed":
        return rng.lognormal(0.0, 1.0, n)
    if kind == "heavy-tailed":
        return rng.standard_t(2, n)
    if kind == "outliers":  # 1 % of values 50 sd away, the rest normal
        return np.where(rng.random(n) < 0.01, rng.normal(0.0, 50.0, n), rng.normal(0.0, 1.0, n))
    raise AssertionError(kind)


KINDS = ("discrete", "continuous", "skewed", "heavy-tailed", "outliers")


def binned(entry: dict, values: np.ndarray) -> np.ndarray:
    return np.bincount(numeric_bin_index(entry["edges"], values), minlength=len(entry["edges"]) + 1)


def points_of(entry: dict, values: np.ndarray) -> np.ndarray:
    return drift.bin_points(entry)[numeric_bin_index(entry["edges"], values)]


def case(kind: str, seed: int, n_cur: int, shift: float):
    rng = np.random.default_rng(seed)
    ref = population(kind, rng, 3000)
    # A discrete feature moves by whole units (rounded up): +0.3 would fall between its values.
    cur = population(kind, rng, n_cur) + (np.ceil(shift) if kind == "discrete" else shift * ref.std())
    entry = profile_column(NUM, ref.tolist())
    return ref, cur, entry, np.asarray(entry["bin_counts"]), binned(entry, cur)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_ks_binned_against_ks_2samp(kind, shift):
    ref, cur, entry, r, c = case(kind, 1, 1000, shift)
    d, p = drift.ks_binned(r, c)
    raw = stats.ks_2samp(ref, cur, method="asymp")
    if kind == "discrete":  # one bin per value: binning loses nothing
        assert d == pytest.approx(raw.statistic, abs=1e-12)
        assert p == pytest.approx(raw.pvalue, rel=1e-9, abs=1e-300)
    else:
        largest = max((r / r.sum()).max(), (c / c.sum()).max())
        assert d - 1e-12 <= raw.statistic <= d + largest + 1e-12
        assert raw.statistic - d <= 0.05  # with the tail levels the inner bins hold at most 5 %


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_wasserstein_within_its_stated_bound_of_scipy(kind, shift):
    """|W_binned - W_raw| <= (mean |x - point(x)| over both samples) / std: the binned distance is
    exactly the raw one after moving every value to its bin's point (a coupling of each sample)."""
    ref, cur, entry, r, c = case(kind, 2, 1000, shift)
    std = max(ref.std(), drift.WASSERSTEIN_STD_FLOOR)
    w = drift.evaluate_feature(entry, c).wasserstein_norm
    raw = stats.wasserstein_distance(ref, cur) / std
    moved = stats.wasserstein_distance(points_of(entry, ref), points_of(entry, cur)) / std
    assert w == pytest.approx(moved, rel=1e-9, abs=1e-12)
    bound = (np.abs(ref - points_of(entry, ref)).mean() + np.abs(cur - points_of(entry, cur)).mean()) / std
    assert abs(w - raw) <= bound + 1e-12
    if kind == "discrete":
        assert w == pytest.approx(raw, rel=1e-9, abs=1e-12)
    else:
        # Measured, not a law: the bin means and the tail and gap bins keep the error small
        # (uniform spreading over quantile bins read 2.0 where the raw value was 0.03).
        assert abs(w - raw) <= 0.05 + 0.1 * raw


def test_wasserstein_of_values_far_outside_the_range_is_located_within_a_factor_two():
    rng = np.random.default_rng(3)
    ref = rng.normal(0.0, 1.0, 3000)
    cur = np.r_[rng.normal(0.0, 1.0, 900), rng.normal(72.0, 1.0, 100)]  # 10 % at 72 sd
    entry = profile_column(NUM, ref.tolist())
    w = drift.evaluate_feature(entry, binned(entry, cur)).wasserstein_norm
    raw = stats.wasserstein_distance(ref, cur) / ref.std()
    assert raw / 2 <= w <= raw * 2


@pytest.mark.parametrize("kind", KINDS)
def test_chi2_equals_scipy_contingency_on_the_groups(kind):
    ref, cur, entry, r, c = case(kind, 4, 1000, 0.3)
    n, m = r.sum(), c.sum()
    group = drift.chi2_groups(r + c, min(n, m), n + m)
    k = group.max() + 1
    table = np.vstack([np.bincount(group, weights=r, minlength=k), np.bincount(group, weights=c, minlength=k)])
    assert (min(n, m) * table.sum(axis=0) / (n + m) >= drift.CHI2_MIN_EXPECTED).all()
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert drift.chi2_pvalue(r, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_chi2_discrete_equals_raw_contingency_table_when_no_group_is_merged():
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 6, 4000).astype(float)
    cur = np.minimum(rng.integers(0, 7, 2000), 5).astype(float)
    entry = profile_column(NUM, ref.tolist())
    r, c = np.asarray(entry["bin_counts"]), binned(entry, cur)
    values = np.unique(np.r_[ref, cur])
    table = np.vstack([[np.sum(ref == v) for v in values], [np.sum(cur == v) for v in values]])
    assert drift.chi2_pvalue(r, c) == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


def test_chi2_is_two_sample_window_as_large_as_the_reference():
    """The goodness-of-fit test flagged almost every stationary window as large as the reference;
    the two-sample test holds its level there (a quick check; the bench measures the rate)."""
    rng = np.random.default_rng(6)
    flagged = 0
    for _ in range(300):
        ref, cur = rng.normal(size=2000), rng.normal(size=2000)
        entry = profile_column(NUM, ref.tolist())
        flagged += drift.chi2_pvalue(entry["bin_counts"], binned(entry, cur)) < 0.05
    assert flagged / 300 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)


def test_chi2_single_value_beyond_the_maximum_is_not_significant():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=5000)
    entry = profile_column(NUM, ref.tolist())
    cur = rng.normal(size=300)
    base = drift.chi2_pvalue(entry["bin_counts"], binned(entry, cur))
    one_more = drift.chi2_pvalue(entry["bin_counts"], binned(entry, np.r_[cur, ref.max() + 1.0]))
    assert abs(one_more - base) < 0.05


def test_js_and_psi_on_discrete_equal_their_raw_definitions():
    """With one bin per value the binned proportions are the raw ones (the bins beyond the range
    are empty on both sides and add nothing)."""
    rng = np.random.default_rng(8)
    ref = rng.choice(10, 3000, p=np.full(10, 0.1)).astype(float)
    cur = rng.choice(10, 800, p=np.r_[np.full(5, 0.14), np.full(5, 0.06)]).astype(float)
    entry = profile_column(NUM, ref.tolist())
    r, c = np.asarray(entry["bin_counts"]), binned(entry, cur)
    values = np.arange(10.0)
    p = np.array([np.sum(ref == v) for v in values], dtype=float)
    q = np.array([np.sum(cur == v) for v in values], dtype=float)
    assert drift.js_distance(r, c) == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2), rel=1e-9)
    k = r.size  # PSI smooths over all the profile's bins
    ps = (p / p.sum() + drift.PSI_EPS) / (1 + k * drift.PSI_EPS)
    qs = (q / q.sum() + drift.PSI_EPS) / (1 + k * drift.PSI_EPS)
    assert drift.psi(r, c) == pytest.approx(float(np.sum((qs - ps) * np.log(qs / ps))), rel=1e-9)


def test_out_of_range_ratio_counts_every_bin_beyond_the_training_range():
    rng = np.random.default_rng(9)
    ref = rng.normal(size=2000)
    entry = profile_column(NUM, ref.tolist())
    cur = np.r_[rng.normal(size=900), np.full(50, ref.max() + 3.0), np.full(50, ref.min() - 40.0)]
    res = drift.evaluate_feature(entry, binned(entry, cur))
    assert res.out_of_range_ratio == pytest.approx(0.1)
    first, last = training_range_bins(entry)
    assert numeric_bin_index(entry["edges"], np.array([ref.min(), ref.max()])).tolist() == [first, last]


def test_a_shift_of_one_on_a_count_feature_is_seen():
    """Quantile bins merged tied integers and lost +1 shifts; one bin per value keeps them."""
    rng = np.random.default_rng(10)
    ref = rng.binomial(80, 0.5, 3000).astype(float)  # about 35 distinct values
    assert np.unique(ref).size <= DISCRETE_MAX_VALUES
    entry = profile_column(NUM, ref.tolist())
    assert entry["discrete"] is True
    cur = rng.binomial(80, 0.5, 500).astype(float) + 1
    res = drift.evaluate_feature(entry, binned(entry, cur))
    raw = stats.ks_2samp(ref, cur, method="asymp")
    assert res.ks_stat == pytest.approx(raw.statistic) and raw.pvalue < 1e-3
    assert drift.test_pvalue(res.chi2_pvalue, res.ks_pvalue) < 2e-3 and drift.is_drifted(res, decision="test")


def test_test_decision_uses_the_pvalue_alone():
    res = drift.FeatureDrift("numeric", 500, 0, 0.0, psi=0.01, js=0.01, chi2_pvalue=0.004, ks_stat=0.01,
                             ks_pvalue=0.5, wasserstein_norm=0.01, out_of_range_ratio=0.0)
    assert drift.test_pvalue(0.004, 0.5) == pytest.approx(0.008) and drift.test_pvalue(0.4, None) == 0.4
    assert drift.is_drifted(res) is False  # PSI far below 0.2
    assert drift.is_drifted(res, decision="test") is True  # 2 * 0.004 < 0.01
    assert drift.is_drifted(res, decision="test", alpha=0.005) is False
    assert drift.is_drifted(res, decision="test", pvalue=0.02) is False
    assert drift.is_drifted(res, decision="test", pvalue=0.02, ks_pvalue=0.001) is True
    cat = drift.FeatureDrift("categorical", 500, 0, 0.0, psi=0.3, js=0.2, chi2_pvalue=0.006, linf=0.2, unseen_ratio=0.0)
    assert drift.is_drifted(cat) is True and drift.is_drifted(cat, decision="test") is True  # no KS: chi2 alone
    with pytest.raises(ValueError):
        drift.is_drifted(res, decision="maybe")
    with pytest.raises(ValueError):
        drift.is_drifted(res, decision="test", alpha=None)


def test_exporter_decision_option_is_validated():
    from mlpulse.exporter.config import ConfigError, ExporterConfig

    with pytest.raises(ConfigError, match="decision must be one of"):
        ExporterConfig(decision="maybe").validate()
    with pytest.raises(ConfigError, match="decision test needs alpha below 1"):
        ExporterConfig(decision="test", alpha=1.0).validate()
    assert ExporterConfig().decision == "threshold" and "threshold" in drift.DECISIONS
