"""Prometheus metrics (`cloudsched_` prefix): requests by route template and status, latency, jobs by state.

Labels are bounded: the route *template* (`/v1/jobs/{job_id}`, never an id), `unmatched`
for paths no route knows, and job states. One registry per app, so tests can build many apps.

With `cloudsched serve --workers N` each process counts its own requests, in the files of
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by `serve` before the
processes start); a scrape of any of them then reports the sums over all N.
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.errors import StoreUnavailable
from scheduler.lifecycle import JobState

log = logging.getLogger("cloudsched.api")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class JobsByState:
    """A collector that asks the store at scrape time (no state to keep in sync)."""

    def __init__(self, app_state):
        self._state = app_state

    def collect(self):
        gauge = GaugeMetricFamily("cloudsched_jobs", "Jobs by lifecycle state", labels=["state"])
        store = self._state.store
        if store is not None:
            try:
                counts = store.job_counts()
            except StoreUnavailable:
                counts = {}
            for state in JobState:
                if state in counts:
                    gauge.add_metric([state.value], counts[state])
        yield gauge


class Metrics:
    def __init__(self, app_state):
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudsched_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("cloudsched_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60))
        self.jobs_by_state = JobsByState(app_state)
        self.registry.register(self.jobs_by_state)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format; request figures summed over the serving processes."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self.jobs_by_state)
        return generate_latest(registry)


class MetricsMiddleware:
    """Counts every HTTP request once it is answered (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self._children: dict[tuple[str, str, int], tuple] = {}  # bounded: route templates, methods, statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            requests, latency = self._series(scope["method"], route, status)
            requests.inc()
            latency.observe(time.perf_counter() - start)

    def _series(self, method: str, route: str, status: int):
        """The request counter and latency histogram of one label set (`labels()` looked up once per set)."""
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (self.metrics.requests.labels(method, route, str(status)),
                                           self.metrics.latency.labels(method, route))
        return found
