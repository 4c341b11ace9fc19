"""The cost model (DESIGN §4.3). Every figure in a plan is recomputable from this module.

For job *j* (or one of its shards) on offer *o*:

    n  = ceil(gpus / gpus_per_node)                 nodes; billed GPUs n * gpus_per_node
    s  = speed(o.gpu_type) / speed(j.gpu_types[0])  relative GPU speed
    e  = 1 on one node, else NETWORK_EFFICIENCY[o.interconnect]
    h  = duration_hours / (s * e)                   run hours
    t  = size_gb * 8 / (gbps * 3600)                transfer hours, if the data lives elsewhere
    compute = n * price_per_node_hour * h'          per-second billing, reserved capacity at 0
    egress  = size_gb * egress_usd_per_gb(data provider)

Risk model for spot (stated once, used everywhere): a preemption costs on average
`lost_hours_per_preemption` hours of re-run (half an hourly checkpoint interval plus a
restart), preemptions arrive at `o.preemption_rate_per_hour`, so the plan reserves and
pays for the expected run `h' = h * (1 + rate * lost_hours_per_preemption)`. The deadline
must hold for `h'`. On-demand and reserved offers have `h' = h`.

Shards split the data evenly: each of `shards` shards moves `size_gb / shards`.

Inference: `duration_hours` is the serving window (DESIGN §4.1), a wall-clock length that
a faster GPU or a better network does not shorten, so for inference `s = e = 1`. (A faster
GPU still matters to the submitter, who lists only the types that meet their latency.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.models import Interconnect, JobKind, JobSpec, Market, Offer

# Seed document: RoCE 64xH100 ran 2.6 % slower than EFA; plain Ethernet 5-15 % slower.
NETWORK_EFFICIENCY: dict[Interconnect, float] = {
    Interconnect.EFA: 1.0,
    Interconnect.INFINIBAND: 1.0,
    Interconnect.ROCE: 0.974,
    Interconnect.ETHERNET: 0.90,
}

DEFAULT_LOST_HOURS_PER_PREEMPTION = 0.5


@dataclass(frozen=True)
class RiskModel:
    lost_hours_per_preemption: float = DEFAULT_LOST_HOURS_PER_PREEMPTION

    def describe(self) -> str:
        return (
            "spot: expected re-run, each preemption loses "
            f"{self.lost_hours_per_preemption:g} h; deadline checked on the expected run"
        )


@dataclass(frozen=True)
class Estimate:
    """Cost and time of one job (or one shard) on one offer."""

    nodes: int
    billed_gpus: int
    speed: float
    efficiency: float
    run_hours: float
    transfer_hours: float
    compute_cost: float
    egress_cost: float

    @property
    def hours(self) -> float:
        """Wall-clock hours the placement occupies: transfer, then run."""
        return self.transfer_hours + self.run_hours

    @property
    def total_cost(self) -> float:
        return self.compute_cost + self.egress_cost

    @property
    def hourly_cost(self) -> float:
        return self.compute_cost / self.run_hours if self.run_hours else 0.0


def nodes_needed(gpus: int, gpus_per_node: int) -> int:
    return math.ceil(gpus / gpus_per_node)


def network_efficiency(nodes: int, interconnect: Interconnect) -> float:
    return 1.0 if nodes <= 1 else NETWORK_EFFICIENCY[Interconnect(interconnect)]


def transfer_hours(size_gb: float, gbps: float) -> float:
    return size_gb * 8 / (gbps * 3600)


def data_is_local(job: JobSpec, offer: Offer) -> bool:
    return job.data is None or (job.data.provider == offer.provider and job.data.region == offer.region)


def estimate(
    job: JobSpec,
    offer: Offer,
    *,
    speed: float,
    data_egress_usd_per_gb: float = 0.0,
    risk: RiskModel = RiskModel(),
) -> Estimate:
    """Estimate one shard of `job` on `offer` (the whole job when `job.shards == 1`).

    `speed` is s = speed(offer GPU) / speed(reference GPU); `data_egress_usd_per_gb` is
    the egress price of the provider the job's data leaves.
    """
    gpus = job.gpus_per_shard
    nodes = nodes_needed(gpus, offer.gpus_per_node)
    eff = network_efficiency(nodes, offer.interconnect)
    if job.kind is JobKind.INFERENCE:
        speed = eff = 1.0
    run = job.duration_hours / (speed * eff)
    if offer.market is Market.SPOT:
        run *= 1 + offer.preemption_rate_per_hour * risk.lost_hours_per_preemption
    transfer = egress = 0.0
    if not data_is_local(job, offer):
        size = job.data.size_gb / job.shards
        transfer = transfer_hours(size, offer.ingress_gbps)
        egress = size * data_egress_usd_per_gb
    price = 0.0 if offer.market is Market.RESERVED else offer.price_per_node_hour
    return Estimate(
        nodes=nodes,
        billed_gpus=nodes * offer.gpus_per_node,
        speed=speed,
        efficiency=eff,
        run_hours=run,
        transfer_hours=transfer,
        compute_cost=nodes * price * run,
        egress_cost=egress,
    )
