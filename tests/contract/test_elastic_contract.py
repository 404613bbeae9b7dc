"""Contract tests of the Elasticsearch / Logstash / Kibana side (docs/elk.md), with no server.

- Events written by the real service validate against the generated index template's mapping.
- Every field the Kibana objects use is in the mapping; references between objects resolve.
- The Logstash pipeline, the roles, the setup job and the exporter agree on names and paths; no
  config file holds a literal password.
- The setup job's requests match the Elasticsearch and Kibana API references recorded in
  tests/fixtures/elastic/ (README.md there says where each fact comes from), and its executor is
  exercised against stand-ins for Elasticsearch and Kibana (tests/standins/, NOT the real servers,
  which cannot run here) that answer with those recorded responses.

The stack test against the real servers (Docker) is tests/stack/test_stack.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpulse.cli import main as mlpulse_main
from mlpulse.elastic import (
    DATA_STREAM,
    DATA_STREAM_PATTERN,
    EVENTS_PATH,
    ILM_POLICY,
    INDEX_TEMPLATE,
    INDEX_TEMPLATE_FILE,
    KIBANA_VIEWER_ROLE,
    READER_ROLE,
    READER_USER,
    SAVED_OBJECTS_FILE,
    VIEWER_USER,
    WRITER_ROLE,
    WRITER_USER,
)
from mlpulse.elastic import kibana as kb
from mlpulse.elastic.mapping import ModelSchema, mapped_fields, validate_document
from mlpulse.elastic.setup import (
    PASSWORD_VARIABLES,
    Artifacts,
    Executor,
    Passwords,
    Request,
    Settings,
    SetupError,
    WaitFor,
    build_plan,
    describe_plan,
    passwords_from_env,
    render_files,
)
from model_service.data import generate, to_records
from tests.helpers import FIXTURES, ROOT, read_events
from tests.standins.elasticsearch import ES_API, ElasticsearchSetupStandIn, basic_auth
from tests.standins.kibana import KIBANA_API, KibanaStandIn, multipart_file

LOGSTASH_REF = json.loads((FIXTURES / "elastic" / "logstash-reference.json").read_text())
PIPELINE = ROOT / "logstash" / "pipeline" / "mlpulse.conf"

# Test-only secrets, built at run time so no password-like literal sits in the repository.
PASSWORDS = Passwords(*(f"test-{who}-{os.getpid()}" for who in ("elastic", "kibana", "writer", "reader", "viewer")))
RECORDS = to_records(generate(20, seed=41))


@pytest.fixture(scope="module")
def models(bundle_dir) -> list[ModelSchema]:
    return [ModelSchema.from_bundle(bundle_dir)]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads((ROOT / INDEX_TEMPLATE_FILE).read_text())


@pytest.fixture(scope="module")
def mappings(template) -> dict[str, Any]:
    return template["template"]["mappings"]


@pytest.fixture(scope="module")
def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / SAVED_OBJECTS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return Artifacts.from_files(ROOT)


# =============================================================================================
# Generated artefacts


def test_committed_artifacts_are_what_generate_writes(models):
    files = render_files(models)
    for rel, content in files.items():
        assert (ROOT / rel).read_text() == content, f"{rel} is stale: run mlpulse generate elastic --bundle DIR"
    # No leftover role files from an older generation.
    for folder in ("elasticsearch/roles", "kibana/roles"):
        on_disk = {f"{folder}/{p.name}" for p in (ROOT / folder).glob("*.json")}
        assert on_disk == {rel for rel in files if rel.startswith(folder + "/")}


def test_generate_command_writes_and_checks(bundle_dir, tmp_path):
    generate = ["generate", "elastic", "--bundle", str(bundle_dir)]
    assert mlpulse_main([*generate, "--root", str(tmp_path)]) == 0
    assert (tmp_path / INDEX_TEMPLATE_FILE).read_bytes() == (ROOT / INDEX_TEMPLATE_FILE).read_bytes()
    assert mlpulse_main([*generate, "--root", str(ROOT), "--check"]) == 0
    (tmp_path / SAVED_OBJECTS_FILE).write_text("{}\n")
    assert mlpulse_main([*generate, "--root", str(tmp_path), "--check"]) == 1


# =============================================================================================
# The index template and its mapping


def test_template_is_a_data_stream_template_typed_from_the_schema(template, mappings, models):
    assert template["index_patterns"] == [DATA_STREAM] and template["data_stream"] == {}
    assert template["priority"] > 100  # above the built-in logs-*-* template
    settings = template["template"]["settings"]
    assert settings["index.lifecycle.name"] == ILM_POLICY
    assert mappings["dynamic"] == "strict"
    props = mappings["properties"]
    assert props["@timestamp"] == {"type": "date"}
    schema = models[0].schema
    for spec in schema.features:
        field = props["inputs"]["properties"][spec.name]
        expected = "keyword" if spec.kind == "categorical" else ("long" if spec.dtype == "int" else "double")
        assert field["type"] == expected, spec.name
    assert set(props["inputs"]["properties"]) == set(schema.names)
    classes = set(models[0].output.classes)
    assert set(props["prediction"]["properties"]["probabilities"]["properties"]) == classes
    assert {k: v["type"] for k, v in props["violations"]["properties"].items()} == {
        "feature": "keyword", "field": "keyword", "reason": "keyword"}
    assert props["raw_inputs"]["type"] == "match_only_text"
    # dynamic is false only where the bundle decides the keys; nowhere true.
    dynamics = {path: m["dynamic"] for path, m in _objects(mappings)}
    assert dynamics == {"": "strict", "inputs": False, "prediction.probabilities": False}


def _objects(mapping: dict[str, Any], prefix: str = ""):
    if "dynamic" in mapping:
        yield prefix, mapping
    for name, sub in mapping.get("properties", {}).items():
        yield from _objects(sub, f"{prefix}.{name}" if prefix else name)


def _field_parameters(mapping: dict[str, Any], prefix: str = ""):
    for name, field in mapping.get("properties", {}).items():
        path = f"{prefix}{name}"
        yield path, field
        yield from _field_parameters(field, path + ".")


def test_template_and_mapping_use_only_documented_parameters(template, mappings):
    endpoint = ES_API["endpoints"]["indices.put_index_template"]
    assert set(template) <= set(endpoint["body"])
    assert set(template["template"]) <= set(endpoint["template_keys"])
    known = ES_API["mapping_parameters"]
    assert set(mappings) <= set(known["_root"])
    for path, field in _field_parameters(mappings):
        kind = field.get("type", "object")
        assert kind in known, f"{path}: type {kind} not in the recorded reference"
        assert set(field) <= set(known[kind]), f"{path}: {set(field) - set(known[kind])} not a {kind} parameter"


def test_ilm_policy_and_roles_follow_the_reference(artifacts):
    ilm = ES_API["ilm"]
    policy = artifacts.ilm_policy["policy"]
    assert set(policy) <= set(ilm["Policy"])
    assert set(policy["phases"]) <= set(ilm["Phases"])
    for phase in policy["phases"].values():
        assert set(phase) <= set(ilm["Phase"]) and set(phase["actions"]) <= set(ilm["Actions"])
    assert set(policy["phases"]["hot"]["actions"]["rollover"]) <= set(ilm["RolloverAction"])
    assert "delete" in policy["phases"]["delete"]["actions"]
    writer, reader = artifacts.es_roles[WRITER_ROLE], artifacts.es_roles[READER_ROLE]
    assert writer["indices"] == [{"names": [DATA_STREAM], "privileges": ["create_doc", "auto_configure"]}]
    assert reader["indices"] == [{"names": [DATA_STREAM], "privileges": ["read", "view_index_metadata"]}]
    for role in (writer, reader):
        assert set(role["cluster"]) <= set(ES_API["enums"]["ClusterPrivilege"])
        assert role["cluster"] == ["monitor"]  # read-only cluster information, nothing more


# =============================================================================================
# Events of the real service against the mapping


@pytest.fixture
def service_events(client, config) -> list[dict[str, Any]]:
    def post(body, content_type="application/json", **headers):
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return client.post("/v1/predict", data=data, content_type=content_type, headers=headers)

    assert post(RECORDS[0], **{"X-Request-ID": "contract-1"}).status_code == 200
    assert post(RECORDS[1:6]).status_code == 200
    assert post(dict(RECORDS[6], income=None, employment_years=None, marital_status=None)).status_code == 200
    assert post(dict(RECORDS[7], age=130, loan_purpose="crypto")).status_code == 200  # scored and flagged
    assert post(dict(RECORDS[8], age="forty", favourite_colour="blue")).status_code == 422
    missing = dict(RECORDS[9])
    missing.pop("loan_amount")
    assert post([RECORDS[10], missing, RECORDS[11]]).status_code == 422
    nan = json.dumps(RECORDS[12]).replace(f'"interest_rate": {json.dumps(RECORDS[12]["interest_rate"])}',
                                          '"interest_rate": NaN')
    assert post(nan).status_code == 422
    assert post("{").status_code == 400
    assert post("{}", content_type="text/plain").status_code == 415
    assert post("[]").status_code == 422

    def feedback(body):
        return client.post("/v1/feedback", data=json.dumps(body), content_type="application/json")

    assert feedback({"request_id": "contract-1", "label": "default"}).status_code == 200
    assert feedback({"request_id": "contract-1", "label": "no_default"}).status_code == 200  # an update
    assert feedback([{"request_id": "contract-1", "label": "maybe"}, {"request_id": "nope", "label": 1}]) \
        .status_code == 422
    return read_events(config.events_dir)


def test_every_field_of_every_service_event_is_mapped_with_a_compatible_type(service_events, mappings):
    kinds = {e["event"] for e in service_events}
    assert kinds == {"prediction", "prediction.refused", "request.refused", "feedback", "feedback.refused"}
    seen = set()
    for event in service_events:
        problems = validate_document(event, mappings)
        assert problems == [], f"{event['event']}: {[str(p) for p in problems]}"
        seen |= _leaf_paths(event)
    # The events exercised every part of the contract.
    for path in ("inputs.age", "inputs.marital_status", "prediction.probabilities.default", "violations.reason",
                 "raw_inputs", "reason", "detail", "body_bytes", "latency_ms", "record_index", "batch_size",
                 "feedback.label", "feedback.previous_label", "feedback.predicted_at", "feedback.outcome"):
        assert path in seen, path


def test_documents_logstash_sends_validate_too(service_events, mappings):
    """What the pipeline sends is the decoded line with Logstash's @timestamp (emulated here: the
    pipeline itself needs a Logstash to run)."""
    for event in service_events:
        line = json.dumps(event)
        doc = _emulate_pipeline(line)
        assert validate_document(doc, mappings) == []
        assert {k: v for k, v in doc.items() if k != "@timestamp"} == {k: v for k, v in event.items()
                                                                       if k != "@timestamp"}
        assert doc["@timestamp"][:23] == event["@timestamp"][:23]


def _emulate_pipeline(line: str) -> dict[str, Any]:
    """The filter section of logstash/pipeline/mlpulse.conf, step by step, on one line."""
    decoded = json.loads(line)  # codec json, target [@metadata][event]
    doc: dict[str, Any] = {"@version": "1", "host": "logstash", "path": "/data/events/predictions.jsonl"}
    import datetime as dt
    stamp = dt.datetime.fromisoformat(decoded["@timestamp"]).astimezone(dt.UTC)  # date filter, ISO8601
    doc["@timestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    doc.update({k: v for k, v in decoded.items() if k != "@timestamp"})  # ruby: lift the fields
    for k in ("@version", "host", "path"):  # mutate remove_field
        doc.pop(k, None)
    return doc


def _leaf_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        out = set()
        for k, v in value.items():
            out |= _leaf_paths(v, f"{prefix}.{k}" if prefix else k)
        return out
    if isinstance(value, list):
        return set().union(*(_leaf_paths(v, prefix) for v in value)) if value else {prefix}
    return {prefix}


def test_validator_reports_what_elasticsearch_would_refuse_or_not_index(mappings):
    good = {"@timestamp": "2026-11-28T01:57:29.130503+00:00", "event": "prediction", "request_id": "r",
            "model": {"name": "m", "version": "1"}, "inputs": {"age": 40, "income": None},
            "violations": [{"feature": "age", "field": "age", "reason": "out_of_range"}]}
    assert validate_document(good, mappings) == []
    problems = {p.path: p.problem for p in validate_document({
        **good, "tags": ["_jsonparsefailure"], "@timestamp": "28/11/2026",
        "inputs": {"age": "forty", "shoe_size": 44, "income": 1.5, "loan_purpose": "x" * 300},
        "record_index": 1.5, "prediction": {"value": True, "probabilities": {"maybe": 0.5}},
        "violations": [{"feature": "age", "oops": 1}], "model": "m",
    }, mappings)}
    assert "dynamic: strict" in problems["tags"]
    assert "ISO 8601" in problems["@timestamp"]
    assert "not a number" in problems["inputs.age"]
    assert "dynamic: false" in problems["inputs.shoe_size"]
    assert "ignore_above" in problems["inputs.loan_purpose"]
    assert "truncated" in problems["record_index"]
    assert "not a number" in problems["prediction.value"]
    assert "dynamic: false" in problems["prediction.probabilities.maybe"]
    assert "dynamic: strict" in problems["violations[0].oops"]
    assert "object is mapped" in problems["model"]
    assert "inputs.income" not in problems


# =============================================================================================
# Kibana saved objects

_KQL_FIELD = re.compile(r"([A-Za-z_@][A-Za-z0-9_.@]*)\s*:")


def _kql_fields(query: str) -> set[str]:
    # Our queries are field:value clauses joined by and/or/not; quoted values hold no field names.
    return set(_KQL_FIELD.findall(re.sub(r'"[^"]*"', '""', query)))


def _fields_used(obj: dict[str, Any]) -> set[str]:
    attrs = obj["attributes"]
    used: set[str] = set()
    if obj["type"] == "index-pattern":
        used.add(attrs["timeFieldName"])
    source = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
    if source:
        used |= _kql_fields(json.loads(source)["query"]["query"])
    if obj["type"] == "search":
        used |= set(attrs["columns"]) | {field for field, _ in attrs["sort"]}
    if obj["type"] == "visualization":
        for agg in json.loads(attrs["visState"])["aggs"]:
            params = agg["params"]
            if "field" in params:
                used.add(params["field"])
            for f in params.get("filters", []):
                used |= _kql_fields(f["input"]["query"])
    return used


def test_every_field_the_kibana_objects_use_is_in_the_mapping(saved_objects, mappings):
    fields = mapped_fields(mappings)
    for obj in saved_objects:
        for field in _fields_used(obj):
            assert field in fields, f"{obj['type']} {obj['id']} uses {field!r}, which is not mapped"
            assert fields[field] != "object", f"{obj['id']} uses the object {field!r} as a field"


def test_kibana_objects_cover_the_issue(saved_objects, models):
    by_id = {o["id"]: o for o in saved_objects}
    assert len(by_id) == len(saved_objects), "duplicate ids"
    view = by_id[kb.DATA_VIEW_ID]
    assert view["attributes"]["title"] == DATA_STREAM_PATTERN and fnmatch.fnmatch(DATA_STREAM, DATA_STREAM_PATTERN)
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    violations = json.loads(by_id[kb.SEARCH_VIOLATIONS_ID]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert "violations.reason:*" in violations["query"]["query"] and "prediction.refused" in violations["query"]["query"]
    assert "request_id" in json.loads(by_id[kb.SEARCH_REQUEST_ID]["attributes"]["kibanaSavedObjectMeta"]
                                      ["searchSourceJSON"])["query"]["query"]
    histogram_fields = {json.loads(o["attributes"]["visState"])["aggs"][1]["params"].get("field")
                        for o in saved_objects if o["type"] == "visualization"}
    for spec in models[0].schema.features:
        assert f"inputs.{spec.name}" in histogram_fields, spec.name
    missing = by_id[kb._id("missing", "inputs")]
    labels = [f["label"] for f in json.loads(missing["attributes"]["visState"])["aggs"][1]["params"]["filters"]]
    assert sorted(labels) == sorted(models[0].schema.names)


def test_kibana_objects_follow_the_recorded_format(saved_objects):
    fmt = KIBANA_API["saved_objects"]
    by_key = {(o["type"], o["id"]) for o in saved_objects}
    for obj in saved_objects:
        assert obj["coreMigrationVersion"] == fmt["core_migration_version"]
        assert obj["typeMigrationVersion"] == fmt["type_migration_versions"][obj["type"]]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in by_key, f"{obj['id']} references a missing {ref}"
        if obj["type"] == "visualization":
            vis = json.loads(obj["attributes"]["visState"])
            assert vis["type"] in ("histogram", "table") and vis["title"] == obj["attributes"]["title"]
            for agg in vis["aggs"]:
                allowed = set(fmt["agg_params"][agg["type"]]) | set(fmt["base_agg_params"])
                assert set(agg["params"]) <= allowed, (obj["id"], agg["type"], set(agg["params"]) - allowed)
                assert agg["schema"] in fmt["agg_schemas"]
        if obj["type"] in ("visualization", "search"):
            source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert obj["references"] == [{"id": kb.DATA_VIEW_ID, "name": source["indexRefName"],
                                          "type": "index-pattern"}]
    dashboard = next(o for o in saved_objects if o["type"] == "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dashboard["references"]}
    assert len(panels) == len(refs) == len(saved_objects) - 3  # all but the data view, the request search, itself
    for p in panels:
        assert refs[f"{p['panelIndex']}:{p['panelRefName']}"]["type"] == p["type"]
        grid = p["gridData"]
        assert grid["i"] == p["panelIndex"] and grid["x"] + grid["w"] <= 48


def test_discover_url_opens_the_request_search():
    url = kb.discover_url("http://127.0.0.1:5601/", "req-1.a:b")
    assert url.startswith("http://127.0.0.1:5601/app/discover#/view/mlpulse-request?")
    assert "&_a=(query:(language:kuery,query:%27request_id:%22req-1.a:b%22%27))" in url
    with pytest.raises(ValueError):
        kb.discover_url("http://k", "bad id")


# =============================================================================================
# Logstash


def _tokens(text: str):
    pattern = re.compile(r"""\s+|\#[^\n]*|(?P<arrow>=>)|(?P<punct>[{}\[\],])|"(?P<dq>(?:\\.|[^"\\])*)"|'(?P<sq>(?:\\.|[^'\\])*)'|(?P<word>[^\s{}\[\],=#"']+)""")
    pos = 0
    while pos < len(text):
        m = pattern.match(text, pos)
        assert m, f"cannot tokenize Logstash config at {text[pos:pos + 40]!r}"
        pos = m.end()
        for kind in ("arrow", "punct", "dq", "sq", "word"):
            if m.group(kind) is not None:
                yield kind, m.group(kind)
                break


def parse_logstash_config(text: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The subset of the Logstash config language the pipeline uses (no conditionals):
    sections of plugins with ``name => value`` settings; values are strings, numbers, barewords,
    arrays, or a plugin (``codec => json { ... }``)."""
    toks = list(_tokens(text))
    i = 0

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        k, v = toks[i]
        assert k == kind and (value is None or v == value), f"expected {value or kind}, got {v!r}"
        i += 1
        return v

    def plugin_body() -> dict[str, Any]:
        nonlocal i
        expect("punct", "{")
        settings: dict[str, Any] = {}
        while toks[i] != ("punct", "}"):
            name = expect("word")
            expect("arrow")
            assert name not in settings, f"setting {name} given twice"
            settings[name] = value()
        expect("punct", "}")
        return settings

    def value() -> Any:
        nonlocal i
        kind, v = toks[i]
        if (kind, v) == ("punct", "["):
            i += 1
            items = []
            while toks[i] != ("punct", "]"):
                items.append(value())
                if toks[i] == ("punct", ","):
                    i += 1
            i += 1
            return items
        i += 1
        if kind == "word" and i < len(toks) and toks[i] == ("punct", "{"):
            return {"plugin": v, "settings": plugin_body()}
        if kind in ("dq", "sq"):
            return v.replace('\\"', '"')
        if kind == "word" and v in ("true", "false"):
            return v == "true"
        if kind == "word" and re.fullmatch(r"-?\d+(\.\d+)?", v):
            return float(v) if "." in v else int(v)
        return v

    sections: dict[str, list[tuple[str, dict[str, Any]]]] = {"input": [], "filter": [], "output": []}
    while i < len(toks):
        section = expect("word")
        assert section in sections, section
        expect("punct", "{")
        while toks[i] != ("punct", "}"):
            name = expect("word")
            sections[section].append((name, plugin_body()))
        expect("punct", "}")
    return sections


@pytest.fixture(scope="module")
def pipeline() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    return parse_logstash_config(PIPELINE.read_text())


def _plugin(pipeline, section: str, name: str) -> dict[str, Any]:
    found = [s for n, s in pipeline[section] if n == name]
    assert len(found) == 1, f"expected one {section} {name}"
    return found[0]


def test_logstash_pipeline_refers_to_the_shared_names(pipeline, artifacts):
    exporter = tomllib.loads((ROOT / "exporter" / "exporter.toml").read_text())
    file_input = _plugin(pipeline, "input", "file")
    assert file_input["path"] == [exporter["events"]] == [EVENTS_PATH]
    # In the data volume (path.data), directly: the file input touches the file at start and
    # does not create missing directories.
    settings = yaml.safe_load((ROOT / "logstash" / "config" / "logstash.yml").read_text())
    assert str(Path(file_input["sincedb_path"]).parent) == settings["path.data"]
    assert file_input["start_position"] == "beginning" and file_input["mode"] == "tail"
    codec = file_input["codec"]
    assert codec["plugin"] == "json" and codec["settings"]["ecs_compatibility"] == "disabled"
    target = codec["settings"]["target"]
    assert _plugin(pipeline, "filter", "date")["match"] == [f"{target}[@timestamp]", "ISO8601"]
    assert f'event.get("{target}")' in _plugin(pipeline, "filter", "ruby")["code"]
    assert _plugin(pipeline, "filter", "mutate")["remove_field"] == ["@version", "host", "path"]
    fingerprint = _plugin(pipeline, "filter", "fingerprint")
    assert fingerprint["source"] == [target] and fingerprint["target"].startswith("[@metadata]")

    out = _plugin(pipeline, "output", "elasticsearch")
    assert out["index"] == DATA_STREAM and out["action"] == "create"
    assert out["document_id"] == "%{" + fingerprint["target"] + "}"
    assert out["user"] == WRITER_USER
    assert out["password"] == "${LOGSTASH_WRITER_PASSWORD}"
    assert out["ssl_enabled"] is True and out["ssl_verification_mode"] == "full"
    assert out["ssl_certificate_authorities"] == ["/usr/share/logstash/config/certs/ca/ca.crt"]
    assert all(h.startswith("https://") for h in out["hosts"])
    assert out["manage_template"] is False and out["ilm_enabled"] is False
    # data_stream => true forbids document_id and index (logstash-output-elasticsearch); so: false.
    assert out["data_stream"] == "false"
    # The writer user gets exactly the writer role, which may create documents in that stream.
    plan = build_plan(artifacts, PASSWORDS)
    user = next(s for s in plan if isinstance(s, Request) and s.path == f"/_security/user/{WRITER_USER}")
    assert user.body["roles"] == [WRITER_ROLE] and user.body["password"] == PASSWORDS.writer
    assert DATA_STREAM in artifacts.es_roles[WRITER_ROLE]["indices"][0]["names"]


def test_logstash_options_exist_in_the_plugins(pipeline):
    plugins, common = LOGSTASH_REF["plugins"], LOGSTASH_REF["common_options"]
    for section, entries in pipeline.items():
        for name, settings in entries:
            known = set(plugins[f"{section}/{name}"]["options"]) | set(common[section])
            assert set(settings) <= known, f"{section} {name}: unknown {set(settings) - known}"
            for value in settings.values():
                if isinstance(value, dict) and "plugin" in value:  # a codec
                    codec_known = set(plugins[f"codec/{value['plugin']}"]["options"]) | set(common["codec"])
                    assert set(value["settings"]) <= codec_known


def test_logstash_settings_keep_events_through_an_outage():
    pipelines = yaml.safe_load((ROOT / "logstash" / "config" / "pipelines.yml").read_text())
    assert len(pipelines) == 1
    p = pipelines[0]
    assert set(p) <= set(LOGSTASH_REF["pipeline_settings"]), set(p) - set(LOGSTASH_REF["pipeline_settings"])
    assert p["path.config"] == "/usr/share/logstash/pipeline/" + PIPELINE.name
    assert p["queue.type"] == "persisted" and p["dead_letter_queue.enable"] is True
    assert p["pipeline.ecs_compatibility"] == "disabled"
    settings = yaml.safe_load((ROOT / "logstash" / "config" / "logstash.yml").read_text())
    assert settings["path.data"] == "/usr/share/logstash/data"


_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|encryption_?key|api_?key|token)")
_ASSIGNMENT = re.compile(r"""^\s*["']?(?P<key>[\w.@-]+)["']?\s*(?:=>|:|=)\s*(?P<value>.*?)\s*,?\s*$""")
_REFERENCE = re.compile(r"""^["']?(\$\{[A-Z0-9_]+(:\?[^}]*)?\}|\$\$?[A-Z0-9_]+)["']?$""")


def _config_files() -> list[Path]:
    patterns = ["logstash/**/*", "elasticsearch/**/*", "kibana/**/*", "exporter/**/*", "prometheus/**/*.yml",
                "alertmanager/**/*.yml", "docker-compose*.yml", "compose*.yml", ".env.example"]
    files = {p for pat in patterns for p in ROOT.glob(pat) if p.is_file()}
    return sorted(p for p in files if p.suffix != ".ndjson")


def _literal_secrets(text: str) -> list[tuple[int, str]]:
    """(line, key) of every secret-looking key given a literal value rather than a variable."""
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        m = _ASSIGNMENT.match(line.split(" #")[0])
        # A *_file / *_path key names a file holding the secret: the recommended way.
        if not m or not _SECRET_KEY.search(m.group("key")) or re.search(r"(?i)_(file|path)$", m.group("key")):
            continue
        value = m.group("value").strip()
        if value in ("", '""', "''", "null", "~") or _REFERENCE.match(value):
            continue
        found.append((n, m.group("key")))
    return found


def test_the_password_scan_tells_literals_from_references():
    text = "\n".join([
        'password => "${LOGSTASH_WRITER_PASSWORD}"', "elasticsearch.password: ${KIBANA_SYSTEM_PASSWORD}",
        "ELASTIC_PASSWORD=", "ELASTIC_PASSWORD: ${ELASTIC_PASSWORD:?set it in .env}", "smtp_auth_password_file: /run/x",
        "# password: in a comment", 'password => "hunter22"', "ELASTIC_PASSWORD=changeme", '  "password": "x1",',
        "xpack.security.encryptionKey: abcdefabcdefabcdefabcdefabcdefab",
    ])
    assert [n for n, _ in _literal_secrets(text)] == [7, 8, 9, 10]


def test_no_config_file_holds_a_literal_password():
    files = _config_files()
    assert len(files) >= 8
    for path in files:
        for n, key in _literal_secrets(path.read_text(errors="replace")):
            pytest.fail(f"{path.relative_to(ROOT)}:{n}: {key} has a literal value; use ${{VARIABLE}}")
    # The places that need a password name their variable.
    assert "${KIBANA_SYSTEM_PASSWORD}" in (ROOT / "kibana" / "config" / "kibana.yml").read_text()
    assert "${LOGSTASH_WRITER_PASSWORD}" in PIPELINE.read_text()


# =============================================================================================
# The setup plan against the API references


def _endpoint_for(step) -> tuple[str, dict[str, Any]]:
    for name, ep in ES_API["endpoints"].items():
        for url in ep["urls"]:
            regex = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(url["path"])) + "$"
            if re.match(regex, step.path) and step.method in url["methods"]:
                return name, ep
    raise AssertionError(f"{step.method} {step.path} matches no recorded Elasticsearch API")


def test_plan_order_is_safe(artifacts):
    plan = build_plan(artifacts, PASSWORDS)
    steps = [(s.service, s.method, s.path) for s in plan]
    index = {s[2]: n for n, s in enumerate(steps)}
    assert isinstance(plan[0], WaitFor) and plan[0].service == "elasticsearch"
    assert index["/_security/user/kibana_system/_password"] < index["/api/status"]
    for role in (WRITER_ROLE, READER_ROLE):
        assert index[f"/_security/role/{role}"] < index[f"/_security/user/{WRITER_USER}"]
    assert index[f"/_ilm/policy/{ILM_POLICY}"] < index[f"/_index_template/{INDEX_TEMPLATE}"] \
        < index[f"/_data_stream/{DATA_STREAM}"] < index[f"/{DATA_STREAM}/_mapping"]
    kibana = [n for n, s in enumerate(plan) if s.service == "kibana"]
    assert isinstance(plan[kibana[0]], WaitFor) and kibana == list(range(kibana[0], len(plan)))
    users = {s.path.rsplit("/", 1)[1]: s.body["roles"] for s in plan
             if isinstance(s, Request) and re.fullmatch(r"/_security/user/[a-z_]+", s.path)}
    assert users == {WRITER_USER: [WRITER_ROLE], READER_USER: [READER_ROLE],
                     VIEWER_USER: [READER_ROLE, KIBANA_VIEWER_ROLE]}


def test_elasticsearch_requests_match_the_api_reference(artifacts):
    enums = ES_API["enums"]
    for step in build_plan(artifacts, PASSWORDS):
        if step.service != "elasticsearch":
            continue
        name, ep = _endpoint_for(step)
        assert set(step.params) <= set(ep["query_parameters"]), (name, step.params)
        body = getattr(step, "body", None)
        if ep["body"] is None:
            assert body is None, f"{name} takes no body"
            continue
        assert set(body) <= set(ep["body"]), (name, set(body) - set(ep["body"]))
        if name == "security.put_role":
            assert set(body["cluster"]) <= set(enums["ClusterPrivilege"])
            for entry in body["indices"]:
                assert set(entry) <= {"names", "privileges", "field_security", "query", "allow_restricted_indices"}
                assert set(entry["privileges"]) <= set(enums["IndexPrivilege"])
        if name == "indices.put_mapping":
            assert body == artifacts.index_template["template"]["mappings"]
    # The recorded examples take the same shape as ours.
    examples = ES_API["endpoints"]["security.put_user"]["examples"]
    assert {"password", "roles", "full_name", "metadata"} <= set(examples["SecurityPutUserRequestExample1.yaml"]["value"])


def test_kibana_requests_match_the_api_reference(artifacts):
    plan = [s for s in build_plan(artifacts, PASSWORDS) if s.service == "kibana"]
    status = KIBANA_API["endpoints"]["status"]
    assert (plan[0].method, plan[0].path) == (status["method"], status["paths"][0])
    role = KIBANA_API["endpoints"]["security.role.put"]
    imp = KIBANA_API["endpoints"]["saved_objects.import"]
    for step in plan[1:]:
        if step.path.startswith("/api/security/role/"):
            assert step.method == role["method"] and step.ok_statuses == (role["response_status"],)
            assert set(step.body) <= set(role["body"])
            assert set(step.body["elasticsearch"]) <= set(role["elasticsearch_keys"])
            for entry in step.body["kibana"]:
                assert set(entry) <= set(role["kibana_entry_keys"]) and set(entry["base"]) <= set(role["base_values"])
        else:
            assert (step.method, step.path) == (imp["method"], imp["paths"][0])
            assert set(step.params) <= set(imp["query_parameters"]) and step.params == {"overwrite": "true"}
            assert step.upload[0] in imp["form_fields"] and step.body is None
            assert step.upload[2] == (ROOT / SAVED_OBJECTS_FILE).read_text()


def test_passwords_come_from_the_environment_only():
    with pytest.raises(SetupError) as e:
        passwords_from_env({})
    for variable in PASSWORD_VARIABLES:
        assert variable in str(e.value)
    env = {v: f"long-enough-{v}" for v in PASSWORD_VARIABLES}
    assert passwords_from_env(env).writer == env["LOGSTASH_WRITER_PASSWORD"]
    with pytest.raises(SetupError, match="MLPULSE_VIEWER_PASSWORD is shorter"):
        passwords_from_env({**env, "MLPULSE_VIEWER_PASSWORD": "abc"})
    assert "test-" not in repr(PASSWORDS)


def test_plan_description_hides_passwords(artifacts, capsys):
    text = json.dumps(describe_plan(build_plan(artifacts, PASSWORDS)))
    for secret in (PASSWORDS.kibana_system, PASSWORDS.writer, PASSWORDS.reader, PASSWORDS.viewer):
        assert secret not in text
    assert mlpulse_main(["elastic-setup", "--plan", "--root", str(ROOT)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in printed] == [s.path for s in build_plan(artifacts, PASSWORDS)]


# =============================================================================================
# The setup job's executor, against the stand-ins for Elasticsearch and Kibana (tests/standins/):
# they answer with the recorded responses of tests/fixtures/elastic/, they are not the servers.


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stand_ins(request):
    made = []

    def make(es: dict[str, Any] | None = None, kibana: dict[str, Any] | None = None):
        e = ElasticsearchSetupStandIn(PASSWORDS.elastic, **(es or {}))
        k = KibanaStandIn(PASSWORDS.elastic, **(kibana or {}))
        made.extend([e, k])
        return e, k

    yield make
    for server in made:
        server.close()


def _executor(es, kibana, clock: FakeClock, password: str = PASSWORDS.elastic, **settings: Any) -> Executor:
    s = Settings(elasticsearch_url=es.url, kibana_url=kibana.url, wait_timeout_s=60,
                 request_timeout_s=5, retries=3, **settings)
    return Executor(s, password, sleep=clock.sleep, clock=clock)


def _comparable(req: dict[str, Any]) -> tuple:
    body: Any = None
    if req["raw"] and req["headers"].get("content-type", "").startswith("multipart/form-data"):
        body = ("upload", multipart_file(req))
    elif req["raw"]:
        body = json.loads(req["raw"])
    return req["method"], req["path"], req["params"], body


def _expected(plan) -> list[tuple]:
    return [(s.method, s.path, dict(s.params), ("upload", s.upload[2]) if getattr(s, "upload", None)
             else getattr(s, "body", None)) for s in plan]


def test_executor_sends_exactly_the_plan_and_a_second_run_converges(stand_ins, artifacts):
    es, kibana = stand_ins()
    plan = build_plan(artifacts, PASSWORDS)
    clock = FakeClock()
    first = _executor(es, kibana, clock).run(plan)
    sent = [_comparable(r) for r in es.requests + kibana.requests]
    assert sent == _expected(plan)
    for req in es.requests:
        assert req["headers"]["authorization"] == basic_auth(PASSWORDS.elastic)
        if req["raw"]:
            assert "json" in req["headers"]["content-type"]
    for req in kibana.requests:
        if req["method"] != "GET":
            assert req["headers"]["kbn-xsrf"] == "true"
    assert [o.result for o in first if "user mlpulse" in o.description] == ["created"] * 3
    assert clock.sleeps == []

    es.requests.clear()
    kibana.requests.clear()
    second = _executor(es, kibana, clock).run(plan)  # idempotent: same requests, no error
    assert [_comparable(r) for r in es.requests + kibana.requests] == _expected(plan)
    results = {o.description: o.result for o in second}
    assert results[f"data stream {DATA_STREAM}"] == "already exists"
    assert results[f"user {WRITER_USER}"] == "updated" and results[f"role {WRITER_ROLE}"] == "updated"
    assert kibana.imported[0] == kibana.imported[1] == (ROOT / SAVED_OBJECTS_FILE).read_text()


def test_executor_waits_for_readiness_and_retries_transient_answers(stand_ins, artifacts):
    role_path = f"/_security/role/{READER_ROLE}"
    es, kibana = stand_ins(es={"not_ready": 2, "failures": {role_path: [503, 429]}}, kibana={"not_ready": 3})
    clock = FakeClock()
    outcomes = _executor(es, kibana, clock).run(build_plan(artifacts, PASSWORDS))
    assert [r["path"] for r in es.requests[:3]] == ["/_cluster/health"] * 3
    assert [r["path"] for r in es.requests].count(role_path) == 3
    assert [r["path"] for r in kibana.requests].count("/api/status") == 4
    assert clock.sleeps == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 4.0]  # health x2, role x2, Kibana status x3
    assert outcomes[0].result == "ready" and outcomes[-1].result.startswith("done")


def test_executor_gives_up_with_a_readable_error(stand_ins, artifacts):
    role_path = f"/_security/role/{READER_ROLE}"
    es, kibana = stand_ins(es={"failures": {role_path: [503] * 10}})
    with pytest.raises(SetupError) as e:
        _executor(es, kibana, FakeClock()).run(build_plan(artifacts, PASSWORDS))
    message = str(e.value)
    assert f"role {READER_ROLE}" in message and f"PUT {es.url}{role_path}" in message
    assert "after 4 attempts" in message and "503" in message


def test_executor_stops_at_once_on_wrong_credentials(stand_ins, artifacts):
    es, kibana = stand_ins()
    clock = FakeClock()
    with pytest.raises(SetupError, match=r"refused user 'elastic' \(401\).*ELASTIC_PASSWORD"):
        _executor(es, kibana, clock, password="not-the-password").run(build_plan(artifacts, PASSWORDS))
    assert len(es.requests) == 1 and clock.sleeps == []


def test_executor_readiness_wait_is_bounded(stand_ins, artifacts):
    es, kibana = stand_ins(es={"not_ready": 10**6})
    clock = FakeClock()
    with pytest.raises(SetupError, match=r"Elasticsearch at .*/_cluster/health not ready after 60 s.*cluster status red"):
        _executor(es, kibana, clock).run(build_plan(artifacts, PASSWORDS))
    assert clock.now <= 60


def test_executor_reports_an_unreachable_server(artifacts):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(elasticsearch_url=f"http://127.0.0.1:{port}", kibana_url=f"http://127.0.0.1:{port}",
                        wait_timeout_s=5, request_timeout_s=2)
    clock = FakeClock()
    with pytest.raises(SetupError, match=rf"127.0.0.1:{port}/_cluster/health not ready after 5 s.*ConnectionError"):
        Executor(settings, PASSWORDS.elastic, sleep=clock.sleep, clock=clock).run(build_plan(artifacts, PASSWORDS))


def test_executor_reports_failed_imports(stand_ins, artifacts):
    failed = KIBANA_API["endpoints"]["saved_objects.import"]["examples"]["missing_references_response"]
    es, kibana = stand_ins(kibana={"import_response": failed})
    with pytest.raises(SetupError, match=r"import did not succeed: visualization/my-vis: missing_references "
                                         r"\(missing index-pattern/my-pattern-\*\)"):
        _executor(es, kibana, FakeClock()).run(build_plan(artifacts, PASSWORDS))


def test_plan_matches_what_elasticsearch_py_sends_for_the_same_apis(stand_ins, artifacts):
    """elasticsearch-py's typed APIs are generated from the Elasticsearch specification: sending the
    same calls through them must produce the plan's paths, query parameters and bodies."""
    from elasticsearch import Elasticsearch

    es, _kibana = stand_ins()
    client = Elasticsearch(es.url, basic_auth=("elastic", PASSWORDS.elastic), max_retries=0)
    plan = [s for s in build_plan(artifacts, PASSWORDS) if s.service == "elasticsearch"]
    mapping = artifacts.index_template["template"]["mappings"]
    template = {("meta" if k == "_meta" else k): v for k, v in artifacts.index_template.items()}
    client.cluster.health(wait_for_status="yellow", timeout="5s")
    client.security.change_password(username="kibana_system", password=PASSWORDS.kibana_system)
    for name, body in sorted(artifacts.es_roles.items()):
        client.security.put_role(name=name, **body)
    for step in plan:
        if re.fullmatch(r"/_security/user/[a-z_]+", step.path):
            client.security.put_user(username=step.path.rsplit("/", 1)[1], **step.body)
    client.ilm.put_lifecycle(name=ILM_POLICY, policy=artifacts.ilm_policy["policy"])
    client.indices.put_index_template(name=INDEX_TEMPLATE, **template)
    client.indices.create_data_stream(name=DATA_STREAM)
    client.indices.put_mapping(index=DATA_STREAM, write_index_only=True,
                               **{("meta" if k == "_meta" else k): v for k, v in mapping.items()})
    typed = [_comparable(r) for r in es.requests]
    assert [t[1:] for t in typed] == [e[1:] for e in _expected(plan)]
    for (method, _path, _params, _body), step in zip(typed, plan):
        _name, ep = _endpoint_for(step)
        assert method in {m for u in ep["urls"] for m in u["methods"]}
