"""Cost actuals against the plan, per team: what `GET /v1/reports/cost` and `cloudsched cost-report` show.

Planned is what the approved plan said for the launched segments (compute + egress); actual is
what the launches cost — the provider's bill where it states one (io.net bills whole prepaid
hours), else the billed price per node-hour times the hours the instance ran, with every
attempt counted (a preempted spot run costs money too). Jobs still running count "so far".
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from scheduler.errors import Forbidden
from scheduler.launches import LaunchUnit
from scheduler.lifecycle import TERMINAL_JOB_STATES
from scheduler.records import Principal
from scheduler.store import Store


def cost_report(store: Store, who: Principal, team: str | None = None, since: datetime | None = None) -> dict:
    if who.role == "submitter":
        if team and team != who.team:
            raise Forbidden(f"a submitter of team {who.team!r} sees only that team's costs")
        team = who.team
    units = [u for u in store.launches.get_many(store.launches.all_ids())
             if (team is None or u.team == team) and (since is None or u.attempts[0].start >= since)]
    jobs = store.get_jobs({u.job_id for u in units})
    by_team: dict[str, list[LaunchUnit]] = defaultdict(list)
    for u in units:
        by_team[u.team].append(u)
    rows = [_row(name, members, jobs) for name, members in sorted(by_team.items())]
    total = _row("total", units, jobs)
    return {"currency": "USD", "team": team, "since": since.isoformat() if since else None, "teams": rows,
            "total": total}


def _row(name: str, units: list[LaunchUnit], jobs: dict) -> dict:
    planned = round(sum(u.planned_cost for u in units), 2)
    actual = round(sum(u.actual_cost for u in units), 2)
    job_ids = {u.job_id for u in units}
    live = sum(1 for j in job_ids if j in jobs and jobs[j].state not in TERMINAL_JOB_STATES)
    attempts = sum(len(u.attempts) for u in units)
    return {"team": name, "jobs": len(job_ids), "jobs_live": live, "launches": attempts,
            "replacements": attempts - len(units), "planned_cost": planned, "actual_cost": actual,
            "difference": round(actual - planned, 2),
            "difference_pct": round(100 * (actual - planned) / planned, 1) if planned else None}
