"""``make demo``: the whole loop on 127.0.0.1, live, and a report left behind.

Starts the model service (gunicorn) for the bundle and, beside it, the same model under another
version (for the "wrong model version" scenario), the drift exporter, Prometheus with the
project's rules, Alertmanager with its routing and the webhook receiver; plays a schedule
(``native_stack/schedules/*.yml``); shows every two seconds the request rate, latency percentiles,
the features that drift and the alerts as they fire, resolve and are inhibited, each with its
runbook link (rich in a terminal, plain lines otherwise); then writes the drift report
(``mlpulse report``) and stops everything it started, also on Ctrl-C.

Time is compressed so a shift fires and resolves within a minute: the exporter publishes a
``DEMO_WINDOW`` window that the rules read instead of 1h, and every alert's ``for`` is a few
seconds (``native_stack.monitoring``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from mlpulse.report import build_report, write_report
from native_stack.labels import DelayedLabels
from native_stack.monitoring import Monitoring, start_monitoring
from native_stack.processes import ROOT, Stack, exporter_env, free_port, service_env, start_exporter, start_service
from native_stack.schedule import Schedule, play_phase

DEMO_WINDOW = "30s"
ALERT_FOR = "5s"
HIDDEN = {"Watchdog"}  # the heartbeat fires all the time by design


@dataclass
class View:
    """What the demo shows; ``events`` are the alert transitions seen so far."""

    phase: str = ""
    rate: float | None = None
    p50: float | None = None
    p95: float | None = None
    drifting: list[str] = field(default_factory=list)
    active: dict[str, dict] = field(default_factory=dict)  # alert key -> alert (Alertmanager API)
    events: list[str] = field(default_factory=list)


def _key(alert: dict) -> str:
    labels = alert["labels"]
    extra = labels.get("feature") or labels.get("route") or labels.get("version") or ""
    return f"{labels['alertname']}{'(' + extra + ')' if extra else ''}"


def _scalar(mon: Monitoring, promql: str) -> float | None:
    try:
        result = mon.query(promql)
    except requests.RequestException:
        return None
    return float(result[0]["value"][1]) if result else None


def refresh(view: View, mon: Monitoring, exporter_url: str) -> None:
    view.rate = _scalar(mon, 'sum(rate(mlpulse_http_requests_total{route="/v1/predict"}[10s]))')
    for q, attr in ((0.5, "p50"), (0.95, "p95")):
        setattr(view, attr, _scalar(mon, f"histogram_quantile({q}, sum by (le) (rate("
                                         f'mlpulse_http_request_duration_seconds_bucket{{route="/v1/predict"}}[10s])))'))
    try:
        text = requests.get(exporter_url, timeout=5).text
        view.drifting = sorted({s.labels["feature"] for f in text_string_to_metric_families(text) for s in f.samples
                                if s.name == "mlpulse_drift_detected" and s.labels.get("window") == DEMO_WINDOW
                                and s.value == 1})
    except requests.RequestException:
        pass
    try:
        alerts = {_key(a): a for a in mon.alerts() if a["labels"]["alertname"] not in HIDDEN}
    except requests.RequestException:
        return
    now = dt.datetime.now().strftime("%H:%M:%S")
    for key, a in alerts.items():
        state = "INHIBITED" if a["status"].get("inhibitedBy") else "FIRING"
        old = view.active.get(key)
        old_state = None if old is None else ("INHIBITED" if old["status"].get("inhibitedBy") else "FIRING")
        if state != old_state:
            view.events.append(f"{now} {state:<9} {key} [{a['labels'].get('severity', '')}] "
                               f"{a['annotations'].get('runbook_url', '')}")
    for key in set(view.active) - set(alerts):
        view.events.append(f"{now} {'RESOLVED':<9} {key}")
    view.active = alerts


def _fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else (f"{v:.0f}{unit}" if abs(v) >= 100 else f"{v:.3g}{unit}")


def plain_lines(view: View, seen: int) -> tuple[list[str], int]:
    """New lines for a log (not a terminal): one status line, then the alert transitions since ``seen``."""
    lines = [f"[{view.phase}] rate {_fmt(view.rate, '/s')}  p50 {_fmt(view.p50 and view.p50 * 1000, 'ms')}  "
             f"p95 {_fmt(view.p95 and view.p95 * 1000, 'ms')}  drifting: {', '.join(view.drifting) or 'none'}"]
    lines += ["  " + e for e in view.events[seen:]]
    return lines, len(view.events)


def rich_panel(view: View):
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    status = Table.grid(padding=(0, 2))
    status.add_row("phase", view.phase)
    status.add_row("request rate", _fmt(view.rate, " /s"))
    status.add_row("latency p50 / p95", f"{_fmt(view.p50 and view.p50 * 1000, ' ms')} / "
                                        f"{_fmt(view.p95 and view.p95 * 1000, ' ms')}")
    status.add_row("drifting features", ", ".join(view.drifting) or "none")
    alerts = Table(title="alerts now", expand=True)
    for col in ("alert", "state", "severity", "runbook"):
        alerts.add_column(col)
    for key, a in sorted(view.active.items()):
        state = "[yellow]inhibited" if a["status"].get("inhibitedBy") else "[red]firing"
        alerts.add_row(key, state, a["labels"].get("severity", ""), a["annotations"].get("runbook_url", ""))
    # The runbook links are in the table above: the history keeps one line per transition.
    history = "\n".join(e.rsplit(" https://", 1)[0] for e in view.events[-12:]) or "no alert yet"
    return Panel(Group(status, alerts, Panel(history, title="transitions")), title="mlpulse demo")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "var" / "bundle")
    ap.add_argument("--schedule", default="demo", help="a schedule file, or the name of one in native_stack/schedules")
    ap.add_argument("--speed", type=float, default=1.0, help="phases last 1/speed of their duration")
    ap.add_argument("--workdir", type=Path, default=ROOT / "var" / "demo", help="events, logs, configs, report")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="plain lines even in a terminal")
    args = ap.parse_args(argv)
    schedule = Schedule.load(args.schedule).scaled(1 / args.speed)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)  # each run starts clean: its report covers its own traffic
    work.mkdir(parents=True)
    bundle = args.bundle.resolve()
    other = work / "bundle-other-version"  # the same model under a version the exporter has no reference for
    shutil.copytree(bundle, other)
    md = json.loads((other / "metadata.json").read_text())
    md["version"] = f"{md['version']}-unreviewed"
    (other / "metadata.json").write_text(json.dumps(md))
    stop = threading.Event()
    started = dt.datetime.now(dt.UTC)
    with Stack() as stack:
        try:
            port, other_port, exporter_port = free_port(), free_port(), free_port()
            url, other_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other_port}"
            exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
            service_environment = service_env(bundle, work / "events", work / "multiproc", port, args.workers)
            service = start_service(stack, service_environment, work / "service.log")
            start_service(stack, service_env(other, work / "events", work / "multiproc-other", other_port, 1),
                          work / "service-other.log")
            start_exporter(stack, exporter_env(work / "events", bundle, exporter_port, work / "exporter-checkpoint.json",
                                               MLPULSE_EXPORTER_WINDOWS=f"{DEMO_WINDOW},5m,1h",
                                               # Realized quality from the schedule's delayed labels.
                                               MLPULSE_EXPORTER_QUALITY_WINDOWS=f"{DEMO_WINDOW},5m,1h",
                                               MLPULSE_EXPORTER_MIN_LABELS="50",
                                               MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_EVALUATE_EVERY="1s",
                                               MLPULSE_EXPORTER_POLL_EVERY="0.5s"), work / "exporter.log")
            mon = start_monitoring(stack, work, {"model-service": [f"127.0.0.1:{port}", f"127.0.0.1:{other_port}"],
                                                 "drift-exporter": f"127.0.0.1:{exporter_port}"},
                                   window=DEMO_WINDOW, for_override=ALERT_FOR)
            print(f"model service  {url}  (gunicorn, {args.workers} workers; /metrics, /openapi.json)")
            print(f"drift exporter {exporter_url}  (windows {DEMO_WINDOW}, 5m, 1h)")
            print(f"prometheus     {mon.prometheus}  alertmanager {mon.alertmanager}  (user {mon.prometheus_auth[0]}, "
                  f"passwords in {work}/*-auth/password)")
            print(f"logs, configs  {work}")
            print(f"schedule       {schedule.name}: " + ", ".join(f"{p.name} {p.seconds:g}s" for p in schedule.phases),
                  flush=True)
            view = View()

            def traffic() -> None:
                nonlocal service
                # The schedule's delayed labels go back to the service that scored them (the reference
                # version's; the other version's phase sends none).
                labels = DelayedLabels(url, 0.0) if any(p.labels for p in schedule.phases) else None
                try:
                    for i, phase in enumerate(schedule.phases):
                        if stop.is_set():
                            return
                        view.phase = phase.name
                        if phase.effects.service_down:  # stopped on purpose: not a failure of the demo
                            stack.processes.remove(service)
                            service.stop()
                        target = other_url if phase.effects.other_model else url
                        play_phase(target, phase, 5000 + i, stop, labels=labels if target == url else None)
                        if phase.effects.service_down and not stop.is_set():
                            service = start_service(stack, service_environment, work / "service.log")
                    view.phase = "done"
                finally:
                    if labels is not None:
                        labels.close()

            player = threading.Thread(target=traffic, daemon=True)
            player.start()
            show(view, mon, exporter_url, player, stack, plain=args.plain or not sys.stdout.isatty())
            player.join()
            save_view(view, work / "terminal.svg")
        except KeyboardInterrupt:
            stop.set()
            print("\nstopping")
        finally:
            stop.set()
    report = work / "report.html"
    try:
        write_report(report, build_report(bundle, str(work / "events" / "*.jsonl"), started,
                                          dt.datetime.now(dt.UTC), steps=12))
        print(f"drift report   {report}")
    except Exception as e:  # the report must not hide how the demo went
        print(f"no report: {e}", file=sys.stderr)
    print("stopped every process the demo started")
    return 0


def save_view(view: View, path: Path) -> None:
    """The last view, as the terminal drew it, to an SVG file (for the README and incident notes)."""
    from rich.console import Console

    console = Console(record=True, width=110, file=io.StringIO())  # recorded, not shown
    console.print(rich_panel(view))
    console.save_svg(str(path), title="make demo")


def show(view: View, mon: Monitoring, exporter_url: str, player: threading.Thread, stack: Stack,
         plain: bool) -> None:
    """Refresh and draw every two seconds until the schedule is played."""
    seen, rounds = 0, 0
    live = None
    if not plain:
        from rich.live import Live

        live = Live(rich_panel(view), refresh_per_second=2)
        live.start()
    try:
        while player.is_alive():
            refresh(view, mon, exporter_url)
            if live is not None:
                live.update(rich_panel(view))
            else:  # a log: the status every 10 s, the alert transitions as they come
                lines, seen = plain_lines(view, seen)
                print("\n".join(lines if rounds % 5 == 0 else lines[1:]) or "", end="\n" if len(lines) > 1 or
                      rounds % 5 == 0 else "", flush=True)
                rounds += 1
            for p in stack.processes:
                if p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.log_tail()}")
            player.join(2.0)
        refresh(view, mon, exporter_url)
        if live is None:
            lines, seen = plain_lines(view, seen)
            print("\n".join(lines), flush=True)
    finally:
        if live is not None:
            live.stop()
            print("\n".join(view.events) or "no alert transitions")


if __name__ == "__main__":
    sys.exit(main())
