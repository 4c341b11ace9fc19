"""Solve a whole batch: greedy first, then CP-SAT where it pays.

1. The greedy plan is the first feasible plan (and the fallback).
2. Jobs that share no capacity pool and no dependency are independent: the batch splits
   into groups. A group small enough is solved whole by CP-SAT, warm-started from greedy.
3. Large groups are improved by large-neighbourhood search: free a few dozen jobs around
   one that pays more than its cheapest candidate (or is unplaced), re-solve them with
   CP-SAT against the fixed rest, keep the result only if it is lexicographically better.
   The neighbourhood grows when CP-SAT proves optimality quickly and shrinks otherwise.

Every step keeps a valid solution, so the search can stop at any time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from optimizer.cpsat import SUBPROBLEM_CANDIDATES, SearchParams, solve_subset
from optimizer.greedy import greedy
from optimizer.problem import MAX_CANDIDATES, Instance
from optimizer.solution import Solution

FULL_MODEL_MAX_CANDIDATE_VARS = 4000
LNS_MIN, LNS_START, LNS_MAX = 8, 40, 400


@dataclass
class SolveResult:
    solution: Solution
    greedy: Solution
    status: str  # OPTIMAL when every group was proven optimal, else FEASIBLE
    cp_bound_cents: float | None  # CP-SAT's own bound on cost, when it covers the whole batch
    wall_time_s: float
    first_feasible_s: float
    stats: dict = field(default_factory=dict)


def groups(inst: Instance) -> list[list[int]]:
    """Connected components of jobs linked by a shared candidate pool or a dependency."""
    parent = list(range(inst.n_jobs))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    owner: dict[int, int] = {}
    for j, cands in enumerate(inst.cands):
        for pool in cands.offers.tolist():
            parent[find(j)] = find(owner.setdefault(pool, j))
        for p in inst.preds[j]:
            parent[find(j)] = find(p)
    comps: dict[int, list[int]] = {}
    for j in range(inst.n_jobs):
        if len(inst.cands[j]):
            comps.setdefault(find(j), []).append(j)
    return sorted(comps.values(), key=len)


def _model_size(inst: Instance, jobs: list[int]) -> int:
    return sum(min(len(inst.cands[j]), SUBPROBLEM_CANDIDATES) * inst.cands[j].shards for j in jobs)


class _Neighbourhoods:
    """Picks jobs to free: one that costs more than it could, plus its competitors."""

    def __init__(self, inst: Instance, jobs: list[int], rng: random.Random):
        self.inst, self.jobs, self.rng = inst, jobs, rng

    def _regret(self, sol: Solution, j: int) -> int:
        cands = self.inst.cands[j]
        if sol.placed[j] is None:
            return 10 * cands.min_cost + 1  # unplaced jobs are the most worth another look
        return sol.job_cost(self.inst, j) - cands.min_cost

    def pick(self, sol: Solution, size: int) -> list[int]:
        inst = self.inst
        regrets = [(self._regret(sol, j), j) for j in self.jobs]
        weighted = [(r, j) for r, j in regrets if r > 0]
        if not weighted:
            return []
        total = sum(r for r, _ in weighted)
        target = weighted[-1][1]
        pick = self.rng.random() * total
        for r, j in weighted:
            pick -= r
            if pick <= 0:
                target = j
                break
        cands = inst.cands[target]
        pools = set(cands.offers[:SUBPROBLEM_CANDIDATES].tolist())
        lo, hi = cands.release, cands.due
        near = []
        for j in self.jobs:
            shards = sol.placed[j]
            if j == target or shards is None:
                continue
            jc = inst.cands[j]
            for c, s in shards:
                if int(jc.offers[c]) in pools and s < hi and s + int(jc.dur[c]) > lo:
                    near.append((abs(s - lo) * self.rng.random(), j))
                    break
        near.sort()
        chosen = [target] + [j for _, j in near[: size - 1]]
        if len(chosen) < size:  # fill with other costly jobs: their moves free room too
            others = [j for r, j in sorted(weighted, reverse=True) if j not in set(chosen)]
            chosen += others[: size - len(chosen)]
        return chosen


def _solve_small_group(inst, sol, jobs, params, deadline) -> tuple[Solution, bool, float | None]:
    remaining = max(0.05, deadline - time.monotonic())
    sub = SearchParams(min(params.time_limit, remaining), params.num_workers, params.random_seed,
                       params.deterministic)
    res = solve_subset(inst, sol, jobs, sub, k=MAX_CANDIDATES)
    complete = all(len(inst.cands[j]) < MAX_CANDIDATES for j in jobs)
    bound = None
    if complete and res.status in ("OPTIMAL", "FEASIBLE"):
        fixed_unplaced = sum(inst.cands[j].weight for j in jobs if (res.solution or sol).placed[j] is None)
        bound = res.bound - res.big * fixed_unplaced
    return (res.solution or sol), res.optimal, bound


def solve(inst: Instance, params: SearchParams, sub_time: float = 0.5) -> SolveResult:
    t0 = time.monotonic()
    deadline = t0 + params.time_limit
    first = greedy(inst)
    first_feasible = time.monotonic() - t0
    sol = first.copy()
    rng = random.Random(params.random_seed)
    comps = groups(inst)
    small = [c for c in comps if _model_size(inst, c) <= FULL_MODEL_MAX_CANDIDATE_VARS]
    large = [c for c in comps if _model_size(inst, c) > FULL_MODEL_MAX_CANDIDATE_VARS]
    proven, bounds, stats = 0, [], {"groups": len(comps), "large_groups": len(large), "lns_moves": 0,
                                     "lns_improvements": 0}
    for comp in small:
        if time.monotonic() >= deadline:
            break
        sol, optimal, bound = _solve_small_group(inst, sol, comp, params, deadline)
        proven += optimal
        bounds.append(bound)
    if large:
        sol = _lns(inst, sol, large, params, deadline, sub_time, rng, stats)
    status = "OPTIMAL" if proven == len(comps) else "FEASIBLE"
    cp_bound = None
    if not large and len(bounds) == len(comps) and all(b is not None for b in bounds):
        cp_bound = sum(bounds)
    sol.method = "cp-sat" if not large else "cp-sat+lns"
    return SolveResult(sol, first, status, cp_bound, time.monotonic() - t0, first_feasible, stats)


def _lns(inst, sol, comps, params, deadline, sub_time, rng, stats) -> Solution:
    jobs = [j for c in comps for j in c]
    hoods = _Neighbourhoods(inst, jobs, rng)
    size = LNS_START
    while time.monotonic() + 0.05 < deadline:
        free = hoods.pick(sol, size)
        if not free:
            break
        limit = min(sub_time, deadline - time.monotonic())
        sub = SearchParams(limit, params.num_workers, rng.randrange(1 << 30), params.deterministic)
        res = solve_subset(inst, sol, free, sub)
        stats["lns_moves"] += 1
        if res.solution is not None:
            sol = res.solution
            stats["lns_improvements"] += 1
        size = min(LNS_MAX, int(size * 1.15) + 1) if res.optimal else max(LNS_MIN, int(size * 0.8))
    stats["lns_final_size"] = size
    return sol
