"""The review page over HTTP (TestClient on fakeredis): sign-in, session cookie, CSRF, redirects, roles,
decisions through the form, and what each page shows."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from api_support import fake_store, make_api, plan_body, spec
from exec_support import NOW as EXEC_NOW
from exec_support import SimClock, approved_plan, executor, run_until_quiet
from exec_support import spec as exec_spec
from fastapi.testclient import TestClient

from api.ui import GZipUnder
from api.ui import session as sessions
from api.ui.render import money, short_time, signed_money
from scheduler.catalog import load_catalog
from scheduler.lifecycle import JobState
from scheduler.store_keys import sha256

HTML = {"Accept": "text/html"}
SECRET = "t" * 40
MISSING = "job_00000000000000000000000000"


class World:
    def __init__(self):
        self.api = make_api(ui_session_secret=SECRET)
        self.app = self.api.client.app
        self.vision = self.api.call("a", "POST", "/v1/jobs", json=spec("vision-train")).json()["id"]
        self.nlp = self.api.call("b", "POST", "/v1/jobs", json=spec("nlp-secret", team="nlp")).json()["id"]
        self.plan = self.new_plan()

    def new_plan(self) -> dict:
        response = self.api.call("ops", "POST", "/v1/plans", json=plan_body())
        assert response.status_code == 201, response.text
        return response.json()

    def client(self, who: str | None = None, **kwargs) -> TestClient:
        """A browser of its own (cookie jar), signed in as `who` if given."""
        client = TestClient(self.app, headers=HTML, **kwargs)
        if who is not None:
            response = sign_in(client, self.api.keys[who])
            assert response.status_code == 303, response.text
        return client


def login_token(client: TestClient) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)


def sign_in(client: TestClient, key: str, next_url: str = "") -> object:
    return client.post("/ui/login", data={"api_key": key, "csrf": login_token(client), "next": next_url},
                       follow_redirects=False)


def page_csrf(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


@pytest.fixture
def world():
    return World()


def test_pages_redirect_browsers_to_sign_in_and_answer_other_clients_401(world):
    browser = world.client()
    path = f"/ui/plans/{world.plan['plan_id']}"
    response = browser.get(path + "?sort=cost", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next={path}%3Fsort%3Dcost&why=signin"
    script = TestClient(world.app).get(path)
    assert script.status_code == 401 and script.headers["content-type"].startswith("application/problem+json")


def test_sign_in_sets_a_signed_httponly_samesite_cookie_holding_the_key_id_not_the_key(world):
    browser = world.client()
    response = sign_in(browser, world.api.keys["ops"], next_url=f"/ui/plans/{world.plan['plan_id']}")
    assert response.status_code == 303 and response.headers["location"] == f"/ui/plans/{world.plan['plan_id']}"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert payload["k"] == sha256(world.api.keys["ops"])[:16] and world.api.keys["ops"] not in cookie
    assert browser.get("/ui/plans").status_code == 200


def test_over_https_the_cookie_is_secure(world):
    browser = world.client(base_url="https://testserver")
    response = sign_in(browser, world.api.keys["ops"])
    assert any(c.startswith(sessions.COOKIE + "=") and "Secure" in c for c in response.headers.get_list("set-cookie"))


def test_sign_in_needs_the_forms_token_and_a_valid_key(world):
    browser = world.client()
    login_token(browser)
    forged = browser.post("/ui/login", data={"api_key": world.api.keys["ops"], "csrf": "forged"},
                          follow_redirects=False)
    assert forged.status_code == 403 and sessions.COOKIE not in forged.headers.get("set-cookie", "")
    wrong = sign_in(browser, "csk_not-a-key")
    assert wrong.status_code == 401 and "not a valid API key" in wrong.text
    assert browser.get("/ui/plans", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/v1/jobs", "/ui\\..\\x"])
def test_after_sign_in_only_ui_paths_are_followed(world, target):
    response = sign_in(world.client(), world.api.keys["ops"], next_url=target)
    assert response.headers["location"] == "/ui/plans"


def test_a_revoked_key_ends_the_session(world):
    browser = world.client("a")
    assert browser.get("/ui/plans").status_code == 200
    assert world.api.store.revoke_api_key(sha256(world.api.keys["a"])[:16])
    response = browser.get("/ui/plans", follow_redirects=False)
    assert response.status_code == 303 and "why=revoked" in response.headers["location"]
    assert f'{sessions.COOKIE}=""' in response.headers["set-cookie"]  # deleted
    assert "revoked" in browser.get(response.headers["location"]).text


def test_a_tampered_cookie_is_no_session(world):
    browser = world.client("a")
    value = browser.cookies.get(sessions.COOKIE)
    browser.cookies.clear()
    other_key = sha256(world.api.keys["ops"])[:16]  # claim the ops key's id with the old signature
    payload = base64.urlsafe_b64encode(json.dumps({"k": other_key, "c": "x", "t": 1}).encode()).decode().rstrip("=")
    browser.cookies.set(sessions.COOKIE, f"{payload}.{value.split('.')[1]}", path="/ui")
    response = browser.get("/ui/plans", follow_redirects=False)
    assert response.status_code == 303 and "why=ended" in response.headers["location"]


def test_sign_out_needs_the_token_and_ends_the_session(world):
    browser = world.client("ops")
    assert browser.post("/ui/logout", data={"csrf": "forged"}).status_code == 403
    token = page_csrf(browser, "/ui/plans")
    assert page_csrf(browser, "/ui/plans") != token  # masked afresh on every page (BREACH)
    response = browser.post("/ui/logout", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert browser.get("/ui/plans", follow_redirects=False).status_code == 303


def decide(browser: TestClient, plan: dict, action: str, comment: str = "", csrf: str | None = None):
    path = f"/ui/plans/{plan['plan_id']}"
    token = page_csrf(browser, path) if csrf is None else csrf
    return browser.post(f"{path}/decision", follow_redirects=False, data={
        "action": action, "comment": comment, "fingerprint": plan["fingerprint"], "csrf": token})


def test_ops_approve_through_the_form(world):
    browser = world.client("ops")
    response = decide(browser, world.plan, "approve", "fine")
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/plans/{world.plan['plan_id']}?decided=approved"
    assert world.api.store.get_plan(world.plan["plan_id"]).decision["by"] == "olga"
    page = browser.get(response.headers["location"]).text
    assert "Plan approved." in page and 'data-testid="decision-form"' not in page


def test_the_decision_form_needs_the_session_token(world):
    browser = world.client("ops")
    assert decide(browser, world.plan, "approve", csrf="forged").status_code == 403
    assert decide(browser, world.plan, "approve", csrf="").status_code == 403
    assert world.api.store.get_plan(world.plan["plan_id"]).state.value == "pending_review"


def test_a_submitter_cannot_decide(world):
    browser = world.client("a")
    response = decide(browser, world.plan, "approve")
    assert response.status_code == 403 and "only ops and admins" in response.text
    assert world.api.store.get_plan(world.plan["plan_id"]).state.value == "pending_review"


def test_a_rejection_needs_a_comment(world):
    browser = world.client("ops")
    refused = decide(browser, world.plan, "reject", "  ")
    assert refused.status_code == 422 and "a rejection needs a comment" in refused.text
    assert world.api.store.get_plan(world.plan["plan_id"]).state.value == "pending_review"
    assert decide(browser, world.plan, "reject", "not tonight").status_code == 303
    assert world.api.store.get_plan(world.plan["plan_id"]).decision["comment"] == "not tonight"


def test_a_stale_plan_is_refused_with_what_changed(world):
    browser = world.client("ops")
    token = page_csrf(browser, f"/ui/plans/{world.plan['plan_id']}")
    assert 'data-testid="freshness">current' in browser.get(f"/ui/plans/{world.plan['plan_id']}").text
    late = world.api.call("a", "POST", "/v1/jobs", json=spec("late-one")).json()["id"]
    assert 'data-testid="freshness">stale' in browser.get(f"/ui/plans/{world.plan['plan_id']}").text
    response = decide(browser, world.plan, "approve", csrf=token)
    assert response.status_code == 409
    assert "1 job(s) submitted since" in response.text and late in response.text
    assert world.api.store.get_plan(world.plan["plan_id"]).state.value == "stale"


def test_a_submitter_sees_no_form_and_only_their_teams_jobs(world):
    path = f"/ui/plans/{world.plan['plan_id']}"
    mine = world.client("a").get(path).text
    assert "vision-train" in mine and "nlp-secret" not in mine and world.nlp not in mine
    assert 'data-testid="decision-form"' not in mine and "Only ops and admins approve" in mine
    ops = world.client("ops").get(path).text
    assert "vision-train" in ops and "nlp-secret" in ops and 'data-testid="decision-form"' in ops


@pytest.mark.parametrize("template", ["/ui/jobs/{job}", "/ui/plans/{plan}/jobs/{job}"])
def test_another_teams_job_looks_exactly_like_a_missing_one(world, template):
    browser = world.client("a")
    theirs = browser.get(template.format(job=world.nlp, plan=world.plan["plan_id"]))
    absent = browser.get(template.format(job=MISSING, plan=world.plan["plan_id"]))
    assert theirs.status_code == absent.status_code == 404
    assert theirs.text == absent.text.replace(MISSING, world.nlp)


def test_the_plan_page_shows_the_documents_figures(world):
    doc = world.api.call("ops", "GET", f"/v1/plans/{world.plan['plan_id']}").json()
    page = world.client("ops").get(f"/ui/plans/{doc['plan_id']}").text
    assert f'data-testid="total-cost">{money(doc["summary"]["total_cost"])}<' in page
    assert f'data-testid="placed">{doc["summary"]["jobs_placed"]}<' in page
    assert f'data-testid="gap">{100 * doc["solver"]["gap"]:.2f} %<' in page
    assert page.count('class="bar ') == sum(len(a["segments"]) for a in doc["assignments"])
    assert "Plan: 2 to create, 0 to update, 0 to delete, 0 to replace." in page


def test_the_plan_page_compares_its_cost_with_the_approved_previous_plan(world):
    first = world.plan
    assert decide(world.client("ops"), first, "approve", "fine").status_code == 303
    world.api.call("a", "POST", "/v1/jobs", json=spec("vision-next"))
    second = world.new_plan()
    page = world.client("a").get(f"/ui/plans/{second['plan_id']}").text
    delta = round(second["summary"]["total_cost"] - first["summary"]["total_cost"], 2)
    assert f'data-testid="vs-previous">{signed_money(delta)}<' in page
    assert f"vs previous plan ({money(first['summary']['total_cost'])})" in page


def test_the_why_page_marks_the_chosen_offer_and_says_what_forbidding_its_provider_costs(world):
    assignment = world.plan["assignments"][0]
    page = world.client("ops").get(f"/ui/plans/{world.plan['plan_id']}/jobs/{assignment['job_id']}").text
    chosen = re.search(r'<tr class="chosen">(.*?)</tr>', page, re.S).group(1)
    assert "✔" in chosen and assignment["segments"][0]["offer_id"] in chosen
    assert f"Forbidding {assignment['segments'][0]['provider']} " in page
    assert 'class="rejected"' in page


def test_the_job_page_before_any_launch_shows_conditions_planned_cost_and_no_launch(world):
    world.api.store.append_event("launch.requested", actor="worker", job_id=world.vision,
                                 data={"offer_id": "aws:us-east-1:p5:on-demand"})
    page = world.client("a").get(f"/ui/jobs/{world.vision}").text
    assignment = next(a for a in world.plan["assignments"] if a["job_id"] == world.vision)
    assert money(assignment["total_cost"]) in cost_row(page, "planned")
    assert "no launch yet" in cost_row(page, "actual") and 'data-cost="difference"' not in page
    assert "No launch yet." in page and 'data-testid="launches"' not in page  # units come with approval
    assert "launch.requested" in re.search(r'data-testid="events">(.*?)</table>', page, re.S).group(1)
    assert "Planned" in re.search(r'data-testid="conditions">(.*?)</table>', page, re.S).group(1)


def cost_row(page: str, key: str) -> str:
    return re.search(rf'<tr data-cost="{key}">(.*?)</tr>', page, re.S).group(1)


def unit_rows(page: str) -> dict[str, list[str]]:
    """unit id -> the HTML of its attempts' rows, in order."""
    return {uid: re.findall(r'<tr data-attempt="\d+">(.*?)</tr>', body, re.S)
            for uid, body in re.findall(r'<tbody data-unit="([^"]+)">(.*?)</tbody>', page, re.S)}


class Ran:
    """Two approved jobs run by the executor on the fake provider in simulated time (exec_support):
    `steady` on demand to the end, `spot` preempted after 3 h and re-placed."""

    def __init__(self, tmp_path):
        self.store = fake_store()
        plan = approved_plan(self.store, [exec_spec("steady"), exec_spec(
            "spot", interruptible=True, duration_hours=10, deadline=EXEC_NOW + timedelta(hours=40))])
        self.jobs = {a.job_name: a for a in plan.document.assignments}
        assert self.jobs["spot"].segments[0].market == "spot"
        self.clock = SimClock()
        self.ex, self.fake = executor(self.store, tmp_path, self.clock, recovery_tolerance=1.0)
        self.clock.advance(hours=2)
        for uid in self.ex.dispatch():
            self.ex.launch(uid)
        self.ex.track("fake")
        self.clock.advance(hours=3)
        assert len(self.fake.preempt(1.0, market="spot")) == 1
        assert self.ex.track("fake").get("replaced") == 1
        self.api = make_api(self.store, ui_session_secret=SECRET)

    def page(self, name: str) -> str:
        browser = TestClient(self.api.client.app, headers=HTML)
        assert sign_in(browser, self.api.keys["ops"]).status_code == 303
        return browser.get(f"/ui/jobs/{self.jobs[name].job_id}").text


@pytest.fixture
def ran(tmp_path):
    return Ran(tmp_path)


def test_the_job_page_of_a_succeeded_job_shows_its_launch_and_actual_cost(ran):
    run_until_quiet(ran.ex, ran.clock)
    job_id = ran.jobs["steady"].job_id
    assert ran.store.get_job(job_id).state is JobState.SUCCEEDED
    (unit,) = ran.store.launches.of_job(job_id)
    page = ran.page("steady")
    (row,) = unit_rows(page)[unit.id]
    attempt = unit.current
    assert attempt.offer_id in row and "ended · succeeded" in row and "<td>fake<br>" in row
    assert attempt.handle["id"] in row and money(attempt.cost) in row
    for at in (attempt.launched_at, attempt.running_at, attempt.ended_at):
        assert short_time(at) in row
    assert unit.actual_cost > 0
    assert money(unit.actual_cost) in cost_row(page, "actual") and "so far" not in cost_row(page, "actual")
    assert money(ran.jobs["steady"].total_cost) in cost_row(page, "planned")
    assert signed_money(round(unit.actual_cost - ran.jobs["steady"].total_cost, 2)) in cost_row(page, "difference")


def test_the_job_page_of_a_preempted_job_shows_both_attempts_and_the_cost_so_far(ran):
    job_id = ran.jobs["spot"].job_id
    (unit,) = ran.store.launches.of_job(job_id)
    first, second = unit.attempts
    page = ran.page("spot")
    rows = unit_rows(page)[unit.id]
    assert len(rows) == 2
    assert "ended · preempted" in rows[0] and money(first.cost) in rows[0] and first.offer_id in rows[0]
    assert "queued" in rows[1] and f"due {short_time(second.start)}" in rows[1] and second.offer_id in rows[1]
    assert "re-placed after attempt 1 preempted" in rows[1]
    actual = cost_row(page, "actual")
    assert "actual so far" in actual and money(first.cost) in actual and "2 attempts on 1 unit" in actual
    assert 'data-cost="difference"' not in page  # not before the job ends

    run_until_quiet(ran.ex, ran.clock)
    (unit,) = ran.store.launches.of_job(job_id)
    assert ran.store.get_job(job_id).state is JobState.SUCCEEDED
    page = ran.page("spot")
    rows = unit_rows(page)[unit.id]
    assert "ended · preempted" in rows[0] and "ended · succeeded" in rows[1]
    assert unit.actual_cost == round(first.cost + unit.current.cost, 2) and unit.current.cost > 0
    actual = cost_row(page, "actual")
    assert money(unit.actual_cost) in actual and "so far" not in actual
    planned = ran.jobs["spot"].total_cost
    assert signed_money(round(unit.actual_cost - planned, 2)) in cost_row(page, "difference")


def test_the_plan_list_says_who_decided(world):
    browser = world.client("ops")
    decide(browser, world.plan, "approve", "ok")
    page = browser.get("/ui/plans").text
    assert world.plan["plan_id"] in page and "approved by olga" in page


def test_pages_carry_security_headers_and_assets_come_from_the_app(world):
    browser = world.client("ops")
    response = browser.get("/ui/plans")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    for asset in re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', response.text):
        assert browser.get(asset).status_code == 200
    assert not re.search(r'(?:href|src)="https?://', response.text)  # no CDN


def test_ui_responses_go_gzipd_when_asked_and_the_api_answers_as_before(world):
    browser = world.client("ops")
    path = f"/ui/plans/{world.plan['plan_id']}"
    packed = browser.get(path, headers={"Accept-Encoding": "gzip"})
    plain = browser.get(path, headers={"Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip" and "accept-encoding" in packed.headers["vary"].lower()
    assert "content-encoding" not in plain.headers
    assert packed.num_bytes_downloaded < plain.num_bytes_downloaded / 2 and world.plan["plan_id"] in packed.text
    assert packed.headers["content-security-policy"] == plain.headers["content-security-policy"]
    css = next(a for a in re.findall(r'href="(/ui/static/[^"]+)"', plain.text) if ".css" in a)
    assert browser.get(css, headers={"Accept-Encoding": "gzip"}).headers["content-encoding"] == "gzip"


def test_the_ui_gzip_leaves_every_other_path_alone():
    async def big(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"x" * 10_000})

    client = TestClient(GZipUnder(big, prefix="/ui"), headers={"Accept-Encoding": "gzip"})
    for path, encoding in [("/ui", "gzip"), ("/ui/plans", "gzip"), ("/v1/plans", None), ("/uix", None), ("/", None)]:
        assert client.get(path).headers.get("content-encoding") == encoding, path


def test_the_job_page_shows_ops_offer_rule(world):
    job = world.api.call("a", "POST", "/v1/jobs", json=spec("ruled-train")).json()["id"]
    offer_id = load_catalog().offers[0].id
    assert world.api.call("ops", "PUT", f"/v1/jobs/{job}/offer-rule", json={"pin": offer_id}).status_code == 200
    page = world.client("a").get(f"/ui/jobs/{job}").text
    assert re.search(r'data-testid="offer-rule">(.*?)</dd>', page, re.S).group(1) == f"only {offer_id}"
    assert 'data-testid="offer-rule"' not in world.client("a").get(f"/ui/jobs/{world.vision}").text
