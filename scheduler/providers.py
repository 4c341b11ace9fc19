"""The provider port: what the launch, track and reconcile use cases need from a cloud.

One adapter per provider implements `Provider` (in `workers/providers/`, re-exported from
`workers.providers.base`). The interface lives here, in the domain, so that the use cases in
`scheduler.execution` depend on it and not on any SDK. Its docstrings are the contract:

- every call returns quickly: adapters set a timeout on every SDK or HTTP call
  (`CALL_TIMEOUT_S` unless the provider needs more), and never sleep to wait for a machine;
- `launch` is idempotent on `idempotency_key`: calling it again with the same key, after a
  lost response or a crash, returns the handle of the same instance and never creates a
  second one (the provider's own token where it has one, else a lookup of our tag first);
- `cancel` of an unknown or already ended handle is silent;
- only the errors below escape an adapter; each adapter translates its SDK's or HTTP
  errors in one place (`translate`), so a boto3 `ClientError` never reaches a task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from scheduler.models import Offer

CALL_TIMEOUT_S = 20.0
TAG = "cloudsched-key"  # the tag / label every instance we create carries: its idempotency key
TAG_JOB = "cloudsched-job"


# -- errors: the only ones an adapter lets out ---------------------------------------------


class ProviderError(Exception):
    """Base of the provider error tree. `retryable` says whether the same call may succeed later."""

    retryable = False
    code = "ProviderError"

    def __init__(self, message: str, *, provider: str = "", retry_after_s: float | None = None):
        super().__init__(message)
        self.message, self.provider, self.retry_after_s = message, provider, retry_after_s

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class NoCapacity(ProviderError):
    """The offer has no machine free now (AWS InsufficientInstanceCapacity, a marketplace with no host)."""

    code = "NoCapacity"


class QuotaExceeded(ProviderError):
    """Our account's limit (vCPU quota, spend limit) forbids the launch: ops must act."""

    code = "QuotaExceeded"


class Throttled(ProviderError):
    """Too many calls: retry after `retry_after_s` (or with backoff)."""

    retryable = True
    code = "Throttled"


class Transient(ProviderError):
    """A 5xx, a timeout or a dropped connection: the call may or may not have taken effect."""

    retryable = True
    code = "Transient"


class InvalidRequest(ProviderError):
    """The provider refuses what we asked (unknown instance type, bad image): a bug or a stale catalog."""

    code = "InvalidRequest"


class AuthFailed(ProviderError):
    """Credentials missing, wrong or lacking a permission."""

    code = "AuthFailed"


ERRORS: tuple[type[ProviderError], ...] = (NoCapacity, QuotaExceeded, Throttled, Transient, InvalidRequest, AuthFailed)


# -- what goes in and out -------------------------------------------------------------------


class Phase(StrEnum):
    """Where a provider says an instance is."""

    PENDING = "pending"  # accepted, not running yet (booting, queued)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the job's command exited 0 / the training job completed
    FAILED = "failed"
    PREEMPTED = "preempted"  # spot capacity taken back
    CANCELLED = "cancelled"  # terminated by us
    GONE = "gone"  # the provider has no such instance (never created, or long deleted)

    @property
    def ended(self) -> bool:
        return self not in (Phase.PENDING, Phase.RUNNING)


@dataclass(frozen=True)
class LaunchRequest:
    """One approved placement to start: a plan segment (or a re-placement) of one job."""

    job_id: str
    team: str
    name: str
    offer: Offer
    nodes: int
    gpus: int
    run_hours: float
    kind: str = "training"  # training | inference (managed inference becomes an endpoint)
    image: str | None = None
    command: str | list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    approved_price_per_node_hour: float | None = None
    attempt: int = 1

    @property
    def spot(self) -> bool:
        return self.offer.market == "spot"


@dataclass(frozen=True)
class Handle:
    """How a provider names what it started. JSON-safe: it is stored in the launch record."""

    provider: str
    id: str
    region: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "id": self.id, "region": self.region, "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Handle:
        return cls(provider=data["provider"], id=data["id"], region=data.get("region", ""),
                   extra=dict(data.get("extra") or {}))


@dataclass(frozen=True)
class Status:
    phase: Phase
    message: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    billed_usd: float | None = None  # what the provider billed, where it says (io.net bills up front)


@dataclass(frozen=True)
class Quote:
    """A live re-check of an offer at launch time."""

    offer_id: str
    price_per_node_hour: float
    available: bool = True
    capacity_gpus: int | None = None  # None: the provider does not say
    certifications: tuple[str, ...] | None = None  # None: unchanged from the catalog
    live: bool = True  # False: the provider has no price API; this is the catalog price


@dataclass(frozen=True)
class Owned:
    """An instance carrying our tag, as `list_ours` finds it."""

    handle: Handle
    idempotency_key: str
    job_id: str
    phase: Phase
    created_at: datetime | None = None


@runtime_checkable
class Provider(Protocol):
    """One cloud or marketplace. Adapters hold no state a restart would lose."""

    name: str

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        """Start `placement` and return at once (do not wait for it to run).

        Idempotent on `idempotency_key`: the same key returns the same instance's handle.
        The instance carries the key as tag `TAG` and the job id as tag `TAG_JOB`.
        """
        ...

    def status(self, handle: Handle) -> Status:
        """Where the instance is now. An instance the provider does not know is `Phase.GONE`."""
        ...

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        """Status of many instances by handle id, in as few calls as the provider allows.

        Tracking polls per provider, not per job: 10,000 running jobs are one or a few calls.
        """
        ...

    def cancel(self, handle: Handle) -> None:
        """Terminate the instance. Silent if it is unknown or already ended."""
        ...

    def quote(self, offer: Offer) -> Quote:
        """The offer's price and availability now, where the provider publishes them."""
        ...

    def list_ours(self) -> list[Owned]:
        """Every live (not yet ended) instance carrying our tag, for reconciliation."""
        ...


def catalog_quote(offer: Offer) -> Quote:
    """The quote of a provider without a price API: the catalog's own figures."""
    return Quote(offer_id=offer.id, price_per_node_hour=offer.price_per_node_hour,
                 capacity_gpus=offer.capacity_gpus, live=False)
