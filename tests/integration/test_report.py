"""``mlpulse report``: real events from the service, the report's numbers against the exporter's on the
same events, and the page opened in headless Chromium (Debian's ``chromium``): no console error,
no network request, a screenshot kept in ``var/test-artifacts/``."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess

import pytest

from mlpulse.cli import main
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import Exporter
from mlpulse.report import build_report, render_html
from model_service.data import SCENARIOS, generate, to_records
from tests.helpers import ROOT, read_events

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def events(bundle_dir, tmp_path_factory):
    """Baseline records, then drifted ones, written by the real app."""
    from mlpulse.serving.app import ServiceConfig, create_app

    directory = tmp_path_factory.mktemp("report-events")
    client = create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(directory))).test_client()
    for seed, scenario in ((31, "baseline"), (32, "drift")):
        records = to_records(generate(1200, seed=seed, scenario=scenario))
        for i in range(0, len(records), 50):
            assert client.post("/v1/predict", json=records[i:i + 50]).status_code == 200
    stamps = [dt.datetime.fromisoformat(e["@timestamp"]) for e in read_events(directory)]
    return directory, min(stamps) - dt.timedelta(seconds=1), max(stamps) + dt.timedelta(seconds=1)


def test_the_report_shows_what_the_exporter_publishes(bundle_dir, events):
    directory, start, end = events
    report = build_report(bundle_dir, str(directory / "*.jsonl"), start, end, steps=4)
    assert report.records == 2400
    drifted = {f.name for f in report.features if f.detected} - {"_prediction", "_predicted_class"}
    assert drifted == set(SCENARIOS["drift"])

    # The exporter itself, on the same events, with one window holding all of them.
    exporter = Exporter(ExporterConfig(events=str(directory / "*.jsonl"), bundles=str(bundle_dir), start="beginning",
                                       checkpoint="", windows="1h", slice="10s"), clock=lambda: end.timestamp())
    exporter.poll()
    exporter.evaluate(now=end.timestamp())
    exporter.close()
    published = {(labels["feature"], labels["statistic"]): v for metric, labels, v in exporter.results
                 if metric == "mlpulse_drift_score"}
    flags = {labels["feature"]: bool(v) for metric, labels, v in exporter.results if metric == "mlpulse_drift_detected"}
    for f in report.features:
        for statistic, value in f.scores.items():
            assert value == pytest.approx(published[(f.name, statistic)], rel=1e-9, abs=1e-12), (f.name, statistic)
        assert f.detected == flags.get(f.name)


def test_the_command_writes_a_page_that_makes_no_request(bundle_dir, events, tmp_path):
    directory, start, end = events
    out = tmp_path / "report.html"
    assert main(["report", "--bundle", str(bundle_dir), "--events", str(directory / "*.jsonl"),
                 "--since", start.isoformat(), "--until", end.isoformat(), "--steps", "4", "--out", str(out)]) == 0
    page = out.read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "the page must not load anything"
    assert "<script" not in page
    for name in SCENARIOS["drift"]:
        assert f"id='f-{name}'" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium; make system-deps)")
def test_chromium_renders_the_report_without_errors(bundle_dir, events, tmp_path):
    directory, start, end = events
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(bundle_dir, str(directory / "*.jsonl"), start, end, steps=4)))
    artifacts = ROOT / "var" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report.png"
    shot.unlink(missing_ok=True)
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--enable-logging=stderr", "--v=0",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Refused to" in ln or "net::ERR" in ln]
    assert console == [], console
