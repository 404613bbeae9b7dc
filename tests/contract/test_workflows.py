"""The CI workflows: valid against the GitHub workflow schema (the one check-jsonschema vendors,
so the check runs offline), and the stack workflow does what docs/security.md and README.md say:
`make env`, `docker compose up`, every long-running service healthy, the closed stack proven,
the stack test, and a tear-down whatever happened."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = shutil.which("check-jsonschema") or (
    str(Path(sys.executable).parent / "check-jsonschema") if (Path(sys.executable).parent / "check-jsonschema").exists()
    else None)


def steps(path: Path) -> list[dict]:
    workflow = yaml.safe_load(path.read_text())
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.mark.skipif(CHECK_JSONSCHEMA is None, reason="check-jsonschema is not installed (dev extra)")
def test_workflows_validate_against_the_github_schema():
    assert WORKFLOWS
    r = subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_stack_workflow_brings_the_stack_up_tests_it_and_tears_it_down():
    path = ROOT / ".github" / "workflows" / "stack.yml"
    run = [s.get("run", "") for s in steps(path)]
    text = "\n".join(run)
    order = ["make env", "docker compose up -d", "tests/stack", "docker compose down -v"]
    positions = [text.find(cmd) for cmd in order]
    assert -1 not in positions and positions == sorted(positions), positions
    (teardown,) = [s for s in steps(path) if "docker compose down" in s.get("run", "")]
    assert teardown.get("if") == "always()"
    # It waits for the healthcheck of every long-running compose service.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    long_running = {name for name, svc in compose.items() if svc.get("restart", "no") != "no"}
    (wait,) = [r for r in run if "Health.Status" in r]
    listed = set(wait.split("for service in ", 1)[1].split(";", 1)[0].split())
    assert listed == long_running
    # Nothing in it is a secret: the secrets come from make env on the runner.
    assert "password" not in yaml.safe_load(path.read_text()).get("env", {})
