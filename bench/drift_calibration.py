"""Do mlpulse's drift decisions hold on real data? False-alarm rate, power, agreement with raw tests.

    .venv/bin/python -m bench.drift_calibration [--quick] [--windows N] [--json FILE]
    .venv-bench/bin/python -m bench.drift_calibration     # adds Evidently's default column tests

Data (nothing downloaded): scikit-learn's bundled data sets (diabetes in its raw units, breast
cancer, wine, digits, iris), each a population of real rows with their real ties, skew and
outliers, plus synthetic columns of the kinds real data breaks binning on: heavy-tailed (Student
t with 2 df, log-normal, Pareto), discrete (Poisson, binomial, geometric counts), outlier-laden
(1 % or 0.2 % of values tens to a thousand sd away) and zero-inflated (a 40 % tie at 0). Every
feature is typed: ``discrete`` (at most ``profile.DISCRETE_MAX_VALUES`` distinct values),
``skewed`` (|skewness| > 1), ``continuous``, and for the synthetic ones ``heavy-tailed``,
``outliers`` or ``zero-inflated``.

Windows: the reference (``--reference`` rows, default 2000) and every window are drawn with
replacement from a data set's rows (whole rows, so features keep their correlation): both are
samples of one distribution, the null hypothesis "same distribution as the reference". A new
reference (and profile) is drawn for every ``WINDOWS_PER_REFERENCE`` windows, so the rates
include the reference's own sampling noise, which a two-sample test has to account for. Shifted
windows add ``d`` population sd to every feature; for a discrete feature the shift is rounded to
whole units (the most common gap between distinct values), at least one.

Per window and feature: mlpulse's profile (``profile.profile_column``), the live counts over its
bins, ``drift.evaluate_feature``, and the decisions ``threshold`` (PSI >= 0.2 and the drift test
below alpha, the exporter's default), ``test`` (the drift test alone: two-sample chi-square and
binned KS, Bonferroni-combined, ``drift.test_pvalue``) and ``wasserstein`` (Wasserstein >= 0.1
and the test below alpha); against them on the raw samples: scipy's
two-sample KS test (``ks_2samp``, asymptotic), a raw chi-square test over the distinct values
(discrete features only), and, in ``.venv-bench``, Evidently's default column test (the one its
``DataDriftPreset`` picks: KS p < 0.05 up to 1000 reference rows, normed Wasserstein >= 0.1 above
for more than 5 values, chi-square / Jensen-Shannon below).

Reported:
1. False-alarm rate on stationary windows, per data set and window size, per feature and per model
   (any feature flagged after Benjamini-Hochberg across the data set's features, as the exporter
   does), with its Wilson 95 % interval, against the stated rate ``alpha``.
2. Power against shift size and window size, per feature type, side by side with the raw tests
   and Evidently.
3. Agreement of the ``test`` decision with the raw KS verdict, per feature type.
4. Agreement of the binned statistics with their raw definitions per feature type: KS D (raw D
   minus binned D) and normalised Wasserstein (binned minus raw), on stationary and shifted windows.
5. Evaluation cost per window against the number of rows it holds.

A measurement: it prints what it found and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from bench.machine import machine
from mlpulse import drift
from mlpulse.profile import DISCRETE_MAX_VALUES, numeric_bin_index, profile_column
from mlpulse.prometheus.drift_rules import VALUES_PER_BIN
from mlpulse.schema import FeatureSpec

ALPHA = drift.DEFAULT_ALPHA
WINDOWS_PER_REFERENCE = 20
SIZES = (100, 300, 1000, 3000)
SHIFTS = (0.1, 0.2, 0.3, 0.5, 1.0)  # sd for continuous features, units for discrete ones
# psi_only: PSI >= 0.2 with no drift test; prometheus: the same with at least VALUES_PER_BIN values per
# bin, the decision Prometheus' own rules record (docs/prometheus-drift.md).
DECISIONS = ("threshold", "test", "wasserstein", "psi_only", "prometheus")
RAW = ("raw_ks", "raw_chi2", "evidently")


# -- data -------------------------------------------------------------------------------------------


@dataclass
class DataSet:
    name: str
    rows: np.ndarray  # population: rows x features
    features: list[str]
    types: list[str]


def _type_of(x: np.ndarray) -> str:
    if np.unique(x).size <= DISCRETE_MAX_VALUES:
        return "discrete"
    return "skewed" if abs(float(stats.skew(x))) > 1 else "continuous"


def real_data_sets() -> list[DataSet]:
    from sklearn import datasets as sk

    out = []
    diabetes = sk.load_diabetes(scaled=False)
    cancer = sk.load_breast_cancer()
    wine = sk.load_wine()
    digits = sk.load_digits()
    iris = sk.load_iris()
    top_pixels = np.argsort(-digits.data.std(axis=0), kind="stable")[:10]
    for name, x, cols in (
        ("diabetes", diabetes.data, list(diabetes.feature_names)),
        ("breast_cancer", cancer.data[:, :10], list(cancer.feature_names[:10])),  # the "mean" block
        ("wine", wine.data, list(wine.feature_names)),
        ("digits", digits.data[:, top_pixels], [f"pixel_{i}" for i in top_pixels]),
        ("iris", iris.data, list(iris.feature_names)),
    ):
        x = np.asarray(x, dtype=float)
        out.append(DataSet(name, x, cols, [_type_of(x[:, j]) for j in range(x.shape[1])]))
    return out


def synthetic_data_set(rng: np.random.Generator, n: int = 50_000) -> DataSet:
    normal = rng.normal(0.0, 1.0, n)
    cols = {
        "student_t2": ("heavy-tailed", rng.standard_t(2, n)),
        "lognormal_1_5": ("heavy-tailed", rng.lognormal(0.0, 1.5, n)),
        "pareto_1_2": ("heavy-tailed", rng.pareto(1.2, n)),
        "poisson_3": ("discrete", rng.poisson(3.0, n).astype(float)),
        "binomial_80": ("discrete", rng.binomial(80, 0.5, n).astype(float)),
        "geometric_0_2": ("discrete", rng.geometric(0.2, n).astype(float)),
        "outliers_1pct_50sd": ("outliers", np.where(rng.random(n) < 0.01, rng.normal(0.0, 50.0, n), normal)),
        "outliers_0_2pct_1000": ("outliers", np.where(rng.random(n) < 0.002, 1000.0 + rng.random(n), rng.normal(0, 1, n))),
        "zero_inflated": ("zero-inflated", np.where(rng.random(n) < 0.4, 0.0, rng.gamma(2.0, 1.0, n))),
    }
    x = np.column_stack([v for _, v in cols.values()])
    return DataSet("synthetic", x, list(cols), [t for t, _ in cols.values()])


def unit(x: np.ndarray) -> float:
    """The most common gap between consecutive distinct values (1 for counts)."""
    gaps = np.round(np.diff(np.unique(x)), 9)
    values, counts = np.unique(gaps, return_counts=True)
    return float(values[np.argmax(counts)])


def shift_vector(ds: DataSet, d: float) -> np.ndarray:
    """d population sd per feature; for a discrete feature rounded to whole units, at least one."""
    out = []
    for j, t in enumerate(ds.types):
        sd = float(ds.rows[:, j].std())
        if t == "discrete":
            u = unit(ds.rows[:, j])
            out.append(max(1, round(d * sd / u)) * u)
        else:
            out.append(d * sd)
    return np.array(out)


# -- one window --------------------------------------------------------------------------------------


class Evidently:
    """Evidently's default drift test per column, as its DataDriftPreset chooses it."""

    def __init__(self) -> None:
        import evidently
        import pandas as pd
        from evidently.legacy.calculations.stattests import registry
        from evidently.legacy.core import ColumnType

        self.pd, self.registry, self.numerical = pd, registry, ColumnType.Numerical
        self.version = getattr(evidently, "__version__", "?")

    def drifted(self, ref: np.ndarray, cur: np.ndarray) -> bool:
        r, c = self.pd.Series(ref), self.pd.Series(cur)
        test = self.registry.get_stattest(r, c, self.numerical, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(test(r, c, self.numerical, None).drifted)


def load_evidently() -> tuple[Evidently | None, str | None]:
    try:
        return Evidently(), None
    except Exception as e:  # ImportError, or an install that does not work
        return None, f"{type(e).__name__}: {e}"


def raw_chi2_pvalue(ref: np.ndarray, cur: np.ndarray) -> float:
    values, inverse = np.unique(np.r_[ref, cur], return_inverse=True)
    table = np.vstack([np.bincount(inverse[:ref.size], minlength=values.size),
                       np.bincount(inverse[ref.size:], minlength=values.size)])
    if values.size < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def profile_entries(ref_rows: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    return [profile_column(FeatureSpec(n, "numeric", "float"), ref_rows[:, j].tolist()) for j, n in enumerate(names)]


def window_verdicts(entries, ref_rows, cur_rows, types, evidently: Evidently | None,
                    want_stats: bool) -> dict[str, Any]:
    """Per feature: the decisions, the raw verdicts, and (want_stats) binned vs raw KS D and W."""
    nf = len(entries)
    out: dict[str, Any] = {k: np.zeros(nf, dtype=bool) for k in DECISIONS + RAW}
    out["pvalue"] = np.ones(nf)
    out["ks_pvalue"] = np.ones(nf)
    results = []
    for j, entry in enumerate(entries):
        ref, cur = ref_rows[:, j], cur_rows[:, j]
        counts = np.bincount(numeric_bin_index(entry["edges"], cur), minlength=len(entry["edges"]) + 1)
        r = drift.evaluate_feature(entry, counts, min_count=1)
        results.append(r)
        out["pvalue"][j] = r.chi2_pvalue
        out["ks_pvalue"][j] = r.ks_pvalue
        out["threshold"][j] = drift.is_drifted(r)
        out["test"][j] = drift.is_drifted(r, decision="test")
        out["wasserstein"][j] = drift.is_drifted(r, "wasserstein")
        out["psi_only"][j] = drift.is_drifted(r, alpha=None)
        out["prometheus"][j] = out["psi_only"][j] and r.count >= VALUES_PER_BIN * len(entry["bin_counts"])
        ks = stats.ks_2samp(ref, cur, method="asymp")
        out["raw_ks"][j] = ks.pvalue < ALPHA
        out["raw_chi2"][j] = types[j] == "discrete" and raw_chi2_pvalue(ref, cur) < ALPHA
        if evidently is not None:
            out["evidently"][j] = evidently.drifted(ref, cur)
        if want_stats:
            w_raw = stats.wasserstein_distance(ref, cur) / max(float(ref.std()), drift.WASSERSTEIN_STD_FLOOR)
            out.setdefault("ks_gap", np.zeros(nf))[j] = ks.statistic - r.ks_stat
            out.setdefault("w_gap", np.zeros(nf))[j] = r.wasserstein_norm - w_raw
            out.setdefault("w_raw", np.zeros(nf))[j] = w_raw
    adj = list(zip(drift.adjust_pvalues(list(out["pvalue"]), "bh"), drift.adjust_pvalues(list(out["ks_pvalue"]), "bh")))
    out["model_threshold"] = any(drift.is_drifted(r, pvalue=p, ks_pvalue=k) for r, (p, k) in zip(results, adj))
    out["model_test"] = any(drift.is_drifted(r, decision="test", pvalue=p, ks_pvalue=k)
                            for r, (p, k) in zip(results, adj))
    return out


def draw(rng, ds: DataSet, n: int) -> np.ndarray:
    return ds.rows[rng.integers(0, ds.rows.shape[0], n)]


# -- the measurements -----------------------------------------------------------------------------------


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def false_alarms(rng, ds: DataSet, n_ref: int, sizes, n_windows: int, evidently, ev_windows: int) -> list[dict]:
    rows = []
    for n in sizes:
        tally: dict[str, np.ndarray] = {}
        model = {"model_threshold": 0, "model_test": 0}
        ev_count = 0
        gaps: dict[str, list[np.ndarray]] = {"ks_gap": [], "w_gap": [], "w_raw": []}
        entries = ref_rows = None
        for w in range(n_windows):
            if w % WINDOWS_PER_REFERENCE == 0:
                ref_rows = draw(rng, ds, n_ref)
                entries = profile_entries(ref_rows, ds.features)
            use_ev = evidently if w < ev_windows else None
            v = window_verdicts(entries, ref_rows, draw(rng, ds, n), ds.types, use_ev, want_stats=w < 200)
            for k in DECISIONS + RAW:
                if k == "evidently" and use_ev is None:
                    continue
                tally[k] = tally.get(k, 0) + v[k]
            ev_count += use_ev is not None
            for k in model:
                model[k] += v[k]
            for k in gaps:
                if k in v:
                    gaps[k].append(v[k])
        for j, (f, t) in enumerate(zip(ds.features, ds.types, strict=True)):
            row = {"data": ds.name, "feature": f, "type": t, "n": n, "windows": n_windows}
            for k in DECISIONS + RAW:
                if k in tally:
                    denom = ev_count if k == "evidently" else n_windows
                    row[k] = float(tally[k][j]) / denom
            row["evidently_windows"] = ev_count
            g = {k: np.array(v)[:, j] for k, v in gaps.items() if v}
            row["ks_gap_max"] = float(g["ks_gap"].max())
            row["ks_gap_min"] = float(g["ks_gap"].min())
            row["w_gap_median"] = float(np.median(g["w_gap"]))
            row["w_gap_absmax"] = float(np.abs(g["w_gap"]).max())
            row["w_raw_median"] = float(np.median(g["w_raw"]))
            row["w_binned_max"] = float((g["w_gap"] + g["w_raw"]).max())
            rows.append(row)
        rows.append({"data": ds.name, "feature": "_model", "type": "model", "n": n, "windows": n_windows,
                     **{k: v / n_windows for k, v in model.items()}})
    return rows


def power(rng, ds: DataSet, n_ref: int, sizes, shifts, n_windows: int, evidently, ev_windows: int) -> list[dict]:
    rows = []
    for d in shifts:
        delta = shift_vector(ds, d)
        for n in sizes:
            tally: dict[str, np.ndarray] = {}
            ev_count = 0
            gaps: dict[str, list[np.ndarray]] = {"w_gap": [], "w_raw": []}
            entries = ref_rows = None
            for w in range(n_windows):
                if w % WINDOWS_PER_REFERENCE == 0:
                    ref_rows = draw(rng, ds, n_ref)
                    entries = profile_entries(ref_rows, ds.features)
                use_ev = evidently if w < ev_windows else None
                v = window_verdicts(entries, ref_rows, draw(rng, ds, n) + delta, ds.types, use_ev, want_stats=w < 50)
                for k in DECISIONS + RAW:
                    if k == "evidently" and use_ev is None:
                        continue
                    tally[k] = tally.get(k, 0) + v[k]
                tally["agree_test_ks"] = tally.get("agree_test_ks", 0) + (v["test"] == v["raw_ks"])
                ev_count += use_ev is not None
                for k in gaps:
                    if k in v:
                        gaps[k].append(v[k])
            for j, (f, t) in enumerate(zip(ds.features, ds.types, strict=True)):
                row = {"data": ds.name, "feature": f, "type": t, "n": n, "shift": d, "windows": n_windows}
                for k, arr in tally.items():
                    row[k] = float(arr[j]) / (ev_count if k == "evidently" else n_windows)
                g = {k: np.array(v)[:, j] for k, v in gaps.items() if v}
                row["w_gap_median"] = float(np.median(g["w_gap"]))
                row["w_gap_absmax"] = float(np.abs(g["w_gap"]).max())
                row["w_raw_median"] = float(np.median(g["w_raw"]))
                rows.append(row)
    return rows


def eval_cost(rng) -> dict[str, float]:
    """Seconds per evaluate_feature call for windows of 1e2 .. 1e7 rows (counts only)."""
    x = rng.normal(size=5000)
    entry = profile_column(FeatureSpec("x", "numeric", "float"), x.tolist())
    p = np.asarray(entry["bin_counts"], dtype=float)
    p /= p.sum()
    out = {}
    for n in (100, 10_000, 1_000_000, 10_000_000):
        counts = rng.multinomial(n, p)
        t0 = time.perf_counter()
        reps = 300
        for _ in range(reps):
            drift.evaluate_feature(entry, counts)
        out[str(n)] = (time.perf_counter() - t0) / reps
    return out


# -- report ----------------------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


def summarise_far(rows: list[dict], evidently_on: bool) -> list[dict]:
    out = []
    print(f"\n1. False-alarm rate on stationary windows (stated: alpha = {ALPHA:.0%} per feature and window for "
          "`test`, at most alpha for `threshold`; per model: any feature after BH)")
    print(f"   {'data':<14}{'n':>6} {'windows':>8} | {'test':>7} {'95% CI':>15} {'thresh':>7} {'wass':>7} | "
          f"{'raw KS':>7} {'raw chi2':>8} {'Evidently':>9} | {'model test':>10} {'model thr':>9} | {'PSI only':>8} {'Prometheus':>10}")
    print("   PSI only: PSI >= 0.2 without the drift test; Prometheus: the same with at least "
          f"{VALUES_PER_BIN} values per bin, what Prometheus' own rules decide (no alpha bound)")
    keys = sorted({(r["data"], r["n"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for data, n in keys:
        feats = [r for r in rows if r["data"] == data and r["n"] == n and r["type"] != "model"]
        model = next(r for r in rows if r["data"] == data and r["n"] == n and r["type"] == "model")
        windows = feats[0]["windows"]
        total = windows * len(feats)
        k_test = sum(r["test"] for r in feats) * windows
        lo, hi = wilson(k_test, total)
        disc = [r for r in feats if r["type"] == "discrete"]
        agg = {k: float(np.mean([r[k] for r in feats])) for k in ("test", "threshold", "wasserstein", "raw_ks",
                                                                    "psi_only", "prometheus")}
        agg["raw_chi2"] = float(np.mean([r["raw_chi2"] for r in disc])) if disc else None
        agg["evidently"] = float(np.mean([r["evidently"] for r in feats])) if evidently_on else None
        ok = lo <= ALPHA <= hi or hi < ALPHA
        print(f"   {data:<14}{n:>6} {total:>8} | {pct(agg['test'])} [{pct(lo)},{pct(hi)}] {pct(agg['threshold'])} "
              f"{pct(agg['wasserstein'])} | {pct(agg['raw_ks'])} {pct(agg['raw_chi2']):>8} {pct(agg['evidently']):>9} | "
              f"{pct(model['model_test']):>10} {pct(model['model_threshold']):>9} | {pct(agg['psi_only']):>8} {pct(agg['prometheus']):>10}  "
              f"{'ok' if ok else 'ABOVE'}")
        out.append({"data": data, "n": n, "feature_windows": total, "test_ci": [lo, hi], "within": ok,
                    **agg, "model_test": model["model_test"], "model_threshold": model["model_threshold"]})
    worst = max((r for r in rows if r["type"] != "model"), key=lambda r: r["test"])
    print(f"   worst single feature (test): {worst['data']}/{worst['feature']} n={worst['n']}: {pct(worst['test'])} "
          f"of {worst['windows']} windows")
    return out


def summarise_power(rows: list[dict], evidently_on: bool) -> list[dict]:
    print("\n2. Power: share of shifted windows flagged, mean over the features of a type "
          "(shift in sd; discrete: rounded to whole units, at least 1)")
    print(f"   {'type':<14}{'shift':>6}{'n':>6} | {'test':>6} {'thresh':>6} {'wass':>6} | {'raw KS':>6} "
          f"{'chi2raw':>7} {'Evid.':>6} | agree(test,KS)")
    out = []
    types = sorted({r["type"] for r in rows})
    for t in types:
        for d in sorted({r["shift"] for r in rows}):
            for n in sorted({r["n"] for r in rows}):
                sel = [r for r in rows if r["type"] == t and r["shift"] == d and r["n"] == n]
                if not sel:
                    continue
                agg = {k: float(np.mean([r[k] for r in sel])) for k in
                       ("test", "threshold", "wasserstein", "raw_ks", "agree_test_ks")}
                agg["raw_chi2"] = float(np.mean([r["raw_chi2"] for r in sel])) if t == "discrete" else None
                agg["evidently"] = float(np.mean([r["evidently"] for r in sel])) if evidently_on else None
                print(f"   {t:<14}{d:>6}{n:>6} | {pct(agg['test'])} {pct(agg['threshold'])} {pct(agg['wasserstein'])} | "
                      f"{pct(agg['raw_ks'])} {pct(agg['raw_chi2']):>7} {pct(agg['evidently'])} | {pct(agg['agree_test_ks'])}")
                out.append({"type": t, "shift": d, "n": n, "features": len(sel), **agg})
    return out


def summarise_sensitivity(power_rows: list[dict], evidently_on: bool, target: float = 0.8) -> list[dict]:
    """Smallest measured shift flagged in at least ``target`` of the windows, per type and size."""
    print(f"\n2b. Sensitivity: smallest shift (sd; discrete: rounded to units) flagged in >= {target:.0%} of windows")
    cols = ["test", "threshold", "wasserstein", "raw_ks"] + (["evidently"] if evidently_on else [])
    print(f"   {'type':<14}{'n':>6} | " + " ".join(f"{c:>11}" for c in cols))
    out = []
    for t in sorted({r["type"] for r in power_rows}):
        for n in sorted({r["n"] for r in power_rows}):
            sel = sorted((r for r in power_rows if r["type"] == t and r["n"] == n), key=lambda r: r["shift"])
            if not sel:
                continue
            row = {"type": t, "n": n}
            for c in cols:
                hit = [r["shift"] for r in sel if r.get(c) is not None and r[c] >= target]
                row[c] = hit[0] if hit else None
            print(f"   {t:<14}{n:>6} | " + " ".join(f"{'> ' + str(sel[-1]['shift']) if row[c] is None else row[c]:>11}"
                                                   for c in cols))
            out.append(row)
    return out


def fmt(x: float | None) -> str:
    return "     -" if x is None else f"{x:8.4f}"


def summarise_stats(far_rows: list[dict], pow_rows: list[dict]) -> list[dict]:
    print("\n4. Binned statistics against their raw-sample definitions, per feature type")
    print("   KS: raw D - binned D (binning can only lower D; 0 when every value has its own bin)")
    print("   Wasserstein (normalised): binned - raw; stationary windows, then shifted by 0.5 (sd or units)")
    print(f"   {'type':<14}{'KS gap max':>11} | {'W stat: med raw':>15} {'med gap':>8} {'max |gap|':>9} | "
          f"{'W 0.5: med raw':>14} {'med gap':>8} {'max |gap|':>9}")
    out = []
    for t in sorted({r["type"] for r in far_rows if r["type"] != "model"}):
        f = [r for r in far_rows if r["type"] == t]
        p = [r for r in pow_rows if r["type"] == t and r["shift"] == 0.5]
        row = {"type": t, "ks_gap_max": max(r["ks_gap_max"] for r in f), "ks_gap_min": min(r["ks_gap_min"] for r in f),
               "w_null_raw_median": float(np.median([r["w_raw_median"] for r in f])),
               "w_null_gap_median": float(np.median([r["w_gap_median"] for r in f])),
               "w_null_gap_absmax": max(r["w_gap_absmax"] for r in f),
               "w_shift_raw_median": float(np.median([r["w_raw_median"] for r in p])) if p else None,
               "w_shift_gap_median": float(np.median([r["w_gap_median"] for r in p])) if p else None,
               "w_shift_gap_absmax": max(r["w_gap_absmax"] for r in p) if p else None}
        print(f"   {t:<14}{row['ks_gap_max']:>11.4f} | {row['w_null_raw_median']:>15.4f} {fmt(row['w_null_gap_median'])} "
              f"{fmt(row['w_null_gap_absmax']):>9} | {fmt(row['w_shift_raw_median']):>14} "
              f"{fmt(row['w_shift_gap_median'])} {fmt(row['w_shift_gap_absmax']):>9}")
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer windows and sizes (about a minute)")
    ap.add_argument("--windows", type=int, default=1000, help="stationary windows per data set and size")
    ap.add_argument("--power-windows", type=int, default=100, help="shifted windows per data set, shift and size")
    ap.add_argument("--evidently-windows", type=int, default=200,
                    help="of these, how many also run Evidently's test (it costs ~1 ms per column)")
    ap.add_argument("--reference", type=int, default=2000, help="reference rows")
    ap.add_argument("--data", default="", help="comma-separated data set names (default: all)")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--from-json", help="print the summaries of an earlier --json run instead of measuring")
    args = ap.parse_args(argv)
    if args.quick:
        args.windows, args.power_windows, args.evidently_windows = 200, 40, 40
    sizes = (100, 1000) if args.quick else SIZES
    shifts = (0.2, 0.5) if args.quick else SHIFTS
    if args.from_json:
        with open(args.from_json) as fh:
            old = json.load(fh)
        on = old["evidently"] is not None
        summarise_far(old["features"]["false_alarms"], on)
        summarise_sensitivity(summarise_power(old["features"]["power"], on), on)
        summarise_stats(old["features"]["false_alarms"], old["features"]["power"])
        return 0
    rng = np.random.default_rng(args.seed)
    evidently, skipped = load_evidently()
    info = machine(("numpy", "scipy", "scikit-learn", "pandas", "evidently"))
    print(f"mlpulse drift calibration bench: {info['date']}, python {info['python']}, {info['cpus']} CPUs, "
          + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(f"reference {args.reference} rows, alpha {ALPHA}, {args.windows} stationary windows per data set and size, "
          f"{args.power_windows} shifted windows per cell; Evidently: "
          + (f"{evidently.version}, first {args.evidently_windows} windows of each cell" if evidently else f"skipped ({skipped})"))
    sets = real_data_sets() + [synthetic_data_set(np.random.default_rng(args.seed + 1))]
    if args.data:
        wanted = set(args.data.split(","))
        sets = [s for s in sets if s.name in wanted]
    far_rows, pow_rows = [], []
    t0 = time.perf_counter()
    for ds in sets:
        counts = {t: ds.types.count(t) for t in sorted(set(ds.types))}
        print(f"   {ds.name}: {ds.rows.shape[0]} rows, {len(ds.features)} features {counts}", file=sys.stderr, flush=True)
        far_rows += false_alarms(rng, ds, args.reference, sizes, args.windows, evidently, args.evidently_windows)
        pow_rows += power(rng, ds, args.reference, sizes, shifts, args.power_windows, evidently, args.evidently_windows)
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {"machine": info, "args": vars(args), "alpha": ALPHA,
                              "evidently": evidently.version if evidently else None, "evidently_skipped": skipped}
    result["false_alarms"] = summarise_far(far_rows, evidently is not None)
    result["power"] = summarise_power(pow_rows, evidently is not None)
    result["sensitivity"] = summarise_sensitivity(result["power"], evidently is not None)
    print("\n3. Agreement of the `test` decision with the raw KS verdict on shifted windows: last column of 2.")
    result["statistics"] = summarise_stats(far_rows, pow_rows)
    cost = eval_cost(rng)
    print("\n5. evaluate_feature per window: " + ", ".join(f"{int(k):,} rows {v * 1e6:.0f} us" for k, v in cost.items()))
    result["eval_seconds"] = cost
    result["features"] = {"false_alarms": far_rows, "power": pow_rows}
    print(f"\n(measured in {elapsed:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
