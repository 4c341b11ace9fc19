"""`make demo` end to end on the embedded default: a real Redis under a temp data dir."""

from __future__ import annotations

from rich.console import Console

from scheduler.demo import run_demo
from scheduler.lifecycle import JobState, PlanState
from scheduler.redis_server import stop_embedded
from scheduler.settings import Settings
from scheduler.store import open_store


def test_demo_submits_plans_and_approves_on_the_embedded_redis(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", redis_url=None)
    console = Console(record=True, width=200)
    try:
        assert run_demo(console, settings, time_limit_s=2) == 0
        store = open_store(settings)
        (plan,), _ = store.list_plans(limit=5)
        assert plan.state is PlanState.APPROVED
        states = {j.name: j.state for j in store.list_jobs(limit=100)[0]}
        assert states["llama2-70b-pretrain"] is JobState.APPROVED
        assert states["gb200-trial"] is JobState.UNPLACED
        text = console.export_text()
        assert "saves" in text and "NoOffer" in text and "approved" in text
        # A second run retires the first run's jobs instead of failing on their names.
        assert run_demo(console, settings, time_limit_s=2) == 0
        assert sum(j.state is JobState.CANCELLED for j in store.list_jobs(limit=100)[0]) == 13
    finally:
        stop_embedded(settings.data_dir)
