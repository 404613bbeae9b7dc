"""The event tail as it was before it decoded a chunk's lines together: every line found, sliced
and decoded on its own. The oracle of ``tests/unit/test_tail_batches.py`` and the baseline of
``bench.drift``'s read rate; not used by the exporter."""

from __future__ import annotations

import os
from typing import Any

from mlpulse.exporter.tail import EventTail, _File


class PerLineTail(EventTail):
    """``EventTail`` with the previous ``_drain``: one ``find`` and one ``_parse`` per line."""

    def _drain(self, f: _File, budget: int, out: list[dict[str, Any]]) -> int:
        consumed = 0
        while consumed < budget:
            nl = f.buf.find(b"\n", f.pos)
            if nl >= 0:
                line = f.buf[f.pos : nl]
                f.pos = nl + 1
                f.offset += len(line) + 1
                consumed += 1
                self.stats.lines_read += 1
                if len(line) > self.max_line_bytes:
                    self.stats.oversize += 1
                else:
                    self._parse(line, out)
                continue
            pending = len(f.buf) - f.pos
            if pending > self.max_line_bytes:
                self.stats.oversize += 1
                consumed += 1
                self.stats.lines_read += 1
                f.offset += pending
                f.buf, f.pos, f.skip = b"", 0, True
            chunk = os.pread(f.fd, self.chunk_bytes, f.read_pos)
            if not chunk:
                break
            self.stats.bytes_read += len(chunk)
            if f.skip:
                nl = chunk.find(b"\n")
                if nl < 0:
                    f.offset += len(chunk)
                    continue
                f.offset += nl + 1
                f.skip = False
                chunk = chunk[nl + 1 :]
            f.buf = f.buf[f.pos :] + chunk
            f.pos = 0
        return consumed
