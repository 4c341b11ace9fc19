"""The job on a cloud VM: what the EC2, Compute Engine and Azure adapters share to start it and read it back.

- **Machine.** `instance_type` is the VM type of a catalog offer (its field, else the third part of its id).
- **Environment.** Every node sees the request's `env` plus `CLOUDSCHED_JOB_ID` and `CLOUDSCHED_NODES`
  (`job_env`), and its own `CLOUDSCHED_NODE_RANK`.
- **Command.** `job_command` is the shell line that runs the job on one node: in `docker run --gpus all`
  (`DOCKER_RUN`) when the request names an image, else the command itself (`command_argv`). EC2 builds its
  own line from the same pieces: its nodes share one user data and learn their rank only at boot.
- **Exit convention.** `job_script` runs that line, keeps its exit code in `$code`, hands over to the
  provider's own tagging step (which writes `$code` into tag / label `EXIT_TAG` on the VM), then powers off;
  `reported_exit` reads that value back as a status.
- **One VM per node** (Compute Engine, Azure): node i of a launch is VM `<vm_base(key)>-<i>` (`node_names`);
  `by_launch` groups VMs back into launches and `combine` makes one status of a launch's nodes.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TypeVar

from scheduler.models import Offer
from workers.providers.base import Handle, LaunchRequest, Phase, Status

EXIT_TAG = "cloudsched-exit"  # the tag (label on GCP) the boot script's report step writes the exit code into
DOCKER_RUN = ("docker", "run", "--rm", "--gpus", "all", "--network", "host", "--ipc", "host")
_NODE = re.compile(r"(.+)-(\d+)")
T = TypeVar("T")


# -- the machine and the job ----------------------------------------------------------------

def instance_type(offer: Offer) -> str:
    """The provider's VM type of a catalog offer (`aws:us-east-1:p5.48xlarge:spot` -> `p5.48xlarge`)."""
    return offer.instance_type or offer.id.split(":")[2]


def job_env(req: LaunchRequest) -> dict[str, str]:
    """The job's environment on every node (each node adds its `CLOUDSCHED_NODE_RANK`)."""
    return {**req.env, "CLOUDSCHED_JOB_ID": req.job_id, "CLOUDSCHED_NODES": str(req.nodes)}


def command_argv(req: LaunchRequest) -> list[str]:
    """The job's command as argv: a string runs under `sh -c`; no command is an empty list."""
    return req.command if isinstance(req.command, list) else (["sh", "-c", req.command] if req.command else [])


def job_command(req: LaunchRequest, node: int = 0) -> str:
    """The shell command that runs the job on node `node`: in its container image if it names one."""
    argv = command_argv(req)
    env = {**job_env(req), "CLOUDSCHED_NODE_RANK": str(node)}
    if req.image:
        flags = [arg for k, v in sorted(env.items()) for arg in ("-e", f"{k}={v}")]
        return shlex.join([*DOCKER_RUN, *flags, req.image, *argv])
    return shlex.join(["env", *(f"{k}={v}" for k, v in sorted(env.items())), *(argv or ["true"])])


def job_script(command: str, *, setup: Iterable[str] = (), report: Iterable[str] = (),
               power_off: str = "shutdown -h now") -> str:
    """A boot script under the exit convention: `setup`, `command`, `code=$?`, `report` (the provider's
    tagging step, reading `$code`), then `power_off`."""
    return "\n".join(["#!/bin/bash", *setup, command, "code=$?", *report, power_off, ""])


def reported_exit(code: str, *, started_at: datetime | None = None, ended_at: datetime | None = None) -> Status:
    """The status of a VM whose boot script reported `code` (its `EXIT_TAG`): 0 succeeded, anything else failed."""
    exit_code = int(code) if code.isdigit() else None
    return Status(Phase.SUCCEEDED if exit_code == 0 else Phase.FAILED, f"command exited {code}", exit_code=exit_code,
                  started_at=started_at, ended_at=ended_at)


# -- one VM per node ------------------------------------------------------------------------

def vm_base(key: str) -> str:
    """The VM name stem for a key (node i is `<stem>-<i>`): `cs-` then [a-z0-9-], 56 chars at most."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:40]
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"cs-{slug}-{digest}" if slug else f"cs-{digest}"


def node_names(handle: Handle) -> list[str]:
    """The VM names of a launch's nodes, node 0 first (`handle.id` is their stem)."""
    return [f"{handle.id}-{node}" for node in range(int(handle.extra.get("nodes", 1)))]


def by_launch(vms: Mapping[str, T]) -> dict[str, list[T]]:
    """VMs by name, grouped by the stem of `<stem>-<i>`: one entry per launch, its nodes in name order."""
    groups: dict[str, list[T]] = {}
    for name, vm in sorted(vms.items()):
        match = _NODE.fullmatch(name)
        groups.setdefault(match[1] if match else name, []).append(vm)
    return groups


def combine(nodes: list[Status]) -> Status:
    """One status for the nodes of a launch.

    All nodes GONE: the first node's status. Else any PREEMPTED, else FAILED, else CANCELLED node's; some
    nodes gone: FAILED; else any PENDING, else RUNNING node's; else SUCCEEDED, with the first node's message
    and start and the last end.
    """
    gone = [s for s in nodes if s.phase is Phase.GONE]
    if len(gone) == len(nodes):
        return nodes[0]
    for phase in (Phase.PREEMPTED, Phase.FAILED, Phase.CANCELLED):
        if hit := next((s for s in nodes if s.phase is phase), None):
            return hit
    if gone:
        return Status(Phase.FAILED, f"{len(gone)} of {len(nodes)} nodes are gone")
    for phase in (Phase.PENDING, Phase.RUNNING):
        if hit := next((s for s in nodes if s.phase is phase), None):
            return hit
    return Status(Phase.SUCCEEDED, nodes[0].message, exit_code=0, started_at=nodes[0].started_at,
                  ended_at=max((s.ended_at for s in nodes if s.ended_at), default=None))
