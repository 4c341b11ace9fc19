"""Job and plan lifecycles (DESIGN §4.6) as tables of allowed transitions.

`transition()` is the only way a state changes; anything not in the table raises
`IllegalTransition`, so a bug shows up as an error instead of a job in a state that
cannot be reached.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    PLANNED = "planned"
    APPROVED = "approved"
    LAUNCHING = "launching"
    RUNNING = "running"
    PREEMPTED = "preempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNPLACED = "unplaced"


class PlanState(StrEnum):
    PLANNING = "planning"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    EXECUTING = "executing"
    DONE = "done"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    STALE = "stale"


_J = JobState
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _J.PENDING: frozenset({_J.PLANNED, _J.UNPLACED, _J.CANCELLED}),
    # A plan that is rejected, superseded or stale sends its jobs back to pending.
    _J.PLANNED: frozenset({_J.APPROVED, _J.PENDING, _J.UNPLACED, _J.CANCELLED}),
    _J.UNPLACED: frozenset({_J.PENDING, _J.PLANNED, _J.CANCELLED}),
    # Re-checks at launch (price, capacity, compliance) may send a job back for re-planning.
    _J.APPROVED: frozenset({_J.LAUNCHING, _J.PENDING, _J.CANCELLED}),
    # A spot instance may be reclaimed before the first poll sees it running.
    _J.LAUNCHING: frozenset({_J.RUNNING, _J.FAILED, _J.PREEMPTED, _J.PENDING, _J.CANCELLED}),
    _J.RUNNING: frozenset({_J.SUCCEEDED, _J.FAILED, _J.PREEMPTED, _J.CANCELLED}),
    _J.PREEMPTED: frozenset({_J.LAUNCHING, _J.PENDING, _J.FAILED, _J.CANCELLED}),
    _J.SUCCEEDED: frozenset(),
    _J.FAILED: frozenset(),
    _J.CANCELLED: frozenset(),
}

_P = PlanState
PLAN_TRANSITIONS: dict[PlanState, frozenset[PlanState]] = {
    _P.PLANNING: frozenset({_P.PENDING_REVIEW}),
    _P.PENDING_REVIEW: frozenset({_P.APPROVED, _P.REJECTED, _P.SUPERSEDED, _P.EXPIRED, _P.STALE}),
    _P.APPROVED: frozenset({_P.EXECUTING, _P.EXPIRED}),
    _P.EXECUTING: frozenset({_P.DONE}),
    _P.DONE: frozenset(),
    _P.REJECTED: frozenset(),
    _P.SUPERSEDED: frozenset(),
    _P.EXPIRED: frozenset(),
    _P.STALE: frozenset(),
}

TERMINAL_JOB_STATES = frozenset(s for s, nxt in JOB_TRANSITIONS.items() if not nxt)
LIVE_JOB_STATES = frozenset(JobState) - TERMINAL_JOB_STATES
# Jobs a plan run takes: waiting ones, ones a previous run could not place, and ones a
# plan still under review placed (a newer plan for the same window supersedes it).
PLANNABLE_JOB_STATES = (JobState.PENDING, JobState.UNPLACED, JobState.PLANNED)


class IllegalTransition(ValueError):
    def __init__(self, kind: str, current: str, target: str):
        super().__init__(f"{kind} cannot go from {current!r} to {target!r}")
        self.kind, self.current, self.target = kind, current, target


def transition(current: JobState | PlanState, target: JobState | PlanState):
    """Return `target` if the lifecycle allows `current -> target`, else raise."""
    if isinstance(current, JobState):
        table, kind, target = JOB_TRANSITIONS, "job", JobState(target)
    else:
        table, kind, target = PLAN_TRANSITIONS, "plan", PlanState(target)
    if target not in table[current]:
        raise IllegalTransition(kind, current.value, target.value)
    return target


def path(current: JobState, target: JobState) -> list[JobState]:
    """Shortest lifecycle path from `current` to `target`, avoiding pending/cancelled detours."""
    if current is target:
        return []
    frontier, seen = [[current]], {current}
    while frontier:
        nxt = []
        for path in frontier:
            for step in JOB_TRANSITIONS[path[-1]]:
                if step in seen or (step is not target and step in (JobState.PENDING, JobState.CANCELLED)):
                    continue
                if step is target:
                    return path[1:] + [step]
                seen.add(step)
                nxt.append(path + [step])
        frontier = nxt
    return []
