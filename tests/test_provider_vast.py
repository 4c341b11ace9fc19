"""Vast.ai adapter against recorded REST interactions (tests/recordings/vast/api.json), replayed with `responses`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from provider_support import IDEM, JOB, LABEL, launch_request, recording

from scheduler.models import Offer
from workers.providers import vast
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

REC = recording("vast")
BASE = REC["base_url"]
KEY = "vast-test-key-SECRET-1a2b3c4d5e6f"
OFFER = Offer(id="vast:alberta-ca-na:8x-RTX_5090-32-65536:on-demand", provider="vast", architecture="distributed",
              region="alberta-ca-na", geo="other", gpu_type="RTX5090", gpus_per_node=8, price_per_node_hour=4.05,
              market="on-demand", capacity_gpus=8, interconnect="ethernet", instance_type="8x-RTX_5090-32-65536")


def add(rs: responses.RequestsMock, name: str, *, path: str | None = None, body: Exception | None = None) -> None:
    rec = REC["interactions"][name]
    method, url = rec["request"]["method"], BASE + (path or rec["request"]["path"])
    if body is not None:
        rs.add(method, url, body=body)
        return
    r = rec["response"]
    if "json" in r:
        rs.add(method, url, json=r["json"], status=r["status"], headers=r.get("headers"))
    else:
        rs.add(method, url, body=r["text"], status=r["status"], headers=r.get("headers"))


def error(rs: responses.RequestsMock, method: str, path: str, name: str) -> None:
    r = REC["interactions"][name]["response"]
    kwargs = {"json": r["json"]} if "json" in r else {"body": r["text"]}
    rs.add(method, BASE + path, status=r["status"], headers=r.get("headers"), **kwargs)


def calls(rs: responses.RequestsMock, method: str, fragment: str) -> list:
    return [c for c in rs.calls if c.request.method == method and fragment in c.request.url]


def creates(rs):
    return calls(rs, "PUT", "/asks/")


def placement(**changes) -> LaunchRequest:
    fields = dict(offer=OFFER, name="sd-eval", run_hours=2.5, image="ghcr.io/acme/train:1.4",
                  command=["python", "train.py"], env={"EPOCHS": "3"}, approved_price_per_node_hour=4.05)
    return launch_request(**{**fields, **changes})


@pytest.fixture
def rs():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def provider() -> vast.VastProvider:
    return vast.VastProvider(api_key=KEY, server_url=BASE)


@pytest.fixture
def market(rs):
    """The first listing finds nothing, later ones find our instance; offers and create answer."""
    add(rs, "instances_empty")
    add(rs, "instances")
    add(rs, "offers")
    add(rs, "create")
    return rs


def test_is_a_provider(provider):
    assert isinstance(provider, Provider)
    assert KEY not in repr(provider)


def test_launch_creates_one_labelled_instance_on_the_cheapest_machine(market, provider):
    handle = provider.launch(placement(), IDEM)

    assert handle.id == "31415926" and handle.region == "alberta-ca-na"
    assert len(creates(market)) == 1
    lookup = market.calls[0].request
    assert "/api/v1/instances/" in lookup.url  # looked up before searching or creating
    assert json.loads(parse_qs(urlsplit(lookup.url).query)["select_filters"][0]) == {"label": {"in": [LABEL]}}
    search = json.loads(calls(market, "POST", "/bundles/")[0].request.body)
    assert search["gpu_name"] == {"eq": "RTX 5090"} and search["num_gpus"] == {"eq": 8}
    assert search["geolocation"] == {"in": ["CA"]} and search["type"] == "on-demand"
    assert search["dph_total"] == {"lte": pytest.approx(4.05 * 1.05)}
    assert search["order"] == [["dph_total", "asc"]]
    create = creates(market)[0].request
    assert create.url.endswith("/api/v0/asks/7700123/")
    body = json.loads(create.body)
    assert body["label"] == LABEL
    assert body["env"] == {"EPOCHS": "3", "CLOUDSCHED_KEY": IDEM, "CLOUDSCHED_JOB": JOB}
    assert (body["image"], body["args"], body["runtype"]) == ("ghcr.io/acme/train:1.4", ["python", "train.py"], "args")
    assert create.headers["Authorization"] == f"Bearer {KEY}"


def test_a_string_command_runs_under_sh(market, provider):
    provider.launch(placement(command="python train.py --epochs 3"), IDEM)
    assert json.loads(creates(market)[0].request.body)["args"] == ["sh", "-c", "python train.py --epochs 3"]


def test_second_launch_with_the_same_key_adopts_without_creating(market, provider):
    first = provider.launch(placement(), IDEM)
    second = provider.launch(placement(), IDEM)

    assert second.id == first.id
    assert len(creates(market)) == 1
    assert len(calls(market, "POST", "/bundles/")) == 1


def test_lost_create_response_is_transient_and_the_retry_adopts(rs, provider):
    add(rs, "instances_empty")
    add(rs, "instances")
    add(rs, "offers")
    add(rs, "create", body=requests.exceptions.ReadTimeout("response lost"))

    with pytest.raises(Transient) as lost:
        provider.launch(placement(), IDEM)
    assert len(creates(rs)) == 1
    assert "may have taken effect" in str(lost.value)

    assert provider.launch(placement(), IDEM).id == "31415926"
    assert len(creates(rs)) == 1


def test_negative_control_without_the_lookup_a_retry_creates_twice(rs, provider, monkeypatch):
    monkeypatch.setattr(vast, "adopt_or_create", lambda label, find, create: create())
    add(rs, "offers")
    add(rs, "create", body=requests.exceptions.ReadTimeout("response lost"))
    add(rs, "create")

    with pytest.raises(Transient):
        provider.launch(placement(), IDEM)
    provider.launch(placement(), IDEM)

    assert len(creates(rs)) == 2  # the duplicate the label lookup exists to prevent


def test_no_machine_at_the_approved_price_is_no_capacity(rs, provider):
    add(rs, "instances_empty")
    add(rs, "offers_none")
    with pytest.raises(NoCapacity):
        provider.launch(placement(), IDEM)
    assert creates(rs) == []


def test_several_nodes_are_refused_before_any_call(rs, provider):
    with pytest.raises(InvalidRequest, match="one machine"):
        provider.launch(placement(nodes=2, gpus=16), IDEM)
    assert len(rs.calls) == 0


def test_statuses_of_many_handles_is_one_list_call(rs, provider):
    add(rs, "instances")
    ids = ["31415926", "31415927", "31415928", "31415929", "31415930", "31415931", "99999999"]

    statuses = provider.statuses(Handle(provider="vast", id=i) for i in ids)

    assert len(rs.calls) == 1
    assert {k: s.phase for k, s in statuses.items()} == {
        "31415926": Phase.RUNNING, "31415927": Phase.PENDING, "31415928": Phase.SUCCEEDED,
        "31415929": Phase.FAILED, "31415930": Phase.PREEMPTED, "31415931": Phase.PENDING, "99999999": Phase.GONE}
    assert "offline" in statuses["31415931"].message
    assert [statuses[i].exit_code for i in ("31415928", "31415929", "31415926")] == [0, 137, None]
    assert statuses["31415926"].billed_usd is None  # Vast reports no bill per instance


@pytest.mark.parametrize(("row", "phase"), [
    ({"actual_status": None, "intended_status": "running"}, Phase.PENDING),
    ({"actual_status": "created", "intended_status": "running"}, Phase.PENDING),
    ({"actual_status": "loading", "intended_status": "running"}, Phase.PENDING),
    ({"actual_status": "running", "intended_status": "running"}, Phase.RUNNING),
    ({"actual_status": "running", "intended_status": "stopped", "status_msg": "Exited (0)"}, Phase.SUCCEEDED),
    ({"actual_status": "exited", "status_msg": "Exited (0) 2 minutes ago"}, Phase.SUCCEEDED),
    ({"actual_status": "exited", "status_msg": "exited with code 2"}, Phase.FAILED),
    ({"actual_status": "exited", "status_msg": ""}, Phase.FAILED),
    ({"actual_status": "stopped", "status_msg": "", "is_bid": True}, Phase.PREEMPTED),
    ({"actual_status": "frobnicating"}, Phase.PENDING),
])
def test_state_mapping(row, phase):
    assert vast._phase(row)[0] is phase


def test_status_of_one_instance(rs, provider):
    add(rs, "instance")
    assert provider.status(Handle(provider="vast", id="31415926")).phase is Phase.RUNNING
    assert parse_qs(urlsplit(rs.calls[0].request.url).query)["owner"] == ["me"]


@pytest.mark.parametrize("answer", ["instance_null", "error_404"])
def test_status_of_an_unknown_instance_is_gone(rs, provider, answer):
    if answer == "instance_null":
        add(rs, answer)
    else:
        error(rs, "GET", "/api/v0/instances/31415926/", answer)
    assert provider.status(Handle(provider="vast", id="31415926")).phase is Phase.GONE


def test_cancel_destroys(rs, provider):
    add(rs, "destroy")
    provider.cancel(Handle(provider="vast", id="31415926"))
    assert len(calls(rs, "DELETE", "/instances/31415926/")) == 1


def test_cancel_of_an_unknown_instance_is_silent(rs, provider):
    error(rs, "DELETE", "/api/v0/instances/31415926/", "error_404")
    provider.cancel(Handle(provider="vast", id="31415926"))
    assert len(rs.calls) == 1


def test_quote_is_live(rs, provider):
    add(rs, "offers")
    quote = provider.quote(OFFER)
    assert (quote.price_per_node_hour, quote.capacity_gpus, quote.available, quote.live) == (3.912, 16, True, True)
    assert "dph_total" not in json.loads(rs.calls[0].request.body)  # the quote shows the market, uncapped


def test_quote_without_machines_is_unavailable(rs, provider):
    add(rs, "offers_none")
    quote = provider.quote(OFFER)
    assert (quote.available, quote.capacity_gpus, quote.price_per_node_hour) == (False, 0, 4.05)


def test_list_ours_returns_our_live_instances_only(rs, provider):
    add(rs, "instances")
    owned = {o.handle.id: o for o in provider.list_ours()}
    assert set(owned) == {"31415926", "31415927", "31415931"}
    assert (owned["31415926"].job_id, owned["31415926"].idempotency_key) == (JOB, IDEM)
    assert owned["31415926"].created_at.year == 2026


ERRORS = [
    ("error_401", AuthFailed), ("error_403", AuthFailed), ("error_429", Throttled), ("error_500", Transient),
    ("error_capacity", NoCapacity), ("error_balance", QuotaExceeded), ("error_invalid", InvalidRequest),
]


@pytest.mark.parametrize(("name", "expected"), ERRORS)
def test_error_translation(rs, provider, name, expected):
    add(rs, "instances_empty")
    add(rs, "offers")
    error(rs, "PUT", "/api/v0/asks/7700123/", name)

    with pytest.raises(expected) as raised:
        provider.launch(placement(), IDEM)

    assert type(raised.value) is expected
    assert len(creates(rs)) == 1  # the SDK does not replay it: the worker retries, after the lookup
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)


def test_throttled_carries_retry_after(rs, provider):
    error(rs, "GET", "/api/v1/instances/", "error_429")
    with pytest.raises(Throttled) as raised:
        provider.list_ours()
    assert raised.value.retry_after_s == 3.0
    assert len(rs.calls) == 1


def test_an_unsuccessful_answer_with_status_200_is_translated(rs, provider):
    add(rs, "instances_empty")
    add(rs, "offers")
    rs.add("PUT", BASE + "/api/v0/asks/7700123/", json=REC["interactions"]["error_capacity"]["response"]["json"])
    with pytest.raises(NoCapacity):
        provider.launch(placement(), IDEM)


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectionError("refused"), requests.exceptions.ReadTimeout("x"),
                                 requests.exceptions.ConnectTimeout("x")])
def test_transport_errors_are_transient(rs, provider, exc):
    rs.add("GET", BASE + "/api/v1/instances/", body=exc)
    with pytest.raises(Transient):
        provider.statuses([Handle(provider="vast", id="31415926")])


def test_api_key_echoed_by_the_server_is_scrubbed(rs, provider):
    rs.add("GET", BASE + "/api/v1/instances/", status=401, json={"error": "auth_error", "msg": f"bad key {KEY}"})
    with pytest.raises(AuthFailed) as raised:
        provider.list_ours()
    assert KEY not in str(raised.value) and "***" in str(raised.value)


def test_api_key_in_an_unsuccessful_200_answer_is_scrubbed(rs, provider):
    add(rs, "instances_empty")
    add(rs, "offers")
    rs.add("PUT", BASE + "/api/v0/asks/7700123/", json={"success": False, "error": "invalid_args", "msg": f"key {KEY}"})
    with pytest.raises(InvalidRequest) as raised:
        provider.launch(placement(), IDEM)
    assert KEY not in str(raised.value) and "***" in str(raised.value)


def test_a_region_without_a_country_is_an_invalid_request(rs, provider):
    with pytest.raises(InvalidRequest, match="machine shape"):
        provider.quote(OFFER.model_copy(update={"region": "nowhere"}))
    assert len(rs.calls) == 0


def test_handle_carries_no_api_key(market, provider):
    handle = provider.launch(placement(), IDEM)
    assert KEY not in repr(handle) and KEY not in json.dumps(handle.to_json())


def test_key_comes_from_the_environment(rs, monkeypatch):
    monkeypatch.setenv(vast.ENV_KEY, KEY)
    add(rs, "destroy")
    vast.VastProvider(server_url=BASE).cancel(Handle(provider="vast", id="31415926"))
    assert rs.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_no_key_is_auth_failed_without_a_call(rs, monkeypatch):
    monkeypatch.delenv(vast.ENV_KEY, raising=False)
    with pytest.raises(AuthFailed, match=vast.ENV_KEY):
        vast.VastProvider(server_url=BASE).list_ours()
    assert len(rs.calls) == 0


@pytest.mark.parametrize(("header", "seconds"), [
    ("17", 17.0), ("1.5", 1.5), ("-3", 0.0), (None, None), ("", None), ("soon", None), ("in 120 s", 120.0),
])
def test_retry_after_reads_seconds_or_an_http_date(header, seconds):
    from workers.providers.marketplace import retry_after

    if header == "in 120 s":  # an HTTP date, made when the test runs
        header = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert retry_after(header) == (pytest.approx(seconds, abs=2) if seconds else seconds)
