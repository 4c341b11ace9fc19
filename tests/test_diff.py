"""Terraform-style plan diff: + create, - delete, ~ update, -/+ replace."""

from __future__ import annotations

from factories import job, offer, plan, problem

from scheduler.diff import changes, diff_plans, summary_line

CHEAP = offer("ionet", "us", price=32, capacity=64, interconnect="roce")
DEAR = offer("aws", "us-east-1", price=98.32, capacity=64)


def _doc(jobs, offers):
    return plan(problem(jobs, offers)).document


def test_every_kind_of_change_and_the_summary_line():
    old = _doc([job("keep"), job("moves"), job("shifts", not_before=0), job("gone"), job("dropped")], [CHEAP, DEAR])
    # "moves" loses its cheap offer (only the dear one allows it now), "shifts" starts later,
    # "dropped" cannot be placed any more (unknown GPU), "gone" left the batch (approved
    # or cancelled: not this plan's business) and "new" arrives.
    new = _doc([job("keep"), job("moves", gpu_types=("H100",), regions=("aws:us-east-1",)),
                job("shifts", not_before=5), job("dropped", gpu_types=("GB200",)), job("new")], [CHEAP, DEAR])
    diffs = {d.job_name: d.symbol for d in diff_plans(new, old)}
    assert diffs == {"moves": "-/+", "shifts": "~", "dropped": "-", "new": "+"}
    line = summary_line(diff_plans(new, old))
    assert line == "Plan: 1 to create, 1 to update, 1 to delete, 1 to replace."
    assert {c.job_id.split("/")[1]: c.actions for c in changes(new, old)}["moves"] == ["delete", "create"]


def test_no_previous_plan_means_everything_is_created():
    new = _doc([job("a"), job("b")], [CHEAP])
    assert [d.symbol for d in diff_plans(new, None)] == ["+", "+"]


def test_identical_plans_have_no_changes():
    doc = _doc([job("a")], [CHEAP])
    assert diff_plans(doc, doc) == []
    assert summary_line([]) == "Plan: 0 to create, 0 to update, 0 to delete, 0 to replace."
