"""The independent plan validator (optimizer/validate.py): a valid plan from plan_batch,
broken one way at a time, must be reported each time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from factories import job, offer, plan, problem, ts

from optimizer.validate import validate
from scheduler.models import Placement, PlanDocument

VAST = offer("vast", "us", price=10, capacity=8, interconnect="ethernet")
AWS = offer("aws", "us-east-1", price=80, certifications=["soc2"])
AWS_SPOT = offer("aws", "us-east-1", price=20, market="spot", preemption=0.1, certifications=["soc2"])
IONET = offer("ionet", "us", price=32, capacity=512, interconnect="roce")
AWS_A100 = offer("aws", "us-west-2", gpu="A100", price=30)

JOBS = [
    job("a", hours=10, deadline=20),  # a and b fill the 8-GPU vast pool back to back
    job("b", hours=10, deadline=20),
    job("late", gpu_types=("A100",), not_before=5, deadline=30),
    job("secure", compliance=["soc2"], deadline=48),
    job("train", gpus=16, hours=10, deadline=72),
    job("serve", hours=5, deadline=72, after=["train"]),
    job("sweep", gpus=16, shards=2, hours=4, deadline=72),
    job("nope", gpu_types=("Z9000",)),
]


@pytest.fixture(scope="module")
def outcome():
    out = plan(problem(JOBS, [VAST, AWS, AWS_SPOT, IONET, AWS_A100], budgets={"ml": 100_000}))
    assert out.violations == []
    doc = out.document
    assert {a.job_name for a in doc.assignments} == {j.name for j in JOBS} - {"nope"}
    assert [u.job_name for u in doc.unplaced] == ["nope"]
    return out


@pytest.fixture(scope="module")
def prob(outcome):
    return outcome.problem


@pytest.fixture(scope="module")
def doc(outcome):
    return outcome.document


def assignment(doc, name):
    return next(a for a in doc.assignments if a.job_name == name)


def with_assignment(doc, name, **update):
    return doc.model_copy(update={"assignments": [
        a.model_copy(update=update) if a.job_name == name else a for a in doc.assignments]})


def with_segment(doc, name, index=0, **update):
    a = assignment(doc, name)
    segments = [s.model_copy(update=update) if i == index else s for i, s in enumerate(a.segments)]
    return with_assignment(doc, name, segments=segments)


def reported(violations, *words):
    """True when one violation mentions every word."""
    return any(all(w in v for w in words) for v in violations)


def test_the_unmutated_plan_is_valid(prob, doc):
    assert validate(prob, doc) == []
    # Checkers read the JSON document: the round trip must stay valid.
    assert validate(prob, PlanDocument.model_validate_json(doc.model_dump_json())) == []


# --------------------------------------------------------------------------- every job once


def test_missing_job(prob, doc):
    broken = doc.model_copy(update={"assignments": [a for a in doc.assignments if a.job_name != "late"]})
    assert reported(validate(prob, broken), "ml/late", "missing")


def test_missing_unplaced_job(prob, doc):
    broken = doc.model_copy(update={"unplaced": []})
    assert reported(validate(prob, broken), "ml/nope", "missing")


def test_duplicated_job(prob, doc):
    late = assignment(doc, "late")
    broken = doc.model_copy(update={"assignments": [*doc.assignments, late]})
    assert reported(validate(prob, broken), "ml/late", "2 times")


def test_job_both_placed_and_unplaced(prob, doc):
    entry = doc.unplaced[0].model_copy(update={"job_id": "ml/late", "job_name": "late"})
    broken = doc.model_copy(update={"unplaced": [*doc.unplaced, entry]})
    assert reported(validate(prob, broken), "ml/late", "2 times")


def test_unplaced_without_a_message(prob, doc):
    broken = doc.model_copy(update={"unplaced": [doc.unplaced[0].model_copy(update={"message": "  "})]})
    assert reported(validate(prob, broken), "nope", "without a message")


# --------------------------------------------------------------------------- capacity and time


def test_capacity_overflow_when_two_segments_overlap_on_a_small_pool(prob, doc):
    a, b = assignment(doc, "a").segments[0], assignment(doc, "b").segments[0]
    assert a.offer_id == b.offer_id == VAST.id  # the 8-GPU pool holds one 8-GPU job at a time
    broken = with_segment(doc, "b", start=a.start, end=a.end)
    violations = validate(prob, broken)
    assert reported(violations, "capacity", VAST.id, "16 GPUs", "> 8")


def test_start_before_not_before(prob, doc):
    broken = with_segment(doc, "late", start=ts(2), end=ts(12))  # not_before is NOW + 5 h
    assert reported(validate(prob, broken), "late", "before not_before")


def test_start_before_the_plans_now(prob, doc):
    broken = with_segment(doc, "secure", start=ts(-1), end=ts(9))
    assert reported(validate(prob, broken), "secure", "before the plan's now")


def test_end_after_deadline(prob, doc):
    broken = with_segment(doc, "late", start=ts(25), end=ts(35))  # deadline is NOW + 30 h
    assert reported(validate(prob, broken), "late", "after the deadline")


def test_segment_shorter_than_the_run(prob, doc):
    seg = assignment(doc, "late").segments[0]
    broken = with_segment(doc, "late", end=seg.start)
    assert reported(validate(prob, broken), "late", "occupies")


def test_predecessor_order_broken(prob, doc):
    train = assignment(doc, "train").segments[0]
    broken = with_segment(doc, "serve", start=train.start, end=ts(5))
    assert reported(validate(prob, broken), "serve", "before its predecessor train")


def test_successor_placed_without_its_predecessor(prob, doc):
    gone = [a for a in doc.assignments if a.job_name != "train"]
    entry = doc.unplaced[0].model_copy(update={"job_id": "ml/train", "job_name": "train"})
    broken = doc.model_copy(update={"assignments": gone, "unplaced": [*doc.unplaced, entry]})
    assert reported(validate(prob, broken), "serve", "predecessor train is not")


# --------------------------------------------------------------------------- figures


def test_wrong_compute_cost(prob, doc):
    seg = assignment(doc, "late").segments[0]
    broken = with_segment(doc, "late", compute_cost=seg.compute_cost + 1.0)
    assert reported(validate(prob, broken), "late", "compute_cost")


def test_compute_cost_within_a_cent_is_accepted(prob, doc):
    seg = assignment(doc, "late").segments[0]
    assert validate(prob, with_segment(doc, "late", compute_cost=seg.compute_cost + 0.01)) == []


def test_wrong_egress_and_run_hours(prob, doc):
    seg = assignment(doc, "late").segments[0]
    assert reported(validate(prob, with_segment(doc, "late", egress_cost=5.0)), "late", "egress_cost")
    assert reported(validate(prob, with_segment(doc, "late", run_hours=seg.run_hours / 2)), "late", "run_hours")


def test_wrong_price_or_node_count(prob, doc):
    assert reported(validate(prob, with_segment(doc, "late", price_per_node_hour=1.0)), "late", "price_per_node_hour")
    assert reported(validate(prob, with_segment(doc, "late", nodes=2)), "late", "nodes")


def test_assignment_total_does_not_add_up(prob, doc):
    a = assignment(doc, "late")
    broken = with_assignment(doc, "late", total_cost=a.total_cost + 10)
    assert reported(validate(prob, broken), "late", "total_cost")


def test_summary_total_mismatch(prob, doc):
    broken = doc.model_copy(update={"summary": doc.summary.model_copy(
        update={"total_cost": doc.summary.total_cost + 5})})
    assert reported(validate(prob, broken), "summary total_cost")


def test_summary_counts_mismatch(prob, doc):
    broken = doc.model_copy(update={"summary": doc.summary.model_copy(
        update={"jobs_placed": doc.summary.jobs_placed + 1})})
    assert reported(validate(prob, broken), "job counts")


# --------------------------------------------------------------------------- offers a job may not use


def test_wrong_gpu_type(prob, doc):
    broken = with_segment(doc, "secure", offer_id=AWS_A100.id)
    assert reported(validate(prob, broken), "secure", "GPU A100 not in")


def test_spot_for_a_non_interruptible_job(prob, doc):
    broken = with_segment(doc, "secure", offer_id=AWS_SPOT.id)
    assert reported(validate(prob, broken), "secure", "spot offer", "not interruptible")


def test_missing_certification(prob, doc):
    broken = with_segment(doc, "secure", offer_id=IONET.id)
    assert reported(validate(prob, broken), "secure", "lacks", "soc2")


def test_unknown_offer(prob, doc):
    broken = with_segment(doc, "secure", offer_id="aws:nowhere:x:on-demand")
    assert reported(validate(prob, broken), "secure", "unknown offer")


def test_price_cap_exceeded(prob, doc):
    capped = [j.model_copy(update={"max_hourly_cost": 50.0}) if j.name == "secure" else j for j in prob.jobs]
    assert reported(validate(replace(prob, jobs=capped), doc), "secure", "max_hourly_cost")


def test_shard_missing(prob, doc):
    sweep = assignment(doc, "sweep")
    assert len(sweep.segments) == 2
    broken = with_assignment(doc, "sweep", segments=sweep.segments[:1], total_cost=sweep.segments[0].compute_cost)
    assert reported(validate(prob, broken), "sweep", "1 segments for 2 shard")


# --------------------------------------------------------------------------- budgets and classes


def test_budget_exceeded(prob, doc):
    spent = sum(a.total_cost for a in doc.assignments if a.team == "ml")
    assert validate(replace(prob, budgets={"ml": spent}), doc) == []
    violations = validate(replace(prob, budgets={"ml": spent - 1}), doc)
    assert reported(violations, "team ml", "over its budget")


def test_wrong_placement_class(prob, doc):
    a = assignment(doc, "late")
    assert a.placement == "centralized"
    broken = with_assignment(doc, "late", placement=Placement.DISTRIBUTED)
    assert reported(validate(prob, broken), "late", "should be centralized")


def test_pipeline_class_must_follow_its_stages(prob, doc):
    # train (io.net) and serve (vast) are both distributed; calling serve hybrid is wrong.
    assert assignment(doc, "serve").placement == "distributed"
    broken = with_assignment(doc, "serve", placement=Placement.HYBRID)
    assert reported(validate(prob, broken), "serve", "should be distributed")


def test_summary_by_placement_mismatch(prob, doc):
    counts = dict(doc.summary.by_placement)
    counts["hybrid"] += 1
    broken = doc.model_copy(update={"summary": doc.summary.model_copy(update={"by_placement": counts})})
    assert reported(validate(prob, broken), "by_placement")
