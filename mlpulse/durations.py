"""Durations: the one parser and formatter every part of mlpulse uses.

The grammar is Prometheus's (``15s``, ``1m30s``, ``500ms``, ``1h``, ``7d``, ``2w``, ``1y``), so
the exporter's options, the native configurations and the rule files read the same way. The
exporter also accepts a decimal (``1.5h``) or a bare number of seconds (``30``); Prometheus does
not, and ``prometheus=True`` refuses both so a value written into a Prometheus or Alertmanager
file is one they load.
"""

from __future__ import annotations

import re

_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | float, *, prometheus: bool = False) -> float:
    """Seconds of a duration: ``'10s'``, ``'5m'``, ``'1m30s'``, ``'500ms'``, or a number of seconds.

    With ``prometheus=True`` only what Prometheus itself accepts: integer terms, ``'0'`` as the
    only bare number. Raises ``ValueError`` naming the text otherwise.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) and not prometheus:
        return float(text)
    s = str(text).strip()
    if s == "0" or (not prometheus and _NUMBER.fullmatch(s)):
        return float(s)
    pos, total = 0, 0.0
    for m in _TERM.finditer(s):
        if m.start() != pos or (prometheus and "." in m.group(1)):
            break
        total += float(m.group(1)) * UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise ValueError(f"{text!r} is not a duration like 15s, 1m30s, 500ms or 1h")
    return total


def format_duration(seconds: float) -> str:
    """The label form of a window: 5m, 1h, 24h (never '86400')."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
