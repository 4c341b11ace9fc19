"""One map from errors to RFC 9457 problem+json responses.

Bad input gets a 4xx naming the field; only a bug gives a 500, and its body says nothing
about the internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cloudsched.api")

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, *, code: str, instance: str = "", **extra) -> JSONResponse:
    body = {"type": f"urn:cloudsched:problem:{code}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_errors(errors) -> list[dict]:
    return [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors]


class ApiError(Exception):
    """Raised by routes and services; carries everything the problem document needs."""

    def __init__(self, status: int, title: str, detail: str, code: str, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.code, self.extra = status, title, detail, code, extra


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = validation_errors(exc.errors())
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem(422, "Invalid request", f"Invalid field(s): {fields}", code="validation-error",
                       instance=request.url.path, errors=errors)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return problem(exc.status, exc.title, exc.detail, code=exc.code, instance=request.url.path, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        response = problem(exc.status_code, str(exc.detail), str(exc.detail), code=f"http-{exc.status_code}",
                           instance=request.url.path)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "Internal error", "The server failed; the error is logged.", code="internal")
