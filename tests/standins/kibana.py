"""A stand-in for Kibana: it is NOT Kibana.

Kibana cannot run here (a Node.js service that needs a running Elasticsearch, and for the real
stack Docker), so the setup job's Kibana requests go over HTTP on 127.0.0.1 to ``KibanaStandIn``,
built on ``tests.standins.http.StandInHTTPServer``. It answers with the responses recorded from the
Kibana API reference (``tests/fixtures/elastic/kibana-api.json``, see its README), checks the
credentials and the ``kbn-xsrf`` header the real Kibana requires, and reads the saved objects
import as Kibana does (multipart/form-data, field ``file``).
"""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Any

from tests.standins.elasticsearch import basic_auth
from tests.standins.http import StandInHTTPServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "elastic"
KIBANA_API = json.loads((FIXTURES / "kibana-api.json").read_text())


class KibanaStandIn(StandInHTTPServer):
    """Answers the setup job's Kibana requests (status, roles, saved objects import) with the
    recorded responses. ``not_ready``: how many status checks answer "unavailable" first;
    ``import_response``: the answer to every import (default: success for every object sent).
    ``imported`` holds the NDJSON of each import."""

    def __init__(self, password: str, not_ready: int = 0, import_response: dict[str, Any] | None = None):
        self.password, self.not_ready, self.import_response = password, not_ready, import_response
        self.imported: list[str] = []
        super().__init__(self.respond_kibana)

    def respond_kibana(self, req: dict[str, Any]) -> tuple[int, Any]:
        if req["headers"].get("authorization") != basic_auth(self.password):
            return 401, {"statusCode": 401, "error": "Unauthorized", "message": "[security_exception]: unable to authenticate"}
        status = KIBANA_API["endpoints"]["status"]["responses"]
        if req["method"] != "GET" and req["headers"].get("kbn-xsrf") is None:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."}
        if req["path"] == "/api/status":
            if self.not_ready:
                self.not_ready -= 1
                return status["unavailable"]["status"], status["unavailable"]["body"]
            return status["available"]["status"], status["available"]["body"]
        if req["path"].startswith("/api/security/role/") and req["method"] == "PUT":
            return 204, None
        if req["path"] == "/api/saved_objects/_import" and req["method"] == "POST":
            content = multipart_file(req)
            self.imported.append(content)
            if self.import_response:
                return 200, self.import_response
            objects = [json.loads(line) for line in content.splitlines() if line.strip()]
            return 200, {"success": True, "successCount": len(objects),
                         "successResults": [{"id": o["id"], "type": o["type"], "meta": {"title": o["attributes"].get("title")}}
                                            for o in objects]}
        return 404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


def multipart_file(req: dict[str, Any]) -> str:
    """The ``file`` field of a saved objects import (multipart/form-data), checked to hold
    exactly the form fields the Kibana reference names."""
    message = email.message_from_bytes(b"Content-Type: " + req["headers"]["content-type"].encode() + b"\r\n\r\n"
                                       + req["raw"], policy=email.policy.HTTP)
    assert message.is_multipart()
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert set(parts) == set(KIBANA_API["endpoints"]["saved_objects.import"]["form_fields"])
    return parts["file"].get_payload(decode=True).decode()
