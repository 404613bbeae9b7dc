"""EventTail on real files: rotation, deletion, truncation, partial lines, checkpoints, bad lines."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import orjson
import pytest

from mlpulse.events import EventLog
from mlpulse.exporter import tail as tail_module
from mlpulse.exporter.tail import EventTail, TailStats


def line(**fields) -> bytes:
    return orjson.dumps(fields) + b"\n"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def drain(tail: EventTail, max_lines: int = 10_000) -> list[dict]:
    """Poll until a poll returns nothing and did not stop at its line budget."""
    events: list[dict] = []
    while True:
        got = tail.poll(max_lines=max_lines)
        events += got
        if not got and not tail.more:
            return events


def ids(events: list[dict], key: str = "i") -> list:
    return [e[key] for e in events]


def assert_clean(stats: TailStats) -> None:
    assert stats.malformed == {"utf8": 0, "json": 0, "not_object": 0}
    assert stats.oversize == 0
    assert stats.read_errors == 0


def test_rotation_mid_write_with_a_writer_still_on_the_old_file(tmp_path: Path) -> None:
    active = tmp_path / "predictions.jsonl"
    old_fd = os.open(active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    for i in range(5):
        os.write(old_fd, line(f="old", i=i))
    first = tail.poll()
    assert [(e["f"], e["i"]) for e in first] == [("old", i) for i in range(5)]

    os.write(old_fd, line(f="old", i=5))
    os.write(old_fd, b'{"f":"old","i":6')  # half written when the file is rotated
    os.rename(active, tmp_path / "predictions-20250101T000000000000Z.jsonl")  # as events.py does
    new_fd = os.open(active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for i in range(3):
        os.write(new_fd, line(f="new", i=i))
    second = tail.poll()
    os.write(old_fd, b"}\n" + line(f="old", i=7))  # a writer still holding the renamed file
    os.write(new_fd, line(f="new", i=3))
    third = tail.poll()
    os.close(old_fd)
    os.close(new_fd)

    events = first + second + third
    assert [e["i"] for e in events if e["f"] == "old"] == list(range(8))
    assert [e["i"] for e in events if e["f"] == "new"] == list(range(4))
    assert [(e["f"], e["i"]) for e in second] == [("old", 5), ("new", 0), ("new", 1), ("new", 2)]
    assert tail.poll() == []
    assert tail.stats.events_returned == 12
    assert tail.stats.lines_read == 12
    assert tail.stats.files_tracked == 2
    assert tail.stats.truncations == 0
    assert_clean(tail.stats)
    tail.close()


def test_rotated_file_deleted_before_fully_read_is_read_through_the_open_fd(tmp_path: Path) -> None:
    active = tmp_path / "predictions.jsonl"
    append(active, b"".join(line(f="old", i=i) for i in range(10)))
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    first = tail.poll(max_lines=3)
    assert ids(first) == [0, 1, 2]
    assert tail.more

    rotated = tmp_path / "predictions-20250101T000000000000Z.jsonl"
    os.rename(active, rotated)
    rotated.unlink()  # retention deleted it before the tail caught up
    append(active, line(f="new", i=0) + line(f="new", i=1))
    rest = drain(tail)

    assert [e["i"] for e in rest if e["f"] == "old"] == list(range(3, 10))
    assert [e["i"] for e in rest if e["f"] == "new"] == [0, 1]
    assert tail.stats.events_returned == 12
    assert tail.stats.files_tracked == 1  # the deleted file, read to EOF, was closed
    assert tail.stats.partial_dropped == 0
    assert_clean(tail.stats)
    tail.close()


def test_truncation_restarts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, b"".join(line(i=i) for i in range(3)))
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert ids(tail.poll()) == [0, 1, 2]

    path.write_bytes(line(i=10))  # truncated below the read position, then written again
    assert ids(tail.poll()) == [10]
    assert tail.stats.truncations == 1

    # Truncated and refilled past the old position between two polls: only the first bytes tell.
    path.write_bytes(b"".join(line(i=20 + k, pad="x" * 40) for k in range(5)))
    assert ids(tail.poll()) == [20, 21, 22, 23, 24]
    assert tail.stats.truncations == 2
    assert tail.poll() == []
    assert tail.stats.events_returned == 9
    assert_clean(tail.stats)
    tail.close()


def test_partial_last_line_is_returned_once_completed(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, b'{"i": 1}\n{"i": ')
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert ids(tail.poll()) == [1]
    assert tail.poll() == []
    assert tail.state()["files"][0]["offset"] == len(b'{"i": 1}\n')  # the partial line is not consumed
    append(path, b"2")
    assert tail.poll() == []
    append(path, b"}\n")
    assert ids(tail.poll()) == [2]
    assert tail.stats.lines_read == 2
    assert tail.stats.bytes_read == path.stat().st_size
    assert_clean(tail.stats)
    tail.close()


def test_restart_from_checkpoint_neither_repeats_nor_skips(tmp_path: Path) -> None:
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    checkpoint = state_dir / "exporter.json"
    pattern = events_dir / "*.jsonl"
    active = events_dir / "predictions.jsonl"
    append(active, b"".join(line(i=i) for i in range(10)) + b'{"i": 10')

    tail = EventTail(pattern, start="beginning")
    before = tail.poll(max_lines=4)
    assert ids(before) == [0, 1, 2, 3]
    json.dumps(tail.state())  # JSON-serialisable as it is
    tail.save_checkpoint(checkpoint, {"window": [1.5, 2.5], "n": 4})
    tail.close()
    assert os.listdir(state_dir) == ["exporter.json"]  # no temporary file left behind
    saved = json.loads(checkpoint.read_bytes())
    assert saved["version"] == 1 and saved["extra"] == {"window": [1.5, 2.5], "n": 4}
    assert [(f["offset"], f["skip"]) for f in saved["tail"]["files"]] == [(4 * len(line(i=0)), False)]

    # While the exporter is down: the partial line is finished, the file rotated, a new one written.
    append(active, b"}\n" + line(i=11))
    os.rename(active, events_dir / "predictions-20250101T000000000000Z.jsonl")
    append(active, line(i=12) + line(i=13))

    restarted = EventTail(pattern, start="end")  # start only matters when there is no checkpoint
    state, extra = restarted.load_checkpoint(checkpoint)
    assert extra == {"window": [1.5, 2.5], "n": 4}
    assert state == saved["tail"]
    after = drain(restarted)
    assert ids(after) == list(range(4, 14))
    assert sorted(ids(before + after)) == list(range(14))
    assert restarted.stats.checkpoint_errors == 0
    assert restarted.stats.files_lost == 0
    assert restarted.stats.fingerprint_mismatches == 0
    restarted.close()


def test_missing_or_corrupt_checkpoint_starts_fresh(tmp_path: Path) -> None:
    append(tmp_path / "a.jsonl", line(i=0))
    checkpoint = tmp_path / "ckpt.json"

    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert tail.load_checkpoint(checkpoint) == (None, {})  # missing: not an error
    assert tail.stats.checkpoint_errors == 0
    checkpoint.write_bytes(b'{"version": 1, "tail": {"vers')  # torn by a crash of another writer
    assert tail.load_checkpoint(checkpoint) == (None, {})
    assert tail.stats.checkpoint_errors == 1
    assert ids(tail.poll()) == [0]  # still as constructed
    tail.close()

    checkpoint.write_bytes(orjson.dumps({"version": 1, "tail": {"version": 1, "files": [{"dev": 1}]}, "extra": {}}))
    fresh = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert fresh.load_checkpoint(checkpoint) == (None, {})
    assert fresh.stats.checkpoint_errors == 1
    assert ids(fresh.poll()) == [0]  # a fresh start, as the start option says
    fresh.close()


def test_malformed_and_oversize_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(
        path,
        line(i=0)
        + b'{"i": 1\n'  # invalid JSON
        + b"[1, 2]\n"  # JSON, not an object
        + b'"text"\n'
        + b'{"s": "\xff\xfe"}\n'  # invalid UTF-8
        + b"\n   \n"  # blank lines: ignored
        + line(big="x" * 300)  # oversize, complete in the file
        + line(i=2),
    )
    # Small chunks: the oversize line spans several reads and is never held whole.
    tail = EventTail(tmp_path / "*.jsonl", start="beginning", max_line_bytes=100, chunk_bytes=32)
    assert ids(tail.poll()) == [0, 2]
    assert tail.stats.malformed == {"utf8": 1, "json": 1, "not_object": 2}
    assert tail.stats.oversize == 1
    assert tail.stats.lines_read == 9

    append(path, b'{"big": "' + b"y" * 150)  # oversize and not finished yet
    assert tail.poll() == []
    assert tail.stats.oversize == 2
    assert tail.state()["files"][0]["skip"] is True
    append(path, b"y" * 500 + b'"}\n' + line(i=3))
    assert ids(tail.poll()) == [3]
    assert tail.stats.oversize == 2
    assert tail.stats.lines_read == 11
    assert tail.stats.events_returned == 3
    tail.close()


def test_a_dropped_oversize_line_counts_against_the_line_budget(tmp_path: Path) -> None:
    """A partial line dropped for its size is one of the lines a poll may consume: with a budget of
    one line, that poll returns nothing and says there is more."""
    path = tmp_path / "a.jsonl"
    append(path, b'{"big": "' + b"y" * 300 + b'"}\n' + line(i=1))
    tail = EventTail(tmp_path / "*.jsonl", start="beginning", max_line_bytes=100, chunk_bytes=64)
    assert tail.poll(max_lines=1) == [] and tail.more
    assert tail.stats.oversize == 1 and tail.stats.lines_read == 1
    assert ids(tail.poll(max_lines=1)) == [1]
    tail.close()


def test_checkpoint_inside_an_oversize_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, line(i=0) + b'{"big": "' + b"z" * 200)
    tail = EventTail(tmp_path / "*.jsonl", start="beginning", max_line_bytes=100, chunk_bytes=64)
    assert ids(tail.poll()) == [0]
    state = tail.state()
    tail.close()
    append(path, b"z" * 200 + b'"}\n' + line(i=1))
    resumed = EventTail(tmp_path / "*.jsonl", state=state, max_line_bytes=100, chunk_bytes=64)
    assert ids(resumed.poll()) == [1]
    assert resumed.stats.malformed == {"utf8": 0, "json": 0, "not_object": 0}  # the tail end is not parsed
    resumed.close()


def test_missing_directory(tmp_path: Path) -> None:
    events_dir = tmp_path / "events"
    tail = EventTail(events_dir / "*.jsonl", start="end")
    assert tail.poll() == []
    assert tail.stats.missing_dir is True
    assert tail.stats.missing_dir_scans == 2  # construction and the poll

    events_dir.mkdir()
    append(events_dir / "predictions.jsonl", line(i=0) + line(i=1))
    assert ids(tail.poll()) == [0, 1]  # appeared after start-up: read from its beginning
    assert tail.stats.missing_dir is False

    append(events_dir / "predictions.jsonl", line(i=2))
    shutil.rmtree(events_dir)  # gone with unread lines: still read through the open descriptor
    assert ids(tail.poll()) == [2]
    assert tail.stats.missing_dir is True
    assert tail.stats.files_tracked == 0
    assert tail.poll() == []
    tail.close()


def test_file_vanishing_between_listing_and_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path / "a.jsonl", line(i=0))
    real_glob = glob.glob
    monkeypatch.setattr(glob, "glob", lambda pattern: [str(tmp_path / "gone.jsonl"), *real_glob(pattern)])
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert ids(tail.poll()) == [0]
    assert tail.stats.files_tracked == 1
    assert tail.stats.read_errors == 0
    tail.close()


def _rotate_after_listing(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Make the next listing return the active file's name, then rotate it before the tail opens it."""
    real_glob = glob.glob
    calls = []

    def listing_then_rotation(pattern: str) -> list[str]:
        names = real_glob(pattern)
        if not calls:
            os.rename(directory / "predictions.jsonl", directory / "predictions-20250101T000000000000Z.jsonl")
            append(directory / "predictions.jsonl", line(i=2))
        calls.append(pattern)
        return names

    monkeypatch.setattr(glob, "glob", listing_then_rotation)


def test_file_rotated_between_listing_and_open_keeps_the_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    append(tmp_path / "predictions.jsonl", line(i=0) + line(i=1))
    _rotate_after_listing(monkeypatch, tmp_path)
    # The first listing finds only the successor; the next finds the rotated file, the third nothing.
    assert ids(tail.poll()) == [0, 1, 2]
    assert tail.stats.files_tracked == 2
    tail.close()


def test_new_files_wait_for_a_listing_that_finds_nothing_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_module, "LISTING_ROUNDS", 1)
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    append(tmp_path / "predictions.jsonl", line(i=0) + line(i=1))
    _rotate_after_listing(monkeypatch, tmp_path)
    assert tail.poll() == []  # found the successor only: held back
    assert tail.more
    assert tail.poll() == []  # found the rotated file: still not proven complete
    assert ids(tail.poll()) == [0, 1, 2]  # a listing found nothing new: read, oldest first
    assert not tail.more
    tail.close()


def test_start_end_versus_beginning(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, b"".join(line(i=i) for i in range(3)) + b'{"i": 3')  # a line being written at start-up
    pattern = tmp_path / "*.jsonl"
    end = EventTail(pattern, start="end")
    beginning = EventTail(pattern, start="beginning")
    assert end.poll() == []
    assert ids(beginning.poll()) == [0, 1, 2]

    append(path, b"}\n" + line(i=4))
    assert ids(end.poll()) == [4]  # the line begun before start-up belongs to the history
    assert ids(beginning.poll()) == [3, 4]

    append(tmp_path / "b.jsonl", line(i=100))  # appears later: from its beginning, whatever start says
    assert ids(end.poll()) == [100]
    assert ids(beginning.poll()) == [100]
    assert end.stats.malformed == {"utf8": 0, "json": 0, "not_object": 0}
    end.close()
    beginning.close()
    with pytest.raises(ValueError):
        EventTail(pattern, start="middle")  # type: ignore[arg-type]


def test_same_inode_with_other_content_is_read_from_its_beginning(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, b"".join(line(i=i) for i in range(3)))
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert ids(tail.poll()) == [0, 1, 2]
    state = tail.state()
    tail.close()

    # While down, the same inode gets other, longer content: the saved offset would land mid-line.
    inode = path.stat().st_ino
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(b"".join(line(i=10 + k, pad="p" * 30) for k in range(5)))
    assert path.stat().st_ino == inode

    resumed = EventTail(tmp_path / "*.jsonl", state=state)
    assert ids(resumed.poll()) == [10, 11, 12, 13, 14]
    assert resumed.stats.fingerprint_mismatches == 1
    assert_clean(resumed.stats)
    resumed.close()


def test_deleted_file_recreated_at_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    append(path, b"".join(line(i=i) for i in range(3)))
    tail = EventTail(tmp_path / "*.jsonl", start="beginning")
    assert ids(tail.poll()) == [0, 1, 2]
    state = tail.state()

    # Running: the deleted file is closed at EOF, the new one (maybe on the same inode) read whole.
    path.unlink()
    assert tail.poll() == []
    assert tail.stats.files_tracked == 0
    append(path, b"".join(line(i=10 + k) for k in range(4)))
    assert ids(tail.poll()) == [10, 11, 12, 13]
    tail.close()

    # Restarting from the state saved before the deletion: the inode is often recycled.
    reused = path.stat().st_ino == state["files"][0]["ino"]
    resumed = EventTail(tmp_path / "*.jsonl", state=state)
    assert ids(resumed.poll()) == [10, 11, 12, 13]
    assert resumed.stats.fingerprint_mismatches == (1 if reused else 0)
    assert resumed.stats.files_lost == (0 if reused else 1)
    resumed.close()


def _write_events(directory: str, writer: int, count: int, max_bytes: int) -> None:
    events = EventLog(directory, max_bytes=max_bytes, backup_count=100_000)
    for seq in range(count):
        events.write("prediction", {"writer": writer, "seq": seq, "pad": "x" * 40})
    events.close()


def test_real_event_log_with_many_rotations_and_concurrent_writers(tmp_path: Path) -> None:
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    writers, per_writer = 3, 1000
    tail = EventTail(events_dir / "*.jsonl", start="beginning")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_events, args=(str(events_dir), w, per_writer, 2048)) for w in range(writers)]
    for p in procs:
        p.start()
    events: list[dict] = []
    while any(p.is_alive() for p in procs):
        events += tail.poll(max_lines=500)
        time.sleep(0.002)
    for p in procs:
        p.join()
    events += drain(tail)

    assert [p.exitcode for p in procs] == [0] * writers
    files = list(events_dir.glob("*.jsonl"))
    assert len(files) > 50  # many rotations happened while the tail was reading
    keys = [(e["writer"], e["seq"]) for e in events]
    assert len(keys) == writers * per_writer
    assert set(keys) == {(w, s) for w in range(writers) for s in range(per_writer)}
    for w in range(writers):  # each writer's events come back in the order it wrote them
        assert [s for ww, s in keys if ww == w] == list(range(per_writer))
    assert all(e["event"] == "prediction" for e in events)
    assert tail.stats.events_returned == writers * per_writer
    assert tail.stats.files_tracked == len(files)
    assert tail.stats.truncations == 0
    assert_clean(tail.stats)
    tail.close()
