"""Prometheus: the committed configuration and a native copy pass `promtool check config`, the rules
pass `promtool check rules` and their unit tests, every alert follows the conventions and has a
runbook section and a firing and a quiet test case, and every metric a rule reads is one the
service, the exporter or Prometheus really exposes (taken from their /metrics, not from the docs).

The last test runs the whole chain for real: the service under gunicorn, the exporter and
Prometheus with the native configuration, and checks that every rule evaluates without error and
that alerts fire on real series."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlpulse.cli import main as mlpulse_main
from mlpulse.durations import parse_duration
from mlpulse.exporter.config import ExporterConfig
from mlpulse.exporter.core import METRIC_HELP, Exporter
from mlpulse.exporter.quality import HELP as QUALITY_HELP
from mlpulse.generate import NATIVE_ALERTMANAGER, NATIVE_TARGETS
from mlpulse.prometheus import native as pc
from mlpulse.serving.app import create_app
from model_service.data import generate, to_records
from native_stack.processes import Stack, exporter_env, free_port, service_env, start_exporter, start_service, wait_http
from native_stack.traffic import invalid_records, send
from tests.helpers import ROOT, wait_for

PROM_DIR = ROOT / "prometheus"
CONFIG = ROOT / pc.CONFIG_FILE
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")

SEVERITIES = {"critical", "warning", "info"}
TEAMS = {"ops", "ds"}
ALWAYS_FIRING = {"Watchdog"}  # no quiet case can exist
THRESHOLD_PREFIX = "mlpulse_threshold:"
# Series Prometheus and Alertmanager expose themselves or add to every scrape (checked against
# Prometheus 2.42 and Alertmanager 0.25; the live test below checks the prometheus_* ones).
MONITORING_METRICS = {
    "up",
    "scrape_duration_seconds",
    "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_errors_total",
    "prometheus_config_last_reload_successful",
    "alertmanager_notifications_failed_total",
    "alertmanager_config_last_reload_successful",
}
DOCKER_HOSTS = ("model-service:", "drift-exporter:", "alertmanager:", "localhost:")


def needs(binary: str | None, name: str):
    if binary is None:
        pytest.skip(f"{name} is not installed (Debian package prometheus; `make system-deps`)")


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd or ROOT, capture_output=True, text=True, timeout=120)


def load_rules() -> list[tuple[str, dict]]:
    """(group name, rule) for every rule of every committed rule file."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend((group["name"], rule) for rule in group["rules"])
    return out


def alerting_rules() -> list[dict]:
    return [r for _, r in load_rules() if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for _, r in load_rules() if "record" in r}


# --- PromQL metric names -------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (in matchers or grouping clauses) or parts of numbers and durations."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _CLAUSES.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        is_call = text[m.end():].lstrip().startswith("(")
        if not is_call and m.group().lower() not in _KEYWORDS:
            names.add(m.group())
    return names


def test_metric_name_extraction():
    expr = '''sum by (job, route) (rate(http_total{status=~"5..", route!="/x"}[5m] offset 1h))
              / on (job) group_left (model) max without (pid) (last_over_time(info[1h]))
              > on () group_left () t:x and time() - ts_seconds > 4 * 3600 or vector(1e3)'''
    assert metric_names(expr) == {"http_total", "info", "t:x", "ts_seconds"}


# --- configuration -------------------------------------------------------------------------

def test_committed_config_is_valid(tmp_path):
    needs(PROMTOOL, "promtool")
    # From another directory: rule_files must resolve relative to the file itself.
    r = run([PROMTOOL, "check", "config", str(PROM_DIR / "prometheus.yml")], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(RULE_FILES)} rule files found" in r.stdout + r.stderr


def test_committed_config_contents():
    config = pc.load_config(CONFIG)
    assert config["global"]["scrape_interval"] == "15s" and config["global"]["evaluation_interval"] == "15s"
    assert config["global"]["external_labels"] == {"stack": "mlpulse"}
    assert config["rule_files"] == ["rules/*.yml"]
    assert pc.rule_files(CONFIG) == RULE_FILES
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert targets == {"model-service": ["model-service:8000"], "drift-exporter": ["drift-exporter:9108"],
                       "prometheus": ["localhost:9090"], "alertmanager": ["alertmanager:9093"]}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_native_config_is_valid_and_derived_from_the_committed_one(tmp_path):
    needs(PROMTOOL, "promtool")
    passwords = {"prometheus": tmp_path / "prom-password", "alertmanager": tmp_path / "am-password"}
    path = pc.write_native_config(
        tmp_path / "prom",
        {"model-service": "127.0.0.1:18000", "drift-exporter": ["127.0.0.1:19108"], "prometheus": "127.0.0.1:19090"},
        alertmanagers=["127.0.0.1:19093"], scrape_interval="1s", evaluation_interval="2s", for_override="0s",
        external_labels={"run": "test"}, password_files=passwords, config_path=CONFIG,
    )
    r = run([PROMTOOL, "check", "config", str(path)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    committed, native = pc.load_config(CONFIG), pc.load_config(path)
    text = path.read_text()
    assert not any(host in text for host in DOCKER_HOSTS), "a compose host name leaked into the native config"
    assert [j["job_name"] for j in native["scrape_configs"]] == ["model-service", "drift-exporter", "prometheus"]
    assert native["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:18000"]}]
    assert native["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "2s",
                                "external_labels": {"stack": "mlpulse", "run": "test"}}
    assert native["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": ["127.0.0.1:19093"]}]
    # Prometheus authenticates to Alertmanager and to itself with the native password files.
    assert native["alerting"]["alertmanagers"][0]["basic_auth"] == \
        {"username": pc.WEB_USER, "password_file": str(passwords["alertmanager"])}
    assert "/run/secrets/" not in text
    # Everything else comes from the committed file.
    for job in native["scrape_configs"]:
        (orig,) = [j for j in committed["scrape_configs"] if j["job_name"] == job["job_name"]]
        if "basic_auth" in orig:
            server = pc.secret_server(orig["basic_auth"]["password_file"])
            assert job["basic_auth"] == {**orig["basic_auth"], "password_file": str(passwords[server])}
        assert {k: v for k, v in job.items() if k not in ("static_configs", "basic_auth")} == \
               {k: v for k, v in orig.items() if k not in ("static_configs", "basic_auth")}
    assert native["rule_files"] == [f"rules/{p.name}" for p in RULE_FILES]
    copies = {p.name: yaml.safe_load(p.read_text()) for p in (path.parent / "rules").glob("*.yml")}
    assert set(copies) == {p.name for p in RULE_FILES}
    for src in RULE_FILES:
        original = yaml.safe_load(src.read_text())
        for g_copy, g_orig in zip(copies[src.name]["groups"], original["groups"]):
            for r_copy, r_orig in zip(g_copy["rules"], g_orig["rules"]):
                if "alert" in r_orig:
                    assert r_copy["for"] == "0s"
                    r_copy = {**r_copy, "for": r_orig["for"]}
                assert r_copy == r_orig


def test_native_config_without_overrides_copies_rules_verbatim(tmp_path):
    path = pc.write_native_config(tmp_path, {"model-service": "127.0.0.1:18000"}, config_path=CONFIG)
    native = pc.load_config(path)
    assert "alerting" not in native and [j["job_name"] for j in native["scrape_configs"]] == ["model-service"]
    assert native["global"]["scrape_interval"] == "15s" and native["global"]["scrape_timeout"] == "10s"
    for src in RULE_FILES:
        assert (tmp_path / "rules" / src.name).read_bytes() == src.read_bytes()


def test_native_config_refuses_unknown_jobs_and_bad_durations(tmp_path):
    with pytest.raises(ValueError, match="no scrape job"):
        pc.native_config({"model-servce": "127.0.0.1:1"}, config=pc.load_config(CONFIG))
    with pytest.raises(ValueError, match="duration"):
        pc.native_config({"model-service": "127.0.0.1:1"}, scrape_interval="fast", config=pc.load_config(CONFIG))
    with pytest.raises(ValueError, match="duration"):
        pc.write_native_config(tmp_path, {"model-service": "127.0.0.1:1"}, for_override="soon", config_path=CONFIG)
    # A job or an Alertmanager that needs a password, without the native password file.
    with pytest.raises(ValueError, match="password_files"):
        pc.native_config({"prometheus": "127.0.0.1:1"}, config=pc.load_config(CONFIG))
    with pytest.raises(ValueError, match="password_files"):
        pc.native_config({"model-service": "127.0.0.1:1"}, alertmanagers=["127.0.0.1:2"],
                         password_files={"prometheus": "p"}, config=pc.load_config(CONFIG))
    assert parse_duration("1m30s", prometheus=True) == 90 and parse_duration("500ms", prometheus=True) == 0.5


def test_native_config_command_line(tmp_path, capsys):
    assert mlpulse_main(["generate", "native", "--root", str(ROOT), "--native-out", str(tmp_path)]) == 0
    written = [Path(line.removeprefix("wrote ")) for line in capsys.readouterr().out.splitlines()]
    assert written == [tmp_path / "prometheus" / "prometheus.yml", tmp_path / "alertmanager" / "alertmanager.yml",
                       tmp_path / "prometheus" / "web.yml", tmp_path / "alertmanager" / "web.yml"]
    for server in ("prometheus", "alertmanager"):
        web = yaml.safe_load((tmp_path / server / "web.yml").read_text())
        assert list(web["basic_auth_users"]) == [pc.WEB_USER]
        assert (tmp_path / server / "password").stat().st_mode & 0o077 == 0
    native = pc.load_config(written[0])
    assert [(j["job_name"], j["static_configs"][0]["targets"]) for j in native["scrape_configs"]] == \
           [(job, [address]) for job, address in NATIVE_TARGETS.items()]
    assert native["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": [NATIVE_ALERTMANAGER]}]
    assert native["alerting"]["alertmanagers"][0]["basic_auth"]["password_file"] == \
        str((tmp_path / "alertmanager" / "password").resolve())


# --- rules ---------------------------------------------------------------------------------

def test_promtool_check_rules():
    needs(PROMTOOL, "promtool")
    r = run([PROMTOOL, "check", "rules", *map(str, RULE_FILES)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests():
    needs(PROMTOOL, "promtool")
    assert len(TEST_FILES) >= 2
    # One promtool per file, concurrently: each evaluates every rule at every test minute.
    procs = {path: subprocess.Popen([PROMTOOL, "test", "rules", str(path)], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for path in TEST_FILES}
    failed = {}
    for path, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0 or "SUCCESS" not in out:
            failed[path.name] = out
    assert not failed, "\n".join(failed.values())


def runbook_base(url: str) -> str:
    return url.split("#", 1)[0]


def test_alert_conventions():
    rules = alerting_rules()
    assert rules
    bases = set()
    seen = set()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*", name), f"{name} is not CamelCase"
        assert "for" in rule, f"{name} has no `for`"
        parse_duration(rule["for"], prometheus=True)
        labels, ann = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in SEVERITIES, name
        assert labels.get("team") in TEAMS, name
        assert (name, labels["severity"]) not in seen, f"{name} has two rules of severity {labels['severity']}"
        seen.add((name, labels["severity"]))
        assert {"summary", "description", "runbook_url"} <= set(ann), name
        assert "$value" in ann["description"], f"{name}: the description must say what {{{{ $value }}}} is"
        url = ann["runbook_url"]
        assert url.endswith("#" + name.lower()), f"{name}: runbook_url {url}"
        bases.add(runbook_base(url))
    assert len(bases) == 1, f"one runbook base for every alert, not {bases}"
    (base,) = bases
    assert base.endswith("/docs/runbooks.md")
    # The base is written once more, in the header comment of alerts.yml.
    assert base in (PROM_DIR / "rules" / "alerts.yml").read_text().split("groups:")[0]


def test_alerts_with_two_severities_have_the_same_labels_and_expression_shape():
    by_name = defaultdict(list)
    for rule in alerting_rules():
        by_name[rule["alert"]].append(rule)
    for name, rules in by_name.items():
        if len(rules) > 1:
            assert {r["labels"]["team"] for r in rules} == {rules[0]["labels"]["team"]}, name
            shapes = {re.sub(r"mlpulse_threshold:\w+", "T", r["expr"]) for r in rules}
            assert len(shapes) == 1, f"{name}: the severities must differ only in their threshold"


def test_thresholds_are_used_and_defined():
    names = recorded_names()
    thresholds = {n for n in names if n.startswith(THRESHOLD_PREFIX)}
    used_in_exprs = set().union(*(metric_names(r["expr"]) for r in alerting_rules()))
    assert thresholds - used_in_exprs == set(), "thresholds no alert uses"
    queried = set()
    for rule in alerting_rules():
        queried |= set(re.findall(r'query "([^"]+)"', rule["annotations"]["description"]))
    assert queried <= thresholds, f"annotations query unknown series {queried - thresholds}"
    for _, rule in load_rules():
        if "record" in rule and rule["record"].startswith(THRESHOLD_PREFIX):
            assert re.fullmatch(r"vector\([0-9.e+-]+\)", rule["expr"].strip()), rule


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_section():
    text = RUNBOOKS.read_text()
    sections = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^## (.+)$", line)
        if m:
            current = github_anchor(m.group(1))
            sections[current] = []
        elif current:
            sections[current].append(line)
    names = {r["alert"] for r in alerting_rules()}
    for name in sorted(names):
        anchor = name.lower()
        assert anchor in sections, f"docs/runbooks.md has no section for {name} (#{anchor})"
        body = "\n".join(sections[anchor])
        for part in ("Meaning", "Confirm", "Act"):
            assert f"**{part}" in body, f"runbook section {name} lacks **{part}**"
    alert_anchors = {n.lower() for n in names}
    orphans = {a for a in sections if a not in alert_anchors} - {"conventions", "ml-test-score-coverage"}
    assert not orphans, f"runbook sections for alerts that do not exist: {orphans}"


def unit_test_cases():
    """{alertname: {"fires": set of severities, "quiet": bool}} over every promtool test file."""
    cases = defaultdict(lambda: {"fires": set(), "quiet": False})
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                entry = cases[case["alertname"]]
                exp = case.get("exp_alerts") or []
                if not exp:
                    entry["quiet"] = True
                for alert in exp:
                    assert "exp_annotations" in alert, f"{path.name}: {case['alertname']} without exp_annotations"
                    entry["fires"].add(alert["exp_labels"]["severity"])
    return cases


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = unit_test_cases()
    for rule in alerting_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        assert severity in cases[name]["fires"], f"no promtool case where {name} ({severity}) fires"
        if name not in ALWAYS_FIRING:
            assert cases[name]["quiet"], f"no promtool case where {name} stays quiet"


def test_every_recording_rule_has_a_unit_test():
    exprs = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            exprs += [case["expr"] for case in test.get("promql_expr_test", []) or []]
    tested = set().union(*(metric_names(e) for e in exprs))
    recordings = {n for n in recorded_names() if not n.startswith(THRESHOLD_PREFIX)}
    assert recordings - tested == set(), "recording rules without a promql_expr_test"


# --- metric names against what the components expose ---------------------------------------

def exposed_names(text: str) -> set[str]:
    """Every series name an exposition can hold: families by type (also those without samples
    yet, like a labelled counter before its first child), plus the samples present."""
    names = set()
    for fam in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count")}.get(fam.type, ("",))
        names |= {fam.name + s for s in suffixes}
        names |= {s.name for s in fam.samples}
    return names


@pytest.fixture
def service_names(config):
    # With the bin metrics on: the drift rules computed by Prometheus read them.
    client = create_app(dataclasses.replace(config, bin_metrics=True)).test_client()
    records = to_records(generate(150, seed=5))
    assert client.post("/v1/predict", json=records[:100]).status_code == 200
    assert client.post("/v1/predict", json=records[100:]).status_code == 200
    return exposed_names(client.get("/metrics").get_data(as_text=True))


@pytest.fixture
def exporter_names(service_names, config, bundle_dir):
    # The events the service just wrote, read by a real exporter: drift series for every window.
    cfg = ExporterConfig(events=str(Path(config.events_dir) / "*.jsonl"), bundles=str(bundle_dir),
                         checkpoint="", start="beginning")
    cfg.validate()
    exporter = Exporter(cfg)
    try:
        assert exporter.poll() >= 150
        exporter.evaluate()
        text = generate_latest(exporter.registry()).decode()
    finally:
        exporter.close()
    names = exposed_names(text)
    assert "mlpulse_drift_detected" in names and "mlpulse_exporter_lag_seconds" in names
    return names | set(METRIC_HELP) | set(QUALITY_HELP) | {"mlpulse_label_last_timestamp_seconds"}


def test_rules_read_only_metrics_that_exist(service_names, exporter_names):
    used = set()
    for _, rule in load_rules():
        used |= metric_names(rule["expr"])
    assert {"mlpulse_http_requests_total", "mlpulse_drift_detected", "up"} <= used  # the extractor works
    assert "mlpulse_prediction_squares_total" in service_names
    allowed = recorded_names() | service_names | exporter_names | MONITORING_METRICS
    unknown = used - allowed
    assert not unknown, f"rules read metrics nobody exposes: {sorted(unknown)}"


# --- the real chain ------------------------------------------------------------------------

def query(prom: str, expr: str, auth: tuple[str, str]) -> list[dict]:
    return requests.get(f"{prom}/api/v1/query", params={"query": expr}, auth=auth, timeout=5).json()["data"]["result"]


@pytest.mark.integration
def test_rules_evaluate_on_the_live_stack(bundle_dir, tmp_path):
    """Service, exporter and Prometheus on 127.0.0.1 with the native configuration (1s intervals,
    `for` 0s): every rule evaluates without error, and alerts fire on real series."""
    needs(PROMETHEUS, "prometheus")
    port, exp_port, prom_port = free_port(), free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    web = pc.write_web_auth(tmp_path / "prometheus-auth", "prometheus", root=ROOT)
    auth = web.auth
    config = pc.write_native_config(
        tmp_path / "prometheus",
        {"model-service": f"127.0.0.1:{port}", "drift-exporter": f"127.0.0.1:{exp_port}",
         "prometheus": f"127.0.0.1:{prom_port}"},
        alertmanagers=[f"127.0.0.1:{free_port()}"],  # nothing listens: notifications fail, counted
        scrape_interval="1s", evaluation_interval="1s", for_override="0s",
        # Nothing listens at that Alertmanager: any password file will do.
        password_files={"prometheus": web.password_file, "alertmanager": web.password_file}, config_path=CONFIG,
    )
    with Stack() as stack:
        start_service(stack, service_env(bundle_dir, tmp_path / "events", tmp_path / "mp", port, workers=1),
                      tmp_path / "service.log")
        start_exporter(stack, exporter_env(tmp_path / "events", bundle_dir, exp_port,
                                           MLPULSE_EXPORTER_EVALUATE_EVERY="1s", MLPULSE_EXPORTER_POLL_EVERY="0.2s"),
                       tmp_path / "exporter.log")
        proc = stack.start("prometheus", [PROMETHEUS, f"--config.file={config}",
                                          f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                          f"--web.listen-address=127.0.0.1:{prom_port}", web.flag],
                           tmp_path / "prometheus.log")
        wait_http(f"{prom}/-/ready", 30, proc.popen, auth=auth)

        # rate() needs the counters' values from before the traffic: wait for a first scrape.
        wait_for(lambda: {s["metric"]["job"] for s in query(prom, "up == 1", auth)} >= {"model-service", "drift-exporter"},
                 30, "a first successful scrape of the service and the exporter")
        url = f"http://127.0.0.1:{port}"
        # Drifted traffic (income in thousands, ...) and records with a wrong type.
        assert send(url, to_records(generate(400, seed=7, scenario="drift")), batch=50, concurrency=2) == {200: 8}
        wrong_type = invalid_records(160, seed=8)[::4]  # every 4th breaks age (age="forty")
        assert send(url, wrong_type, batch=1, concurrency=2) == {422: 40}

        def firing():
            alerts = requests.get(f"{prom}/api/v1/alerts", auth=auth, timeout=5).json()["data"]["alerts"]
            return {(a["labels"]["alertname"], a["labels"].get("feature", ""), a["labels"].get("reason", ""))
                    for a in alerts if a["state"] == "firing"}

        want = {("Watchdog", "", ""), ("FeatureDrift", "income", ""), ("InputViolationsSpike", "age", "wrong_type")}
        try:
            wait_for(lambda: want <= firing(), 60, f"alerts {sorted(want)} firing")
        except AssertionError:
            print("firing:", sorted(firing()))
            raise

        assert not {a for a in firing() if a[0] in ("ModelServiceDown", "ScrapeTargetMissing", "DriftExporterDown")}
        groups = requests.get(f"{prom}/api/v1/rules", auth=auth, timeout=5).json()["data"]["groups"]
        bad = [(g["name"], r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
        assert not bad, f"rules failing on live data: {bad}"
        assert sum(len(g["rules"]) for g in groups) == len(load_rules())
        # The recording rules produce series from the real service. (The /v1/predict counters
        # were born with the first burst, so only a later request moves their rate.)
        assert send(url, to_records(generate(50, seed=9)), batch=50) == {200: 1}
        wait_for(lambda: query(prom, 'job_route:mlpulse_http_requests:rate5m{route="/v1/predict"} > 0', auth), 30,
                 "a request rate of /v1/predict")
        assert query(prom, 'job_route:mlpulse_http_request_duration_seconds:p95_5m{route="/v1/predict"} > 0', auth)
        assert query(prom, "model_version:mlpulse_prediction:std5m > 0", auth)
        # The Prometheus metrics the rules read exist in this version.
        own = exposed_names(requests.get(f"{prom}/metrics", auth=auth, timeout=5).text)
        assert {m for m in MONITORING_METRICS if m.startswith("prometheus_")} <= own


# Rules about a whole service instance or the exporter itself, not about one model: they may group
# by job and instance, or test "any traffic at all" across models.
PER_PROCESS_RULES = {
    "ModelServiceDown": "the instance is down, whichever models it served",
    "TrafficStopped": "the instance takes no traffic at all",
    "NoPredictions": "per model version, joined to its instance's HTTP traffic",
    "ModelVersionChanged": "per model: which version it serves changed",
    "DriftExporterLagging": "the exporter behind while any model scores",
    "DriftExporterNotReading": "the exporter reads nothing while any model scores",
}
UNLABELLED_METRIC = re.compile(r"^mlpulse_(http_|process_|threshold:|exporter_(?!reference_info))")


def test_model_rules_keep_models_and_versions_apart():
    """Many models behind one set of rules: every rule on model-labelled series keeps ``model`` and
    ``version`` in each aggregation and join (a join ``on ()`` reads a threshold, which has no
    labels), so no alert adds or compares one model's series with another's."""
    checked = 0
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name, expr = rule.get("alert") or rule.get("record"), rule["expr"]
                metrics = {m for m in re.findall(r"\b(mlpulse_[a-z_:]+|model_[a-z_]+:[a-z_:0-9]+)", expr)
                           if not UNLABELLED_METRIC.match(m)}
                if not metrics or name in PER_PROCESS_RULES:
                    continue
                checked += 1
                assert not re.search(r"\b(?:sum|max|min|avg|count|stddev|topk|bottomk)\s*\(", expr), (
                    path.name, name, "an aggregation without by (model, version, ...)")
                for kind, clause in re.findall(r"\b(by|on|without|ignoring)\s*\(([^)]*)\)", expr):
                    labels = {x.strip() for x in clause.split(",") if x.strip()}
                    if kind in ("without", "ignoring"):
                        assert not labels & {"model", "version"}, (path.name, name, kind, clause)
                    else:
                        assert not labels or {"model", "version"} <= labels, (path.name, name, clause)
    assert checked > 20
