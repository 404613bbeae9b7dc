"""Small helpers shared by tests: the project's paths, reading event files, parsing Prometheus text."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from native_stack.monitoring import Monitoring, start_monitoring
from native_stack.processes import Process, Stack, exporter_env, free_port, service_env, start_exporter, start_service

# The repository's root and the recorded fixtures, wherever a test file sits under tests/.
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def read_events(directory: Path) -> list[dict]:
    """Every event line in a directory, each checked to be one whole JSON object."""
    events = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends with a cut line"
        for line in data.splitlines():
            events.append(json.loads(line))  # raises on an interleaved or cut line
    return events


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset of label items): value} from Prometheus exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    found = [v for (n, lab), v in parsed.items() if n == name and want <= lab]
    assert found, f"no sample {name} with {labels}"
    return sum(found)


def wait_for(fn, timeout: float, what: str):
    """Call ``fn`` until it returns something true (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


@dataclass
class AlertingStack:
    service: Process
    url: str  # the model service
    exporter: str  # the exporter's /metrics
    mon: Monitoring


def start_alerting_stack(stack: Stack, bundle_dir: Path, work: Path, window: str, for_override: str = "3s",
                         **exporter_extra: str) -> AlertingStack:
    """What the alerting tests drive: the model service (2 workers), the exporter on 1 s slices
    evaluating every second (``exporter_extra``: more of its variables), and Prometheus,
    Alertmanager and the webhook with the rules' 1h window replaced by ``window`` and every
    ``for`` by ``for_override``."""
    svc, exp = free_port(), free_port()
    service = start_service(stack, service_env(bundle_dir, work / "events", work / "mp", svc, workers=2),
                            work / "service.log")
    start_exporter(stack, exporter_env(work / "events", bundle_dir, exp, None, MLPULSE_EXPORTER_WINDOWS=window,
                                       MLPULSE_EXPORTER_SLICE="1s", MLPULSE_EXPORTER_EVALUATE_EVERY="1s",
                                       MLPULSE_EXPORTER_POLL_EVERY="0.2s", **exporter_extra), work / "exporter.log")
    mon = start_monitoring(stack, work, {"model-service": f"127.0.0.1:{svc}", "drift-exporter": f"127.0.0.1:{exp}"},
                           window=window, for_override=for_override)
    return AlertingStack(service, f"http://127.0.0.1:{svc}", f"http://127.0.0.1:{exp}/metrics", mon)
