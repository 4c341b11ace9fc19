"""Reads the API needs that `services` does not offer, under the same access rules.

Each function takes the caller (`Principal`) and goes through `services.get_job` /
`services.get_plan`, so a submitter sees only their team's jobs and gets "not found" for
another team's, exactly as from the services.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from optimizer.problem import OfferChoice
from scheduler import services
from scheduler.catalog import Catalog, load_catalog
from scheduler.diff import JobDiff, diff_plans, summary_line
from scheduler.errors import NotFound
from scheduler.fingerprint import PlanInputs
from scheduler.models import PlanDocument, Unplaced, parse_utc
from scheduler.planning import build_problem
from scheduler.reasons import consider
from scheduler.records import Event, JobRecord, PlanInfo, PlanRecord, Principal
from scheduler.store import Store

RATE_WINDOW_S = 60
RATE_COUNTER_TTL_S = RATE_WINDOW_S + 5
clock = time.time  # tests replace it to stay inside one window


def job_with_events(store: Store, who: Principal, job_id: str, limit: int = 1000) -> tuple[JobRecord, list[Event]]:
    job = services.get_job(store, who, job_id)
    return job, store.events_for_job(job.id, limit=limit)


def list_plans(store: Store, who: Principal, *, cursor: str | None = None,
               limit: int = 20) -> tuple[list[PlanInfo], str | None]:
    """Plans newest first, without documents (summaries are whole-plan totals, no job is named)."""
    return store.list_plans(limit=limit, cursor=cursor)


# -- diff -----------------------------------------------------------------------------------


@dataclass
class PlanDiff:
    plan_id: str
    against: str | None
    diffs: list[JobDiff]
    old: PlanDocument | None = None  # the plan it is compared with, as the caller may see it

    @property
    def summary(self) -> str:
        return summary_line(self.diffs)


def default_base(store: Store, record: PlanRecord) -> str | None:
    """The plan this one was made against: the approved plan its inputs name, else the latest approved one."""
    if record.inputs and "previous_plan_id" in record.inputs:
        return record.inputs["previous_plan_id"]
    latest = store.latest_approved_plan_id()
    return latest if latest != record.plan_id else None


def plan_diff(store: Store, who: Principal, plan_id: str, against: str | None = None, *,
              record: PlanRecord | None = None, view: PlanDocument | None = None) -> PlanDiff:
    """Terraform-style diff of `plan_id` against `against` (default: `default_base`), as `who` may see them.
    `record` and `view` (`services.plan_view` of it for `who`): what the caller has already read."""
    record = record or store.get_plan(plan_id)
    new = view or services.plan_view(store, who, record)
    base_id = against if against is not None else default_base(store, record)
    old = services.get_plan(store, who, base_id) if base_id else None
    return PlanDiff(plan_id, base_id, diff_plans(new, old), old)


# -- explanation ----------------------------------------------------------------------------


@dataclass
class ConsideredOffer:
    offer_id: str
    provider: str
    architecture: str
    market: str
    gpu_type: str
    status: str  # chosen | candidate | rejected
    reason: str | None
    gpus: int | None
    hours: float | None
    cost: float | None
    cost_vs_chosen: float | None


@dataclass
class Explanation:
    plan_id: str
    job: JobRecord
    catalog_version: str
    chosen: list[str]
    chosen_cost: float | None
    unplaced: Unplaced | None
    considered: list[ConsideredOffer]
    hidden: dict[str, int] = field(default_factory=dict)


def explain_job(store: Store, who: Principal, plan_id: str, job_id: str, *, show_all: bool = False,
                limit: int = 50, catalog: Catalog | None = None) -> Explanation:
    """Every offer considered for the job as of the plan's start: chosen, candidate, or rejected with its reason."""
    job = services.get_job(store, who, job_id)
    record = store.get_plan(plan_id)
    doc = services.plan_view(store, who, record)
    chosen = next((a for a in doc.assignments if a.job_id == job.id), None)
    unplaced = next((u for u in doc.unplaced if u.job_id == job.id), None)
    if chosen is None and unplaced is None:
        raise NotFound("job in plan", f"{plan_id}/{job.id}")
    catalog = catalog or load_catalog()
    problem = build_problem([job.spec], now=parse_utc(doc.horizon.start), catalog=catalog, job_ids=[job.id])
    chosen_ids = {s.offer_id for s in chosen.segments} if chosen else set()
    chosen_cost = chosen.total_cost if chosen else None
    rows = consider(problem, job.spec, choice=_rule_then(record, job.id))
    hidden = sum(1 for r in rows if r.code == "GpuType" and not show_all)
    rows = [r for r in rows if show_all or r.code != "GpuType"]
    rows.sort(key=lambda r: (r.offer.id not in chosen_ids, r.code is not None,
                             r.job_cost if r.job_cost is not None else float("inf"), r.offer.id))
    considered = [_considered(r, job.spec.shards, chosen_ids, chosen_cost) for r in rows[:limit]]
    return Explanation(doc.plan_id, job, catalog.version, sorted(chosen_ids), chosen_cost, unplaced, considered,
                       {"GpuType": hidden} if hidden else {})


def _rule_then(record: PlanRecord, job_id: str) -> OfferChoice | None:
    """Ops' offer rule for the job when the plan was made (not as it stands now)."""
    rules = PlanInputs.from_json(record.inputs).offer_rules if record.inputs else {}
    return OfferChoice.from_json(rules[job_id]) if job_id in rules else None


def _considered(r, shards: int, chosen_ids: set[str], chosen_cost: float | None) -> ConsideredOffer:
    status = "chosen" if r.offer.id in chosen_ids else ("candidate" if r.code is None else "rejected")
    delta = None
    if r.job_cost is not None and chosen_cost is not None:
        delta = round(r.job_cost - chosen_cost, 2)
    return ConsideredOffer(
        offer_id=r.offer.id, provider=r.offer.provider, architecture=r.offer.architecture.value,
        market=r.offer.market.value, gpu_type=r.offer.gpu_type, status=status, reason=r.code,
        gpus=r.est.billed_gpus * shards if r.est else None, hours=round(r.est.hours, 3) if r.est else None,
        cost=round(r.job_cost, 2) if r.job_cost is not None else None, cost_vs_chosen=delta)


# -- rate limit -----------------------------------------------------------------------------


def count_request(store: Store, who: Principal, limit: int) -> int | None:
    """Count one request of `who` in the current fixed one-minute window (INCR + EXPIRE in Redis).

    Returns None while under `limit`, else the seconds until the window ends (Retry-After).
    """
    now = clock()  # Redis trouble is the store's StoreUnavailable (503)
    return retry_after(store.count_in_window(rate_counter(who, now), RATE_COUNTER_TTL_S), limit, now)


def rate_counter(who: Principal, now: float) -> str:
    """The name of `who`'s counter for the one-minute window holding `now` (no name or key in it)."""
    who_hash = hashlib.sha256(f"{who.role}\0{who.team}\0{who.name}".encode()).hexdigest()[:24]
    return f"ratelimit:{who_hash}:{int(now // RATE_WINDOW_S)}"


def retry_after(count: int, limit: int, now: float) -> int | None:
    """None while `count` is within `limit`, else the seconds until the window of `now` ends."""
    if count <= limit:
        return None
    return max(1, int((int(now // RATE_WINDOW_S) + 1) * RATE_WINDOW_S - now + 0.999))
