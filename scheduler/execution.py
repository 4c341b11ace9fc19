"""Execution use cases: launch approved placements when due, track them, reconcile, recover.

The Celery tasks in `workers.tasks` are thin wrappers around `Executor`; tests call it directly.
Records in Redis are the truth (DESIGN §6): the dispatcher claims due units with a lease and
re-sends any whose lease ran out, so a lost message or a killed worker only delays a launch.
A launch can never start a second instance of the same attempt:

1. a per-unit lease (Redis `SET NX PX`) lets one worker at a time call the provider for a unit;
2. the attempt is written as `launching` before the provider is called;
3. the provider call is idempotent on the attempt's key (the provider's token or our tag);
4. `reconcile` adopts an instance whose handle was never written, and terminates true orphans
   (no record, or a record that moved on) after a grace period.

Re-checks at launch (price within `price_tolerance`, capacity, compliance) refuse a launch and
send the job back to pending with the reason; on a preemption or failure `recover` re-places
the unit with the time left before its deadline (`scheduler.recovery`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from scheduler import recovery
from scheduler.catalog import Catalog
from scheduler.errors import Conflict, NotFound, TransitionNotAllowed
from scheduler.launches import Attempt, LaunchStore, LaunchUnit, adapter_for, parse_key
from scheduler.lifecycle import TERMINAL_JOB_STATES, JobState, PlanState
from scheduler.lifecycle import path as lifecycle_path
from scheduler.providers import Handle, LaunchRequest, Phase, Provider, ProviderError, Status
from scheduler.records import JobRecord, never_runs_after
from scheduler.store import Store

log = logging.getLogger("cloudsched.execution")
ACTOR = "worker"


@dataclass(frozen=True)
class ExecConfig:
    launch_via: str = "local"  # local | fake | catalog (each offer's own provider adapter)
    price_tolerance: float = 0.05  # refuse a launch whose live price is above approved x (1 + this)
    recovery_tolerance: float = 0.25  # an automatic re-placement may cost this much more than approved
    lease_s: float = 120.0  # longer than a provider call with its timeout
    max_tries: int = 5  # provider calls per attempt before it fails
    max_attempts: int = 4  # re-placements per unit before the job fails
    restart_overhead_h: float = 0.5  # work lost per preemption (the cost model's assumption)
    launch_margin_h: float = 0.25  # a re-placement ends this long before the deadline (dispatch period, boot)
    orphan_grace_s: float = 600.0
    gone_grace_s: float = 300.0  # a launched instance the provider does not know yet (eventual consistency)


class Retry(Exception):
    """The launch hit a transient provider error: call again after `delay_s` (the task retries)."""

    def __init__(self, uid: str, error: ProviderError, tries: int):
        super().__init__(f"{uid}: {error} (try {tries})")
        self.uid, self.error, self.tries = uid, error, tries


@dataclass
class Executor:
    store: Store
    launches: LaunchStore
    providers: Callable[[str], Provider]
    catalog: Catalog
    config: ExecConfig = field(default_factory=ExecConfig)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    probe: Callable[[str], None] = lambda stage: None  # fault tests pause or die at a named stage
    # this thread's track pass, if one runs (the in-process worker runs tasks in threads on one executor)
    _pass: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, limit: int = 5000) -> list[str]:
        """Units due now (and those whose launch lease expired): the caller sends one launch each."""
        return self.launches.claim_due(self.clock().timestamp(), self.config.lease_s, limit)

    # -- launch ----------------------------------------------------------------------------

    def launch(self, uid: str) -> str:
        """Launch one due unit; returns what happened. Raises `Retry` on a transient provider error."""
        token = self.launches.lease(uid, self.config.lease_s)
        if token is None:
            return "leased-elsewhere"
        try:
            unit = self._unit_or_none(uid)  # read under the lease
            if unit is None or unit.current.state not in ("queued", "launching"):
                self.launches.release_inflight(uid)
                return "unknown" if unit is None else "done-already"
            return self._launch_leased(unit)
        finally:
            self.launches.release(uid, token)

    def _launch_leased(self, unit: LaunchUnit) -> str:
        job = self.store.get_job(unit.job_id)
        if job.state in TERMINAL_JOB_STATES or job.state in (JobState.PENDING, JobState.PLANNED, JobState.UNPLACED):
            self._finish(unit, "refused", reason="JobNotLaunchable", message=f"job is {job.state.value}")
            return "refused"
        done, never = self._predecessors(job)
        if never:  # Slurm's DependencyNeverSatisfied, cancelled as with --kill-on-invalid-dep
            self._refuse(unit, job, "DependencyFailed", never, to=JobState.CANCELLED)
            return "refused"
        if not done:
            self.launches.update(unit.id, lambda u: u, current=unit, due=self.clock().timestamp() + 60, done=True)
            return "waiting-for-after"
        cur = unit.current
        provider = self.providers(cur.adapter)
        if cur.state == "queued":
            refusal = self._recheck(job, unit, provider)
            if refusal:
                self._refuse(unit, job, *refusal)
                return "refused"
        self._move_job(job.id, JobState.LAUNCHING, reason="Launching", job=job)
        unit = self.launches.update(unit.id, lambda u: u.with_current(state="launching", tries=u.current.tries + 1),
                                    current=unit)
        self.probe("before-provider")
        try:
            handle = provider.launch(self._request(job, unit), unit.current.key)
        except ProviderError as exc:
            return self._launch_failed(unit, job, exc)
        self.probe("after-provider")
        self._record_handle(unit, unit.current.attempt, handle)
        return "launched"

    def _record_handle(self, unit: LaunchUnit, attempt: int, handle: Handle) -> LaunchUnit | None:
        now = self.clock()

        def change(u: LaunchUnit) -> LaunchUnit | None:
            if u.current.attempt != attempt or u.current.state not in ("queued", "launching"):
                return None
            return u.with_current(state="launched", handle=handle.to_json(), launched_at=now, phase=Phase.PENDING.value)

        adapter = unit.current.adapter
        unit = self.launches.update(unit.id, change, current=unit, track=adapter, undue=True, done=True)
        if unit is not None:
            self._event(unit, "launch.started", provider=adapter, handle=handle.id, offer=unit.current.offer_id,
                        price_per_node_hour=unit.current.price_per_node_hour, attempt=attempt)
        return unit

    def _recheck(self, job: JobRecord, unit: LaunchUnit, provider: Provider) -> tuple[str, str] | None:
        """(reason, message) if the offer no longer holds: price, capacity or compliance."""
        cur = unit.current
        try:
            offer = self.catalog.offer(cur.offer_id)
        except KeyError:
            return "OfferGone", f"offer {cur.offer_id} is no longer in the catalog"
        try:
            quote = provider.quote(offer)
        except ProviderError as exc:
            if exc.retryable:
                return None  # no live price now: the approved one stands, the launch itself will tell
            return exc.code, str(exc)
        ceiling = cur.price_per_node_hour * (1 + self.config.price_tolerance)
        if quote.price_per_node_hour > ceiling + 1e-9:
            return "PriceRose", (f"{offer.id} costs ${quote.price_per_node_hour:.2f}/node-h now, approved "
                                 f"${cur.price_per_node_hour:.2f} (+{self.config.price_tolerance:.0%} tolerance)")
        if not quote.available or (quote.capacity_gpus is not None and quote.capacity_gpus < cur.gpus):
            return "CapacityGone", f"{offer.id} has no capacity for {cur.gpus} GPUs now"
        if quote.certifications is not None:
            missing = sorted(set(job.spec.compliance) - set(quote.certifications))
            if missing:
                return "ComplianceChanged", f"{offer.id} no longer certifies {', '.join(missing)}"
        return None

    def _launch_failed(self, unit: LaunchUnit, job: JobRecord, exc: ProviderError) -> str:
        if exc.retryable and unit.current.tries < self.config.max_tries:
            raise Retry(unit.id, exc, unit.current.tries)
        self._refuse(unit, job, exc.code if not exc.retryable else "LaunchFailed", str(exc))
        return "refused"

    def _refuse(self, unit: LaunchUnit, job: JobRecord, reason: str, message: str,
                to: JobState = JobState.PENDING) -> None:
        """The job goes back for re-planning (or to `to`) with the reason; its other live units are cancelled."""
        self._finish(unit, "refused", reason=reason, message=message)
        for other in self.launches.of_job(job.id):
            if other.id != unit.id:
                self._cancel_unit(other, reason)
        self._move_job(job.id, to, reason=reason, message=message)
        self._event(unit, "launch.refused", reason=reason, message=message)

    def _finish(self, unit: LaunchUnit, state: str, **changes) -> LaunchUnit | None:
        finished = self.launches.update(unit.id, lambda u: u.with_current(state=state, **changes), current=unit,
                                        undue=True, done=True, untrack=unit.current.adapter)
        live = getattr(self._pass, "live", None)
        if live is not None:
            live.ended(unit.id)
        return finished

    def _request(self, job: JobRecord, unit: LaunchUnit) -> LaunchRequest:
        cur, spec = unit.current, job.spec
        return LaunchRequest(job_id=job.id, team=job.team, name=job.name, offer=self.catalog.offer(cur.offer_id),
                             nodes=cur.nodes, gpus=cur.gpus, run_hours=cur.run_hours, kind=spec.kind.value,
                             image=spec.launch.image, command=spec.launch.command, env=dict(spec.launch.env),
                             approved_price_per_node_hour=cur.price_per_node_hour, attempt=cur.attempt)

    def _predecessors(self, job: JobRecord) -> tuple[bool, str | None]:
        """Whether every job `job` comes `after` has succeeded, and if one never will, why.

        A name means the team's live job holding it, else its newest ended one (`Store.jobs_named`): a
        resubmitted predecessor is waited for, not an old run of the same name. One that ended without
        success (failed, cancelled) means `job` can never start. A name the store does not know does
        not hold `job` back.
        """
        done = True
        for name, before in self.store.jobs_named(job.team, job.spec.after).items():
            if before is None or before.state is JobState.SUCCEEDED:
                continue
            never = never_runs_after(name, before)
            if never:
                return False, never
            done = False
        return done, None

    # -- tracking --------------------------------------------------------------------------

    def track(self, adapter: str) -> dict[str, int]:
        """Poll one adapter for every unit it runs (one `statuses` call) and move records forward.

        The re-placements of one pass share one read of the live units' GPUs (`_LiveGpus`): a spot
        reclaim of many instances at once re-places each against the same read, less what ended since.
        """
        self._pass.live = _LiveGpus(self.launches)
        try:
            return self._track(adapter)
        finally:
            self._pass.live = None

    def _track(self, adapter: str) -> dict[str, int]:
        units = [u for u in self.launches.get_many(self.launches.tracked(adapter)) if u.current.handle]
        if not units:
            return {}
        jobs = self.store.get_jobs({u.job_id for u in units})
        cancelled = {job_id for job_id, job in jobs.items() if job.state is JobState.CANCELLED}
        counts: dict[str, int] = {}
        for unit in [u for u in units if u.job_id in cancelled]:
            self._cancel_unit(unit, "Cancelled")
            counts["cancelled"] = counts.get("cancelled", 0) + 1
        units = [u for u in units if u.job_id not in cancelled]
        statuses = self.providers(adapter).statuses(Handle.from_json(u.current.handle) for u in units)
        for unit in units:
            status = statuses.get(unit.current.handle["id"], Status(Phase.GONE))
            if status.phase.value == unit.current.phase and not status.phase.ended:
                continue
            outcome = self._observe(unit, status)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _observe(self, unit: LaunchUnit, status: Status) -> str:
        now, cur = self.clock(), unit.current
        if status.phase is Phase.GONE and cur.launched_at and now - cur.launched_at < timedelta(
                seconds=self.config.gone_grace_s):
            return "not-visible-yet"
        if status.phase in (Phase.PENDING, Phase.RUNNING):
            running_at = cur.running_at or (status.started_at or now if status.phase is Phase.RUNNING else None)
            self.launches.update(unit.id, lambda u: u.with_current(phase=status.phase.value, running_at=running_at),
                                 current=unit)
            if status.phase is Phase.RUNNING:
                self._sync_job(unit.job_id)
            return status.phase.value
        ended = self._finish(unit, "ended", phase=status.phase.value, ended_at=status.ended_at or now,
                             running_at=cur.running_at or status.started_at, billed_usd=status.billed_usd,
                             cost=self._cost(cur, status, now), message=status.message or None)
        self._event(ended, f"launch.{status.phase.value}", cost=ended.current.cost, exit_code=status.exit_code,
                    message=status.message)
        if status.phase in (Phase.PREEMPTED, Phase.FAILED, Phase.GONE):
            return self.recover(ended, status.phase.value)
        self._sync_job(unit.job_id)
        return status.phase.value

    def _cost(self, cur: Attempt, status: Status, now: datetime) -> float:
        if status.billed_usd is not None:
            return round(status.billed_usd, 2)
        start = status.started_at or cur.running_at or cur.launched_at or now
        end = status.ended_at or now
        hours = max(0.0, (end - start).total_seconds() / 3600)
        return round(hours * cur.price_per_node_hour * cur.nodes, 2)

    # -- recovery --------------------------------------------------------------------------

    def recover(self, unit: LaunchUnit, why: str) -> str:
        """Re-place an ended unit with the time left, inside the approved envelope, or send it to ops."""
        job = self.store.get_job(unit.job_id)
        if job.state in TERMINAL_JOB_STATES:
            return "job-ended"
        if len(unit.attempts) >= self.config.max_attempts:
            self._move_job(job.id, JobState.FAILED, reason="TooManyAttempts",
                           message=f"{len(unit.attempts)} attempts; the last one {why}")
            for other in self.launches.of_job(job.id):
                self._cancel_unit(other, "JobFailed")
            return "failed"
        self._move_job(job.id, JobState.PREEMPTED, reason=why.capitalize(), message=f"unit {unit.id} {why}")
        choice = recovery.replace(self.catalog, job, unit, self.clock(), self.config, self._busy_gpus())
        if isinstance(choice, str):  # no placement inside the envelope: ops decide at the next plan
            for other in self.launches.of_job(job.id):
                self._cancel_unit(other, "WaitingForOps")
            self._move_job(job.id, JobState.PENDING, reason="RecoveryNeedsReview", message=choice)
            self._event(unit, "launch.recovery_refused", message=choice)
            return "needs-review"
        attempt = choice.model_copy(update={"attempt": len(unit.attempts) + 1,
                                            "key": f"{unit.id}.{len(unit.attempts) + 1}",
                                            "adapter": adapter_for(choice.provider, self.config.launch_via)})
        self.launches.update(unit.id, lambda u: u.model_copy(update={"attempts": [*u.attempts, attempt]})
                             if len(u.attempts) == attempt.attempt - 1 else None, due=attempt.start.timestamp())
        self._event(unit, "launch.replaced", offer=attempt.offer_id, market=attempt.market, why=why,
                    price_per_node_hour=attempt.price_per_node_hour)
        return "replaced"

    def _busy_gpus(self) -> dict[str, int]:
        return (getattr(self._pass, "live", None) or _LiveGpus(self.launches)).by_offer()

    # -- reconcile and cancel --------------------------------------------------------------

    def reconcile(self, adapter: str) -> dict[str, int]:
        """Adopt our instances whose handle was never recorded; terminate orphans after the grace period."""
        provider, now = self.providers(adapter), self.clock()
        counts = {"adopted": 0, "terminated": 0, "orphans": 0}
        seen = set()
        for owned in provider.list_ours():
            seen.add(owned.idempotency_key)
            parsed = parse_key(owned.idempotency_key)
            unit = self._unit_or_none(parsed[0]) if parsed else None
            if unit and unit.current.attempt == parsed[1] and unit.current.state in ("queued", "launching"):
                if self._record_handle(unit, parsed[1], owned.handle):
                    counts["adopted"] += 1
                self.launches.orphan_gone(adapter, [owned.idempotency_key])
                continue
            if unit and unit.current.attempt == parsed[1] and unit.current.state == "launched":
                continue  # ours and tracked
            first = self.launches.orphan_seen(adapter, owned.idempotency_key, now.timestamp())
            counts["orphans"] += 1
            if now.timestamp() - first >= self.config.orphan_grace_s:
                provider.cancel(owned.handle)
                self.launches.orphan_gone(adapter, [owned.idempotency_key])
                counts["terminated"] += 1
        self.launches.orphan_gone(adapter, [k for k in self.launches.orphans(adapter) if k not in seen])
        return counts

    def _unit_or_none(self, uid: str) -> LaunchUnit | None:
        try:
            return self.launches.get(uid)
        except NotFound:
            return None

    def cancel_job(self, job_id: str) -> int:
        """Terminate every live instance of a (cancelled) job; returns how many units were stopped."""
        return sum(self._cancel_unit(u, "Cancelled") for u in self.launches.of_job(job_id))

    def _cancel_unit(self, unit: LaunchUnit, reason: str) -> bool:
        cur = unit.current
        if cur.state in ("ended", "refused"):
            return False
        if cur.handle:
            self.providers(cur.adapter).cancel(Handle.from_json(cur.handle))
        now = self.clock()
        self._finish(unit, "ended", phase=Phase.CANCELLED.value, ended_at=now, reason=reason,
                     cost=self._cost(cur, Status(Phase.CANCELLED, ended_at=now), now) if cur.handle else 0.0)
        return True

    # -- job state from its units ----------------------------------------------------------

    def _sync_job(self, job_id: str) -> None:
        units = self.launches.of_job(job_id)
        live = [u for u in units if u.current.state != "refused"]
        if live and all(u.current.phase == Phase.SUCCEEDED.value for u in live):
            self._move_job(job_id, JobState.SUCCEEDED, reason="Succeeded")
            self._plan_progress(live[0].plan_id)
        elif any(u.current.phase == Phase.RUNNING.value for u in live):
            self._move_job(job_id, JobState.RUNNING, reason="Running")

    def _plan_progress(self, plan_id: str) -> None:
        try:
            state = self.store.get_plan_info(plan_id).state
            if state is PlanState.APPROVED:
                state = self.store.set_plan_state(plan_id, PlanState.EXECUTING, expected_state=PlanState.APPROVED,
                                                  actor=ACTOR).state
            if state is PlanState.EXECUTING and self.store.plan_jobs_ended(plan_id):
                self.store.set_plan_state(plan_id, PlanState.DONE, expected_state=PlanState.EXECUTING, actor=ACTOR)
        except Conflict as exc:  # another worker moved it first
            log.debug("plan %s progress: %s", plan_id, exc)

    def _move_job(self, job_id: str, target: JobState, reason: str | None = None, message: str | None = None,
                  job: JobRecord | None = None) -> None:
        """Move a job to `target` along the lifecycle's shortest path (e.g. launching -> running -> succeeded)."""
        for _ in range(3):
            job = job or self.store.get_job(job_id)
            path = lifecycle_path(job.state, target)
            if not path:
                return
            try:
                for step in path:
                    self.store.transition_job(job_id, step, reason=reason, message=message, actor=ACTOR)
                return
            except TransitionNotAllowed:
                job = None  # moved meanwhile: read it again and re-plan the path

    def _event(self, unit: LaunchUnit | None, kind: str, **data) -> None:
        if unit is None:
            return
        self.store.append_event(kind, actor=ACTOR, job_id=unit.job_id, plan_id=unit.plan_id,
                                data={"unit": unit.id, **{k: v for k, v in data.items() if v is not None}})


def config_from(settings) -> ExecConfig:
    return ExecConfig(launch_via=settings.launch_via, price_tolerance=settings.price_tolerance_pct / 100,
                      recovery_tolerance=settings.recovery_tolerance_pct / 100, lease_s=settings.launch_lease_s)


class _LiveGpus:
    """The GPUs of the units with a live instance, by offer: read at the first need, then kept up to date
    with the units that end (one read per track pass instead of one per re-placement)."""

    def __init__(self, launches: LaunchStore):
        self.launches = launches
        self._units: dict[str, tuple[str, int]] | None = None  # unit id -> (offer id, GPUs)
        self._busy: Counter[str] = Counter()  # offer id -> GPUs of those units

    def by_offer(self) -> Mapping[str, int]:
        if self._units is None:
            self._units = {u.id: (u.current.offer_id, u.current.gpus) for adapter in self.launches.tracked_adapters()
                           for u in self.launches.get_many(self.launches.tracked(adapter))}
            for offer_id, gpus in self._units.values():
                self._busy[offer_id] += gpus
        return self._busy

    def ended(self, unit_id: str) -> None:
        if self._units is not None and (gone := self._units.pop(unit_id, None)) is not None:
            self._busy[gone[0]] -= gone[1]
