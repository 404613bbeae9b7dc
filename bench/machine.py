"""The description of the machine and libraries every benchmark records beside its figures."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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


def main_with_json(run: Callable[[argparse.Namespace], dict[str, Any]], description: str, quick_help: str,
                   argv: list[str] | None = None) -> int:
    """The command line every figure-writing bench shares: ``--quick``, ``--json FILE``, wall time."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = time.perf_counter() - started
    print(f"\ndone in {result['wall_seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
