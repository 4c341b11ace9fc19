"""The store: jobs, plans, decisions, events, API keys and run locks in Redis (one repository).

Every change is one Lua script, so it is atomic and costs one round trip: the record, its
indexes and its event (`cs:events` and the record's own stream) are written together or
not at all. Changes are compare-and-set — a job on its `version`, a plan on its `state` —
so of two concurrent writers exactly one wins and the other gets a `Conflict`. Each
change carries a random `op` token: a client that retries a script whose reply was lost
finds its own token and reports success instead of a conflict.

The key layout and the scripts are in `scheduler.store_keys`.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import redis
from pydantic import ValidationError

from scheduler import records
from scheduler import store_keys as scripts
from scheduler.errors import (
    AlreadyExists,
    IdempotencyConflict,
    InvalidArgument,
    NameTaken,
    NotFound,
    StateConflict,
    StoreUnavailable,
    TransitionNotAllowed,
    VersionConflict,
)
from scheduler.launches import LaunchStore
from scheduler.lifecycle import (
    PLANNABLE_JOB_STATES,
    TERMINAL_JOB_STATES,
    IllegalTransition,
    JobState,
    PlanState,
    transition,
)
from scheduler.models import JobSpec, PlanDocument
from scheduler.records import ApiKeyInfo, Event, JobRecord, OfferRule, PlanInfo, PlanRecord, Principal, Role
from scheduler.redis_server import connect
from scheduler.settings import Settings
from scheduler.store_keys import Keys, sha256

IDEMPOTENCY_TTL_S = 24 * 3600
MAX_PAGE = 1000
_RETRIES = 20  # optimistic retries of a transition when the caller gave no expected_version
_STREAM_ID = re.compile(r"\d+(-\d+)?")

_PLAN_FIELDS = ("info", "state", "version", "decision", "updated_at")


def _unavailable_to_error(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # BusyLoadingError too
            raise StoreUnavailable(f"the store cannot be reached: {exc}") from exc

    return wrapper


def _translate_redis_errors(cls: type) -> type:
    """In every public method, Redis connection trouble becomes `StoreUnavailable` (retryable: 503)."""
    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, _unavailable_to_error(member))
    return cls


@_translate_redis_errors
class Store:
    """cloudsched's records in Redis. The client must decode responses (`decode_responses=True`)."""

    def __init__(self, client: redis.Redis, *, prefix: str = "cs:", clock: Callable[[], datetime] | None = None):
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("Store needs a Redis client with decode_responses=True")
        self._r = client
        self.keys = Keys(prefix)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._create_job = client.register_script(scripts.CREATE_JOB)
        self._transition_job = client.register_script(scripts.TRANSITION_JOB)
        self._save_plan = client.register_script(scripts.SAVE_PLAN)
        self._set_plan_state = client.register_script(scripts.SET_PLAN_STATE)
        self._release_lock = client.register_script(scripts.RELEASE_LOCK)
        self._refresh_lock = client.register_script(scripts.REFRESH_LOCK)
        self._append_event = client.register_script(scripts.APPEND_EVENT)
        self._count_in_window = client.register_script(scripts.COUNT_IN_WINDOW)

    @property
    def client(self) -> redis.Redis:
        """The Redis client (for parts that keep their own keys under `keys.p`, e.g. rate limits)."""
        return self._r

    @functools.cached_property
    def launches(self) -> LaunchStore:
        """The launch records on the same Redis and prefix (`scheduler.launches`)."""
        return LaunchStore(self._r, self.keys.p)

    def ping(self) -> bool:
        return bool(self._r.ping())

    # -- jobs ---------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, submitted_by: str, idempotency_key: str | None = None,
                   body_hash: str | None = None) -> tuple[JobRecord, bool]:
        """Store a new pending job; `(job, created)`. Answers only once Redis has it.

        A repeated `idempotency_key` of the same principal returns the original job with
        `created=False` if the body hash matches and raises `IdempotencyConflict` otherwise
        (keys live 24 h). The body hash defaults to a hash of the normalised spec.
        """
        job, keys, args = self.create_job_call(spec, submitted_by, idempotency_key, body_hash)
        outcome, job_id = self._create_job(keys=keys, args=args)
        if created_job_id(outcome, job_id, job, idempotency_key) is None:
            return job, True
        return self.get_job(job_id), False

    def create_job_call(self, spec: JobSpec, submitted_by: str, idempotency_key: str | None = None,
                        body_hash: str | None = None) -> tuple[JobRecord, list[str], list]:
        """The new record, and the keys and arguments of the `CREATE_JOB` script that stores it."""
        now = self._clock()
        job = JobRecord(id=records.new_id("job"), spec=spec, team=spec.team, state=JobState.PENDING, version=1,
                        created_at=now, updated_at=now, submitted_by=submitted_by)
        body_hash = body_hash or sha256(spec.model_dump_json())
        k = self.keys
        keys = [k.job(job.id), k.job_name(job.team, spec.name), k.idempotency(submitted_by, idempotency_key or ""),
                k.seq("jobs"), *k.job_indexes(job.team, job.state), k.events, k.job_events(job.id)]
        event = self._event_args("job.submitted", submitted_by, now, job_id=job.id,
                                 data={"name": spec.name, "team": job.team, "state": job.state.value})
        args = [job.id, job.model_dump_json(), job.state.value, job.team, "1" if idempotency_key else "0",
                body_hash, IDEMPOTENCY_TTL_S, *event]
        return job, keys, args

    def get_job(self, job_id: str) -> JobRecord:
        return read_job(self._r.hget(self.keys.job(job_id), "json"), job_id)

    def get_jobs(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The jobs of `job_ids` that exist, by id (one round trip)."""
        return {job.id: job for job in self._load_jobs(list(job_ids))}

    def list_jobs(self, team: str | None = None, state: JobState | str | None = None, cursor: str | None = None,
                  limit: int = 50) -> tuple[list[JobRecord], str | None]:
        """Newest first; pass the returned cursor back for the next page (None: no more)."""
        wanted = _parse_enum(JobState, state, "state")
        ids, next_cursor = self._page(self.keys.job_index(team, wanted), cursor, limit)
        # A job may have changed state between the index read and the record read.
        jobs = [job for job in self._load_jobs(ids) if wanted is None or job.state == wanted]
        return jobs, next_cursor

    def jobs_named(self, team: str, names: Iterable[str]) -> dict[str, JobRecord | None]:
        """The job each name means in `team` now: the live job holding the name, else the newest ended job
        of that name among the team's latest 1,000 (an ended job releases its name), else None.

        One round trip for the holders, one read of the team's latest jobs for the names none holds.
        """
        names = list(dict.fromkeys(names))
        holders = self._r.mget([self.keys.job_name(team, name) for name in names]) if names else []
        live = self.get_jobs(h for h in holders if h)  # a holder released in between is simply missing
        found = {name: live.get(holder) if holder else None for name, holder in zip(names, holders)}
        unheld = {name for name, job in found.items() if job is None}
        if unheld:
            for job in reversed(self.list_jobs(team=team, limit=MAX_PAGE)[0]):  # oldest first: the newest wins
                if job.name in unheld:
                    found[job.name] = job
        return found

    def pending_jobs(self) -> list[JobRecord]:
        """Every pending job, oldest first: the input of a plan run."""
        ids = self._r.zrange(self.keys.job_index(None, JobState.PENDING), 0, -1)
        return [job for job in self._load_jobs(ids) if job.state is JobState.PENDING]

    def job_counts(self) -> dict[JobState, int]:
        pipe = self._r.pipeline(transaction=False)
        for state in JobState:
            pipe.zcard(self.keys.job_index(None, state))
        return dict(zip(JobState, pipe.execute()))

    def transition_job(self, job_id: str, target: JobState | str, *, expected_version: int | None = None,
                       reason: str | None = None, message: str | None = None, plan_id: str | None = None,
                       actor: str = "system") -> JobRecord:
        """Move a job along its lifecycle; returns the new record.

        With `expected_version` the change applies only to that version (else `VersionConflict`);
        without it, a concurrent change is re-read and the transition retried. `reason` and
        `message` replace the previous ones; `plan_id` is kept unless given, and cleared when
        the job goes back to pending.
        """

        def change(job: JobRecord) -> tuple[JobRecord, str, dict]:
            changed = self._next_job(job, target, reason, message, plan_id)
            data = {"from": job.state.value, "to": changed.state.value, "version": changed.version,
                    "reason": changed.reason, "message": changed.message, "plan_id": changed.plan_id}
            return changed, f"job.{changed.state.value}", {k: v for k, v in data.items() if v is not None}

        return self._change_job(job_id, change, actor, expected_version)

    def set_offer_rule(self, job_id: str, rule: OfferRule | None, *, actor: str = "system") -> JobRecord:
        """Set (or with None, lift) ops' offer rule of a job not yet approved: a new version and a
        `job.offer_rule` event; a concurrent change is re-read and the rule set again."""
        rule = None if rule is None or rule.empty else rule

        def change(job: JobRecord) -> tuple[JobRecord, str, dict]:
            if job.state not in PLANNABLE_JOB_STATES:
                raise StateConflict("job", job.id, expected=" or ".join(s.value for s in PLANNABLE_JOB_STATES),
                                    actual=job.state.value, message=f"state: job {job.id!r} is {job.state.value!r}: "
                                    "an offer rule applies to a job not yet approved")
            changed = job.model_copy(update={"offer_rule": rule, "version": job.version + 1,
                                             "updated_at": self._clock()})
            return changed, "job.offer_rule", {"version": changed.version,
                                               **(rule.model_dump(exclude_defaults=True) if rule else {})}

        return self._change_job(job_id, change, actor)

    def _change_job(self, job_id: str, change: Callable[[JobRecord], tuple[JobRecord, str, dict]], actor: str,
                    expected_version: int | None = None) -> JobRecord:
        """Write `change(job)` (the new record, its event's type and data) with TRANSITION_JOB: the record,
        its state indexes and the event at once. With `expected_version` only that version changes (else
        `VersionConflict`); without it a concurrent change is re-read and `change` applied again."""
        for _ in range(_RETRIES):
            job = self.get_job(job_id)
            if expected_version is not None and job.version != expected_version:
                raise VersionConflict("job", job_id, expected_version, job.version)
            changed, event_type, data = change(job)
            event = self._event_args(event_type, actor, changed.updated_at, job_id=job.id, data=data)
            release = "1" if changed.state in TERMINAL_JOB_STATES else "0"
            outcome, version = self._transition_job(
                keys=self._transition_keys(job, changed),
                args=[job.id, job.version, changed.model_dump_json(), changed.state.value, uuid.uuid4().hex, release,
                      *event])
            if outcome == "ok":
                return changed
            if outcome == "missing":
                raise NotFound("job", job_id)
            if expected_version is not None:
                raise VersionConflict("job", job_id, expected_version, int(version))
        raise VersionConflict("job", job_id, job.version, int(version))

    def _next_job(self, job: JobRecord, target: JobState | str, reason: str | None, message: str | None,
                  plan_id: str | None) -> JobRecord:
        try:
            state = transition(job.state, target)
        except IllegalTransition:
            raise TransitionNotAllowed("job", job.id, job.state.value, str(target)) from None
        except ValueError:
            raise InvalidArgument("state", f"{target!r} is not a job state") from None
        if plan_id is None and state is not JobState.PENDING:
            plan_id = job.plan_id
        return job.model_copy(update={"state": state, "version": job.version + 1, "updated_at": self._clock(),
                                      "reason": reason, "message": message, "plan_id": plan_id})

    def _transition_keys(self, job: JobRecord, changed: JobRecord) -> list[str]:
        k = self.keys
        return [k.job(job.id), k.job_name(job.team, job.name), k.job_index(None, job.state),
                k.job_index(job.team, job.state), k.job_index(None, changed.state),
                k.job_index(job.team, changed.state), k.events, k.job_events(job.id)]

    def _load_jobs(self, ids: list[str]) -> list[JobRecord]:
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "json")
        return [JobRecord.model_validate_json(raw) for raw in pipe.execute() if raw is not None]

    # -- plans --------------------------------------------------------------------------

    def save_plan(self, doc: PlanDocument, job_versions: dict[str, int | str], *, actor: str | None = None,
                  inputs: dict[str, Any] | None = None) -> PlanInfo:
        """Store a new plan document (immutable: a second save of the id raises `AlreadyExists`).

        `inputs` (the plan's fingerprinted inputs) is kept beside it to say what changed
        when the plan turns stale.
        """
        state = _parse_enum(PlanState, doc.status, "status")
        now = self._clock()
        info = doc.model_dump(include={"plan_id", "created_at", "created_by", "horizon", "fingerprint", "summary"})
        k = self.keys
        event = self._event_args("plan.created", actor or doc.created_by, now, plan_id=doc.plan_id,
                                 data={"state": state.value, "fingerprint": doc.fingerprint, "jobs": len(job_versions)})
        args = [doc.plan_id, doc.model_dump_json(), json.dumps(info), json.dumps(job_versions), state.value,
                now.isoformat(), uuid.uuid4().hex, *event]
        if not self._save_plan(keys=[k.plan(doc.plan_id), k.seq("plans"), k.plans, k.events,
                                     k.plan_events(doc.plan_id)], args=args):
            raise AlreadyExists("plan", doc.plan_id)
        if inputs is not None:
            self._r.hset(k.plan(doc.plan_id), "inputs", json.dumps(inputs))
        return self.get_plan_info(doc.plan_id)

    def get_plan(self, plan_id: str) -> PlanRecord:
        fields = self._r.hmget(self.keys.plan(plan_id), *_PLAN_FIELDS, "document", "job_versions", "inputs")
        if fields[0] is None:
            raise NotFound("plan", plan_id)
        info = _plan_info(fields[:len(_PLAN_FIELDS)])
        return PlanRecord(**dict(info), document=PlanDocument.model_validate_json(fields[-3]),
                          job_versions=json.loads(fields[-2]), inputs=json.loads(fields[-1]) if fields[-1] else None)

    def plan_jobs_ended(self, plan_id: str) -> bool:
        """Whether every job the plan placed has reached a terminal state.

        Asked at each job's success: it reads the placed ids from the document's JSON and each job's
        `state` field, without validating the document or any job record, and stops at the first chunk
        with a live job (`benchmarks/workers.py` times it against reading the whole plan).
        """
        raw = self._r.hget(self.keys.plan(plan_id), "document")
        if raw is None:
            raise NotFound("plan", plan_id)
        ids = [assignment["job_id"] for assignment in json.loads(raw)["assignments"]]
        ended = {state.value for state in TERMINAL_JOB_STATES}
        for end in range(len(ids), 0, -200):  # in chunks, from the end: a live job ends the check early
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids[max(0, end - 200):end]:
                pipe.hget(self.keys.job(job_id), "state")
            if not all(state in ended for state in pipe.execute() if state is not None):
                return False
        return True

    def get_plan_info(self, plan_id: str) -> PlanInfo:
        """The plan without its document (cheap for large plans)."""
        fields = self._r.hmget(self.keys.plan(plan_id), *_PLAN_FIELDS)
        if fields[0] is None:
            raise NotFound("plan", plan_id)
        return _plan_info(fields)

    def list_plans(self, limit: int = 20, cursor: str | None = None) -> tuple[list[PlanInfo], str | None]:
        """Newest first, without documents; pass the returned cursor back for the next page."""
        ids, next_cursor = self._page(self.keys.plans, cursor, limit)
        pipe = self._r.pipeline(transaction=False)
        for plan_id in ids:
            pipe.hmget(self.keys.plan(plan_id), *_PLAN_FIELDS)
        return [_plan_info(fields) for fields in pipe.execute() if fields[0] is not None], next_cursor

    def set_plan_state(self, plan_id: str, target: PlanState | str, *, expected_state: PlanState | str,
                       decision: dict[str, Any] | None = None, actor: str = "system") -> PlanInfo:
        """Compare-and-set a plan's state: applies only if it is `expected_state` (else `StateConflict`).

        Of two concurrent approvals exactly one wins. `decision` (who, when, comment,
        fingerprint...) is stored with the plan and written to its event.
        """
        expected = _parse_enum(PlanState, expected_state, "expected_state")
        try:
            target = transition(expected, target)
        except IllegalTransition:
            raise TransitionNotAllowed("plan", plan_id, expected.value, str(target)) from None
        except ValueError:
            raise InvalidArgument("state", f"{target!r} is not a plan state") from None
        now = self._clock()
        data = {"from": expected.value, "to": target.value, "decision": decision}
        event = self._event_args(f"plan.{target.value}", actor, now, plan_id=plan_id, data=data)
        k = self.keys
        args = [plan_id, expected.value, target.value, json.dumps(decision) if decision is not None else "",
                now.isoformat(), uuid.uuid4().hex, *event]
        outcome, actual = self._set_plan_state(keys=[k.plan(plan_id), k.latest_approved, k.events,
                                                     k.plan_events(plan_id)], args=args)
        if outcome == "missing":
            raise NotFound("plan", plan_id)
        if outcome == "conflict":
            raise StateConflict("plan", plan_id, expected.value, actual)
        return self.get_plan_info(plan_id)

    def latest_approved_plan_id(self) -> str | None:
        return self._r.get(self.keys.latest_approved)

    # -- events -------------------------------------------------------------------------

    def append_event(self, type: str, *, actor: str, job_id: str | None = None, plan_id: str | None = None,
                     data: dict[str, Any] | None = None) -> Event:
        """Log something that is not a state change of a record here (a launch attempt, a key use...)."""
        fields = self._event_args(type, actor, self._clock(), job_id=job_id, plan_id=plan_id, data=data)
        streams = [self.keys.events, *([self.keys.job_events(job_id)] if job_id else []),
                   *([self.keys.plan_events(plan_id)] if plan_id else [])]
        event_id = self._append_event(keys=streams, args=fields)
        return _event(event_id, dict(zip(fields[::2], fields[1::2])))

    def events(self, since: str | None = None, limit: int = 100) -> list[Event]:
        """The global log, oldest first, after event id `since` (exclusive)."""
        return self._read_stream(self.keys.events, since, limit)

    def events_for_job(self, job_id: str, since: str | None = None, limit: int = 1000) -> list[Event]:
        return self._read_stream(self.keys.job_events(job_id), since, limit)

    def events_for_plan(self, plan_id: str, since: str | None = None, limit: int = 1000) -> list[Event]:
        return self._read_stream(self.keys.plan_events(plan_id), since, limit)

    def _read_stream(self, key: str, since: str | None, limit: int) -> list[Event]:
        if since is not None and not _STREAM_ID.fullmatch(since):
            raise InvalidArgument("since", f"{since!r} is not an event id like '1700000000000-0'")
        count = _check_limit(limit)
        return read_events(self._r.xrange(key, min="-" if since is None else f"({since}", max="+", count=count))

    @staticmethod
    def _event_args(type: str, actor: str, at: datetime, *, job_id: str | None = None,
                    plan_id: str | None = None, data: dict[str, Any] | None = None) -> list[str]:
        fields = {"type": type, "job_id": job_id, "plan_id": plan_id, "actor": actor, "at": at.isoformat(),
                  "data": json.dumps(data or {}, default=str)}
        return [item for key, value in fields.items() if value is not None for item in (key, value)]

    # -- API keys -----------------------------------------------------------------------

    def create_api_key(self, role: Role, team: str | None, name: str, *, actor: str = "system"
                       ) -> tuple[str, Principal]:
        """A new key for a principal; the plain key is returned once and only its hash is kept."""
        principal = _principal(name=name, role=role, team=team)
        plain = "csk_" + secrets.token_urlsafe(32)
        digest = sha256(plain)
        info = ApiKeyInfo(key_id=scripts.key_id(plain), prefix=plain[:10], principal=principal,
                          created_at=self._clock())
        event = self._event_args("apikey.created", actor, info.created_at,
                                 data={"key_id": info.key_id, "prefix": info.prefix, **principal.model_dump()})
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self.keys.apikey(digest), info.model_dump_json())
        pipe.hset(self.keys.apikeys, info.key_id, digest)
        pipe.xadd(self.keys.events, dict(zip(event[::2], event[1::2])))
        pipe.execute()
        return plain, principal

    def principal_for_key(self, plain: str) -> Principal | None:
        return read_principal(self._r.get(self.keys.apikey(sha256(plain))) if plain else None)

    def principal_for_key_id(self, key_id: str) -> Principal | None:
        """The principal of a live key, by the key's id (None once it is revoked)."""
        digest = self._r.hget(self.keys.apikeys, key_id)
        return read_principal(self._r.get(self.keys.apikey(digest)) if digest else None)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        digests = self._r.hvals(self.keys.apikeys)
        raws = self._r.mget([self.keys.apikey(d) for d in digests]) if digests else []
        return sorted((ApiKeyInfo.model_validate_json(r) for r in raws if r), key=lambda info: info.created_at)

    def revoke_api_key(self, key_id: str, *, actor: str = "system") -> bool:
        digest = self._r.hget(self.keys.apikeys, key_id)
        if digest is None:
            return False
        event = self._event_args("apikey.revoked", actor, self._clock(), data={"key_id": key_id})
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self.keys.apikey(digest))
        pipe.hdel(self.keys.apikeys, key_id)
        pipe.xadd(self.keys.events, dict(zip(event[::2], event[1::2])))
        pipe.execute()
        return True

    # -- counters -----------------------------------------------------------------------

    def count_in_window(self, name: str, ttl_s: int) -> int:
        """Add one to counter `name` (created with a `ttl_s` expiry) and return its value (one round trip)."""
        return int(self._count_in_window(keys=[f"{self.keys.p}{name}"], args=[ttl_s]))

    # -- run locks ----------------------------------------------------------------------

    def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        """A token if the lock was free (it expires after `ttl_s`), else None."""
        token = secrets.token_hex(16)
        return token if self._r.set(self.keys.lock(name), token, nx=True, px=_ms(ttl_s)) else None

    def refresh_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Extend a lock this token still holds."""
        return bool(self._refresh_lock(keys=[self.keys.lock(name)], args=[token, _ms(ttl_s)]))

    def release_lock(self, name: str, token: str) -> bool:
        """Release only if this token still holds the lock (not a later holder's after expiry)."""
        return bool(self._release_lock(keys=[self.keys.lock(name)], args=[token]))

    # -- pagination ---------------------------------------------------------------------

    def _page(self, index: str, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Members of a sequence-scored index, highest first, strictly below the cursor."""
        limit = _check_limit(limit)
        if cursor is not None and not cursor.isdigit():
            raise InvalidArgument("cursor", f"{cursor!r} is not a cursor this API returned")
        upper = "+inf" if cursor is None else f"({cursor}"
        rows = self._r.zrevrangebyscore(index, upper, "-inf", start=0, num=limit + 1, withscores=True)
        more = len(rows) > limit
        rows = rows[:limit]
        return [member for member, _ in rows], (str(int(rows[-1][1])) if more else None)


def created_job_id(outcome: str, job_id: str, job: JobRecord, idempotency_key: str | None) -> str | None:
    """Read the `CREATE_JOB` script's answer: None if `job` was stored, else the id of the original job
    that the same `idempotency_key` and body stored before; a conflict is raised."""
    if outcome == "created":
        return None
    if outcome == "existing":
        return job_id
    if outcome == "name_taken":
        raise NameTaken(job.team, job.name, job_id)
    raise IdempotencyConflict(idempotency_key or "", job_id)


def read_job(raw: str | None, job_id: str) -> JobRecord:
    """A job from its stored JSON (`NotFound` if there is none)."""
    if raw is None:
        raise NotFound("job", job_id)
    return JobRecord.model_validate_json(raw)


def read_principal(raw: str | None) -> Principal | None:
    """The principal of an API key from its stored `ApiKeyInfo` JSON (None if there is none)."""
    return ApiKeyInfo.model_validate_json(raw).principal if raw else None


def read_events(entries: Iterable[tuple[str, dict[str, str]]]) -> list[Event]:
    """Events from the entries of an XRANGE: `(id, fields)`."""
    return [_event(event_id, fields) for event_id, fields in entries]


def open_store(settings: Settings | None = None) -> Store:
    """The store on the configured Redis: the embedded one unless `CLOUDSCHED_REDIS_URL` is set."""
    return Store(connect(settings))


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument("limit", f"must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    return limit


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise InvalidArgument("ttl_s", f"must be positive, got {seconds!r}")
    return max(1, int(seconds * 1000))


def _parse_enum(enum: type, value: Any, field: str):
    if value is None or isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        raise InvalidArgument(field, f"{value!r} is not one of {', '.join(e.value for e in enum)}") from None


def _plan_info(fields: list[str | None]) -> PlanInfo:
    info_json, state, version, decision, updated_at = fields
    return PlanInfo(**json.loads(info_json), state=state, version=int(version),
                    decision=json.loads(decision) if decision else None, updated_at=updated_at)


def _event(event_id: str, fields: dict[str, str]) -> Event:
    return Event(id=event_id, type=fields["type"], job_id=fields.get("job_id"), plan_id=fields.get("plan_id"),
                 actor=fields["actor"], at=fields["at"], data=json.loads(fields.get("data") or "{}"))


def _principal(**fields: Any) -> Principal:
    try:
        return Principal(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "team"
        raise InvalidArgument(field, error["msg"].removeprefix("Value error, ")) from None
