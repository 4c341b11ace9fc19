"""`cloudsched`: the command line. Offline planning needs no Redis and no server."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from scheduler import cli_client, cli_service, render
from scheduler.catalog import find_offers, load_catalog, load_offers_file, parse_accelerator
from scheduler.diff import diff_plans
from scheduler.models import PlanDocument, parse_utc
from scheduler.planning import PlanOptions, PlanOutcome, build_problem, plan_batch
from scheduler.workloads import TRACE_CHOICES, generate_jobs, load_jobs, write_jobs

app = typer.Typer(help="Place GPU jobs across centralized and distributed clouds at minimum cost.",
                  no_args_is_help=True, add_completion=False)
workload_app = typer.Typer(help="Realistic job batches from real GPU cluster traces.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")
app.add_typer(cli_service.keys_app, name="keys")
app.command()(cli_service.serve)
app.add_typer(cli_client.jobs_app, name="jobs")
app.add_typer(cli_client.plan_app, name="plan")
app.command("cost-report")(cli_client.cost_report)

# emoji=False: offer ids such as "fluidstack:finland:..." must not turn into flags.
out = Console(emoji=False)
if not out.is_terminal:  # piped or in CI: plan tables still need room to be read
    out = Console(width=160, emoji=False)
err = Console(stderr=True, emoji=False)

JobsFile = Annotated[Path, typer.Option("--jobs", "-j", exists=True, dir_okay=False,
                                        help="JSON or YAML list of job specs.")]
OffersFile = Annotated[Optional[Path], typer.Option("--offers", exists=True, dir_okay=False,
                                                    help="JSON list of offers replacing the shipped catalog.")]
BudgetsFile = Annotated[Optional[Path], typer.Option("--budgets", exists=True, dir_okay=False,
                                                     help='JSON/YAML mapping team -> USD, e.g. {"vision": 25000}.')]
Now = Annotated[Optional[str], typer.Option("--now", help="Plan as of this ISO 8601 time (default: now).")]
TimeLimit = Annotated[float, typer.Option("--time-limit", min=0.1, help="Solver time limit, seconds.")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="CP-SAT worker threads.")]
Seed = Annotated[int, typer.Option("--seed", help="CP-SAT random seed.")]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc).replace(second=0, microsecond=0)
    try:
        parsed = parse_utc(value)
    except ValueError:
        _fail(f"--now: {value!r} is not an ISO 8601 time such as 2026-11-23T00:00:00Z")
    return parsed.replace(tzinfo=parsed.tzinfo or timezone.utc).astimezone(timezone.utc)


def _load_budgets(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in data.values()):
        _fail(f"{path}: budgets must be a mapping of team to a non-negative USD amount")
    return {str(k): float(v) for k, v in data.items()}


def _load_plan(path: Path) -> PlanDocument:
    try:
        return PlanDocument.model_validate_json(path.read_text())
    except ValueError as exc:
        _fail(f"{path}: not a plan document: {exc}")


def _plan(jobs_file, offers_file, budgets_file, now, time_limit, workers, seed, quiet: bool,
          previous: Path | None = None) -> PlanOutcome:
    try:
        jobs = load_jobs(jobs_file)
        offers = load_offers_file(offers_file) if offers_file else None
    except ValueError as exc:
        _fail(str(exc))
    problem = build_problem(jobs, now=_parse_now(now), catalog=load_catalog(), offers=offers,
                            budgets=_load_budgets(budgets_file))
    options = PlanOptions(time_limit=time_limit, num_workers=workers, random_seed=seed,
                          previous=_load_plan(previous) if previous else None)
    if quiet or not err.is_terminal:
        return plan_batch(problem, options)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        progress.add_task(f"placing {len(jobs)} jobs on {len(problem.offers):,} offers "
                          f"(up to {time_limit:g} s)", total=None)
        return plan_batch(problem, options)


@app.command()
def solve(jobs: JobsFile, offers: OffersFile = None, budgets: BudgetsFile = None, now: Now = None,
          time_limit: TimeLimit = 10.0, workers: Workers = 1, seed: Seed = 0,
          previous: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                           help="Last approved plan (JSON): diff against it.")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the plan document only.")] = False) -> None:
    """Plan a batch of jobs offline against the catalog and print the plan."""
    outcome = _plan(jobs, offers, budgets, now, time_limit, workers, seed, quiet=as_json, previous=previous)
    if outcome.violations:  # never hand out a plan the validator rejects
        for violation in outcome.violations[:20]:
            err.print(f"[red]invalid plan:[/red] {violation}")
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(outcome.document.model_dump_json(indent=2) + "\n")
        return
    render.plan(out, outcome.document)
    if previous:
        render.diff(out, diff_plans(outcome.document, _load_plan(previous)))


@app.command()
def diff(new: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Plan document (JSON).")],
         old: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Plan to compare against.")],
         detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode",
                                                         help="Exit 2 when something changes, 0 when not.")] = False,
         ) -> None:
    """Terraform-style diff of two plans: + create, - delete, ~ update, -/+ replace."""
    diffs = diff_plans(_load_plan(new), _load_plan(old))
    render.diff(out, diffs)
    if detailed_exitcode and diffs:
        raise typer.Exit(2)


@app.command()
def explain(job_name: Annotated[str, typer.Argument(help="The job's name.")], jobs: JobsFile,
            offers: OffersFile = None, budgets: BudgetsFile = None, now: Now = None,
            time_limit: TimeLimit = 10.0,
            team: Annotated[Optional[str], typer.Option(help="Team, if names repeat.")] = None,
            show_all: Annotated[bool, typer.Option("--all", help="List offers of other GPU types too.")] = False,
            ) -> None:
    """Why a job landed where it did: every offer considered, chosen ✔, rejected with reason."""
    outcome = _plan(jobs, offers, budgets, now, time_limit, 1, 0, quiet=False)
    matches = [j for j, job in enumerate(outcome.problem.jobs)
               if job.name == job_name and (team is None or job.team == team)]
    if not matches:
        _fail(f"no job named {job_name!r} in {jobs}")
    if len(matches) > 1:
        _fail(f"{len(matches)} jobs are named {job_name!r}: pass --team")
    render.explanation(out, outcome, matches[0], show_all)


@app.command("offers")
def list_offers(gpu: Annotated[str, typer.Option("--gpu", help="Accelerator, SkyPilot style: H100:8.")],
                limit: Annotated[int, typer.Option(min=1)] = 30,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Offers that can hold the GPUs asked for, cheapest per GPU-hour first."""
    try:
        name, count = parse_accelerator(gpu)
    except ValueError as exc:
        _fail(str(exc))
    catalog = load_catalog()
    found = find_offers(catalog, name, count)
    if as_json:
        sys.stdout.write(json.dumps([o.model_dump(mode="json") for o in found[:limit]], indent=2) + "\n")
        return
    render.offers(out, found, limit, name, count, catalog.version)


@workload_app.command("generate")
def workload_generate(n: Annotated[int, typer.Option("--n", min=1)], output: Annotated[Path, typer.Option("--out")],
                      seed: Seed = 0, now: Now = None,
                      trace: Annotated[str, typer.Option(help=f"One of {', '.join(TRACE_CHOICES)}.")] = "mixed",
                      ) -> None:
    """Write N job specs derived from the shipped traces (JSON or YAML by suffix)."""
    if trace not in TRACE_CHOICES:
        _fail(f"--trace must be one of {', '.join(TRACE_CHOICES)}")
    jobs = generate_jobs(n, seed=seed, now=_parse_now(now), trace=trace)
    write_jobs(jobs, output)
    err.print(f"wrote {len(jobs)} jobs to {output}")


@app.command()
def demo(time_limit: TimeLimit = 5.0,
         offline: Annotated[bool, typer.Option("--offline", help="Plan each example file offline, no Redis.")] = False,
         now: Now = "2026-11-23T00:00:00Z") -> None:
    """The main loop on the embedded default: submit the examples, plan, approve (or --offline)."""
    if not offline:
        from scheduler.demo import run_demo
        from scheduler.settings import get_settings

        raise typer.Exit(run_demo(out, get_settings(), time_limit))
    examples = Path(__file__).resolve().parent.parent / "examples"
    files = sorted(examples.glob("*.yaml"))
    if not files:
        _fail(f"no example job files in {examples}")
    for path in files:
        out.rule(f"[bold]{path.name}")
        outcome = _plan(path, None, None, now, time_limit, 1, 0, quiet=False)
        render.plan(out, outcome.document)
        if outcome.violations:
            _fail(f"the plan for {path.name} failed validation: {outcome.violations[0]}", 1)


if __name__ == "__main__":  # pragma: no cover
    app()
