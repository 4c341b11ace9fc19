"""RunPod adapter: RunPod's GraphQL API, called with httpx (not the `runpod` SDK).

Why not the SDK (runpod 1.11): its `run_graphql_query` has a fixed 30 s timeout (above CALL_TIMEOUT_S), reads
its URL from a process-wide environment variable, and checks no HTTP status but 401 (a 429 or a 5xx page fails
in `response.json()`); `terminate_pod` and `create_pod`'s GPU check take no `api_key` and use the module-global
one; it builds mutations by pasting values into the query text unescaped (a quote in an env value or command
breaks the query); and it cannot rent a spot pod. The same operations are sent here as documents with
variables, to the same endpoint, with the same Bearer auth.

Calls (POST /graphql, operation name in brackets):

- launch: `myself { pods }` [Pods] to find our label; if absent `podFindAndDeployOnDemand` [CreatePod], or
  `podRentInterruptable` [CreateSpotPod] for a spot offer, with the GPU type, count and cloud (SECURE /
  COMMUNITY) read from the instance type (`1x_A100-80GB-SXM_SECURE`) and the region as `countryCode`;
- status: `pod(podId)` [Pod]; statuses and list_ours: one [Pods] query for all handles;
- cancel: `podTerminate` [TerminatePod]; quote: `gpuTypes(id) { lowestPrice(gpuCount, secureCloud) }` [GpuType].

Choices:

- No idempotency key in the API: the pod's name is our label (`marketplace.make_label`), plus the same values as
  environment variables; launch looks the name up before it creates.
- A pod is one machine: a placement of several nodes is refused (InvalidRequest).
- Catalog GPU names map to RunPod's GPU type ids with the table SkyPilot's RunPod provisioner uses.
- States (`desiredStatus`, `runtime`, `lastStatusChange`): RUNNING without a runtime yet → PENDING, with one →
  RUNNING; EXITED → the exit code in `lastStatusChange` (0 → SUCCEEDED, else FAILED), without one an
  interruptible pod was taken back (PREEMPTED) and an on-demand one FAILED; TERMINATED → CANCELLED; anything
  else stays PENDING with the state in the message; a pod RunPod does not return is GONE. RunPod reports no
  bill per pod, so `billed_usd` is None (cost actuals use the handle's `costPerHr`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from typing import Any

import httpx

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
    Transient,
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

ENV_KEY = "CLOUDSCHED_RUNPOD_API_KEY"
GRAPHQL_URL = "https://api.runpod.io/graphql"

# catalog GPU name -> RunPod gpuTypeId (skypilot-org/skypilot, sky/provision/runpod/utils.py GPU_NAME_MAP)
GPU_TYPES = {
    "A100-80GB": "NVIDIA A100 80GB PCIe", "A100-80GB-SXM": "NVIDIA A100-SXM4-80GB", "A40": "NVIDIA A40",
    "B200": "NVIDIA B200", "H100": "NVIDIA H100 PCIe", "H100-NVL": "NVIDIA H100 NVL",
    "H100-SXM": "NVIDIA H100 80GB HBM3", "H200-SXM": "NVIDIA H200", "L4": "NVIDIA L4", "L40": "NVIDIA L40",
    "L40S": "NVIDIA L40S", "MI300X": "AMD Instinct MI300X OAM", "RTX3090": "NVIDIA GeForce RTX 3090",
    "RTX4090": "NVIDIA GeForce RTX 4090", "RTX4000-Ada": "NVIDIA RTX 4000 Ada Generation",
    "RTX6000-Ada": "NVIDIA RTX 6000 Ada Generation", "RTXA4000": "NVIDIA RTX A4000",
    "RTXA4500": "NVIDIA RTX A4500", "RTXA5000": "NVIDIA RTX A5000", "RTXA6000": "NVIDIA RTX A6000",
}

_POD = "id name desiredStatus podType costPerHr gpuCount lastStatusChange runtime { uptimeInSeconds }"
_PODS = f"query Pods {{ myself {{ pods {{ {_POD} }} }} }}"
_GET = f"query Pod($input: PodFilter!) {{ pod(input: $input) {{ {_POD} }} }}"
_CREATE = (f"mutation CreatePod($input: PodFindAndDeployOnDemandInput!) "
           f"{{ podFindAndDeployOnDemand(input: $input) {{ {_POD} }} }}")
_CREATE_SPOT = (f"mutation CreateSpotPod($input: PodRentInterruptableInput!) "
                f"{{ podRentInterruptable(input: $input) {{ {_POD} }} }}")
_TERMINATE = "mutation TerminatePod($input: PodTerminateInput!) { podTerminate(input: $input) }"
_GPU = ("query GpuType($input: GpuTypeFilter, $lowest: GpuLowestPriceInput) { gpuTypes(input: $input) { id "
        "securePrice communityPrice secureSpotPrice communitySpotPrice "
        "lowestPrice(input: $lowest) { uninterruptablePrice minimumBidPrice stockStatus } } }")

_SHAPE = re.compile(r"^(\d+)x_(.+)_(SECURE|COMMUNITY)$")
_GONE = Status(Phase.GONE, "RunPod has no such pod")


class GraphQLError(Exception):
    """An answer with `errors` (RunPod sends most refusals, capacity included, as HTTP 200)."""


def _shape(offer: Offer) -> tuple[str, int, str]:
    """(gpuTypeId, gpuCount, cloudType) of an offer's instance type."""
    found = _SHAPE.match(offer.instance_type or "")
    if found is None or found.group(2) not in GPU_TYPES:
        raise InvalidRequest(f"no RunPod GPU type for {offer.id}", provider="runpod")
    return GPU_TYPES[found.group(2)], int(found.group(1)), found.group(3)


def _phase(pod: dict[str, Any]) -> tuple[Phase, str]:
    desired = (pod.get("desiredStatus") or "").upper()
    said = (pod.get("lastStatusChange") or "").strip()
    if desired == "RUNNING":
        return (Phase.RUNNING if pod.get("runtime") else Phase.PENDING), said
    if desired in ("EXITED", "STOPPED"):
        return stopped_phase(said, spot=pod.get("podType") == "INTERRUPTABLE")
    if desired == "TERMINATED":
        return Phase.CANCELLED, said
    if desired in ("", "CREATED"):
        return Phase.PENDING, said
    return Phase.PENDING, f"RunPod status {desired!r}: {said}".rstrip(": ")


def _status(pod: dict[str, Any]) -> Status:
    phase, message = _phase(pod)
    return Status(phase, message, exit_code=exit_code(pod.get("lastStatusChange")) if phase.ended else None)


def _said(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(str(e.get("message", e)) for e in body["errors"])
    return str(body.get("error") or body.get("message") or body) if isinstance(body, dict) else str(body)


class RunpodProvider:
    """RunPod pods; see the module docstring for the calls and choices."""

    name = "runpod"

    def __init__(self, api_key: str | None = None, *, url: str = GRAPHQL_URL, disk_gb: int = 50,
                 http: httpx.Client | None = None) -> None:
        self._key = api_key or os.environ.get(ENV_KEY) or None
        self._url = url
        self._disk_gb = disk_gb
        self._client = http

    def __repr__(self) -> str:
        return f"RunpodProvider(url={self._url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _http(self) -> httpx.Client:
        if self._client is None:
            key = require_key(self._key, ENV_KEY, self.name)
            self._client = httpx.Client(timeout=CALL_TIMEOUT_S, headers={"Authorization": f"Bearer {key}"})
        return self._client

    def _translate(self, exc: Exception) -> ProviderError:
        """The one place RunPod's errors become ours."""
        if isinstance(exc, httpx.TransportError):
            return timed_out(self.name, exc)
        if isinstance(exc, httpx.HTTPStatusError):
            r = exc.response
            return classify(self.name, _said(r), status=r.status_code,
                            retry_after_s=retry_after(r.headers.get("Retry-After")))
        if isinstance(exc, GraphQLError):
            return classify(self.name, str(exc))
        return unexpected(self.name, exc)

    def _calls(self) -> Any:
        return translating(self._translate, self._key)

    def _gql(self, operation: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._http.post(self._url, json={"operationName": operation, "query": query,
                                                    "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(_said(response))
        return body.get("data") or {}

    def _pods(self) -> list[dict[str, Any]]:
        return (self._gql("Pods", _PODS).get("myself") or {}).get("pods") or []

    # -- the port ---------------------------------------------------------------------------

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        offer = placement.offer
        if placement.nodes != 1:
            raise InvalidRequest(f"a RunPod pod is one machine; this placement needs {placement.nodes}",
                                 provider=self.name)
        if not placement.image:
            raise InvalidRequest("a RunPod pod needs a container image", provider=self.name)
        gpu_type, count, cloud = _shape(offer)
        label = make_label(placement.job_id, idempotency_key)

        def find(wanted: str) -> Handle | None:
            pod = next((p for p in self._pods() if p.get("name") == wanted), None)
            return None if pod is None else self._handle(pod, offer)

        def create() -> Handle:
            env = {**placement.env, **label_env(placement.job_id, idempotency_key)}
            command = placement.command
            pod_input: dict[str, Any] = {
                "name": label, "imageName": placement.image, "gpuTypeId": gpu_type, "gpuCount": count,
                "cloudType": cloud, "countryCode": offer.region.upper(), "containerDiskInGb": self._disk_gb,
                "volumeInGb": 0, "env": [{"key": k, "value": v} for k, v in env.items()]}
            if command:
                pod_input["dockerArgs"] = command if isinstance(command, str) else shlex.join(command)
            if placement.spot:
                price = placement.approved_price_per_node_hour or offer.price_per_node_hour
                pod_input["bidPerGpu"] = round(price / count, 4)
                pod = self._gql("CreateSpotPod", _CREATE_SPOT, {"input": pod_input}).get("podRentInterruptable")
            else:
                pod = self._gql("CreatePod", _CREATE, {"input": pod_input}).get("podFindAndDeployOnDemand")
            if not pod or not pod.get("id"):
                raise Transient("RunPod answered without a pod; the call may have taken effect", provider=self.name)
            return self._handle(pod, offer)

        with self._calls():
            return adopt_or_create(label, find, create)

    def _handle(self, pod: dict[str, Any], offer: Offer) -> Handle:
        return Handle(provider=self.name, id=pod["id"], region=offer.region,
                      extra={"cost_per_hr": pod.get("costPerHr")})

    def status(self, handle: Handle) -> Status:
        try:
            with self._calls():
                pod = self._gql("Pod", _GET, {"input": {"podId": handle.id}}).get("pod")
        except NotFound:
            return _GONE
        return _GONE if not pod else _status(pod)

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        handles = list(handles)
        if not handles:
            return {}
        with self._calls():
            seen = {p["id"]: p for p in self._pods()}
        return {h.id: _status(seen[h.id]) if h.id in seen else _GONE for h in handles}

    def cancel(self, handle: Handle) -> None:
        try:
            with self._calls():
                self._gql("TerminatePod", _TERMINATE, {"input": {"podId": handle.id}})
        except NotFound:
            pass

    def quote(self, offer: Offer) -> Quote:
        gpu_type, count, cloud = _shape(offer)
        secure, spot = cloud == "SECURE", offer.market == "spot"
        with self._calls():
            data = self._gql("GpuType", _GPU, {"input": {"id": gpu_type},
                                                "lowest": {"gpuCount": count, "secureCloud": secure}})
        gpu = next(iter(data.get("gpuTypes") or []), None) or {}
        lowest = gpu.get("lowestPrice") or {}
        per_gpu = lowest.get("minimumBidPrice" if spot else "uninterruptablePrice")
        if per_gpu is None:
            per_gpu = gpu.get(("secure" if secure else "community") + ("SpotPrice" if spot else "Price"))
        if per_gpu is None:
            return Quote(offer_id=offer.id, price_per_node_hour=offer.price_per_node_hour,
                         available=False, capacity_gpus=0)
        return Quote(offer_id=offer.id, price_per_node_hour=round(per_gpu * count, 4),
                     available=lowest.get("stockStatus") is not None)

    def list_ours(self) -> list[Owned]:
        with self._calls():
            pods = self._pods()
        owned = []
        for pod in pods:
            tags, (phase, _) = parse_label(pod.get("name")), _phase(pod)
            if tags and not phase.ended:
                owned.append(Owned(handle=Handle(provider=self.name, id=pod["id"]), idempotency_key=tags[1],
                                   job_id=tags[0], phase=phase))
        return owned
