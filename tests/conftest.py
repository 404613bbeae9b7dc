"""Shared fixtures: one small real bundle per test session, and apps built from it."""

from __future__ import annotations

import pytest

from model_service.app import ServiceConfig, create_app
from model_service.train import train


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
