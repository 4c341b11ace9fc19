"""Kueue-style conditions of a job, derived from its state, reason and message.

The job's events are replayed so that each condition carries the time it last changed
(`last_transition_time`) and keeps what it last said once the job moves on: a job cancelled
after approval still shows `Approved=True`.
"""

from __future__ import annotations

from api.schemas import Condition, JobDetail, JobPublic
from scheduler.lifecycle import JobState
from scheduler.records import Event, JobRecord

_S = JobState
_AFTER_APPROVAL = (_S.APPROVED, _S.LAUNCHING, _S.RUNNING, _S.PREEMPTED, _S.SUCCEEDED, _S.FAILED)


def _for_state(state: JobState, reason: str | None, message: str | None, plan_id: str | None) -> dict:
    """type -> (status, reason, message) set by entering `state`."""
    out: dict[str, tuple[str, str, str]] = {}
    if state in (_S.PENDING, _S.UNPLACED):
        default = "Pending" if state is _S.PENDING else "Unplaced"
        out["Planned"] = ("False", reason or default, message or "Waiting for the next plan run.")
    elif state is _S.PLANNED:
        out["Planned"] = ("True", "Planned", f"Placed by plan {plan_id}." if plan_id else "Placed.")
        out["Approved"] = ("False", "AwaitingReview", "The plan awaits an ops review.")
    if state in _AFTER_APPROVAL:
        out["Approved"] = ("True", "Approved", f"Plan {plan_id} was approved." if plan_id else "Approved.")
    if state is _S.LAUNCHING:
        out["Running"] = ("False", "Launching", message or "Starting on the provider.")
    elif state is _S.RUNNING:
        out["Running"] = ("True", "Running", message or "")
    elif state is _S.PREEMPTED:
        out["Running"] = ("False", reason or "Preempted", message or "Preempted; it will be placed again.")
    elif state in (_S.SUCCEEDED, _S.FAILED, _S.CANCELLED):
        word = {_S.SUCCEEDED: "Succeeded", _S.FAILED: "Failed", _S.CANCELLED: "Cancelled"}[state]
        out["Finished"] = ("True", reason or word, message or "")
    return out


def job_detail(job: JobRecord, events: list[Event]) -> JobDetail:
    """`GET /v1/jobs/{id}`'s answer: the job, its conditions and its events (the route's and api.fastpath's)."""
    # Built from the record's validated fields without checking them again (a third of the time this
    # takes); the route's answer is still validated against its response model, the fast path's is
    # byte-compared with it (tests/test_api_fastpath.py).
    return JobDetail.model_construct(**{name: getattr(job, name) for name in JobPublic.model_fields},
                                     conditions=job_conditions(job, events), events=events)


def job_conditions(job: JobRecord, events: list[Event]) -> list[Condition]:
    steps = [(JobState(e.data["to"]), e.data.get("reason"), e.data.get("message"), e.data.get("plan_id"), e.at)
             for e in events if e.data.get("to") in JobState._value2member_map_]
    if not steps or steps[-1][0] is not job.state:  # events cut short: the record is the truth
        steps.append((job.state, job.reason, job.message, job.plan_id, job.updated_at))
    conditions: dict[str, Condition] = {}
    first_at = events[0].at if events else job.created_at
    for state, reason, message, plan_id, at in [(_S.PENDING, None, None, None, first_at), *steps]:
        if state in (_S.PENDING, _S.UNPLACED) and "Approved" in conditions:
            conditions["Approved"] = _set(conditions["Approved"], "False", "NotPlanned", "Sent back for planning.", at)
        for kind, (status, why, text) in _for_state(state, reason, message, plan_id).items():
            conditions[kind] = _set(conditions.get(kind), status, why, text, at, kind)
    order = ["Planned", "Approved", "Running", "Finished"]
    return sorted(conditions.values(), key=lambda c: order.index(c.type))


def _set(old: Condition | None, status: str, reason: str, message: str, at, kind: str | None = None) -> Condition:
    changed = old is None or old.status != status
    return Condition(type=kind or old.type, status=status, reason=reason, message=message,
                     last_transition_time=at if changed else old.last_transition_time)
