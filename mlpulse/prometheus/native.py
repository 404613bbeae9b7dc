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

Authentication (docs/security.md): Prometheus and Alertmanager always run behind basic auth, in
compose and natively, with the committed ``prometheus/web.yml`` / ``alertmanager/web.yml`` plus a
``basic_auth_users`` entry whose bcrypt hash is generated, never committed. A native run makes a
fresh password per server::

    prom_auth = write_web_auth(tmp_dir / "prometheus-auth", "prometheus")
    am_auth = write_web_auth(tmp_dir / "alertmanager-auth", "alertmanager")
    path = write_native_config(tmp_dir, targets, alertmanagers=[...],
                               password_files={"prometheus": prom_auth.password_file,
                                               "alertmanager": am_auth.password_file})
    # prometheus ... --web.config.file=<prom_auth.web_config>; requests.get(url, auth=prom_auth.auth)

and ``write_stack_secrets`` (``make env``) writes the same files, with the ``.env`` of random
secrets, for docker compose.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlpulse import yamlfiles
from mlpulse.durations import parse_duration

# The committed files, relative to the project's root (the current directory unless a caller
# passes another path).
CONFIG_FILE = Path("prometheus") / "prometheus.yml"
ALERTMANAGER_FILE = Path("alertmanager") / "alertmanager.yml"
RULES_SUBDIR = "rules"
# The web configurations (TLS-free: loopback and compose networks only; headers), without users.
WEB_FILES = {"prometheus": Path("prometheus") / "web.yml", "alertmanager": Path("alertmanager") / "web.yml"}
# The one basic-auth user of each server (Grafana, Prometheus itself, amtool and operators).
WEB_USER = "mlpulse"
# Where compose mounts each server's clear password (a compose secret); the committed
# prometheus.yml names these in its basic_auth blocks and a native run replaces them.
SECRETS_MOUNT = "/run/secrets"
PASSWORD_SECRETS = {"prometheus": "prometheus_password", "alertmanager": "alertmanager_password"}
WEB_SECRETS = {"prometheus": "prometheus_web.yml", "alertmanager": "alertmanager_web.yml"}
GRAFANA_ADMIN_SECRET = "grafana_admin_password"
# bcrypt cost: ~0.2 s per hash here; both servers cache a successful check, so it is paid once
# per client, not per request (measured: 20 authenticated requests in 0.15 s).
BCRYPT_ROUNDS = 12

Targets = Mapping[str, str | Sequence[str]]


def _dump(data: Any) -> str:
    return yamlfiles.dump(data, width=4096)


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
    password_files: Mapping[str, str | Path] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of the committed configuration for a native run.

    ``targets`` maps job names to ``host:port`` (or a list of them); jobs it does not name are
    dropped, and a name the configuration does not have raises ``ValueError``. ``alertmanagers``
    replaces the Alertmanager addresses (``None`` removes the alerting section). Intervals
    override the global ones; the scrape timeout is lowered to the scrape interval if needed.
    ``external_labels`` are merged over the committed ones. ``rule_files`` is left as it is:
    ``write_native_config`` rewrites it for the copied rules.
    ``password_files`` maps "prometheus" / "alertmanager" to the file of that server's clear
    password (``write_web_auth``): every ``basic_auth`` that names the compose secret of a server
    kept in the result reads it instead; a missing one raises ``ValueError``.
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
        # The committed client settings (basic_auth, timeouts) stay; only the addresses change.
        committed = ((out.get("alerting") or {}).get("alertmanagers") or [{}])[0]
        client = {k: v for k, v in committed.items() if k != "static_configs" and not k.endswith("_sd_configs")}
        out["alerting"] = {"alertmanagers": [{**client, "static_configs": [{"targets": list(alertmanagers)}]}]}
    _replace_password_files(out, password_files)

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
    password_files: Mapping[str, str | Path] | None = None,
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
                           password_files=password_files, config=base)
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


# --- authentication ----------------------------------------------------------------------------

def new_secret(nbytes: int = 24) -> str:
    """A random secret, URL-safe (``[A-Za-z0-9_-]``): usable in a URL's user-info, a YAML scalar
    and a shell word without quoting."""
    return secrets.token_urlsafe(nbytes)


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """The bcrypt hash Prometheus' and Alertmanager's ``basic_auth_users`` want (``$2b$``).

    Needs the ``bcrypt`` package (the ``dev`` extra): only the native runs and ``make env`` hash,
    the library itself never does."""
    try:
        import bcrypt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("hashing a web password needs the bcrypt package: pip install bcrypt "
                           "(it is in the dev extra)") from e
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def web_config(server: str, users: Mapping[str, str], *, root: str | Path = ".") -> dict[str, Any]:
    """The committed web configuration of ``server`` ("prometheus" or "alertmanager") with
    ``basic_auth_users`` (user -> bcrypt hash) added. The committed file must have no users: a
    hash in git is a password anyone with the repository can attack offline."""
    if server not in WEB_FILES:
        raise ValueError(f"no web configuration for {server!r}; known: {sorted(WEB_FILES)}")
    with open(Path(root) / WEB_FILES[server], encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if config.get("basic_auth_users"):
        raise ValueError(f"{WEB_FILES[server]} holds basic_auth_users: hashes are generated, never committed")
    if not users:
        raise ValueError("a web configuration without users would leave the server open")
    for user, hashed in users.items():
        if not re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", hashed):
            raise ValueError(f"the password of {user!r} is not a bcrypt hash")
    config["basic_auth_users"] = dict(users)
    return config


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` from the start (no window in which it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


@dataclass(frozen=True)
class WebAuth:
    """The credentials of one server in a native run: ``web_config`` for ``--web.config.file``,
    ``password_file`` for clients that read a file (Prometheus, amtool), ``auth`` for requests."""

    username: str
    password: str
    password_file: Path
    web_config: Path

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    @property
    def flag(self) -> str:
        return f"--web.config.file={self.web_config}"

    def http_config(self, directory: str | Path) -> Path:
        """An HTTP client configuration (``amtool --http.config.file``) reading the password file."""
        path = Path(directory) / "http-client.yml"
        _write_private(path, _dump({"basic_auth": {"username": self.username,
                                                   "password_file": str(self.password_file)}}))
        return path


def write_web_auth(directory: str | Path, server: str, *, username: str = WEB_USER, password: str | None = None,
                   rounds: int = BCRYPT_ROUNDS, root: str | Path = ".") -> WebAuth:
    """Write ``web.yml`` (committed web configuration + the bcrypt hash) and ``password`` (the
    clear password, mode 0600) for ``server`` into ``directory``; a random password unless given."""
    directory = Path(directory)
    password = new_secret() if password is None else password
    config = web_config(server, {username: hash_password(password, rounds)}, root=root)
    web = directory / "web.yml"
    _write_private(web, f"# Generated from {WEB_FILES[server].as_posix()} by mlpulse.prometheus.native: do not edit.\n"
                   + _dump(config))
    password_file = directory / "password"
    _write_private(password_file, password)
    return WebAuth(username, password, password_file, web)


def _basic_auth_blocks(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = [job["basic_auth"] for job in config.get("scrape_configs") or [] if "basic_auth" in job]
    for am in (config.get("alerting") or {}).get("alertmanagers") or []:
        if "basic_auth" in am:
            blocks.append(am["basic_auth"])
    return blocks


def secret_server(password_file: str) -> str | None:
    """The server whose compose password secret ``password_file`` is, else None."""
    for server, name in PASSWORD_SECRETS.items():
        if password_file == f"{SECRETS_MOUNT}/{name}":
            return server
    return None


def _replace_password_files(config: dict[str, Any], password_files: Mapping[str, str | Path] | None) -> None:
    for block in _basic_auth_blocks(config):
        server = secret_server(str(block.get("password_file", "")))
        if server is None:
            continue
        if not password_files or server not in password_files:
            raise ValueError(f"the configuration authenticates to {server} with {block['password_file']}: "
                             f"pass password_files={{{server!r}: <file>}} (write_web_auth makes one)")
        block["password_file"] = str(Path(password_files[server]).resolve())


# --- make env: the secrets of the compose stack ------------------------------------------------

def required_env(example: str | Path = ".env.example") -> list[str]:
    """The variables ``.env.example`` leaves empty: the secrets compose requires."""
    names = []
    for line in Path(example).read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=", line.strip())
        if m:
            names.append(m.group(1))
    return names


def write_stack_secrets(env_file: str | Path = ".env", secrets_dir: str | Path = Path("var") / "secrets", *,
                        example: str | Path = ".env.example", root: str | Path = ".",
                        rounds: int = BCRYPT_ROUNDS) -> list[Path]:
    """``make env``: ``.env`` (``.env.example`` with a random value for every empty variable) and
    the secrets directory compose mounts from: each server's clear password and web configuration
    (its bcrypt hash), Grafana's admin password. Never overwrites: an existing ``.env`` or
    secrets directory is kept whole and only the missing one is written (the two share no
    secret). Returns the written paths; raises ``FileExistsError`` when both exist."""
    env_file, secrets_dir = Path(env_file), Path(secrets_dir)
    if env_file.exists() and secrets_dir.exists():
        raise FileExistsError(f"{env_file} and {secrets_dir} exist: nothing overwritten "
                              "(remove one to generate its secrets again)")
    written: list[Path] = []
    if not secrets_dir.exists():
        secrets_dir.mkdir(parents=True, mode=0o700)
        os.chmod(secrets_dir, 0o700)
        for server in WEB_FILES:
            password = new_secret()
            # 0644 inside a 0700 directory: other users of the host cannot reach them, and the
            # containers' own users (nobody, grafana) can read the bind-mounted files.
            _write_private(secrets_dir / PASSWORD_SECRETS[server], password, 0o644)
            config = web_config(server, {WEB_USER: hash_password(password, rounds)}, root=root)
            _write_private(secrets_dir / WEB_SECRETS[server],
                           f"# Generated by make env from {WEB_FILES[server].as_posix()}: do not edit.\n"
                           + _dump(config), 0o644)
            written += [secrets_dir / PASSWORD_SECRETS[server], secrets_dir / WEB_SECRETS[server]]
        _write_private(secrets_dir / GRAFANA_ADMIN_SECRET, new_secret(), 0o644)
        written.append(secrets_dir / GRAFANA_ADMIN_SECRET)
    if not env_file.exists():
        lines = []
        for line in Path(example).read_text(encoding="utf-8").splitlines():
            m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=", line.strip())
            lines.append(f"{m.group(1)}={new_secret(32)}" if m else line)
        _write_private(env_file, "# Generated by make env: random secrets. Keep it out of git (.gitignore).\n"
                       + "\n".join(lines) + "\n", 0o600)
        written.insert(0, env_file)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlpulse.prometheus.native",
                                 description="Write .env and the compose secrets (make env).")
    sub = ap.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help=write_stack_secrets.__doc__.split(".")[0])
    env.add_argument("--env-file", type=Path, default=Path(".env"))
    env.add_argument("--secrets-dir", type=Path, default=Path("var") / "secrets")
    env.add_argument("--example", type=Path, default=Path(".env.example"))
    env.add_argument("--root", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    existing = [path for path in (args.env_file, args.secrets_dir) if path.exists()]
    try:
        written = write_stack_secrets(args.env_file, args.secrets_dir, example=args.example, root=args.root)
    except FileExistsError:
        written = []
    for path in existing:
        print(f"kept {path} (never overwritten)")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
