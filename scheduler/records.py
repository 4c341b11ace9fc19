"""What the store keeps: job records, plan records, events and principals.

Records are frozen pydantic models; the store writes them as JSON and changes them only
through `Store` methods, which bump `version` and append an event.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from optimizer.problem import OfferChoice
from scheduler.lifecycle import TERMINAL_JOB_STATES, JobState, PlanState
from scheduler.models import NAME_PATTERN, Horizon, JobSpec, PlanDocument, StrictModel, Summary, UtcDatetime

Role = Literal["submitter", "ops", "admin"]
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """`job_01jd2k...`: a ULID (48-bit milliseconds, 80 random bits), so ids sort by creation time."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return prefix + "_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


OfferId = Annotated[str, Field(min_length=1, max_length=200)]


class OfferRule(StrictModel):
    """Which offers a job may run on, set by ops for the plan runs to come (like Slurm's `--nodelist` /
    `--exclude` on a pending job): only `pin`, or any offer but those in `forbid`. Both empty: no rule."""

    model_config = {"json_schema_extra": {"examples": [
        {"forbid": ["cudo:ca-montreal-3:sapphire-rapids-h100_8x64v128gb:on-demand"]},
        {"pin": "aws:us-east-1:p5.48xlarge:on-demand"}]}}

    pin: OfferId | None = Field(default=None, description="run only on this offer (an id from GET /v1/offers)")
    forbid: list[OfferId] = Field(default_factory=list, max_length=100, description="never run on these offers")

    @field_validator("forbid")
    @classmethod
    def _forbid_or_pin(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("pin") is not None:
            raise ValueError("give either pin or forbid: a pin already rules out every other offer")
        return sorted(set(value))

    @property
    def empty(self) -> bool:
        return self.pin is None and not self.forbid

    def choice(self) -> OfferChoice:
        """The optimizer's form of the rule."""
        return OfferChoice(pin=self.pin, forbid=frozenset(self.forbid))

    def to_json(self) -> str:
        """`{"pin":..,"forbid":[..]}` as `OfferChoice.to_json` writes it: the job's plan-input version."""
        return self.choice().to_json()


class JobRecord(StrictModel):
    """A submitted job: its spec and where it is in its lifecycle (DESIGN §4.6)."""

    id: str = Field(examples=["job_01jd2k8q6v3m9x4c7b2n5r8t1w"])
    spec: JobSpec
    team: str
    state: JobState
    version: int = Field(ge=1, description="bumped by every change; pass it back as expected_version")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    reason: str | None = Field(default=None, description="reason code of the last change, e.g. 'DeadlineInfeasible'")
    message: str | None = None
    plan_id: str | None = Field(default=None, description="the plan that placed it, while it has one")
    submitted_by: str
    # Left out of the JSON when there is none: a process of the previous release (which forbids unknown
    # fields) still reads every job without a rule during a rolling deploy or after a rollback.
    offer_rule: OfferRule | None = Field(default=None, description="ops' pin or forbids for the next plan runs",
                                         exclude_if=lambda rule: rule is None)

    @property
    def name(self) -> str:
        return self.spec.name


def never_runs_after(name: str, before: JobRecord | None) -> str | None:
    """Why a job `after: [name]` can never start, `before` being the job the name means now; None if it can."""
    if before is not None and before.state in TERMINAL_JOB_STATES and before.state is not JobState.SUCCEEDED:
        return f"it runs after {name!r} ({before.id}), which ended {before.state.value}"
    return None


class PlanInfo(StrictModel):
    """A plan without its assignments: what a listing shows."""

    plan_id: str
    state: PlanState
    version: int = Field(ge=1)
    created_at: UtcDatetime
    created_by: str
    updated_at: UtcDatetime
    horizon: Horizon
    fingerprint: str
    summary: Summary
    decision: dict[str, Any] | None = None


class PlanRecord(PlanInfo):
    """An immutable plan document with its current state, decision and the job versions it planned."""

    document: PlanDocument
    job_versions: dict[str, int | str]
    inputs: dict[str, Any] | None = None  # PlanInputs.to_json(): what the fingerprint covers

    def current_document(self) -> PlanDocument:
        """The §4.5 document as served: `status` and `decision` as they stand now."""
        return self.document.model_copy(update={"status": self.state.value, "decision": self.decision})


class Event(StrictModel):
    """One entry of the append-only event log; `id` is the Redis stream id (ordered)."""

    id: str
    type: str = Field(examples=["job.submitted", "job.cancelled", "plan.approved"])
    job_id: str | None = None
    plan_id: str | None = None
    actor: str
    at: UtcDatetime
    data: dict[str, Any] = Field(default_factory=dict)


class Principal(StrictModel):
    """Who is calling: an API key maps to one principal."""

    name: str = Field(min_length=1, max_length=200)
    role: Role
    team: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def _submitter_has_team(self) -> Principal:
        if self.role == "submitter" and not self.team:
            raise ValueError("team: a submitter must belong to a team")
        return self


class ApiKeyInfo(StrictModel):
    """What may be shown about a key: never the key, only its first characters."""

    key_id: str
    prefix: str
    principal: Principal
    created_at: UtcDatetime
