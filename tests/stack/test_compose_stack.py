"""`docker compose up` for real: the user's compose file, with only what cannot be had here swapped
(tests/stack/docker-compose.local.yml), run on the Docker engine with images built on a local
Debian base (tests/stack/images.py). Grafana and the Elastic services have no package and no
registry here: they are left out, and their contract tests cover them (docs/compose.md).

One stack per module (building and starting it is the expensive part); the tests run in file
order against it, the restarts last. The stack is torn down with its volumes whatever happens,
after printing ``ps`` and the logs if a test failed. Skipped only where ``docker info`` fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from model_service.data import generate, to_records
from native_stack.traffic import send
from tests.stack import images
from tests.stack.stackenv import StackEnv, write_stack_env


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


pytestmark = [pytest.mark.docker, pytest.mark.slow,
              pytest.mark.skipif(not _docker_answers(), reason="no Docker engine answers: `docker info` fails")]

# The user's file, read as data: what every container must be run with.
COMPOSE = yaml.safe_load((images.ROOT / "docker-compose.yml").read_text())["services"]
# The non-root user each image runs as (our Dockerfiles; nobody for Prometheus and Alertmanager).
UIDS = {"model-service": 10001, "drift-exporter": 10002, "alert-webhook": 10004,
        "prometheus": 65534, "alertmanager": 65534}
HEALTHY_WITHIN = 300  # seconds, for all five; they take about 40 s here
BASELINE = to_records(generate(300, seed=71))
DRIFTED = to_records(generate(900, seed=72, scenario="drift"))


def wait_for(what: str, check, timeout: float, every: float = 2.0):
    """``check()``'s first truthy value within ``timeout`` seconds, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, ValueError, KeyError, subprocess.CalledProcessError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Stack:
    """One compose project: its commands, containers and loopback URLs."""

    def __init__(self, env: StackEnv, base: str):
        self.env = env
        self.project = f"mlpulse-stack-{os.getpid()}"
        self.process_env = {**os.environ, "MLPULSE_LOCAL_BASE": base}

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(images.compose_command(self.env.env_file, self.project) + list(args),
                              cwd=images.ROOT, env=self.process_env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict:
        out = subprocess.run(["docker", "inspect", self.container(service)], capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)[0]

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *command, check=check, timeout=120)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env.ports[service]}"

    def auth(self, server: str) -> tuple[str, str]:
        return ("mlpulse", self.env.password(server))

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        r = requests.get(f"{self.url('prometheus')}/api/v1/query", params=params,
                         auth=self.auth("prometheus"), timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def exporter_sample(self, name: str, **labels: str) -> float | None:
        """A sample of the exporter's /metrics through its published port (summed over the rest)."""
        from tests.helpers import samples

        text = requests.get(f"{self.url('drift-exporter')}/metrics", timeout=10).text
        found = [v for (n, ls), v in samples(text).items()
                 if n == name and set(labels.items()) <= set(ls)]
        return sum(found) if found else None

    def healthy(self, service: str) -> bool:
        state = self.inspect(service)["State"]
        return state["Running"] and state.get("Health", {}).get("Status") == "healthy"

    def dump(self) -> None:
        for args in (("ps",), ("logs", "--no-color", "--tail=200")):
            r = self.compose(*args, check=False, timeout=120)
            print(f"--- docker-compose {' '.join(args)}\n{r.stdout}{r.stderr}", file=sys.stderr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    started = time.monotonic()
    env = write_stack_env(Path(tmp_path_factory.mktemp("compose-stack")))
    base = images.build(env.env_file)
    built = time.monotonic()
    stack = Stack(env, base)
    try:
        stack.compose("up", "-d", "--no-build", *images.SERVICES)
        yield stack
    finally:
        if request.module.__dict__.get("FAILED") or sys.exc_info()[0] is not None:
            stack.dump()
        down = stack.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
                              capture_output=True, text=True).stdout.split()
        print(f"[stack] images {built - started:.0f} s, stack {time.monotonic() - built:.0f} s", file=sys.stderr)
        assert down.returncode == 0 and not left, f"teardown left {left}: {down.stderr}"


def test_every_service_becomes_healthy_in_start_order(stack):
    for service in images.SERVICES:
        wait_for(f"{service} healthy", lambda s=service: stack.healthy(s), HEALTHY_WITHIN)
    started = {s: stack.inspect(s)["State"]["StartedAt"] for s in images.SERVICES}
    # depends_on: the exporter starts after the service whose events it reads.
    for service in images.SERVICES:
        for dependency in COMPOSE[service].get("depends_on", []):
            assert started[dependency] <= started[service], (service, dependency, started)
    # Nothing else of the user's file was started (no image for it here).
    running = set(stack.compose("ps", "--services", "--filter", "status=running").stdout.split())
    assert running == set(images.SERVICES)
    # Our services start without an error line (gunicorn's and the exporter's log formats).
    for service in ("model-service", "drift-exporter", "alert-webhook"):
        logs = stack.compose("logs", "--no-color", service).stdout
        assert not [line for line in logs.splitlines() if "[ERROR]" in line or " ERROR " in line], logs


def test_predictions_become_events_and_drift_series_scraped_by_service_name(stack):
    statuses = send(stack.url("model-service"), BASELINE, batch=25, concurrency=2)
    assert statuses == {200: len(BASELINE) // 25}
    # The shared events volume, read where the exporter reads it (mounted read-only there).
    lines = stack.exec("drift-exporter", "sh", "-c", "cat /data/events/*.jsonl").stdout.splitlines()
    predictions = [e for e in map(json.loads, lines) if e["event"] == "prediction"]
    assert len(predictions) == len(BASELINE)
    assert {p["inputs"]["age"] for p in predictions} == {r["age"] for r in BASELINE}

    targets = wait_for("every target up", lambda: [
        t for t in requests.get(f"{stack.url('prometheus')}/api/v1/targets", auth=stack.auth("prometheus"),
                                timeout=10).json()["data"]["activeTargets"]
        if t["health"] == "up"] if all(
        t["health"] == "up" for t in requests.get(f"{stack.url('prometheus')}/api/v1/targets",
                                                  auth=stack.auth("prometheus"), timeout=10).json()["data"]["activeTargets"]
    ) else None, 120)
    assert {t["labels"]["job"]: t["scrapeUrl"] for t in targets} == {
        "model-service": "http://model-service:8000/metrics",
        "drift-exporter": "http://drift-exporter:9108/metrics",
        "prometheus": "http://localhost:9090/metrics",
        "alertmanager": "http://alertmanager:9093/metrics",
    }
    window = wait_for("the exporter's 1h window in Prometheus", lambda: [
        r for r in stack.query('mlpulse_window_predictions{job="drift-exporter", window="1h"}')
        if float(r["value"][1]) == len(BASELINE)], 120)
    assert window[0]["metric"]["model"] == "credit-default"
    scores = stack.query('mlpulse_drift_score{job="drift-exporter", window="1h", statistic="psi"}')
    assert {r["metric"]["feature"] for r in scores} >= {"age", "income"}


def test_drifted_traffic_is_alerted_at_the_webhook_through_alertmanager(stack):
    statuses = send(stack.url("model-service"), DRIFTED, batch=25, concurrency=2)
    assert statuses == {200: len(DRIFTED) // 25}

    def drift_notifications() -> list[dict]:
        out = stack.exec("alert-webhook", "sh", "-c", "cat /app/var/alerts/alerts.jsonl 2>/dev/null || true").stdout
        return [a for n in map(json.loads, out.splitlines()) for a in n["alerts"]
                if a["labels"]["alertname"] == "FeatureDrift" and a["status"] == "firing"]

    alerts = wait_for("FeatureDrift at the webhook", drift_notifications, 240, every=5)
    assert {a["labels"]["team"] for a in alerts} == {"ds"}
    assert all(a["labels"]["model"] == "credit-default" and a["labels"]["stack"] == "mlpulse" for a in alerts)
    assert all(a["annotations"]["runbook_url"].endswith("#featuredrift") for a in alerts)


PROBE = """
import json, urllib.request, urllib.error
out = {}
for name, method, url in [
    ("prometheus_config", "GET", "http://prometheus:9090/api/v1/status/config"),
    ("prometheus_quit", "POST", "http://prometheus:9090/-/quit"),
    ("prometheus_admin", "POST", "http://prometheus:9090/api/v1/admin/tsdb/snapshot"),
    ("alertmanager_silences", "GET", "http://alertmanager:9093/api/v2/silences"),
    ("alertmanager_reload", "POST", "http://alertmanager:9093/-/reload"),
    ("exporter", "GET", "http://drift-exporter:9108/metrics"),
    ("webhook", "GET", "http://alert-webhook:5001/healthz"),
]:
    try:
        out[name] = urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5).status
    except urllib.error.HTTPError as e:
        out[name] = e.code
    except OSError as e:
        out[name] = "unreachable"
print(json.dumps(out))
"""


def test_the_control_plane_is_closed_to_the_model_service(stack):
    seen = json.loads(stack.exec("model-service", "python", "-c", PROBE).stdout)
    # Prometheus shares only the internal scrape network with the service, and wants the password.
    assert seen["prometheus_config"] == seen["prometheus_quit"] == seen["prometheus_admin"] == 401, seen
    # Alertmanager, the exporter and the webhook share no network with the service at all.
    assert seen["alertmanager_silences"] == seen["alertmanager_reload"] == "unreachable", seen
    assert seen["exporter"] == seen["webhook"] == "unreachable", seen
    # With the password, the lifecycle and admin APIs are still off.
    quit_ = requests.post(stack.url("prometheus") + "/-/quit", auth=stack.auth("prometheus"), timeout=10)
    assert quit_.status_code == 403 and "Lifecycle API is not enabled" in quit_.text, quit_.text
    admin = requests.post(stack.url("prometheus") + "/api/v1/admin/tsdb/snapshot", auth=stack.auth("prometheus"),
                          timeout=10)
    assert admin.status_code >= 400 and "admin APIs disabled" in admin.text, (admin.status_code, admin.text)
    assert requests.get(f"{stack.url('alertmanager')}/api/v2/silences", timeout=10).status_code == 401


def test_published_ports_answer_on_loopback_only(stack):
    gateways = set()
    for service in images.SERVICES:
        info = stack.inspect(service)
        bindings = [b for bs in info["NetworkSettings"]["Ports"].values() if bs for b in bs]
        assert bindings and {b["HostIp"] for b in bindings} == {"127.0.0.1"}, (service, bindings)
        assert {int(b["HostPort"]) for b in bindings} == {stack.env.ports[service]}
        gateways |= {n["Gateway"] for n in info["NetworkSettings"]["Networks"].values() if n["Gateway"]}
    # The host's address on the stack's bridges: the published ports must not answer there.
    assert gateways
    for address in gateways:
        for service, port in stack.env.ports.items():
            with socket.socket() as s:
                s.settimeout(3)
                assert s.connect_ex((address, port)) != 0, f"{service} answers on {address}:{port}"


def _bytes(limit: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(limit[:-1]) * units[limit[-1].lower()] if limit[-1].lower() in units else int(limit)


@pytest.mark.parametrize("service", images.SERVICES)
def test_containers_run_as_the_compose_file_states(stack, service):
    wanted = COMPOSE[service]
    host = stack.inspect(service)["HostConfig"]
    assert host["ReadonlyRootfs"] is bool(wanted.get("read_only")) is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == _bytes(wanted["mem_limit"])
    assert host["NanoCpus"] == int(float(wanted["cpus"]) * 1e9)
    assert host["PidsLimit"] == wanted["pids_limit"]
    assert host["RestartPolicy"]["Name"] == wanted["restart"]
    # Inside: the non-root user, no capability at all, the root filesystem refuses writes, and each
    # tmpfs the file states is writable by that user.
    tmpfs = [entry.split(":")[0] for entry in wanted.get("tmpfs", [])]
    probe = ("id -u; grep -E '^Cap(Eff|Prm|Bnd):' /proc/1/status; "
             "touch /probe 2>/dev/null && echo root-writable; "
             + "".join(f"touch {d}/probe && rm {d}/probe && echo writable:{d}; " for d in tmpfs))
    out = stack.exec(service, "sh", "-c", probe, check=False).stdout.split("\n")
    assert int(out[0]) == UIDS[service]
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in out[1:4]}
    assert caps == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0}, caps
    assert "root-writable" not in out
    assert {line.split(":", 1)[1] for line in out if line.startswith("writable:")} == set(tmpfs)
    assert set(host.get("Tmpfs") or {}) == set(tmpfs)


def _stop_main_process_and_await_restart(stack, service: str) -> None:
    """SIGTERM to the container's main process: it exits by itself, and `restart: unless-stopped`
    (not the test) starts it again with the same volumes."""
    before = stack.inspect(service)["RestartCount"]
    stack.exec(service, "sh", "-c", "kill -TERM 1")
    wait_for(f"{service} restarted", lambda: stack.inspect(service)["RestartCount"] == before + 1, 120)
    wait_for(f"{service} healthy again", lambda: stack.healthy(service), HEALTHY_WITHIN)


def test_exporter_and_prometheus_keep_their_state_across_restarts(stack):
    total = len(BASELINE) + len(DRIFTED)
    scored = wait_for("every record binned", lambda: stack.exporter_sample(
        "mlpulse_exporter_events_total", outcome="scored") == total and total, 120)
    window = {"window": "1h"}
    assert stack.exporter_sample("mlpulse_window_predictions", **window) == total
    # A moment Prometheus has scraped, and what it holds up to then.
    at = time.time() - 3
    history = 'count_over_time(mlpulse_window_predictions{job="drift-exporter", window="1h"}[10m])'
    held = wait_for("samples in Prometheus", lambda: stack.query(history, at), 30)

    _stop_main_process_and_await_restart(stack, "drift-exporter")
    # The checkpoint (exporter-state volume) restored positions and windows: the same records,
    # neither counted twice nor lost.
    wait_for("the exporter's windows after the restart",
             lambda: stack.exporter_sample("mlpulse_window_predictions", **window) is not None, 60)
    assert stack.exporter_sample("mlpulse_window_predictions", **window) == total
    assert not stack.exporter_sample("mlpulse_exporter_events_lost_total")
    assert scored

    _stop_main_process_and_await_restart(stack, "prometheus")
    # The TSDB (prometheus-data volume) kept every sample it had before.
    assert stack.query(history, at) == held
    wait_for("the exporter scraped again after both restarts", lambda: [
        r for r in stack.query('mlpulse_window_predictions{job="drift-exporter", window="1h"}')
        if float(r["value"][1]) == total], 60)
