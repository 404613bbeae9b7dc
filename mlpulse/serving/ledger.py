"""The feedback ledger: which predictions exist and which labels they already have, shared by every
gunicorn worker, durable across restarts, pruned to the join horizon.

One SQLite database (standard library ``sqlite3``) beside the event files, in WAL mode: readers never
block the writer, and with ``synchronous=NORMAL`` a commit is a write to the WAL without an fsync
(a power cut may lose the last transactions, never corrupt the file). Each worker opens its own
connection after the fork; SQLite's file locks serialise the writers (``busy_timeout`` waits).

Two tables:

- ``predictions(request_id, ts, version, batch)``: one row per scored request (not per record), the
  one write the predict path pays. A request id used again names the newer request (the client chose
  to reuse it); labels given before that are then no longer its labels.
- ``labels(request_id, record_index, label, ts)``: the last label of each record; the same label again
  is a duplicate, another one an update.

Rows older than ``horizon`` seconds are deleted every ``PRUNE_EVERY`` writes of a process, so the
file holds at most one horizon of requests. Cost on the predict path: ``python -m bench.feedback``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

PRUNE_EVERY = 2000  # writes between two prunes in one process
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, version TEXT NOT NULL, batch INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL, record_index INTEGER NOT NULL, label TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (request_id, record_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_ts ON labels (ts);
"""


class LedgerError(Exception):
    """The ledger could not be read or written (``operation`` says which step)."""

    def __init__(self, operation: str, message: str):
        super().__init__(message)
        self.operation = operation


@dataclass(frozen=True)
class Item:
    """One label for one record, validated: ``label`` is its canonical text."""

    request_id: str
    record_index: int
    label: str


@dataclass(frozen=True)
class Outcome:
    outcome: str  # new | update | duplicate | unknown_request | unknown_record
    predicted_at: float | None = None  # Unix seconds of the prediction
    version: str | None = None  # model version that made it
    previous: str | None = None  # the label an update replaced


class Ledger:
    def __init__(self, path: str, horizon: float):
        self.path, self.horizon = path, horizon
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a connection never crosses a fork
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def record_prediction(self, request_id: str, version: str, batch: int, ts: float | None = None) -> None:
        """Remember a scored request (one row, one autocommit statement)."""
        ts = time.time() if ts is None else ts
        try:
            db = self._db()
            db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)", (request_id, ts, version, batch))
            self._writes += 1
            if self._writes % PRUNE_EVERY == 0:
                self.prune(ts)
        except sqlite3.Error as e:
            raise LedgerError("record", str(e)) from None

    def apply(self, items: list[Item], ts: float | None = None, commit: bool = True) -> list[Outcome]:
        """Each item's outcome. All or nothing, in one transaction: the new and changed labels are
        stored only with ``commit`` and when every item names a known record (two workers given the
        same label at once: one stores it, the other sees a duplicate)."""
        ts = time.time() if ts is None else ts
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = [self._apply_one(db, it, ts) for it in items]
            except BaseException:
                db.execute("ROLLBACK")
                raise
            known = all(o.outcome not in ("unknown_request", "unknown_record") for o in out)
            db.execute("COMMIT" if commit and known else "ROLLBACK")
            self._writes += 1
            return out
        except sqlite3.Error as e:
            raise LedgerError("feedback", str(e)) from None

    def _apply_one(self, db: sqlite3.Connection, it: Item, ts: float) -> Outcome:
        row = db.execute("SELECT ts, version, batch FROM predictions WHERE request_id = ?", (it.request_id,)).fetchone()
        if row is None or row[0] < ts - self.horizon:
            return Outcome("unknown_request")
        predicted_at, version, batch = row
        if it.record_index >= batch:
            return Outcome("unknown_record", predicted_at, version)
        old = db.execute("SELECT label, ts FROM labels WHERE request_id = ? AND record_index = ?",
                         (it.request_id, it.record_index)).fetchone()
        if old is not None and old[1] < predicted_at:
            old = None  # a label of an earlier request that used the same id
        if old is not None and old[0] == it.label:
            return Outcome("duplicate", predicted_at, version)
        db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                   (it.request_id, it.record_index, it.label, ts))  # rolled back unless all is well
        return Outcome("new" if old is None else "update", predicted_at, version, None if old is None else old[0])

    def prune(self, now: float | None = None) -> int:
        """Delete what is older than the horizon; returns the rows deleted."""
        cutoff = (time.time() if now is None else now) - self.horizon
        try:
            db = self._db()
            n = db.execute("DELETE FROM predictions WHERE ts < ?", (cutoff,)).rowcount
            return n + db.execute("DELETE FROM labels WHERE ts < ?", (cutoff,)).rowcount
        except sqlite3.Error as e:
            raise LedgerError("prune", str(e)) from None

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
