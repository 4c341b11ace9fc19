"""Vast.ai adapter: the `vastai` SDK's API layer (`vastai.api.client.VastClient`, `vastai.api.instances`/`offers`).

Calls:

- launch: `instances.show_instances(select_filters={"label": {"in": [label]}})` (GET /api/v1/instances/) to find
  our label; if absent, `offers.search_offers` (POST /bundles/) for the cheapest rentable machine of the offer's
  shape (GPU model and count from the instance type `8x-RTX_5090-32-65536`, country from the region
  `alberta-ca-na`, at most the approved price + `price_tolerance`), then `instances.create_instance(ask_id,
  label=label, ...)` (PUT /asks/{id}/);
- status: `instances.show_instance(id)`; statuses and list_ours: one `instances.show_instances()`;
- cancel: `instances.destroy_instance(id)`; quote: `offers.search_offers` for the offer's shape (cheapest price,
  GPUs on offer).

Choices:

- The `VastAI` facade cannot set a timeout, so the adapter builds the SDK's own `VastClient` with
  `timeout=CALL_TIMEOUT_S, retry=1`: the SDK's default retries replay a PUT whose answer was lost (it retries
  timeouts on every method) and sleep out 429s; the worker retries instead, after the label lookup.
- No idempotency key in the API: the instance's label is ours (`marketplace.make_label`), plus the same values as
  environment variables; launch looks the label up before it creates.
- A Vast instance is one machine: a placement of several nodes is refused (InvalidRequest).
- The command runs as the container's arguments (`runtype=args`); a string becomes `sh -c <command>`.
- States (`actual_status`, `intended_status`, `status_msg`): created / loading / scheduling → PENDING, running →
  RUNNING, exited / stopped → the exit code in `status_msg` (0 → SUCCEEDED, else FAILED), without one an
  interruptible (`is_bid`) instance was outbid (PREEMPTED) and an on-demand one FAILED; anything else stays
  PENDING with the state in the message; an instance Vast does not list (destroyed) is GONE. Vast reports no
  bill per instance, so `billed_usd` is None (cost actuals use the handle's hourly price).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import requests
from vastai.api import instances, offers
from vastai.api.client import VastClient

from scheduler.models import Offer
from workers.providers.base import (
    CALL_TIMEOUT_S,
    Handle,
    InvalidRequest,
    LaunchRequest,
    NoCapacity,
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
    exit_code,
    label_env,
    make_label,
    parse_label,
    require_key,
    retry_after,
    stopped_phase,
    timed_out,
    translating,
    unexpected,
)

ENV_KEY = "CLOUDSCHED_VAST_API_KEY"
MAX_OFFERS = 64
_SHAPE = re.compile(r"^(\d+)x-(.+)-\d+-\d+$")
_STARTING = {"", "created", "loading", "scheduling"}
_GONE = Status(Phase.GONE, "Vast.ai has no such instance")


def _phase(row: dict[str, Any]) -> tuple[Phase, str]:
    actual = (row.get("actual_status") or "").lower()
    intended = (row.get("intended_status") or "").lower()
    said = (row.get("status_msg") or "").strip()
    if actual == "running" and intended != "stopped":
        return Phase.RUNNING, said
    if actual in ("exited", "stopped") or intended == "stopped":
        return stopped_phase(said, spot=bool(row.get("is_bid")))
    if actual in _STARTING:
        return Phase.PENDING, said
    return Phase.PENDING, f"Vast.ai status {actual!r}: {said}".rstrip(": ")


def _status(row: dict[str, Any]) -> Status:
    phase, message = _phase(row)
    return Status(phase, message, exit_code=exit_code(row.get("status_msg")) if phase.ended else None)


def _said(body: Any) -> str:
    if isinstance(body, dict):
        return " ".join(str(body[k]) for k in ("error", "msg", "detail", "message") if body.get(k)) or str(body)
    return str(body)


class VastProvider:
    """Vast.ai marketplace instances; see the module docstring for the calls and choices."""

    name = "vast"

    def __init__(self, api_key: str | None = None, *, server_url: str | None = None, disk_gb: float = 50,
                 price_tolerance: float = 0.05, client: VastClient | None = None) -> None:
        self._key = api_key or os.environ.get(ENV_KEY) or None
        self._server_url = server_url
        self._disk_gb = disk_gb
        self._price_tolerance = price_tolerance
        self._client = client

    def __repr__(self) -> str:
        return f"VastProvider(server_url={self._server_url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _vast(self) -> VastClient:
        if self._client is None:
            self._client = VastClient(api_key=require_key(self._key, ENV_KEY, self.name), server_url=self._server_url,
                                      retry=1, timeout=CALL_TIMEOUT_S)
        return self._client

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place Vast's errors become ours."""
        if isinstance(exc, requests.Timeout | requests.ConnectionError):
            return timed_out(self.name, exc)
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            r = exc.response
            try:
                body = r.json()
            except ValueError:
                body = r.text
            return classify(self.name, _said(body), status=r.status_code,
                            retry_after_s=retry_after(r.headers.get("Retry-After")))
        return unexpected(self.name, exc)

    def _calls(self) -> Any:
        return translating(self._translate, self._key)

    def _search(self, offer: Offer, max_price: float | None) -> list[dict[str, Any]]:
        shape, place = _SHAPE.match(offer.instance_type or ""), offer.region.split("-")
        if shape is None or len(place) < 2:
            raise InvalidRequest(f"cannot read a Vast.ai machine shape from {offer.id}", provider=self.name)
        query: dict[str, Any] = {"gpu_name": {"eq": shape.group(2).replace("_", " ")},
                                 "num_gpus": {"eq": int(shape.group(1))},
                                 "geolocation": {"in": [place[-2].upper()]}}
        if max_price is not None:
            query["dph_total"] = {"lte": max_price}
        market = "bid" if offer.market == "spot" else "on-demand"
        return offers.search_offers(self._vast, query=query, offer_type=market, order=[["dph_total", "asc"]],
                                    limit=MAX_OFFERS, storage=self._disk_gb)

    # -- the port ---------------------------------------------------------------------------

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        offer = placement.offer
        if placement.nodes != 1:
            raise InvalidRequest(f"a Vast.ai instance is one machine; this placement needs {placement.nodes}",
                                 provider=self.name)
        if not placement.image:
            raise InvalidRequest("a Vast.ai instance needs a container image", provider=self.name)
        label = make_label(placement.job_id, idempotency_key)

        def find(wanted: str) -> Handle | None:
            rows = instances.show_instances(self._vast, select_filters={"label": {"in": [wanted]}})
            row = next((r for r in rows if r.get("label") == wanted), None)
            return None if row is None else Handle(provider=self.name, id=str(row["id"]), region=offer.region,
                                                   extra={"price_per_hour": row.get("dph_total")})

        def create() -> Handle:
            approved = placement.approved_price_per_node_hour
            asks = self._search(offer, None if approved is None else approved * (1 + self._price_tolerance))
            if not asks:
                raise NoCapacity(f"no rentable Vast.ai machine for {offer.id} at the approved price",
                                 provider=self.name)
            ask, command = asks[0], placement.command
            result = instances.create_instance(
                self._vast, ask["id"], image=placement.image, disk=self._disk_gb, label=label,
                env={**placement.env, **label_env(placement.job_id, idempotency_key)},
                args=["sh", "-c", command] if isinstance(command, str) else command,
                price=(ask.get("min_bid") or ask["dph_total"]) if placement.spot else None)
            if not result.get("success") or not result.get("new_contract"):
                raise classify(self.name, _said(result))
            return Handle(provider=self.name, id=str(result["new_contract"]), region=offer.region,
                          extra={"price_per_hour": ask.get("dph_total")})

        with self._calls():
            return adopt_or_create(label, find, create)

    def status(self, handle: Handle) -> Status:
        try:
            with self._calls():
                row = instances.show_instance(self._vast, int(handle.id))
        except NotFound:
            return _GONE
        return _GONE if row is None else _status(row)

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        handles = list(handles)
        if not handles:
            return {}
        with self._calls():
            seen = {str(r["id"]): r for r in instances.show_instances(self._vast)}
        return {h.id: _status(seen[h.id]) if h.id in seen else _GONE for h in handles}

    def cancel(self, handle: Handle) -> None:
        try:
            with self._calls():
                instances.destroy_instance(self._vast, int(handle.id))
        except NotFound:
            pass

    def quote(self, offer: Offer) -> Quote:
        with self._calls():
            asks = self._search(offer, None)
        if not asks:
            return Quote(offer_id=offer.id, price_per_node_hour=offer.price_per_node_hour,
                         available=False, capacity_gpus=0)
        return Quote(offer_id=offer.id, price_per_node_hour=float(asks[0]["dph_total"]),
                     capacity_gpus=sum(int(a.get("num_gpus") or 0) for a in asks))

    def list_ours(self) -> list[Owned]:
        with self._calls():
            rows = instances.show_instances(self._vast)
        owned = []
        for row in rows:
            tags, (phase, _) = parse_label(row.get("label")), _phase(row)
            if tags and not phase.ended:
                started = row.get("start_date")
                owned.append(Owned(handle=Handle(provider=self.name, id=str(row["id"])), idempotency_key=tags[1],
                                   job_id=tags[0], phase=phase,
                                   created_at=datetime.fromtimestamp(started, UTC) if started else None))
        return owned
