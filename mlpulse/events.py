"""The prediction event log: one JSON object per line, one line per scored or refused record.

Lines are formatted by python-json-logger (orjson backend) and written by ``SharedFileHandler``,
which several processes (gunicorn workers) may use on the same file at once:

- each line is written by one ``write(2)`` on an ``O_APPEND`` descriptor, under an exclusive
  ``flock`` on a lock file, so lines are never interleaved or cut, whatever the filesystem;
- rotation is size-bounded and happens under the same lock: the active file is renamed to a
  timestamped name that still matches ``*.jsonl``, and every process notices the new inode before
  its next write; the oldest rotated files beyond ``backup_count`` are deleted (retention).

``docs/events.md`` is the field reference.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

ACTIVE_NAME = "predictions.jsonl"
ROTATED_GLOB = "predictions-*.jsonl"
LOCK_NAME = ".predictions.lock"
EVENT_SCORED = "prediction"
EVENT_REFUSED = "prediction.refused"
EVENT_REQUEST_REFUSED = "request.refused"


class SharedFileHandler(logging.Handler):
    """A logging handler for one JSON-lines file shared by several processes."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 << 20, backup_count: int = 10):
        super().__init__()
        if max_bytes <= 0 or backup_count < 1:
            raise ValueError("max_bytes must be > 0 and backup_count >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / ACTIVE_NAME
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = -1
        self._ino = -1
        self._pid = os.getpid()

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._ino = os.fstat(self._fd).st_ino

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8")
        except Exception:
            self.handleError(record)
            return
        self.write_line(data)

    def write_line(self, data: bytes) -> None:
        """Append one whole line (bytes ending in a newline)."""
        if os.getpid() != self._pid:  # forked after opening (gunicorn preload): own descriptors
            for fd in (self._fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)  # the child's copies only; the parent keeps its own
            self._pid, self._fd, self._ino = os.getpid(), -1, -1
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = -2
            if current != self._ino:  # first write, or another process rotated the file
                self._open()
            view = memoryview(data)
            while view:  # a regular file takes it all at once, but a short write must not cut a line
                view = view[os.write(self._fd, view):]
            if os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _rotate(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.directory / f"predictions-{stamp}.jsonl"
        n = 0
        while target.exists():  # same microsecond: never overwrite a rotated file
            n += 1
            target = self.directory / f"predictions-{stamp}-{n}.jsonl"
        os.rename(self.path, target)
        self._open()
        rotated = sorted((_mtime(p), p.name, p) for p in self.directory.glob(ROTATED_GLOB))
        for _, _, old in rotated[: max(0, len(rotated) - self.backup_count)]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._lock_fd = -1
        super().close()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # deleted by someone else meanwhile: sorts first, unlink is a no-op
        return -1


class EventLog:
    """Writes prediction events through python-json-logger to a ``SharedFileHandler``."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 << 20, backup_count: int = 10):
        self.handler = SharedFileHandler(directory, max_bytes, backup_count)
        # The message is the event type; "@timestamp" is the record's creation time in UTC.
        self.handler.setFormatter(
            OrjsonFormatter("%(message)s", rename_fields={"message": "event"}, timestamp="@timestamp")
        )
        # A private logger, detached from the root, so application logging never lands here.
        self.logger = logging.Logger(f"mlpulse.events.{id(self)}", logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)

    def write(self, event: str, fields: dict[str, Any]) -> None:
        self.logger.info(event, extra=fields)

    def write_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Write several events (a request's records) with one lock and one ``write(2)``.

        Each line is still formatted by the python-json-logger formatter; only the logging call
        machinery (caller lookup, handler dispatch), which costs more than the formatting, and the
        per-line locking are skipped.
        """
        lines = []
        for event, fields in events:
            record = logging.LogRecord(self.logger.name, logging.INFO, "", 0, event, None, None)
            record.__dict__.update(fields)
            lines.append(self.handler.format(record) + "\n")
        if lines:
            self.handler.write_line("".join(lines).encode("utf-8"))

    def close(self) -> None:
        self.handler.close()
