"""Follow the prediction event files (``<events_dir>/*.jsonl``) and return each event exactly once.

The model service appends whole JSON lines to ``predictions.jsonl`` and rotates it by renaming it to
``predictions-<UTC stamp>.jsonl``, deleting the oldest rotated files (``mlpulse.events``). The exporter
polls an :class:`EventTail` over the glob; it follows files by identity, not by name:

- a file is identified by ``(st_dev, st_ino)`` plus a fingerprint (hash of its first bytes), so a rename
  is just a new name for a file being read, and a recycled inode is not mistaken for a known file;
- its descriptor stays open while it is tracked, so a file rotated and deleted before being read to its
  end is still read to its end; it is closed once it has left the glob and has been read to EOF;
- the position kept per file is the start of the first line not returned yet, so ``state()`` after a
  ``poll()`` is exactly "what was returned", and a restart from it neither repeats nor skips a line;
- files are read oldest first (mtime, then name), and a new file is not read before the listing has
  been shown complete, so a rotation never lets the successor's lines overtake the rotated file's.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import stat
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Event lines all begin with the same keys ('{"event":"prediction","request_id":"1",...' when the
# client chooses short request ids), so 64 bytes may be equal in two files; one page nearly always
# reaches the first line's "@timestamp" and costs the same single read.
FINGERPRINT_BYTES = 4096
# A file missing from this many consecutive listings while still linked somewhere (renamed out of
# the glob) is closed; one miss may be a readdir racing a rename, which must not close a live file.
MISSES_BEFORE_CLOSE = 3
# Listings per scan at most (see _scan): a second one whenever the first found a new file.
LISTING_ROUNDS = 4
# Offsets of closed files that still exist, should they come back into the glob.
REMEMBERED_MAX = 1024
MALFORMED_KINDS = ("utf8", "json", "not_object")

Identity = tuple[int, int]  # (st_dev, st_ino)
_loads = orjson.loads
_DICT = {dict}


@dataclass
class TailStats:
    """Counters (monotonic unless marked gauge) for the exporter's Prometheus metrics."""

    lines_read: int = 0  # complete lines consumed: events, blank, malformed and oversize lines
    events_returned: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))
    oversize: int = 0  # lines longer than max_line_bytes, skipped
    truncations: int = 0  # a file shrank below the read position or its first bytes changed
    fingerprint_mismatches: int = 0  # a remembered identity now holds other content (inode reuse)
    files_lost: int = 0  # checkpointed files gone by the time the tail resumed
    partial_dropped: int = 0  # an unterminated last line of a file closed after it was deleted
    read_errors: int = 0
    checkpoint_errors: int = 0  # unreadable checkpoints or states, replaced by a fresh start
    bytes_read: int = 0
    files_tracked: int = 0  # gauge: open files
    missing_dir: bool = False  # gauge: the directory was missing at the last listing
    missing_dir_scans: int = 0


class _Mark(NamedTuple):
    """Where to resume a file that is not open: checkpoint entries, closed files still linked."""

    offset: int
    skip: bool
    fp_len: int
    fp: str
    name: str


@dataclass
class _File:
    fd: int
    name: str
    offset: int = 0  # file position of the first byte not consumed, i.e. of buf[pos]
    skip: bool = False  # discarding up to the next newline (rest of an oversize or pre-start line)
    fp_len: int = 0
    fp: str = ""  # set by _open
    buf: bytes = b""  # bytes read from offset on: unreturned lines, then a partial line
    pos: int = 0
    size: int = 0  # at the last fstat
    mtime_ns: int = 0
    nlink: int = 1
    misses: int = 0  # consecutive listings that did not show it
    hold: bool = False  # found since the last listing that found nothing new: not read yet (see _scan)

    @property
    def read_pos(self) -> int:
        return self.offset + len(self.buf) - self.pos

    def mark(self) -> _Mark:
        return _Mark(self.offset, self.skip, self.fp_len, self.fp, self.name)


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _fingerprint(fd: int, length: int) -> tuple[int, str]:
    """(length, hash) of the first ``length`` bytes of the file, or of all of it if shorter."""
    head = os.pread(fd, length, 0)
    return len(head), _hash(head)


_EMPTY_FP = _hash(b"")


def _static_root(pattern: str) -> str:
    """The deepest directory of the pattern without wildcards: its absence means 'missing dir'."""
    parts = os.path.dirname(pattern).split(os.sep)
    while parts and any(re.search(r"[*?[]", p) for p in parts):
        parts.pop()
    return os.sep.join(parts) or ("/" if pattern.startswith(os.sep) else ".")


class EventTail:
    """Single-threaded reader of every JSON-object line appended to the files matching ``pattern``.

    ``start`` applies to files present at construction: ``"end"`` skips their history (a line being
    written at that moment is skipped too), ``"beginning"`` replays them. Files that appear later are
    read from their beginning. ``state`` (from :meth:`state`) resumes instead; see :meth:`restore`.
    """

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        start: Literal["end", "beginning"] = "end",
        state: dict[str, Any] | None = None,
        max_line_bytes: int = 1 << 20,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        if start not in ("end", "beginning"):
            raise ValueError(f"start must be 'end' or 'beginning', not {start!r}")
        if max_line_bytes < 1 or chunk_bytes < 1:
            raise ValueError("max_line_bytes and chunk_bytes must be positive")
        self.pattern = os.fspath(pattern)
        self.start = start
        self.max_line_bytes = max_line_bytes
        self.chunk_bytes = chunk_bytes
        self.stats = TailStats()
        # Poll again without waiting: the last poll stopped at max_lines, or held new files back.
        self.more = False
        self._root = _static_root(self.pattern)
        self._files: dict[Identity, _File] = {}
        self._remembered: OrderedDict[Identity, _Mark] = OrderedDict()
        self._resuming = False  # remembered marks come from a checkpoint not yet matched to files
        if state is None:
            self._scan(initial=True)
        else:
            self.restore(state)

    # -- reading --------------------------------------------------------------------------------

    def poll(self, max_lines: int = 10_000) -> list[dict[str, Any]]:
        """New complete events, oldest file first; consumes at most ``max_lines`` lines."""
        self._scan()
        for ident, f in list(self._files.items()):
            try:
                st = os.fstat(f.fd)
            except OSError as exc:
                self._read_error(ident, f, exc)
                continue
            f.mtime_ns, f.nlink = st.st_mtime_ns, st.st_nlink
            if st.st_size != f.size:
                self._check_rewritten(f, st.st_size)
                f.size = st.st_size
        out: list[dict[str, Any]] = []
        budget = max_lines
        for ident, f in sorted(self._files.items(), key=lambda item: (item[1].mtime_ns, item[1].name)):
            if budget <= 0:
                break
            if not f.hold and (f.read_pos < f.size or f.buf.find(b"\n", f.pos) >= 0):
                try:
                    budget -= self._drain(f, budget, out)
                except OSError as exc:
                    self._read_error(ident, f, exc)
        self.more = budget <= 0 or any(f.hold for f in self._files.values())
        self._close_finished()
        self.stats.events_returned += len(out)
        self.stats.files_tracked = len(self._files)
        return out

    def _drain(self, f: _File, budget: int, out: list[dict[str, Any]]) -> int:
        """Consume up to ``budget`` complete lines of one file, reading big chunks; lines consumed.

        The complete lines a chunk holds are split off at once and decoded together
        (``_decode``); the position then moves past the last of them, so it is always the start
        of the first line not consumed, whatever the number of lines taken."""
        consumed = 0
        while consumed < budget:
            last = f.buf.rfind(b"\n", f.pos)
            if last >= 0:
                # At most the budget's lines (and the rest in one piece, dropped): a small budget
                # does not split the whole buffer.
                lines = f.buf[f.pos : last].split(b"\n", budget - consumed)
                if len(lines) > budget - consumed:
                    del lines[budget - consumed :]
                size = sum(map(len, lines)) + len(lines)  # with their newlines
                f.pos += size
                f.offset += size
                consumed += len(lines)
                self.stats.lines_read += len(lines)
                self._decode(lines, out)
                continue
            dropped, read = self._refill(f)
            consumed += dropped
            if not read:
                break
        return consumed

    def _refill(self, f: _File) -> tuple[int, bool]:
        """When the buffer holds no complete line: drop a partial line already too long (counted
        as one oversize line), then read the next chunk, skipping the rest of a dropped line.
        Returns the lines dropped (0 or 1) and whether anything was read."""
        dropped = 0
        pending = len(f.buf) - f.pos
        if pending > self.max_line_bytes:  # drop it now rather than hold a huge line in memory
            self.stats.oversize += 1
            self.stats.lines_read += 1
            dropped = 1
            f.offset += pending
            f.buf, f.pos, f.skip = b"", 0, True
        chunk = os.pread(f.fd, self.chunk_bytes, f.read_pos)
        if not chunk:
            return dropped, False
        self.stats.bytes_read += len(chunk)
        if f.skip:
            nl = chunk.find(b"\n")
            if nl < 0:
                f.offset += len(chunk)
                return dropped, True
            f.offset += nl + 1
            f.skip = False
            chunk = chunk[nl + 1 :]
        f.buf = f.buf[f.pos :] + chunk
        f.pos = 0
        return dropped, True

    def _decode(self, lines: list[bytes], out: list[dict[str, Any]]) -> None:
        """Decode complete lines into ``out``: all at once with orjson when none is too long, then
        objects kept; should any line fail, the lines are taken again one by one (``_parse``), so
        blank, malformed and oversize lines are told apart and counted exactly as line by line."""
        if max(map(len, lines)) <= self.max_line_bytes:
            try:
                events = list(map(_loads, lines))
            except orjson.JSONDecodeError:
                pass
            else:
                if set(map(type, events)) == _DICT:
                    out += events
                else:
                    for e in events:
                        if type(e) is dict:
                            out.append(e)
                        else:
                            self.stats.malformed["not_object"] += 1
                return
        for line in lines:
            if len(line) > self.max_line_bytes:
                self.stats.oversize += 1
            else:
                self._parse(line, out)

    def _parse(self, line: bytes, out: list[dict[str, Any]]) -> None:
        try:
            event = _loads(line)
        except orjson.JSONDecodeError:
            if not line.strip():
                return  # blank line
            try:
                line.decode("utf-8")
                kind = "json"
            except UnicodeDecodeError:
                kind = "utf8"
            self.stats.malformed[kind] += 1
            return
        if type(event) is dict:
            out.append(event)
        else:
            self.stats.malformed["not_object"] += 1

    def _check_rewritten(self, f: _File, size: int) -> None:
        """Restart a file that shrank or whose first bytes changed (truncated, maybe refilled)."""
        if size < f.read_pos or (f.fp_len and _fingerprint(f.fd, f.fp_len) != (f.fp_len, f.fp)):
            self.stats.truncations += 1
            f.offset, f.skip, f.buf, f.pos = 0, False, b"", 0
            f.fp_len, f.fp = 0, _EMPTY_FP
        if f.fp_len < FINGERPRINT_BYTES and size > f.fp_len:
            f.fp_len, f.fp = _fingerprint(f.fd, FINGERPRINT_BYTES)

    # -- following files ------------------------------------------------------------------------

    def _scan(self, initial: bool = False) -> None:
        """List the glob: open files not tracked yet, note which tracked files left it."""
        if not os.path.isdir(self._root):
            self.stats.missing_dir = True
            self.stats.missing_dir_scans += 1
            for f in self._files.values():  # deleted with the directory, or moved away with it
                f.misses += 1
            return
        self.stats.missing_dir = False
        # A name listed for the active file may point to its successor by the time it is opened (the
        # file was rotated in between): the rotated file is missed, and reading its successor first
        # would reorder events. So list again while a listing turns up new files: the missed file
        # keeps its rotated name and shows up. A listing that finds nothing new proves that every
        # file older than a tracked one is tracked too; until one does, new files are held back.
        seen: set[Identity] = set()
        clean = False
        for _ in range(LISTING_ROUNDS):
            clean = True
            for path in glob.glob(self.pattern):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished since the listing
                if not stat.S_ISREG(st.st_mode):
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident not in self._files:
                    opened = self._open(path, initial)
                    if opened is None:
                        continue
                    ident, new = opened
                    clean = clean and not new
                self._files[ident].name = path
                seen.add(ident)
            if clean:
                break
        for ident, f in self._files.items():
            f.misses = 0 if ident in seen else f.misses + 1
            f.hold = f.hold and not clean
        if self._resuming and clean:  # checkpointed files not found now were deleted while we were down
            self.stats.files_lost += len(self._remembered)
            for mark in self._remembered.values():
                log.warning("event file %s (checkpointed at byte %d) is gone", mark.name, mark.offset)
            self._remembered.clear()
            self._resuming = False
        self.stats.files_tracked = len(self._files)

    def _open(self, path: str, initial: bool) -> tuple[Identity, bool] | None:
        """Open a listed file; returns its identity and whether it is new, None if it vanished."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)  # the identity of what was opened, whatever the name points to now
        ident = (st.st_dev, st.st_ino)
        if ident in self._files:  # the name was bound to another file between stat and open
            os.close(fd)
            return ident, False
        # size -1: the next poll checks the resumed offset against the file as it is then
        f = self._files[ident] = _File(fd=fd, name=path, size=-1, mtime_ns=st.st_mtime_ns, hold=True)
        f.fp_len, f.fp = _fingerprint(fd, FINGERPRINT_BYTES)
        mark = self._remembered.pop(ident, None)
        if mark is not None:
            if _fingerprint(fd, mark.fp_len) == (mark.fp_len, mark.fp):
                f.offset, f.skip = mark.offset, mark.skip
            else:  # the inode was recycled for a new file: read that one from its beginning
                self.stats.fingerprint_mismatches += 1
                log.info("event file %s reuses the inode of %s: reading it from the start", path, mark.name)
        elif initial and self.start == "end" and st.st_size:
            f.offset = st.st_size
            f.skip = os.pread(fd, 1, st.st_size - 1) != b"\n"  # a line being written: skip its end
        return ident, True

    def _close_finished(self) -> None:
        for ident, f in list(self._files.items()):
            if not f.misses or (f.nlink and f.misses < MISSES_BEFORE_CLOSE):
                continue
            try:
                at_eof = f.buf.find(b"\n", f.pos) < 0 and os.fstat(f.fd).st_size <= f.read_pos
            except OSError:
                at_eof = True
            if not at_eof:
                continue
            if f.nlink:  # still exists under a name outside the glob: resume if it comes back
                self._remember(ident, f.mark())
            elif f.pos < len(f.buf):
                self.stats.partial_dropped += 1
                log.warning("event file %s was deleted with an unterminated last line", f.name)
            self._forget(ident)

    def _read_error(self, ident: Identity, f: _File, exc: OSError) -> None:
        self.stats.read_errors += 1
        log.warning("reading event file %s: %s", f.name, exc)
        if f.misses:  # gone from the glob as well: give up on it
            self._forget(ident)

    def _remember(self, ident: Identity, mark: _Mark) -> None:
        self._remembered[ident] = mark
        self._remembered.move_to_end(ident)
        while len(self._remembered) > REMEMBERED_MAX:
            self._remembered.popitem(last=False)

    def _forget(self, ident: Identity) -> None:
        f = self._files.pop(ident)
        try:
            os.close(f.fd)
        except OSError:
            pass
        self.stats.files_tracked = len(self._files)

    # -- checkpoints ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-serialisable position of every known file: what :meth:`poll` has returned so far."""
        entries = [(ident, f.mark()) for ident, f in self._files.items()] + list(self._remembered.items())
        files = [{"dev": dev, "ino": ino, **m._asdict()} for (dev, ino), m in entries]
        return {"version": STATE_VERSION, "files": files}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`: known files at their offsets, all others from their beginning.

        Files that are not in the state appeared while the exporter was down, so none of their lines
        was returned. An invalid state is logged, counted and replaced by a fresh start (``start``).
        """
        for ident in list(self._files):
            self._forget(ident)
        self._remembered.clear()
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {state.get('version')!r}")
            for e in state["files"]:
                mark = _Mark(int(e["offset"]), bool(e["skip"]), int(e["fp_len"]), str(e["fp"]), str(e.get("name", "")))
                if mark.offset < 0 or not 0 <= mark.fp_len <= FINGERPRINT_BYTES:
                    raise ValueError(f"bad entry {e!r}")
                self._remembered[(int(e["dev"]), int(e["ino"]))] = mark
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an invalid event tail state (%s): starting afresh", exc)
            self.stats.checkpoint_errors += 1
            self._remembered.clear()
            self._scan(initial=True)
            return
        self._resuming = True
        self._scan()

    def save_checkpoint(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Atomically write ``{"version", "tail": state(), "extra": extra}`` (the caller's own state)."""
        data = orjson.dumps(
            {"version": STATE_VERSION, "tail": self.state(), "extra": extra or {}}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
        try:
            # Readable by the event log's retention (the service reads it to know what was read).
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    def load_checkpoint(self, path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Resume from a checkpoint written by :meth:`save_checkpoint`; returns ``(state, extra)``.

        A missing checkpoint gives ``(None, {})`` and leaves the tail as constructed; so does a corrupt
        one, which is also logged and counted in ``stats.checkpoint_errors``.
        """
        try:
            with open(path, "rb") as fh:
                doc = orjson.loads(fh.read())
            if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
                raise ValueError("not a version 1 checkpoint")
            state, extra = doc["tail"], doc.get("extra", {})
            if not isinstance(state, dict) or not isinstance(extra, dict):
                raise ValueError("bad checkpoint layout")
        except FileNotFoundError:
            return None, {}
        except (OSError, ValueError, KeyError) as exc:  # orjson.JSONDecodeError is a ValueError
            log.warning("ignoring checkpoint %s (%s): starting afresh", path, exc)
            self.stats.checkpoint_errors += 1
            return None, {}
        errors = self.stats.checkpoint_errors
        self.restore(state)
        if self.stats.checkpoint_errors != errors:
            return None, {}
        return state, extra

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        for ident in list(self._files):
            self._forget(ident)

    def __enter__(self) -> EventTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
