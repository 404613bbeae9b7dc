"""A generic HTTP stand-in server: the one base every stand-in of the tests is built on.

It is NOT Elasticsearch, Kibana or any product: it is a ``ThreadingHTTPServer`` on 127.0.0.1 that
records every request and lets a callback decide the answer. The products cannot run here
(Elasticsearch and Kibana need far more than a test run has), so the stand-ins built on this class
(``tests.standins.elasticsearch``, ``tests.standins.kibana``) reproduce the answers recorded from
the products' references, and the code under test talks to them over real HTTP with its real
client (urllib, requests, elasticsearch-py).

    server = StandInHTTPServer(lambda req: (200, {"ok": True}), product="Elasticsearch")
    ...  # server.url, server.requests
    server.close()        # or: with StandInHTTPServer(...) as server:

Each recorded request is a dict: ``method``, ``path`` (unquoted), ``query`` (the raw query
string), ``params`` (the query parameters, one value each), ``headers`` (lower-cased names) and
``raw`` (the body's bytes). The callback returns ``(status, body)`` or ``(status, body, headers)``:
``body`` None sends no body, ``bytes`` are sent as they are, anything else as JSON; a body is sent
as ``Content-Type: application/json`` unless ``headers`` says otherwise.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Request = dict[str, Any]
Respond = Callable[[Request], tuple]


class StandInHTTPServer:
    """A tiny HTTP server on 127.0.0.1 that records every request and answers via ``respond``.

    ``product``: sent as ``X-Elastic-Product`` on every answer (the Elasticsearch clients refuse
    a server without it). ``tls``: ``(certificate file, key file)`` to serve HTTPS instead.
    """

    def __init__(self, respond: Respond, *, product: str | None = None, tls: tuple[str, str] | None = None):
        self.requests: list[Request] = []
        self.respond = respond
        self.product = product
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                req = {"method": self.command, "path": urllib.parse.unquote(url.path), "query": url.query,
                       "params": dict(urllib.parse.parse_qsl(url.query)),
                       "headers": {k.lower(): v for k, v in self.headers.items()}, "raw": raw}
                outer.requests.append(req)
                status, body, *extra = outer.respond(req)
                headers = {"Content-Type": "application/json"} if body is not None else {}
                headers.update(extra[0] if extra else {})
                if body is None:
                    payload = b""
                elif isinstance(body, bytes):
                    payload = body
                else:
                    payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    if outer.product:
                        self.send_header("X-Elastic-Product", outer.product)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting (timeout tests)
                    pass

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a handler still waiting never holds up close()
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StandInHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
