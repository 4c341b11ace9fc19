"""Small hand-built offers, jobs and problems for optimizer and plan tests.

Times are hours relative to a fixed `NOW`, so a test reads `job(not_before=2, deadline=30)`.
Every plan is solved reproducibly: one worker, a fixed seed and a deterministic time limit
(TRAPS.md: CP-SAT).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

from optimizer.problem import Problem
from scheduler.models import JobSpec, Offer
from scheduler.planning import PlanOptions, PlanOutcome, plan_batch

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
CENTRALIZED_PROVIDERS = frozenset({"aws", "gcp", "azure"})
# Relative speeds: only ratios matter (H100 twice an A100, as in a simple hand calculation).
SPEEDS = {"H100": 1000.0, "A100": 500.0, "L4": 125.0}
OPTIONS = PlanOptions(time_limit=5, num_workers=1, random_seed=0, deterministic=True)


def at(hours: float) -> datetime:
    """`NOW + hours`."""
    return NOW + timedelta(hours=hours)


def offer(
    provider: str = "aws",
    region: str = "us-east-1",
    *,
    gpu: str = "H100",
    gpus_per_node: int = 8,
    price: float = 80.0,
    capacity: int = 64,
    market: str = "on-demand",
    interconnect: str = "efa",
    geo: str = "us",
    certifications: Iterable[str] = (),
    managed: bool = False,
    architecture: str | None = None,
    egress: float = 0.0,
    preemption: float = 0.0,
    ingress_gbps: float = 10.0,
    instance: str | None = None,
) -> Offer:
    """One offer; its id is `provider:region:instance:market` and it is its own capacity pool."""
    instance = instance or f"{gpu.lower()}x{gpus_per_node}{'-managed' if managed else ''}"
    arch = architecture or ("centralized" if provider in CENTRALIZED_PROVIDERS else "distributed")
    return Offer(
        id=f"{provider}:{region}:{instance}:{market}", provider=provider, architecture=arch, region=region,
        geo=geo, gpu_type=gpu, gpus_per_node=gpus_per_node, price_per_node_hour=price, market=market,
        capacity_gpus=capacity, interconnect=interconnect, certifications=list(certifications),
        egress_usd_per_gb=egress, preemption_rate_per_hour=preemption, managed=managed,
        instance_type=instance, ingress_gbps=ingress_gbps,
    )


def job(
    name: str = "job",
    *,
    gpus: int = 8,
    gpu_types: Sequence[str] = ("H100",),
    hours: float = 10.0,
    not_before: float | None = 0.0,
    deadline: float = 48.0,
    team: str = "ml",
    **fields,
) -> JobSpec:
    """A training job of `gpus` GPUs running `hours` hours, in the window [NOW+not_before, NOW+deadline]."""
    return JobSpec(
        name=name, team=team, gpus=gpus, gpu_types=list(gpu_types), duration_hours=hours,
        not_before=None if not_before is None else at(not_before), deadline=at(deadline), **fields,
    )


def problem(
    jobs: Sequence[JobSpec],
    offers: Sequence[Offer],
    *,
    speeds: Mapping[str, float] = SPEEDS,
    egress: Mapping[str, float] | None = None,
    budgets: Mapping[str, float] | None = None,
) -> Problem:
    return Problem(jobs=list(jobs), offers=list(offers), now=NOW, speeds=dict(speeds),
                   egress_usd_per_gb=dict(egress or {}), budgets=dict(budgets or {}))


def plan(prob: Problem, options: PlanOptions = OPTIONS) -> PlanOutcome:
    return plan_batch(prob, options)


def solve(jobs: Sequence[JobSpec], offers: Sequence[Offer], **kw) -> PlanOutcome:
    """Plan `jobs` on `offers` and return the outcome (document, violations, instance, result)."""
    return plan(problem(jobs, offers, **kw))


def ts(hours: float) -> str:
    """The plan document's timestamp for `NOW + hours`."""
    return at(hours).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def hours_after_now(value: str) -> float:
    return (parse_ts(value) - NOW).total_seconds() / 3600
