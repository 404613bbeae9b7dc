"""Kibana saved objects for the prediction events, generated from the bundles' schemas.

The objects are written as NDJSON for the saved objects import API
(``POST /api/saved_objects/_import?overwrite=true``), in the format of a Kibana 8.9+ export:
``coreMigrationVersion`` 8.8.0 and per-type ``typeMigrationVersion`` (index-pattern 8.0.0, search
8.0.0, visualization 8.5.0, dashboard 8.9.0). A newer 8.x Kibana migrates them on import, as it does
its own exports. Only long-stable types are used: a data view, saved searches, aggregation-based
visualizations (``visState``) and a dashboard that references them by id; no Lens, whose state
format changes between minors.

Objects (fixed ids, so an import with overwrite replaces them instead of duplicating them):

- data view ``mlpulse-predictions`` on the data stream pattern, time field ``@timestamp``;
- saved search ``mlpulse-violations``: flagged and refused records, and refused requests;
- saved search ``mlpulse-request``: the records of one request in order (``discover_url`` opens it
  for a given request id);
- one histogram per numeric input, one bar chart per categorical input (with a "missing" bucket),
  a table of missing values per feature, violations by reason and by feature, the prediction score
  distribution, events over time;
- dashboard ``mlpulse-overview`` with all of them.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from mlpulse.elastic import DATA_STREAM_PATTERN, KIBANA_VIEWER_ROLE
from mlpulse.elastic.mapping import ModelSchema
from mlpulse.schema import FeatureSpec

CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSIONS = {"index-pattern": "8.0.0", "search": "8.0.0", "visualization": "8.5.0", "dashboard": "8.9.0"}
PANEL_VERSION = "8.9.0"

DATA_VIEW_ID = "mlpulse-predictions"
SEARCH_VIOLATIONS_ID = "mlpulse-violations"
SEARCH_REQUEST_ID = "mlpulse-request"
DASHBOARD_ID = "mlpulse-overview"

INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
SCORED = 'event:"prediction"'
FLAGGED_OR_REFUSED = 'violations.reason:* or event:("prediction.refused" or "request.refused")'


def _id(kind: str, name: str) -> str:
    return f"mlpulse-{kind}-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _search_source(query: str) -> str:
    return json.dumps({"query": {"query": query, "language": "kuery"}, "filter": [], "indexRefName": INDEX_REF})


def _index_reference() -> list[dict[str, str]]:
    return [{"id": DATA_VIEW_ID, "name": INDEX_REF, "type": "index-pattern"}]


def _saved_object(type_: str, id_: str, attributes: dict[str, Any], references: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "attributes": attributes,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "id": id_,
        "references": references,
        "type": type_,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[type_],
    }


def data_view() -> dict[str, Any]:
    return _saved_object("index-pattern", DATA_VIEW_ID, {
        "title": DATA_STREAM_PATTERN,
        "name": "mlpulse predictions",
        "timeFieldName": "@timestamp",
        # The field list is read from Elasticsearch when the data view loads.
        "fields": "[]",
        "fieldFormatMap": "{}",
        "fieldAttrs": "{}",
        "runtimeFieldMap": "{}",
        "sourceFilters": "[]",
    }, [])


def saved_search(id_: str, title: str, description: str, query: str, columns: list[str],
                 sort: list[list[str]]) -> dict[str, Any]:
    return _saved_object("search", id_, {
        "title": title,
        "description": description,
        "columns": columns,
        "sort": sort,
        "grid": {},
        "hideChart": False,
        "isTextBasedQuery": False,
        "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(query)},
    }, _index_reference())


def _count() -> dict[str, Any]:
    return {"id": "1", "enabled": True, "type": "count", "params": {}, "schema": "metric"}


def _bar_params(x_title: str) -> dict[str, Any]:
    # The parameters of a vertical bar chart as the aggregation-based editor saves them.
    return {
        "type": "histogram",
        "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom", "show": True,
                          "style": {}, "scale": {"type": "linear"},
                          "labels": {"show": True, "filter": True, "truncate": 100}, "title": {"text": x_title}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left", "show": True,
                       "style": {}, "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": "Count"}}],
        "seriesParams": [{"show": True, "type": "histogram", "mode": "stacked", "data": {"label": "Count", "id": "1"},
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True, "lineWidth": 2,
                          "showCircles": True}],
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
        "palette": {"type": "palette", "name": "default"},
        "isVislibVis": True,
        "detailedTooltip": True,
    }


def visualization(id_: str, title: str, description: str, query: str, vis_type: str,
                  aggs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    vis_state = {"title": title, "type": vis_type, "aggs": aggs, "params": params}
    return _saved_object("visualization", id_, {
        "title": title,
        "description": description,
        "uiStateJSON": "{}",
        "version": 1,
        "visState": json.dumps(vis_state),
        "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(query)},
    }, _index_reference())


def numeric_histogram(spec: FeatureSpec) -> dict[str, Any]:
    field = f"inputs.{spec.name}"
    bucket = {"id": "2", "enabled": True, "type": "histogram", "schema": "segment",
              "params": {"field": field, "interval": "auto", "maxBars": 40, "min_doc_count": False,
                         "has_extended_bounds": False, "extended_bounds": {"min": "", "max": ""}}}
    return visualization(_id("input", spec.name), f"mlpulse: input {spec.name}",
                         spec.description or f"Distribution of {spec.name} in scored records",
                         SCORED, "histogram", [_count(), bucket], _bar_params(spec.name))


def categorical_bars(spec: FeatureSpec) -> dict[str, Any]:
    bucket = {"id": "2", "enabled": True, "type": "terms", "schema": "segment",
              "params": {"field": f"inputs.{spec.name}", "orderBy": "1", "order": "desc",
                         # room for every training category and a few unseen ones
                         "size": len(spec.categories) + 5,
                         "otherBucket": True, "otherBucketLabel": "Other",
                         "missingBucket": True, "missingBucketLabel": "(missing)"}}
    return visualization(_id("input", spec.name), f"mlpulse: input {spec.name}",
                         spec.description or f"Categories of {spec.name} in scored records; (missing) counts nulls",
                         SCORED, "histogram", [_count(), bucket], _bar_params(spec.name))


def missing_values_table(features: Sequence[FeatureSpec]) -> dict[str, Any]:
    filters = [{"input": {"query": f"not inputs.{f.name}:*", "language": "kuery"}, "label": f.name}
               for f in features]
    bucket = {"id": "2", "enabled": True, "type": "filters", "schema": "bucket", "params": {"filters": filters}}
    params = {"perPage": 25, "showPartialRows": False, "showMetricsAtAllLevels": False, "showTotal": False,
              "totalFunc": "sum", "percentageCol": ""}
    return visualization(_id("missing", "inputs"), "mlpulse: missing values per feature",
                         "Scored records whose input is null or absent, per feature (required features are "
                         "refused instead: see violations)", SCORED, "table", [_count(), bucket], params)


def terms_bars(id_: str, title: str, description: str, field: str, query: str, size: int) -> dict[str, Any]:
    bucket = {"id": "2", "enabled": True, "type": "terms", "schema": "segment",
              "params": {"field": field, "orderBy": "1", "order": "desc", "size": size, "otherBucket": True,
                         "otherBucketLabel": "Other", "missingBucket": False, "missingBucketLabel": "Missing"}}
    return visualization(id_, title, description, query, "histogram", [_count(), bucket], _bar_params(field))


def prediction_histogram(classification: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"field": "prediction.value", "min_doc_count": False}
    if classification:  # a probability: fixed 0.05 bins over [0, 1]
        params.update(interval=0.05, has_extended_bounds=True, extended_bounds={"min": 0, "max": 1})
    else:
        params.update(interval="auto", maxBars=40, has_extended_bounds=False, extended_bounds={"min": "", "max": ""})
    bucket = {"id": "2", "enabled": True, "type": "histogram", "schema": "segment", "params": params}
    return visualization(_id("prediction", "value"), "mlpulse: prediction score",
                         "Distribution of the model's score in scored records", SCORED, "histogram",
                         [_count(), bucket], _bar_params("prediction.value"))


def events_over_time() -> dict[str, Any]:
    x = {"id": "2", "enabled": True, "type": "date_histogram", "schema": "segment",
         "params": {"field": "@timestamp", "interval": "auto", "min_doc_count": 1, "extended_bounds": {},
                    "drop_partials": False, "useNormalizedEsInterval": True, "scaleMetricValues": False}}
    split = {"id": "3", "enabled": True, "type": "terms", "schema": "group",
             "params": {"field": "event", "orderBy": "1", "order": "desc", "size": 5, "otherBucket": False,
                        "otherBucketLabel": "Other", "missingBucket": False, "missingBucketLabel": "Missing"}}
    params = _bar_params("@timestamp")
    params["addTimeMarker"] = True
    return visualization(_id("events", "over-time"), "mlpulse: events over time",
                         "Scored records, refused records and refused requests", "", "histogram",
                         [_count(), x, split], params)


def dashboard(panels: Sequence[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """A dashboard of ``(saved object, width)`` panels laid out left to right on a 48-column grid."""
    saved_panels, references = [], []
    x = y = row_height = 0
    for n, (obj, width) in enumerate(panels, start=1):
        height = 15 if obj["type"] == "search" else 12
        if x + width > 48:
            x, y = 0, y + row_height
            row_height = 0
        pid = str(n)
        saved_panels.append({"version": PANEL_VERSION, "type": obj["type"],
                             "gridData": {"x": x, "y": y, "w": width, "h": height, "i": pid},
                             "panelIndex": pid, "embeddableConfig": {"enhancements": {}},
                             "panelRefName": f"panel_{pid}"})
        references.append({"name": f"{pid}:panel_{pid}", "type": obj["type"], "id": obj["id"]})
        x += width
        row_height = max(row_height, height)
    return _saved_object("dashboard", DASHBOARD_ID, {
        "title": "mlpulse: prediction events",
        "description": "Inputs, predictions, missing values and violations of the served models (Logstash data "
                       "stream). Drift scores are in Grafana / Prometheus.",
        "panelsJSON": json.dumps(saved_panels),
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
        "timeRestore": True,
        "timeFrom": "now-24h",
        "timeTo": "now",
        "refreshInterval": {"pause": False, "value": 60000},
        "version": 1,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"},
                                                                  "filter": []})},
    }, references)


def build_saved_objects(models: Sequence[ModelSchema]) -> list[dict[str, Any]]:
    """Every saved object, referenced objects before the objects that reference them."""
    features: dict[str, FeatureSpec] = {}
    for m in models:
        for spec in m.schema.features:
            features.setdefault(spec.name, spec)
    ordered = [features[name] for name in sorted(features)]
    classification = any(m.output.task == "classification" for m in models)

    violations = saved_search(
        SEARCH_VIOLATIONS_ID, "mlpulse: violations and refusals",
        "Records flagged or refused by validation, and requests refused as a whole",
        FLAGGED_OR_REFUSED,
        ["event", "model.version", "request_id", "record_index", "violations.feature", "violations.field",
         "violations.reason", "reason", "detail"],
        [["@timestamp", "desc"]])
    one_request = saved_search(
        SEARCH_REQUEST_ID, "mlpulse: one request",
        'Every record of one request, in order. Replace * by the id: request_id:"<X-Request-ID>"',
        "request_id:*",
        ["event", "record_index", "batch_size", "prediction.class", "prediction.value", "violations.reason",
         "reason", "detail", "raw_inputs"],
        [["@timestamp", "asc"], ["record_index", "asc"]])

    over_time = events_over_time()
    score = prediction_histogram(classification)
    by_reason = terms_bars(_id("violations", "reason"), "mlpulse: violations by reason",
                           "Records with at least one violation of each reason", "violations.reason",
                           "violations.reason:*", 10)
    by_feature = terms_bars(_id("violations", "feature"), "mlpulse: violations by feature",
                            "Records with at least one violation on each feature (_unknown: fields not in the "
                            "schema)", "violations.feature", "violations.reason:*", len(ordered) + 1)
    missing = missing_values_table(ordered)
    inputs = [numeric_histogram(f) if f.kind == "numeric" else categorical_bars(f) for f in ordered]

    panels: list[tuple[dict[str, Any], int]] = [(over_time, 48), (score, 24), (missing, 24), (by_reason, 24),
                                                (by_feature, 24)]
    panels += [(v, 24) for v in inputs]
    panels += [(violations, 48)]
    return [data_view(), violations, one_request, over_time, score, by_reason, by_feature, missing, *inputs,
            dashboard(panels)]


def to_ndjson(objects: Sequence[dict[str, Any]]) -> str:
    """One compact JSON object per line, keys sorted (as Kibana exports them)."""
    return "".join(json.dumps(o, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n" for o in objects)


def build_kibana_roles() -> dict[str, dict[str, Any]]:
    """Bodies of Kibana's ``PUT /api/security/role/<name>``: read-only Discover, Dashboard and
    Visualize in the default space. Index access comes from the Elasticsearch reader role, which
    viewers also get."""
    return {
        KIBANA_VIEWER_ROLE: {
            "metadata": {"mlpulse": True},
            "elasticsearch": {"cluster": [], "indices": []},
            "kibana": [{"base": [], "feature": {"discover": ["read"], "dashboard": ["read"], "visualize": ["read"]},
                        "spaces": ["default"]}],
        }
    }


def discover_url(kibana_url: str, request_id: str, since: str = "now-7d") -> str:
    """Discover, opened on the saved search of one request, for ``request_id`` (as the service
    validates it: ``[A-Za-z0-9._:-]{1,128}``)."""
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", request_id):
        raise ValueError(f"not a request id the service would log: {request_id!r}")
    # Rison app and global state; the id's characters need no escaping inside a rison string.
    app = f"(query:(language:kuery,query:'request_id:\"{request_id}\"'))"
    glob = f"(time:(from:{since},to:now))"
    quote = urllib.parse.quote
    return (f"{kibana_url.rstrip('/')}/app/discover#/view/{SEARCH_REQUEST_ID}"
            f"?_g={quote(glob, safe='():,-')}&_a={quote(app, safe='():,')}")
