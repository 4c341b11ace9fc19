"""Google Compute Engine adapter: one VM per node, through `google-cloud-compute` (REST transport).

API calls (all with `timeout=` and `retry=None`: the Celery task owns retries):
- launch: `instances.insert` per node (`insert_unary`: the Operation is not waited on); on 409 it adopts
  the instance by `instances.get`.
- status / statuses / list_ours: ONE `instances.aggregatedList` filtered on our label (pages of up to 500),
  plus at most ONE `globalOperations.aggregatedList` filtered on `compute.instances.preempted`, made only
  when a Spot node is TERMINATED without having reported an exit code. Not one call per job.
- cancel: `instances.delete` per node, not waited on; 404 is silent.
- quote: `catalog_quote` (the Compute API has no prices; the Cloud Billing Catalog is another package).

Choices:
- Idempotency: node i's instance name is `cs-<key slug>-<sha256(key)[:12]>-<i>` (`bootstrap.vm_base`, as
  on Azure) and its `requestId` is uuid5(key#i): a retry within GCP's request-id window returns the same
  Operation, a later one hits 409 alreadyExists and adopts the instance found under that name (names are
  unique per zone, so the zone is deterministic too). An existing instance with that name but another key
  label is refused.
- Labels `TAG`/`TAG_JOB` hold the key and job id encoded for label values (lowercase [a-z0-9_-]{0,63}:
  kept as is if they already fit, else a slug plus a hash); the exact strings ride in metadata items
  `cloudsched-key`/`cloudsched-job`, which `list_ours` reads back.
- Zone: `zones={region: zone}` wins; else the alphabetically first zone where the packaged GCP price file
  (the catalog's own source) lists the offer's machine type (or, for n1 offers, its GPU) in that region.
- Machine: accelerator-optimized types (a2, a3, a4, g2) carry their GPUs; catalog n1 offers
  (`n1-standard-8-t4x1`) become machine `n1-standard-8` + guest accelerator `nvidia-tesla-t4` x1.
  GPUs cannot live-migrate, so onHostMaintenance=TERMINATE.
- Spot offers: provisioningModel SPOT, instanceTerminationAction STOP (not DELETE), so a preempted VM
  stays as TERMINATED and its preemption can be read back; `cancel` (the reconcile loop) deletes it.
- The job: a startup script runs the command once (`bootstrap.job_command`: in `docker run --gpus all` when
  the request names an image), writes its exit code into label `cloudsched-exit` (setLabels with the VM's
  service account, cloud-platform scope), then powers off. TERMINATED + that label -> SUCCEEDED or FAILED;
  TERMINATED without it -> PREEMPTED if a `compute.instances.preempted` operation names it, else FAILED. A
  TERMINATED instance still bills its disk until `cancel`: the reconcile loop cancels ended launches.
- Several nodes: a launch that fails at node k leaves nodes 0..k-1 running with our labels; `list_ours`
  reports them (one Owned per key), so the reconcile loop can cancel a launch it does not track.
- An insert whose Operation fails later (a stockout is usually reported there, not on the insert) leaves
  no instance: the launch then reads as GONE. The adapter does not fetch the Operation's error.
- Phases: PROVISIONING/STAGING/PENDING/REPAIRING -> PENDING; RUNNING/STOPPING/PENDING_STOP/DEPROVISIONING
  -> RUNNING (not ended until TERMINATED); SUSPENDING/SUSPENDED -> FAILED (we never suspend); a missing
  instance -> GONE. Several nodes (`bootstrap.combine`): any PREEMPTED, else FAILED, else PENDING, else
  RUNNING, else SUCCEEDED; some nodes missing -> FAILED. The list call does not ask for partial success,
  so an unreachable zone fails the call (Transient) instead of making its instances look GONE.
- Errors: `translate` is the one place SDK errors become our tree; programming errors are not caught.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import compute_v1

from scheduler.models import Offer
from workers.providers.base import (
    CALL_TIMEOUT_S,
    TAG,
    TAG_JOB,
    AuthFailed,
    Handle,
    InvalidRequest,
    LaunchRequest,
    NoCapacity,
    Owned,
    Phase,
    ProviderError,
    QuotaExceeded,
    Quote,
    Status,
    Throttled,
    Transient,
    catalog_quote,
)
from workers.providers.bootstrap import (
    EXIT_TAG,
    by_launch,
    combine,
    instance_type,
    job_command,
    job_script,
    node_names,
    reported_exit,
    vm_base,
)

NAME = "gcp"
META_KEY, META_JOB = "cloudsched-key", "cloudsched-job"
DEFAULT_IMAGE = "projects/deeplearning-platform-release/global/images/family/common-cu129-ubuntu-2204-nvidia-580"
_REQUEST_NS = uuid.UUID("5d0c7a52-3f0e-4b8e-9a51-2c1f0b6a9e33")  # fixed: request ids must not change
_N1_GPU = re.compile(r"(n1-[a-z]+-\d+)-([a-z0-9]+)x(\d+)")
_PENDING = {"PROVISIONING", "STAGING", "PENDING", "REPAIRING"}
_NOT_YET_ENDED = {"RUNNING", "STOPPING", "PENDING_STOP", "DEPROVISIONING"}
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
T = TypeVar("T")


# -- errors: the one place ------------------------------------------------------------------

def translate(exc: Exception) -> ProviderError:
    """An SDK, auth or transport error (or a failed Operation, as `gexc.GoogleAPICallError`) as ours."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, (requests.RequestException, auth_exc.TransportError)):
        return Transient(f"connection failed: {exc}", provider=NAME)
    if isinstance(exc, auth_exc.GoogleAuthError):
        return AuthFailed(f"credentials: {exc}", provider=NAME)
    if not isinstance(exc, gexc.GoogleAPICallError):
        return Transient(f"{type(exc).__name__}: {exc}", provider=NAME)  # RetryError and other api_core errors
    found = [exc.reason, *(e.get("reason") for e in exc.errors if isinstance(e, dict))]
    reasons = {str(r).lower() for r in found if r}
    text = f"{exc.message} {' '.join(sorted(reasons))}".lower()
    message = f"HTTP {exc.code}: {exc.message}"
    if "quota_exceeded" in reasons or "quotaexceeded" in reasons or "quota_exceeded" in text:
        return QuotaExceeded(message, provider=NAME)
    if isinstance(exc, (gexc.TooManyRequests, gexc.ResourceExhausted)) or "ratelimitexceeded" in text \
            or "rate_limit_exceeded" in text:
        return Throttled(message, provider=NAME)
    if "zone_resource_pool_exhausted" in text or "does not have enough resources" in text:
        return NoCapacity(message, provider=NAME)
    if isinstance(exc, (gexc.Unauthorized, gexc.Unauthenticated, gexc.Forbidden, gexc.PermissionDenied)):
        return AuthFailed(message, provider=NAME)
    if isinstance(exc, (gexc.ServerError, gexc.DeadlineExceeded)):
        return Transient(message, provider=NAME)
    if isinstance(exc, gexc.ClientError):
        return InvalidRequest(message, provider=NAME)
    return Transient(message, provider=NAME)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (gexc.GoogleAPIError, requests.RequestException, auth_exc.GoogleAuthError) as exc:
        raise translate(exc) from exc


def _operation_error(op: compute_v1.Operation) -> gexc.GoogleAPICallError:
    """An Operation that already failed (e.g. ZONE_RESOURCE_POOL_EXHAUSTED) as the matching HTTP error."""
    errors = [{"reason": e.code, "message": e.message} for e in op.error.errors]
    text = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
    return gexc.from_http_status(op.http_error_status_code or 400, text, errors=errors)


# -- names, labels, zones -------------------------------------------------------------------

def _digest(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def label_value(text: str) -> str:
    """`text` as a GCP label value: unchanged if it fits, else a readable slug and a hash of the exact text."""
    if re.fullmatch(r"[a-z0-9_-]{0,63}", text):
        return text
    return f"{re.sub(r'[^a-z0-9_-]+', '-', text.lower())[:50]}-{_digest(text)}"


def request_id(key: str, node: int) -> str:
    return str(uuid.uuid5(_REQUEST_NS, f"{key}#{node}"))


@functools.cache
def _catalog_zones() -> dict[tuple[str, str], list[str]]:
    """(region, machine type or GPU name) -> zones, from the price file the catalog is built from."""
    text = resources.files("scheduler").joinpath("data/catalog/gcp.csv").read_text()
    zones: dict[tuple[str, str], set[str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        zones.setdefault((row["region"], row["instance_type"] or row["accelerator_name"]), set()).add(row["zone"])
    return {k: sorted(v) for k, v in zones.items()}


def _machine(offer: Offer) -> tuple[str, str | None, int]:
    """(machine type, attachable GPU type or None, GPU count) of a catalog offer."""
    machine = instance_type(offer)
    if match := _N1_GPU.fullmatch(machine):
        return match[1], f"nvidia-tesla-{match[2]}", int(match[3])
    return machine, None, 0


def _when(stamp: str) -> datetime | None:
    return datetime.fromisoformat(stamp) if stamp else None


# -- the job on the VM ----------------------------------------------------------------------

_REPORT = """python3 - "$code" <<'PY' || true
import json, sys, urllib.request as u
md = "http://metadata.google.internal/computeMetadata/v1/"
get = lambda p: u.urlopen(u.Request(md + p, headers={"Metadata-Flavor": "Google"})).read().decode()
auth = {"Authorization": "Bearer " + json.loads(get("instance/service-accounts/default/token"))["access_token"],
        "Content-Type": "application/json"}
url = "https://compute.googleapis.com/compute/v1/projects/%s/zones/%s/instances/%s" % (
    get("project/project-id"), get("instance/zone").rsplit("/", 1)[1], get("instance/name"))
vm = json.load(u.urlopen(u.Request(url, headers=auth)))
body = {"labels": {**vm.get("labels", {}), "cloudsched-exit": sys.argv[1]}, "labelFingerprint": vm["labelFingerprint"]}
u.urlopen(u.Request(url + "/setLabels", json.dumps(body).encode(), auth, method="POST"))
PY"""


def startup_script(req: LaunchRequest, node: int = 0) -> str:
    """Runs the job once (the script reruns at every boot), reports its exit code as a label, powers off."""
    once = ["[ -e /var/lib/cloudsched/done ] && exit 0", "mkdir -p /var/lib/cloudsched"]
    return job_script(job_command(req, node), setup=once, report=["touch /var/lib/cloudsched/done", _REPORT])


# -- the adapter ----------------------------------------------------------------------------

class GcpProvider:
    name = NAME

    def __init__(self, project: str | None = None, *, zones: Mapping[str, str] | None = None,
                 image: str = DEFAULT_IMAGE, network: str = "global/networks/default", subnetwork: str | None = None,
                 disk_gb: int = 200, service_account: str = "default", external_ip: bool = True,
                 credentials: Any = None, client_options: Any = None, timeout: float = CALL_TIMEOUT_S):
        with _translated():
            if credentials is None:
                credentials, default_project = google.auth.default(scopes=_SCOPES)
                project = project or default_project
        if not project:
            raise InvalidRequest("no project: pass project= or set GOOGLE_CLOUD_PROJECT", provider=NAME)
        self.project, self.zones, self.image, self.timeout = project, dict(zones or {}), image, timeout
        self.network, self.subnetwork, self.disk_gb = network, subnetwork, disk_gb
        self.service_account, self.external_ip = service_account, external_ip
        kw = {"credentials": credentials, "transport": "rest", "client_options": client_options}
        self._instances = compute_v1.InstancesClient(**kw)
        self._operations = compute_v1.GlobalOperationsClient(**kw)

    def _call(self, method: Callable[..., T], *, missing: type[Exception] | None = None, **request: Any) -> T | None:
        """One API call with our timeout, no SDK retry, errors translated; `missing` errors return None."""
        with _translated():
            try:
                return method(request=request, timeout=self.timeout, retry=None)
            except gexc.GoogleAPICallError as exc:
                if missing is not None and isinstance(exc, missing):
                    return None
                raise

    # launch -------------------------------------------------------------------------------

    def zone_for(self, offer: Offer) -> str:
        if offer.region in self.zones:
            return self.zones[offer.region]
        machine, gpu, _ = _machine(offer)
        found = _catalog_zones().get((offer.region, gpu.removeprefix("nvidia-tesla-").upper() if gpu else machine))
        if not found:
            raise InvalidRequest(f"no zone known for {offer.id}: pass zones={{{offer.region!r}: ...}}", provider=NAME)
        return found[0]

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        zone, base = self.zone_for(placement.offer), vm_base(idempotency_key)
        for node in range(placement.nodes):
            body = self._instance(placement, idempotency_key, zone, f"{base}-{node}", node)
            op = self._call(self._instances.insert_unary, missing=gexc.Conflict, project=self.project, zone=zone,
                            instance_resource=body, request_id=request_id(idempotency_key, node))
            if op is None:
                self._adopt(zone, body.name, idempotency_key)
            elif op.error.errors:
                raise translate(_operation_error(op))
        return Handle(provider=NAME, id=base, region=placement.offer.region,
                      extra={"zone": zone, "nodes": placement.nodes, "label": label_value(idempotency_key)})

    def _adopt(self, zone: str, name: str, key: str) -> None:
        """409 on insert: the instance exists. Ours (same key label) is the idempotent answer."""
        found = self._call(self._instances.get, missing=gexc.NotFound, project=self.project, zone=zone, instance=name)
        if found is None:
            raise Transient(f"{name} exists (409) but is not found: being deleted?", provider=NAME)
        if found.labels.get(TAG) != label_value(key):
            raise InvalidRequest(f"instance {name} exists and does not carry key {key!r}", provider=NAME)

    def _instance(self, req: LaunchRequest, key: str, zone: str, name: str, node: int) -> compute_v1.Instance:
        machine, gpu, count = _machine(req.offer)
        items = {META_KEY: key, META_JOB: req.job_id, "startup-script": startup_script(req, node),
                 "install-nvidia-driver": "True"}
        nic = compute_v1.NetworkInterface(network=self.network, subnetwork=self.subnetwork, access_configs=[
            compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")] if self.external_ip else [])
        scheduling = compute_v1.Scheduling(on_host_maintenance="TERMINATE", automatic_restart=not req.spot,
                                           provisioning_model="SPOT" if req.spot else "STANDARD")
        if req.spot:
            scheduling.instance_termination_action = "STOP"
        boot = compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.
                                       AttachedDiskInitializeParams(source_image=self.image, disk_size_gb=self.disk_gb))
        return compute_v1.Instance(
            name=name, machine_type=f"zones/{zone}/machineTypes/{machine}",
            labels={TAG: label_value(key), TAG_JOB: label_value(req.job_id)},
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in items.items()]),
            disks=[boot], network_interfaces=[nic], scheduling=scheduling,
            guest_accelerators=[compute_v1.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{gpu}", accelerator_count=count)] if gpu else [],
            service_accounts=[compute_v1.ServiceAccount(email=self.service_account, scopes=_SCOPES)],
        )

    # track --------------------------------------------------------------------------------

    def _ours(self, label: str | None = None) -> dict[str, compute_v1.Instance]:
        """Our instances by name: one aggregatedList (all its pages)."""
        flt = f'labels.{TAG} = "{label}"' if label else f"labels.{TAG}:*"
        with _translated():
            pages = self._instances.aggregated_list(request={"project": self.project, "filter": flt},
                                                    timeout=self.timeout, retry=None)
            return {vm.name: vm for _, scoped in pages for vm in scoped.instances}

    def _preempted(self, vms: Iterable[compute_v1.Instance]) -> set[str]:
        """Names of the given instances that GCP preempted: one operations call, only if any may be."""
        if not any(vm.status == "TERMINATED" and vm.scheduling.provisioning_model == "SPOT"
                   and EXIT_TAG not in vm.labels for vm in vms):
            return set()
        with _translated():
            pages = self._operations.aggregated_list(
                request={"project": self.project, "filter": 'operationType = "compute.instances.preempted"'},
                timeout=self.timeout, retry=None)
            return {op.target_link.rsplit("/", 1)[-1] for _, scoped in pages for op in scoped.operations}

    def status(self, handle: Handle) -> Status:
        return self._statuses([handle], label=handle.extra.get("label"))[handle.id]

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        return self._statuses(list(handles))

    def _statuses(self, handles: list[Handle], label: str | None = None) -> dict[str, Status]:
        if not handles:
            return {}
        vms = self._ours(label)
        preempted = self._preempted(vms.values())
        return {h.id: combine([_node_status(vms.get(name), preempted) for name in node_names(h)]) for h in handles}

    def cancel(self, handle: Handle) -> None:
        zone = handle.extra.get("zone") or self.zones.get(handle.region)
        if not zone:
            raise InvalidRequest(f"handle {handle.id} names no zone", provider=NAME)
        for name in node_names(handle):
            self._call(self._instances.delete_unary, missing=gexc.NotFound, project=self.project, zone=zone,
                       instance=name)

    def quote(self, offer: Offer) -> Quote:
        return catalog_quote(offer)

    def list_ours(self) -> list[Owned]:
        vms = self._ours()
        preempted = self._preempted(vms.values())
        owned = []
        for base, nodes in by_launch(vms).items():
            meta = {item.key: item.value for item in nodes[0].metadata.items}
            status = combine([_node_status(vm, preempted) for vm in nodes])
            if not status.phase.ended:
                zone = nodes[0].zone.rsplit("/", 1)[-1]
                handle = Handle(provider=NAME, id=base, region=zone.rsplit("-", 1)[0],
                                extra={"zone": zone, "nodes": len(nodes), "label": nodes[0].labels.get(TAG, "")})
                owned.append(Owned(handle=handle, idempotency_key=meta.get(META_KEY, nodes[0].labels.get(TAG, "")),
                                   job_id=meta.get(META_JOB, nodes[0].labels.get(TAG_JOB, "")), phase=status.phase,
                                   created_at=_when(nodes[0].creation_timestamp)))
        return owned


def _node_status(vm: compute_v1.Instance | None, preempted: set[str]) -> Status:
    if vm is None:
        return Status(Phase.GONE, "no such instance")
    started, message = _when(vm.last_start_timestamp), f"{vm.status} {vm.status_message}".strip()
    if vm.status in _PENDING:
        return Status(Phase.PENDING, message)
    if vm.status in _NOT_YET_ENDED:
        return Status(Phase.RUNNING, message, started_at=started)
    ended = _when(vm.last_stop_timestamp) or _when(vm.last_suspended_timestamp)
    if vm.status == "TERMINATED" and EXIT_TAG in vm.labels:
        return reported_exit(vm.labels[EXIT_TAG], started_at=started, ended_at=ended)
    if vm.status == "TERMINATED" and vm.name in preempted:
        return Status(Phase.PREEMPTED, "preempted (compute.instances.preempted)", started_at=started, ended_at=ended)
    return Status(Phase.FAILED, f"{message}: stopped without reporting an exit code", started_at=started,
                  ended_at=ended)

