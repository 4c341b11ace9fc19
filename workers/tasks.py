"""Thin tasks: take ids, call one use case, return. The logic lives in scheduler.services / scheduler.execution.

Beat runs `dispatch`, `track` and `reconcile` on short periods; the dispatcher sends one
`launch` per batch of due units — the broker carries wake-ups, never far-future ETAs, and a
launch message that is lost is re-sent when its lease runs out (DESIGN §6).
"""

from __future__ import annotations

import logging
import random

from scheduler import services
from scheduler.errors import Conflict
from scheduler.execution import Retry
from scheduler.records import Principal
from scheduler.settings import get_settings
from scheduler.store import open_store
from workers.app import CANCEL_TASK, DISPATCH_TASK, LAUNCH_TASK, PLAN_TASK, RECONCILE_TASK, TRACK_TASK, app
from workers.runtime import executor

log = logging.getLogger("cloudsched.workers")

NIGHTLY = Principal(name="beat:nightly", role="ops")
BATCH = 50  # units per launch message: fewer, larger messages keep the broker out of the hot path
MAX_BACKOFF_S = 60.0


@app.task(name=PLAN_TASK)
def plan() -> str | None:
    """The nightly batch run: plan every plannable job, leave the plan for review."""
    settings = get_settings()
    run = services.PlanRun(created_by=NIGHTLY.name, time_limit_s=settings.plan_time_limit_s)
    try:
        record = services.create_plan(open_store(settings), NIGHTLY, run)
    except Conflict as exc:  # another run holds the lock: this one is refused, not queued
        log.warning("nightly plan refused: %s", exc)
        return None
    log.info("nightly plan %s: %d placed, %d unplaced", record.plan_id, record.summary.jobs_placed,
             record.summary.jobs_unplaced)
    return record.plan_id


@app.task(name=DISPATCH_TASK)
def dispatch() -> int:
    """Send a launch for every due unit (and for any whose launch lease ran out)."""
    due = executor().dispatch()
    for i in range(0, len(due), BATCH):
        launch.delay(due[i:i + BATCH])
    return len(due)


@app.task(name=LAUNCH_TASK)
def launch(unit_ids: list[str]) -> dict[str, int]:
    """Launch each unit; those that hit a transient provider error go again after a backoff with jitter."""
    outcomes: dict[str, int] = {}
    again: list[Retry] = []
    for uid in unit_ids:
        try:
            outcome = executor().launch(uid)
        except Retry as retry:
            again.append(retry)
            outcome = "retry"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if again:
        tries = max(r.tries for r in again)
        hint = max((r.error.retry_after_s or 0.0) for r in again)
        delay = max(hint, min(MAX_BACKOFF_S, 2.0 ** tries)) * random.uniform(0.5, 1.5)
        launch.apply_async(args=[[r.uid for r in again]], countdown=delay)
        log.info("retrying %d launch(es) in %.1f s: %s", len(again), delay, again[0].error)
    return outcomes


@app.task(name=TRACK_TASK)
def track() -> dict[str, dict[str, int]]:
    """Poll each adapter once for all its units (per provider, not per job)."""
    ex = executor()
    return {adapter: ex.track(adapter) for adapter in ex.launches.tracked_adapters()}


@app.task(name=RECONCILE_TASK)
def reconcile() -> dict[str, dict[str, int]]:
    """Compare each adapter's instances with our records: adopt, or terminate orphans after a grace period."""
    ex = executor()
    adapters = set(ex.launches.tracked_adapters()) | ({ex.config.launch_via} - {"catalog"})
    return {adapter: ex.reconcile(adapter) for adapter in sorted(adapters)}


@app.task(name=CANCEL_TASK)
def cancel(job_id: str) -> int:
    """Terminate a cancelled job's instances now (track would do it at its next poll)."""
    return executor().cancel_job(job_id)
