"""The demo's second half: run the approved plan on the `local` provider with an in-process worker.

The demo process plays beat (it sends `dispatch` and `track` every half second) and shows
progress; the in-process Celery worker runs the tasks, exactly as a deployed worker would.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scheduler.lifecycle import TERMINAL_JOB_STATES, JobState
from scheduler.models import parse_utc
from scheduler.records import PlanRecord
from scheduler.settings import Settings
from scheduler.store import Store

EXECUTION_SPAN_S = 15.0  # the plan's starts are spread over about this many seconds
TIMEOUT_S = 180.0


def _warp(plan: PlanRecord) -> tuple[datetime, float]:
    starts = sorted(parse_utc(s.start) for a in plan.document.assignments for s in a.segments)
    span = (starts[-1] - starts[0]).total_seconds() if starts else 0.0
    return (starts[0] if starts else datetime.now(timezone.utc)), max(1.0, span / EXECUTION_SPAN_S)


def execute_plan(console: Console, settings: Settings, store: Store, plan: PlanRecord) -> dict[str, JobState]:
    from workers import runtime, tasks
    from workers.app import app, configure
    from workers.inprocess import worker_thread

    configure(app, settings)
    first, speed = _warp(plan)
    began = time.monotonic()
    runtime.use(settings, clock=lambda: first + timedelta(seconds=(time.monotonic() - began) * speed))
    job_ids = [a.job_id for a in plan.document.assignments]
    console.print(f"\n[bold]Executing[/bold] {len(job_ids)} jobs on the local provider "
                  f"(in-process Celery worker; plan time runs {speed:,.0f}x)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with worker_thread(app), Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("jobs finished", total=len(job_ids))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            tasks.dispatch.delay()
            tasks.track.delay()
            jobs = store.get_jobs(job_ids)
            counts = Counter(job.state for job in jobs.values())
            done = sum(n for state, n in counts.items() if state in TERMINAL_JOB_STATES)
            progress.update(bar, completed=done, description="jobs finished  " + "  ".join(
                f"{state.value} {n}" for state, n in sorted(counts.items()) if n))
            if done == len(job_ids):
                break
            time.sleep(0.5)
    jobs = store.get_jobs(job_ids)
    console.print(_table(store, plan, jobs))
    return {j.name: j.state for j in jobs.values()}


def _table(store: Store, plan: PlanRecord, jobs) -> Table:
    table = Table(title="Jobs run on the local provider", header_style="bold")
    for column in ("job", "planned on", "state", "ran", "units", "last output line"):
        table.add_column(column)
    for a in plan.document.assignments:
        job = jobs[a.job_id]
        units = store.launches.of_job(a.job_id)
        ran = [(u.current.ended_at - (u.current.running_at or u.current.launched_at)).total_seconds()
               for u in units if u.current.ended_at and (u.current.running_at or u.current.launched_at)]
        color = "green" if job.state is JobState.SUCCEEDED else "red"
        table.add_row(a.job_name, ", ".join(sorted({s.provider + ":" + s.region for s in a.segments})),
                      f"[{color}]{job.state.value}[/{color}]", f"{max(ran):.1f} s" if ran else "-",
                      str(len(units)), _last_line(units))
    return table


def _last_line(units) -> str:
    for u in units:
        handle = u.current.handle or {}
        root = Path(handle["extra"]["dir"]) if handle.get("extra", {}).get("dir") else None
        if root and (root / "output.log").exists():
            return (root / "output.log").read_text().strip().splitlines()[-1]
    return ""
