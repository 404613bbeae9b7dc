"""Small helpers shared by tests: the project's paths, reading event files, parsing Prometheus text."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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
