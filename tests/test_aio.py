"""The store's asyncio twin (`scheduler.aio`): the same server as the blocking client, and it fails fast."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis
from api_support import make_api, spec

from scheduler.aio import AsyncStore, async_client
from scheduler.errors import NotFound, StoreUnavailable
from scheduler.models import JobSpec
from scheduler.records import Principal
from scheduler.store import Store

VERA = Principal(name="vera", role="submitter", team="vision")


def test_a_fakeredis_client_gets_a_fakeredis_twin_on_the_same_server():
    store = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))

    async def submit_and_show():
        twin = AsyncStore(store, async_client(store.client))
        job, created = await twin.submit_job(VERA, JobSpec(**spec("train")), idempotency_key="k1")
        again, created_again = await twin.submit_job(VERA, JobSpec(**spec("train")), idempotency_key="k1")
        retry_after, shown, events = await twin.show_job(VERA, job.id, limit=10)
        return job, created, again, created_again, retry_after, shown, events

    job, created, again, created_again, retry_after, shown, events = asyncio.run(submit_and_show())
    assert created and not created_again and again.id == job.id
    assert store.get_job(job.id) == job == shown  # written by the twin, read by the blocking store
    assert retry_after is None and [e.type for e in events] == ["job.submitted"]


@pytest.mark.parametrize(("client", "where"), [
    (redis.Redis(unix_socket_path="/run/cs/redis.sock", decode_responses=True), {"path": "/run/cs/redis.sock"}),
    (redis.Redis.from_url("redis://:pw@10.0.0.5:6380/2", decode_responses=True),
     {"host": "10.0.0.5", "port": 6380, "db": 2, "password": "pw"}),
    (redis.Redis.from_url("rediss://10.0.0.5:6380/0?ssl_cert_reqs=none", decode_responses=True),
     {"host": "10.0.0.5", "port": 6380}),
])
def test_the_twin_talks_to_the_same_server_and_retries_once(client, where):
    twin = async_client(client)
    kwargs = twin.connection_pool.connection_kwargs
    assert {name: kwargs.get(name) for name in where} == where
    assert kwargs["decode_responses"] is True
    assert kwargs["retry"].get_retries() == 1
    tls = client.connection_pool.connection_class is redis.SSLConnection
    assert (twin.connection_pool.connection_class.__name__ == "SSLConnection") is tls


def test_a_store_that_cannot_be_reached_is_store_unavailable():
    store = Store(redis.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True))

    async def show():
        return await AsyncStore(store, async_client(store.client)).show_job(VERA, "job_x", limit=10)

    with pytest.raises(StoreUnavailable):
        asyncio.run(show())


def test_submitting_to_a_store_that_cannot_be_reached_is_503_and_names_no_socket():
    api = make_api()
    dead = Store(redis.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True))
    api.call("a", "GET", "/v1/jobs")  # the key is cached while the store is up
    api.client.app.state.store = dead
    response = api.call("a", "POST", "/v1/jobs", json=spec("train"), headers={"Idempotency-Key": "k1"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "nonexistent" not in response.text


def test_reads_in_one_event_loop_pass_share_one_pipeline_and_each_gets_its_own_answer():
    store = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
    mine = [store.create_job(JobSpec(**spec(f"train-{i}")), "vera")[0] for i in range(3)]
    theirs, _ = store.create_job(JobSpec(**spec("other", team="audio")), "ann")
    twin = AsyncStore(store, async_client(store.client))
    pipelines = []
    opened = twin._r.pipeline
    twin._r.pipeline = lambda **kwargs: pipelines.append(kwargs) or opened(**kwargs)

    async def read_all():
        await twin.show_job(VERA, mine[0].id, limit=100)  # the server has no script yet: NOSCRIPT, loaded, again
        assert len(pipelines) == 2
        pipelines.clear()
        return await asyncio.gather(*(twin.show_job(VERA, job_id, limit=100)
                                      for job_id in [j.id for j in mine] + [theirs.id, "job_missing"]),
                                    return_exceptions=True)

    answers = asyncio.run(read_all())
    assert pipelines == [{"transaction": False}]  # five reads, one round trip
    assert [answer[1] for answer in answers[:3]] == mine
    assert all(answer[0] is None and [e.type for e in answer[2]] == ["job.submitted"] for answer in answers[:3])
    assert all(isinstance(answer, NotFound) for answer in answers[3:])  # another team's job reads as missing
