"""Shared pieces of the execution tests: a simulated clock, an approved plan, an executor on the fake provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler import services
from scheduler.catalog import load_catalog
from scheduler.execution import ExecConfig, Executor
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
    from scheduler.execution import Retry

    for _ in range(max_steps):
        for uid in ex.dispatch():
            try:
                ex.launch(uid)
            except Retry:
                pass
        ex.track("fake")
        counts = ex.launches.counts()
        if not ex.launches.tracked("fake") and counts["due"] == 0 and counts["inflight"] == 0:
            return
        clock.advance(hours=step_h)
    raise AssertionError("execution did not settle")
