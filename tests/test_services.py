"""The plan workflow end to end on the store (fakeredis): submit → plan → approve, and the
stale, superseded, expired, rejected and concurrent-approval cases."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest

from scheduler import services
from scheduler.errors import Conflict, Forbidden, InvalidArgument, NotFound, StateConflict
from scheduler.lifecycle import JobState, PlanState
from scheduler.models import JobSpec
from scheduler.records import Principal
from scheduler.store import Store

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
OPS = Principal(name="olga", role="ops")
VISION = Principal(name="vera", role="submitter", team="vision")
NLP = Principal(name="nils", role="submitter", team="nlp")
RUN = services.PlanRun(now=NOW + timedelta(hours=2), time_limit_s=2)


def spec(name: str, team: str = "vision", **extra) -> JobSpec:
    fields = {"name": name, "team": team, "gpus": 8, "gpu_types": ["H100"], "duration_hours": 5,
              "not_before": NOW + timedelta(hours=2), "deadline": NOW + timedelta(days=3)}
    return JobSpec(**(fields | extra))


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))


def _approve(store, record, now=NOW):
    return services.approve_plan(store, OPS, record.plan_id, record.fingerprint, "ok", now=now)


def test_submit_plan_approve_reaches_approved(store):
    jobs = [services.submit_job(store, VISION, spec(f"j{i}"))[0] for i in range(3)]
    record = services.create_plan(store, OPS, RUN)
    assert record.state is PlanState.PENDING_REVIEW
    assert {a.job_id for a in record.document.assignments} == {j.id for j in jobs}
    assert all(store.get_job(j.id).state is JobState.PLANNED for j in jobs)
    approved = _approve(store, record)
    assert approved.state is PlanState.APPROVED
    assert approved.decision["by"] == "olga" and approved.decision["fingerprint"] == record.fingerprint
    assert all(store.get_job(j.id).state is JobState.APPROVED for j in jobs)
    assert [e.type for e in store.events_for_plan(record.plan_id)][-1] == "plan.approved"


def test_new_submission_makes_the_plan_stale_and_says_which(store):
    services.submit_job(store, VISION, spec("a"))
    record = services.create_plan(store, OPS, RUN)
    late = services.submit_job(store, VISION, spec("late"))[0]
    with pytest.raises(services.StalePlan) as err:
        _approve(store, record)
    assert any(late.id in change for change in err.value.changes)
    assert store.get_plan(record.plan_id).state is PlanState.STALE


def test_wrong_fingerprint_is_refused(store):
    services.submit_job(store, VISION, spec("a"))
    record = services.create_plan(store, OPS, RUN)
    with pytest.raises(services.StalePlan):
        services.approve_plan(store, OPS, record.plan_id, "0" * 64, now=NOW)
    assert store.get_plan(record.plan_id).state is PlanState.PENDING_REVIEW


def test_newer_plan_supersedes_the_older_one(store):
    services.submit_job(store, VISION, spec("a"))
    first = services.create_plan(store, OPS, RUN)
    second = services.create_plan(store, OPS, services.PlanRun(now=RUN.now + timedelta(minutes=5), time_limit_s=2))
    assert store.get_plan(first.plan_id).state is PlanState.SUPERSEDED
    with pytest.raises(StateConflict):
        _approve(store, first)
    assert _approve(store, second).state is PlanState.APPROVED


def test_plan_expires_at_its_first_start(store):
    services.submit_job(store, VISION, spec("a"))
    record = services.create_plan(store, OPS, RUN)
    with pytest.raises(StateConflict, match="expired"):
        _approve(store, record, now=RUN.now + timedelta(minutes=1))
    assert store.get_plan(record.plan_id).state is PlanState.EXPIRED


def test_two_concurrent_approvals_exactly_one_wins(store):
    services.submit_job(store, VISION, spec("a"))
    record = services.create_plan(store, OPS, RUN)
    results, barrier = [], threading.Barrier(2)

    def approve():
        barrier.wait()
        try:
            results.append(_approve(store, record).state)
        except Conflict as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=approve) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == sorted([str(PlanState.APPROVED), "StateConflict"])


def test_reject_needs_a_comment_and_sends_jobs_back(store):
    job = services.submit_job(store, VISION, spec("a"))[0]
    record = services.create_plan(store, OPS, RUN)
    with pytest.raises(InvalidArgument):
        services.reject_plan(store, OPS, record.plan_id, "  ")
    services.reject_plan(store, OPS, record.plan_id, "too expensive")
    assert store.get_job(job.id).state is JobState.PENDING


def test_submitters_see_only_their_team_and_cannot_decide(store):
    mine = services.submit_job(store, VISION, spec("a"))[0]
    theirs = services.submit_job(store, NLP, spec("b", team="nlp"))[0]
    with pytest.raises(InvalidArgument):
        services.submit_job(store, VISION, spec("c", team="nlp"))
    with pytest.raises(NotFound):
        services.get_job(store, VISION, theirs.id)
    assert [j.id for j in services.list_jobs(store, VISION)[0]] == [mine.id]
    record = services.create_plan(store, OPS, RUN)
    with pytest.raises(Forbidden):
        services.approve_plan(store, VISION, record.plan_id, record.fingerprint, now=NOW)
    with pytest.raises(Forbidden):
        services.create_plan(store, VISION, RUN)
    visible = services.get_plan(store, VISION, record.plan_id)
    assert {a.team for a in visible.assignments} == {"vision"}


def test_overlapping_plan_runs_are_refused(store):
    services.submit_job(store, VISION, spec("a"))
    token = store.acquire_lock(services.PLAN_LOCK, ttl_s=60)
    with pytest.raises(Conflict, match="in progress"):
        services.create_plan(store, OPS, RUN)
    store.release_lock(services.PLAN_LOCK, token)
    assert services.create_plan(store, OPS, RUN).state is PlanState.PENDING_REVIEW
