"""The API's busiest use cases on `redis.asyncio`: authenticate, count, submit a job, show a job.

They run on the server's event loop instead of in a worker thread: a request then costs no
thread hop, and no wait for the GIL held by the loop (measured in benchmarks/API_RESULTS.md).
They go through the same keys and Lua scripts as `scheduler.store.Store`, whose methods build
the arguments and read the answers, and the same access rules as `scheduler.services`:

- `submit_job`: the caller's team check and body hash (`services.check_submission`), then
  the `CREATE_JOB` script — answered only once Redis has the job;
- `show_job`: the rate-limit count, the job and its events in one script (one round trip,
  shared with the other reads of the same event-loop pass: `_Batched`); another team's job
  is "not found", like a missing id.

Their client does not wait out a Redis restart: a refused connection or a server still
loading its data is retried once at once (a pooled connection the restart broke), then
reported as `StoreUnavailable` — `503` with `Retry-After` — so the caller can retry, and
nothing it was told is stored can be lost. (The blocking `Store` keeps redis-py's default
retries: the planner and the workers would rather wait a second than fail.)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler import queries, services
from scheduler import store_keys as scripts
from scheduler.errors import StoreUnavailable
from scheduler.models import JobSpec
from scheduler.records import Event, JobRecord, Principal
from scheduler.store import Store, created_job_id, read_events, read_job, read_principal
from scheduler.store_keys import sha256

T = TypeVar("T")
TIMEOUT_S = 5.0  # a Redis that hangs (not one that is down) fails the request after this long


def _unavailable_to_error(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Redis trouble becomes `StoreUnavailable`; so does an operation that takes over `TIMEOUT_S` in all.

    One deadline per operation instead of redis-py's per-socket timeouts, which wrap every send
    in a task of its own (`asyncio.wait_for`): a few percent of a status read's CPU.
    """

    @functools.wraps(method)
    async def wrapper(*args, **kwargs) -> T:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                return await method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, TimeoutError) as exc:  # BusyLoadingError too
            raise StoreUnavailable(f"the store cannot be reached: {exc or 'no answer in time'}") from exc

    return wrapper


class AsyncStore:
    """The hot-path reads and writes of `store`, over `client` (an asyncio client of the same Redis)."""

    def __init__(self, store: Store, client: redis.asyncio.Redis):
        self.store, self._r = store, client
        self._create_job = client.register_script(scripts.CREATE_JOB)
        self._count_in_window = client.register_script(scripts.COUNT_IN_WINDOW)
        self._show_job = _Batched(client, client.register_script(scripts.SHOW_JOB))

    @_unavailable_to_error
    async def principal_for_key(self, plain: str) -> Principal | None:
        return read_principal(await self._r.get(self.store.keys.apikey(sha256(plain))) if plain else None)

    @_unavailable_to_error
    async def count_request(self, who: Principal, limit: int) -> int | None:
        """`queries.count_request` on this client: None under `limit`, else the Retry-After seconds."""
        now = queries.clock()
        count = await self._count_in_window(keys=[self._counter(who, now)], args=[queries.RATE_COUNTER_TTL_S])
        return queries.retry_after(count, limit, now)

    @_unavailable_to_error
    async def submit_job(self, who: Principal, spec: JobSpec, *, idempotency_key: str | None = None,
                         raw_body: bytes | None = None) -> tuple[JobRecord, bool]:
        """`services.submit_job` on this client: `(job, created)`, answered once Redis has the job."""
        digest = services.check_submission(who, spec, raw_body)
        job, keys, args = self.store.create_job_call(spec, who.name, idempotency_key, digest)
        outcome, job_id = await self._create_job(keys=keys, args=args)
        original = created_job_id(outcome, job_id, job, idempotency_key)
        if original is None:
            return job, True
        return read_job(await self._r.hget(self.store.keys.job(original), "json"), original), False

    @_unavailable_to_error
    async def show_job(self, who: Principal, job_id: str, *, limit: int,
                       events: int = 1000) -> tuple[int | None, JobRecord | None, list[Event]]:
        """Count the request against `limit`, and read the job and its first `events` events: one script.

        Returns `(retry_after, job, events)`: the caller refuses the request (429) when `retry_after`
        is set and only then looks at the job, which `services.visible` has checked.
        """
        now = queries.clock()
        keys = self.store.keys
        count, raw, entries = await self._show_job(
            [self._counter(who, now), keys.job(job_id), keys.job_events(job_id)],
            [queries.RATE_COUNTER_TTL_S, events, limit])
        retry = queries.retry_after(count, limit, now)
        if retry is not None:
            return retry, None, []
        job = services.visible(who, read_job(raw, job_id))
        return None, job, read_events((event_id, dict(zip(fields[::2], fields[1::2]))) for event_id, fields in entries)

    def _counter(self, who: Principal, now: float) -> str:
        return f"{self.store.keys.p}{queries.rate_counter(who, now)}"


class _Batched:
    """Calls of one Lua script made in the same event-loop pass go to Redis together, in one pipeline.

    Concurrent status reads then share one write to Redis and one read of the answers, instead
    of a pooled connection, a write and a read each: fewer system calls in the API and in Redis
    (measured in benchmarks/API_RESULTS.md). A caller awaits its own answer, or the error of
    the batch (a Redis that cannot be reached fails every call in it). A server that lost its
    scripts (restarted) gets the script again and the batch is sent once more: the script's
    writes (the rate-limit count) are in the calls that failed with NOSCRIPT, never done twice.
    """

    def __init__(self, client: redis.asyncio.Redis, script):
        self._r, self._script = client, script
        self._pending: list[tuple[list, list, asyncio.Future]] = []
        self._sending: set[asyncio.Task] = set()  # a task the loop holds only weakly

    def __call__(self, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after the other requests of this pass have asked too
        self._pending.append((keys, args, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list, list, asyncio.Future]]) -> None:
        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                await self._r.script_load(self._script.script)
                again = [call for call, r in zip(batch, results) if isinstance(r, redis.exceptions.NoScriptError)]
                answers = iter(await self._pipeline(again))
                results = [next(answers) if isinstance(r, redis.exceptions.NoScriptError) else r for r in results]
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results):
            if future.done():  # the caller gave up (its deadline)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[tuple[list, list, asyncio.Future]]) -> list:
        async with self._r.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


class AsyncStores:
    """One `AsyncStore` per event loop over the same store (an asyncio connection belongs to its loop).

    A server process runs one loop; a test client may run one per request.
    """

    def __init__(self, store: Store):
        self.store = store
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncStore] = weakref.WeakKeyDictionary()

    def get(self) -> AsyncStore:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = AsyncStore(self.store, async_client(self.store.client))
        return found


def async_client(client: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client of the server `client` talks to, that fails fast (see the module docstring).

    A fakeredis client (unit tests) gets a fakeredis asyncio client of the same fake server.
    """
    kwargs = client.get_connection_kwargs()
    common = {"decode_responses": kwargs.get("decode_responses", False), "db": kwargs.get("db", 0)}
    if "server" in kwargs:  # fakeredis
        from fakeredis import FakeAsyncRedis

        return FakeAsyncRedis(server=kwargs["server"], **common)
    common |= {"username": kwargs.get("username"), "password": kwargs.get("password"),
               "retry": Retry(NoBackoff(), 1), "socket_timeout": None, "socket_connect_timeout": TIMEOUT_S}
    if "path" in kwargs:
        return redis.asyncio.Redis(unix_socket_path=kwargs["path"], **common)
    if issubclass(client.connection_pool.connection_class, redis.SSLConnection):
        accepted = inspect.signature(redis.asyncio.Redis).parameters
        common |= {"ssl": True} | {name: value for name, value in kwargs.items()
                                   if name.startswith("ssl_") and name in accepted}
    return redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"], **common)
