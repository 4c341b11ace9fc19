"""`api.fastpath` answers the plain status read exactly as the FastAPI route would, or leaves it to the route.

Each case asks twice: once sent through FastAPI (a spy on the fast path's key lookup declines it),
then once more, which the fast path answers; both answers must be the same to the byte. The spy
also shows which reads the fast path answered.
"""

from __future__ import annotations

import pytest
import redis
from api_support import make_api, spec
from fastapi.testclient import TestClient

from api.fastpath import JobReadFastPath
from scheduler import queries
from scheduler.store import Store
from scheduler.store_keys import sha256


class Answered(list):
    """One entry per read the fast path looked at: True when it answered it itself.
    `route_next`: send the next such read to FastAPI instead (the route's answer, to compare)."""

    route_next = False


@pytest.fixture
def answered(monkeypatch) -> Answered:
    seen = Answered()
    caller = JobReadFastPath._caller

    async def spy(self, request, key):
        if seen.route_next:
            seen.route_next = False
            seen.append(False)
            return None
        who = await caller(self, request, key)
        seen.append(who is not None)
        return who

    monkeypatch.setattr(JobReadFastPath, "_caller", spy)
    return seen


def both_ways(api, who: str, path: str, answered: Answered):
    """(the route's answer, the fast path's answer) to the same read."""
    answered.route_next = True
    routed = api.call(who, "GET", path)
    fast = api.call(who, "GET", path)
    assert answered[-2:] == [False, True], "the first read must go through FastAPI, the second not"
    return routed, fast


def same(routed, fast) -> None:
    assert fast.status_code == routed.status_code
    assert fast.content == routed.content
    assert dict(fast.headers) == dict(routed.headers)


@pytest.fixture
def api():
    api = make_api(rate_limit_per_minute=1000)
    return api


def submit(api, name: str, who: str = "a", team: str = "vision") -> dict:
    response = api.call(who, "POST", "/v1/jobs", json=spec(name, team=team))
    assert response.status_code == 201, response.text
    return response.json()


def test_own_job_is_the_routes_answer(api, answered):
    job = submit(api, "train")
    routed, fast = both_ways(api, "a", f"/v1/jobs/{job['id']}", answered)
    assert routed.status_code == 200 and routed.json()["id"] == job["id"]
    same(routed, fast)


def test_a_job_with_several_events_and_conditions(api, answered):
    job = submit(api, "train")
    assert api.call("a", "POST", f"/v1/jobs/{job['id']}/actions/cancel").status_code == 200
    routed, fast = both_ways(api, "a", f"/v1/jobs/{job['id']}", answered)
    assert [e["type"] for e in routed.json()["events"]] == ["job.submitted", "job.cancelled"]
    assert {c["type"] for c in routed.json()["conditions"]} == {"Planned", "Finished"}
    same(routed, fast)


def test_ops_read_any_team(api, answered):
    job = submit(api, "tokenize", who="b", team="nlp")
    routed, fast = both_ways(api, "ops", f"/v1/jobs/{job['id']}", answered)
    assert routed.status_code == 200
    same(routed, fast)


@pytest.mark.parametrize("case", ["missing", "other team"])
def test_missing_and_other_teams_jobs_are_the_same_404(api, answered, case):
    job_id = "job_does_not_exist" if case == "missing" else submit(api, "tokenize", who="b", team="nlp")["id"]
    routed, fast = both_ways(api, "a", f"/v1/jobs/{job_id}", answered)
    assert routed.status_code == 404 and routed.json()["instance"] == f"/v1/jobs/{job_id}"
    same(routed, fast)


def test_rate_limited_reads_are_the_same_429(monkeypatch, answered):
    monkeypatch.setattr(queries, "clock", lambda: 1_800_000_010.0)
    api = make_api(rate_limit_per_minute=1)
    job = submit(api, "train")  # the one request of the window
    routed, fast = both_ways(api, "a", f"/v1/jobs/{job['id']}", answered)
    assert routed.status_code == 429 and routed.headers["retry-after"] == "50"
    same(routed, fast)


def test_store_down_is_the_same_503(api, answered):
    key = api.keys["a"]
    who = api.store.principal_for_key(key)
    api.client.app.state.store = Store(redis.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True))
    api.client.app.state.principals.put(sha256(key), who)  # as if it was seen before Redis went away
    fast = api.call("a", "GET", "/v1/jobs/job_x")
    assert answered[-1] is True
    api.client.app.state.principals.put(sha256(key), who)
    routed = api.call("a", "GET", "/v1/jobs/job_x?")  # an empty query string is the route's
    assert fast.status_code == routed.status_code == 503 and "nonexistent" not in fast.text
    assert fast.headers["retry-after"] == "1"
    assert fast.content == routed.content


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/jobs/{id}?verbose=1", 422),  # a query string: the route's checks
    ("/v1/jobs/" + "x" * 65, 422),  # an id longer than the route accepts
    ("/v1/jobs/{id}/events", 404),  # another path
])
def test_other_reads_are_left_to_the_route(api, answered, path, status):
    job = submit(api, "train")
    response = api.call("a", "GET", path.replace("{id}", job["id"]))
    assert response.status_code == status
    assert not any(answered)


def test_unknown_keys_and_other_schemes_are_left_to_the_route(api, answered):
    job = submit(api, "train")
    assert api.call("bad", "GET", f"/v1/jobs/{job['id']}").status_code == 401
    basic = api.client.get(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Basic {api.keys['a']}"})
    assert basic.status_code == 401
    assert not any(answered)


def test_fast_reads_are_in_the_metrics_under_the_route(api, answered):
    job = submit(api, "train")
    for _ in range(3):
        assert api.call("a", "GET", f"/v1/jobs/{job['id']}").status_code == 200
    assert answered.count(True) == 3
    text = api.client.get("/metrics").text
    assert 'cloudsched_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 3.0' in text


def test_a_bug_is_the_same_logged_500(api, answered, monkeypatch, caplog):
    """The fast path sits outside the framework's error middleware: it gives the framework's 500 itself."""
    job = submit(api, "train")

    def broken(job, events):
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr("api.fastpath.job_detail", broken)
    monkeypatch.setattr("api.routers.jobs.job_detail", broken)
    api.client = TestClient(api.client.app, raise_server_exceptions=False)  # else the route's error reaches the test
    routed, fast = both_ways(api, "a", f"/v1/jobs/{job['id']}", answered)
    assert routed.status_code == 500 and routed.json()["type"] == "urn:cloudsched:problem:internal"
    same(routed, fast)
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("a bug in rendering",)] * 2


def test_a_key_not_cached_yet_is_read_once_and_cached_by_the_fast_path(api, answered):
    job = submit(api, "train")
    api.client.app.state.principals.clear()  # as when the cached entry has expired
    assert api.call("a", "GET", f"/v1/jobs/{job['id']}").status_code == 200
    assert answered == [True]  # not sent through the framework
    assert api.client.app.state.principals.get(sha256(api.keys["a"])).name == "vera"
