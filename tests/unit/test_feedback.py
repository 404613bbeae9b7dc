"""POST /v1/feedback with Flask's test client and the real SQLite ledger: labels taken once, updates
logged, every bad item answered with problem+json naming it, counted, and one event line per item."""

import json
import multiprocessing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpulse.serving.app import ServiceConfig, create_app
from mlpulse.serving.ledger import Item, Ledger
from model_service.data import generate, to_records
from tests.helpers import read_events, samples

RECORDS = to_records(generate(10, seed=5))
ML = {"model": "credit-default", "version": "1.0.0"}


def predict(client, records, rid):
    r = client.post("/v1/predict", data=json.dumps(records), content_type="application/json",
                    headers={"X-Request-ID": rid})
    assert r.status_code == 200
    return r


def feedback(client, body, rid="fb"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/v1/feedback", data=data, content_type="application/json", headers={"X-Request-ID": rid})


def counts(client, name, label):
    m = samples(client.get("/metrics").get_data(as_text=True))
    return {dict(lab)[label]: v for (n, lab), v in m.items() if n == name}


def test_labels_are_taken_once_and_a_change_is_an_update(client, config):
    predict(client, RECORDS[:3], "r-1")
    r = feedback(client, [{"request_id": "r-1", "record_index": 0, "label": "default"},
                          {"request_id": "r-1", "record_index": 2, "label": "no_default"}])
    assert r.status_code == 200, r.get_json()
    assert [x["outcome"] for x in r.get_json()["results"]] == ["new", "new"]
    assert feedback(client, {"request_id": "r-1", "label": "default"}).get_json()["results"][0]["outcome"] == \
        "duplicate"
    assert feedback(client, {"request_id": "r-1", "record_index": 2, "label": "default"}) \
        .get_json()["results"][0]["outcome"] == "update"
    events = [e for e in read_events(config.events_dir) if e["event"] == "feedback"]
    assert [e["feedback"]["outcome"] for e in events] == ["new", "new", "duplicate", "update"]
    last = events[-1]
    assert last["model"] == {"name": "credit-default", "version": "1.0.0"} and last["request_id"] == "fb"
    assert last["feedback"]["request_id"] == "r-1" and last["feedback"]["record_index"] == 2
    assert last["feedback"]["label"] == "default" and last["feedback"]["previous_label"] == "no_default"
    scored = next(e for e in read_events(config.events_dir) if e["event"] == "prediction")
    assert last["feedback"]["predicted_at"][:19] == scored["@timestamp"][:19]
    assert counts(client, "mlpulse_feedback_labels_total", "outcome") == {"new": 2, "update": 1, "duplicate": 1}


@pytest.mark.parametrize(("item", "reason", "field"), [
    ({"request_id": "nope", "label": "default"}, "unknown_request", "request_id"),
    ({"request_id": "r-2", "record_index": 5, "label": "default"}, "unknown_record", "record_index"),
    ({"request_id": "r-2", "label": "maybe"}, "invalid_label", "label"),
    ({"request_id": "r-2", "label": None}, "invalid_label", "label"),
    ({"request_id": "r-2"}, "invalid_label", "label"),
    ({"request_id": "r 2!", "label": "default"}, "invalid_item", "request_id"),
    ({"request_id": "r-2", "record_index": -1, "label": "default"}, "invalid_item", "record_index"),
    ({"request_id": "r-2", "record_index": True, "label": "default"}, "invalid_item", "record_index"),
    ({"request_id": "r-2", "label": "default", "extra": 1}, "invalid_item", "extra"),
])
def test_a_bad_item_refuses_the_call_names_its_problem_and_stores_nothing(client, config, item, reason, field):
    predict(client, RECORDS[:2], "r-2")
    good = {"request_id": "r-2", "record_index": 1, "label": "default"}
    r = feedback(client, [good, item])
    unknown = reason.startswith("unknown_")
    assert r.status_code == (404 if unknown else 422) and r.mimetype == "application/problem+json"
    body = r.get_json()
    assert body["type"] == "urn:mlpulse:problem:" + ("unknown-prediction" if unknown else "invalid-feedback")
    assert body["errors"] == [{"item": 1, "field": field, "reason": reason, "detail": body["errors"][0]["detail"]}]
    refused = [e for e in read_events(config.events_dir) if e["event"] == "feedback.refused"]
    assert [(e["record_index"], e["reason"]) for e in refused] == [(0, "call_refused"), (1, reason)]
    assert counts(client, "mlpulse_feedback_refused_total", "reason")[reason] == 1
    # Nothing was stored: the good item is new when sent alone.
    assert feedback(client, good).get_json()["results"][0]["outcome"] == "new"


@pytest.mark.parametrize(("body", "status", "slug"), [
    ("{", 400, "malformed-json"), ("[]", 422, "empty-batch"), ("3", 422, "invalid-body"),
])
def test_malformed_bodies_are_refused_as_requests(client, config, body, status, slug):
    r = feedback(client, body)
    assert r.status_code == status and r.get_json()["type"] == f"urn:mlpulse:problem:{slug}"
    assert [e["event"] for e in read_events(config.events_dir)] == ["request.refused"]


def test_a_reused_request_id_names_the_newer_request(client):
    predict(client, RECORDS[:1], "r-3")
    assert feedback(client, {"request_id": "r-3", "label": "default"}).status_code == 200
    predict(client, RECORDS[:2], "r-3")
    r = feedback(client, {"request_id": "r-3", "label": "default"})
    assert r.get_json()["results"][0]["outcome"] == "new"


def test_regression_labels_are_finite_numbers(tmp_path):
    from mlpulse.schema import OutputSpec
    from mlpulse.serving.feedback import canonical_label
    out = OutputSpec(task="regression")
    assert canonical_label(3, out) == "3.0" and canonical_label(2.5, out) == "2.5"
    assert canonical_label(float("nan"), out) is None and canonical_label(True, out) is None
    assert canonical_label("3", out) is None


def test_feedback_can_be_turned_off(bundle_dir, tmp_path):
    app = create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"),
                                   feedback_ledger="off"))
    r = feedback(app.test_client(), {"request_id": "x", "label": "default"})
    assert r.status_code == 404 and "/v1/feedback" not in app.test_client().get("/openapi.json").get_json()["paths"]


def test_the_ledger_is_pruned_to_its_horizon(tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite"), horizon=100)
    ledger.record_prediction("old", "1", 1, ts=1000)
    ledger.record_prediction("new", "1", 1, ts=1150)
    # All or nothing: the unknown (expired) item keeps the other from being stored.
    assert [o.outcome for o in ledger.apply([Item("old", 0, "a"), Item("new", 0, "a")], ts=1160)] == \
        ["unknown_request", "new"]
    assert ledger.apply([Item("new", 0, "a")], ts=1160)[0].outcome == "new"
    assert ledger.prune(now=1160) == 1
    assert ledger.apply([Item("new", 0, "a")], ts=1170)[0].outcome == "duplicate"
    assert ledger.prune(now=1300) == 2 and ledger.apply([Item("new", 0, "a")], ts=1300)[0].outcome == \
        "unknown_request"


def _give(path, label, n, q):
    ledger = Ledger(path, horizon=1e9)
    q.put([ledger.apply([Item(f"r{i}", 0, label)])[0].outcome for i in range(n)])


def test_processes_racing_on_the_same_labels_store_each_once(tmp_path):
    path = str(tmp_path / "l.sqlite")
    ledger = Ledger(path, horizon=1e9)
    for i in range(50):
        ledger.record_prediction(f"r{i}", "1", 1)
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_give, args=(path, "a", 50, q)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    per_record = list(zip(*results))
    assert all(sorted(r) == ["duplicate", "duplicate", "new"] for r in per_record)


ITEM = st.fixed_dictionaries({}, optional={
    "request_id": st.sampled_from(["fz-1", "fz-2", "nope", "", "a b"]) | st.text(max_size=5) | st.integers(),
    "record_index": st.integers(-2, 3) | st.floats(allow_nan=True) | st.booleans() | st.none(),
    "label": st.sampled_from(["default", "no_default", "maybe"]) | st.integers() | st.none() | st.lists(st.none()),
    "extra": st.none(),
})


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=ITEM | st.lists(ITEM | st.integers() | st.text(max_size=3), max_size=4) | st.integers() | st.text())
def test_every_feedback_item_accepted_or_refused_leaves_exactly_one_line(fuzz_client, body):
    client, events_dir = fuzz_client
    before = len(read_events(events_dir))
    r = feedback(client, json.dumps(body))
    assert r.status_code in (200, 404, 422), r.get_data(as_text=True)
    new = read_events(events_dir)[before:]
    if isinstance(body, dict) or (isinstance(body, list) and body):
        items = [body] if isinstance(body, dict) else body
        assert len(new) == len(items) and {e["event"] for e in new} <= {"feedback", "feedback.refused"}
        assert (r.status_code == 200) == all(e["event"] == "feedback" for e in new)
    else:
        assert [e["event"] for e in new] == ["request.refused"]


@pytest.fixture(scope="module")
def fuzz_client(bundle_dir, tmp_path_factory):
    events = tmp_path_factory.mktemp("fb-fuzz")
    client = create_app(ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(events))).test_client()
    predict(client, RECORDS[:2], "fz-1")
    predict(client, RECORDS[:1], "fz-2")
    return client, events
