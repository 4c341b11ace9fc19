"""Domain models: the job spec (DESIGN §4.1), the offer (§4.2) and the plan document (§4.5).

Every model is strict: unknown fields are an error, so a typo in a job file is reported
instead of silently ignored.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
GEOS = ("us", "eu", "apac")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC; everything is stored timezone-aware in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+00:01 is before year 1 in UTC: a 422 naming the field, not a 500
        raise ValueError("lies outside the years 1-9999 once in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def parse_utc(value: str) -> datetime:
    """A plan document's timestamp (`2026-11-23T01:00:00Z`) as a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso_z(value: datetime) -> str:
    """`2026-11-22T01:00:00Z`: the one timestamp format of plan documents."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobKind(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class Compliance(StrEnum):
    SOC2 = "soc2"
    ISO27001 = "iso27001"
    HIPAA = "hipaa"
    FEDRAMP = "fedramp"
    GDPR = "gdpr"
    PCI_DSS = "pci-dss"


class Architecture(StrEnum):
    CENTRALIZED = "centralized"
    DISTRIBUTED = "distributed"


class Market(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class Interconnect(StrEnum):
    INFINIBAND = "infiniband"
    EFA = "efa"
    ROCE = "roce"
    ETHERNET = "ethernet"


class Placement(StrEnum):
    CENTRALIZED = "centralized"
    DISTRIBUTED = "distributed"
    HYBRID = "hybrid"


class DataSpec(StrictModel):
    location: str = Field(description="`provider:region` where the input lives", examples=["aws:us-east-1"])
    size_gb: float = Field(ge=0, le=10_000_000)

    @field_validator("location")
    @classmethod
    def _provider_region(cls, value: str) -> str:
        provider, sep, region = value.partition(":")
        if not sep or not provider or not region:
            raise ValueError("must be 'provider:region', e.g. 'aws:us-east-1'")
        return value

    @property
    def provider(self) -> str:
        return self.location.partition(":")[0]

    @property
    def region(self) -> str:
        return self.location.partition(":")[2]


class LaunchSpec(StrictModel):
    image: str | None = None
    command: str | list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)


class JobSpec(StrictModel):
    """What a submitter asks for (DESIGN §4.1)."""

    name: str = Field(pattern=NAME_PATTERN, examples=["llama2-70b-pretrain"])
    team: str = Field(pattern=NAME_PATTERN, examples=["vision"])
    kind: JobKind = JobKind.TRAINING
    gpus: StrictInt = Field(ge=1, le=4096)
    gpu_types: list[str] = Field(min_length=1, examples=[["H100", "A100-80GB"]])
    duration_hours: float = Field(gt=0, le=24 * 366)
    not_before: UtcDatetime | None = None
    deadline: UtcDatetime
    compliance: list[Compliance] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    interruptible: StrictBool = False
    data: DataSpec | None = None
    after: list[str] = Field(default_factory=list)
    shards: StrictInt = Field(default=1, ge=1, le=4096)
    managed: StrictBool = False
    max_hourly_cost: float | None = Field(default=None, gt=0)
    priority: StrictInt = Field(default=50, ge=0, le=100)
    launch: LaunchSpec = Field(default_factory=LaunchSpec)

    @field_validator("gpu_types")
    @classmethod
    def _distinct_types(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("GPU types must be distinct")
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in GEOS and not re.fullmatch(r"[a-z0-9.-]+:[A-Za-z0-9_ ,.-]+", item):
                raise ValueError(f"{item!r} is neither a geography ({', '.join(GEOS)}) nor 'provider:region'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.gpus % self.shards:
            raise ValueError(f"gpus ({self.gpus}) must be a multiple of shards ({self.shards})")
        if self.not_before is not None and self.deadline <= self.not_before:
            raise ValueError("deadline must be after not_before")
        if self.name in self.after:
            raise ValueError("a job cannot run after itself")
        if self.managed and self.kind is not JobKind.INFERENCE:
            raise ValueError("managed endpoints are for inference jobs")
        return self

    @property
    def gpus_per_shard(self) -> int:
        return self.gpus // self.shards


class Offer(StrictModel):
    """One row of the normalized catalog (DESIGN §4.2)."""

    id: str = Field(description="provider:region:instance_type:market")
    provider: str
    architecture: Architecture
    region: str
    geo: Literal["us", "eu", "apac", "other"]
    gpu_type: str
    gpus_per_node: int = Field(ge=1)
    price_per_node_hour: float = Field(ge=0)
    market: Market
    capacity_gpus: int = Field(ge=0)
    interconnect: Interconnect
    certifications: list[str] = Field(default_factory=list)
    egress_usd_per_gb: float = Field(default=0.0, ge=0)
    preemption_rate_per_hour: float = Field(default=0.0, ge=0)
    managed: bool = False
    # Extensions (optional, so a bare §4.2 offer list still loads):
    instance_type: str | None = None
    ingress_gbps: float = Field(default=10.0, gt=0, description="bandwidth for moving a job's data in")

    @property
    def pool(self) -> str:
        """Capacity pool key: capacity is held per offer."""
        return self.id

    @property
    def price_per_gpu_hour(self) -> float:
        return self.price_per_node_hour / self.gpus_per_node


# ---------------------------------------------------------------------------------------
# Plan document (DESIGN §4.5)


class UnplacedReason(StrEnum):
    NO_OFFER = "NoOffer"
    COMPLIANCE_NO_MATCH = "ComplianceNoMatch"
    DEADLINE_INFEASIBLE = "DeadlineInfeasible"
    CAPACITY_EXHAUSTED = "CapacityExhausted"
    OVER_BUDGET = "OverBudget"
    PRICE_CAP = "PriceCap"
    DEPENDENCY_UNPLACED = "DependencyUnplaced"


class Horizon(StrictModel):
    start: str
    end: str


class SolverInfo(StrictModel):
    status: str
    objective: float = 0
    best_bound: float = 0
    gap: float = 0.0
    wall_time_s: float = 0.0
    num_workers: int = 0
    random_seed: int = 0
    ortools_version: str = ""
    method: str = ""
    first_feasible_s: float = 0.0


class Summary(StrictModel):
    currency: Literal["USD"] = "USD"
    total_cost: float
    baseline_centralized_cost: float
    savings_pct: float
    lower_bound: float
    jobs_placed: int
    jobs_unplaced: int
    by_placement: dict[str, int]
    greedy_cost: float | None = None


class Segment(StrictModel):
    offer_id: str
    provider: str
    region: str
    gpu_type: str
    market: str
    nodes: int
    gpus: int
    price_per_node_hour: float
    start: str
    end: str
    run_hours: float
    transfer_hours: float
    compute_cost: float
    egress_cost: float
    shard: int = 0


class Assignment(StrictModel):
    job_id: str
    job_name: str
    team: str
    placement: Placement
    segments: list[Segment]
    total_cost: float
    deadline: str
    slack_hours: float
    baseline_cost: float | None = None


class Unplaced(StrictModel):
    job_id: str
    job_name: str
    reason: UnplacedReason
    message: str


class Change(StrictModel):
    job_id: str
    actions: list[Literal["create", "delete", "update", "no-op"]]


class PlanDocument(StrictModel):
    format_version: Literal["1.0"] = "1.0"
    plan_id: str
    status: str = "pending_review"
    created_at: str
    created_by: str
    horizon: Horizon
    fingerprint: str
    solver: SolverInfo
    summary: Summary
    assignments: list[Assignment]
    unplaced: list[Unplaced]
    changes: list[Change] = Field(default_factory=list)
    decision: dict | None = None
