"""Every route of the app × every kind of caller against the table in access_matrix.yaml.

Routes are enumerated from the app itself, so a new route without a row fails here. Routes
that change state get fresh records per case (a job to cancel, a plan to decide), so each
case's status depends only on who calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from api_support import make_api, plan_body, spec
from fastapi import routing as fastapi_routing

from scheduler import services
from scheduler.catalog import load_catalog
from scheduler.models import JobSpec
from scheduler.records import Principal

MATRIX = yaml.safe_load((Path(__file__).parent / "access_matrix.yaml").read_text())
CALLERS = ("none", "bad", "a", "b", "ops", "admin")
DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
OPS = Principal(name="setup", role="ops")
VERA = Principal(name="vera", role="submitter", team="vision")


class World:
    def __init__(self):
        self.api, self.count = make_api(), 0
        self.job_id = self.new_job("owned")
        self.plan_id = self.new_plan()["plan_id"]

    def new_job(self, name: str) -> str:
        return services.submit_job(self.api.store, VERA, JobSpec(**spec(name)))[0].id

    def new_plan(self) -> dict:
        # A new job too: two plans of the same inputs made in the same minute would share an id.
        self.new_job(self.unique("plan-input"))
        run = services.PlanRun(now=None, review_lead_hours=1, time_limit_s=2)
        return services.create_plan(self.api.store, OPS, run).document.model_dump()

    def unique(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}-{self.count}"


@pytest.fixture(scope="module")
def world():
    return World()


def request_for(world: World, route: str, who: str) -> tuple[str, str, dict]:
    """(method, path, request kwargs) of a request that is valid for a caller allowed on the route."""
    method, template = route.split(" ", 1)
    job_id, plan_id, kwargs = world.job_id, world.plan_id, {}
    if route == "POST /v1/jobs" or route == "POST /v1/jobs:validate":
        kwargs["json"] = spec(world.unique(f"m-{who}"))
    elif route == "POST /v1/jobs/{job_id}/actions/cancel":
        job_id = world.new_job(world.unique("cancel-me"))
    elif route == "PUT /v1/jobs/{job_id}/offer-rule":
        job_id = world.new_job(world.unique("rule-me"))  # pending: the rule applies to it
        kwargs["json"] = {"forbid": [load_catalog().offers[0].id]}
    elif route == "POST /v1/plans":
        kwargs["json"] = plan_body()
    elif route.startswith("POST /v1/plans/{plan_id}/actions/"):
        plan = world.new_plan() if who in ("ops", "admin") else {"plan_id": plan_id, "fingerprint": "x"}
        plan_id = plan["plan_id"]
        kwargs["json"] = ({"expected_fingerprint": plan["fingerprint"], "comment": "ok"}
                          if route.endswith("approve") else {"comment": "not tonight"})
    return method, template.format(job_id=job_id, plan_id=plan_id), kwargs


def _flat_routes(app):
    """Every route, also those of included routers (FastAPI ≥ 0.16x nests them; older versions flatten)."""
    iter_contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    return list(iter_contexts(app.routes)) if iter_contexts else list(app.routes)


def app_routes(app) -> set[str]:
    out = set()
    for route in _flat_routes(app):
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path is None or methods is None or path in DOCS:
            continue  # static mounts and the offline docs
        out |= {f"{method} {path}" for method in methods if method != "HEAD"}
    return out


def test_every_route_has_a_row_and_every_row_a_route(world):
    routes = app_routes(world.api.client.app)
    assert routes - set(MATRIX) == set(), "routes without a row in access_matrix.yaml"
    assert set(MATRIX) - routes == set(), "rows for routes the app does not have"
    assert all(set(row) == set(CALLERS) for row in MATRIX.values())


@pytest.mark.parametrize("route", sorted(MATRIX))
@pytest.mark.parametrize("who", CALLERS)
def test_access(world, route, who):
    method, path, kwargs = request_for(world, route, who)
    response = world.api.call(who, method, path, **kwargs)
    assert response.status_code == MATRIX[route][who], response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("method, template", [
    ("GET", "/v1/jobs/{job_id}"), ("POST", "/v1/jobs/{job_id}/actions/cancel"),
    ("GET", "/v1/plans/{plan_id}/jobs/{job_id}/explanation")])
def test_another_teams_job_looks_exactly_like_a_missing_one(world, method, template):
    missing = "job_00000000000000000000000000"
    theirs = world.api.call("b", method, template.format(job_id=world.job_id, plan_id=world.plan_id))
    absent = world.api.call("b", method, template.format(job_id=missing, plan_id=world.plan_id))
    assert theirs.status_code == absent.status_code == 404
    assert theirs.json() == {k: v.replace(missing, world.job_id) if isinstance(v, str) else v
                             for k, v in absent.json().items()}
