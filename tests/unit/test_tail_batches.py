"""The tail's batched decoding (``EventTail._drain`` splitting a chunk's lines at once) returns the
same events, counts the same lines and keeps the same checkpoint offsets, poll after poll, as the
previous line-at-a-time path (``bench/per_line.py``, the oracle) on hostile files: malformed,
not UTF-8, not objects, blank, oversize lines, lines split across chunks and across writes, a
truncation, small and large line budgets."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import orjson
import pytest

from bench.per_line import PerLineTail
from mlpulse.exporter.tail import EventTail


def hostile_pieces(seed: int, n: int) -> list[bytes]:
    """The bytes of a file in the pieces they are appended in: whole lines, halves of lines."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.70:
            body = orjson.dumps({"event": "prediction", "i": i, "pad": "x" * rng.choice([0, 10, 200, 900])})
        elif r < 0.74:
            body = b'{"event": "prediction", "i": '  # cut JSON
        elif r < 0.77:
            body = b"\xff\xfe not utf-8 " + bytes([rng.randrange(256)])
        elif r < 0.80:
            body = rng.choice([b"[1, 2]", b'"text"', b"3", b"null", b"true"])
        elif r < 0.84:
            body = rng.choice([b"", b"   ", b"\t"])
        elif r < 0.88:
            body = b'{"big": "' + b"y" * rng.choice([1500, 5000, 20000]) + b'"}'  # oversize (max 1200)
        elif r < 0.90:
            body = b'{"a": 1} {"b": 2}'  # two values on a line
        else:
            body = orjson.dumps({"event": "feedback", "i": i, "ok": rng.random() < 0.5})
        line = body + b"\n"
        if rng.random() < 0.2:  # written in two pieces: a poll may see half a line
            cut = rng.randrange(len(line) + 1)
            out += [line[:cut], line[cut:]]
        else:
            out.append(line)
    return out


def compare(tmp_path: Path, seed: int, max_lines: int, chunk_bytes: int) -> None:
    directory = tmp_path / "events"
    directory.mkdir()
    path = directory / "predictions.jsonl"
    path.write_bytes(b"")
    pieces = hostile_pieces(seed, 1500)
    rng = random.Random(seed + 1)
    kw = {"start": "beginning", "max_line_bytes": 1200, "chunk_bytes": chunk_bytes}
    new, old = EventTail(directory / "*.jsonl", **kw), PerLineTail(directory / "*.jsonl", **kw)
    polls = returned = 0
    i = 0
    truncated = False
    while i < len(pieces) or new.more or old.more:
        k = rng.randint(0, 40)
        with open(path, "ab") as fh:
            fh.write(b"".join(pieces[i:i + k]))
        i += k
        if not truncated and i > len(pieces) // 2:  # rewritten from scratch, shorter
            path.write_bytes(b"".join(pieces[:5]))
            truncated = True
        got_new, got_old = new.poll(max_lines=max_lines), old.poll(max_lines=max_lines)
        polls += 1
        assert got_new == got_old, polls
        assert new.state() == old.state(), polls
        assert dataclasses.asdict(new.stats) == dataclasses.asdict(old.stats), polls
        assert new.more == old.more
        returned += len(got_new)
    stats = new.stats
    assert returned > 500 and stats.truncations == 1
    assert min(stats.malformed.values()) > 0 and stats.oversize > 0, stats
    new.close()
    old.close()


@pytest.mark.parametrize("seed,max_lines,chunk_bytes", [
    (1, 10_000, 1 << 20),  # the exporter's budget and chunk
    (2, 7, 1 << 20),  # budgets that end inside a chunk
    (3, 1, 4096),  # one line per poll
    (4, 50, 300),  # chunks shorter than lines
])
def test_batched_decoding_equals_the_line_by_line_path(tmp_path, seed, max_lines, chunk_bytes):
    compare(tmp_path, seed, max_lines, chunk_bytes)
