"""One map from errors to RFC 9457 problem+json responses.

Services raise `CloudschedError`s; this is the only place that turns them into HTTP. Bad
input gets a 4xx naming the field; only a bug gives a 500, and its body says nothing about
the internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from scheduler.errors import (
    AlreadyExists,
    CloudschedError,
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("cloudsched.api")

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, *, code: str, instance: str = "", headers: dict | None = None,
            **extra) -> JSONResponse:
    body = {"type": f"urn:cloudsched:problem:{code}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(jsonable_encoder(extra))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc) -> str:
    """`gpus`, `launch.env`, `cursor`: the field as the caller wrote it, without FastAPI's location prefix."""
    loc = tuple(loc)
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:] or loc
    return ".".join(str(p) for p in loc)


def validation_errors(errors) -> list[dict]:
    return [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors]


class ApiError(Exception):
    """Raised by routes; carries everything the problem document needs."""

    def __init__(self, status: int, title: str, detail: str, code: str, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.code, self.extra = status, title, detail, code, extra


class RateLimited(CloudschedError):
    code = "rate-limited"

    def __init__(self, limit: int, retry_after_s: int):
        super().__init__(f"more than {limit} requests in a minute: retry in {retry_after_s} s",
                         limit=limit, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class BodyTooLarge(CloudschedError):
    code = "body-too-large"

    def __init__(self, limit: int):
        super().__init__(f"the request body is over {limit:,} bytes", field="body", max_body_bytes=limit)


class UnsupportedMediaType(CloudschedError):
    code = "unsupported-media-type"

    def __init__(self, got: str, supported: tuple[str, ...]):
        super().__init__(f"Content-Type {got or '(none)'!r} is not one of {', '.join(supported)}",
                         field="Content-Type", supported=list(supported))


# (class, status, title), most specific first: the first match wins.
_STATUS: list[tuple[type[CloudschedError], int, str]] = [
    (InvalidArgument, 422, "Invalid request"),
    (Unauthenticated, 401, "Unauthenticated"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not found"),
    (AlreadyExists, 409, "Already exists"),
    (Conflict, 409, "Conflict"),
    (RateLimited, 429, "Too many requests"),
    (BodyTooLarge, 413, "Request body too large"),
    (UnsupportedMediaType, 415, "Unsupported media type"),
    (StoreUnavailable, 503, "Service unavailable"),
]


PROBLEM_SCHEMA = {
    "type": "object", "title": "Problem", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; `field` or `errors[].field` name what is at fault.",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "instance": {"type": "string"}, "field": {"type": "string"},
                   "errors": {"type": "array", "items": {"type": "object", "properties": {
                       "field": {"type": "string"}, "message": {"type": "string"}}}}},
    "additionalProperties": True,
}
_WORDS = {400: "Bad request", 401: "No key, or not a key of this installation", 403: "Not allowed for this role",
          404: "No such record (or another team's)", 409: "Conflicts with the stored state",
          413: "Request body too large", 415: "Unsupported Content-Type", 422: "Invalid field(s)",
          429: "Rate limit; see Retry-After", 503: "Store unavailable; retry"}


def problem_responses(*codes: int) -> dict:
    """OpenAPI `responses` for problem+json answers."""
    return {code: {"description": _WORDS[code], "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
            for code in codes}


def problem_doc(code: int, description: str) -> dict:
    return {code: {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}}


V1_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)


def error_response(exc: CloudschedError, instance: str = "") -> JSONResponse:
    status, title = next(((s, t) for cls, s, t in _STATUS if isinstance(exc, cls)), (400, "Bad request"))
    headers, extra = {}, dict(exc.details)
    detail = exc.message
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="cloudsched"'
    elif status == 429:
        headers["Retry-After"] = str(exc.retry_after_s)
    elif status == 503:
        headers["Retry-After"] = "1"
        detail, extra = "The store cannot be reached; retry shortly.", {}  # its message names sockets and hosts
    if isinstance(exc, InvalidArgument):
        extra["errors"] = [{"field": exc.field, "message": exc.message}]
    return problem(status, title, detail, code=exc.code, instance=instance, headers=headers, **extra)


def all_routes(app: FastAPI):
    """Every route of the app, those of included routers too (FastAPI ≥ 0.16x nests them)."""
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    return contexts(app.routes) if contexts else app.routes


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at `path` (routes of included routers too)."""
    methods: set[str] = set()
    for route in all_routes(app):
        template = getattr(route, "path", None)
        if template and route.methods and compile_path(template)[0].match(path):
            methods |= set(route.methods)
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = validation_errors(exc.errors())
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem(422, "Invalid request", f"Invalid field(s): {fields}", code="validation-error",
                       instance=request.url.path, errors=errors)

    @app.exception_handler(CloudschedError)
    async def _domain(request: Request, exc: CloudschedError):
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable on %s: %s", request.url.path, exc.message)
        return error_response(exc, request.url.path)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return problem(exc.status, exc.title, exc.detail, code=exc.code, instance=request.url.path, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, CloudschedError):  # FastAPI wraps errors met while reading a body in a 400
            return error_response(exc.__cause__, request.url.path)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists the methods of the first route of the path only
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem(exc.status_code, str(exc.detail), str(exc.detail), code=f"http-{exc.status_code}",
                       instance=request.url.path, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return internal_error(request.url.path)


def internal_error(path: str) -> JSONResponse:
    """The 500 of a bug, called while its exception is handled: logged with the traceback; the body
    says nothing about it."""
    log.exception("unhandled error on %s", path)
    return problem(500, "Internal error", "The server failed; the error is logged.", code="internal")
