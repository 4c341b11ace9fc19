"""A job's launch history as the job page shows it: pure functions over its launch units, no I/O.

A unit is one plan segment (`scheduler.launches`); its attempts are the first launch and one
per re-placement after a preemption or failure. An attempt's cost is known once it has ended
(what the provider billed, else run time × price × nodes), so while a job is not terminal
its actual cost is the cost *so far*: ended attempts only, a running one counts when it ends.
Planned is the plan assignment's `total_cost` (compute + egress), the figure ops approved; the
difference is shown once the job is terminal (before, it mostly says what has not run yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from scheduler.launches import Attempt, LaunchUnit
from scheduler.models import Assignment

LIVE_ATTEMPT_STATES = ("launching", "launched")  # an instance may exist and is accruing cost


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    offer_id: str
    provider: str
    region: str
    market: str
    adapter: str
    instance: str  # the provider's id of what it started ("" before the launch)
    state: str  # the record's state, and the provider's phase once one was seen: `ended · preempted`
    status: str  # one word for the colour: the phase if any, else the state
    due: datetime
    launched_at: datetime | None
    running_at: datetime | None
    ended_at: datetime | None
    cost: float | None
    billed: bool  # the cost is what the provider billed, not run time × price
    reason: str
    message: str


@dataclass(frozen=True)
class UnitView:
    id: str
    index: int
    plan_id: str
    planned_cost: float
    actual_cost: float
    attempts: list[AttemptRow]


@dataclass(frozen=True)
class CostLine:
    key: str  # planned | actual | difference (the row's data-cost)
    label: str
    value: float | None
    note: str
    signed: bool = False


def region_of(offer_id: str) -> str:
    """`aws:us-east-1:p5.48xlarge:on-demand` -> `us-east-1`."""
    parts = offer_id.split(":")
    return parts[1] if len(parts) == 4 else ""


def attempt_row(a: Attempt, previous: Attempt | None = None) -> AttemptRow:
    state = f"{a.state} · {a.phase}" if a.phase and a.phase != a.state else a.state
    message = a.message or ""
    if previous is not None and not (a.reason or message):  # say why this attempt exists
        message = f"re-placed after attempt {previous.attempt} {previous.phase or previous.state}"
    return AttemptRow(
        attempt=a.attempt, offer_id=a.offer_id, provider=a.provider, region=region_of(a.offer_id), market=a.market,
        adapter=a.adapter, instance=str((a.handle or {}).get("id", "")), state=state, status=a.phase or a.state,
        due=a.start, launched_at=a.launched_at, running_at=a.running_at, ended_at=a.ended_at, cost=a.cost,
        billed=a.billed_usd is not None and a.cost is not None, reason=a.reason or "", message=message)


def unit_views(units: Sequence[LaunchUnit]) -> list[UnitView]:
    """Units by when their first attempt was due (a re-planned job has units of several plans), then segment."""
    ordered = sorted(units, key=lambda u: (u.attempts[0].start, u.index))
    return [UnitView(id=u.id, index=u.index, plan_id=u.plan_id, planned_cost=u.planned_cost,
                     actual_cost=u.actual_cost,
                     attempts=[attempt_row(a, u.attempts[i - 1] if i else None) for i, a in enumerate(u.attempts)])
            for u in ordered]


def cost_lines(assignment: Assignment | None, plan_id: str | None, units: Sequence[LaunchUnit],
               terminal: bool) -> list[CostLine]:
    """Planned (the approved assignment), actual (the units' ended attempts) and the difference."""
    planned = assignment.total_cost if assignment else None
    lines = [CostLine("planned", "planned", planned, f"plan {plan_id}" if assignment else "not placed by a plan")]
    if not units:
        return [*lines, CostLine("actual", "actual", None, "no launch yet")]
    actual = round(sum(u.actual_cost for u in units), 2)
    lines.append(CostLine("actual", "actual" if terminal else "actual so far", actual, _actual_note(units)))
    if planned is not None and terminal:
        lines.append(CostLine("difference", "actual − planned", round(actual - planned, 2),
                              _share(actual - planned, planned), signed=True))
    return lines


def _actual_note(units: Sequence[LaunchUnit]) -> str:
    attempts = sum(len(u.attempts) for u in units)
    note = f"{attempts} attempt{'s' if attempts != 1 else ''} on {len(units)} unit{'s' if len(units) != 1 else ''}"
    plans = {u.plan_id for u in units}
    if len(plans) > 1:
        note += f" of {len(plans)} plans"
    live = sum(1 for u in units if u.current.state in LIVE_ATTEMPT_STATES)
    if live:
        note += f"; {live} running, counted when it ends" if live == 1 else f"; {live} running, counted when they end"
    return note


def _share(difference: float, planned: float) -> str:
    if not planned:
        return ""
    return f"{difference / planned * 100:+.1f}% of planned"
