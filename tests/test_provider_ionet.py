"""io.net adapter against recorded CaaS interactions (tests/recordings/ionet/api.json), replayed with respx."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
import respx
from iocloud.types import DeploymentStatus
from provider_support import JOB, launch_request, recording
from provider_support import reply as recorded_reply

from scheduler.models import Offer
from workers.providers import ionet
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

REC = recording("ionet")
KEY = "ionet-test-key-SECRET-9f8e7d6c5b4a"
IDEM = "launch-5f2c9a"  # io.net's recordings carry this key's label
LABEL = f"cloudsched.{JOB}.{IDEM}"
DEP = "9d1c6f0e-5b7a-4f53-a1d2-7c0e8b4f2a11"
OFFER = Offer(id="ionet:us:H100x8:on-demand", provider="ionet", architecture="distributed", region="us", geo="us",
              gpu_type="H100", gpus_per_node=8, price_per_node_hour=32.0, market="on-demand", capacity_gpus=512,
              interconnect="roce", instance_type="H100x8")


def reply(name: str) -> httpx.Response:
    return recorded_reply(REC, name)


def route(mock: respx.MockRouter, name: str) -> respx.Route:
    req = REC["interactions"][name]["request"]
    return mock.route(method=req["method"], path=req["path"])


def placement(**changes) -> LaunchRequest:
    fields = dict(offer=OFFER, name="llama-ft", run_hours=2.2, image="ghcr.io/acme/train:1.4",
                  command=["python", "train.py"], env={"EPOCHS": "3"}, approved_price_per_node_hour=32.0)
    return launch_request(**{**fields, **changes})


@pytest.fixture
def api():
    with respx.mock(base_url=REC["base_url"], assert_all_called=False) as mock:
        yield SimpleNamespace(
            mock=mock,
            hardware=route(mock, "hardware").mock(return_value=reply("hardware")),
            listing=route(mock, "deployments").mock(side_effect=[reply("deployments_empty"), reply("deployments")]),
            deploy=route(mock, "deploy").mock(return_value=reply("deploy")),
            get=route(mock, "deployment").mock(return_value=reply("deployment")),
            price=route(mock, "price").mock(return_value=reply("price")),
            delete=route(mock, "delete").mock(return_value=reply("delete")),
        )


@pytest.fixture
def provider() -> ionet.IonetProvider:
    return ionet.IonetProvider(api_key=KEY, base_url=REC["base_url"])


def sent(route_: respx.Route) -> dict:
    return json.loads(route_.calls.last.request.content)


def test_is_a_provider(provider):
    assert isinstance(provider, Provider)
    assert KEY not in repr(provider)


def test_launch_creates_one_labelled_deployment_of_whole_prepaid_hours(api, provider):
    handle = provider.launch(placement(), IDEM)

    assert handle == Handle(provider="ionet", id=DEP, region="us", extra={"hours": 3, "billed_usd": 96.0})
    assert api.deploy.call_count == 1
    assert api.mock.calls[0].request.url.path.endswith("/deployments")  # looked up before creating
    body = sent(api.deploy)
    assert body["resource_private_name"] == LABEL
    assert body["duration_hours"] == 3  # ceil(2.2)
    assert (body["hardware_id"], body["gpus_per_container"]) == (203, 8)
    config = body["container_config"]
    assert config["replica_count"] == 1
    assert config["entrypoint"] == ["python", "train.py"]
    assert config["env_variables"] == {"EPOCHS": "3", "CLOUDSCHED_KEY": IDEM, "CLOUDSCHED_JOB": JOB}
    assert api.mock.calls.last.request.headers["x-api-key"] == KEY


def test_second_launch_with_the_same_key_adopts_without_creating(api, provider):
    first = provider.launch(placement(), IDEM)
    second = provider.launch(placement(), IDEM)

    assert second == first
    assert api.deploy.call_count == 1
    assert api.listing.call_count == 2


def test_lost_create_response_is_transient_and_the_retry_adopts(api, provider):
    api.deploy.mock(side_effect=httpx.ReadTimeout("response lost"))

    with pytest.raises(Transient) as lost:
        provider.launch(placement(), IDEM)
    assert api.deploy.call_count == 1
    assert "may have taken effect" in str(lost.value)

    handle = provider.launch(placement(), IDEM)
    assert handle.id == DEP
    assert handle.extra["billed_usd"] == 96.0
    assert api.deploy.call_count == 1


def test_adoption_survives_a_read_back_that_404s(api, provider):
    api.listing.mock(return_value=reply("deployments"))
    api.get.mock(return_value=reply("error_404"))

    handle = provider.launch(placement(), IDEM)

    assert (handle.id, handle.extra) == (DEP, {"hours": 3, "billed_usd": 96.0})
    assert api.deploy.call_count == 0


def test_negative_control_without_the_lookup_a_retry_creates_twice(api, provider, monkeypatch):
    monkeypatch.setattr(ionet, "adopt_or_create", lambda label, find, create: create())
    api.deploy.mock(side_effect=[httpx.ReadTimeout("response lost"), reply("deploy")])

    with pytest.raises(Transient):
        provider.launch(placement(), IDEM)
    provider.launch(placement(), IDEM)

    assert api.deploy.call_count == 2  # the duplicate the label lookup exists to prevent
    assert api.listing.call_count == 0


@pytest.mark.parametrize(("run_hours", "hours"), [(0.2, 1), (1.0, 1), (2.2, 3), (3.0, 3), (3.0000000001, 3),
                                                  (8760, 8760)])
def test_prepaid_hours_are_whole_and_at_least_one(run_hours, hours):
    assert ionet.prepaid_hours(run_hours) == hours


def test_a_run_longer_than_a_year_is_refused_before_any_call(api, provider):
    with pytest.raises(InvalidRequest, match="8760"):
        provider.launch(placement(run_hours=8760.5), IDEM)
    assert api.mock.calls.call_count == 0


def test_billed_usd_falls_back_to_whole_hours_times_price_when_the_read_back_fails(api, provider):
    api.get.mock(return_value=reply("error_404"))  # eventual consistency: the SDK returns a bare handle

    handle = provider.launch(placement(nodes=2, gpus=16, run_hours=2.2), IDEM)

    assert sent(api.deploy)["container_config"]["replica_count"] == 2
    assert handle.extra == {"hours": 3, "billed_usd": 3 * 2 * 32.0}


def test_status_reports_what_was_billed(api, provider):
    api.get.mock(return_value=reply("deployment_running"))
    handle = Handle(provider="ionet", id=DEP, extra={"hours": 3, "billed_usd": 96.0})

    status = provider.status(handle)

    assert status.phase is Phase.RUNNING
    assert status.billed_usd == 96.0
    assert status.started_at is not None and status.started_at.hour == 9


def test_status_of_an_unknown_deployment_is_gone(api, provider):
    api.get.mock(return_value=reply("error_404"))
    assert provider.status(Handle(provider="ionet", id=DEP)).phase is Phase.GONE


def test_statuses_of_many_handles_is_one_list_call(api, provider):
    api.listing.mock(return_value=reply("deployments"))
    handles = [Handle(provider="ionet", id=DEP, extra={"billed_usd": 96.0}),
               Handle(provider="ionet", id="0b8e2d7c-1f4a-4c5e-9a3b-2d6f8e1c4b77"),
               Handle(provider="ionet", id="3e5a9b1d-7c2f-4d8e-b6a0-9f1e2c3d4a55"),
               Handle(provider="ionet", id="never-existed")]

    statuses = provider.statuses(handles)

    assert api.listing.call_count == 1
    assert api.get.call_count == 0
    assert {k: s.phase for k, s in statuses.items()} == {
        DEP: Phase.RUNNING, "0b8e2d7c-1f4a-4c5e-9a3b-2d6f8e1c4b77": Phase.PENDING,
        "3e5a9b1d-7c2f-4d8e-b6a0-9f1e2c3d4a55": Phase.SUCCEEDED, "never-existed": Phase.GONE}
    assert statuses[DEP].billed_usd == 96.0  # the listing has no amount_paid: the handle's bill


@pytest.mark.parametrize(("state", "phase"), [
    ("deployment requested", Phase.PENDING), ("deploying", Phase.PENDING), ("running", Phase.RUNNING),
    ("completed", Phase.SUCCEEDED), ("failed", Phase.FAILED), ("unpaid", Phase.FAILED),
    ("termination requested", Phase.CANCELLED), ("terminated", Phase.CANCELLED), ("destroyed", Phase.CANCELLED),
    ("something new", Phase.PENDING),
])
def test_state_mapping(state, phase):
    mapped, message = ionet._phase(DeploymentStatus(state))
    assert mapped is phase
    assert message


def test_every_sdk_status_is_mapped_explicitly_except_unknown():
    assert set(DeploymentStatus) - set(ionet._PHASES) == {DeploymentStatus.UNKNOWN}


def test_list_ours_returns_our_live_deployments_only(api, provider):
    api.listing.mock(return_value=reply("deployments"))

    owned = {o.handle.id: o for o in provider.list_ours()}

    assert set(owned) == {DEP, "0b8e2d7c-1f4a-4c5e-9a3b-2d6f8e1c4b77", "5f6e7d8c-9b0a-4f1e-8d2c-3b4a5f6e7d8c"}
    assert (owned[DEP].job_id, owned[DEP].idempotency_key, owned[DEP].phase) == (JOB, IDEM, Phase.RUNNING)


def test_cancel_deletes(api, provider):
    provider.cancel(Handle(provider="ionet", id=DEP))
    assert api.delete.call_count == 1


def test_cancel_of_an_unknown_deployment_is_silent(api, provider):
    api.delete.mock(return_value=reply("error_404"))
    provider.cancel(Handle(provider="ionet", id=DEP))
    assert api.delete.call_count == 1


def test_cancel_is_not_silent_about_bad_credentials(api, provider):
    api.delete.mock(return_value=reply("error_401"))
    with pytest.raises(AuthFailed):
        provider.cancel(Handle(provider="ionet", id=DEP))


def test_quote_is_live(api, provider):
    quote = provider.quote(OFFER)

    assert (quote.price_per_node_hour, quote.capacity_gpus, quote.available, quote.live) == (32.64, 24, True, True)
    params = api.price.calls.last.request.url.params
    assert (params["hardware_id"], params["duration_hours"], params["gpus_per_container"]) == ("203", "1", "8")


ERRORS = [
    ("error_401", AuthFailed), ("error_403", AuthFailed), ("error_429", Throttled), ("error_500", Transient),
    ("error_503", Transient), ("error_capacity", NoCapacity), ("error_balance", QuotaExceeded),
    ("error_422", InvalidRequest),
]


@pytest.mark.parametrize(("name", "error"), ERRORS)
def test_error_translation(api, provider, name, error):
    api.deploy.mock(return_value=reply(name))

    with pytest.raises(error) as raised:
        provider.launch(placement(), IDEM)

    assert type(raised.value) is error
    assert raised.value.provider == "ionet"
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)


def test_throttled_carries_retry_after(api, provider):
    api.deploy.mock(return_value=reply("error_429"))
    with pytest.raises(Throttled) as raised:
        provider.launch(placement(), IDEM)
    assert raised.value.retry_after_s == 7.0
    assert api.deploy.call_count == 1  # the SDK does not sleep and replay: the worker retries


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("x")])
def test_transport_errors_are_transient(api, provider, exc):
    api.listing.mock(side_effect=exc)
    with pytest.raises(Transient):
        provider.statuses([Handle(provider="ionet", id=DEP)])


def test_unknown_gpu_is_an_invalid_request_not_a_value_error(api, provider):
    with pytest.raises(InvalidRequest, match="No hardware matches"):
        provider.launch(placement(offer=OFFER.model_copy(update={"gpu_type": "B300"})), IDEM)
    assert api.deploy.call_count == 0


def test_api_key_echoed_by_the_server_is_scrubbed(api, provider):
    api.listing.mock(return_value=httpx.Response(401, json={"detail": f"key {KEY} is revoked"}))
    with pytest.raises(AuthFailed) as raised:
        provider.list_ours()
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)
    assert "***" in str(raised.value)


def test_handle_carries_no_api_key(api, provider):
    handle = provider.launch(placement(), IDEM)
    assert KEY not in repr(handle) and KEY not in json.dumps(handle.to_json())
    assert Handle.from_json(handle.to_json()) == handle


def test_key_comes_from_the_environment(api, monkeypatch):
    monkeypatch.setenv(ionet.ENV_KEY, KEY)
    ionet.IonetProvider(base_url=REC["base_url"]).cancel(Handle(provider="ionet", id=DEP))
    assert api.delete.calls.last.request.headers["x-api-key"] == KEY


def test_no_key_is_auth_failed_without_a_call(api, monkeypatch):
    monkeypatch.delenv(ionet.ENV_KEY, raising=False)
    with pytest.raises(AuthFailed, match=ionet.ENV_KEY):
        ionet.IonetProvider(base_url=REC["base_url"]).launch(placement(), IDEM)
    assert api.mock.calls.call_count == 0
