"""The large-neighbourhood search on a real batch: every plan it keeps is valid, and it never
ends lexicographically worse than the greedy plan it starts from."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import optimizer.search as search
from scheduler.catalog import load_catalog
from scheduler.planning import PlanOptions, build_problem, plan_batch
from scheduler.workloads import generate_jobs

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


@pytest.mark.parametrize("seed", [0, 1])
def test_lns_plans_are_valid_and_never_worse_than_greedy(monkeypatch, seed):
    monkeypatch.setattr(search, "FULL_MODEL_MAX_CANDIDATE_VARS", 10)  # force LNS on every group
    jobs = generate_jobs(300, seed=seed, now=NOW)
    problem = build_problem(jobs, now=NOW, catalog=load_catalog(),
                            budgets={"vision": 2_000.0, "nlp": 50_000.0})
    outcome = plan_batch(problem, PlanOptions(time_limit=4, num_workers=1, random_seed=seed, lp_bound=False))
    assert outcome.violations == []
    assert outcome.result.stats["lns_moves"] > 0
    inst, result = outcome.instance, outcome.result
    assert result.solution.objective(inst) <= result.greedy.objective(inst)
    assert "lns" in result.solution.method
