"""Executor use cases on fakeredis and the fake provider, in simulated time."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
from exec_support import NOW, OPS, VISION, SimClock, approved_plan, executor, run_until_quiet, spec

from scheduler import queries, services
from scheduler.execution import Retry
from scheduler.lifecycle import JobState, PlanState
from scheduler.providers import Handle, LaunchRequest, Phase
from scheduler.records import OfferRule
from scheduler.recovery import spot_allowed
from scheduler.store import Store


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


def _units(ex, plan):
    return [u for a in plan.document.assignments for u in ex.launches.of_job(a.job_id)]


def test_approval_schedules_units_that_launch_when_due_and_end_succeeded(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a"), spec("b", gpus=16)])
    ex, fake = executor(store, tmp_path, clock)
    assert len(_units(ex, plan)) == 2  # approve_plan scheduled them
    assert ex.dispatch() == []  # nothing is due before the plan's first start
    run_until_quiet(ex, clock)
    for a in plan.document.assignments:
        job = store.get_job(a.job_id)
        assert job.state is JobState.SUCCEEDED
        (unit,) = ex.launches.of_job(job.id)
        assert unit.current.launched_at == clock.at.replace(minute=0) or unit.current.launched_at >= NOW
        assert unit.actual_cost == pytest.approx(a.total_cost, rel=0.02)  # ran as long as planned, at that price
    assert store.get_plan(plan.plan_id).state is PlanState.DONE
    assert len(fake.ledger()) == 2 and fake.duplicates() == {}
    kinds = [e.type for e in store.events_for_job(plan.document.assignments[0].job_id)]
    assert "launch.started" in kinds and "launch.succeeded" in kinds


def test_a_unit_launched_twice_is_one_instance(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    assert ex.launch(uid) == "launched"
    assert ex.launch(uid) == "done-already"
    assert len(fake.ledger()) == 1
    assert store.get_job(plan.document.assignments[0].job_id).state is JobState.LAUNCHING


def test_price_rise_beyond_tolerance_refuses_and_sends_the_job_back(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock, price_tolerance=0.05)
    fake.configure(price_factor=1.10)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    assert ex.launch(uid) == "refused"
    job = store.get_job(plan.document.assignments[0].job_id)
    assert job.state is JobState.PENDING and job.reason == "PriceRose" and "approved" in job.message
    assert fake.ledger() == []


def test_price_within_tolerance_launches(store, clock, tmp_path):
    approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock, price_tolerance=0.05)
    fake.configure(price_factor=1.04)
    clock.advance(hours=2)
    assert [ex.launch(u) for u in ex.dispatch()] == ["launched"]


def test_transient_errors_retry_at_most_max_tries_then_fail_with_the_reason(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock, max_tries=3)
    fake.configure(error_before=1.0)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    for _ in range(2):
        with pytest.raises(Retry):
            ex.launch(uid)
    assert ex.launch(uid) == "refused"
    job = store.get_job(plan.document.assignments[0].job_id)
    assert job.state is JobState.PENDING and job.reason == "LaunchFailed"
    assert ex.launches.get(uid).current.tries == 3


def test_lost_response_after_create_is_adopted_on_retry(store, clock, tmp_path):
    approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock)
    fake.configure(error_after=1.0)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    with pytest.raises(Retry):
        ex.launch(uid)
    fake.configure(error_after=0.0)
    assert ex.launch(uid) == "launched"
    assert len(fake.ledger()) == 1
    assert ex.launches.get(uid).current.handle["id"] == fake.ledger()[0][1]


def test_negative_control_without_lookup_the_retry_duplicates(store, clock, tmp_path):
    approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock)
    fake.configure(error_after=1.0, lookup=False)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    with pytest.raises(Retry):
        ex.launch(uid)
    fake.configure(error_after=0.0)
    ex.launch(uid)
    assert fake.duplicates() == {ex.launches.get(uid).current.key: 2}


def test_reconcile_adopts_an_unrecorded_instance_and_terminates_orphans_after_grace(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock, orphan_grace_s=600)
    clock.advance(hours=2)
    (uid,) = ex.dispatch()
    unit = ex.launches.get(uid)
    job = store.get_job(unit.job_id)
    # The worker died after the create, before writing the handle:
    fake.launch(ex._request(job, unit), unit.current.key)
    orphan = fake.launch(ex._request(job, unit), "job_zzz/plan-x/0.1")
    assert ex.reconcile("fake") == {"adopted": 1, "terminated": 0, "orphans": 1}
    assert ex.launches.get(uid).current.state == "launched"
    clock.advance(seconds=601)
    assert ex.reconcile("fake")["terminated"] == 1
    assert fake.status(orphan).phase is Phase.CANCELLED
    assert len(fake.ledger()) == 2 and plan.plan_id in uid


def _reclaimed_3h_in(ex, fake, clock) -> dict:
    """Launch what is due 2 h from now, let it run 3 h, reclaim every spot instance; the tracking pass's counts."""
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    ex.track("fake")
    clock.advance(hours=3)
    assert fake.preempt(1.0)
    return ex.track("fake")


def test_preempted_spot_unit_is_replaced_and_finishes_before_its_deadline(store, clock, tmp_path):
    plan = approved_plan(store, [spec("s", interruptible=True, duration_hours=10,
                                      deadline=NOW + timedelta(hours=40))])
    ex, fake = executor(store, tmp_path, clock, recovery_tolerance=1.0)
    (a,) = plan.document.assignments
    assert a.segments[0].market == "spot"
    assert _reclaimed_3h_in(ex, fake, clock) == {"replaced": 1}
    assert store.get_job(a.job_id).state is JobState.PREEMPTED
    run_until_quiet(ex, clock)
    job = store.get_job(a.job_id)
    (unit,) = ex.launches.of_job(job.id)
    assert job.state is JobState.SUCCEEDED and len(unit.attempts) == 2
    assert unit.current.ended_at <= unit.deadline
    assert unit.attempts[0].phase == "preempted" and unit.attempts[0].cost > 0


def test_cant_be_late_rule_switches_to_on_demand_when_slack_is_short():
    assert spot_allowed(True, slack_h=5, overhead_h=0.5)
    assert not spot_allowed(True, slack_h=0.9, overhead_h=0.5)
    assert not spot_allowed(False, slack_h=50, overhead_h=0.5)


def test_recovery_outside_the_envelope_waits_for_ops(store, clock, tmp_path):
    plan = approved_plan(store, [spec("s", interruptible=True, duration_hours=10,
                                      deadline=NOW + timedelta(hours=40))])
    ex, fake = executor(store, tmp_path, clock, recovery_tolerance=0.0)
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    clock.advance(hours=9)  # nearly done on spot, then reclaimed: any re-run costs more than approved
    fake.preempt(1.0)
    assert ex.track("fake") == {"needs-review": 1}
    job = store.get_job(plan.document.assignments[0].job_id)
    assert job.state is JobState.PENDING and job.reason == "RecoveryNeedsReview" and "ops" in job.message


def test_cancelling_a_running_job_terminates_its_instance(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a", duration_hours=20)])
    ex, fake = executor(store, tmp_path, clock)
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    ex.track("fake")
    job_id = plan.document.assignments[0].job_id
    assert store.get_job(job_id).state is JobState.RUNNING
    clock.advance(hours=3)
    services.cancel_job(store, OPS, job_id)
    assert ex.track("fake") == {"cancelled": 1}
    (unit,) = ex.launches.of_job(job_id)
    assert fake.status(Handle.from_json(unit.current.handle)).phase is Phase.CANCELLED
    assert unit.current.state == "ended" and unit.current.cost > 0


def test_a_job_waits_for_the_jobs_it_comes_after(store, clock, tmp_path):
    approved_plan(store, [spec("train", duration_hours=4), spec("serve", after=["train"], duration_hours=2)])
    ex, fake = executor(store, tmp_path, clock)
    run_until_quiet(ex, clock)
    jobs = {j.name: j for j in store.list_jobs(team="vision")[0]}
    train, serve = (ex.launches.of_job(jobs[n].id)[0] for n in ("train", "serve"))
    assert train.current.ended_at <= serve.current.launched_at
    assert jobs["serve"].state is JobState.SUCCEEDED


def test_a_job_after_one_that_will_never_succeed_is_cancelled_not_kept_waiting(store, clock, tmp_path):
    approved_plan(store, [spec("train", duration_hours=4), spec("serve", after=["train"], duration_hours=2)])
    ex, fake = executor(store, tmp_path, clock)
    jobs = {j.name: j for j in store.list_jobs(team="vision")[0]}
    services.cancel_job(store, VISION, jobs["train"].id)
    run_until_quiet(ex, clock)  # "did not settle" if serve were re-queued every minute for ever
    serve = store.get_job(jobs["serve"].id)
    assert serve.state is JobState.CANCELLED and serve.reason == "DependencyFailed"
    assert jobs["train"].id in serve.message and "cancelled" in serve.message
    (unit,) = ex.launches.of_job(serve.id)
    assert unit.current.state == "refused" and fake.ledger() == []


def test_after_means_the_live_job_of_that_name_not_an_older_one(store, clock, tmp_path):
    old, _ = services.submit_job(store, VISION, spec("train"))
    services.cancel_job(store, VISION, old.id)  # an earlier run of the name, ended: the name is free again
    approved_plan(store, [spec("train", duration_hours=4), spec("serve", after=["train"], duration_hours=2)])
    ex, fake = executor(store, tmp_path, clock)
    run_until_quiet(ex, clock)
    jobs = {j.name: j for j in reversed(store.list_jobs(team="vision")[0])}  # newest last: the new train wins
    assert jobs["train"].id != old.id
    train, serve = (ex.launches.of_job(jobs[n].id)[0] for n in ("train", "serve"))
    assert train.current.ended_at <= serve.current.launched_at
    assert jobs["serve"].state is JobState.SUCCEEDED
    assert store.jobs_named("vision", ["train"])["train"].id == jobs["train"].id  # the newest ended one, once all ended


def test_fake_provider_throttles_above_its_rate(tmp_path, clock):
    from scheduler.catalog import load_catalog
    from scheduler.providers import Throttled
    from workers.providers.fake import FakeProvider

    fake = FakeProvider(tmp_path / "c.sqlite", clock=clock.epoch)
    fake.configure(throttle_per_s=3)
    offer = load_catalog().offers[0]
    request = LaunchRequest(job_id="j", team="t", name="n", offer=offer, nodes=1, gpus=1, run_hours=1)
    for i in range(3):
        fake.launch(request, f"k/p/0.{i}")
    with pytest.raises(Throttled):
        fake.launch(request, "k/p/0.9")


def test_cost_report_compares_planned_and_actual_per_team(store, clock, tmp_path):
    from scheduler.errors import Forbidden
    from scheduler.records import Principal
    from scheduler.reports import cost_report

    plan = approved_plan(store, [spec("a"), spec("s", interruptible=True, duration_hours=10,
                                                  deadline=NOW + timedelta(hours=40))])
    ex, fake = executor(store, tmp_path, clock, recovery_tolerance=1.0)
    _reclaimed_3h_in(ex, fake, clock)  # the spot job's first attempt: 3 h paid and lost
    run_until_quiet(ex, clock)
    report = cost_report(store, OPS)
    (team,) = report["teams"]
    planned = sum(a.total_cost for a in plan.document.assignments)
    assert team["team"] == "vision" and team["jobs"] == 2 and team["jobs_live"] == 0
    assert team["planned_cost"] == pytest.approx(planned, abs=0.02)
    assert team["replacements"] == 1 and team["actual_cost"] > team["planned_cost"]
    assert team["difference"] == pytest.approx(team["actual_cost"] - team["planned_cost"], abs=0.01)
    assert report["total"]["actual_cost"] == team["actual_cost"]
    nlp = Principal(name="nils", role="submitter", team="nlp")
    assert cost_report(store, nlp)["teams"] == []
    with pytest.raises(Forbidden):
        cost_report(store, nlp, team="vision")


def test_a_plan_is_done_when_the_jobs_it_placed_have_ended(store, clock, tmp_path):
    plan = approved_plan(store, [spec("a"), spec("b"), spec("huge", gpus=4096)])
    (unplaced,) = plan.document.unplaced  # stays UNPLACED, a live state: it does not hold the plan open
    placed = [a.job_id for a in plan.document.assignments]
    assert len(placed) == 2 and not store.plan_jobs_ended(plan.plan_id)
    services.cancel_job(store, VISION, placed[0])
    assert not store.plan_jobs_ended(plan.plan_id)
    services.cancel_job(store, VISION, placed[1])
    assert store.plan_jobs_ended(plan.plan_id)
    assert store.get_job(unplaced.job_id).state is JobState.UNPLACED


def test_tracked_adapters_come_from_an_index_kept_with_the_tracking_sets(store, clock, tmp_path):
    approved_plan(store, [spec("a")])
    ex, fake = executor(store, tmp_path, clock)
    launches = ex.launches
    assert launches.tracked_adapters() == []
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    assert launches.tracked_adapters() == ["fake"]
    store.client.srem("cs:adapters", "fake", "")  # as written before the index: tracking sets but no index
    assert launches.tracked_adapters() == ["fake"]  # found by one scan, then kept
    assert store.client.smembers("cs:adapters") == {"fake", ""}
    store.client.sadd("cs:tracking:orphaned-by-hand", "x")  # a tracking set the index does not name: no scan now
    assert launches.tracked_adapters() == ["fake"]
    run_until_quiet(ex, clock)
    assert launches.tracked_adapters() == []  # nothing live: an adapter with an empty set is left out


def test_a_reclaim_of_many_spot_instances_reads_the_live_units_once_per_pass(store, clock, tmp_path, monkeypatch):
    specs = [spec(f"s{i}", interruptible=True, duration_hours=10, deadline=NOW + timedelta(hours=40)) for i in range(4)]
    plan = approved_plan(store, specs)
    ex, fake = executor(store, tmp_path, clock, recovery_tolerance=1.0)
    assert {a.segments[0].market for a in plan.document.assignments} == {"spot"}
    clock.advance(hours=2)
    for uid in ex.dispatch():
        ex.launch(uid)
    ex.track("fake")
    clock.advance(hours=3)
    busy_reads = []
    tracked_adapters = ex.launches.tracked_adapters
    monkeypatch.setattr(ex.launches, "tracked_adapters", lambda: busy_reads.append(1) or tracked_adapters())
    reclaimed = len(fake.preempt(1.0))  # every running spot instance
    assert reclaimed >= 2
    assert ex.track("fake") == {"replaced": reclaimed}
    assert len(busy_reads) == 1  # one read of the live units for all the re-placements
    run_until_quiet(ex, clock)
    assert {store.get_job(a.job_id).state for a in plan.document.assignments} == {JobState.SUCCEEDED}


def test_a_job_after_one_placed_by_an_earlier_plan_is_placed_to_start_once_that_one_ends(store, clock, tmp_path):
    from scheduler.models import parse_utc

    first = approved_plan(store, [spec("train", duration_hours=4)])
    (train,) = store.launches.of_job(first.document.assignments[0].job_id)  # approved: its launch unit is due
    train_end = train.current.start + timedelta(hours=train.current.run_hours)
    services.submit_job(store, VISION, spec("serve", after=["train"], duration_hours=2))
    second = services.create_plan(store, OPS, services.PlanRun(now=NOW + timedelta(hours=1), time_limit_s=2))
    (serve,) = second.document.assignments
    assert serve.job_name == "serve"
    assert parse_utc(serve.segments[0].start) >= train_end  # not at once, beside its still-running input
    assert parse_utc(serve.segments[0].start) < train_end + timedelta(hours=1)


def test_a_plan_cancels_the_jobs_after_one_that_failed_instead_of_placing_them(store):
    train, _ = services.submit_job(store, VISION, spec("train"))
    services.cancel_job(store, VISION, train.id)  # ended without success, and not resubmitted
    serve, _ = services.submit_job(store, VISION, spec("serve", after=["train"]))
    report, _ = services.submit_job(store, VISION, spec("report", after=["serve"]))  # waits on serve, in the batch
    other, _ = services.submit_job(store, VISION, spec("other"))
    plan = services.create_plan(store, OPS, services.PlanRun(now=NOW + timedelta(hours=1), time_limit_s=2))
    assert [a.job_id for a in plan.document.assignments] == [other.id]
    for job in (serve, report):
        job = store.get_job(job.id)
        assert job.state is JobState.CANCELLED and job.reason == "DependencyFailed"
    assert train.id in store.get_job(serve.id).message and "'serve'" in store.get_job(report.id).message


def _preempted_and_replaced(store, clock, tmp_path, rule: OfferRule | None = None) -> tuple[str, str, str]:
    """(plan id, first offer, re-placement offer) of a spot job reclaimed 3 h in; `rule`: ops' rule, set
    before planning."""
    job, _ = services.submit_job(store, VISION, spec("s", interruptible=True, duration_hours=10,
                                                      deadline=NOW + timedelta(hours=40)))
    if rule is not None:
        services.set_offer_rule(store, OPS, job.id, rule)
    record = services.create_plan(store, OPS, services.PlanRun(now=NOW + timedelta(hours=1), time_limit_s=2))
    services.approve_plan(store, OPS, record.plan_id, record.fingerprint, "ok", now=NOW, launch_via="fake")
    ex, fake = executor(store, tmp_path, clock, recovery_tolerance=1.0)
    assert _reclaimed_3h_in(ex, fake, clock) == {"replaced": 1}
    (unit,) = ex.launches.of_job(job.id)
    return record.plan_id, unit.attempts[0].offer_id, unit.attempts[1].offer_id


def test_a_re_placement_after_preemption_keeps_to_ops_offer_rule(store, clock, tmp_path):
    plan_id, first, free_choice = _preempted_and_replaced(store, clock, tmp_path / "free")
    (job_id,) = store.get_plan(plan_id).job_versions
    dearer = next(row.offer_id for row in queries.explain_job(store, OPS, plan_id, job_id, limit=5000).considered
                  if row.status == "candidate" and row.market == "spot" and row.offer_id != free_choice)
    other = Store(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
    _, ruled_first, ruled_choice = _preempted_and_replaced(other, SimClock(), tmp_path / "ruled",
                                                           OfferRule(pin=dearer))
    assert free_choice != dearer  # left alone, recovery goes back to the cheapest offer
    assert ruled_first == ruled_choice == dearer  # pinned, it stays on the pinned one
