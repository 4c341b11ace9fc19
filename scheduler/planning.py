"""Plan a batch of jobs: the use case behind `cloudsched solve`, the API and the nightly run.

`plan_batch()` builds the problem from job specs and a catalog, runs the optimizer,
computes the lower bound, writes the plan document (DESIGN §4.5) and checks it with the
independent validator before anyone sees it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import ortools

from optimizer.bounds import Bound, best_bound
from optimizer.candidates import compile_problem
from optimizer.cpsat import SearchParams
from optimizer.placement import placement_classes
from optimizer.problem import Instance, OfferChoice, Problem
from optimizer.search import SolveResult, solve
from optimizer.validate import validate
from scheduler.catalog import Catalog
from scheduler.cost import RiskModel
from scheduler.diff import changes
from scheduler.fingerprint import PlanInputs, offers_version, spec_version
from scheduler.models import (
    Assignment,
    Horizon,
    JobSpec,
    Offer,
    PlanDocument,
    Segment,
    SolverInfo,
    Summary,
    iso_z,
    parse_utc,
)
from scheduler.reasons import unplaced_entries


@dataclass
class PlanOptions:
    time_limit: float = 10.0
    num_workers: int = 1
    random_seed: int = 0
    deterministic: bool = False
    lp_bound: bool = True
    lp_max_columns: int = 300_000  # bigger LPs take minutes: benchmarks raise it
    created_by: str = "cli"
    previous: PlanDocument | None = None  # last approved plan: the diff's base and part of the fingerprint
    inputs: PlanInputs | None = None  # the service passes store versions; offline they are spec hashes


@dataclass
class PlanOutcome:
    document: PlanDocument
    problem: Problem
    instance: Instance
    result: SolveResult
    bound: Bound
    violations: list[str] = field(default_factory=list)


def build_problem(jobs: Sequence[JobSpec], *, now: datetime, catalog: Catalog,
                  offers: Sequence[Offer] | None = None, budgets: Mapping[str, float] | None = None,
                  job_ids: Sequence[str] | None = None, risk: RiskModel = RiskModel(),
                  choices: Mapping[str, OfferChoice] | None = None) -> Problem:
    offers = list(catalog.offers if offers is None else offers)
    egress = {name: facts.egress_usd_per_gb.value for name, facts in catalog.facts.items()}
    for offer in offers:  # an --offers file may name providers the catalog does not know
        egress.setdefault(offer.provider, offer.egress_usd_per_gb)
    return Problem(jobs=list(jobs), offers=offers, now=now, speeds=dict(catalog.speeds),
                   egress_usd_per_gb=egress, budgets=dict(budgets or {}), risk=risk, job_ids=job_ids,
                   choices=dict(choices or {}))


def plan_inputs(problem: Problem, previous_plan_id: str | None, catalog_version: str | None = None,
                job_versions: Mapping[str, str] | None = None) -> PlanInputs:
    """What the plan is made from: job versions (store versions, else spec hashes), the
    catalog version (else a hash of the offers), the previous approved plan, the budgets."""
    versions = job_versions or {problem.job_id(j): spec_version(job, problem.choice(j))
                                for j, job in enumerate(problem.jobs)}
    return PlanInputs(dict(versions), catalog_version or offers_version(problem.offers), previous_plan_id,
                      dict(problem.budgets))


def _at(now: datetime, minute: int) -> str:
    return iso_z(now + timedelta(minutes=minute))


def _segments(problem: Problem, inst: Instance, result: SolveResult, j: int) -> list[Segment]:
    job, cands = problem.jobs[j], inst.cands[j]
    out = []
    for shard, (c, start) in enumerate(result.solution.placed[j]):
        offer = problem.offers[int(cands.offers[c])]
        est = problem.estimate(job, offer)
        out.append(Segment(
            offer_id=offer.id, provider=offer.provider, region=offer.region, gpu_type=offer.gpu_type,
            market=offer.market.value, nodes=est.nodes, gpus=est.billed_gpus,
            price_per_node_hour=offer.price_per_node_hour, start=_at(problem.now, start),
            end=_at(problem.now, start + int(cands.dur[c])), run_hours=round(est.run_hours, 6),
            transfer_hours=round(est.transfer_hours, 6), compute_cost=round(est.compute_cost, 2),
            egress_cost=round(est.egress_cost, 2), shard=shard,
        ))
    return out


def _assignments(problem: Problem, inst: Instance, result: SolveResult) -> list[Assignment]:
    out = []
    for j, job in enumerate(problem.jobs):
        if result.solution.placed[j] is None:
            continue
        segments = _segments(problem, inst, result, j)
        total = round(sum(s.compute_cost + s.egress_cost for s in segments), 2)
        last_end = max(parse_utc(s.end) for s in segments)
        baseline = inst.cands[j].baseline_cost
        out.append(Assignment(
            job_id=problem.job_id(j), job_name=job.name, team=job.team, placement="centralized",
            segments=segments, total_cost=total, deadline=iso_z(job.deadline),
            slack_hours=round((job.deadline - last_end).total_seconds() / 3600, 3),
            baseline_cost=round(baseline, 2) if baseline is not None else total,
        ))
    return out


def _with_classes(problem: Problem, doc: PlanDocument) -> PlanDocument:
    classes = placement_classes(problem, doc)
    assignments = [a.model_copy(update={"placement": classes[a.job_id]}) for a in doc.assignments]
    by = {"centralized": 0, "distributed": 0, "hybrid": 0}
    for a in assignments:
        by[a.placement.value] += 1
    summary = doc.summary.model_copy(update={"by_placement": by})
    return doc.model_copy(update={"assignments": assignments, "summary": summary})


def _solver_info(result: SolveResult, total: float, bound: Bound, options: PlanOptions) -> SolverInfo:
    lower = bound.cents / 100
    gap = (total - lower) / total if total > 0 else 0.0
    return SolverInfo(
        status=result.status, objective=round(total, 2), best_bound=round(lower, 2),
        gap=round(max(0.0, gap), 6), wall_time_s=round(result.wall_time_s, 3),
        num_workers=options.num_workers, random_seed=options.random_seed,
        ortools_version=ortools.__version__, method=result.solution.method,
        first_feasible_s=round(result.first_feasible_s, 4),
    )


def build_document(problem: Problem, inst: Instance, result: SolveResult, bound: Bound,
                   options: PlanOptions) -> PlanDocument:
    assignments = _assignments(problem, inst, result)
    unplaced = unplaced_entries(problem, inst, result.solution)
    total = round(sum(a.total_cost for a in assignments), 2)
    baseline = round(sum(a.baseline_cost for a in assignments), 2)
    inputs = options.inputs or plan_inputs(problem, options.previous.plan_id if options.previous else None)
    fp = inputs.fingerprint()
    ends = [job.deadline for job in problem.jobs] or [problem.now]
    summary = Summary(
        total_cost=total, baseline_centralized_cost=baseline,
        savings_pct=round(100 * (baseline - total) / baseline, 2) if baseline > 0 else 0.0,
        lower_bound=round(bound.cents / 100, 2), jobs_placed=len(assignments), jobs_unplaced=len(unplaced),
        by_placement={}, greedy_cost=round(result.greedy.cost(inst) / 100, 2),
    )
    doc = PlanDocument(
        # Unique even for equal inputs planned twice in a minute.
        plan_id=f"plan-{problem.now:%Y%m%dT%H%MZ}-{secrets.token_hex(4)}",
        created_at=iso_z(datetime.now(problem.now.tzinfo)),
        created_by=options.created_by, horizon=Horizon(start=iso_z(problem.now), end=iso_z(max(ends))),
        fingerprint=fp, solver=_solver_info(result, total, bound, options), summary=summary,
        assignments=assignments, unplaced=unplaced,
    )
    doc = _with_classes(problem, doc)
    return doc.model_copy(update={"changes": changes(doc, options.previous)})


def plan_batch(problem: Problem, options: PlanOptions = PlanOptions()) -> PlanOutcome:
    inst = compile_problem(problem)
    params = SearchParams(options.time_limit, options.num_workers, options.random_seed, options.deterministic)
    result = solve(inst, params)
    placed = [j for j in range(inst.n_jobs) if result.solution.placed[j] is not None]
    bound = best_bound(inst, placed, result.cp_bound_cents, lp=options.lp_bound,
                       cost=result.solution.cost(inst), max_columns=options.lp_max_columns, sol=result.solution)
    doc = build_document(problem, inst, result, bound, options)
    return PlanOutcome(doc, problem, inst, result, bound, validate(problem, doc))

