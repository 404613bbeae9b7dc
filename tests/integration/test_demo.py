"""``make demo``'s program with the short schedule: the whole native stack, an alert that fires and
resolves on the way, every process stopped, and the report left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from native_stack.monitoring import ALERTMANAGER, PROMETHEUS
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER), reason="Debian's prometheus / prometheus-alertmanager "
                    "not installed (make test installs them)")
def test_the_demo_shows_an_alert_fire_and_resolve_and_leaves_its_report(bundle_dir, tmp_path):
    work = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "native_stack.demo", "--bundle", str(bundle_dir), "--schedule", "ci",
                          "--workdir", str(work), "--plain"], capture_output=True, text=True, timeout=420, cwd=ROOT)
    out = run.stdout
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FIRING    FeatureDrift(income)" in out, out[-3000:]
    assert "RESOLVED  FeatureDrift(income)" in out, out[-3000:]
    assert "runbooks.md#featuredrift" in out
    assert (work / "report.html").is_file() and "income" in (work / "report.html").read_text()
    assert "stopped every process the demo started" in out
    # The schedule's delayed labels reached the service: feedback events beside the predictions.
    lines = "".join(f.read_text() for f in (work / "events").glob("*.jsonl"))
    assert '"event":"feedback"' in lines.replace(" ", ""), "no label of the schedule reached POST /v1/feedback"
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "processes of the demo are still running"
