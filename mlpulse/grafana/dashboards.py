"""Grafana dashboards as code: ``mlpulse generate grafana`` writes ``grafana/dashboards/*.json``.

Three dashboards, each a plain dict in Grafana's dashboard JSON model (``schemaVersion`` 39, read
as is by Grafana 10.4 and 11 and migrated on load by 12), built by the small typed helpers below:

- ``mlpulse-service-ops``: is the service up, fast and healthy (team ops);
- ``mlpulse-model-data``: do predictions and inputs still look like training (team ds);
- ``mlpulse-input-logs``: the prediction events in Elasticsearch, record by record.

Nothing is typed in twice. Colour steps and threshold lines come from the same numbers as the
alerts: ``prometheus/rules/thresholds.yml`` (parsed here) and, for the drift decision, the drift
exporter's deployed configuration ``exporter/exporter.toml`` with ``mlpulse.drift``'s defaults.
The categorical inputs offered on the logs dashboard are the keyword fields of
``elasticsearch/index-template.json``. Changing any of these changes the generated JSON, so
``--check`` (and the contract tests) fail until the dashboards are regenerated::

    mlpulse generate grafana            # (re)write grafana/dashboards/*.json
    mlpulse generate --check grafana    # exit 1 if a committed file differs

Why not grafana-foundation-sdk: its PyPI releases put the Grafana version in a version *epoch*
(``1769699379!11.6.0``), so ``pip install grafana-foundation-sdk`` picks the highest epoch, whose
Grafana version is the oldest (10.1), and a normal ``>=`` pin cannot choose a Grafana version;
it has no builder for the alert list panel; and it emits the schema of the Grafana version it was
generated for. Plain dicts keep the output exactly what is committed and reviewed. See
docs/dashboards.md.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlpulse.drift import METHODS
from mlpulse.exporter.config import ExporterConfig

# Relative to the project's root (``mlpulse generate --root``, the current directory by default).
DASHBOARDS_DIR = Path("grafana") / "dashboards"
THRESHOLDS_FILE = Path("prometheus") / "rules" / "thresholds.yml"
EXPORTER_CONFIG_FILE = Path("exporter") / "exporter.toml"
INDEX_TEMPLATE_FILE = Path("elasticsearch") / "index-template.json"

Json = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.0; later versions migrate it when loading
THRESHOLD_PREFIX = "mlpulse_threshold:"

# Provisioned data sources (grafana/provisioning/datasources/mlpulse.yml): fixed uids and names.
PROMETHEUS_UID, PROMETHEUS_NAME = "mlpulse-prometheus", "Prometheus"
ELASTICSEARCH_UID, ELASTICSEARCH_NAME = "mlpulse-elasticsearch", "Elasticsearch"
ALERTMANAGER_UID, ALERTMANAGER_NAME = "mlpulse-alertmanager", "Alertmanager"

# Panels never name a data source uid directly: they use these variables, whose default is the
# provisioned data source, so a dashboard also works against another Prometheus.
PROM: Json = {"type": "prometheus", "uid": "${datasource}"}
ES: Json = {"type": "elasticsearch", "uid": "${logs}"}
GRAFANA_BUILTIN: Json = {"type": "grafana", "uid": "-- Grafana --"}

RATE = "$__rate_interval"  # every rate() and increase() window (tests/contract/test_grafana.py checks it)
# The drift window shown by default: the one the drift and data alerts read (alerts.yml).
DEFAULT_WINDOW = "1h"
# Model-level series carry model and version; HTTP and process series carry the instance, which
# the instance variable derives from the model's info series.
MV = 'model=~"$model", version=~"$version"'
INST = 'instance=~"$instance"'

# Colour steps below the drift threshold: "moderate" from this fraction of it. For the default
# PSI threshold 0.2 that is 0.1, the start of the moderate band in docs/runbooks.md.
MODERATE_FRACTION = 0.5

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"


# --- sources of truth ---------------------------------------------------------------------

def load_thresholds(path: Path = THRESHOLDS_FILE) -> dict[str, float]:
    """``{name: value}`` of every ``mlpulse_threshold:<name>`` constant of the rules file."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    out: dict[str, float] = {}
    for group in data.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("record", "")
            if not name.startswith(THRESHOLD_PREFIX):
                continue
            m = re.fullmatch(r"vector\(\s*([0-9.eE+-]+)\s*\)", str(rule["expr"]).strip())
            if not m:
                raise ValueError(f"{path}: {name} is not a constant vector(<number>): {rule['expr']!r}")
            out[name[len(THRESHOLD_PREFIX):]] = float(m.group(1))
    if not out:
        raise ValueError(f"{path}: no {THRESHOLD_PREFIX}* recording rule")
    return out


@dataclass(frozen=True)
class DriftRule:
    """How the deployed exporter decides "drifted": effect size ``statistic`` >= ``threshold``."""

    method: str
    statistic: str
    threshold: float
    windows: tuple[str, ...]


def load_drift_rule(path: Path = EXPORTER_CONFIG_FILE) -> DriftRule:
    """The decision rule of the exporter configured by ``path`` (defaults from ``ExporterConfig``
    and ``mlpulse.drift.METHODS``, as the exporter itself resolves them)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    defaults = ExporterConfig()
    method = str(data.get("method", defaults.method))
    if method not in METHODS:
        raise ValueError(f"{path}: unknown method {method!r}")
    threshold = float(data.get("threshold", defaults.threshold)) or METHODS[method].threshold
    windows = tuple(w.strip() for w in str(data.get("windows", defaults.windows)).split(",") if w.strip())
    if DEFAULT_WINDOW not in windows:
        raise ValueError(f"{path}: windows {windows} lack {DEFAULT_WINDOW}, the window the alerts and dashboards read")
    return DriftRule(method, METHODS[method].statistic, threshold, windows)


def load_categorical_inputs(path: Path = INDEX_TEMPLATE_FILE) -> list[str]:
    """Input features mapped as ``keyword`` in the data stream's template (categorical inputs)."""
    template = json.loads(Path(path).read_text(encoding="utf-8"))
    inputs = template["template"]["mappings"]["properties"]["inputs"]["properties"]
    names = sorted(name for name, spec in inputs.items() if spec.get("type") == "keyword")
    if not names:
        raise ValueError(f"{path}: no keyword field under inputs")
    return names


@dataclass(frozen=True)
class Sources:
    thresholds: Mapping[str, float]
    drift: DriftRule
    categorical_inputs: Sequence[str]

    @classmethod
    def load(cls, root: Path = Path(".")) -> Sources:
        """The sources of truth of the project at ``root``."""
        return cls(load_thresholds(root / THRESHOLDS_FILE), load_drift_rule(root / EXPORTER_CONFIG_FILE),
                   load_categorical_inputs(root / INDEX_TEMPLATE_FILE))

    def t(self, name: str) -> float:
        """A threshold by name; a name thresholds.yml does not define is an error."""
        try:
            return self.thresholds[name]
        except KeyError:
            raise KeyError(f"thresholds.yml has no {THRESHOLD_PREFIX}{name}") from None


# --- field config helpers ---------------------------------------------------------------

def steps(*pairs: tuple[str, float | None]) -> Json:
    """Absolute threshold steps: ``steps((GREEN, None), (RED, 0.1))``."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


BASE = steps((GREEN, None))


def upper(warning: float, critical: float | None = None) -> Json:
    """Green below ``warning``, orange from it, red from ``critical`` (red from ``warning`` if none)."""
    if critical is None:
        return steps((GREEN, None), (RED, warning))
    return steps((GREEN, None), (ORANGE, warning), (RED, critical))


def field_defaults(unit: str, thresholds: Json | None = None, *, decimals: int | None = None,
                   min_value: float | None = None, max_value: float | None = None,
                   mappings: list[Json] | None = None, custom: Json | None = None,
                   color: Json | None = None) -> Json:
    out: Json = {"unit": unit}
    if decimals is not None:
        out["decimals"] = decimals
    if min_value is not None:
        out["min"] = min_value
    if max_value is not None:
        out["max"] = max_value
    out["thresholds"] = thresholds or BASE
    out["color"] = color or {"mode": "palette-classic"}
    out["mappings"] = mappings or []
    if custom is not None:
        out["custom"] = custom
    return out


def value_map(mapping: Mapping[str, tuple[str, str]]) -> list[Json]:
    """Value mappings ``{"0": ("down", RED)}`` -> Grafana's ``mappings`` list."""
    options = {k: {"text": text, "color": color, "index": i} for i, (k, (text, color)) in enumerate(mapping.items())}
    return [{"type": "value", "options": options}]


# --- targets ------------------------------------------------------------------------------

def prom(expr: str, legend: str = "__auto", *, instant: bool = False, fmt: str = "time_series") -> Json:
    """A Prometheus query. ``fmt`` is time_series, table or heatmap."""
    target: Json = {"datasource": PROM, "editorMode": "code", "expr": _dedent(expr), "legendFormat": legend,
                    "range": not instant, "instant": instant}
    if fmt != "time_series":
        target["format"] = fmt
    return target


def es_count(query: str, *, terms: str | None = None, size: int = 10, histogram: bool = True) -> Json:
    """An Elasticsearch count, split by the values of ``terms`` and/or over time."""
    aggs: list[Json] = []
    if terms:
        aggs.append({"id": "3", "type": "terms", "field": terms,
                     "settings": {"min_doc_count": "1", "order": "desc", "orderBy": "_count", "size": str(size)}})
    if histogram:
        aggs.append({"id": "2", "type": "date_histogram", "field": "@timestamp",
                     "settings": {"interval": "auto", "min_doc_count": "0", "trimEdges": "0"}})
    return {"datasource": ES, "query": query, "alias": "", "timeField": "@timestamp",
            "metrics": [{"id": "1", "type": "count"}], "bucketAggs": aggs}


def es_metric(query: str, metric: str, field: str) -> Json:
    """An Elasticsearch metric (avg, max, ...) of ``field`` over time."""
    return {"datasource": ES, "query": query, "alias": "", "timeField": "@timestamp",
            "metrics": [{"id": "1", "type": metric, "field": field}],
            "bucketAggs": [{"id": "2", "type": "date_histogram", "field": "@timestamp",
                            "settings": {"interval": "auto", "min_doc_count": "0", "trimEdges": "0"}}]}


def es_documents(query: str, *, kind: str = "raw_data", size: int = 200) -> Json:
    """Documents themselves: ``raw_data`` (a table) or ``logs`` (a logs panel)."""
    settings = {"size": str(size)} if kind == "raw_data" else {"limit": str(size)}
    return {"datasource": ES, "query": query, "alias": "", "timeField": "@timestamp",
            "metrics": [{"id": "1", "type": kind, "settings": settings}], "bucketAggs": []}


def _dedent(expr: str) -> str:
    """A multi-line expression without its common indentation and blank first or last lines."""
    lines = [line.rstrip() for line in expr.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x), default=0)
    return "\n".join(x[indent:] for x in lines)


def _with_ref_ids(targets: Sequence[Json]) -> list[Json]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


# --- panels -------------------------------------------------------------------------------

def _panel(kind: str, title: str, description: str, *, datasource: Json | None, targets: Sequence[Json],
           defaults: Json | None, options: Json, overrides: list[Json] | None = None,
           transformations: list[Json] | None = None) -> Json:
    panel: Json = {"type": kind, "title": title, "description": description}
    if datasource is not None:
        panel["datasource"] = datasource
    if targets:
        panel["targets"] = _with_ref_ids(targets)
    if defaults is not None:
        panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = options
    if transformations:
        panel["transformations"] = transformations
    return panel


def timeseries(title: str, description: str, unit: str, targets: Sequence[Json], *,
               thresholds: Json | None = None, datasource: Json = PROM, stacking: str = "none",
               bars: bool = False, decimals: int | None = None, min_value: float | None = 0,
               max_value: float | None = None, mappings: list[Json] | None = None) -> Json:
    """A time series; thresholds, if given, are drawn as dashed lines."""
    custom = {
        "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 80 if bars else 10,
        "showPoints": "never", "spanNulls": False, "axisSoftMin": min_value,
        "stacking": {"mode": stacking, "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    if min_value is None:
        del custom["axisSoftMin"]
    options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                          "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    defaults = field_defaults(unit, thresholds, decimals=decimals, max_value=max_value, mappings=mappings,
                              custom=custom)
    return _panel("timeseries", title, description, datasource=datasource, targets=targets, defaults=defaults,
                  options=options)


def stat(title: str, description: str, unit: str, targets: Sequence[Json], *, thresholds: Json | None = None,
         mappings: list[Json] | None = None, text_mode: str = "value_and_name", decimals: int | None = None,
         color_mode: str = "value") -> Json:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
               "textMode": text_mode, "showPercentChange": False, "wideLayout": True}
    defaults = field_defaults(unit, thresholds, decimals=decimals, mappings=mappings,
                              color={"mode": "thresholds"})
    return _panel("stat", title, description, datasource=PROM, targets=targets, defaults=defaults, options=options)


@dataclass(frozen=True)
class Column:
    """A column of a table built from instant queries: ``refId`` order gives the query."""

    name: str
    expr: str
    unit: str
    thresholds: Json | None = None
    mappings: list[Json] | None = None
    decimals: int | None = None


def instant_table(title: str, description: str, columns: Sequence[Column], keys: Sequence[str],
                  *, sort_by: str) -> Json:
    """One instant query per column, merged on the label columns ``keys``; a column with
    thresholds or mappings is coloured by them (cell background)."""
    targets = [prom(c.expr, instant=True, fmt="table") for c in columns]
    rename = {f"Value #{chr(ord('A') + i)}": c.name for i, c in enumerate(columns)}
    order = {k: i for i, k in enumerate([*keys, *rename.values()])}
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": order, "renameByName": rename}},
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": sort_by, "desc": True}]}},
    ]
    overrides = []
    for c in columns:
        props: list[Json] = [{"id": "unit", "value": c.unit}]
        if c.decimals is not None:
            props.append({"id": "decimals", "value": c.decimals})
        if c.thresholds is not None or c.mappings:
            props.append({"id": "custom.cellOptions", "value": {"type": "color-background", "mode": "basic"}})
            props.append({"id": "color", "value": {"mode": "thresholds"}})
        if c.thresholds is not None:
            props.append({"id": "thresholds", "value": c.thresholds})
        if c.mappings:
            props.append({"id": "mappings", "value": c.mappings})
        overrides.append({"matcher": {"id": "byName", "options": c.name}, "properties": props})
    defaults = field_defaults("short", custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True})
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""},
               "sortBy": [{"displayName": sort_by, "desc": True}]}
    return _panel("table", title, description, datasource=PROM, targets=targets, defaults=defaults,
                  options=options, overrides=overrides, transformations=transformations)


def heatmap(title: str, description: str, target: Json, *, y_unit: str, cell_unit: str) -> Json:
    """A heatmap of pre-bucketed data (a Prometheus histogram queried with format heatmap)."""
    options = {
        "calculate": False, "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                  "exponent": 0.5, "steps": 64, "reverse": False},
        "filterValues": {"le": 1e-9}, "legend": {"show": True}, "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": y_unit},
        "cellValues": {"unit": cell_unit},
    }
    defaults = field_defaults(cell_unit, custom={"hideFrom": {"legend": False, "tooltip": False, "viz": False},
                                                 "scaleDistribution": {"type": "linear"}})
    return _panel("heatmap", title, description, datasource=PROM, targets=[target], defaults=defaults, options=options)


def es_table(title: str, description: str, target: Json, *, unit: str, columns: Sequence[str] | None = None,
             overrides: list[Json] | None = None) -> Json:
    """A table of Elasticsearch results; ``columns`` orders raw documents' fields (others hidden)."""
    transformations = []
    if columns:
        transformations.append({"id": "organize", "options": {
            "excludeByName": {f: True for f in ES_META_COLUMNS},
            "indexByName": {c: i for i, c in enumerate(columns)}, "renameByName": {}}})
    defaults = field_defaults(unit, custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True})
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    return _panel("table", title, description, datasource=ES, targets=[target], defaults=defaults, options=options,
                  overrides=overrides, transformations=transformations)


# Columns Grafana adds to raw Elasticsearch documents; hidden in event tables.
ES_META_COLUMNS = ("_id", "_index", "_type", "_source", "highlight", "sort")


def logs(title: str, description: str, target: Json) -> Json:
    """Log lines. No unit: it shows text, not numbers."""
    options = {"showTime": True, "showLabels": False, "showCommonLabels": False, "wrapLogMessage": True,
               "prettifyLogMessage": False, "enableLogDetails": True, "dedupStrategy": "none",
               "sortOrder": "Descending"}
    return _panel("logs", title, description, datasource=ES, targets=[target], defaults=None, options=options)


def alert_list(title: str, description: str, team: str) -> Json:
    """Alerts of the Prometheus rules (data-source managed) with label ``team``, firing or pending.
    No unit: it lists alerts. The always-firing Watchdog heartbeat is left out."""
    options = {
        "viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 20, "sortOrder": 3,
        "dashboardAlerts": False, "alertName": "", "showInstances": True, "folder": None,
        "datasource": PROMETHEUS_NAME,
        "alertInstanceLabelFilter": f'{{team="{team}", alertname!="Watchdog"}}',
        "stateFilter": {"firing": True, "pending": True, "recovering": True, "noData": False, "normal": False,
                        "error": True},
    }
    return _panel("alertlist", title, description, datasource=None, targets=[], defaults=None, options=options)


def row(title: str) -> Json:
    """A collapsible section header (layout only: no data, so no unit or description)."""
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


class Grid:
    """Places panels left to right on Grafana's 24-column grid, assigning ids in order."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._x = self._y = self._row_height = 0

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_height
            self._x = self._row_height = 0

    def add(self, panel: Json, w: int = 12, h: int = 8) -> None:
        if self._x + w > 24:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        panel["id"] = len(self.panels) + 1
        self.panels.append(panel)
        self._x += w
        self._row_height = max(self._row_height, h)

    def row(self, title: str) -> None:
        self._newline()
        self.add(row(title), w=24, h=1)
        self._newline()


# --- variables and dashboard ----------------------------------------------------------------

def datasource_variable(name: str, plugin: str, label: str, default_uid: str, default_name: str) -> Json:
    return {"type": "datasource", "name": name, "label": label, "query": plugin,
            "current": {"selected": False, "text": default_name, "value": default_uid},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
            "skipUrlSync": False}


def query_variable(name: str, label: str, definition: str, *, multi: bool = False, default: str | None = None,
                   description: str = "") -> Json:
    """A Prometheus ``label_values(...)`` variable, refreshed when the time range changes. A
    multi-value variable offers All (every value, as a regex alternation: use ``=~``)."""
    if multi:
        current: Json = {"selected": True, "text": ["All"], "value": ["$__all"]}
    elif default is not None:
        current = {"selected": True, "text": default, "value": default}
    else:
        current = {}
    return {"type": "query", "name": name, "label": label, "description": description, "datasource": PROM,
            "definition": definition,
            "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "current": current, "hide": 0, "includeAll": multi, "multi": multi, "options": [], "refresh": 2,
            "regex": "", "skipUrlSync": False, "sort": 1}


def custom_variable(name: str, label: str, values: Sequence[str], default: str, description: str = "") -> Json:
    return {"type": "custom", "name": name, "label": label, "description": description,
            "query": ",".join(values),
            "current": {"selected": True, "text": default, "value": default},
            "options": [{"selected": v == default, "text": v, "value": v} for v in values],
            "hide": 0, "includeAll": False, "multi": False, "skipUrlSync": False}


def prometheus_variables() -> list[Json]:
    return [
        datasource_variable("datasource", "prometheus", "Prometheus", PROMETHEUS_UID, PROMETHEUS_NAME),
        query_variable("model", "Model", "label_values(mlpulse_model_info, model)", multi=True,
                       description="Model names, from the service's mlpulse_model_info (several, or All: every "
                       "series is grouped by model)"),
        query_variable("version", "Version", 'label_values(mlpulse_model_info{model=~"$model"}, version)', multi=True,
                       description="Model versions served (several during a rollout)"),
    ]


def deployment_annotation() -> Json:
    """A marker while a model version is new: served now, not in the hour before (the first
    5 minutes after it appears; also the first deployment, unlike the ModelVersionChanged alert)."""
    return {
        "name": "Model version deployed", "datasource": PROM, "enable": True, "hide": False,
        "iconColor": "purple", "step": "1m",
        "expr": _dedent("""
            max by (model, version) (mlpulse_model_info{model=~"$model"})
            unless on (model, version)
            max by (model, version) (max_over_time(mlpulse_model_info{model=~"$model"}[1h] offset 5m))
        """),
        "titleFormat": "{{model}} {{version}} deployed",
        "textFormat": "{{model}} {{version}} is served and was not in the hour before",
        "tagKeys": "model,version", "useValueForTime": False,
    }


def builtin_annotation() -> Json:
    return {"builtIn": 1, "datasource": GRAFANA_BUILTIN, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def dashboard(uid: str, title: str, description: str, tags: Sequence[str], variables: list[Json],
              grid: Grid, annotations: list[Json], *, time_from: str = "now-6h") -> Json:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(tags),
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "links": [{"title": "mlpulse dashboards", "type": "dashboards", "tags": ["mlpulse"], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "annotations": {"list": [builtin_annotation(), *annotations]},
        "templating": {"list": variables},
        "panels": grid.panels,
    }


# --- the dashboards ---------------------------------------------------------------------------

def service_operations(src: Sources) -> Json:
    """Is the service up, fast and within its resources; is the drift exporter keeping up?"""
    g = Grid()
    t = src.t
    http = f"mlpulse_http_requests_total{{{INST}}}"

    g.row("Traffic and errors")
    g.add(timeseries(
        "Request rate by route", "Requests answered per second, every route and status (/metrics is "
        "Prometheus scraping; /healthz and /readyz are probes).", "reqps",
        [prom(f"sum by (route) (rate({http}[{RATE}]))", "{{route}}")]), w=8)
    g.add(timeseries(
        "Prediction answers by status", "Answers of POST /v1/predict per second, by HTTP status: 200 scored, "
        "4xx refused input (problem details), 5xx failures.", "reqps",
        [prom(f'sum by (status) (rate(mlpulse_http_requests_total{{{INST}, route="/v1/predict"}}[{RATE}]))',
              "{{status}}")]), w=8)
    g.add(timeseries(
        "Requests refused as a whole, by reason", "Prediction requests refused before any record was scored "
        "(malformed JSON, wrong content type, too large, empty batch, invalid records), per second.", "reqps",
        [prom(f"sum by (model, reason) (rate(mlpulse_request_errors_total{{{MV}, {INST}}}[{RATE}]))",
               "{{model}} {{reason}}")]), w=8)
    g.add(timeseries(
        "5xx ratio by route", "Share of answers with a 5xx status, per route. Lines: the HighErrorRatio alert "
        "thresholds (warning, critical; the alert uses a 5 minute window and a minimum traffic).", "percentunit",
        [prom(f"""
            (
                sum by (route) (rate(mlpulse_http_requests_total{{{INST}, status=~"5.."}}[{RATE}]))
              or
                sum by (route) (rate({http}[{RATE}])) * 0
            )
            / sum by (route) (rate({http}[{RATE}]))
        """, "{{route}}")],
        thresholds=upper(t("error_ratio_warning"), t("error_ratio_critical"))))
    g.add(timeseries(
        "4xx ratio of /v1/predict", "Share of prediction requests refused with a 4xx status: callers sending "
        "input the service must refuse. Line: the ClientErrorRatioHigh alert threshold.", "percentunit",
        [prom(f"""
            (
                sum(rate(mlpulse_http_requests_total{{{INST}, route="/v1/predict", status=~"4.."}}[{RATE}]))
              or
                sum(rate(mlpulse_http_requests_total{{{INST}, route="/v1/predict"}}[{RATE}])) * 0
            )
            / sum(rate(mlpulse_http_requests_total{{{INST}, route="/v1/predict"}}[{RATE}]))
        """, "4xx share")],
        thresholds=upper(t("client_error_ratio"))))

    g.row("Latency and load")
    latency = f'mlpulse_http_request_duration_seconds_bucket{{{INST}, route="/v1/predict"}}'
    g.add(timeseries(
        "Prediction latency p50 / p95 / p99", "Time in the app for POST /v1/predict, quantiles interpolated in "
        "the histogram's buckets (1 ms .. 10 s). Lines: the p95 (orange) and p99 (red) objectives of the "
        "LatencyP95High and LatencyP99High alerts.", "s",
        [prom(f"histogram_quantile({q}, sum by (le) (rate({latency}[{RATE}])))", f"p{int(q * 100)}")
         for q in (0.5, 0.95, 0.99)],
        thresholds=upper(t("latency_p95_seconds"), t("latency_p99_seconds"))))
    g.add(timeseries(
        "p95 latency by route", "95th percentile of the time in the app, per route (all routes, probes and "
        "scrapes included). Lines: the p95 and p99 objectives.", "s",
        [prom(f"histogram_quantile(0.95, sum by (le, route) "
              f"(rate(mlpulse_http_request_duration_seconds_bucket{{{INST}}}[{RATE}])))", "{{route}}")],
        thresholds=upper(t("latency_p95_seconds"), t("latency_p99_seconds"))))
    g.add(timeseries(
        "Requests in flight", "Requests being handled, summed over the live workers of each instance; a scrape "
        "counts itself, so 1 is idle.", "short",
        [prom(f"sum by (instance) (mlpulse_http_requests_in_flight{{{INST}}})", "{{instance}}")]), w=8)
    g.add(timeseries(
        "Inference latency per batch", "Time in the model's predict_proba per scored batch, p50 / p95 / p99 "
        "per version. Line: the InferenceLatencyHigh threshold (p95).", "s",
        [prom(f"histogram_quantile({q}, sum by (le, model, version) "
              f"(rate(mlpulse_inference_duration_seconds_bucket{{{MV}, {INST}}}[{RATE}])))",
              f"p{int(q * 100)} {{{{model}} {{version}}}}") for q in (0.5, 0.95, 0.99)],
        thresholds=upper(t("inference_p95_seconds"))), w=8)
    g.add(timeseries(
        "Batch size", "Records per scored batch: mean and p95 per version (histogram buckets 1 .. 1000).", "short",
        [prom(f"""
            sum by (model, version) (rate(mlpulse_batch_size_sum{{{MV}, {INST}}}[{RATE}]))
            / sum by (model, version) (rate(mlpulse_batch_size_count{{{MV}, {INST}}}[{RATE}]))
         """, "mean {{model}} {{version}}"),
         prom(f"histogram_quantile(0.95, sum by (le, model, version) "
              f"(rate(mlpulse_batch_size_bucket{{{MV}, {INST}}}[{RATE}])))", "p95 {{model}} {{version}}")]), w=8)

    g.row("Workers")
    g.add(timeseries(
        "CPU per worker", "CPU time (user + system) per second of each gunicorn worker: 100 % is one core.",
        "percentunit",
        [prom(f"sum by (instance, pid) (rate(mlpulse_process_cpu_seconds{{{INST}}}[{RATE}]))",
              "{{instance}} pid {{pid}}")]), w=6)
    g.add(timeseries(
        "Resident memory per worker", "Resident set size of each worker. Line: the per-worker memory budget of "
        "the MemoryGrowth alert (which projects the last hour's trend 4 hours ahead).", "bytes",
        [prom(f"sum by (instance, pid) (mlpulse_process_resident_memory_bytes{{{INST}}})", "{{instance}} pid {{pid}}")],
        thresholds=upper(t("worker_memory_bytes"))), w=6)
    g.add(timeseries(
        "Open file descriptors per worker", "File descriptors each worker holds (sockets, event log, "
        "multiprocess metric files).", "short",
        [prom(f"sum by (instance, pid) (mlpulse_process_open_fds{{{INST}}})", "{{instance}} pid {{pid}}")]), w=6)
    g.add(timeseries(
        "Worker uptime", "Time since each worker started: a drop is a restart (crash, timeout or "
        "max_requests recycling).", "s",
        [prom(f"time() - max by (instance, pid) (mlpulse_process_start_time_seconds{{{INST}}})",
              "{{instance}} pid {{pid}}")]), w=6)

    g.row("Scraping, event log and drift exporter")
    g.add(stat(
        "Scrape targets", "Whether Prometheus's last scrape of each target succeeded (the up series): DOWN "
        "feeds ModelServiceDown, DriftExporterDown and AlertmanagerDown.", "none",
        [prom("up", "{{job}} {{instance}}", instant=True)],
        thresholds=steps((RED, None), (GREEN, 1)),
        mappings=value_map({"0": ("DOWN", RED), "1": ("UP", GREEN)}), color_mode="background"), w=8, h=6)
    g.add(timeseries(
        "Scrape duration", "How long the last scrape of the service and the exporter took. Line: the "
        "MetricsScrapeSlow threshold (the scrape timeout is 10 s).", "s",
        [prom('scrape_duration_seconds{job=~"model-service|drift-exporter"}', "{{job}} {{instance}}")],
        thresholds=upper(t("scrape_duration_seconds"))), w=8, h=6)
    g.add(timeseries(
        "Event log write errors", "Prediction events the service could not write (disk full, permissions) per "
        "interval: the request is answered, but the exporter and Elasticsearch never see the record.", "short",
        [prom(f"sum by (model, instance) (increase(mlpulse_event_write_errors_total{{{MV}, {INST}}}[{RATE}]))",
              "{{model}} {{instance}}")]), w=8, h=6)
    g.add(timeseries(
        "Drift exporter lag", "Age of the newest event the exporter has read. It also grows while no traffic "
        "arrives. Line: the DriftExporterLagging threshold.", "s",
        [prom("mlpulse_exporter_lag_seconds", "{{instance}}")],
        thresholds=upper(t("exporter_lag_seconds"))), w=6)
    g.add(timeseries(
        "Age of the last drift evaluation", "Time since the exporter last finished evaluating its windows. "
        "Line: the DriftEvaluationStale threshold.", "s",
        [prom("time() - mlpulse_exporter_last_evaluation_timestamp_seconds", "{{instance}}")],
        thresholds=upper(t("exporter_evaluation_age_seconds"))), w=6)
    g.add(timeseries(
        "Events read by the exporter", "Events the exporter read per second, by outcome: scored (binned), "
        "refused, other, unknown_model (no bundle: not monitored), too_old, invalid.", "eps",
        [prom(f"sum by (outcome) (rate(mlpulse_exporter_events_total[{RATE}]))", "{{outcome}}")]), w=6)
    g.add(timeseries(
        "Exporter errors", "Problems per interval: malformed lines by kind, read errors, bundles that failed "
        "to load (any of them feeds DriftExporterErrors).", "short",
        [prom(f"sum by (kind) (increase(mlpulse_exporter_malformed_lines_total[{RATE}]))", "malformed {{kind}}"),
         prom(f"sum(increase(mlpulse_exporter_read_errors_total[{RATE}]))", "read errors"),
         prom(f"sum(increase(mlpulse_exporter_bundle_errors_total[{RATE}]))", "bundle errors")]), w=6)

    g.row("Alerts")
    g.add(alert_list("Ops alerts firing or pending", "Alerts of the Prometheus rules with team=ops (service, "
                     "exporter, monitoring), firing or pending; the Watchdog heartbeat is hidden.", "ops"),
          w=24, h=8)

    variables = [*prometheus_variables(),
                 query_variable("instance", "Instance",
                                'label_values(mlpulse_model_info{model=~"$model", version=~"$version"}, instance)',
                                multi=True, description="Service instances serving the selected model versions")]
    return dashboard("mlpulse-service-ops", "mlpulse / Service operations",
                     "Traffic, errors, latency and resources of the model service, and the health of scraping "
                     "and of the drift exporter (team ops).", ["mlpulse", "ops"], variables, g,
                     [deployment_annotation()], time_from="now-3h")


def model_and_data(src: Sources) -> Json:
    """Do predictions and inputs still look like the training data; which features moved?"""
    g = Grid()
    t = src.t
    rule = src.drift
    drift_steps = steps((GREEN, None), (ORANGE, rule.threshold * MODERATE_FRACTION), (RED, rule.threshold))
    win = f'{MV}, window="$window"'

    g.row("Model")
    g.add(stat(
        "Served versions", "Model versions the service serves now (mlpulse_model_info).", "none",
        [prom('max by (model, version) (mlpulse_model_info{model=~"$model"})', "{{model}} {{version}}", instant=True)],
        text_mode="name", color_mode="none"), w=6, h=5)
    g.add(stat(
        "Model age", "Time since the served version was trained. Red from the ModelStale threshold.",
        "dtdurations",
        [prom(f"time() - max by (model, version) (mlpulse_model_trained_timestamp_seconds{{{MV}}})", "{{model}} {{version}}",
              instant=True)],
        thresholds=upper(t("model_max_age_seconds"))), w=6, h=5)
    g.add(stat(
        "Since last load", "Time since a worker last loaded the bundle (a restart or a deployment).",
        "dtdurations",
        [prom(f"time() - max by (model, version) (mlpulse_model_loaded_timestamp_seconds{{{MV}}})", "{{model}} {{version}}",
              instant=True)]), w=6, h=5)
    g.add(stat(
        "Libraries differing from training", "Tracked libraries (python, scikit-learn, numpy, scipy, pandas, "
        "skops) whose serving version differs from the training version; any is a DependencyMismatch.", "short",
        [prom(f"sum by (model, version) (max by (model, version, library) (mlpulse_model_dependency_mismatch{{{MV}}}))",
              "{{model}} {{version}}", instant=True)],
        thresholds=steps((GREEN, None), (RED, 1))), w=6, h=5)
    g.add(timeseries(
        "Records scored and refused", "Records received in prediction requests per second, by outcome and "
        "version: scored, or refused by the validation policy.", "recps",
        [prom(f"sum by (model, version, outcome) (rate(mlpulse_records_total{{{MV}}}[{RATE}]))",
              "{{outcome}} {{model}} {{version}}")]), w=24, h=6)

    g.row("Predictions")
    g.add(timeseries(
        "Prediction over the window (exporter)", "Exact mean, standard deviation, minimum and maximum of the "
        "score (probability of the positive class) over the drift exporter's sliding window $window.",
        "percentunit",
        [prom(f"max by (model, version, statistic) (mlpulse_window_prediction{{{win}}})", "{{statistic}} {{model}} {{version}}")]))
    g.add(timeseries(
        "Prediction mean and std (service)", "Mean and population standard deviation of the score over each "
        "interval, from the service's histogram sum, count and sum of squares.", "percentunit",
        [prom(f"""
            sum by (model, version) (rate(mlpulse_prediction_sum{{{MV}}}[{RATE}]))
            / sum by (model, version) (rate(mlpulse_prediction_count{{{MV}}}[{RATE}]))
         """, "mean {{model}} {{version}}"),
         prom(f"""
            sqrt(clamp_min(
                sum by (model, version) (rate(mlpulse_prediction_squares_total{{{MV}}}[{RATE}]))
                / sum by (model, version) (rate(mlpulse_prediction_count{{{MV}}}[{RATE}]))
              - (
                  sum by (model, version) (rate(mlpulse_prediction_sum{{{MV}}}[{RATE}]))
                  / sum by (model, version) (rate(mlpulse_prediction_count{{{MV}}}[{RATE}]))
                ) ^ 2,
              0))
         """, "std {{model}} {{version}}")]))
    g.add(timeseries(
        "Prediction quantiles (service)", "5th, 50th and 95th percentile of the score, interpolated in the "
        "histogram whose buckets are the training reference's quantile edges.", "percentunit",
        [prom(f"histogram_quantile({q}, sum by (le, model, version) (rate(mlpulse_prediction_bucket{{{MV}}}[{RATE}])))",
              f"p{int(q * 100)} {{{{model}} {{version}}}}") for q in (0.05, 0.5, 0.95)]))
    g.add(heatmap(
        "Prediction distribution", "Scored records per score bucket and interval. Buckets are the training "
        "reference's quantile edges, so a stable model fills the rows evenly.",
        prom(f"sum by (model, le) (increase(mlpulse_prediction_bucket{{{MV}}}[{RATE}]))", "{{le}}", fmt="heatmap"),
        y_unit="percentunit", cell_unit="short"))
    g.add(timeseries(
        "Predicted class shares", "Share of scored records per predicted class and version (the decision "
        "threshold of the bundle applied to the score).", "percentunit",
        [prom(f"""
            sum by (model, version, class) (rate(mlpulse_predicted_class_total{{{MV}}}[{RATE}]))
            / on (model, version) group_left ()
            sum by (model, version) (rate(mlpulse_predicted_class_total{{{MV}}}[{RATE}]))
         """, "{{class}} {{model}} {{version}}")], stacking="normal", max_value=1))
    g.add(timeseries(
        "Non-finite predictions", "Predictions that were NaN or infinite per interval (not in the histogram); "
        "any feeds the NonFinitePredictions alert.", "short",
        [prom(f"sum by (model, version) (increase(mlpulse_prediction_nonfinite_total{{{MV}}}[{RATE}]))", "{{model}} {{version}}")]))

    g.row("Drift against the training reference")
    stat_name = rule.statistic
    g.add(instant_table(
        "Drift by feature ($window)", f"Per feature over the window $window: {stat_name} (the exporter's "
        f"decision statistic: orange from {rule.threshold * MODERATE_FRACTION:g}, red from its threshold "
        f"{rule.threshold:g}), whether the exporter flags it (effect size and drift test), the corrected "
        "two-sample chi-square and KS p-values (the drift test combines them; KS for numbers only), the JS "
        "distance, and the data-quality ratios coloured by their alert thresholds. _prediction and _predicted_class are the model's outputs.",
        [Column(stat_name, f'max by (model, version, feature) (mlpulse_drift_score{{{win}, statistic="{stat_name}"}})',
                "none", drift_steps, decimals=3),
         Column("drifted", f"max by (model, version, feature) (mlpulse_drift_detected{{{win}}})", "none",
                steps((GREEN, None), (RED, 1)), value_map({"0": ("no", GREEN), "1": ("drifted", RED)})),
         Column("p (chi², adjusted)",
                f'max by (model, version, feature) (mlpulse_drift_pvalue_adjusted{{{win}, test="chi2"}})', "sci"),
         Column("p (KS, adjusted)",
                f'max by (model, version, feature) (mlpulse_drift_pvalue_adjusted{{{win}, test="ks"}})', "sci"),
         Column("JS distance", f'max by (model, version, feature) (mlpulse_drift_score{{{win}, statistic="js_distance"}})',
                "none", decimals=3),
         Column("missing", f"max by (model, version, feature) (mlpulse_drift_missing_ratio{{{win}}})", "percentunit",
                upper(t("missing_ratio")), decimals=1),
         Column("out of range", f"max by (model, version, feature) (mlpulse_drift_out_of_range_ratio{{{win}}})",
                "percentunit", upper(t("out_of_range_ratio")), decimals=1),
         Column("unseen", f"max by (model, version, feature) (mlpulse_drift_unseen_ratio{{{win}}})", "percentunit",
                upper(t("unseen_ratio")), decimals=1),
         Column("values", f"max by (model, version, feature) (mlpulse_drift_window_values{{{win}}})", "short")],
        ["version", "feature"], sort_by=stat_name), w=24, h=12)
    g.add(timeseries(
        f"Drift score ({stat_name}) per feature", f"The exporter's decision statistic {stat_name} per feature "
        "over the window $window. Lines: moderate and the drift threshold (a drift also needs the corrected "
        "p-value below alpha).", "none",
        [prom(f'max by (model, version, feature) (mlpulse_drift_score{{{win}, statistic="{stat_name}", feature=~"$feature"}})',
              "{{feature}} {{model}} {{version}}")], thresholds=drift_steps, decimals=3), w=12, h=9)
    g.add(timeseries(
        "Drift share", "Share of the evaluated input features the exporter flags as drifted over $window. "
        "Lines: the DriftShareHigh warning and critical thresholds.", "percentunit",
        [prom(f"max by (model, version) (mlpulse_drift_share{{{win}}})", "{{model}} {{version}}")],
        thresholds=upper(t("drift_share_warning"), t("drift_share_critical")), max_value=1), w=6, h=9)
    g.add(stat(
        "Drifted / evaluated inputs", "Input features flagged as drifted, and input features with enough values "
        "in the window $window to be evaluated.", "short",
        [prom(f'sum by (model, version) (mlpulse_drift_detected{{{win}, feature!~"_prediction|_predicted_class"}})',
              "drifted {{model}} {{version}}", instant=True),
         prom(f"max by (model, version) (mlpulse_drift_features_evaluated{{{win}}})", "evaluated {{model}} {{version}}",
              instant=True)]), w=6, h=9)

    estimated_quality_section(g, src, win)

    g.row("Data quality")
    g.add(timeseries(
        "Missing values per scored record", "Null or absent values of each nullable feature per scored record "
        "(service counters). Line: the MissingValuesSpike threshold.", "percentunit",
        [prom(f"""
            sum by (model, version, feature) (rate(mlpulse_input_missing_total{{{MV}, feature=~"$feature"}}[{RATE}]))
            / on (model, version) group_left ()
            sum by (model, version) (rate(mlpulse_records_total{{{MV}, outcome="scored"}}[{RATE}]))
         """, "{{feature}} {{model}} {{version}}")], thresholds=upper(t("missing_ratio")), max_value=1))
    g.add(timeseries(
        "Out-of-range share per feature ($window)", "Share of each numeric feature's live values below the "
        "training minimum or above its maximum over $window (exporter). Line: the FeatureOutOfRange threshold.",
        "percentunit",
        [prom(f'max by (model, version, feature) (mlpulse_drift_out_of_range_ratio{{{win}, feature=~"$feature"}})',
              "{{feature}} {{model}} {{version}}")], thresholds=upper(t("out_of_range_ratio")), max_value=1))
    g.add(timeseries(
        "Unseen-category share per feature ($window)", "Share of each categorical feature's live values in "
        "categories training never saw, over $window (exporter). Line: the UnseenCategories threshold.",
        "percentunit",
        [prom(f'max by (model, version, feature) (mlpulse_drift_unseen_ratio{{{win}, feature=~"$feature"}})',
              "{{feature}} {{model}} {{version}}")], thresholds=upper(t("unseen_ratio")), max_value=1))
    violations = f"mlpulse_input_violations_total{{{MV}}}"
    records = f"sum by (model, version) (rate(mlpulse_records_total{{{MV}}}[{RATE}]))"
    g.add(timeseries(
        "Input violations by reason, per record", "Violations per record received (scored or refused), by "
        "reason. Line: the InputViolationsSpike threshold, which applies to each feature and refusal reason.",
        "percentunit",
        [prom(f"""
            sum by (model, version, reason) (rate({violations}[{RATE}]))
            / on (model, version) group_left ()
            {records}
         """, "{{reason}} {{model}} {{version}}")], thresholds=upper(t("violation_ratio"))))
    g.add(timeseries(
        "Input violations by feature, per record", "Violations per record received, by feature (_unknown: a "
        "field the schema does not know). Line: the InputViolationsSpike threshold.", "percentunit",
        [prom(f"""
            sum by (model, version, feature) (rate({violations}[{RATE}]))
            / on (model, version) group_left ()
            {records}
         """, "{{feature}} {{model}} {{version}}")], thresholds=upper(t("violation_ratio"))))

    realized_quality_rows(g, src)

    g.row("Alerts")
    g.add(alert_list("Data science alerts firing or pending", "Alerts of the Prometheus rules with team=ds "
                     "(model, input data, drift), firing or pending.", "ds"), w=24, h=8)

    variables = [
        *prometheus_variables(),
        query_variable("window", "Window", 'label_values(mlpulse_drift_share{model=~"$model"}, window)',
                       default=DEFAULT_WINDOW,
                       description=f"Sliding window of the drift exporter; {DEFAULT_WINDOW} is the one the alerts read"),
        query_variable("feature", "Feature",
                       'label_values(mlpulse_drift_window_values{model=~"$model", version=~"$version"}, feature)',
                       multi=True, description="Input features, and the outputs _prediction and _predicted_class"),
    ]
    return dashboard("mlpulse-model-data", "mlpulse / Model and data",
                     "Predictions, drift of inputs and outputs against the training reference, and input data "
                     "quality (team ds).", ["mlpulse", "ds"], variables, g, [deployment_annotation()],
                     time_from="now-24h")


def estimated_quality_section(g: Grid, src: Sources, win: str) -> None:
    """The label-free quality estimate (docs/quality.md): whole-model metrics with their 95 % band,
    every metric and class against the holdout, and the impact drift alerts carry."""
    g.row("Estimated quality (without labels)")
    whole = f'{win}, class=""'
    band = timeseries(
        "Estimated quality, whole model ($window)", "The exporter's label-free estimate over $window with its "
        "95 % band (dashed: lower and upper), for accuracy and ROC AUC (classifiers, higher is better) or MAE and "
        "RMSE (regressors, lower is better). EstimatedQualityDropping fires when even the better end of the 1h "
        f"band is more than {src.t('estimated_quality_shortfall'):.0%} worse than on the holdout. Concept drift "
        "(the truth changing, inputs not) does not show here: only labels reveal it.", "none",
        [prom(f"max by (model, version, metric) (mlpulse_quality_estimated{{{whole}}})", "{{metric}} {{model}} {{version}}"),
         prom(f"max by (model, version, metric) (mlpulse_quality_estimated_lower{{{whole}}})",
              "lower {{metric}} {{model}} {{version}}"),
         prom(f"max by (model, version, metric) (mlpulse_quality_estimated_upper{{{whole}}})",
              "upper {{metric}} {{model}} {{version}}")], decimals=3, min_value=None)
    band["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byRegexp", "options": "^(lower|upper) .*"},
         "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}},
                        {"id": "custom.fillOpacity", "value": 0}]}]
    g.add(band, w=12, h=9)
    g.add(timeseries(
        "Estimated shortfall against the holdout (1h)", "How much worse than on the holdout the 1h estimate is "
        "at the better end of its band, relative, per whole-model metric (negative: no worse). Line: the "
        "EstimatedQualityDropping threshold; above it, drift alerts of the version page by severity.",
        "percentunit",
        [prom(f"max by (model, version, metric) (model_version_metric:mlpulse_quality_estimate_shortfall:1h{{{MV}}})",
              "{{metric}} {{model}} {{version}}")], thresholds=upper(src.t("estimated_quality_shortfall")), min_value=None),
        w=8, h=9)
    g.add(stat(
        "Drift impact (1h)", "The impact every drift alert of the version carries: none (the 1h estimate holds: "
        "drift alerts go to the informational receiver), degraded (EstimatedQualityDropping: drift alerts page by "
        "severity), unknown (no estimate: too few records, or a bundle or source without one).", "none",
        [prom(f"max by (model, version, impact) (model_version:mlpulse_quality_impact:1h{{{MV}}})",
              "{{impact}} {{model}} {{version}}", instant=True)], text_mode="name", color_mode="none"), w=4, h=9)
    g.add(instant_table(
        "Estimated quality by metric and class ($window)", "Every estimated metric over $window: the estimate, "
        "its 95 % band, and the same estimate on the bundle's holdout (what the alert compares with). "
        "Precision, recall and F1 are per class; the band adds sampling and calibration uncertainty.",
        [Column("estimate", f"max by (model, version, metric, class) (mlpulse_quality_estimated{{{win}}})", "none",
                decimals=3),
         Column("lower", f"max by (model, version, metric, class) (mlpulse_quality_estimated_lower{{{win}}})", "none",
                decimals=3),
         Column("upper", f"max by (model, version, metric, class) (mlpulse_quality_estimated_upper{{{win}}})", "none",
                decimals=3),
         Column("holdout", f"max by (model, version, metric, class) (mlpulse_quality_estimated_reference{{{MV}}})",
                "none", decimals=3)],
        ["version", "metric", "class"], sort_by="estimate"), w=24, h=9)

def realized_quality_rows(g: Grid, src: Sources) -> None:
    """Realized quality (labels from POST /v1/feedback joined by the exporter) beside the holdout
    baseline, the share of predictions labelled so far and how late labels come."""
    margin = src.t("quality_margin")
    win = f'{MV}, window="$window"'
    g.row("Realized quality (labels)")
    for title, metrics, unit, sense in (("Realized accuracy and ROC AUC", "accuracy|roc_auc", "percentunit", -1),
                                        ("Realized log loss and Brier score", "log_loss|brier", "none", 1)):
        g.add(timeseries(
            f"{title} ($window)", "Over the labelled predictions made in the window $window (absent below the "
            "exporter's min_labels), against the holdout baseline of the bundle; the alert line is the baseline "
            f"moved by the ModelQualityBelowBaseline margin ({margin:g}, relative; the alert reads the 1h window).",
            unit,
            [prom(f'max by (model, version, metric) (mlpulse_quality_realized{{{win}, class="", metric=~"{metrics}"}})',
                  "{{metric}} {{model}} {{version}}"),
             prom(f'max by (model, version, metric) (mlpulse_quality_baseline{{{MV}, class="", metric=~"{metrics}"}})',
                  "baseline {{metric}} {{model}} {{version}}"),
             prom(f'max by (model, version, metric) (mlpulse_quality_baseline{{{MV}, class="", metric=~"{metrics}"}}) '
                  f"* {1 + sense * margin:g}", "alert line {{metric}} {{model}} {{version}}")],
            decimals=3, min_value=None), w=12, h=8)
    g.add(timeseries(
        "Labelled share ($window)", "Share of the predictions made in the window $window that have received a "
        "label so far (the exporter's join). Late labels make it grow with the window.", "percentunit",
        [prom(f"max by (model, version) (mlpulse_quality_labelled_ratio{{{win}}})", "{{model}} {{version}}")], max_value=1),
        w=8, h=8)
    g.add(stat(
        "Labelled predictions ($window)", "Predictions made in the window $window that have a label: realized "
        "quality needs the exporter's min_labels of them.", "short",
        [prom(f"max by (model, version) (mlpulse_quality_labelled{{{win}}})", "{{model}} {{version}}", instant=True)]), w=4, h=8)
    g.add(timeseries(
        "Label delay", "Median and 90th percentile of the time from a prediction to its first label, over the "
        "labels joined in each interval (the exporter's histogram).", "s",
        [prom(f"histogram_quantile({q}, sum by (le, model, version) (rate(mlpulse_label_delay_seconds_bucket{{{MV}}}"
              f"[{RATE}])))", f"p{int(q * 100)} {{{{model}} {{version}}}}") for q in (0.5, 0.9)]), w=16, h=8)
    g.add(stat(
        "Since the newest label", "Time since the newest label joined to a prediction was given. Red from the "
        "LabelsNotArriving threshold.", "dtdurations",
        [prom(f"time() - max by (model, version) (mlpulse_label_last_timestamp_seconds{{{MV}}} > 0)", "{{model}} {{version}}",
              instant=True)], thresholds=upper(src.t("label_silence_seconds"))), w=8, h=8)


def input_logs(src: Sources) -> Json:
    """The prediction events in Elasticsearch: what exactly was sent, refused, flagged."""
    g = Grid()
    scope = "model.name:${model:lucene} AND model.version:${version:lucene}"
    categorical = list(src.categorical_inputs)
    default_cat = "loan_purpose" if "loan_purpose" in categorical else categorical[0]

    g.row("Events")
    g.add(timeseries(
        "Events by type", "Prediction events per interval: prediction (scored record), prediction.refused "
        "(refused record), request.refused (request refused before its records were read).", "short",
        [es_count(scope, terms="event")], datasource=ES, bars=True, stacking="normal"), w=12)
    g.add(timeseries(
        "Records received (metrics)", "The same traffic as seen by Prometheus: records per second by outcome, "
        "to compare with the events indexed (a gap means Logstash or Elasticsearch lags).", "recps",
        [prom(f"sum by (model, outcome) (rate(mlpulse_records_total{{{MV}}}[{RATE}]))", "{{model}} {{outcome}}")]), w=12)
    g.add(es_table(
        "Recent events", "The latest events, newest first: search a request_id from an alert or a response "
        "header in the query bar of Explore for the whole request.",
        es_documents(scope, size=200), unit="string",
        columns=["@timestamp", "event", "request_id", "model.version", "record_index", "batch_size",
                 "prediction.value", "prediction.class", "latency_ms", "violations", "reason", "detail"],
        overrides=[
            {"matcher": {"id": "byName", "options": "prediction.value"},
             "properties": [{"id": "unit", "value": "percentunit"}, {"id": "decimals", "value": 1}]},
            {"matcher": {"id": "byName", "options": "latency_ms"}, "properties": [{"id": "unit", "value": "ms"}]},
        ]), w=24, h=10)
    g.add(logs(
        "Refused records", "Records the service refused, with their violations and their raw input as text "
        "(raw_inputs: a refused record may hold any type, so it is never mapped field by field).",
        es_documents(f'{scope} AND event:"prediction.refused"', kind="logs", size=100)), w=12, h=10)
    g.add(timeseries(
        "Requests refused as a whole, by reason", "request.refused events per interval by reason (malformed "
        "JSON, wrong content type, body or batch too large, empty batch).", "short",
        [es_count(f'{scope} AND event:"request.refused"', terms="reason")], datasource=ES, bars=True,
        stacking="normal"), w=12, h=10)

    g.row("Input violations")
    g.add(timeseries(
        "Violations by reason", "Events carrying a violation of each reason per interval (scored and flagged, "
        "or refused).", "short",
        [es_count(f"{scope} AND violations.reason:*", terms="violations.reason")], datasource=ES, bars=True,
        stacking="normal"), w=12)
    g.add(es_table(
        "Violations by field, as sent", "Events with a violation on each field name as the caller sent it "
        "(an unknown field appears under its own name) over the time range. Counted separately from the "
        "reason: violations is an object array, not nested.",
        es_count(f"{scope} AND violations.field:*", terms="violations.field", size=50, histogram=False),
        unit="short"), w=6)
    g.add(es_table(
        "Violations by feature", "Events with a violation on each schema feature (_unknown for fields the "
        "schema does not know) over the time range.",
        es_count(f"{scope} AND violations.feature:*", terms="violations.feature", size=50, histogram=False),
        unit="short"), w=6)

    g.row("Inputs and predictions")
    g.add(timeseries(
        "Frequencies of $cat_feature", "Scored records per category of the categorical input $cat_feature per "
        "interval, stacked: a new or vanished category shows as a new or vanished band.", "short",
        [es_count(f"{scope} AND event:prediction", terms="inputs.$cat_feature", size=20)], datasource=ES,
        bars=True, stacking="normal"), w=12)
    g.add(timeseries(
        "Mean score (events)", "Mean score of the scored records per interval, from the "
        "events (compare with the metrics dashboard).", "percentunit",
        [es_metric(f"{scope} AND event:prediction", "avg", "prediction.value")], datasource=ES), w=6)
    g.add(timeseries(
        "Inference latency (events)", "Mean time in the model's predict_proba of the scored records' batches "
        "per interval, from the events.", "ms",
        [es_metric(f"{scope} AND event:prediction", "avg", "latency_ms")], datasource=ES), w=6)

    variables = [
        *prometheus_variables(),
        datasource_variable("logs", "elasticsearch", "Elasticsearch", ELASTICSEARCH_UID, ELASTICSEARCH_NAME),
        custom_variable("cat_feature", "Categorical input", categorical, default_cat,
                        "Categorical inputs: the keyword fields under inputs in the index template"),
    ]
    return dashboard("mlpulse-input-logs", "mlpulse / Input logs",
                     "The prediction events indexed in Elasticsearch (logs-mlpulse.predictions-default): "
                     "recent and refused records, violations by reason and field, categorical inputs over time.",
                     ["mlpulse", "ds", "logs"], variables, g, [], time_from="now-6h")


BUILDERS = {
    "service-operations.json": service_operations,
    "model-and-data.json": model_and_data,
    "input-logs.json": input_logs,
}


def build_dashboards(src: Sources | None = None) -> dict[str, Json]:
    """``{file name: dashboard}`` for every dashboard."""
    src = src or Sources.load()
    return {name: build(src) for name, build in BUILDERS.items()}


def render(dashboard_json: Json) -> str:
    """The committed form: two-space indented JSON, keys in build order, newline at the end."""
    return json.dumps(dashboard_json, indent=2, ensure_ascii=False) + "\n"


def render_files(root: Path = Path(".")) -> dict[str, str]:
    """Path (relative to ``root``) -> content of every dashboard, built from ``root``'s sources."""
    return {str(DASHBOARDS_DIR / name): render(d) for name, d in build_dashboards(Sources.load(root)).items()}
