"""Store operations on fakeredis (with Lua): every operation, its conflicts, pagination,
idempotency, retried scripts and the concurrent-approval race. Real Redis: test_store_integration.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import redis
from factories import job, offer, solve
from pydantic import ValidationError
from races import race as run_race
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.errors import (
    AlreadyExists,
    Conflict,
    IdempotencyConflict,
    InvalidArgument,
    NameTaken,
    NotFound,
    StateConflict,
    StoreUnavailable,
    TransitionNotAllowed,
    VersionConflict,
)
from scheduler.lifecycle import JobState, PlanState
from scheduler.models import Horizon, PlanDocument, SolverInfo, Summary
from scheduler.records import Principal
from scheduler.settings import Settings
from scheduler.store import IDEMPOTENCY_TTL_S, Store
from scheduler.store_keys import key_id

T0 = datetime(2026, 11, 22, 9, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def store(server) -> Store:
    return Store(fakeredis.FakeRedis(server=server, decode_responses=True), clock=Clock())


def plan_doc(plan_id: str = "plan_1", status: str = "pending_review") -> PlanDocument:
    return PlanDocument(
        plan_id=plan_id, status=status, created_at="2026-11-22T01:00:00Z", created_by="beat:nightly",
        horizon=Horizon(start="2026-11-22T01:00:00Z", end="2026-11-29T01:00:00Z"), fingerprint="sha256:abc",
        solver=SolverInfo(status="OPTIMAL"),
        summary=Summary(total_cost=10.0, baseline_centralized_cost=20.0, savings_pct=50.0, lower_bound=9.0,
                        jobs_placed=1, jobs_unplaced=0, by_placement={"centralized": 1}),
        assignments=[], unplaced=[],
    )


# -- jobs ---------------------------------------------------------------------------------


def test_create_job_stores_a_pending_record_and_an_event(store):
    record, created = store.create_job(job("train"), "alice")
    assert created
    assert record.id.startswith("job_") and len(record.id) == 30
    assert (record.state, record.version, record.team, record.submitted_by) == (JobState.PENDING, 1, "ml", "alice")
    assert record.created_at == record.updated_at
    assert store.get_job(record.id) == record
    events = store.events_for_job(record.id)
    assert [(e.type, e.job_id, e.actor) for e in events] == [("job.submitted", record.id, "alice")]
    assert events[0].data == {"name": "train", "team": "ml", "state": "pending"}
    assert store.events() == events


def test_get_missing_job_names_it(store):
    with pytest.raises(NotFound, match="job 'job_nope' does not exist"):
        store.get_job("job_nope")


def test_name_is_unique_per_team_among_live_jobs(store):
    first, _ = store.create_job(job("train"), "alice")
    with pytest.raises(NameTaken) as err:
        store.create_job(job("train"), "bob")
    assert err.value.job_id == first.id and "name" in str(err.value)
    other_team, created = store.create_job(job("train", team="vision"), "carol")
    assert created and other_team.team == "vision"
    store.transition_job(first.id, JobState.CANCELLED)  # terminal: the name is free again
    again, created = store.create_job(job("train"), "alice")
    assert created and again.id != first.id


def test_name_stays_taken_through_live_states(store):
    first, _ = store.create_job(job("train"), "alice")
    for state in ("planned", "approved", "launching", "running"):
        store.transition_job(first.id, state)
        with pytest.raises(NameTaken):
            store.create_job(job("train"), "alice")
    store.transition_job(first.id, "succeeded")
    assert store.create_job(job("train"), "alice")[1]


def test_idempotency_key_returns_the_original_job(store, server):
    first, created = store.create_job(job("train"), "alice", idempotency_key="k-1")
    again, created_again = store.create_job(job("train"), "alice", idempotency_key="k-1")
    assert created and not created_again and again == first
    assert len(store.list_jobs()[0]) == 1 and len(store.events()) == 1
    idem_keys = [k for k in server_keys(server) if k.startswith("cs:idem:")]
    ttl = fakeredis.FakeRedis(server=server).ttl(idem_keys[0])
    assert IDEMPOTENCY_TTL_S - 5 < ttl <= IDEMPOTENCY_TTL_S


def test_idempotency_key_with_another_body_conflicts(store):
    first, _ = store.create_job(job("train"), "alice", idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict) as err:
        store.create_job(job("train", gpus=16), "alice", idempotency_key="k-1")
    assert err.value.job_id == first.id and "Idempotency-Key" in str(err.value)
    with pytest.raises(IdempotencyConflict):
        store.create_job(job("other"), "alice", idempotency_key="k-1", body_hash="another-body")


def test_idempotency_uses_the_callers_body_hash(store):
    first, _ = store.create_job(job("train"), "alice", idempotency_key="k", body_hash="h1")
    assert store.create_job(job("train"), "alice", idempotency_key="k", body_hash="h1") == (first, False)


def test_idempotency_keys_are_per_principal(store):
    store.create_job(job("a"), "alice", idempotency_key="k")
    other, created = store.create_job(job("b"), "bob", idempotency_key="k")
    assert created and other.submitted_by == "bob"


def test_name_taken_is_checked_after_the_idempotency_key(store):
    """A retry of a request that created a job gets the job back, not NameTaken."""
    first, _ = store.create_job(job("train"), "alice", idempotency_key="k")
    assert store.create_job(job("train"), "alice", idempotency_key="k")[0].id == first.id


def test_a_refused_create_records_no_idempotency_key(store):
    store.create_job(job("train"), "alice")
    with pytest.raises(NameTaken):
        store.create_job(job("train"), "bob", idempotency_key="k")
    with pytest.raises(NameTaken):  # still NameTaken, not a replay of a job that was never made
        store.create_job(job("train"), "bob", idempotency_key="k")


def test_transition_bumps_version_and_logs_an_event(store):
    record, _ = store.create_job(job("train"), "alice")
    planned = store.transition_job(record.id, JobState.PLANNED, expected_version=1, plan_id="plan_1", actor="beat")
    assert (planned.state, planned.version, planned.plan_id) == (JobState.PLANNED, 2, "plan_1")
    assert planned.updated_at > record.updated_at and store.get_job(record.id) == planned
    approved = store.transition_job(record.id, "approved", actor="ops:bob")
    assert approved.plan_id == "plan_1"  # kept unless given
    back = store.transition_job(record.id, "pending", reason="PriceChanged", message="price rose 12 %")
    assert (back.plan_id, back.reason, back.message, back.version) == (None, "PriceChanged", "price rose 12 %", 4)
    events = store.events_for_job(record.id)
    assert [e.type for e in events] == ["job.submitted", "job.planned", "job.approved", "job.pending"]
    assert events[1].actor == "beat"
    assert events[1].data == {"from": "pending", "to": "planned", "version": 2, "plan_id": "plan_1"}
    assert events[3].data["reason"] == "PriceChanged"


def test_transition_with_a_stale_version_conflicts(store):
    record, _ = store.create_job(job("train"), "alice")
    store.transition_job(record.id, "planned")
    with pytest.raises(VersionConflict) as err:
        store.transition_job(record.id, "cancelled", expected_version=1)
    assert (err.value.expected, err.value.actual) == (1, 2) and isinstance(err.value, Conflict)
    assert store.get_job(record.id).state is JobState.PLANNED


def test_transition_outside_the_lifecycle_is_refused(store):
    record, _ = store.create_job(job("train"), "alice")
    store.transition_job(record.id, "cancelled")
    with pytest.raises(TransitionNotAllowed, match="'cancelled' and cannot become 'running'") as err:
        store.transition_job(record.id, "running")
    assert isinstance(err.value, StateConflict)
    with pytest.raises(InvalidArgument, match="state"):
        store.transition_job(record.id, "exploded")
    with pytest.raises(NotFound):
        store.transition_job("job_nope", "cancelled")


def test_concurrent_transitions_with_one_version_exactly_one_wins(server):
    store = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
    record, _ = store.create_job(job("train"), "alice")
    outcomes = race(server, 8, lambda s: s.transition_job(record.id, "cancelled", expected_version=1))
    assert sorted(type(o).__name__ for o in outcomes).count("JobRecord") == 1
    assert all(isinstance(o, (VersionConflict, TransitionNotAllowed)) for o in outcomes if isinstance(o, Exception))
    assert [e.type for e in store.events_for_job(record.id)] == ["job.submitted", "job.cancelled"]


def test_transition_without_version_retries_over_concurrent_changes(store, monkeypatch):
    record, _ = store.create_job(job("train"), "alice")
    real = store._transition_job
    calls = []

    def interfering(keys, args):  # another writer gets in between the read and the write, once
        if not calls:
            calls.append(1)
            store.transition_job(record.id, "planned", actor="other")
        return real(keys=keys, args=args)

    monkeypatch.setattr(store, "_transition_job", interfering)
    cancelled = store.transition_job(record.id, "cancelled")
    assert (cancelled.state, cancelled.version) == (JobState.CANCELLED, 3)


@pytest.mark.parametrize("script", ["_create_job", "_transition_job", "_set_plan_state"])
def test_a_script_retried_after_a_lost_reply_reports_success(store, monkeypatch, script):
    """redis-py retries a command whose reply was lost: the second run must not be a conflict."""
    record, _ = store.create_job(job("train"), "alice")
    store.save_plan(plan_doc(), {record.id: 1})
    real = getattr(store, script)

    def twice(keys, args):
        real(keys=keys, args=args)
        return real(keys=keys, args=args)

    monkeypatch.setattr(store, script, twice)
    if script == "_create_job":
        again, created = store.create_job(job("serve"), "alice")
        assert created and len(store.list_jobs()[0]) == 2
    elif script == "_transition_job":
        assert store.transition_job(record.id, "planned", expected_version=1).version == 2
        assert store.get_job(record.id).version == 2
    else:
        assert store.set_plan_state("plan_1", "approved", expected_state="pending_review").version == 2
    assert len(store.events()) == 3  # submitted, plan.created, and the one change (the retry adds none)


def test_list_jobs_pages_newest_first_without_gaps_or_repeats(store):
    ids = [store.create_job(job(f"j{i}"), "alice")[0].id for i in range(7)]
    page1, cursor = store.list_jobs(limit=3)
    assert [j.id for j in page1] == ids[6:3:-1] and cursor
    store.create_job(job("late"), "alice")  # a newer job does not shift later pages
    store.transition_job(ids[2], "cancelled")
    page2, cursor = store.list_jobs(limit=3, cursor=cursor)
    page3, end = store.list_jobs(limit=3, cursor=cursor)
    assert [j.id for j in page2 + page3] == ids[3::-1] and end is None
    assert store.list_jobs(limit=7, cursor=None)[1] is not None
    assert store.list_jobs(limit=8)[1] is None


def test_list_jobs_filters_by_team_and_state(store):
    a, _ = store.create_job(job("a"), "alice")
    b, _ = store.create_job(job("b", team="vision"), "carol")
    c, _ = store.create_job(job("c"), "alice")
    store.transition_job(c.id, "planned")
    assert [j.id for j in store.list_jobs(team="ml")[0]] == [c.id, a.id]
    assert [j.id for j in store.list_jobs(state="pending")[0]] == [b.id, a.id]
    assert [j.id for j in store.list_jobs(team="ml", state=JobState.PLANNED)[0]] == [c.id]
    assert store.list_jobs(team="vision", state="planned") == ([], None)
    assert store.list_jobs(team="nobody") == ([], None)


@pytest.mark.parametrize("kwargs, field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"cursor": "abc"}, "cursor"),
    ({"cursor": "-1"}, "cursor"), ({"state": "sleeping"}, "state"),
])
def test_list_jobs_refuses_bad_arguments_naming_the_field(store, kwargs, field):
    with pytest.raises(InvalidArgument) as err:
        store.list_jobs(**kwargs)
    assert err.value.field == field


def test_pending_jobs_oldest_first_and_counts(store):
    a, _ = store.create_job(job("a"), "alice")
    b, _ = store.create_job(job("b"), "alice")
    c, _ = store.create_job(job("c"), "alice")
    store.transition_job(b.id, "planned")
    assert [j.id for j in store.pending_jobs()] == [a.id, c.id]
    counts = store.job_counts()
    assert counts[JobState.PENDING] == 2 and counts[JobState.PLANNED] == 1 and sum(counts.values()) == 3
    assert set(store.get_jobs([a.id, "job_nope", c.id])) == {a.id, c.id}


# -- plans --------------------------------------------------------------------------------


def test_save_and_get_a_plan(store):
    info = store.save_plan(plan_doc(), {"job_1": 3}, actor="beat:nightly")
    assert (info.plan_id, info.state, info.version, info.decision) == ("plan_1", PlanState.PENDING_REVIEW, 1, None)
    record = store.get_plan("plan_1")
    assert record.document == plan_doc() and record.job_versions == {"job_1": 3}
    assert record.fingerprint == "sha256:abc" and record.summary.savings_pct == 50.0
    assert store.get_plan_info("plan_1") == info
    events = store.events_for_plan("plan_1")
    assert [(e.type, e.actor, e.data["jobs"]) for e in events] == [("plan.created", "beat:nightly", 1)]


def test_a_real_plan_document_round_trips(store):
    outcome = solve([job("a"), job("b", gpus=16)], [offer(), offer("ionet", "us-tx", price=30.0)])
    store.save_plan(outcome.document, {"a": 1, "b": 1})
    assert store.get_plan(outcome.document.plan_id).document == outcome.document


def test_plans_are_immutable(store):
    store.save_plan(plan_doc(), {})
    with pytest.raises(AlreadyExists, match="plan 'plan_1' already exists"):
        store.save_plan(plan_doc(), {"x": 1})
    with pytest.raises(NotFound):
        store.get_plan("plan_2")
    with pytest.raises(NotFound):
        store.get_plan_info("plan_2")
    with pytest.raises(InvalidArgument, match="status"):
        store.save_plan(plan_doc("plan_3", status="bogus"), {})


def test_approve_records_the_decision_and_the_latest_approved_plan(store):
    store.save_plan(plan_doc(), {})
    assert store.latest_approved_plan_id() is None
    decision = {"action": "approve", "by": "ops:bob", "at": "2026-11-22T08:00:00Z", "comment": "ok",
                "fingerprint": "sha256:abc"}
    info = store.set_plan_state("plan_1", PlanState.APPROVED, expected_state="pending_review",
                                decision=decision, actor="ops:bob")
    assert (info.state, info.version, info.decision) == (PlanState.APPROVED, 2, decision)
    assert store.latest_approved_plan_id() == "plan_1"
    record = store.get_plan("plan_1")
    assert record.current_document().status == "approved" and record.current_document().decision == decision
    assert record.document.status == "pending_review"  # the stored document never changes
    last = store.events_for_plan("plan_1")[-1]
    assert (last.type, last.actor, last.data["decision"], last.data["from"]) == (
        "plan.approved", "ops:bob", decision, "pending_review")
    info = store.set_plan_state("plan_1", "executing", expected_state="approved")
    assert info.decision == decision  # kept when a later change brings none


def test_plan_state_compare_and_set(store):
    store.save_plan(plan_doc(), {})
    store.set_plan_state("plan_1", "rejected", expected_state="pending_review", decision={"comment": "no"})
    with pytest.raises(StateConflict, match="plan 'plan_1' is 'rejected', not 'pending_review'") as err:
        store.set_plan_state("plan_1", "approved", expected_state="pending_review")
    assert err.value.actual == "rejected"
    with pytest.raises(TransitionNotAllowed):
        store.set_plan_state("plan_1", "approved", expected_state="rejected")
    with pytest.raises(InvalidArgument, match="expected_state"):
        store.set_plan_state("plan_1", "approved", expected_state="nonsense")
    with pytest.raises(NotFound):
        store.set_plan_state("plan_9", "approved", expected_state="pending_review")
    assert store.latest_approved_plan_id() is None


def test_concurrent_approvals_exactly_one_wins(server):
    """Two clients approve the same plan at once, 50 times: one approval, one StateConflict, each time."""
    store = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
    for trial in range(50):
        plan_id = f"plan_{trial}"
        store.save_plan(plan_doc(plan_id), {})
        outcomes = race(server, 2, lambda s, who=None: s.set_plan_state(
            plan_id, "approved", expected_state="pending_review", decision={"by": threading.current_thread().name}))
        winners = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(winners) == 1, outcomes
        assert [type(o) for o in outcomes if isinstance(o, Exception)] == [StateConflict]
        assert store.get_plan_info(plan_id).decision == winners[0].decision
        assert [e.type for e in store.events_for_plan(plan_id)] == ["plan.created", "plan.approved"]


def test_list_plans_newest_first_with_cursor(store):
    for i in range(5):
        store.save_plan(plan_doc(f"plan_{i}"), {})
    page, cursor = store.list_plans(limit=2)
    assert [p.plan_id for p in page] == ["plan_4", "plan_3"]
    page, cursor = store.list_plans(limit=2, cursor=cursor)
    assert [p.plan_id for p in page] == ["plan_2", "plan_1"]
    page, cursor = store.list_plans(limit=2, cursor=cursor)
    assert [p.plan_id for p in page] == ["plan_0"] and cursor is None


# -- events -------------------------------------------------------------------------------


def test_events_page_through_the_global_log(store):
    record, _ = store.create_job(job("a"), "alice")
    store.transition_job(record.id, "planned")
    store.save_plan(plan_doc(), {record.id: 2})
    extra = store.append_event("launch.attempted", actor="worker", job_id=record.id, plan_id="plan_1",
                               data={"offer": "aws:us-east-1:p5:on-demand"})
    everything = store.events()
    assert [e.type for e in everything] == ["job.submitted", "job.planned", "plan.created", "launch.attempted"]
    assert everything[-1] == extra
    assert store.events(since=everything[1].id, limit=1) == [everything[2]]
    assert store.events(since=everything[-1].id) == []
    assert store.events_for_job(record.id)[-1] == extra and store.events_for_plan("plan_1")[-1] == extra
    assert store.events_for_job("job_none") == []
    with pytest.raises(InvalidArgument, match="since"):
        store.events(since="yesterday")


# -- API keys -----------------------------------------------------------------------------


def test_api_keys_are_stored_hashed(store, server):
    plain, principal = store.create_api_key("submitter", "vision", "alice")
    assert principal == Principal(name="alice", role="submitter", team="vision")
    assert plain.startswith("csk_") and len(plain) > 40
    assert store.principal_for_key(plain) == principal
    assert store.principal_for_key(plain + "x") is None and store.principal_for_key("") is None
    dump = server_dump(server)
    assert plain not in dump and plain[10:30] not in dump
    [info] = store.list_api_keys()
    assert plain.startswith(info.prefix) and len(info.prefix) == 10 and info.principal == principal
    assert store.events()[-1].type == "apikey.created"


def test_api_key_roles_and_revocation(store):
    ops_key, ops = store.create_api_key("ops", None, "bob")
    admin_key, admin = store.create_api_key("admin", None, "root")
    assert (ops.role, ops.team, admin.role) == ("ops", None, "admin")
    with pytest.raises(InvalidArgument, match="submitter must belong to a team"):
        store.create_api_key("submitter", None, "carol")
    with pytest.raises(InvalidArgument, match="role"):
        store.create_api_key("root", None, "eve")
    ops_info = next(i for i in store.list_api_keys() if i.principal.name == "bob")
    assert store.revoke_api_key(ops_info.key_id, actor="root") and not store.revoke_api_key(ops_info.key_id)
    assert (store.events()[-1].type, store.events()[-1].data) == ("apikey.revoked", {"key_id": ops_info.key_id})
    assert store.principal_for_key(ops_key) is None and store.principal_for_key(admin_key) == admin
    with pytest.raises(ValidationError):
        Principal(name="x", role="submitter")


def test_a_principal_by_key_id_while_the_key_lives(store):
    key, vera = store.create_api_key("submitter", "vision", "vera")
    [info] = store.list_api_keys()
    assert info.key_id == key_id(key)
    assert store.principal_for_key_id(info.key_id) == vera
    assert store.principal_for_key_id("0" * 16) is None
    store.revoke_api_key(info.key_id)
    assert store.principal_for_key_id(info.key_id) is None


# -- locks --------------------------------------------------------------------------------


def test_run_lock_is_exclusive_and_released_only_by_its_holder(store):
    token = store.acquire_lock("plan-run", ttl_s=60)
    assert token and store.acquire_lock("plan-run", ttl_s=60) is None
    assert not store.release_lock("plan-run", "not-the-token")
    assert store.acquire_lock("plan-run", ttl_s=60) is None
    assert store.refresh_lock("plan-run", token, ttl_s=120) and not store.refresh_lock("plan-run", "x", ttl_s=1)
    assert store.release_lock("plan-run", token) and not store.release_lock("plan-run", token)
    assert store.acquire_lock("plan-run", ttl_s=60)
    with pytest.raises(InvalidArgument, match="ttl_s"):
        store.acquire_lock("other", ttl_s=0)


def test_an_expired_lock_can_be_taken_and_the_old_holder_cannot_release_it(store):
    old = store.acquire_lock("plan-run", ttl_s=0.05)
    time.sleep(0.1)
    new = store.acquire_lock("plan-run", ttl_s=60)
    assert new and not store.release_lock("plan-run", old)
    assert store.acquire_lock("plan-run", ttl_s=60) is None


# -- wiring -------------------------------------------------------------------------------


def test_store_needs_decoded_responses():
    with pytest.raises(ValueError, match="decode_responses"):
        Store(fakeredis.FakeRedis())


def test_an_unreachable_redis_is_store_unavailable(tmp_path):
    client = redis.Redis(unix_socket_path=str(tmp_path / "none.sock"), decode_responses=True,
                         retry=Retry(NoBackoff(), 0))
    store = Store(client)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.get_job("job_x")
    with pytest.raises(StoreUnavailable):
        store.create_job(job("a"), "alice")


def test_keys_share_one_prefix(server):
    store = Store(fakeredis.FakeRedis(server=server, decode_responses=True), prefix="t1:")
    record, _ = store.create_job(job("a"), "alice", idempotency_key="k")
    store.save_plan(plan_doc(), {record.id: 1})
    store.create_api_key("ops", None, "bob")
    store.acquire_lock("x", 10)
    assert server_keys(server) and all(k.startswith("t1:") for k in server_keys(server))


# -- settings -----------------------------------------------------------------------------


def test_settings_defaults_and_environment(monkeypatch, tmp_path):
    settings = Settings()
    assert (settings.redis_url, settings.nightly_at, settings.timezone, settings.embedded) == (None, "01:00", "UTC",
                                                                                               True)
    monkeypatch.setenv("CLOUDSCHED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLOUDSCHED_NIGHTLY_AT", "2:30")
    monkeypatch.setenv("CLOUDSCHED_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("CLOUDSCHED_REDIS_URL", "")
    settings = Settings()
    assert settings.data_dir == tmp_path and settings.nightly_at == "02:30" and settings.redis_url is None
    assert settings.nightly_time.hour == 2 and str(settings.nightly_time.tzinfo) == "Europe/Berlin"


@pytest.mark.parametrize("field, value, words", [
    ("redis_url", "http://localhost:6379", "must start with"),
    ("redis_url", "redis://", "names no host"),
    ("nightly_at", "25:00", "HH:MM"),
    ("nightly_at", "1am", "HH:MM"),
    ("timezone", "Mars/Olympus", "IANA"),
    ("plan_time_limit_s", 0, "greater than 0"),
    ("max_body_bytes", -1, "greater than or equal"),
    ("rate_limit_per_minute", 0, "greater than or equal"),
])
def test_settings_refuse_nonsense_naming_the_variable(field, value, words):
    with pytest.raises(ValidationError) as err:
        Settings(**{field: value})
    assert field in str(err.value) and words in str(err.value)


def test_settings_refuse_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        Settings(data_dir=tmp_path / "file")


# -- helpers ------------------------------------------------------------------------------


def race(server, n: int, action) -> list:
    """Run `action(store)` in `n` threads, each with its own client, released together."""
    return run_race([Store(fakeredis.FakeRedis(server=server, decode_responses=True)) for _ in range(n)], action)


def server_keys(server) -> list[str]:
    return fakeredis.FakeRedis(server=server, decode_responses=True).keys("*")


def server_dump(server) -> str:
    """Every string, hash and stream value on the server, as one text to search for secrets."""
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    parts = []
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == "string":
            parts.append(client.get(key))
        elif kind == "hash":
            parts.extend(f"{k}={v}" for k, v in client.hgetall(key).items())
        elif kind == "stream":
            parts.extend(str(fields) for _, fields in client.xrange(key))
        parts.append(key)
    return "\n".join(parts)
