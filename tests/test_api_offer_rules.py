"""Ops pin a job to an offer, or forbid offers, and re-plan (`PUT /v1/jobs/{id}/offer-rule`, fakeredis):
the plan under review goes stale, the next plan keeps the rule, and a job the rule leaves without an
offer is unplaced with the rule named first."""

from __future__ import annotations

import threading
import time

import pytest
from api_support import make_api, plan_body, spec

from scheduler import services
from scheduler.catalog import load_catalog
from scheduler.errors import Conflict


@pytest.fixture
def api():
    return make_api()


def submit(api, name: str) -> dict:
    response = api.call("a", "POST", "/v1/jobs", json=spec(name))
    assert response.status_code == 201, response.text
    return response.json()


def plan(api, hours: float = 1) -> dict:
    response = api.call("ops", "POST", "/v1/plans", json=plan_body(hours))
    assert response.status_code == 201, response.text
    return response.json()


def rule(api, job: dict, body: dict, who: str = "ops"):
    return api.call(who, "PUT", f"/v1/jobs/{job['id']}/offer-rule", json=body)


def offers_of(doc: dict, job: dict) -> set[str]:
    return {s["offer_id"] for a in doc["assignments"] if a["job_id"] == job["id"] for s in a["segments"]}


def unplaced_of(doc: dict, job: dict) -> dict | None:
    return next((u for u in doc["unplaced"] if u["job_id"] == job["id"]), None)


def test_forbid_makes_the_plan_stale_and_the_next_plan_avoids_the_offer(api):
    job = submit(api, "train")
    first = plan(api)
    chosen = offers_of(first, job)
    assert chosen

    response = rule(api, job, {"forbid": sorted(chosen)})
    assert response.status_code == 200, response.text
    assert response.json()["offer_rule"] == {"pin": None, "forbid": sorted(chosen)}
    assert response.json()["version"] > job["version"]

    approve = api.call("ops", "POST", f"/v1/plans/{first['plan_id']}/actions/approve",
                       json={"expected_fingerprint": first["fingerprint"], "comment": "ok"})
    assert approve.status_code == 409 and any(job["id"] in change for change in approve.json()["changes"])

    second = plan(api, hours=1.1)
    assert offers_of(second, job) and not offers_of(second, job) & chosen
    assert second["summary"]["total_cost"] >= first["summary"]["total_cost"]  # the cheapest was ruled out
    explained = api.call("ops", "GET", f"/v1/plans/{second['plan_id']}/jobs/{job['id']}/explanation",
                         params={"limit": 5000}).json()
    reasons = {row["offer_id"]: row["reason"] for row in explained["considered"]}
    assert all(reasons.get(offer_id) == "OfferRule" for offer_id in chosen)
    shown = api.call("a", "GET", f"/v1/jobs/{job['id']}").json()
    event = next(e for e in shown["events"] if e["type"] == "job.offer_rule")
    assert event["actor"] == "olga" and event["data"]["forbid"] == sorted(chosen)


def test_a_pin_places_the_job_there_and_an_empty_rule_lifts_it(api):
    job = submit(api, "train")
    first = plan(api)
    explained = api.call("ops", "GET", f"/v1/plans/{first['plan_id']}/jobs/{job['id']}/explanation").json()
    dearer = next(row["offer_id"] for row in explained["considered"]
                  if row["status"] == "candidate" and row["cost_vs_chosen"] > 0)
    assert rule(api, job, {"pin": dearer}).status_code == 200
    pinned = plan(api, hours=1.1)
    assert offers_of(pinned, job) == {dearer}

    lifted = rule(api, job, {})
    assert lifted.status_code == 200 and lifted.json()["offer_rule"] is None
    assert offers_of(plan(api, hours=1.2), job) == offers_of(first, job)


def test_a_pin_to_an_offer_the_job_cannot_use_leaves_it_unplaced_naming_the_pin(api):
    job = submit(api, "train")  # 8 x H100
    others = [o.id for o in load_catalog().offers if o.gpu_type != "H100" and o.id != o.id.lower()]
    assert rule(api, job, {"pin": others[0]}).status_code == 200
    doc = plan(api)
    unplaced = unplaced_of(doc, job)
    assert unplaced is not None and unplaced["reason"] == "NoOffer"
    assert unplaced["message"].startswith(f"Ops pinned it to offer {others[0]}.")  # the id as spelled
    assert "sell another GPU type" in unplaced["message"]
    assert api.call("a", "GET", f"/v1/jobs/{job['id']}").json()["message"] == unplaced["message"]

    # Pinned elsewhere, then lifted: the job's own message follows each re-plan, not only the plan's.
    assert rule(api, job, {"pin": others[1]}).status_code == 200
    again = unplaced_of(plan(api, hours=1.1), job)
    shown = api.call("a", "GET", f"/v1/jobs/{job['id']}").json()
    assert again["message"].startswith(f"Ops pinned it to offer {others[1]}.") and shown["message"] == again["message"]
    assert rule(api, job, {}).status_code == 200
    assert offers_of(plan(api, hours=1.2), job)
    assert api.call("a", "GET", f"/v1/jobs/{job['id']}").json()["state"] == "planned"


def test_a_plan_is_explained_with_the_rule_it_was_made_with(api):
    job = submit(api, "train")
    free = offers_of(plan(api), job)
    assert rule(api, job, {"forbid": sorted(free)}).status_code == 200
    ruled = plan(api, hours=1.1)
    assert rule(api, job, {}).status_code == 200  # lifted after the plan was made

    def reasons(doc):
        path = f"/v1/plans/{doc['plan_id']}/jobs/{job['id']}/explanation"
        rows = api.call("ops", "GET", path, params={"limit": 5000}).json()["considered"]
        return {r["offer_id"]: r["reason"] for r in rows}

    assert {reasons(ruled)[o] for o in free} == {"OfferRule"}
    assert "OfferRule" not in reasons(plan(api, hours=1.2)).values()


def test_a_rule_waits_for_an_approval_in_progress(api):
    job = submit(api, "train")
    token = api.store.acquire_lock(services.DECISION_LOCK, ttl_s=30)  # an approval holds it
    threading.Timer(0.3, api.store.release_lock, (services.DECISION_LOCK, token)).start()
    started = time.monotonic()
    response = rule(api, job, {"forbid": [load_catalog().offers[0].id]})
    assert response.status_code == 200 and time.monotonic() - started >= 0.25
    held = api.store.acquire_lock(services.DECISION_LOCK, ttl_s=30)
    with pytest.raises(Conflict):
        with services.deciding(api.store, wait_s=0.1):
            pass
    api.store.release_lock(services.DECISION_LOCK, held)


@pytest.mark.parametrize(("body", "field"), [
    ({"pin": "aws:nowhere:p99:on-demand"}, "pin"),
    ({"forbid": ["aws:nowhere:p99:on-demand"]}, "forbid.0"),
    ({"pin": "a", "forbid": ["b"]}, "forbid"),
    ({"pin": ""}, "pin"),
    ({"avoid": ["x"]}, "avoid"),
])
def test_a_bad_rule_is_422_naming_the_field(api, body, field):
    job = submit(api, "train")
    response = rule(api, job, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem.get("field") == field or field in {e["field"] for e in problem.get("errors", [])}


def test_an_approved_job_takes_no_rule_and_a_submitter_sets_none(api):
    job = submit(api, "train")
    doc = plan(api)
    forbid = {"forbid": sorted(offers_of(doc, job))}
    assert rule(api, job, forbid, who="a").status_code == 403
    assert api.call("ops", "POST", f"/v1/plans/{doc['plan_id']}/actions/approve",
                    json={"expected_fingerprint": doc["fingerprint"], "comment": "ok"}).status_code == 200
    late = rule(api, job, forbid)
    assert late.status_code == 409 and late.json()["actual"] == "approved"
