"""The environment of one compose stack test run, in a directory of its own: ``.env`` and the
secrets (as ``make env`` writes them), free loopback ports, and Prometheus' configuration
rendered from the committed one with the test's short intervals."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlpulse.prometheus.native import PASSWORD_SECRETS, SECRETS_MOUNT, write_native_config, write_stack_secrets
from native_stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
# Variable of docker-compose.yml's published port -> (service, container port).
PORTS = {
    "MODEL_SERVICE_PORT": ("model-service", 8000),
    "DRIFT_EXPORTER_PORT": ("drift-exporter", 9108),
    "ALERT_WEBHOOK_PORT": ("alert-webhook", 5001),
    "PROMETHEUS_PORT": ("prometheus", 9090),
    "ALERTMANAGER_PORT": ("alertmanager", 9093),
}
# Compressed time, so drift is alerted within a minute: the committed rules' `for` would take 15.
SCRAPE_INTERVAL = "2s"


@dataclass(frozen=True)
class StackEnv:
    directory: Path
    env_file: Path
    secrets_dir: Path
    ports: dict[str, int]  # service -> published loopback port

    def password(self, server: str) -> str:
        return (self.secrets_dir / PASSWORD_SECRETS[server]).read_text().strip()


def write_stack_env(directory: Path) -> StackEnv:
    directory.mkdir(parents=True, exist_ok=True)
    # The containers' users (nobody) read the bind-mounted configuration.
    os.chmod(directory, 0o755)
    env_file, secrets_dir = directory / ".env", directory / "secrets"
    write_stack_secrets(env_file, secrets_dir, example=ROOT / ".env.example", root=ROOT, rounds=4)
    prometheus_dir = directory / "prometheus"
    # The committed scrape targets (compose service names) and secrets, shorter intervals and `for`.
    write_native_config(
        prometheus_dir,
        targets={"model-service": "model-service:8000", "drift-exporter": "drift-exporter:9108",
                 "prometheus": "localhost:9090", "alertmanager": "alertmanager:9093"},
        alertmanagers=["alertmanager:9093"], scrape_interval=SCRAPE_INTERVAL,
        evaluation_interval=SCRAPE_INTERVAL, for_override="0s",
        password_files={server: f"{SECRETS_MOUNT}/{name}" for server, name in PASSWORD_SECRETS.items()},
        config_path=ROOT / "prometheus" / "prometheus.yml")
    for path in [prometheus_dir, *prometheus_dir.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    ports = {variable: free_port() for variable in PORTS}
    with open(env_file, "a", encoding="utf-8") as f:
        f.write("\n# The stack test (tests/stack/): its own secrets, configuration and ports.\n")
        f.write(f"MLPULSE_STACK_SECRETS={secrets_dir}\nMLPULSE_STACK_PROMETHEUS_CONFIG={prometheus_dir}\n")
        f.writelines(f"{variable}={port}\n" for variable, port in ports.items())
    return StackEnv(directory, env_file, secrets_dir, {PORTS[v][0]: p for v, p in ports.items()})
