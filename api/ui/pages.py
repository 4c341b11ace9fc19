"""The data behind each page, read through the scheduler's services and queries (same access rules).

Each function returns a template context; nothing here decides anything the services do
not: approval, staleness, diffs and explanations come from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.conditions import job_conditions
from api.ui import gantt, history, views
from api.ui.auth import Viewer
from scheduler import queries, services
from scheduler.catalog import Catalog, load_catalog
from scheduler.lifecycle import TERMINAL_JOB_STATES, PlanState
from scheduler.reasons import STATIC_WORDS
from scheduler.store import Store


@dataclass(frozen=True)
class Freshness:
    """Whether approving now would find the plan's inputs unchanged (the same comparison approval makes)."""

    state: str  # current | stale | decided
    changes: list[str]


def architectures(catalog: Catalog) -> dict[str, str]:
    return {name: facts.architecture.value for name, facts in catalog.facts.items()}


def freshness(store: Store, record, catalog: Catalog, plannable: list | None = None) -> Freshness:
    """`plannable`: `services.plannable(store)`, when the caller has read it already."""
    if record.state is PlanState.STALE:
        return Freshness("stale", list((record.decision or {}).get("stale", [])))
    if record.state is not PlanState.PENDING_REVIEW:
        return Freshness("decided", [])
    changes = services.stale_inputs(store, record, catalog, jobs=plannable)  # what approving it now would find
    return Freshness("stale", changes) if changes else Freshness("current", [])


def _offer_lookup(catalog: Catalog):
    def offer(offer_id: str):
        try:
            return catalog.offer(offer_id)
        except KeyError:  # a plan made on an older catalog or an --offers file
            return None
    return offer


def plan_context(store: Store, viewer: Viewer, plan_id: str, sort: str, descending: bool) -> dict:
    who = viewer.principal
    record = store.get_plan(plan_id)  # read once: the view, the diff and the staleness check share it
    doc = services.plan_view(store, who, record)  # a submitter's view of the plan
    catalog = load_catalog()
    arch = architectures(catalog)
    diff = queries.plan_diff(store, who, plan_id, record=record, view=doc)
    symbols = {d.job_id: d.symbol for d in diff.diffs}
    # A plan under review placed plannable jobs: one read of them serves the staleness check and the table.
    plannable = services.plannable(store) if record.state is PlanState.PENDING_REVIEW else None
    specs = {job.id: job.spec for job in plannable or []}
    missing = [a.job_id for a in doc.assignments if a.job_id not in specs]
    specs |= {job_id: job.spec for job_id, job in store.get_jobs(missing).items()} if missing else {}
    table = views.sort_rows(views.rows(doc, symbols, specs, _offer_lookup(catalog)), sort, descending)
    return {
        "viewer": viewer, "doc": doc, "record": record, "freshness": freshness(store, record, catalog, plannable),
        "expires_at": services.first_start(record.document), "figures": views.figures(doc, diff.old, arch),
        "rows": table, "sort": sort if sort in views.SORT_KEYS else views.DEFAULT_SORT, "descending": descending,
        "gantt": gantt.layout(doc.assignments, arch, views.LOW_SLACK_HOURS), "diff": diff,
        "can_decide": viewer.can_decide and record.state is PlanState.PENDING_REVIEW,
        "team_only": who.role == "submitter", "low_slack_hours": views.LOW_SLACK_HOURS,
    }


def why_context(store: Store, viewer: Viewer, plan_id: str, job_id: str, show_all: bool = False) -> dict:
    ex = queries.explain_job(store, viewer.principal, plan_id, job_id, limit=5000)
    rows, left_out = (ex.considered, {}) if show_all else views.why_rows(ex.considered)
    return {"viewer": viewer, "ex": ex, "rows": rows, "left_out": left_out, "show_all": show_all,
            "plan_id": plan_id, "counterfactuals": views.counterfactuals(ex.considered, ex.chosen_cost),
            "words": STATIC_WORDS}


def job_context(store: Store, viewer: Viewer, job_id: str) -> dict:
    """Conditions, events, the launch units with their attempts, and planned vs actual cost."""
    job, events = queries.job_with_events(store, viewer.principal, job_id)  # access first, as the API's
    assignment = None
    if job.plan_id:
        assignment = views.assignment_of(services.get_plan(store, viewer.principal, job.plan_id), job.id)
    units = store.launches.of_job(job.id)
    terminal = job.state in TERMINAL_JOB_STATES
    return {"viewer": viewer, "job": job, "conditions": job_conditions(job, events), "events": events,
            "units": history.unit_views(units), "assignment": assignment,
            "costs": history.cost_lines(assignment, job.plan_id, units, terminal)}


def plans_context(store: Store, viewer: Viewer, cursor: str | None) -> dict:
    plans, next_cursor = queries.list_plans(store, viewer.principal, cursor=cursor, limit=50)
    return {"viewer": viewer, "plans": plans, "next_cursor": next_cursor, "decided_by": views.decided_by}
