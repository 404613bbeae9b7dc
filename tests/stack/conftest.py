"""The stack tests' shared state: which test of a module failed, so the compose stack's fixture
prints ``ps`` and the logs before tearing it down."""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.module.__dict__.setdefault("FAILED", []).append(item.name)
