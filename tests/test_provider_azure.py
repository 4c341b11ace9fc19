"""The Azure adapter against a replayed Azure Resource Manager.

The real `ComputeManagementClient` runs its whole pipeline (auth with a static fake TokenCredential,
serialization, error mapping) and hands each request to `FakeArm`, an azure-core `HttpTransport` that
answers from the recorded bodies in tests/recordings/azure/ (written from the documented ARM JSON, see its
README), records every request with its keyword arguments, and keeps a tiny server state (VMs by name).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict
from provider_support import JOB, catalog_offer, launch_request, recording
from provider_support import VM_KEY as KEY

from workers.providers import azure
from workers.providers.base import (
    CALL_TIMEOUT_S,
    TAG,
    TAG_JOB,
    AuthFailed,
    Handle,
    InvalidRequest,
    LaunchRequest,
    NoCapacity,
    Phase,
    Provider,
    QuotaExceeded,
    Throttled,
    Transient,
)

SUBSCRIPTION, RG = "00000000-0000-0000-0000-00000000c10d", "cloudsched-test"
SUBNET = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/gpu"
VM_PATH = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines"
                     r"(?:/([^/]+))?")


def recorded(name: str) -> dict:
    return recording("azure", name)


def filled(body: dict, **names: str) -> dict:
    text = json.dumps(body)
    for placeholder, value in {"SUBSCRIPTION": SUBSCRIPTION, "RESOURCE_GROUP": RG, **names}.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


class Replayed(HttpResponseImpl):
    """A complete (not streamed) azure-core response."""

    def __init__(self, request, status: int, body: dict | None, headers: dict | None = None, text: str | None = None):
        kind = "text/html" if text is not None else "application/json"
        super().__init__(request=request, internal_response=None, status_code=status, reason="replayed",
                         content_type=kind, stream_download_generator=None,
                         headers=case_insensitive_dict({"Content-Type": kind, **(headers or {})}))
        self._content = text.encode() if text is not None else json.dumps(body).encode() if body is not None else b""

    def close(self) -> None:
        self._is_closed = True


@dataclass
class Seen:
    method: str
    url: str
    body: dict | None
    kwargs: dict
    headers: dict


class FakeArm(HttpTransport):
    """Microsoft.Compute/virtualMachines of one subscription, as far as the adapter uses them."""

    def __init__(self):
        self.vms: dict[tuple[str, str], dict] = {}  # (resource group, name) -> VM JSON, instanceView apart
        self.views: dict[tuple[str, str], str] = {}  # -> a key of instance_views.json
        self.seen: list[Seen] = []
        self.fail: dict[str, list[str]] = {}  # method -> recorded error names for its next requests
        self.drop_next_put_response = False
        self.hide_next_get = False

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method in (None, s.method)]

    def _error(self, request, name: str, vm: str = "n"):
        error = filled(recorded("errors.json")[name], NAME=vm)
        return Replayed(request, error["status"], error.get("body"), error.get("headers"), error.get("text"))

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        body = json.loads(request.content) if request.content else None
        self.seen.append(Seen(request.method, request.url, body, kwargs, dict(request.headers)))
        match = VM_PATH.fullmatch(url.path)
        assert match and match[1] == SUBSCRIPTION, request.url
        rg, name = match[2], match[3]
        if self.fail.get(request.method):
            return self._error(request, self.fail[request.method].pop(0), name or "n")
        expand = parse_qs(url.query).get("$expand") == ["instanceView"]
        if name is None:
            page = recorded("vm_list.json")
            page["value"] = [self._view((g, n), expand) for (g, n) in self.vms if g == rg]
            return Replayed(request, 200, page)
        return getattr(self, request.method.lower())(request, (rg, name), body, expand)

    def _view(self, at: tuple[str, str], expand: bool) -> dict:
        vm = copy.deepcopy(self.vms[at])
        if expand:
            vm["properties"]["instanceView"] = recorded("instance_views.json")[self.views[at]]
        return vm

    def get(self, request, at, body, expand):
        if at not in self.vms or self.hide_next_get:
            self.hide_next_get = False
            return self._error(request, "resource_not_found", at[1])
        return Replayed(request, 200, self._view(at, expand))

    def put(self, request, at, body, expand):
        created = at not in self.vms
        vm = filled(recorded("vm.json"), NAME=at[1], LOCATION=body["location"], VM_ID=str(uuid.uuid4()),
                    VM_SIZE=body["properties"]["hardwareProfile"]["vmSize"]) if created else self.vms[at]
        vm["tags"] = body.get("tags", {})
        vm["properties"].update({k: v for k, v in body["properties"].items()
                                 if k in ("priority", "evictionPolicy", "billingProfile")})
        self.vms[at] = vm
        self.views.setdefault(at, "creating")
        if self.drop_next_put_response:
            self.drop_next_put_response = False
            raise ServiceResponseError("connection reset by peer (after the server acted)")
        operation = f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/" \
                    f"locations/{body['location']}/operations/{uuid.uuid4()}?api-version=2024-07-01"
        return Replayed(request, 201 if created else 200, vm, {"Azure-AsyncOperation": operation})

    def delete(self, request, at, body, expand):
        if self.vms.pop(at, None) is None:
            return Replayed(request, 204, None)  # ARM: deleting what does not exist is 204 No Content
        return Replayed(request, 202, None, {"Location": "https://management.azure.com/operationResults/x"})

    # what Azure itself does to VMs
    def set(self, name: str, view: str, exit_code: str | None = None, state: str = "Succeeded") -> None:
        self.views[(RG, name)] = view
        self.vms[(RG, name)]["properties"]["provisioningState"] = state
        if exit_code is not None:
            self.vms[(RG, name)]["tags"][azure.EXIT_TAG] = exit_code


class StaticToken:
    """A TokenCredential that never calls out."""

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture
def arm() -> FakeArm:
    return FakeArm()


def make(arm: FakeArm, **options) -> azure.AzureProvider:
    settings = {"resource_group": RG, "subnet_id": SUBNET, "ssh_public_key": "ssh-ed25519 AAAAC3Nza test"} | options
    return azure.AzureProvider(SUBSCRIPTION, credential=StaticToken(), transport=arm, **settings)


@pytest.fixture
def provider(arm) -> azure.AzureProvider:
    return make(arm)


H100_SPOT = "azure:eastus:Standard_ND96isr_H100_v5:spot"
H100 = "azure:eastus:Standard_ND96isr_H100_v5:on-demand"


def request(offer_id: str = H100_SPOT, nodes: int = 1) -> LaunchRequest:
    return launch_request(catalog_offer(offer_id), nodes=nodes, name="train", run_hours=2.0,
                          image="nvcr.io/nvidia/pytorch:24.04-py3", command=["torchrun", "train.py"],
                          env={"NCCL_DEBUG": "INFO"})


# -- launch ---------------------------------------------------------------------------------


def test_is_a_provider(provider):
    assert isinstance(provider, Provider) and provider.name == "azure"


def test_launch_is_one_put_with_our_tags_and_spot_settings_and_does_not_wait(arm, provider):
    handle = provider.launch(request(), KEY)

    (put,) = arm.requests("PUT")
    assert [s.method for s in arm.seen] == ["GET", "PUT"]  # no polling of the long-running operation
    name = f"{azure.vm_base(KEY)}-0"
    assert put.url.split("?")[0].endswith(f"/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
    assert put.body["tags"] == {TAG: KEY, TAG_JOB: JOB}
    assert put.body["location"] == "eastus"
    props = put.body["properties"]
    assert props["hardwareProfile"] == {"vmSize": "Standard_ND96isr_H100_v5"}
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == ("Spot", "Delete", {"maxPrice": -1})
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
    assert nic["ipConfigurations"][0]["properties"]["subnet"] == {"id": SUBNET} and nic["deleteOption"] == "Delete"
    assert props["storageProfile"]["imageReference"] == azure.DEFAULT_IMAGE
    script = base64.b64decode(props["osProfile"]["customData"]).decode()
    assert "docker run --rm --gpus all" in script and script.rstrip().endswith("poweroff")
    assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert all(s.kwargs["connection_timeout"] == CALL_TIMEOUT_S == s.kwargs["read_timeout"] for s in arm.seen)
    assert all(s.headers["Authorization"] == "Bearer fake-token" for s in arm.seen)
    assert handle == Handle(provider="azure", id=azure.vm_base(KEY), region="eastus",
                            extra={"resource_group": RG, "nodes": 1, "spot": True})


def test_on_demand_launch_has_no_spot_settings(arm, provider):
    provider.launch(request(H100), KEY)
    props = arm.requests("PUT")[0].body["properties"]
    assert not {"priority", "evictionPolicy", "billingProfile"} & set(props)


def test_launch_twice_with_the_same_key_is_one_vm_and_the_same_handle(arm, provider):
    assert provider.launch(request(), KEY) == provider.launch(request(), KEY)
    assert len(arm.vms) == 1 and len(arm.requests("PUT")) == 1


def test_lost_response_is_transient_and_the_retry_finds_the_same_vm(arm, provider):
    arm.drop_next_put_response = True
    with pytest.raises(Transient):
        provider.launch(request(), KEY)
    assert len(arm.vms) == 1  # the server did act
    handle = provider.launch(request(), KEY)
    assert len(arm.vms) == 1 and (RG, f"{handle.id}-0") in arm.vms
    assert len(arm.requests("PUT")) == 1  # the retry found it: no second PUT


def test_a_racing_second_put_lands_on_the_same_vm_by_name(arm, provider):
    first = provider.launch(request(), KEY)
    arm.hide_next_get = True  # another worker looked before the first PUT landed
    assert provider.launch(request(), KEY) == first
    assert len(arm.requests("PUT")) == 2 and len(arm.vms) == 1


def test_negative_control_random_names_make_two_vms(arm, provider, monkeypatch):
    """The checks above can fail: without a name derived from the key, a retry is a second VM."""
    monkeypatch.setattr(azure, "vm_base", lambda key: f"cs-{uuid.uuid4().hex[:12]}")
    arm.drop_next_put_response = True
    with pytest.raises(Transient):
        provider.launch(request(), KEY)
    provider.launch(request(), KEY)
    assert len(arm.vms) == 2


def test_an_existing_vm_of_another_key_is_refused(arm, provider):
    handle = provider.launch(request(), KEY)
    arm.vms[(RG, f"{handle.id}-0")]["tags"][TAG] = "someone-else"
    with pytest.raises(InvalidRequest, match="does not carry key"):
        provider.launch(request(), KEY)
    assert len(arm.requests("PUT")) == 1


def test_launch_without_network_settings_is_refused_before_any_call(arm):
    with pytest.raises(InvalidRequest, match="subnet_id"):
        make(arm, subnet_id=None).launch(request(), KEY)
    assert arm.seen == []


def test_multi_node_launch_is_one_vm_per_node_with_its_rank(arm, provider):
    handle = provider.launch(request(H100, nodes=3), KEY)
    assert sorted(n for _, n in arm.vms) == [f"{handle.id}-{i}" for i in range(3)] and handle.extra["nodes"] == 3
    scripts = [base64.b64decode(s.body["properties"]["osProfile"]["customData"]).decode() for s in arm.requests("PUT")]
    assert all(f"-e CLOUDSCHED_NODE_RANK={i} " in s and "-e CLOUDSCHED_NODES=3 " in s for i, s in enumerate(scripts))


# -- status ---------------------------------------------------------------------------------


def test_statuses_of_several_jobs_is_one_list_call_with_instance_view(arm, provider):
    handles = [provider.launch(request(H100), f"key-{i}") for i in range(5)]
    arm.set(f"{handles[0].id}-0", "running")
    arm.seen.clear()
    result = provider.statuses(handles)
    (call,) = arm.seen
    assert call.method == "GET" and urlsplit(call.url).path.endswith("/virtualMachines")
    assert parse_qs(urlsplit(call.url).query)["$expand"] == ["instanceView"]
    assert call.kwargs["read_timeout"] == CALL_TIMEOUT_S
    assert [result[h.id].phase for h in handles] == [Phase.RUNNING] + [Phase.PENDING] * 4


@pytest.mark.parametrize(("offer_id", "view", "exit_code", "state", "phase"), [
    (H100, "creating", None, "Creating", Phase.PENDING),
    (H100, "starting", None, "Creating", Phase.PENDING),
    (H100, "running", None, "Succeeded", Phase.RUNNING),
    (H100, "stopping", None, "Succeeded", Phase.RUNNING),
    (H100, "stopped", "0", "Succeeded", Phase.SUCCEEDED),
    (H100, "deallocated", "0", "Succeeded", Phase.SUCCEEDED),
    (H100, "stopped", "2", "Succeeded", Phase.FAILED),
    (H100, "stopped", None, "Succeeded", Phase.FAILED),
    (H100, "allocation_failed", None, "Failed", Phase.FAILED),
    (H100, "deleting", None, "Deleting", Phase.CANCELLED),
    (H100_SPOT, "deleting", None, "Deleting", Phase.PREEMPTED),
])
def test_state_mapping(arm, provider, offer_id, view, exit_code, state, phase):
    handle = provider.launch(request(offer_id), KEY)
    arm.set(f"{handle.id}-0", view, exit_code, state)
    listed = provider.statuses([handle])[handle.id]
    single = provider.status(handle)
    assert listed == single and listed.phase is phase
    if exit_code is not None:
        assert listed.exit_code == int(exit_code)
    if view == "allocation_failed":
        assert "AllocationFailed" in listed.message


def test_a_missing_vm_is_gone_or_for_spot_preempted(arm, provider):
    on_demand, spot = provider.launch(request(H100), "a"), provider.launch(request(H100_SPOT), "b")
    arm.vms.clear()
    result = provider.statuses([on_demand, spot])
    assert result[on_demand.id].phase is Phase.GONE and result[spot.id].phase is Phase.PREEMPTED
    assert provider.status(on_demand).phase is Phase.GONE


def test_status_of_one_reads_each_node_with_its_instance_view(arm, provider):
    handle = provider.launch(request(H100, nodes=2), KEY)
    arm.set(f"{handle.id}-0", "running")
    arm.set(f"{handle.id}-1", "running")
    arm.seen.clear()
    assert provider.status(handle).phase is Phase.RUNNING
    assert [urlsplit(s.url).path.rsplit("/", 1)[-1] for s in arm.seen] == [f"{handle.id}-0", f"{handle.id}-1"]
    assert all(parse_qs(urlsplit(s.url).query)["$expand"] == ["instanceView"] for s in arm.seen)


def test_nodes_combine(arm, provider):
    handle = provider.launch(request(H100, nodes=2), KEY)
    arm.set(f"{handle.id}-0", "running")
    arm.set(f"{handle.id}-1", "starting", state="Creating")
    assert provider.status(handle).phase is Phase.PENDING
    arm.set(f"{handle.id}-1", "stopped", "1")
    assert provider.status(handle).phase is Phase.FAILED
    del arm.vms[(RG, f"{handle.id}-1")]
    assert provider.status(handle).message == "1 of 2 nodes are gone"


# -- cancel, quote, list_ours ---------------------------------------------------------------


def test_cancel_deletes_every_node_without_waiting_and_is_silent_when_gone(arm, provider):
    handle = provider.launch(request(H100, nodes=2), KEY)
    arm.seen.clear()
    provider.cancel(handle)
    assert [s.method for s in arm.seen] == ["DELETE", "DELETE"] and arm.vms == {}
    provider.cancel(handle)  # ARM answers 204 for a VM that is not there
    arm.fail["DELETE"] = ["resource_group_not_found"]
    provider.cancel(handle)  # and 404 when even its resource group is gone
    assert len(arm.requests("DELETE")) == 6


def test_cancel_other_errors_are_translated(arm, provider):
    handle = provider.launch(request(), KEY)
    arm.fail["DELETE"] = ["unavailable"]
    with pytest.raises(Transient):
        provider.cancel(handle)
    assert len(arm.vms) == 1


def test_quote_is_the_catalog_price(provider):
    o = catalog_offer(H100_SPOT)
    q = provider.quote(o)
    assert q.live is False and q.price_per_node_hour == o.price_per_node_hour and q.offer_id == o.id


def test_list_ours_returns_live_launches_with_their_exact_keys(arm, provider):
    odd_key = "Team/Vision:JOB#7 with spaces"
    live = provider.launch(request(), odd_key)
    ended = provider.launch(request(), KEY)
    arm.set(f"{ended.id}-0", "stopped", "0")
    arm.vms[(RG, "not-ours")] = {**copy.deepcopy(arm.vms[(RG, f"{live.id}-0")]), "name": "not-ours", "tags": {}}
    arm.views[(RG, "not-ours")] = "running"
    (owned,) = provider.list_ours()
    assert owned.idempotency_key == odd_key and owned.job_id == JOB
    assert owned.handle == live and owned.phase is Phase.PENDING and owned.created_at is not None


def test_boot_script_reports_the_exit_code_only_with_an_identity():
    identity = "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cs"
    with_identity = azure.boot_script(request(), identity)
    assert with_identity.index("code=$?") < with_identity.index("tags/default") < with_identity.index("poweroff")
    assert f"identity={identity}" in with_identity
    assert "tags/default" not in azure.boot_script(request(), None)


def test_identity_is_attached_to_the_vm(arm):
    identity = "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cs"
    make(arm, identity_id=identity).launch(request(), KEY)
    assert arm.requests("PUT")[0].body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}


def test_vm_names_are_valid_deterministic_and_distinct():
    keys = ["k", "K", "a:b", "a-b", "x" * 300, "Ünïcode/ключ", ""]
    names = [azure.vm_base(k) for k in keys]
    assert names == [azure.vm_base(k) for k in keys] and len(set(names)) == len(keys)
    assert all(re.fullmatch(r"[a-z0-9][-a-z0-9]{0,55}", n) for n in names)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("recorded_error", "expected"), [
    ("quota_operation_not_allowed", QuotaExceeded),
    ("quota_exceeded", QuotaExceeded),
    ("sku_not_available", NoCapacity),
    ("allocation_failed", NoCapacity),
    ("zonal_allocation_failed", NoCapacity),
    ("overconstrained", NoCapacity),
    ("operation_not_allowed_other", InvalidRequest),
    ("throttled", Throttled),
    ("invalid_parameter", InvalidRequest),
    ("invalid_token", AuthFailed),
    ("authorization_failed", AuthFailed),
    ("internal", Transient),
    ("unavailable", Transient),
    ("bad_gateway_html", Transient),
])
def test_error_translation_through_the_sdk(arm, provider, recorded_error, expected):
    arm.fail["PUT"] = [recorded_error]
    with pytest.raises(expected) as caught:
        provider.launch(request(), KEY)
    assert type(caught.value) is expected and caught.value.provider == "azure"
    assert len(arm.requests("PUT")) == 1  # no retry inside the SDK
    if expected is Throttled:
        assert caught.value.retry_after_s == 17


@pytest.mark.parametrize("exc", [ServiceRequestError("connection refused"), ServiceResponseError("read timed out")])
def test_connection_errors_are_transient(arm, provider, exc, monkeypatch):
    def broken(request, **kwargs):
        raise exc

    monkeypatch.setattr(arm, "send", broken)
    with pytest.raises(Transient):
        provider.statuses([Handle(provider="azure", id="cs-x")])


def test_credential_failure_is_auth_failed(arm):
    class NoToken:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    broken = azure.AzureProvider(SUBSCRIPTION, credential=NoToken(), transport=arm, resource_group=RG)
    with pytest.raises(AuthFailed):
        broken.list_ours()
    assert arm.seen == []
