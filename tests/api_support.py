"""An API on fakeredis with one key per kind of caller, and job bodies relative to the real clock
(approval checks the real time against a plan's first start)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import fakeredis
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.settings import Settings
from scheduler.store import Store

# who -> (role, team, name)
CALLERS = {"a": ("submitter", "vision", "vera"), "b": ("submitter", "nlp", "nils"), "ops": ("ops", None, "olga"),
           "admin": ("admin", None, "ada")}


@dataclass
class Api:
    client: TestClient
    store: Store
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        """Headers for a caller: a, b, ops, admin; `none` sends no key, `bad` an unknown one."""
        if who == "none":
            return {}
        key = "csk_not-a-key-of-this-installation" if who == "bad" else self.keys[who]
        return {"Authorization": f"Bearer {key}"}

    def call(self, who: str, method: str, path: str, **kwargs):
        headers = {**self.auth(who), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)


def fake_store() -> Store:
    return Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))


def make_api(store: Store | None = None, **settings) -> Api:
    store = store or fake_store()
    api = Api(TestClient(create_app(Settings(**settings), store)), store)
    for who, (role, team, name) in CALLERS.items():
        api.keys[who], _ = store.create_api_key(role, team, name)
    return api


def soon(hours: float = 0) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).replace(second=0, microsecond=0)


def spec(name: str, team: str = "vision", **extra) -> dict:
    """A small job that fits in any plan made in the next hour."""
    body = {"name": name, "team": team, "gpus": 8, "gpu_types": ["H100"], "duration_hours": 5,
            "not_before": soon(2).isoformat(), "deadline": soon(72).isoformat()}
    return body | extra


def plan_body(hours: float = 1, time_limit_s: float = 2) -> dict:
    return {"now": soon(hours).isoformat(), "time_limit_s": time_limit_s}
