"""AWS adapter: EC2 instances for clusters and plain inference, SageMaker for managed (`ml.*`) offers.

The contract is `scheduler.providers.Provider`. Where it is silent, this adapter chose:

- **Idempotency.** `launch` looks up its own tag first: EC2 `tag:cloudsched-key=<key>` in any state,
  terminated included (a replay after the job ended returns that instance rather than running the job
  again; a re-placement comes with a new key); SageMaker resources are named from the key alone
  (`sagemaker_name`) and described before they are created. On real AWS, RunInstances' `ClientToken`
  (the key, or its SHA-256 past 64 chars) and SageMaker's unique names also cover the lookup's blind spots
  (eventually consistent tags, terminated instances vanishing after about an hour). moto honours neither
  (TRAPS.md), so the tests prove the lookup.
- **Exit convention (EC2).** The user data runs the image (`docker run --gpus all`) or else the command,
  tags the instance `cloudsched-exit=<code>` and powers off (`InstanceInitiatedShutdownBehavior=terminate`
  ends billing; `instance_profile` must allow `ec2:CreateTags`). Shut down from inside with code 0:
  SUCCEEDED; another code or none: FAILED, so a job never succeeds unreported. Terminated through the API:
  CANCELLED; `Server.Spot*`: PREEMPTED; stopped: FAILED. A cluster reads as its worst node.
- **Polling.** `statuses` describes EC2 ids 1,000 per call, per region; ids AWS calls unknown are
  dropped and the call repeated, and read GONE, except within `NOT_FOUND_GRACE_S` of launch
  (DescribeInstances is eventually consistent). SageMaker: one describe per handle; a deleted endpoint is GONE.
- **Calls and errors.** One client per (service, region), built lazily, with connect/read timeouts and a
  single attempt: retries belong to the task layer. `translate` is the one place botocore errors become
  ours; SageMaker's `ResourceLimitExceeded` is an account quota (QuotaExceeded), not NoCapacity.
- **Quotes.** Spot: the lowest current zone price in the region (the catalog's rule); none: unavailable.
  On-demand and managed: AWS has no cheap live price call, so the catalog's (`live=False`).
- **Not done:** subnets, security groups, key pairs (default VPC); placement groups and EFA (nodes get
  CLOUDSCHED_NODE_RANK/CLOUDSCHED_NODES, no rendezvous address); managed spot training. Endpoints run
  their image's own serving entrypoint, without the job's command.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import shlex
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import boto3
from botocore import exceptions as sdk
from botocore.config import Config
from botocore.exceptions import ClientError

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

log = logging.getLogger(__name__)
T = TypeVar("T")

NAME = "aws"
# Deep Learning Base OSS Nvidia Driver AMI (docker, NVIDIA container toolkit, AWS CLI), resolved per region.
DEFAULT_AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DEFAULT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")  # only if the catalog has no AWS offer
EXIT_TAG = "cloudsched-exit"
TEAM_TAG = "cloudsched-team"
NAME_PREFIX = "cloudsched-"
DESCRIBE_BATCH = 1000  # DescribeInstances' limit on InstanceIds (filters allow only 200 values)
NOT_FOUND_GRACE_S = 120.0
RUNTIME_MARGIN = 1.5  # SageMaker stops a training job at MaxRuntimeInSeconds: leave room past the plan
MAX_RUNTIME_S = 28 * 24 * 3600
LIVE_STATES = ["pending", "running", "stopping", "stopped"]

_CODES: dict[str, type[ProviderError]] = {
    **dict.fromkeys(["InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
                     "InsufficientReservedInstanceCapacity", "SpotMaxPriceTooLow", "CapacityError",
                     "InsufficientCapacityError"], NoCapacity),
    **dict.fromkeys(["VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
                     "ResourceLimitExceeded"], QuotaExceeded),
    **dict.fromkeys(["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
                     "RequestThrottled", "RequestThrottledException", "SlowDown"], Throttled),
    **dict.fromkeys(["InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
                     "Unavailable", "RequestTimeout", "RequestTimeoutException"], Transient),
    **dict.fromkeys(["AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "UnrecognizedClientException",
                     "SignatureDoesNotMatch", "IncompleteSignature", "AccessDenied", "AccessDeniedException",
                     "ExpiredToken", "ExpiredTokenException", "OptInRequired", "Blocked"], AuthFailed),
    "FilterLimitExceeded": InvalidRequest,  # our bug, not a quota
}
_MISSING_CODES = ("ValidationException", "ResourceNotFound", "ResourceNotFoundException")
_NOT_FOUND = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)


def translate(exc: Exception) -> ProviderError:
    """Our error for a botocore one: the only place AWS errors are interpreted."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        code, status = error.get("Code", ""), int(meta.get("HTTPStatusCode") or 0)
        cls = _CODES.get(code) or (QuotaExceeded if code.endswith("LimitExceeded") else
                                   Transient if status >= 500 else InvalidRequest)
        return cls(f"{code}: {error.get('Message') or exc}", provider=NAME)
    if isinstance(exc, (sdk.NoCredentialsError, sdk.PartialCredentialsError, sdk.CredentialRetrievalError,
                        sdk.ProfileNotFound)):
        return AuthFailed(str(exc), provider=NAME)
    if isinstance(exc, sdk.ParamValidationError):
        return InvalidRequest(str(exc), provider=NAME)
    # Timeouts, refused or dropped connections: the call may or may not have taken effect.
    return Transient(f"{type(exc).__name__}: {exc}", provider=NAME)


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except (ClientError, sdk.BotoCoreError) as exc:
            raise translate(exc) from exc
    return wrapper


def client_token(key: str) -> str:
    """RunInstances' ClientToken: the key itself if AWS accepts it (64 ASCII chars at most), else its hash."""
    return key if len(key) <= 64 and key.isascii() else hashlib.sha256(key.encode()).hexdigest()


def sagemaker_name(key: str) -> str:
    """The training job / endpoint / model name of a launch: from the key alone, so a replay finds it."""
    return NAME_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def is_managed(offer: Offer) -> bool:
    return offer.managed or _instance_type(offer).startswith("ml.")


class AwsProvider:
    """Launches on EC2 (RunInstances) and SageMaker; the choices are in the module docstring."""

    name = NAME

    def __init__(self, *, session: boto3.Session | None = None, regions: Iterable[str] | None = None,
                 image_id: str | Mapping[str, str] | None = None, instance_profile: str | None = None,
                 sagemaker_role_arn: str | None = None, sagemaker_output_s3: str | None = None,
                 sagemaker_image: str | None = None, timeout_s: float = CALL_TIMEOUT_S, attempts: int = 1):
        """`image_id`: an AMI (or `resolve:ssm:` parameter) for every region, or one per region.
        `regions`: where `list_ours` looks (default: the regions of the catalog's AWS offers).
        `attempts`: per call, the first included (botocore's `max_attempts` counts only the retries)."""
        env = os.environ.get
        self._session = session or boto3.Session()
        self._regions = tuple(regions) if regions else None
        self._image_id = image_id or env("CLOUDSCHED_AWS_AMI") or DEFAULT_AMI
        self._instance_profile = instance_profile or env("CLOUDSCHED_AWS_INSTANCE_PROFILE")
        self._role_arn = sagemaker_role_arn or env("CLOUDSCHED_SAGEMAKER_ROLE_ARN")
        self._output_s3 = sagemaker_output_s3 or env("CLOUDSCHED_SAGEMAKER_OUTPUT_S3")
        self._sagemaker_image = sagemaker_image or env("CLOUDSCHED_SAGEMAKER_IMAGE")
        self._config = Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                              retries={"total_max_attempts": attempts, "mode": "standard"})
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _client(self, service: str, region: str) -> Any:
        with self._lock:  # boto3 clients are thread-safe, creating them from one session is not
            if (service, region) not in self._clients:
                self._clients[service, region] = self._session.client(service, region_name=region,
                                                                      config=self._config)
            return self._clients[service, region]

    @property
    def regions(self) -> tuple[str, ...]:
        if self._regions is None:
            from scheduler.catalog import load_catalog  # about a second: only when first needed
            self._regions = tuple(sorted({o.region for o in load_catalog().offers if o.provider == NAME}))
        return self._regions or DEFAULT_REGIONS

    # -- launch -------------------------------------------------------------------------------

    @_translated
    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        if not 0 < len(idempotency_key) <= 255:  # the longest value a tag filter accepts
            raise InvalidRequest("idempotency key must be 1-255 characters", provider=NAME)
        if not is_managed(placement.offer):
            return self._launch_ec2(placement, idempotency_key)
        if placement.kind == "inference":
            return self._launch_endpoint(placement, idempotency_key)
        return self._launch_training(placement, idempotency_key)

    def _launch_ec2(self, req: LaunchRequest, key: str) -> Handle:
        region = req.offer.region
        found = self._find_tagged(ec2 := self._client("ec2", region), key)
        if found:
            log.info("aws launch replayed", extra={"key": key, "instance_id": found[0]["InstanceId"]})
            return _ec2_handle(region, found)
        args: dict[str, Any] = dict(
            ImageId=self._ami(region), InstanceType=_instance_type(req.offer), MinCount=req.nodes,
            MaxCount=req.nodes, ClientToken=client_token(key), UserData=user_data(req, key),
            InstanceInitiatedShutdownBehavior="terminate",
            TagSpecifications=[{"ResourceType": kind, "Tags": _tag_list(req, key)} for kind in ("instance", "volume")])
        if req.spot:
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if self._instance_profile:
            arn = self._instance_profile.startswith("arn:")
            args["IamInstanceProfile"] = {"Arn" if arn else "Name": self._instance_profile}
        handle = _ec2_handle(region, ec2.run_instances(**args)["Instances"])
        log.info("aws launched", extra={"key": key, "instance_ids": handle.extra["instance_ids"]})
        return handle

    def _find_tagged(self, ec2: Any, key: str) -> list[dict]:
        """Our instances for `key`, in any state (the idempotency lookup)."""
        return list(_instances(ec2, Filters=[{"Name": f"tag:{TAG}", "Values": [key]}]))

    def _ami(self, region: str) -> str:
        image = self._image_id if isinstance(self._image_id, str) else self._image_id.get(region)
        if not image:
            raise InvalidRequest(f"no AMI configured for region {region}", provider=NAME)
        return image

    def _managed_settings(self, req: LaunchRequest, *, output: bool = False) -> tuple[str, str]:
        image = req.image or self._sagemaker_image
        if not (self._role_arn and image and (self._output_s3 or not output)):
            raise InvalidRequest("SageMaker needs a role (CLOUDSCHED_SAGEMAKER_ROLE_ARN), an image, and for training "
                                 "an output (CLOUDSCHED_SAGEMAKER_OUTPUT_S3)", provider=NAME)
        return self._role_arn, image

    def _launch_training(self, req: LaunchRequest, key: str) -> Handle:
        role, image = self._managed_settings(req, output=True)
        sm, name = self._client("sagemaker", req.offer.region), sagemaker_name(key)
        algorithm = {"TrainingImage": image, "TrainingInputMode": "File"}
        if req.command:
            argv = list(req.command) if isinstance(req.command, list) else ["sh", "-c", req.command]
            algorithm |= {"ContainerEntrypoint": argv[:1], "ContainerArguments": argv[1:]}
        runtime = min(MAX_RUNTIME_S, max(3600, math.ceil(req.run_hours * 3600 * RUNTIME_MARGIN)))
        _create_once(sm.describe_training_job, {"TrainingJobName": name}, lambda: sm.create_training_job(
            TrainingJobName=name, AlgorithmSpecification=algorithm, RoleArn=role, Environment=_env(req),
            OutputDataConfig={"S3OutputPath": self._output_s3}, StoppingCondition={"MaxRuntimeInSeconds": runtime},
            ResourceConfig={"InstanceType": _instance_type(req.offer), "InstanceCount": req.nodes,
                            "VolumeSizeInGB": 100}, Tags=_tag_list(req, key)))
        return Handle(NAME, name, req.offer.region, {"kind": "sagemaker-training"})

    def _launch_endpoint(self, req: LaunchRequest, key: str) -> Handle:
        role, image = self._managed_settings(req)
        sm, name, tags = self._client("sagemaker", req.offer.region), sagemaker_name(key), _tag_list(req, key)
        variant = {"VariantName": "main", "ModelName": name, "InitialInstanceCount": req.nodes,
                   "InstanceType": _instance_type(req.offer)}
        _create_once(sm.describe_model, {"ModelName": name}, lambda: sm.create_model(
            ModelName=name, PrimaryContainer={"Image": image, "Environment": _env(req)}, ExecutionRoleArn=role,
            Tags=tags))
        _create_once(sm.describe_endpoint_config, {"EndpointConfigName": name}, lambda: sm.create_endpoint_config(
            EndpointConfigName=name, ProductionVariants=[variant], Tags=tags))
        _create_once(sm.describe_endpoint, {"EndpointName": name}, lambda: sm.create_endpoint(
            EndpointName=name, EndpointConfigName=name, Tags=tags))
        return Handle(NAME, name, req.offer.region, {"kind": "sagemaker-endpoint"})

    # -- track --------------------------------------------------------------------------------

    @_translated
    def status(self, handle: Handle) -> Status:
        return self.statuses([handle])[handle.id]

    @_translated
    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        out: dict[str, Status] = {}
        ec2_by_region: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            if _kind(handle) == "ec2":
                ec2_by_region[handle.region].append(handle)
            else:
                out[handle.id] = self._sagemaker_status(handle)
        for region, group in ec2_by_region.items():
            found = self._describe_ids(self._client("ec2", region), [i for h in group for i in _instance_ids(h)])
            for handle in group:
                out[handle.id] = cluster_status(handle, [found.get(i) for i in _instance_ids(handle)])
        return out

    def _describe_ids(self, ec2: Any, ids: list[str]) -> dict[str, dict]:
        """The instances AWS still knows among `ids`, by id: one call per 1,000 (more if some are unknown)."""
        unique, found = list(dict.fromkeys(ids)), {}
        for start in range(0, len(unique), DESCRIBE_BATCH):
            chunk = unique[start:start + DESCRIBE_BATCH]
            for inst in _skip_unknown(lambda known: list(_instances(ec2, InstanceIds=known)), chunk) or []:
                found[inst["InstanceId"]] = inst
        return found

    def _sagemaker_status(self, handle: Handle) -> Status:
        sm = self._client("sagemaker", handle.region)
        if _kind(handle) == "sagemaker-training":
            job = _if_exists(sm.describe_training_job, TrainingJobName=handle.id)
            return training_status(job) if job else Status(Phase.GONE)
        endpoint = _if_exists(sm.describe_endpoint, EndpointName=handle.id)
        return endpoint_status(endpoint) if endpoint else Status(Phase.GONE)

    @_translated
    def cancel(self, handle: Handle) -> None:
        kind = _kind(handle)
        if kind == "ec2":
            ec2 = self._client("ec2", handle.region)
            _skip_unknown(lambda ids: ec2.terminate_instances(InstanceIds=ids), _instance_ids(handle))
            return
        sm = self._client("sagemaker", handle.region)
        if kind == "sagemaker-training":
            job = _if_exists(sm.describe_training_job, TrainingJobName=handle.id)
            if job and job["TrainingJobStatus"] == "InProgress":
                try:
                    sm.stop_training_job(TrainingJobName=handle.id)
                except ClientError as exc:  # it ended between the two calls
                    if exc.response.get("Error", {}).get("Code") != "ValidationException":
                        raise
            return
        _if_exists(sm.delete_endpoint, EndpointName=handle.id)
        _if_exists(sm.delete_endpoint_config, EndpointConfigName=handle.id)
        _if_exists(sm.delete_model, ModelName=handle.id)

    # -- prices and reconciliation ------------------------------------------------------------

    @_translated
    def quote(self, offer: Offer) -> Quote:
        if offer.market != "spot" or is_managed(offer):
            return catalog_quote(offer)
        now = datetime.now(timezone.utc)
        rows = self._client("ec2", offer.region).describe_spot_price_history(
            InstanceTypes=[_instance_type(offer)], ProductDescriptions=["Linux/UNIX"], StartTime=now,
            EndTime=now)["SpotPriceHistory"]
        latest = {row["AvailabilityZone"]: row for row in sorted(rows, key=lambda row: row["Timestamp"])
                  if row["ProductDescription"].startswith("Linux/UNIX")}  # per zone: the price in force now
        if not latest:
            return Quote(offer.id, offer.price_per_node_hour, available=False)
        return Quote(offer.id, min(float(row["SpotPrice"]) for row in latest.values()))

    @_translated
    def list_ours(self) -> list[Owned]:
        owned: list[Owned] = []
        for region in self.regions:
            by_key: dict[str, list[dict]] = defaultdict(list)
            for inst in _instances(self._client("ec2", region), Filters=[
                    {"Name": "tag-key", "Values": [TAG]}, {"Name": "instance-state-name", "Values": LIVE_STATES}]):
                by_key[_tag_map(inst)[TAG]].append(inst)
            for key, instances in by_key.items():
                handle = _ec2_handle(region, instances)
                owned.append(Owned(handle, key, _tag_map(instances[0]).get(TAG_JOB, ""),
                                   cluster_status(handle, instances).phase,
                                   min(i["LaunchTime"] for i in instances)))
            owned += self._sagemaker_ours(region)
        return owned

    def _sagemaker_ours(self, region: str) -> Iterator[Owned]:
        sm = self._client("sagemaker", region)
        jobs = sm.get_paginator("list_training_jobs").paginate(NameContains=NAME_PREFIX, StatusEquals="InProgress")
        found = [("sagemaker-training", s["TrainingJobName"], s["TrainingJobArn"], s["CreationTime"],
                  training_status(s)) for page in jobs for s in page["TrainingJobSummaries"]]
        found += [("sagemaker-endpoint", e["EndpointName"], e["EndpointArn"], e["CreationTime"], endpoint_status(e))
                  for page in sm.get_paginator("list_endpoints").paginate(NameContains=NAME_PREFIX)
                  for e in page["Endpoints"]]
        for kind, name, arn, created, status in found:
            tags = _tag_map({"Tags": sm.list_tags(ResourceArn=arn).get("Tags", [])})
            if TAG in tags and not status.phase.ended:
                yield Owned(Handle(NAME, name, region, {"kind": kind}), tags[TAG], tags.get(TAG_JOB, ""),
                            status.phase, created)


# -- pure helpers: requests in, AWS records out ----------------------------------------------


def user_data(req: LaunchRequest, key: str) -> str:
    """The boot script: run the job, report its exit code as a tag, power off (see the module docstring)."""
    env = _env(req)
    if req.image:
        argv = (shlex.join(req.command) if isinstance(req.command, list) else
                f"sh -c {shlex.quote(req.command)}" if req.command else "")
        passed = " ".join(f"-e {name}" for name in [*sorted(env), "CLOUDSCHED_NODE_RANK"])
        run = f"docker run --rm --gpus all --network host --ipc host {passed} {shlex.quote(req.image)} {argv}"
    elif req.command:
        run = shlex.join(req.command) if isinstance(req.command, list) else f"bash -c {shlex.quote(req.command)}"
    else:
        raise InvalidRequest("nothing to run: the job has neither launch.image nor launch.command", provider=NAME)
    return "\n".join([
        "#!/bin/bash", f"# cloudsched job {req.job_id}, launch {shlex.quote(key)}", "set -u",
        "TOKEN=$(curl -s -X PUT http://169.254.169.254/latest/api/token"
        " -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600')",
        'md() ( curl -s -H "X-aws-ec2-metadata-token: $TOKEN" "http://169.254.169.254/latest/meta-data/$1" )',
        "export CLOUDSCHED_NODE_RANK=$(md ami-launch-index)",
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
        run, "code=$?",
        f'aws ec2 create-tags --region {req.offer.region} --resources "$(md instance-id)"'
        f' --tags "Key={EXIT_TAG},Value=$code"',
        "shutdown -h now", ""])


def instance_status(inst: dict | None) -> Status:
    """One EC2 instance's phase under the exit convention of the module docstring."""
    if inst is None:
        return Status(Phase.GONE)
    state, reason = inst["State"]["Name"], inst.get("StateReason") or {}
    code, message = reason.get("Code", ""), reason.get("Message", "") or state
    transition = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", inst.get("StateTransitionReason", ""))
    times = {"started_at": inst.get("LaunchTime"),  # ended: 'User initiated (2024-01-02 03:04:05 GMT)'
             "ended_at": datetime.fromisoformat(transition[1]).replace(tzinfo=timezone.utc) if transition else None}
    if state in ("pending", "running"):
        return Status(Phase.PENDING if state == "pending" else Phase.RUNNING, started_at=times["started_at"])
    if code.startswith("Server.Spot"):
        return Status(Phase.PREEMPTED, message, **times)
    if state in ("stopping", "stopped"):
        return Status(Phase.FAILED, f"stopped outside cloudsched: {message}", **times)
    if code == "Client.UserInitiatedShutdown":
        return Status(Phase.CANCELLED, message, **times)
    if code == "Client.InstanceInitiatedShutdown":
        exit_tag = _tag_map(inst).get(EXIT_TAG)
        exit_code = int(exit_tag) if exit_tag and exit_tag.lstrip("-").isdigit() else None
        phase = Phase.SUCCEEDED if exit_code == 0 else Phase.FAILED
        text = f"exited with code {exit_code}" if exit_code is not None else "shut down without an exit code"
        return Status(phase, text, exit_code=exit_code, **times)
    return Status(Phase.FAILED, message, **times)


def cluster_status(handle: Handle, instances: list[dict | None]) -> Status:
    """A cluster's status: its worst node's (preempted, failed, cancelled, pending, running, succeeded)."""
    nodes = [instance_status(inst) for inst in instances]
    phases = {node.phase for node in nodes}
    if phases == {Phase.GONE}:
        launched = handle.extra.get("launched_at")
        if launched and datetime.now(timezone.utc) - datetime.fromisoformat(launched) < timedelta(
                seconds=NOT_FOUND_GRACE_S):
            return Status(Phase.PENDING, "launched moments ago: not visible to DescribeInstances yet")
        return Status(Phase.GONE)
    if Phase.GONE in phases and phases & {Phase.PENDING, Phase.RUNNING}:
        return Status(Phase.FAILED, "a node of the cluster no longer exists")
    for phase in (Phase.PREEMPTED, Phase.FAILED, Phase.CANCELLED, Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED):
        if phase in phases:
            return next(node for node in nodes if node.phase == phase)
    raise AssertionError(phases)  # unreachable: every phase is listed above


_TRAINING_BOOTING = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                     "DownloadingTrainingImage"}
# Any other status (InService, Updating, SystemUpdating, RollingBack...) serves: RUNNING.
_ENDPOINT_PHASES = {"Creating": Phase.PENDING, "Deleting": Phase.CANCELLED, "OutOfService": Phase.FAILED,
                    "Failed": Phase.FAILED}


def training_status(job: dict) -> Status:
    """A SageMaker training job (DescribeTrainingJob or a ListTrainingJobs summary) as our status."""
    status, secondary = job["TrainingJobStatus"], job.get("SecondaryStatus", "")
    times = {"started_at": job.get("TrainingStartTime"), "ended_at": job.get("TrainingEndTime")}
    if status == "InProgress":
        return Status(Phase.PENDING if secondary in _TRAINING_BOOTING else Phase.RUNNING, secondary, **times)
    if status == "Completed":
        return Status(Phase.SUCCEEDED, secondary, **times)
    if status == "Failed" or secondary == "MaxRuntimeExceeded":
        return Status(Phase.FAILED, job.get("FailureReason") or secondary, **times)
    return Status(Phase.CANCELLED, secondary, **times)  # Stopping, Stopped


def endpoint_status(endpoint: dict) -> Status:
    status = endpoint["EndpointStatus"]
    return Status(_ENDPOINT_PHASES.get(status, Phase.RUNNING), endpoint.get("FailureReason") or status,
                  started_at=endpoint.get("CreationTime"))


def _instances(ec2: Any, **kwargs: Any) -> Iterator[dict]:
    for page in ec2.get_paginator("describe_instances").paginate(**kwargs):
        for reservation in page["Reservations"]:
            yield from reservation["Instances"]


def _skip_unknown(call: Callable[[list[str]], T], ids: list[str]) -> T | None:
    """`call(ids)`, repeated without the ids AWS names as unknown (it fails the whole call for one)."""
    while ids:
        try:
            return call(ids)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            unknown = set()
            if error.get("Code") in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                unknown = set(re.findall(r"[\w-]+", error.get("Message", ""))) & set(ids)
            if not unknown:
                raise
            ids = [i for i in ids if i not in unknown]
    return None


def _if_exists(call: Callable[..., dict], **kwargs: Any) -> dict | None:
    """`call(**kwargs)` on a named SageMaker resource, or None if it does not exist (a ValidationException)."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in _MISSING_CODES and _NOT_FOUND.search(error.get("Message", "")):
            return None
        raise


def _create_once(describe: Callable[..., dict], names: dict[str, str], create: Callable[[], Any]) -> None:
    """Create a named SageMaker resource unless it exists; a racing creator's win counts as ours."""
    if _if_exists(describe, **names) is not None:
        return
    try:
        create()
    except ClientError as exc:
        if "already exist" not in exc.response.get("Error", {}).get("Message", "").lower():
            raise


def _ec2_handle(region: str, instances: list[dict]) -> Handle:
    nodes = sorted(instances, key=lambda i: (i.get("AmiLaunchIndex", 0), i["InstanceId"]))
    launched = min(i["LaunchTime"] for i in nodes)
    return Handle(NAME, nodes[0]["InstanceId"], region, {
        "kind": "ec2", "instance_ids": [i["InstanceId"] for i in nodes], "launched_at": launched.isoformat()})


def _kind(handle: Handle) -> str:
    return handle.extra.get("kind", "ec2")


def _instance_ids(handle: Handle) -> list[str]:
    return list(handle.extra.get("instance_ids") or [handle.id])


def _instance_type(offer: Offer) -> str:
    return offer.instance_type or offer.id.split(":")[2]


def _env(req: LaunchRequest) -> dict[str, str]:
    return {**req.env, "CLOUDSCHED_JOB_ID": req.job_id, "CLOUDSCHED_NODES": str(req.nodes)}


def _tag_list(req: LaunchRequest, key: str) -> list[dict[str, str]]:
    tags = {TAG: key, TAG_JOB: req.job_id, TEAM_TAG: req.team, "Name": req.name}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _tag_map(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags") or []}

