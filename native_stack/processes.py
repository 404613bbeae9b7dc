"""Start and stop the native processes on 127.0.0.1 (the service under gunicorn, the exporter,
Prometheus, Alertmanager, the webhook receiver): used by ``make demo`` and by the integration
tests, so both run the stack the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None,
              auth: tuple[str, str] | None = None) -> None:
    """Wait until ``url`` answers 200 (with basic ``auth`` if given: Prometheus and Alertmanager
    always want it); fail early with the process's exit if it died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = requests.get(url, timeout=2, auth=auth)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful for gunicorn), then SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Stack:
    """Processes started together and stopped together, newest first."""

    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        p = Process(name, popen, log)
        self.processes.append(p)
        return p

    def stop(self) -> None:
        while self.processes:
            self.processes.pop().stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_env(bundle: Path, events: Path, multiproc: Path, port: int, workers: int = 2,
                **extra: str) -> dict[str, str]:
    multiproc.mkdir(parents=True, exist_ok=True)
    return {
        "MODEL_BUNDLE_DIR": str(bundle),
        "MLPULSE_EVENTS_DIR": str(events),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "MODEL_SERVICE_BIND": f"127.0.0.1:{port}",
        "MODEL_SERVICE_WORKERS": str(workers),
        **extra,
    }


def start_service(stack: Stack, env: dict[str, str], log: Path, timeout: float = 60.0) -> Process:
    """``mlpulse serve`` (gunicorn with the service's settings) for ``MODEL_BUNDLE_DIR``; returns once
    /readyz answers."""
    argv = [sys.executable, "-m", "mlpulse", "serve", env["MODEL_BUNDLE_DIR"]]
    proc = stack.start("model-service", argv, log, env)
    try:
        wait_http(f"http://{env['MODEL_SERVICE_BIND']}/readyz", timeout, proc.popen)
    except Exception as e:
        raise RuntimeError(f"model service did not start: {e}\n{proc.log_tail()}") from None
    return proc


def exporter_env(events: Path, bundles: Path, port: int, checkpoint: Path | None = None, **extra: str) -> dict[str, str]:
    return {
        "MLPULSE_EXPORTER_EVENTS": str(events / "*.jsonl"),
        "MLPULSE_EXPORTER_BUNDLES": str(bundles),
        "MLPULSE_EXPORTER_BIND": "127.0.0.1",
        "MLPULSE_EXPORTER_PORT": str(port),
        "MLPULSE_EXPORTER_CHECKPOINT": str(checkpoint) if checkpoint else "",
        **extra,
    }


def start_exporter(stack: Stack, env: dict[str, str], log: Path, timeout: float = 30.0) -> Process:
    """The drift exporter; returns once its /metrics answers."""
    proc = stack.start("drift-exporter", [sys.executable, "-m", "mlpulse", "exporter"], log, env)
    try:
        wait_http(f"http://127.0.0.1:{env['MLPULSE_EXPORTER_PORT']}/metrics", timeout, proc.popen)
    except Exception as e:
        raise RuntimeError(f"drift exporter did not start: {e}\n{proc.log_tail()}") from None
    return proc
