"""Where the store keeps things in Redis, and the Lua scripts that change them atomically.

Key layout (prefix `cs:` by default):

    job:{id}                          hash  json, state, version, team, seq, op
    job-name:{team}:{name}            str   id of the live job holding the name
    idem:{sha256(principal, key)}     hash  job_id, body_hash (expires after 24 h)
    jobs[:team:{t}][:state:{s}]       zset  job ids by submission sequence (4 indexes)
    plan:{id}                         hash  document, info, job_versions, state, version,
                                            decision, updated_at, seq, op
    plans                             zset  plan ids by sequence
    plan-latest-approved              str   id of the plan approved last
    seq:jobs, seq:plans               counters
    events, events:job:{id},          streams  type, job_id, plan_id, actor, at, data (JSON)
    events:plan:{id}
    apikey:{sha256(key)}              str   ApiKeyInfo JSON;  apikeys: hash key_id -> sha256
    lock:{name}                       str   token, with a TTL
"""

from __future__ import annotations

import hashlib

from scheduler.lifecycle import JobState

EMIT = """
local function emit(global, own, first)
  local id = redis.call('XADD', global, '*', unpack(ARGV, first))
  redis.call('XADD', own, id, unpack(ARGV, first))
  return id
end
"""
CREATE_JOB = EMIT + """
-- KEYS job name idem seq idx*4 events job_events; ARGV id json state team use_idem body_hash ttl event...
if redis.call('EXISTS', KEYS[1]) == 1 then return {'created', ARGV[1]} end
if ARGV[5] == '1' then
  local prior = redis.call('HMGET', KEYS[3], 'job_id', 'body_hash')
  if prior[1] then
    if prior[2] == ARGV[6] then return {'existing', prior[1]} end
    return {'idempotency_conflict', prior[1]}
  end
end
local holder = redis.call('GET', KEYS[2])
if holder then return {'name_taken', holder} end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'state', ARGV[3], 'version', '1', 'team', ARGV[4], 'seq', seq)
redis.call('SET', KEYS[2], ARGV[1])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[3], 'job_id', ARGV[1], 'body_hash', ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
for i = 5, 8 do redis.call('ZADD', KEYS[i], seq, ARGV[1]) end
emit(KEYS[9], KEYS[10], 8)
return {'created', ARGV[1]}
"""
TRANSITION_JOB = EMIT + """
-- KEYS job name old_idx*2 new_idx*2 events job_events; ARGV id expected_version json state op release event...
local cur = redis.call('HMGET', KEYS[1], 'version', 'seq', 'op')
if not cur[1] then return {'missing', ''} end
if cur[1] ~= ARGV[2] then
  if cur[3] == ARGV[5] then return {'ok', cur[1]} end
  return {'conflict', cur[1]}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'json', ARGV[3], 'state', ARGV[4], 'op', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], cur[2], ARGV[1])
redis.call('ZADD', KEYS[6], cur[2], ARGV[1])
if ARGV[6] == '1' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
emit(KEYS[7], KEYS[8], 7)
return {'ok', tostring(version)}
"""
SAVE_PLAN = EMIT + """
-- KEYS plan seq plans events plan_events; ARGV id document info job_versions state updated_at op event...
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[7] then return 1 end
  return 0
end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'document', ARGV[2], 'info', ARGV[3], 'job_versions', ARGV[4], 'state', ARGV[5],
           'version', '1', 'updated_at', ARGV[6], 'seq', seq, 'op', ARGV[7])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
emit(KEYS[4], KEYS[5], 8)
return 1
"""
SET_PLAN_STATE = EMIT + """
-- KEYS plan latest_approved events plan_events; ARGV id expected target decision updated_at op event...
local cur = redis.call('HMGET', KEYS[1], 'state', 'op')
if not cur[1] then return {'missing', ''} end
if cur[1] ~= ARGV[2] then
  if cur[2] == ARGV[6] then return {'ok', cur[1]} end
  return {'conflict', cur[1]}
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated_at', ARGV[5], 'op', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'decision', ARGV[4]) end
if ARGV[3] == 'approved' then redis.call('SET', KEYS[2], ARGV[1]) end
emit(KEYS[3], KEYS[4], 7)
return {'ok', ARGV[3]}
"""
APPEND_EVENT = """
-- KEYS the global stream, then the job's and/or the plan's; ARGV event fields
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
for i = 2, #KEYS do redis.call('XADD', KEYS[i], id, unpack(ARGV)) end
return id
"""
# A rate-limit count (`_COUNT`, the head of both counting scripts) is kept in memory only: `REPL_NONE`
# keeps its INCR/EXPIRE out of the AOF (and replicas). Counts need no durability (a restarted server
# starts a fresh window), and written to the AOF they made it grow by every request (5,000 writes/s of
# status reads), forcing rewrites (a fork and a second process on the same cores) mid-load.
# (The guard: fakeredis' Lua has no `set_repl`.)
_COUNT = """if redis.set_repl then redis.set_repl(redis.REPL_NONE) end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
"""
COUNT_IN_WINDOW = _COUNT + """
-- KEYS counter; ARGV ttl_s. The counter expires ttl_s after its first count.
return count
"""
SHOW_JOB = _COUNT + """
-- KEYS counter job job_events; ARGV ttl_s max_events limit. Count a request (as COUNT_IN_WINDOW), then,
-- unless the count is over the limit (a 429: nothing read), read the job's JSON and its first events:
-- {count, json or false, entries}.
if count > tonumber(ARGV[3]) then return {count, false, {}} end
local json = redis.call('HGET', KEYS[2], 'json')
if not json then return {count, false, {}} end
return {count, json, redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', ARGV[2])}
"""
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_id(plain: str) -> str:
    """An API key's id (what `cloudsched keys list` shows and `keys revoke` takes): the start of its hash."""
    return sha256(plain)[:16]


class Keys:
    """Names of every key the store uses, all under one prefix."""

    def __init__(self, prefix: str):
        self.p = prefix
        self.events = f"{prefix}events"
        self.plans = f"{prefix}plans"
        self.latest_approved = f"{prefix}plan-latest-approved"
        self.apikeys = f"{prefix}apikeys"

    def job(self, job_id: str) -> str:
        return f"{self.p}job:{job_id}"

    def job_name(self, team: str, name: str) -> str:
        return f"{self.p}job-name:{team}:{name}"

    def idempotency(self, principal: str, key: str) -> str:
        return f"{self.p}idem:{sha256(principal + chr(0) + key)}"

    def seq(self, kind: str) -> str:
        return f"{self.p}seq:{kind}"

    def job_index(self, team: str | None = None, state: JobState | None = None) -> str:
        return f"{self.p}jobs" + (f":team:{team}" if team else "") + (f":state:{state.value}" if state else "")

    def job_indexes(self, team: str, state: JobState) -> list[str]:
        return [self.job_index(), self.job_index(team), self.job_index(None, state), self.job_index(team, state)]

    def job_events(self, job_id: str) -> str:
        return f"{self.p}events:job:{job_id}"

    def plan(self, plan_id: str) -> str:
        return f"{self.p}plan:{plan_id}"

    def plan_events(self, plan_id: str) -> str:
        return f"{self.p}events:plan:{plan_id}"

    def apikey(self, digest: str) -> str:
        return f"{self.p}apikey:{digest}"

    def lock(self, name: str) -> str:
        return f"{self.p}lock:{name}"


