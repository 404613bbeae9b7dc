"""prometheus_client's multiprocess mode, made safe for long-running gunicorn servers.

prometheus_client keeps one file per process and metric type in ``PROMETHEUS_MULTIPROC_DIR`` and
sums them at scrape time. Left alone, the files of dead workers pile up (scrape time grows with
every restart, e.g. under ``max_requests``) and only ``live*`` gauges are ever cleaned.

Here, when a worker exits, the master folds its counter, histogram and summary values into one
``<type>_archive.db`` file per type and deletes the worker's files. Totals stay the same, so
counters never go backwards; the number of files stays bounded by the live workers. A scrape
reads the files under a shared lock and the fold runs under an exclusive one, so a scrape never
sees a worker's values twice or not at all.
"""

from __future__ import annotations

import fcntl
import glob
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict

ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_NAME = ".compaction.lock"
# Types whose values add up across processes, so a dead process's values can be folded in.
ADDITIVE_TYPES = ("counter", "histogram", "summary")


def multiprocess_dir() -> str | None:
    """The multiprocess directory if this process runs in multiprocess mode."""
    path = os.environ.get(ENV)
    return path if path else None


@contextmanager
def _locked(path: str, mode: int) -> Iterator[None]:
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class LockedMultiProcessCollector(multiprocess.MultiProcessCollector):
    """MultiProcessCollector that reads under the shared compaction lock."""

    def collect(self):  # type: ignore[override]
        with _locked(self._path, fcntl.LOCK_SH):
            return list(super().collect())


def scrape_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    LockedMultiProcessCollector(registry, path=path)
    return registry


def fold_dead_process(pid: int, path: str | None = None) -> None:
    """Fold a dead process's additive metrics into the archive files and remove its files."""
    path = path or multiprocess_dir()
    if not path:
        return
    with _locked(path, fcntl.LOCK_EX):
        multiprocess.mark_process_dead(pid, path)  # live* gauges
        for typ in ADDITIVE_TYPES:
            dead = glob.glob(os.path.join(path, f"{typ}_{pid}.db"))
            if not dead:
                continue
            archive = os.path.join(path, f"{typ}_archive.db")
            totals: dict[str, float] = defaultdict(float)
            for f in ([archive] if os.path.exists(archive) else []) + dead:
                for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(f):
                    totals[key] += value
            tmp = os.path.join(path, f".{typ}_archive.tmp")  # not *.db: scrapes ignore it
            if os.path.exists(tmp):
                os.remove(tmp)
            out = MmapedDict(tmp)
            try:
                for key, value in totals.items():
                    out.write_value(key, value, 0.0)
            finally:
                out.close()
            os.replace(tmp, archive)
            for f in dead:
                os.remove(f)
        # Non-live gauges of the dead process carry a pid label nobody will update again.
        for f in glob.glob(os.path.join(path, f"gauge_*_{pid}.db")):
            os.remove(f)


def clear_directory(path: str) -> None:
    """Empty the multiprocess directory; call once when the server starts, before any worker."""
    os.makedirs(path, exist_ok=True)
    for f in glob.glob(os.path.join(path, "*.db")):
        os.remove(f)
