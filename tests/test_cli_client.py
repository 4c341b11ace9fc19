"""`cloudsched jobs ...` / `cloudsched plan ...` against the real app (on fakeredis)."""

from __future__ import annotations

import json

import pytest
from api_support import make_api, spec
from typer.testing import CliRunner

from scheduler import cli_client
from scheduler.cli import app
from scheduler.client import Client, ClientSettings

runner = CliRunner()


@pytest.fixture
def api(monkeypatch):
    api = make_api()
    who = {"current": "admin"}
    monkeypatch.setattr(cli_client, "Client", lambda: Client(ClientSettings(api_key=api.keys[who["current"]]),
                                                             http=api.client))
    api.who = who
    return api


def run(*args):
    result = runner.invoke(app, list(args))
    return result


def flat(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_submit_plan_approve_through_the_cli(api, tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([spec("train"), spec("eval", team="nlp")]))
    submitted = run("jobs", "submit", str(path), "--json")
    assert submitted.exit_code == 0, submitted.output
    assert {j["name"] for j in json.loads(submitted.output)} == {"train", "eval"}

    created = api.client.post("/v1/plans", json={"time_limit_s": 2},
                              headers=api.auth("ops")).json()  # `plan create` plans as of an hour from now
    plan_id = created["plan_id"]
    assert run("plan", "show", plan_id).exit_code == 0
    diff = run("plan", "diff", plan_id)
    assert "Plan: 2 to create" in diff.output
    job_id = created["assignments"][0]["job_id"]
    explained = run("plan", "explain", plan_id, job_id)
    assert explained.exit_code == 0 and "✔" in explained.output

    approved = run("plan", "approve", plan_id, "--fingerprint", created["fingerprint"], "--comment", "ok")
    assert approved.exit_code == 0, approved.output
    assert f"{plan_id}: approved" in approved.output
    shown = json.loads(run("jobs", "show", job_id, "--json").output)
    assert shown["state"] == "approved"


def test_plan_create_detailed_exitcode(api, tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([spec("train")]))
    assert run("jobs", "submit", str(path)).exit_code == 0
    assert run("plan", "create", "--time-limit", "2", "--detailed-exitcode").exit_code == 2  # a job to create


def test_errors_print_the_problem_and_exit_1(api):
    api.who["current"] = "a"
    result = run("plan", "reject", "plan-nope", "--comment", "x")
    assert result.exit_code == 1
    assert "403" in result.output


def test_reject_requires_a_comment_option(api):
    assert run("plan", "reject", "plan-x").exit_code == 2  # typer: missing --comment


def test_cost_report_after_the_jobs_ran(api, tmp_path):
    from datetime import datetime, timedelta, timezone

    from exec_support import SimClock, executor, run_until_quiet

    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([spec("train"), spec("eval", team="nlp")]))
    assert run("jobs", "submit", str(path)).exit_code == 0
    created = api.client.post("/v1/plans", json={"time_limit_s": 2}, headers=api.auth("ops")).json()
    assert run("plan", "approve", created["plan_id"], "--fingerprint", created["fingerprint"]).exit_code == 0
    clock = SimClock(datetime.now(timezone.utc) + timedelta(hours=2))
    ex, _ = executor(api.store, tmp_path, clock)
    run_until_quiet(ex, clock)  # the workers' loop, on the fake provider in simulated time

    report = json.loads(run("cost-report", "--json").output)
    assert [t["team"] for t in report["teams"]] == ["nlp", "vision"]
    planned = sum(a["total_cost"] for a in created["assignments"])
    assert report["total"]["planned_cost"] == pytest.approx(planned, abs=0.02)
    assert report["total"]["actual_cost"] == pytest.approx(planned, rel=0.02)  # ran as planned
    table = run("cost-report")
    assert table.exit_code == 0 and "vision" in table.output and "total" in table.output
    api.who["current"] = "a"  # a submitter of vision sees only vision
    mine = json.loads(run("cost-report", "--json").output)
    assert [t["team"] for t in mine["teams"]] == ["vision"]
    assert run("cost-report", "--team", "nlp").exit_code == 1


def _submitted(api, tmp_path, *names) -> list[str]:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([spec(name) for name in names]))
    result = run("jobs", "submit", str(path), "--json")
    assert result.exit_code == 0, result.output
    return [j["id"] for j in json.loads(result.output)]


def _advancing(api, monkeypatch, paths: dict[str, list[str]]):
    """Each `jobs wait` pause moves every job one step along its path (instead of sleeping)."""
    from scheduler import cli_client as module

    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        for job_id, path in paths.items():
            if path:
                api.store.transition_job(job_id, path.pop(0))

    monkeypatch.setattr(module.time, "sleep", sleep)
    return pauses


def test_jobs_wait_exits_0_once_every_job_succeeded(api, tmp_path, monkeypatch):
    a, b = _submitted(api, tmp_path, "train", "eval")
    steps = ["planned", "approved", "launching", "running", "succeeded"]
    pauses = _advancing(api, monkeypatch, {a: list(steps), b: list(steps[:2]) + ["launching", "running", "succeeded"]})
    result = run("jobs", "wait", a, b, "--interval", "3")
    assert result.exit_code == 0, result.output
    assert result.output.count("succeeded") == 2 and "running" in result.output
    assert pauses == [3] * 5  # five looks were needed; each change printed once


def test_jobs_wait_exits_1_when_a_job_ends_otherwise(api, tmp_path, monkeypatch):
    a, b = _submitted(api, tmp_path, "train", "eval")
    _advancing(api, monkeypatch, {a: ["planned", "approved", "launching", "running", "succeeded"], b: ["cancelled"]})
    result = run("jobs", "wait", a, b)
    assert result.exit_code == 1
    assert "cancelled" in result.output and "succeeded" in result.output  # it still waits for the others


def test_jobs_wait_exits_2_on_its_timeout(api, tmp_path, monkeypatch):
    (a,) = _submitted(api, tmp_path, "train")
    _advancing(api, monkeypatch, {})
    result = run("jobs", "wait", a, "--timeout", "0")
    assert result.exit_code == 2
    assert "timed out" in result.output and a in result.output


def test_jobs_wait_on_an_unknown_job_is_an_error(api):
    result = run("jobs", "wait", "job_nope")
    assert result.exit_code == 1 and "404" in result.output


def test_jobs_wait_rides_out_the_rate_limit(api, tmp_path, monkeypatch):
    from scheduler import cli_client as module
    from scheduler.client import ApiProblem

    (a,) = _submitted(api, tmp_path, "train")
    _advancing(api, monkeypatch, {a: ["planned", "approved", "launching", "running", "succeeded"]})
    real, answers = module.Client, iter([429, None, 503])

    def limited():
        client = real()
        get = client.get_job

        def get_job(job_id):
            status = next(answers, None)
            if status:
                raise ApiProblem(status, {"title": "come back later"})
            return get(job_id)

        client.get_job = get_job
        return client

    monkeypatch.setattr(module, "Client", limited)
    result = run("jobs", "wait", a)
    assert result.exit_code == 0, result.output


def test_offer_rule_pins_forbids_and_lifts(api, tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([spec("train")]))
    job_id = json.loads(run("jobs", "submit", str(path), "--json").output)[0]["id"]
    offers = [o["id"] for o in api.client.get("/v1/offers", headers=api.auth("ops")).json()["offers"][:2]]

    api.who["current"] = "a"  # a submitter sets no rule
    refused = run("jobs", "offer-rule", job_id, "--pin", offers[0])
    assert refused.exit_code != 0 and "403" in flat(refused)
    api.who["current"] = "ops"
    pinned = run("jobs", "offer-rule", job_id, "--pin", offers[0])
    assert pinned.exit_code == 0 and f"pinned to {offers[0]}" in flat(pinned)
    assert f"offers: pinned to {offers[0]}" in flat(run("jobs", "show", job_id))
    forbidden = run("jobs", "offer-rule", job_id, "--forbid", offers[0], "--forbid", offers[1])
    assert f"never on {', '.join(sorted(offers))}" in flat(forbidden)
    both = run("jobs", "offer-rule", job_id, "--pin", offers[0], "--forbid", offers[1])
    assert both.exit_code != 0 and "422" in flat(both)  # sent as given: the API refuses a pin with forbids
    assert run("jobs", "offer-rule", job_id, "--pin", "").exit_code != 0  # an empty id is not "no rule"
    lifted = run("jobs", "offer-rule", job_id)
    assert lifted.exit_code == 0 and "any offer (no rule)" in flat(lifted)
    assert json.loads(run("jobs", "show", job_id, "--json").output)["offer_rule"] is None
