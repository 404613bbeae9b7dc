"""The event tail as it was before it decoded a chunk's lines together: every line found, sliced
and decoded on its own. The oracle of ``tests/unit/test_tail_batches.py`` and the baseline of
``bench.drift``'s read rate; not used by the exporter."""

from __future__ import annotations

from typing import Any

from mlpulse.exporter.tail import EventTail, _File


class PerLineTail(EventTail):
    """``EventTail`` with the previous ``_drain``: one ``find`` and one ``_parse`` per line (the
    chunks are read by the same ``_refill``)."""

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
            dropped, read = self._refill(f)  # reading chunks is the same in both
            consumed += dropped
            if not read:
                break
        return consumed
