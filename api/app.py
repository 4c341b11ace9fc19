"""The FastAPI application: thin routers over the scheduler's services, one error map."""

from __future__ import annotations

import gc

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from api import errors, ui
from api.deps import PrincipalCache, authenticate, counted_caller, no_unknown_query
from api.fastpath import JobReadFastPath
from api.limits import BodyLimitMiddleware
from api.metrics import Metrics, MetricsMiddleware
from api.routers import catalog, jobs, ops, plans, reports, validate
from scheduler.models import JobSpec
from scheduler.settings import Settings, get_settings
from scheduler.store import Store, open_store

DESCRIPTION = """Place GPU jobs across centralized and distributed clouds at minimum cost.

Every `/v1` route needs `Authorization: Bearer <key>` (`cloudsched keys create`). Errors are
RFC 9457 `application/problem+json` naming the field at fault."""


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """The app on `store` (default: the configured one, opened at the first request)."""
    settings = settings or get_settings()
    # FastAPIOffline serves Swagger UI and ReDoc assets itself: there is no CDN offline. FastAPI's own
    # OpenTelemetry hooks are off: metrics are Prometheus (/metrics), and the hooks' check for a
    # configured provider costs every request a few percent of its time even when there is none.
    app = FastAPIOffline(title="cloudsched", version="0.1.0", description=DESCRIPTION,
                         telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings, app.state.store = settings, store
    app.state.principals = PrincipalCache()
    app.state.aio = None  # the store's asyncio twin for the hot path, made at first use (api.deps.aio_store_of)
    app.state.metrics = Metrics(app.state)
    errors.install(app)
    app.include_router(ops.router)
    ui.install(app)  # the ops review page under /ui (cookie sessions on the same keys)
    # The key first (401 before any 422), then the count against the caller's per-minute limit (429),
    # then no unknown query parameters. A route asking for CurrentPrincipal again gets the same, cached
    # answer: one authentication, one count per request. The jobs router takes authentication only:
    # showing a job counts in the same Redis script that reads it; its other routes ask for CurrentPrincipal.
    v1 = {"dependencies": [Depends(counted_caller), Depends(no_unknown_query)], "responses": errors.V1_PROBLEMS}
    v1_counting_itself = {"dependencies": [Depends(authenticate), Depends(no_unknown_query)],
                          "responses": errors.V1_PROBLEMS}
    app.include_router(jobs.router, **v1_counting_itself)
    app.include_router(validate.router, **v1)
    app.include_router(catalog.router, **v1)
    app.include_router(plans.router, **v1)
    app.include_router(reports.router, **v1)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    _outer_layers(app)
    app.openapi = lambda: _openapi(app)
    return app


def _outer_layers(app: FastAPI) -> None:
    """Two layers outside the framework's own middleware, in the stack Starlette builds at the first request:

    MetricsMiddleware -> JobReadFastPath -> FastAPI's (errors, telemetry, body size) -> ours -> routes

    The metrics count every answer (413s, 500s and the fast path's reads too), and the plain
    `GET /v1/jobs/{id}` (api.fastpath) skips the seven layers it does not need: ~10 % of its CPU.
    (`FastAPIOffline` is a function, not a class to extend: the method is replaced on the instance.)
    """
    framework = app.build_middleware_stack
    app.build_middleware_stack = lambda: MetricsMiddleware(JobReadFastPath(framework(), api=app),  # type: ignore[method-assign]
                                                           metrics=app.state.metrics)


def create_app_from_environment() -> FastAPI:
    """The app of one `cloudsched serve --workers N` process: `CLOUDSCHED_*` settings, the store opened now."""
    settings = get_settings()
    return settled(create_app(settings, open_store(settings)))


def settled(app: FastAPI) -> FastAPI:
    """Ready `app` to serve from this process: the OpenAPI schema built now, and every object there is
    so far (modules, routes, models: ~150,000) left out of the garbage collector's full passes.

    A full pass over them takes tens of milliseconds (85 ms measured), and at thousands of requests
    a second one comes every few seconds: it was the slowest 1 % of status reads. `gc.freeze()` is
    the standard remedy for a long-lived server whose startup objects live as long as it does.
    """
    app.openapi()
    gc.collect()
    gc.freeze()
    return app


def _openapi(app: FastAPI) -> dict:
    """The generated schema plus `JobSpec`, which `POST /v1/jobs` reads itself (JSON or YAML)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        for name, definition in spec_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["JobSpec"] = spec_schema
        app.openapi_schema = schema
    return app.openapi_schema
