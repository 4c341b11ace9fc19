"""The placement problem: jobs, offers and the rules that say which offer may take which job.

`Problem` is the solver-independent input. `optimizer.candidates.compile_problem()` turns it into an
`Instance`: integer time (minutes from `now`) and money (cents), one sorted candidate
list per job, and for every job the reasons its other offers were rejected.

Offer checks run in a fixed order; the first that fails is the offer's rejection reason:

    OfferRule (ops pinned the job to another offer, or forbade this one: `OfferChoice`),
    GpuType, ManagedOnly, NotManaged, SpotNotAllowed, RegionNotAllowed, NoSpeedData
        -> the job's reason is NoOffer if no offer gets further
    ComplianceNoMatch, CapacityExhausted (pool smaller than one shard), PriceCap,
    DeadlineInfeasible
        -> each is a later stage; a job with no candidate is unplaced with the reason of
           the furthest stage any offer reached.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from scheduler.cost import Estimate, RiskModel, estimate
from scheduler.models import Compliance, JobSpec, Market, Offer, UnplacedReason

MAX_CANDIDATES = 64  # per job, cheapest first; deeper offers only matter when 64 pools are full

# Offer-level rejection codes, in check order, and the job-level reason each maps to.
REJECTION_STAGES: tuple[tuple[str, UnplacedReason], ...] = (
    ("OfferRule", UnplacedReason.NO_OFFER),
    ("GpuType", UnplacedReason.NO_OFFER),
    ("ManagedOnly", UnplacedReason.NO_OFFER),
    ("NotManaged", UnplacedReason.NO_OFFER),
    ("SpotNotAllowed", UnplacedReason.NO_OFFER),
    ("RegionNotAllowed", UnplacedReason.NO_OFFER),
    ("NoSpeedData", UnplacedReason.NO_OFFER),
    ("ComplianceNoMatch", UnplacedReason.COMPLIANCE_NO_MATCH),
    ("CapacityExhausted", UnplacedReason.CAPACITY_EXHAUSTED),
    ("PriceCap", UnplacedReason.PRICE_CAP),
    ("DeadlineInfeasible", UnplacedReason.DEADLINE_INFEASIBLE),
)
STAGE_INDEX = {code: i for i, (code, _) in enumerate(REJECTION_STAGES)}


@dataclass(frozen=True)
class OfferChoice:
    """Ops' rule for one job's offers, set before a re-plan: only `pin`, or any offer but `forbid`."""

    pin: str | None = None
    forbid: frozenset[str] = frozenset()

    def allows(self, offer_id: str) -> bool:
        return offer_id == self.pin if self.pin is not None else offer_id not in self.forbid

    def describe(self) -> str:
        """"Ops pinned it to offer X" / "Ops forbade offers X, Y": the ids exactly as the catalog spells them."""
        if self.pin is not None:
            return f"Ops pinned it to offer {self.pin}"
        return f"Ops forbade offer{'s' if len(self.forbid) > 1 else ''} {', '.join(sorted(self.forbid))}"

    def to_json(self) -> str:
        """The rule as `scheduler.records.OfferRule` writes it (`{"pin":..,"forbid":[..]}`, sorted): for versions."""
        return json.dumps({"pin": self.pin, "forbid": sorted(self.forbid)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OfferChoice:
        data = json.loads(text)
        return cls(pin=data.get("pin"), forbid=frozenset(data.get("forbid") or ()))


@dataclass(frozen=True)
class Problem:
    """Everything the optimizer needs; no I/O behind it."""

    jobs: Sequence[JobSpec]
    offers: Sequence[Offer]
    now: datetime
    speeds: Mapping[str, float]
    egress_usd_per_gb: Mapping[str, float] = field(default_factory=dict)  # by data provider
    budgets: Mapping[str, float] = field(default_factory=dict)  # by team, USD for this plan
    risk: RiskModel = RiskModel()
    job_ids: Sequence[str] | None = None
    choices: Mapping[str, OfferChoice] = field(default_factory=dict)  # by job id: ops' pins and forbids

    def job_id(self, j: int) -> str:
        return self.job_ids[j] if self.job_ids else f"{self.jobs[j].team}/{self.jobs[j].name}"

    def choice(self, j: int) -> OfferChoice | None:
        return self.choices.get(self.job_id(j)) if self.choices else None

    def data_egress_usd_per_gb(self, job: JobSpec) -> float:
        """Egress price of the provider the job's data leaves (0 without data)."""
        return self.egress_usd_per_gb.get(job.data.provider, 0.0) if job.data else 0.0

    def estimate(self, job: JobSpec, offer: Offer) -> Estimate:
        """The cost model (scheduler.cost) for one shard of `job` on `offer`; the offer's GPU
        must have a speed (see `speed_ratio`)."""
        return estimate(job, offer, speed=self.speed_ratio(job, offer),
                        data_egress_usd_per_gb=self.data_egress_usd_per_gb(job), risk=self.risk)

    def speed_ratio(self, job: JobSpec, offer: Offer) -> float | None:
        """s = speed(offer GPU) / speed(reference GPU); None when the table lacks one."""
        ref, own = self.speeds.get(job.gpu_types[0]), self.speeds.get(offer.gpu_type)
        if offer.gpu_type == job.gpu_types[0]:
            return 1.0
        if not ref or not own:
            return None
        return own / ref


def minutes_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60


@dataclass
class JobCandidates:
    """One job's feasible offers, cheapest first (per-shard figures)."""

    offers: np.ndarray  # offer index; an offer is also its capacity pool
    cost: np.ndarray  # int64 cents per shard, compute + egress
    dur: np.ndarray  # int64 minutes occupied (transfer + run), rounded up
    demand: np.ndarray  # int64 billed GPUs per shard
    release: int  # earliest start, minutes from now
    due: int  # latest end, minutes from now
    shards: int
    weight: int  # lexicographic weight of leaving the job unplaced
    static_rejections: Counter  # shared by every job of the same signature: never mutate
    price_cap_rejected: int
    deadline_rejected: int
    baseline_cost: float | None  # cheapest centralized feasible offer, USD for the whole job

    @property
    def rejections(self) -> Counter:
        out = Counter(self.static_rejections)
        out["PriceCap"] += self.price_cap_rejected
        out["DeadlineInfeasible"] += self.deadline_rejected
        return +out

    def __len__(self) -> int:
        return len(self.offers)

    @property
    def min_cost(self) -> int:
        return int(self.cost[0]) * self.shards if len(self.cost) else 0


@dataclass
class Instance:
    problem: Problem
    cands: list[JobCandidates]
    capacity: np.ndarray  # per offer
    preds: list[list[int]]  # job index -> indices of jobs that must end first
    team_of: list[str]
    budgets_cents: dict[str, int]
    cyclic: set[int] = field(default_factory=set)  # jobs on a cycle of `after` links

    @property
    def n_jobs(self) -> int:
        return len(self.cands)

    def no_candidate_reason(self, j: int) -> UnplacedReason:
        if j in self.cyclic:
            return UnplacedReason.DEPENDENCY_UNPLACED
        reached = [code for code, n in self.cands[j].rejections.items() if n > 0]
        if not reached:
            return UnplacedReason.NO_OFFER
        furthest = max(reached, key=STAGE_INDEX.__getitem__)
        return REJECTION_STAGES[STAGE_INDEX[furthest]][1]


# ---------------------------------------------------------------------------------------
# Static checks: they depend on the job's "signature", not on its duration or dates.


def _region_allowed(job: JobSpec, offer: Offer) -> bool:
    if not job.regions:
        return True
    return any(r == offer.geo or r == f"{offer.provider}:{offer.region}" for r in job.regions)


def _policy_rejection(problem: Problem, job: JobSpec, offer: Offer) -> str | None:
    """Checks that depend only on the job's policy fields, not on its size."""
    if offer.gpu_type not in job.gpu_types:
        return "GpuType"
    if offer.managed and not job.managed:
        return "ManagedOnly"
    if job.managed and not offer.managed:
        return "NotManaged"
    if offer.market is Market.SPOT and not job.interruptible:
        return "SpotNotAllowed"
    if not _region_allowed(job, offer):
        return "RegionNotAllowed"
    if problem.speed_ratio(job, offer) is None:
        return "NoSpeedData"
    certs = set(offer.certifications)
    if any(c.value not in certs for c in job.compliance):
        return "ComplianceNoMatch"
    if Compliance.GDPR in job.compliance and offer.geo != "eu":
        return "ComplianceNoMatch"
    return None


def static_rejection(problem: Problem, job: JobSpec, offer: Offer) -> str | None:
    """The first failing check that does not depend on dates or duration, or None."""
    code = _policy_rejection(problem, job, offer)
    if code is None:
        nodes = math.ceil(job.gpus_per_shard / offer.gpus_per_node)
        if nodes * offer.gpus_per_node > offer.capacity_gpus:
            return "CapacityExhausted"
    return code


def policy_key(job: JobSpec) -> tuple:
    return (tuple(job.gpu_types), job.managed, job.interruptible, tuple(job.regions),
            tuple(sorted(job.compliance)))


def signature(job: JobSpec) -> tuple:
    data = job.data.location if job.data else None
    return (policy_key(job), job.kind, job.gpus_per_shard, job.shards, data)
