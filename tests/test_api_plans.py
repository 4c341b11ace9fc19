"""The plan workflow over REST (fakeredis): submit → POST /v1/plans → approve with the
fingerprint → plan and jobs approved; stale, superseded, expired, concurrent approvals,
rejection, overlapping runs, diff and explanation."""

from __future__ import annotations

import threading

import pytest
from api_support import make_api, plan_body, spec

from scheduler import services


@pytest.fixture
def api():
    return make_api()


def submit(api, name, who="a", team="vision", **extra):
    response = api.call(who, "POST", "/v1/jobs", json=spec(name, team=team, **extra))
    assert response.status_code == 201, response.text
    return response.json()


def create_plan(api, who="ops", **kwargs):
    response = api.call(who, "POST", "/v1/plans", json=plan_body(**kwargs))
    assert response.status_code == 201, response.text
    return response.json()


def approve(api, plan, who="ops", fingerprint=None):
    return api.call(who, "POST", f"/v1/plans/{plan['plan_id']}/actions/approve",
                    json={"expected_fingerprint": fingerprint or plan["fingerprint"], "comment": "looks right"})


def state_of(api, job):
    return api.call("ops", "GET", f"/v1/jobs/{job['id']}").json()["state"]


def test_submit_plan_approve_reaches_approved(api):
    jobs = [submit(api, "train"), submit(api, "serve"), submit(api, "eval", who="b", team="nlp")]
    plan = create_plan(api)
    assert plan["status"] == "pending_review" and plan["format_version"] == "1.0"
    placed = {a["job_id"] for a in plan["assignments"]} | {u["job_id"] for u in plan["unplaced"]}
    assert placed == {j["id"] for j in jobs}
    assert {state_of(api, j) for j in jobs} == {"planned"}
    response = approve(api, plan)
    assert response.status_code == 200
    decided = response.json()
    assert decided["status"] == "approved"
    assert decided["decision"]["by"] == "olga" and decided["decision"]["fingerprint"] == plan["fingerprint"]
    assert {state_of(api, j) for j in jobs} == {"approved"}
    shown = api.call("a", "GET", f"/v1/jobs/{jobs[0]['id']}").json()
    assert {c["type"]: c["status"] for c in shown["conditions"]} == {"Planned": "True", "Approved": "True"}
    assert [e["type"] for e in shown["events"]] == ["job.submitted", "job.planned", "job.approved"]
    listed = api.call("ops", "GET", "/v1/plans").json()["items"]
    assert [(p["plan_id"], p["state"]) for p in listed] == [(plan["plan_id"], "approved")]


def test_submitters_see_their_team_in_a_plan_and_cannot_decide(api):
    mine, theirs = submit(api, "train"), submit(api, "eval", who="b", team="nlp")
    assert api.call("a", "POST", "/v1/plans", json=plan_body()).status_code == 403
    plan = create_plan(api)
    assert approve(api, plan, who="a").status_code == 403
    seen = api.call("b", "GET", f"/v1/plans/{plan['plan_id']}").json()
    assert {a["job_id"] for a in seen["assignments"]} == {theirs["id"]}
    assert mine["id"] not in api.call("b", "GET", f"/v1/plans/{plan['plan_id']}").text


def test_submission_after_planning_makes_the_plan_stale_naming_the_change(api):
    submit(api, "train")
    plan = create_plan(api)
    late = submit(api, "late")
    response = approve(api, plan)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith("stale-plan") and problem["field"] == "expected_fingerprint"
    assert any(late["id"] in change for change in problem["changes"])
    assert api.call("ops", "GET", f"/v1/plans/{plan['plan_id']}").json()["status"] == "stale"


def test_a_fingerprint_other_than_the_plans_is_refused(api):
    submit(api, "train")
    plan = create_plan(api)
    response = approve(api, plan, fingerprint="0" * 64)
    assert response.status_code == 409 and response.json()["changes"]
    assert api.call("ops", "GET", f"/v1/plans/{plan['plan_id']}").json()["status"] == "pending_review"


def test_newer_plan_supersedes_the_older_one(api):
    submit(api, "train")
    first = create_plan(api)
    second = create_plan(api, hours=1.1)
    response = approve(api, first)
    assert response.status_code == 409 and response.json()["actual"] == "superseded"
    assert approve(api, second).status_code == 200


def test_plan_past_its_first_start_expires(api):
    body = spec("now-job")
    del body["not_before"]  # may start at the plan's start, which is already past
    assert api.call("a", "POST", "/v1/jobs", json=body).status_code == 201
    plan = create_plan(api, hours=-1)
    response = approve(api, plan)
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert api.call("ops", "GET", f"/v1/plans/{plan['plan_id']}").json()["status"] == "expired"


def test_two_concurrent_approvals_exactly_one_wins(api):
    submit(api, "train")
    plan = create_plan(api)
    statuses, barrier = [], threading.Barrier(2)

    def approve_once(who):
        barrier.wait()
        statuses.append(approve(api, plan, who=who).status_code)

    threads = [threading.Thread(target=approve_once, args=(who,)) for who in ("ops", "admin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409]


def test_reject_requires_a_comment_and_sends_jobs_back(api):
    job = submit(api, "train")
    plan = create_plan(api)
    path = f"/v1/plans/{plan['plan_id']}/actions/reject"
    for body in ({}, {"comment": ""}, {"comment": "   "}):
        response = api.call("ops", "POST", path, json=body)
        assert response.status_code == 422
        assert "comment" in {e["field"] for e in response.json()["errors"]}
    rejected = api.call("ops", "POST", path, json={"comment": "AWS capacity is booked"})
    assert rejected.status_code == 200 and rejected.json()["decision"]["comment"] == "AWS capacity is booked"
    assert state_of(api, job) == "pending"
    assert api.call("ops", "POST", path, json={"comment": "again"}).status_code == 409


def test_an_overlapping_plan_run_is_refused(api):
    token = api.store.acquire_lock(services.PLAN_LOCK, ttl_s=60)
    response = api.call("ops", "POST", "/v1/plans", json=plan_body())
    assert response.status_code == 409 and "in progress" in response.json()["detail"]
    api.store.release_lock(services.PLAN_LOCK, token)


def test_plan_body_is_optional_and_validated(api):
    bad = api.call("ops", "POST", "/v1/plans", json={"time_limit_s": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "time_limit_s"
    assert api.call("ops", "POST", "/v1/plans", json={"bogus": 1}).status_code == 422
    for now in ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"):
        far = api.call("ops", "POST", "/v1/plans", json={"now": now})
        assert far.status_code == 422 and far.json()["errors"][0]["field"] == "now"


def test_diff_against_the_previous_approved_plan_terraform_style(api):
    submit(api, "train")
    first = create_plan(api)
    assert approve(api, first).status_code == 200
    new = submit(api, "fresh")
    second = create_plan(api)
    diff = api.call("ops", "GET", f"/v1/plans/{second['plan_id']}/diff").json()
    assert diff["against"] == first["plan_id"]
    created = [c for c in diff["changes"] if c["symbol"] == "+"]
    assert [c["job_id"] for c in created] == [new["id"]] and created[0]["after"]["cost"] > 0
    assert diff["summary"].startswith("Plan: 1 to create,")
    explicit = api.call("ops", "GET", f"/v1/plans/{second['plan_id']}/diff", params={"against": second["plan_id"]})
    assert explicit.json()["changes"] == [] and explicit.json()["summary"].startswith("Plan: 0 to create")
    missing = api.call("ops", "GET", f"/v1/plans/{second['plan_id']}/diff", params={"against": "plan-nope"})
    assert missing.status_code == 404


def test_explanation_lists_the_chosen_offer_first_and_rejections_with_reasons(api):
    job = submit(api, "train")
    plan = create_plan(api)
    path = f"/v1/plans/{plan['plan_id']}/jobs/{job['id']}/explanation"
    body = api.call("a", "GET", path, params={"limit": 400}).json()
    chosen = {s["offer_id"] for a in plan["assignments"] for s in a["segments"]}
    assert body["chosen"] == sorted(chosen) and body["considered"][0]["mark"] == "✔"
    assert body["considered"][0]["cost_vs_chosen"] == 0
    rejected = [r for r in body["considered"] if r["status"] == "rejected"]
    assert rejected and all(r["reason"] for r in rejected)
    assert any(r["cost_vs_chosen"] is not None for r in rejected)
    assert body["not_shown"]["GpuType"] > 0
    assert api.call("b", "GET", path).status_code == 404
    other = submit(api, "later")
    assert api.call("a", "GET", f"/v1/plans/{plan['plan_id']}/jobs/{other['id']}/explanation").status_code == 404


def test_replanning_the_same_inputs_within_a_minute_leaves_a_plan_to_review(api):
    submit(api, "train")
    body = plan_body()
    first = api.call("ops", "POST", "/v1/plans", json=body)
    again = api.call("ops", "POST", "/v1/plans", json=body)
    assert first.status_code == 201 and again.status_code == 201
    assert first.json()["plan_id"] != again.json()["plan_id"]
    states = {p["state"] for p in api.call("ops", "GET", "/v1/plans").json()["items"]}
    assert "pending_review" in states
