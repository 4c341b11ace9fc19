"""Azure adapter: one VM per node, through `azure-mgmt-compute` (`ComputeManagementClient`).

API calls (each with `connection_timeout`/`read_timeout`; the client is built with `retry_total=0`, so
azure-core never sleeps and retries inside a task: the Celery task owns retries):
- launch: per node, `virtualMachines.get` by name; if it is 404, `virtualMachines.createOrUpdate` (PUT)
  started with `polling=False`: the long-running operation is not waited on.
- statuses / list_ours: ONE `virtualMachines.list` of the resource group with `$expand=instanceView`
  (provisioning and power state of every VM in the same answer; ARM pages long lists, one call per page).
- status: `virtualMachines.get` with `$expand=instanceView`, one per node.
- cancel: `virtualMachines.delete` per node, `polling=False`; 404 (or ARM's 204 for a missing VM) is silent.
- quote: `catalog_quote`. The Azure Retail Prices API is plain REST outside this SDK; not called.

Choices:
- Idempotency: node i is VM `cs-<key slug>-<sha256(key)[:12]>-<i>` in `resource_group`. A PUT by name can
  only ever make one VM of that name, so concurrent or retried launches cannot make a second one; the GET
  first adopts an existing VM instead of re-PUTting it (a PUT is an update that may change or fail on a
  running VM). An existing VM of that name with another key tag is refused.
- Tags: `TAG` = the exact key, `TAG_JOB` = the job id (tag values take any text up to 256 characters).
- Spot offers: priority Spot, evictionPolicy Delete, billingProfile.maxPrice -1 (pay up to on-demand,
  never evicted for price). An evicted VM is deleted, so a Spot VM that is gone (or being deleted) reads as
  PREEMPTED; Azure's compute API keeps no trace that tells eviction from a deletion by someone else (the
  Activity Log, another package, would). The use case knows which deletions it asked for.
- Network: the NIC is created with the VM and deleted with it (`networkInterfaceConfigurations`, needs
  `subnet_id`); os disk deleted with the VM too, so `cancel` leaves nothing behind. Image: Microsoft's
  Ubuntu HPC image (NVIDIA drivers, InfiniBand, Docker); SSH key login only (`ssh_public_key`).
- The job: cloud-init custom data runs the command once (`bootstrap.job_command`: in `docker run --gpus all`
  if the request names an image) and powers the VM off. With `identity_id` (a user-assigned identity allowed
  to write tags on the resource group) it first merges tag `cloudsched-exit=<code>` on its VM. A powered-off
  VM still holds (and bills) its hardware until `cancel`: the reconcile loop cancels ended launches.
- Phases: provisioningState Failed (e.g. AllocationFailed) -> FAILED with Azure's code; Deleting ->
  PREEMPTED (Spot) or CANCELLED; PowerState starting/unknown or no power state yet -> PENDING;
  running/stopping -> RUNNING; stopped/deallocating/deallocated -> SUCCEEDED or FAILED by the exit tag,
  FAILED without one; a missing VM -> GONE (PREEMPTED for Spot). Several nodes combine as on GCP
  (`bootstrap.combine`): any PREEMPTED, else FAILED, else CANCELLED, else PENDING, else RUNNING, else
  SUCCEEDED; some nodes missing -> FAILED.
- Several nodes: a launch that fails at node k leaves VMs 0..k-1 with our tags; `list_ours` reports them
  (one Owned per key), so the reconcile loop can cancel a launch it does not track.
- Errors: `translate` is the one place SDK errors become our tree; programming errors are not caught.
"""

from __future__ import annotations

import base64
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.compute import ComputeManagementClient

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
from workers.providers.marketplace import retry_after

NAME = "azure"
DEFAULT_IMAGE = {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"}
NETWORK_API_VERSION = "2020-11-01"  # the first that lets a VM create its own NIC
_CAPACITY = {"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
             "OverconstrainedZonalAllocationRequest"}
T = TypeVar("T")


# -- errors: the one place ------------------------------------------------------------------

def _codes(exc: HttpResponseError) -> list[str]:
    """ARM's error code and the codes of its details (a quota refusal can hide in a detail)."""
    if exc.error is None:
        return []
    return [c for c in [exc.error.code, *(d.code for d in exc.error.details or [])] if c]


def translate(exc: Exception) -> ProviderError:
    """An azure-core / azure-identity error as ours."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientAuthenticationError):
        return AuthFailed(f"credentials: {exc.message}", provider=NAME)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return Transient(f"connection failed: {exc.message}", provider=NAME)
    if not isinstance(exc, HttpResponseError) or exc.status_code is None:
        return Transient(f"{type(exc).__name__}: {exc}", provider=NAME)
    codes, status = _codes(exc), exc.status_code
    message = f"HTTP {status} {'/'.join(codes)}: {exc.error.message if exc.error else exc.reason}"
    if status == 429:
        header = exc.response.headers.get("Retry-After") if exc.response is not None else None
        return Throttled(message, provider=NAME, retry_after_s=retry_after(header))  # seconds or an HTTP date
    if "QuotaExceeded" in codes or ("OperationNotAllowed" in codes and "quota" in message.lower()):
        return QuotaExceeded(message, provider=NAME)
    if _CAPACITY & set(codes):
        return NoCapacity(message, provider=NAME)
    if status in (401, 403):
        return AuthFailed(message, provider=NAME)
    if status >= 500:
        return Transient(message, provider=NAME)
    return InvalidRequest(message, provider=NAME)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except AzureError as exc:
        raise translate(exc) from exc


# -- the job on the VM ----------------------------------------------------------------------

_REPORT = """python3 - "$code" "$identity" <<'PY' || true
import json, sys, urllib.request as u
imds = "http://169.254.169.254/metadata/"
get = lambda p: u.urlopen(u.Request(imds + p, headers={"Metadata": "true"})).read().decode()
token = json.loads(get("identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
                       "&msi_res_id=" + sys.argv[2]))["access_token"]
vm = get("instance/compute/resourceId?api-version=2021-02-01&format=text")
body = {"operation": "Merge", "properties": {"tags": {"cloudsched-exit": sys.argv[1]}}}
u.urlopen(u.Request("https://management.azure.com%s/providers/Microsoft.Resources/tags/default"
                    "?api-version=2021-04-01" % vm, json.dumps(body).encode(),
                    {"Authorization": "Bearer " + token, "Content-Type": "application/json"}, method="PATCH"))
PY"""


def boot_script(req: LaunchRequest, identity_id: str | None, node: int = 0) -> str:
    """cloud-init runs it once: the job, then (with an identity) the exit-code tag, then power-off."""
    report = [f"identity={shlex.quote(identity_id)}", _REPORT] if identity_id else []
    return job_script(job_command(req, node), report=report, power_off="poweroff")


# -- the adapter ----------------------------------------------------------------------------

class AzureProvider:
    name = NAME

    def __init__(self, subscription_id: str | None = None, *, resource_group: str = "cloudsched",
                 subnet_id: str | None = None, ssh_public_key: str | None = None, admin_username: str = "cloudsched",
                 image: dict[str, str] | None = None, disk_gb: int = 256, identity_id: str | None = None,
                 accelerated_networking: bool = True, credential: Any = None, timeout: float = CALL_TIMEOUT_S,
                 **client_kwargs: Any):
        subscription_id = subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not subscription_id:
            raise InvalidRequest("no subscription: pass subscription_id= or set AZURE_SUBSCRIPTION_ID", provider=NAME)
        if credential is None:
            from azure.identity import DefaultAzureCredential  # production only; tests pass a credential

            credential = DefaultAzureCredential()
        self.resource_group, self.subnet_id, self.ssh_public_key = resource_group, subnet_id, ssh_public_key
        self.admin_username, self.image, self.disk_gb = admin_username, dict(image or DEFAULT_IMAGE), disk_gb
        self.identity_id, self.accelerated_networking = identity_id, accelerated_networking
        self._timeouts = {"connection_timeout": timeout, "read_timeout": timeout}
        client = ComputeManagementClient(credential, subscription_id, retry_total=0, **client_kwargs)
        self._vms = client.virtual_machines

    def _call(self, method: Callable[..., T], *args: Any, missing_ok: bool = False, **kwargs: Any) -> T | None:
        """One API call with our timeouts, errors translated; 404 returns None when `missing_ok`."""
        with _translated():
            try:
                return method(*args, **kwargs, **self._timeouts)
            except ResourceNotFoundError:
                if missing_ok:
                    return None
                raise

    # launch -------------------------------------------------------------------------------

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        if not (self.subnet_id and self.ssh_public_key):
            raise InvalidRequest("subnet_id and ssh_public_key must be configured to launch", provider=NAME)
        base = vm_base(idempotency_key)
        for node in range(placement.nodes):
            name = f"{base}-{node}"
            found = self._call(self._vms.get, self.resource_group, name, missing_ok=True)
            if found is None:
                self._call(self._vms.begin_create_or_update, self.resource_group, name,
                           self._vm(placement, idempotency_key, name, node), polling=False)
            elif (found.tags or {}).get(TAG) != idempotency_key:
                raise InvalidRequest(f"VM {name} exists and does not carry key {idempotency_key!r}", provider=NAME)
        return Handle(provider=NAME, id=base, region=placement.offer.region,
                      extra={"resource_group": self.resource_group, "nodes": placement.nodes, "spot": placement.spot})

    def _vm(self, req: LaunchRequest, key: str, name: str, node: int) -> dict[str, Any]:
        ip = {"name": "ipconfig1", "properties": {"subnet": {"id": self.subnet_id}}}
        nic = {"name": f"{name}-nic", "properties": {"primary": True, "deleteOption": "Delete",
                                                     "enableAcceleratedNetworking": self.accelerated_networking,
                                                     "ipConfigurations": [ip]}}
        ssh = {"path": f"/home/{self.admin_username}/.ssh/authorized_keys", "keyData": self.ssh_public_key}
        script = boot_script(req, self.identity_id, node)
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": instance_type(req.offer)},
            "storageProfile": {"imageReference": self.image, "osDisk": {
                "createOption": "FromImage", "deleteOption": "Delete", "diskSizeGB": self.disk_gb,
                "managedDisk": {"storageAccountType": "Premium_LRS"}}},
            "osProfile": {"computerName": name, "adminUsername": self.admin_username,
                          "customData": base64.b64encode(script.encode()).decode(),
                          "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [ssh]}}},
            "networkProfile": {"networkApiVersion": NETWORK_API_VERSION, "networkInterfaceConfigurations": [nic]},
        }
        if req.spot:
            properties.update(priority="Spot", evictionPolicy="Delete", billingProfile={"maxPrice": -1})
        body = {"location": req.offer.region, "tags": {TAG: key, TAG_JOB: req.job_id}, "properties": properties}
        if self.identity_id:
            body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {self.identity_id: {}}}
        return body

    # track --------------------------------------------------------------------------------

    def _ours(self, resource_group: str) -> dict[str, Any]:
        """Our VMs of a resource group by name, with their instance view: one list call (all its pages)."""
        with _translated():
            pages = self._vms.list(resource_group, expand="instanceView", **self._timeouts)
            return {vm.name: vm for vm in pages if TAG in (vm.tags or {})}

    def _rg(self, handle: Handle) -> str:
        """The resource group a launch's VMs are in (the one configured when it was launched)."""
        return handle.extra.get("resource_group", self.resource_group)

    def status(self, handle: Handle) -> Status:
        rg, spot = self._rg(handle), bool(handle.extra.get("spot"))
        return combine([_node_status(self._call(self._vms.get, rg, name, missing_ok=True, expand="instanceView"),
                                     spot) for name in node_names(handle)])

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        handles = list(handles)
        vms = {(rg, name): vm for rg in sorted({self._rg(h) for h in handles}) for name, vm in self._ours(rg).items()}
        return {h.id: combine([_node_status(vms.get((self._rg(h), name)), bool(h.extra.get("spot")))
                               for name in node_names(h)]) for h in handles}

    def cancel(self, handle: Handle) -> None:
        for name in node_names(handle):
            self._call(self._vms.begin_delete, self._rg(handle), name, missing_ok=True, polling=False)

    def quote(self, offer: Offer) -> Quote:
        return catalog_quote(offer)

    def list_ours(self) -> list[Owned]:
        owned = []
        for base, nodes in by_launch(self._ours(self.resource_group)).items():
            spot = nodes[0].properties.priority == "Spot"
            status = combine([_node_status(vm, spot) for vm in nodes])
            if not status.phase.ended:
                handle = Handle(provider=NAME, id=base, region=nodes[0].location,
                                extra={"resource_group": self.resource_group, "nodes": len(nodes), "spot": spot})
                owned.append(Owned(handle=handle, idempotency_key=nodes[0].tags[TAG],
                                   job_id=nodes[0].tags.get(TAG_JOB, ""), phase=status.phase,
                                   created_at=nodes[0].properties.time_created))
        return owned


def _node_status(vm: Any, spot: bool) -> Status:
    if vm is None:
        return Status(Phase.PREEMPTED, "spot VM gone: evicted (or deleted)") if spot \
            else Status(Phase.GONE, "no such VM")
    props = vm.properties
    view = props.instance_view
    codes = [s.code for s in (view.statuses if view and view.statuses else []) if s.code]
    power = next((c.removeprefix("PowerState/") for c in codes if c.startswith("PowerState/")), "")
    state = props.provisioning_state or ""
    if state == "Failed" or any(c.startswith("ProvisioningState/failed") for c in codes):
        failed = next((c for c in codes if c.startswith("ProvisioningState/failed")), "ProvisioningState/failed")
        return Status(Phase.FAILED, f"provisioning failed: {failed.removeprefix('ProvisioningState/failed/')}")
    if state == "Deleting":
        return Status(Phase.PREEMPTED if spot else Phase.CANCELLED, "being deleted")
    if power in ("running", "stopping"):
        return Status(Phase.RUNNING, f"PowerState/{power}")
    if power in ("stopped", "deallocating", "deallocated"):
        code = (vm.tags or {}).get(EXIT_TAG)
        if code is None:
            return Status(Phase.FAILED, f"PowerState/{power} without an exit code")
        return reported_exit(code)
    return Status(Phase.PENDING, f"{state} {power}".strip())

