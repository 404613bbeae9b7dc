"""docker-compose.yml held together with the configuration files it mounts. Docker cannot run
here, so these checks read the files; the stack test (tests/stack/test_stack.py) runs the stack
where a Docker engine exists."""

import re

import yaml

from tests.helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|ENCRYPTION")


def test_ports_are_published_on_loopback_only():
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_no_secret_has_a_default():
    text = (ROOT / "docker-compose.yml").read_text()
    for var, default in re.findall(r"\$\{(\w+):-([^}]*)\}", text):
        assert not SECRET.search(var), f"{var} has a default ({default!r})"
    env_example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                       if line and not line.startswith("#"))
    for var, value in env_example.items():
        if SECRET.search(var):
            assert value == "", f".env.example gives {var} a value"
    for var in re.findall(r"\$\{(\w+):\?", text):
        assert var in env_example, f"{var} is required by compose but missing from .env.example"


def test_images_are_pinned_and_builds_exist():
    for name, svc in SERVICES.items():
        if "image" in svc:
            image = svc["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: {image} not pinned"
        if "build" in svc:
            assert (ROOT / svc["build"]["dockerfile"]).is_file()


def test_prometheus_targets_and_webhook_are_compose_services():
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    ports = {name: {p.split(":")[-1] for p in svc.get("ports", [])} for name, svc in SERVICES.items()}
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            if host != "localhost":
                assert host in SERVICES and port in ports[host], f"{job['job_name']} scrapes {target}"
    for am in prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]:
        assert am.split(":")[0] in SERVICES
    am_config = (ROOT / "alertmanager" / "alertmanager.yml").read_text()
    for host, port in re.findall(r"url: http://([\w-]+):(\d+)/", am_config):
        assert host in SERVICES and port in ports[host]


def test_mounted_paths_exist_and_match_the_exporter_config():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"
    exporter = (ROOT / "exporter" / "exporter.toml").read_text()
    mounts = SERVICES["drift-exporter"]["volumes"]
    assert 'events = "/data/events/*.jsonl"' in exporter and "events:/data/events:ro" in mounts
    assert 'bundles = "/data/bundles"' in exporter and any(m.startswith("bundle:/data/bundles/") for m in mounts)
    assert "events:/data/events:ro" in SERVICES["logstash"]["volumes"]


def test_our_containers_run_as_non_root():
    for dockerfile in ("model_service/Dockerfile", "exporter/Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0"), dockerfile
