"""What a worker process builds once: the store, the catalog, rate-limited provider adapters, the executor.

Provider calls go through `RateLimited`, a GCRA limiter in Redis shared by every worker
process (`CLOUDSCHED_PROVIDER_CALLS_PER_S` per adapter), so adding workers never pushes a
provider past its API rate limit. A call that would go over waits for its slot (at most a
few seconds); the provider's own `Throttled` still reaches the task, which backs off.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from scheduler.catalog import load_catalog
from scheduler.execution import Executor, config_from
from scheduler.providers import Provider, Throttled
from scheduler.settings import Settings, get_settings
from scheduler.store import Store, open_store
from workers.providers import get_provider

# GCRA (generic cell rate algorithm): one key per adapter holds the theoretical arrival time.
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((wait + interval) * 1000) + 1000)
return tostring(wait)
"""
MAX_WAIT_S = 5.0
_CALLS = ("launch", "status", "statuses", "cancel", "quote", "list_ours")


class RateLimited:
    """A provider whose calls are spaced at most `per_s` per second across all processes."""

    def __init__(self, inner: Provider, client: redis.Redis, per_s: float, prefix: str = "cs:"):
        self.inner, self.name = inner, inner.name
        self._key = f"{prefix}rate:{inner.name}"
        self._interval = 1.0 / per_s
        self._slot = client.register_script(_GCRA)

    def _wait(self) -> None:
        wait = float(self._slot(keys=[self._key], args=[time.time(), self._interval]))
        if wait > MAX_WAIT_S:  # the slot is reserved; a long queue means back off instead of blocking
            raise Throttled(f"client-side limit: next slot in {wait:.1f} s", provider=self.name, retry_after_s=wait)
        if wait > 0:
            time.sleep(wait)

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self.inner, attr)
        if attr not in _CALLS:
            return target

        def limited(*args, **kwargs):
            self._wait()
            return target(*args, **kwargs)

        return limited


def providers_for(settings: Settings, store: Store) -> Callable[[str], Provider]:
    """Adapters by name, built once each; the local and fake ones keep their state in the data dir."""
    options = {"local": {"root": settings.data_dir / "local"},
               "fake": {"path": settings.data_dir / "fake-cloud.sqlite"}}

    @functools.cache
    def provider(name: str) -> Provider:
        adapter = get_provider(name, **options.get(name, {}))
        return RateLimited(adapter, store.client, settings.provider_calls_per_s, store.keys.p)

    return provider


_executor: Executor | None = None


def use(settings: Settings, clock: Callable[[], datetime] | None = None) -> Executor:
    """Build this process's executor from `settings` (the demo and tests; workers build it on first use)."""
    global _executor
    store = open_store(settings)
    _executor = Executor(store, store.launches, providers_for(settings, store), load_catalog(), config_from(settings))
    if clock is not None:
        _executor.clock = clock
    return _executor


def executor() -> Executor:
    """The process's executor, built on first use (importing the tasks has no side effects)."""
    return _executor or use(get_settings())
