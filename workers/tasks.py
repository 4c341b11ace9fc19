"""Thin tasks: take ids, call one service, return. The logic lives in scheduler.services."""

from __future__ import annotations

import logging

from scheduler import services
from scheduler.errors import Conflict
from scheduler.records import Principal
from scheduler.settings import get_settings
from scheduler.store import open_store
from workers.app import PLAN_TASK, app

log = logging.getLogger("cloudsched.workers")

NIGHTLY = Principal(name="beat:nightly", role="ops")


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
