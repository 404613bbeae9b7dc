"""The stack test's compose override swaps only what cannot be had without a registry
(docs/compose.md), and every service of the user's file is either started by the stack test or
named, with its reason, as not built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT
from tests.stack import images
from tests.stack.stackenv import PORTS, write_stack_env

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OVERRIDE = yaml.safe_load(images.OVERRIDE.read_text())
OURS = {"model-service", "drift-exporter", "alert-webhook", "elastic-setup"}
DEBIAN = {"prometheus": "prometheus/Dockerfile.debian", "alertmanager": "alertmanager/Dockerfile.debian"}


def test_every_service_is_started_or_said_not_built():
    assert set(images.SERVICES) | set(images.NOT_BUILT) == set(COMPOSE["services"])
    assert not set(images.SERVICES) & set(images.NOT_BUILT)
    assert all(images.NOT_BUILT.values())


def test_the_override_swaps_images_and_prometheus_config_only():
    services = OVERRIDE["services"]
    assert set(services) == OURS | set(DEBIAN)
    for name, svc in services.items():
        allowed = {"build", "image"} | ({"volumes"} if name == "prometheus" else set())
        assert set(svc) <= allowed, f"{name} overrides {sorted(set(svc) - allowed)}"
        assert svc["image"].startswith("mlpulse-local/"), "test builds never replace a user's image tag"
        assert set(svc["build"]["args"]) == {"BASE_IMAGE"}
    for name in OURS:
        assert set(services[name]["build"]) == {"args"}, f"{name}: the user's Dockerfile and context"
    for name, dockerfile in DEBIAN.items():
        assert services[name]["build"]["dockerfile"] == dockerfile
        assert dockerfile.split("/")[0] == name, "built from the folder of its service"
    # Only the configuration directory is replaced; the data volume stays the user's.
    assert [v.rsplit(":", 2)[1] for v in services["prometheus"]["volumes"]] == ["/etc/prometheus"]
    assert set(OVERRIDE["secrets"]) == set(COMPOSE["secrets"])
    assert "networks" not in OVERRIDE and "volumes" not in OVERRIDE


@pytest.mark.parametrize("dockerfile", ["model_service/Dockerfile", "exporter/Dockerfile",
                                        "alert_webhook/Dockerfile", "elastic_setup/Dockerfile"])
def test_our_dockerfiles_take_their_base_as_a_build_argument(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm\nFROM \$\{BASE_IMAGE\}$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) == 1
    # Images get the versions the tests ran with, not whatever PyPI serves on the day of the build.
    for install in re.findall(r"pip install [^\n]*", text):
        assert "-c constraints.txt" in install, f"{dockerfile}: {install} without the constraints"


@pytest.mark.parametrize("service", sorted(DEBIAN))
def test_debian_images_mirror_the_official_ones(service):
    text = (ROOT / DEBIAN[service]).read_text()
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "65534:65534"  # nobody, as prom/* images
    data = COMPOSE["services"][service]["command"][1].split("=", 1)[1]  # --storage.*path=
    assert f"chown 65534:65534 {data}" in text and f"WORKDIR {data}" in text
    assert re.search(r"^ENTRYPOINT \[\"/usr/bin/", text, re.M)


def test_published_ports_are_variables_with_the_usual_defaults():
    for variable, (service, port) in PORTS.items():
        assert COMPOSE["services"][service]["ports"] == [f"127.0.0.1:${{{variable}:-{port}}}:{port}"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file_with_the_override(tmp_path):
    env = write_stack_env(tmp_path)
    r = subprocess.run(images.compose_command(env.env_file, "mlpulse-contract") + ["config"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MLPULSE_LOCAL_BASE": "mlpulse-local/debian:probe"})
    assert r.returncode == 0, r.stderr
    rendered = yaml.safe_load(r.stdout)["services"]
    assert rendered["prometheus"]["volumes"][0].startswith(f"{tmp_path / 'prometheus'}:/etc/prometheus")
    assert rendered["model-service"]["ports"][0].startswith(f"127.0.0.1:{env.ports['model-service']}:8000")
    assert rendered["model-service"]["build"]["dockerfile"] == "model_service/Dockerfile"
    assert rendered["model-service"]["build"]["args"] == {"BASE_IMAGE": "mlpulse-local/debian:probe"}
    # Everything else of a started service is the user's file as rendered without the override.
    for name in images.SERVICES:
        user = COMPOSE["services"][name]
        for key in ("networks", "read_only", "cap_drop", "security_opt", "mem_limit", "pids_limit",
                    "healthcheck", "restart", "tmpfs"):
            if key in user:
                assert key in rendered[name], (name, key)


def test_the_base_is_keyed_by_its_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "LOCAL_CA_DIR", tmp_path)
    empty = images.base_tag()
    assert empty == images.base_tag() and empty.startswith(f"mlpulse-local/debian:{images.SUITE}-")
    (tmp_path / "a.crt").write_text("one CA")
    with_ca = images.base_tag()
    monkeypatch.setattr(images, "PACKAGES", (*images.PACKAGES, "curl"))
    assert len({empty, with_ca, images.base_tag()}) == 3
