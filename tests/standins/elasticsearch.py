"""Stand-ins for Elasticsearch: they are NOT Elasticsearch.

Elasticsearch cannot run here (a JVM service needing gigabytes of memory, and for the real stack
Docker), so the tests that need it talk over HTTP on 127.0.0.1 to these stand-ins, built on
``tests.standins.http.StandInHTTPServer``. What they answer is written from the Elasticsearch
reference and checked against it; anything they do not model they refuse rather than guess.

The search stand-in (the exporter's Elasticsearch source, ``mlpulse.exporter.sources.elasticsearch``):

- ``stand_in_elasticsearch_search(body, events, mapping)`` is a plain-Python evaluation of a
  search request body over raw events, written from the Elasticsearch reference for the queries
  and aggregations the exporter sends (term, terms, range, exists, bool; range, missing, filters,
  extended_stats, max). It refuses anything else (``StandInError``, answered as HTTP 400), and it
  is itself checked against the reference's own examples (``tests/fixtures/elastic_source``, see
  its README). Indexing follows the mapping the exporter documents as required
  (``mapping_for_schema``): numbers with ``coerce: false`` and ``ignore_malformed: true`` (a string
  or a boolean in a numeric field is not indexed, so it is missing), categories as ``keyword``,
  ``@timestamp`` as ``date`` (milliseconds).
- ``ElasticsearchSearchStandIn`` serves ``POST /<index>/_search`` with it, or with one of the
  failure modes an Elasticsearch or a proxy in front of it shows (``MODES``): an HTTP 500, a hung
  answer, ``timed_out``, a failed shard, a body that is not JSON. It can require Basic
  authentication and serve HTTPS.

The setup stand-in (the setup job, ``mlpulse.elastic.setup``): ``ElasticsearchSetupStandIn``
answers the job's Elasticsearch requests with the responses recorded from the Elasticsearch
specification (``tests/fixtures/elastic/elasticsearch-api.json``, see its README). It checks the
credentials the real server requires and keeps just enough state (roles, users, data streams) for
a second run to see "updated" and "already exists"; it can be slow to become ready and can
inject transient failures.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from tests.standins.http import StandInHTTPServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "elastic"
ES_API = json.loads((FIXTURES / "elasticsearch-api.json").read_text())
INDEX = "logs-mlpulse.predictions-default"  # the exporter's default elasticsearch_index


# == the search stand-in =========================================================================


class StandInError(Exception):
    """A request the stand-in refuses, as Elasticsearch answers a malformed request (HTTP 400)."""


def mapping_for_schema(schema) -> dict[str, str]:
    """Field types of the prediction events of a model with feature ``schema`` (a
    ``mlpulse.schema.FeatureSchema``), as the documented index template maps them."""
    mapping = {"@timestamp": "date", "event": "keyword", "model.name": "keyword", "model.version": "keyword",
               "prediction.value": "double", "prediction.class": "keyword"}
    for spec in schema.features:
        if spec.kind == "categorical":
            mapping[f"inputs.{spec.name}"] = "keyword"
        else:
            mapping[f"inputs.{spec.name}"] = "long" if spec.dtype == "int" else "double"
    return mapping


def _source_values(doc, path):
    """The leaf values at a dotted path of a JSON document; arrays give one value each."""
    current = [doc]
    for part in path.split("."):
        nxt = []
        for c in current:
            if isinstance(c, dict) and part in c:
                v = c[part]
                nxt.extend(v if isinstance(v, list) else [v])
        current = nxt
    return current


def _indexed(value, kind):
    """What a field of type ``kind`` indexes for one source value: a list of 0 or more terms."""
    if value is None:
        return []
    if kind in ("double+coerce", "long+coerce"):  # Elasticsearch's default: numeric strings parsed,
        if isinstance(value, str):                # fractions of a long truncated
            try:
                value = float(value)
            except ValueError:
                return []
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return []
        return [float(math.trunc(value))] if kind == "long+coerce" else [float(value)]
    if kind in ("double", "long"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return []  # coerce: false + ignore_malformed: true -> not indexed, so missing
        if kind == "long" and isinstance(value, float):
            raise StandInError("a float in a long field: not modelled by the stand-in")
        return [float(value)] if math.isfinite(value) else []
    if kind == "keyword":
        if isinstance(value, (dict, list)):
            raise StandInError("an object in a keyword field")
        return [value if isinstance(value, str) else json.dumps(value)]
    if kind == "text":
        return re.findall(r"\w+", str(value).lower())  # simplified analyzer: lower-cased words
    if kind == "date":
        stamp = dt.datetime.fromisoformat(value)
        # date fields keep milliseconds: truncated, computed exactly in integers
        return [(stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)]
    raise StandInError(f"field type {kind} not modelled")


class _Docs:
    """Indexed values of the documents, per field, computed once."""

    def __init__(self, docs, mapping):
        self.docs, self.mapping, self._cache = docs, mapping, {}

    def values(self, field):
        if field not in self._cache:
            kind = self.mapping.get(field)
            if kind is None:  # an unmapped field has no values anywhere
                self._cache[field] = [[] for _ in self.docs]
            else:
                self._cache[field] = [[t for v in _source_values(d, field) for t in _indexed(v, kind)]
                                      for d in self.docs]
        return self._cache[field]

    def subset(self, keep):
        return _Docs([d for d, k in zip(self.docs, keep) if k], self.mapping)


def _only(spec, allowed, what):
    if not isinstance(spec, dict):
        raise StandInError(f"[{what}] expects an object")
    unknown = set(spec) - set(allowed)
    if unknown:
        raise StandInError(f"[{what}] unknown field {sorted(unknown)}")


def _one(spec, what):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise StandInError(f"[{what}] expects exactly one key")
    return next(iter(spec.items()))


def _term_value(value, kind):
    if kind in ("double", "long"):
        return float(value)
    return value if isinstance(value, str) else json.dumps(value)


def _query(query, docs: _Docs) -> list[bool]:
    """Which documents match ``query`` (filter context: no scoring)."""
    kind, spec = _one(query, "query")
    n = len(docs.docs)
    if kind == "match_all":
        return [True] * n
    if kind == "bool":
        _only(spec, {"filter", "must", "must_not"}, "bool")
        keep = [True] * n
        for clause in ("filter", "must"):
            for q in _as_list(spec.get(clause, [])):
                keep = [a and b for a, b in zip(keep, _query(q, docs))]
        for q in _as_list(spec.get("must_not", [])):
            keep = [a and not b for a, b in zip(keep, _query(q, docs))]
        return keep
    if kind == "exists":
        _only(spec, {"field"}, "exists")
        return [bool(v) for v in docs.values(spec["field"])]
    if kind in ("term", "terms", "range", "match"):
        field, arg = _one(spec, kind)
        ftype = docs.mapping.get(field, "keyword")
        values = docs.values(field)
        if kind == "term":
            if isinstance(arg, dict):
                _only(arg, {"value"}, "term")
                arg = arg["value"]
            want = _term_value(arg, ftype)
            return [want in v for v in values]
        if kind == "terms":
            wanted = {_term_value(a, ftype) for a in arg}
            return [any(x in wanted for x in v) for v in values]
        if kind == "match":
            tokens = set(re.findall(r"\w+", str(arg).lower()))
            return [bool(tokens & set(v)) for v in values]
        _only(arg, {"gte", "gt", "lte", "lt", "format"}, "range")
        if ftype == "date" and arg.get("format") != "epoch_millis":
            raise StandInError("date range: only format epoch_millis is modelled")
        bounds = {k: float(arg[k]) for k in ("gte", "gt", "lte", "lt") if k in arg}

        def inside(x):
            return (x >= bounds.get("gte", -math.inf) and x > bounds.get("gt", -math.inf)
                    and x <= bounds.get("lte", math.inf) and x < bounds.get("lt", math.inf))

        return [any(inside(x) for x in v) for v in values]
    raise StandInError(f"unknown query [{kind}]")


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _key_number(x):
    return "*" if x is None else repr(float(x))


def _agg_range(p, docs):
    _only(p, {"field", "ranges", "keyed"}, "range")
    values = docs.values(p["field"])
    doc_of = np.array([i for i, v in enumerate(values) for _ in v], dtype=np.int64)
    xs = np.array([x for v in values for x in v], dtype=float)
    buckets = []
    for r in p["ranges"]:
        _only(r, {"key", "from", "to"}, "range")
        lo, hi = r.get("from"), r.get("to")
        lo_f = -math.inf if lo is None else float(lo)
        hi_f = math.inf if hi is None else float(hi)
        # "includes the from value and excludes the to value for each range"; a document counts
        # once in a bucket however many of its values fall in it
        bucket = {"doc_count": int(np.unique(doc_of[(xs >= lo_f) & (xs < hi_f)]).size)}
        if lo is not None:
            bucket["from"] = float(lo)
        if hi is not None:
            bucket["to"] = float(hi)
        buckets.append((r.get("key", f"{_key_number(lo)}-{_key_number(hi)}"), bucket))
    if p.get("keyed", False):
        return {"buckets": dict(buckets)}
    return {"buckets": [{"key": k, **b} for k, b in buckets]}


def _agg_missing(p, docs):
    _only(p, {"field"}, "missing")
    return {"doc_count": sum(1 for v in docs.values(p["field"]) if not v)}


def _agg_filters(p, docs):
    _only(p, {"filters", "other_bucket", "other_bucket_key", "keyed"}, "filters")
    filters = p["filters"]
    other = p.get("other_bucket", False) or "other_bucket_key" in p
    named = isinstance(filters, dict)
    items = list(filters.items()) if named else [(None, f) for f in filters]
    matched = [_query(q, docs) for _, q in items]
    counts = [sum(m) for m in matched]
    if other:
        rest = sum(1 for i in range(len(docs.docs)) if not any(m[i] for m in matched))
        items.append((p.get("other_bucket_key", "_other_"), None))
        counts.append(rest)
    if not named:  # anonymous: an array in request order, the other bucket last
        return {"buckets": [{"doc_count": c} for c in counts]}
    if p.get("keyed", True):
        return {"buckets": {k: {"doc_count": c} for (k, _), c in zip(items, counts)}}
    return {"buckets": [{"key": k, "doc_count": c} for (k, _), c in zip(items, counts)]}


def _agg_filter(p, docs):
    return {"doc_count": sum(_query(p, docs))}


def _agg_extended_stats(p, docs):
    _only(p, {"field", "sigma"}, "extended_stats")
    xs = [x for v in docs.values(p["field"]) for x in v]
    n, sigma = len(xs), float(p.get("sigma", 2.0))
    if n == 0:
        out = dict.fromkeys(("min", "max", "avg", "sum_of_squares", "variance", "variance_population",
                             "variance_sampling", "std_deviation", "std_deviation_population",
                             "std_deviation_sampling"))
        out.update(count=0, sum=0.0, std_deviation_bounds=dict.fromkeys(
            ("upper", "lower", "upper_population", "lower_population", "upper_sampling", "lower_sampling")))
        return out
    s, ss = math.fsum(xs), math.fsum(x * x for x in xs)
    avg = s / n
    # From the sums, as the reference's numbers show: population variance, clamped at 0
    var_pop = max(0.0, (ss - s * s / n) / n)
    var_samp = max(0.0, (ss - s * s / n) / (n - 1)) if n > 1 else None  # n = 1: not modelled
    std_pop = math.sqrt(var_pop)
    std_samp = math.sqrt(var_samp) if var_samp is not None else None
    return {
        "count": n, "min": min(xs), "max": max(xs), "avg": avg, "sum": s, "sum_of_squares": ss,
        "variance": var_pop, "variance_population": var_pop, "variance_sampling": var_samp,
        "std_deviation": std_pop, "std_deviation_population": std_pop, "std_deviation_sampling": std_samp,
        "std_deviation_bounds": {
            "upper": avg + sigma * std_pop, "lower": avg - sigma * std_pop,
            "upper_population": avg + sigma * std_pop, "lower_population": avg - sigma * std_pop,
            "upper_sampling": None if std_samp is None else avg + sigma * std_samp,
            "lower_sampling": None if std_samp is None else avg - sigma * std_samp,
        },
    }


def _agg_max(p, docs):
    _only(p, {"field"}, "max")
    xs = [x for v in docs.values(p["field"]) for x in v]
    return {"value": float(max(xs)) if xs else None}


AGGREGATIONS = {"range": _agg_range, "missing": _agg_missing, "filters": _agg_filters, "filter": _agg_filter,
                "extended_stats": _agg_extended_stats, "max": _agg_max}


def _aggregations(spec, docs):
    out = {}
    for name, agg in spec.items():
        if re.search(r"[\[\]>]", name):
            raise StandInError(f"invalid aggregation name [{name}]")
        kind, params = _one(agg, f"aggregation {name}")  # no sub-aggregations, no meta
        if kind not in AGGREGATIONS:
            raise StandInError(f"aggregation [{kind}] not modelled by the stand-in")
        out[name] = AGGREGATIONS[kind](params, docs)
    return out


def stand_in_elasticsearch_search(body, events, mapping):
    """A stand-in for Elasticsearch's ``_search`` (NOT Elasticsearch): evaluates the request
    body's query and aggregations on the raw events in Python, with the semantics of the
    Elasticsearch reference. Only ``size: 0`` requests: it returns no hits."""
    _only(body, {"size", "track_total_hits", "timeout", "query", "aggs", "aggregations"}, "search")
    if body.get("size") != 0:
        raise StandInError("the stand-in answers size: 0 requests only")
    if "timeout" in body and not re.fullmatch(r"\d+(ms|s|m)", str(body["timeout"])):
        raise StandInError(f"timeout {body['timeout']!r} is not a time value")
    docs = _Docs(list(events), mapping)
    if "query" in body:
        docs = docs.subset(_query(body["query"], docs))
    n = len(docs.docs)
    track = body.get("track_total_hits", 10000)  # default: counts exactly up to 10,000
    hits = {"max_score": None, "hits": []}
    if track is True or (track is not False and n <= track):
        hits["total"] = {"value": n, "relation": "eq"}
    elif track is not False:
        hits["total"] = {"value": track, "relation": "gte"}
    response = {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": hits}
    aggs = body.get("aggs", body.get("aggregations"))
    if aggs:
        response["aggregations"] = _aggregations(aggs, docs)
    return response


MODES = ("stand_in", "http_500", "slow", "timed_out", "partial", "not_json")


class ElasticsearchSearchStandIn(StandInHTTPServer):
    """Serves ``POST /<index>/_search`` on 127.0.0.1 with ``stand_in_elasticsearch_search`` over
    ``events``, or with a failure (``mode``, settable at any time): http_500, slow (answers after
    3 s, or at close), timed_out, partial, not_json. ``auth``: the ``Authorization`` header value
    required (401 otherwise); ``tls``: ``(certificate, key)`` files to serve HTTPS.

    ``bodies`` and ``queries`` hold each request's decoded body and query parameters."""

    def __init__(self, events, mapping, index: str = INDEX, auth: str | None = None,
                 tls: tuple[str, str] | None = None):
        self.events, self.mapping, self.index, self.auth = events, mapping, index, auth
        self.mode = "stand_in"
        self.bodies: list[dict] = []
        self.queries: list[dict] = []
        self.release = threading.Event()
        super().__init__(self.respond_search, product="Elasticsearch", tls=tls)

    def respond_search(self, req: dict[str, Any]) -> tuple[int, Any]:
        body = json.loads(req["raw"]) if req["raw"] else None
        self.bodies.append(body)
        self.queries.append(urllib.parse.parse_qs(req["query"]))
        if req["method"] != "POST" or req["path"] != f"/{self.index}/_search":
            return 404, {"error": {"type": "index_not_found_exception", "reason": req["path"]}, "status": 404}
        if self.auth and req["headers"].get("authorization") != self.auth:
            return 401, {"error": {"type": "security_exception", "reason": "unable to authenticate user"},
                         "status": 401}
        mode = self.mode
        assert mode in MODES, mode
        if mode == "http_500":
            return 500, {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"},
                         "status": 500}
        if mode == "slow":
            self.release.wait(3.0)
            return 200, {"took": 3000}
        if mode == "not_json":
            return 200, b"<html>proxy error</html>"
        try:
            response = stand_in_elasticsearch_search(body, self.events, self.mapping)
        except StandInError as e:
            return 400, {"error": {"type": "parsing_exception", "reason": str(e)}, "status": 400}
        if mode == "timed_out":
            response["timed_out"] = True
        if mode == "partial":
            response["_shards"].update(successful=0, failed=1)
        return 200, response

    def close(self) -> None:
        self.release.set()  # a "slow" answer still waiting goes out now
        super().close()


# == the setup stand-in ==========================================================================


def basic_auth(password: str, user: str = "elastic") -> str:
    """The ``Authorization`` header value of Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _example(endpoint: str, name: str) -> Any:
    return ES_API["endpoints"][endpoint]["examples"][name]["value"]


class ElasticsearchSetupStandIn(StandInHTTPServer):
    """Answers the setup job's Elasticsearch requests with the reference's recorded bodies.

    ``not_ready``: how many health checks answer "red" first; ``failures``: per path, the statuses
    to answer before the real answer (transient errors the job must retry)."""

    def __init__(self, password: str, not_ready: int = 0, failures: dict[str, list[int]] | None = None):
        self.password, self.not_ready = password, not_ready
        self.failures = failures or {}
        self.roles: set[str] = set()
        self.users: set[str] = set()
        self.streams: set[str] = set()
        super().__init__(self.respond_setup, product="Elasticsearch")

    def respond_setup(self, req: dict[str, Any]) -> tuple[int, Any]:
        if req["headers"].get("authorization") != basic_auth(self.password):
            e = ES_API["recorded_errors"]["authentication_failed"]
            return e["status"], e["body"]
        path, method = req["path"], req["method"]
        if self.failures.get(path):
            return self.failures[path].pop(0), {"error": {"type": "stand_in_injected", "reason": "try again"},
                                                "status": 503}
        body = json.loads(req["raw"]) if req["raw"] else None
        eps = ES_API["endpoints"]
        if method == "GET" and path == "/_cluster/health":
            health = dict(_example("cluster.health", "ClusterHealthResponseExample1.yaml"))
            if self.not_ready:
                self.not_ready -= 1
                return 408, {**health, "status": "red", "timed_out": True}  # documented 408 exception
            return 200, health
        if m := re.fullmatch(r"/_security/user/([^/]+)/_password", path):
            assert set(body) == {"password"}
            return 200, eps["security.change_password"]["response_from_type"]
        if m := re.fullmatch(r"/_security/role/([^/]+)", path):
            created = m.group(1) not in self.roles
            self.roles.add(m.group(1))
            return 200, {"role": {"created": created}}  # SecurityPutRoleResponseExample1 shape
        if m := re.fullmatch(r"/_security/user/([^/]+)", path):
            created = m.group(1) not in self.users
            self.users.add(m.group(1))
            return 200, {"created": created}  # SecurityPutUserResponseExample1 shape
        if path.startswith("/_ilm/policy/"):
            return 200, _example("ilm.put_lifecycle", "PutLifecycleResponseExample1.yaml")
        if path.startswith("/_index_template/"):
            return 200, eps["indices.put_index_template"]["response_from_type"]
        if m := re.fullmatch(r"/_data_stream/([^/]+)", path):
            if m.group(1) in self.streams:
                e = ES_API["recorded_errors"]["data_stream_already_exists"]
                return e["status"], e["body"]
            self.streams.add(m.group(1))
            return 200, eps["indices.create_data_stream"]["response_from_type"]
        if path.endswith("/_mapping"):
            return 200, eps["indices.put_mapping"]["response_from_type"]
        return 404, {"error": {"type": "stand_in_unknown_route", "reason": f"{method} {path}"}, "status": 404}
