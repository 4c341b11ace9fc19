"""Whole plans on random small batches (Hypothesis): whatever the batch, the plan is valid,
names every job once, never does worse than the greedy plan it starts from, and never
costs less than its own lower bound."""

from __future__ import annotations

from factories import SPEEDS, job, offer, plan, problem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GPU_TYPES = ("H100", "A100")
PROVIDERS = (("aws", "centralized"), ("gcp", "centralized"), ("ionet", "distributed"), ("vast", "distributed"))
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])


@st.composite
def offers(draw):
    types = draw(st.lists(st.sampled_from(GPU_TYPES), min_size=1, max_size=2, unique=True))
    out = []
    for i in range(draw(st.integers(2, 4))):
        provider, arch = draw(st.sampled_from(PROVIDERS))
        gpn = draw(st.sampled_from([1, 2, 4, 8]))
        market = draw(st.sampled_from(["on-demand", "on-demand", "spot", "reserved"]))
        out.append(offer(
            provider, f"r{i}", instance=f"o{i}", gpu=draw(st.sampled_from(types)), gpus_per_node=gpn,
            price=draw(st.integers(1, 400)) / 4, capacity=gpn * draw(st.integers(1, 4)), market=market,
            architecture=arch, interconnect=draw(st.sampled_from(["efa", "infiniband", "roce", "ethernet"])),
            preemption=draw(st.sampled_from([0.05, 0.2])) if market == "spot" else 0.0,
        ))
    return out


@st.composite
def jobs(draw):
    out = []
    for i in range(draw(st.integers(1, 8))):
        shards = draw(st.sampled_from([1, 1, 1, 2, 4]))
        hours = draw(st.integers(1, 40)) / 2
        start = draw(st.integers(0, 24))
        window = hours * draw(st.sampled_from([1.0, 1.5, 2.0, 3.0, 5.0])) + draw(st.integers(0, 4))
        team = draw(st.sampled_from(["a", "b"]))
        after = []
        if i and draw(st.integers(0, 4)) == 0:  # an occasional pipeline edge to an earlier job
            pred = out[draw(st.integers(0, i - 1))]
            after, team = [pred.name], pred.team
        out.append(job(
            f"j{i}", team=team, gpus=shards * draw(st.sampled_from([1, 2, 4, 8])), shards=shards,
            gpu_types=draw(st.permutations(GPU_TYPES).map(lambda p: p[:1]) | st.permutations(GPU_TYPES)),
            hours=hours, not_before=start, deadline=start + window, after=after,
            interruptible=draw(st.booleans()), priority=draw(st.integers(0, 100)),
        ))
    return out


budgets = st.one_of(st.just({}), st.fixed_dictionaries({"a": st.integers(0, 4000).map(float)}))


@PROPERTY_SETTINGS
@given(offers=offers(), jobs=jobs(), budgets=budgets)
def test_random_batches_plan_validly_and_beat_greedy(offers, jobs, budgets):
    out = plan(problem(jobs, offers, speeds=SPEEDS, budgets=budgets))
    doc, inst, result = out.document, out.instance, out.result

    # The independent validator accepts the plan.
    assert out.violations == []

    # Every job exactly once, in assignments or in unplaced, with a reason in words.
    names = [a.job_name for a in doc.assignments] + [u.job_name for u in doc.unplaced]
    assert sorted(names) == sorted(j.name for j in out.problem.jobs)
    assert all(u.message.strip() for u in doc.unplaced)
    assert (doc.summary.jobs_placed, doc.summary.jobs_unplaced) == (len(doc.assignments), len(doc.unplaced))

    # Lexicographic objective: never less priority weight placed than greedy, and at equal
    # weight never more cost.
    solver_weight, solver_cost = result.solution.objective(inst)
    greedy_weight, greedy_cost = result.greedy.objective(inst)
    assert solver_weight <= greedy_weight
    if solver_weight == greedy_weight:
        assert solver_cost <= greedy_cost
    assert doc.summary.greedy_cost == round(greedy_cost / 100, 2)

    # The lower bound is a bound.
    assert doc.summary.lower_bound <= doc.summary.total_cost + 0.01
    assert out.bound.cents <= result.solution.cost(inst) + 1e-6

    # Budgets hold in the plan (the validator checks it too; this names the rule).
    for team, budget in budgets.items():
        assert sum(a.total_cost for a in doc.assignments if a.team == team) <= budget + 0.01


@PROPERTY_SETTINGS
@given(offers=offers(), jobs=jobs())
def test_plans_are_reproducible(offers, jobs):
    prob = problem(jobs, offers, speeds=SPEEDS)
    first, second = plan(prob), plan(prob)
    assert first.result.solution.placed == second.result.solution.placed
    assert first.document.assignments == second.document.assignments
    assert first.document.fingerprint == second.document.fingerprint
