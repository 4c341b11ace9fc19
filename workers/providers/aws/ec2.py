"""EC2: clusters and plain inference as one instance per node (RunInstances), read back under the exit convention.

The choices (idempotency, exit convention, polling) are in the package docstring (`workers.providers.aws`).
Every function takes an EC2 client and lets botocore errors out: `AwsProvider` translates them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from scheduler.models import Offer
from workers.providers.aws.resources import NAME, tag_list, tag_map
from workers.providers.base import TAG, TAG_JOB, Handle, InvalidRequest, LaunchRequest, Owned, Phase, Quote, Status
from workers.providers.bootstrap import DOCKER_RUN, EXIT_TAG, command_argv, instance_type, job_env, job_script

log = logging.getLogger(__name__)
T = TypeVar("T")

DESCRIBE_BATCH = 1000  # DescribeInstances' limit on InstanceIds (filters allow only 200 values)
NOT_FOUND_GRACE_S = 120.0
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def client_token(key: str) -> str:
    """RunInstances' ClientToken: the key itself if AWS accepts it (64 ASCII chars at most), else its hash."""
    return key if len(key) <= 64 and key.isascii() else hashlib.sha256(key.encode()).hexdigest()


# -- calls ----------------------------------------------------------------------------------


def run_instances(ec2: Any, req: LaunchRequest, key: str, *, image_id: str, instance_profile: str | None) -> Handle:
    """Start the placement's nodes in one RunInstances call (after the caller's tag lookup found none)."""
    args: dict[str, Any] = dict(
        ImageId=image_id, InstanceType=instance_type(req.offer), MinCount=req.nodes,
        MaxCount=req.nodes, ClientToken=client_token(key), UserData=user_data(req, key),
        InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[{"ResourceType": kind, "Tags": tag_list(req, key)} for kind in ("instance", "volume")])
    if req.spot:
        args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if instance_profile:
        arn = instance_profile.startswith("arn:")
        args["IamInstanceProfile"] = {"Arn" if arn else "Name": instance_profile}
    handle = ec2_handle(req.offer.region, ec2.run_instances(**args)["Instances"])
    log.info("aws launched", extra={"key": key, "instance_ids": handle.extra["instance_ids"]})
    return handle


def find_tagged(ec2: Any, key: str) -> list[dict]:
    """Our instances for `key`, in any state (the idempotency lookup)."""
    return list(_instances(ec2, Filters=[{"Name": f"tag:{TAG}", "Values": [key]}]))


def describe_ids(ec2: Any, ids: list[str]) -> dict[str, dict]:
    """The instances AWS still knows among `ids`, by id: one call per 1,000 (more if some are unknown)."""
    unique, found = list(dict.fromkeys(ids)), {}
    for start in range(0, len(unique), DESCRIBE_BATCH):
        chunk = unique[start:start + DESCRIBE_BATCH]
        for inst in _skip_unknown(lambda known: list(_instances(ec2, InstanceIds=known)), chunk) or []:
            found[inst["InstanceId"]] = inst
    return found


def terminate(ec2: Any, handle: Handle) -> None:
    """Terminate a cluster's nodes; those AWS no longer knows are skipped."""
    _skip_unknown(lambda ids: ec2.terminate_instances(InstanceIds=ids), instance_ids(handle))


def spot_quote(ec2: Any, offer: Offer) -> Quote:
    """The lowest current zone price in the region (the catalog's rule); no price: unavailable."""
    now = datetime.now(timezone.utc)
    rows = ec2.describe_spot_price_history(
        InstanceTypes=[instance_type(offer)], ProductDescriptions=["Linux/UNIX"], StartTime=now,
        EndTime=now)["SpotPriceHistory"]
    latest = {row["AvailabilityZone"]: row for row in sorted(rows, key=lambda row: row["Timestamp"])
              if row["ProductDescription"].startswith("Linux/UNIX")}  # per zone: the price in force now
    if not latest:
        return Quote(offer.id, offer.price_per_node_hour, available=False)
    return Quote(offer.id, min(float(row["SpotPrice"]) for row in latest.values()))


def owned_instances(ec2: Any, region: str) -> list[Owned]:
    """Our live clusters in a region, one per idempotency key."""
    by_key: dict[str, list[dict]] = {}
    for inst in _instances(ec2, Filters=[
            {"Name": "tag-key", "Values": [TAG]}, {"Name": "instance-state-name", "Values": LIVE_STATES}]):
        by_key.setdefault(tag_map(inst)[TAG], []).append(inst)
    owned: list[Owned] = []
    for key, instances in by_key.items():
        handle = ec2_handle(region, instances)
        owned.append(Owned(handle, key, tag_map(instances[0]).get(TAG_JOB, ""), cluster_status(handle, instances).phase,
                           min(i["LaunchTime"] for i in instances)))
    return owned


# -- pure helpers: requests in, EC2 records out ----------------------------------------------


def user_data(req: LaunchRequest, key: str) -> str:
    """The boot script: run the job, report its exit code as a tag, power off (see the package docstring).

    One user data serves every node of a RunInstances call, so a node reads its rank from the instance
    metadata at boot and the job's environment is exported, not written into the command line.
    """
    env = job_env(req)
    if req.image:
        passed = " ".join(f"-e {name}" for name in [*sorted(env), "CLOUDSCHED_NODE_RANK"])
        run = f"{shlex.join(DOCKER_RUN)} {passed} {shlex.quote(req.image)} {shlex.join(command_argv(req))}"
    elif req.command:
        run = shlex.join(req.command) if isinstance(req.command, list) else f"bash -c {shlex.quote(req.command)}"
    else:
        raise InvalidRequest("nothing to run: the job has neither launch.image nor launch.command", provider=NAME)
    setup = [
        f"# cloudsched job {req.job_id}, launch {shlex.quote(key)}", "set -u",
        "TOKEN=$(curl -s -X PUT http://169.254.169.254/latest/api/token"
        " -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600')",
        'md() ( curl -s -H "X-aws-ec2-metadata-token: $TOKEN" "http://169.254.169.254/latest/meta-data/$1" )',
        "export CLOUDSCHED_NODE_RANK=$(md ami-launch-index)",
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))]
    report = (f'aws ec2 create-tags --region {req.offer.region} --resources "$(md instance-id)"'
              f' --tags "Key={EXIT_TAG},Value=$code"')
    return job_script(run, setup=setup, report=[report])


def instance_status(inst: dict | None) -> Status:
    """One EC2 instance's phase under the exit convention of the package docstring."""
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
        exit_tag = tag_map(inst).get(EXIT_TAG)
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


def ec2_handle(region: str, instances: list[dict]) -> Handle:
    nodes = sorted(instances, key=lambda i: (i.get("AmiLaunchIndex", 0), i["InstanceId"]))
    launched = min(i["LaunchTime"] for i in nodes)
    return Handle(NAME, nodes[0]["InstanceId"], region, {
        "kind": "ec2", "instance_ids": [i["InstanceId"] for i in nodes], "launched_at": launched.isoformat()})


def instance_ids(handle: Handle) -> list[str]:
    return list(handle.extra.get("instance_ids") or [handle.id])


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
