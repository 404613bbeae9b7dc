"""The model service: serves any valid bundle (``mlpulse serve DIR``), instrumented with mlpulse.

    create_app()  # configured from the environment, see ServiceConfig

Nothing here is specific to one model: the bundle's schema validates the records, its declared
input and task decide how the model is called and what a prediction holds (``mlpulse.predictor``).

Validation policy (``docs/events.md`` and the README say the same): a record whose violations
include a reason in ``REFUSE_REASONS`` is refused; other violations (by default out-of-range values
and unseen categories, which the model can still score) are scored and flagged. A batch is scored
all or nothing. Every record, scored or refused, becomes one event line and is counted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, g, request
from threadpoolctl import threadpool_limits
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from mlpulse import cardinality
from mlpulse.bundle import Bundle, library_versions, load_bundle
from mlpulse.durations import parse_duration
from mlpulse.events import EVENT_REFUSED, EVENT_REQUEST_REFUSED, EVENT_SCORED, EventLog, EventWriteError, raw_text
from mlpulse.metrics.bins import enabled as bin_metrics_enabled
from mlpulse.metrics.feedback import FeedbackMetrics
from mlpulse.metrics.flask import FlaskMetrics
from mlpulse.metrics.model import ModelMetrics
from mlpulse.predictor import Predictor
from mlpulse.schema import REASONS, CheckedRecord, Violation, label_key
from mlpulse.serving.feedback import FEEDBACK_REFUSE_REASONS, FeedbackError, FeedbackTaker
from mlpulse.serving.ledger import Ledger
from mlpulse.serving.openapi import openapi_document

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
RAW_INPUT_LIMIT = 8192  # bytes of a refused record kept in its event
MAX_DEPTH = 16  # nesting of a body: a record is a flat object, anything deeper is refused whole
MAX_EVENT_VIOLATIONS = 32  # violations written per record's event (all are counted in the metrics)

# Why a request is refused as a whole (mlpulse_request_errors_total{reason}, the problem type).
REQUEST_ERROR_REASONS = (
    "unsupported_media_type",
    "malformed_json",
    "body_too_large",
    "invalid_body",
    "body_too_deep",
    "batch_too_large",
    "empty_batch",
    "invalid_records",
)


def _env_list(name: str, default: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, default).split(",") if x.strip())


def _env_or_file(name: str) -> str:
    """``$NAME``, or the content of the file ``$NAME_FILE`` names."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get(name, "").strip()


@dataclass
class ServiceConfig:
    bundle_dir: str = "var/bundle"
    events_dir: str = "var/events"
    events_max_bytes: int = 64 << 20
    events_backup_count: int = 10
    max_batch: int = 1000
    max_body_bytes: int = 1 << 20
    refuse_reasons: tuple[str, ...] = ("missing_required", "wrong_type", "non_finite", "unknown_field")
    # Types trusted beyond those the bundle recorded from scikit-learn, numpy and scipy (see trusted()).
    trusted_types: tuple[str, ...] = ()
    # Position files of the event log's registered readers (exporter checkpoint, Logstash sincedb) and
    # the disk budget of all event files (0: 4 x (backup_count + 1) x max_bytes when readers are set).
    events_readers: tuple[str, ...] = ()
    events_max_total_bytes: int = 0
    # Inputs never written to the event log (dropped) or written as "***" (masked): personal data.
    events_drop_fields: tuple[str, ...] = ()
    events_mask_fields: tuple[str, ...] = ()
    # The digest(s) the bundle must have (mlpulse bundle digest), from outside the bundle: a bundle
    # edited in place (threshold, ranges, model) is then refused instead of served.
    bundle_digest: str = ""
    # The feedback ledger (docs/feedback.md): '' puts it beside the events; "off" disables
    # POST /v1/feedback. Predictions older than the horizon can no longer be labelled.
    feedback_ledger: str = ""
    feedback_horizon: str = "90d"
    # Label budget of the bundle (mlpulse.cardinality, docs/cardinality.md): one over it is refused.
    max_series: int = 10_000
    max_classes: int = 100
    # Live counts over the reference bins for drift computed by Prometheus (docs/prometheus-drift.md).
    bin_metrics: bool = False

    @classmethod
    def from_env(cls) -> ServiceConfig:
        c = cls(
            bundle_dir=os.environ.get("MODEL_BUNDLE_DIR", cls.bundle_dir),
            events_dir=os.environ.get("MLPULSE_EVENTS_DIR", cls.events_dir),
            events_max_bytes=int(os.environ.get("MLPULSE_EVENTS_MAX_BYTES", cls.events_max_bytes)),
            events_backup_count=int(os.environ.get("MLPULSE_EVENTS_BACKUP_COUNT", cls.events_backup_count)),
            max_batch=int(os.environ.get("MODEL_MAX_BATCH", cls.max_batch)),
            max_body_bytes=int(os.environ.get("MODEL_MAX_BODY_BYTES", cls.max_body_bytes)),
            refuse_reasons=_env_list("MODEL_REFUSE_REASONS", ",".join(cls.refuse_reasons)),
            trusted_types=_env_list("MLPULSE_TRUSTED_TYPES", os.environ.get("MODEL_TRUSTED_TYPES", "")),
            events_readers=_env_list("MLPULSE_EVENTS_READERS", ""),
            events_max_total_bytes=int(os.environ.get("MLPULSE_EVENTS_MAX_TOTAL_BYTES", "0")),
            events_drop_fields=_env_list("MLPULSE_EVENTS_DROP_FIELDS", ""),
            events_mask_fields=_env_list("MLPULSE_EVENTS_MASK_FIELDS", ""),
            bundle_digest=_env_or_file("MLPULSE_BUNDLE_DIGEST"),
            feedback_ledger=os.environ.get("MLPULSE_FEEDBACK_LEDGER", cls.feedback_ledger),
            feedback_horizon=os.environ.get("MLPULSE_FEEDBACK_HORIZON", cls.feedback_horizon),
            max_series=int(os.environ.get("MLPULSE_MAX_SERIES_PER_VERSION", cls.max_series)),
            max_classes=int(os.environ.get("MLPULSE_MAX_CLASSES", cls.max_classes)),
            bin_metrics=bin_metrics_enabled(),
        )
        c.check()
        return c

    def check(self) -> None:
        unknown = set(self.refuse_reasons) - set(REASONS)
        if unknown:
            raise ValueError(f"MODEL_REFUSE_REASONS has unknown reasons {sorted(unknown)}; known: {list(REASONS)}")
        if self.max_batch < 1 or self.max_body_bytes < 1:
            raise ValueError("MODEL_MAX_BATCH and MODEL_MAX_BODY_BYTES must be positive")
        both = set(self.events_drop_fields) & set(self.events_mask_fields)
        if both:
            raise ValueError(f"fields both dropped and masked: {sorted(both)}")
        if parse_duration(self.feedback_horizon) <= 0:
            raise ValueError("MLPULSE_FEEDBACK_HORIZON must be positive")

    def ledger_path(self) -> str:
        return self.feedback_ledger or os.path.join(self.events_dir, "feedback.sqlite")

    def events_budget(self) -> int:
        if self.events_max_total_bytes or not self.events_readers:
            return self.events_max_total_bytes
        return 4 * (self.events_backup_count + 1) * self.events_max_bytes


def trusted_types(bundle_dir: str, extra: tuple[str, ...]) -> list[str]:
    """What skops may load: the types the bundle recorded at creation that come from scikit-learn,
    numpy or scipy, plus those the deployment names (a bundle cannot vouch for its own code)."""
    from mlpulse.bundle import BundleError, read_metadata
    from mlpulse.bundle_create import trusted_by_default

    try:
        recorded = read_metadata(bundle_dir).get("trusted_types") or []
    except BundleError:
        recorded = []  # load_bundle names the problem
    return sorted({t for t in recorded if isinstance(t, str) and trusted_by_default(t)} | set(extra))


class Problem(Exception):
    """An RFC 9457 problem: raised in a view, answered as application/problem+json."""

    def __init__(self, status: int, slug: str, title: str, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.errors = status, slug, title, detail, errors


def problem_response(p: Problem) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:mlpulse:problem:{p.slug}",
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
        "instance": request.path,
        "request_id": g.get("request_id"),
    }
    if p.errors:
        body["errors"] = p.errors
    return Response(json.dumps(body), status=p.status, mimetype=PROBLEM_JSON)


def read_body(limit: int) -> bytes | None:
    """The request body, or None if it is longer than ``limit`` bytes, whatever the transfer
    encoding: a chunked body has no Content-Length, so it is read up to one byte past the limit
    rather than cut silently at it."""
    if request.content_length is not None:
        return request.get_data(cache=False) if request.content_length <= limit else None
    stream = request.environ.get("wsgi.input")
    if stream is None or not request.environ.get("wsgi.input_terminated"):
        return b""  # WSGI: without a length or a terminated input there is no body to read
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


_NOT_JSON = object()


def _parse_body(raw: bytes) -> Any:
    """The body by orjson (strict RFC 8259, UTF-8 only, a tenth of the standard library's cost), or
    _NOT_JSON for anything it refuses (invalid JSON, NaN/Infinity tokens, integers beyond 64 bits),
    which the standard library then reads as before, so answers to bad bodies do not change."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _reject_constant(token: str) -> float:
    """json.loads calls this for NaN and Infinity: keep them as floats so the schema check can
    name the field, instead of failing the whole body."""
    return float(token)


class Scorer:
    """The model, its schema and its monitoring, independent of Flask routing."""

    def __init__(self, bundle: Bundle, config: ServiceConfig, events: EventLog, metrics: ModelMetrics):
        self.bundle, self.config, self.events, self.metrics = bundle, config, events, metrics
        self.model_fields = {"name": bundle.name, "version": bundle.version}
        self.predict = Predictor.for_bundle(bundle)
        self.output = bundle.output
        self.feedback: FeedbackTaker | None = None  # set by create_app when the service takes feedback

    def log(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Write a request's events in one go (one lock, one write: its lines stay together)."""
        head = {"request_id": g.request_id, "model": self.model_fields}
        try:
            self.events.write_many([(event, {**head, **fields}) for event, fields in events])
        except EventWriteError as e:  # a full disk must not take the service down: counted, alerted on
            self.metrics.observe_event_error(e.cause, len(events))
        except Exception:
            log.exception("event lines not written")
            self.metrics.observe_event_error("io", len(events))

    def refuse_request(self, status: int, reason: str, title: str, detail: str, body_bytes: int) -> Problem:
        self.metrics.observe_request_error(reason)
        self.log([(EVENT_REQUEST_REFUSED, {"reason": reason, "detail": detail, "body_bytes": body_bytes})])
        return Problem(status, reason.replace("_", "-"), title, detail)

    def parse(self, raw: bytes, content_type: str | None) -> Any:
        """The JSON body of a request (predict or feedback), or a refused request's Problem."""
        if content_type != "application/json":
            raise self.refuse_request(415, "unsupported_media_type", "Unsupported media type",
                                      f"Content-Type must be application/json, got {content_type!r}", len(raw))
        body = _parse_body(raw)
        if body is _NOT_JSON:
            body = self._parse_slow(raw)
        if _depth_exceeds(body, MAX_DEPTH):
            raise self.refuse_request(422, "body_too_deep", "Body too deep",
                                      f"the body nests more than {MAX_DEPTH} levels; a record is a flat object",
                                      len(raw))
        return body

    def score(self, raw: bytes, content_type: str | None) -> dict[str, Any]:
        body = self.parse(raw, content_type)
        single = isinstance(body, dict)
        if not single and not isinstance(body, list):
            raise self.refuse_request(422, "invalid_body", "Invalid body",
                                      "body must be a JSON object (one record) or an array of objects", len(raw))
        records = [body] if single else body
        if not records:
            raise self.refuse_request(422, "empty_batch", "Empty batch", "the array holds no record", len(raw))
        if len(records) > self.config.max_batch:
            raise self.refuse_request(413, "batch_too_large", "Batch too large",
                                      f"{len(records)} records; at most {self.config.max_batch} per request", len(raw))
        bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        if bad:
            raise self.refuse_request(422, "invalid_body", "Invalid body",
                                      f"records must be JSON objects; items {bad[:10]} are not", len(raw))

        checked = [self.bundle.schema.check(r) for r in records]
        refuse = set(self.config.refuse_reasons)
        refused = [i for i, c in enumerate(checked) if any(v.reason in refuse for v in c.violations)]
        for c in checked:
            self.metrics.observe_violations(c.violations)
        if refused:
            self._refuse_records(records, checked, refused)
        return self._score(records, checked, single)

    def _parse_slow(self, raw: bytes) -> Any:
        """What orjson refused, read by the standard library: NaN and Infinity tokens become floats
        (the schema check then names their field), anything else invalid is refused with its reason."""
        try:
            text = raw.decode("utf-8")  # strictly: json.loads would also take UTF-16 and UTF-32
        except UnicodeDecodeError as e:
            raise self.refuse_request(400, "malformed_json", "Malformed JSON", f"body is not UTF-8: {e}",
                                      len(raw)) from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise self.refuse_request(400, "malformed_json", "Malformed JSON", f"body is not valid JSON: {e}",
                                      len(raw)) from None

    def _refuse_records(self, records: list[dict], checked: list[CheckedRecord], refused: list[int]) -> None:
        self.metrics.observe_refused(len(records))
        self.metrics.observe_request_error("invalid_records")
        n = len(records)
        self.log([(EVENT_REFUSED, {"record_index": i, "batch_size": n,
                                   "raw_inputs": raw_text(rec, RAW_INPUT_LIMIT),
                                   **_event_violations(c.violations)})
                  for i, (rec, c) in enumerate(zip(records, checked))])
        errors = [{"record": i, **v.to_dict()} for i in refused for v in checked[i].violations
                  if v.reason in self.config.refuse_reasons]
        what = "the record was" if n == 1 else f"{len(refused)} of {n} records were"
        raise Problem(422, "invalid-records", "Invalid input", f"{what} refused; see errors", errors[:200])

    def _score(self, records: list[dict], checked: list[CheckedRecord], single: bool) -> dict[str, Any]:
        start = time.perf_counter()
        result = self.predict([c.values for c in checked])
        seconds = time.perf_counter() - start
        self.metrics.observe_inference(seconds, len(records))
        latency_ms = seconds * 1000
        answers, texts = self._predictions(result)
        scores = result.values if self.output.task == "regression" or self.output.probabilities else None
        self.metrics.observe_predictions(scores, [t for t in texts if t is not None], result.probabilities,
                                         count=len(records))
        known = set(self.bundle.schema.names)
        out, events = [], []
        n = len(records)
        self.metrics.observe_missing_batch([c.values for c in checked])
        if self.metrics.bins is not None:
            # The record's fields as received (the events may mask or drop some: docs/prometheus-drift.md),
            # the answered score and the class text, binned as the exporter bins them.
            self.metrics.observe_bins(records, [a.get("value") for a in answers], texts)
        for i, (rec, c, answer, text) in enumerate(zip(records, checked, answers, texts)):
            # The event keeps the class as its text (one keyword in the index, one key for the
            # exporter); the client gets the label as the model reports it.
            logged = dict(answer, **({"class": text} if "class" in answer else {}))
            events.append((EVENT_SCORED, {"record_index": i, "batch_size": n,
                                          "inputs": self._logged_inputs(rec, known),
                                          "prediction": logged, "latency_ms": round(latency_ms, 3),
                                          **_event_violations(c.violations)}))
            out.append({"prediction": answer, "violations": [v.to_dict() for v in c.violations]})
        self.log(events)
        if self.feedback is not None:
            self.feedback.record_prediction(g.request_id, self.bundle.version, n)
        head = {"request_id": g.request_id, "model": self.model_fields}
        return {**head, **out[0]} if single else {**head, "predictions": out}

    def _logged_inputs(self, rec: dict[str, Any], known: set[str]) -> dict[str, Any]:
        """The record's schema fields as written to the event log: dropped and masked fields applied."""
        drop, mask = self.config.events_drop_fields, self.config.events_mask_fields
        out = {}
        for k, v in rec.items():
            if k in known and k not in drop:
                out[k] = "***" if (k in mask and v is not None) else v
        return out

    def _predictions(self, result: Any) -> tuple[list[dict[str, Any]], list[str | None]]:
        """Each record's prediction as answered, and its class's text (None where there is none)."""
        answers, texts = [], []
        keys = self.predict.keys
        for i, v in enumerate(result.values):
            v = float(v)
            finite = math.isfinite(v)
            if self.output.task == "regression":
                answers.append({"value": v if finite else None})
                texts.append(None)
                continue
            if not self.output.probabilities:
                label = result.labels[i]
                answers.append({"value": None, "class": label})
                texts.append(label_key(label))
                continue
            label = result.labels[i] if finite else None
            proba = result.probabilities[i]
            answers.append({"value": v if finite else None, "class": label,
                            "probabilities": {k: float(p) for k, p in zip(keys, proba)} if finite else None})
            texts.append(label_key(label) if finite else None)
        return answers, texts


def _event_violation(v: Violation) -> dict[str, str]:
    return {"feature": v.feature, "field": v.field or v.feature, "reason": v.reason}


def _event_violations(violations: list[Violation]) -> dict[str, Any]:
    """The event's violations, at most MAX_EVENT_VIOLATIONS of them; ``violations_total`` says how
    many there were when some were left out (every one is counted in the metrics)."""
    out: dict[str, Any] = {"violations": [_event_violation(v) for v in violations[:MAX_EVENT_VIOLATIONS]]}
    if len(violations) > MAX_EVENT_VIOLATIONS:
        out["violations_total"] = len(violations)
    return out


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            items = v.values()
        elif isinstance(v, list):
            items = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in items)
    return False


class _Unmonitored:
    """Stands in for the metrics and the event log in an app built with monitored=False (the
    baseline of the instrumentation benchmark): every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def create_app(config: ServiceConfig | None = None, monitored: bool = True) -> Flask:
    """The service. ``monitored=False`` leaves out every metric and the event log; it exists only
    as the baseline that ``bench/`` measures the instrumentation against."""
    config = config or ServiceConfig.from_env()
    # One OpenMP thread per worker: gunicorn's workers are the parallelism, and OpenMP threads
    # spinning on a small batch cost more than they save, badly so when cores are shared.
    bundle = load_bundle(config.bundle_dir, trusted=trusted_types(config.bundle_dir, config.trusted_types),
                         pinned=config.bundle_digest or None)
    # After loading: threadpoolctl limits only the OpenMP runtimes already loaded, and the model's
    # (scikit-learn's) arrives with the model. Several OpenMP threads per worker on shared cores
    # made single predictions take seconds (docs/architecture.md, "One OpenMP thread per worker").
    threadpool_limits(limits=int(os.environ.get("MODEL_OMP_THREADS", "1")), user_api="openmp")
    # The label budget, before any metric exists: a bundle with thousands of features or classes
    # must not explode the service's series (the exporter refuses the same bundle for the same reason).
    cardinality.check_service(bundle.metadata, bundle.schema, bundle.output, bundle.profile,
                              cardinality.Budget(max_series=config.max_series, max_classes=config.max_classes),
                              REQUEST_ERROR_REASONS,
                              FEEDBACK_REFUSE_REASONS if monitored and config.feedback_ledger != "off" else None,
                              bin_metrics=monitored and config.bin_metrics)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False

    http_metrics = FlaskMetrics()
    model_metrics: Any = _Unmonitored()
    events: Any = _Unmonitored()
    if monitored:
        model_metrics = ModelMetrics(
            name=bundle.name,
            version=bundle.version,
            schema=bundle.schema,
            output=bundle.output,
            profile=bundle.profile,
            trained_at=bundle.metadata["trained_at"],
            trained_libraries=bundle.metadata["libraries"],
            registry=http_metrics.registry,
            request_error_reasons=REQUEST_ERROR_REASONS,
            bin_metrics=config.bin_metrics,
        )
        model_metrics.mark_loaded()
        events = EventLog(config.events_dir, config.events_max_bytes, config.events_backup_count,
                          readers=config.events_readers, max_total_bytes=config.events_budget(),
                          on_loss=model_metrics.observe_event_files_lost)
    scorer = Scorer(bundle, config, events, model_metrics)
    if monitored and config.feedback_ledger != "off":
        feedback_metrics = FeedbackMetrics(name=bundle.name, version=bundle.version, registry=http_metrics.registry,
                                           refuse_reasons=FEEDBACK_REFUSE_REASONS)
        scorer.feedback = FeedbackTaker(bundle.output, Ledger(config.ledger_path(),
                                                              parse_duration(config.feedback_horizon)),
                                        feedback_metrics, scorer.log, bundle.name, REQUEST_ID_RE)
    app.extensions["mlpulse_scorer"] = scorer

    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex

    if monitored:
        http_metrics.init_app(app)  # after the request id hook, so its hooks run inside it

    @app.after_request
    def return_request_id(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    @app.errorhandler(Problem)
    def on_problem(p: Problem) -> Response:
        return problem_response(p)

    @app.errorhandler(HTTPException)
    def on_http_error(e: HTTPException) -> Response:
        if e.code == 413 and request.path in ("/v1/predict", "/v1/feedback"):
            p = scorer.refuse_request(413, "body_too_large", "Body too large",
                                      f"the body exceeds {config.max_body_bytes} bytes", request.content_length or 0)
            return problem_response(p)
        slug = (e.name or "error").lower().replace(" ", "-")
        response = problem_response(Problem(e.code or 500, slug, e.name, e.description or e.name))
        if isinstance(e, MethodNotAllowed) and e.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(e.valid_methods))
        return response

    @app.errorhandler(Exception)
    def on_error(e: Exception) -> Response:
        app.logger.exception("unhandled error")
        return problem_response(Problem(500, "internal-error", "Internal error", "the request could not be served"))

    @app.post("/v1/predict")
    def predict() -> Response:
        raw = read_body(config.max_body_bytes)
        if raw is None:
            raise scorer.refuse_request(413, "body_too_large", "Body too large",
                                        f"the body exceeds {config.max_body_bytes} bytes", config.max_body_bytes + 1)
        # orjson, like the event lines: the answer keeps its key order and non-finite scores are None.
        return Response(orjson.dumps(scorer.score(raw, request.mimetype or None)), mimetype="application/json")

    @app.post("/v1/feedback")
    def feedback() -> Response:
        if scorer.feedback is None:
            raise Problem(404, "feedback-disabled", "Feedback disabled", "this service takes no feedback "
                          "(MLPULSE_FEEDBACK_LEDGER=off)")
        raw = read_body(config.max_body_bytes)
        if raw is None:
            raise scorer.refuse_request(413, "body_too_large", "Body too large",
                                        f"the body exceeds {config.max_body_bytes} bytes", config.max_body_bytes + 1)
        body = scorer.parse(raw, request.mimetype or None)
        if not isinstance(body, (dict, list)):
            raise scorer.refuse_request(422, "invalid_body", "Invalid body",
                                        "body must be a JSON object (one label) or an array of objects", len(raw))
        if isinstance(body, list) and not body:
            raise scorer.refuse_request(422, "empty_batch", "Empty batch", "the array holds no item", len(raw))
        if isinstance(body, list) and len(body) > config.max_batch:
            raise scorer.refuse_request(413, "batch_too_large", "Batch too large",
                                        f"{len(body)} items; at most {config.max_batch} per request", len(raw))
        try:
            return app.json.response(scorer.feedback.take(body))
        except FeedbackError as e:
            raise Problem(e.status, e.slug, e.title, e.detail, e.errors) from None

    @app.get("/v1/model")
    def model_info() -> Response:
        md = bundle.metadata
        return app.json.response({
            "name": md["name"], "version": md["version"], "trained_at": md["trained_at"],
            "model_sha256": md["model_sha256"], "libraries": {"trained": md["libraries"], "serving": library_versions()},
            "features": md["features"], "output": md["output"], "metrics": md["metrics"],
            "refuse_reasons": list(config.refuse_reasons), "max_batch": config.max_batch,
        })

    @app.get("/healthz")
    def healthz() -> Response:
        return app.json.response({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        writable = os.access(config.events_dir, os.W_OK)
        body = {"status": "ready" if writable else "not ready", "model": scorer.model_fields,
                "events_dir_writable": writable}
        return Response(json.dumps(body), status=200 if writable else 503, mimetype="application/json")

    document = openapi_document(bundle, config.max_batch, feedback=scorer.feedback is not None)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return app.json.response(document)

    return app
