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

Modules: `provider` (`AwsProvider`: settings, clients, routing), `ec2`, `sagemaker`, `errors` (`translate`),
`resources` (tags and names both halves use). The boot script's shared parts are in `workers.providers.bootstrap`.
"""

from workers.providers.aws.ec2 import (
    EXIT_TAG,
    NOT_FOUND_GRACE_S,
    client_token,
    cluster_status,
    instance_status,
    user_data,
)
from workers.providers.aws.errors import translate
from workers.providers.aws.provider import AwsProvider
from workers.providers.aws.resources import NAME
from workers.providers.aws.sagemaker import endpoint_status, sagemaker_name, training_status

__all__ = ["EXIT_TAG", "NAME", "NOT_FOUND_GRACE_S", "AwsProvider", "client_token", "cluster_status", "endpoint_status",
           "instance_status", "sagemaker_name", "training_status", "translate", "user_data"]
