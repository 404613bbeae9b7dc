"""The stack test: the real Elasticsearch, Logstash and Kibana of the compose stack (Docker).

Everywhere else the Elastic side is checked against recorded references and stand-ins
(tests/contract/test_elastic_contract.py, tests/standins/); this is the one test against the real
servers. It needs a running stack (docs/elk.md, "Stack test") and is skipped where ``docker info``
fails or ELASTIC_PASSWORD is unset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from mlpulse.elastic import DATA_STREAM, INDEX_TEMPLATE_FILE
from mlpulse.elastic import kibana as kb
from mlpulse.elastic.mapping import mapped_fields
from model_service.data import generate, to_records
from tests.helpers import ROOT

RECORDS = to_records(generate(20, seed=41))


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.docker
@pytest.mark.skipif(not _docker_available(), reason="no Docker engine: `docker info` fails")
def test_stack_indexes_service_events_and_has_the_dashboard(tmp_path):
    """Against a running compose stack (docs/elk.md, "Stack test"): events posted to the model
    service reach the data stream through Logstash, and the Kibana objects are imported.

    Environment: ELASTIC_PASSWORD (required), MLPULSE_STACK_SERVICE_URL (http://127.0.0.1:8000),
    MLPULSE_STACK_ES_URL (https://127.0.0.1:9200), MLPULSE_STACK_KIBANA_URL (http://127.0.0.1:5601),
    MLPULSE_ES_CA_CERTS (else copied from the elasticsearch container)."""
    import requests

    password = os.environ.get("ELASTIC_PASSWORD")
    if not password:
        pytest.skip("ELASTIC_PASSWORD is not set: start the stack (docker compose up -d) and export it")
    service = os.environ.get("MLPULSE_STACK_SERVICE_URL", "http://127.0.0.1:8000")
    es_url = os.environ.get("MLPULSE_STACK_ES_URL", "https://127.0.0.1:9200")
    kibana_url = os.environ.get("MLPULSE_STACK_KIBANA_URL", "http://127.0.0.1:5601")
    ca = os.environ.get("MLPULSE_ES_CA_CERTS")
    if not ca:
        ca = str(tmp_path / "ca.crt")
        subprocess.run(["docker", "compose", "cp", "elasticsearch:/usr/share/elasticsearch/config/certs/ca/ca.crt",
                        ca], cwd=ROOT, check=True, capture_output=True, timeout=60)
    auth = ("elastic", password)

    request_id = f"stack-{os.getpid()}-{int(time.time())}"
    ok = requests.post(f"{service}/v1/predict", json=RECORDS[0], headers={"X-Request-ID": request_id}, timeout=10)
    assert ok.status_code == 200, ok.text
    bad = requests.post(f"{service}/v1/predict", json=dict(RECORDS[1], age="forty"),
                        headers={"X-Request-ID": request_id + "-bad"}, timeout=10)
    assert bad.status_code == 422

    def search(rid: str) -> list[dict[str, Any]]:
        r = requests.get(f"{es_url}/{DATA_STREAM}/_search", auth=auth, verify=ca, timeout=10,
                         params={"q": f'request_id:"{rid}"'})
        return [h["_source"] for h in r.json().get("hits", {}).get("hits", [])] if r.status_code == 200 else []

    deadline = time.monotonic() + 180  # Logstash polls files every few seconds; refresh_interval 5s
    found, refused = [], []
    while time.monotonic() < deadline and not (found and refused):
        found, refused = search(request_id), search(request_id + "-bad")
        time.sleep(3)
    assert found and refused, "the events did not reach Elasticsearch within 180 s (docker compose logs logstash)"
    assert found[0]["event"] == "prediction" and found[0]["inputs"]["age"] == RECORDS[0]["age"]
    assert refused[0]["event"] == "prediction.refused" and refused[0]["violations"][0]["reason"] == "wrong_type"
    assert set(found[0]) <= set(mapped_fields(json.loads((ROOT / INDEX_TEMPLATE_FILE).read_text())["template"]
                                              ["mappings"]))

    mapping = requests.get(f"{es_url}/{DATA_STREAM}/_mapping", auth=auth, verify=ca, timeout=10).json()
    assert all(m["mappings"]["dynamic"] == "strict" for m in mapping.values())
    for type_, id_ in (("dashboard", kb.DASHBOARD_ID), ("index-pattern", kb.DATA_VIEW_ID),
                       ("search", kb.SEARCH_VIOLATIONS_ID)):
        r = requests.get(f"{kibana_url}/api/saved_objects/{type_}/{id_}", auth=auth, timeout=10)
        assert r.status_code == 200, f"{type_} {id_}: {r.status_code} {r.text[:200]}"
