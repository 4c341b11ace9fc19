"""Review-page benchmark: how long `GET /ui/plans/{id}` takes for a plan of 1,000 jobs.

    .venv/bin/python benchmarks/ui.py                       # 1,000 jobs, 20 timed requests of each kind
    .venv/bin/python benchmarks/ui.py --jobs 2000 --requests 50 --no-write

In a fresh temporary data directory on the embedded Redis (a real redis-server, as
`cloudsched serve` runs it), it submits a first batch and approves its plan (last night's
plan: tonight's page has a previous plan to diff against), then submits `--jobs` trace-derived
jobs (`scheduler.workloads.generate_jobs`) and plans them with the plan service and a short
solver time limit. The app runs in-process (TestClient), settled as `cloudsched serve` settles it
(`api.app.settled`: the objects made so far frozen out of the GC's full passes, which otherwise
scan the benchmark's whole heap during page requests); an ops key signs in through the form, and
the same session then requests, after two warm-up requests each:

  - the plan page `GET /ui/plans/{id}` (what the issue's "< 1 s" is about), gzip'd as a browser
    asks for it (`Accept-Encoding: gzip, deflate, br, zstd`: /ui answers gzip), and uncompressed
    (`Accept-Encoding: identity`), the two taking turns, to show what compressing costs and saves;
  - the JSON document `GET /v1/plans/{id}` of the same plan: the baseline, measured in the
    same process, so the ratio says what the page costs on top of reading the plan;
  - a why? page and the job page of one placed job.

It also splits one plan page into gathering its data (`pages.plan_context`) and rendering the
template. Each response's size is given decoded (the HTML) and on the wire (what was sent,
compressed or not). Figures go to stdout and, unless `--no-write`, to benchmarks/UI_RESULTS.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app, settled  # noqa: E402
from api.ui import GZIP_LEVEL, pages, render  # noqa: E402
from api.ui.auth import Viewer  # noqa: E402
from scheduler import services  # noqa: E402
from scheduler.records import Principal  # noqa: E402
from scheduler.redis_server import stop_embedded  # noqa: E402
from scheduler.settings import Settings  # noqa: E402
from scheduler.store import open_store  # noqa: E402
from scheduler.workloads import generate_jobs  # noqa: E402

ADMIN = Principal(name="bench", role="admin")
TARGET_S = 1.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _time_turns(client: TestClient, path: str, n: int, variants: dict[str, dict], warmup: int = 2) -> dict:
    """Timings of `n` GETs of `path` per variant (name -> extra headers), the variants taking turns so a
    busy moment of the shared machine falls on all of them. The client decodes a compressed body: that
    is in the time, as in a browser."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    last = {}
    for i in range(warmup + n):
        for name, headers in variants.items():
            t0 = time.perf_counter()
            response = client.get(path, headers=headers)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, response.status_code)
            last[name] = response
    return {name: {"median": statistics.median(t), "p95": _percentile(t, 0.95), "max": max(t),
                   "bytes": len(last[name].content), "wire": last[name].num_bytes_downloaded,
                   "encoding": last[name].headers.get("content-encoding", "none")} for name, t in times.items()}


def _time(client: TestClient, path: str, n: int) -> dict:
    return _time_turns(client, path, n, {"": {}})[""]


def _compress_s(client: TestClient, path: str, n: int) -> float:
    """Median seconds to gzip the page's HTML at the level /ui uses (outside HTTP)."""
    html = client.get(path, headers={"Accept-Encoding": "identity"}).content
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        gzip.compress(html, compresslevel=GZIP_LEVEL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _submit(store, n: int, seed: int, now: datetime, prefix: str) -> None:
    for spec in generate_jobs(n, seed=seed, now=now):  # names are unique per team: prefix them, and `after`
        renamed = {"name": prefix + spec.name, "after": [prefix + name for name in spec.after]}
        services.submit_job(store, ADMIN, spec.model_copy(update=renamed))


def _build(store, jobs: int, previous_jobs: int, time_limit_s: float, seed: int) -> tuple[str, float]:
    now = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(second=0, microsecond=0)
    _submit(store, previous_jobs, seed + 1, now, "prev-")
    first = services.create_plan(store, ADMIN, services.PlanRun(now=now, time_limit_s=time_limit_s))
    services.approve_plan(store, ADMIN, first.plan_id, first.fingerprint, "benchmark: last night's plan")
    _submit(store, jobs, seed, now, "")
    t0 = time.perf_counter()
    plan = services.create_plan(store, ADMIN, services.PlanRun(now=now, time_limit_s=time_limit_s))
    return plan.plan_id, time.perf_counter() - t0


def _sign_in(client: TestClient, key: str) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
    response = client.post("/ui/login", data={"api_key": key, "csrf": token}, follow_redirects=False)
    assert response.status_code == 303, response.text


def _split(store, plan_id: str, who: Principal, n: int) -> tuple[float, float]:
    """Median seconds to gather the plan page's data, and to render its template."""
    viewer = Viewer(who, None)
    gather, draw = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        context = pages.plan_context(store, viewer, plan_id, "start", False)
        t1 = time.perf_counter()
        render.render("ui/plan.html", request=None, path="/", notice="", refusal=None, comment="", **context)
        draw.append(time.perf_counter() - t1)
        gather.append(t1 - t0)
    return statistics.median(gather), statistics.median(draw)


def run(args) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="cloudsched-ui-bench-"))
    settings = Settings(data_dir=data_dir, redis_url=None, rate_limit_per_minute=10_000_000,
                        ui_session_secret="b" * 40)
    try:
        store = open_store(settings)
        plan_id, plan_s = _build(store, args.jobs, args.previous_jobs, args.time_limit, args.seed)
        key, ops = store.create_api_key("ops", None, "bench-ops")
        doc = store.get_plan(plan_id).document
        client = TestClient(settled(create_app(settings, store)), headers={"Accept": "text/html"})  # as serve runs it
        _sign_in(client, key)
        job_id = doc.assignments[0].job_id
        out = {"plan_id": plan_id, "plan_s": plan_s, "placed": len(doc.assignments), "unplaced": len(doc.unplaced),
               "segments": sum(len(a.segments) for a in doc.assignments),
               **_time_turns(client, f"/ui/plans/{plan_id}", args.requests,
                             {"page": {}, "page_plain": {"Accept-Encoding": "identity"}}),
               "json": _time(client.__class__(client.app, headers={"Authorization": f"Bearer {key}"}),
                             f"/v1/plans/{plan_id}", args.requests),
               "why": _time(client, f"/ui/plans/{plan_id}/jobs/{job_id}", args.requests),
               "job": _time(client, f"/ui/jobs/{job_id}", args.requests)}
        out["gather_s"], out["render_s"] = _split(store, plan_id, ops, args.requests)
        out["compress_s"] = _compress_s(client, f"/ui/plans/{plan_id}", args.requests)
        out["load"] = os.getloadavg()
        return out
    finally:
        stop_embedded(data_dir)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


def report(args, r: dict) -> str:
    page, base, plain = r["page"], r["json"], r["page_plain"]
    met = "**met**" if page["p95"] < TARGET_S else "**unmet**"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "?"
    at = f"at commit `{commit}`"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                            text=True).stdout.splitlines()
    changed = [line[3:] for line in status if not line.endswith("UI_RESULTS.md")]
    if changed:  # a shared checkout: the code measured is not exactly the commit
        at += f" plus uncommitted changes to {', '.join(f'`{path}`' for path in changed)}"
    rows = [("plan page `GET /ui/plans/{id}`", page), ("plan page, uncompressed (`Accept-Encoding: identity`)", plain),
            ("baseline: JSON `GET /v1/plans/{id}`", base), ("why? page of one job", r["why"]), ("job page", r["job"])]
    lines = [
        "# Review page benchmark results", "",
        "```bash", f".venv/bin/python benchmarks/ui.py --jobs {args.jobs} --requests {args.requests}", "```", "",
        f"Run on {datetime.now(timezone.utc):%Y-%m-%d} {at} on a {os.cpu_count()}-core machine "
        f"(Python {platform.python_version()}), in-process (TestClient, no network), on the embedded Redis. "
        f"The plan: {r['placed']:,} jobs placed in {r['segments']:,} segments, {r['unplaced']:,} unplaced "
        f"(planned in {r['plan_s']:.1f} s with a {args.time_limit:g} s solver limit), against an approved "
        f"previous plan of {args.previous_jobs:,} jobs. {args.requests} timed requests each, after 2 warm-ups. "
        f"The machine is shared: load average {r['load'][0]:.1f} / {r['load'][1]:.1f} / {r['load'][2]:.1f} "
        "(1 / 5 / 15 min) when the timing ended.", "",
        "| request | median | p95 | max | body | on the wire |", "|---|---|---|---|---|---|",
        *[f"| {name} | {_ms(t['median'])} | {_ms(t['p95'])} | {_ms(t['max'])} | {_kib(t['bytes'])} "
          f"| {_kib(t['wire'])} ({t['encoding']}) |" for name, t in rows], "",
        f"- gzip (level {GZIP_LEVEL}, /ui only): the plan page goes out as {_kib(page['wire'])} instead of "
        f"{_kib(plain['wire'])} (**{plain['wire'] / page['wire']:.0f}× smaller**). Compressing it takes "
        f"{_ms(r['compress_s'])} (median outside HTTP); with the client's decoding, the gzip'd request's median "
        f"is {_ms(page['median'] - plain['median'])} above the uncompressed one in-process, where no network "
        "is saved (the two took turns, request by request).",
        f"- Plan page vs the JSON document of the same plan: **{page['median'] / base['median']:.1f}×** (median).",
        f"- One plan page: gathering its data {_ms(r['gather_s'])} (plan, previous plan and diff, staleness "
        f"check over every plannable job, job specs for the compliance column), rendering the template "
        f"{_ms(r['render_s'])} (medians of {args.requests} runs outside HTTP, timed apart from the table above).",
        f"- Target: the page of a 1,000-job plan in under 1 s (p95 {_ms(page['p95'])}): {met}.", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--previous-jobs", type=int, default=200, help="jobs of the approved previous plan")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--time-limit", type=float, default=10.0, help="solver seconds per plan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/UI_RESULTS.md")
    args = parser.parse_args()
    text = report(args, run(args))
    sys.stdout.write(text)
    if not args.no_write:
        (ROOT / "benchmarks" / "UI_RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
