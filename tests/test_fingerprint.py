"""A plan's fingerprint changes with its inputs, and what_changed() says how."""

from scheduler.fingerprint import PlanInputs, what_changed

BASE = PlanInputs({"vision/a": "1", "vision/b": "1"}, "cat1", None, {"vision": 100.0})


def test_same_inputs_same_fingerprint_in_any_order():
    reordered = PlanInputs({"vision/b": "1", "vision/a": "1"}, "cat1", None, {"vision": 100.0})
    assert reordered.fingerprint() == BASE.fingerprint()
    assert what_changed(BASE, reordered) == []
    assert PlanInputs.from_json(BASE.to_json()).fingerprint() == BASE.fingerprint()


def test_every_input_change_changes_the_fingerprint_and_is_named():
    cases = {
        "submitted": PlanInputs({**BASE.job_versions, "vision/c": "1"}, "cat1", None, {"vision": 100.0}),
        "cancelled": PlanInputs({"vision/a": "1"}, "cat1", None, {"vision": 100.0}),
        "changed since: vision/b": PlanInputs({"vision/a": "1", "vision/b": "2"}, "cat1", None, {"vision": 100.0}),
        "prices or capacity": PlanInputs(dict(BASE.job_versions), "cat2", None, {"vision": 100.0}),
        "another plan was approved": PlanInputs(dict(BASE.job_versions), "cat1", "plan-x", {"vision": 100.0}),
        "budgets": PlanInputs(dict(BASE.job_versions), "cat1", None, {"vision": 50.0}),
    }
    for words, current in cases.items():
        assert current.fingerprint() != BASE.fingerprint(), words
        changes = what_changed(BASE, current)
        assert len(changes) == 1 and words in changes[0], (words, changes)
