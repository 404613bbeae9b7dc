"""``mlpulse generate``: every generated file equals what its generator writes from the committed
sources, ``--check`` fails on any difference, and the one ``mlpulse`` command dispatches to each
subcommand."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlpulse.cli import main
from mlpulse.drift import METHODS
from mlpulse.grafana.dashboards import load_drift_rule

ROOT = Path(__file__).resolve().parents[2]
# What the generators read and write: a copy of these is a project root of its own.
SOURCES = ("prometheus", "alertmanager", "exporter", "elasticsearch", "kibana", "grafana", "logstash", "deploy")


@pytest.fixture
def project(tmp_path) -> Path:
    for name in SOURCES:
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def generate(*args: str) -> int:
    return main(["generate", *args])


def test_the_committed_files_are_up_to_date(bundle_dir, capsys):
    assert generate("--root", str(ROOT), "--bundle", str(bundle_dir), "--check") == 0
    assert "up to date: elastic, drift-rules, grafana, native, kubernetes" in capsys.readouterr().out


def test_check_names_every_stale_file_and_generate_repairs_it(project, bundle_dir, capsys):
    b = ["--root", str(project), "--bundle", str(bundle_dir)]
    assert generate(*b, "--check") == 0

    thresholds = project / "prometheus" / "rules" / "thresholds.yml"
    thresholds.write_text(re.sub(r"(mlpulse_threshold:latency_p95_seconds\n\s+expr: vector\()[0-9.]+",
                                 r"\g<1>0.123", thresholds.read_text()))
    saved_objects = project / "kibana" / "saved-objects.ndjson"
    saved_objects.write_text(saved_objects.read_text().replace("mlpulse", "mlpulsx", 1))
    (project / "elasticsearch" / "roles" / "mlpulse_reader.json").unlink()
    (project / "grafana" / "dashboards" / "hand-made.json").write_text("{}\n")
    capsys.readouterr()

    assert generate(*b, "--check") == 1
    err = capsys.readouterr().err
    assert "grafana/dashboards/service-operations.json: differs" in err
    assert "kibana/saved-objects.ndjson: differs" in err
    assert "elasticsearch/roles/mlpulse_reader.json: missing" in err
    assert "grafana/dashboards/hand-made.json: not written by the grafana generator" in err
    assert "model-and-data.json" not in err  # unchanged sources, unchanged dashboard

    capsys.readouterr()
    assert generate(*b, "grafana", "elastic", "kubernetes") == 0
    assert "warning: grafana/dashboards/hand-made.json: not written" in capsys.readouterr().err
    assert generate(*b, "--check") == 1  # the hand-made file is never deleted for the user
    (project / "grafana" / "dashboards" / "hand-made.json").unlink()
    assert generate(*b, "--check") == 0
    assert "0.123" in (project / "grafana" / "dashboards" / "service-operations.json").read_text()
    assert (project / "kibana" / "saved-objects.ndjson").read_bytes() == (ROOT / "kibana" / "saved-objects.ndjson").read_bytes()


def test_a_source_change_reaches_the_dashboards_only_through_generate(project, bundle_dir, capsys):
    toml = project / "exporter" / "exporter.toml"
    toml.write_text(toml.read_text().replace('method = "psi"', 'method = "js"'))
    assert generate("--root", str(project), "--check", "grafana") == 1
    assert "model-and-data.json: differs" in capsys.readouterr().err
    assert generate("--root", str(project), "grafana") == 0
    assert 'statistic=\\"js_distance\\"' in (project / "grafana" / "dashboards" / "model-and-data.json").read_text()


def test_native_configurations_render_from_the_committed_files(project, tmp_path):
    out = tmp_path / "native"
    assert generate("--root", str(project), "--native-out", str(out), "native") == 0
    prom = yaml.safe_load((out / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}
    assert targets["model-service"] == ["127.0.0.1:8000"] and targets["drift-exporter"] == ["127.0.0.1:9108"]
    assert sorted(p.name for p in (out / "prometheus" / "rules").glob("*.yml")) == \
        sorted(p.name for p in (ROOT / "prometheus" / "rules").glob("*.yml"))
    am = yaml.safe_load((out / "alertmanager" / "alertmanager.yml").read_text())
    hooks = [h["url"] for r in am["receivers"] for h in r.get("webhook_configs") or []]
    assert hooks and set(hooks) == {"http://127.0.0.1:5001/"}

    # A committed configuration the native stack cannot use fails the check.
    config = project / "prometheus" / "prometheus.yml"
    config.write_text(config.read_text().replace("job_name: drift-exporter", "job_name: exporter"))
    assert generate("--root", str(project), "--check", "native") != 0


def test_generate_refuses_what_it_cannot_do(project, capsys):
    assert generate("--root", str(project), "elastic") == 2
    assert "pass --bundle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate("--root", str(project), "native")  # native needs --native-out
    with pytest.raises(SystemExit):
        generate("--root", str(project), "kibana")


def test_the_drift_alerts_read_the_statistic_the_exporter_decides_with():
    # The FeatureDrift / PredictionDrift value is the effect size of the deployed exporter's method.
    rule = load_drift_rule(ROOT / "exporter" / "exporter.toml")
    assert rule.statistic == METHODS[rule.method].statistic
    alerts = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in alerts["groups"] for r in g["rules"] if "alert" in r}
    for name in ("FeatureDrift", "PredictionDrift"):
        assert re.findall(r'statistic="([^"]+)"', exprs[name]) == [rule.statistic], name


def test_one_command_with_every_subcommand(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("exporter", "generate", "elastic-setup"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command
    assert main(["nonsense"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["exporter", "--help"])
    assert e.value.code == 0 and "mlpulse exporter" in capsys.readouterr().out
    # Installed as a console script, and as python -m mlpulse.
    script = Path(sys.executable).with_name("mlpulse")
    assert script.is_file(), "pip install . installs the mlpulse command"
    for argv in ([str(script), "--help"], [sys.executable, "-m", "mlpulse", "--help"]):
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert run.returncode == 0 and "generate" in run.stdout, run.stderr


def test_elastic_setup_plan_through_the_command(capsys):
    assert main(["elastic-setup", "--plan", "--root", str(ROOT)]) == 0
    out = capsys.readouterr().out
    assert '"***"' in out or "***" in out
