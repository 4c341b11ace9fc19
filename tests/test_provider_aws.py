"""The AWS adapter against moto: idempotent launches, batched tracking, quotes, reconciliation, errors.

moto ignores RunInstances' ClientToken and overwrites a SageMaker resource created twice under one
name (TRAPS.md), so duplicates are counted as instances (EC2) or as create calls (SageMaker), and a
negative control shows the EC2 count does catch a second launch.
"""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from moto import mock_aws

from scheduler.models import Offer
from workers.providers import get_provider
from workers.providers.aws import EXIT_TAG, AwsProvider, cluster_status, instance_status, sagemaker_name, translate
from workers.providers.aws import provider as aws_provider
from workers.providers.base import (
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

ROLE = "arn:aws:iam::123456789012:role/sagemaker"
AMI = "ami-12345678"


@pytest.fixture(autouse=True)
def moto(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "CLOUDSCHED_AWS_AMI", "CLOUDSCHED_SAGEMAKER_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


@pytest.fixture
def session():
    """Hooks registered on the session reach the clients the adapter builds from it afterwards (only those)."""
    return boto3.Session(region_name="us-east-1")


@pytest.fixture
def aws(session):
    return AwsProvider(session=session, regions=["us-east-1", "eu-west-1"], image_id=AMI, sagemaker_role_arn=ROLE,
                       sagemaker_output_s3="s3://bucket/out", sagemaker_image="serving:1")


def offer(instance="p4d.24xlarge", market="on-demand", region="us-east-1", managed=False) -> Offer:
    return Offer(id=f"aws:{region}:{instance}:{market}", provider="aws", architecture="centralized", region=region,
                 geo="eu" if region.startswith("eu") else "us", gpu_type="A100", gpus_per_node=8,
                 price_per_node_hour=32.77, market=market, capacity_gpus=64, interconnect="efa",
                 managed=managed, instance_type=instance)


def request(the_offer: Offer | None = None, *, nodes=1, kind="training", job="job-1") -> LaunchRequest:
    return LaunchRequest(job_id=job, team="vision", name=f"{job}-train", offer=the_offer or offer(), nodes=nodes,
                         gpus=8 * nodes, run_hours=2.0, kind=kind, image="trainer:1",
                         command=["python", "train.py", "--epochs", "3"], env={"WANDB_MODE": "offline"})


def instances(region="us-east-1", **filters) -> list[dict]:
    ec2 = boto3.client("ec2", region_name=region)
    kwargs = {"Filters": [{"Name": k, "Values": v} for k, v in filters.items()]} if filters else {}
    return [i for page in ec2.get_paginator("describe_instances").paginate(**kwargs)
            for r in page["Reservations"] for i in r["Instances"]]


def calls(session, event: str) -> list[dict]:
    """The parameters of every `event` call (e.g. 'ec2.RunInstances') the session's clients make, in order."""
    seen: list[dict] = []
    session.events.register(f"provide-client-params.{event}", lambda params, **_: seen.append(dict(params)))
    return seen


def urls(session, event: str) -> list[str]:
    """The endpoint (so the region) of every `event` call, in order."""
    seen: list[str] = []
    session.events.register(f"before-call.{event}", lambda params, **_: seen.append(params["url"]))
    return seen


def lose_response_once(session, event: str) -> None:
    """The call takes effect in moto, then its response is lost on the way back."""
    state = {"lost": False}

    def lose(**_):
        if not state["lost"]:
            state["lost"] = True
            raise ReadTimeoutError(endpoint_url="https://aws.example")
    session.events.register(f"after-call.{event}", lose)


def test_the_registry_builds_a_provider():
    adapter = get_provider("aws", image_id=AMI, regions=["us-east-1"])
    assert isinstance(adapter, AwsProvider) and isinstance(adapter, Provider)


def test_every_client_has_timeouts_and_one_attempt(session):
    adapter = AwsProvider(session=session, timeout_s=7)
    config = adapter._client("ec2", "eu-west-1").meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (7, 7, 1)


def test_list_ours_looks_in_the_catalog_regions_by_default(session):
    regions = AwsProvider(session=session).regions
    assert {"us-east-1", "us-west-2", "eu-west-1"} <= set(regions) and list(regions) == sorted(regions)


# -- EC2 launches ----------------------------------------------------------------------------


def test_launching_twice_makes_one_instance_and_returns_the_same_handle(aws):
    first = aws.launch(request(), "launch-1")
    again = aws.launch(request(), "launch-1")
    assert again == first
    ours = instances()
    assert [i["InstanceId"] for i in ours] == [first.id]
    assert first.provider == "aws" and first.region == "us-east-1" and first.extra["kind"] == "ec2"
    tags = {t["Key"]: t["Value"] for t in ours[0]["Tags"]}
    assert tags[TAG] == "launch-1" and tags[TAG_JOB] == "job-1" and tags["Name"] == "job-1-train"
    assert ours[0]["InstanceType"] == "p4d.24xlarge" and ours[0].get("InstanceLifecycle") is None


def test_a_cluster_is_one_call_of_n_nodes_and_node_zero_names_it(aws):
    handle = aws.launch(request(nodes=2), "cluster-1")
    assert aws.launch(request(nodes=2), "cluster-1") == handle
    ours = instances()
    assert len(ours) == 2
    assert sorted(handle.extra["instance_ids"]) == sorted(i["InstanceId"] for i in ours)
    node0 = next(i for i in ours if i["AmiLaunchIndex"] == 0)
    assert handle.id == node0["InstanceId"] == handle.extra["instance_ids"][0]


def test_the_run_request_carries_token_user_data_and_shutdown_behaviour(aws, session):
    runs = calls(session, "ec2.RunInstances")
    aws.launch(request(), "launch-1")
    sent = runs[0]
    assert sent["ClientToken"] == "launch-1" and sent["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert sent["MinCount"] == sent["MaxCount"] == 1 and sent["ImageId"] == AMI
    script = sent["UserData"]
    assert "docker run --rm --gpus all" in script and "trainer:1 python train.py --epochs 3" in script
    assert f"Key={EXIT_TAG},Value=$code" in script and script.rstrip().endswith("shutdown -h now")


def test_a_long_key_becomes_a_64_char_client_token(aws, session):
    runs = calls(session, "ec2.RunInstances")
    aws.launch(request(), "k" * 200)
    assert len(runs[0]["ClientToken"]) == 64


def test_a_lost_run_response_is_transient_and_the_retry_finds_the_instance(aws, session):
    lose_response_once(session, "ec2.RunInstances")
    with pytest.raises(Transient):
        aws.launch(request(nodes=2), "lost-1")
    assert len(instances()) == 2  # it did take effect
    handle = aws.launch(request(nodes=2), "lost-1")
    assert len(instances()) == 2
    assert sorted(handle.extra["instance_ids"]) == sorted(i["InstanceId"] for i in instances())
    assert aws.launch(request(nodes=2), "lost-1") == handle


def test_negative_control_without_the_lookup_moto_makes_a_duplicate(session, monkeypatch):
    monkeypatch.setattr(aws_provider, "find_tagged", lambda ec2, key: [])  # the adapter minus its tag lookup
    blind = AwsProvider(session=session, image_id=AMI, regions=["us-east-1"])
    blind.launch(request(), "launch-1")
    blind.launch(request(), "launch-1")
    assert len(instances()) == 2  # the count check above would catch a broken lookup


def test_a_spot_offer_launches_a_spot_instance(aws, session):
    runs = calls(session, "ec2.RunInstances")
    handle = aws.launch(request(offer(market="spot")), "spot-1")
    assert runs[0]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert instances()[0]["InstanceId"] == handle.id and instances()[0]["InstanceLifecycle"] == "spot"


def test_a_job_with_nothing_to_run_or_a_key_too_long_to_look_up_is_refused_before_any_call(aws, session):
    runs = calls(session, "ec2.RunInstances")
    empty = LaunchRequest(job_id="j", team="t", name="n", offer=offer(), nodes=1, gpus=8, run_hours=1)
    with pytest.raises(InvalidRequest, match="nothing to run"):
        aws.launch(empty, "empty-1")
    with pytest.raises(InvalidRequest, match="1-255"):
        aws.launch(request(), "k" * 256)
    assert runs == [] and instances() == []


# -- tracking --------------------------------------------------------------------------------


def test_statuses_make_one_describe_call_per_region(aws, session):
    describes = urls(session, "ec2.DescribeInstances")  # before the adapter builds its clients
    east_a = aws.launch(request(nodes=2), "a")
    east_b = aws.launch(request(job="job-2"), "b")
    west = aws.launch(request(offer(region="eu-west-1"), job="job-3"), "c")
    aws.cancel(east_b)
    describes.clear()
    result = aws.statuses([east_a, east_b, west])
    assert sorted(describes) == ["https://ec2.eu-west-1.amazonaws.com/",
                                                   "https://ec2.us-east-1.amazonaws.com/"]
    assert {k: s.phase for k, s in result.items()} == {
        east_a.id: Phase.RUNNING, east_b.id: Phase.CANCELLED, west.id: Phase.RUNNING}
    assert aws.status(east_b).phase == Phase.CANCELLED


def test_unknown_instances_are_gone_and_do_not_hide_the_known_ones(aws):
    known = aws.launch(request(), "a")
    unknown = [Handle("aws", f"i-0123456789abcdef{n}", "us-east-1", {"kind": "ec2"}) for n in range(2)]
    result = aws.statuses([unknown[0], known, unknown[1]])
    assert result[known.id].phase == Phase.RUNNING
    assert result[unknown[0].id].phase == result[unknown[1].id].phase == Phase.GONE


def test_an_instance_launched_moments_ago_is_pending_not_gone(aws):
    now = datetime.now(timezone.utc).isoformat()
    fresh = Handle("aws", "i-0123456789abcdef0", "us-east-1", {"kind": "ec2", "launched_at": now})
    assert aws.status(fresh).phase == Phase.PENDING


def test_cancel_is_silent_for_unknown_and_ended_handles(aws):
    handle = aws.launch(request(), "a")
    aws.cancel(handle)
    aws.cancel(handle)
    aws.cancel(Handle("aws", "i-0123456789abcdef0", "us-east-1"))
    aws.cancel(Handle("aws", "cloudsched-nope", "us-east-1", {"kind": "sagemaker-endpoint"}))
    assert instances()[0]["State"]["Name"] == "terminated"


def test_cancel_of_a_partly_gone_cluster_terminates_the_rest(aws):
    handle = aws.launch(request(nodes=2), "a")
    partly = Handle("aws", handle.id, "us-east-1", {"kind": "ec2",
                    "instance_ids": [*handle.extra["instance_ids"], "i-0123456789abcdef0"]})
    aws.cancel(partly)
    assert {i["State"]["Name"] for i in instances()} == {"terminated"}


def node(state="terminated", reason="", tags=None) -> dict:
    return {"InstanceId": "i-1", "State": {"Name": state}, "StateReason": {"Code": reason, "Message": reason},
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
            "StateTransitionReason": "User initiated (2026-01-02 03:04:05 GMT)"}


@pytest.mark.parametrize("instance, phase, exit_code", [
    (node("pending"), Phase.PENDING, None),
    (node("running"), Phase.RUNNING, None),
    (node(reason="Server.SpotInstanceTermination"), Phase.PREEMPTED, None),
    (node("shutting-down", "Server.SpotInstanceTermination"), Phase.PREEMPTED, None),
    (node(reason="Client.UserInitiatedShutdown"), Phase.CANCELLED, None),
    (node(reason="Client.InstanceInitiatedShutdown", tags={EXIT_TAG: "0"}), Phase.SUCCEEDED, 0),
    (node(reason="Client.InstanceInitiatedShutdown", tags={EXIT_TAG: "137"}), Phase.FAILED, 137),
    (node(reason="Client.InstanceInitiatedShutdown"), Phase.FAILED, None),
    (node("stopped", "Client.UserInitiatedShutdown"), Phase.FAILED, None),
    (node(reason="Server.InternalError"), Phase.FAILED, None),
    (None, Phase.GONE, None),
])
def test_the_exit_convention(instance, phase, exit_code):
    status = instance_status(instance)
    assert (status.phase, status.exit_code) == (phase, exit_code)
    if instance and instance["State"]["Name"] == "terminated":
        assert status.ended_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("nodes, phase", [
    ([node("running"), node(reason="Server.SpotInstanceTermination")], Phase.PREEMPTED),
    ([node("running"), node("pending")], Phase.PENDING),
    ([node(reason="Client.InstanceInitiatedShutdown", tags={EXIT_TAG: "0"}), node("running")], Phase.RUNNING),
    ([node(reason="Client.InstanceInitiatedShutdown", tags={EXIT_TAG: "0"})] * 2, Phase.SUCCEEDED),
    ([node(reason="Client.InstanceInitiatedShutdown", tags={EXIT_TAG: "1"}), node("running")], Phase.FAILED),
    ([node("running"), None], Phase.FAILED),
    ([None, None], Phase.GONE),
])
def test_a_cluster_reads_as_its_worst_node(nodes, phase):
    assert cluster_status(Handle("aws", "i-1", "us-east-1"), nodes).phase == phase


# -- SageMaker -------------------------------------------------------------------------------


def test_managed_training_is_one_sagemaker_job_under_a_name_from_the_key(aws, session):
    creates = calls(session, "sagemaker.CreateTrainingJob")
    managed = request(offer("ml.p4d.24xlarge", managed=True), nodes=2)
    handle = aws.launch(managed, "train-1")
    assert aws.launch(managed, "train-1") == handle
    assert len(creates) == 1 and instances() == []
    assert handle.id == sagemaker_name("train-1") and handle.extra["kind"] == "sagemaker-training"
    sm = boto3.client("sagemaker", region_name="us-east-1")
    job = sm.describe_training_job(TrainingJobName=handle.id)
    assert job["ResourceConfig"]["InstanceCount"] == 2 and job["AlgorithmSpecification"]["TrainingImage"] == "trainer:1"
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags[TAG] == "train-1" and tags[TAG_JOB] == "job-1"
    assert aws.status(handle).phase == Phase.SUCCEEDED  # moto completes training jobs at once
    aws.cancel(handle)  # ended: silent


def test_a_lost_create_training_response_is_retried_into_the_same_job(aws, session):
    creates = calls(session, "sagemaker.CreateTrainingJob")
    lose_response_once(session, "sagemaker.CreateTrainingJob")
    managed = request(offer("ml.p4d.24xlarge", managed=True))
    with pytest.raises(Transient):
        aws.launch(managed, "train-1")
    handle = aws.launch(managed, "train-1")
    assert handle.id == sagemaker_name("train-1") and len(creates) == 1


def test_managed_inference_is_one_endpoint(aws, session):
    creates = calls(session, "sagemaker.CreateEndpoint")
    serve = request(offer("ml.g4dn.xlarge", managed=True), kind="inference")  # moto knows only older types
    handle = aws.launch(serve, "serve-1")
    assert aws.launch(serve, "serve-1") == handle
    assert len(creates) == 1 and handle.extra["kind"] == "sagemaker-endpoint"
    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == [handle.id]
    assert aws.status(handle).phase == Phase.RUNNING
    aws.cancel(handle)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert aws.status(handle).phase == Phase.GONE


def test_a_lost_create_endpoint_response_is_retried_into_the_same_endpoint(aws, session):
    creates = {name: calls(session, f"sagemaker.{name}") for name in ("CreateModel", "CreateEndpoint")}
    lose_response_once(session, "sagemaker.CreateEndpoint")
    serve = request(offer("ml.g4dn.xlarge", managed=True), kind="inference")
    with pytest.raises(Transient):
        aws.launch(serve, "serve-1")
    handle = aws.launch(serve, "serve-1")
    assert handle.id == sagemaker_name("serve-1")
    assert {name: len(seen) for name, seen in creates.items()} == {"CreateModel": 1, "CreateEndpoint": 1}


def test_managed_launch_without_a_role_is_refused(session):
    bare = AwsProvider(session=session, image_id=AMI, regions=["us-east-1"])
    with pytest.raises(InvalidRequest, match="role"):
        bare.launch(request(offer("ml.p4d.24xlarge", managed=True)), "train-1")


# -- quotes and reconciliation ---------------------------------------------------------------


def test_a_spot_quote_is_the_lowest_current_price_from_aws(aws):
    history = boto3.client("ec2", region_name="us-east-1").describe_spot_price_history(
        InstanceTypes=["p4d.24xlarge"])["SpotPriceHistory"]
    quote = aws.quote(offer(market="spot"))
    assert quote.live and quote.available and quote.offer_id == "aws:us-east-1:p4d.24xlarge:spot"
    assert quote.price_per_node_hour == min(float(row["SpotPrice"]) for row in history) != 32.77


def test_an_on_demand_quote_is_the_catalog_price(aws, session):
    describes = calls(session, "ec2.DescribeSpotPriceHistory")
    quote = aws.quote(offer())
    assert (quote.price_per_node_hour, quote.live, quote.capacity_gpus) == (32.77, False, 64)
    assert describes == []


def test_list_ours_finds_only_live_tagged_instances_and_endpoints(aws):
    boto3.client("ec2", region_name="us-east-1").run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                                                               InstanceType="m5.large")
    cluster = aws.launch(request(nodes=2), "a")
    west = aws.launch(request(offer(region="eu-west-1"), job="job-3"), "c")
    aws.cancel(aws.launch(request(job="job-2"), "b"))
    endpoint = aws.launch(request(offer("ml.g4dn.xlarge", managed=True), kind="inference", job="job-4"), "d")
    aws.launch(request(offer("ml.p4d.24xlarge", managed=True), job="job-5"), "e")  # completed at once: not live
    owned = {o.idempotency_key: o for o in aws.list_ours()}
    assert sorted(owned) == ["a", "c", "d"]
    assert owned["a"].handle == cluster and owned["a"].job_id == "job-1" and owned["a"].phase == Phase.RUNNING
    assert owned["c"].handle.id == west.id and owned["d"].handle == endpoint and owned["d"].job_id == "job-4"


# -- errors ----------------------------------------------------------------------------------


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")


@pytest.mark.parametrize("code, status, expected", [
    ("InsufficientInstanceCapacity", 500, NoCapacity),
    ("InsufficientCapacity", 400, NoCapacity),
    ("SpotMaxPriceTooLow", 400, NoCapacity),
    ("VcpuLimitExceeded", 400, QuotaExceeded),
    ("InstanceLimitExceeded", 400, QuotaExceeded),
    ("ResourceLimitExceeded", 400, QuotaExceeded),
    ("MaxSpotInstanceCountExceeded", 400, QuotaExceeded),
    ("RequestLimitExceeded", 503, Throttled),
    ("Throttling", 400, Throttled),
    ("ThrottlingException", 400, Throttled),
    ("InternalError", 500, Transient),
    ("ServiceUnavailable", 503, Transient),
    ("SomethingNew", 502, Transient),
    ("AuthFailure", 401, AuthFailed),
    ("UnauthorizedOperation", 403, AuthFailed),
    ("InvalidClientTokenId", 403, AuthFailed),
    ("InvalidParameterValue", 400, InvalidRequest),
    ("InvalidAMIID.NotFound", 400, InvalidRequest),
    ("ValidationException", 400, InvalidRequest),
    ("SomethingNew", 400, InvalidRequest),
])
def test_client_errors_translate(code, status, expected):
    error = translate(client_error(code, status))
    assert type(error) is expected and error.provider == "aws" and code in str(error)


@pytest.mark.parametrize("exc, expected", [
    (EndpointConnectionError(endpoint_url="https://aws.example"), Transient),
    (ConnectTimeoutError(endpoint_url="https://aws.example"), Transient),
    (ReadTimeoutError(endpoint_url="https://aws.example"), Transient),
    (ConnectionClosedError(endpoint_url="https://aws.example"), Transient),
    (NoCredentialsError(), AuthFailed),
    (ParamValidationError(report="MinCount must be an integer"), InvalidRequest),
])
def test_sdk_errors_translate(exc, expected):
    assert type(translate(exc)) is expected


def test_a_throttled_run_instances_surfaces_as_throttled(aws, session):
    def throttle(**_):
        raise client_error("RequestLimitExceeded", 503)
    session.events.register("before-call.ec2.RunInstances", throttle)
    with pytest.raises(Throttled) as caught:
        aws.launch(request(), "launch-1")
    assert isinstance(caught.value.__cause__, ClientError) and caught.value.retryable
    assert instances() == []
