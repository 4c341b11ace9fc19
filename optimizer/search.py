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
from optimizer.solution import Profile, Solution, build_profiles

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


class _Load:
    """Capacity profiles and the jobs on each pool, kept in step with the incumbent, so a
    move costs time in the jobs it frees, not in the size of the batch."""

    def __init__(self, inst: Instance, sol: Solution):
        self.inst = inst
        self.profiles = build_profiles(inst, sol)
        self.on_pool: dict[int, set[int]] = {}
        for j, shards in enumerate(sol.placed):
            if shards:
                for c, _ in shards:
                    self.on_pool.setdefault(int(inst.cands[j].offers[c]), set()).add(j)

    def _apply(self, sol: Solution, jobs: list[int], sign: int) -> None:
        for j in jobs:
            cands = self.inst.cands[j]
            for c, s in sol.placed[j] or ():
                pool = int(cands.offers[c])
                profile = self.profiles.get(pool)
                if profile is None:
                    profile = self.profiles[pool] = Profile(int(self.inst.capacity[pool]))
                profile.add(s, s + int(cands.dur[c]), sign * int(cands.demand[c]))
                on = self.on_pool.setdefault(pool, set())
                on.add(j) if sign > 0 else on.discard(j)

    def take_out(self, sol: Solution, jobs: list[int]) -> None:
        self._apply(sol, jobs, -1)

    def put_back(self, sol: Solution, jobs: list[int]) -> None:
        self._apply(sol, jobs, +1)


class _Neighbourhoods:
    """Picks jobs to free: one that costs more than it could, plus its competitors."""

    def __init__(self, inst: Instance, jobs: list[int], rng: random.Random, sol: Solution):
        self.inst, self.jobs, self.rng = inst, jobs, rng
        self.regret = {j: self._regret(sol, j) for j in jobs}

    def _regret(self, sol: Solution, j: int) -> int:
        cands = self.inst.cands[j]
        if sol.placed[j] is None:
            return 10 * cands.min_cost + 1  # unplaced jobs are the most worth another look
        return sol.job_cost(self.inst, j) - cands.min_cost

    def update(self, sol: Solution, jobs: list[int]) -> None:
        for j in jobs:
            self.regret[j] = self._regret(sol, j)

    def pick(self, sol: Solution, size: int, load: _Load) -> list[int]:
        inst = self.inst
        weighted = [(r, j) for j, r in self.regret.items() if r > 0]
        if not weighted:
            return []
        target = self.rng.choices([j for _, j in weighted], weights=[r for r, _ in weighted])[0]
        cands = inst.cands[target]
        pools = cands.offers[:SUBPROBLEM_CANDIDATES].tolist()
        lo, hi = cands.release, cands.due
        near = {}
        for pool in pools:
            for j in load.on_pool.get(pool, ()):
                if j == target or j in near:
                    continue
                jc = inst.cands[j]
                for c, s in sol.placed[j]:
                    if int(jc.offers[c]) == pool and s < hi and s + int(jc.dur[c]) > lo:
                        near[j] = abs(s - lo) * self.rng.random()
                        break
        chosen = [target] + sorted(near, key=near.__getitem__)[: size - 1]
        if len(chosen) < size:  # fill with other costly jobs: their moves free room too
            taken = set(chosen)
            others = [j for r, j in sorted(weighted, reverse=True) if j not in taken]
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
    hoods = _Neighbourhoods(inst, jobs, rng, sol)
    load = _Load(inst, sol)
    size = LNS_START
    while time.monotonic() + 0.05 < deadline:
        free = hoods.pick(sol, size, load)
        if not free:
            break
        limit = min(sub_time, deadline - time.monotonic())
        sub = SearchParams(limit, params.num_workers, rng.randrange(1 << 30), params.deterministic)
        load.take_out(sol, free)
        res = solve_subset(inst, sol, free, sub, profiles=load.profiles)
        stats["lns_moves"] += 1
        if res.solution is not None:
            sol = res.solution
            stats["lns_improvements"] += 1
            hoods.update(sol, free)
        load.put_back(sol, free)
        size = min(LNS_MAX, int(size * 1.15) + 1) if res.optimal else max(LNS_MIN, int(size * 0.8))
    stats["lns_final_size"] = size
    return sol
