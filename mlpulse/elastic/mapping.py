"""The Elasticsearch side of the prediction event contract (``docs/events.md``).

Generated from the bundles' feature and output schemas, never written by hand:

- ``build_index_template``: the composable index template of the data stream
  (``PUT _index_template/<name>`` body): ``data_stream: {}``, priority above the built-in
  ``logs-*-*`` template, settings with the ILM policy, and a mapping that is ``dynamic: strict`` at
  the root: every event field is typed from the schema, nothing is guessed, and a field outside the
  contract is refused (Logstash parks the event in its dead-letter queue) instead of growing the
  mapping.
- ``build_ilm_policy``: rollover and deletion (``PUT _ilm/policy/<name>`` body).
- ``build_es_roles``: the writer role (Logstash) and the reader role (Kibana users, Grafana, the
  exporter) (``PUT _security/role/<name>`` bodies).
- ``validate_document``: walks an event against a mapping the way Elasticsearch would index it and
  lists every field that would be refused, left unindexed or converted. The contract tests run it on
  events written by the real service.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlpulse.bundle import load_reference
from mlpulse.elastic import (
    DATA_STREAM,
    DATA_STREAM_DATASET,
    DATA_STREAM_NAMESPACE,
    DATA_STREAM_TYPE,
    ILM_POLICY,
    INDEX_TEMPLATE_PRIORITY,
    READER_ROLE,
    WRITER_ROLE,
)
from mlpulse.schema import FeatureSchema, FeatureSpec, OutputSpec

# Longest keyword value indexed. Category values and field names come from clients: a longer value
# is kept in _source but not indexed, so it cannot bloat the terms dictionary.
KEYWORD_IGNORE_ABOVE = 256
# Bumped when the generated template changes shape (ES stores it; GET _index_template shows it).
TEMPLATE_VERSION = 1


class MappingError(ValueError):
    """Two bundles disagree on a field's type, or a schema cannot be mapped."""


@dataclass(frozen=True)
class ModelSchema:
    """What the template needs from one bundle: identity, feature schema and output schema."""

    name: str
    version: str
    schema: FeatureSchema
    output: OutputSpec

    @classmethod
    def from_bundle(cls, directory: str | os.PathLike[str]) -> ModelSchema:
        # load_reference checks the metadata and the reference's sha256 but never loads the model.
        metadata, schema, output, _profile = load_reference(directory)
        return cls(name=metadata["name"], version=metadata["version"], schema=schema, output=output)


def feature_mapping(spec: FeatureSpec) -> dict[str, Any]:
    """The field mapping of one input feature."""
    if spec.kind == "categorical":
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    # ignore_malformed: an out-of-range value the policy scores (say 1e30 for an int feature) must
    # not cost the whole event; the field is then listed in the document's _ignored metadata.
    if spec.dtype == "int":
        return {"type": "long", "ignore_malformed": True}
    return {"type": "double", "ignore_malformed": True}


def _merge(target: dict[str, dict[str, Any]], name: str, mapping: dict[str, Any], where: str) -> None:
    if name in target and target[name] != mapping:
        raise MappingError(f"{where} {name!r} is mapped as {target[name]} by one bundle and {mapping} by another")
    target[name] = mapping


def inputs_properties(models: Sequence[ModelSchema]) -> dict[str, dict[str, Any]]:
    props: dict[str, dict[str, Any]] = {}
    for m in models:
        for spec in m.schema.features:
            _merge(props, spec.name, feature_mapping(spec), "input feature")
    return dict(sorted(props.items()))


def prediction_mapping(models: Sequence[ModelSchema]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "value": {"type": "double"},
        "class": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
    }
    classes = sorted({c for m in models if m.output.task == "classification" for c in m.output.class_keys})
    if classes:
        # dynamic false: a model with a new class keeps its events; the class is searchable
        # once the template is regenerated (docs/elk.md, "A new model version").
        props["probabilities"] = {"dynamic": False, "properties": {c: {"type": "double"} for c in classes}}
    return {"properties": props}


def build_mappings(models: Sequence[ModelSchema]) -> dict[str, Any]:
    """The mapping of the prediction event, from the union of the bundles' schemas."""
    if not models:
        raise MappingError("at least one bundle is needed to map the inputs")
    keyword = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    return {
        "dynamic": "strict",
        "_meta": {
            "contract": "docs/events.md",
            "models": [{"name": m.name, "version": m.version} for m in models],
        },
        "properties": {
            "@timestamp": {"type": "date"},
            "event": {"type": "keyword"},
            "request_id": {"type": "keyword"},
            "model": {"properties": {"name": {"type": "keyword"}, "version": {"type": "keyword"}}},
            "record_index": {"type": "integer"},
            "batch_size": {"type": "integer"},
            # dynamic false: only schema features reach "inputs" (the service drops unknown
            # fields), but an event of a bundle not yet in the template must still be indexed.
            "inputs": {"dynamic": False, "properties": inputs_properties(models)},
            "prediction": prediction_mapping(models),
            "latency_ms": {"type": "double"},
            # An array of objects, not nested: Kibana queries and aggregation-based visualizations
            # read object arrays directly (docs/elk.md says what this costs).
            "violations": {"properties": {"feature": dict(keyword), "field": dict(keyword), "reason": {"type": "keyword"}}},
            # A refused record may hold anything: kept as text, searchable word by word, never
            # mapped field by field and never aggregated.
            "raw_inputs": {"type": "match_only_text"},
            "reason": {"type": "keyword"},
            "detail": {"type": "match_only_text"},
            "body_bytes": {"type": "long"},
            # A label for an earlier prediction (event "feedback"): the labelled record's address, the
            # label as text (regressors: also as a number), what it did and when the prediction was made.
            "feedback": {"properties": {
                "request_id": dict(keyword), "record_index": {"type": "integer"}, "label": dict(keyword),
                "value": {"type": "double"}, "outcome": {"type": "keyword"}, "previous_label": dict(keyword),
                "predicted_at": {"type": "date"},
            }},
            # Values come from the mapping, not the documents (Logstash adds nothing).
            "data_stream": {"properties": {
                "type": {"type": "constant_keyword", "value": DATA_STREAM_TYPE},
                "dataset": {"type": "constant_keyword", "value": DATA_STREAM_DATASET},
                "namespace": {"type": "constant_keyword", "value": DATA_STREAM_NAMESPACE},
            }},
        },
    }


def build_index_template(models: Sequence[ModelSchema], *, data_stream: str = DATA_STREAM,
                         ilm_policy: str = ILM_POLICY) -> dict[str, Any]:
    """Body of ``PUT _index_template/<INDEX_TEMPLATE>``."""
    return {
        # The exact stream name: data_stream.namespace below is a constant of this stream.
        "index_patterns": [data_stream],
        "data_stream": {},
        "priority": INDEX_TEMPLATE_PRIORITY,
        "version": TEMPLATE_VERSION,
        "_meta": {"description": "mlpulse prediction events", "generated_by": "mlpulse generate elastic"},
        "template": {
            "settings": {
                "index.lifecycle.name": ilm_policy,
                "index.number_of_shards": 1,
                # One replica as soon as a second node exists; none on the single-node stack.
                "index.auto_expand_replicas": "0-1",
                "index.refresh_interval": "5s",
            },
            "mappings": build_mappings(models),
        },
    }


def build_ilm_policy(*, max_age: str = "1d", max_primary_shard_size: str = "10gb",
                     delete_after: str = "30d") -> dict[str, Any]:
    """Body of ``PUT _ilm/policy/<ILM_POLICY>``: roll over daily or at 10 GB a shard, delete
    30 days after rollover."""
    return {
        "policy": {
            "_meta": {"description": "mlpulse prediction events: daily rollover, deleted after 30 days",
                      "generated_by": "mlpulse generate elastic"},
            "phases": {
                "hot": {"min_age": "0ms", "actions": {
                    "rollover": {"max_age": max_age, "max_primary_shard_size": max_primary_shard_size},
                }},
                "delete": {"min_age": delete_after, "actions": {"delete": {}}},
            },
        }
    }


def build_es_roles(*, data_stream: str = DATA_STREAM) -> dict[str, dict[str, Any]]:
    """Bodies of ``PUT _security/role/<name>`` for the writer and the reader."""
    return {
        WRITER_ROLE: {
            "description": "Logstash: append prediction events to the mlpulse data stream, nothing else",
            # monitor: the Logstash output reads the cluster version and license on connect.
            "cluster": ["monitor"],
            "indices": [{
                "names": [data_stream],
                # create_doc: append only (no overwrite, no delete); auto_configure: recreate the
                # data stream from its template should it be deleted.
                "privileges": ["create_doc", "auto_configure"],
            }],
            "metadata": {"mlpulse": True},
        },
        READER_ROLE: {
            "description": "Read mlpulse prediction events: Kibana users, Grafana, the drift exporter",
            # monitor: Grafana reads the cluster version (read-only cluster information).
            "cluster": ["monitor"],
            "indices": [{
                "names": [data_stream],
                "privileges": ["read", "view_index_metadata"],
            }],
            "metadata": {"mlpulse": True},
        },
    }


def dumps(data: Any) -> str:
    """The committed JSON form: stable, indented, one trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Validation of documents against a mapping


@dataclass(frozen=True)
class FieldProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


_INTEGER_RANGES = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
}
_FLOAT_TYPES = {"double", "float", "half_float", "scaled_float"}
_STRING_TYPES = {"keyword", "constant_keyword", "match_only_text", "text", "wildcard"}
# Elasticsearch's default date format: strict_date_optional_time||epoch_millis.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$")


def _is_object(mapping: Mapping[str, Any]) -> bool:
    return "properties" in mapping or mapping.get("type", "object") in ("object", "nested")


def _check_leaf(path: str, value: Any, mapping: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not index cleanly as ``mapping``, or None."""
    kind = mapping.get("type")
    if isinstance(value, dict):
        return f"an object where a {kind} is mapped"
    if kind in _INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{type(value).__name__} {value!r} is not a number ({kind})"
        if isinstance(value, float) and not value.is_integer():
            return f"{value!r} would be truncated to an integer ({kind})"
        low, high = _INTEGER_RANGES[kind]
        if not low <= value <= high:
            return f"{value!r} is outside the range of {kind}"
        return None
    if kind in _FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{type(value).__name__} {value!r} is not a number ({kind})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not finite ({kind})"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "date":
        if isinstance(value, int) and not isinstance(value, bool):
            return None  # epoch_millis
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            return f"{value!r} is not an ISO 8601 date (strict_date_optional_time)"
        try:
            dt.datetime.fromisoformat(value.replace(",", "."))
        except ValueError:
            return f"{value!r} is not a valid date"
        return None
    if kind in _STRING_TYPES:
        if not isinstance(value, str):
            # Elasticsearch would store a number as a string: legal, but not the contract.
            return f"{type(value).__name__} {value!r} where a string is mapped ({kind})"
        limit = mapping.get("ignore_above")
        if limit is not None and len(value) > limit:
            return f"{len(value)} characters: longer than ignore_above {limit}, would not be indexed"
        if kind == "constant_keyword" and "value" in mapping and value != mapping["value"]:
            return f"{value!r} differs from the constant {mapping['value']!r}"
        return None
    return f"mapped as {kind!r}, which the validator does not know"


def _walk(path: str, value: Any, mapping: Mapping[str, Any], dynamic: Any, out: list[FieldProblem]) -> None:
    if value is None:
        return  # null is never indexed and never refused
    if isinstance(value, list):
        for i, item in enumerate(value):  # arrays are transparent in Elasticsearch
            _walk(f"{path}[{i}]", item, mapping, dynamic, out)
        return
    if _is_object(mapping):
        if not isinstance(value, dict):
            out.append(FieldProblem(path, f"{type(value).__name__} {value!r} where an object is mapped"))
            return
        _walk_object(path, value, mapping, dynamic, out)
        return
    problem = _check_leaf(path, value, mapping)
    if problem:
        out.append(FieldProblem(path, problem))


def _walk_object(prefix: str, obj: Mapping[str, Any], mapping: Mapping[str, Any], dynamic: Any,
                 out: list[FieldProblem]) -> None:
    dynamic = mapping.get("dynamic", dynamic)
    properties = mapping.get("properties", {})
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else key
        if key in properties:
            _walk(path, value, properties[key], dynamic, out)
        elif str(dynamic).lower() == "strict":
            out.append(FieldProblem(path, "not in the mapping: the document would be refused (dynamic: strict)"))
        elif str(dynamic).lower() == "false":
            out.append(FieldProblem(path, "not in the mapping: kept in _source but not indexed (dynamic: false)"))
        else:
            out.append(FieldProblem(path, f"not in the mapping: would be added by dynamic mapping ({dynamic})"))


def validate_document(document: Mapping[str, Any], mappings: Mapping[str, Any]) -> list[FieldProblem]:
    """Every field of ``document`` that the mapping would refuse, leave unindexed, or convert.

    An empty list means every field is mapped and every value has a compatible type.
    """
    out: list[FieldProblem] = []
    _walk_object("", document, mappings, mappings.get("dynamic", True), out)
    return out


def mapped_fields(mappings: Mapping[str, Any]) -> dict[str, str]:
    """Dotted field name -> type, for every leaf and object of the mapping."""
    out: dict[str, str] = {}

    def walk(prefix: str, props: Mapping[str, Any]) -> None:
        for name, m in props.items():
            path = f"{prefix}{name}"
            out[path] = m.get("type", "object")
            if "properties" in m:
                walk(path + ".", m["properties"])

    walk("", mappings.get("properties", {}))
    return out


def models_from_bundles(directories: Iterable[str | os.PathLike[str]]) -> list[ModelSchema]:
    models = [ModelSchema.from_bundle(d) for d in directories]
    if not models:
        raise MappingError("no bundle given")
    return models
