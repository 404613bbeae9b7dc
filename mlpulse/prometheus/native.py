"""Prometheus configuration for native runs, derived from the committed ``prometheus/prometheus.yml``.

The committed file (docker compose host names) is the single source of truth: a native run (the
demo, the integration tests) loads it, replaces the scrape targets with loopback addresses and,
if asked, shortens the intervals and the alerts' ``for``, and writes the result with copies of
the rule files to a directory of its own::

    from mlpulse.prometheus.native import write_native_config

    path = write_native_config(
        tmp_dir,
        targets={"model-service": "127.0.0.1:8000", "drift-exporter": "127.0.0.1:9108",
                 "prometheus": "127.0.0.1:9090"},
        alertmanagers=["127.0.0.1:9093"],            # None: no alerting section
        scrape_interval="1s", evaluation_interval="1s", for_override="0s",
    )
    # prometheus --config.file=<path> --storage.tsdb.path=... --web.listen-address=127.0.0.1:9090

or ``mlpulse generate native --out DIR --target model-service=127.0.0.1:8000 ...``. Paths are
relative to the project's root (the current directory) unless given.
Jobs without a target are dropped; a target for a job the committed file does not have is an
error, so the two cannot drift apart silently.
"""

from __future__ import annotations

import copy
import glob
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mlpulse.durations import parse_duration

# The committed files, relative to the project's root (the current directory unless a caller
# passes another path).
CONFIG_FILE = Path("prometheus") / "prometheus.yml"
ALERTMANAGER_FILE = Path("alertmanager") / "alertmanager.yml"
RULES_SUBDIR = "rules"

Targets = Mapping[str, str | Sequence[str]]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, so generated files stay readable."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)


def _check_duration(text: str) -> float:
    return parse_duration(text, prometheus=True)


def load_config(path: str | Path = CONFIG_FILE) -> dict[str, Any]:
    """The committed configuration, as a dict."""
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a Prometheus configuration")
    return config


def job_names(config: Mapping[str, Any]) -> list[str]:
    return [job["job_name"] for job in config.get("scrape_configs") or []]


def rule_files(config_path: str | Path = CONFIG_FILE, config: Mapping[str, Any] | None = None) -> list[Path]:
    """The rule files the configuration names, globs expanded relative to its directory, in order."""
    config_path = Path(config_path)
    config = load_config(config_path) if config is None else config
    found: list[Path] = []
    for pattern in config.get("rule_files") or []:
        full = pattern if Path(pattern).is_absolute() else str(config_path.parent / pattern)
        for name in sorted(glob.glob(full)):
            if Path(name) not in found:
                found.append(Path(name))
    return found


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def native_config(
    targets: Targets,
    *,
    alertmanagers: Sequence[str] | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    external_labels: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of the committed configuration for a native run.

    ``targets`` maps job names to ``host:port`` (or a list of them); jobs it does not name are
    dropped, and a name the configuration does not have raises ``ValueError``. ``alertmanagers``
    replaces the Alertmanager addresses (``None`` removes the alerting section). Intervals
    override the global ones; the scrape timeout is lowered to the scrape interval if needed.
    ``external_labels`` are merged over the committed ones. ``rule_files`` is left as it is:
    ``write_native_config`` rewrites it for the copied rules.
    """
    out = copy.deepcopy(dict(load_config() if config is None else config))
    known = job_names(out)
    unknown = sorted(set(targets) - set(known))
    if unknown:
        raise ValueError(f"no scrape job {unknown} in the Prometheus configuration; jobs: {known}")

    jobs = []
    for job in out.get("scrape_configs") or []:
        name = job["job_name"]
        if name not in targets:
            continue
        job = dict(job)
        for key in [k for k in job if k.endswith("_sd_configs")]:
            del job[key]
        job["static_configs"] = [{"targets": _as_list(targets[name])}]
        jobs.append(job)
    out["scrape_configs"] = jobs

    if alertmanagers is None:
        out.pop("alerting", None)
    else:
        out["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}

    glob_cfg = out.setdefault("global", {})
    if scrape_interval is not None:
        _check_duration(scrape_interval)
        glob_cfg["scrape_interval"] = scrape_interval
    if evaluation_interval is not None:
        _check_duration(evaluation_interval)
        glob_cfg["evaluation_interval"] = evaluation_interval
    interval = glob_cfg.get("scrape_interval", "1m")
    timeout = glob_cfg.get("scrape_timeout", "10s")
    if _check_duration(timeout) > _check_duration(interval):
        glob_cfg["scrape_timeout"] = interval
    if external_labels:
        glob_cfg["external_labels"] = {**(glob_cfg.get("external_labels") or {}), **external_labels}
    return out


def native_rules(path: str | Path, for_override: str | None = None) -> dict[str, Any]:
    """A rule file as a dict, every alert's ``for`` replaced by ``for_override`` if given."""
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f) or {}
    if for_override is not None:
        _check_duration(for_override)
        for group in rules.get("groups") or []:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    rule["for"] = for_override
    return rules


def write_native_config(
    directory: str | Path,
    targets: Targets,
    *,
    alertmanagers: Sequence[str] | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    external_labels: Mapping[str, str] | None = None,
    for_override: str | None = None,
    config_path: str | Path = CONFIG_FILE,
) -> Path:
    """Write ``prometheus.yml`` and ``rules/*.yml`` for a native run into ``directory``.

    Arguments as in ``native_config``; ``for_override`` (e.g. ``"0s"``) replaces the ``for`` of
    every alert in the copied rules, which are otherwise copied byte for byte. Returns the path
    of the written ``prometheus.yml``, whose ``rule_files`` name the copies relatively.
    """
    directory = Path(directory)
    base = load_config(config_path)
    config = native_config(targets, alertmanagers=alertmanagers, scrape_interval=scrape_interval,
                           evaluation_interval=evaluation_interval, external_labels=external_labels,
                           config=base)
    rules_dir = directory / RULES_SUBDIR
    rules_dir.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for src in rule_files(config_path, base):
        if src.name in {Path(c).name for c in copied}:
            raise ValueError(f"two rule files are named {src.name}; rename one")
        dst = rules_dir / src.name
        if for_override is None:
            shutil.copyfile(src, dst)
        else:
            dst.write_text(_dump(native_rules(src, for_override)), encoding="utf-8")
        copied.append(f"{RULES_SUBDIR}/{src.name}")
    config["rule_files"] = copied
    out = directory / "prometheus.yml"
    out.write_text("# Generated by mlpulse.prometheus.native from prometheus/prometheus.yml: do not edit.\n"
                   + _dump(config), encoding="utf-8")
    return out


def write_native_alertmanager_config(
    directory: str | Path,
    webhook_url: str,
    *,
    group_wait: str | None = None,
    group_interval: str | None = None,
    repeat_interval: str | None = None,
    config_path: str | Path = ALERTMANAGER_FILE,
) -> Path:
    """Write a native copy of the committed ``alertmanager.yml`` (and its templates) into
    ``directory``: every webhook points at ``webhook_url``, and the route timings may be shortened
    (for tests). Routes, inhibitions and receivers stay exactly those of the committed file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = Path(config_path)
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for receiver in config.get("receivers") or []:
        for hook in receiver.get("webhook_configs") or []:
            hook["url"] = webhook_url
    timings = {"group_wait": group_wait, "group_interval": group_interval, "repeat_interval": repeat_interval}

    def shorten(route: dict[str, Any]) -> None:
        for key, value in timings.items():
            if value is not None and (key in route or route is config["route"]):
                _check_duration(value)
                route[key] = value
        for child in route.get("routes") or []:
            shorten(child)

    shorten(config["route"])
    templates = config_path.parent / "templates"
    if templates.is_dir():
        shutil.copytree(templates, directory / "templates", dirs_exist_ok=True)
    out = directory / "alertmanager.yml"
    out.write_text(_dump(config), encoding="utf-8")
    return out
