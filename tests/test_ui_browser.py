"""The review page end to end in headless Chromium (Debian's `chromium`, driven by Playwright).

The app runs under uvicorn in a thread on a free loopback port, on the embedded Redis in a
temporary data directory. The browser is never downloaded by the test tool: without
/usr/bin/chromium these tests skip, unless CLOUDSCHED_REQUIRE_BROWSER=1 (CI), where they fail.

Screenshots of the plan page, light and dark at 1280 and 390 px, go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from api_support import soon, spec

from api.app import create_app
from api.ui.render import money
from scheduler import services
from scheduler.catalog import load_catalog
from scheduler.models import JobSpec
from scheduler.records import Principal
from scheduler.redis_server import stop_embedded
from scheduler.settings import Settings
from scheduler.store import open_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
OPS = Principal(name="olga", role="ops")
VERA = Principal(name="vera", role="submitter", team="vision")
NILS = Principal(name="nils", role="submitter", team="nlp")

if not CHROMIUM.exists():
    if os.environ.get("CLOUDSCHED_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and CLOUDSCHED_REQUIRE_BROWSER=1 (apt-get install -y chromium)",
                    pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; CI sets CLOUDSCHED_REQUIRE_BROWSER=1)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class World:
    """The served app, its store and keys, and helpers to make plans."""

    def __init__(self, data_dir: Path):
        self.settings = Settings(data_dir=data_dir, redis_url=None, ui_session_secret="s" * 40)
        self.store = open_store(self.settings)
        self.keys = {who: self.store.create_api_key(p.role, p.team, p.name)[0] for who, p in
                     {"ops": OPS, "vera": VERA, "nils": NILS}.items()}
        self.count = 0
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self.settings, self.store), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)

    def submit(self, who: Principal, name: str, **extra) -> str:
        return services.submit_job(self.store, who, JobSpec(**spec(name, team=who.team, **extra)))[0].id

    def new_plan(self) -> dict:
        self.count += 1
        self.submit(VERA, f"batch-{self.count}")  # new inputs: each plan is a plan of its own
        run = services.PlanRun(review_lead_hours=1, time_limit_s=2)
        return services.create_plan(self.store, OPS, run).current_document().model_dump()

    def rich_plan(self) -> dict:
        """A plan with something of everything: spot, little slack, gdpr, an unplaced job, another team."""
        n = self.count + 1
        self.submit(VERA, f"llama-finetune-{n}", gpus=16, duration_hours=20)
        self.submit(VERA, f"spot-eval-{n}", interruptible=True, duration_hours=3)
        self.submit(VERA, f"tight-deadline-{n}", duration_hours=6, deadline=soon(13).isoformat())
        self.submit(VERA, f"eu-serving-{n}", kind="inference", compliance=["gdpr", "soc2"], duration_hours=8)
        self.submit(VERA, f"too-long-{n}", duration_hours=400)
        self.submit(NILS, f"nlp-private-pretrain-{n}", gpus=8, duration_hours=10)
        return self.new_plan()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ui-browser")
    w = World(data_dir)
    # Last night's plan, approved: tonight's plan has a previous plan to compare with.
    w.submit(VERA, "resnet-sweep")
    first = w.new_plan()
    services.approve_plan(w.store, OPS, first["plan_id"], first["fingerprint"], "ok")
    yield w
    w.close()
    stop_embedded(data_dir)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def signed_in(browser, world: World, who: str, errors: list | None = None, **context_options):
    """A page of a new browser context, signed in through the form with `who`'s key; script errors and
    console errors (a Content-Security-Policy violation is one) go to `errors`."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{world.base}/ui/plans")
    assert "/ui/login" in page.url  # no session: redirected to the sign-in form
    page.fill("#api_key", world.keys[who])
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/ui/plans$"))
    return page


def test_ops_reviews_a_plan_opens_why_and_approves(browser, world):
    doc = world.rich_plan()
    errors: list[str] = []
    page = signed_in(browser, world, "ops", errors)
    page.click(f"a[href='/ui/plans/{doc['plan_id']}']")
    page.wait_for_url(f"**/ui/plans/{doc['plan_id']}")
    summary = doc["summary"]
    assert page.text_content("[data-testid=total-cost]") == money(summary["total_cost"])
    assert page.text_content("[data-testid=savings]") == f"−{summary['savings_pct']:.1f} %"
    assert page.text_content("[data-testid=placed]") == str(summary["jobs_placed"])
    assert page.text_content("[data-testid=unplaced]") == str(summary["jobs_unplaced"])
    assert page.text_content("[data-testid=freshness]") == "current"
    catalog = load_catalog()
    segments = [s for a in doc["assignments"] for s in a["segments"]]
    total = sum(s["gpus"] * s["run_hours"] for s in segments)
    distributed = sum(s["gpus"] * s["run_hours"] for s in segments
                      if catalog.architecture(s["provider"]).value == "distributed")
    assert page.text_content("[data-testid=distributed-share]") == f"{100 * distributed / total:.1f} %"
    low = sum(a["slack_hours"] < 12 for a in doc["assignments"])
    assert page.text_content("[data-testid=low-slack]") == str(low) and low >= 1  # tight-deadline-n
    assert page.locator("[data-testid=assignments] tbody tr").count() == len(doc["assignments"])
    assert page.locator("[data-testid=gantt] rect.bar").count() == len(segments)
    assert page.locator("[data-testid=gantt] rect.bar.low-slack").count() >= 1
    unplaced = {u["job_name"]: u["reason"] for u in doc["unplaced"]}
    assert [r for n, r in unplaced.items() if n.startswith("too-long")] == ["DeadlineInfeasible"]
    assert "DeadlineInfeasible" in page.text_content("[data-testid=unplaced-jobs]")

    chosen = next(a for a in doc["assignments"] if a["job_name"].startswith("llama-finetune"))
    page.click(f"#job-{chosen['job_id']} a[data-why]")
    panel = page.locator("#why-panel")
    panel.locator("[data-testid=considered]").wait_for()
    assert panel.is_visible()
    assert chosen["job_name"] in panel.locator("h2").text_content()
    chosen_row = panel.locator("[data-testid=considered] tr.chosen")
    assert "✔" in chosen_row.first.text_content()
    assert chosen["segments"][0]["offer_id"] in chosen_row.first.text_content()
    assert panel.locator("[data-testid=considered] tr.rejected").count() > 0
    counterfactual = panel.locator("[data-testid=counterfactuals]").text_content()
    assert re.search(r"Forbidding \S+ (costs \+|saves -|leaves no)", counterfactual)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "why-light-1280.png"))
    page.click("#why-panel button.close")
    assert not panel.is_visible()

    page.fill("#comment", "looks right")
    page.click("[data-testid=decision-form] button[value=approve]")
    page.wait_for_url(re.compile(r"decided=approved"))
    assert page.text_content("[data-testid=status]") == "approved"
    assert page.text_content("[data-testid=notice]") == "Plan approved."
    assert "approved by olga" in page.text_content("[data-testid=decision]")
    assert page.locator("[data-testid=decision-form]").count() == 0
    assert world.store.get_plan(doc["plan_id"]).state.value == "approved"
    assert errors == []


def test_a_submitter_sees_no_decision_form_and_no_other_teams_job(browser, world):
    nlp_job = world.store.get_job(world.submit(NILS, "nlp-secret-eval"))
    doc = world.new_plan()
    assert nlp_job.name in {a["job_name"] for a in doc["assignments"]} | {u["job_name"] for u in doc["unplaced"]}
    page = signed_in(browser, world, "vera")
    page.goto(f"{world.base}/ui/plans/{doc['plan_id']}")
    assert page.locator("[data-testid=decision-form]").count() == 0
    assert "Only ops and admins approve" in page.text_content("#decision")
    teams = page.eval_on_selector_all("[data-testid=assignments] tbody tr", "rows => rows.map(r => r.dataset.team)")
    assert teams and set(teams) == {"vision"}
    assert nlp_job.name not in page.content()
    response = page.goto(f"{world.base}/ui/jobs/{nlp_job.id}")
    assert response.status == 404 and "Not found" in page.text_content("h1")


def test_approving_a_stale_plan_is_refused_with_what_changed(browser, world):
    doc = world.new_plan()
    page = signed_in(browser, world, "ops")
    page.goto(f"{world.base}/ui/plans/{doc['plan_id']}")
    assert page.text_content("[data-testid=freshness]") == "current"
    late = world.submit(VERA, "late-arrival")  # the plan's inputs change while the page is open
    page.fill("#comment", "ship it")
    page.click("[data-testid=decision-form] button[value=approve]")
    refusal = page.text_content("[data-testid=refusal]")
    assert "is stale" in refusal and "1 job(s) submitted since" in refusal and late in refusal
    assert page.text_content("[data-testid=status]") == "stale"
    assert world.store.get_plan(doc["plan_id"]).state.value == "stale"


def test_the_page_works_without_javascript(browser, world):
    doc = world.new_plan()
    page = signed_in(browser, world, "ops", java_script_enabled=False)
    page.goto(f"{world.base}/ui/plans/{doc['plan_id']}")
    page.click("th[data-sort-key=cost] a")  # a server-side sort
    page.wait_for_url(re.compile(r"sort=cost"))
    costs = [float(v) for v in page.eval_on_selector_all(
        "[data-testid=assignments] tbody td:nth-child(11)", "cells => cells.map(c => c.dataset.v)")]
    assert costs == sorted(costs) and len(costs) == len(doc["assignments"])
    page.click("[data-testid=assignments] tbody tr:first-child a[data-why]")  # why? as a page of its own
    page.wait_for_url(re.compile(r"/jobs/job_"))
    assert page.locator("[data-testid=considered] tr.chosen").count() >= 1


def test_sorting_in_the_browser_and_the_theme_toggle(browser, world):
    doc = world.rich_plan()
    page = signed_in(browser, world, "ops", color_scheme="light")
    page.goto(f"{world.base}/ui/plans/{doc['plan_id']}")
    page.click("th[data-sort-key=cost] a")
    page.click("th[data-sort-key=cost] a")  # the second click sorts descending, in the page (no reload)
    assert "sort=" not in page.url
    assert page.get_attribute("th[data-sort-key=cost]", "aria-sort") == "descending"
    names = page.eval_on_selector_all("[data-testid=assignments] tbody tr", "rows => rows.map(r => r.dataset.job)")
    by_cost = sorted(doc["assignments"], key=lambda a: (-a["total_cost"], a["job_name"]))
    assert names == [a["job_name"] for a in by_cost]
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("[data-theme-toggle]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
    page.reload()  # the choice is kept
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"


@pytest.fixture(scope="module")
def showcase(world) -> dict:
    """A plan under review for the screenshots (made last: the other tests' plans would supersede it)."""
    return world.rich_plan()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 390])
def test_screenshots_of_the_plan_page(browser, world, showcase, scheme, width):
    page = signed_in(browser, world, "ops", viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.goto(f"{world.base}/ui/plans/{showcase['plan_id']}")
    assert page.locator("[data-testid=decision-form]").is_visible()
    # Readable at this width: the page itself does not scroll sideways (wide tables and the chart scroll
    # inside their own boxes), and the headline figures are on screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.locator("[data-testid=total-cost]").is_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(255, 255, 255)") == (scheme == "light")
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"plan-{scheme}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
