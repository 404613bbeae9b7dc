"""The service's OpenAPI 3.1 document, built from the bundle's feature and output schema, so the
document can never describe a different model than the one served: its records, and a prediction
shaped by the task (``mlpulse.predictor``)."""

from __future__ import annotations

from typing import Any

from mlpulse.bundle import Bundle
from mlpulse.schema import REASONS, FeatureSpec, OutputSpec


def _feature_schema(f: FeatureSpec) -> dict[str, Any]:
    s: dict[str, Any]
    if f.kind == "categorical":
        s = {"type": "string", "enum": list(f.categories)}
    else:
        s = {"type": "integer" if f.dtype == "int" else "number"}
        if f.minimum is not None:
            s["minimum"] = f.minimum
        if f.maximum is not None:
            s["maximum"] = f.maximum
    if f.nullable:
        s["type"] = [s["type"], "null"]
        if "enum" in s:
            s["enum"] = s["enum"] + [None]
    if f.description:
        s["description"] = f.description
    return s


def _label_schema(output: OutputSpec) -> dict[str, Any]:
    """A class label as the model reports it (its JSON type kept), or null."""
    return {"enum": list(output.classes) + [None]}


def prediction_schema(output: OutputSpec) -> dict[str, Any]:
    if output.task == "regression":
        return {"type": "object", "properties": {
            "value": {"type": ["number", "null"], "description": "the predicted value (null if not finite)"}},
            "required": ["value"]}
    props: dict[str, Any] = {"class": _label_schema(output)}
    if output.probabilities:
        what = (f"probability of {output.positive_class!r}" if output.kind == "binary"
                else "probability of the predicted class")
        props["value"] = {"type": ["number", "null"], "description": what}
        props["probabilities"] = {"type": ["object", "null"], "description": "per class, keyed by the label's text",
                                  "properties": {k: {"type": "number"} for k in output.class_keys}}
    else:
        props["value"] = {"type": "null", "description": "the model gives no score, only a label"}
    return {"type": "object", "properties": props, "required": list(props)}


def openapi_document(bundle: Bundle, max_batch: int, feedback: bool = False) -> dict[str, Any]:
    schema = bundle.schema
    output = bundle.output
    record = {
        "type": "object",
        "description": "One record. Out-of-range numbers and unseen categories are scored and flagged "
        "unless the service refuses them (see GET /v1/model, refuse_reasons).",
        "properties": {f.name: _feature_schema(f) for f in schema.features},
        "required": [f.name for f in schema.features if not f.nullable],
        "additionalProperties": False,
    }
    violation = {
        "type": "object",
        "properties": {
            "feature": {"type": "string", "description": "schema feature, or _unknown"},
            "field": {"type": "string", "description": "the field as sent"},
            "reason": {"type": "string", "enum": list(REASONS)},
            "detail": {"type": "string"},
        },
        "required": ["feature", "field", "reason", "detail"],
    }
    prediction = prediction_schema(output)
    model = {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
             "required": ["name", "version"]}
    scored = {"type": "object", "properties": {"prediction": {"$ref": "#/components/schemas/Prediction"},
                                               "violations": {"type": "array",
                                                              "items": {"$ref": "#/components/schemas/Violation"}}},
              "required": ["prediction", "violations"]}
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "instance": {"type": "string"}, "request_id": {"type": "string"},
            "errors": {"type": "array", "items": {"allOf": [
                {"$ref": "#/components/schemas/Violation"},
                {"type": "object", "properties": {"record": {"type": "integer"}}}]}},
        },
        "required": ["type", "title", "status", "detail"],
    }

    def problems(*codes: int) -> dict[str, Any]:
        return {str(c): {"description": "problem", "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}} for c in codes}

    request_id = {"name": "X-Request-ID", "in": "header", "required": False,
                  "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                  "description": "echoed back; generated when absent or malformed"}
    json_ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths = {}
    schemas = {}
    if feedback:
        paths["/v1/feedback"] = feedback_path(output, max_batch, request_id)
        schemas.update(feedback_schemas(output, problem))
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{bundle.name} model service", "version": bundle.version,
                 "description": f"The {output.kind} model {bundle.name!r} served by mlpulse."},
        "paths": {
            "/v1/predict": {"post": {
                "summary": "Score one record (object) or a batch (array, all or nothing)",
                "parameters": [request_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Record"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1,
                     "maxItems": max_batch}]}}}},
                "responses": {
                    # One record answers with "prediction", a batch with "predictions": each answer
                    # matches exactly one branch, as oneOf requires.
                    "200": {"description": "scored", "content": {"application/json": {"schema": {"oneOf": [
                        {"allOf": [{"type": "object", "properties": {"request_id": {"type": "string"},
                                                                      "model": model},
                                    "required": ["request_id", "model"]}, scored]},
                        {"type": "object", "properties": {"request_id": {"type": "string"}, "model": model,
                                                          "predictions": {"type": "array", "items": scored}},
                         "required": ["request_id", "model", "predictions"]},
                    ]}}}},
                    **problems(400, 413, 415, 422),
                },
            }},
            "/v1/model": {"get": {"summary": "Model metadata: version, schema, training libraries, metrics",
                                  "responses": {"200": json_ok}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": json_ok}}},
            "/readyz": {"get": {"summary": "Readiness: model loaded and event log writable",
                                "responses": {"200": json_ok, "503": json_ok}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": json_ok}}},
            **paths,
        },
        "components": {"schemas": {"Record": record, "Violation": violation, "Prediction": prediction,
                                   "Problem": problem, **schemas}},
    }


def feedback_schemas(output: OutputSpec, problem: dict[str, Any]) -> dict[str, Any]:
    """The feedback item, its outcome and its problem answer (errors name the item, not a feature)."""
    from mlpulse.serving.feedback import FEEDBACK_REFUSE_REASONS

    label = ({"type": "number", "description": "the true value"} if output.task == "regression"
             else {"enum": list(output.classes) + [k for k in output.class_keys if k not in output.classes],
                   "description": "the true class, as the model reports it or as its text"})
    item = {"type": "object", "properties": {
        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
                       "description": "X-Request-ID of the prediction"},
        "record_index": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0,
                         "description": "position of the record in its request"},
        "label": label}, "required": ["request_id", "label"], "additionalProperties": False}
    result = {"type": "object", "properties": {
        "request_id": {"type": "string"}, "record_index": {"type": "integer"},
        "outcome": {"enum": ["new", "update", "duplicate"]}}, "required": ["request_id", "record_index", "outcome"]}
    error = {"type": "object", "properties": {
        "item": {"type": "integer"}, "field": {"type": "string"},
        "reason": {"enum": list(FEEDBACK_REFUSE_REASONS)}, "detail": {"type": "string"}},
        "required": ["item", "field", "reason", "detail"]}
    fb_problem = {**problem, "properties": {**problem["properties"],
                                            "errors": {"type": "array", "items": {"$ref":
                                                                                  "#/components/schemas/FeedbackError"}}}}
    return {"FeedbackItem": item, "FeedbackResult": result, "FeedbackError": error, "FeedbackProblem": fb_problem}


def feedback_path(output: OutputSpec, max_batch: int, request_id: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/FeedbackItem"}
    problems = {str(c): {"description": "problem", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/FeedbackProblem"}}}} for c in (400, 404, 413, 415, 422, 503)}
    return {"post": {
        "summary": "Ground truth for earlier predictions: one item (object) or several (array, all or nothing); "
        "the same label twice counts once, a changed label is an update",
        "parameters": [request_id],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
            ref, {"type": "array", "items": ref, "minItems": 1, "maxItems": max_batch}]}}}},
        "responses": {
            "200": {"description": "taken", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"request_id": {"type": "string"}, "results": {
                    "type": "array", "items": {"$ref": "#/components/schemas/FeedbackResult"}}},
                "required": ["request_id", "results"]}}}},
            **problems,
        },
    }}
