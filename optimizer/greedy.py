"""Greedy planner: the warm start of the CP-SAT search and its fallback.

Jobs go in dependency order, then by priority (high first), then by deadline (earliest
first, as EDF would), then by size (largest first: small jobs fill gaps). Each shard takes
the cheapest candidate that has room at the earliest start in its window. A job is placed
whole or not at all, and only if its team's budget still covers it.
"""

from __future__ import annotations

from graphlib import TopologicalSorter

from optimizer.problem import Instance
from optimizer.solution import Profile, Solution


def job_order(inst: Instance) -> list[int]:
    jobs = list(range(inst.n_jobs))
    problem = inst.problem

    def key(j: int):
        job = problem.jobs[j]
        return (-job.priority, inst.cands[j].due, -job.gpus * job.duration_hours, j)

    ranked = sorted(jobs, key=key)
    rank = {j: r for r, j in enumerate(ranked)}
    graph = TopologicalSorter({j: inst.preds[j] for j in ranked})
    graph.prepare()
    order: list[int] = []
    while graph.is_active():
        ready = sorted(graph.get_ready(), key=rank.__getitem__)
        order.extend(ready)
        graph.done(*ready)
    return order


def place_job(inst: Instance, j: int, lo: int, profiles: dict[int, Profile]):
    """Cheapest feasible (candidate, start) per shard, added to `profiles`; None if a shard fails."""
    cands = inst.cands[j]
    shards = []
    for _ in range(cands.shards):
        for c in range(len(cands)):
            pool, dur, gpus = int(cands.offers[c]), int(cands.dur[c]), int(cands.demand[c])
            profile = profiles.get(pool)
            if profile is None:
                profile = profiles[pool] = Profile(int(inst.capacity[pool]))
            start = profile.earliest_fit(lo, cands.due - dur, dur, gpus)
            if start is not None:
                profile.add(start, start + dur, gpus)
                shards.append((c, start))
                break
        else:
            _unplace(inst, j, shards, profiles)
            return None
    return tuple(shards)


def _unplace(inst: Instance, j: int, shards, profiles: dict[int, Profile]) -> None:
    cands = inst.cands[j]
    for c, s in shards:
        profiles[int(cands.offers[c])].remove(s, s + int(cands.dur[c]), int(cands.demand[c]))


def greedy(inst: Instance) -> Solution:
    """Place every job greedily, in `job_order`."""
    sol = Solution.empty(inst.n_jobs)
    sol.method = "greedy"
    profiles: dict[int, Profile] = {}
    spent: dict[str, int] = {}
    for j in job_order(inst):
        cands = inst.cands[j]
        if len(cands) == 0:
            continue
        if any(sol.placed[p] is None for p in inst.preds[j]):
            sol.notes[j] = "DependencyUnplaced"
            continue
        lo = max([cands.release] + [sol.job_end(inst, p) for p in inst.preds[j]])
        shards = place_job(inst, j, lo, profiles)
        if shards is None:
            sol.notes[j] = "CapacityExhausted"
            continue
        team = inst.team_of[j]
        cost = sum(int(cands.cost[c]) for c, _ in shards)
        budget = inst.budgets_cents.get(team)
        if budget is not None and spent.get(team, 0) + cost > budget:
            _unplace(inst, j, shards, profiles)
            sol.notes[j] = "OverBudget"
            continue
        spent[team] = spent.get(team, 0) + cost
        sol.placed[j] = shards
        sol.notes.pop(j, None)
    return sol
