"""What routes depend on, as `Annotated` aliases: the store, the settings and the caller.

`Caller` authenticates `Authorization: Bearer <key>` against the store's hashed keys;
`CurrentPrincipal` also counts the request against the caller's per-minute limit. A route that
takes `Caller` must count the request itself: showing a job counts in the same Redis script that
reads it. Both run on the event loop through the store's asyncio twin (`aio_store_of`,
`scheduler.aio`); `current_principal` is the blocking form for the /ui pages. The key itself is
never logged, echoed or stored in the request state.

A key's principal is remembered in each server process for `KEY_CACHE_TTL_S` seconds (by the
key's hash, never the key), so most requests need no Redis call to authenticate. The price:
a revoked key keeps working for up to that long in a process that saw it just before. A key
that is not valid is never remembered, so a new key works at once.

Dependencies that do no blocking I/O are `async def`: FastAPI runs a plain `def` dependency in
a worker thread, and that hop costs more than what these do.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.bodies import reject_unknown_query
from api.errors import RateLimited
from scheduler import queries
from scheduler.aio import AsyncStore, AsyncStores
from scheduler.errors import Unauthenticated
from scheduler.records import Principal
from scheduler.settings import Settings
from scheduler.store import Store, open_store
from scheduler.store_keys import sha256

KEY_CACHE_TTL_S = 5.0

_bearer = HTTPBearer(auto_error=False, description="An API key from `cloudsched keys create`.")


class PrincipalCache:
    """Key hash → principal for `ttl_s` seconds; at most `max_keys` entries (then it starts over)."""

    def __init__(self, ttl_s: float = KEY_CACHE_TTL_S, max_keys: int = 10_000):
        self.ttl_s, self.max_keys = ttl_s, max_keys
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, who: Principal) -> None:
        if len(self._entries) >= self.max_keys:
            self._entries.clear()  # far more keys than an installation has: someone is guessing
        self._entries[digest] = (time.monotonic() + self.ttl_s, who)

    def clear(self) -> None:
        self._entries.clear()


def store_of(request: Request) -> Store:
    state = request.app.state
    if state.store is None:  # opened on first use, so that building the app starts no server
        state.store = open_store(state.settings)
    return state.store


def aio_store_of(request: Request) -> AsyncStore:
    """The store's hot-path operations on this event loop (`scheduler.aio`)."""
    state, store = request.app.state, store_of(request)
    if state.aio is None or state.aio.store is not store:
        state.aio = AsyncStores(store)
    return state.aio.get()


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return store_of(request)  # blocks once, at the first request, if the app was built without a store


async def no_unknown_query(request: Request) -> None:
    """No query parameter the route does not declare, and none given twice (each takes one value)."""
    reject_unknown_query(request)  # no I/O: called here rather than in a worker thread


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


_NO_KEY = "send an API key as 'Authorization: Bearer <key>'"
_BAD_KEY = "the API key is not valid (revoked, mistyped or from another installation)"


def _key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated(_NO_KEY)
    return credentials.credentials


def _remember(request: Request, key: str, who: Principal | None) -> Principal:
    if who is None:
        raise Unauthenticated(_BAD_KEY)
    request.app.state.principals.put(sha256(key), who)
    return who


def count_request(request: Request, store: Store, settings: Settings, who: Principal) -> None:
    """Count the request against `who`'s per-minute limit; `RateLimited` (429) beyond it. Blocking (Redis)."""
    refused(queries.count_request(store, who, settings.rate_limit_per_minute), request, settings, who)


def current_principal(request: Request, store: StoreDep, settings: SettingsDep, credentials: Credentials) -> Principal:
    """Authenticate and count, blocking: for callers already in a worker thread (the /ui pages)."""
    key = _key(credentials)
    who = request.app.state.principals.get(sha256(key)) or _remember(request, key, store.principal_for_key(key))
    count_request(request, store, settings, who)
    return who


async def authenticate(request: Request, credentials: Credentials) -> Principal:
    """The caller (401 without a valid key); a Redis call only when the key is not cached."""
    who = await principal_of(request, _key(credentials))
    if who is None:
        raise Unauthenticated(_BAD_KEY)
    return who


async def principal_of(request: Request, key: str) -> Principal | None:
    """The key's principal from this process' cache, else from Redis (then cached); None for an unknown key.
    The route's `authenticate` and the status read's fast path (api.fastpath) both ask here."""
    digest = sha256(key)
    who = request.app.state.principals.get(digest)
    if who is None:
        who = await aio_store_of(request).principal_for_key(key)
        if who is not None:
            request.app.state.principals.put(digest, who)
    return who


Caller = Annotated[Principal, Depends(authenticate)]


async def counted_caller(request: Request, who: Caller, settings: SettingsDep) -> Principal:
    """The caller, with this request counted against their limit (one Redis round trip)."""
    refused(await aio_store_of(request).count_request(who, settings.rate_limit_per_minute), request, settings, who)
    return who


def refused(retry_after: int | None, request: Request, settings: Settings, who: Principal) -> None:
    """`RateLimited` (429) when the count said to retry after some seconds; else note who asked, for logs."""
    if retry_after is not None:
        raise RateLimited(settings.rate_limit_per_minute, retry_after)
    request.state.principal = who.name  # the name, never the key


CurrentPrincipal = Annotated[Principal, Depends(counted_caller)]
