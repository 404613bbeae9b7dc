"""Alertmanager: the committed configuration passes `amtool check-config`, routes every case of
alertmanager/tests/routes.yml to the expected receivers, inhibits what it should (checked on a
running Alertmanager too), renders its templates, and holds no secret."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from mlpulse.prometheus.native import write_web_auth
from native_stack.processes import Stack, free_port, wait_http
from tests.helpers import ROOT

AM_DIR = ROOT / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
CASES = yaml.safe_load((AM_DIR / "tests" / "routes.yml").read_text())["cases"]
ALERT_RULES = ROOT / "prometheus" / "rules" / "alerts.yml"
PROM_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
OPTIONAL_RECEIVERS = {"ops-email", "ds-slack"}  # complete but not routed until enabled
# Keys that would hold a secret in the file itself; only their *_file forms are allowed.
SECRET_KEYS = {"api_url", "auth_password", "smtp_auth_password", "auth_secret", "password", "credentials",
               "api_key", "service_key", "routing_key", "bearer_token", "token", "client_secret"}


def needs_amtool():
    if AMTOOL is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager; `make system-deps`)")


def amtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([AMTOOL, *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=60)


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def alert_names() -> set[str]:
    return {r["alert"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}


def walk(node, path=()):
    """(path, key, value) of every mapping entry in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def test_check_config(tmp_path):
    needs_amtool()
    r = amtool("check-config", str(CONFIG), cwd=tmp_path)  # templates resolve relative to the file
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    n_inhibit, n_receivers = len(config()["inhibit_rules"]), len(config()["receivers"])
    assert f"{n_inhibit} inhibit rules" in out and f"{n_receivers} receivers" in out and "1 templates" in out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_route(case):
    needs_amtool()
    labels = [f"{k}={v}" for k, v in case["labels"].items()]
    r = amtool("config", "routes", "test", f"--config.file={CONFIG}",
               f"--verify.receivers={','.join(case['receivers'])}", *labels)
    assert r.returncode == 0, f"{case['name']}: got {r.stdout.strip()!r}, want {case['receivers']}\n{r.stderr}"


def test_route_cases_cover_every_routed_receiver_and_alert_labels():
    cfg = config()
    names = {r["name"] for r in cfg["receivers"]}

    def routed(route):
        yield route["receiver"]
        for child in route.get("routes", []):
            yield from routed(child)

    in_tree = set(routed(cfg["route"]))
    assert in_tree <= names
    assert names - in_tree == OPTIONAL_RECEIVERS
    assert {r for c in CASES for r in c["receivers"]} == in_tree, "a routed receiver has no test case"
    # Every (team, severity) an alert rule uses has a case.
    rules = [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    used = {(r["labels"]["team"], r["labels"]["severity"]) for r in rules if r["alert"] != "Watchdog"}
    cased = {(c["labels"].get("team"), c["labels"].get("severity")) for c in CASES}
    assert used <= cased


def test_group_by_and_timing():
    route = config()["route"]
    assert route["group_by"][:2] == ["alertname", "model"]
    assert route["repeat_interval"] and route["group_wait"] and route["group_interval"]
    (watchdog,) = [r for r in route["routes"] if r["matchers"] == ['alertname="Watchdog"']]
    assert route["routes"].index(watchdog) == 0, "the watchdog route must come before the team routes"


def test_inhibition_rules():
    rules = config()["inhibit_rules"]
    known = alert_names()

    def targets(rule):
        names = set()
        for m in rule["target_matchers"]:
            mm = re.fullmatch(r'alertname=~"([^"]+)"', m) or re.fullmatch(r'alertname="([^"]+)"', m)
            if mm:
                names |= set(mm.group(1).split("|"))
        return names

    down = [r for r in rules if r["source_matchers"] == ['alertname="ModelServiceDown"']]
    by_model = [r for r in down if r["equal"] == ["model"]]
    assert len(by_model) == 1
    data_and_drift = targets(by_model[0])
    assert {"FeatureDrift", "PredictionDrift", "DriftShareHigh", "MissingValuesSpike", "InputViolationsSpike",
            "UnseenCategories", "NoPredictions"} <= data_and_drift
    assert any(r["equal"] == ["job", "instance"] for r in down)

    severity = [r for r in rules if r["source_matchers"] == ['severity="critical"']]
    assert len(severity) == 1 and severity[0]["target_matchers"] == ['severity="warning"']
    assert "alertname" in severity[0]["equal"]

    for rule in rules:
        assert targets(rule) <= known, f"inhibition names alerts that do not exist: {targets(rule) - known}"

    # `equal: [model]` only works if the targets carry a model label: check it on the promtool
    # cases where they fire.
    fired_labels: dict[str, list[dict]] = {}
    for path in PROM_TESTS:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                for alert in case.get("exp_alerts") or []:
                    fired_labels.setdefault(case["alertname"], []).append(alert["exp_labels"])
    for name in data_and_drift:
        assert fired_labels.get(name), f"{name} never fires in the promtool tests"
        assert all("model" in labels for labels in fired_labels[name]), f"{name} fires without a model label"


def test_notifications_send_resolved_and_hold_no_secret():
    cfg = config()
    for receiver in cfg["receivers"]:
        integrations = [(k, c) for k, v in receiver.items() if k.endswith("_configs") for c in v]
        assert integrations, f"receiver {receiver['name']} notifies nobody"
        for kind, c in integrations:
            assert c.get("send_resolved") is True, f"{receiver['name']} {kind} without send_resolved"
            if kind == "webhook_configs":
                assert not re.search(r"//[^/@]+@", c["url"]), "credentials in a webhook URL"
    for path, key, value in walk(cfg):
        assert key not in SECRET_KEYS, f"secret key {key} at {'/'.join(map(str, path))}: use {key}_file"
        if key.endswith("_file") and isinstance(value, str):
            assert value.startswith("/run/secrets/"), f"{key} should read a mounted secret, not {value}"
    assert cfg["global"]["smtp_auth_password_file"]
    (slack,) = [r for r in cfg["receivers"] if r["name"] == "ds-slack"]
    assert slack["slack_configs"][0]["api_url_file"]


def test_optional_receivers_work_once_enabled(tmp_path):
    """Enable e-mail and Slack the way the header comment of alertmanager.yml says."""
    needs_amtool()
    cfg = config()
    for route in cfg["route"]["routes"]:
        team = {"team=\"ops\"": "ops-email", "team=\"ds\"": "ds-slack"}.get(route["matchers"][0])
        if team:
            route["routes"].insert(0, {"receiver": team, "matchers": ['severity="critical"'], "continue": True})
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = amtool("check-config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    for labels, want in ((["team=ds", "severity=critical"], "ds-slack,ds-critical"),
                         (["team=ops", "severity=critical"], "ops-email,ops-critical"),
                         (["team=ds", "severity=warning"], "ds-warning")):
        r = amtool("config", "routes", "test", f"--config.file={path}", f"--verify.receivers={want}", *labels)
        assert r.returncode == 0, f"{labels}: {r.stdout}"


@pytest.mark.parametrize("template", ["mlpulse.title", "mlpulse.text", "mlpulse.runbook", "mlpulse.email.subject",
                                      "mlpulse.email.html"])
def test_templates_render(template):
    needs_amtool()
    text = (AM_DIR / "templates" / "mlpulse.tmpl").read_text()
    assert f'define "{template}"' in text
    r = amtool("template", "render", f"--template.glob={AM_DIR / 'templates' / '*.tmpl'}",
               f"--template.text={{{{ template \"{template}\" . }}}}")
    assert r.returncode == 0, r.stderr


def test_templates_used_by_receivers_exist():
    defined = set(re.findall(r'define "([^"]+)"', (AM_DIR / "templates" / "mlpulse.tmpl").read_text()))
    used = set(re.findall(r'template "([^"]+)"', CONFIG.read_text()))
    assert used and used <= defined


@pytest.mark.integration
def test_inhibitions_on_a_running_alertmanager(tmp_path):
    """The committed configuration in a real Alertmanager: post alerts, read their status."""
    if ALERTMANAGER is None:
        pytest.skip("alertmanager is not installed (Debian package prometheus-alertmanager)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web = write_web_auth(tmp_path / "auth", "alertmanager", root=ROOT)
    auth = web.auth
    with Stack() as stack:
        proc = stack.start("alertmanager", [ALERTMANAGER, f"--config.file={CONFIG}",
                                            f"--storage.path={tmp_path / 'data'}",
                                            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                            web.flag],
                           tmp_path / "alertmanager.log")
        wait_http(f"{url}/-/ready", 30, proc.popen, auth=auth)

        def alert(name, severity, team, **labels):
            return {"labels": {"alertname": name, "severity": severity, "team": team, "stack": "mlpulse", **labels},
                    "annotations": {"summary": name}}

        svc = {"job": "model-service", "instance": "model-service:8000"}
        posted = [
            alert("ModelServiceDown", "critical", "ops", model="credit-default", **svc),
            alert("FeatureDrift", "warning", "ds", model="credit-default", version="1.0.0", feature="income"),
            alert("FeatureDrift", "warning", "ds", model="fraud", version="2.1.0", feature="income"),
            alert("TrafficStopped", "warning", "ops", **svc),
            alert("HighErrorRatio", "critical", "ops", job="model-service", route="/v1/predict"),
            alert("HighErrorRatio", "warning", "ops", job="model-service", route="/v1/predict"),
            alert("HighErrorRatio", "warning", "ops", job="model-service", route="/v1/model"),
            alert("DriftExporterDown", "warning", "ops", job="drift-exporter", instance="drift-exporter:9108"),
            alert("DriftExporterLagging", "warning", "ops", job="drift-exporter", instance="drift-exporter:9108"),
        ]
        assert requests.post(f"{url}/api/v2/alerts", json=posted, auth=auth, timeout=5).status_code == 200

        def key(a):
            lab = a["labels"]
            return (lab["alertname"], lab["severity"], lab.get("model") or lab.get("route") or lab.get("instance"))

        want_suppressed = {
            ("FeatureDrift", "warning", "credit-default"),       # its service is down
            ("TrafficStopped", "warning", "model-service:8000"),  # same instance as the down service
            ("HighErrorRatio", "warning", "/v1/predict"),         # its critical level fires
            ("DriftExporterLagging", "warning", "drift-exporter:9108"),
        }
        deadline = time.monotonic() + 15
        while True:
            got = {key(a): a["status"] for a in requests.get(f"{url}/api/v2/alerts", auth=auth, timeout=5).json()}
            suppressed = {k for k, s in got.items() if s["inhibitedBy"]}
            if (len(got) == len(posted) and suppressed == want_suppressed) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(got) == len(posted)
        assert suppressed == want_suppressed
        assert got[("FeatureDrift", "warning", "fraud")]["state"] == "active"

        # The Alertmanager metrics the Prometheus rules read exist in this version.
        text = requests.get(f"{url}/metrics", auth=auth, timeout=5).text
        rules_text = ALERT_RULES.read_text()
        for name in set(re.findall(r"\balertmanager_[a-z_]+", rules_text)):
            assert re.search(rf"^{name}[{{ ]", text, re.M), f"Alertmanager exposes no {name}"
