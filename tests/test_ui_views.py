"""The review page's pure parts: figures, table rows, compliance basis, counterfactuals, Gantt geometry,
the session signer and the money format. Documents are built by hand so every figure is known."""

from __future__ import annotations

import pytest

from api.ui import gantt, history, views
from api.ui.render import money, signed_money
from api.ui.session import SessionSigner, csrf_matches, load_secret, mask_csrf
from scheduler import services
from scheduler.launches import Attempt, LaunchUnit
from scheduler.models import Assignment, JobSpec, Offer, PlanDocument, Segment
from scheduler.queries import ConsideredOffer
from scheduler.settings import Settings

ARCH = {"aws": "centralized", "ionet": "distributed", "vast": "distributed"}


def seg(provider: str, start: str, end: str, *, gpus: int = 8, run_hours: float = 10.0, market: str = "on-demand",
        region: str = "r1", cost: float = 100.0, shard: int = 0) -> Segment:
    return Segment(offer_id=f"{provider}:{region}:box8:{market}", provider=provider, region=region, gpu_type="H100",
                   market=market, nodes=1, gpus=gpus, price_per_node_hour=10.0, start=start, end=end,
                   run_hours=run_hours, transfer_hours=0.0, compute_cost=cost, egress_cost=0.0, shard=shard)


def assignment(name: str, *segments: Segment, slack: float = 24.0, cost: float = 100.0, deadline: str =
               "2026-11-25T00:00:00Z", placement: str = "centralized", team: str = "vision") -> Assignment:
    return Assignment(job_id=f"job_{name}", job_name=name, team=team, placement=placement, segments=list(segments),
                      total_cost=cost, deadline=deadline, slack_hours=slack, baseline_cost=cost * 2)


def document(assignments: list[Assignment], total: float = 400.0, plan_id: str = "plan-new") -> PlanDocument:
    return PlanDocument.model_validate({
        "plan_id": plan_id, "created_at": "2026-11-23T00:00:00Z", "created_by": "test",
        "horizon": {"start": "2026-11-23T00:00:00Z", "end": "2026-11-26T00:00:00Z"}, "fingerprint": "f" * 64,
        "solver": {"status": "OPTIMAL"}, "assignments": assignments, "unplaced": [],
        "summary": {"total_cost": total, "baseline_centralized_cost": 1000.0, "savings_pct": 60.0,
                    "lower_bound": 390.0, "jobs_placed": len(assignments), "jobs_unplaced": 3,
                    "by_placement": {"centralized": 1, "distributed": 1, "hybrid": 0}}})


DAY = "2026-11-23T"
PLAN = document([
    assignment("train", seg("aws", f"{DAY}00:00:00Z", f"{DAY}10:00:00Z", run_hours=10), slack=5.0, cost=300.0),
    assignment("serve", seg("ionet", f"{DAY}02:00:00Z", f"{DAY}08:00:00Z", run_hours=30, market="spot"),
               slack=40.0, cost=100.0, placement="distributed"),
])


def test_figures_come_from_the_summary_and_the_assignments():
    f = views.figures(PLAN, document([], total=250.0, plan_id="plan-old"), ARCH)
    assert (f.total_cost, f.baseline_cost, f.savings_pct, f.placed, f.unplaced) == (400.0, 1000.0, 60.0, 2, 3)
    assert f.previous_plan_id == "plan-old" and f.vs_previous == 150.0
    assert (f.gpu_hours, f.distributed_gpu_hours, f.distributed_share_pct) == (320.0, 240.0, 75.0)  # 8×10, 8×30
    assert f.low_slack_jobs == 1  # train: 5 h < 12 h


def test_figures_without_a_previous_plan_or_placements():
    f = views.figures(document([], total=0.0), None, ARCH)
    assert f.vs_previous is None and f.previous_cost is None and f.distributed_share_pct is None


def test_rows_and_sorting():
    table = views.rows(PLAN, {"job_train": "+"}, {}, lambda offer_id: None)
    by_name = {r.job_name: r for r in table}
    assert by_name["train"].symbol == "+" and by_name["serve"].symbol == views.NO_CHANGE
    assert by_name["serve"].spot and not by_name["train"].spot
    assert by_name["train"].low_slack and not by_name["serve"].low_slack
    assert by_name["train"].where == "aws / r1 / box8"
    assert by_name["train"].compliance == "unknown (job not found)"
    assert [r.job_name for r in views.sort_rows(table, "cost", descending=True)] == ["train", "serve"]
    assert [r.job_name for r in views.sort_rows(table, "cost")] == ["serve", "train"]
    assert [r.job_name for r in views.sort_rows(table, "no-such-column")] == ["train", "serve"]  # by start


def test_a_sharded_job_is_one_row_naming_its_other_offers():
    sharded = document([assignment("sweep", seg("aws", f"{DAY}01:00:00Z", f"{DAY}03:00:00Z", gpus=4),
                                   seg("vast", f"{DAY}00:00:00Z", f"{DAY}05:00:00Z", gpus=4, shard=1),
                                   placement="hybrid")])
    (row,) = views.rows(sharded, {}, {}, lambda offer_id: None)
    assert (row.gpus, row.provider, row.more, row.start, row.end) == (8, "vast", 1, f"{DAY}00:00:00Z",
                                                                       f"{DAY}05:00:00Z")


def offer(region: str, geo: str, certs: list[str]) -> Offer:
    return Offer(id=f"aws:{region}:p5:on-demand", provider="aws", architecture="centralized", region=region, geo=geo,
                 gpu_type="H100", gpus_per_node=8, price_per_node_hour=98.32, market="on-demand", capacity_gpus=64,
                 interconnect="efa", certifications=certs)


def job(compliance: list[str]) -> JobSpec:
    return JobSpec(name="j", team="vision", gpus=8, gpu_types=["H100"], duration_hours=1,
                   deadline="2026-12-01T00:00:00Z", compliance=compliance)


@pytest.mark.parametrize("tags, offers, expected", [
    ([], [offer("us-east-1", "us", [])], "none required"),
    (["soc2"], [offer("us-east-1", "us", ["soc2", "hipaa"])], "soc2 certified"),
    (["gdpr", "soc2"], [offer("eu-west-1", "eu", ["gdpr", "soc2"])], "gdpr, soc2 certified; EU region (eu-west-1)"),
    (["gdpr"], [offer("us-east-1", "us", ["gdpr"])], "gdpr certified; NOT in an EU region"),
    (["hipaa"], [offer("us-east-1", "us", ["soc2"])], "hipaa NOT HELD certified"),
    (["soc2"], [None], "soc2 NOT HELD certified"),  # an offer the catalog no longer has
])
def test_compliance_basis(tags, offers, expected):
    assert views.compliance_basis(job(tags), offers) == expected


def considered(offer_id: str, status: str, cost: float | None, reason: str | None = None) -> ConsideredOffer:
    provider = offer_id.split(":")[0]
    return ConsideredOffer(offer_id=offer_id, provider=provider, architecture=ARCH.get(provider, "centralized"),
                           market="on-demand", gpu_type="H100", status=status, reason=reason, gpus=8, hours=10.0,
                           cost=cost, cost_vs_chosen=None)


def test_the_counterfactual_is_the_cheapest_feasible_offer_of_another_provider():
    rows = [considered("aws:a", "chosen", 100.0), considered("aws:b", "candidate", 95.0),
            considered("ionet:c", "candidate", 130.0), considered("vast:d", "candidate", 120.0),
            considered("gcp:e", "rejected", 50.0, "ComplianceNoMatch")]
    (cf,) = views.counterfactuals(rows, chosen_cost=100.0)
    assert (cf.provider, cf.offer_id, cf.cost, cf.delta) == ("aws", "vast:d", 120.0, 20.0)
    assert cf.sentence.startswith("Forbidding aws costs +$20.00 (next best: vast:d")


def test_the_counterfactual_without_another_provider_and_for_an_unplaced_job():
    rows = [considered("aws:a", "chosen", 100.0), considered("gcp:e", "rejected", 50.0, "SpotNotAllowed")]
    (cf,) = views.counterfactuals(rows, chosen_cost=100.0)
    assert cf.offer_id is None and "leaves no feasible offer" in cf.sentence
    assert views.counterfactuals([considered("aws:b", "candidate", 90.0)], chosen_cost=None) == []


def test_why_rows_keep_the_chosen_the_cheapest_candidates_and_each_rejection_reason():
    rows = ([considered("aws:chosen", "chosen", 100.0)] +
            [considered(f"aws:c{i}", "candidate", 100.0 + i) for i in range(15)] +
            [considered(f"gcp:s{i}", "rejected", 50.0 + i, "SpotNotAllowed") for i in range(7)] +
            [considered("azure:x", "rejected", None, "NoSpeedData")])
    shown, left_out = views.why_rows(rows, candidates=10, per_reason=5)
    assert shown[0].status == "chosen"
    assert [c.offer_id for c in shown if c.status == "candidate"] == [f"aws:c{i}" for i in range(10)]
    assert [c.offer_id for c in shown if c.reason == "SpotNotAllowed"] == [f"gcp:s{i}" for i in range(5)]
    assert [c.offer_id for c in shown if c.reason == "NoSpeedData"] == ["azure:x"]
    assert left_out == {"feasible": 5, "SpotNotAllowed": 2}


@pytest.mark.parametrize("decision, expected", [
    (None, "–"), ({"decision": "approved", "by": "olga"}, "approved by olga"),
    ({"superseded_by": "plan-2"}, "superseded by plan-2"), ({"stale": ["x"]}, "refused: inputs changed"),
    ({"expired_at": "t"}, "expired before approval")])
def test_decided_by(decision, expected):
    assert views.decided_by(decision) == expected


def test_first_start_is_the_earliest_segment():
    assert services.first_start(PLAN) == f"{DAY}00:00:00Z"
    assert services.first_start(document([])) is None


# -- Gantt ----------------------------------------------------------------------------------


def test_pack_stacks_overlapping_intervals_in_the_fewest_rows():
    rows, count = gantt._pack([(10, 20, 3), (0, 10, 1), (16, 18, 4), (5, 15, 2)])
    assert (rows, count) == ({1: 0, 2: 1, 3: 0, 4: 1}, 2)  # 3 reuses 1's row as it ends; 4 reuses 2's
    assert gantt._pack([(0, 10, 1), (1, 9, 2), (2, 8, 3)])[1] == 3


def test_gantt_lanes_rows_and_marks():
    doc = document([
        assignment("a", seg("aws", f"{DAY}00:00:00Z", f"{DAY}10:00:00Z"), slack=2.0, deadline=f"{DAY}12:00:00Z"),
        assignment("b", seg("aws", f"{DAY}05:00:00Z", f"{DAY}15:00:00Z", market="spot"), slack=30.0),
        assignment("c", seg("ionet", f"{DAY}20:00:00Z", "2026-11-24T00:00:00Z"), slack=30.0),
    ])
    chart = gantt.layout(doc.assignments, ARCH, views.LOW_SLACK_HOURS)
    assert [(lane.label, lane.rows) for lane in chart.lanes] == [("aws / r1", 2), ("ionet / r1", 1)]
    bars = {b.job_name: b for b in chart.bars}
    assert bars["a"].y != bars["b"].y  # overlapping in one lane: stacked
    assert bars["a"].low_slack and not bars["b"].low_slack and bars["b"].spot and not bars["a"].spot
    assert bars["c"].architecture == "distributed" and bars["c"].y >= chart.lanes[1].y
    px_per_hour = (bars["b"].x - bars["a"].x) / 5
    assert px_per_hour >= gantt.MIN_PX_PER_HOUR
    assert bars["a"].width == pytest.approx(10 * px_per_hour, abs=0.2)
    assert bars["a"].deadline_x == pytest.approx(bars["a"].x + 12 * px_per_hour, abs=0.2)
    assert bars["b"].deadline_x is None  # 2026-11-25: past the last end, not drawn
    assert chart.ticks and all(gantt.LABEL_WIDTH <= t.x <= chart.width for t in chart.ticks)
    assert chart.height == chart.lanes[-1].y + chart.lanes[-1].height + gantt.LANE_GAP


def test_a_long_plan_gets_a_wide_chart_not_thin_bars():
    doc = document([assignment("long", seg("aws", f"{DAY}00:00:00Z", "2027-01-22T00:00:00Z")),
                    assignment("short", seg("aws", f"{DAY}00:00:00Z", f"{DAY}01:00:00Z"))])
    chart = gantt.layout(doc.assignments, ARCH, views.LOW_SLACK_HOURS)
    short = next(b for b in chart.bars if b.job_name == "short")
    assert short.width >= gantt.MIN_PX_PER_HOUR and chart.width > gantt.LABEL_WIDTH + gantt.PLOT_WIDTH
    assert gantt.layout([], ARCH, 12.0).empty


# -- a job's launches and costs -------------------------------------------------------------


def attempt(n: int, *, start: str = f"{DAY}02:00:00Z", state: str = "ended", phase: str | None = "succeeded",
            cost: float | None = 50.0, **extra) -> Attempt:
    return Attempt(attempt=n, key=f"job_x/plan-a/0.{n}", offer_id="aws:us-east-1:p5.48xlarge:on-demand",
                   provider="aws", adapter="fake", market="on-demand", nodes=1, gpus=8, price_per_node_hour=10.0,
                   run_hours=5.0, start=start, state=state, phase=phase, cost=cost, **extra)


def unit(*attempts: Attempt, plan_id: str = "plan-a", index: int = 0, planned: float = 100.0) -> LaunchUnit:
    return LaunchUnit(id=f"job_x/{plan_id}/{index}", job_id="job_x", plan_id=plan_id, team="vision", index=index,
                      deadline="2026-11-25T00:00:00Z", planned_cost=planned, attempts=list(attempts))


def test_costs_before_any_launch():
    placed = assignment("x", cost=120.0)
    assert [(c.key, c.value, c.note) for c in history.cost_lines(placed, "plan-a", [], terminal=False)] == [
        ("planned", 120.0, "plan plan-a"), ("actual", None, "no launch yet")]
    assert history.cost_lines(None, None, [], terminal=False)[0].note == "not placed by a plan"


def test_a_running_job_costs_what_its_ended_attempts_cost_so_far():
    running = unit(attempt(1, phase="preempted", cost=20.0), attempt(2, state="launched", phase="running", cost=None))
    planned, actual = history.cost_lines(assignment("x", cost=100.0), "plan-a", [running], terminal=False)
    assert (actual.label, actual.value) == ("actual so far", 20.0)
    assert actual.note == "2 attempts on 1 unit; 1 running, counted when it ends"


def test_a_terminal_job_gets_the_difference_over_all_its_plans_units():
    units = [unit(attempt(1, cost=70.0)), unit(attempt(1, cost=55.5), plan_id="plan-b")]
    lines = history.cost_lines(assignment("x", cost=100.0), "plan-b", units, terminal=True)
    assert [(c.key, c.label, c.value) for c in lines] == [
        ("planned", "planned", 100.0), ("actual", "actual", 125.5), ("difference", "actual − planned", 25.5)]
    assert lines[1].note == "2 attempts on 2 units of 2 plans" and lines[2].note == "+25.5% of planned"
    assert lines[2].signed


def test_attempt_rows_say_where_what_state_and_why_a_re_placement_exists():
    later = unit(attempt(1, start=f"{DAY}09:00:00Z"), index=1)
    first = unit(attempt(1, phase="preempted", cost=20.0, handle={"provider": "aws", "id": "i-1"}, billed_usd=20.0),
                 attempt(2, start=f"{DAY}05:00:00Z", state="queued", phase=None, cost=None))
    shown = history.unit_views([later, first])
    assert [v.index for v in shown] == [0, 1]  # by when each unit was first due
    preempted, queued = shown[0].attempts
    assert (preempted.region, preempted.state, preempted.status, preempted.instance, preempted.billed) == (
        "us-east-1", "ended · preempted", "preempted", "i-1", True)
    assert (queued.state, queued.status, queued.instance, queued.billed) == ("queued", "queued", "", False)
    assert queued.message == "re-placed after attempt 1 preempted" and preempted.message == ""
    refused = history.attempt_row(attempt(1, state="refused", phase=None, reason="CapacityGone", message="no capacity"))
    assert (refused.state, refused.reason, refused.message) == ("refused", "CapacityGone", "no capacity")
    assert history.region_of("not-an-offer-id") == ""


# -- session, secret, formats --------------------------------------------------------------


def test_the_session_signer_round_trips_and_refuses_tampering_other_secrets_and_age():
    now = [1_000_000.0]
    signer = SessionSigner(b"k" * 32, max_age_s=60, clock=lambda: now[0])
    session = signer.new("abcd1234abcd1234")
    value = signer.dumps(session)
    assert signer.loads(value) == session
    payload, signature = value.split(".")
    assert signer.loads(payload[:-2] + "xx." + signature) is None
    assert signer.loads(value + "x") is None and signer.loads("") is None and signer.loads("a.b.c") is None
    assert SessionSigner(b"j" * 32, clock=lambda: now[0]).loads(value) is None
    now[0] += 61
    assert signer.loads(value) is None
    with pytest.raises(ValueError):
        SessionSigner(b"short")


def test_csrf_tokens_are_masked_afresh_and_only_the_sessions_token_matches():
    token = "t0k3n-of-the-session_abcdefghijkl"
    first, second = mask_csrf(token), mask_csrf(token)
    assert first != second and token not in first + second  # no fixed bytes for a compressed page to leak
    assert csrf_matches(token, first) and csrf_matches(token, second)
    assert not csrf_matches(token, token) and not csrf_matches(token, mask_csrf(token + "x"))
    for given in ("", None, "forged", "a", "%%%", "é"):
        assert not csrf_matches(token, given)
    assert not csrf_matches("", mask_csrf(""))


def test_the_secret_is_generated_once_and_kept_private(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = load_secret(settings)
    assert len(first) >= 32 and load_secret(settings) == first
    assert (tmp_path / "data" / "ui-session-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret(Settings(data_dir=tmp_path, ui_session_secret="c" * 40)) == b"c" * 40


def test_money_formats():
    assert (money(1234.5), money(-3.0), money(None)) == ("$1,234.50", "-$3.00", "–")
    assert (signed_money(2.0), signed_money(-2.5), signed_money(0.0)) == ("+$2.00", "-$2.50", "+$0.00")
