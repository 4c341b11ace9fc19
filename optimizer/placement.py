"""Placement classes (DESIGN §4.4).

A job is `centralized` or `distributed` when all of it runs on that kind of offer, and
`hybrid` when its parts span both: a sharded job whose shards land on both kinds, or a
pipeline (jobs linked by `after`) whose stages land on different kinds. In the pipeline
case every placed stage of that pipeline is labelled `hybrid`.
"""

from __future__ import annotations

from optimizer.problem import Problem
from scheduler.models import Architecture, Placement, PlanDocument


def _pipelines(problem: Problem) -> dict[str, int]:
    """job id -> pipeline id (connected components of the `after` graph)."""
    parent = {problem.job_id(j): problem.job_id(j) for j in range(len(problem.jobs))}

    def find(a: str) -> str:
        while parent[a] != a:
            a = parent[a]
        return a

    by_name = {(job.team, job.name): problem.job_id(j) for j, job in enumerate(problem.jobs)}
    for j, job in enumerate(problem.jobs):
        for name in job.after:
            other = by_name.get((job.team, name))
            if other is not None:
                parent[find(problem.job_id(j))] = find(other)
    roots = sorted({find(i) for i in parent})
    index = {r: n for n, r in enumerate(roots)}
    return {i: index[find(i)] for i in parent}


def placement_classes(problem: Problem, plan: PlanDocument) -> dict[str, Placement]:
    offers = {o.id: o for o in problem.offers}
    kinds: dict[str, set[Architecture]] = {}
    for a in plan.assignments:
        kinds[a.job_id] = {offers[s.offer_id].architecture for s in a.segments if s.offer_id in offers}
    pipeline = _pipelines(problem)
    per_pipeline: dict[int, set[Architecture]] = {}
    for job_id, ks in kinds.items():
        per_pipeline.setdefault(pipeline.get(job_id, job_id), set()).update(ks)
    out = {}
    for job_id, ks in kinds.items():
        if len(per_pipeline[pipeline.get(job_id, job_id)]) > 1:  # includes the job's own shards
            out[job_id] = Placement.HYBRID
        elif ks == {Architecture.DISTRIBUTED}:
            out[job_id] = Placement.DISTRIBUTED
        else:
            out[job_id] = Placement.CENTRALIZED
    return out
