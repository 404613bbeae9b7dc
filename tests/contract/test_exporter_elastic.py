"""The exporter's Elasticsearch source, against a stand-in for Elasticsearch.

Elasticsearch cannot run here. ``stand_in_elasticsearch_search`` (``tests/standins/elasticsearch.py``)
is NOT Elasticsearch: it is a plain-Python evaluation of a search request body over raw events,
written from the Elasticsearch reference for the queries and aggregations the exporter sends
(term, terms, range, exists, bool; range, missing, filters, extended_stats, max). It refuses
anything else, and it is itself checked here against the reference's own examples
(``tests/fixtures/elastic_source``, see its README). Indexing follows the mapping the exporter
documents as required: numbers with ``coerce: false`` and ``ignore_malformed: true`` (a string or
a boolean in a numeric field is not indexed, so it is missing), categories as ``keyword``,
``@timestamp`` as ``date`` (milliseconds).

The stand-in answers over HTTP on 127.0.0.1 (``ElasticsearchSearchStandIn``), so the exporter's
real transport, JSON encoding of the edges and error handling are exercised.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest

from mlpulse.bundle import load_bundle, load_reference
from mlpulse.exporter.config import ConfigError, ExporterConfig, load_config
from mlpulse.exporter.core import Exporter
from mlpulse.exporter.sources.elasticsearch import (
    ERROR_KINDS,
    ElasticsearchSource,
    SearchError,
    field_of,
    filters_counts,
    moments,
    numeric_bins,
    parse_response,
    range_counts,
    search_body,
    window_bounds,
)
from mlpulse.exporter.windows import PREDICTED_CLASS, PREDICTION, Reference, Slot
from model_service.data import SCHEMA, generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES
from tests.helpers import FIXTURES, samples, value
from tests.standins.elasticsearch import ElasticsearchSearchStandIn, mapping_for_schema, stand_in_elasticsearch_search

NOW = 1_800_000_000.0  # a fixed clock, slice-aligned like any whole number of 10 s
KEY = ("credit-default", "1.0.0")
ML = {"model": KEY[0], "version": KEY[1]}
INDEX = "logs-mlpulse.predictions-default"
SOURCE_FIXTURES = FIXTURES / "elastic_source"


# == events ======================================================================================


@pytest.fixture(scope="module")
def model(bundle_dir):
    return load_bundle(bundle_dir, trusted=TRUSTED_TYPES).model


def stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def make_events(model, n, seed, ts, scenario="baseline", version="1.0.0"):
    records = to_records(generate(n, seed=seed, scenario=scenario))
    proba = model.predict_proba(rows_for_model(records))[:, 0]  # classes_ sorted: "default" first
    return [{"event": "prediction", "@timestamp": stamp(ts), "model": {"name": KEY[0], "version": version},
             "inputs": r, "prediction": {"value": float(p), "class": "default" if p >= 0.5 else "no_default"}}
            for r, p in zip(records, proba)]


def edge_events(ref, template, ts):
    """Values exactly on every edge and just below it, unseen and empty categories, strings and
    booleans in numeric fields, null predictions: where a bin or a missing count is decided."""
    out = []

    def variant(inputs=None, prediction=None):
        e = copy.deepcopy(template)
        e["@timestamp"] = stamp(ts)
        e["inputs"].update(inputs or {})
        e["prediction"].update(prediction or {})
        out.append(e)

    for spec in SCHEMA.features:
        slot = ref.slots[spec.name]
        if spec.kind == "categorical":
            for v in ("zeppelin", "", None, "Single"):
                variant({spec.name: v})
            continue
        for e in slot.edges:
            if spec.dtype == "int":
                if float(e).is_integer():
                    variant({spec.name: int(e)})
                    variant({spec.name: int(e) - 1})
            else:
                variant({spec.name: e})
                variant({spec.name: math.nextafter(e, -math.inf)})
        variant({spec.name: "42"})  # a string where a number belongs: missing for both sources
        variant({spec.name: True})
    for e in ref.slots[PREDICTION].edges:
        variant(prediction={"value": e})
        variant(prediction={"value": math.nextafter(e, -math.inf)})
    variant(prediction={"value": None, "class": None})
    variant(prediction={"class": "maybe"})
    return out


def boundary_events(template, windows):
    """Events exactly on, and just either side of, every window's bounds (in Unix seconds)."""
    out = []
    for start, end in windows:
        for ts in (start, start + 0.0005, start - 0.0005, start - 0.001, end - 0.0005, end):
            e = copy.deepcopy(template)
            e["@timestamp"] = stamp(ts)
            out.append(e)
    return out


def exporter_files(bundle_dir, tmp_path, **kw):
    (tmp_path / "events").mkdir(parents=True, exist_ok=True)
    cfg = ExporterConfig(events=str(tmp_path / "events" / "*.jsonl"), bundles=str(bundle_dir), checkpoint="", **kw)
    cfg.validate()
    return Exporter(cfg, clock=lambda: NOW)


def exporter_es(bundle_dir, tmp_path, url, **kw):
    cfg = ExporterConfig(source="elasticsearch", elasticsearch_url=url, bundles=str(bundle_dir),
                         events=str(tmp_path / "no-such-dir" / "*.jsonl"), **kw)
    cfg.validate()  # events and checkpoint are not needed with this source
    return Exporter(cfg, clock=lambda: NOW)


def keyed(results):
    return {(metric, frozenset(labels.items())): v for metric, labels, v in results}


def scrape(exporter):
    return samples(generate_latest(exporter.registry()).decode())


@pytest.fixture(scope="module")
def traffic(bundle_dir, model):
    """Mixed traffic over 2 h: baseline, drifted and broken-feed events, edge values, window
    bounds, and events the search must leave out (other version, refused, other model)."""
    metadata, schema, output, profile = load_reference(bundle_dir)
    ref = Reference(metadata["name"], metadata["version"], schema, output, profile)
    assert (ref.name, ref.version) == KEY
    recent = make_events(model, 1200, seed=31, ts=NOW - 30)
    events = recent + make_events(model, 1200, seed=32, ts=NOW - 1800, scenario="drift")
    events += make_events(model, 900, seed=33, ts=NOW - 7200, scenario="missing")
    events += make_events(model, 50, seed=34, ts=NOW - 86_400 - 60)  # older than every window
    events += edge_events(ref, recent[0], NOW - 5)
    events += boundary_events(recent[1], [(s / 1000, e / 1000) for s, e in
                                          (window_bounds(NOW, 10.0, n) for n in (30, 360, 8640))])
    other = make_events(model, 40, seed=35, ts=NOW - 5, version="9.9.9")
    refused = [{**e, "event": "prediction.refused"} for e in make_events(model, 30, seed=36, ts=NOW - 5)]
    stranger = [{**e, "model": {"name": "another-model", "version": "1.0.0"}} for e in recent[:20]]
    return ref, events + other + refused + stranger


# == tests =======================================================================================


def test_same_statistics_as_the_file_source(bundle_dir, tmp_path, traffic):
    ref, events = traffic
    files = exporter_files(bundle_dir, tmp_path)
    files.source.ingest(events)
    files.evaluate(NOW)
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA)) as es:
        elastic = exporter_es(bundle_dir, tmp_path, es.url)
        elastic.evaluate(NOW)
        assert len(es.bodies) == 3, "one search per window"
        assert all(q == {"allow_partial_search_results": ["false"]} for q in es.queries)
        # The raw windows first: the exact count vector and the moments Ring.window gives.
        ring = files.source.rings[KEY]
        for n, body in zip((30, 360, 8640), es.bodies):
            want_counts, want_moments = ring.window(ring.slice_of(NOW), n)
            counts, got_moments = parse_response(ref, stand_in_elasticsearch_search(body, events,
                                                                                     mapping_for_schema(SCHEMA)))
            assert counts.tolist() == want_counts.tolist()
            assert got_moments.keys() == want_moments.keys()
            for k in want_moments:
                assert got_moments[k] == pytest.approx(want_moments[k], rel=1e-9, abs=1e-12), k
    # Then every series the exporter serves; the label-free quality estimate comes from the file
    # source only (docs/quality.md): from Elasticsearch its series are absent.
    want, got = keyed(files.results), keyed(elastic.results)
    assert not any(k[0].startswith("mlpulse_quality_") for k in got)
    want = {k: v for k, v in want.items() if not k[0].startswith("mlpulse_quality_")}
    assert got.keys() == want.keys()
    exact = {"mlpulse_drift_window_values", "mlpulse_window_predictions", "mlpulse_drift_detected",
             "mlpulse_drift_features_evaluated"}
    for k, v in want.items():
        if k[0] in exact:
            assert got[k] == v, k
        else:
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert {dict(lab)["window"] for _, lab in got} == {"5m", "1h", "24h"}
    assert value(scrape(elastic), "mlpulse_window_predictions", window="24h", **ML) == \
        value(scrape(files), "mlpulse_window_predictions", window="24h", **ML) > 3000
    # The lag metric has the newest matched event, to the millisecond Elasticsearch keeps.
    end = window_bounds(NOW, 10.0, 1)[1] / 1000
    stamps = [dt.datetime.fromisoformat(e["@timestamp"]).timestamp() for e in events
              if e["event"] == "prediction" and e["model"] == {"name": KEY[0], "version": KEY[1]}]
    newest = max(t for t in stamps if t < end)
    assert elastic.source.newest_event == pytest.approx(math.floor(newest * 1000) / 1000, abs=1e-6)
    m = scrape(elastic)
    assert value(m, "mlpulse_exporter_elasticsearch_searches_total") == 3
    assert value(m, "mlpulse_exporter_elasticsearch_errors_total") == 0
    assert not any(name.startswith("mlpulse_exporter_events") for name, _ in m), "no file metrics"


def test_edge_values_and_window_bounds_land_in_the_same_bins(bundle_dir, tmp_path, traffic):
    """The hard cases alone (a diluted difference could hide in the test above)."""
    ref, events = traffic
    template = events[0]
    hard = edge_events(ref, template, NOW - 5)
    hard += boundary_events(template, [(s / 1000, e / 1000) for s, e in (window_bounds(NOW, 10.0, 30),)])
    files = exporter_files(bundle_dir, tmp_path)
    files.source.ingest(hard)
    ring = files.source.rings[KEY]
    body = search_body(ref, *window_bounds(NOW, 10.0, 30))
    counts, got = parse_response(ref, stand_in_elasticsearch_search(json.loads(json.dumps(body)), hard,
                                                                     mapping_for_schema(SCHEMA)))
    want_counts, want = ring.window(ring.slice_of(NOW), 30)
    assert counts.tolist() == want_counts.tolist()
    assert got["count"] == want["count"] and got["min"] == want["min"] and got["max"] == want["max"]
    inside = len(hard) - 3  # start - 0.5 ms, start - 1 ms and the end are outside
    assert counts[ref.slots["age"].missing] + counts[ref.slots["age"].offset:][:ref.slots["age"].nbins].sum() == inside


def test_numeric_strings_need_coerce_false_in_the_template(bundle_dir, tmp_path, traffic):
    """Why docs/exporter.md asks for ``coerce: false``: with Elasticsearch's default coercion a
    numeric string is indexed as its number, where the file source counts it missing."""
    ref, events = traffic
    hard = edge_events(ref, events[0], NOW - 5)
    strings = sum(1 for e in hard if isinstance(e["inputs"]["income"], str))
    assert strings == 1
    files = exporter_files(bundle_dir, tmp_path)
    files.source.ingest(hard)
    ring = files.source.rings[KEY]
    want, _ = ring.window(ring.slice_of(NOW), 30)
    body = search_body(ref, *window_bounds(NOW, 10.0, 30))
    income = ref.slots["income"]
    strict, _ = parse_response(ref, stand_in_elasticsearch_search(body, hard, mapping_for_schema(SCHEMA)))
    assert strict.tolist() == want.tolist()
    coercing = {**mapping_for_schema(SCHEMA), "inputs.income": "double+coerce"}
    loose, _ = parse_response(ref, stand_in_elasticsearch_search(body, hard, coercing))
    assert loose[income.missing] == want[income.missing] - strings
    assert loose[income.offset: income.offset + income.nbins].sum() == \
        want[income.offset: income.offset + income.nbins].sum() + strings


def test_request_body_follows_the_aggregation_reference(traffic):
    ref, _ = traffic
    start, end = window_bounds(NOW, 10.0, 360)
    assert (start, end) == (round((NOW - 3590) * 1000), round((NOW + 10) * 1000))
    body = search_body(ref, start, end, timeout=10.0)
    wire = json.loads(json.dumps(body, allow_nan=False))
    assert wire == body
    assert body["size"] == 0 and body["track_total_hits"] is True and body["timeout"] == "10000ms"
    assert body["query"] == {"bool": {"filter": [
        {"term": {"event": "prediction"}},
        {"term": {"model.name": KEY[0]}},
        {"term": {"model.version": KEY[1]}},
        {"range": {"@timestamp": {"gte": start, "lt": end, "format": "epoch_millis"}}},
    ]}}
    reference = {name: json.loads((SOURCE_FIXTURES / f"{name}.json").read_text()) for name in
                 ("range", "missing", "filters", "extended_stats")}
    doc_range_keys = {k for ex in reference["range"]["examples"] for k in ex["request"]["aggs"]["price_ranges"]["range"]}
    doc_bound_keys = {k for ex in reference["range"]["examples"]
                      for r in ex["request"]["aggs"]["price_ranges"]["range"]["ranges"] for k in r}
    aggs = wire["aggs"]
    assert len(aggs) == 2 * len(ref.slots) + 2
    for i, (name, slot) in enumerate(ref.slots.items()):
        field = field_of(name)
        assert aggs[f"missing_{i}"] == {"missing": {"field": field}}
        bins = aggs[f"bins_{i}"]
        if slot.kind == "numeric":
            spec = bins["range"]
            assert set(spec) <= doc_range_keys and spec["field"] == field and spec["keyed"] is True
            ranges = spec["ranges"]
            assert all(set(r) <= doc_bound_keys for r in ranges)
            assert [r["key"] for r in ranges] == [str(k) for k in range(slot.nbins)]
            # contiguous: (-inf, e0), [e0, e1), ..., [e[-1], +inf), the very doubles of the profile
            assert "from" not in ranges[0] and "to" not in ranges[-1]
            assert [r["to"] for r in ranges[:-1]] == list(slot.edges) == [r["from"] for r in ranges[1:]]
            for r in ranges:
                for bound in ("from", "to"):
                    if bound in r:
                        assert float.hex(r[bound]) == float.hex(float(repr(r[bound])))
        else:
            filters = bins["filters"]["filters"]
            assert isinstance(filters, list) and len(filters) == slot.nbins  # anonymous: answered in order
            categories = sorted(slot.lookup, key=slot.lookup.get)
            assert filters[:-1] == [{"term": {field: c}} for c in categories]
            assert filters[-1] == {"bool": {"filter": [{"exists": {"field": field}}],
                                            "must_not": [{"terms": {field: categories}}]}}
    assert aggs["prediction_stats"] == {"extended_stats": {"field": "prediction.value"}}
    assert set(reference["extended_stats"]["examples"][0]["request"]["aggs"]["grades_stats"]["extended_stats"]) \
        == {"field"}
    assert set(ref.slots) == set(SCHEMA.names) | {PREDICTION, PREDICTED_CLASS}


@pytest.mark.parametrize("page", ["range", "missing", "filters", "extended_stats"])
def test_stand_in_answers_the_reference_examples(page):
    fixture = json.loads((SOURCE_FIXTURES / f"{page}.json").read_text())
    assert fixture["examples"]
    for example in fixture["examples"]:
        docs = fixture["documents"] + example.get("documents_added", [])
        body = {"size": 0, **example["request"]}
        response = stand_in_elasticsearch_search(body, docs, fixture["mapping"])
        assert response["aggregations"] == example["aggregations"], example["id"]


def test_parser_reads_the_documented_responses():
    ext = json.loads((SOURCE_FIXTURES / "extended_stats.json").read_text())["examples"][0]["aggregations"]["grades_stats"]
    assert moments(ext) == {"count": 2.0, "mean": 75.0, "std": 25.0, "min": 50.0, "max": 100.0}  # population std
    assert moments({"count": 0, "min": None, "max": None, "avg": None, "sum": 0.0}) == {"count": 0.0}
    anonymous = json.loads((SOURCE_FIXTURES / "filters.json").read_text())["examples"][1]["aggregations"]["messages"]
    assert filters_counts(anonymous, 2) == [1, 2]
    # The documented keyed range answer, keyed by bin index as the exporter asks
    documented = json.loads((SOURCE_FIXTURES / "range.json").read_text())["examples"][2]["aggregations"]["price_ranges"]
    by_index = {str(i): b for i, b in enumerate(documented["buckets"].values())}
    assert range_counts({"buckets": by_index}, [100.0, 200.0]) == [2, 2, 3]
    with pytest.raises(SearchError, match="expected"):
        range_counts({"buckets": by_index}, [100.0, 250.0])  # an answer for other edges is refused
    # The exporter's own range aggregation over the documented data gives the documented counts
    slot = Slot("price", "numeric", 0, 3, 3, edges=(100.0, 200.0))
    body = {"size": 0, "aggs": {"p": json.loads(json.dumps(numeric_bins(slot)))}}
    docs = [{"inputs": d} for d in json.loads((SOURCE_FIXTURES / "range.json").read_text())["documents"]]
    answer = stand_in_elasticsearch_search(body, docs, {"inputs.price": "double"})
    assert range_counts(answer["aggregations"]["p"], slot.edges) == [2, 2, 3]


def test_a_failed_search_leaves_its_window_absent_counts_it_and_the_exporter_keeps_going(bundle_dir, tmp_path,
                                                                                          traffic):
    _, events = traffic
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA)) as es:
        exp = exporter_es(bundle_dir, tmp_path, es.url)
        exp.evaluate(NOW)
        assert len(exp.results) > 100
        expected = dict.fromkeys(ERROR_KINDS, 0)
        for mode, kind in (("http_500", "http"), ("timed_out", "timeout"), ("partial", "partial"),
                           ("not_json", "response")):
            es.mode = mode
            exp.evaluate(NOW)  # never raises
            assert exp.results == [], f"{mode}: every window absent, never stale or zero"
            expected[kind] += 3
            assert exp.source.errors == expected, mode
        m = scrape(exp)
        assert value(m, "mlpulse_exporter_elasticsearch_errors_total", kind="http") == 3
        assert value(m, "mlpulse_exporter_elasticsearch_errors_total", kind="partial") == 3
        assert value(m, "mlpulse_exporter_elasticsearch_searches_total") == 15
        assert not any(name == "mlpulse_drift_score" for name, _ in m)
        es.mode = "stand_in"  # Elasticsearch is back: so are the windows
        exp.evaluate(NOW)
        assert len(exp.results) > 100 and exp.source.errors == expected
        assert exp.poll() == 0
        exp.save_checkpoint()
        exp.close()  # what __main__ does at shutdown


def test_a_search_that_hangs_is_cut_by_the_timeout(bundle_dir, tmp_path, traffic):
    _, events = traffic
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA)) as es:
        es.mode = "slow"  # answers after 3 s
        exp = exporter_es(bundle_dir, tmp_path, es.url, elasticsearch_timeout="200ms", windows="5m")
        started = time.monotonic()
        exp.evaluate(NOW)
        assert time.monotonic() - started < 2.5, "the HTTP client gives up after twice the search timeout"
        assert exp.results == [] and exp.source.errors["timeout"] == 1
        assert es.bodies[0]["timeout"] == "200ms"  # Elasticsearch's own time limit
        assert value(scrape(exp), "mlpulse_exporter_elasticsearch_errors_total", kind="timeout") == 1


def test_unreachable_elasticsearch_is_a_connection_error(bundle_dir, tmp_path):
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        exp = exporter_es(bundle_dir, tmp_path, f"http://127.0.0.1:{sock.getsockname()[1]}")
        exp.evaluate(NOW)
    assert exp.results == [] and exp.source.errors["connection"] == 3


def test_inconsistent_answers_are_refused(bundle_dir, tmp_path, traffic):
    """A multi-valued field puts one event in two bins: the counts no longer add up to the hits,
    and the window is refused rather than served wrong."""
    _, events = traffic
    odd = copy.deepcopy(events[0])
    odd["inputs"]["income"] = [20000.0, 900000.0]
    with ElasticsearchSearchStandIn(events + [odd], mapping_for_schema(SCHEMA)) as es:
        exp = exporter_es(bundle_dir, tmp_path, es.url)
        exp.evaluate(NOW)
    assert exp.source.errors["inconsistent"] == 3 and exp.results == []


def test_a_request_elasticsearch_would_refuse_is_an_http_error(bundle_dir, tmp_path, traffic, monkeypatch):
    _, events = traffic
    import mlpulse.exporter.sources.elasticsearch as es_module

    original = es_module.search_body
    monkeypatch.setattr(es_module, "search_body", lambda *a, **k: {**original(*a, **k), "size": 10})
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA)) as es:
        exp = exporter_es(bundle_dir, tmp_path, es.url)
        exp.evaluate(NOW)
    assert exp.source.errors["http"] == 3


def test_basic_authentication_and_secrets(bundle_dir, tmp_path, traffic):
    _, events = traffic
    token = "Basic " + base64.b64encode(b"mlpulse:s3cret pass").decode()
    base = ["--source", "elasticsearch", "--bundles", str(bundle_dir), "--events", str(tmp_path / "none" / "*.jsonl")]
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA), auth=token) as es:
        cfg = load_config(base + ["--elasticsearch-url", es.url, "--elasticsearch-username", "mlpulse"],
                          environ={"MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD": "s3cret pass"})
        assert "s3cret" not in repr(cfg)
        exp = Exporter(cfg, clock=lambda: NOW)
        exp.evaluate(NOW)
        assert exp.source.errors["http"] == 0 and exp.results
        secret = tmp_path / "es-password"
        secret.write_text("s3cret pass\n")
        cfg = load_config(base + ["--elasticsearch-url", es.url, "--elasticsearch-username", "mlpulse",
                                  "--elasticsearch-password-file", str(secret)], environ={})
        exp = Exporter(cfg, clock=lambda: NOW)
        exp.evaluate(NOW)
        assert exp.source.errors["http"] == 0 and exp.results
        secret.write_text("wrong\n")
        exp = Exporter(cfg, clock=lambda: NOW)
        exp.evaluate(NOW)
        assert exp.source.errors["http"] == 3 and exp.results == []  # 401: counted, absent


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_is_verified_against_the_ca_file(bundle_dir, tmp_path, traffic):
    _, events = traffic
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA), tls=(str(cert), str(key))) as es:
        assert es.url.startswith("https://")
        exp = exporter_es(bundle_dir, tmp_path, es.url, elasticsearch_ca_file=str(cert))
        exp.evaluate(NOW)
        assert sum(exp.source.errors.values()) == 0 and exp.results
        unverified = exporter_es(bundle_dir, tmp_path, es.url)  # the system's CAs do not know it
        unverified.evaluate(NOW)
        assert unverified.source.errors["connection"] == 3 and unverified.results == []
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="elasticsearch_ca_file"):
        exporter_es(bundle_dir, tmp_path, "https://127.0.0.1:9", elasticsearch_ca_file=str(bad))


def test_configuration_of_the_elasticsearch_source(bundle_dir, tmp_path):
    base = ["--source", "elasticsearch", "--bundles", str(bundle_dir)]
    url = ["--elasticsearch-url", "https://es.example:9200"]
    cfg = load_config(base + url, environ={})  # the default events directory need not exist
    assert cfg.elasticsearch_index == INDEX and cfg.elasticsearch_timeout == "10s"
    secret = tmp_path / "pw"
    secret.write_text("x")
    cases = [
        (base, {}, "elasticsearch_url"),
        (base + ["--elasticsearch-url", "es.example:9200"], {}, "elasticsearch_url"),
        (base + ["--elasticsearch-url", "https://u:p@es.example"], {}, "no credentials in the URL"),
        (base + url + ["--elasticsearch-username", "u"], {}, "has no password"),
        (base + url, {"MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD": "p"}, "without elasticsearch_username"),
        (base + url + ["--elasticsearch-username", "u", "--elasticsearch-password-file", str(secret)],
         {"MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD": "p"}, "not both"),
        (base + url + ["--elasticsearch-username", "u", "--elasticsearch-password-file", str(tmp_path / "nope")],
         {}, "cannot read"),
        (base + ["--elasticsearch-url", "http://es:9200", "--elasticsearch-ca-file", str(secret)], {}, "not https"),
        (base + url + ["--elasticsearch-ca-file", str(tmp_path / "nope.pem")], {}, "not a readable file"),
        (base + url + ["--elasticsearch-index", "a b"], {}, "elasticsearch_index"),
        (base + url + ["--elasticsearch-timeout", "0s"], {}, "elasticsearch_timeout"),
        (["--source", "kafka", "--bundles", str(bundle_dir)], {}, "source must be"),
    ]
    for argv, environ, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(argv, environ=environ)
    with pytest.raises(SystemExit):  # never a command-line argument
        load_config(base + url + ["--elasticsearch-password", "p"], environ={})
    toml = tmp_path / "exporter.toml"
    toml.write_text('source = "elasticsearch"\nelasticsearch_password = "p"\n')
    with pytest.raises(ConfigError, match="may not be in a file"):
        load_config(["--config", str(toml)], environ={})
    # the files source still requires its events directory
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--events", str(tmp_path / "nope" / "*.jsonl"), "--bundles", str(bundle_dir)], environ={})
    r = subprocess.run([sys.executable, "-m", "mlpulse", "exporter", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert "--elasticsearch-url" in r.stdout and "--elasticsearch-password " not in r.stdout
    assert "MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD" in r.stdout


def test_a_feature_without_edges_has_one_bin(bundle_dir, traffic):
    """A numeric feature training never saw a value of has no edges: one bin, "has a value"."""
    from mlpulse.exporter.windows import Ring

    _, events = traffic
    metadata, schema, output, profile = load_reference(bundle_dir)
    profile = copy.deepcopy(profile)
    profile["features"]["employment_years"].update(edges=[], bin_counts=[0])
    ref = Reference(metadata["name"], metadata["version"], schema, output, profile)
    assert ref.slots["employment_years"].nbins == 1
    ring = Ring(ref.width, 10.0, 31)
    start, end = window_bounds(NOW, 10.0, 30)
    for e in events:
        ts = dt.datetime.fromisoformat(e["@timestamp"]).timestamp()
        if (e["event"], e["model"]["name"], e["model"]["version"]) == ("prediction", *KEY) and \
                start / 1000 <= ts < end / 1000:
            positions: list[int] = []
            ref.bin_event(e["inputs"], e["prediction"]["value"], e["prediction"]["class"], positions)
            ring.add(ring.slice_of(ts), positions, [])
    body = search_body(ref, start, end)
    assert body["aggs"][f"bins_{list(ref.slots).index('employment_years')}"] == \
        {"filter": {"exists": {"field": "inputs.employment_years"}}}
    counts, _ = parse_response(ref, stand_in_elasticsearch_search(body, events, mapping_for_schema(SCHEMA)))
    assert counts.tolist() == ring.window(ring.slice_of(NOW), 30)[0].tolist()


def test_window_bounds_are_the_rings_slices():
    from mlpulse.exporter.windows import Ring

    ring = Ring(1, 10.0, 8641)
    for now in (NOW, NOW + 0.001, NOW + 9.999, 1_700_000_123.456789):
        for n in (1, 30, 360, 8640):
            start, end = window_bounds(now, 10.0, n)
            first = ring.slice_of(now) - n + 1
            assert (start, end) == (first * 10_000, (ring.slice_of(now) + 1) * 10_000)


@pytest.mark.slow
def test_the_cli_serves_windows_from_elasticsearch(bundle_dir, tmp_path, traffic):
    """``python -m mlpulse exporter --source elasticsearch`` starts without an events directory,
    searches, serves the results, and stops cleanly on SIGTERM."""
    _, events = traffic
    now_events = [{**e, "@timestamp": stamp(time.time() - 5)} for e in events[:300]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ElasticsearchSearchStandIn(now_events, mapping_for_schema(SCHEMA)) as es:
        proc = subprocess.Popen([sys.executable, "-m", "mlpulse", "exporter", "--source", "elasticsearch",
                                 "--elasticsearch-url", es.url, "--bundles", str(bundle_dir), "--port", str(port),
                                 "--events", str(tmp_path / "absent" / "*.jsonl"), "--evaluate-every", "1s",
                                 "--windows", "5m", "--min-count", "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            text = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                    if "mlpulse_drift_score" in text:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            m = samples(text)
            assert value(m, "mlpulse_window_predictions", window="5m", **ML) == 300
            assert value(m, "mlpulse_exporter_elasticsearch_errors_total") == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not (tmp_path / "absent").exists()


def test_counts_vector_dtype_matches_the_ring(traffic):
    ref, events = traffic
    body = search_body(ref, *window_bounds(NOW, 10.0, 30))
    counts, _ = parse_response(ref, stand_in_elasticsearch_search(body, events, mapping_for_schema(SCHEMA)))
    assert counts.dtype == np.int64 and counts.shape == (ref.width,)


def test_source_object_is_usable_alone(traffic):
    """The source can be driven without an Exporter: anything with search(index, body) -> dict."""
    ref, events = traffic

    class Direct:
        def search(self, index, body):
            assert index == "my-index"
            return stand_in_elasticsearch_search(body, events, mapping_for_schema(SCHEMA))

        def close(self):
            pass

    source = ElasticsearchSource("my-index", Direct(), 10.0, timeout=1.0)
    counts, stats = source.window(ref, NOW, 8640)
    assert stats["count"] == counts[ref.slots[PREDICTION].offset:][:ref.slots[PREDICTION].nbins].sum() > 3000
    assert source.searches == 1 and sum(source.errors.values()) == 0


def test_the_report_reads_elasticsearch_as_it_reads_the_files(bundle_dir, tmp_path, traffic):
    """``mlpulse report`` with the exporter's Elasticsearch source gives the report the event files give."""
    from mlpulse.report import build_report

    _, events = traffic
    path = tmp_path / "events" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    end = dt.datetime.fromtimestamp(NOW, dt.UTC)
    start = end - dt.timedelta(hours=1)
    from_files = build_report(bundle_dir, str(path.parent / "*.jsonl"), start, end, steps=4)
    with ElasticsearchSearchStandIn(events, mapping_for_schema(SCHEMA)) as es:
        from_es = build_report(bundle_dir, "unused", start, end, steps=4,
                               config=ExporterConfig(source="elasticsearch", elasticsearch_url=es.url))
    assert from_es.records == from_files.records > 0
    for a, b in zip(from_files.features, from_es.features, strict=True):
        assert a.name == b.name and a.detected == b.detected
        assert a.live == pytest.approx(b.live) and a.scores.keys() == b.scores.keys()
        for k in a.scores:
            assert a.scores[k] == pytest.approx(b.scores[k], rel=1e-9, abs=1e-12), (a.name, k)
        assert a.over_time == pytest.approx(b.over_time)
