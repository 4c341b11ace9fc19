"""Lower bounds on the cost of placing a given set of jobs.

Both bounds ask: what is the least any plan could pay to place exactly these jobs?

* `cheapest_bound`: every job on its cheapest feasible offer, capacity ignored.
* `lp_bound`: a time-indexed LP relaxation. Time is cut into buckets of `B` minutes;
  `x[j,c,b]` is the fraction of job j's shards on candidate c starting in bucket b.

      min  sum cost[c] x[j,c,b] + cost[K+1] z[j]
      s.t. sum_{c,b} x[j,c,b] + z[j] = shards[j]                           every job
           sum demand[c] * cover(c,b,k) / B * x[j,c,b] <= capacity[o]      pool o, bucket k

  `cover(c,b,k)` is the least overlap with bucket k of a run of `dur[c]` minutes that
  starts anywhere (feasible) in bucket b: a real plan uses at least that much of bucket k,
  and its average use of a bucket never exceeds the capacity, so every plan is a
  solution of the LP. `z[j]` stands for all candidates beyond the K in the LP: it costs as
  much as the cheapest of them and uses no capacity, which keeps the bound valid.
  Budgets and dependencies only cut plans off, so leaving them out keeps it valid too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ortools.linear_solver.python import model_builder
from scipy.sparse import csc_matrix

from optimizer.problem import Instance
from optimizer.solution import Solution

LP_CANDIDATES = 12


@dataclass
class Bound:
    cents: float
    method: str
    detail: str = ""


def cheapest_bound(inst: Instance, jobs: list[int]) -> Bound:
    return Bound(float(sum(inst.cands[j].min_cost for j in jobs)), "cheapest-offer")


def _cover(lo: int, hi: int, dur: int, k0: int, k1: int) -> int:
    """Least overlap of [s, s+dur) with [k0, k1) over starts s in [lo, hi]."""
    def overlap(s: int) -> int:
        return max(0, min(s + dur, k1) - max(s, k0))
    return min(overlap(lo), overlap(hi))


class _Columns:
    def __init__(self):
        self.cost, self.start, self.index, self.value = [], [0], [], []

    def add(self, cost: float, rows: list[int], values: list[float]) -> None:
        self.cost.append(cost)
        self.index.extend(rows)
        self.value.extend(values)
        self.start.append(len(self.index))


def _job_columns(inst, j, row, bucket, cap_rows, first_cap_row, cols: _Columns) -> None:
    cands = inst.cands[j]
    k = min(LP_CANDIDATES, len(cands))
    for c in range(k):
        dur, demand, pool = int(cands.dur[c]), int(cands.demand[c]), int(cands.offers[c])
        latest = cands.due - dur
        for b in range(cands.release // bucket, latest // bucket + 1):
            lo, hi = max(b * bucket, cands.release), min((b + 1) * bucket - 1, latest)
            rows, vals = [row], [1.0]
            for kb in range(lo // bucket, (hi + dur) // bucket + 1):
                cov = _cover(lo, hi, dur, kb * bucket, (kb + 1) * bucket)
                if cov > 0:
                    rows.append(cap_rows.setdefault((pool, kb), first_cap_row + len(cap_rows)))
                    vals.append(demand * cov / bucket)
            cols.add(float(cands.cost[c]), rows, vals)
    if len(cands) > k:
        cols.add(float(cands.cost[k]), [row], [1.0])


def lp_bound(inst: Instance, jobs: list[int], max_columns: int = 3_000_000) -> Bound | None:
    """The LP bound, or None when the LP would be too large or does not solve to optimality."""
    if not jobs:
        return Bound(0.0, "time-indexed-lp", "no jobs")
    horizon = max((inst.cands[j].due for j in jobs), default=0)
    bucket = max(60, -(-horizon // 400))  # at most ~400 buckets: keeps the LP in memory
    starts = sum(min(LP_CANDIDATES, len(inst.cands[j])) * ((inst.cands[j].due - inst.cands[j].release) // bucket + 2)
                 for j in jobs)
    if starts > max_columns:
        return None
    cols, cap_rows = _Columns(), {}
    n_jobs = len(jobs)
    for row, j in enumerate(jobs):  # job rows first, capacity rows numbered after them
        _job_columns(inst, j, row, bucket, cap_rows, n_jobs, cols)
    pools = sorted(cap_rows, key=cap_rows.__getitem__)
    n_rows = n_jobs + len(cap_rows)
    matrix = csc_matrix((np.array(cols.value), np.array(cols.index, dtype=np.int64),
                         np.array(cols.start, dtype=np.int64)), shape=(n_rows, len(cols.cost))).tocsr()
    shards = np.array([inst.cands[j].shards for j in jobs], dtype=float)
    caps = np.array([float(inst.capacity[pool]) for pool, _ in pools])
    model = model_builder.Model()
    model.helper.fill_model_from_sparse_data(
        np.zeros(len(cols.cost)), np.full(len(cols.cost), np.inf), np.array(cols.cost),
        np.concatenate([shards, np.full(len(caps), -np.inf)]), np.concatenate([shards, caps]), matrix)
    solver = model_builder.Solver("glop")  # OR-Tools' own simplex: exact optimum, modest memory
    if solver.solve(model) != model_builder.SolveStatus.OPTIMAL:
        return None
    # Simplex optimality holds to a 1e-7 relative tolerance; shave that off to stay a bound.
    value = solver.objective_value * (1 - 1e-7)
    return Bound(float(value), "time-indexed-lp", f"{len(cols.cost)} columns, {n_rows} rows, {bucket} min buckets")


def contended_jobs(inst: Instance, sol: Solution) -> list[int]:
    """Placed jobs that compete for a pool some placed job would rather be on.

    Every other job can be bounded by its cheapest offer alone: leaving a job out of the
    LP's capacity rows only loosens them, so LP(contended) + cheapest(rest) is still a
    lower bound, and a far smaller LP than one over the whole batch.
    """
    wanted: set[int] = set()
    for j, shards in enumerate(sol.placed):
        if shards is None:
            continue
        cands = inst.cands[j]
        worst = max(int(cands.cost[c]) for c, _ in shards)
        wanted.update(int(o) for o, cost in zip(cands.offers, cands.cost) if cost < worst)
    return [j for j, shards in enumerate(sol.placed) if shards is not None
            and wanted.intersection(inst.cands[j].offers[:LP_CANDIDATES].tolist())]


def best_bound(inst: Instance, jobs: list[int], cp_bound: float | None = None, lp: bool = True,
               cost: float | None = None, max_columns: int = 300_000, sol: Solution | None = None) -> Bound:
    """The best of the bounds; the LP is skipped when the cheapest-offer bound is already met.

    With `sol`, the LP covers only the jobs `contended_jobs` finds (the rest at their
    cheapest offer); without, all of `jobs`.
    """
    bounds = [cheapest_bound(inst, jobs)]
    if lp and (cost is None or cost > bounds[0].cents + 0.5):
        members = set(jobs)  # once: a set per element made this quadratic at 10,000 jobs
        focus = jobs if sol is None else [j for j in contended_jobs(inst, sol) if j in members]
        found = lp_bound(inst, focus, max_columns=max_columns)
        if found is not None:
            rest = cheapest_bound(inst, sorted(members - set(focus))).cents
            detail = f"{found.detail}; LP over {len(focus)} contended jobs, {len(jobs) - len(focus)} at cheapest"
            bounds.append(Bound(found.cents + rest, found.method, detail))
    if cp_bound is not None:
        bounds.append(Bound(cp_bound, "cp-sat"))
    return max(bounds, key=lambda b: b.cents)
