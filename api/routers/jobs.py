"""Jobs: submit (JSON or YAML, idempotent), list, show with conditions and events, cancel.

The routes here count the request against the caller's limit themselves (app.py includes this
router with authentication only). Submitting and showing a job are the busiest routes: they are
`async def` on the store's asyncio twin (`scheduler.aio`), so they take no worker thread, and
showing a job counts the request and reads the job and its events in one Redis round trip.
While Redis is down or reloading they answer 503 with `Retry-After` at once instead of waiting.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from api.bodies import SPEC_BODY, parse_spec
from api.conditions import job_detail
from api.deps import Caller, CurrentPrincipal, SettingsDep, StoreDep, aio_store_of, refused
from api.errors import problem_doc
from api.schemas import JobDetail, JobPage, JobPublic
from scheduler import services
from scheduler.lifecycle import JobState
from scheduler.records import OfferRule

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(max_length=64, examples=["job_01jd2k8q6v3m9x4c7b2n5r8t1w"])]


@router.post("", status_code=201, response_model=JobPublic, openapi_extra=SPEC_BODY,
             summary="Submit a job (JSON or YAML)",
             responses={200: {"model": JobPublic, "description": "Same Idempotency-Key and body: the original job"},
                        **problem_doc(409, "Name taken, or Idempotency-Key reused with another body"),
                        **problem_doc(415, "Content-Type is neither application/json nor application/yaml")})
async def submit_job(request: Request, who: CurrentPrincipal, response: Response,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobPublic:
    """Answered only once the job is stored. With `Idempotency-Key`, a retry with the same body returns
    the original job (200); the same key with another body is refused (409)."""
    raw = await request.body()  # over max_body_bytes: 413 (api.limits); counted already, like any bad body
    spec = parse_spec(raw, request.headers.get("content-type", ""))
    job, created = await aio_store_of(request).submit_job(who, spec, idempotency_key=idempotency_key, raw_body=raw)
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
async def get_job(request: Request, job_id: JobId, who: Caller, settings: SettingsDep) -> JobDetail:
    retry_after, job, events = await aio_store_of(request).show_job(who, job_id, limit=settings.rate_limit_per_minute)
    refused(retry_after, request, settings, who)
    return job_detail(job, events)


@router.put("/{job_id}/offer-rule", summary="Pin a job to an offer, or forbid offers, for the next plans (ops)",
            responses={**problem_doc(403, "Only ops and admins set offer rules"),
                       **problem_doc(409, "The job is approved or further along: its place is decided")})
def set_offer_rule(job_id: JobId, rule: OfferRule, who: CurrentPrincipal, store: StoreDep) -> JobPublic:
    """`{"pin": offer_id}` runs the job only there, `{"forbid": [offer_id, ...]}` never there, `{}` lifts the
    rule. The job's version moves: a plan under review that placed it is stale (approving it answers 409),
    and `POST /v1/plans` re-plans with the rule. A job the rule leaves without an offer is unplaced,
    its message starting with the rule."""
    return JobPublic.of(services.set_offer_rule(store, who, job_id, rule))


@router.post("/{job_id}/actions/cancel", summary="Cancel a job",
             responses=problem_doc(409, "The job has already ended"))
def cancel_job(job_id: JobId, who: CurrentPrincipal, store: StoreDep) -> JobPublic:
    return JobPublic.of(services.cancel_job(store, who, job_id))
