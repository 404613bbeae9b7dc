"""Every generated file of the project, written or checked in one place (``mlpulse generate``).

Five generators, each turning the project's sources of truth into files:

- ``elastic``: the index template (from the bundles' feature schemas), ILM policy, roles and
  Kibana saved objects (``mlpulse.elastic``); needs at least one bundle;
- ``grafana``: the dashboards, from the alert thresholds, the exporter's configuration and the
  index template (``mlpulse.grafana``);
- ``drift-rules``: the recording rules that compute drift in Prometheus from the service's bin
  counters, and their promtool tests (``mlpulse.prometheus.drift_rules``, docs/prometheus-drift.md);
- ``native``: Prometheus and Alertmanager configurations for a run on 127.0.0.1, derived from the
  committed ``prometheus/`` and ``alertmanager/`` (``mlpulse.prometheus.native``). They are not
  committed: they are written to ``--native-out``, and ``--check`` only proves they still render;
- ``kubernetes``: the generated parts of the Kustomize base (``deploy/kubernetes/base/generated/``):
  PrometheusRule objects from the rules files, dashboard ConfigMaps, the Logstash pipeline
  (``mlpulse.kubernetes``).

``elastic`` runs before ``grafana``, which reads the template it writes; ``kubernetes`` runs after
``drift-rules`` and ``grafana``, whose rules and dashboards it copies. ``--check`` writes nothing
and names every committed file that differs from what its generator writes, or that sits where a
generator owns every file without being written by it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ARTIFACTS = ("elastic", "drift-rules", "grafana", "native", "kubernetes")
COMMITTED = ("elastic", "drift-rules", "grafana", "kubernetes")

# The native stack's loopback addresses (the ports docs/architecture.md lists for `make demo`).
NATIVE_TARGETS = {"model-service": "127.0.0.1:8000", "drift-exporter": "127.0.0.1:9108",
                  "prometheus": "127.0.0.1:9090"}
NATIVE_ALERTMANAGER = "127.0.0.1:9093"
NATIVE_WEBHOOK = "http://127.0.0.1:5001/"


class GenerateError(Exception):
    """A generator cannot run: the message names the missing input."""


@dataclass
class Report:
    written: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # "<path>: <why>"


def committed_files(name: str, root: Path, bundles: Sequence[str | Path]) -> tuple[dict[str, str], tuple[str, ...]]:
    """({path relative to root: content}, globs of files the generator owns wholly) of one generator."""
    if name == "elastic":
        if not bundles:
            raise GenerateError("the elastic artefacts are generated from bundles: pass --bundle DIR")
        from mlpulse.elastic.mapping import models_from_bundles
        from mlpulse.elastic.setup import render_files

        return render_files(models_from_bundles(bundles)), ()
    if name == "drift-rules":
        from mlpulse.prometheus.drift_rules import render_files as render_drift_rules

        return render_drift_rules(), ()
    if name == "grafana":
        from mlpulse.grafana.dashboards import DASHBOARDS_DIR, render_files

        return render_files(root), (str(DASHBOARDS_DIR / "*.json"),)
    if name == "kubernetes":
        from mlpulse.kubernetes.manifests import GENERATED_DIR, render_files

        return render_files(root), (str(GENERATED_DIR / "*.yaml"),)
    raise ValueError(f"{name!r} is not a committed artefact; known: {COMMITTED}")


def write_native(root: Path, out: Path) -> list[Path]:
    """Native Prometheus and Alertmanager configurations for the default loopback ports, each with
    its web configuration (basic auth, a fresh random password: ``web.yml`` and ``password`` next
    to the configuration; run with ``--web.config.file``)."""
    from mlpulse.prometheus.native import (
        ALERTMANAGER_FILE,
        CONFIG_FILE,
        write_native_alertmanager_config,
        write_native_config,
        write_web_auth,
    )

    auths = {server: write_web_auth(out / server, server, root=root) for server in ("prometheus", "alertmanager")}
    prometheus = write_native_config(out / "prometheus", NATIVE_TARGETS, alertmanagers=[NATIVE_ALERTMANAGER],
                                     password_files={s: a.password_file for s, a in auths.items()},
                                     config_path=root / CONFIG_FILE)
    alertmanager = write_native_alertmanager_config(out / "alertmanager", NATIVE_WEBHOOK,
                                                    config_path=root / ALERTMANAGER_FILE)
    return [prometheus, alertmanager, auths["prometheus"].web_config, auths["alertmanager"].web_config]


def generate(names: Sequence[str], root: Path, bundles: Sequence[str | Path], *, check: bool = False,
             native_out: Path | None = None) -> Report:
    report = Report()
    for name in [n for n in ARTIFACTS if n in names]:  # dependency order, whatever the caller's
        if name == "native":
            if check or native_out is None:
                with tempfile.TemporaryDirectory() as tmp:  # proves the committed configs render
                    write_native(root, Path(tmp))
            if native_out is not None and not check:
                report.written += [str(p) for p in write_native(root, native_out)]
            continue
        files, owned = committed_files(name, root, bundles)
        for rel, content in files.items():
            path = root / rel
            if check:
                if not path.is_file():
                    report.stale.append(f"{rel}: missing")
                elif path.read_text(encoding="utf-8") != content:
                    report.stale.append(f"{rel}: differs from what the generator writes")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            report.written.append(rel)
        for pattern in owned:
            for path in sorted(root.glob(pattern)):
                rel = str(path.relative_to(root))
                if rel not in files:
                    report.stale.append(f"{rel}: not written by the {name} generator (remove it)")
    return report
