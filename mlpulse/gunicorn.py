"""gunicorn server hooks for multiprocess metrics. In a gunicorn config file:

    from mlpulse.gunicorn import on_starting, child_exit, post_worker_init  # noqa: F401
"""

from __future__ import annotations

import gc

from mlpulse.metrics.multiprocess import clear_directory, fold_dead_process, multiprocess_dir


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    """Start from an empty multiprocess directory: stale files would mix in a previous run."""
    path = multiprocess_dir()
    if path:
        clear_directory(path)


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's Arbiter and Worker
    """Fold an exited worker's metrics into the archive so files do not pile up."""
    fold_dead_process(worker.pid)


def post_worker_init(worker) -> None:  # noqa: ANN001 - gunicorn's Worker
    """Once the app is loaded: move everything alive into the collector's permanent generation
    (``gc.freeze``), so that a full collection does not walk the loaded libraries and the model on
    every few thousand requests (about 0.1 s, paid by one request: docs/performance.md)."""
    gc.freeze()
