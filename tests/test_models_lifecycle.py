"""Strict domain models (DESIGN §4.1, §4.2, §4.5) and the lifecycle tables (§4.6)."""

from __future__ import annotations

from datetime import datetime

import pytest
from factories import NOW, at, offer
from pydantic import ValidationError

from scheduler.lifecycle import (
    JOB_TRANSITIONS,
    LIVE_JOB_STATES,
    PLAN_TRANSITIONS,
    TERMINAL_JOB_STATES,
    IllegalTransition,
    JobState,
    PlanState,
    transition,
)
from scheduler.models import JobKind, JobSpec, Offer, PlanDocument


def job_fields(**update) -> dict:
    fields = {"name": "llama2-70b", "team": "vision", "gpus": 64, "gpu_types": ["H100"],
              "duration_hours": 672, "not_before": "2026-11-23T00:00:00Z", "deadline": "2026-12-31T00:00:00Z"}
    fields.update(update)
    return {k: v for k, v in fields.items() if v is not None}


def rejected(model, data: dict) -> list[tuple[tuple, str]]:
    """(location, message) of every error pydantic raises for `data`."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def rejected_field(model, data: dict) -> set:
    return {loc[0] for loc, _ in rejected(model, data) if loc}


# --------------------------------------------------------------------------- job spec


def test_a_minimal_job_spec_takes_the_documented_defaults():
    spec = JobSpec.model_validate(job_fields())
    assert (spec.kind, spec.shards, spec.priority, spec.interruptible, spec.managed) == \
        (JobKind.TRAINING, 1, 50, False, False)
    assert (spec.compliance, spec.regions, spec.after, spec.data, spec.max_hourly_cost) == ([], [], [], None, None)
    assert spec.not_before == NOW and spec.deadline.tzinfo is not None
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_naive_datetimes_are_read_as_utc():
    spec = JobSpec.model_validate(job_fields(not_before=datetime(2026, 11, 23), deadline="2026-11-25T00:00:00"))
    assert spec.not_before == NOW
    assert spec.deadline == at(48)
    assert spec.deadline.utcoffset().total_seconds() == 0


def test_unknown_field_is_an_error_naming_it():
    ((loc, msg),) = rejected(JobSpec, job_fields(gpu="H100"))
    assert loc == ("gpu",) and "not permitted" in msg
    assert rejected_field(JobSpec, job_fields(use_spot=True, accelerators="H100:8")) == {"use_spot", "accelerators"}


def test_job_spec_is_frozen():
    spec = JobSpec.model_validate(job_fields())
    with pytest.raises(ValidationError):
        spec.gpus = 8


@pytest.mark.parametrize("name", ["Llama", "-lead", ".dot", "with space", "slash/name", "ümlaut", "a" * 64, ""])
def test_bad_name_is_rejected_on_name(name):
    assert rejected_field(JobSpec, job_fields(name=name)) == {"name"}


@pytest.mark.parametrize("name", ["a", "llama2-70b", "eval.v2_run-3", "0" * 63])
def test_good_names_are_accepted(name):
    assert JobSpec.model_validate(job_fields(name=name)).name == name


@pytest.mark.parametrize("gpus", [0, -8, 4097])
def test_gpus_out_of_range(gpus):
    assert rejected_field(JobSpec, job_fields(gpus=gpus)) == {"gpus"}


@pytest.mark.parametrize("gpus", [1, 4096])
def test_gpus_at_the_limits(gpus):
    assert JobSpec.model_validate(job_fields(gpus=gpus)).gpus == gpus


def test_gpus_must_divide_into_shards():
    ((loc, msg),) = rejected(JobSpec, job_fields(gpus=10, shards=4))
    assert "gpus" in msg and "shards" in msg
    assert JobSpec.model_validate(job_fields(gpus=12, shards=4)).gpus_per_shard == 3


def test_deadline_before_not_before():
    for deadline in ("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z"):
        ((loc, msg),) = rejected(JobSpec, job_fields(deadline=deadline))
        assert "deadline" in msg and "not_before" in msg


@pytest.mark.parametrize(("update", "field"), [
    ({"priority": 101}, "priority"),
    ({"priority": -1}, "priority"),
    ({"duration_hours": 0}, "duration_hours"),
    ({"gpu_types": []}, "gpu_types"),
    ({"gpu_types": ["H100", "H100"]}, "gpu_types"),
    ({"compliance": ["sox"]}, "compliance"),
    ({"regions": ["mars"]}, "regions"),
    ({"kind": "batch"}, "kind"),
    ({"shards": 0}, "shards"),
    ({"max_hourly_cost": 0}, "max_hourly_cost"),
    ({"data": {"location": "s3-bucket", "size_gb": 10}}, "data"),
    ({"data": {"location": "aws:us-east-1", "size_gb": -1}}, "data"),
    ({"launch": {"image": "x", "cmd": "y"}}, "launch"),
    ({"deadline": None}, "deadline"),
    ({"team": "Vision"}, "team"),
])
def test_invalid_field_values_name_the_field(update, field):
    assert rejected_field(JobSpec, job_fields(**update)) == {field}


@pytest.mark.parametrize(("update", "words"), [
    ({"managed": True}, ("managed", "inference")),
    ({"after": ["llama2-70b"]}, ("after itself",)),
])
def test_inconsistent_jobs_are_rejected(update, words):
    ((loc, msg),) = rejected(JobSpec, job_fields(**update))
    assert all(w in msg for w in words)


def test_regions_accept_geographies_and_provider_regions():
    spec = JobSpec.model_validate(job_fields(regions=["eu", "aws:us-east-1", "vast:czechia-cz-eu"]))
    assert spec.regions == ["eu", "aws:us-east-1", "vast:czechia-cz-eu"]
    managed = JobSpec.model_validate(job_fields(kind="inference", managed=True))
    assert managed.managed and managed.kind is JobKind.INFERENCE


# --------------------------------------------------------------------------- offer


def offer_fields(**update) -> dict:
    fields = offer().model_dump(mode="json")
    fields.update(update)
    return fields


def test_offer_round_trips_and_derives_its_price_per_gpu():
    o = Offer.model_validate(offer_fields(price_per_node_hour=98.32))
    assert Offer.model_validate_json(o.model_dump_json()) == o
    assert o.price_per_gpu_hour == pytest.approx(12.29)
    assert o.pool == o.id


@pytest.mark.parametrize(("update", "field"), [
    ({"architecture": "hybrid"}, "architecture"),
    ({"market": "preemptible"}, "market"),
    ({"interconnect": "nvlink"}, "interconnect"),
    ({"geo": "mars"}, "geo"),
    ({"gpus_per_node": 0}, "gpus_per_node"),
    ({"price_per_node_hour": -1}, "price_per_node_hour"),
    ({"capacity_gpus": -8}, "capacity_gpus"),
    ({"egress_usd_per_gb": -0.1}, "egress_usd_per_gb"),
    ({"preemption_rate_per_hour": -1}, "preemption_rate_per_hour"),
    ({"ingress_gbps": 0}, "ingress_gbps"),
    ({"spot": True}, "spot"),
])
def test_offer_strictness(update, field):
    assert rejected_field(Offer, offer_fields(**update)) == {field}


def test_offer_requires_the_contract_fields():
    fields = offer_fields()
    for name in ("id", "provider", "architecture", "region", "geo", "gpu_type", "gpus_per_node",
                 "price_per_node_hour", "market", "capacity_gpus", "interconnect"):
        partial = {k: v for k, v in fields.items() if k != name}
        assert rejected_field(Offer, partial) == {name}


def test_plan_document_is_strict():
    doc = {"plan_id": "p", "created_at": "2026-11-23T00:00:00Z", "created_by": "cli",
           "horizon": {"start": "2026-11-23T00:00:00Z", "end": "2026-11-24T00:00:00Z"}, "fingerprint": "f",
           "solver": {"status": "OPTIMAL"},
           "summary": {"total_cost": 0, "baseline_centralized_cost": 0, "savings_pct": 0, "lower_bound": 0,
                       "jobs_placed": 0, "jobs_unplaced": 0, "by_placement": {}},
           "assignments": [], "unplaced": []}
    assert PlanDocument.model_validate(doc).format_version == "1.0"
    assert rejected_field(PlanDocument, {**doc, "format_version": "2.0"}) == {"format_version"}
    assert rejected_field(PlanDocument, {**doc, "extra": 1}) == {"extra"}
    bad_reason = {"job_id": "t/j", "job_name": "j", "reason": "Busy", "message": "m"}
    assert rejected_field(PlanDocument, {**doc, "unplaced": [bad_reason]}) == {"unplaced"}


# --------------------------------------------------------------------------- lifecycle

J, P = JobState, PlanState


@pytest.mark.parametrize(("path"), [
    [J.PENDING, J.PLANNED, J.APPROVED, J.LAUNCHING, J.RUNNING, J.SUCCEEDED],
    [J.RUNNING, J.FAILED],
    [J.RUNNING, J.PREEMPTED, J.LAUNCHING, J.RUNNING],
    [J.PENDING, J.UNPLACED, J.PENDING],
    [J.PLANNED, J.PENDING],
    [J.APPROVED, J.CANCELLED],
])
def test_job_transitions_allowed(path):
    for current, target in zip(path, path[1:]):
        assert transition(current, target) is target
        assert transition(current, target.value) is target  # a stored string works too


@pytest.mark.parametrize(("current", "target"), [
    (J.PENDING, J.RUNNING),
    (J.PENDING, J.APPROVED),
    (J.PLANNED, J.LAUNCHING),
    (J.APPROVED, J.SUCCEEDED),
    (J.UNPLACED, J.RUNNING),
    (J.SUCCEEDED, J.PENDING),
    (J.FAILED, J.RUNNING),
    (J.CANCELLED, J.PENDING),
    (J.RUNNING, J.RUNNING),
])
def test_job_transitions_refused(current, target):
    with pytest.raises(IllegalTransition) as info:
        transition(current, target)
    err = info.value
    assert (err.kind, err.current, err.target) == ("job", current.value, target.value)
    assert current.value in str(err) and target.value in str(err)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(("path"), [
    [P.PLANNING, P.PENDING_REVIEW, P.APPROVED, P.EXECUTING, P.DONE],
    [P.PENDING_REVIEW, P.REJECTED],
    [P.PENDING_REVIEW, P.SUPERSEDED],
    [P.PENDING_REVIEW, P.STALE],
    [P.PENDING_REVIEW, P.EXPIRED],
    [P.APPROVED, P.EXPIRED],
])
def test_plan_transitions_allowed(path):
    for current, target in zip(path, path[1:]):
        assert transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), [
    (P.PLANNING, P.APPROVED),
    (P.STALE, P.APPROVED),
    (P.REJECTED, P.APPROVED),
    (P.DONE, P.EXECUTING),
    (P.EXECUTING, P.PENDING_REVIEW),
    (P.EXPIRED, P.APPROVED),
])
def test_plan_transitions_refused(current, target):
    with pytest.raises(IllegalTransition) as info:
        transition(current, target)
    assert info.value.kind == "plan"


def test_unknown_target_state_is_an_error():
    with pytest.raises(ValueError):
        transition(J.PENDING, "exploded")


def test_every_state_has_a_row_and_terminal_states_are_the_documented_ones():
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert set(PLAN_TRANSITIONS) == set(PlanState)
    assert TERMINAL_JOB_STATES == {J.SUCCEEDED, J.FAILED, J.CANCELLED}
    assert LIVE_JOB_STATES == set(JobState) - TERMINAL_JOB_STATES
    assert {s for s, nxt in PLAN_TRANSITIONS.items() if not nxt} == {
        P.DONE, P.REJECTED, P.SUPERSEDED, P.EXPIRED, P.STALE}
    # Every live job can still be cancelled.
    assert all(J.CANCELLED in JOB_TRANSITIONS[s] for s in LIVE_JOB_STATES)
