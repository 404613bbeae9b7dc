"""Prometheus, Alertmanager and the webhook receiver as processes on 127.0.0.1, from the committed
configurations (``mlpulse.prometheus.native``), both servers behind basic auth as in compose.

Time can be compressed for a demo: the alert rules' ``window="1h"`` is replaced by a short window
the exporter also publishes, and every alert's ``for`` by a few seconds, so a shift fires and
resolves within a minute. Nothing else of the rules or the routing changes.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from mlpulse.prometheus.native import write_native_alertmanager_config, write_native_config, write_web_auth
from native_stack.processes import Stack, free_port, wait_http

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
RULE_WINDOW = 'window="1h"'  # the window the committed alert rules read


@dataclass
class Monitoring:
    prometheus: str
    alertmanager: str
    prometheus_auth: tuple[str, str]
    alertmanager_auth: tuple[str, str]
    notifications: Path  # what the webhook received, one JSON object per line

    def query(self, promql: str) -> list[dict]:
        r = requests.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, auth=self.prometheus_auth,
                         timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def alerts(self) -> list[dict]:
        """Alertmanager's current alerts (active and suppressed), with their status."""
        r = requests.get(f"{self.alertmanager}/api/v2/alerts", auth=self.alertmanager_auth, timeout=5)
        r.raise_for_status()
        return r.json()


def start_monitoring(stack: Stack, work: Path, targets: dict[str, str | list[str]], *, window: str | None = None,
                     for_override: str | None = None, interval: str = "1s",
                     rules: dict[str, str] | None = None) -> Monitoring:
    """Start the webhook receiver, Alertmanager and Prometheus; ``targets`` maps scrape jobs of the
    committed ``prometheus.yml`` to loopback addresses. ``rules`` ({file name: text}) replaces
    copied rule files, e.g. generated rules for a test's window. Returns once both servers are ready."""
    if PROMETHEUS is None or ALERTMANAGER is None:
        raise RuntimeError("prometheus and prometheus-alertmanager are needed (Debian packages; make system-deps)")
    hook, am, prom = free_port(), free_port(), free_port()
    received = work / "alerts.jsonl"
    hook_proc = stack.start("alert-webhook", [sys.executable, "-m", "alert_webhook", "--port", str(hook),
                                              "--out", str(received)], work / "webhook.log")
    wait_http(f"http://127.0.0.1:{hook}/healthz", 30, hook_proc.popen)
    am_config = write_native_alertmanager_config(work / "alertmanager", f"http://127.0.0.1:{hook}/alerts",
                                                 group_wait="1s", group_interval="2s", repeat_interval="1h")
    am_web = write_web_auth(work / "alertmanager-auth", "alertmanager")
    prom_web = write_web_auth(work / "prometheus-auth", "prometheus")
    am_proc = stack.start("alertmanager", [ALERTMANAGER, f"--config.file={am_config}",
                                           f"--storage.path={work / 'alertmanager-data'}",
                                           f"--web.listen-address=127.0.0.1:{am}", "--cluster.listen-address=",
                                           am_web.flag], work / "alertmanager.log")
    wait_http(f"http://127.0.0.1:{am}/-/ready", 30, am_proc.popen, auth=am_web.auth)
    prom_config = write_native_config(
        work / "prometheus", targets={**targets, "prometheus": f"127.0.0.1:{prom}", "alertmanager": f"127.0.0.1:{am}"},
        alertmanagers=[f"127.0.0.1:{am}"], scrape_interval=interval, evaluation_interval=interval,
        for_override=for_override,
        password_files={"prometheus": prom_web.password_file, "alertmanager": am_web.password_file})
    if window is not None:
        for path in (work / "prometheus" / "rules").glob("*.yml"):
            path.write_text(path.read_text().replace(RULE_WINDOW, f'window="{window}"'))
    for name, text in (rules or {}).items():
        (work / "prometheus" / "rules" / name).write_text(text)
    prom_proc = stack.start("prometheus", [PROMETHEUS, f"--config.file={prom_config}",
                                           f"--storage.tsdb.path={work / 'prometheus-data'}",
                                           f"--web.listen-address=127.0.0.1:{prom}", prom_web.flag],
                            work / "prometheus.log")
    wait_http(f"http://127.0.0.1:{prom}/-/ready", 30, prom_proc.popen, auth=prom_web.auth)
    return Monitoring(f"http://127.0.0.1:{prom}", f"http://127.0.0.1:{am}", prom_web.auth, am_web.auth, received)
