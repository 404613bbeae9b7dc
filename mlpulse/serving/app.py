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
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from threadpoolctl import threadpool_limits
from werkzeug.exceptions import HTTPException

from mlpulse.bundle import Bundle, library_versions, load_bundle
from mlpulse.events import EVENT_REFUSED, EVENT_REQUEST_REFUSED, EVENT_SCORED, EventLog
from mlpulse.metrics.flask import FlaskMetrics
from mlpulse.metrics.model import ModelMetrics
from mlpulse.predictor import Predictor
from mlpulse.schema import REASONS, CheckedRecord, Violation, label_key
from mlpulse.serving.openapi import openapi_document

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
RAW_INPUT_LIMIT = 8192  # bytes of a refused record kept in its event

# Why a request is refused as a whole (mlpulse_request_errors_total{reason}, the problem type).
REQUEST_ERROR_REASONS = (
    "unsupported_media_type",
    "malformed_json",
    "body_too_large",
    "invalid_body",
    "batch_too_large",
    "empty_batch",
    "invalid_records",
)


def _env_list(name: str, default: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, default).split(",") if x.strip())


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
        )
        c.check()
        return c

    def check(self) -> None:
        unknown = set(self.refuse_reasons) - set(REASONS)
        if unknown:
            raise ValueError(f"MODEL_REFUSE_REASONS has unknown reasons {sorted(unknown)}; known: {list(REASONS)}")
        if self.max_batch < 1 or self.max_body_bytes < 1:
            raise ValueError("MODEL_MAX_BATCH and MODEL_MAX_BODY_BYTES must be positive")


def trusted_types(bundle_dir: str, extra: tuple[str, ...]) -> list[str]:
    """What skops may load: the types the bundle recorded at creation that come from scikit-learn,
    numpy or scipy, plus those the deployment names (a bundle cannot vouch for its own code)."""
    from mlpulse.bundle import BundleError, read_metadata
    from mlpulse.bundle_create import TRUSTED_PREFIXES

    try:
        recorded = read_metadata(bundle_dir).get("trusted_types") or []
    except BundleError:
        recorded = []  # load_bundle names the problem
    return sorted({t for t in recorded if isinstance(t, str) and t.startswith(TRUSTED_PREFIXES)} | set(extra))


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

    def log(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Write a request's events in one go (one lock, one write: its lines stay together)."""
        head = {"request_id": g.request_id, "model": self.model_fields}
        try:
            self.events.write_many([(event, {**head, **fields}) for event, fields in events])
        except Exception:  # a full disk must not take the service down; it is counted and alerted on
            for _ in events:
                self.metrics.observe_event_error()

    def refuse_request(self, status: int, reason: str, title: str, detail: str, body_bytes: int) -> Problem:
        self.metrics.observe_request_error(reason)
        self.log([(EVENT_REQUEST_REFUSED, {"reason": reason, "detail": detail, "body_bytes": body_bytes})])
        return Problem(status, reason.replace("_", "-"), title, detail)

    def score(self, raw: bytes, content_type: str | None) -> dict[str, Any]:
        if content_type != "application/json":
            raise self.refuse_request(415, "unsupported_media_type", "Unsupported media type",
                                      f"Content-Type must be application/json, got {content_type!r}", len(raw))
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self.refuse_request(400, "malformed_json", "Malformed JSON", f"body is not valid JSON: {e}",
                                      len(raw)) from None
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

    def _refuse_records(self, records: list[dict], checked: list[CheckedRecord], refused: list[int]) -> None:
        self.metrics.observe_refused(len(records))
        self.metrics.observe_request_error("invalid_records")
        n = len(records)
        self.log([(EVENT_REFUSED, {"record_index": i, "batch_size": n,
                                   "raw_inputs": json.dumps(rec, default=str)[:RAW_INPUT_LIMIT],
                                   "violations": [_event_violation(v) for v in c.violations]})
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
        for i, (rec, c, answer, text) in enumerate(zip(records, checked, answers, texts)):
            self.metrics.observe_missing(c.values)
            # The event keeps the class as its text (one keyword in the index, one key for the
            # exporter); the client gets the label as the model reports it.
            logged = dict(answer, **({"class": text} if "class" in answer else {}))
            violations = [_event_violation(v) for v in c.violations]
            events.append((EVENT_SCORED, {"record_index": i, "batch_size": n,
                                          "inputs": {k: v for k, v in rec.items() if k in known},
                                          "prediction": logged, "latency_ms": round(latency_ms, 3),
                                          "violations": violations}))
            out.append({"prediction": answer, "violations": [v.to_dict() for v in c.violations]})
        self.log(events)
        head = {"request_id": g.request_id, "model": self.model_fields}
        return {**head, **out[0]} if single else {**head, "predictions": out}

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
    threadpool_limits(limits=int(os.environ.get("MODEL_OMP_THREADS", "1")), user_api="openmp")
    bundle = load_bundle(config.bundle_dir, trusted=trusted_types(config.bundle_dir, config.trusted_types))
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
        )
        model_metrics.mark_loaded()
        events = EventLog(config.events_dir, config.events_max_bytes, config.events_backup_count)
    scorer = Scorer(bundle, config, events, model_metrics)
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
        if e.code == 413 and request.path == "/v1/predict":
            p = scorer.refuse_request(413, "body_too_large", "Body too large",
                                      f"the body exceeds {config.max_body_bytes} bytes", request.content_length or 0)
            return problem_response(p)
        slug = (e.name or "error").lower().replace(" ", "-")
        return problem_response(Problem(e.code or 500, slug, e.name, e.description or e.name))

    @app.errorhandler(Exception)
    def on_error(e: Exception) -> Response:
        app.logger.exception("unhandled error")
        return problem_response(Problem(500, "internal-error", "Internal error", "the request could not be served"))

    @app.post("/v1/predict")
    def predict() -> Response:
        return app.json.response(scorer.score(request.get_data(cache=False), request.mimetype or None))

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

    document = openapi_document(bundle, config.max_batch)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return app.json.response(document)

    return app
