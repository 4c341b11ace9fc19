"""Ops' offer rules in the optimizer (`optimizer.problem.OfferChoice`): a pin reaches past the cheapest
candidates, a forbid removes an offer, the reasons count the offers the rule leaves, and the
validator refuses a plan that breaks a rule."""

from __future__ import annotations

from dataclasses import replace

from factories import job, offer, plan, problem

from optimizer.problem import MAX_CANDIDATES, OfferChoice
from optimizer.validate import validate


def offers_by_price(n: int):
    return [offer(region=f"r{i}", price=10.0 + i) for i in range(n)]  # r0 cheapest


def placed_on(outcome, job_id: str) -> set[str]:
    return {s.offer_id for a in outcome.document.assignments if a.job_id == job_id for s in a.segments}


def test_a_pin_reaches_an_offer_beyond_the_cheapest_candidates():
    offers = offers_by_price(MAX_CANDIDATES + 6)
    dearest = offers[-1].id
    prob = replace(problem([job("a")], offers), choices={"ml/a": OfferChoice(pin=dearest)})
    outcome = plan(prob)
    assert outcome.violations == []
    assert placed_on(outcome, "ml/a") == {dearest}


def test_a_forbid_moves_the_job_to_the_next_cheapest_offer():
    offers = offers_by_price(3)
    free = plan(problem([job("a")], offers))
    assert placed_on(free, "ml/a") == {offers[0].id}
    ruled = plan(replace(problem([job("a")], offers), choices={"ml/a": OfferChoice(forbid=frozenset({offers[0].id}))}))
    assert ruled.violations == [] and placed_on(ruled, "ml/a") == {offers[1].id}
    # The all-centralized baseline is what centralized would cost anyway: the rule does not move it.
    assert ruled.document.summary.baseline_centralized_cost == free.document.summary.baseline_centralized_cost


def test_a_pin_to_an_offer_that_fails_a_check_is_that_checks_reason_first_naming_the_pin():
    offers = [offer(region="cheap", price=10.0), offer(region="small", price=20.0, capacity=4)]
    prob = replace(problem([job("a", gpus=8)], offers), choices={"ml/a": OfferChoice(pin=offers[1].id)})
    [entry] = plan(prob).document.unplaced
    assert entry.reason.value == "CapacityExhausted"
    assert entry.message.startswith(f"Ops pinned it to offer {offers[1].id}. ")


def test_the_validator_refuses_a_plan_that_breaks_a_rule():
    offers = offers_by_price(2)
    free = plan(problem([job("a")], offers))
    ruled = replace(problem([job("a")], offers), choices={"ml/a": OfferChoice(forbid=frozenset({offers[0].id}))})
    assert any(f"on {offers[0].id} against the rule (Ops forbade offer {offers[0].id})" in v
               for v in validate(ruled, free.document))
