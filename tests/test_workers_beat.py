"""The Celery app's safety settings, the nightly beat entry, and the plan task itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import fakeredis
import pytest

from scheduler import services
from scheduler.lifecycle import PlanState
from scheduler.models import JobSpec
from scheduler.records import Principal
from scheduler.settings import Settings
from scheduler.store import Store
from workers import tasks
from workers.app import PLAN_TASK, app, broker_for, configure


def test_task_settings_keep_redelivery_safe():
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.worker_prefetch_multiplier == 1
    plan_limit = conf.task_annotations[PLAN_TASK]["time_limit"]
    assert conf.broker_transport_options["visibility_timeout"] > max(plan_limit, conf.task_time_limit)


def test_nightly_entry_follows_settings(tmp_path):
    from celery import Celery
    custom = configure(Celery("t"), Settings(data_dir=tmp_path, nightly_at="02:30", timezone="Europe/Berlin"))
    entry = custom.conf.beat_schedule["nightly-plan"]
    assert entry["task"] == PLAN_TASK
    assert entry["schedule"].hour == {2} and entry["schedule"].minute == {30}
    assert custom.conf.timezone == "Europe/Berlin"
    assert custom.conf.beat_schedule_filename.startswith(str(tmp_path))


def test_broker_for_embedded_is_a_unix_socket_and_starts_nothing(tmp_path):
    url = broker_for(Settings(data_dir=tmp_path))
    assert url.startswith("redis+socket://") and url.endswith(".sock")
    assert not list(tmp_path.iterdir())  # no server was started to compute it
    assert broker_for(Settings(redis_url="redis://example.invalid:6380/2")) == "redis://example.invalid:6380/2"


@pytest.fixture
def store(monkeypatch) -> Store:
    store = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
    monkeypatch.setattr(tasks, "open_store", lambda settings=None: store)
    return store


def test_plan_task_creates_a_plan_for_review(store):
    now = datetime.now(timezone.utc)
    spec = JobSpec(name="a", team="vision", gpus=8, gpu_types=["H100"], duration_hours=3,
                   deadline=now + timedelta(days=2))
    services.submit_job(store, Principal(name="v", role="submitter", team="vision"), spec)
    plan_id = tasks.plan.apply().get()
    record = store.get_plan(plan_id)
    assert record.state is PlanState.PENDING_REVIEW and record.created_by == "beat:nightly"
    assert record.summary.jobs_placed == 1


def test_plan_task_refuses_to_overlap_a_running_plan(store):
    token = store.acquire_lock(services.PLAN_LOCK, ttl_s=60)
    assert tasks.plan.apply().get() is None
    store.release_lock(services.PLAN_LOCK, token)
