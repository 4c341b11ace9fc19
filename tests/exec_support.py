"""Shared pieces of the execution tests: a simulated clock, an approved plan, an executor on the fake provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler import services
from scheduler.catalog import load_catalog
from scheduler.execution import ExecConfig, Executor, Retry
from scheduler.launches import Attempt, LaunchUnit, unit_id
from scheduler.lifecycle import JobState
from scheduler.models import JobSpec
from scheduler.records import PlanRecord, Principal
from scheduler.store import Store
from workers.providers.fake import FakeProvider

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
OPS = Principal(name="olga", role="ops")
VISION = Principal(name="vera", role="submitter", team="vision")


@dataclass
class SimClock:
    """One simulated time for the executor (datetime) and the fake provider (epoch seconds)."""

    at: datetime = NOW

    def now(self) -> datetime:
        return self.at

    def epoch(self) -> float:
        return self.at.timestamp()

    def advance(self, hours: float = 0.0, seconds: float = 0.0) -> None:
        self.at += timedelta(hours=hours, seconds=seconds)


def spec(name: str, **extra) -> JobSpec:
    fields = {"name": name, "team": "vision", "gpus": 8, "gpu_types": ["H100"], "duration_hours": 5,
              "not_before": NOW + timedelta(hours=1), "deadline": NOW + timedelta(days=3)}
    return JobSpec(**(fields | extra))


def approved_plan(store: Store, specs: list[JobSpec], now: datetime = NOW) -> PlanRecord:
    for s in specs:
        services.submit_job(store, VISION, s)
    record = services.create_plan(store, OPS, services.PlanRun(now=now + timedelta(hours=1), time_limit_s=2))
    return services.approve_plan(store, OPS, record.plan_id, record.fingerprint, "ok", now=now, launch_via="fake")


def executor(store: Store, tmp: Path, clock: SimClock, **config) -> tuple[Executor, FakeProvider]:
    fake = FakeProvider(tmp / "fake-cloud.sqlite", clock=clock.epoch, seed=7)
    ex = Executor(store, store.launches, providers=lambda name: fake, catalog=load_catalog(),
                  config=ExecConfig(launch_via="fake", **config), clock=clock.now)
    return ex, fake


def run_until_quiet(ex: Executor, clock: SimClock, step_h: float = 1.0, max_steps: int = 200) -> None:
    """Drive dispatch -> launch -> track in simulated time until nothing is due or running."""
    for _ in range(max_steps):
        for uid in ex.dispatch():
            try:
                ex.launch(uid)
            except Retry:
                pass
        adapters = ex.launches.tracked_adapters()
        for adapter in adapters:
            ex.track(adapter)
        counts = ex.launches.counts()
        if not any(ex.launches.tracked(a) for a in adapters) and counts["due"] == 0 and counts["inflight"] == 0:
            return
        due = ex.launches.next_due()  # step, or jump to the next due launch if it comes sooner (on time)
        step_end = clock.at + timedelta(hours=step_h)
        clock.at = min(step_end, datetime.fromtimestamp(due, tz=timezone.utc)) if due and due > clock.epoch() \
            else step_end
    raise AssertionError("execution did not settle")


def approved_units(store: Store, n: int, *, start: datetime = NOW, run_hours: float = 5.0, market: str = "on-demand",
                   prefix: str = "u", adapter: str = "fake") -> list[str]:
    """`n` approved jobs with one due launch unit each, without the solver (fault tests and benchmarks)."""
    offer = next(o for o in load_catalog().offers if o.market == market and o.gpu_type == "H100"
                 and o.gpus_per_node == 8 and o.provider == "runpod")
    plan_id = "plan-test"
    units = []
    for i in range(n):
        job, _ = store.create_job(spec(f"{prefix}{i}", not_before=start, deadline=start + timedelta(days=3)),
                                  submitted_by="vera")
        store.transition_job(job.id, JobState.PLANNED, plan_id=plan_id)
        store.transition_job(job.id, JobState.APPROVED, plan_id=plan_id)
        uid = unit_id(job.id, plan_id, 0)
        units.append(LaunchUnit(
            id=uid, job_id=job.id, plan_id=plan_id, team=job.team, index=0, deadline=start + timedelta(days=3),
            planned_cost=round(offer.price_per_node_hour * run_hours, 2),
            attempts=[Attempt(attempt=1, key=f"{uid}.1", offer_id=offer.id, provider=offer.provider, adapter=adapter,
                              market=offer.market.value, nodes=1, gpus=8,
                              price_per_node_hour=offer.price_per_node_hour, run_hours=run_hours, start=start)]))
    store.launches.add(units)
    return [u.id for u in units]
