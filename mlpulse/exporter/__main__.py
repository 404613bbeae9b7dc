"""``mlpulse exporter`` (or ``python -m mlpulse.exporter``): run the drift exporter (``--help`` lists every option)."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time

from prometheus_client import start_http_server

from mlpulse.bundle import BundleError
from mlpulse.durations import parse_duration
from mlpulse.exporter.config import ConfigError, load_config
from mlpulse.exporter.core import Exporter

log = logging.getLogger("mlpulse.exporter")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(argv)
        exporter = Exporter(config)
    except (ConfigError, BundleError) as e:
        print(f"mlpulse exporter: cannot start: {e}", file=sys.stderr)
        return 2
    # What start-up loaded (modules, references, a restored checkpoint) stays for the process's life:
    # frozen, the cycle collector's full passes no longer walk it (a tenth of the ingest's time).
    gc.freeze()
    server, _thread = start_http_server(config.port, addr=config.bind, registry=exporter.registry())
    log.info("serving http://%s:%d/metrics; %s; references %s", config.bind, config.port, exporter.describe_source(),
             sorted(exporter.references))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    every = {name: parse_duration(getattr(config, name))
             for name in ("poll_every", "evaluate_every", "checkpoint_every", "rescan_bundles_every")}
    due = dict.fromkeys(every, 0.0)
    while not stopping:
        now = time.monotonic()
        # Nothing at run time stops the exporter: a failing step is logged and retried next round.
        for name, step in (("poll_every", exporter.poll), ("evaluate_every", exporter.evaluate),
                           ("checkpoint_every", exporter.save_checkpoint),
                           ("rescan_bundles_every", exporter.load_bundles)):
            if now >= due[name]:
                due[name] = now + every[name]
                try:
                    step()
                except Exception:
                    log.exception("%s failed", step.__name__)
        time.sleep(max(0.0, min(due.values()) - time.monotonic()))
    try:
        exporter.poll()
        exporter.save_checkpoint()
    finally:
        exporter.close()
        server.shutdown()
    log.info("stopped; checkpoint written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
