"""A real `celery worker` killed with kill -9 in the middle of a provider call: nothing is launched twice.

The worker (solo pool, a separate process on the embedded Redis) takes a launch batch; the fake
provider commits the first create and then hangs, as a provider whose reply never comes; the
test kills the worker's whole process group. A second worker starts, the dispatcher (this
process, playing beat) re-sends the units whose lease ran out, and every unit ends launched,
with exactly one instance each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from exec_support import approved_units

from scheduler.redis_server import embedded, stop_embedded
from scheduler.settings import Settings
from workers.providers.fake import FakeProvider

ROOT = Path(__file__).resolve().parent.parent


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool=solo",
                             "--loglevel=WARNING", "--without-heartbeat", "--without-mingle", "--without-gossip"],
                            env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)


def _until(check, timeout_s: float, poke=None) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if poke:
            poke()
        if check():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def celery_env(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    env = {"CLOUDSCHED_DATA_DIR": str(data_dir), "CLOUDSCHED_LAUNCH_VIA": "fake", "CLOUDSCHED_REDIS_URL": "",
           "CLOUDSCHED_LAUNCH_LEASE_S": "3", "CLOUDSCHED_PROVIDER_CALLS_PER_S": "1000"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    embedded(data_dir)
    yield {**os.environ, **env}, Settings()
    stop_embedded(data_dir)


def test_celery_worker_killed_during_the_provider_call_launches_each_unit_once(celery_env):
    from workers import runtime, tasks
    from workers.app import app, configure

    env, settings = celery_env
    configure(app, settings)
    ex = runtime.use(settings)
    fake = FakeProvider(settings.data_dir / "fake-cloud.sqlite")
    fake.configure(pause_during_s=600)
    uids = approved_units(ex.store, 10, start=datetime.now(timezone.utc) - timedelta(minutes=1))
    first = _worker(env)
    try:
        assert tasks.dispatch.run() == 10
        assert _until(lambda: len(fake.ledger()) >= 1, 60), "the worker never reached the provider"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert len(fake.ledger()) == 1  # the create took effect; its reply never came
    fake.configure(pause_during_s=0.0)
    second = _worker(env)
    try:
        launched = lambda: all(u.current.state == "launched" for u in ex.store.launches.get_many(uids))  # noqa: E731
        assert _until(launched, 90, poke=tasks.dispatch.delay), "units were lost"
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    assert fake.duplicates() == {}
    assert len(fake.ledger()) == 10
    first_key = fake.ledger()[0][0]
    (adopted,) = [u for u in ex.store.launches.get_many(uids) if u.current.key == first_key]
    assert adopted.current.handle["id"] == fake.ledger()[0][1]  # the hung create's instance, adopted
