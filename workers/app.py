"""The Celery app: broker on the same Redis as the store, JSON only, short tasks.

Settings that keep launches safe under Celery's redelivery (TRAPS.md): late acks, reject on
a lost worker, one message prefetched at a time, a time limit on every task, no results
kept. The nightly plan run is a beat entry at `CLOUDSCHED_NIGHTLY_AT` in
`CLOUDSCHED_TIMEZONE`; beat keeps its schedule in the data directory, so a restarted beat
does not run a missed or repeated night twice.

    celery -A workers.app worker --loglevel=info
    celery -A workers.app beat --loglevel=info
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from scheduler.redis_server import broker_url
from scheduler.settings import Settings, get_settings

PLAN_TASK = "cloudsched.plan"
DISPATCH_TASK = "cloudsched.dispatch"
LAUNCH_TASK = "cloudsched.launch"
TRACK_TASK = "cloudsched.track"
RECONCILE_TASK = "cloudsched.reconcile"
CANCEL_TASK = "cloudsched.cancel"


def broker_for(settings: Settings) -> str:
    """The broker URL without starting anything (importing the app must have no side effects)."""
    return broker_url(settings, start=False)


def configure(app: Celery, settings: Settings) -> Celery:
    if app.conf.broker_url and app.conf.broker_url != broker_for(settings):
        # Re-configured for another Redis in one process (the demo, tests): drop the producer
        # connections Celery keeps to the old broker, or messages keep going there.
        app._after_fork()  # forgets the connection and producer pools, as after a fork
    nightly = settings.nightly_time
    plan_limit = settings.plan_time_limit_s * 4 + 120
    app.conf.update(
        broker_url=broker_for(settings),
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_time_limit=600, task_soft_time_limit=540,
        # Longer than any task: a task is redelivered only when its worker is really gone.
        broker_transport_options={"visibility_timeout": int(max(plan_limit, 600)) + 600},
        timezone=settings.timezone, enable_utc=True,
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        beat_schedule={
            "nightly-plan": {
                "task": PLAN_TASK,
                "schedule": crontab(hour=nightly.hour, minute=nightly.minute),
                "options": {"expires": 3600},  # a night missed by more than an hour is not replayed late
            },
            # Short periods, each message expiring before the next one: a backlog never piles up.
            "dispatch": {"task": DISPATCH_TASK, "schedule": settings.dispatch_every_s,
                         "options": {"expires": settings.dispatch_every_s}},
            "track": {"task": TRACK_TASK, "schedule": settings.track_every_s,
                      "options": {"expires": settings.track_every_s}},
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.reconcile_every_s,
                          "options": {"expires": settings.reconcile_every_s}},
        },
        task_annotations={PLAN_TASK: {"time_limit": plan_limit, "soft_time_limit": plan_limit - 30},
                          LAUNCH_TASK: {"time_limit": 300, "soft_time_limit": 270}},
    )
    return app


app = configure(Celery("cloudsched", include=["workers.tasks"]), get_settings())
