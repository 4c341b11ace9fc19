"""`AwsProvider`: settings, one client per (service, region), and the port's calls routed to EC2 or SageMaker."""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import boto3
from botocore.config import Config

from scheduler.models import Offer
from workers.providers.aws.ec2 import (
    cluster_status,
    describe_ids,
    ec2_handle,
    find_tagged,
    instance_ids,
    owned_instances,
    run_instances,
    spot_quote,
    terminate,
)
from workers.providers.aws.errors import translated
from workers.providers.aws.resources import NAME, is_managed, kind
from workers.providers.aws.sagemaker import (
    cancel_sagemaker,
    launch_endpoint,
    launch_training,
    owned_sagemaker,
    sagemaker_status,
)
from workers.providers.base import (
    CALL_TIMEOUT_S,
    Handle,
    InvalidRequest,
    LaunchRequest,
    Owned,
    Quote,
    Status,
    catalog_quote,
)

log = logging.getLogger(__name__)

# Deep Learning Base OSS Nvidia Driver AMI (docker, NVIDIA container toolkit, AWS CLI), resolved per region.
DEFAULT_AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DEFAULT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")  # only if the catalog has no AWS offer


class AwsProvider:
    """Launches on EC2 (RunInstances) and SageMaker; the choices are in the package docstring."""

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

    @translated
    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        if not 0 < len(idempotency_key) <= 255:  # the longest value a tag filter accepts
            raise InvalidRequest("idempotency key must be 1-255 characters", provider=NAME)
        if not is_managed(placement.offer):
            return self._launch_ec2(placement, idempotency_key)
        inference = placement.kind == "inference"
        role, image = self._managed_settings(placement, output=not inference)
        sm = self._client("sagemaker", placement.offer.region)
        if inference:
            return launch_endpoint(sm, placement, idempotency_key, role=role, image=image)
        return launch_training(sm, placement, idempotency_key, role=role, image=image, output_s3=self._output_s3)

    def _launch_ec2(self, req: LaunchRequest, key: str) -> Handle:
        region = req.offer.region
        found = find_tagged(ec2 := self._client("ec2", region), key)
        if found:
            log.info("aws launch replayed", extra={"key": key, "instance_id": found[0]["InstanceId"]})
            return ec2_handle(region, found)
        return run_instances(ec2, req, key, image_id=self._ami(region), instance_profile=self._instance_profile)

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

    # -- track --------------------------------------------------------------------------------

    @translated
    def status(self, handle: Handle) -> Status:
        return self.statuses([handle])[handle.id]

    @translated
    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        out: dict[str, Status] = {}
        ec2_by_region: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            if kind(handle) == "ec2":
                ec2_by_region[handle.region].append(handle)
            else:
                out[handle.id] = sagemaker_status(self._client("sagemaker", handle.region), handle)
        for region, group in ec2_by_region.items():
            found = describe_ids(self._client("ec2", region), [i for h in group for i in instance_ids(h)])
            for handle in group:
                out[handle.id] = cluster_status(handle, [found.get(i) for i in instance_ids(handle)])
        return out

    @translated
    def cancel(self, handle: Handle) -> None:
        if kind(handle) == "ec2":
            terminate(self._client("ec2", handle.region), handle)
        else:
            cancel_sagemaker(self._client("sagemaker", handle.region), handle)

    # -- prices and reconciliation ------------------------------------------------------------

    @translated
    def quote(self, offer: Offer) -> Quote:
        if offer.market != "spot" or is_managed(offer):
            return catalog_quote(offer)
        return spot_quote(self._client("ec2", offer.region), offer)

    @translated
    def list_ours(self) -> list[Owned]:
        owned: list[Owned] = []
        for region in self.regions:
            owned += owned_instances(self._client("ec2", region), region)
            owned += owned_sagemaker(self._client("sagemaker", region), region)
        return owned
