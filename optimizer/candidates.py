"""Candidate compilation: every job's feasible offers, cheapest first, in integer units.

The static checks of `optimizer.problem` run vectorised over the offers (numpy), cached
per policy (GPU types, managed, spot, regions, compliance) and per signature (plus size,
kind and data location): a batch of 10,000 jobs shares a few thousand of them. The
per-job part (dates, duration, price cap) runs on (jobs x offers) arrays per signature.
`tests/test_compile_agreement.py` checks it against the one-offer-at-a-time rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from optimizer.problem import (
    MAX_CANDIDATES,
    Instance,
    JobCandidates,
    OfferChoice,
    Problem,
    minutes_between,
    policy_key,
    signature,
    static_rejection,
)
from scheduler.cost import NETWORK_EFFICIENCY, transfer_hours
from scheduler.models import Architecture, Compliance, JobKind, JobSpec, Market


@dataclass
class _OfferTable:
    """Column arrays over all offers, and offer indices by GPU type."""

    gpn: np.ndarray
    price: np.ndarray  # USD per node-hour, reserved at 0
    capacity: np.ndarray
    efficiency: np.ndarray  # multi-node network efficiency
    spot_factor: np.ndarray  # expected-run factor of the spot risk model
    transfer_rate: np.ndarray  # hours per GB moved in
    centralized: np.ndarray
    managed: np.ndarray
    spot: np.ndarray
    geo: np.ndarray
    location: np.ndarray  # "provider:region"
    certs: np.ndarray  # bit mask over Compliance
    gpu: np.ndarray
    by_gpu: dict[str, np.ndarray]

    @classmethod
    def build(cls, problem: Problem) -> _OfferTable:
        offers = problem.offers
        lost = problem.risk.lost_hours_per_preemption
        by_gpu: dict[str, list[int]] = {}
        for i, o in enumerate(offers):
            by_gpu.setdefault(o.gpu_type, []).append(i)
        return cls(
            gpn=np.array([o.gpus_per_node for o in offers], dtype=np.int64),
            price=np.array([0.0 if o.market is Market.RESERVED else o.price_per_node_hour for o in offers]),
            capacity=np.array([o.capacity_gpus for o in offers], dtype=np.int64),
            efficiency=np.array([NETWORK_EFFICIENCY[o.interconnect] for o in offers]),
            spot_factor=np.array([1 + o.preemption_rate_per_hour * lost if o.market is Market.SPOT else 1.0
                                  for o in offers]),
            transfer_rate=np.array([transfer_hours(1.0, o.ingress_gbps) for o in offers]),
            centralized=np.array([o.architecture is Architecture.CENTRALIZED for o in offers], dtype=bool),
            managed=np.array([o.managed for o in offers], dtype=bool),
            spot=np.array([o.market is Market.SPOT for o in offers], dtype=bool),
            geo=np.array([o.geo for o in offers], dtype=object),
            location=np.array([f"{o.provider}:{o.region}" for o in offers], dtype=object),
            certs=np.array([_cert_mask(o.certifications) for o in offers], dtype=np.int64),
            gpu=np.array([o.gpu_type for o in offers], dtype=object),
            by_gpu={g: np.array(ix, dtype=np.int64) for g, ix in by_gpu.items()},
        )


_CERT_BITS = {c.value: 1 << i for i, c in enumerate(Compliance)}


def _cert_mask(names) -> int:
    return sum(_CERT_BITS.get(str(getattr(n, "value", n)), 0) for n in set(names))


@dataclass
class _OfferArrays:
    """Per-signature arrays over the offers that pass the static checks."""

    index: np.ndarray
    nodes: np.ndarray
    gpn: np.ndarray
    price: np.ndarray
    run_factor: np.ndarray  # run hours per reference hour
    transfer_rate: np.ndarray  # hours per GB when the data is remote, else 0
    centralized: np.ndarray
    static_rejections: Counter


_POLICY_CODES = ("ManagedOnly", "NotManaged", "SpotNotAllowed", "RegionNotAllowed", "NoSpeedData",
                 "ComplianceNoMatch")


class _Compiler:
    """The static checks, vectorised over offers and cached per policy and per signature:
    big batches share them. `_policy_rejection` states the same rules one offer at a time."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.table = _OfferTable.build(problem)
        self.policies: dict[tuple, tuple[np.ndarray, np.ndarray, Counter]] = {}
        self.signatures: dict[tuple, _OfferArrays] = {}

    def _speeds(self, job: JobSpec, idx: np.ndarray) -> np.ndarray:
        ref = self.problem.speeds.get(job.gpu_types[0])
        gpus = self.table.gpu[idx]
        own = np.array([self.problem.speeds.get(g, np.nan) for g in gpus], dtype=float)
        ratio = own / ref if ref else np.full(len(idx), np.nan)
        return np.where(gpus == job.gpu_types[0], 1.0, ratio)

    def _policy(self, job: JobSpec) -> tuple[np.ndarray, np.ndarray, Counter]:
        key = policy_key(job)
        if key in self.policies:
            return self.policies[key]
        t = self.table
        parts = [t.by_gpu[g] for g in job.gpu_types if g in t.by_gpu]
        idx = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        speed = self._speeds(job, idx)
        required = _cert_mask(job.compliance)
        region_ok = np.ones(len(idx), dtype=bool)
        if job.regions:
            region_ok = np.isin(t.geo[idx], job.regions) | np.isin(t.location[idx], job.regions)
        fails = (
            t.managed[idx] & (not job.managed),
            ~t.managed[idx] & job.managed,
            t.spot[idx] & (not job.interruptible),
            ~region_ok,
            np.isnan(speed),
            ((t.certs[idx] & required) != required)
            | ((Compliance.GDPR in job.compliance) & (t.geo[idx] != "eu")),
        )
        code = np.full(len(idx), -1)
        for k, fail in enumerate(fails):
            code[(code == -1) & fail] = k
        rejected = Counter({"GpuType": len(self.problem.offers) - len(idx)})
        for k, n in enumerate(np.bincount(code[code >= 0], minlength=len(_POLICY_CODES))):
            rejected[_POLICY_CODES[k]] += int(n)
        keep = code == -1
        self.policies[key] = (idx[keep], speed[keep], +rejected)
        return self.policies[key]

    def arrays(self, job: JobSpec) -> _OfferArrays:
        sig = signature(job)
        if sig not in self.signatures:
            self.signatures[sig] = self._arrays(job)
        return self.signatures[sig]

    def _arrays(self, job: JobSpec) -> _OfferArrays:
        t = self.table
        idx, speed, rejected = self._policy(job)
        rejected = Counter(rejected)
        nodes = -(-job.gpus_per_shard // t.gpn[idx])
        fits = nodes * t.gpn[idx] <= t.capacity[idx]
        rejected["CapacityExhausted"] += int((~fits).sum())
        idx, speed, nodes = idx[fits], speed[fits], nodes[fits]
        eff = np.where(nodes <= 1, 1.0, t.efficiency[idx])
        if job.kind is JobKind.INFERENCE:  # a serving window is wall-clock time (scheduler.cost)
            speed, eff = np.ones(len(idx)), np.ones(len(idx))
        rate = np.zeros(len(idx))
        if job.data is not None:
            remote = t.location[idx] != job.data.location
            rate = np.where(remote, t.transfer_rate[idx], 0.0)
        return _OfferArrays(idx, nodes, t.gpn[idx], t.price[idx], t.spot_factor[idx] / (speed * eff), rate,
                            t.centralized[idx], +rejected)


def _chosen(problem: Problem, job: JobSpec, a: _OfferArrays, choice: OfferChoice) -> _OfferArrays:
    """`a` narrowed to the offers ops' rule allows, with the rejections counted over those offers
    only (and `OfferRule` for the rest): a job pinned to an offer is told what that offer fails."""
    offers = problem.offers
    keep = np.array([choice.allows(offers[i].id) for i in a.index], dtype=bool)
    rejected = Counter()
    for offer in offers:
        if not choice.allows(offer.id):
            rejected["OfferRule"] += 1
        elif code := static_rejection(problem, job, offer):
            rejected[code] += 1
    return _OfferArrays(a.index[keep], a.nodes[keep], a.gpn[keep], a.price[keep], a.run_factor[keep],
                        a.transfer_rate[keep], a.centralized[keep], +rejected)


def _group_candidates(problem: Problem, jobs: list[JobSpec], a: _OfferArrays) -> list[JobCandidates]:
    """Candidates of jobs sharing one signature, computed as (jobs x offers) arrays."""
    now = problem.now
    release = np.array([max(0, math.ceil(minutes_between(now, j.not_before or now) - 1e-9)) for j in jobs])
    due = np.array([math.floor(minutes_between(now, j.deadline) + 1e-9) for j in jobs])
    hours = np.array([j.duration_hours for j in jobs])
    size = np.array([j.data.size_gb / j.shards if j.data else 0.0 for j in jobs])
    cap = np.array([j.max_hourly_cost if j.max_hourly_cost is not None else np.inf for j in jobs])
    shards = jobs[0].shards if jobs else 1
    egress = problem.data_egress_usd_per_gb(jobs[0]) if jobs else 0.0
    run = hours[:, None] * a.run_factor[None, :]
    # Cents per part, rounded as the plan document rounds each segment's figures.
    compute = np.round(a.nodes * a.price * run * 100)
    egress_cents = np.round(np.where(a.transfer_rate > 0, size[:, None] * egress, 0.0) * 100)
    cost_usd = (compute + egress_cents) / 100
    dur = np.ceil((run + size[:, None] * a.transfer_rate[None, :]) * 60 - 1e-9).astype(np.int64)
    over = (a.nodes * a.price)[None, :] * np.array([j.shards for j in jobs])[:, None] > cap[:, None] + 1e-9
    late = ~over & (release[:, None] + dur > due[:, None])
    ok = ~over & ~late
    cents = np.where(ok, compute + egress_cents, 2.0**62).astype(np.int64)
    order = np.lexsort((dur, cents), axis=-1)[:, :MAX_CANDIDATES]
    central = np.where(ok & a.centralized[None, :], cost_usd, np.inf).min(axis=1, initial=np.inf)
    out = []
    for r, job in enumerate(jobs):
        row = order[r][ok[r][order[r]]]
        out.append(JobCandidates(
            offers=a.index[row], cost=cents[r][row], dur=dur[r][row], demand=a.nodes[row] * a.gpn[row],
            release=int(release[r]), due=int(due[r]), shards=job.shards, weight=job.priority + 1,
            static_rejections=a.static_rejections, price_cap_rejected=int(over[r].sum()),
            deadline_rejected=int(late[r].sum()),
            baseline_cost=float(central[r]) * shards if np.isfinite(central[r]) else None,
        ))
    return out


def compile_problem(problem: Problem) -> Instance:
    """Candidates for every job, dependencies resolved to indices, money in cents."""
    compiler = _Compiler(problem)
    by_signature: dict[tuple, list[int]] = {}
    for j, job in enumerate(problem.jobs):
        by_signature.setdefault(signature(job), []).append(j)
    cands: list[JobCandidates] = [None] * len(problem.jobs)  # type: ignore[list-item]
    for members in by_signature.values():
        arrays = compiler.arrays(problem.jobs[members[0]])
        for j, jc in zip(members, _group_candidates(problem, [problem.jobs[j] for j in members], arrays)):
            cands[j] = jc
        for j in (j for j in members if problem.choice(j) is not None):  # few: one at a time
            job = problem.jobs[j]
            ruled = _group_candidates(problem, [job], _chosen(problem, job, arrays, problem.choice(j)))[0]
            # The all-centralized baseline stays what centralized would cost without ops' rule.
            cands[j] = dataclasses.replace(ruled, baseline_cost=cands[j].baseline_cost)
    index = {(job.team, job.name): j for j, job in enumerate(problem.jobs)}
    preds = [[index[(job.team, name)] for name in job.after if (job.team, name) in index]
             for job in problem.jobs]
    cyclic = _cyclic(preds)
    for j in cyclic:  # a cycle of `after` can never start: its jobs get no candidate
        preds[j] = []
        cands[j] = _no_candidates(cands[j])
    capacity = np.array([o.capacity_gpus for o in problem.offers], dtype=np.int64)
    budgets = {team: int(math.floor(usd * 100)) for team, usd in problem.budgets.items()}
    return Instance(problem, cands, capacity, preds, [j.team for j in problem.jobs], budgets, cyclic)


def _cyclic(preds: list[list[int]]) -> set[int]:
    """Jobs on a cycle of `after` links (each waits for itself), found by peeling off
    every job whose predecessors can all finish."""
    remaining = {j: set(p) for j, p in enumerate(preds)}
    ready = [j for j, p in remaining.items() if not p]
    succs: dict[int, list[int]] = {}
    for j, p in enumerate(preds):
        for q in p:
            succs.setdefault(q, []).append(j)
    while ready:
        j = ready.pop()
        for k in succs.get(j, ()):
            remaining[k].discard(j)
            if not remaining[k]:
                ready.append(k)
        remaining.pop(j)
    on_cycle = set(remaining)
    # Jobs that only wait on a cycle are not on it: they keep their candidates and are
    # reported as DependencyUnplaced when their predecessor is.
    return {j for j in on_cycle if _reaches(j, j, preds)}


def _reaches(start: int, target: int, preds: list[list[int]]) -> bool:
    stack, seen = list(preds[start]), set()
    while stack:
        j = stack.pop()
        if j == target:
            return True
        if j not in seen:
            seen.add(j)
            stack.extend(preds[j])
    return False


def _no_candidates(jc: JobCandidates) -> JobCandidates:
    empty = np.zeros(0, dtype=np.int64)
    return JobCandidates(empty, empty, empty, empty, jc.release, jc.due, jc.shards, jc.weight,
                         jc.static_rejections, jc.price_cap_rejected, jc.deadline_rejected, jc.baseline_cost)
