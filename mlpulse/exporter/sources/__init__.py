"""Where the exporter's windows come from: one module per source, one interface.

- ``files``: tails the event files, bins each scored event into time slices (``windows.Ring``)
  and sums the slices of a window; checkpointable.
- ``elasticsearch``: tails nothing; each window is one aggregation search over the indexed events
  giving the same counts and moments as the ring would.

``mlpulse.exporter.core.Exporter`` talks to either through ``Source`` alone, so it has no mode of
its own: the statistics of a window are the same whatever its source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from mlpulse.exporter.windows import Reference

# (live counts in the Reference's layout, prediction moments {count, mean, std, min, max})
Window = tuple[np.ndarray, dict[str, float]]


class Source(Protocol):
    newest_event: float  # Unix seconds of the newest event seen (0: none yet)

    def track(self, ref: Reference) -> None:
        """A model version's reference became known: keep its windows from now on."""

    def untrack(self, ref: Reference) -> None:
        """A model version was retired: forget its windows (its series go at the next evaluation)."""

    def poll(self) -> int:
        """Take in what arrived since the last call; returns the events read (0 for a source that
        is asked at evaluation)."""

    def window(self, ref: Reference, now: float, n_slices: int) -> Window | None:
        """The last ``n_slices`` slices of ``ref``'s model version at ``now``; None if the source
        could not answer (the window's series are then absent, and the source counts why)."""

    def save_checkpoint(self) -> None:
        """Persist what a restart needs (a no-op where nothing is kept)."""

    def collect(self) -> Iterable[Any]:
        """The source's own health metrics (Prometheus metric families)."""

    def describe(self) -> str:
        """One line for the start-up log: what is read, from where."""

    def close(self) -> None:
        """Release files or connections."""


def open_source(config: Any, slice_seconds: float, n_slices: int, clock) -> Source:
    """The source ``config.source`` names."""
    if config.source == "elasticsearch":
        from mlpulse.exporter.sources.elasticsearch import ElasticsearchSource

        return ElasticsearchSource.from_config(config, slice_seconds)
    from mlpulse.exporter.sources.files import FileSource

    return FileSource(config, slice_seconds, n_slices, clock)
