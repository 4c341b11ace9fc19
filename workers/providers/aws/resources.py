"""What the EC2 and SageMaker halves of the adapter share: the provider name, our tags, the handle kinds."""

from __future__ import annotations

from scheduler.models import Offer
from workers.providers.base import TAG, TAG_JOB, Handle, LaunchRequest
from workers.providers.bootstrap import instance_type

NAME = "aws"
TEAM_TAG = "cloudsched-team"
NAME_PREFIX = "cloudsched-"


def is_managed(offer: Offer) -> bool:
    """A SageMaker offer (`ml.*`), as opposed to an EC2 one."""
    return offer.managed or instance_type(offer).startswith("ml.")


def kind(handle: Handle) -> str:
    """What a handle names: `ec2` (one instance per node), `sagemaker-training` or `sagemaker-endpoint`."""
    return handle.extra.get("kind", "ec2")


def tag_list(req: LaunchRequest, key: str) -> list[dict[str, str]]:
    tags = {TAG: key, TAG_JOB: req.job_id, TEAM_TAG: req.team, "Name": req.name}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_map(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags") or []}
