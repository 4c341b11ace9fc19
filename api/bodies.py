"""Request bodies the routes read themselves: a job spec as JSON or YAML, validated strictly
(no coercion: `priority: false` or `gpus: "8"` are errors), and no query parameter a route
does not declare."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated

import yaml
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.errors import UnsupportedMediaType
from api.schemas import EXAMPLE_SPEC
from scheduler.models import JobSpec

MEDIA_TYPES = ("application/json", "application/yaml")
_YAML_ALIASES = ("application/x-yaml", "text/yaml")
_SPEC_REF = {"$ref": "#/components/schemas/JobSpec"}
SPEC_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _SPEC_REF, "example": EXAMPLE_SPEC},
    "application/yaml": {"schema": _SPEC_REF, "example": yaml.safe_dump(EXAMPLE_SPEC, sort_keys=False)},
}}}


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": "value_error"}])


def _as_json(value):
    if isinstance(value, (datetime, date)):  # YAML timestamps: back to the ISO text JSON would carry
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def parse_spec(raw: bytes, content_type: str) -> JobSpec:
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json" or media.endswith("+json"):
            data = json.loads(raw)
        elif media in MEDIA_TYPES or media in _YAML_ALIASES:
            data = yaml.safe_load(raw)
        else:
            raise UnsupportedMediaType(media, MEDIA_TYPES)
        if not isinstance(data, dict):
            raise _invalid("must be one job spec (a mapping)")
        text = json.dumps(data, default=_as_json, allow_nan=False)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError) as exc:  # RecursionError: absurd nesting
        where = getattr(exc, "problem_mark", None)
        raise _invalid(f"not valid {media}{f' at {where}' if where else ''}") from None
    try:
        return JobSpec.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


async def read_spec(request: Request) -> tuple[JobSpec, bytes]:
    raw = await request.body()
    return parse_spec(raw, request.headers.get("content-type", "")), raw


SpecBody = Annotated[tuple[JobSpec, bytes], Depends(read_spec)]


def _query_names(dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """A misspelt filter (`?teem=vision`) is an error, not a silently unfiltered answer; so is a parameter
    given twice (each takes one value: the last would win silently)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    unknown = sorted(set(request.query_params) - _query_names(dependant)) if dependant is not None else []
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "is not a parameter of this route",
                                       "type": "extra_forbidden"} for name in unknown])
    repeated = sorted(name for name in request.query_params if len(request.query_params.getlist(name)) > 1)
    if repeated:
        raise RequestValidationError([{"loc": ("query", name), "msg": "is given more than once, takes one value",
                                       "type": "value_error"} for name in repeated])
