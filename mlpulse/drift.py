"""Drift statistics computed on binned counts, never on rows.

The reference profile (``mlpulse.profile``) stores per feature the counts over fixed bins; the
drift exporter keeps live counts over exactly the same bins per time window. Every function here
takes two count arrays of the same length (``ref`` for the reference, ``cur`` for the live
window), so its cost depends on the number of bins only. ``docs/drift-statistics.md`` gives the
formulas, the error bounds of binning against the raw-sample statistics, and why the defaults are
what they are.

The pure statistics raise ``ValueError`` on input they cannot give a meaning to (an empty
distribution, negative counts, mismatched lengths) rather than returning nan. ``evaluate_feature``
is the entry point that never raises on data: it returns no scores (None) when a window has too
few values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from mlpulse.profile import training_range_bins

# Additive smoothing of the proportions for PSI: small enough to leave populated bins untouched in
# practice, large enough that an empty bin costs a bounded ln(q/eps) instead of infinity.
# Evidently fills empty bins with the same 1e-4.
PSI_EPS = 1e-4
# 20 reference bins x 5 expected values per bin (Cochran's rule for the chi-square approximation).
DEFAULT_MIN_COUNT = 100
# Evidently's floor for the normalising standard deviation: a constant reference feature would
# otherwise divide by zero.
WASSERSTEIN_STD_FLOOR = 1e-3
# Up to this effective sample size the KS p-value is scipy's kstwo (what ks_2samp's asymptotic
# mode returns); beyond it kstwo.sf takes up to seconds, so the Kolmogorov limit is used instead
# (constant time, slightly conservative, within 1 % of kstwo there for p-values above 1e-8).
KS_FINITE_N_MAX = 10_000
# Noise guard: an effect size only counts when the chi-square p-value says the window can tell
# it from sampling noise (small windows have a large noise floor on PSI and JS). It is also the
# false-alarm rate of the "test" decision.
DEFAULT_ALPHA = 0.01
# The two-sample chi-square test groups adjacent bins until the smaller sample expects at least
# this many values in each group: with 5 (Cochran's rule) stationary windows of 100 values were
# flagged at up to 1.6 % for alpha = 1 %; with 10 they stay within the measured interval of 1 %.
CHI2_MIN_EXPECTED = 10.0
# How a feature is declared drifted (see is_drifted): "threshold" needs the method's effect size
# over its threshold and the test below alpha; "test" needs the test below alpha only.
DECISIONS = ("threshold", "test")

Method = Literal["psi", "js", "wasserstein"]


@dataclass(frozen=True)
class Score:
    """One effect size the exporter publishes: its ``statistic`` label on ``mlpulse_drift_score``
    and the ``FeatureDrift`` field holding it."""

    statistic: str
    attribute: str


# Every effect size, in the order the exporter publishes them.
SCORES: tuple[Score, ...] = (
    Score("psi", "psi"),
    Score("js_distance", "js"),
    Score("ks_statistic", "ks_stat"),
    Score("wasserstein_norm", "wasserstein_norm"),
    Score("linf", "linf"),
)
_SCORE = {s.attribute: s for s in SCORES}


@dataclass(frozen=True)
class DriftMethod:
    """A drift decision method (the exporter's ``--method``): which effect size decides, under which
    ``statistic`` label it is published, its default threshold (docs/drift-statistics.md says how it
    was chosen) and the feature kinds it applies to; other kinds are decided by ``fallback``."""

    name: str
    score: Score
    threshold: float
    kinds: tuple[str, ...] = ("numeric", "categorical")
    fallback: str | None = None

    @property
    def statistic(self) -> str:
        return self.score.statistic

    def for_kind(self, kind: str) -> DriftMethod:
        """The method that decides a feature of ``kind`` (this one, or its fallback)."""
        return self if kind in self.kinds else METHODS[self.fallback or "psi"]


# The one place a method's name, statistic label, default threshold and kinds are written: the
# exporter, its configuration, the dashboards and the alert rules' tests read them from here.
METHODS: Mapping[str, DriftMethod] = MappingProxyType({m.name: m for m in (
    DriftMethod("psi", _SCORE["psi"], 0.2),
    DriftMethod("js", _SCORE["js"], 0.1),
    # Wasserstein has no meaning on unordered categories: they fall back to JS, as Evidently does.
    DriftMethod("wasserstein", _SCORE["wasserstein_norm"], 0.1, kinds=("numeric",), fallback="js"),
)})


def _pair(ref: ArrayLike, cur: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated float copies of two count arrays; both must hold at least one value."""
    r = np.asarray(ref, dtype=float)
    c = np.asarray(cur, dtype=float)
    if r.ndim != 1 or r.shape != c.shape or r.size == 0:
        raise ValueError(f"count arrays must be 1-D, non-empty and of equal length, got {r.shape} and {c.shape}")
    if not (np.isfinite(r).all() and np.isfinite(c).all()) or (r < 0).any() or (c < 0).any():
        raise ValueError("counts must be finite and non-negative")
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("a distribution without any value has no drift statistic")
    return r, c


def _smooth(p: np.ndarray, eps: float) -> np.ndarray:
    # Additive smoothing that keeps a probability vector (sums to 1).
    return (p + eps) / (1.0 + p.size * eps)


def psi(ref: ArrayLike, cur: ArrayLike, eps: float = PSI_EPS) -> float:
    """Population Stability Index, natural log, on proportions smoothed by ``eps``.

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i), with p = (ref/n_ref + eps) / (1 + k*eps) and the same
    for q, so an empty bin on either side gives a finite contribution.
    """
    if not eps > 0:
        raise ValueError("eps must be positive")
    r, c = _pair(ref, cur)
    p = _smooth(r / r.sum(), eps)
    q = _smooth(c / c.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref: ArrayLike, cur: ArrayLike) -> float:
    """Jensen-Shannon distance, base 2, in [0, 1]; equals scipy's ``jensenshannon(p, q, base=2)``."""
    r, c = _pair(ref, cur)
    p = r / r.sum()
    q = c / c.sum()
    m = (p + q) / 2.0
    # rel_entr gives 0 for 0*log(0/m); m > 0 wherever p or q is.
    div = (special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()) / (2.0 * np.log(2.0))
    # Rounding can push the divergence a hair outside [0, 1]; sqrt of a negative would be nan.
    return float(np.sqrt(min(max(div, 0.0), 1.0)))


def chi2_groups(pooled: np.ndarray, smaller: float, total: float,
                min_expected: float = CHI2_MIN_EXPECTED) -> np.ndarray:
    """Group index of each bin: bins are taken in order and a group closes once the smaller sample
    expects ``min_expected`` values in it (``smaller * pooled / total``); a short last group joins
    the one before. Depends on the pooled counts only, which the null hypothesis leaves unchanged,
    so the grouping does not bias the test."""
    need = min_expected * total / smaller
    group = np.empty(pooled.size, dtype=np.int64)
    g, acc = 0, 0.0
    for i, t in enumerate(pooled.tolist()):
        group[i] = g
        acc += t
        if acc >= need:
            g, acc = g + 1, 0.0
    if g > 0 and acc < need:
        group[group == g] = g - 1
    return group


def chi2_pvalue(ref: ArrayLike, cur: ArrayLike, ordered: bool = True,
                min_expected: float = CHI2_MIN_EXPECTED) -> float:
    """Two-sample chi-square test (homogeneity of a 2 x k table): p-value that the reference and
    the live window are samples of one distribution.

    Both samples are finite: the expected counts come from the pooled proportions, so a window as
    large as the reference is not overstated (a goodness-of-fit test against the reference's
    proportions treats them as exact). Bins are grouped (``chi2_groups``) until the smaller sample
    expects ``min_expected`` values per group: adjacent bins for a numeric feature (``ordered``),
    for categories the largest first, the rare ones pooled together. A single live value beyond
    the training range joins its neighbour and cannot make the window significant; a material share
    there forms its own group that the reference does not have. Fewer than two groups: p = 1.
    """
    r, c = _pair(ref, cur)
    n, m = r.sum(), c.sum()
    if not ordered:
        order = np.argsort(-(r + c), kind="stable")
        r, c = r[order], c[order]
    group = chi2_groups(r + c, min(n, m), n + m, min_expected)
    k = int(group[-1]) + 1 if group.size else 0
    if k < 2:
        return 1.0
    rg = np.bincount(group, weights=r, minlength=k)
    cg = np.bincount(group, weights=c, minlength=k)
    share = (rg + cg) / (n + m)
    x2 = float(((rg - n * share) ** 2 / (n * share)).sum() + ((cg - m * share) ** 2 / (m * share)).sum())
    return float(np.clip(special.chdtrc(k - 1, x2), 0.0, 1.0))  # chi2.sf without its per-call overhead


def ks_binned(ref: ArrayLike, cur: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value on binned data.

    D = max over bin boundaries of |CDF_ref - CDF_cur|. The p-value is the two-sided one of
    ``ks_2samp(method="asymp")``: kstwo.sf(D, round(n*m/(n+m))), switching to the Kolmogorov limit
    kstwobign.sf(D*sqrt(en)) above ``KS_FINITE_N_MAX``. Binning can only lower D (D <= raw D), so
    this p-value is conservative against the raw-sample test.
    """
    r, c = _pair(ref, cur)
    n, m = r.sum(), c.sum()
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    d = min(max(d, 0.0), 1.0)
    en = n * m / (n + m)
    if en <= KS_FINITE_N_MAX:
        p = stats.kstwo.sf(d, max(1.0, float(np.round(en))))  # round() like ks_2samp; n=0 is undefined
    else:
        p = stats.kstwobign.sf(d * math.sqrt(en))
    return d, float(np.clip(p, 0.0, 1.0))


def wasserstein_binned(
    edges: Sequence[float],
    ref: ArrayLike,
    cur: ArrayLike,
    ref_std: float,
    *,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    """1-Wasserstein distance between two binned numeric distributions, divided by ``ref_std``.

    W = integral of |CDF_ref - CDF_cur| dx, with the mass of each inner bin spread uniformly over
    [e[i-1], e[i]) (the CDFs are linear between edges, the integral is exact for that model). The
    two open outer bins put their mass at the nearest edge, unless ``lo`` (below e[0]) or ``hi``
    (above e[-1]) is given, e.g. the window's min and max: then the outer bin is spread uniformly
    over [lo, e[0]) or [e[-1], hi]. ``ref_std`` (population std of the reference) is floored at
    ``WASSERSTEIN_STD_FLOOR``, like Evidently's normalisation.
    """
    e = np.asarray(edges, dtype=float)
    r, c = _pair(ref, cur)
    if e.ndim != 1 or e.size == 0 or r.size != e.size + 1:
        raise ValueError(f"{e.size} edges need {e.size + 1} bins, got {r.size}")
    if not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise ValueError("edges must be finite and strictly increasing")
    if not (math.isfinite(ref_std) and ref_std >= 0):
        raise ValueError("ref_std must be finite and non-negative")
    # Signed CDF difference at each edge: P(X < e[j]) = counts of bins 0..j.
    diff = (np.cumsum(r) / r.sum() - np.cumsum(c) / c.sum())[:-1]
    x, y = e, diff
    if lo is not None and lo < e[0]:
        x, y = np.r_[lo, x], np.r_[0.0, y]  # both CDFs are 0 at the window minimum
    if hi is not None and hi > e[-1]:
        x, y = np.r_[x, hi], np.r_[y, 0.0]  # and 1 at the window maximum
    w = np.diff(x)
    a, b = y[:-1], y[1:]
    absum = np.abs(a) + np.abs(b)
    # |linear| over a segment: a trapezoid when a and b share a sign, two triangles otherwise.
    crossing = a * b < 0
    area = np.where(crossing, (a * a + b * b) / np.where(crossing, absum, 1.0) / 2.0, absum / 2.0) * w
    return float(area.sum() / max(ref_std, WASSERSTEIN_STD_FLOOR))


def bin_points(entry: Mapping[str, Any], lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Where each bin's mass sits for ``wasserstein_points``: the mean of the reference values in
    the bin (``bin_means``), else the middle of the bin; the two open end bins sit at ``lo`` /
    ``hi`` when given (the window's extremes), else one neighbouring bin width beyond their edge."""
    e = np.asarray(entry["edges"], dtype=float)
    if e.size == 0:
        return np.zeros(1)
    means = entry.get("bin_means") or [None] * (e.size + 1)
    width = float(e[1] - e[0]) if e.size > 1 else 1.0
    top_width = float(e[-1] - e[-2]) if e.size > 1 else 1.0
    first = lo if lo is not None and lo < e[0] else e[0] - width
    last = hi if hi is not None and hi >= e[-1] else e[-1] + top_width
    fallback = np.r_[first, (e[:-1] + e[1:]) / 2.0, last]
    return np.array([fb if m is None else float(m) for m, fb in zip(means, fallback, strict=True)])


def wasserstein_points(points: ArrayLike, ref: ArrayLike, cur: ArrayLike, ref_std: float) -> float:
    """1-Wasserstein distance with each bin's mass at one point, divided by ``ref_std``.

    ``points`` (non-decreasing, one per bin, from ``bin_points``) carry both samples' mass: the CDFs
    are step functions and W = sum_j |CDF_ref - CDF_cur|(after bin j) * (x[j+1] - x[j]). With one bin
    per distinct value and the values as points this is the raw-sample distance exactly.
    """
    x = np.asarray(points, dtype=float)
    r, c = _pair(ref, cur)
    if x.shape != r.shape or not np.isfinite(x).all() or (np.diff(x) < 0).any():
        raise ValueError("points must be finite, non-decreasing and one per bin")
    if not (math.isfinite(ref_std) and ref_std >= 0):
        raise ValueError("ref_std must be finite and non-negative")
    diff = np.cumsum(r / r.sum() - c / c.sum())[:-1]
    return float(np.sum(np.abs(diff) * np.diff(x)) / max(ref_std, WASSERSTEIN_STD_FLOOR))


def linf(ref: ArrayLike, cur: ArrayLike) -> float:
    """L-infinity distance between the proportions: the largest change of one category's share."""
    r, c = _pair(ref, cur)
    return float(np.max(np.abs(r / r.sum() - c / c.sum())))


@dataclass(frozen=True)
class Moments:
    """Exact count, mean, sum of squared deviations, min and max of a set of values, mergeable.

    Merging (Chan et al.'s parallel update) the moments of time slices gives the moments of their
    union, so a window's mean and std come from per-slice summaries without keeping rows. The
    empty value ``Moments()`` is the identity of ``merge``: its mean, min (+inf) and max (-inf)
    are not statistics, and ``variance``/``std``/``summary`` give None for it.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def from_values(cls, values: ArrayLike) -> Moments:
        """Moments of the finite values (NaN and inf are skipped: the profile counts them as missing)."""
        x = np.asarray(values, dtype=float).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return cls()
        mean = float(x.mean())
        return cls(int(x.size), mean, float(np.sum((x - mean) ** 2)), float(x.min()), float(x.max()))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=n,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def __add__(self, other: Moments) -> Moments:
        return self.merge(other)

    @classmethod
    def merge_all(cls, parts: Iterable[Moments]) -> Moments:
        total = cls()
        for part in parts:
            total = total.merge(part)
        return total

    @property
    def variance(self) -> float | None:
        """Population variance (ddof=0), like the profile's std; None when empty."""
        return self.m2 / self.count if self.count else None

    @property
    def std(self) -> float | None:
        v = self.variance
        return math.sqrt(max(v, 0.0)) if v is not None else None

    def summary(self) -> dict[str, float | int | None]:
        """count, mean, std, min, max; every statistic None for an empty window (expose no series)."""
        if not self.count:
            return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
        return {"count": self.count, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max}


def adjust_pvalues(pvalues: Sequence[float | None], method: str = "bh") -> list[float | None]:
    """Correct p-values for testing many features at once; None entries stay None and do not count.

    ``"bh"``: Benjamini-Hochberg (as scipy.stats.false_discovery_control), ``"bonferroni"``:
    min(1, p*m), ``"none"``: unchanged. m is the number of non-None p-values.
    """
    if method not in ("none", "bonferroni", "bh"):
        raise ValueError(f"unknown method {method!r}, expected 'none', 'bonferroni' or 'bh'")
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    ps = np.array([pvalues[i] for i in idx], dtype=float)
    if ps.size and (np.isnan(ps).any() or (ps < 0).any() or (ps > 1).any()):
        raise ValueError("p-values must lie in [0, 1]")
    out: list[float | None] = [None] * len(pvalues)
    m = ps.size
    if method == "none" or m == 0:
        adjusted = ps
    elif method == "bonferroni":
        adjusted = np.minimum(1.0, ps * m)
    else:
        order = np.argsort(ps)
        scaled = ps[order] * m / np.arange(1, m + 1)
        # Step-up: each adjusted p is the smallest scaled p at its rank or above.
        monotone = np.minimum.accumulate(scaled[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(monotone, 1.0)
    for i, p in zip(idx, adjusted, strict=True):
        out[i] = float(p)
    return out


def drift_share(flags: Sequence[bool | None]) -> float | None:
    """Share of the evaluated features that drifted; None (not evaluated) is left out.

    None when no feature was evaluated: a share of nothing is no value, not 0.
    """
    evaluated = [bool(f) for f in flags if f is not None]
    return sum(evaluated) / len(evaluated) if evaluated else None


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature for one window.

    Scores that do not apply to the kind, or that the window cannot support (``reason`` says why),
    are None: the exporter exposes no series for them rather than a misleading 0.
    """

    kind: str
    count: int  # live values in bins (missing excluded)
    missing: int
    missing_ratio: float | None  # missing / (count + missing); None for an empty window
    reason: str | None = None  # why there are no scores: "below_min_count" or "empty_reference"
    psi: float | None = None
    js: float | None = None
    chi2_pvalue: float | None = None
    ks_stat: float | None = None  # numeric only
    ks_pvalue: float | None = None
    wasserstein_norm: float | None = None
    out_of_range_ratio: float | None = None  # share of live values below the training min or above the max
    linf: float | None = None  # categorical only
    unseen_ratio: float | None = None  # share of live values in the "unseen" bin

    @property
    def scored(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_feature(
    entry: Mapping[str, Any],
    counts: ArrayLike,
    missing: int = 0,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    live_min: float | None = None,
    live_max: float | None = None,
    eps: float = PSI_EPS,
) -> FeatureDrift:
    """Statistics of one feature's live window against its profile entry (``mlpulse.profile``).

    ``counts`` are the live counts over the entry's bins, ``missing`` the live missing values.
    ``live_min``/``live_max`` (optional, the window's extremes) place the outer bins' mass for the
    Wasserstein distance. Below ``min_count`` live values (and always for an empty window or an
    empty reference) no score is computed. Raises ValueError only for a contract violation: an
    unknown kind, counts that do not match the entry's bins, negative counts.
    """
    kind = entry["kind"]
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"unknown profile entry kind {kind!r}")
    ref = np.asarray(entry["bin_counts"], dtype=float)
    cur = np.asarray(counts, dtype=float).ravel()
    if not np.isfinite(cur).all() or (cur < 0).any():
        raise ValueError("live counts must be finite and non-negative")
    if missing < 0:
        raise ValueError("missing must be non-negative")
    if ref.size and cur.size != ref.size:
        raise ValueError(f"live counts have {cur.size} bins, the profile entry has {ref.size}")
    n = int(round(cur.sum()))
    total = n + int(missing)
    base = {
        "kind": kind,
        "count": n,
        "missing": int(missing),
        "missing_ratio": int(missing) / total if total else None,
    }
    if ref.size == 0 or ref.sum() <= 0:
        return FeatureDrift(**base, reason="empty_reference")
    if n < max(min_count, 1):  # an empty window has no distribution, whatever min_count says
        return FeatureDrift(**base, reason="below_min_count")
    common = {
        "psi": psi(ref, cur, eps),
        "js": js_distance(ref, cur),
        "chi2_pvalue": chi2_pvalue(ref, cur, ordered=kind == "numeric"),
    }
    if kind == "categorical":
        return FeatureDrift(**base, **common, linf=linf(ref, cur), unseen_ratio=float(cur[-1] / n))
    ks_stat, ks_p = ks_binned(ref, cur)
    std = float(entry.get("std", 0.0))
    if len(entry.get("bin_means") or ()) == ref.size:  # profile version 2: each bin's mass at its mean
        wass = wasserstein_points(bin_points(entry, live_min, live_max), ref, cur, std)
    else:  # version 1: mass spread evenly over each bin
        wass = wasserstein_binned(entry["edges"], ref, cur, std, lo=live_min, hi=live_max)
    first, last = training_range_bins(entry)
    return FeatureDrift(
        **base,
        **common,
        ks_stat=ks_stat,
        ks_pvalue=ks_p,
        wasserstein_norm=wass,
        out_of_range_ratio=float((cur[:first].sum() + cur[last + 1:].sum()) / n),
    )


def test_pvalue(chi2_p: float | None, ks_p: float | None = None) -> float | None:
    """The p-value of the drift test: the two-sample chi-square test, and for a numeric feature
    also the KS test, Bonferroni-combined: ``min(1, 2 * min(chi2_p, ks_p))``. The chi-square test
    sees any change of shape (spread, modes, mass outside the range, categories); KS is the more
    powerful one for a shift of location, such as +1 on a count. Stationary windows fall below
    alpha at a rate of at most alpha (docs/drift-statistics.md gives the measured rates)."""
    if chi2_p is None:
        return None
    if ks_p is None:
        return chi2_p
    return min(1.0, 2.0 * min(chi2_p, ks_p))


def is_drifted(
    result: FeatureDrift,
    method: Method = "psi",
    threshold: float | None = None,
    alpha: float | None = DEFAULT_ALPHA,
    pvalue: float | None = None,
    decision: str = "threshold",
    ks_pvalue: float | None = None,
) -> bool | None:
    """Whether a feature drifted. Returns None when the window has no scores (not evaluated).

    The test: ``test_pvalue`` of the chi-square p-value (``pvalue``, else the result's) and, for a
    numeric feature, the KS p-value (``ks_pvalue``, else the result's); pass p-values from
    ``adjust_pvalues`` (each test corrected across the features) to correct for many features.

    ``decision="threshold"`` (default): the effect size reaches ``threshold`` and the test is below
    ``alpha``. ``method`` names one of ``METHODS``: "psi" (default, both kinds), "js" (both kinds)
    or "wasserstein" (numeric; a categorical feature falls back to "js", as Evidently does).
    ``threshold`` defaults to the method's own. The test never flags drift by itself; it vetoes an
    effect size a window can show by chance, so a stationary window is flagged at a rate of at most
    ``alpha``. ``alpha=None`` leaves the effect size alone.

    ``decision="test"``: the test alone decides, below ``alpha``: stationary windows are flagged at
    a rate of at most ``alpha``, and any shift the window can resolve is flagged, however small.
    ``method`` and ``threshold`` play no part.
    """
    if not result.scored:
        return None
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}, expected one of {list(DECISIONS)}")
    chi2_p = result.chi2_pvalue if pvalue is None else pvalue
    ks_p = result.ks_pvalue if ks_pvalue is None else ks_pvalue
    p = test_pvalue(chi2_p, ks_p if result.kind == "numeric" else None)
    if decision == "test":
        if alpha is None:
            raise ValueError('decision "test" needs alpha')
        return p is not None and p < alpha
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}, expected one of {sorted(METHODS)}")
    chosen = METHODS[method].for_kind(result.kind)
    effect = getattr(result, chosen.score.attribute)
    limit = chosen.threshold if threshold is None else threshold
    if effect is None or effect < limit:
        return False
    if alpha is None:
        return True
    return p is not None and p < alpha
