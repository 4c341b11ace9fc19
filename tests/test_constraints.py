"""One constraint at a time (CP-SAT primer, test-driven optimisation): for each rule a small
batch it can satisfy and one it cannot, judged on the plan document and by the validator."""

from __future__ import annotations

import pytest
from factories import at, hours_after_now, job, offer, parse_ts, solve

from scheduler.models import JobKind


def checked(out):
    """The plan document, after the checks every plan must pass."""
    assert out.violations == []
    doc = out.document
    names = [a.job_name for a in doc.assignments] + [u.job_name for u in doc.unplaced]
    assert sorted(names) == sorted(j.name for j in out.problem.jobs)
    for u in doc.unplaced:
        assert u.message.strip(), u
    return doc


def placed(out) -> dict:
    return {a.job_name: a for a in checked(out).assignments}


def unplaced(out) -> dict:
    return {u.job_name: u for u in checked(out).unplaced}


def offers_of(assignment) -> list[str]:
    return [s.offer_id for s in assignment.segments]


def span(assignment) -> tuple[float, float]:
    return (min(hours_after_now(s.start) for s in assignment.segments),
            max(hours_after_now(s.end) for s in assignment.segments))


def overlap(a, b) -> bool:
    (s1, e1), (s2, e2) = span(a), span(b)
    return s1 < e2 and s2 < e1


# --------------------------------------------------------------------------- GPU type


def test_gpu_type_only_offers_of_an_accepted_type():
    a100 = offer("aws", "us-east-1", gpu="A100", price=5)
    h100 = offer("aws", "us-west-2", gpu="H100", price=80)
    a = placed(solve([job("j", gpu_types=("H100",))], [a100, h100]))["j"]
    assert offers_of(a) == [h100.id]
    assert a.segments[0].gpu_type == "H100"


def test_gpu_type_missing_everywhere_is_no_offer():
    u = unplaced(solve([job("j", gpu_types=("A100",))], [offer(gpu="H100")]))["j"]
    assert u.reason == "NoOffer"


def test_unknown_gpu_type_is_no_offer_with_a_message():
    u = unplaced(solve([job("j", gpu_types=("Z9000",))], [offer(), offer("ionet", "us")]))["j"]
    assert u.reason == "NoOffer"
    assert "Z9000" in u.message


# --------------------------------------------------------------------------- spot


def test_spot_only_for_interruptible_jobs():
    spot = offer("aws", "us-east-1", market="spot", price=20, preemption=0.1)
    on_demand = offer("aws", "us-east-1", price=80)
    steady = placed(solve([job("steady")], [spot, on_demand]))["steady"]
    assert offers_of(steady) == [on_demand.id]
    flexible = placed(solve([job("flex", interruptible=True)], [spot, on_demand]))["flex"]
    assert offers_of(flexible) == [spot.id]
    assert flexible.segments[0].market == "spot"


def test_spot_only_offers_leave_a_non_interruptible_job_unplaced():
    u = unplaced(solve([job("j")], [offer(market="spot", price=20, preemption=0.1)]))["j"]
    assert u.reason == "NoOffer"


# --------------------------------------------------------------------------- managed


def serving(name="serve", **fields):
    return job(name, kind=JobKind.INFERENCE, gpus=8, hours=24, deadline=48, **fields)


def test_managed_jobs_go_to_managed_endpoints_and_others_do_not():
    endpoint = offer("aws", "us-east-1", price=120, managed=True, capacity=16)
    plain = offer("aws", "us-east-1", price=80)
    assert offers_of(placed(solve([serving(managed=True)], [endpoint, plain]))["serve"]) == [endpoint.id]
    # A managed endpoint is never used for a job that did not ask for one, even when cheaper.
    cheap_endpoint = endpoint.model_copy(update={"price_per_node_hour": 10.0})
    assert offers_of(placed(solve([serving()], [cheap_endpoint, plain]))["serve"]) == [plain.id]


def test_managed_job_without_an_endpoint_is_unplaced():
    assert unplaced(solve([serving(managed=True)], [offer()]))["serve"].reason == "NoOffer"
    assert unplaced(solve([serving()], [offer(managed=True)]))["serve"].reason == "NoOffer"


# --------------------------------------------------------------------------- regions


def test_region_geography_allow_list():
    us = offer("aws", "us-east-1", price=40, geo="us")
    eu = offer("aws", "eu-west-1", price=80, geo="eu")
    assert offers_of(placed(solve([job("j", regions=["eu"])], [us, eu]))["j"]) == [eu.id]


def test_region_exact_provider_region():
    cheap_eu = offer("ionet", "eu", price=30, geo="eu", interconnect="roce")
    gcp_nl = offer("gcp", "europe-west4", price=90, geo="eu")
    a = placed(solve([job("j", regions=["gcp:europe-west4"])], [cheap_eu, gcp_nl]))["j"]
    assert offers_of(a) == [gcp_nl.id]
    assert (a.segments[0].provider, a.segments[0].region) == ("gcp", "europe-west4")


def test_region_with_no_offer_is_unplaced():
    out = solve([job("geo", regions=["apac"]), job("exact", regions=["aws:us-west-2"])],
                [offer("aws", "us-east-1"), offer("ionet", "eu", geo="eu")])
    assert {n: u.reason for n, u in unplaced(out).items()} == {"geo": "NoOffer", "exact": "NoOffer"}


# --------------------------------------------------------------------------- compliance


def test_compliance_needs_every_certification():
    bare = offer("ionet", "us", price=30, interconnect="roce")
    soc2 = offer("aws", "us-east-1", price=60, certifications=["soc2"])
    both = offer("aws", "us-west-2", price=90, certifications=["soc2", "hipaa"])
    a = placed(solve([job("j", compliance=["soc2", "hipaa"])], [bare, soc2, both]))["j"]
    assert offers_of(a) == [both.id]


def test_missing_certification_is_compliance_no_match():
    u = unplaced(solve([job("j", compliance=["hipaa"])],
                       [offer("ionet", "us"), offer("aws", "us-east-1", certifications=["soc2"])]))["j"]
    assert u.reason == "ComplianceNoMatch"


def test_gdpr_pins_the_job_to_the_eu():
    us = offer("aws", "us-east-1", price=40, geo="us", certifications=["gdpr", "soc2"])
    eu = offer("aws", "eu-central-1", price=80, geo="eu", certifications=["gdpr", "soc2"])
    assert offers_of(placed(solve([job("j", compliance=["gdpr"])], [us, eu]))["j"]) == [eu.id]


def test_gdpr_outside_the_eu_is_compliance_no_match():
    us = offer("aws", "us-east-1", geo="us", certifications=["gdpr"])
    assert unplaced(solve([job("j", compliance=["gdpr"])], [us]))["j"].reason == "ComplianceNoMatch"


# --------------------------------------------------------------------------- capacity over time


def test_two_jobs_on_one_8_gpu_pool_are_serialised():
    cheap = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
    dear = offer("aws", "us-east-1", price=50, capacity=8)
    out = solve([job("a", hours=10, deadline=30), job("b", hours=10, deadline=30)], [cheap, dear])
    got = placed(out)
    assert offers_of(got["a"]) == offers_of(got["b"]) == [cheap.id]
    assert not overlap(got["a"], got["b"])
    assert out.document.summary.total_cost == pytest.approx(200)


def test_two_jobs_that_cannot_share_the_window_use_the_pricier_pool():
    cheap = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
    dear = offer("aws", "us-east-1", price=50, capacity=8)
    out = solve([job("a", hours=10, deadline=15), job("b", hours=10, deadline=15)], [cheap, dear])
    got = placed(out)
    assert sorted(offers_of(got["a"]) + offers_of(got["b"])) == sorted([cheap.id, dear.id])
    assert out.document.summary.total_cost == pytest.approx(100 + 500)


def test_more_jobs_than_capacity_leaves_one_capacity_exhausted():
    pools = [offer("vast", "us", price=10, capacity=8, interconnect="ethernet"),
             offer("aws", "us-east-1", price=50, capacity=8)]
    out = solve([job(n, hours=10, deadline=15) for n in ("a", "b", "c")], pools)
    assert len(placed(out)) == 2
    (u,) = unplaced(out).values()
    assert u.reason == "CapacityExhausted"


def test_pool_holding_a_whole_shard_is_used():
    a = placed(solve([job("j", gpus=16)], [offer(capacity=16, price=10)]))["j"]
    assert (a.segments[0].nodes, a.segments[0].gpus) == (2, 16)


def test_pool_smaller_than_one_shard_is_capacity_exhausted():
    u = unplaced(solve([job("j", gpus=16)], [offer(capacity=8)]))["j"]
    assert u.reason == "CapacityExhausted"
    assert "16" in u.message


# --------------------------------------------------------------------------- time window


def test_not_before_is_respected():
    a = placed(solve([job("j", not_before=5, hours=10, deadline=48)], [offer()]))["j"]
    assert span(a)[0] >= 5


def test_window_shorter_than_the_run_is_deadline_infeasible():
    u = unplaced(solve([job("j", not_before=40, hours=10, deadline=48)], [offer()]))["j"]
    assert u.reason == "DeadlineInfeasible"


def test_deadline_holds_the_transfer_and_the_run():
    data = {"location": "aws:us-east-1", "size_gb": 36_000}  # 8 h at 10 Gbps
    remote = offer("ionet", "us", price=32, interconnect="roce", ingress_gbps=10)
    a = placed(solve([job("j", hours=10, deadline=18.5, data=data)], [remote], egress={"aws": 0.09}))["j"]
    (seg,) = a.segments
    assert seg.transfer_hours == pytest.approx(8)
    assert seg.egress_cost == pytest.approx(36_000 * 0.09)
    start, end = span(a)
    assert end - start >= 18 - 1e-9 and end <= 18.5


def test_transfer_time_past_the_deadline_moves_the_job_to_its_data():
    data = {"location": "aws:us-east-1", "size_gb": 36_000}
    remote = offer("ionet", "us", price=32, interconnect="roce", ingress_gbps=10)
    local = offer("aws", "us-east-1", price=98.32)
    a = placed(solve([job("j", hours=10, deadline=15, data=data)], [remote, local], egress={"aws": 0.09}))["j"]
    assert offers_of(a) == [local.id]
    assert (a.segments[0].transfer_hours, a.segments[0].egress_cost) == (0, 0)


def test_transfer_time_past_the_deadline_is_deadline_infeasible():
    data = {"location": "aws:us-east-1", "size_gb": 36_000}
    remote = offer("ionet", "us", price=32, interconnect="roce", ingress_gbps=10)
    u = unplaced(solve([job("j", hours=10, deadline=15, data=data)], [remote]))["j"]
    assert u.reason == "DeadlineInfeasible"


# --------------------------------------------------------------------------- dependencies


def test_successor_starts_after_its_predecessor_ends():
    pool = offer(capacity=64)
    out = solve([job("serve", hours=5, after=["train"]), job("train", hours=10)], [pool])
    got = placed(out)
    assert span(got["serve"])[0] >= span(got["train"])[1]


def test_successor_of_an_unplaceable_job_is_dependency_unplaced():
    out = solve([job("train", gpu_types=("A100",)), job("serve", hours=5, after=["train"])], [offer()])
    u = unplaced(out)
    assert u["train"].reason == "NoOffer"
    assert u["serve"].reason == "DependencyUnplaced"
    assert "train" in u["serve"].message


# --------------------------------------------------------------------------- price cap


def test_max_hourly_cost_can_force_a_slower_cheaper_per_hour_offer():
    h100 = offer("aws", "us-east-1", gpu="H100", price=60)  # 2 nodes: $120/h x 10 h = $1,200
    a100 = offer("aws", "us-west-2", gpu="A100", price=35)  # 2 nodes: $70/h x 20 h = $1,400
    free = placed(solve([job("j", gpus=16, gpu_types=("H100", "A100"))], [h100, a100]))["j"]
    assert offers_of(free) == [h100.id]
    capped = placed(solve([job("j", gpus=16, gpu_types=("H100", "A100"), max_hourly_cost=100)], [h100, a100]))["j"]
    assert offers_of(capped) == [a100.id]
    assert capped.total_cost == pytest.approx(1400)


def test_every_offer_over_the_cap_is_price_cap():
    u = unplaced(solve([job("j", gpus=16, max_hourly_cost=100)], [offer(price=60)]))["j"]
    assert u.reason == "PriceCap"


# --------------------------------------------------------------------------- budgets


def test_team_budget_keeps_the_higher_priority_job():
    pool = offer(price=90, capacity=64)  # 10 h on one node: $900
    jobs = [job("cheap-low", hours=5, priority=20),  # $450
            job("dear-high", hours=10, priority=80),  # $900
            job("other-team", hours=10, team="nlp")]
    out = solve(jobs, [pool], budgets={"ml": 1000})
    assert set(placed(out)) == {"dear-high", "other-team"}
    u = unplaced(out)["cheap-low"]
    assert u.reason == "OverBudget"
    assert "ml" in u.message


def test_team_budget_that_covers_both_places_both():
    pool = offer(price=90, capacity=64)
    out = solve([job("a", hours=5), job("b", hours=10)], [pool], budgets={"ml": 1350})
    assert set(placed(out)) == {"a", "b"}


# --------------------------------------------------------------------------- reserved capacity


def test_reserved_capacity_is_filled_first_at_no_cost():
    reserved = offer("azure", "eastus", price=98, market="reserved", capacity=8)
    cheap = offer("vast", "us", price=5, capacity=64, interconnect="ethernet")
    out = solve([job("a", hours=10, deadline=15), job("b", hours=10, deadline=15)], [reserved, cheap])
    got = placed(out)
    on_reserved = [n for n, a in got.items() if offers_of(a) == [reserved.id]]
    assert len(on_reserved) == 1
    assert got[on_reserved[0]].total_cost == 0
    assert out.document.summary.total_cost == pytest.approx(50)


# --------------------------------------------------------------------------- shards


def test_shards_split_across_offers_when_one_pool_is_too_small():
    vast = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
    aws = offer("aws", "us-east-1", price=50, capacity=8)
    a = placed(solve([job("sweep", gpus=16, shards=2, hours=10, deadline=12)], [vast, aws]))["sweep"]
    assert sorted(offers_of(a)) == sorted([vast.id, aws.id])
    assert all(s.gpus == 8 for s in a.segments)
    assert a.placement == "hybrid"
    assert a.total_cost == pytest.approx(100 + 500)


def test_shards_on_one_kind_keep_that_class():
    east = offer("aws", "us-east-1", price=10, capacity=8)
    west = offer("aws", "us-west-2", price=50, capacity=8)
    a = placed(solve([job("sweep", gpus=16, shards=2, hours=10, deadline=12)], [east, west]))["sweep"]
    assert sorted(offers_of(a)) == sorted([east.id, west.id])
    assert a.placement == "centralized"


def test_shards_serialise_on_a_small_pool_when_the_window_allows():
    vast = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
    aws = offer("aws", "us-east-1", price=50, capacity=8)
    a = placed(solve([job("sweep", gpus=16, shards=2, hours=10, deadline=24)], [vast, aws]))["sweep"]
    assert offers_of(a) == [vast.id, vast.id]
    assert a.placement == "distributed"
    first, second = sorted(a.segments, key=lambda s: s.start)
    assert parse_ts(first.end) <= parse_ts(second.start)


def test_pipeline_on_both_kinds_is_hybrid():
    ionet = offer("ionet", "us", price=32, capacity=512, interconnect="roce")
    endpoint = offer("aws", "us-east-1", price=120, managed=True, capacity=16)
    train = job("train", gpus=64, hours=20, deadline=72)
    serve = job("serve", kind=JobKind.INFERENCE, managed=True, gpus=8, hours=24, deadline=72, after=["train"])
    out = solve([train, serve], [ionet, endpoint])
    got = placed(out)
    assert offers_of(got["train"]) == [ionet.id] and offers_of(got["serve"]) == [endpoint.id]
    assert got["train"].placement == got["serve"].placement == "hybrid"
    assert out.document.summary.by_placement == {"centralized": 0, "distributed": 0, "hybrid": 2}


def test_pipeline_on_one_kind_is_not_hybrid():
    ionet = offer("ionet", "us", price=32, capacity=512, interconnect="roce")
    got = placed(solve([job("train", hours=10), job("eval", hours=5, after=["train"])], [ionet]))
    assert got["train"].placement == got["eval"].placement == "distributed"


# --------------------------------------------------------------------------- objective


def test_higher_priority_job_wins_the_only_room_even_when_it_costs_more():
    pool = offer(price=10, capacity=8)
    out = solve([job("small-low", hours=5, deadline=12, priority=10),
                 job("big-high", hours=11, deadline=12, priority=90)], [pool])
    assert set(placed(out)) == {"big-high"}
    assert unplaced(out)["small-low"].reason == "CapacityExhausted"


def test_optimal_cost_on_a_case_computed_by_hand():
    # Pool A ($10/h, 8 GPUs) can run 20 h of the window; pool B costs $30/h.
    # Best: a and b fill A back to back ($200), c runs 5 h on B ($150): $350.
    # (c first on A, as earliest-deadline-first would do, leaves b 10 h on B: $450.)
    a_pool = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
    b_pool = offer("aws", "us-east-1", price=30, capacity=8)
    jobs = [job("a", hours=10, deadline=20), job("b", hours=10, deadline=20), job("c", hours=5, deadline=10)]
    out = solve(jobs, [a_pool, b_pool])
    got = placed(out)
    assert out.document.summary.total_cost == pytest.approx(350)
    assert offers_of(got["c"]) == [b_pool.id]
    assert out.document.solver.status == "OPTIMAL"
    assert out.document.summary.lower_bound <= 350 + 0.01
    assert out.result.greedy.cost(out.instance) >= 35_000


def test_fastest_cheapest_offer_is_chosen_when_nothing_competes():
    a100 = offer("aws", "us-west-2", gpu="A100", price=30)  # 20 h: $600
    h100 = offer("aws", "us-east-1", gpu="H100", price=50)  # 10 h: $500
    a = placed(solve([job("j", gpu_types=("A100", "H100"), hours=20, deadline=48)], [a100, h100]))["j"]
    assert offers_of(a) == [h100.id]
    assert a.segments[0].run_hours == pytest.approx(10)
    assert a.total_cost == pytest.approx(500)
    assert a.deadline == at(48).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_batch_with_nothing_placeable_still_gets_a_plan():
    out = solve([job("a", gpu_types=("A100",)), job("b", gpus=16)], [offer(capacity=8)])
    doc = checked(out)
    assert doc.assignments == []
    assert {u.job_name: u.reason for u in doc.unplaced} == {"a": "NoOffer", "b": "CapacityExhausted"}
    assert (doc.summary.total_cost, doc.summary.lower_bound, doc.summary.jobs_unplaced) == (0, 0, 2)
