"""Why a job is not placed, and which offers were considered for it.

Every unplaced job gets a reason code (DESIGN §4.5) and a sentence a person can act on.
`consider()` is the SkyPilot-style dry run behind `cloudsched explain`: every offer with
the check it failed, or its estimated cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from optimizer.greedy import place_job
from optimizer.problem import Instance, OfferChoice, Problem, static_rejection
from optimizer.solution import Solution, build_profiles
from scheduler.cost import Estimate
from scheduler.models import JobSpec, Offer, Unplaced, UnplacedReason, iso_z

STATIC_WORDS = {
    "OfferRule": "are ruled out by ops (a pin to another offer, or a forbid)",
    "GpuType": "sell another GPU type",
    "ManagedOnly": "are managed endpoints (the job is not managed)",
    "NotManaged": "are not managed endpoints",
    "SpotNotAllowed": "are spot and the job is not interruptible",
    "RegionNotAllowed": "are outside the allowed regions",
    "NoSpeedData": "have a GPU without speed data",
    "ComplianceNoMatch": "lack a required certification",
    "CapacityExhausted": "hold fewer GPUs than one shard needs",
    "PriceCap": "cost more per hour than max_hourly_cost",
    "DeadlineInfeasible": "cannot finish before the deadline",
}


@dataclass
class Considered:
    offer: Offer
    code: str | None  # None: a feasible candidate
    est: Estimate | None
    job_cost: float | None  # whole job (all shards), USD
    job_hourly: float | None


def consider(problem: Problem, job: JobSpec, offers: list[Offer] | None = None,
             choice: OfferChoice | None = None) -> list[Considered]:
    """Every offer for `job`, with the first check it fails (None for a candidate); `OfferRule` first
    for an offer ops' `choice` rules out (still priced, to show what the rule costs)."""
    window = (job.deadline - (job.not_before or problem.now)).total_seconds() / 3600
    if job.not_before is None or job.not_before < problem.now:
        window = (job.deadline - problem.now).total_seconds() / 3600
    out = []
    for offer in problem.offers if offers is None else offers:
        code = static_rejection(problem, job, offer)
        est = None
        if code not in ("GpuType", "NoSpeedData"):  # priced even when rejected: shows what a rule costs
            est = problem.estimate(job, offer)
        if choice is not None and not choice.allows(offer.id):
            code = "OfferRule"
        hourly = est.hourly_cost * job.shards if est else None
        if code is None and job.max_hourly_cost is not None and hourly > job.max_hourly_cost + 1e-9:
            code = "PriceCap"
        elif code is None and est.hours > window + 1e-9:
            code = "DeadlineInfeasible"
        out.append(Considered(offer, code, est, est.total_cost * job.shards if est else None, hourly))
    return out


def _counts_sentence(rejections) -> str:
    parts = [f"{n:,} {STATIC_WORDS.get(code, code)}" for code, n in rejections.most_common() if n]
    return "; ".join(parts[:4]) if parts else "no offers at all"


def _no_candidate_message(problem: Problem, inst: Instance, j: int, reason: UnplacedReason) -> str:
    job, rejections, choice = problem.jobs[j], inst.cands[j].rejections, problem.choice(j)
    types = ", ".join(job.gpu_types)
    if j in inst.cyclic:
        return (f"Its `after` list ({', '.join(job.after)}) leads back to itself, so it can never start: "
                "break the cycle.")
    if reason is UnplacedReason.DEADLINE_INFEASIBLE:
        rows = [r for r in consider(problem, job, choice=choice) if r.code == "DeadlineInfeasible"]
        if not rows:
            return f"No matching offer can finish before the deadline. Of {len(problem.offers):,} offers: " \
                   f"{_counts_sentence(rejections)}."
        best = min(rows, key=lambda r: r.est.hours)
        start = max(job.not_before or problem.now, problem.now)
        need = best.est.hours
        return (f"Needs at least {need:.1f} h on the fastest matching offer ({best.offer.id}) but only "
                f"{(job.deadline - start).total_seconds() / 3600:.1f} h lie between its earliest start and "
                f"the deadline: move the deadline to {iso_z(start + timedelta(hours=need))} or later, "
                "or add faster GPU types.")
    if reason is UnplacedReason.PRICE_CAP:
        rows = [r for r in consider(problem, job, choice=choice) if r.code == "PriceCap"]
        if not rows:
            return f"Every matching offer costs more per hour than max_hourly_cost ${job.max_hourly_cost:,.2f}."
        best = min(rows, key=lambda r: r.job_hourly)
        return (f"The cheapest matching offer ({best.offer.id}) costs ${best.job_hourly:,.2f}/h for "
                f"{job.gpus} GPUs, over max_hourly_cost ${job.max_hourly_cost:,.2f}: raise the cap or allow "
                "other GPU types.")
    if reason is UnplacedReason.COMPLIANCE_NO_MATCH:
        tags = ", ".join(c.value for c in job.compliance)
        return (f"No offer of {types} in the allowed regions holds every required certification "
                f"({tags}; gdpr also means EU regions). Of {len(problem.offers):,} offers: "
                f"{_counts_sentence(rejections)}.")
    if reason is UnplacedReason.CAPACITY_EXHAUSTED:
        return (f"Every matching offer holds fewer GPUs than one shard needs ({job.gpus_per_shard}): "
                "split the job with `shards` or ask ops to raise the offer's capacity.")
    return (f"No offer can run it ({types}, {job.gpus} GPUs). Of {len(problem.offers):,} offers: "
            f"{_counts_sentence(rejections)}. Widen gpu_types or regions, or set interruptible: true.")


def _placed_reason(problem: Problem, inst: Instance, sol: Solution, j: int, profiles, spent) -> Unplaced:
    job, cands = problem.jobs[j], inst.cands[j]
    job_id = problem.job_id(j)
    missing = [problem.jobs[p].name for p in inst.preds[j] if sol.placed[p] is None]
    if missing:
        return Unplaced(job_id=job_id, job_name=job.name, reason=UnplacedReason.DEPENDENCY_UNPLACED,
                        message=f"Runs after {', '.join(missing)}, which is not placed in this plan.")
    lo = max([cands.release] + [sol.job_end(inst, p) for p in inst.preds[j]])
    shards = place_job(inst, j, lo, profiles)
    team, budget = job.team, inst.budgets_cents.get(job.team)
    if shards is not None:
        for c, s in shards:  # only a probe: give the capacity back
            profiles[int(cands.offers[c])].remove(s, s + int(cands.dur[c]), int(cands.demand[c]))
        need = sum(int(cands.cost[c]) for c, _ in shards)
        if budget is not None:
            return Unplaced(job_id=job_id, job_name=job.name, reason=UnplacedReason.OVER_BUDGET, message=(
                f"Team {team}'s budget is ${budget / 100:,.2f}; ${spent.get(team, 0) / 100:,.2f} is already "
                f"planned and this job needs ${need / 100:,.2f} more. Raise the budget or lower its priority "
                "against the team's other jobs."))
    fastest = min(int(d) for d in cands.dur)
    if lo + fastest > cands.due:
        after = ", ".join(problem.jobs[p].name for p in inst.preds[j])
        return Unplaced(job_id=job_id, job_name=job.name, reason=UnplacedReason.DEADLINE_INFEASIBLE, message=(
            f"It may start only when {after} ends ({iso_z(problem.now + timedelta(minutes=lo))}) and then "
            f"needs at least {fastest / 60:.1f} h, past its deadline {iso_z(job.deadline)}: move the deadline "
            f"to {iso_z(problem.now + timedelta(minutes=lo + fastest))} or later, or give {after} an earlier one."))
    cheapest = problem.offers[int(cands.offers[0])].id
    return Unplaced(job_id=job_id, job_name=job.name, reason=UnplacedReason.CAPACITY_EXHAUSTED, message=(
        f"All {len(cands)} matching offers (cheapest {cheapest}) are booked between its earliest start and "
        f"{job.deadline:%Y-%m-%d %H:%M}Z by jobs of higher priority or earlier deadline. Move the deadline, "
        "add GPU types, allow spot (interruptible: true) or raise its priority."))


def unplaced_entries(problem: Problem, inst: Instance, sol: Solution) -> list[Unplaced]:
    profiles = build_profiles(inst, sol)
    spent: dict[str, int] = {}
    for j, shards in enumerate(sol.placed):
        if shards is not None:
            spent[inst.team_of[j]] = spent.get(inst.team_of[j], 0) + sol.job_cost(inst, j)
    out = []
    for j, job in enumerate(problem.jobs):
        if sol.placed[j] is not None:
            continue
        if len(inst.cands[j]) == 0:
            reason = inst.no_candidate_reason(j)
            entry = Unplaced(job_id=problem.job_id(j), job_name=job.name, reason=reason,
                             message=_no_candidate_message(problem, inst, j, reason))
        else:
            entry = _placed_reason(problem, inst, sol, j, profiles, spent)
        if (choice := problem.choice(j)) is not None:  # the rule first: it is what ops can undo
            entry = entry.model_copy(update={"message": f"{choice.describe()}. {entry.message}"})
        out.append(entry)
    return out
