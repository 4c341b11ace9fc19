"""`GET /v1/jobs/{id}` without the framework: the status read clients poll, at a fraction of the CPU.

On this project's 2-core target a status read through FastAPI costs ~0.4 ms of CPU before the
HTTP server's share, and half of that is the framework itself (route matching, dependency
resolution, response validation); `benchmarks/api.py` then tops out near 3,000 reads/s. This
pure ASGI middleware answers the plain form of the read:

    GET /v1/jobs/{id}, no query string, `Authorization: Bearer <key>` with a valid key (from
    this process' `api.deps.PrincipalCache`, or read from Redis once and cached there)

with the same use case (`scheduler.aio.AsyncStore.show_job`: the rate-limit count, the job and its
events in one round trip), the same response (`api.conditions.job_detail`) and the same error answers
(`api.errors.error_response`: 404 for a missing or another team's job, 429, 503) as the route in
`api.routers.jobs`. Anything else — another method or path, a query string, an unknown key (or
none, or a store that cannot say), an id the route's validation would refuse — goes on to FastAPI
untouched, so every refusal that needs the framework (401, 422, 405) still comes from one place.
(A key whose cache entry just expired is read again here, not in the framework: every few
seconds a burst of concurrent reads would otherwise take the slow way at once.) `tests/test_api_fastpath.py`
checks that both give the same status, headers and body for every case the fast path answers.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.conditions import job_detail
from api.deps import aio_store_of, principal_of, refused
from api.errors import all_routes, error_response, internal_error
from scheduler.errors import CloudschedError
from scheduler.records import Principal

PREFIX = "/v1/jobs/"
ROUTE = "/v1/jobs/{job_id}"
MAX_ID = 64  # the route's JobId: longer ids are the route's 422


class JobReadFastPath:
    """In front of the whole framework, inside the metrics middleware only (which counts these reads too):
    `api.app._outer_layers` puts it there."""

    def __init__(self, app: ASGIApp, api: FastAPI):
        self.app, self.api = app, api
        # Starlette builds its middleware at the first request, once every route is in place.
        self.route = next(r for r in all_routes(api) if getattr(r, "path", None) == ROUTE
                          and "GET" in (getattr(r, "methods", None) or ()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job_id = _plain_read(scope)
        key = _bearer(scope) if job_id else None
        request = Request(scope) if key else None
        who = await self._caller(request, key) if key else None
        if who is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the label the metrics middleware gives the route's own answers
        settings = self.api.state.settings
        try:
            retry_after, job, events = await aio_store_of(request).show_job(who, job_id,
                                                                            limit=settings.rate_limit_per_minute)
            refused(retry_after, request, settings, who)  # as the route: 429 beyond the limit
            body = job_detail(job, events).model_dump_json().encode()
        except CloudschedError as exc:
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        except Exception:  # outside the framework's error middleware: its 500, here
            await internal_error(scope["path"])(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def _caller(self, request: Request, key: str) -> Principal | None:
        """The key's principal (`api.deps.principal_of`); None for an unknown key, or when the store cannot
        be asked: the route answers those (401, 503)."""
        try:
            return await principal_of(request, key)
        except CloudschedError:
            return None


def _bearer(scope: Scope) -> str | None:
    """The key of `Authorization: Bearer <key>`, else None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key if scheme.lower() == "bearer" and key else None
    return None


def _plain_read(scope: Scope) -> str | None:
    """The job id of a `GET /v1/jobs/{id}` with no query string, else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
        return None
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    job_id = path[len(PREFIX):]
    return job_id if job_id and "/" not in job_id and len(job_id) <= MAX_ID else None
