"""Shared fixtures: one small real bundle per test session, and apps built from it.

The suite is split by kind, one folder each, and every test is marked with its folder's kind
(``pytest -m unit``, ``-m "not stack"``):

- ``unit/``: one module or the service's API in process, no other process, no server;
- ``contract/``: committed files, generators, recorded API references and stand-ins held together
  (some also run promtool, amtool, Prometheus or Alertmanager);
- ``integration/``: real processes (gunicorn, the exporter, Prometheus, Alertmanager) on 127.0.0.1;
- ``stack/``: the Docker compose stack; skipped where there is none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpulse.serving.app import ServiceConfig, create_app
from model_service.train import train

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "contract", "integration", "stack")


def pytest_collection_modifyitems(config, items):
    """Mark each test with the kind of the folder it is in (tests/<kind>/...)."""
    for item in items:
        try:
            kind = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:  # not under tests/
            continue
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    """A real bundle, trained on 8000 synthetic rows (a few seconds)."""
    path = tmp_path_factory.mktemp("bundle")
    train(path, rows=8000, seed=3)
    return path


@pytest.fixture
def config(bundle_dir, tmp_path) -> ServiceConfig:
    return ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "events"))


@pytest.fixture
def app(config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()
