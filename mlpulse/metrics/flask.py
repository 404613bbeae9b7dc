"""A Flask extension for HTTP and process metrics, and the ``/metrics`` endpoint.

    from mlpulse.metrics.flask import FlaskMetrics
    metrics = FlaskMetrics(app)          # or FlaskMetrics().init_app(app)

Routes are labelled by their template (``/v1/items/<int:id>``), never the raw path; anything
that matched no route is ``<unmatched>``; unusual methods are ``OTHER``. Under gunicorn set
``PROMETHEUS_MULTIPROC_DIR`` and use ``mlpulse.gunicorn`` hooks: the endpoint then sums every
worker's values.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlpulse.metrics.multiprocess import multiprocess_dir, scrape_registry
from mlpulse.metrics.process import ProcessMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "<unmatched>"


class FlaskMetrics:
    def __init__(self, app: Flask | None = None, *, registry: CollectorRegistry | None = None,
                 path: str = "/metrics", process_interval: float = 5.0):
        # A registry of our own, so several apps (tests) can live in one process.
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.path = path
        labels = ("method", "route", "status")
        self.requests = Counter("mlpulse_http_requests", "HTTP requests by method, route template and status",
                                labels, registry=self.registry)
        self.duration = Histogram("mlpulse_http_request_duration_seconds", "HTTP request latency, in the app",
                                  labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("mlpulse_http_requests_in_flight", "Requests being handled, all workers",
                               registry=self.registry, multiprocess_mode="livesum")
        self.size = Histogram("mlpulse_http_request_size_bytes", "Request body size", ("method", "route"),
                              buckets=SIZE_BUCKETS, registry=self.registry)
        self.process = ProcessMetrics(self.registry, interval=process_interval)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.before_request(self._before)
        app.after_request(self._after)
        app.teardown_request(self._teardown)
        app.add_url_rule(self.path, "mlpulse_metrics", self.metrics_view, methods=["GET"])
        app.extensions["mlpulse_metrics"] = self

    def _precreate(self) -> None:
        """Zero-valued children for every route, its methods, and statuses 200 and 500, so a rate()
        or an error ratio sees the first burst instead of starting at the first sample."""
        from flask import current_app

        for rule in current_app.url_map.iter_rules():
            for method in sorted((rule.methods or set()) & METHODS - {"HEAD", "OPTIONS"}):
                for status in ("200", "500"):
                    self.requests.labels(method, rule.rule, status)
                    self.duration.labels(method, rule.rule, status)

    def _before(self) -> None:
        if self.process.ensure_running():
            self._precreate()
        g._mlpulse_start = time.perf_counter()
        self.in_flight.inc()

    def _after(self, response: Response) -> Response:
        start = g.pop("_mlpulse_start", None)
        if start is None:  # before_request did not run (an earlier hook refused the request)
            return response
        g._mlpulse_counted = True
        method = request.method if request.method in METHODS else "OTHER"
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        status = str(response.status_code)
        self.requests.labels(method, route, status).inc()
        self.duration.labels(method, route, status).observe(time.perf_counter() - start)
        if request.content_length:
            self.size.labels(method, route).observe(request.content_length)
        return response

    def _teardown(self, _exc: BaseException | None) -> None:
        if g.pop("_mlpulse_start", None) is not None or g.pop("_mlpulse_counted", False):
            self.in_flight.dec()

    def metrics_view(self) -> Response:
        path = multiprocess_dir()
        registry = scrape_registry(path) if path else self.registry
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
