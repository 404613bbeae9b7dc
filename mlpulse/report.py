"""``mlpulse report``: a self-contained, offline HTML drift report for one model version.

The report runs the exporter itself (``mlpulse.exporter.core.Exporter``, with the file source or
the Elasticsearch source of its configuration), so every number in it is the one the exporter
would publish for the same events:
the whole range as one window, and ``steps`` sub-windows for drift over time. The page holds its
charts as inline SVG and its style inline; a Content-Security-Policy forbids every request, so it
opens the same offline, from a mail attachment or an incident ticket. Colours are the Okabe-Ito
palette (readable with the common colour-vision deficiencies); every chart has a text equivalent.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpulse import drift
from mlpulse.durations import format_duration
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
from mlpulse.exporter.sources.files import event_timestamp
from mlpulse.exporter.windows import PREDICTED_CLASS, PREDICTION, Reference

REFERENCE_COLOUR, LIVE_COLOUR, ALERT_COLOUR = "#0072B2", "#E69F00", "#D55E00"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
# What each statistic means, for a reader who does not know it.
MEANING = {
    drift.METHODS["psi"].statistic: "Population stability index: how much the share of values in each bin moved, weighted by how "
           "unusual the move is. 0 is identical; 0.1 is a moderate shift; 0.2 and more a significant one.",
    drift.METHODS["js"].statistic: "Jensen-Shannon distance between the two distributions, from 0 (identical) to 1 (no overlap).",
    drift.METHODS["wasserstein"].statistic: "Earth mover's distance between the distributions, in reference standard deviations.",
}


@dataclass
class FeatureReport:
    name: str
    kind: str
    labels: list[str]
    reference: list[float]  # proportions per bin
    live: list[float]
    scores: dict[str, float]
    detected: bool | None
    rates: dict[str, float]
    over_time: list[float | None]  # the decision statistic per sub-window
    detected_over_time: list[bool | None]
    first_detected: str | None = None


@dataclass
class Report:
    model: str
    version: str
    start: dt.datetime
    end: dt.datetime
    records: int
    method: drift.DriftMethod
    threshold: float
    features: list[FeatureReport] = field(default_factory=list)
    step_ends: list[dt.datetime] = field(default_factory=list)
    prediction: dict[str, float] = field(default_factory=dict)


def _within(ts: float | None, start: float, stop: float) -> bool:
    return ts is not None and start <= ts < stop


def _labels(ref: Reference, name: str) -> list[str]:
    slot = ref.slots[name]
    if slot.kind == "categorical":
        return [*ref.entries[name]["categories"], "unseen"]
    e = slot.edges
    return ([f"< {e[0]:.4g}"] + [f"[{a:.4g}, {b:.4g})" for a, b in zip(e[:-1], e[1:])] + [f">= {e[-1]:.4g}"]) if e \
        else ["all"]


def _results(exporter: Exporter, window: str) -> dict[tuple[str, str, str], float]:
    """{(metric, feature, statistic or test): value} of one window of the exporter's last evaluation."""
    out = {}
    for metric, labels, value in exporter.results:
        if labels.get("window") == window:
            out[(metric, labels.get("feature", ""), labels.get("statistic", labels.get("test", "")))] = value
    return out


def build_report(bundle: str | Path, events: str, start: dt.datetime, end: dt.datetime, steps: int = 12,
                 config: ExporterConfig | None = None) -> Report:
    """Evaluate the events of ``[start, end)`` against ``bundle``'s reference, with the exporter's
    configuration ``config`` (its defaults otherwise: method, threshold, alpha, correction)."""
    span = (end - start).total_seconds()
    if span <= 0 or steps < 1:
        raise ValueError("the range must be positive and steps at least 1")
    slice_s = max(1, math.ceil(span / (steps * 60))) * 60 if span >= steps * 60 else 1
    step_s = math.ceil(span / steps / slice_s) * slice_s
    whole_s = step_s * steps
    base = config or ExporterConfig()
    cfg = ExporterConfig(**{**base.__dict__, "events": events, "bundles": str(bundle), "start": "beginning",
                            "checkpoint": "", "slice": f"{slice_s}s", "windows": f"{step_s}s,{whole_s}s"})
    # Evaluated just before ``end``, so the last slice is the one holding the range's last events
    # and the window's first slice is the range's first.
    end_ts = end.timestamp() - 1e-3
    # The whole window's slices, as the ring (and an Elasticsearch window search) bound them.
    last_slice = math.floor(end_ts / slice_s)
    start_ts, stop_ts = (last_slice - whole_s // slice_s + 1) * slice_s, (last_slice + 1) * slice_s
    exporter = Exporter(cfg, clock=lambda: end_ts)
    try:
        source = exporter.source
        while cfg.source == "files":  # Elasticsearch is searched per window; files are read once, here
            # Only the range's events: a later one would take a ring row from an earlier slice.
            batch = [e for e in source.tail.poll() if _within(event_timestamp(e), start_ts, stop_ts)]
            source.ingest(batch, now=end_ts)
            if not source.tail.more:
                break
        (ref,) = exporter.references.values()
        step_label, whole_label = format_duration(step_s), format_duration(whole_s)
        step_ends = [end - dt.timedelta(seconds=step_s * (steps - 1 - k)) for k in range(steps)]
        over: list[dict[tuple[str, str, str], float]] = []
        for t in step_ends:
            exporter.evaluate(now=t.timestamp() - 1e-3)
            over.append(_results(exporter, step_label))
        exporter.evaluate(now=end_ts)
        whole = _results(exporter, whole_label)
        counts, moments = exporter.source.window(ref, end_ts, int(round(whole_s / slice_s)))
    finally:
        exporter.close()
    method = drift.METHODS[cfg.method]
    report = Report(ref.name, ref.version, end - dt.timedelta(seconds=whole_s), end,
                    int(moments.get("count", 0)), method, cfg.threshold or method.threshold, step_ends=step_ends,
                    prediction=dict(moments))
    for name, slot in ref.slots.items():
        chosen = method.for_kind(slot.kind).statistic
        live = counts[slot.offset: slot.offset + slot.nbins].astype(float)
        refc = np.asarray(ref.entries[name]["bin_counts"], dtype=float)
        scores = {s.statistic: whole[("mlpulse_drift_score", name, s.statistic)] for s in drift.SCORES
                  if ("mlpulse_drift_score", name, s.statistic) in whole}
        flag = whole.get(("mlpulse_drift_detected", name, ""))
        rates = {k: whole[(m, name, "")] for k, m in (("missing", "mlpulse_drift_missing_ratio"),
                                                      ("out of range", "mlpulse_drift_out_of_range_ratio"),
                                                      ("unseen", "mlpulse_drift_unseen_ratio"))
                 if (m, name, "") in whole}
        f = FeatureReport(name, slot.kind, _labels(ref, name),
                          list(refc / refc.sum()) if refc.sum() else [0.0] * len(refc),
                          list(live / live.sum()) if live.sum() else [0.0] * len(live), scores,
                          None if flag is None else bool(flag), rates,
                          [o.get(("mlpulse_drift_score", name, chosen)) for o in over],
                          [None if o.get(("mlpulse_drift_detected", name, "")) is None
                           else bool(o[("mlpulse_drift_detected", name, "")]) for o in over])
        for t, d in zip(step_ends, f.detected_over_time):
            if d:
                f.first_detected = t.isoformat(timespec="seconds")
                break
        report.features.append(f)
    return report


# -- rendering --------------------------------------------------------------------------------

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _bars(f: FeatureReport) -> str:
    """Reference and live proportions per bin, side by side, as an SVG bar chart."""
    n = len(f.labels)
    w, h, pad = 640, 180, 30
    bw = (w - 2 * pad) / max(n, 1)
    top = max(max(f.reference, default=0), max(f.live, default=0)) or 1
    parts = [f'<svg role="img" viewBox="0 0 {w} {h + 40}" width="100%" aria-labelledby="t-{_e(f.name)}">',
             f'<title id="t-{_e(f.name)}">{_e(f.name)}: reference (blue) and live (orange) share per bin</title>']
    for i, (r, c) in enumerate(zip(f.reference, f.live)):
        x = pad + i * bw
        for j, (v, colour) in enumerate(((r, REFERENCE_COLOUR), (c, LIVE_COLOUR))):
            bh = v / top * h
            parts.append(f'<rect x="{x + j * bw * 0.45 + bw * 0.05:.1f}" y="{h - bh + 5:.1f}" width="{bw * 0.42:.1f}" '
                         f'height="{bh:.1f}" fill="{colour}"><title>{_e(f.labels[i])}: '
                         f'{"reference" if j == 0 else "live"} {v:.1%}</title></rect>')
        if n <= 24:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{h + 20}" font-size="9" text-anchor="middle">'
                         f'{_e(f.labels[i][:14])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _line(values: Sequence[float | None], flags: Sequence[bool | None], threshold: float) -> str:
    w, h, pad = 640, 90, 10
    known = [v for v in values if v is not None]
    top = max([threshold * 1.5, *known]) if known else threshold * 1.5 or 1
    n = len(values)
    xs = [pad + k * (w - 2 * pad) / max(n - 1, 1) for k in range(n)]
    pts = " ".join(f"{x:.1f},{h - v / top * (h - 10):.1f}" for x, v in zip(xs, values) if v is not None)
    y_thr = h - threshold / top * (h - 10)
    marks = "".join(f'<circle cx="{x:.1f}" cy="{h - v / top * (h - 10):.1f}" r="3.5" fill="{ALERT_COLOUR}"/>'
                    for x, v, d in zip(xs, values, flags) if d and v is not None)
    return (f'<svg role="img" viewBox="0 0 {w} {h}" width="100%"><title>drift statistic over time; dashed line: '
            f'threshold {threshold:g}; red dots: drift detected</title>'
            f'<line x1="{pad}" x2="{w - pad}" y1="{y_thr:.1f}" y2="{y_thr:.1f}" stroke="#555" stroke-dasharray="4 3"/>'
            f'<polyline points="{pts}" fill="none" stroke="{REFERENCE_COLOUR}" stroke-width="2"/>{marks}</svg>')


def write_report(path: str | Path, report: Report) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report), encoding="utf-8")
    return p


def render_html(r: Report) -> str:
    stat = r.method.statistic
    drifted = [f for f in r.features if f.detected]
    inputs = [f for f in r.features if f.name not in (PREDICTION, PREDICTED_CLASS)]
    rows = "".join(
        f"<tr><td><a href='#f-{_e(f.name)}'>{_e(f.name)}</a></td><td>{_e(f.kind)}</td>"
        f"<td>{_fmt(f.scores.get(r.method.for_kind(f.kind).statistic))}</td>"
        f"<td class='{'bad' if f.detected else ''}'>{'drifted' if f.detected else ('no' if f.detected is False else 'not evaluated')}</td>"
        f"<td>{_e(f.first_detected or '')}</td>"
        f"<td>{_pct(f.rates.get('missing'))}</td><td>{_pct(f.rates.get('out of range'))}</td>"
        f"<td>{_pct(f.rates.get('unseen'))}</td></tr>" for f in r.features)
    sections = []
    for f in r.features:
        chosen = r.method.for_kind(f.kind).statistic
        scores = ", ".join(f"{_e(k)} {_fmt(v)}" for k, v in f.scores.items())
        verdict = ("drifted" if f.detected else "no drift" if f.detected is False else
                   "not evaluated (too few values in the range)")
        sections.append(
            f"<section id='f-{_e(f.name)}'><h3>{_e(f.name)} <small>{_e(f.kind)}: {verdict}</small></h3>"
            f"<p>{_e(chosen)} {_fmt(f.scores.get(chosen))} against a threshold of {r.threshold:g}. "
            f"{_e(MEANING.get(chosen, ''))}</p><p class='small'>All scores: {scores or 'none'}.</p>"
            f"{_bars(f)}<h4>{_e(chosen)} over time</h4>{_line(f.over_time, f.detected_over_time, r.threshold)}"
            "</section>")
    drifted_inputs = [f for f in drifted if f in inputs]
    summary = (f"{len(drifted_inputs)} of {len(inputs)} input features drifted"
               + (": " + ", ".join(_e(f.name) for f in drifted_inputs) if drifted_inputs else "") + ".")
    pred = r.prediction
    pred_text = (f"mean {_fmt(pred.get('mean'))}, std {_fmt(pred.get('std'))}, min {_fmt(pred.get('min'))}, "
                 f"max {_fmt(pred.get('max'))}") if pred.get("count") else "no scores in the range"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Drift report: {_e(r.model)} {_e(r.version)}</title>
<style>
body{{font-family:system-ui,-apple-system,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}}
table{{border-collapse:collapse;width:100%;font-size:.9em}} th,td{{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left}}
td.bad{{color:{ALERT_COLOUR};font-weight:bold}} .small{{font-size:.85em;color:#555}} section{{margin:2em 0}}
.key span{{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}}
</style></head><body>
<h1>Drift report: {_e(r.model)} {_e(r.version)}</h1>
<p>Events from {_e(r.start.isoformat(timespec="seconds"))} to {_e(r.end.isoformat(timespec="seconds"))}: {r.records} scored records,
compared with the model's reference (its holdout). Decision: {_e(stat)} at least {r.threshold:g}, with the exporter's
noise guard, the same rule as the alerts.</p>
<h2>Summary</h2><p>{summary} Prediction score: {pred_text}.</p>
<p class="key">Charts: <span style="background:{REFERENCE_COLOUR}"></span>reference
<span style="background:{LIVE_COLOUR}"></span>live <span style="background:{ALERT_COLOUR}"></span>drift detected</p>
<table><thead><tr><th>feature</th><th>kind</th><th>score</th><th>drift</th><th>first detected (window end)</th>
<th>missing</th><th>out of range</th><th>unseen</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Features</h2>{"".join(sections)}
<p class="small">Made by mlpulse report on {_e(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))}. Sub-windows of
{_e(format_duration((r.end - r.start).total_seconds() / max(len(r.step_ends), 1)))} for the charts over time.</p>
</body></html>
"""


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"
