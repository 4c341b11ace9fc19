"""The GCP adapter against a replayed Compute Engine REST API.

The real `google-cloud-compute` client (REST transport, AnonymousCredentials) sends its requests through
`requests`, which the `responses` library intercepts. `FakeCompute` answers them from the recorded bodies
in tests/recordings/gcp/ (written from the API's documented JSON, see its README) and keeps a tiny server
state (instances by name, request ids seen), so "one VM" is something a test can count.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from google.auth.credentials import AnonymousCredentials
from provider_support import JOB, catalog_offer, launch_request, recording
from provider_support import VM_KEY as KEY

from workers.providers import gcp
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

PROJECT = "cloudsched-test"
BASE = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}"


def recorded(name: str) -> dict:
    return recording("gcp", name)


def filled(body: dict, **names: str) -> dict:
    """A recorded body with its PROJECT/ZONE/NAME/... placeholders replaced."""
    text = json.dumps(body)
    for placeholder, value in {"PROJECT": PROJECT, **names}.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


class FakeCompute:
    """Compute Engine's instances, aggregated lists and operations, as far as the adapter uses them."""

    def __init__(self, mock: responses.RequestsMock):
        self.instances: dict[str, dict] = {}  # name -> instance JSON (one project; names unique here)
        self.request_ids: dict[str, dict] = {}  # requestId -> the Operation first answered
        self.preempted: list[dict] = []  # instances GCP preempted
        self.errors: list[str] = []  # recorded error names to answer the next calls with
        self.drop_next_insert_response = False
        self.insert_operation: dict | None = None  # answer inserts with this Operation instead
        mock.add_callback("POST", re.compile(rf"{BASE}/zones/[^/]+/instances(\?.*)?$"), self.insert)
        mock.add_callback("GET", re.compile(rf"{BASE}/zones/[^/]+/instances/[^/?]+(\?.*)?$"), self.get)
        mock.add_callback("DELETE", re.compile(rf"{BASE}/zones/[^/]+/instances/[^/?]+(\?.*)?$"), self.delete)
        mock.add_callback("GET", re.compile(rf"{BASE}/aggregated/instances(\?.*)?$"), self.aggregated_instances)
        mock.add_callback("GET", re.compile(rf"{BASE}/aggregated/operations(\?.*)?$"), self.aggregated_operations)

    @staticmethod
    def _answer(status: int, body: dict) -> tuple[int, dict, str]:
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def _error(self, name: str, **names: str) -> tuple[int, dict, str]:
        error = filled(recorded("errors.json")[name], **names)
        return self._answer(error["status"], error["body"])

    def _operation(self, zone: str, name: str, kind: str = "insert") -> dict:
        op = filled(recorded("operation.json"), ZONE=zone, NAME=name)
        return {**op, "operationType": kind, "name": f"operation-{uuid.uuid4().hex}"}

    def insert(self, request: requests.PreparedRequest):
        if self.errors:
            return self._error(self.errors.pop(0), ZONE="z", NAME="n")
        zone = urlsplit(request.url).path.split("/")[-2]
        request_id = parse_qs(urlsplit(request.url).query).get("requestId", [""])[0]
        body = json.loads(request.body)
        if self.insert_operation is not None:
            return self._answer(200, filled(self.insert_operation, ZONE=zone, NAME=body["name"]))
        if request_id and request_id in self.request_ids:
            answer = self._answer(200, self.request_ids[request_id])  # GCP: same request id, same operation
        elif body["name"] in self.instances:
            return self._error("already_exists", ZONE=zone, NAME=body["name"])
        else:
            machine = body["machineType"].rsplit("/", 1)[-1]
            vm = filled(recorded("instance.json"), ZONE=zone, NAME=body["name"], MACHINE=machine,
                        REGION=zone.rsplit("-", 1)[0])
            vm.update({k: body[k] for k in ("labels", "metadata", "scheduling", "guestAccelerators") if k in body})
            self.instances[body["name"]] = vm
            op = self._operation(zone, body["name"])
            if request_id:
                self.request_ids[request_id] = op
            answer = self._answer(200, op)
        if self.drop_next_insert_response:
            self.drop_next_insert_response = False
            raise requests.ConnectionError("connection reset by peer (after the server acted)")
        return answer

    def get(self, request: requests.PreparedRequest):
        name = urlsplit(request.url).path.rsplit("/", 1)[-1]
        if self.errors:
            return self._error(self.errors.pop(0), ZONE="z", NAME=name)
        vm = self.instances.get(name)
        return self._answer(200, vm) if vm else self._error("not_found", ZONE="z", NAME=name)

    def delete(self, request: requests.PreparedRequest):
        parts = urlsplit(request.url).path.split("/")
        zone, name = parts[-3], parts[-1]
        if self.errors:
            return self._error(self.errors.pop(0), ZONE=zone, NAME=name)
        if self.instances.pop(name, None) is None:
            return self._error("not_found", ZONE=zone, NAME=name)
        return self._answer(200, self._operation(zone, name, "delete"))

    def aggregated_instances(self, request: requests.PreparedRequest):
        if self.errors:
            return self._error(self.errors.pop(0), ZONE="z", NAME="n")
        flt = parse_qs(urlsplit(request.url).query).get("filter", [""])[0]
        if match := re.fullmatch(r'labels\.([a-z0-9_-]+) = "([^"]*)"', flt):
            keep = lambda vm: vm["labels"].get(match[1]) == match[2]  # noqa: E731
        elif match := re.fullmatch(r"labels\.([a-z0-9_-]+):\*", flt):
            keep = lambda vm: match[1] in vm["labels"]  # noqa: E731
        else:
            raise AssertionError(f"unexpected filter {flt!r}")
        page = filled(recorded("aggregated_instances.json"))
        for vm in self.instances.values():
            if keep(vm):
                scope = "zones/" + vm["zone"].rsplit("/", 1)[-1]
                page["items"].setdefault(scope, {"instances": []}).setdefault("instances", []).append(vm)
        return self._answer(200, page)

    def aggregated_operations(self, request: requests.PreparedRequest):
        flt = parse_qs(urlsplit(request.url).query).get("filter", [""])[0]
        assert flt == 'operationType = "compute.instances.preempted"', flt
        page = {**filled(recorded("aggregated_operations_preempted.json")), "items": {}}
        template = recorded("aggregated_operations_preempted.json")["items"]["zones/ZONE"]["operations"][0]
        for vm in self.preempted:
            zone = vm["zone"].rsplit("/", 1)[-1]
            op = filled(template, ZONE=zone, NAME=vm["name"])
            page["items"].setdefault(f"zones/{zone}", {"operations": []})["operations"].append(op)
        return self._answer(200, page)

    # what GCP itself does to instances
    def set_state(self, name: str, status: str, exit_code: str | None = None) -> None:
        vm = self.instances[name]
        vm["status"] = status
        vm["lastStartTimestamp"] = "2024-05-01T03:01:10.000-07:00"
        if status == "TERMINATED":
            vm["lastStopTimestamp"] = "2024-05-01T05:00:00.000-07:00"
        if exit_code is not None:
            vm["labels"][gcp.EXIT_TAG] = exit_code

    def preempt(self, name: str) -> None:
        self.set_state(name, "TERMINATED")
        self.preempted.append(self.instances[name])


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server = FakeCompute(mock)
        server.mock = mock
        yield server


@pytest.fixture
def provider(api) -> gcp.GcpProvider:
    return gcp.GcpProvider(PROJECT, credentials=AnonymousCredentials())


def calls(api, method: str, path: str) -> list:
    return [c for c in api.mock.calls if c.request.method == method and path in urlsplit(c.request.url).path]


def request(offer_id: str = "gcp:us-east1:n1-standard-8-t4x1:spot", nodes: int = 1, **kw) -> LaunchRequest:
    return launch_request(catalog_offer(offer_id), nodes=nodes, name="train", run_hours=2.0,
                          image="nvcr.io/nvidia/pytorch:24.04-py3", command=["python", "train.py", "--epochs", "3"],
                          env={"WANDB_MODE": "offline"}, **kw)


# -- launch ---------------------------------------------------------------------------------


def test_is_a_provider(provider):
    assert isinstance(provider, Provider) and provider.name == "gcp"


def test_launch_sends_one_insert_with_our_labels_request_id_and_spot_settings(api, provider):
    handle = provider.launch(request(), KEY)

    (insert,) = calls(api, "POST", "/instances")
    body = json.loads(insert.request.body)
    query = parse_qs(urlsplit(insert.request.url).query)
    assert query["requestId"] == [str(uuid.uuid5(gcp._REQUEST_NS, f"{KEY}#0"))]
    assert body["name"] == f"{gcp.vm_base(KEY)}-0" == f"{handle.id}-0"
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", body["name"])
    assert body["labels"][TAG] == gcp.label_value(KEY) and body["labels"][TAG_JOB] == JOB
    assert all(re.fullmatch(r"[a-z0-9_-]{0,63}", v) for v in body["labels"].values())
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert items[gcp.META_KEY] == KEY and "docker run --rm --gpus all" in items["startup-script"]
    assert body["machineType"] == "zones/us-east1-b/machineTypes/n1-standard-8"
    assert body["guestAccelerators"] == [{"acceleratorType": "zones/us-east1-b/acceleratorTypes/nvidia-tesla-t4",
                                          "acceleratorCount": 1}]
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                                  "provisioningModel": "SPOT", "instanceTerminationAction": "STOP"}
    assert "/zones/us-east1-b/" in insert.request.url  # first catalog zone listing T4 in us-east1
    assert insert.request.req_kwargs["timeout"] == CALL_TIMEOUT_S
    assert handle.provider == "gcp" and handle.extra["zone"] == "us-east1-b" and handle.region == "us-east1"


def test_accelerator_optimized_offer_on_demand_carries_its_own_gpus(api, provider):
    provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand"), KEY)
    body = json.loads(calls(api, "POST", "/instances")[0].request.body)
    assert body["machineType"].endswith("/machineTypes/a2-highgpu-8g") and "guestAccelerators" not in body
    assert body["scheduling"]["provisioningModel"] == "STANDARD"
    assert "instanceTerminationAction" not in body["scheduling"] and body["scheduling"]["automaticRestart"] is True


def test_zone_option_wins_and_unknown_region_is_refused(api):
    custom = gcp.GcpProvider(PROJECT, zones={"us-east1": "us-east1-d"}, credentials=AnonymousCredentials())
    assert custom.launch(request(), KEY).extra["zone"] == "us-east1-d"
    bare = gcp.GcpProvider(PROJECT, credentials=AnonymousCredentials())
    nowhere = catalog_offer("gcp:us-east1:n1-standard-8-t4x1:spot").model_copy(update={"region": "mars-north1"})
    with pytest.raises(InvalidRequest, match="no zone known"):
        bare.zone_for(nowhere)


def test_launch_twice_with_the_same_key_is_one_vm_and_the_same_handle(api, provider):
    first = provider.launch(request(), KEY)
    second = provider.launch(request(), KEY)
    assert first == second
    assert len(api.instances) == 1
    ids = {parse_qs(urlsplit(c.request.url).query)["requestId"][0] for c in calls(api, "POST", "/instances")}
    assert len(ids) == 1  # the retry carried the same request id


def test_lost_response_is_transient_and_the_retry_finds_the_same_vm(api, provider):
    api.drop_next_insert_response = True
    with pytest.raises(Transient):
        provider.launch(request(), KEY)
    assert len(api.instances) == 1  # the server did act
    handle = provider.launch(request(), KEY)
    assert len(api.instances) == 1 and f"{handle.id}-0" in api.instances


def test_after_the_request_id_window_a_409_adopts_the_existing_instance(api, provider):
    first = provider.launch(request(), KEY)
    api.request_ids.clear()  # GCP keeps request ids for a limited time only
    assert provider.launch(request(), KEY) == first
    assert len(api.instances) == 1
    assert len(calls(api, "GET", f"/instances/{first.id}-0")) == 1  # the adoption looked it up by name


def test_409_for_an_instance_of_another_key_is_refused(api, provider):
    handle = provider.launch(request(), KEY)
    api.instances[f"{handle.id}-0"]["labels"][TAG] = "someone-else"
    api.request_ids.clear()
    with pytest.raises(InvalidRequest, match="does not carry key"):
        provider.launch(request(), KEY)


def test_negative_control_random_request_ids_and_names_make_two_vms(api, provider, monkeypatch):
    """The checks above can fail: without a name and request id derived from the key, a retry is a new VM."""
    monkeypatch.setattr(gcp, "vm_base", lambda key: f"cs-{uuid.uuid4().hex[:12]}")
    monkeypatch.setattr(gcp, "request_id", lambda key, node: str(uuid.uuid4()))
    api.drop_next_insert_response = True
    with pytest.raises(Transient):
        provider.launch(request(), KEY)
    provider.launch(request(), KEY)
    assert len(api.instances) == 2


def test_multi_node_launch_is_one_instance_per_node_each_idempotent(api, provider):
    handle = provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand", nodes=3), KEY)
    provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand", nodes=3), KEY)
    assert sorted(api.instances) == [f"{handle.id}-{i}" for i in range(3)] and handle.extra["nodes"] == 3
    ids = [parse_qs(urlsplit(c.request.url).query)["requestId"][0] for c in calls(api, "POST", "/instances")]
    assert len(ids) == 6 and len(set(ids)) == 3


def test_an_insert_operation_that_already_failed_is_translated(api, provider):
    api.insert_operation = recorded("operation_zone_exhausted.json")
    with pytest.raises(NoCapacity, match="does not have enough resources"):
        provider.launch(request(), KEY)


# -- status ---------------------------------------------------------------------------------


def test_statuses_of_several_jobs_is_one_list_call(api, provider):
    handles = [provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand"), f"key-{i}") for i in range(5)]
    api.set_state(f"{handles[0].id}-0", "RUNNING")
    api.mock.calls.reset()
    result = provider.statuses(handles)
    assert len(api.mock.calls) == 1 and "/aggregated/instances" in api.mock.calls[0].request.url
    assert api.mock.calls[0].request.req_kwargs["timeout"] == CALL_TIMEOUT_S
    assert [result[h.id].phase for h in handles] == [Phase.RUNNING] + [Phase.PENDING] * 4


@pytest.mark.parametrize(("status", "exit_code", "phase"), [
    ("PROVISIONING", None, Phase.PENDING),
    ("STAGING", None, Phase.PENDING),
    ("RUNNING", None, Phase.RUNNING),
    ("STOPPING", None, Phase.RUNNING),
    ("TERMINATED", "0", Phase.SUCCEEDED),
    ("TERMINATED", "3", Phase.FAILED),
    ("TERMINATED", None, Phase.FAILED),
    ("SUSPENDED", None, Phase.FAILED),
])
def test_state_mapping(api, provider, status, exit_code, phase):
    handle = provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand"), KEY)
    api.set_state(f"{handle.id}-0", status, exit_code)
    got = provider.status(handle)
    assert got.phase is phase
    if exit_code is not None:
        assert got.exit_code == int(exit_code) and got.ended_at is not None
    assert not calls(api, "GET", "/aggregated/operations")  # no spot node: no preemption lookup


def test_preempted_spot_node_is_preempted_with_one_operations_call(api, provider):
    handles = [provider.launch(request(), f"key-{i}") for i in range(3)]
    api.preempt(f"{handles[1].id}-0")
    api.set_state(f"{handles[2].id}-0", "TERMINATED")  # stopped, but not by GCP's preemption
    api.mock.calls.reset()
    result = provider.statuses(handles)
    assert [result[h.id].phase for h in handles] == [Phase.PENDING, Phase.PREEMPTED, Phase.FAILED]
    assert len(api.mock.calls) == 2 and len(calls(api, "GET", "/aggregated/operations")) == 1


def test_a_spot_node_that_reported_its_exit_code_was_not_preempted(api, provider):
    handle = provider.launch(request(), KEY)
    api.set_state(f"{handle.id}-0", "TERMINATED", "0")
    assert provider.status(handle).phase is Phase.SUCCEEDED
    assert not calls(api, "GET", "/aggregated/operations")


def test_unknown_instance_is_gone_and_a_missing_node_fails_the_launch(api, provider):
    handle = provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand", nodes=2), KEY)
    never = Handle(provider="gcp", id="cs-never-launched", region="us-east1", extra={"zone": "us-east1-b"})
    for i in range(2):
        api.set_state(f"{handle.id}-{i}", "RUNNING")
    del api.instances[f"{handle.id}-1"]
    result = provider.statuses([handle, never])
    assert result[never.id].phase is Phase.GONE
    assert result[handle.id].phase is Phase.FAILED and "1 of 2 nodes are gone" in result[handle.id].message


def test_one_preempted_node_preempts_the_launch(api, provider):
    handle = provider.launch(request("gcp:us-east1:a2-highgpu-8g:spot", nodes=2), KEY)
    api.set_state(f"{handle.id}-0", "RUNNING")
    api.preempt(f"{handle.id}-1")
    assert provider.status(handle).phase is Phase.PREEMPTED


def test_status_of_one_filters_on_its_key_label(api, provider):
    handle = provider.launch(request(), KEY)
    provider.launch(request(), "another-key")
    api.mock.calls.reset()
    provider.status(handle)
    (call,) = api.mock.calls
    assert parse_qs(urlsplit(call.request.url).query)["filter"] == [f'labels.{TAG} = "{gcp.label_value(KEY)}"']


# -- cancel, quote, list_ours ---------------------------------------------------------------


def test_cancel_deletes_every_node_and_is_silent_when_gone(api, provider):
    handle = provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand", nodes=2), KEY)
    provider.cancel(handle)
    assert api.instances == {} and len(calls(api, "DELETE", "/instances/")) == 2
    provider.cancel(handle)  # 404 twice: silent
    assert provider.status(handle).phase is Phase.GONE


def test_cancel_other_errors_are_translated(api, provider):
    handle = provider.launch(request(), KEY)
    api.errors = ["unavailable"]
    with pytest.raises(Transient):
        provider.cancel(handle)
    assert len(api.instances) == 1


def test_quote_is_the_catalog_price(provider):
    o = catalog_offer("gcp:us-east1:n1-standard-8-t4x1:spot")
    q = provider.quote(o)
    assert q.live is False and q.price_per_node_hour == o.price_per_node_hour and q.offer_id == o.id


def test_list_ours_returns_live_launches_with_their_exact_keys(api, provider):
    odd_key = "Team/Vision:JOB#7 with spaces and a very long tail " * 2
    live = provider.launch(request(), odd_key)
    ended = provider.launch(request(), KEY)
    api.set_state(f"{ended.id}-0", "TERMINATED", "0")
    api.instances["not-ours"] = {**copy.deepcopy(api.instances[f"{live.id}-0"]), "name": "not-ours", "labels": {}}
    (owned,) = provider.list_ours()
    assert owned.idempotency_key == odd_key and owned.job_id == JOB
    assert owned.handle.id == live.id and owned.handle.extra["zone"] == "us-east1-b" and owned.phase is Phase.PENDING
    assert owned.created_at is not None


def test_names_and_labels_are_valid_deterministic_and_distinct():
    keys = ["k", "K", "a:b", "a-b", "x" * 300, "Ünïcode/ключ", ""]
    names = [gcp.vm_base(k) for k in keys]
    labels = [gcp.label_value(k) for k in keys]
    assert names == [gcp.vm_base(k) for k in keys] and len(set(names)) == len(keys)
    assert len(set(labels)) == len(keys)
    assert all(re.fullmatch(r"[a-z][-a-z0-9]{0,56}", n) for n in names)
    assert all(re.fullmatch(r"[a-z0-9_-]{0,63}", v) for v in labels)


def test_startup_script_runs_the_command_once_reports_and_powers_off():
    script = gcp.startup_script(request(nodes=2), node=1)
    assert "docker run --rm --gpus all --network host --ipc host -e CLOUDSCHED_JOB_ID=job_01jd2k8q6v3m9x4c7b2n5r8t1w " \
           "-e CLOUDSCHED_NODES=2 -e CLOUDSCHED_NODE_RANK=1 -e WANDB_MODE=offline " \
           "nvcr.io/nvidia/pytorch:24.04-py3 python train.py --epochs 3" in script
    assert script.index("code=$?") < script.index("setLabels") < script.index("shutdown -h now")
    bare = gcp.job_command(LaunchRequest(job_id="j", team="t", name="n", offer=catalog_offer(
        "gcp:us-east1:n1-standard-8-t4x1:spot"), nodes=1, gpus=1, run_hours=1, command="echo 'hi' && exit 3"))
    assert bare == "env CLOUDSCHED_JOB_ID=j CLOUDSCHED_NODES=1 CLOUDSCHED_NODE_RANK=0 " \
                   "sh -c 'echo '\"'\"'hi'\"'\"' && exit 3'"


def test_each_node_gets_its_rank(api, provider):
    provider.launch(request("gcp:us-east1:a2-highgpu-8g:on-demand", nodes=2), KEY)
    scripts = [{i["key"]: i["value"] for i in json.loads(c.request.body)["metadata"]["items"]}["startup-script"]
               for c in calls(api, "POST", "/instances")]
    assert ["CLOUDSCHED_NODE_RANK=0" in s for s in scripts] == [True, False]
    assert ["CLOUDSCHED_NODE_RANK=1" in s for s in scripts] == [False, True]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("recorded_error", "expected"), [
    ("quota_exceeded", QuotaExceeded),
    ("rate_limit_403", Throttled),
    ("rate_limit_429", Throttled),
    ("zone_exhausted", NoCapacity),
    ("unauthenticated", AuthFailed),
    ("permission_denied", AuthFailed),
    ("bad_request", InvalidRequest),
    ("internal", Transient),
    ("unavailable", Transient),
])
def test_error_translation_through_the_sdk(api, provider, recorded_error, expected):
    api.errors = [recorded_error]
    with pytest.raises(expected) as caught:
        provider.launch(request(), KEY)
    assert type(caught.value) is expected and caught.value.provider == "gcp"
    assert api.instances == {}


@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.ReadTimeout("read timed out")])
def test_connection_errors_and_timeouts_are_transient(api, provider, exc):
    api.mock.replace("GET", re.compile(rf"{BASE}/aggregated/instances(\?.*)?$"), body=exc)
    with pytest.raises(Transient):
        provider.statuses([Handle(provider="gcp", id="cs-x", extra={"nodes": 1})])
