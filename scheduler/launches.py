"""Launch records: what the workers started, where, and what it cost (the truth; the broker only wakes).

A plan segment is a *unit* (`{job_id}/{plan_id}/{segment}`); a job with shards has several. Each unit
keeps its attempts: the first launch of the approved segment, then one per re-placement
after a preemption or failure. An attempt's idempotency key `{unit}.{attempt}` is what the
provider sees (its token or our tag), so a repeated launch of one attempt is never a second
instance, while a re-placement is deliberately a new one.

Keys (under the store's prefix):

    unit:{job}/{plan}/{i}   hash  json (LaunchUnit), version (compare-and-set by one Lua script)
    units                   zset  unit ids by creation time (the cost report's index)
    units:job:{job}         set   a job's unit ids
    due                     zset  unit -> epoch second its (next) launch is due
    inflight                zset  unit -> epoch second its launch lease ends (dispatcher re-sends after)
    tracking:{adapter}      set   units with a live instance on that adapter (polled per adapter)
    adapters                set   every adapter that has tracked a unit, and "" once it was built
                                  (`tracked_adapters` reads it instead of scanning the keyspace)
    orphans:{adapter}       hash  idempotency key -> epoch second first seen without a record
    lease:{unit}            str   the worker launching the unit now (expires)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import Field

from scheduler.errors import NotFound
from scheduler.models import StrictModel, UtcDatetime, parse_utc

if TYPE_CHECKING:
    from scheduler.records import PlanRecord

AttemptState = Literal["queued", "launching", "launched", "ended", "refused"]
_RETRIES = 50


class Attempt(StrictModel):
    attempt: int = Field(ge=1)
    key: str = Field(description="idempotency key the provider sees: {unit}.{attempt}")
    offer_id: str
    provider: str = Field(description="the offer's provider")
    adapter: str = Field(description="the adapter that launches it (the provider, or local/fake)")
    market: str
    nodes: int
    gpus: int
    price_per_node_hour: float = Field(description="approved (or re-placed) price")
    run_hours: float
    start: UtcDatetime = Field(description="when it is due")
    state: AttemptState = "queued"
    handle: dict[str, Any] | None = None
    tries: int = Field(default=0, description="provider launch calls made for this attempt")
    launched_at: UtcDatetime | None = None
    running_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    phase: str | None = None
    billed_usd: float | None = None
    cost: float | None = Field(default=None, description="actual cost once ended")
    reason: str | None = None
    message: str | None = None


class LaunchUnit(StrictModel):
    id: str
    job_id: str
    plan_id: str
    team: str
    index: int
    deadline: UtcDatetime
    planned_cost: float = Field(description="the approved segment's cost (compute + egress)")
    version: int = 1
    attempts: list[Attempt]

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]

    @property
    def actual_cost(self) -> float:
        return round(sum(a.cost or 0.0 for a in self.attempts), 2)

    def with_current(self, **changes: Any) -> LaunchUnit:
        attempts = [*self.attempts[:-1], self.current.model_copy(update=changes)]
        return self.model_copy(update={"attempts": attempts})


def unit_id(job_id: str, plan_id: str, index: int) -> str:
    return f"{job_id}/{plan_id}/{index}"


def parse_key(key: str) -> tuple[str, int] | None:
    """`job_x/plan-y/0.2` -> (`job_x/plan-y/0`, 2); None if it is not one of our keys."""
    unit, dot, attempt = key.rpartition(".")
    if not dot or "/" not in unit or not attempt.isdigit():
        return None
    return unit, int(attempt)


class LaunchStore:
    """Launch units in Redis. `update` is compare-and-set, so two workers never both win a change."""

    def __init__(self, client: redis.Redis, prefix: str = "cs:"):
        self._r = client
        self.p = prefix
        self._add_script = client.register_script(_ADD)
        self._update_script = client.register_script(_UPDATE)
        self._claim_script = client.register_script(_CLAIM)
        self._release_script = client.register_script(_RELEASE)

    # key names
    def _unit(self, uid: str) -> str:
        return f"{self.p}unit:{uid}"

    @property
    def _due(self) -> str:
        return f"{self.p}due"

    @property
    def _inflight(self) -> str:
        return f"{self.p}inflight"

    def _tracking(self, adapter: str) -> str:
        return f"{self.p}tracking:{adapter}"

    @property
    def _adapters(self) -> str:
        return f"{self.p}adapters"

    def _orphans(self, adapter: str) -> str:
        return f"{self.p}orphans:{adapter}"

    # -- units ----------------------------------------------------------------------------

    def add(self, units: Iterable[LaunchUnit]) -> int:
        """Store new units and make them due; units that exist already are left alone."""
        added = 0
        for chunk in _chunks(list(units), 500):
            pipe = self._r.pipeline(transaction=False)
            for u in chunk:
                self._add_script(keys=[self._unit(u.id), f"{self.p}units", f"{self.p}units:job:{u.job_id}", self._due],
                                 args=[u.id, u.model_dump_json(), u.current.start.timestamp()], client=pipe)
            added += sum(pipe.execute())
        return added

    def get(self, uid: str) -> LaunchUnit:
        raw = self._r.hget(self._unit(uid), "json")
        if raw is None:
            raise NotFound("launch unit", uid)
        return LaunchUnit.model_validate_json(raw)

    def get_many(self, uids: Iterable[str]) -> list[LaunchUnit]:
        uids = list(uids)
        out = []
        for chunk in _chunks(uids, 1000):
            pipe = self._r.pipeline(transaction=False)
            for uid in chunk:
                pipe.hget(self._unit(uid), "json")
            out += [LaunchUnit.model_validate_json(raw) for raw in pipe.execute() if raw]
        return out

    def of_job(self, job_id: str) -> list[LaunchUnit]:
        return sorted(self.get_many(self._r.smembers(f"{self.p}units:job:{job_id}")), key=lambda u: u.index)

    def all_ids(self) -> list[str]:
        return self._r.zrange(f"{self.p}units", 0, -1)

    def update(self, uid: str, change: Callable[[LaunchUnit], LaunchUnit | None], *, current: LaunchUnit | None = None,
               due: float | None = None, undue: bool = False, track: str | None = None,
               untrack: str | None = None, done: bool = False) -> LaunchUnit | None:
        """Apply `change` to the unit, atomically with the index changes named (one round trip).

        `change` returns the new unit, or None to change nothing (then no index changes either).
        The write applies only to the version `change` saw (`current`, or the stored unit): when
        another writer got there first, the unit is read again and `change` runs again, so it
        must not have side effects.
        """
        unit = current or self.get(uid)
        for _ in range(_RETRIES):
            new = change(unit)
            if new is None:
                return None
            new = new.model_copy(update={"version": unit.version + 1})
            keys = [self._unit(uid), self._due, self._inflight, self._tracking(track or ""),
                    self._tracking(untrack or ""), self._adapters]
            args = [unit.version, new.model_dump_json(), uid, "" if due is None else due, int(undue), int(bool(track)),
                    int(bool(untrack)), int(done), track or ""]
            outcome = self._update_script(keys=keys, args=args)
            if outcome == 1:
                return new
            if outcome == -1:
                raise NotFound("launch unit", uid)
            unit = self.get(uid)
        raise RuntimeError(f"launch unit {uid}: too many concurrent changes")

    # -- dispatching ----------------------------------------------------------------------

    def claim_due(self, now: float, lease_s: float, limit: int = 5000) -> list[str]:
        """Units due by `now`, plus those whose launch lease ran out, moved to in-flight (one script)."""
        return self._claim_script(keys=[self._due, self._inflight], args=[now, now + lease_s, limit])

    def release_inflight(self, uid: str) -> None:
        self._r.zrem(self._inflight, uid)

    def counts(self) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(self._due)
        pipe.zcard(self._inflight)
        due, inflight = pipe.execute()
        return {"due": due, "inflight": inflight}

    def next_due(self) -> float | None:
        first = self._r.zrange(self._due, 0, 0, withscores=True)
        return first[0][1] if first else None

    def lease(self, uid: str, ttl_s: float) -> str | None:
        """Hold the unit's launch for `ttl_s` seconds; the token, or None if another worker holds it."""
        token = secrets.token_hex(8)
        return token if self._r.set(f"{self.p}lease:{uid}", token, nx=True, px=int(ttl_s * 1000)) else None

    def release(self, uid: str, token: str) -> None:
        self._release_script(keys=[f"{self.p}lease:{uid}"], args=[token])

    # -- tracking and reconciliation -------------------------------------------------------

    def tracked(self, adapter: str) -> list[str]:
        return list(self._r.smembers(self._tracking(adapter)))

    def tracked_adapters(self) -> list[str]:
        """The adapters with a live instance now: those of the `adapters` index whose tracking set is not empty."""
        names = self._r.smembers(self._adapters)
        if "" not in names:  # not built yet (a store written before the index): one scan completes it, then "" says so
            prefix = self._tracking("")
            names |= {k[len(prefix):] for k in self._r.scan_iter(match=prefix + "*", count=1000)} | {""}
            self._r.sadd(self._adapters, *names)
        names = sorted(name for name in names if name)
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.scard(self._tracking(name))
        return [name for name, count in zip(names, pipe.execute()) if count]

    def orphan_seen(self, adapter: str, key: str, now: float) -> float:
        """When `key` was first seen without a record (recorded now if it is new)."""
        pipe = self._r.pipeline()  # one round trip
        pipe.hsetnx(self._orphans(adapter), key, now)
        pipe.hget(self._orphans(adapter), key)
        return float(pipe.execute()[1])

    def orphan_gone(self, adapter: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self._r.hdel(self._orphans(adapter), *keys)

    def orphans(self, adapter: str) -> dict[str, float]:
        return {k: float(v) for k, v in self._r.hgetall(self._orphans(adapter)).items()}


def adapter_for(provider: str, launch_via: str) -> str:
    return provider if launch_via == "catalog" else launch_via


def schedule_plan(launches: LaunchStore, plan: PlanRecord, launch_via: str) -> int:
    """Turn an approved plan's segments into due launch units (idempotent: approval calls it)."""
    units = []
    for a in plan.document.assignments:
        for i, seg in enumerate(a.segments):
            uid = unit_id(a.job_id, plan.plan_id, i)
            units.append(LaunchUnit(
                id=uid, job_id=a.job_id, plan_id=plan.plan_id, team=a.team, index=i,
                deadline=parse_utc(a.deadline), planned_cost=round(seg.compute_cost + seg.egress_cost, 2),
                attempts=[Attempt(attempt=1, key=f"{uid}.1", offer_id=seg.offer_id, provider=seg.provider,
                                  adapter=adapter_for(seg.provider, launch_via), market=seg.market, nodes=seg.nodes,
                                  gpus=seg.gpus, price_per_node_hour=seg.price_per_node_hour,
                                  run_hours=seg.run_hours, start=parse_utc(seg.start))]))
    return launches.add(units)


_ADD = """
-- KEYS unit units units_of_job due; ARGV id json start
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'version', '1')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""
_UPDATE = """
-- KEYS unit due inflight tracking(add) tracking(remove) adapters; ARGV version json id due undue track untrack done
-- adapter(add)
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return -1 end
if version ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'version', tostring(tonumber(ARGV[1]) + 1))
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[4], ARGV[3])
  redis.call('SADD', KEYS[6], ARGV[9])
end
if ARGV[7] == '1' then redis.call('SREM', KEYS[5], ARGV[3]) end
if ARGV[8] == '1' then redis.call('ZREM', KEYS[3], ARGV[3]) end
return 1
"""
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local lost = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
for _, id in ipairs(lost) do redis.call('ZADD', KEYS[2], ARGV[2], id) end
for _, id in ipairs(lost) do table.insert(due, id) end
return due
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]
