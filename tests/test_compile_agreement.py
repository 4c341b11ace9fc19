"""The vectorised candidate compiler and the one-offer-at-a-time rules (used by `explain`)
must agree on every job and offer of a realistic batch."""

from __future__ import annotations

from datetime import datetime, timezone

from optimizer.candidates import compile_problem
from optimizer.problem import MAX_CANDIDATES
from scheduler.catalog import load_catalog
from scheduler.planning import build_problem
from scheduler.reasons import consider
from scheduler.workloads import generate_jobs, load_jobs

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def test_compiled_candidates_match_the_per_offer_rules():
    from pathlib import Path
    jobs = generate_jobs(60, seed=3, now=NOW) + load_jobs(Path(__file__).parent.parent / "examples" / "mixed-week.yaml")
    problem = build_problem(jobs, now=NOW, catalog=load_catalog())
    inst = compile_problem(problem)
    checked = 0
    for j, job in enumerate(problem.jobs):
        rows = consider(problem, job)
        feasible = {r.offer.id for r in rows if r.code is None}
        compiled = {problem.offers[int(o)].id for o in inst.cands[j].offers}
        if len(feasible) <= MAX_CANDIDATES:
            assert compiled == feasible, job.name
        else:
            assert compiled <= feasible and len(compiled) == MAX_CANDIDATES, job.name
        codes = {}
        for r in rows:
            if r.code:
                codes[r.code] = codes.get(r.code, 0) + 1
        assert dict(inst.cands[j].rejections) == codes, job.name
        checked += 1
    assert checked == len(jobs)
