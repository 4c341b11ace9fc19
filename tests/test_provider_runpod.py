"""RunPod adapter against recorded GraphQL interactions (tests/recordings/runpod/api.json), replayed with respx."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
import respx
from provider_support import IDEM, JOB, LABEL, launch_request, recording
from provider_support import reply as recorded_reply

from scheduler.models import Offer
from workers.providers import runpod
from workers.providers.base import (
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

REC = recording("runpod")
URL = REC["url"]
KEY = "runpod-test-key-SECRET-0f9e8d7c6b5a"
POD = "k3x9q2m7v1b4zt"
OFFER = Offer(id="runpod:ca:1x_A100-80GB-SXM_SECURE:on-demand", provider="runpod", architecture="distributed",
              region="ca", geo="other", gpu_type="A100-80GB", gpus_per_node=1, price_per_node_hour=1.89,
              market="on-demand", capacity_gpus=32, interconnect="ethernet", certifications=["soc2"],
              instance_type="1x_A100-80GB-SXM_SECURE")
SPOT = OFFER.model_copy(update={"id": "runpod:ca:1x_A100-80GB-SXM_SECURE:spot", "market": "spot",
                                "price_per_node_hour": 1.19})


def reply(name: str) -> httpx.Response:
    return recorded_reply(REC, name)


def placement(**changes) -> LaunchRequest:
    fields = dict(offer=OFFER, name="bert-eval", run_hours=1.5, image="ghcr.io/acme/eval:2.0",
                  command=["python", "eval.py", "--split", "it's"], env={"EPOCHS": "3"},
                  approved_price_per_node_hour=1.89)
    return launch_request(**{**fields, **changes})


@pytest.fixture
def api():
    with respx.mock(assert_all_called=False) as mock:
        def op(name: str) -> respx.Route:
            return mock.post(URL, json__operationName=name)

        yield SimpleNamespace(
            mock=mock,
            pods=op("Pods").mock(side_effect=[reply("pods_empty"), reply("pods")]),
            create=op("CreatePod").mock(return_value=reply("create")),
            create_spot=op("CreateSpotPod").mock(return_value=reply("create_spot")),
            pod=op("Pod").mock(return_value=reply("pod")),
            terminate=op("TerminatePod").mock(return_value=reply("terminate")),
            gpu=op("GpuType").mock(return_value=reply("gpu")),
        )


@pytest.fixture
def provider() -> runpod.RunpodProvider:
    return runpod.RunpodProvider(api_key=KEY, url=URL)


def variables(route: respx.Route) -> dict:
    return json.loads(route.calls.last.request.content)["variables"]


def test_is_a_provider(provider):
    assert isinstance(provider, Provider)
    assert KEY not in repr(provider)


def test_launch_creates_one_labelled_pod(api, provider):
    handle = provider.launch(placement(), IDEM)

    assert handle == Handle(provider="runpod", id=POD, region="ca", extra={"cost_per_hr": 1.89})
    assert api.create.call_count == 1
    assert json.loads(api.mock.calls[0].request.content)["operationName"] == "Pods"  # looked up first
    pod = variables(api.create)["input"]
    assert pod["name"] == LABEL
    assert (pod["gpuTypeId"], pod["gpuCount"], pod["cloudType"], pod["countryCode"]) == (
        "NVIDIA A100-SXM4-80GB", 1, "SECURE", "CA")
    assert pod["imageName"] == "ghcr.io/acme/eval:2.0"
    assert pod["dockerArgs"] == "python eval.py --split 'it'\"'\"'s'"  # a variable, so a quote cannot break the query
    assert {e["key"]: e["value"] for e in pod["env"]} == {"EPOCHS": "3", "CLOUDSCHED_KEY": IDEM, "CLOUDSCHED_JOB": JOB}
    assert api.create.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


def test_spot_offer_rents_an_interruptible_pod_at_the_approved_bid(api, provider):
    handle = provider.launch(placement(offer=SPOT, approved_price_per_node_hour=1.19), IDEM)

    assert handle.id == "w5k7l9z1x3c5pg"
    assert (api.create.call_count, api.create_spot.call_count) == (0, 1)
    assert variables(api.create_spot)["input"]["bidPerGpu"] == 1.19


def test_second_launch_with_the_same_key_adopts_without_creating(api, provider):
    first = provider.launch(placement(), IDEM)
    second = provider.launch(placement(), IDEM)

    assert second == first
    assert api.create.call_count == 1
    assert api.pods.call_count == 2


def test_lost_create_response_is_transient_and_the_retry_adopts(api, provider):
    api.create.mock(side_effect=httpx.ReadTimeout("response lost"))

    with pytest.raises(Transient) as lost:
        provider.launch(placement(), IDEM)
    assert api.create.call_count == 1
    assert "may have taken effect" in str(lost.value)

    assert provider.launch(placement(), IDEM).id == POD
    assert api.create.call_count == 1


def test_negative_control_without_the_lookup_a_retry_creates_twice(api, provider, monkeypatch):
    monkeypatch.setattr(runpod, "adopt_or_create", lambda label, find, create: create())
    api.create.mock(side_effect=[httpx.ReadTimeout("response lost"), reply("create")])

    with pytest.raises(Transient):
        provider.launch(placement(), IDEM)
    provider.launch(placement(), IDEM)

    assert api.create.call_count == 2  # the duplicate the label lookup exists to prevent
    assert api.pods.call_count == 0


def test_several_nodes_are_refused_before_any_call(api, provider):
    with pytest.raises(InvalidRequest, match="one machine"):
        provider.launch(placement(nodes=2, gpus=2), IDEM)
    assert api.mock.calls.call_count == 0


def test_unknown_gpu_is_refused(api, provider):
    offer = OFFER.model_copy(update={"instance_type": "1x_TPUv5_SECURE"})
    with pytest.raises(InvalidRequest, match="no RunPod GPU type"):
        provider.launch(placement(offer=offer), IDEM)


def test_statuses_of_many_handles_is_one_query(api, provider):
    api.pods.mock(return_value=reply("pods"))
    ids = [POD, "p8w2n5c7d0e3fa", "r4t6y8u0i2o4pb", "s1d3f5g7h9j1kc", "t2g4h6j8k0l2md", "u3h5j7k9l1z3ne", "nope"]

    statuses = provider.statuses(Handle(provider="runpod", id=i) for i in ids)

    assert api.mock.calls.call_count == 1
    assert {k: s.phase for k, s in statuses.items()} == {
        POD: Phase.RUNNING, "p8w2n5c7d0e3fa": Phase.PENDING, "r4t6y8u0i2o4pb": Phase.SUCCEEDED,
        "s1d3f5g7h9j1kc": Phase.FAILED, "t2g4h6j8k0l2md": Phase.PREEMPTED, "u3h5j7k9l1z3ne": Phase.CANCELLED,
        "nope": Phase.GONE}
    assert statuses[POD].billed_usd is None
    assert (statuses["r4t6y8u0i2o4pb"].exit_code, statuses["s1d3f5g7h9j1kc"].exit_code) == (0, 1)


@pytest.mark.parametrize(("pod", "phase"), [
    ({"desiredStatus": "CREATED"}, Phase.PENDING),
    ({"desiredStatus": "RUNNING", "runtime": None}, Phase.PENDING),
    ({"desiredStatus": "RUNNING", "runtime": {"uptimeInSeconds": 3}}, Phase.RUNNING),
    ({"desiredStatus": "EXITED", "lastStatusChange": "Exited by pod: exit code 0"}, Phase.SUCCEEDED),
    ({"desiredStatus": "EXITED", "lastStatusChange": "Exited by pod: exit code 137"}, Phase.FAILED),
    ({"desiredStatus": "EXITED", "lastStatusChange": "Exited by user"}, Phase.FAILED),
    ({"desiredStatus": "EXITED", "podType": "INTERRUPTABLE", "lastStatusChange": "outbid"}, Phase.PREEMPTED),
    ({"desiredStatus": "TERMINATED"}, Phase.CANCELLED),
    ({"desiredStatus": "SOMETHING_NEW"}, Phase.PENDING),
])
def test_state_mapping(pod, phase):
    assert runpod._phase(pod)[0] is phase


def test_status_of_one_pod(api, provider):
    assert provider.status(Handle(provider="runpod", id=POD)).phase is Phase.RUNNING
    assert variables(api.pod) == {"input": {"podId": POD}}


@pytest.mark.parametrize("answer", ["pod_null", "terminate_unknown"])
def test_status_of_an_unknown_pod_is_gone(api, provider, answer):
    api.pod.mock(return_value=reply(answer))  # null, or a "Pod not found" error
    assert provider.status(Handle(provider="runpod", id=POD)).phase is Phase.GONE


def test_cancel_terminates(api, provider):
    provider.cancel(Handle(provider="runpod", id=POD))
    assert variables(api.terminate) == {"input": {"podId": POD}}


def test_cancel_of_an_unknown_pod_is_silent(api, provider):
    api.terminate.mock(return_value=reply("terminate_unknown"))
    provider.cancel(Handle(provider="runpod", id=POD))
    assert api.terminate.call_count == 1


def test_quote_is_live(api, provider):
    quote = provider.quote(OFFER)
    assert (quote.price_per_node_hour, quote.available, quote.live) == (1.74, True, True)
    assert variables(api.gpu) == {"input": {"id": "NVIDIA A100-SXM4-80GB"},
                                  "lowest": {"gpuCount": 1, "secureCloud": True}}
    assert provider.quote(SPOT).price_per_node_hour == 1.09


def test_quote_out_of_stock_is_unavailable(api, provider):
    api.gpu.mock(return_value=reply("gpu_out_of_stock"))
    quote = provider.quote(OFFER)
    assert (quote.available, quote.price_per_node_hour) == (False, 1.89)


def test_list_ours_returns_our_live_pods_only(api, provider):
    api.pods.mock(return_value=reply("pods"))
    owned = {o.handle.id: o for o in provider.list_ours()}
    assert set(owned) == {POD, "p8w2n5c7d0e3fa"}
    assert (owned[POD].job_id, owned[POD].idempotency_key, owned[POD].phase) == (JOB, IDEM, Phase.RUNNING)


ERRORS = [
    ("error_401", AuthFailed), ("error_403", AuthFailed), ("error_429", Throttled), ("error_500", Transient),
    ("error_502", Transient), ("error_capacity", NoCapacity), ("error_balance", QuotaExceeded),
    ("error_invalid", InvalidRequest),
]


@pytest.mark.parametrize(("name", "expected"), ERRORS)
def test_error_translation(api, provider, name, expected):
    api.create.mock(return_value=reply(name))

    with pytest.raises(expected) as raised:
        provider.launch(placement(), IDEM)

    assert type(raised.value) is expected
    assert api.create.call_count == 1
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)


def test_throttled_carries_retry_after(api, provider):
    api.pods.mock(return_value=reply("error_429"))
    with pytest.raises(Throttled) as raised:
        provider.list_ours()
    assert raised.value.retry_after_s == 5.0


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("dropped")])
def test_transport_errors_are_transient(api, provider, exc):
    api.pods.mock(side_effect=exc)
    with pytest.raises(Transient):
        provider.statuses([Handle(provider="runpod", id=POD)])


def test_the_client_has_the_call_timeout(provider):
    assert provider._http.timeout.read == runpod.CALL_TIMEOUT_S


def test_api_key_echoed_by_the_server_is_scrubbed(api, provider):
    api.pods.mock(return_value=httpx.Response(401, json={"errors": [{"message": f"bad key {KEY}"}]}))
    with pytest.raises(AuthFailed) as raised:
        provider.list_ours()
    assert KEY not in str(raised.value) and "***" in str(raised.value)


def test_handle_carries_no_api_key(api, provider):
    handle = provider.launch(placement(), IDEM)
    assert KEY not in repr(handle) and KEY not in json.dumps(handle.to_json())


def test_key_comes_from_the_environment(api, monkeypatch):
    monkeypatch.setenv(runpod.ENV_KEY, KEY)
    runpod.RunpodProvider(url=URL).cancel(Handle(provider="runpod", id=POD))
    assert api.terminate.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


def test_no_key_is_auth_failed_without_a_call(api, monkeypatch):
    monkeypatch.delenv(runpod.ENV_KEY, raising=False)
    with pytest.raises(AuthFailed, match=runpod.ENV_KEY):
        runpod.RunpodProvider(url=URL).list_ours()
    assert api.mock.calls.call_count == 0
