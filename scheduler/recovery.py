"""Re-placing a unit after a preemption or failure: a small single-job solve against current capacity.

The rule follows Can't-Be-Late (Wu et al., NSDI '24): keep using spot while the slack left
(deadline - now - remaining run time) still covers another restart, and switch to on-demand
when it does not. Work done before the interruption counts, less `restart_overhead_h`
(checkpoints are assumed, as in the cost model's spot reserve).

The envelope: the new placement must meet the job's compliance (the same candidate rules as
the nightly plan) and the unit's total — what the ended attempts cost plus the new estimate —
must stay within the approved segment cost x (1 + `recovery_tolerance`). Outside it, nothing
is launched: the job goes back to pending for ops (`RecoveryNeedsReview`) with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.catalog import Catalog
from scheduler.launches import Attempt, LaunchUnit
from scheduler.models import parse_utc
from scheduler.planning import PlanOptions, build_problem, plan_batch
from scheduler.records import JobRecord

if TYPE_CHECKING:
    from scheduler.execution import ExecConfig


def remaining_hours(unit: LaunchUnit, now: datetime, overhead_h: float) -> float:
    """Run hours still to do for the unit's current attempt (its progress, less the restart loss)."""
    cur = unit.current
    began = cur.running_at or cur.launched_at
    done = 0.0
    if began is not None:
        ended = cur.ended_at or now
        done = max(0.0, (ended - began).total_seconds() / 3600 - overhead_h)
    return max(cur.run_hours - done, min(cur.run_hours, overhead_h))


def spot_allowed(interruptible: bool, slack_h: float, overhead_h: float) -> bool:
    """Can't-Be-Late: spot only while the slack covers one more restart (and the re-launch after it)."""
    return interruptible and slack_h >= 2 * overhead_h


def replace(catalog: Catalog, job: JobRecord, unit: LaunchUnit, now: datetime, config: ExecConfig,
            busy_gpus: Mapping[str, int]) -> Attempt | str:
    """A new attempt for `unit` starting now, or a message saying why none fits the envelope."""
    cur = unit.current
    left = remaining_hours(unit, now, config.restart_overhead_h)
    slack = (unit.deadline - now).total_seconds() / 3600 - left - config.launch_margin_h
    if slack < 0:
        return f"{left:.1f} h of work left but only {left + slack:.1f} h before the deadline"
    spot = spot_allowed(job.spec.interruptible, slack, config.restart_overhead_h)
    scale = left / cur.run_hours if cur.run_hours else 1.0
    # The new run must end `launch_margin_h` before the deadline: the dispatcher's period and the boot.
    deadline = unit.deadline - timedelta(hours=config.launch_margin_h)
    spec = job.spec.model_copy(update={
        "gpus": cur.gpus, "shards": 1, "after": [], "not_before": now, "interruptible": spot,
        "duration_hours": max(job.spec.duration_hours * scale, 1 / 60), "deadline": deadline})
    offers = [o.model_copy(update={"capacity_gpus": max(0, o.capacity_gpus - busy_gpus.get(o.id, 0))})
              for o in catalog.offers]
    # Ops' offer rule still holds after approval: a re-placement never lands where they forbade.
    choices = {job.id: job.offer_rule.choice()} if job.offer_rule else None
    problem = build_problem([spec], now=now, catalog=catalog, offers=offers, job_ids=[job.id], choices=choices)
    doc = plan_batch(problem, PlanOptions(time_limit=2.0, lp_bound=False, deterministic=True)).document
    if not doc.assignments:
        u = doc.unplaced[0]
        return f"no re-placement: {u.reason.value}: {u.message}"
    seg = doc.assignments[0].segments[0]
    spent = sum(a.cost or 0.0 for a in unit.attempts)
    total = spent + seg.compute_cost + seg.egress_cost
    ceiling = unit.planned_cost * (1 + config.recovery_tolerance)
    if total > ceiling + 0.005:
        return (f"the best re-placement ({seg.offer_id}, ${seg.compute_cost + seg.egress_cost:,.2f}) brings the unit "
                f"to ${total:,.2f}, above the approved ${unit.planned_cost:,.2f} + "
                f"{config.recovery_tolerance:.0%}: ops must approve it")
    return Attempt(attempt=len(unit.attempts) + 1, key="", offer_id=seg.offer_id, provider=seg.provider,
                   adapter=cur.adapter, market=seg.market, nodes=seg.nodes, gpus=seg.gpus,
                   price_per_node_hour=seg.price_per_node_hour, run_hours=seg.run_hours,
                   start=max(parse_utc(seg.start), now))
