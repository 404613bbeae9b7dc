"""Schedules: phases of scenarios with durations and rates, one format for the demo and the tests.

    name: demo
    phases:                      # played in order
      - name: warm-up            # shown in the demo's view
        scenarios: [baseline]    # native_stack.scenarios, applied together
        seconds: 60              # how long the phase lasts
        rate: 10                 # requests per second (times each scenario's rate_factor)
        batch: 5                 # records per request
        labels: 0.5              # optional: share of scored records whose true outcome is sent back
        label_delay: 20          #   to POST /v1/feedback, this many seconds later (default 0: none)

``play`` sends each phase's requests at its rate, from seeded records, to one URL (loopback in the
demo and the tests) and stops at the phase's end or when asked to.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import yaml

from native_stack.labels import DelayedLabels
from native_stack.scenarios import SCENARIOS, Scenario, effects, labelled_records_for

SCHEDULES_DIR = Path(__file__).with_name("schedules")


@dataclass(frozen=True)
class Phase:
    name: str
    scenarios: tuple[str, ...]
    seconds: float
    rate: float
    batch: int = 1
    labels: float = 0.0  # share of scored records labelled later (native_stack.labels)
    label_delay: float = 0.0  # seconds from a prediction to its label

    @property
    def effects(self) -> Scenario:
        return effects(self.scenarios)


@dataclass(frozen=True)
class Schedule:
    name: str
    phases: tuple[Phase, ...]

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        p = Path(path)
        if not p.is_file():
            p = SCHEDULES_DIR / f"{path}.yml"  # a name of the schedules shipped here
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        phases = []
        for i, ph in enumerate(data.get("phases") or []):
            unknown = set(ph) - {"name", "scenarios", "seconds", "rate", "batch", "labels", "label_delay"}
            if unknown:
                raise ValueError(f"{p}: phase {i} has unknown keys {sorted(unknown)}")
            names = tuple(ph.get("scenarios") or ["baseline"])
            bad = [n for n in names if n not in SCENARIOS]
            if bad:
                raise ValueError(f"{p}: phase {i} names unknown scenarios {bad}; known: {sorted(SCENARIOS)}")
            phase = Phase(str(ph.get("name", "+".join(names))), names, float(ph["seconds"]), float(ph["rate"]),
                          int(ph.get("batch", 1)), float(ph.get("labels", 0)), float(ph.get("label_delay", 0)))
            if phase.seconds <= 0 or phase.rate <= 0 or phase.batch < 1:
                raise ValueError(f"{p}: phase {i} needs seconds > 0, rate > 0 and batch >= 1")
            if not 0 <= phase.labels <= 1 or phase.label_delay < 0:
                raise ValueError(f"{p}: phase {i} needs labels in [0, 1] and label_delay >= 0")
            phases.append(phase)
        if not phases:
            raise ValueError(f"{p}: no phase")
        return cls(str(data.get("name", p.stem)), tuple(phases))

    def scaled(self, factor: float) -> Schedule:
        """The same schedule, every phase ``factor`` times as long (a short CI run of the demo)."""
        return Schedule(self.name, tuple(Phase(p.name, p.scenarios, p.seconds * factor, p.rate, p.batch, p.labels,
                                               p.label_delay * factor) for p in self.phases))


def play_phase(url: str, phase: Phase, seed: int, stop: threading.Event | None = None,
               in_flight: int = 8, labels: DelayedLabels | None = None) -> Counter:
    """Send the phase's requests at its rate (at most ``in_flight`` at once) until the phase's end,
    however many were sent by then; returns the count of HTTP statuses (0: no answer). With
    ``labels`` and a phase that labels, the true outcomes of its scored records go there."""
    stop = stop or threading.Event()
    fx = phase.effects
    rate = phase.rate * fx.rate_factor
    n_requests = max(1, int(phase.seconds * rate))
    records, truths = labelled_records_for(phase.scenarios, n_requests * phase.batch, seed)
    rng = np.random.default_rng(seed)
    labelling = labels is not None and phase.labels > 0
    statuses: Counter = Counter()
    lock, slots = threading.Lock(), threading.Semaphore(in_flight)
    local = threading.local()

    def post(body: str, truth: list[str]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            r = session.post(f"{url}/v1/predict", data=body, timeout=30, headers={"Content-Type": "application/json"})
            code = r.status_code
            if labelling and code == 200:
                labels.add(r.headers["X-Request-ID"], [t if keep else None for t, keep in truth], phase.label_delay)
        except requests.RequestException:
            code = 0
        finally:
            slots.release()
        with lock:
            statuses[code] += 1

    started = time.monotonic()
    end = started + phase.seconds
    with ThreadPoolExecutor(in_flight) as pool:
        for k in range(n_requests):
            delay = started + k / rate - time.monotonic()
            if (delay > 0 and stop.wait(delay)) or stop.is_set() or time.monotonic() >= end:
                break
            if not slots.acquire(timeout=max(0.0, end - time.monotonic())):
                break  # the service cannot keep up: the phase still ends on time
            batch = records[k * phase.batch:(k + 1) * phase.batch]
            truth = list(zip(truths[k * phase.batch:(k + 1) * phase.batch],
                             rng.random(len(batch)) < phase.labels))
            # NaN stays a bare token in the body, as a buggy client sends it.
            pool.submit(post, json.dumps(batch[0] if phase.batch == 1 else batch), truth)
        rest = end - time.monotonic()
        if rest > 0:
            stop.wait(rest)
    return statuses


def play(url: str, schedule: Schedule, seed: int = 1000, stop: threading.Event | None = None,
         on_phase: Callable[[int, Phase], None] | None = None) -> list[Counter]:
    """Play every phase in order; ``on_phase(index, phase)`` runs as each begins (the demo switches
    the served model there). Labels of phases that send them arrive after their delay, also during
    the next phases; those not due when the schedule ends are dropped."""
    out = []
    labels = DelayedLabels(url, 0.0) if any(p.labels for p in schedule.phases) else None
    try:
        for i, phase in enumerate(schedule.phases):
            if stop is not None and stop.is_set():
                break
            if on_phase is not None:
                on_phase(i, phase)
            out.append(play_phase(url, phase, seed + i, stop, labels=labels))
    finally:
        if labels is not None:
            labels.close()
    return out
