"""The closed stack (docs/security.md): docker-compose.yml read as data, with the files it mounts.

Networks keep the model service away from every admin endpoint; every long-running service has a
healthcheck on its own port, limits, no capability, no privilege gain and a read-only root (or a
stated reason); every secret comes from a file or is a required variable; Prometheus and
Alertmanager run with their web configuration and no lifecycle API; `make env` writes what compose
mounts. Docker cannot run here: `docker-compose config` validates the file where it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from mlpulse.prometheus import native as pc
from tests.helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|ENCRYPTION")
# Where the Prometheus / Alertmanager HTTP APIs (admin endpoints included) are reachable.
ADMIN = {"prometheus", "alertmanager"}
# Services the model service may share a network with, and why: Prometheus scrapes its /metrics.
SERVICE_PEERS = {"prometheus"}
# Capabilities a service may add back, and why (the one-shot certificate job chowns as root).
CAP_ADD = {"es-certs": {"CHOWN", "DAC_OVERRIDE", "FOWNER"}}
DOCKER_COMPOSE = shutil.which("docker-compose")


def long_running(svc: dict) -> bool:
    return svc.get("restart", "no") != "no"


def networks(svc: dict) -> set[str]:
    nets = svc.get("networks", [])
    return set(nets) if isinstance(nets, list) else set(nets)


def container_ports(svc: dict) -> set[str]:
    return {str(p).rsplit(":", 1)[-1] for p in svc.get("ports", [])}


def healthcheck_text(svc: dict) -> str:
    test = svc.get("healthcheck", {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else test


def secret_mounts(svc: dict) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])}


# --- networks --------------------------------------------------------------------------------

def test_every_service_names_its_networks():
    """No service falls back to the default network, where everything reaches everything."""
    for name, svc in SERVICES.items():
        assert networks(svc) or svc.get("network_mode") == "none", f"{name} is on the default network"
        assert networks(svc) <= set(COMPOSE["networks"]), name


def test_the_model_service_reaches_no_admin_endpoint_but_prometheus_scrapes_it():
    service = SERVICES["model-service"]
    peers = {name for name, svc in SERVICES.items() if name != "model-service" and networks(svc) & networks(service)}
    assert peers == SERVICE_PEERS, f"the model service shares a network with {sorted(peers - SERVICE_PEERS)}"
    shared = networks(service) & networks(SERVICES["prometheus"])
    assert shared and all(COMPOSE["networks"][n].get("internal") is True for n in shared), \
        "the scrape network must be internal"
    # Alertmanager (silences), Logstash's API, the exporter, the webhook, Grafana, Elasticsearch
    # and Kibana are out of the service's reach.
    for name in ("alertmanager", "logstash", "drift-exporter", "alert-webhook", "grafana", "elasticsearch", "kibana"):
        assert not networks(SERVICES[name]) & networks(service), name
    # What it can reach (Prometheus) wants a password and has no lifecycle API.
    prom = SERVICES["prometheus"]["command"]
    assert "--web.enable-lifecycle" not in prom and any(a.startswith("--web.config.file=") for a in prom)


def test_prometheus_and_alertmanager_run_with_their_web_configuration():
    for server in ADMIN:
        svc = SERVICES[server]
        (flag,) = [a for a in svc["command"] if a.startswith("--web.config.file=")]
        secret = flag.split("=", 1)[1].removeprefix(pc.SECRETS_MOUNT + "/")
        assert secret == pc.WEB_SECRETS[server] and secret in secret_mounts(svc), server
        assert not any("lifecycle" in a for a in svc["command"]), server
        committed = yaml.safe_load((ROOT / pc.WEB_FILES[server]).read_text())
        assert "basic_auth_users" not in committed, f"{pc.WEB_FILES[server]} must not hold a hash"


def test_prometheus_authenticates_with_mounted_password_files():
    config = pc.load_config(ROOT / pc.CONFIG_FILE)
    mounted = secret_mounts(SERVICES["prometheus"])
    blocks = pc._basic_auth_blocks(config)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert "basic_auth" in jobs["prometheus"] and "basic_auth" in jobs["alertmanager"]
    assert "basic_auth" in config["alerting"]["alertmanagers"][0]
    for block in blocks:
        assert set(block) == {"username", "password_file"} and block["username"] == pc.WEB_USER
        server = pc.secret_server(block["password_file"])
        assert server and pc.PASSWORD_SECRETS[server] in mounted, block
    client = yaml.safe_load((ROOT / "alertmanager" / "web-client.yml").read_text())
    assert client["basic_auth"]["password_file"] == f"{pc.SECRETS_MOUNT}/{pc.PASSWORD_SECRETS['alertmanager']}"
    assert pc.PASSWORD_SECRETS["alertmanager"] in secret_mounts(SERVICES["alertmanager"])


def test_grafana_data_sources_authenticate_from_files():
    prov = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources" / "mlpulse.yml").read_text())
    by_uid = {d["uid"]: d for d in prov["datasources"]}
    grafana = SERVICES["grafana"]
    for uid, server in (("mlpulse-prometheus", "prometheus"), ("mlpulse-alertmanager", "alertmanager")):
        ds = by_uid[uid]
        assert ds["basicAuth"] is True and ds["basicAuthUser"] == pc.WEB_USER
        assert ds["secureJsonData"]["basicAuthPassword"] == \
            f"$__file{{{pc.SECRETS_MOUNT}/{pc.PASSWORD_SECRETS[server]}}}"
        assert pc.PASSWORD_SECRETS[server] in secret_mounts(grafana)
    for ds in prov["datasources"]:
        for key, value in (ds.get("secureJsonData") or {}).items():
            m = re.fullmatch(r"\$__file\{(.+)\}|\$(\w+)", value)
            assert m, f"{ds['name']}: {key} is a literal"
            if m.group(2):  # an environment variable: required in the Grafana container
                assert re.fullmatch(r"\$\{" + m.group(2) + r":\?[^}]+\}", str(grafana["environment"][m.group(2)]))


# --- secrets ---------------------------------------------------------------------------------

def test_every_secret_is_a_file_or_a_required_variable():
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            if not SECRET.search(key):
                continue
            if key.endswith("_FILE"):
                path = str(value)
                assert path.startswith(pc.SECRETS_MOUNT + "/"), f"{name}: {key}={value}"
                assert path.rsplit("/", 1)[1] in secret_mounts(svc), f"{name}: {key} names an unmounted secret"
            else:
                assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", str(value)), f"{name}: {key} is neither a file " \
                                                                                   "nor a required variable"
    for secret in COMPOSE["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./var/secrets/")


def test_make_env_writes_every_secret_compose_needs(tmp_path):
    env, secrets_dir = tmp_path / ".env", tmp_path / "secrets"
    written = pc.write_stack_secrets(env, secrets_dir, example=ROOT / ".env.example", root=ROOT, rounds=4)
    assert written[0] == env
    files = {p.name for p in secrets_dir.iterdir()}
    assert files == {s["file"].removeprefix("./var/secrets/") for s in COMPOSE["secrets"].values()}
    assert secrets_dir.stat().st_mode & 0o777 == 0o700 and env.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required and required <= set(pc.required_env(ROOT / ".env.example"))
    for var in pc.required_env(ROOT / ".env.example"):
        assert len(values[var]) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", values[var]), var
    assert len({values[v] for v in pc.required_env(ROOT / ".env.example")}) == len(pc.required_env(ROOT / ".env.example"))
    assert values["COMPOSE_PROJECT_NAME"] == "mlpulse"

    import bcrypt

    for server in pc.WEB_FILES:
        password = (secrets_dir / pc.PASSWORD_SECRETS[server]).read_text()
        web = yaml.safe_load((secrets_dir / pc.WEB_SECRETS[server]).read_text())
        (hashed,) = web["basic_auth_users"].values()
        assert list(web["basic_auth_users"]) == [pc.WEB_USER] and bcrypt.checkpw(password.encode(), hashed.encode())
        assert password not in (secrets_dir / pc.WEB_SECRETS[server]).read_text()
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "web-config", str(secrets_dir / pc.WEB_SECRETS[server])],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr

    # Never overwritten; a missing half is written again on its own.
    before = env.read_text()
    with pytest.raises(FileExistsError):
        pc.write_stack_secrets(env, secrets_dir, example=ROOT / ".env.example", root=ROOT, rounds=4)
    shutil.rmtree(secrets_dir)
    assert pc.write_stack_secrets(env, secrets_dir, example=ROOT / ".env.example", root=ROOT, rounds=4)[0] != env
    assert env.read_text() == before


def test_web_configuration_refuses_committed_hashes_and_empty_users(tmp_path):
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "web.yml").write_text("basic_auth_users:\n  admin: $2b$04$abc\n")
    with pytest.raises(ValueError, match="never committed"):
        pc.web_config("prometheus", {"x": "y"}, root=tmp_path)
    with pytest.raises(ValueError, match="open"):
        pc.web_config("prometheus", {}, root=ROOT)
    with pytest.raises(ValueError, match="bcrypt"):
        pc.web_config("prometheus", {"mlpulse": "plain-text"}, root=ROOT)


# --- hardening -------------------------------------------------------------------------------

def test_every_long_running_service_has_a_healthcheck_on_its_own_port():
    for name, svc in SERVICES.items():
        if not long_running(svc):
            continue
        check = healthcheck_text(svc)
        assert check, f"{name} has no healthcheck"
        ports = container_ports(svc)
        assert ports and any(re.search(rf"(localhost|127\.0\.0\.1):{p}\b", check) for p in ports), \
            f"{name}: the healthcheck does not ask its own port {sorted(ports)}: {check}"
    # Prometheus and Alertmanager answer /-/healthy only with the password.
    assert "/run/secrets/prometheus_password" in healthcheck_text(SERVICES["prometheus"])
    assert "/etc/alertmanager/web-client.yml" in healthcheck_text(SERVICES["alertmanager"])


def test_every_service_drops_capabilities_and_privilege_gain():
    for name, svc in SERVICES.items():
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert set(svc.get("cap_add", [])) == CAP_ADD.get(name, set()), name
        assert not svc.get("privileged"), name


def test_root_filesystems_are_read_only_or_say_why_not():
    writable = {}
    for name, svc in SERVICES.items():
        if svc.get("read_only") is True:
            continue
        reason = svc.get("x-writable-root", "")
        assert len(reason) > 20, f"{name}: writable root filesystem without a reason (x-writable-root)"
        writable[name] = reason
    # Ours and the Prometheus / Grafana images are read-only; the Elastic images are the exceptions.
    assert set(writable) <= {"es-certs", "elasticsearch", "logstash", "kibana"}
    security = (ROOT / "docs" / "security.md").read_text()
    for name in writable:
        assert f"`{name}`" in security, f"docs/security.md does not list {name}'s writable root"


def test_every_service_has_memory_and_cpu_limits_sized_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    table = {}
    for line in readme.splitlines():
        m = re.fullmatch(r"\|\s*`([\w-]+)`\s*\|\s*([\w.]+)\s*\|\s*([\d.]+)\s*\|.*", line.strip())
        if m and m.group(1) in SERVICES:
            table[m.group(1)] = (m.group(2), float(m.group(3)))
    for name, svc in SERVICES.items():
        assert "mem_limit" in svc and "cpus" in svc, f"{name} has no memory or CPU limit"
        assert "deploy" not in svc, f"{name}: deploy.resources is ignored by docker-compose 1.29"
        assert table.get(name) == (svc["mem_limit"], float(svc["cpus"])), f"README.md's limits table: {name}"


def test_the_bundle_is_mounted_read_only_in_the_service():
    mounts = SERVICES["model-service"]["volumes"]
    assert any(m.startswith("bundle:") and m.endswith(":ro") for m in mounts), mounts
    # Everything a read-only service writes is a volume or a tmpfs.
    assert any(t.startswith("/tmp") for t in SERVICES["model-service"]["tmpfs"])


def test_alertmanager_image_has_the_advisory_fix_and_the_natives_run_the_same_config():
    image = SERVICES["alertmanager"]["image"]
    assert image == "prom/alertmanager:v0.25.1", image
    assert SERVICES["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("alertmanager is not installed")
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert re.search(r"version 0\.25\.", r.stdout + r.stderr), r.stdout + r.stderr


# --- docker-compose itself -------------------------------------------------------------------

@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed (Debian package docker-compose)")
def test_docker_compose_validates_the_file_and_requires_the_secrets(tmp_path):
    env = tmp_path / ".env"
    pc.write_stack_secrets(env, tmp_path / "secrets", example=ROOT / ".env.example", root=ROOT, rounds=4)
    clean = {k: v for k, v in os.environ.items() if not SECRET.search(k) and k != "COMPOSE_FILE"}
    r = subprocess.run([DOCKER_COMPOSE, "--env-file", str(env), "-f", str(ROOT / "docker-compose.yml"), "config"],
                       capture_output=True, text=True, timeout=60, env=clean)
    assert r.returncode == 0, r.stderr
    rendered = yaml.safe_load(r.stdout)
    assert set(rendered["services"]) == set(SERVICES)
    # Without the secrets of .env, compose refuses: no secret has a default.
    empty = tmp_path / "empty.env"
    empty.write_text("COMPOSE_PROJECT_NAME=mlpulse\n")
    r = subprocess.run([DOCKER_COMPOSE, "--env-file", str(empty), "-f", str(ROOT / "docker-compose.yml"), "config",
                        "-q"], capture_output=True, text=True, timeout=60, env=clean)
    assert r.returncode != 0 and "in .env" in r.stderr
