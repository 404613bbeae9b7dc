"""Recording rules that compute drift in Prometheus itself, from the service's bin counters.

With ``MLPULSE_BIN_METRICS=1`` every replica of the service counts its scored records in the
reference profile's bins (``mlpulse_feature_bin_total``, ``mlpulse.metrics.bins``) and publishes the
reference's proportions (``mlpulse_reference_bin_ratio``). The rules written here sum the counts of
every replica over each window and compute what the exporter computes from the same bins, with
the exporter's conventions (``mlpulse.drift``): PSI on proportions smoothed by ``PSI_EPS``,
Jensen-Shannon distance base 2 on raw proportions, the missing, out-of-range and unseen shares, the
window's values, no score below ``min_count``. They are recorded under the exporter's metric names
and labels plus ``source="prometheus"``, so the alerts of ``prometheus/rules/alerts.yml`` read either
source. docs/prometheus-drift.md gives the decisions; ``mlpulse generate`` writes the rule file and
its promtool tests (``RULES_FILE``, ``TESTS_FILE``) and ``--check`` fails while they are stale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlpulse import drift, yamlfiles
from mlpulse.durations import format_duration, parse_duration
from mlpulse.exporter.config import ExporterConfig
from mlpulse.metrics.bins import MISSING_BIN, REGION_INSIDE, REGION_OUTSIDE, REGION_UNSEEN

RULES_FILE = Path("prometheus") / "rules" / "drift_prometheus.yml"
TESTS_FILE = Path("prometheus") / "tests" / "drift_prometheus_test.yml"
GROUP = "mlpulse-drift-prometheus"
SOURCE = "prometheus"  # the `source` label of every drift series these rules record
OUTPUTS = ("_prediction", "_predicted_class")
# The threshold decision needs this many values per bin of the feature (and min_count): PSI's
# noise floor on a stationary window is about (bins - 1) / values, so 100 values over 90 bins
# flag most stationary windows (docs/prometheus-drift.md has the measured rates).
VALUES_PER_BIN = 10  # not input features: left out of the drift share

COUNTER = "mlpulse_feature_bin_total"
REFERENCE = "mlpulse_reference_bin_ratio"
REF = "model_version_feature_bin:mlpulse_reference_bin_ratio:max"
REF_SMOOTHED = "model_version_feature_bin:mlpulse_reference_bin_ratio:smoothed"
BINS = "model_version_feature:mlpulse_reference_bins:count"
# The two effect sizes these rules compute, under the exporter's statistic labels.
PSI = drift.METHODS["psi"].statistic
JS = drift.METHODS["js"].statistic
MVF = "model, version, feature"
MVFB = "model, version, feature, bin"


def default_windows() -> list[str]:
    """The exporter's default windows (5m, 1h, 24h): the alerts read the 1h one."""
    return [format_duration(w) for w in ExporterConfig().window_seconds()]


def _names(w: str) -> dict[str, str]:
    return {
        "count": f"model_version_feature_bin:mlpulse_feature_bin:increase{w}",
        "ratio": f"model_version_feature_bin:mlpulse_feature_bin:ratio_increase{w}",
        "smoothed": f"model_version_feature_bin:mlpulse_feature_bin:smoothed_ratio_increase{w}",
        "mixture": f"model_version_feature_bin:mlpulse_feature_bin:js_mixture{w}",
    }


def _rule(record: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": record, "expr": expr.strip() + "\n"}
    if labels:
        rule["labels"] = labels
    return rule


def rules(windows: Sequence[str] | None = None, *, min_count: int = drift.DEFAULT_MIN_COUNT,
          method: str = "psi", threshold: float | None = None, eps: float = drift.PSI_EPS) -> dict[str, Any]:
    """The rule file as a dict: one group, the reference first, then each window in turn (rules of a
    group run in order, so each reads what the ones before it recorded at the same instant)."""
    windows = list(windows or default_windows())
    chosen = drift.METHODS[method]
    if chosen.statistic not in (PSI, JS):
        raise ValueError(f"method {method!r}: only psi and js are computed by the Prometheus rules")
    limit = chosen.threshold if threshold is None else threshold
    inv_ln2 = repr(2.0 * math.log(2.0))
    out = [
        # Every replica publishes the same proportions: one series per bin.
        _rule(REF, f"max by ({MVFB}) ({REFERENCE})"),
        _rule(BINS, f"count by ({MVF}) ({REF})"),
        # drift.psi's smoothing: (p + eps) / (1 + k * eps), k the entry's number of bins.
        _rule(REF_SMOOTHED, f"({REF} + {eps!r}) / on ({MVF}) group_left () ({BINS} * {eps!r} + 1)"),
    ]
    for w in windows:
        parse_duration(w, prometheus=True)
        n = _names(w)
        lab = {"window": w, "source": SOURCE}
        values = f'mlpulse_drift_window_values{{window="{w}", source="{SOURCE}"}}'
        scored = f"({values} >= {min_count})"
        out += [
            # Exact counts: the difference of the two samples w apart (no extrapolation, whole
            # numbers); where the counter restarted in the window, or did not exist w ago,
            # increase() (reset-aware, extrapolated) instead.
            _rule(n["count"], f"""
sum by ({MVFB}) (
    (
        ({COUNTER} - {COUNTER} offset {w})
      unless
        (resets({COUNTER}[{w}]) > 0)
    )
  or
    increase({COUNTER}[{w}])
)"""),
            _rule("mlpulse_drift_window_values", f'sum by ({MVF}) ({n["count"]}{{bin!="{MISSING_BIN}"}})', lab),
            _rule("mlpulse_drift_missing_ratio", f"""
  sum by ({MVF}) ({n["count"]}{{bin="{MISSING_BIN}"}})
/
  (sum by ({MVF}) ({n["count"]}) > 0)""", lab),
            # Live proportions, only where the window has min_count values (the exporter's rule).
            _rule(n["ratio"], f'{n["count"]}{{bin!="{MISSING_BIN}"}} / on ({MVF}) group_left () {scored}'),
            _rule(n["smoothed"], f'({n["ratio"]} + {eps!r}) / on ({MVF}) group_left () ({BINS} * {eps!r} + 1)'),
            _rule("mlpulse_drift_score", f'sum by ({MVF}) (({n["smoothed"]} - {REF_SMOOTHED}) '
                  f'* ln({n["smoothed"]} / {REF_SMOOTHED}))', {**lab, "statistic": PSI}),
            _rule(n["mixture"], f'({REF} + {n["ratio"]}) / 2'),
            # rel_entr: x ln(x / m), 0 where x = 0 (those bins are left out of the sum).
            _rule("mlpulse_drift_score", f"""
sqrt(
  clamp(
      (
          sum by ({MVF}) (({REF} > 0) * ln(({REF} > 0) / {n["mixture"]}))
        +
          sum by ({MVF}) (({n["ratio"]} > 0) * ln(({n["ratio"]} > 0) / {n["mixture"]}))
      )
    /
      {inv_ln2},
    0, 1
  )
)""", {**lab, "statistic": JS}),
            _rule("mlpulse_drift_out_of_range_ratio", f"""
sum by ({MVF}) ({n["ratio"]} and on ({MVFB}) {REFERENCE}{{region="{REGION_OUTSIDE}"}})""", lab),
            _rule("mlpulse_drift_unseen_ratio", f"""
sum by ({MVF}) ({n["ratio"]} and on ({MVFB}) {REFERENCE}{{region="{REGION_UNSEEN}"}})""", lab),
            # A threshold decision, not the exporter's: no p-value guard (docs/prometheus-drift.md).
            _rule("mlpulse_drift_detected", f"""
  max by ({MVF}) (mlpulse_drift_score{{window="{w}", source="{SOURCE}", statistic="{chosen.statistic}"}} >= bool {limit!r})
and on ({MVF})
  ({values} >= on ({MVF}) ({BINS} * {VALUES_PER_BIN}))""", lab),
            _rule("mlpulse_drift_share", f'avg by (model, version) (mlpulse_drift_detected{{window="{w}", '
                  f'source="{SOURCE}", feature!~"{"|".join(OUTPUTS)}"}})', lab),
            _rule("mlpulse_drift_features_evaluated", f'count by (model, version) (mlpulse_drift_detected{{window="{w}", '
                  f'source="{SOURCE}", feature!~"{"|".join(OUTPUTS)}"}})', lab),
        ]
    return {"groups": [{"name": GROUP, "rules": out}]}


RULES_HEADER = """\
# Generated by `mlpulse generate` (mlpulse/prometheus/drift_rules.py): do not edit.
#
# Drift computed by Prometheus from the service's bin counters (MLPULSE_BIN_METRICS=1), summed
# over every replica, recorded under the drift exporter's names with source="prometheus", so the
# drift alerts of alerts.yml read either source. docs/prometheus-drift.md says how and why.
"""


def render_rules(windows: Sequence[str] | None = None, **kwargs: Any) -> str:
    return RULES_HEADER + yamlfiles.dump(rules(windows, **kwargs), width=110)


# -- promtool tests -------------------------------------------------------------------------
# A small model version: a numeric feature (2 bins below the range, 3 inside, 1 above), a
# categorical one (3 categories and unseen) and the prediction; two replicas scraped every minute,
# the second restarting inside the window. The expected values are mlpulse.drift's on the counts
# the window holds.

_TEST_MODEL = {"model": "m", "version": "1"}
_TEST_ENTRIES = {
    # feature: (kind, reference bin counts, regions, replica a per minute, replica b per minute,
    #           missing per minute a, b)
    "x": ("numeric", [0, 0, 30, 50, 20, 0], [REGION_OUTSIDE] * 2 + [REGION_INSIDE] * 3 + [REGION_OUTSIDE],
          [1, 0, 2, 4, 3, 2], [0, 1, 3, 3, 5, 1], 1, 0),
    "c": ("categorical", [60, 30, 10, 0], [REGION_INSIDE] * 3 + [REGION_UNSEEN], [2, 3, 5, 2], [4, 4, 1, 1], 0, 2),
    # 12 bins: 119 values in the 1h window are scored (min_count 100), too few to decide (120).
    "z": ("numeric", [0] + [10] * 10 + [0], [REGION_OUTSIDE] + [REGION_INSIDE] * 10 + [REGION_OUTSIDE],
          [0] * 5 + [1] + [0] * 6, [0] * 6 + [1] + [0] * 5, 0, 0),
    "_prediction": ("numeric", [0, 40, 60, 0], [REGION_OUTSIDE, REGION_INSIDE, REGION_INSIDE, REGION_OUTSIDE],
                    [0, 6, 6, 0], [0, 2, 10, 0], 0, 0),
}
TEST_WINDOW = "1h"  # one of the committed windows
_END = 90  # samples at minutes 0 .. 90
_AT = 80  # evaluation, minutes: the window holds the samples of minutes 20 .. 80
_RESET = 70  # replica b restarts: its counters are 0 again at this minute
# Minutes of counts the window gives each replica: a, the difference of its samples 60 minutes
# apart; b, increase() over a reset (Prometheus 2's closed range [t - 1h, t] has samples on both
# ends, so nothing is extrapolated): 49 minutes before the reset, 10 after, the minute in between
# lost with the restart.
_MINUTES = {"a": 60, "b": 59}
# The same for every committed window, for the steps' tests: 5m holds no reset (both exact
# differences); 24h is older than the series, so increase() from their first sample at 0, which
# nothing extrapolates below zero: 80 minutes for a, 79 for b.
_WINDOW_MINUTES = {"5m": (5, 5), "1h": (60, 59), "24h": (80, 79)}


def _counter(per_minute: int, reset: int | None) -> str:
    values = [(m - (reset if reset is not None and m >= reset else 0)) * per_minute for m in range(_END + 1)]
    return " ".join(str(v) for v in values)


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _expected(min_count: int, eps: float) -> dict[str, drift.FeatureDrift]:
    out = {}
    for feature, (kind, ref, reg, a, b, ma, mb) in _TEST_ENTRIES.items():
        cur = np.array(a) * _MINUTES["a"] + np.array(b) * _MINUTES["b"]
        missing = ma * _MINUTES["a"] + mb * _MINUTES["b"]
        entry: dict[str, Any] = {"kind": kind, "bin_counts": ref}
        if kind == "numeric":  # edges 0 .. k-2; min and max put the inside bins where reg says
            inside = [i for i, r in enumerate(reg) if r == REGION_INSIDE]
            entry.update(edges=[float(i) for i in range(len(ref) - 1)], min=float(inside[0] - 1),
                         max=float(inside[-1] - 1), std=1.0)
        else:
            entry["categories"] = [f"k{i}" for i in range(len(ref) - 1)]
        out[feature] = drift.evaluate_feature(entry, cur, missing, min_count=min_count, eps=eps)
    return out


def _close(expr: str, value: float, labels: dict[str, str], at: int = _AT) -> dict[str, Any]:
    """Holds when ``expr`` is within 1e-12 of ``value``: promtool compares floats exactly, and
    PromQL sums in another order than numpy."""
    return {"expr": f"abs({expr} - {value!r}) < bool 1e-12", "eval_time": f"{at}m",
            "exp_samples": [{"labels": _labels("", labels), "value": 1}]}


def _exact(expr: str, name: str, value: float, labels: dict[str, str]) -> dict[str, Any]:
    return {"expr": expr, "eval_time": f"{_AT}m", "exp_samples": [{"labels": _labels(name, labels), "value": value}]}


def tests(min_count: int = drift.DEFAULT_MIN_COUNT, eps: float = drift.PSI_EPS) -> dict[str, Any]:
    """The promtool test file of the committed rules (their 1h window)."""
    inputs = []
    for feature, (_kind, ref, reg, a, b, ma, mb) in _TEST_ENTRIES.items():
        for replica, counts, missing, reset in (("a", a, ma, None), ("b", b, mb, _RESET)):
            base = {"job": "model-service", "instance": f"replica-{replica}:8000", **_TEST_MODEL, "feature": feature}
            for i, c in enumerate(counts):
                inputs.append({"series": _labels(COUNTER, {**base, "bin": str(i)}), "values": _counter(c, reset)})
            inputs.append({"series": _labels(COUNTER, {**base, "bin": MISSING_BIN}), "values": _counter(missing, reset)})
            for i, region in enumerate(reg):
                inputs.append({"series": _labels(REFERENCE, {**base, "bin": str(i), "region": region}),
                               "values": f"{ref[i] / sum(ref)!r}x{_END}"})
    w = TEST_WINDOW
    lab = {"window": w, "source": SOURCE}
    sel = f'window="{w}", source="{SOURCE}"'
    cases = []
    expected = _expected(min_count, eps)
    for feature, e in expected.items():
        want = {**_TEST_MODEL, "feature": feature, **lab}
        f = f'feature="{feature}", {sel}'
        cases += [
            _close(f'mlpulse_drift_score{{{f}, statistic="{PSI}"}}', e.psi, {**want, "statistic": PSI}),
            _close(f'mlpulse_drift_score{{{f}, statistic="{JS}"}}', e.js, {**want, "statistic": JS}),
            _close(f"mlpulse_drift_missing_ratio{{{f}}}", e.missing_ratio, want),
            _exact(f"mlpulse_drift_window_values{{{f}}}", "mlpulse_drift_window_values", e.count, want),
        ]
        if e.out_of_range_ratio is not None:
            cases.append(_close(f"mlpulse_drift_out_of_range_ratio{{{f}}}", e.out_of_range_ratio, want))
        if e.unseen_ratio is not None:
            cases.append(_close(f"mlpulse_drift_unseen_ratio{{{f}}}", e.unseen_ratio, want))
    # The steps: every replica's reference read once, counts summed over the replicas, per window.
    _, ref_x, _, ax, bx, _, _ = _TEST_ENTRIES["x"]
    k_x = len(ref_x)
    x3 = {**_TEST_MODEL, "feature": "x", "bin": "3"}
    x0 = {**x3, "bin": "0"}
    cases += [
        _exact(f'{REF}{{feature="c", bin="0"}}', REF, 0.6, {**_TEST_MODEL, "feature": "c", "bin": "0"}),
        _exact(f'{BINS}{{feature="x"}}', BINS, k_x, {**_TEST_MODEL, "feature": "x"}),
        _close(f'{REF_SMOOTHED}{{feature="x", bin="0"}}', eps / (1 + k_x * eps), x0),
    ]
    for window in default_windows():
        n = _names(window)
        ma, mb = _WINDOW_MINUTES[window]
        total_x = sum(ax) * ma + sum(bx) * mb
        cases += [
            _exact(f'{n["count"]}{{feature="x", bin="3"}}', n["count"], ax[3] * ma + bx[3] * mb, x3),
            # 5m holds under min_count values: no proportions there.
            *([_close(f'{n["ratio"]}{{feature="x", bin="3"}}', (ax[3] * ma + bx[3] * mb) / total_x, x3),
               _close(f'{n["smoothed"]}{{feature="x", bin="0"}}', (ax[0] * ma / total_x + eps) / (1 + k_x * eps), x0),
               _close(f'{n["mixture"]}{{feature="x", bin="0"}}', ax[0] * ma / total_x / 2, x0)]
              if total_x >= min_count else
              [{"expr": f'{n["ratio"]}', "eval_time": f"{_AT}m", "exp_samples": []},
               {"expr": f'{n["smoothed"]} or {n["mixture"]}', "eval_time": f"{_AT}m", "exp_samples": []}]),
        ]
    limit = drift.METHODS["psi"].threshold
    decided = {f: float(e.psi >= limit) for f, e in expected.items()
               if e.count >= VALUES_PER_BIN * len(_TEST_ENTRIES[f][1])}
    assert "z" not in decided and expected["z"].scored  # the case the rule's guard is for
    share = [decided[f] for f in _TEST_ENTRIES if f not in OUTPUTS and f in decided]
    cases += [
        {"expr": f"mlpulse_drift_detected{{{sel}}}", "eval_time": f"{_AT}m",
         "exp_samples": [{"labels": _labels("mlpulse_drift_detected", {**_TEST_MODEL, "feature": f, **lab}), "value": v}
                         for f, v in decided.items()]},
        _close(f"mlpulse_drift_share{{{sel}}}", sum(share) / len(share), {**_TEST_MODEL, **lab}),
        _exact(f"mlpulse_drift_features_evaluated{{{sel}}}", "mlpulse_drift_features_evaluated", len(share),
               {**_TEST_MODEL, **lab}),
        # Minute 3: under min_count values in the window, no score and no decision; the missing
        # share and the window's values are there (the exporter's rule).
        {"expr": f"mlpulse_drift_score{{{sel}}}", "eval_time": "3m", "exp_samples": []},
        {"expr": f"mlpulse_drift_detected{{{sel}}}", "eval_time": "3m", "exp_samples": []},
        _exact(f'mlpulse_drift_window_values{{feature="x", {sel}}}', "mlpulse_drift_window_values",
               3 * (sum(ax) + sum(bx)), {**_TEST_MODEL, "feature": "x", **lab}) | {"eval_time": "3m"},
    ]
    return {"rule_files": [f"../rules/{RULES_FILE.name}"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": cases}]}


TESTS_HEADER = """\
# Generated by `mlpulse generate` (mlpulse/prometheus/drift_rules.py): do not edit.
#
# promtool test rules prometheus/tests/drift_prometheus_test.yml
# The rules of drift_prometheus.yml (1h window) on two replicas' bin counters, one restarting
# inside the window: PSI, JS distance and the shares equal mlpulse.drift's on the same counts.
"""


def render_tests(**kwargs: Any) -> str:
    return TESTS_HEADER + yamlfiles.dump(tests(**kwargs), width=140)


def render_files() -> dict[str, str]:
    """{path relative to the project's root: content}: the rule file and its promtool tests."""
    return {str(RULES_FILE): render_rules(), str(TESTS_FILE): render_tests()}
