"""The description of the machine and libraries every benchmark records beside its figures."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
from collections.abc import Sequence
from typing import Any


def version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "absent"


def machine(packages: Sequence[str]) -> dict[str, Any]:
    """Date, Python, platform, CPU count, load average and the versions of ``packages``."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "packages": {p: version(p) for p in packages},
    }
