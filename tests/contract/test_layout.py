"""The layout shows the architecture (docs/architecture.md, "Rooms"): who may import whom, where each
image is built from, and the concepts that must be written in one place only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mlpulse", "model_service", "native_stack", "alert_webhook")
# Who may import whom (besides the standard library and third-party packages).
ALLOWED = {
    "mlpulse": {"mlpulse"},
    "model_service": {"mlpulse", "model_service"},
    "native_stack": {"mlpulse", "model_service", "native_stack"},
    "alert_webhook": {"alert_webhook"},
}
OURS = set(PACKAGES) | {"tests", "bench"}


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_each_room_imports_only_what_it_may(package):
    files = python_files(package)
    assert files, f"{package}/ has no Python file"
    wrong = {str(p.relative_to(ROOT)): sorted((imported(p) & OURS) - ALLOWED[package]) for p in files}
    assert not {k: v for k, v in wrong.items() if v}, f"{package} may import only {sorted(ALLOWED[package])}"


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from native_stack.processes import Stack\n    import model_service.app\n")
    assert imported(probe) & OURS == {"native_stack", "model_service"}


def test_the_webhook_receiver_needs_only_the_standard_library():
    for path in python_files("alert_webhook"):
        outside = imported(path) - set(sys.stdlib_module_names) - {"alert_webhook"}
        assert not outside, f"{path.name} imports {outside}: its image installs nothing"


def test_the_library_is_the_only_distribution():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'include = \["mlpulse\*"\]', text)
    assert 'mlpulse = "mlpulse.cli:main"' in text


# -- images --------------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
BUILT = {name: svc["build"]["dockerfile"] for name, svc in COMPOSE["services"].items() if "build" in svc}


def test_every_image_is_built_from_the_folder_of_its_service():
    dockerfiles = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/Dockerfile"))
    nested = [str(p.relative_to(ROOT)) for p in ROOT.rglob("Dockerfile")
              if p.parent.parent != ROOT and ".venv" not in p.parts and ".git" not in p.parts]
    assert not nested, f"Dockerfiles below the top folders: {nested}"
    assert sorted(set(BUILT.values())) == dockerfiles, "a Dockerfile no compose service builds, or the reverse"
    assert set(BUILT) == {"model-service", "drift-exporter", "alert-webhook", "elastic-setup"}


@pytest.mark.parametrize("dockerfile", sorted(set(BUILT.values())))
def test_images_copy_what_they_run_and_run_it_as_a_user(dockerfile):
    text = (ROOT / dockerfile).read_text()
    copies = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    sources = [src for srcs in copies for src in srcs]
    assert not [s for s in sources if s.endswith("__init__.py")], f"{dockerfile} copies a stub package"
    assert "native_stack" not in " ".join(sources) and "tests" not in sources and "bench" not in sources
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), dockerfile


# -- one place for each concept --------------------------------------------------------------------

def definitions(name: str) -> list[str]:
    """Files of the project's Python code (not tests) defining a function or class ``name``."""
    found = []
    for package in (*PACKAGES, "bench"):
        for path in python_files(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                    found.append(str(path.relative_to(ROOT)))
    return found


def literal_users(literal: str) -> list[str]:
    """Files of the project's Python code (not tests) holding the string constant ``literal``."""
    found = []
    for package in (*PACKAGES, "bench"):
        for path in python_files(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(n, ast.Constant) and n.value == literal for n in ast.walk(tree)):
                found.append(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(("name", "home"), [
    ("parse_duration", "mlpulse/durations.py"),
    ("format_duration", "mlpulse/durations.py"),
    ("machine", "bench/machine.py"),
    ("free_port", "native_stack/processes.py"),
])
def test_one_definition(name, home):
    assert definitions(name) == [home]


@pytest.mark.parametrize("statistic", ["js_distance", "wasserstein_norm", "ks_statistic"])
def test_statistic_labels_are_written_only_by_the_drift_module(statistic):
    assert literal_users(statistic) == ["mlpulse/drift.py"]


def test_request_error_reasons_belong_to_the_service():
    assert literal_users("malformed_json") == ["mlpulse/serving/app.py"]


def test_the_ring_layout_is_only_the_rings_business():
    # Benchmarks and tests load counts through Ring.put / Ring.restore, never by naming its arrays.
    for path in python_files("bench"):
        assert '"mmean"' not in path.read_text() and '"m2"' not in path.read_text(), path.name


def test_http_stand_ins_live_in_one_place():
    handlers = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
                if "BaseHTTPRequestHandler" in p.read_text(encoding="utf-8") and p.name != "test_layout.py"]
    assert handlers and all(h.startswith("tests/standins/") for h in handlers), handlers
