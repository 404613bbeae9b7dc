"""``POST /v1/feedback``: ground truth for earlier predictions, addressed by request id and record index.

    {"request_id": "r-17", "record_index": 0, "label": "default"}        one label
    [{"request_id": "r-17", "record_index": 0, "label": "default"}, ...]  several (all or nothing)

``label`` is a class of the bundle (as the model reports it or as its text) for a classifier, a
finite number for a regressor; ``record_index`` defaults to 0. The ledger (``ledger.Ledger``) says
whether the prediction exists (within the join horizon) and what label it already has: the same
label again is a duplicate (taken, counted once), another one an update (logged with the label it
replaces). A call with any item refused stores nothing and answers naming each item's problem: 404
when every problem is an unknown prediction, 422 otherwise.
Every item, taken or refused, leaves one event line (``feedback`` or ``feedback.refused``) and is
counted (``mlpulse_feedback_labels_total``, ``mlpulse_feedback_refused_total``).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from flask import g

from mlpulse.events import EVENT_FEEDBACK, EVENT_FEEDBACK_REFUSED, raw_text
from mlpulse.schema import OutputSpec, label_key
from mlpulse.serving.ledger import Item, Ledger, LedgerError

# Why a feedback item is refused (mlpulse_feedback_refused_total{reason}).
FEEDBACK_REFUSE_REASONS = (
    "invalid_item",  # not an object, unknown keys, request_id or record_index of the wrong form
    "invalid_label",  # not a class of the bundle, or not a finite number for a regressor
    "unknown_request",  # no prediction with this request id within the join horizon
    "unknown_record",  # the request had fewer records
    "call_refused",  # a valid item of a call refused for another item
    "ledger_error",  # the ledger could not be read or written (503)
)
ITEM_KEYS = {"request_id", "record_index", "label"}
RAW_ITEM_LIMIT = 2048


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def canonical_label(label: Any, output: OutputSpec) -> str | None:
    """The label's text as events and the exporter carry it, or None if the bundle cannot have it."""
    if output.task == "regression":
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label):
            return None
        return repr(float(label))
    if isinstance(label, (dict, list)) or label is None:
        return None
    text = label_key(label)
    return text if text in output.class_keys else None


class FeedbackError(Exception):
    """A refused call: ``status`` and the per-item ``errors`` of its problem answer."""

    def __init__(self, status: int, slug: str, title: str, detail: str, errors: list[dict[str, Any]]):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.errors = status, slug, title, detail, errors


class FeedbackTaker:
    """Validates feedback items, asks the ledger, logs and counts; knows nothing of Flask routing."""

    def __init__(self, output: OutputSpec, ledger: Ledger, metrics: Any, log, model_name: str, request_id_re):
        self.output, self.ledger, self.metrics, self.log = output, ledger, metrics, log
        self.model_name, self.request_id_re = model_name, request_id_re

    def record_prediction(self, request_id: str, version: str, batch: int) -> None:
        """The predict path's one call: a ledger failure is counted, never fails the prediction."""
        try:
            self.ledger.record_prediction(request_id, version, batch)
        except LedgerError as e:
            self.metrics.observe_ledger_error(e.operation)

    def _check(self, i: int, item: Any) -> tuple[Item | None, dict[str, Any] | None]:
        def error(reason: str, field: str, detail: str):
            return None, {"item": i, "field": field, "reason": reason, "detail": detail}

        if not isinstance(item, dict):
            return error("invalid_item", "", "an item is an object with request_id, record_index and label")
        unknown = sorted(set(item) - ITEM_KEYS)
        if unknown:
            return error("invalid_item", str(unknown[0])[:128], f"unknown keys {[str(k)[:64] for k in unknown[:5]]}")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not self.request_id_re.match(rid):
            return error("invalid_item", "request_id", "request_id must be the X-Request-ID of a prediction "
                         "(1 to 128 of A-Z a-z 0-9 . _ : -)")
        index = item.get("record_index", 0)
        if isinstance(index, float) and index.is_integer():
            index = int(index)  # 3.0 is the integer 3 in JSON Schema
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 31:
            return error("invalid_item", "record_index", "record_index must be a non-negative integer")
        if "label" not in item:
            return error("invalid_label", "label", "label is required")
        text = canonical_label(item["label"], self.output)
        if text is None:
            want = ("a finite number" if self.output.task == "regression"
                    else f"one of the classes {list(self.output.class_keys)}")
            return error("invalid_label", "label", f"label must be {want}")
        return Item(rid, index, text), None

    def take(self, body: Any) -> dict[str, Any]:
        single = isinstance(body, dict)
        raw_items = [body] if single else body
        checked = [self._check(i, it) for i, it in enumerate(raw_items)]
        items = [it for it, _ in checked if it is not None]
        errors = [e for _, e in checked if e is not None]
        try:
            outcomes = self.ledger.apply(items, commit=not errors)
        except LedgerError as e:
            self.metrics.observe_ledger_error(e.operation)
            self._refuse(raw_items, [{"item": i, "field": "", "reason": "ledger_error", "detail": str(e)}
                                     for i in range(len(raw_items))])
            raise FeedbackError(503, "feedback-unavailable", "Feedback unavailable",
                                "the feedback ledger cannot be read or written; retry later", []) from None
        by_item = iter(outcomes)
        results: list[tuple[int, Item, Any]] = []
        for i, (it, _e) in enumerate(checked):
            if it is None:
                continue
            o = next(by_item)
            if o.outcome in ("unknown_request", "unknown_record"):
                what = ("no prediction has this request_id within the join horizon" if o.outcome == "unknown_request"
                        else f"the request {it.request_id!r} has no record {it.record_index}")
                errors.append({"item": i, "field": "request_id" if o.outcome == "unknown_request" else "record_index",
                               "reason": o.outcome, "detail": what})
            results.append((i, it, o))
        if errors:
            errors.sort(key=lambda e: e["item"])
            bad = {e["item"] for e in errors}
            self._refuse(raw_items, errors + [{"item": i, "field": "", "reason": "call_refused",
                                                "detail": "another item of the call was refused"}
                                               for i, _it, _o in results if i not in bad])
            n = len(raw_items)
            what = "the item was" if n == 1 else f"{len(bad)} of {n} items were"
            if all(e["reason"] in ("unknown_request", "unknown_record") for e in errors):
                # Well-formed, but about predictions the ledger does not hold (never made, or expired).
                raise FeedbackError(404, "unknown-prediction", "Unknown prediction", f"{what} refused; nothing was "
                                    "stored; see errors", errors[:200])
            raise FeedbackError(422, "invalid-feedback", "Invalid feedback", f"{what} refused; nothing was stored; "
                                "see errors", errors[:200])
        events, answers = [], []
        for _i, it, o in results:
            self.metrics.observe_outcome(o.outcome)
            fb: dict[str, Any] = {"request_id": it.request_id, "record_index": it.record_index, "label": it.label,
                                  "outcome": o.outcome, "predicted_at": _iso(o.predicted_at)}
            if self.output.task == "regression":
                fb["value"] = float(it.label)
            if o.previous is not None:
                fb["previous_label"] = o.previous
            events.append((EVENT_FEEDBACK, {"model": {"name": self.model_name, "version": o.version},
                                            "feedback": fb}))
            answers.append({"request_id": it.request_id, "record_index": it.record_index, "outcome": o.outcome})
        self.log(events)
        return {"request_id": g.request_id, "results": answers}

    def _refuse(self, raw_items: list[Any], errors: list[dict[str, Any]]) -> None:
        """One feedback.refused line and one count per item (the first reason of each)."""
        first: dict[int, dict[str, Any]] = {}
        for e in errors:
            first.setdefault(e["item"], e)
        events = []
        for i, e in sorted(first.items()):
            self.metrics.observe_refused(e["reason"])
            events.append((EVENT_FEEDBACK_REFUSED, {"record_index": i, "batch_size": len(raw_items),
                                                    "raw_inputs": raw_text(raw_items[i], RAW_ITEM_LIMIT), "reason": e["reason"],
                                                    "detail": e["detail"]}))
        self.log(events)


