"""`validate(problem, plan) -> [violations]`: checks any plan document against the problem.

It shares nothing with the solver but the normative cost model (scheduler.cost): every
rule is re-checked from the job specs and offers, every figure recomputed. An empty list
means the plan is valid. Tests, benchmarks and the plan service all call it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from optimizer.placement import placement_classes
from optimizer.problem import Problem
from scheduler.models import Compliance, JobSpec, Market, Offer, PlanDocument, parse_utc

MONEY_TOLERANCE = 0.011  # plan figures are rounded to cents
HOURS_TOLERANCE = 1e-4


def _offer_violations(job: JobSpec, offer: Offer) -> list[str]:
    out = []
    if offer.gpu_type not in job.gpu_types:
        out.append(f"GPU {offer.gpu_type} not in {job.gpu_types}")
    if offer.market is Market.SPOT and not job.interruptible:
        out.append("spot offer for a job that is not interruptible")
    if job.managed != offer.managed:
        out.append("managed endpoint mismatch")
    if job.regions and not any(r in (offer.geo, f"{offer.provider}:{offer.region}") for r in job.regions):
        out.append(f"region {offer.provider}:{offer.region} not in {job.regions}")
    missing = [c.value for c in job.compliance if c.value not in offer.certifications]
    if missing:
        out.append(f"offer lacks {missing}")
    if Compliance.GDPR in job.compliance and offer.geo != "eu":
        out.append("gdpr job outside the EU")
    return out


def _segment_violations(problem: Problem, job: JobSpec, seg, offer: Offer) -> list[str]:
    out = []
    if problem.speed_ratio(job, offer) is None:
        return ["no speed data for the offer's GPU"]
    est = problem.estimate(job, offer)
    expected = {"nodes": est.nodes, "gpus": est.billed_gpus, "provider": offer.provider, "region": offer.region,
                "gpu_type": offer.gpu_type, "market": offer.market.value}
    for key, value in expected.items():
        if getattr(seg, key) != value:
            out.append(f"{key} is {getattr(seg, key)!r}, expected {value!r}")
    for key, value in (("run_hours", est.run_hours), ("transfer_hours", est.transfer_hours)):
        if abs(getattr(seg, key) - value) > HOURS_TOLERANCE * max(1.0, value):
            out.append(f"{key} {getattr(seg, key)} != {value:.4f}")
    for key, value in (("compute_cost", est.compute_cost), ("egress_cost", est.egress_cost)):
        if abs(getattr(seg, key) - value) > MONEY_TOLERANCE:
            out.append(f"{key} {getattr(seg, key)} != {value:.2f}")
    if abs(seg.price_per_node_hour - offer.price_per_node_hour) > 1e-9:
        out.append("price_per_node_hour differs from the offer")
    start, end = parse_utc(seg.start), parse_utc(seg.end)
    if (end - start).total_seconds() + 1 < est.hours * 3600:
        out.append(f"occupies {(end - start).total_seconds() / 3600:.3f} h, needs {est.hours:.3f} h")
    if job.not_before and start < job.not_before:
        out.append(f"starts {seg.start} before not_before")
    if end > job.deadline:
        out.append(f"ends {seg.end} after the deadline")
    if start < problem.now:
        out.append("starts before the plan's now")
    return out


def _assignment_violations(problem: Problem, job: JobSpec, a, offers: dict[str, Offer]) -> list[str]:
    out = []
    if len(a.segments) != job.shards:
        out.append(f"{len(a.segments)} segments for {job.shards} shard(s)")
    hourly = 0.0
    for seg in a.segments:
        offer = offers.get(seg.offer_id)
        if offer is None:
            out.append(f"unknown offer {seg.offer_id}")
            continue
        out += [f"{seg.offer_id}: {v}" for v in _offer_violations(job, offer)]
        out += [f"{seg.offer_id}: {v}" for v in _segment_violations(problem, job, seg, offer)]
        if offer.market is not Market.RESERVED:
            hourly += seg.nodes * offer.price_per_node_hour
    if job.max_hourly_cost is not None and hourly > job.max_hourly_cost + 1e-6:
        out.append(f"costs ${hourly:.2f}/h over max_hourly_cost ${job.max_hourly_cost}")
    total = sum(s.compute_cost + s.egress_cost for s in a.segments)
    if abs(total - a.total_cost) > MONEY_TOLERANCE * max(1, len(a.segments)):
        out.append(f"total_cost {a.total_cost} != sum of segments {total:.2f}")
    return out


def _capacity_violations(plan: PlanDocument, offers: dict[str, Offer]) -> list[str]:
    events: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for a in plan.assignments:
        for seg in a.segments:
            events[seg.offer_id] += [(parse_utc(seg.start), seg.gpus), (parse_utc(seg.end), -seg.gpus)]
    out = []
    for offer_id, evs in events.items():
        if offer_id not in offers:
            continue
        used, cap = 0, offers[offer_id].capacity_gpus
        for when, delta in sorted(evs, key=lambda e: (e[0], e[1])):  # ends before starts
            used += delta
            if used > cap:
                out.append(f"capacity: {offer_id} holds {used} GPUs at {when:%Y-%m-%dT%H:%MZ} > {cap}")
                break
    return out


def _dependency_violations(problem: Problem, plan: PlanDocument) -> list[str]:
    assigned = {a.job_id: a for a in plan.assignments}
    by_name = {(job.team, job.name): problem.job_id(j) for j, job in enumerate(problem.jobs)}
    out = []
    for j, job in enumerate(problem.jobs):
        a = assigned.get(problem.job_id(j))
        for name in job.after:
            pred_id = by_name.get((job.team, name))
            if pred_id is None or a is None:
                continue
            pred = assigned.get(pred_id)
            if pred is None:
                out.append(f"{job.name}: placed but its predecessor {name} is not")
            elif max(parse_utc(s.end) for s in pred.segments) > min(parse_utc(s.start) for s in a.segments):
                out.append(f"{job.name}: starts before its predecessor {name} ends")
    return out


def _summary_violations(problem: Problem, plan: PlanDocument) -> list[str]:
    out, s = [], plan.summary
    total = sum(a.total_cost for a in plan.assignments)
    if abs(total - s.total_cost) > MONEY_TOLERANCE * max(1, len(plan.assignments)):
        out.append(f"summary total_cost {s.total_cost} != {total:.2f}")
    if s.jobs_placed != len(plan.assignments) or s.jobs_unplaced != len(plan.unplaced):
        out.append("summary job counts do not match")
    spent: dict[str, float] = defaultdict(float)
    for a in plan.assignments:
        spent[a.team] += a.total_cost
    for team, budget in problem.budgets.items():
        if spent[team] > budget + MONEY_TOLERANCE:
            out.append(f"team {team} spends ${spent[team]:.2f} over its budget ${budget:.2f}")
    classes = placement_classes(problem, plan)
    for a in plan.assignments:
        if classes.get(a.job_id) != a.placement:
            out.append(f"{a.job_name}: placement {a.placement} should be {classes.get(a.job_id)}")
    counts = defaultdict(int)
    for a in plan.assignments:
        counts[a.placement.value] += 1
    if {k: v for k, v in s.by_placement.items() if v} != dict(counts):
        out.append("summary by_placement does not match the assignments")
    return out


def validate(problem: Problem, plan: PlanDocument) -> list[str]:
    """Every way `plan` breaks the rules of `problem`; empty when it is valid."""
    offers = {o.id: o for o in problem.offers}
    ids = {problem.job_id(j): j for j in range(len(problem.jobs))}
    seen = [a.job_id for a in plan.assignments] + [u.job_id for u in plan.unplaced]
    out = [f"job {i} appears {seen.count(i)} times" for i in sorted(set(seen)) if seen.count(i) > 1]
    out += [f"unknown job {i}" for i in sorted(set(seen) - set(ids))]
    out += [f"job {i} is missing from the plan" for i in sorted(set(ids) - set(seen))]
    for a in plan.assignments:
        if a.job_id not in ids:
            continue
        job = problem.jobs[ids[a.job_id]]
        if (a.job_name, a.team) != (job.name, job.team):
            out.append(f"{a.job_id}: name/team mismatch")
        out += [f"{job.name}: {v}" for v in _assignment_violations(problem, job, a, offers)]
        choice = problem.choice(ids[a.job_id])
        out += [f"{job.name}: on {s.offer_id} against the rule ({choice.describe()})" for s in a.segments
                if choice is not None and not choice.allows(s.offer_id)]
    for u in plan.unplaced:
        if not u.message.strip():
            out.append(f"{u.job_name}: unplaced without a message")
    out += _capacity_violations(plan, offers)
    out += _dependency_violations(problem, plan)
    out += _summary_violations(problem, plan)
    return out

