"""Delayed labels: the true outcome of scored records, sent back to ``POST /v1/feedback`` later.

``DelayedLabels.add(request_id, truths)`` takes the labels of one scored request and a thread sends
them once ``delay`` seconds have passed, in batches (one call per due batch, at most ``MAX_BATCH``
items), as a feedback job would. Only a ``share`` of the records (seeded) gets its label. Traffic
goes only to the URL given (loopback in the demo and the tests).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter

import numpy as np
import requests

MAX_BATCH = 200


class DelayedLabels:
    def __init__(self, url: str, delay: float, share: float = 1.0, seed: int = 0):
        self.url, self.delay, self.share = url, delay, share
        self.rng = np.random.default_rng(seed)
        self.due: list[tuple[float, int, dict]] = []  # (when, order, item), a heap
        self.order = 0
        self.statuses: Counter = Counter()  # HTTP status of each feedback call (0: no answer)
        self.sent = 0  # items in calls answered 200
        self.lock = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="delayed-labels")
        self.thread.start()

    def add(self, request_id: str, truths: list[str | None], delay: float | None = None) -> None:
        """Labels of one request's records, in order (None: that record gets none)."""
        when = time.monotonic() + (self.delay if delay is None else delay)
        with self.lock:
            for i, label in enumerate(truths):
                if label is None or (self.share < 1 and self.rng.random() >= self.share):
                    continue
                self.order += 1
                heapq.heappush(self.due, (when, self.order, {"request_id": request_id, "record_index": i,
                                                              "label": label}))
            self.lock.notify()

    def _run(self) -> None:
        session = requests.Session()
        while True:
            with self.lock:
                while not self.stopped and (not self.due or self.due[0][0] > time.monotonic()):
                    self.lock.wait(timeout=0.2 if not self.due else max(0.0, self.due[0][0] - time.monotonic()))
                if self.stopped and not self.due:
                    return
                now = time.monotonic()
                batch = []
                while self.due and len(batch) < MAX_BATCH and (self.due[0][0] <= now or self.stopped):
                    batch.append(heapq.heappop(self.due)[2])
            if not batch:
                continue
            try:
                code = session.post(f"{self.url}/v1/feedback", json=batch, timeout=30).status_code
            except requests.RequestException:
                code = 0
            with self.lock:
                self.statuses[code] += 1
                self.sent += len(batch) if code == 200 else 0

    def close(self, flush: bool = False) -> None:
        """Stop; with ``flush`` the labels not yet due are sent now, otherwise dropped."""
        with self.lock:
            if not flush:
                self.due.clear()
            self.stopped = True
            self.lock.notify()
        self.thread.join(timeout=60)
