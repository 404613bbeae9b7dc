"""Windows from Elasticsearch: one aggregation search per model version and window.

With ``source = elasticsearch`` the exporter tails no file. For each model version and window it
sends one ``_search`` (``size: 0``) over the indexed prediction events (``docs/events.md``) whose
aggregations are the reference profile's own bins, and turns the answer into exactly what
``windows.Ring.window`` returns (the file source's answer): the count vector in the ``Reference``
layout and the prediction's moments ``{count, mean, std, min, max}``. ``Exporter._window_results``
then runs unchanged.

The request, per binned quantity of the reference (each input feature, ``_prediction``,
``_predicted_class``), in the reference's slot order ``i``:

- numeric: ``bins_i`` is a ``range`` aggregation whose ranges are the profile's bins,
  ``{"to": e0}``, ``{"from": e[k-1], "to": e[k]}``, ``{"from": e[-1]}``; Elasticsearch includes
  ``from`` and excludes ``to``, which is the profile's ``[e[k-1], e[k])``. The ranges are keyed
  ``"0" .. "m"`` (bin index) and the edges are sent as Python's shortest round-trip float text,
  so Elasticsearch compares against the very doubles of ``reference.json``; the answer echoes them
  and is checked.
- categorical: ``bins_i`` is a ``filters`` aggregation with anonymous filters, answered in request
  order: one ``term`` per category, then "unseen" = has a value (``exists``) and is none of the
  categories. Every filter is a query counted on every shard, so the counts are exact however many
  distinct values the field holds (a ``terms`` aggregation returns the top terms of each shard and
  is exact only when all of them fit in its ``shard_size``). An ``other_bucket`` would also collect
  the documents without a value, so "unseen" would be a difference of two counts; the explicit
  filter says what it counts.
- ``missing_i``: a ``missing`` aggregation, documents without a value (null or absent).
- ``prediction_stats``: ``extended_stats`` of ``prediction.value``: exact count, mean, min and max;
  ``std_deviation_population`` is the population standard deviation, as the file source's.
- ``newest``: ``max`` of ``@timestamp``, for the exporter's lag metric.

The window is the file source's: whole slices, ``[start, end)`` with ``start`` the first slice of
the window and ``end`` the end of the current slice, in epoch milliseconds. Elasticsearch ``date``
fields keep milliseconds (truncated); the bounds are whole milliseconds, so truncation never moves
an event across a bound.

``track_total_hits`` makes the hit count exact: each quantity's bins plus its missing count must
add up to it (a multi-valued field, for instance, would not), else the window is refused as
"inconsistent". A search that failed, timed out, or answered partial or malformed results leaves
its window absent and is counted by kind (``errors``); it never raises out of ``window``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily

from mlpulse.durations import parse_duration
from mlpulse.events import EVENT_SCORED
from mlpulse.exporter.config import ConfigError
from mlpulse.exporter.windows import PREDICTED_CLASS, PREDICTION, Reference, Slot

log = logging.getLogger(__name__)

ERROR_KINDS = ("timeout", "connection", "http", "partial", "response", "inconsistent")
NEWEST = "newest"
PREDICTION_STATS = "prediction_stats"
# The HTTP client waits this many times the search timeout, so Elasticsearch's own timeout answer
# normally arrives first; a connection that hangs is cut all the same.
HTTP_TIMEOUT_FACTOR = 2.0


class SearchError(Exception):
    """A search whose answer cannot give a window; ``kind`` is one of ``ERROR_KINDS``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def field_of(slot_name: str) -> str:
    """The indexed field of a binned quantity (``docs/events.md``)."""
    if slot_name == PREDICTION:
        return "prediction.value"
    if slot_name == PREDICTED_CLASS:
        return "prediction.class"
    return f"inputs.{slot_name}"


def bins_name(index: int) -> str:
    return f"bins_{index}"


def missing_name(index: int) -> str:
    return f"missing_{index}"


def window_bounds(now: float, slice_seconds: float, n_slices: int) -> tuple[int, int]:
    """``[start, end)`` in epoch milliseconds of the window of ``n_slices`` slices ending with the
    slice holding ``now``: the slices ``Ring.window`` sums."""
    now_slice = math.floor(now / slice_seconds)
    start = (now_slice - n_slices + 1) * slice_seconds
    end = (now_slice + 1) * slice_seconds
    return round(start * 1000), round(end * 1000)


def numeric_bins(slot: Slot) -> dict[str, Any]:
    """The aggregation counting a numeric slot's bins: a keyed ``range`` over the profile's edges."""
    field = field_of(slot.name)
    edges = [float(e) for e in slot.edges]
    if not edges:  # a feature training never saw a value of: one bin, "has a value"
        return {"filter": {"exists": {"field": field}}}
    ranges: list[dict[str, Any]] = [{"key": "0", "to": edges[0]}]
    ranges += [{"key": str(k), "from": edges[k - 1], "to": edges[k]} for k in range(1, len(edges))]
    ranges.append({"key": str(len(edges)), "from": edges[-1]})
    return {"range": {"field": field, "keyed": True, "ranges": ranges}}


def categorical_bins(slot: Slot) -> dict[str, Any]:
    """The aggregation counting a categorical slot's bins: anonymous ``filters``, one per category
    then "unseen"."""
    field = field_of(slot.name)
    categories = sorted(slot.lookup, key=slot.lookup.__getitem__)  # bin order
    filters: list[dict[str, Any]] = [{"term": {field: c}} for c in categories]
    filters.append({"bool": {"filter": [{"exists": {"field": field}}],
                             "must_not": [{"terms": {field: categories}}]}})
    return {"filters": {"filters": filters}}


def search_body(ref: Reference, start_ms: int, end_ms: int, timeout: float | None = None) -> dict[str, Any]:
    """The one search request body for ``ref``'s scored events in ``[start_ms, end_ms)``."""
    aggs: dict[str, Any] = {}
    for i, slot in enumerate(ref.slots.values()):
        aggs[bins_name(i)] = numeric_bins(slot) if slot.kind == "numeric" else categorical_bins(slot)
        aggs[missing_name(i)] = {"missing": {"field": field_of(slot.name)}}
    aggs[PREDICTION_STATS] = {"extended_stats": {"field": field_of(PREDICTION)}}
    aggs[NEWEST] = {"max": {"field": "@timestamp"}}
    body: dict[str, Any] = {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [
            {"term": {"event": EVENT_SCORED}},
            {"term": {"model.name": ref.name}},
            {"term": {"model.version": ref.version}},
            {"range": {"@timestamp": {"gte": start_ms, "lt": end_ms, "format": "epoch_millis"}}},
        ]}},
        "aggs": aggs,
    }
    if timeout is not None:
        body["timeout"] = f"{max(1, round(timeout * 1000))}ms"
    return body


# -- the answer -------------------------------------------------------------------------------


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SearchError("response", f"{what}: {value!r} is not a document count")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchError("response", f"{what}: {value!r} is not a finite number")
    return float(value)


def check_complete(response: dict[str, Any]) -> int:
    """Raise unless the answer covers every shard in time; return the exact hit count."""
    if not isinstance(response, dict):
        raise SearchError("response", "the answer is not a JSON object")
    if response.get("timed_out"):
        raise SearchError("timeout", "Elasticsearch answered timed_out: partial results")
    shards = response.get("_shards") or {}
    if shards.get("failed"):
        raise SearchError("partial", f"{shards.get('failed')} of {shards.get('total')} shards failed")
    total = (response.get("hits") or {}).get("total")
    if isinstance(total, dict):
        if total.get("relation") != "eq":
            raise SearchError("inconsistent", f"hit count is a lower bound ({total}); track_total_hits ignored?")
        total = total.get("value")
    return _count(total, "hits.total")


def range_counts(agg: dict[str, Any], edges: list[float] | tuple[float, ...]) -> list[int]:
    """Bin counts of a keyed ``range`` aggregation built by ``search_body`` (keys "0".."m"), each
    bucket checked to echo the edges that were sent."""
    buckets = agg["buckets"]
    if not isinstance(buckets, dict) or len(buckets) != len(edges) + 1:
        raise SearchError("response", f"range aggregation has {len(buckets)} buckets, expected {len(edges) + 1}")
    out = []
    for k in range(len(edges) + 1):
        b = buckets[str(k)]
        want_from = edges[k - 1] if k > 0 else None
        want_to = edges[k] if k < len(edges) else None
        if b.get("from") != want_from or b.get("to") != want_to:
            raise SearchError("response", f"range bucket {k} is [{b.get('from')}, {b.get('to')}), "
                              f"expected [{want_from}, {want_to})")
        out.append(_count(b["doc_count"], f"range bucket {k}"))
    return out


def filters_counts(agg: dict[str, Any], n: int) -> list[int]:
    """Bucket counts of an anonymous ``filters`` aggregation, in request order."""
    buckets = agg["buckets"]
    if not isinstance(buckets, list) or len(buckets) != n:
        raise SearchError("response", f"filters aggregation has {len(buckets)} buckets, expected {n}")
    return [_count(b["doc_count"], "filters bucket") for b in buckets]


def moments(stats: dict[str, Any]) -> dict[str, float]:
    """``Ring.window``'s moments from an ``extended_stats`` answer: population std."""
    n = _count(stats["count"], "extended_stats count")
    if n == 0:
        return {"count": 0.0}
    std = stats.get("std_deviation_population", stats.get("std_deviation"))
    return {"count": float(n), "mean": _number(stats["avg"], "avg"), "std": _number(std, "std_deviation"),
            "min": _number(stats["min"], "min"), "max": _number(stats["max"], "max")}


def parse_response(ref: Reference, response: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
    """The (count vector, moments) of ``Ring.window`` from the answer to ``search_body(ref, ...)``."""
    total = check_complete(response)
    try:
        aggs = response["aggregations"]
        counts = np.zeros(ref.width, dtype=np.int64)
        for i, slot in enumerate(ref.slots.values()):
            agg = aggs[bins_name(i)]
            if slot.kind == "categorical":
                values = filters_counts(agg, slot.nbins)
            elif slot.edges:
                values = range_counts(agg, slot.edges)
            else:
                values = [_count(agg["doc_count"], "exists filter")]
            missing = _count(aggs[missing_name(i)]["doc_count"], "missing")
            if sum(values) + missing != total:
                raise SearchError("inconsistent", f"{slot.name}: {sum(values)} binned + {missing} missing values "
                                  f"in {total} events (a multi-valued or re-mapped field?)")
            counts[slot.offset: slot.offset + slot.nbins] = values
            counts[slot.missing] = missing
        stats = moments(aggs[PREDICTION_STATS])
    except (KeyError, TypeError, AttributeError) as e:
        raise SearchError("response", f"unexpected answer: {type(e).__name__} {e}") from None
    pred = ref.slots[PREDICTION]
    if stats["count"] != counts[pred.offset: pred.offset + pred.nbins].sum():
        raise SearchError("inconsistent", f"extended_stats counted {stats['count']:.0f} predictions, "
                          f"the bins {counts[pred.offset: pred.offset + pred.nbins].sum()}")
    return counts, stats


def newest_timestamp(response: dict[str, Any]) -> float | None:
    """Unix seconds of the newest event the search matched, if any."""
    value = ((response.get("aggregations") or {}).get(NEWEST) or {}).get("value")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value / 1000.0
    return None


# -- transport --------------------------------------------------------------------------------


class HttpTransport:
    """POST ``<url>/<index>/_search`` with the standard library: the exporter's only dependency
    for Elasticsearch. Basic authentication if a username is given; TLS verified against the
    system's CAs or ``ca_file``; environment proxies are not used."""

    def __init__(self, url: str, username: str = "", password: str = "", ca_file: str = "",
                 timeout: float = 10.0):
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if urllib.parse.urlsplit(self.base).scheme == "https":
            context = ssl.create_default_context(cafile=ca_file or None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        # Partial results (a shard failed or timed out) are an error, never a window.
        url = f"{self.base}/{urllib.parse.quote(index, safe=',*')}/_search?allow_partial_search_results=false"
        data = json.dumps(body, allow_nan=False).encode()
        request = urllib.request.Request(url, data=data, headers=self.headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout * HTTP_TIMEOUT_FACTOR) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise SearchError("http", f"HTTP {e.code}: {_error_reason(e)}") from None
        except urllib.error.URLError as e:
            kind = "timeout" if isinstance(e.reason, TimeoutError) else "connection"
            raise SearchError(kind, f"{url}: {e.reason}") from None
        except TimeoutError:
            raise SearchError("timeout", f"{url}: no answer within {self.timeout * HTTP_TIMEOUT_FACTOR:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            raise SearchError("connection", f"{url}: {type(e).__name__} {e}") from None
        try:
            return json.loads(payload)
        except ValueError:
            raise SearchError("response", f"{url}: the answer is not JSON") from None

    def close(self) -> None:  # one connection per request: nothing held open
        pass


def _error_reason(e: urllib.error.HTTPError) -> str:
    """Elasticsearch's error type and reason from an error answer, else the HTTP reason."""
    try:
        error = json.loads(e.read(65536)).get("error")
        if isinstance(error, dict):
            return f"{error.get('type')}: {error.get('reason')}"
        if error:
            return str(error)
    except (ValueError, OSError, AttributeError):
        pass
    return str(e.reason)


# -- the source -------------------------------------------------------------------------------


class ElasticsearchSource:
    """Answers the exporter's windows with one search each; counts searches and failures."""

    def __init__(self, index: str, transport: Any, slice_seconds: float, timeout: float | None = None,
                 description: str = ""):
        self.index = index
        self.slice_seconds = slice_seconds
        self.description = description or f"searching index {index}"
        self.transport = transport  # anything with search(index, body) -> dict, raising SearchError
        self.timeout = timeout
        self.searches = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.newest_event = 0.0  # Unix seconds of the newest event any search matched

    @classmethod
    def from_config(cls, config: Any, slice_seconds: float) -> ElasticsearchSource:
        timeout = parse_duration(config.elasticsearch_timeout)
        username, password = config.elasticsearch_credentials()
        if username and urllib.parse.urlsplit(config.elasticsearch_url).scheme == "http":
            log.warning("elasticsearch_url is plain http: the password crosses the network in clear text")
        try:
            transport = HttpTransport(config.elasticsearch_url, username, password, config.elasticsearch_ca_file,
                                      timeout=timeout)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"elasticsearch_ca_file {config.elasticsearch_ca_file!r}: {e}") from None
        return cls(config.elasticsearch_index, transport, slice_seconds, timeout=timeout,
                   description=f"searching {config.elasticsearch_url} index {config.elasticsearch_index}")

    def track(self, ref: Reference) -> None:
        pass  # every window is a fresh search: nothing to keep per model version

    def untrack(self, ref: Reference) -> None:
        pass

    def poll(self) -> int:
        return 0  # Elasticsearch is searched at evaluation

    def save_checkpoint(self) -> None:
        pass  # Elasticsearch keeps the events: a restart searches them again

    def window(self, ref: Reference, now: float, n_slices: int) -> tuple[np.ndarray, dict[str, float]] | None:
        """The window's (counts, moments), or None (counted in ``errors``) if the search failed."""
        start_ms, end_ms = window_bounds(now, self.slice_seconds, n_slices)
        self.searches += 1
        try:
            response = self.transport.search(self.index, search_body(ref, start_ms, end_ms, self.timeout))
            counts, stats = parse_response(ref, response)
        except SearchError as e:
            self.errors[e.kind] += 1
            log.warning("search for %s %s over [%d, %d) ms failed (%s): %s", ref.name, ref.version,
                        start_ms, end_ms, e.kind, e)
            return None
        except Exception:  # never let one answer stop the exporter
            self.errors["response"] += 1
            log.exception("search for %s %s: answer not understood", ref.name, ref.version)
            return None
        newest = newest_timestamp(response)
        if newest is not None:
            self.newest_event = max(self.newest_event, newest)
        return counts, stats

    def collect(self):
        yield CounterMetricFamily("mlpulse_exporter_elasticsearch_searches", "Window searches sent to Elasticsearch",
                                  value=self.searches)
        errors = CounterMetricFamily("mlpulse_exporter_elasticsearch_errors", "Window searches that gave no window "
                                     "(its series absent), by kind", labels=["kind"])
        for kind, n in self.errors.items():
            errors.add_metric([kind], n)
        yield errors

    def describe(self) -> str:
        return self.description

    def close(self) -> None:
        self.transport.close()
