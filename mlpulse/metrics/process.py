"""Per-worker process metrics that also work in prometheus_client's multiprocess mode.

prometheus_client's ProcessCollector reports only the process that answers the scrape, and is
not collected at all in multiprocess mode. These gauges are written by every worker itself, from a
background thread, with a ``pid`` label; mode ``liveall`` drops a worker's series when it exits,
so the label stays bounded by the number of live workers.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
from prometheus_client import CollectorRegistry, Gauge


class ProcessMetrics:
    def __init__(self, registry: CollectorRegistry | None, interval: float = 5.0):
        kw = {"registry": registry, "multiprocess_mode": "liveall"}
        self.cpu = Gauge("mlpulse_process_cpu_seconds", "CPU time (user + system) used by this worker; "
                         "monotonic per pid, so rate() applies", **kw)
        self.rss = Gauge("mlpulse_process_resident_memory_bytes", "Resident memory of this worker", **kw)
        self.fds = Gauge("mlpulse_process_open_fds", "Open file descriptors of this worker", **kw)
        self.start = Gauge("mlpulse_process_start_time_seconds", "Start time of this worker, Unix seconds", **kw)
        self.interval = interval
        self._pid = -1
        self._lock = threading.Lock()

    def update(self) -> None:
        p = psutil.Process()
        with p.oneshot():
            t = p.cpu_times()
            self.cpu.set(t.user + t.system)
            self.rss.set(p.memory_info().rss)
            self.fds.set(p.num_fds())
            self.start.set(p.create_time())

    def ensure_running(self) -> bool:
        """Start the refresh thread in this process once (safe to call on every request); True
        the first time in a process."""
        if self._pid == os.getpid():
            return False
        with self._lock:
            if self._pid == os.getpid():
                return False
            self._pid = os.getpid()
            self.update()
            threading.Thread(target=self._loop, name="mlpulse-process-metrics", daemon=True).start()
            return True

    def _loop(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(self.interval)
            try:
                self.update()
            except psutil.Error:  # the process is going away
                return
