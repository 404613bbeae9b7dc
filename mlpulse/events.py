"""The prediction event log: one JSON object per line, one line per scored or refused record.

Lines are in python-json-logger's format (its orjson backend; ``EventLog.write_many`` encodes
them with orjson directly, the same bytes) and written by ``SharedFileHandler``,
which several processes (gunicorn workers) may use on the same file at once:

- each line is written by one ``write(2)`` on an ``O_APPEND`` descriptor, under an exclusive
  ``flock`` on a lock file, so lines are never interleaved or cut, whatever the filesystem;
- a write that fails part way (a full disk) is rolled back to the file's size before it, under
  the lock, so no fragment can corrupt the next good line;
- rotation is size-bounded and happens under the same lock: the active file is renamed to a
  timestamped name that still matches ``*.jsonl``, and every process notices the new inode before
  its next write; the oldest rotated files beyond ``backup_count`` are deleted (retention), but
  never one a registered reader (the exporter, Logstash) has not finished, unless the event files
  together exceed the disk budget ``max_total_bytes``: that deletion is reported (``on_loss``).

Every value the service's JSON parser accepts becomes a line (``json_safe``): integers beyond 64
bits and strings with lone surrogates, which orjson refuses, are written as documented text, and a
line never exceeds ``MAX_LINE_BYTES`` (what every reader accepts). ``docs/events.md`` is the field
reference; ``docs/reliability.md`` says how each promise is tested.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter, orjson_default

ACTIVE_NAME = "predictions.jsonl"
ROTATED_GLOB = "predictions-*.jsonl"
LOCK_NAME = ".predictions.lock"
EVENT_SCORED = "prediction"
EVENT_REFUSED = "prediction.refused"
EVENT_REQUEST_REFUSED = "request.refused"
# Ground truth for an earlier prediction (POST /v1/feedback), taken or refused.
EVENT_FEEDBACK = "feedback"
EVENT_FEEDBACK_REFUSED = "feedback.refused"
# The longest line written: well under the exporter's (1 MiB) and Logstash's line limits.
MAX_LINE_BYTES = 256 << 10
# Longest string value kept in full in an event; longer ones are cut (documented in events.md).
MAX_STRING_CHARS = 1024
INT64 = (-(1 << 63), (1 << 63) - 1)
# Why a line could not be written: the label of mlpulse_event_write_errors_total.
WRITE_ERROR_CAUSES = ("disk_full", "permission", "io", "encode")


class EventWriteError(Exception):
    """Lines that could not be written; ``cause`` is one of WRITE_ERROR_CAUSES."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause = cause


def write_error_cause(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "disk_full"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission"
    return "io"


def raw_text(value: Any, limit: int) -> str:
    """A refused value as JSON text (what the client sent, as far as it decoded), cut to ``limit``
    characters, for an event's ``raw_inputs``: text, so it never breaks the index mapping. Never raises."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=True)
    except (ValueError, RecursionError, TypeError):
        text = repr(value)
    return text[:limit]


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with everything orjson refuses made into documented text: an integer beyond 64
    bits becomes its decimal text, a string with a lone surrogate has it escaped (``\\udc80``), a
    string longer than MAX_STRING_CHARS is cut and ends with "…[cut]", anything nested deeper than
    32 levels or of another type becomes its ``repr`` (cut likewise). Iterative depth bound: no
    recursion error whatever the input."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value if len(value) <= MAX_STRING_CHARS else value[:MAX_STRING_CHARS] + "…[cut]"
    if depth >= 32:
        return json_safe(repr(value)[: MAX_STRING_CHARS + 1])
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return json_safe(repr(value)[: MAX_STRING_CHARS + 1])


def _reader_positions(paths: Sequence[str | os.PathLike[str]]) -> list[dict[tuple[int, int], int] | None]:
    """Per registered reader, ``{(dev, ino): offset consumed}``; None for a reader whose position
    file cannot be read (it then counts as having read nothing: its files are kept)."""
    out: list[dict[tuple[int, int], int] | None] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            out.append(None)
            continue
        try:
            if data.lstrip().startswith(b"{"):  # the exporter's checkpoint (mlpulse.exporter.tail)
                doc = orjson.loads(data)
                files = doc["tail"]["files"]
                out.append({(int(f["dev"]), int(f["ino"])): int(f["offset"]) for f in files})
            else:  # Logstash's sincedb: "inode major minor position [last_active path]" per line
                positions = {}
                for line in data.decode("utf-8", "replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 4 and parts[0].isdigit():
                        dev = os.makedev(int(parts[1]), int(parts[2]))
                        positions[(dev, int(parts[0]))] = int(parts[3])
                out.append(positions)
        except (ValueError, KeyError, TypeError):
            out.append(None)
    return out


class SharedFileHandler(logging.Handler):
    """A logging handler for one JSON-lines file shared by several processes."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 << 20, backup_count: int = 10,
                 readers: Sequence[str | os.PathLike[str]] = (), max_total_bytes: int = 0,
                 on_loss: Callable[[str, int], None] | None = None):
        """``readers``: position files of the registered readers (an exporter checkpoint, a
        Logstash sincedb); ``max_total_bytes``: the disk budget of all event files (0: none);
        ``on_loss(cause, n)`` is called when retention deletes ``n`` files a reader had not
        finished (``cause`` "budget")."""
        super().__init__()
        if max_bytes <= 0 or backup_count < 1:
            raise ValueError("max_bytes must be > 0 and backup_count >= 1")
        self.readers = list(readers)
        self.max_total_bytes = max_total_bytes
        self.on_loss = on_loss
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
            before = os.fstat(self._fd).st_size
            view = memoryview(data)
            try:
                while view:  # a regular file takes it all at once, but a short write must not cut a line
                    view = view[os.write(self._fd, view):]
            except OSError as e:
                try:  # roll back what was written of these lines: no fragment stays in the file
                    os.ftruncate(self._fd, before)
                except OSError:
                    pass
                raise EventWriteError(write_error_cause(e), f"event lines not written: {e}") from e
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
        self._retain()

    def _retain(self) -> None:
        """Delete the oldest rotated files beyond ``backup_count`` that every registered reader has
        finished; past the disk budget, the oldest go whatever was read (reported)."""
        rotated = sorted((_mtime(p), p.name, p) for p in self.directory.glob(ROTATED_GLOB))
        excess = rotated[: max(0, len(rotated) - self.backup_count)]
        if not excess:
            return
        positions = _reader_positions(self.readers) if self.readers else []
        kept = []
        for _, _, old in excess:
            try:
                st = old.stat()
            except FileNotFoundError:
                continue
            ident = (st.st_dev, st.st_ino)
            if all(p is not None and p.get(ident, -1) >= st.st_size for p in positions):
                old.unlink(missing_ok=True)
            else:
                kept.append((old, st.st_size))
        if not kept or not self.max_total_bytes:
            return
        total = sum(_size(p) for p in self.directory.glob("*.jsonl"))
        lost = 0
        for old, size in kept:  # oldest first
            if total <= self.max_total_bytes:
                break
            old.unlink(missing_ok=True)
            total -= size
            lost += 1
        if lost and self.on_loss is not None:
            self.on_loss("budget", lost)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._lock_fd = -1
        super().close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # deleted by someone else meanwhile: sorts first, unlink is a no-op
        return -1


class EventLog:
    """Writes prediction events through python-json-logger to a ``SharedFileHandler``."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 << 20, backup_count: int = 10,
                 readers: Sequence[str | os.PathLike[str]] = (), max_total_bytes: int = 0,
                 on_loss: Callable[[str, int], None] | None = None):
        self.handler = SharedFileHandler(directory, max_bytes, backup_count, readers, max_total_bytes, on_loss)
        # The message is the event type; "@timestamp" is the record's creation time in UTC.
        self.handler.setFormatter(
            OrjsonFormatter("%(message)s", rename_fields={"message": "event"}, timestamp="@timestamp")
        )
        # A private logger, detached from the root, so application logging never lands here.
        self.logger = logging.Logger(f"mlpulse.events.{id(self)}", logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)

    def write(self, event: str, fields: dict[str, Any]) -> None:
        self.write_many([(event, fields)])

    def write_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Write several events (a request's records) with one lock and one ``write(2)``.

        Each line is encoded by orjson directly, as python-json-logger's formatter writes it (same
        keys in the same order, same options; ``tests/unit/test_events.py`` compares both): the
        LogRecord and the formatter's field walk cost more than the encoding itself
        (docs/performance.md, "Instrumentation").
        """
        lines = [self._line(event, fields) for event, fields in events]
        if lines:
            self.handler.write_line(b"".join(lines))

    def _line(self, event: str, fields: dict[str, Any]) -> bytes:
        """One line: as given, or made safe (``json_safe``) if orjson refuses a value, and cut to
        MAX_LINE_BYTES by dropping the record's inputs and raw text if it is still too long."""
        stamp = dt.datetime.fromtimestamp(time.time(), tz=dt.UTC)
        for attempt in range(3):
            try:
                line = orjson.dumps({"event": event, **fields, "@timestamp": stamp}, default=orjson_default,
                                    option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
            except (TypeError, ValueError, UnicodeError, RecursionError):
                if attempt == 2:
                    raise EventWriteError("encode", f"event {event!r} cannot be encoded") from None
                fields = json_safe(fields)
                continue
            if len(line) <= MAX_LINE_BYTES:
                return line
            if attempt == 2:
                break
            # Too long for the readers: keep what identifies the record and say what was cut.
            fields = {k: v for k, v in fields.items() if k not in ("inputs", "raw_inputs", "violations")}
            fields["cut"] = ["inputs", "raw_inputs", "violations"]
        raise EventWriteError("encode", f"event {event!r} exceeds {MAX_LINE_BYTES} bytes")

    def close(self) -> None:
        self.handler.close()
