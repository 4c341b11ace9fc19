"""Jobs: submit (JSON or YAML, idempotent), list, show with conditions and events, cancel."""

from __future__ import annotations

import json
from typing import Annotated

import yaml
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.conditions import job_conditions
from api.deps import CurrentPrincipal, RawBody, StoreDep
from api.errors import UnsupportedMediaType
from api.schemas import EXAMPLE_SPEC, JobDetail, JobPage, JobPublic
from scheduler import queries, services
from scheduler.lifecycle import JobState
from scheduler.models import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MEDIA_TYPES = ("application/json", "application/yaml")
_YAML_ALIASES = ("application/x-yaml", "text/yaml")
JobId = Annotated[str, Path(max_length=64, examples=["job_01jd2k8q6v3m9x4c7b2n5r8t1w"])]

_SPEC_REF = {"$ref": "#/components/schemas/JobSpec"}
_SUBMIT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _SPEC_REF, "example": EXAMPLE_SPEC},
    "application/yaml": {"schema": _SPEC_REF, "example": yaml.safe_dump(EXAMPLE_SPEC, sort_keys=False)},
}}}


def _parse_spec(raw: bytes, content_type: str) -> JobSpec:
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json" or media.endswith("+json"):
            data = json.loads(raw)
        elif media in MEDIA_TYPES or media in _YAML_ALIASES:
            data = yaml.safe_load(raw)
        else:
            raise UnsupportedMediaType(media, MEDIA_TYPES)
    except (ValueError, RecursionError, yaml.YAMLError) as exc:  # RecursionError: absurdly nested input
        problem_at = getattr(exc, "problem_mark", None) or getattr(exc, "lineno", None)
        where = f" at {problem_at}" if problem_at else ""
        raise RequestValidationError([{"loc": ("body",), "msg": f"not valid {media}{where}",
                                       "type": "value_error"}]) from None
    if not isinstance(data, dict):
        raise RequestValidationError([{"loc": ("body",), "msg": "must be one job spec (a mapping)",
                                       "type": "value_error"}])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


@router.post("", status_code=201, response_model=JobPublic, openapi_extra=_SUBMIT_BODY,
             summary="Submit a job (JSON or YAML)",
             responses={200: {"model": JobPublic, "description": "Same Idempotency-Key and body: the original job"},
                        409: {"description": "Name taken, or Idempotency-Key reused with another body"},
                        415: {"description": "Content-Type is neither application/json nor application/yaml"}})
def submit_job(who: CurrentPrincipal, store: StoreDep, raw: RawBody, request: Request, response: Response,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobPublic:
    """Answered only once the job is stored. With `Idempotency-Key`, a retry with the same body returns
    the original job (200); the same key with another body is refused (409)."""
    spec = _parse_spec(raw, request.headers.get("content-type", ""))
    job, created = services.submit_job(store, who, spec, idempotency_key=idempotency_key, raw_body=raw)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job)


@router.get("", summary="List jobs, newest first")
def list_jobs(who: CurrentPrincipal, store: StoreDep,
              team: Annotated[str | None, Query(max_length=63)] = None,
              state: JobState | None = None,
              cursor: Annotated[str | None, Query(max_length=32, description="the previous page's next_cursor")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> JobPage:
    """Submitters see only their team's jobs (another `team` gives an empty page)."""
    jobs, next_cursor = services.list_jobs(store, who, team=team, state=state, cursor=cursor, limit=limit)
    return JobPage(items=[JobPublic.of(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", summary="A job with its conditions and events")
def get_job(job_id: JobId, who: CurrentPrincipal, store: StoreDep) -> JobDetail:
    job, events = queries.job_with_events(store, who, job_id)
    return JobDetail(**JobPublic.of(job).model_dump(), conditions=job_conditions(job, events), events=events)


@router.post("/{job_id}/actions/cancel", summary="Cancel a job",
             responses={409: {"description": "The job has already ended"}})
def cancel_job(job_id: JobId, who: CurrentPrincipal, store: StoreDep) -> JobPublic:
    return JobPublic.of(services.cancel_job(store, who, job_id))
