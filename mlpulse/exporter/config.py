"""Exporter configuration: defaults < TOML file < environment < command line.

Every option has one definition here (name, type, default, help); the CLI, the environment
variables (``MLPULSE_EXPORTER_<NAME>``) and the file keys are derived from it, so they cannot
disagree.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mlpulse import drift
from mlpulse.cardinality import Budget
from mlpulse.durations import format_duration, parse_duration

ENV_PREFIX = "MLPULSE_EXPORTER_"
SOURCES = ("files", "elasticsearch")
# Secrets: from the environment only, never a command-line argument (visible to every local user)
# nor a key of the config file; each has a ``<name>_file`` option instead.
ENV_ONLY = frozenset({"elasticsearch_password"})


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the option and the problem."""


@dataclass
class ExporterConfig:
    events: str = "var/events/*.jsonl"
    bundles: str = "var/bundle"
    bundle_digests: str = ""
    bind: str = "127.0.0.1"
    port: int = 9108
    windows: str = "5m,1h,24h"
    slice: str = "10s"
    evaluate_every: str = "10s"
    poll_every: str = "1s"
    min_count: int = drift.DEFAULT_MIN_COUNT
    method: str = "psi"
    threshold: float = 0.0  # 0: the method's default
    decision: str = "threshold"
    alpha: float = drift.DEFAULT_ALPHA
    correction: str = "bh"
    start: str = "end"
    checkpoint: str = "var/exporter/checkpoint.json"
    checkpoint_every: str = "60s"
    rescan_bundles_every: str = "60s"
    source: str = "files"
    elasticsearch_url: str = ""
    elasticsearch_index: str = "logs-mlpulse.predictions-default"
    elasticsearch_username: str = ""
    elasticsearch_password: str = field(default="", repr=False)
    elasticsearch_password_file: str = ""
    elasticsearch_ca_file: str = ""
    elasticsearch_timeout: str = "10s"
    # Realized quality (mlpulse.exporter.quality, files source only).
    quality_windows: str = "5m,1h,24h,7d"
    min_labels: int = 100
    feedback_horizon: str = "30d"
    feedback_max_predictions: int = 200_000
    feedback_max_pending: int = 50_000
    # Label budgets per model version (mlpulse.cardinality, docs/cardinality.md).
    max_series_per_version: int = 10_000
    max_classes: int = 100
    max_versions_per_model: int = 3

    HELP = {
        "events": "glob of the prediction event files to tail",
        "bundles": "comma-separated bundle directories, or directories holding bundles (one per model version)",
        "bundle_digests": "comma-separated digests (mlpulse bundle digest) every bundle must match; '' accepts any "
        "verified bundle",
        "bind": "address to serve /metrics on",
        "port": "port to serve /metrics on",
        "windows": "sliding windows, comma-separated durations",
        "slice": "time slice of the binned counts; windows are whole numbers of slices",
        "evaluate_every": "how often the statistics are recomputed",
        "poll_every": "how often the event files are read",
        "min_count": "no statistic for a feature with fewer live values in a window (series absent)",
        "method": "effect size that decides drift: psi, js or wasserstein",
        "threshold": "drift threshold of the effect size (0: the method's default, see docs)",
        "decision": "threshold: the effect size reaches the threshold and the drift test (two-sample chi-square, "
        "and KS for numbers) is below alpha; test: the drift test alone, below alpha (flags any shift the window "
        "can resolve); either way a stationary window is flagged at a rate of at most alpha",
        "alpha": "false-alarm rate: the (corrected) drift test must be below this; 1 disables it (decision threshold "
        "only)",
        "correction": "p-value correction across a model's features: none, bonferroni or bh",
        "start": "files present at start-up without a checkpoint: end (skip history) or beginning (replay)",
        "checkpoint": "file for read positions and window counts ('' disables); restarts resume from it",
        "checkpoint_every": "how often the checkpoint is written",
        "rescan_bundles_every": "how often bundle directories are scanned for new model versions",
        "source": "where events come from: files (tail the events glob) or elasticsearch (one aggregation "
        "search per model version and window; events, start and checkpoint are then unused)",
        "elasticsearch_url": "Elasticsearch base URL, e.g. https://es.example:9200 (source = elasticsearch)",
        "elasticsearch_index": "data stream, index or pattern holding the prediction events",
        "elasticsearch_username": "basic-auth user; its password from $MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD "
        "or elasticsearch_password_file",
        "elasticsearch_password": "environment only (MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD)",
        "elasticsearch_password_file": "file holding the basic-auth password (trailing newline ignored)",
        "elasticsearch_ca_file": "PEM CA bundle to verify an https elasticsearch_url ('' : the system's CAs)",
        "elasticsearch_timeout": "search timeout; a search that takes longer leaves its window absent",
        "quality_windows": "windows of realized quality, by prediction time, comma-separated durations",
        "min_labels": "no realized quality for a window with fewer labelled predictions (series absent)",
        "feedback_horizon": "predictions and pending labels older than this are dropped from the join (at least the "
        "longest quality window)",
        "feedback_max_predictions": "predictions held for the join at most; beyond it the oldest are dropped "
        "(counted)",
        "feedback_max_pending": "labels held until their prediction is read, at most; beyond it the oldest are "
        "dropped (counted)",
        "max_series_per_version": "a bundle whose version would have more exporter series than this is refused "
        "(counted, reason series)",
        "max_classes": "a bundle with more classes than this is refused (counted, reason classes)",
        "max_versions_per_model": "versions of one model kept live; beyond it the least recently trained are "
        "retired (their series dropped)",
    }

    # -- derived, validated values --------------------------------------------------------------

    def window_seconds(self) -> list[float]:
        return _durations(self.windows)

    def quality_window_seconds(self) -> list[float]:
        return _durations(self.quality_windows)

    def bundle_dirs(self) -> list[Path]:
        """Each listed directory if it is a bundle, else its sub-directories that are bundles."""
        out = []
        for item in (s.strip() for s in self.bundles.split(",")):
            if not item:
                continue
            p = Path(item)
            if (p / "metadata.json").is_file():
                out.append(p)
            elif p.is_dir():  # a hidden directory is a bundle being copied in, renamed when complete
                out.extend(sorted(d for d in p.iterdir()
                                  if not d.name.startswith(".") and (d / "metadata.json").is_file()))
        return out

    def budget(self) -> Budget:
        return Budget(max_series=self.max_series_per_version, max_classes=self.max_classes)

    def elasticsearch_credentials(self) -> tuple[str, str]:
        """(username, password) for basic authentication; ("", "") without a username."""
        if not self.elasticsearch_username:
            return "", ""
        password = self.elasticsearch_password
        if self.elasticsearch_password_file:
            try:
                with open(self.elasticsearch_password_file, encoding="utf-8") as fh:
                    password = fh.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"elasticsearch_password_file: cannot read it: {e}") from None
        return self.elasticsearch_username, password

    def validate(self) -> None:
        try:
            windows = self.window_seconds()
            slice_s = parse_duration(self.slice)
            for name in ("evaluate_every", "poll_every", "checkpoint_every", "rescan_bundles_every",
                         "elasticsearch_timeout"):
                if parse_duration(getattr(self, name)) <= 0:
                    raise ConfigError(f"{name} must be positive")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not windows:
            raise ConfigError("windows: at least one window is needed")
        self._validate_quality()
        if slice_s <= 0:
            raise ConfigError("slice must be positive")
        bad = [format_duration(w) for w in windows if abs(w / slice_s - round(w / slice_s)) > 1e-9]
        if bad:
            raise ConfigError(f"windows {bad} are not whole multiples of slice {self.slice}")
        if self.method not in drift.METHODS:
            raise ConfigError(f"method must be one of {sorted(drift.METHODS)}, not {self.method!r}")
        if self.decision not in drift.DECISIONS:
            raise ConfigError(f"decision must be one of {list(drift.DECISIONS)}, not {self.decision!r}")
        if self.decision == "test" and self.alpha >= 1:
            raise ConfigError("decision test needs alpha below 1: alpha is its false-alarm rate")
        if self.correction not in ("none", "bonferroni", "bh"):
            raise ConfigError(f"correction must be none, bonferroni or bh, not {self.correction!r}")
        if self.start not in ("end", "beginning"):
            raise ConfigError(f"start must be end or beginning, not {self.start!r}")
        if self.min_count < 1:
            raise ConfigError("min_count must be at least 1")
        if min(self.max_series_per_version, self.max_classes, self.max_versions_per_model) < 1:
            raise ConfigError("max_series_per_version, max_classes and max_versions_per_model must be at least 1")
        if not 0 < self.alpha <= 1:
            raise ConfigError("alpha must be in (0, 1]")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not a TCP port")
        if self.source not in SOURCES:
            raise ConfigError(f"source must be files or elasticsearch, not {self.source!r}")
        if self.source == "files":  # with elasticsearch no file is tailed: events and checkpoint are unused
            self._validate_events()
        if not self.bundle_dirs():
            raise ConfigError(f"bundles: no bundle (a directory with metadata.json) found in {self.bundles!r}")
        if self.source == "elasticsearch":
            self._validate_elasticsearch()
        elif self.checkpoint:
            parent = os.path.dirname(os.path.abspath(self.checkpoint))
            os.makedirs(parent, exist_ok=True)
            if not os.access(parent, os.W_OK):
                raise ConfigError(f"checkpoint: directory {parent!r} is not writable")

    def _validate_quality(self) -> None:
        try:
            quality = self.quality_window_seconds()
            horizon = parse_duration(self.feedback_horizon)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if quality and horizon < max(quality):
            raise ConfigError(f"feedback_horizon {self.feedback_horizon} is shorter than the longest quality window "
                              f"{format_duration(max(quality))}")
        if self.min_labels < 1 or self.feedback_max_predictions < 1 or self.feedback_max_pending < 0:
            raise ConfigError("min_labels and feedback_max_predictions must be at least 1, feedback_max_pending "
                              "at least 0")

    def _validate_events(self) -> None:
        directory = os.path.dirname(self.events) or "."
        if glob.has_magic(directory):
            raise ConfigError(f"events: the directory part of {self.events!r} must not contain wildcards")
        if not os.path.isdir(directory):
            raise ConfigError(f"events: directory {directory!r} does not exist")
        if not os.access(directory, os.R_OK | os.X_OK):
            raise ConfigError(f"events: directory {directory!r} is not readable")

    def _validate_elasticsearch(self) -> None:
        url = urllib.parse.urlsplit(self.elasticsearch_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError("elasticsearch_url: an http(s) URL is required with source = elasticsearch, "
                              f"not {self.elasticsearch_url!r}")
        if url.username or url.password:
            raise ConfigError("elasticsearch_url: put no credentials in the URL; use elasticsearch_username and "
                              f"{ENV_PREFIX}ELASTICSEARCH_PASSWORD or elasticsearch_password_file")
        if not self.elasticsearch_index or re.search(r"[\s/\\?#\"<>|]", self.elasticsearch_index):
            raise ConfigError(f"elasticsearch_index: {self.elasticsearch_index!r} is not an index name or pattern")
        if self.elasticsearch_password and self.elasticsearch_password_file:
            raise ConfigError(f"elasticsearch password: set {ENV_PREFIX}ELASTICSEARCH_PASSWORD or "
                              "elasticsearch_password_file, not both")
        has_password = bool(self.elasticsearch_password or self.elasticsearch_password_file)
        if has_password and not self.elasticsearch_username:
            raise ConfigError("elasticsearch password given without elasticsearch_username")
        if self.elasticsearch_username and not has_password:
            raise ConfigError(f"elasticsearch_username {self.elasticsearch_username!r} has no password: set "
                              f"{ENV_PREFIX}ELASTICSEARCH_PASSWORD or elasticsearch_password_file")
        if self.elasticsearch_username:
            self.elasticsearch_credentials()  # the password file must be readable now, not at the first search
        if self.elasticsearch_ca_file:
            if url.scheme != "https":
                raise ConfigError("elasticsearch_ca_file is set but elasticsearch_url is not https")
            if not os.access(self.elasticsearch_ca_file, os.R_OK):
                raise ConfigError(f"elasticsearch_ca_file: {self.elasticsearch_ca_file!r} is not a readable file")


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ExporterConfig)}[name]
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a {kind}") from None
    return str(value)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mlpulse exporter",
        allow_abbrev=False,  # --elasticsearch-password must not pass for --elasticsearch-password-file
        description="Drift exporter: tails prediction events, compares them with each model version's "
        "training reference over sliding windows, and serves the statistics as Prometheus metrics.",
        epilog=f"Every option can also be set as {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}MIN_COUNT=200) or in "
        "the --config TOML file (e.g. min_count = 200). Precedence: command line > environment > file > default. "
        "Docs: docs/metrics.md (metrics), docs/drift-statistics.md (statistics and defaults).",
    )
    ap.add_argument("--config", help="TOML file with any of the options below")
    for f in fields(ExporterConfig):
        if f.name in ENV_ONLY:
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                        help=f"{ExporterConfig.HELP[f.name]} (default: {f.default!r})")
    return ap


def load_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> ExporterConfig:
    """Build and validate the configuration; raises ConfigError with a readable message."""
    environ = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    config_file = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"config: cannot read {config_file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config: {config_file} is not valid TOML: {e}") from None
        known = {f.name for f in fields(ExporterConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config: unknown keys {unknown} in {config_file}")
        secret = sorted(set(data) & ENV_ONLY)
        if secret:
            raise ConfigError(f"config: {secret} may not be in a file: use {ENV_PREFIX}<NAME> or the *_file option")
        values.update(data)
    for f in fields(ExporterConfig):
        if ENV_PREFIX + f.name.upper() in environ:
            values[f.name] = environ[ENV_PREFIX + f.name.upper()]
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    config = ExporterConfig(**{k: _coerce(k, v) for k, v in values.items()})
    config.validate()
    return config


def _durations(text: str) -> list[float]:
    """A comma-separated list of durations as sorted distinct seconds."""
    return sorted({parse_duration(w) for w in text.split(",") if w.strip()})
