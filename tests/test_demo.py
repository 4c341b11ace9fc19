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
        assert plan.state is PlanState.DONE  # approved, executed, every job ended
        states = {j.name: j.state for j in store.list_jobs(limit=100)[0]}
        assert states["llama2-70b-pretrain"] is JobState.SUCCEEDED
        assert sum(s is JobState.SUCCEEDED for s in states.values()) == plan.summary.jobs_placed == 10
        assert states["gb200-trial"] is JobState.UNPLACED
        text = console.export_text()
        assert "saves" in text and "NoOffer" in text and "approved" in text
        assert "jobs finished" in text and "step 5/5" in text  # the progress display and the processes' output
        logs = list((tmp_path / "data" / "local").glob("*/output.log"))
        doc = store.get_plan(plan.plan_id).document
        assert len(logs) == sum(len(a.segments) for a in doc.assignments) > 10  # one real process per segment
        assert all((log.parent / "exit_code").read_text() == "0" for log in logs)
        # A second run retires the first run's live (unplaced) jobs instead of failing on their names.
        assert run_demo(console, settings, time_limit_s=2, execute=False) == 0
        assert sum(j.state is JobState.CANCELLED for j in store.list_jobs(limit=100)[0]) == 3
    finally:
        stop_embedded(settings.data_dir)
