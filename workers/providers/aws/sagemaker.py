"""SageMaker: managed (`ml.*`) offers as a training job, or for inference a model, endpoint config and endpoint.

The choices (idempotency by name, what reads as GONE) are in the package docstring (`workers.providers.aws`).
Every function takes a SageMaker client and lets botocore errors out: `AwsProvider` translates them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from workers.providers.aws.resources import NAME, NAME_PREFIX, kind, tag_list, tag_map
from workers.providers.base import TAG, TAG_JOB, Handle, LaunchRequest, Owned, Phase, Status
from workers.providers.bootstrap import command_argv, instance_type, job_env

RUNTIME_MARGIN = 1.5  # SageMaker stops a training job at MaxRuntimeInSeconds: leave room past the plan
MAX_RUNTIME_S = 28 * 24 * 3600
_MISSING_CODES = ("ValidationException", "ResourceNotFound", "ResourceNotFoundException")
_NOT_FOUND = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)
_TRAINING_BOOTING = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                     "DownloadingTrainingImage"}
# Any other status (InService, Updating, SystemUpdating, RollingBack...) serves: RUNNING.
_ENDPOINT_PHASES = {"Creating": Phase.PENDING, "Deleting": Phase.CANCELLED, "OutOfService": Phase.FAILED,
                    "Failed": Phase.FAILED}


def sagemaker_name(key: str) -> str:
    """The training job / endpoint / model name of a launch: from the key alone, so a replay finds it."""
    return NAME_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


# -- calls ----------------------------------------------------------------------------------


def launch_training(sm: Any, req: LaunchRequest, key: str, *, role: str, image: str, output_s3: str) -> Handle:
    name = sagemaker_name(key)
    algorithm = {"TrainingImage": image, "TrainingInputMode": "File"}
    if req.command:
        argv = command_argv(req)
        algorithm |= {"ContainerEntrypoint": argv[:1], "ContainerArguments": argv[1:]}
    runtime = min(MAX_RUNTIME_S, max(3600, math.ceil(req.run_hours * 3600 * RUNTIME_MARGIN)))
    _create_once(sm.describe_training_job, {"TrainingJobName": name}, lambda: sm.create_training_job(
        TrainingJobName=name, AlgorithmSpecification=algorithm, RoleArn=role, Environment=job_env(req),
        OutputDataConfig={"S3OutputPath": output_s3}, StoppingCondition={"MaxRuntimeInSeconds": runtime},
        ResourceConfig={"InstanceType": instance_type(req.offer), "InstanceCount": req.nodes,
                        "VolumeSizeInGB": 100}, Tags=tag_list(req, key)))
    return Handle(NAME, name, req.offer.region, {"kind": "sagemaker-training"})


def launch_endpoint(sm: Any, req: LaunchRequest, key: str, *, role: str, image: str) -> Handle:
    name, tags = sagemaker_name(key), tag_list(req, key)
    variant = {"VariantName": "main", "ModelName": name, "InitialInstanceCount": req.nodes,
               "InstanceType": instance_type(req.offer)}
    _create_once(sm.describe_model, {"ModelName": name}, lambda: sm.create_model(
        ModelName=name, PrimaryContainer={"Image": image, "Environment": job_env(req)}, ExecutionRoleArn=role,
        Tags=tags))
    _create_once(sm.describe_endpoint_config, {"EndpointConfigName": name}, lambda: sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[variant], Tags=tags))
    _create_once(sm.describe_endpoint, {"EndpointName": name}, lambda: sm.create_endpoint(
        EndpointName=name, EndpointConfigName=name, Tags=tags))
    return Handle(NAME, name, req.offer.region, {"kind": "sagemaker-endpoint"})


def sagemaker_status(sm: Any, handle: Handle) -> Status:
    if kind(handle) == "sagemaker-training":
        job = _if_exists(sm.describe_training_job, TrainingJobName=handle.id)
        return training_status(job) if job else Status(Phase.GONE)
    endpoint = _if_exists(sm.describe_endpoint, EndpointName=handle.id)
    return endpoint_status(endpoint) if endpoint else Status(Phase.GONE)


def cancel_sagemaker(sm: Any, handle: Handle) -> None:
    """Stop a training job in progress, or delete an endpoint with its config and model; silent if gone."""
    if kind(handle) == "sagemaker-training":
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


def owned_sagemaker(sm: Any, region: str) -> Iterator[Owned]:
    """Our live training jobs and endpoints in a region (named with our prefix and carrying our tag)."""
    jobs = sm.get_paginator("list_training_jobs").paginate(NameContains=NAME_PREFIX, StatusEquals="InProgress")
    found = [("sagemaker-training", s["TrainingJobName"], s["TrainingJobArn"], s["CreationTime"],
              training_status(s)) for page in jobs for s in page["TrainingJobSummaries"]]
    found += [("sagemaker-endpoint", e["EndpointName"], e["EndpointArn"], e["CreationTime"], endpoint_status(e))
              for page in sm.get_paginator("list_endpoints").paginate(NameContains=NAME_PREFIX)
              for e in page["Endpoints"]]
    for resource, name, arn, created, status in found:
        tags = tag_map({"Tags": sm.list_tags(ResourceArn=arn).get("Tags", [])})
        if TAG in tags and not status.phase.ended:
            yield Owned(Handle(NAME, name, region, {"kind": resource}), tags[TAG], tags.get(TAG_JOB, ""),
                        status.phase, created)


# -- pure helpers: SageMaker records in, our statuses out ------------------------------------


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
