"""Reliability of execution against a real Redis and the fault-injecting `fake` provider.

Each fault test has a negative control: the same run with one safeguard removed, showing
that the check would catch the failure it guards against.

- worker `kill -9` before, during and after the provider call, 100 trials each: the launching
  process is a fork of this one running the same `Executor.launch` a Celery task runs, killed
  at the named stage; the dispatcher re-sends the unit when its lease runs out and the launch
  completes elsewhere. 0 duplicate launches, 0 lost jobs.
- Redis `kill -9` (the embedded server; its supervisor restarts it from the AOF) while units are
  dispatched and launched: 0 lost, 0 duplicates (reconcile adopts what a lost write forgot).
- 30 % provider 5xx, half of them after the create took effect: at most 5 calls per launch,
  0 duplicates, the instances behind lost responses adopted.
- throttling: launches through the shared rate limiter from 2 processes never exceed its rate.
- spot preemption of 20 % of running jobs: every job whose slack allows finishes before its deadline.

Runs on the embedded Redis in a temporary directory, or on the server `CLOUDSCHED_REDIS_URL`
names (under a unique key prefix, removed afterwards).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from exec_support import NOW, SimClock, approved_plan, approved_units, run_until_quiet, spec

from scheduler.catalog import load_catalog
from scheduler.errors import StoreUnavailable
from scheduler.execution import ExecConfig, Executor, Retry
from scheduler.lifecycle import JobState
from scheduler.redis_server import embedded, stop_embedded, supervise
from scheduler.store import Store
from workers.providers.fake import FakeProvider
from workers.runtime import RateLimited

REDIS_URL = os.environ.get("CLOUDSCHED_REDIS_URL") or None
TRIALS = 100
BATCH = 25  # trials run side by side, each in its own forked process


@pytest.fixture(scope="module")
def redis_factory(tmp_path_factory):
    if REDIS_URL:
        yield lambda: redis.Redis.from_url(REDIS_URL, decode_responses=True)
        return
    data_dir = tmp_path_factory.mktemp("faults-redis")
    server = embedded(data_dir)
    yield lambda: server.client()
    stop_embedded(data_dir)


@pytest.fixture
def store(redis_factory):
    prefix = f"cs-faults-{uuid.uuid4().hex[:10]}:"
    client = redis_factory()
    yield Store(client, prefix=prefix)
    for chunk in _chunks(list(client.scan_iter(match=prefix + "*", count=1000)), 500):
        client.delete(*chunk)


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def _executor(store: Store, fake: FakeProvider, clock=None, **config) -> Executor:
    return Executor(store, store.launches, providers=lambda name: fake, catalog=load_catalog(),
                    config=ExecConfig(launch_via="fake", **config),
                    clock=clock or (lambda: datetime.now(timezone.utc)))


# -- worker kill -9 -----------------------------------------------------------------------


def _launch_in_child(store: Store, fake_path: Path, uid: str, stage: str, marker: Path) -> int:
    """Fork a process that launches `uid` and stops (forever) at `stage`, after touching `marker`."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: redis-py's pool opens new connections after a fork; a new SQLite connection too
        child_store = Store(store.client, prefix=store.keys.p)
        fake = FakeProvider(fake_path)

        def probe(at: str) -> None:
            if at == stage:
                marker.touch()
                time.sleep(600)

        if stage == "during":
            fake.configure(pause_during_s=600)
        ex = _executor(child_store, fake, lease_s=0.3)
        ex.probe = probe
        ex.launch(uid)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(0)


def _kill_trials(store: Store, tmp_path: Path, stage: str, *, lookup: bool = True, redispatch: bool = True):
    fake = FakeProvider(tmp_path / "cloud.sqlite")
    fake.configure(lookup=lookup)
    ex = _executor(store, fake, lease_s=0.3)
    uids = approved_units(store, TRIALS, start=datetime.now(timezone.utc) - timedelta(minutes=1))
    assert sorted(ex.dispatch()) == sorted(uids)
    killed = 0
    for batch in _chunks(uids, BATCH):
        markers = {uid: tmp_path / f"{abs(hash(uid))}.{stage}" for uid in batch}
        pids = [_launch_in_child(store, tmp_path / "cloud.sqlite", uid, stage, markers[uid]) for uid in batch]
        keys = {store.launches.get(uid).current.key for uid in batch}
        deadline = time.time() + 60
        while time.time() < deadline:  # "during": the create is in the provider's ledger, the reply not sent
            reached = all(m.exists() for m in markers.values()) if stage != "during" else \
                keys <= {k for k, _ in fake.ledger()}
            if reached:
                break
            time.sleep(0.01)
        assert reached, f"the launching processes did not reach {stage!r}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed += 1
    fake.configure(pause_during_s=0.0)
    time.sleep(0.4)  # the dead workers' leases run out
    for _ in range(3):  # the dispatcher re-sends units whose lease expired; another worker launches them
        due = ex.dispatch() if redispatch else []
        for uid in due:
            ex.launch(uid)
        time.sleep(0.35)
    ex.reconcile("fake")
    units = store.launches.get_many(uids)
    lost = [u.id for u in units if u.current.state != "launched"]
    return killed, fake.duplicates(), lost, fake


@pytest.mark.parametrize("stage", ["before-provider", "during", "after-provider"])
def test_worker_killed_at_each_stage_of_a_launch_neither_duplicates_nor_loses(store, tmp_path, stage):
    killed, duplicates, lost, fake = _kill_trials(store, tmp_path, stage)
    assert killed == TRIALS
    assert duplicates == {}
    assert lost == []
    assert len(fake.ledger()) == TRIALS  # each job launched exactly once


@pytest.mark.parametrize("stage", ["during", "after-provider"])
def test_negative_control_without_the_tag_lookup_kills_duplicate(store, tmp_path, stage):
    _, duplicates, _, _ = _kill_trials(store, tmp_path, stage, lookup=False)
    assert len(duplicates) == TRIALS


def test_negative_control_without_redispatch_kills_lose_jobs(store, tmp_path):
    _, _, lost, _ = _kill_trials(store, tmp_path, "before-provider", redispatch=False)
    assert len(lost) == TRIALS


# -- Redis kill -9 --------------------------------------------------------------------------


def test_redis_killed_during_dispatch_loses_nothing(tmp_path):
    data_dir = tmp_path / "redis"
    server = embedded(data_dir)
    supervise(data_dir, interval_s=0.2)
    try:
        store = Store(server.client())
        fake = FakeProvider(tmp_path / "cloud.sqlite")
        fake.configure(slow_s=0.002)
        ex = _executor(store, fake, lease_s=1.0)
        uids = approved_units(store, 300, start=datetime.now(timezone.utc) - timedelta(minutes=1))
        time.sleep(1.5)  # the units are stored well before the crash, as an approval is
        killed, t0, old_pid, launched_before = False, time.time(), None, 0
        while time.time() - t0 < 60:
            try:
                for uid in ex.dispatch(limit=20):
                    ex.launch(uid)
                    if not killed and len(fake.ledger()) >= 100:
                        old_pid = _redis_pid(data_dir)
                        os.kill(old_pid, signal.SIGKILL)
                        killed, launched_before = True, len(fake.ledger())
                if killed and all(u.current.state == "launched" for u in store.launches.get_many(uids)):
                    break
                if killed:
                    ex.reconcile("fake")
            except (redis.ConnectionError, redis.TimeoutError, StoreUnavailable, redis.exceptions.BusyLoadingError):
                time.sleep(0.1)
        units = store.launches.get_many(uids)
        # The crash happened mid-run: a new server (from the AOF) served the rest of the launches.
        assert killed and _redis_pid(data_dir) not in (None, old_pid) and launched_before < 300
        assert len(units) == 300
        assert [u.id for u in units if u.current.state != "launched"] == []
        assert fake.duplicates() == {}
        assert len(fake.ledger()) == 300
    finally:
        stop_embedded(data_dir)


def _redis_pid(data_dir: Path) -> int:
    return embedded(data_dir).pid


# -- provider 5xx ---------------------------------------------------------------------------


def _launch_all(ex: Executor, uids: list[str], rounds: int = 20) -> None:
    pending = list(uids)
    for _ in range(rounds):
        again = []
        for uid in pending:
            try:
                ex.launch(uid)
            except Retry:
                again.append(uid)
        pending = again
        if not pending:
            return


def test_provider_5xx_on_30_percent_of_calls_half_after_create(store, tmp_path):
    fake = FakeProvider(tmp_path / "cloud.sqlite", seed=3)
    fake.configure(error_before=0.15, error_after=0.15 / 0.85)  # 15 % of calls each way
    ex = _executor(store, fake, max_tries=5)
    uids = approved_units(store, 300, start=datetime.now(timezone.utc) - timedelta(minutes=1))
    ex.dispatch()
    _launch_all(ex, uids)
    units = store.launches.get_many(uids)
    calls = len(fake.call_times("launch"))
    assert max(u.current.tries for u in units) <= 5
    assert fake.duplicates() == {}
    launched = [u for u in units if u.current.state == "launched"]
    refused = [u for u in units if u.current.state == "refused"]
    assert len(launched) + len(refused) == 300 and all(u.current.tries == 5 for u in refused)
    assert len(launched) >= 295  # P(5 failures in a row) = 0.3^5
    failures = calls - 300 + len(refused)  # every call beyond the first per unit followed a failure
    assert 0.2 < failures / calls < 0.4
    adopted = [u for u in launched if u.current.tries > 1 and u.current.handle["id"] in
               {i for k, i in fake.ledger() if k == u.current.key}]
    assert len(adopted) >= len([u for u in launched if u.current.tries > 1]) // 3
    # Instances behind lost responses were adopted, not created again: one create per launched unit.
    assert len(fake.ledger()) == len(launched) + sum(1 for u in refused if any(k == u.current.key
                                                                                 for k, _ in fake.ledger()))


def test_negative_control_5xx_without_lookup_duplicates(store, tmp_path):
    fake = FakeProvider(tmp_path / "cloud.sqlite", seed=3)
    fake.configure(error_after=0.3, lookup=False)
    ex = _executor(store, fake, max_tries=5)
    uids = approved_units(store, 100, start=datetime.now(timezone.utc) - timedelta(minutes=1))
    ex.dispatch()
    _launch_all(ex, uids)
    assert len(fake.duplicates()) > 10


# -- throttling -----------------------------------------------------------------------------


def _rate_run(store: Store, tmp_path: Path, limited: bool, per_s: float = 40.0) -> list[float]:
    fake = FakeProvider(tmp_path / "cloud.sqlite")
    uids = approved_units(store, 160, start=datetime.now(timezone.utc) - timedelta(minutes=1))
    _executor(store, fake).dispatch()
    children = []
    for part in (uids[::2], uids[1::2]):  # two worker processes
        pid = os.fork()
        if pid == 0:
            try:
                child_store = Store(store.client, prefix=store.keys.p)
                inner = FakeProvider(tmp_path / "cloud.sqlite")
                provider = RateLimited(inner, store.client, per_s, store.keys.p) if limited else inner
                ex = Executor(child_store, child_store.launches, lambda name: provider, load_catalog(),
                              ExecConfig(launch_via="fake"))
                for uid in part:
                    ex.launch(uid)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return fake.call_times()


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_throttling_keeps_the_call_rate_under_the_limit(store, tmp_path):
    times = _rate_run(store, tmp_path, limited=True, per_s=40)
    assert len(times) == 320  # quote + launch per unit
    assert _max_in_window(times) <= 41  # GCRA: evenly spaced, so any 1-s window holds at most rate + 1


def test_negative_control_without_the_limiter_the_rate_is_exceeded(store, tmp_path):
    times = _rate_run(store, tmp_path, limited=False)
    assert _max_in_window(times) > 41


# -- spot preemption --------------------------------------------------------------------------


def test_spot_preemption_of_20_percent_every_job_with_slack_finishes_in_time(store, tmp_path):
    specs = [spec(f"s{i}", interruptible=True, gpus=8, duration_hours=6 + i % 5,
                  deadline=NOW + timedelta(hours=14 + 3 * (i % 7))) for i in range(30)]
    plan = approved_plan(store, specs)
    clock = SimClock()
    fake = FakeProvider(tmp_path / "cloud.sqlite", clock=clock.epoch, seed=11)
    ex = _executor(store, fake, clock=clock.now, recovery_tolerance=1.0)
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    ex.track("fake")
    clock.advance(hours=3)
    running = len(fake.list_ours())
    preempted = fake.preempt(0.2, market=None)
    assert len(preempted) == round(running * 0.2) > 0
    ex.track("fake")
    run_until_quiet(ex, clock, step_h=0.25, max_steps=400)
    ended_late, not_finished = [], []
    for a in plan.document.assignments:
        job = store.get_job(a.job_id)
        units = store.launches.of_job(job.id)
        if job.state is JobState.SUCCEEDED:
            ended_late += [u.id for u in units if u.current.ended_at > u.deadline]
        else:
            not_finished.append((job.name, job.state.value, job.reason, job.message))
    assert ended_late == []
    # A job may fail to finish only when no re-placement fits its deadline (its slack did not allow it).
    assert all(reason == "RecoveryNeedsReview" and "deadline" in message for _, _, reason, message in not_finished)
    assert len(not_finished) < len(preempted)
    replaced = sum(1 for a in plan.document.assignments for u in store.launches.of_job(a.job_id)
                   if len(u.attempts) > 1)
    assert replaced >= len(preempted) - len(not_finished)
