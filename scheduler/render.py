"""Rich tables for the CLI: plans, explanations ("why here?") and offers."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from scheduler.diff import JobDiff, summary_line
from scheduler.models import Offer, PlanDocument
from scheduler.planning import PlanOutcome
from scheduler.reasons import STATIC_WORDS, consider

PLACEMENT_STYLE = {"centralized": "cyan", "distributed": "green", "hybrid": "magenta"}


def _short(ts: str) -> str:
    return ts[5:16].replace("T", " ")  # "11-23 04:00"


def _money(value: float) -> str:
    return f"${value:,.2f}"


def plan(console: Console, doc: PlanDocument) -> None:
    table = Table(title=f"Plan {doc.plan_id}", show_lines=False, header_style="bold")
    for column in ("job", "team", "placement", "offer", "GPUs", "start", "end", "slack h", "cost", "all-central"):
        table.add_column(column, justify="right" if column in ("GPUs", "slack h", "cost", "all-central") else "left")
    for a in sorted(doc.assignments, key=lambda a: (a.segments[0].start, a.job_name)):
        first = a.segments[0]
        offer = first.offer_id + (f" (+{len(a.segments) - 1} shards)" if len(a.segments) > 1 else "")
        slack = f"[red]{a.slack_hours:.1f}[/red]" if a.slack_hours < 2 else f"{a.slack_hours:.1f}"
        table.add_row(a.job_name, a.team, f"[{PLACEMENT_STYLE[a.placement.value]}]{a.placement.value}",
                      offer, str(sum(s.gpus for s in a.segments)), _short(first.start),
                      _short(max(s.end for s in a.segments)), slack, _money(a.total_cost),
                      _money(a.baseline_cost or a.total_cost))
    console.print(table)
    s, solver = doc.summary, doc.solver
    by = ", ".join(f"{k} {v}" for k, v in s.by_placement.items())
    console.print(
        f"[bold]total {_money(s.total_cost)}[/bold]  vs all-centralized {_money(s.baseline_centralized_cost)}"
        f"  → [green]saves {s.savings_pct:.1f} %[/green]   placed {s.jobs_placed}, unplaced {s.jobs_unplaced}"
        f"  ({by})")
    console.print(
        f"solver {solver.status} ({solver.method}) in {solver.wall_time_s:.2f} s; lower bound "
        f"{_money(s.lower_bound)}, gap {100 * solver.gap:.2f} %; greedy {_money(s.greedy_cost or 0)}; "
        f"fingerprint {doc.fingerprint[:12]}")
    if doc.unplaced:
        unplaced = Table(title="Unplaced jobs", header_style="bold red")
        unplaced.add_column("job")
        unplaced.add_column("reason")
        unplaced.add_column("what to do", overflow="fold")
        for u in doc.unplaced:
            unplaced.add_row(u.job_name, u.reason.value, u.message)
        console.print(unplaced)


def explanation(console: Console, outcome: PlanOutcome, j: int, show_all: bool) -> None:
    problem, doc = outcome.problem, outcome.document
    job = problem.jobs[j]
    job_id = problem.job_id(j)
    chosen = next((a for a in doc.assignments if a.job_id == job_id), None)
    chosen_ids = {s.offer_id for s in chosen.segments} if chosen else set()
    chosen_cost = chosen.total_cost if chosen else None
    rows = consider(problem, job)
    hidden = Counter(r.code for r in rows if r.code == "GpuType" and not show_all)
    shown = [r for r in rows if show_all or r.code != "GpuType"]
    shown.sort(key=lambda r: (r.offer.id not in chosen_ids, r.code is not None,
                              r.job_cost if r.job_cost is not None else float("inf"), r.offer.id))
    table = Table(title=f"Considered offers for {job.name} ({job.gpus}× {'/'.join(job.gpu_types)}, "
                        f"{job.duration_hours:g} h)", header_style="bold")
    for column in ("", "offer", "arch", "GPUs", "hours", "cost", "Δ vs chosen", "status"):
        table.add_column(column, justify="right" if column in ("GPUs", "hours", "cost", "Δ vs chosen") else "left")
    for r in shown:
        mark = "[green]✔[/green]" if r.offer.id in chosen_ids else ""
        cost = _money(r.job_cost) if r.job_cost is not None else "-"
        delta = "-"
        if r.job_cost is not None and chosen_cost is not None:
            delta = f"{'+' if r.job_cost >= chosen_cost else '-'}{_money(abs(r.job_cost - chosen_cost))}"
        status = "chosen" if mark else ("candidate (capacity/cost)" if r.code is None
                                        else f"{r.code}: {STATIC_WORDS.get(r.code, '')}")
        table.add_row(mark, r.offer.id, r.offer.architecture.value,
                      str(r.est.billed_gpus * job.shards) if r.est else "-",
                      f"{r.est.hours:.1f}" if r.est else "-", cost, delta, status)
    console.print(table)
    if hidden:
        console.print(f"{hidden['GpuType']:,} offers of other GPU types not shown (--all lists them).")
    unplaced = next((u for u in doc.unplaced if u.job_id == job_id), None)
    if unplaced:
        console.print(f"[red]unplaced: {unplaced.reason.value}[/red] — {unplaced.message}")


def offers(console: Console, found: list[Offer], limit: int, name: str, count: int, version: str) -> None:
    table = Table(title=f"Offers for {name}:{count} (catalog {version[:12]})", header_style="bold")
    for column in ("offer", "arch", "market", "geo", "GPUs/node", "$/node-h", "$/GPU-h", "interconnect", "capacity"):
        table.add_column(column, justify="right" if column.startswith(("$", "GPUs", "capacity")) else "left")
    for o in found[:limit]:
        table.add_row(o.id, o.architecture.value, o.market.value, o.geo, str(o.gpus_per_node),
                      f"{o.price_per_node_hour:,.2f}", f"{o.price_per_gpu_hour:,.3f}", o.interconnect.value,
                      str(o.capacity_gpus))
    console.print(table)
    if len(found) > limit:
        console.print(f"{len(found) - limit:,} more (raise --limit)")


DIFF_STYLE = {"+": "green", "-": "red", "~": "yellow", "-/+": "magenta"}


def _placement(a) -> str:
    if a is None:
        return "-"
    first = a.segments[0]
    more = f" +{len(a.segments) - 1}" if len(a.segments) > 1 else ""
    return f"{first.offer_id}{more} @ {_short(first.start)}"


def diff(console: Console, diffs: list[JobDiff]) -> None:
    table = Table(title="Changes against the previous plan", header_style="bold")
    for column in ("", "job", "before", "after", "Δ cost"):
        table.add_column(column, justify="right" if column == "Δ cost" else "left")
    for d in diffs:
        style = DIFF_STYLE[d.symbol]
        sign = "+" if d.cost_delta >= 0 else "-"
        table.add_row(f"[{style}]{d.symbol}[/{style}]", d.job_name, _placement(d.before), _placement(d.after),
                      f"{sign}{_money(abs(d.cost_delta))}")
    if diffs:
        console.print(table)
    console.print(summary_line(diffs) if diffs else "No changes. The plan matches the previous one.")
