"""Terraform-style diff between two plans: what changes for each job since last night.

Per job, against the previous plan:

    +    create   placed now, not placed before
    -    delete   placed before, in the batch again and not placed now
    ~    update   same offers, other start, end or cost
    -/+  replace  moved to other offers (delete the old placement, create the new one)

Jobs placed the same way in both plans are left out (Terraform's "no-op").
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.models import Assignment, Change, PlanDocument

SYMBOLS = {("create",): "+", ("delete",): "-", ("update",): "~", ("delete", "create"): "-/+"}


@dataclass(frozen=True)
class JobDiff:
    job_id: str
    job_name: str
    actions: tuple[str, ...]
    before: Assignment | None
    after: Assignment | None

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.actions]

    @property
    def cost_delta(self) -> float:
        return (self.after.total_cost if self.after else 0.0) - (self.before.total_cost if self.before else 0.0)


def _where(a: Assignment) -> list[tuple[str, int]]:
    return sorted((s.offer_id, s.gpus) for s in a.segments)


def _when(a: Assignment) -> list[tuple[str, str, float]]:
    return sorted((s.start, s.end, s.compute_cost + s.egress_cost) for s in a.segments)


def diff_plans(new: PlanDocument, old: PlanDocument | None) -> list[JobDiff]:
    # Only jobs of the new plan's batch can change: a job absent from it is already approved,
    # running or finished under the old plan (or cancelled), which this plan does not touch.
    batch = {a.job_id for a in new.assignments} | {u.job_id for u in new.unplaced}
    before = {a.job_id: a for a in old.assignments if a.job_id in batch} if old else {}
    after = {a.job_id: a for a in new.assignments}
    names = {a.job_id: a.job_name for a in [*before.values(), *after.values()]}
    out = []
    for job_id in sorted(set(before) | set(after), key=lambda i: (names[i], i)):
        b, a = before.get(job_id), after.get(job_id)
        if b is None:
            actions = ("create",)
        elif a is None:
            actions = ("delete",)
        elif _where(a) != _where(b):
            actions = ("delete", "create")
        elif _when(a) != _when(b):
            actions = ("update",)
        else:
            continue
        out.append(JobDiff(job_id, names[job_id], actions, b, a))
    return out


def changes(new: PlanDocument, old: PlanDocument | None) -> list[Change]:
    """The plan document's `changes` field (DESIGN §4.5)."""
    return [Change(job_id=d.job_id, actions=list(d.actions)) for d in diff_plans(new, old)]


def summary_line(diffs: list[JobDiff]) -> str:
    """`Plan: 2 to create, 1 to update, 0 to delete, 1 to replace.` (Terraform's wording)."""
    count = {key: sum(d.actions == key for d in diffs) for key in SYMBOLS}
    return (f"Plan: {count[('create',)]} to create, {count[('update',)]} to update, "
            f"{count[('delete',)]} to delete, {count[('delete', 'create')]} to replace.")
