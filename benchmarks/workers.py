"""Workers benchmark: launches through Celery and the `fake` provider on a real (embedded) Redis.

    .venv/bin/python benchmarks/workers.py                # the issue's sizes
    .venv/bin/python benchmarks/workers.py --quick        # small sizes, a smoke run

It starts the embedded Redis in a temporary directory and one `celery worker` with 2 worker
processes (prefork) on it, with `CLOUDSCHED_LAUNCH_VIA=fake`; this process plays beat (it sends
`dispatch` every second) and watches the launch records. It prints:

1. baseline: launches/s of the same launches done in this process, one after another, with no
   broker (the executor alone) — every Celery figure is given as a ratio to it;
2. end to end: N due launches, from the first `dispatch` to every record `launched`, through
   the broker and the 2 worker processes;
3. publishing: how long one `dispatch` takes to claim 5,000 due units and publish their launch
   messages;
4. tracking: one `track` pass over 10,000 running launches (the provider's `statuses` calls
   counted: one per provider, not per job), against the 60 s period;
5. approval to launch: a 1,000-job plan approved, then every job launched;
6. plan progress: the check each job's success makes (have all the plan's jobs ended?) on that
   plan, against reading the whole plan and every job record in this process.

Nothing is compared with a stored figure; the results go to stdout (and, with --write, to
benchmarks/WORKERS_RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # approved_units: due launch units without the solver

lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def _wait_launched(store, uids: list[str], timeout_s: float, poke=None) -> float:
    """Seconds until every unit is `launched` (poke() runs every second: the beat)."""
    t0, last_poke = time.perf_counter(), 0.0
    pending = list(uids)
    while pending:
        now = time.perf_counter()
        if now - t0 > timeout_s:
            raise TimeoutError(f"{len(pending)} of {len(uids)} not launched after {timeout_s:.0f} s")
        if poke and now - last_poke >= 1.0:
            poke()
            last_poke = now
        units = store.launches.get_many(pending)
        pending = [u.id for u in units if u.current.state != "launched"]
        time.sleep(0.05)
    return time.perf_counter() - t0


def _start_worker(env: dict) -> subprocess.Popen:
    from workers.app import app

    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool=prefork",
                               "--concurrency=2", "--loglevel=WARNING", "--without-heartbeat", "--without-mingle",
                               "--without-gossip"], env=env, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if app.control.ping(timeout=1.0):
            return worker
    worker.kill()
    raise RuntimeError("the Celery worker did not answer a ping within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--write", action="store_true", help="append the results to benchmarks/WORKERS_RESULTS.md")
    args = parser.parse_args()
    sizes = dict(baseline=300, e2e=600, publish=1000, track=2000, plan=200) if args.quick else \
        dict(baseline=1000, e2e=5000, publish=5000, track=10000, plan=1000)

    data_dir = Path(tempfile.mkdtemp(prefix="cloudsched-bench-workers-"))
    env = {**os.environ, "CLOUDSCHED_DATA_DIR": str(data_dir), "CLOUDSCHED_LAUNCH_VIA": "fake",
           "CLOUDSCHED_REDIS_URL": "", "CLOUDSCHED_PROVIDER_CALLS_PER_S": "100000"}
    os.environ.update(env)
    from exec_support import approved_units

    from scheduler.redis_server import embedded, stop_embedded
    from scheduler.settings import get_settings
    from workers import runtime, tasks
    from workers.app import app, configure
    from workers.providers.fake import FakeProvider

    get_settings.cache_clear()
    settings = get_settings()
    embedded(data_dir)
    configure(app, settings)
    ex = runtime.use(settings)
    store = ex.store
    fake = FakeProvider(data_dir / "fake-cloud.sqlite")
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    say(f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — `.venv/bin/python benchmarks/workers.py"
        f"{' --quick' if args.quick else ''}` ({os.cpu_count()} cores, load generator and workers included)")
    say()

    # 1. baseline: the executor alone, in this process
    uids = approved_units(store, sizes["baseline"], start=now, prefix="base")
    t0 = time.perf_counter()
    for uid in ex.dispatch():
        ex.launch(uid)
    base_s = time.perf_counter() - t0
    base_rate = sizes["baseline"] / base_s
    say(f"- baseline (this process, no broker): {sizes['baseline']:,} launches in {base_s:.2f} s = "
        f"**{base_rate:,.0f} launches/s**")

    worker = _start_worker(env)
    try:
        # 2 + 3. publish, then end to end through Celery
        uids = approved_units(store, sizes["e2e"], start=now, prefix="e2e")
        t0 = time.perf_counter()
        published = tasks.dispatch.run()  # the beat's first tick, timed here: claim + publish
        publish_s = time.perf_counter() - t0
        e2e_s = publish_s + _wait_launched(store, uids, 600, poke=tasks.dispatch.delay)
        rate = sizes["e2e"] / e2e_s
        say(f"- publishing: one `dispatch` claimed and published {published:,} due launches in "
            f"**{publish_s:.2f} s** (target ≤ 10 s for 5,000)")
        say(f"- end to end (dispatch → broker → 2 worker processes → fake provider → record): {sizes['e2e']:,} "
            f"launches in {e2e_s:.2f} s = **{rate:,.0f} launches/s** ({rate / base_rate:.2f}x the baseline; "
            f"target ≥ 300/s)")
        assert fake.duplicates() == {}, "a benchmark launch was duplicated"

        # 4. tracking 10,000 running launches
        extra = sizes["track"] - len(store.launches.tracked("fake"))
        if extra > 0:
            more = approved_units(store, extra, start=now, prefix="trk")
            for uid in ex.dispatch():
                ex.launch(uid)
            assert all(u.current.state == "launched" for u in store.launches.get_many(more))
        running = len(store.launches.tracked("fake"))
        calls_before = len(fake.call_times("statuses"))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            ex.track("fake")
            times.append(time.perf_counter() - t0)
        calls = (len(fake.call_times("statuses")) - calls_before) / 3
        track_s = statistics.median(times)
        say(f"- tracking: one pass over {running:,} running launches takes **{track_s:.2f} s** (median of 3) with "
            f"{calls:.0f} `statuses` call(s) to the provider — {track_s / 60:.1%} of the 60 s period")

        # 5. approval to all launched, for a plan of 1,000 jobs
        approval_s, first_start_s, n_jobs, n_units, plan_id = _approval_to_launch(store, sizes["plan"])
        say(f"- approval → launched: a plan placing {n_jobs:,} jobs ({n_units:,} launch units, all starting at once) "
            f"approved; every unit launched **{approval_s:.1f} s** after the approval, **{first_start_s:.1f} s** after "
            f"the start was due (the plan starts 30 s after it is made, leaving time to approve it)")
        assert fake.duplicates() == {}, "a benchmark launch was duplicated"

        # 6. the plan-progress check each job's success makes, on that plan
        whole_ms, check_ms = _plan_progress_check(store, plan_id)
        say(f"- plan progress at each job's success, on that {n_jobs:,}-job plan: `Store.plan_jobs_ended` takes "
            f"**{check_ms:.1f} ms** (median of 20) against {whole_ms:.1f} ms for reading the whole plan and every "
            f"job record ({whole_ms / check_ms:.1f}x less)")
    finally:
        worker.terminate()
        worker.wait(30)
        stop_embedded(data_dir)
    say()
    if args.write:
        path = ROOT / "benchmarks" / "WORKERS_RESULTS.md"
        head = "" if path.exists() else "# Workers benchmark results\n\nWritten by `benchmarks/workers.py --write`.\n\n"
        with path.open("a") as f:
            f.write(head + "\n".join(lines) + "\n\n")
    return 0


def _approval_to_launch(store, n: int) -> tuple[float, float, int, int]:
    from scheduler import services
    from scheduler.models import JobSpec, parse_utc
    from scheduler.records import Principal
    from workers import tasks

    who = Principal(name="bench", role="ops")
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)
    for i in range(n):  # jobs that must start at once (a 2 h run, a deadline 2 h after the start): one wave
        services.submit_job(store, who, JobSpec(
            name=f"p{i}", team=f"t{i % 10}", gpus=1, gpu_types=["L4"], duration_hours=2, not_before=start,
            deadline=start + timedelta(hours=2, minutes=1), interruptible=True))
    record = services.create_plan(store, who, services.PlanRun(now=start, time_limit_s=20, created_by="bench"))
    t0 = time.perf_counter()
    services.approve_plan(store, who, record.plan_id, record.fingerprint, "benchmark", launch_via="fake")
    uids = [u for a in record.document.assignments for u in (x.id for x in store.launches.of_job(a.job_id))]
    starts = [parse_utc(s.start) for a in record.document.assignments for s in a.segments]
    first, last = min(starts), max(starts)
    assert last - first <= timedelta(minutes=1), "the benchmark plan should start every job at once"
    _wait_launched(store, uids, 600 + (last - first).total_seconds(), poke=tasks.dispatch.delay)
    total = time.perf_counter() - t0
    after_first = time.time() - first.timestamp()
    return total, after_first, len(record.document.assignments), len(uids), record.plan_id


def _plan_progress_check(store, plan_id: str) -> tuple[float, float]:
    """Median ms of the check as it was (the whole document and every job record) and as it is."""
    from scheduler.lifecycle import TERMINAL_JOB_STATES

    def whole() -> bool:
        jobs = store.get_jobs(a.job_id for a in store.get_plan(plan_id).document.assignments)
        return all(j.state in TERMINAL_JOB_STATES for j in jobs.values())

    def timed(check) -> float:
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            check()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)

    assert whole() == store.plan_jobs_ended(plan_id), "the two checks disagree"
    return timed(whole), timed(lambda: store.plan_jobs_ended(plan_id))


if __name__ == "__main__":
    sys.exit(main())
