"""Plans: create now, list, show (§4.5 document), diff, per-job explanation, approve, reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from api.deps import CurrentPrincipal, SettingsDep, StoreDep
from api.errors import problem_doc
from api.schemas import (
    ApproveRequest,
    ConsideredOfferPublic,
    DiffEntry,
    ExplanationPublic,
    PlacementBrief,
    PlanCreate,
    PlanDiffPublic,
    PlanPage,
    RejectRequest,
    UnplacedPublic,
)
from scheduler import queries, services
from scheduler.diff import JobDiff
from scheduler.models import Assignment, PlanDocument

router = APIRouter(prefix="/v1/plans", tags=["plans"])

PlanId = Annotated[str, Path(max_length=128, examples=["plan-20261123T010000Z-9f2c41d0"])]
JobId = Annotated[str, Path(max_length=64)]
_CONFLICT = problem_doc(409, "Stale (`changes` says what changed), expired, superseded or already decided")


@router.post("", status_code=201, summary="Plan every pending job now (ops, admin)",
             responses=problem_doc(409, "A plan run is already in progress"))
def create_plan(who: CurrentPrincipal, store: StoreDep, settings: SettingsDep,
                body: Annotated[PlanCreate | None, Body()] = None) -> PlanDocument:
    """The nightly run calls the same service. A newer plan supersedes one still under review."""
    body = body or PlanCreate()
    now = body.now.replace(second=0, microsecond=0) if body.now else None  # the plan's time grid is minutes
    run = services.PlanRun(now=now, time_limit_s=body.time_limit_s or settings.plan_time_limit_s,
                           created_by=who.name)
    return services.create_plan(store, who, run).current_document()


@router.get("", summary="Plans, newest first (without assignments)")
def list_plans(who: CurrentPrincipal, store: StoreDep, cursor: Annotated[str | None, Query(max_length=32)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> PlanPage:
    plans, next_cursor = queries.list_plans(store, who, cursor=cursor, limit=limit)
    return PlanPage(items=plans, next_cursor=next_cursor)


@router.get("/{plan_id}", summary="The plan document (DESIGN §4.5); submitters see their team's jobs only")
def get_plan(plan_id: PlanId, who: CurrentPrincipal, store: StoreDep) -> PlanDocument:
    return services.get_plan(store, who, plan_id)


@router.get("/{plan_id}/diff", summary="Terraform-style diff against another plan")
def diff_plan(plan_id: PlanId, who: CurrentPrincipal, store: StoreDep,
              against: Annotated[str | None, Query(max_length=128,
                                                   description="default: the approved plan it was made against")]
              = None) -> PlanDiffPublic:
    """Per job: `+` create, `-` delete, `~` update (same offers, other times or cost), `-/+` replace."""
    result = queries.plan_diff(store, who, plan_id, against)
    return PlanDiffPublic(plan_id=result.plan_id, against=result.against, summary=result.summary,
                          changes=[_entry(d) for d in result.diffs])


@router.get("/{plan_id}/jobs/{job_id}/explanation", summary="Why here: every offer considered for a job")
def explain_job(plan_id: PlanId, job_id: JobId, who: CurrentPrincipal, store: StoreDep,
                show_all: Annotated[bool, Query(alias="all", description="include offers of other GPU types")] = False,
                limit: Annotated[int, Query(ge=1, le=5000)] = 50) -> ExplanationPublic:
    """The chosen offers (✔) first, then candidates and rejected offers, cheapest first, each with the
    first check it failed and its cost against the chosen placement."""
    ex = queries.explain_job(store, who, plan_id, job_id, show_all=show_all, limit=limit)
    return ExplanationPublic(
        plan_id=ex.plan_id, job_id=ex.job.id, job_name=ex.job.name, catalog_version=ex.catalog_version,
        chosen=ex.chosen, chosen_cost=ex.chosen_cost,
        unplaced=UnplacedPublic(reason=ex.unplaced.reason.value, message=ex.unplaced.message) if ex.unplaced else None,
        considered=[ConsideredOfferPublic(**vars(c), mark="✔" if c.status == "chosen" else "") for c in ex.considered],
        not_shown=ex.hidden)


@router.post("/{plan_id}/actions/approve", summary="Approve the plan you reviewed (ops, admin)", responses=_CONFLICT)
def approve_plan(plan_id: PlanId, body: ApproveRequest, who: CurrentPrincipal, store: StoreDep) -> PlanDocument:
    """Refused with 409 when the plan's inputs changed since (the problem's `changes` say what), when its
    first start has passed, or when it is no longer pending review. Of two concurrent approvals one wins."""
    services.approve_plan(store, who, plan_id, body.expected_fingerprint, body.comment)
    return services.get_plan(store, who, plan_id)


@router.post("/{plan_id}/actions/reject", summary="Reject a plan with a comment (ops, admin)", responses=_CONFLICT)
def reject_plan(plan_id: PlanId, body: RejectRequest, who: CurrentPrincipal, store: StoreDep) -> PlanDocument:
    services.reject_plan(store, who, plan_id, body.comment)
    return services.get_plan(store, who, plan_id)


def _brief(a: Assignment | None) -> PlacementBrief | None:
    if a is None:
        return None
    return PlacementBrief(offers=sorted({s.offer_id for s in a.segments}), start=min(s.start for s in a.segments),
                          end=max(s.end for s in a.segments), cost=a.total_cost)


def _entry(d: JobDiff) -> DiffEntry:
    return DiffEntry(job_id=d.job_id, job_name=d.job_name, actions=list(d.actions), symbol=d.symbol,
                     before=_brief(d.before), after=_brief(d.after), cost_delta=round(d.cost_delta, 2))
