"""Solver benchmark: trace-derived batches of 200 to 10,000 jobs on the shipped catalog.

    .venv/bin/python benchmarks/solver.py
    .venv/bin/python benchmarks/solver.py --sizes 200 1000 --time-limits 10 60

For every size, in a fresh child process (so peak memory is that size's own), it prints:
the time to the first feasible plan (candidate compilation + greedy), the solve time, the
plan's cost, the best lower bound and which bound it is, the gap to it, the greedy plan's
cost and how much cheaper the solver plan is, the all-centralized baseline and the savings
against it, jobs placed (solver and greedy) and peak memory. Every plan is checked by the
independent validator. Figures are ratios against baselines computed in the same run
(greedy, lower bound, all-centralized); nothing is compared with a stored number.

`--capacity-scale` multiplies every offer's capacity (whole nodes, at least one): a
smaller organisation's quotas, where cheap pools run out sooner.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_SIZES = (200, 1000, 5000, 10000)
DEFAULT_LIMITS = {200: 10.0, 1000: 60.0, 5000: 300.0, 10000: 600.0}
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def _offers(catalog, scale: float):
    if scale == 1.0:
        return list(catalog.offers)
    out = []
    for o in catalog.offers:
        nodes = max(1, int(o.capacity_gpus * scale) // o.gpus_per_node)
        out.append(o.model_copy(update={"capacity_gpus": nodes * o.gpus_per_node}))
    return out


def run_one(n: int, time_limit: float, workers: int, seed: int, scale: float, lp_columns: int) -> dict:
    from optimizer.bounds import best_bound
    from optimizer.candidates import compile_problem
    from optimizer.cpsat import SearchParams
    from optimizer.search import solve
    from optimizer.validate import validate
    from scheduler.catalog import load_catalog
    from scheduler.planning import PlanOptions, build_document, build_problem
    from scheduler.workloads import generate_jobs

    catalog = load_catalog()
    jobs = generate_jobs(n, seed=seed, now=NOW)
    problem = build_problem(jobs, now=NOW, catalog=catalog, offers=_offers(catalog, scale))
    t0 = time.perf_counter()
    inst = compile_problem(problem)
    compile_s = time.perf_counter() - t0
    result = solve(inst, SearchParams(time_limit=time_limit, num_workers=workers, random_seed=seed))
    solve_s = time.perf_counter() - t0
    first, first_feasible = result.greedy, compile_s + result.first_feasible_s
    placed = [j for j in range(inst.n_jobs) if result.solution.placed[j] is not None]
    tb = time.perf_counter()
    cost = result.solution.cost(inst)
    bound = best_bound(inst, placed, result.cp_bound_cents, cost=cost, max_columns=lp_columns, sol=result.solution)
    bound_s = time.perf_counter() - tb
    options = PlanOptions(time_limit=time_limit, num_workers=workers, random_seed=seed)
    doc = build_document(problem, inst, result, bound, options)
    violations = validate(problem, doc)
    s = doc.summary
    greedy_cost = first.cost(inst) / 100
    return {
        "jobs": n, "time_limit_s": time_limit, "first_feasible_s": round(first_feasible, 3),
        "solve_s": round(solve_s, 1), "total_cost": s.total_cost, "lower_bound": s.lower_bound,
        "bound_method": bound.method, "bound_s": round(bound_s, 1),
        "gap_pct": round(100 * doc.solver.gap, 3), "greedy_cost": round(greedy_cost, 2),
        "cheaper_than_greedy_pct": round(100 * (1 - s.total_cost / greedy_cost), 3) if greedy_cost else 0.0,
        "greedy_gap_pct": round(100 * (greedy_cost - s.lower_bound) / greedy_cost, 3) if greedy_cost else 0.0,
        "baseline_centralized_cost": s.baseline_centralized_cost, "savings_pct": s.savings_pct,
        "placed": s.jobs_placed, "greedy_placed": first.n_placed(),
        "placed_weight_vs_greedy": first.unplaced_weight(inst) - result.solution.unplaced_weight(inst),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "violations": len(violations), "status": result.status, "method": result.solution.method,
        "lns": result.stats,
    }


def _print(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cloudsched solver benchmark (trace-derived jobs, shipped catalog)")
    columns = [("jobs", "jobs"), ("first feasible s", "first_feasible_s"), ("solve s", "solve_s"),
               ("cost $", "total_cost"), ("lower bound $", "lower_bound"), ("bound", "bound_method"),
               ("gap %", "gap_pct"), ("greedy $", "greedy_cost"), ("vs greedy %", "cheaper_than_greedy_pct"),
               ("greedy gap %", "greedy_gap_pct"), ("all-central $", "baseline_centralized_cost"),
               ("savings %", "savings_pct"), ("placed", "placed"), ("greedy placed", "greedy_placed"),
               ("+weight vs greedy", "placed_weight_vs_greedy"),
               ("peak MB", "peak_rss_mb"), ("violations", "violations")]
    for title, _ in columns:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*[f"{row[key]:,}" if isinstance(row[key], (int, float)) else str(row[key])
                        for _, key in columns])
    Console(width=240).print(table)
    print("vs greedy %: how much cheaper than the greedy plan (negative when the solver places more jobs,\n"
          "which the lexicographic objective ranks first); greedy gap %: how far greedy is from the lower\n"
          "bound, i.e. the most any plan could save on greedy for the same jobs.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--time-limits", type=float, nargs="+", help="one per size (default 10/60/300/600 s)")
    parser.add_argument("--workers", type=int, default=2, help="CP-SAT threads (this machine has 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capacity-scale", type=float, default=1.0)
    parser.add_argument("--lp-columns", type=int, default=2_000_000, help="largest LP bound attempted")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    limits = args.time_limits or [DEFAULT_LIMITS.get(n, 60.0) for n in args.sizes]
    if args.one:
        row = run_one(args.sizes[0], limits[0], args.workers, args.seed, args.capacity_scale, args.lp_columns)
        print(json.dumps(row))
        return
    rows = []
    for n, limit in zip(args.sizes, limits):
        cmd = [sys.executable, __file__, "--one", "--sizes", str(n), "--time-limits", str(limit),
               "--workers", str(args.workers), "--seed", str(args.seed),
               "--capacity-scale", str(args.capacity_scale), "--lp-columns", str(args.lp_columns)]
        print(f"… {n} jobs, time limit {limit:g} s", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    _print(rows)


if __name__ == "__main__":
    main()
