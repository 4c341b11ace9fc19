"""What the API accepts and answers, apart from the domain's own `JobSpec` and `PlanDocument`.

Public models are separate from the stored records (the template's Create / Public split):
a record may grow internal fields without them leaking into responses.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.lifecycle import JobState
from scheduler.models import JobSpec, UtcDatetime
from scheduler.records import Event, JobRecord, OfferRule, PlanInfo

EXAMPLE_SPEC = {
    "name": "llama2-70b-pretrain", "team": "vision", "kind": "training", "gpus": 64, "gpu_types": ["H100"],
    "duration_hours": 672, "not_before": "2026-11-23T00:00:00Z", "deadline": "2026-12-28T00:00:00Z",
    "compliance": ["soc2"], "interruptible": False,
}
PLAN_NOW_RANGE = (timedelta(days=7), timedelta(days=366))  # a plan "as of" a time outside is a typo
EXAMPLE_JOB = {
    "id": "job_01jd2k8q6v3m9x4c7b2n5r8t1w", "name": "llama2-70b-pretrain", "team": "vision", "state": "pending",
    "version": 1, "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:00Z", "reason": None,
    "message": None, "plan_id": None, "submitted_by": "vera", "spec": EXAMPLE_SPEC,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobPublic(Strict):
    """A job as the API shows it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_JOB]})

    id: str
    name: str
    team: str
    state: JobState
    version: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    reason: str | None = None
    message: str | None = None
    plan_id: str | None = None
    submitted_by: str
    spec: JobSpec
    offer_rule: OfferRule | None = None

    @classmethod
    def of(cls, job: JobRecord) -> JobPublic:
        return cls(name=job.name, **{f: getattr(job, f) for f in cls.model_fields if f not in ("name",)})


class Condition(Strict):
    """Kueue-style: the latest observation of one aspect of the job."""

    type: Literal["Planned", "Approved", "Running", "Finished"]
    status: Literal["True", "False"]
    reason: str
    message: str = ""
    last_transition_time: UtcDatetime | None = None


class JobDetail(JobPublic):
    conditions: list[Condition]
    events: list[Event]


class JobPage(Strict):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more")


class PlanCreate(Strict):
    time_limit_s: float | None = Field(default=None, gt=0, le=3600, description="solver limit (default: settings)")
    now: UtcDatetime | None = Field(default=None, description="plan as of this time, whole minutes (default: in "
                                    "an hour, leaving ops time to review before the plan's first start)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"time_limit_s": 10}]})

    @field_validator("now")
    @classmethod
    def _near(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            real = datetime.now(timezone.utc)
            if not real - PLAN_NOW_RANGE[0] <= value <= real + PLAN_NOW_RANGE[1]:
                raise ValueError(f"must lie within {PLAN_NOW_RANGE[0].days} days before and "
                                 f"{PLAN_NOW_RANGE[1].days} days after the present")
        return value


class ApproveRequest(Strict):
    expected_fingerprint: str = Field(min_length=1, max_length=200, description="the fingerprint you reviewed")
    comment: str = Field(default="", max_length=10_000)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"expected_fingerprint": "9f2c...e1", "comment": "checked the io.net placements"}]})


class RejectRequest(Strict):
    comment: str = Field(min_length=1, max_length=10_000, description="why (required)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"comment": "AWS capacity is booked"}]})


class PlanPage(Strict):
    items: list[PlanInfo]
    next_cursor: str | None


class PlacementBrief(Strict):
    offers: list[str]
    start: str
    end: str
    cost: float


class DiffEntry(Strict):
    job_id: str
    job_name: str
    actions: list[Literal["create", "delete", "update"]]
    symbol: Literal["+", "-", "~", "-/+"]
    before: PlacementBrief | None
    after: PlacementBrief | None
    cost_delta: float


class PlanDiffPublic(Strict):
    plan_id: str
    against: str | None = Field(description="the plan compared with; null: none (everything is created)")
    summary: str = Field(examples=["Plan: 2 to create, 1 to update, 0 to delete, 1 to replace."])
    changes: list[DiffEntry]


class ConsideredOfferPublic(Strict):
    offer_id: str
    provider: str
    architecture: str
    market: str
    gpu_type: str
    status: Literal["chosen", "candidate", "rejected"]
    mark: str = Field(description="✔ for the chosen offers")
    reason: str | None = Field(description="the first check the offer failed (rejected only)")
    gpus: int | None
    hours: float | None
    cost: float | None = Field(description="USD for the whole job on this offer")
    cost_vs_chosen: float | None = Field(description="cost minus the chosen placement's cost, USD")


class UnplacedPublic(Strict):
    reason: str
    message: str


class ExplanationPublic(Strict):
    plan_id: str
    job_id: str
    job_name: str
    catalog_version: str
    chosen: list[str]
    chosen_cost: float | None
    unplaced: UnplacedPublic | None
    considered: list[ConsideredOfferPublic]
    not_shown: dict[str, int] = Field(description="offers left out by reason (other GPU types unless all=true)")
