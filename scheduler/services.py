"""Use cases: one function each, called the same way from REST, CLI, beat and retries.

Access rules live here, not in the routers: submitters see and touch only their team's
jobs (another team's job is reported as missing, exactly like a missing id); only ops and
admins decide on plans.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from scheduler.catalog import Catalog, load_catalog
from scheduler.errors import Conflict, Forbidden, InvalidArgument, NotFound, StateConflict
from scheduler.fingerprint import PlanInputs, spec_version, what_changed
from scheduler.launches import schedule_plan
from scheduler.lifecycle import PLANNABLE_JOB_STATES, TERMINAL_JOB_STATES, JobState, PlanState
from scheduler.models import JobSpec, PlanDocument, parse_utc
from scheduler.planning import PlanOptions, build_problem, plan_batch
from scheduler.records import JobRecord, OfferRule, PlanRecord, Principal, never_runs_after
from scheduler.settings import get_settings
from scheduler.store import Store

log = logging.getLogger("cloudsched.services")

PLAN_LOCK = "plan-run"
DECISION_LOCK = "plan-decision"  # approvals and offer-rule changes, one at a time


class StalePlan(Conflict):
    code = "stale-plan"

    def __init__(self, plan_id: str, changes: list[str]):
        super().__init__(f"plan {plan_id!r} is stale: " + "; ".join(changes), id=plan_id, changes=changes,
                         field="expected_fingerprint")
        self.changes = changes


# -- jobs ---------------------------------------------------------------------------------


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def submit_job(store: Store, who: Principal, spec: JobSpec, *, idempotency_key: str | None = None,
               raw_body: bytes | None = None) -> tuple[JobRecord, bool]:
    """Store a job (answered only once stored). Returns (record, created)."""
    digest = check_submission(who, spec, raw_body)
    return store.create_job(spec, who.name, idempotency_key=idempotency_key, body_hash=digest)


def check_submission(who: Principal, spec: JobSpec, raw_body: bytes | None) -> str:
    """May `who` submit `spec`? Returns the hash an `Idempotency-Key` compares (of the body as sent)."""
    if who.role == "submitter" and spec.team != who.team:
        raise InvalidArgument("team", f"must be your team {who.team!r}, not {spec.team!r}")
    return body_hash(raw_body if raw_body is not None else spec.model_dump_json().encode())


def visible(who: Principal, job: JobRecord) -> JobRecord:
    """`job` if `who` may see it; another team's job is reported as missing, exactly like a missing id."""
    if who.role == "submitter" and job.team != who.team:
        raise NotFound("job", job.id)  # no probing other teams
    return job


def get_job(store: Store, who: Principal, job_id: str) -> JobRecord:
    return visible(who, store.get_job(job_id))


def list_jobs(store: Store, who: Principal, *, team: str | None = None, state: str | None = None,
              cursor: str | None = None, limit: int = 50):
    if who.role == "submitter":
        if team not in (None, who.team):
            return [], None
        team = who.team
    return store.list_jobs(team=team, state=state, cursor=cursor, limit=limit)


def cancel_job(store: Store, who: Principal, job_id: str) -> JobRecord:
    job = get_job(store, who, job_id)
    return store.transition_job(job.id, JobState.CANCELLED, reason="Cancelled", message=f"cancelled by {who.name}",
                                actor=who.name)


def set_offer_rule(store: Store, who: Principal, job_id: str, rule: OfferRule,
                   catalog: Catalog | None = None) -> JobRecord:
    """Pin a job to one offer, or forbid offers, for the plan runs to come; an empty rule lifts it.

    Ops and admins only (another team's job is not found for a submitter, as everywhere). Only a job
    not yet approved takes a rule; the job's version moves, so a plan made before it is stale
    (approving it answers 409 naming the job) and the next `POST /v1/plans` places the job by it.
    """
    job = get_job(store, who, job_id)
    _require_ops(who, "pin or forbid offers")
    known = {offer.id for offer in (catalog or load_catalog()).offers}
    if rule.pin is not None and rule.pin not in known:
        raise InvalidArgument("pin", f"no offer {rule.pin!r} in the catalog (GET /v1/offers lists them)")
    for i, offer_id in enumerate(rule.forbid):
        if offer_id not in known:
            raise InvalidArgument(f"forbid.{i}", f"no offer {offer_id!r} in the catalog (GET /v1/offers lists them)")
    with deciding(store):
        return store.set_offer_rule(job.id, rule, actor=who.name)


@contextmanager
def deciding(store: Store, wait_s: float = 5.0, ttl_s: float = 120.0):
    """Hold the decision lock: an offer rule set while a plan is being approved would otherwise land
    between the approval's staleness check and its jobs' approval, and the job would be approved on
    a placement its rule forbids. Waits up to `wait_s` for the other decision, then answers 409."""
    deadline = time.monotonic() + wait_s
    while (token := store.acquire_lock(DECISION_LOCK, ttl_s=ttl_s)) is None:
        if time.monotonic() > deadline:
            raise Conflict("another plan decision is in progress; try again in a moment", field="plan")
        time.sleep(0.02)
    try:
        yield
    finally:
        store.release_lock(DECISION_LOCK, token)


# -- plans --------------------------------------------------------------------------------


@dataclass
class PlanRun:
    now: datetime | None = None  # plan as of this time; default: now + review_lead_hours
    review_lead_hours: float = 1.0  # a plan expires at its first start: leave ops time to review it
    time_limit_s: float = 30.0
    num_workers: int = 1
    created_by: str = "api"
    budgets: dict[str, float] | None = None


def jobs_in(store: Store, states) -> list[JobRecord]:
    """Every job in any of `states`, oldest first (all pages)."""
    jobs: list[JobRecord] = []
    for state in states:
        cursor = None
        while True:
            page, cursor = store.list_jobs(state=state, cursor=cursor, limit=500)
            jobs.extend(page)
            if cursor is None:
                break
    return sorted(jobs, key=lambda j: (j.created_at, j.id))


def plannable(store: Store) -> list[JobRecord]:
    """Every job a plan made now would take, oldest first."""
    return jobs_in(store, PLANNABLE_JOB_STATES)


def current_inputs(store: Store, catalog: Catalog, budgets: dict[str, float] | None = None,
                   jobs: list[JobRecord] | None = None) -> PlanInputs:
    """The inputs of a plan made now; `jobs`: `plannable(store)` when the caller has read it already."""
    jobs = plannable(store) if jobs is None else jobs
    return PlanInputs({j.id: spec_version(j.spec, j.offer_rule) for j in jobs}, catalog.version,
                      store.latest_approved_plan_id(), dict(budgets or {}),
                      {j.id: j.offer_rule.to_json() for j in jobs if j.offer_rule is not None})


def _previous(store: Store) -> PlanDocument | None:
    plan_id = store.latest_approved_plan_id()
    return store.get_plan(plan_id).document if plan_id else None


def create_plan(store: Store, who: Principal, run: PlanRun = PlanRun(), catalog: Catalog | None = None) -> PlanRecord:
    """Plan every plannable job now. A run that overlaps a running one is refused."""
    _require_ops(who, "create plans")
    token = store.acquire_lock(PLAN_LOCK, ttl_s=run.time_limit_s * 4 + 120)
    if token is None:
        raise Conflict("a plan run is already in progress; try again when it ends", field="plan")
    try:
        return _create_plan(store, who, run, catalog or load_catalog())
    finally:
        store.release_lock(PLAN_LOCK, token)


def _create_plan(store: Store, who: Principal, run: PlanRun, catalog: Catalog) -> PlanRecord:
    jobs = plannable(store)
    outside = _predecessors_outside(store, jobs)  # what the `after` names beyond this batch mean: read once
    jobs = _without_dead_ends(store, jobs, who, outside)
    # Plans run on whole minutes (the optimizer's time unit): round any caller's `now` up.
    now = run.now or datetime.now(timezone.utc) + timedelta(hours=run.review_lead_hours)
    if now.second or now.microsecond:
        now = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    inputs = current_inputs(store, catalog, run.budgets, jobs)  # the same read: the jobs planned are the inputs
    problem = build_problem(_after_earlier_plans(store, jobs, outside), now=now, catalog=catalog, budgets=run.budgets,
                            job_ids=[j.id for j in jobs],
                            choices={j.id: j.offer_rule.choice() for j in jobs if j.offer_rule is not None})
    options = PlanOptions(time_limit=run.time_limit_s, num_workers=run.num_workers, created_by=run.created_by,
                          previous=_previous(store), inputs=inputs)
    outcome = plan_batch(problem, options)
    if outcome.violations:  # never store a plan the validator rejects
        raise RuntimeError(f"plan failed validation: {outcome.violations[:3]}")
    doc = outcome.document
    store.save_plan(doc, dict(inputs.job_versions), actor=who.name, inputs=inputs.to_json())
    for older in _pending_review(store):  # only once the new plan is stored: never leave none to review
        if older != doc.plan_id:
            store.set_plan_state(older, PlanState.SUPERSEDED, expected_state=PlanState.PENDING_REVIEW,
                                 decision={"superseded_by": doc.plan_id}, actor=who.name)
    _mark_jobs(store, doc, jobs, who)
    return store.get_plan(doc.plan_id)


def _predecessors_outside(store: Store, jobs: list[JobRecord]) -> dict[tuple[str, str], JobRecord | None]:
    """The job each `after` name of `jobs` that is none of them means now, by (team, name): one lookup per team."""
    batch = {(job.team, job.name) for job in jobs}
    wanted: dict[str, set[str]] = {}
    for job in jobs:
        wanted.setdefault(job.team, set()).update(name for name in job.spec.after if (job.team, name) not in batch)
    return {(team, name): job for team, names in wanted.items() if names
            for name, job in store.jobs_named(team, names).items()}


def _without_dead_ends(store: Store, jobs: list[JobRecord], who: Principal,
                       outside: dict[tuple[str, str], JobRecord | None]) -> list[JobRecord]:
    """`jobs` less those that come `after` a job that failed or was cancelled: those are cancelled now
    (`DependencyFailed`, as at launch) rather than placed, along with whatever comes after them."""
    batch = {(job.team, job.name): job for job in jobs}
    dead: dict[str, str] = {}  # job id -> why
    spreading = True
    while spreading:  # in memory: a job after a dead one is dead too
        spreading = False
        for job in (job for job in jobs if job.id not in dead):
            for name in job.spec.after:
                before = batch.get((job.team, name))
                if before is None:
                    why = never_runs_after(name, outside.get((job.team, name)))
                else:  # as it will be once cancelled below
                    why = never_runs_after(name, before.model_copy(update={"state": JobState.CANCELLED})) \
                        if before.id in dead else None
                if why:
                    dead[job.id], spreading = why, True
                    break
    for job_id, why in dead.items():
        store.transition_job(job_id, JobState.CANCELLED, reason="DependencyFailed", message=why, actor=who.name)
    return [job for job in jobs if job.id not in dead]


def _after_earlier_plans(store: Store, jobs: list[JobRecord],
                         outside: dict[tuple[str, str], JobRecord | None]) -> list[JobSpec]:
    """The jobs' specs as the optimizer must see them: a job `after` one that an earlier plan placed
    and that has not ended starts no sooner than that one's expected end (`not_before` moved).

    Predecessors in the same batch are the optimizer's own constraint. One that succeeded holds nothing
    back; one that failed or was cancelled had its followers cancelled already (`_without_dead_ends`).
    """
    batch = {(job.team, job.name) for job in jobs}
    expected = {key: _expected_end(store, before) for key, before in outside.items()}  # one read per predecessor
    specs = []
    for job in jobs:
        spec = job.spec
        ends = [end for name in spec.after if (job.team, name) not in batch
                and (end := expected.get((job.team, name))) is not None]
        if ends and (spec.not_before is None or max(ends) > spec.not_before):
            spec = spec.model_copy(update={"not_before": max(ends)})
        specs.append(spec)
    return specs


def _expected_end(store: Store, job: JobRecord | None) -> datetime | None:
    """When a job an earlier plan placed should end: its live launch units' (actual or due) start plus run."""
    if job is None or job.state in TERMINAL_JOB_STATES or job.state in PLANNABLE_JOB_STATES:
        return None  # ended, or not placed by an earlier plan
    ends = [(u.current.running_at or u.current.start) + timedelta(hours=u.current.run_hours)
            for u in store.launches.of_job(job.id) if u.current.state not in ("ended", "refused")]
    return max(ends, default=None)


def _pending_review(store: Store) -> list[str]:
    plans, _ = store.list_plans(limit=100)
    return [p.plan_id for p in plans if p.state is PlanState.PENDING_REVIEW]


def _mark_jobs(store: Store, doc: PlanDocument, jobs: list[JobRecord], who: Principal) -> None:
    placed = {a.job_id for a in doc.assignments}
    reasons = {u.job_id: u for u in doc.unplaced}
    for job in jobs:
        if job.state is JobState.PLANNED:  # re-planned: back to pending first, as the lifecycle says
            job = store.transition_job(job.id, JobState.PENDING, reason="Replanned", actor=who.name)
        if job.id in placed:
            store.transition_job(job.id, JobState.PLANNED, plan_id=doc.plan_id, actor=who.name)
        elif job.id in reasons:
            u = reasons[job.id]
            if job.state is JobState.UNPLACED:
                if (job.reason, job.message) == (u.reason.value, u.message):
                    continue  # unplaced as before: no new events every night
                # A new reason or message (a new offer rule, say): through pending, as the lifecycle says.
                store.transition_job(job.id, JobState.PENDING, reason="Replanned", actor=who.name)
            store.transition_job(job.id, JobState.UNPLACED, reason=u.reason.value, message=u.message,
                                 plan_id=doc.plan_id, actor=who.name)


def get_plan(store: Store, who: Principal, plan_id: str) -> PlanDocument:
    """The §4.5 document as it stands; a submitter sees only their team's jobs in it."""
    return plan_view(store, who, store.get_plan(plan_id))


def plan_view(store: Store, who: Principal, record: PlanRecord) -> PlanDocument:
    """`get_plan` of a record already read."""
    doc = record.current_document()
    if who.role != "submitter":
        return doc
    assignments = [a for a in doc.assignments if a.team == who.team]
    ids = {a.job_id for a in assignments}
    own = {j.id for j in store.get_jobs([u.job_id for u in doc.unplaced]).values() if j.team == who.team}
    return doc.model_copy(update={"assignments": assignments, "unplaced": [u for u in doc.unplaced if u.job_id in own],
                                  "changes": [c for c in doc.changes if c.job_id in ids | own]})


def _require_ops(who: Principal, action: str = "approve or reject plans") -> None:
    if who.role not in ("ops", "admin"):
        raise Forbidden(f"only ops and admins {action}")


def first_start(doc: PlanDocument) -> str | None:
    """When the plan expires unapproved: its first placement's start (ISO Z strings sort as times)."""
    return min((s.start for a in doc.assignments for s in a.segments), default=None)


def stale_inputs(store: Store, record: PlanRecord, catalog: Catalog,
                 budgets: dict[str, float] | None = None, jobs: list[JobRecord] | None = None) -> list[str]:
    """What changed since the plan was made ([] while its inputs are those of a plan made now)."""
    if not record.inputs:
        return ["the plan's inputs were not recorded"]
    planned = PlanInputs.from_json(record.inputs)
    current = current_inputs(store, catalog, budgets, jobs)
    return [] if current.fingerprint() == planned.fingerprint() else what_changed(planned, current)


def approve_plan(store: Store, who: Principal, plan_id: str, expected_fingerprint: str, comment: str = "",
                 *, catalog: Catalog | None = None, now: datetime | None = None,
                 budgets: dict[str, float] | None = None, launch_via: str | None = None) -> PlanRecord:
    """Approve the plan the reviewer saw. Stale, expired or already decided plans are refused (409)."""
    _require_ops(who)
    with deciding(store):
        return _approve(store, who, plan_id, expected_fingerprint, comment, catalog=catalog, now=now,
                        budgets=budgets, launch_via=launch_via)


def _approve(store: Store, who: Principal, plan_id: str, expected_fingerprint: str, comment: str, *,
             catalog: Catalog | None, now: datetime | None, budgets: dict[str, float] | None,
             launch_via: str | None) -> PlanRecord:
    record = store.get_plan(plan_id)
    if record.state is not PlanState.PENDING_REVIEW:
        raise StateConflict("plan", plan_id, PlanState.PENDING_REVIEW.value, record.state.value)
    if expected_fingerprint != record.fingerprint:
        raise StalePlan(plan_id, [f"you reviewed fingerprint {expected_fingerprint[:12]}, the plan has "
                                  f"{record.fingerprint[:12]}: reload it"])
    now = now or datetime.now(timezone.utc)
    first = parse_utc(start) if (start := first_start(record.document)) else None
    if first is not None and now >= first:
        store.set_plan_state(plan_id, PlanState.EXPIRED, expected_state=PlanState.PENDING_REVIEW, actor=who.name,
                             decision={"expired_at": now.isoformat(), "first_start": first.isoformat()})
        raise StateConflict("plan", plan_id, PlanState.PENDING_REVIEW.value, PlanState.EXPIRED.value,
                            message=f"plan {plan_id!r} expired: its first start {first.isoformat()} has passed")
    changes = stale_inputs(store, record, catalog or load_catalog(), budgets)
    if changes:
        store.set_plan_state(plan_id, PlanState.STALE, expected_state=PlanState.PENDING_REVIEW, actor=who.name,
                             decision={"stale": changes})
        raise StalePlan(plan_id, changes)
    decision = {"decision": "approved", "by": who.name, "at": now.isoformat(), "comment": comment,
                "fingerprint": expected_fingerprint}
    store.set_plan_state(plan_id, PlanState.APPROVED, expected_state=PlanState.PENDING_REVIEW,
                         decision=decision, actor=who.name)  # compare-and-set: one approval wins
    for a in record.document.assignments:
        store.transition_job(a.job_id, JobState.APPROVED, plan_id=plan_id, actor=who.name)
    approved = store.get_plan(plan_id)
    schedule_plan(store.launches, approved, launch_via or get_settings().launch_via)  # the dispatcher's input
    return approved


def reject_plan(store: Store, who: Principal, plan_id: str, comment: str) -> PlanRecord:
    _require_ops(who)
    if not comment.strip():
        raise InvalidArgument("comment", "a rejection needs a comment saying why")
    record = store.get_plan(plan_id)
    decision = {"decision": "rejected", "by": who.name, "at": datetime.now(timezone.utc).isoformat(),
                "comment": comment, "fingerprint": record.fingerprint}
    store.set_plan_state(plan_id, PlanState.REJECTED, expected_state=PlanState.PENDING_REVIEW,
                         decision=decision, actor=who.name)
    for a in record.document.assignments:
        job = store.get_job(a.job_id)
        if job.state is JobState.PLANNED and job.plan_id == plan_id:
            store.transition_job(job.id, JobState.PENDING, reason="PlanRejected", message=comment, actor=who.name)
    return store.get_plan(plan_id)
