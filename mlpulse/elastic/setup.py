"""The setup job: users, roles, ILM policy, index template, data stream and Kibana objects.

Two halves, so the requests can be checked without a server:

- ``build_plan(artifacts, passwords)`` is pure: it returns the list of steps (readiness waits and
  HTTP requests, in order) that the job performs. ``tests/contract/test_elastic_contract.py`` compares it
  with the Elasticsearch and Kibana API references.
- ``Executor.run(plan)`` sends them: Elasticsearch through elasticsearch-py, Kibana through
  requests. It waits for each service with a bounded timeout, retries what a restarting server
  answers (connection refused, 429, 502, 503, 504), treats "already exists" as done, and stops at
  the first real error with a message naming the step, the request and the server's reason.

Re-running the job is safe and converges: every request is a create-or-update (roles, users and
passwords, ILM policy, template, Kibana role, saved objects with overwrite) except creating the
data stream, where "already exists" counts as done.

Passwords come from the environment only; there are no defaults (``passwords_from_env``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpulse.elastic import (
    DATA_STREAM,
    ES_ROLES_DIR,
    ILM_POLICY,
    ILM_POLICY_FILE,
    INDEX_TEMPLATE,
    INDEX_TEMPLATE_FILE,
    KIBANA_ROLES_DIR,
    KIBANA_SYSTEM_USER,
    KIBANA_VIEWER_ROLE,
    READER_ROLE,
    READER_USER,
    SAVED_OBJECTS_FILE,
    VIEWER_USER,
    WRITER_ROLE,
    WRITER_USER,
)

log = logging.getLogger("mlpulse.elastic.setup")

# Variable -> who uses the password. All are required: a secret never has a default.
PASSWORD_VARIABLES = {
    "ELASTIC_PASSWORD": "user 'elastic': the setup job signs in with it",
    "KIBANA_SYSTEM_PASSWORD": f"built-in user '{KIBANA_SYSTEM_USER}': Kibana's connection to Elasticsearch",
    "LOGSTASH_WRITER_PASSWORD": f"user '{WRITER_USER}': Logstash",
    "MLPULSE_READER_PASSWORD": f"user '{READER_USER}': Grafana and the drift exporter",
    "MLPULSE_VIEWER_PASSWORD": f"user '{VIEWER_USER}': people reading the Kibana dashboard",
}
MIN_PASSWORD_LENGTH = 6  # Elasticsearch refuses shorter passwords for native users

# Statuses a starting or overloaded server answers; anything else is an answer to act on.
RETRYABLE_STATUSES = (429, 502, 503, 504)
ELASTICSEARCH = "elasticsearch"
KIBANA = "kibana"


class SetupError(RuntimeError):
    """The setup cannot complete; the message says which step, what was sent and what came back."""


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Passwords:
    elastic: str
    kibana_system: str
    writer: str
    reader: str
    viewer: str

    def __repr__(self) -> str:  # never print a secret by accident
        return "Passwords(***)"


def passwords_from_env(environ: Mapping[str, str]) -> Passwords:
    """Every password from the environment; one error listing all that are missing or too short."""
    problems = []
    for name, who in PASSWORD_VARIABLES.items():
        value = environ.get(name, "")
        if not value:
            problems.append(f"{name} is not set ({who})")
        elif len(value) < MIN_PASSWORD_LENGTH:
            problems.append(f"{name} is shorter than {MIN_PASSWORD_LENGTH} characters ({who})")
    if problems:
        raise SetupError("passwords missing; set them in .env (see .env.example):\n  " + "\n  ".join(problems))
    return Passwords(elastic=environ["ELASTIC_PASSWORD"], kibana_system=environ["KIBANA_SYSTEM_PASSWORD"],
                     writer=environ["LOGSTASH_WRITER_PASSWORD"], reader=environ["MLPULSE_READER_PASSWORD"],
                     viewer=environ["MLPULSE_VIEWER_PASSWORD"])


@dataclass(frozen=True)
class Artifacts:
    """What the job installs: the generated files of ``mlpulse generate elastic``."""

    index_template: dict[str, Any]
    ilm_policy: dict[str, Any]
    es_roles: dict[str, dict[str, Any]]
    kibana_roles: dict[str, dict[str, Any]]
    saved_objects: str  # NDJSON

    @classmethod
    def from_files(cls, root: str | Path) -> Artifacts:
        """Read the committed files under a checkout (or the setup image's copy of them)."""
        root = Path(root)

        def load(rel: str) -> Any:
            path = root / rel
            try:
                return json.loads(path.read_text())
            except FileNotFoundError:
                raise SetupError(f"{path} is missing: run `mlpulse generate elastic`") from None
            except json.JSONDecodeError as e:
                raise SetupError(f"{path} is not valid JSON: {e}") from None

        def roles(rel: str) -> dict[str, dict[str, Any]]:
            return {p.stem: load(f"{rel}/{p.name}") for p in sorted((root / rel).glob("*.json"))}

        objects = root / SAVED_OBJECTS_FILE
        if not objects.is_file():
            raise SetupError(f"{objects} is missing: run `mlpulse generate elastic`")
        artifacts = cls(index_template=load(INDEX_TEMPLATE_FILE), ilm_policy=load(ILM_POLICY_FILE),
                        es_roles=roles(ES_ROLES_DIR), kibana_roles=roles(KIBANA_ROLES_DIR),
                        saved_objects=objects.read_text())
        for role in (WRITER_ROLE, READER_ROLE):
            if role not in artifacts.es_roles:
                raise SetupError(f"{root / ES_ROLES_DIR}/{role}.json is missing")
        if KIBANA_VIEWER_ROLE not in artifacts.kibana_roles:
            raise SetupError(f"{root / KIBANA_ROLES_DIR}/{KIBANA_VIEWER_ROLE}.json is missing")
        return artifacts

    @classmethod
    def from_bundles(cls, directories: Sequence[str | Path]) -> Artifacts:
        """Generate everything in memory from bundles (for a model the committed files do not cover)."""
        from mlpulse.elastic.kibana import build_kibana_roles, build_saved_objects, to_ndjson
        from mlpulse.elastic.mapping import (
            build_es_roles,
            build_ilm_policy,
            build_index_template,
            models_from_bundles,
        )

        models = models_from_bundles(directories)
        return cls(index_template=build_index_template(models), ilm_policy=build_ilm_policy(),
                   es_roles=build_es_roles(), kibana_roles=build_kibana_roles(),
                   saved_objects=to_ndjson(build_saved_objects(models)))


def render_files(models: Sequence[Any]) -> dict[str, str]:
    """Path (relative to the repository root) -> content of every generated file, for the given
    ``mapping.ModelSchema`` list. ``mlpulse generate elastic`` writes them; a test checks
    that regenerating gives the committed bytes."""
    from mlpulse.elastic.kibana import build_kibana_roles, build_saved_objects, to_ndjson
    from mlpulse.elastic.mapping import build_es_roles, build_ilm_policy, build_index_template, dumps

    files = {INDEX_TEMPLATE_FILE: dumps(build_index_template(models)), ILM_POLICY_FILE: dumps(build_ilm_policy())}
    files.update({f"{ES_ROLES_DIR}/{name}.json": dumps(body) for name, body in build_es_roles().items()})
    files.update({f"{KIBANA_ROLES_DIR}/{name}.json": dumps(body) for name, body in build_kibana_roles().items()})
    files[SAVED_OBJECTS_FILE] = to_ndjson(build_saved_objects(models))
    return files


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class WaitFor:
    """Poll until the service answers as ready, for at most the executor's wait timeout."""

    service: str
    path: str
    description: str
    params: dict[str, str] = field(default_factory=dict)
    method: str = "GET"


@dataclass(frozen=True)
class Request:
    service: str
    method: str
    path: str
    description: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON body
    upload: tuple[str, str, str] | None = None  # multipart/form-data: (field, file name, content)
    ok_statuses: tuple[int, ...] = (200,)
    # Elasticsearch error types that mean the desired state already holds (idempotent re-runs).
    already_done: tuple[str, ...] = ()
    secret: bool = False  # the body holds a password


Step = WaitFor | Request


def build_plan(artifacts: Artifacts, passwords: Passwords, *, data_stream: str = DATA_STREAM) -> list[Step]:
    """Every step of the setup job, in order. Pure: no I/O."""
    es, kb = ELASTICSEARCH, KIBANA
    users = [
        (WRITER_USER, passwords.writer, [WRITER_ROLE], "Logstash writer (mlpulse)"),
        (READER_USER, passwords.reader, [READER_ROLE], "mlpulse reader: Grafana, drift exporter"),
        (VIEWER_USER, passwords.viewer, [READER_ROLE, KIBANA_VIEWER_ROLE], "mlpulse Kibana viewer"),
    ]
    plan: list[Step] = [
        WaitFor(es, "/_cluster/health", "Elasticsearch: cluster at least yellow",
                params={"wait_for_status": "yellow", "timeout": "5s"}),
        # Kibana cannot connect before its system user has the password kibana.yml names.
        Request(es, "POST", f"/_security/user/{KIBANA_SYSTEM_USER}/_password",
                f"password of built-in user {KIBANA_SYSTEM_USER}", body={"password": passwords.kibana_system},
                secret=True),
    ]
    for name, body in sorted(artifacts.es_roles.items()):
        plan.append(Request(es, "PUT", f"/_security/role/{name}", f"role {name}", body=body))
    for username, password, roles, full_name in users:
        plan.append(Request(es, "POST", f"/_security/user/{username}", f"user {username}",
                            body={"password": password, "roles": roles, "full_name": full_name,
                                  "metadata": {"mlpulse": True}}, secret=True))
    plan += [
        Request(es, "PUT", f"/_ilm/policy/{ILM_POLICY}", f"ILM policy {ILM_POLICY}", body=artifacts.ilm_policy),
        Request(es, "PUT", f"/_index_template/{INDEX_TEMPLATE}", f"index template {INDEX_TEMPLATE}",
                body=artifacts.index_template),
        # Created up front so readers (Kibana, Grafana, the exporter) find it before the first event.
        Request(es, "PUT", f"/_data_stream/{data_stream}", f"data stream {data_stream}",
                already_done=("resource_already_exists_exception",)),
        # A template change reaches existing streams only at rollover; new fields are added to the
        # current write index now (a conflicting change fails here and needs a rollover).
        Request(es, "PUT", f"/{data_stream}/_mapping", f"mapping of the write index of {data_stream}",
                params={"write_index_only": "true"}, body=artifacts.index_template["template"]["mappings"]),
        WaitFor(kb, "/api/status", "Kibana: status available"),
    ]
    for name, body in sorted(artifacts.kibana_roles.items()):
        plan.append(Request(kb, "PUT", f"/api/security/role/{name}", f"Kibana role {name}", body=body,
                            ok_statuses=(204,)))
    plan.append(Request(kb, "POST", "/api/saved_objects/_import", "Kibana saved objects (data view, searches, "
                        "visualizations, dashboard)", params={"overwrite": "true"},
                        upload=("file", "saved-objects.ndjson", artifacts.saved_objects)))
    return plan


def describe_plan(plan: Sequence[Step]) -> list[dict[str, Any]]:
    """The plan as JSON-ready dicts, passwords replaced by ``***`` (for ``plan`` and the logs)."""
    out = []
    for step in plan:
        item: dict[str, Any] = {"service": step.service, "method": step.method, "path": step.path,
                                "description": step.description}
        if step.params:
            item["params"] = dict(step.params)
        if isinstance(step, WaitFor):
            item["wait"] = True
        else:
            if step.body is not None:
                item["body"] = _redact(step.body) if step.secret else step.body
            if step.upload:
                item["upload"] = {"field": step.upload[0], "filename": step.upload[1],
                                  "bytes": len(step.upload[2].encode())}
        out.append(item)
    return out


def _redact(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: "***" if k == "password" else _redact(v) for k, v in body.items()}
    return body


# ---------------------------------------------------------------------------------------------
# The executor


@dataclass(frozen=True)
class Settings:
    elasticsearch_url: str = "https://elasticsearch:9200"
    kibana_url: str = "http://kibana:5601"
    ca_certs: str | None = None  # CA of the Elasticsearch (and Kibana, if https) certificates
    username: str = "elastic"
    wait_timeout_s: float = 300.0  # per readiness wait
    request_timeout_s: float = 30.0
    retries: int = 5  # per request, on connection errors and RETRYABLE_STATUSES
    backoff_s: float = 1.0  # first retry delay, doubled each time, at most 10 s

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        try:
            return cls(
                elasticsearch_url=environ.get("MLPULSE_ES_URL", cls.elasticsearch_url),
                kibana_url=environ.get("MLPULSE_KIBANA_URL", cls.kibana_url),
                ca_certs=environ.get("MLPULSE_ES_CA_CERTS") or None,
                wait_timeout_s=float(environ.get("MLPULSE_SETUP_WAIT_TIMEOUT", cls.wait_timeout_s)),
            )
        except ValueError as e:
            raise SetupError(f"MLPULSE_SETUP_WAIT_TIMEOUT is not a number of seconds: {e}") from None


@dataclass(frozen=True)
class Outcome:
    description: str
    status: int
    result: str  # "ready", "created", "updated", "done", "already exists"


class _Unreachable(Exception):
    """No HTTP answer (connection refused, reset, timeout): worth retrying."""


class Executor:
    """Sends a plan. ``sleep`` and ``clock`` are injectable so tests need not wait."""

    def __init__(self, settings: Settings, password: str, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import requests

        from elasticsearch import Elasticsearch

        self.settings = settings
        self.sleep, self.clock = sleep, clock
        # Retries are ours (same policy for both services, visible in the log), not the client's.
        self.es = Elasticsearch(settings.elasticsearch_url, basic_auth=(settings.username, password),
                                ca_certs=settings.ca_certs, request_timeout=settings.request_timeout_s,
                                max_retries=0, retry_on_timeout=False)
        self.kibana = requests.Session()
        self.kibana.auth = (settings.username, password)
        # Kibana refuses state-changing requests without this header (CSRF protection).
        self.kibana.headers["kbn-xsrf"] = "true"
        if settings.ca_certs:
            self.kibana.verify = settings.ca_certs

    # -- one HTTP exchange ----------------------------------------------------------------------

    def _send(self, step: Step) -> tuple[int, Any]:
        if step.service == ELASTICSEARCH:
            return self._send_es(step)
        return self._send_kibana(step)

    def _send_es(self, step: Step) -> tuple[int, Any]:
        from elastic_transport import TlsError

        from elasticsearch import ApiError, TransportError

        body = step.body if isinstance(step, Request) else None
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        try:
            resp = self.es.perform_request(step.method, step.path, params=step.params or None, headers=headers,
                                           body=body)
            return resp.meta.status, resp.body
        except ApiError as e:
            return e.meta.status, e.body
        except TlsError as e:
            raise SetupError(f"TLS with Elasticsearch at {self.settings.elasticsearch_url} failed: {e}. "
                             "Is MLPULSE_ES_CA_CERTS the CA that signed its certificate?") from None
        except TransportError as e:
            # .message holds the cause (refused, reset, timed out); str(e) is often generic.
            raise _Unreachable(f"{type(e).__name__}: {e.message or e}") from None

    def _send_kibana(self, step: Step) -> tuple[int, Any]:
        import requests

        url = self.settings.kibana_url.rstrip("/") + step.path
        kwargs: dict[str, Any] = {"params": step.params or None, "timeout": self.settings.request_timeout_s}
        if isinstance(step, Request):
            if step.upload:
                field_name, filename, content = step.upload
                kwargs["files"] = {field_name: (filename, content.encode(), "application/ndjson")}
            elif step.body is not None:
                kwargs["json"] = step.body
        try:
            resp = self.kibana.request(step.method, url, **kwargs)
        except requests.exceptions.SSLError as e:
            raise SetupError(f"TLS with Kibana at {self.settings.kibana_url} failed: {e}") from None
        except requests.RequestException as e:
            raise _Unreachable(f"{type(e).__name__}: {e}") from None
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.text[:500]
        return resp.status_code, body

    # -- steps ------------------------------------------------------------------------------------

    def run(self, plan: Sequence[Step]) -> list[Outcome]:
        outcomes = []
        for step in plan:
            outcome = self._wait(step) if isinstance(step, WaitFor) else self._request(step)
            log.info("%-60s %s", step.description, outcome.result)
            outcomes.append(outcome)
        return outcomes

    def _url(self, step: Step) -> str:
        base = self.settings.elasticsearch_url if step.service == ELASTICSEARCH else self.settings.kibana_url
        return base.rstrip("/") + step.path

    def _wait(self, step: WaitFor) -> Outcome:
        deadline = self.clock() + self.settings.wait_timeout_s
        delay = self.settings.backoff_s
        name = "Elasticsearch" if step.service == ELASTICSEARCH else "Kibana"
        last = "no answer yet"
        while True:
            try:
                status, body = self._send(step)
            except _Unreachable as e:
                status, body, last = 0, None, str(e)
            if status in (401, 403):
                raise SetupError(
                    f"{name} at {self._url(step)} refused user '{self.settings.username}' ({status}): "
                    f"{_reason(body)}. Check ELASTIC_PASSWORD; Elasticsearch keeps the password of its first "
                    "start (in its data volume), so editing .env later does not change it.")
            if status:
                ready, last = _readiness(step.service, status, body)
                if ready:
                    return Outcome(step.description, status, "ready")
            if self.clock() + delay > deadline:
                raise SetupError(f"{name} at {self._url(step)} not ready after {self.settings.wait_timeout_s:.0f} s "
                                 f"(MLPULSE_SETUP_WAIT_TIMEOUT); last answer: {last}")
            log.info("waiting for %s: %s", name, last)
            self.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _request(self, step: Request) -> Outcome:
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                status, body = self._send(step)
            except _Unreachable as e:
                status, body, why = 0, None, str(e)
            else:
                why = f"{status} {_reason(body)}"
            if status and status not in RETRYABLE_STATUSES:
                return self._judge(step, status, body)
            if attempt == self.settings.retries:
                break
            log.info("%s: %s; retrying in %.0f s", step.description, why, delay)
            self.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise SetupError(f"{step.description}: {step.method} {self._url(step)} failed after "
                         f"{self.settings.retries + 1} attempts; last: {why}")

    def _judge(self, step: Request, status: int, body: Any) -> Outcome:
        error_type = _error_type(body)
        if status in step.ok_statuses:
            if step.upload:
                _check_import(step, body)
                return Outcome(step.description, status, f"done ({body.get('successCount')} objects)")
            return Outcome(step.description, status, _summary(body))
        if error_type in step.already_done:
            return Outcome(step.description, status, "already exists")
        hint = {401: " (credentials refused)", 403: " (user lacks the privilege)"}.get(status, "")
        raise SetupError(f"{step.description}: {step.method} {self._url(step)} answered {status}{hint}: "
                         f"{_reason(body)}")


def _readiness(service: str, status: int, body: Any) -> tuple[bool, str]:
    if service == ELASTICSEARCH:
        health = body.get("status") if isinstance(body, dict) else None
        return status == 200 and health in ("yellow", "green"), f"{status}, cluster status {health}"
    level = None
    if isinstance(body, dict):
        level = (body.get("status") or {}).get("overall", {}).get("level")
    # degraded: some plugin is unhappy, but the APIs the job needs answer.
    return status == 200 and level in ("available", "degraded"), f"{status}, overall level {level}"


def _error_type(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("type")
    return None


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Elasticsearch
            return f"{error.get('type')}: {error.get('reason')}"
        if "message" in body:  # Kibana
            return f"{error or ''} {body['message']}".strip()
    return str(body)[:500] if body is not None else "(no body)"


def _summary(body: Any) -> str:
    if isinstance(body, dict):
        if "created" in body:  # users
            return "created" if body["created"] else "updated"
        if isinstance(body.get("role"), dict):  # roles
            return "created" if body["role"].get("created") else "updated"
    return "done"


def _check_import(step: Request, body: Any) -> None:
    if isinstance(body, dict) and body.get("success") is True:
        return
    errors = body.get("errors", []) if isinstance(body, dict) else []
    details = []
    for e in errors[:20]:
        err = e.get("error", {})
        missing = ", ".join(f"{r.get('type')}/{r.get('id')}" for r in err.get("references", []))
        details.append(f"{e.get('type')}/{e.get('id')}: {err.get('type')}" + (f" (missing {missing})" if missing else ""))
    raise SetupError(f"{step.description}: the import did not succeed: " + ("; ".join(details) or _reason(body)))
