"""A minimal Alertmanager webhook receiver: appends each notification to a JSON-lines file and
prints one line per alert. The default receiver of ``alertmanager/alertmanager.yml`` points at it
in docker compose, the demo shows what it received, and the alerting integration test reads its
file: a real receiver, not a mock.

    python -m alert_webhook --bind 127.0.0.1 --port 5001 --out var/alerts.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 4 << 20  # Alertmanager groups are small; refuse anything absurd


def make_handler(out: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/alerts" or not 0 < length <= MAX_BODY:
                self.send_error(404 if self.path != "/alerts" else 400)
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self.send_error(400, "body is not JSON")
                return
            with lock, open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(payload, separators=(",", ":")) + "\n")
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                print(f"{alert.get('status', '?'):>8} {labels.get('alertname', '?')} "
                      + " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"), flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # the alert lines above are the log
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", default=os.environ.get("ALERT_WEBHOOK_BIND", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("ALERT_WEBHOOK_PORT", "5001")))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("ALERT_WEBHOOK_OUT", "var/alerts.jsonl")))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(args.out))
    print(f"alert webhook on http://{args.bind}:{args.port}/alerts, writing {args.out}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
