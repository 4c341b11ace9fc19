"""`cloudsched jobs ...` and `cloudsched plan ...`: the CLI over the REST API.

`plan create --detailed-exitcode` exits like Terraform's: 0 when the new plan changes
nothing against the last approved one, 2 when it does, 1 on an error. `jobs wait` exits like
`sbatch --wait`: 0 when every job succeeded, 1 when one ended otherwise, 2 on its timeout.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from scheduler import render
from scheduler.client import ApiProblem, Client
from scheduler.lifecycle import TERMINAL_JOB_STATES, JobState
from scheduler.models import PlanDocument
from scheduler.workloads import load_jobs

jobs_app = typer.Typer(help="Submit and follow jobs (over the API).", no_args_is_help=True)
plan_app = typer.Typer(help="Create, review and decide plans (over the API).", no_args_is_help=True)
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
ENDED = {state.value for state in TERMINAL_JOB_STATES}


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ApiProblem as problem:
        _fail(problem)


def _fail(problem: ApiProblem) -> NoReturn:
    for line in problem.lines:
        err.print(f"[red]error:[/red] {line}" if line == problem.lines[0] else line, markup=True)
    raise typer.Exit(1) from None


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _jobs_table(items: list[dict]) -> Table:
    table = Table(header_style="bold")
    for column in ("id", "name", "team", "state", "reason", "plan"):
        table.add_column(column)
    for j in items:
        table.add_row(j["id"], j["name"], j["team"], j["state"], j.get("reason") or "", j.get("plan_id") or "")
    return table


@jobs_app.command("submit")
def submit(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML/JSON job spec(s).")],
           idempotency_key: Annotated[Optional[str], typer.Option(help="Safe retries: same key, same job.")] = None,
           as_json: Json = False) -> None:
    """Submit every job spec in FILE."""
    try:
        specs = load_jobs(file)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    client = Client()
    created = []
    for i, spec in enumerate(specs):
        key = f"{idempotency_key}-{i}" if idempotency_key and len(specs) > 1 else idempotency_key
        created.append(_call(client.submit_job, spec.model_dump(mode="json", exclude_none=True), key))
    _print_json(created) if as_json else out.print(_jobs_table(created))


@jobs_app.command("list")
def list_jobs(team: Optional[str] = None, state: Optional[str] = None,
              limit: Annotated[int, typer.Option(min=1, max=1000)] = 50, as_json: Json = False) -> None:
    page = _call(Client().list_jobs, team=team, state=state, limit=limit)
    _print_json(page) if as_json else out.print(_jobs_table(page["items"]))


@jobs_app.command("show")
def show(job_id: str, as_json: Json = False) -> None:
    job = _call(Client().get_job, job_id)
    if as_json:
        return _print_json(job)
    out.print(_jobs_table([job]))
    if job.get("offer_rule"):
        out.print(f"  offers: {_rule_words(job['offer_rule'])} (ops' rule)")
    for c in job.get("conditions", []):
        out.print(f"  {c['type']}={c['status']} ({c['reason']}) {c.get('message', '')}")
    for e in job.get("events", []):
        out.print(f"  {e['at']}  {e['type']}  by {e['actor']}")


@jobs_app.command("wait")
def wait(job_ids: Annotated[list[str], typer.Argument(help="Job ids.", metavar="JOB")],
         timeout: Annotated[float, typer.Option(min=0, help="Give up after this many seconds (exit 2).")] = 86400,
         interval: Annotated[float, typer.Option(min=0.2, help="Seconds between two looks at each job.")] = 15,
         ) -> None:
    """Wait until every JOB has ended, as `sbatch --wait` does: exit 0 when all succeeded, 1 when one
    ended otherwise (failed, cancelled) or on an error, 2 when --timeout passes first."""
    client, deadline = Client(), time.monotonic() + timeout
    states: dict[str, str] = {}
    with err.status("") as status:
        while True:
            for job_id in [j for j in job_ids if states.get(j) not in ENDED]:
                job = _look(client, job_id)
                if job is not None and job["state"] != states.get(job_id):
                    states[job_id] = job["state"]
                    why = ": ".join(part for part in (job.get("reason"), job.get("message")) if part)
                    out.print(f"{datetime.now(timezone.utc):%H:%M:%S}Z  {job['name']} ({job_id})  "
                              f"{job['state']}{'  ' + why if why else ''}", markup=False, highlight=False)
            running = [j for j in job_ids if states.get(j) not in ENDED]
            if not running:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                err.print(f"[yellow]timed out[/yellow] after {timeout:g} s; still running: {', '.join(running)}")
                raise typer.Exit(2)
            status.update(f"{len(running)} of {len(job_ids)} job(s) not ended yet")
            time.sleep(min(interval, left))
    if any(states[j] != JobState.SUCCEEDED.value for j in job_ids):
        raise typer.Exit(1)


def _look(client: Client, job_id: str) -> dict | None:
    """The job, or None when the API asks to come back later (429, 503): the next look will tell."""
    try:
        return client.get_job(job_id)
    except ApiProblem as problem:
        if problem.status in (429, 503):
            return None
        _fail(problem)


@jobs_app.command("cancel")
def cancel(job_id: str) -> None:
    job = _call(Client().cancel_job, job_id)
    out.print(f"{job['name']} ({job['id']}): {job['state']}")


@jobs_app.command("offer-rule")
def offer_rule(job_id: str,
               pin: Annotated[Optional[str], typer.Option(help="Run the job only on this offer.",
                                                          metavar="OFFER")] = None,
               forbid: Annotated[Optional[list[str]], typer.Option(help="Never run it on this offer (repeatable).",
                                                                   metavar="OFFER")] = None) -> None:
    """Pin a job to one offer or forbid offers for the next plans (ops); with neither option, lift the rule.

    A plan under review that placed the job goes stale: run `cloudsched plan create` again."""
    job = _call(Client().set_offer_rule, job_id, pin=pin, forbid=forbid)
    out.print(f"{job['name']} ({job['id']}): {_rule_words(job.get('offer_rule'))}; version {job['version']}")


def _rule_words(rule: dict | None) -> str:
    if not rule:
        return "any offer (no rule)"
    return f"pinned to {rule['pin']}" if rule.get("pin") else f"never on {', '.join(rule['forbid'])}"


@plan_app.command("create")
def create(time_limit: Annotated[Optional[float], typer.Option("--time-limit", min=0.1)] = None,
           detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode")] = False,
           as_json: Json = False) -> None:
    """Plan every pending job now (ops)."""
    doc = PlanDocument.model_validate(_call(Client().create_plan, time_limit))
    _print_json(doc.model_dump(mode="json")) if as_json else render.plan(out, doc)
    if detailed_exitcode and doc.changes:
        raise typer.Exit(2)


@plan_app.command("show")
def show_plan(plan_id: str, as_json: Json = False) -> None:
    doc = PlanDocument.model_validate(_call(Client().get_plan, plan_id))
    _print_json(doc.model_dump(mode="json")) if as_json else render.plan(out, doc)


@plan_app.command("diff")
def diff(plan_id: str, against: Annotated[Optional[str], typer.Option(help="Plan id (default: last approved).")] = None,
         as_json: Json = False) -> None:
    data = _call(Client().diff_plan, plan_id, against)
    if as_json:
        return _print_json(data)
    for c in data["changes"]:
        before = ", ".join(c["before"]["offers"]) if c.get("before") else "-"
        after = ", ".join(c["after"]["offers"]) if c.get("after") else "-"
        out.print(f"{c['symbol']:>3} {c['job_name']}: {before} → {after} ({c['cost_delta']:+,.2f} USD)")
    out.print(data["summary"])


@plan_app.command("explain")
def explain(plan_id: str, job_id: str, as_json: Json = False) -> None:
    data = _call(Client().explain, plan_id, job_id)
    if as_json:
        return _print_json(data)
    table = Table(title=f"Considered offers for {data['job_name']}", header_style="bold")
    for column in ("", "offer", "arch", "market", "hours", "cost", "Δ vs chosen", "status"):
        table.add_column(column)
    for r in data["considered"]:
        money = f"${r['cost']:,.2f}" if r["cost"] is not None else "-"
        delta = f"{r['cost_vs_chosen']:+,.2f}" if r["cost_vs_chosen"] is not None else "-"
        hours = f"{r['hours']:.1f}" if r["hours"] is not None else "-"
        table.add_row(r["mark"], r["offer_id"], r["architecture"], r["market"], hours, money, delta,
                      r["reason"] or r["status"])
    out.print(table)
    if data.get("unplaced"):
        out.print(f"unplaced: {data['unplaced']['reason']} — {data['unplaced']['message']}")


@plan_app.command("approve")
def approve(plan_id: str,
            fingerprint: Annotated[Optional[str], typer.Option(help="The fingerprint you reviewed.")] = None,
            comment: str = "") -> None:
    """Approve a plan (ops). Without --fingerprint, the plan is shown first and its fingerprint used."""
    client = Client()
    if fingerprint is None:
        doc = PlanDocument.model_validate(_call(client.get_plan, plan_id))
        render.plan(out, doc)
        fingerprint = doc.fingerprint
    doc = _call(client.approve_plan, plan_id, fingerprint, comment)
    out.print(f"{plan_id}: {doc['status']}")


@plan_app.command("reject")
def reject(plan_id: str, comment: Annotated[str, typer.Option(help="Why (required).")]) -> None:
    doc = _call(Client().reject_plan, plan_id, comment)
    out.print(f"{plan_id}: {doc['status']}")


def cost_report(team: Annotated[Optional[str], typer.Option(help="One team (submitters: always their own).")] = None,
                since: Annotated[Optional[str], typer.Option(help="Only launches due from then (ISO 8601).")] = None,
                as_json: Json = False) -> None:
    """Planned vs actual cost per team, from what the workers launched (over the API)."""
    report = _call(Client().cost_report, team, since)
    if as_json:
        _print_json(report)
        return
    table = Table(header_style="bold", title="Planned vs actual cost (USD)")
    for column in ("team", "jobs", "live", "launches", "re-placed", "planned", "actual", "difference"):
        table.add_column(column, justify="left" if column == "team" else "right")
    for row in [*report["teams"], report["total"]]:
        pct = "" if row["difference_pct"] is None else f" ({row['difference_pct']:+.1f} %)"
        style = "bold" if row is report["total"] else None
        table.add_row(row["team"], str(row["jobs"]), str(row["jobs_live"]), str(row["launches"]),
                      str(row["replacements"]), f"${row['planned_cost']:,.2f}", f"${row['actual_cost']:,.2f}",
                      f"{row['difference']:+,.2f}{pct}", style=style)
    out.print(table)
