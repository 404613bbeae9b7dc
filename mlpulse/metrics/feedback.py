"""Feedback metrics of the model service: labels taken in (by outcome), items refused (by reason) and
ledger failures (by operation). Labels are bounded: model name and version (one bundle per process)
and the fixed reason lists the service passes in."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

OUTCOMES = ("new", "update", "duplicate")
LEDGER_OPERATIONS = ("record", "feedback", "prune")


class FeedbackMetrics:
    def __init__(self, *, name: str, version: str, registry: CollectorRegistry | None,
                 refuse_reasons: Sequence[str]):
        mv = ("model", "version")
        self.labels = {"model": name, "version": version}
        self.taken = Counter("mlpulse_feedback_labels", "Labels taken in by POST /v1/feedback, by outcome "
                             "(new, update: a changed label, duplicate: the same label again)", mv + ("outcome",),
                             registry=registry)
        self.refused = Counter("mlpulse_feedback_refused", "Feedback items refused, by reason", mv + ("reason",),
                               registry=registry)
        self.ledger_errors = Counter("mlpulse_feedback_ledger_errors", "Feedback ledger reads or writes that "
                                     "failed, by operation (record: on the predict path)", mv + ("operation",),
                                     registry=registry)
        for o in OUTCOMES:  # every series exists from the start, at 0
            self.taken.labels(**self.labels, outcome=o)
        for r in refuse_reasons:
            self.refused.labels(**self.labels, reason=r)
        for op in LEDGER_OPERATIONS:
            self.ledger_errors.labels(**self.labels, operation=op)

    def observe_outcome(self, outcome: str) -> None:
        self.taken.labels(**self.labels, outcome=outcome).inc()

    def observe_refused(self, reason: str, n: int = 1) -> None:
        self.refused.labels(**self.labels, reason=reason).inc(n)

    def observe_ledger_error(self, operation: str) -> None:
        self.ledger_errors.labels(**self.labels, operation=operation).inc()
