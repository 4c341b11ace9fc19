"""What routes depend on, as `Annotated` aliases: the store, the settings and the caller.

`CurrentPrincipal` authenticates `Authorization: Bearer <key>` against the store's hashed
keys and counts the request against the caller's per-minute limit. The key itself is never
logged, echoed or stored in the request state.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import RateLimited
from scheduler import queries
from scheduler.errors import Unauthenticated
from scheduler.records import Principal
from scheduler.settings import Settings
from scheduler.store import Store, open_store

_bearer = HTTPBearer(auto_error=False, description="An API key from `cloudsched keys create`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    state = request.app.state
    if state.store is None:  # opened on first use, so that building the app starts no server
        state.store = open_store(state.settings)
    return state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_principal(request: Request, store: StoreDep, settings: SettingsDep, credentials: Credentials) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    who = store.principal_for_key(credentials.credentials)
    if who is None:
        raise Unauthenticated("the API key is not valid (revoked, mistyped or from another installation)")
    retry_after = queries.count_request(store, who, settings.rate_limit_per_minute)
    if retry_after is not None:
        raise RateLimited(settings.rate_limit_per_minute, retry_after)
    request.state.principal = who.name  # for logs: the name, never the key
    return who


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
