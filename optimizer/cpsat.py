"""The CP-SAT model, built for any subset of jobs with the rest of the plan held fixed.

Notation (minutes from the plan's `now`, money in cents):

    J          the free jobs; every other job keeps its place and is background load
    C(j)       job j's candidate offers (cheapest K, plus the ones it uses now)
    x[j,k,c]   shard k of job j runs on candidate c                     (bool)
    y[j]       job j is placed                                          (bool)
    s[j,k]     start of shard k                                         (int)

    sum_c x[j,k,c] = y[j]                      one candidate per shard, all shards or none
    s[j,k] + dur[c] <= due[j]  if x[j,k,c]     the job ends by its deadline (transfer incl.)
    s[j,k] >= release[j], >= end of each predecessor
    cumulative(pool o): shards on o + background load <= capacity[o]
    sum cost[c] x[j,k,c] <= budget[team] - spend of fixed jobs of that team

    minimise  sum_j W * weight[j] * (1 - y[j])  +  sum cost[c] x[j,k,c]

`W` exceeds any cost the free jobs can add, so the objective is lexicographic: place as
much priority weight as possible, then spend as little as possible.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.problem import Instance
from optimizer.solution import Solution, build_profiles

SUBPROBLEM_CANDIDATES = 8


@dataclass
class SearchParams:
    time_limit: float = 10.0
    num_workers: int = 1
    random_seed: int = 0
    deterministic: bool = False  # limit by deterministic time: reproducible, for tests


@dataclass
class SubResult:
    solution: Solution | None  # improved solution, or None
    status: str
    bound: float  # CP-SAT's bound on the subproblem objective
    big: int  # the unplaced weight multiplier W used (0: all free jobs stayed placed)
    optimal: bool


class _Model:
    def __init__(self, inst: Instance, sol: Solution, free: list[int], k: int, profiles=None):
        self.inst, self.sol, self.free = inst, sol, free
        self.free_set = set(free)
        self.m = cp_model.CpModel()
        # `profiles`: the load of every job but the free ones, if the caller keeps it up to date.
        self.profiles = build_profiles(inst, sol, skip=self.free_set) if profiles is None else profiles
        self.y: dict[int, cp_model.IntVar] = {}
        self.x: dict[tuple[int, int], list[tuple[int, cp_model.IntVar]]] = {}
        self.starts: dict[tuple[int, int], cp_model.IntVar] = {}
        self.ends: dict[int, list] = {}
        self.pool_items: dict[int, list] = {}
        self.cost_terms: list = []
        self.team_terms: dict[str, list] = {}
        self.big = 1 + sum(int(inst.cands[j].cost[:k].max(initial=0)) * inst.cands[j].shards
                           + (sol.job_cost(inst, j) if sol.placed[j] else 0) for j in free)
        # When every free job is placed now, no better plan can drop one (W outweighs any
        # saving), so they all stay placed and the objective is cost alone: a far tighter
        # model for CP-SAT than one carrying the huge W terms.
        self.all_placed = all(sol.placed[j] is not None for j in free)
        for j in free:
            self._add_job(j, k)
        self._add_dependencies()
        self._add_capacity()
        self._add_budgets()
        if self.all_placed:
            self.m.add(sum(self.y.values()) == len(self.y))
            self.m.minimize(sum(self.cost_terms))
        else:
            unplaced = [self.big * inst.cands[j].weight * (1 - self.y[j]) for j in free]
            self.m.minimize(sum(unplaced) + sum(self.cost_terms))

    def _release(self, j: int) -> int | None:
        """Earliest start given fixed predecessors; None if one of them is unplaced."""
        lo = self.inst.cands[j].release
        for p in self.inst.preds[j]:
            if p in self.free_set:
                continue
            if self.sol.placed[p] is None:
                return None
            lo = max(lo, self.sol.job_end(self.inst, p))
        return lo

    def _add_job(self, j: int, k: int) -> None:
        cands, m = self.inst.cands[j], self.m
        y = self.y[j] = m.new_bool_var(f"placed[{j}]")
        options = set(range(min(k, len(cands))))
        if self.sol.placed[j]:
            options |= {c for c, _ in self.sol.placed[j]}
        lo = self._release(j)
        options = sorted(c for c in options if lo is not None and lo + int(cands.dur[c]) <= cands.due)
        if not options:
            m.add(y == 0)
            return
        min_dur = min(int(cands.dur[c]) for c in options)
        self.ends[j] = []
        previous = None
        for shard in range(cands.shards):
            s = self.starts[(j, shard)] = m.new_int_var(lo, cands.due - min_dur, f"start[{j}.{shard}]")
            xs = []
            for c in options:
                dur, pool = int(cands.dur[c]), int(cands.offers[c])
                x = m.new_bool_var(f"place[{j}.{shard}@{pool}]")
                m.add(s + dur <= cands.due).only_enforce_if(x)
                iv = m.new_optional_fixed_size_interval_var(s, dur, x, f"run[{j}.{shard}@{pool}]")
                self.pool_items.setdefault(pool, []).append((iv, int(cands.demand[c])))
                self.cost_terms.append(int(cands.cost[c]) * x)
                self.team_terms.setdefault(self.inst.team_of[j], []).append(int(cands.cost[c]) * x)
                xs.append((c, x))
            m.add(sum(x for _, x in xs) == y)
            self.x[(j, shard)] = xs
            self.ends[j].append(s + sum(int(cands.dur[c]) * x for c, x in xs))
            if previous is not None:  # shards are interchangeable: order them
                m.add(previous <= s)
            previous = s

    def _add_dependencies(self) -> None:
        inst, m = self.inst, self.m
        for j in range(inst.n_jobs):
            for p in inst.preds[j]:
                if j in self.free_set and p in self.free_set:
                    m.add(self.y[j] <= self.y[p])
                    for end in self.ends.get(p, []):
                        for shard in range(inst.cands[j].shards):
                            if (j, shard) in self.starts:
                                m.add(self.starts[(j, shard)] >= end).only_enforce_if(self.y[j])
                elif p in self.free_set and self.sol.placed[j] is not None:
                    # A fixed successor keeps its place: its predecessor must end before it.
                    m.add(self.y[p] == 1)
                    for end in self.ends.get(p, []):
                        m.add(end <= self.sol.job_start(j))

    def _add_capacity(self) -> None:
        # Background load matters only where a free job can run: [earliest release, latest due].
        horizon = max((self.inst.cands[j].due for j in self.free), default=0)
        first = min((self.inst.cands[j].release for j in self.free), default=0)
        for pool, items in self.pool_items.items():
            intervals, demands = [iv for iv, _ in items], [d for _, d in items]
            profile = self.profiles.get(pool)
            if profile is not None:
                times, usage = profile.times, profile.usage
                start = max(0, bisect_right(times, first) - 1)
                for i in range(start, len(times) - 1):
                    if times[i] >= horizon:
                        break
                    if usage[i] > 0:
                        size = times[i + 1] - times[i]
                        intervals.append(self.m.new_fixed_size_interval_var(times[i], size, f"load[{pool}]"))
                        demands.append(usage[i])
            self.m.add_cumulative(intervals, demands, int(self.inst.capacity[pool]))

    def _add_budgets(self) -> None:
        inst = self.inst
        for team, terms in self.team_terms.items():
            budget = inst.budgets_cents.get(team)
            if budget is None:
                continue
            fixed = sum(self.sol.job_cost(inst, j) for j in range(inst.n_jobs)
                        if j not in self.free_set and inst.team_of[j] == team and self.sol.placed[j])
            self.m.add(sum(terms) <= budget - fixed)

    def add_hint(self) -> None:
        for j in self.free:
            shards = self.sol.placed[j]
            self.m.add_hint(self.y[j], shards is not None)
            for shard in range(self.inst.cands[j].shards):
                if (j, shard) not in self.x:
                    continue
                chosen = shards[shard] if shards else None
                for c, x in self.x[(j, shard)]:
                    self.m.add_hint(x, chosen is not None and chosen[0] == c)
                if chosen is not None:
                    self.m.add_hint(self.starts[(j, shard)], chosen[1])

    def extract(self, solver: cp_model.CpSolver) -> Solution:
        sol = self.sol.copy()
        for j in self.free:
            if not solver.boolean_value(self.y[j]):
                sol.placed[j] = None
                continue
            shards = []
            for shard in range(self.inst.cands[j].shards):
                c = next(c for c, x in self.x[(j, shard)] if solver.boolean_value(x))
                shards.append((c, solver.value(self.starts[(j, shard)])))
            sol.placed[j] = tuple(sorted(shards, key=lambda cs: cs[1]))
            sol.notes.pop(j, None)
        return sol


def solve_subset(inst: Instance, sol: Solution, free: list[int], params: SearchParams,
                 k: int = SUBPROBLEM_CANDIDATES, profiles=None) -> SubResult:
    """Re-optimise the jobs in `free` around the fixed rest of `sol` (whose load is
    `profiles` when given: the capacity profiles of every job but the free ones)."""
    model = _Model(inst, sol, free, k, profiles)
    model.add_hint()
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = params.num_workers
    p.random_seed = params.random_seed
    if params.deterministic:
        p.max_deterministic_time = params.time_limit
    else:
        p.max_time_in_seconds = params.time_limit
    status = solver.solve(model.m)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SubResult(None, name, 0.0, model.big, False)
    candidate = model.extract(solver)
    better = _free_objective(inst, candidate, free) < _free_objective(inst, sol, free)
    return SubResult(candidate if better else None, name, solver.best_objective_bound,
                     0 if model.all_placed else model.big, status == cp_model.OPTIMAL)


def _free_objective(inst: Instance, sol: Solution, free: list[int]) -> tuple[int, int]:
    """The lexicographic objective restricted to `free`: the rest is the same in both."""
    weight = sum(inst.cands[j].weight for j in free if sol.placed[j] is None)
    return weight, sum(sol.job_cost(inst, j) for j in free)
