"""Jobs over REST (fakeredis): submit as JSON or YAML with Idempotency-Key, list with filters and
cursors, show with conditions and events, cancel; body and rate limits; probes and metrics."""

from __future__ import annotations

import logging
import time

import pytest
import redis
import yaml
from api_support import make_api, spec

from api import deps
from api.errors import all_routes
from scheduler import queries
from scheduler import store as store_module
from scheduler.store import Store
from scheduler.store_keys import sha256

PROBLEM = "application/problem+json"


@pytest.fixture
def api():
    return make_api()


def submit(api, who="a", body=None, **kwargs):
    return api.call(who, "POST", "/v1/jobs", json=body or spec("train"), **kwargs)


def test_submit_json_then_show_with_conditions_and_events(api):
    response = submit(api)
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["name"], job["team"], job["state"], job["submitted_by"]) == ("train", "vision", "pending", "vera")
    shown = api.call("a", "GET", f"/v1/jobs/{job['id']}").json()
    assert [e["type"] for e in shown["events"]] == ["job.submitted"]
    assert shown["conditions"] == [{"type": "Planned", "status": "False", "reason": "Pending",
                                    "message": "Waiting for the next plan run.",
                                    "last_transition_time": shown["events"][0]["at"]}]


def test_submit_yaml_gives_the_same_job_as_json(api):
    body = spec("from-yaml")
    response = api.call("a", "POST", "/v1/jobs", content=yaml.safe_dump(body),
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201
    assert response.json()["spec"]["deadline"].startswith(body["deadline"][:16])


def test_idempotency_key_same_body_returns_the_original_other_body_is_refused(api):
    first = submit(api, headers={"Idempotency-Key": "k1"})
    again = submit(api, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = submit(api, body=spec("other"), headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key" and other.json()["job_id"] == first.json()["id"]
    taken = submit(api)  # no key: the live name is taken
    assert taken.status_code == 409 and taken.json()["field"] == "name"


@pytest.mark.parametrize("content, content_type, status, field", [
    (b'{"name": ', "application/json", 422, "body"),
    (b"- a\n- b\n", "application/yaml", 422, "body"),
    (b"name: [unclosed", "application/yaml", 422, "body"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 422, "body"),  # too deep for the parser
    (b"!!python/object:os.system {}", "application/yaml", 422, "body"),  # safe loading only
    (b"name=x", "application/x-www-form-urlencoded", 415, "Content-Type"),
])
def test_unreadable_bodies_are_4xx_problems(api, content, content_type, status, field):
    response = api.call("a", "POST", "/v1/jobs", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body.get("field") == field or field in {e["field"] for e in body.get("errors", [])}


@pytest.mark.parametrize("change, field", [({"bogus": 1}, "bogus"), ({"gpus": 0}, "gpus"),
                                           ({"team": "nlp"}, "team"), ({"deadline": "soon"}, "deadline"),
                                           ({"priority": False}, "priority"), ({"gpus": "8"}, "gpus"),
                                           # before year 1 / after 9999 once in UTC (schemathesis found the 500)
                                           ({"deadline": "0001-01-01T00:00:00+00:01"}, "deadline"),
                                           ({"not_before": "9999-12-31T23:59:59-01:00"}, "not_before")])
def test_invalid_specs_are_422_naming_the_field(api, change, field):
    response = submit(api, body=spec("bad") | change)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}


def test_list_filters_and_cursor_pagination(api):
    ids = [submit(api, body=spec(f"j{i}")).json()["id"] for i in range(5)]
    submit(api, "b", body=spec("theirs", team="nlp"))
    seen, cursor = [], None
    while True:
        page = api.call("ops", "GET", "/v1/jobs", params={"team": "vision", "limit": 2,
                                                         **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    assert {j["team"] for j in api.call("ops", "GET", "/v1/jobs").json()["items"]} == {"vision", "nlp"}
    assert {j["team"] for j in api.call("a", "GET", "/v1/jobs").json()["items"]} == {"vision"}
    assert api.call("a", "GET", "/v1/jobs", params={"team": "nlp"}).json()["items"] == []
    api.call("a", "POST", f"/v1/jobs/{ids[0]}/actions/cancel")
    cancelled = api.call("a", "GET", "/v1/jobs", params={"state": "cancelled"}).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    for params, field in [({"cursor": "abc"}, "cursor"), ({"state": "done"}, "state"), ({"limit": 0}, "limit"),
                          ({"teem": "vision"}, "teem"), ([("team", "vision"), ("team", "nlp")], "team")]:
        response = api.call("a", "GET", "/v1/jobs", params=params)
        assert response.status_code == 422 and field in {e["field"] for e in response.json()["errors"]}


def test_cancel_then_cancel_again_is_a_conflict(api):
    job = submit(api).json()
    cancelled = api.call("a", "POST", f"/v1/jobs/{job['id']}/actions/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert api.call("a", "POST", f"/v1/jobs/{job['id']}/actions/cancel").status_code == 409
    conditions = api.call("a", "GET", f"/v1/jobs/{job['id']}").json()["conditions"]
    assert {c["type"]: (c["status"], c["reason"]) for c in conditions} == {
        "Planned": ("False", "Pending"), "Finished": ("True", "Cancelled")}


def test_bodies_over_the_limit_are_413_with_or_without_content_length():
    api = make_api(max_body_bytes=2048)
    big = spec("big", launch={"env": {"X": "y" * 4096}})
    response = submit(api, body=big)
    assert response.status_code == 413 and response.headers["content-type"].startswith(PROBLEM)
    chunked = api.call("a", "POST", "/v1/jobs", content=iter([b"{" + b" " * 1500, b" " * 1500 + b"}"]),
                       headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    approve = api.call("ops", "POST", "/v1/plans/p/actions/approve", content=iter([b"{" + b" " * 3000 + b"}"]),
                       headers={"Content-Type": "application/json"})  # a body FastAPI reads itself
    assert approve.status_code == 413
    assert submit(api).status_code == 201


def test_rate_limit_is_per_principal_with_retry_after(monkeypatch):
    monkeypatch.setattr(queries, "clock", lambda: 1_800_000_010.0)  # 50 s before the window ends
    api = make_api(rate_limit_per_minute=3)
    statuses = [api.call("a", "GET", "/v1/jobs").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = api.call("a", "GET", "/v1/jobs")
    assert limited.headers["retry-after"] == "50"
    assert limited.headers["content-type"].startswith(PROBLEM)
    assert api.call("b", "GET", "/v1/jobs").status_code == 200
    monkeypatch.setattr(queries, "clock", lambda: 1_800_000_060.0)  # the next window
    assert api.call("a", "GET", "/v1/jobs").status_code == 200


def _v1_routes(app) -> list[tuple[str, str]]:
    return sorted({(method, route.path) for route in all_routes(app) if getattr(route, "path", "").startswith("/v1/")
                   for method in route.methods - {"HEAD"}})


def test_every_v1_route_counts_against_the_limit(monkeypatch):
    """Most routes count by a dependency; showing a job counts in its store script (and in
    api.fastpath): none may be left out, whatever its answer."""
    monkeypatch.setattr(queries, "clock", lambda: 1_800_000_010.0)
    routes = _v1_routes(make_api().client.app)
    assert ("POST", "/v1/jobs") in routes and ("GET", "/v1/jobs/{job_id}") in routes
    for method, path in routes:
        api = make_api(rate_limit_per_minute=1)
        first = api.call("a", method, path.replace("{job_id}", "job_x").replace("{plan_id}", "plan_x"),
                         json=spec("counted"))
        assert first.status_code != 429, (method, path)
        assert api.call("a", "GET", "/v1/jobs").status_code == 429, f"{method} {path} was not counted"


def test_a_revoked_key_is_refused_within_the_key_cache_ttl(api, monkeypatch):
    """Each server process remembers a key's principal for KEY_CACHE_TTL_S; after that a revoked key gets 401."""
    assert api.call("a", "GET", "/v1/jobs").status_code == 200
    assert api.store.revoke_api_key(sha256(api.keys["a"])[:16])
    clock = time.monotonic()
    monkeypatch.setattr(deps.time, "monotonic", lambda: clock + deps.KEY_CACHE_TTL_S + 0.001)
    assert api.call("a", "GET", "/v1/jobs").status_code == 401
    assert api.call("b", "GET", "/v1/jobs").status_code == 200  # other keys are looked up again and still work


def test_an_unknown_key_is_not_remembered_so_it_works_once_created(api, monkeypatch):
    monkeypatch.setattr(store_module.secrets, "token_urlsafe", lambda _: "chosen-in-advance")
    headers = {"Authorization": "Bearer csk_chosen-in-advance"}
    assert api.client.get("/v1/jobs", headers=headers).status_code == 401
    assert api.store.create_api_key("submitter", "vision", "newcomer")[0] == "csk_chosen-in-advance"
    assert api.client.get("/v1/jobs", headers=headers).status_code == 200


def test_keys_never_appear_in_responses_or_logs(api, caplog):
    caplog.set_level(logging.DEBUG)
    responses = [submit(api), api.call("a", "GET", "/v1/jobs"), api.call("bad", "GET", "/v1/jobs"),
                 api.call("ops", "GET", "/v1/plans"), api.call("a", "GET", "/metrics")]
    for key in [*api.keys.values(), "csk_not-a-key-of-this-installation"]:
        assert key not in caplog.text
        assert all(key not in r.text and key not in str(r.headers) for r in responses)


def test_unknown_and_missing_keys_are_401_with_www_authenticate(api):
    for who in ("none", "bad"):
        response = api.call(who, "GET", "/v1/jobs", params={"teem": "vision"})  # the key is checked first
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"].startswith(PROBLEM)


def test_readyz_metrics_and_healthz(api):
    submit(api)
    job = submit(api, body=spec("other")).json()
    api.call("a", "GET", f"/v1/jobs/{job['id']}")
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["catalog"]["offers"] > 1000
    text = api.client.get("/metrics").text
    assert 'cloudsched_jobs{state="pending"} 2.0' in text
    assert 'cloudsched_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in text
    assert job["id"] not in text  # route templates, never ids


def test_store_down_is_503_not_500():
    dead = Store(redis.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True))
    api = make_api(store=None)
    api.client.app.state.store = dead
    response = api.call("a", "GET", "/v1/jobs")
    assert response.status_code == 503 and "nonexistent" not in response.text
    ready = api.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["store"]["ok"] is False
    assert ready.json()["checks"]["catalog"]["ok"] is True and ready.headers["retry-after"]


def test_openapi_documents_json_and_yaml_bodies_and_bearer_auth(api):
    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}
    assert body["application/json"]["example"]["name"]
    assert "JobSpec" in schema["components"]["schemas"]
    assert any("HTTPBearer" in s for s in schema["paths"]["/v1/jobs"]["get"]["security"])
