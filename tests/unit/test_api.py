"""The service's HTTP API with Flask's test client: every answer, every bad input, metrics, events."""

import json
import os

import pytest

from mlpulse.serving.app import ServiceConfig, create_app
from model_service.data import generate, to_records
from tests.helpers import read_events, samples, value

RECORDS = to_records(generate(50, seed=21))
ML = {"model": "credit-default", "version": "1.0.0"}


def post(client, body, content_type="application/json", **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/v1/predict", data=data, content_type=content_type, headers=headers)


def metrics(client):
    return samples(client.get("/metrics").get_data(as_text=True))


def test_single_record_is_scored_and_logged(client, config):
    r = post(client, RECORDS[0], **{"X-Request-ID": "req-1"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["request_id"] == "req-1" and r.headers["X-Request-ID"] == "req-1"
    p = body["prediction"]
    assert 0 <= p["value"] <= 1
    assert p["probabilities"]["default"] == pytest.approx(p["value"])
    assert p["class"] == ("default" if p["value"] >= 0.5 else "no_default")
    (event,) = read_events(config.events_dir)
    assert event["event"] == "prediction" and event["request_id"] == "req-1"
    assert event["model"] == {"name": "credit-default", "version": "1.0.0"}
    assert event["inputs"] == RECORDS[0]
    assert event["prediction"]["value"] == p["value"]
    assert event["@timestamp"].endswith("+00:00") and event["violations"] == []


def test_batch_is_scored_in_order(client, config):
    r = post(client, RECORDS[:10])
    assert r.status_code == 200
    preds = r.get_json()["predictions"]
    singles = [post(client, rec).get_json()["prediction"]["value"] for rec in RECORDS[:3]]
    assert [p["prediction"]["value"] for p in preds[:3]] == pytest.approx(singles)
    events = read_events(config.events_dir)
    assert [e["record_index"] for e in events[:10]] == list(range(10))
    assert {e["batch_size"] for e in events[:10]} == {10}


def test_generated_request_id_when_absent_or_malformed(client):
    a = post(client, RECORDS[0]).headers["X-Request-ID"]
    b = post(client, RECORDS[0], **{"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(a) == 32 and len(b) == 32 and a != b


@pytest.mark.parametrize(
    "mutate, field, reason",
    [
        (lambda r: r.update(age="forty"), "age", "wrong_type"),
        (lambda r: r.pop("loan_amount"), "loan_amount", "missing_required"),
        (lambda r: r.update(loan_amount=None), "loan_amount", "missing_required"),
        (lambda r: r.update(favourite_colour="blue"), "favourite_colour", "unknown_field"),
        (lambda r: r.update(home_ownership=7), "home_ownership", "wrong_type"),
    ],
)
def test_refused_record_names_field_and_reason(client, config, mutate, field, reason):
    rec = dict(RECORDS[1])
    mutate(rec)
    r = post(client, rec)
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    body = r.get_json()
    assert body["type"] == "urn:mlpulse:problem:invalid-records" and body["status"] == 422
    assert [(e["record"], e["field"], e["reason"]) for e in body["errors"]] == [(0, field, reason)]
    (event,) = read_events(config.events_dir)
    assert event["event"] == "prediction.refused" and "inputs" not in event
    assert json.loads(event["raw_inputs"]) == rec
    assert [v["reason"] for v in event["violations"]] == [reason]
    m = metrics(client)
    feature = field if reason != "unknown_field" else "_unknown"
    assert value(m, "mlpulse_input_violations_total", feature=feature, reason=reason, **ML) == 1
    assert value(m, "mlpulse_records_total", outcome="refused", **ML) == 1
    assert value(m, "mlpulse_records_total", outcome="scored", **ML) == 0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_by_field(client, token):
    text = json.dumps(RECORDS[2]).replace('"interest_rate": ', f'"interest_rate": {token}, "_x": ', 1)
    text = text.replace(', "_x": ' + json.dumps(RECORDS[2]["interest_rate"]), "", 1)
    r = post(client, text)
    assert r.status_code == 422
    assert [(e["field"], e["reason"]) for e in r.get_json()["errors"]] == [("interest_rate", "non_finite")]


def test_out_of_range_and_unseen_are_scored_and_flagged(client, config):
    rec = dict(RECORDS[3], age=120, loan_purpose="crypto")
    r = post(client, rec)
    assert r.status_code == 200
    flagged = {(v["feature"], v["reason"]) for v in r.get_json()["violations"]}
    assert flagged == {("age", "out_of_range"), ("loan_purpose", "unseen_category")}
    (event,) = read_events(config.events_dir)
    assert event["event"] == "prediction" and {v["reason"] for v in event["violations"]} == {
        "out_of_range", "unseen_category"}
    m = metrics(client)
    assert value(m, "mlpulse_input_violations_total", feature="age", reason="out_of_range", **ML) == 1
    assert value(m, "mlpulse_input_violations_total", feature="loan_purpose", reason="unseen_category", **ML) == 1


def test_strict_policy_refuses_out_of_range_and_unseen(bundle_dir, tmp_path):
    strict = ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"),
                           refuse_reasons=("missing_required", "wrong_type", "non_finite", "unknown_field",
                                           "out_of_range", "unseen_category"))
    client = create_app(strict).test_client()
    r = post(client, dict(RECORDS[3], age=120, loan_purpose="crypto"))
    assert r.status_code == 422
    assert {(e["field"], e["reason"]) for e in r.get_json()["errors"]} == {
        ("age", "out_of_range"), ("loan_purpose", "unseen_category")}


def test_one_bad_record_refuses_the_batch_and_logs_every_record(client, config):
    batch = [dict(r) for r in RECORDS[:4]]
    batch[2]["age"] = "x"
    r = post(client, batch)
    assert r.status_code == 422
    assert [(e["record"], e["field"]) for e in r.get_json()["errors"]] == [(2, "age")]
    events = read_events(config.events_dir)
    assert [e["event"] for e in events] == ["prediction.refused"] * 4
    assert [len(e["violations"]) for e in events] == [0, 0, 1, 0]


@pytest.mark.parametrize(
    "body, content_type, status, slug",
    [
        ("{", "application/json", 400, "malformed-json"),
        (b"\xff\xfe{}", "application/json", 400, "malformed-json"),
        ("{}", "text/plain", 415, "unsupported-media-type"),
        ("[]", "application/json", 422, "empty-batch"),
        ('"a string"', "application/json", 422, "invalid-body"),
        ("[1, 2]", "application/json", 422, "invalid-body"),
        ("[" * 100000 + "]" * 100000, "application/json", 400, "malformed-json"),
    ],
)
def test_malformed_requests_get_problem_details(client, config, body, content_type, status, slug):
    r = post(client, body, content_type=content_type)
    assert r.status_code == status
    problem = r.get_json()
    assert problem["type"] == f"urn:mlpulse:problem:{slug}" and problem["detail"]
    (event,) = read_events(config.events_dir)
    assert event["event"] == "request.refused" and event["reason"] == slug.replace("-", "_")
    assert value(metrics(client), "mlpulse_request_errors_total", reason=slug.replace("-", "_"), **ML) == 1


def test_oversized_body_and_batch(bundle_dir, tmp_path):
    cfg = ServiceConfig(bundle_dir=str(bundle_dir), events_dir=str(tmp_path / "ev"), max_batch=5,
                        max_body_bytes=4000)
    client = create_app(cfg).test_client()
    r = post(client, RECORDS[:20])  # about 7 kB
    assert r.status_code == 413 and r.get_json()["type"].endswith("body-too-large")
    r = post(client, [RECORDS[0]] * 6)
    assert r.status_code == 413 and r.get_json()["type"].endswith("batch-too-large")
    assert post(client, RECORDS[0]).status_code == 200  # still serving
    m = metrics(client)
    assert value(m, "mlpulse_request_errors_total", reason="body_too_large", **ML) == 1
    assert value(m, "mlpulse_request_errors_total", reason="batch_too_large", **ML) == 1


def test_other_routes(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["model"]["version"] == "1.0.0"
    model = client.get("/v1/model").get_json()
    assert model["name"] == "credit-default" and len(model["model_sha256"]) == 64
    assert model["libraries"]["trained"]["scikit-learn"] == model["libraries"]["serving"]["scikit-learn"]
    nf = client.get("/no/such/path")
    assert nf.status_code == 404 and nf.mimetype == "application/problem+json"
    assert client.get("/v1/predict").status_code == 405


def test_openapi_describes_the_served_schema(client, app):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    record = doc["components"]["schemas"]["Record"]
    scorer = app.extensions["mlpulse_scorer"]
    assert list(record["properties"]) == scorer.bundle.schema.names
    assert set(record["required"]) == {f.name for f in scorer.bundle.schema.features if not f.nullable}
    assert record["properties"]["age"]["minimum"] == 18
    assert record["properties"]["marital_status"]["type"] == ["string", "null"]
    assert set(doc["paths"]) == {"/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json",
                                 "/v1/feedback"}
    for code in ("400", "413", "415", "422"):
        assert code in doc["paths"]["/v1/predict"]["post"]["responses"]


def test_metrics_count_requests_predictions_and_missing(client):
    n = 20
    for rec in RECORDS[:n]:
        assert post(client, rec).status_code == 200
    post(client, RECORDS[:5])
    m = metrics(client)
    route = {"method": "POST", "route": "/v1/predict", "status": "200"}
    assert value(m, "mlpulse_http_requests_total", **route) == n + 1
    assert value(m, "mlpulse_http_request_duration_seconds_count", **route) == n + 1
    assert value(m, "mlpulse_prediction_count", **ML) == n + 5
    assert value(m, "mlpulse_batch_size_count", **ML) == n + 1
    assert value(m, "mlpulse_batch_size_sum", **ML) == n + 5
    classes = value(m, "mlpulse_predicted_class_total", **ML)
    assert classes == n + 5
    missing_income = sum(1 for r in RECORDS[:n] + RECORDS[:5] if r["income"] is None)
    assert value(m, "mlpulse_input_missing_total", feature="income", **ML) == missing_income
    assert value(m, "mlpulse_model_info", **ML) == 1
    assert value(m, "mlpulse_model_dependency_mismatch", library="scikit-learn", **ML) == 0
    # Prediction buckets are the reference's edges, not the defaults.
    buckets = {lab for (name, lab), _ in m.items() if name == "mlpulse_prediction_bucket"}
    assert len(buckets) >= 15
    # Windowed std needs the sum of squares; check it against the responses.
    values = [post(client, r).get_json()["prediction"]["value"] for r in RECORDS[:3]]
    m2 = metrics(client)
    added = value(m2, "mlpulse_prediction_squares_total", **ML) - value(m, "mlpulse_prediction_squares_total", **ML)
    assert added == pytest.approx(sum(v * v for v in values))


def test_unmatched_routes_do_not_grow_labels(client):
    for i in range(30):
        client.get(f"/random/{i}")
    routes = {dict(lab).get("route") for (name, lab), _ in metrics(client).items()
              if name == "mlpulse_http_requests_total"}
    assert "<unmatched>" in routes and not any(r.startswith("/random") for r in routes)


def test_route_series_exist_from_the_first_request(client):
    client.get("/healthz")
    m = metrics(client)
    for route in ("/v1/predict", "/v1/model"):
        method = "POST" if route == "/v1/predict" else "GET"
        for status in ("200", "500"):
            assert (("mlpulse_http_requests_total", frozenset({"method": method, "route": route,
                                                               "status": status}.items())) in m)
    assert value(m, "mlpulse_http_requests_total", route="/v1/predict", status="500") == 0


def test_the_model_runs_on_one_openmp_thread_per_worker(config):
    """Several OpenMP threads per gunicorn worker on shared cores made single predictions take
    seconds: the limit must hold once the model (and with it the OpenMP runtime) is loaded. A fresh
    interpreter, as a gunicorn worker is: nothing has loaded scikit-learn before the app."""
    import subprocess
    import sys

    script = (f"from mlpulse.serving.app import ServiceConfig, create_app; "
              f"create_app(ServiceConfig(bundle_dir={config.bundle_dir!r}, events_dir={config.events_dir!r})); "
              "from threadpoolctl import threadpool_info; "
              "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'openmp'}))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MODEL_OMP_THREADS")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[1]"
