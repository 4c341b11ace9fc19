"""Failing tests for bugs found while writing the test suite (kept out of the commit)."""

from __future__ import annotations

import pytest
from factories import job, offer, solve

from optimizer.validate import validate


def test_validator_reports_an_assignment_for_an_unknown_job():
    out = solve([job("a")], [offer()])
    doc = out.document
    ghost = doc.assignments[0].model_copy(update={"job_id": "ml/ghost", "job_name": "ghost"})
    violations = validate(out.problem, doc.model_copy(update={"assignments": [*doc.assignments, ghost]}))
    assert any("unknown job" in v and "ml/ghost" in v for v in violations)


def test_lower_bound_and_baseline_agree_with_the_documents_rounding():
    # One sharded job on the only (centralized) offer: it is its own baseline and optimum.
    # Each shard: compute $0.125 + egress $0.0625 = $0.1875.
    pool = offer("gcp", "us-central1", gpus_per_node=1, capacity=2, price=0.25)
    sweep = job("sweep", gpus=2, shards=2, hours=0.5, deadline=2,
                data={"location": "aws:us-east-1", "size_gb": 1})
    out = solve([sweep], [pool], egress={"aws": 0.125})
    assert out.violations == []
    s = out.document.summary
    assert s.lower_bound <= s.total_cost + 0.01
    assert s.baseline_centralized_cost == pytest.approx(s.total_cost, abs=0.01)
    assert s.savings_pct == 0.0


def test_successor_that_cannot_finish_after_its_predecessor_is_not_capacity_exhausted():
    # A 512-GPU pool holds one 8-GPU job: capacity is not why serve stays unplaced; train
    # cannot end before 10:00 and serve needs 5 h before its 12:00 deadline.
    pool = offer("ionet", "us", price=32, capacity=512, interconnect="roce")
    out = solve([job("train", hours=10, deadline=48), job("serve", hours=5, deadline=12, after=["train"])], [pool])
    assert out.violations == []
    (u,) = out.document.unplaced
    assert u.job_name == "serve"
    assert u.reason == "DeadlineInfeasible"


def test_cyclic_after_does_not_crash_the_plan():
    out = solve([job("a", after=["b"]), job("b", after=["a"]), job("c")], [offer()])
    assert out.violations == []
    assert [a.job_name for a in out.document.assignments] == ["c"]
    assert {u.job_name: u.reason for u in out.document.unplaced} == {"a": "DependencyUnplaced",
                                                                    "b": "DependencyUnplaced"}
