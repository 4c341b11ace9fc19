"""io.net adapter: CaaS deployments through io.net's own SDK, `iocloud` (package `ionet-cloud`).

Calls, all through one `iocloud.Client(api_key=, base_url=, timeout=CALL_TIMEOUT_S, max_retries=0)`:

- launch: `deployments.list()` (GET /deployments, 100 a page) to find our label; if absent,
  `deployments.create(name=label, image=, gpu="H100:8", hours=, replicas=nodes, env=)`, which resolves the GPU
  (GET /hardware), posts the deployment (POST /deploy) and reads it back (GET /deployment/{id});
- status: `deployments.get(id)`; statuses and list_ours: one `deployments.list()` for all handles;
- cancel: `deployments.delete(id)`; quote: `hardware.resolve(gpu, refresh=True)` + `pricing.estimate(hours=1)`.

Choices:

- The API has no idempotency key: the deployment's name is our label (`marketplace.make_label`), the one field
  of ours the listing returns, and launch lists before it creates (`marketplace.adopt_or_create`).
- `max_retries=0`: the SDK would sleep out a 429's Retry-After (up to 30 s) and replay reads; the worker retries
  instead, on `Throttled.retry_after_s`, so every call returns within CALL_TIMEOUT_S.
- Deployments are prepaid in whole hours (1-8760) and billed up front: launch buys ceil(run_hours) hours; the
  handle keeps the hours and what was billed (the deployment's `amount_paid`, else hours x nodes x the approved
  price), and `Status.billed_usd` reports it, so cost actuals record the bill, not the per-second estimate.
- nodes become replicas and the offer's gpus_per_node the GPUs per container; the offer's gpu_type is the
  hardware name unless `hardware={"H100": "H100 80GB HBM3"}` maps it.
- io.net names locations by number and the catalog's regions (us, eu, apac) carry none: `locations={"eu": 12}`
  maps them; for an unmapped region io.net chooses (io.net offers hold no certification a region pin enforces).
- States: deployment requested / deploying → PENDING, running → RUNNING, completed (its hours ran out) →
  SUCCEEDED, failed / unpaid → FAILED, termination requested / terminated / destroyed → CANCELLED; a status the
  SDK cannot parse stays PENDING with the status in the message (the deployment still exists, so not GONE);
  a deployment io.net does not return is GONE.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import iocloud
from iocloud.pagination import MAX_PAGE_SIZE
from iocloud.types import DeploymentDetails, DeploymentStatus

from scheduler.models import Offer
from workers.providers.base import (
    CALL_TIMEOUT_S,
    Handle,
    InvalidRequest,
    LaunchRequest,
    Owned,
    Phase,
    ProviderError,
    Quote,
    Status,
)
from workers.providers.marketplace import (
    NotFound,
    adopt_or_create,
    classify,
    label_env,
    make_label,
    parse_label,
    require_key,
    timed_out,
    translating,
    unexpected,
)

ENV_KEY = "CLOUDSCHED_IONET_API_KEY"
MAX_HOURS = 8760

_PHASES = {
    DeploymentStatus.DEPLOYMENT_REQUESTED: Phase.PENDING,
    DeploymentStatus.DEPLOYING: Phase.PENDING,
    DeploymentStatus.RUNNING: Phase.RUNNING,
    DeploymentStatus.COMPLETED: Phase.SUCCEEDED,
    DeploymentStatus.FAILED: Phase.FAILED,
    DeploymentStatus.UNPAID: Phase.FAILED,
    DeploymentStatus.TERMINATION_REQUESTED: Phase.CANCELLED,
    DeploymentStatus.TERMINATED: Phase.CANCELLED,
    DeploymentStatus.DESTROYED: Phase.CANCELLED,
}
_GONE = Status(Phase.GONE, "io.net has no such deployment")


def prepaid_hours(run_hours: float) -> int:
    """The whole hours io.net bills up front for a run of `run_hours` (1-8760)."""
    hours = max(1, math.ceil(round(run_hours, 6)))
    if hours > MAX_HOURS:
        raise InvalidRequest(f"io.net deployments last at most {MAX_HOURS} h; this run needs {hours} h",
                             provider="ionet")
    return hours


def _phase(status: DeploymentStatus) -> tuple[Phase, str]:
    phase = _PHASES.get(status)
    return (phase, status.value) if phase else (Phase.PENDING, f"unrecognised io.net status {status.value!r}")


class IonetProvider:
    """io.net CaaS deployments; see the module docstring for the calls and choices."""

    name = "ionet"

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None,
                 hardware: Mapping[str, str] | None = None, locations: Mapping[str, int | str] | None = None,
                 client: iocloud.Client | None = None) -> None:
        self._key = api_key or os.environ.get(ENV_KEY) or None
        self._base_url = base_url
        self._hardware = dict(hardware or {})
        self._locations = dict(locations or {})
        self._client = client

    def __repr__(self) -> str:
        return f"IonetProvider(base_url={self._base_url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _io(self) -> iocloud.Client:
        if self._client is None:
            self._client = iocloud.Client(api_key=require_key(self._key, ENV_KEY, self.name), base_url=self._base_url,
                                          timeout=CALL_TIMEOUT_S, max_retries=0)
        return self._client

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place io.net's errors become ours."""
        if isinstance(exc, iocloud.APIConnectionError):
            return timed_out(self.name, exc)
        if isinstance(exc, iocloud.APIError):
            return classify(self.name, exc.message, status=exc.status_code,
                            retry_after_s=getattr(exc, "retry_after", None))
        return unexpected(self.name, exc)

    def _calls(self) -> Any:
        return translating(self._translate, self._key)

    def _deployments(self) -> list[DeploymentDetails]:
        return [d.data for d in self._io.deployments.list(page_size=MAX_PAGE_SIZE)]

    def _gpu(self, offer: Offer) -> str:
        return self._hardware.get(offer.gpu_type, offer.gpu_type)

    # -- the port ---------------------------------------------------------------------------

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        if not placement.image:
            raise InvalidRequest("an io.net deployment needs a container image", provider=self.name)
        label = make_label(placement.job_id, idempotency_key)
        hours = prepaid_hours(placement.run_hours)

        def find(wanted: str) -> Handle | None:
            match = next((d for d in self._deployments() if d.name == wanted), None)
            if match is None:
                return None
            try:  # the details carry amount_paid; the listing's summary does not
                match = self._io.deployments.get(match.id).data
            except iocloud.NotFoundError:
                pass
            return self._handle(match, placement, hours)

        def create() -> Handle:
            offer, command = placement.offer, placement.command
            created = self._io.deployments.create(
                name=label, image=placement.image, gpu=f"{self._gpu(offer)}:{offer.gpus_per_node}", hours=hours,
                replicas=placement.nodes, env={**placement.env, **label_env(placement.job_id, idempotency_key)},
                command=command if isinstance(command, str) else None,
                entrypoint=list(command) if isinstance(command, list) else None,
                location=self._locations.get(offer.region))
            return self._handle(created.data, placement, hours)

        with self._calls():
            return adopt_or_create(label, find, create)

    def _handle(self, details: DeploymentDetails, placement: LaunchRequest, hours: int) -> Handle:
        billed = details.amount_paid
        if billed is None:  # the read-back 404'd: what io.net charges for these hours at the approved price
            price = placement.approved_price_per_node_hour or placement.offer.price_per_node_hour
            billed = round(hours * placement.nodes * price, 2)
        return Handle(provider=self.name, id=details.id, region=placement.offer.region,
                      extra={"hours": hours, "billed_usd": billed})

    def status(self, handle: Handle) -> Status:
        try:
            with self._calls():
                details = self._io.deployments.get(handle.id).data
        except NotFound:
            return _GONE
        return self._status(details, handle)

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        handles = list(handles)
        if not handles:
            return {}
        with self._calls():
            seen = {d.id: d for d in self._deployments()}
        return {h.id: self._status(seen[h.id], h) if h.id in seen else _GONE for h in handles}

    def _status(self, details: DeploymentDetails, handle: Handle) -> Status:
        phase, message = _phase(details.status)
        billed = details.amount_paid if details.amount_paid is not None else handle.extra.get("billed_usd")
        return Status(phase, message, started_at=details.started_at, ended_at=details.finished_at,
                      billed_usd=billed)

    def cancel(self, handle: Handle) -> None:
        try:
            with self._calls():
                self._io.deployments.delete(handle.id)
        except NotFound:
            pass

    def quote(self, offer: Offer) -> Quote:
        location = self._locations.get(offer.region)
        with self._calls():
            hardware = self._io.hardware.resolve(self._gpu(offer), refresh=True)
            estimate = self._io.pricing.estimate(hardware_id=hardware.hardware_id, hours=1, replicas=1,
                                                 gpus_per_container=offer.gpus_per_node,
                                                 location_ids=None if location is None else [location])
        price = estimate.total_cost_usdc
        if price is None:
            price = (hardware.price or offer.price_per_gpu_hour) * offer.gpus_per_node
        replicas = max(estimate.available_replica_count, default=None)
        capacity = None if replicas is None else replicas * offer.gpus_per_node
        available = capacity > 0 if capacity is not None else (hardware.available or 0) > 0
        return Quote(offer_id=offer.id, price_per_node_hour=price, available=available, capacity_gpus=capacity)

    def list_ours(self) -> list[Owned]:
        with self._calls():
            deployments = self._deployments()
        owned = []
        for d in deployments:
            tags = parse_label(d.name)
            phase, _ = _phase(d.status)
            if tags and not phase.ended:
                owned.append(Owned(handle=Handle(provider=self.name, id=d.id), idempotency_key=tags[1],
                                   job_id=tags[0], phase=phase, created_at=d.created_at))
        return owned
