"""`fake`: a fault-injecting provider for reliability tests, benchmarks and the demo's failure scenarios.

Its "cloud" is a SQLite file (WAL), so it outlives the worker and the Redis that talk to it,
as a real provider does, and every worker process sees the same instances. It keeps a ledger
of every create, so a test can count duplicate launches. Faults are set in the same file
(`configure`), so a test can change them while workers run:

- `no_capacity`: probability that a launch finds no machine (`NoCapacity`);
- `error_before` / `error_after`: probability of a 5xx before the create, or after it took
  effect (the response is lost: the caller sees `Transient` but the instance exists);
- `throttle_per_s`: calls above this rate (all processes together) get `Throttled`;
- `slow_s`: every call takes this long;
- `pause_during_s`: a launch commits the create, then waits (a worker killed now dies "during" it);
- `lookup`: False turns off the look-up of our tag before a create (the negative control);
- `speedup`: simulated seconds per real second for run times (an hour-long job ends in 1 s at 3600).

Preemption is an explicit act (`preempt(fraction)`), like a provider's spot reclaim notice.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from scheduler.models import Offer
from scheduler.providers import (
    Handle,
    LaunchRequest,
    NoCapacity,
    Owned,
    Phase,
    Quote,
    Status,
    Throttled,
    Transient,
    catalog_quote,
)

DEFAULTS = {"no_capacity": 0.0, "error_before": 0.0, "error_after": 0.0, "throttle_per_s": 0.0, "slow_s": 0.0,
            "pause_during_s": 0.0, "lookup": True, "speedup": 1.0, "price_factor": 1.0}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, key TEXT NOT NULL, job_id TEXT, offer_id TEXT,
  market TEXT, nodes INT, price REAL, run_s REAL, created REAL, state TEXT, ended REAL, exit_code INT);
CREATE INDEX IF NOT EXISTS by_key ON instances(key);
CREATE TABLE IF NOT EXISTS ledger (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, instance TEXT, at REAL);
CREATE TABLE IF NOT EXISTS calls (n INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT, at REAL, outcome TEXT);
CREATE TABLE IF NOT EXISTS config (name TEXT PRIMARY KEY, value TEXT);
"""


class FakeProvider:
    name = "fake"

    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.time, seed: int | None = None,
                 **_: object):
        from scheduler.settings import get_settings

        self.path = Path(path) if path else get_settings().data_dir / "fake-cloud.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._rng = random.Random(seed)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # -- faults ---------------------------------------------------------------------------

    def configure(self, **faults: object) -> None:
        unknown = set(faults) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO config VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in faults.items()])

    def faults(self) -> dict:
        rows = self._db().execute("SELECT name, value FROM config").fetchall()
        return {**DEFAULTS, **{k: json.loads(v) for k, v in rows}}

    def _call(self, op: str) -> dict:
        """Log the call, apply the rate limit and the slowness; returns the fault settings."""
        f, now, db = self.faults(), self.clock(), self._db()
        if f["throttle_per_s"]:
            recent = db.execute("SELECT COUNT(*) FROM calls WHERE at > ? AND outcome != 'throttled'",
                                (now - 1.0,)).fetchone()[0]
            if recent >= f["throttle_per_s"]:
                db.execute("INSERT INTO calls (op, at, outcome) VALUES (?, ?, 'throttled')", (op, now))
                raise Throttled("rate limit exceeded", provider=self.name, retry_after_s=1.0)
        db.execute("INSERT INTO calls (op, at, outcome) VALUES (?, ?, 'ok')", (op, now))
        if f["slow_s"]:
            time.sleep(f["slow_s"])
        return f

    # -- the interface --------------------------------------------------------------------

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        f = self._call("launch")
        db = self._db()
        if f["lookup"]:
            row = db.execute("SELECT id FROM instances WHERE key = ? ORDER BY created LIMIT 1",
                             (idempotency_key,)).fetchone()
            if row:
                return self._handle(row[0], placement)
        if self._rng.random() < f["no_capacity"]:
            raise NoCapacity(f"no {placement.offer.gpu_type} machine free", provider=self.name)
        if self._rng.random() < f["error_before"]:
            raise Transient("503 Service Unavailable (before create)", provider=self.name)
        instance = "fk-" + uuid.uuid4().hex[:16]
        now = self.clock()
        run_s = placement.run_hours * 3600 / f["speedup"]
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (instance, idempotency_key, placement.job_id, placement.offer.id, placement.offer.market.value,
                        placement.nodes, placement.offer.price_per_node_hour, run_s, now, "running", None, None))
            db.execute("INSERT INTO ledger (key, instance, at) VALUES (?, ?, ?)", (idempotency_key, instance, now))
        if f["pause_during_s"]:
            time.sleep(f["pause_during_s"])
        if self._rng.random() < f["error_after"]:
            raise Transient("502 Bad Gateway (after create; the instance exists)", provider=self.name)
        return self._handle(instance, placement)

    def _handle(self, instance: str, placement: LaunchRequest) -> Handle:
        return Handle(provider=self.name, id=instance, region=placement.offer.region)

    def status(self, handle: Handle) -> Status:
        return self.statuses([handle]).get(handle.id, Status(Phase.GONE))

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        self._call("statuses")
        ids = [h.id for h in handles]
        out: dict[str, Status] = {}
        db = self._db()
        for i in range(0, len(ids), 900):
            chunk = ids[i:i + 900]
            rows = db.execute(f"SELECT id, state, created, run_s, ended, exit_code FROM instances "
                              f"WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            for row in rows:
                out[row[0]] = self._status(*row[1:])
        return {i: out.get(i, Status(Phase.GONE)) for i in ids}

    def _status(self, state, created, run_s, ended, exit_code) -> Status:
        now, start = self.clock(), _dt(created)
        if state == "running" and now >= created + run_s:
            return Status(Phase.SUCCEEDED, exit_code=0, started_at=start, ended_at=_dt(created + run_s))
        if state == "running":
            return Status(Phase.RUNNING, started_at=start)
        return Status(Phase(state), started_at=start, ended_at=_dt(ended) if ended else None, exit_code=exit_code)

    def cancel(self, handle: Handle) -> None:
        self._call("cancel")
        with self._db() as db:
            db.execute("UPDATE instances SET state = 'cancelled', ended = ? WHERE id = ? AND state = 'running'",
                       (self.clock(), handle.id))

    def quote(self, offer: Offer) -> Quote:
        f = self._call("quote")
        base = catalog_quote(offer)
        return Quote(offer_id=offer.id, price_per_node_hour=round(base.price_per_node_hour * f["price_factor"], 6),
                     capacity_gpus=offer.capacity_gpus, live=True)

    def list_ours(self) -> list[Owned]:
        self._call("list")
        now = self.clock()
        rows = self._db().execute("SELECT id, key, job_id, created, run_s FROM instances WHERE state = 'running' "
                                  "AND created + run_s > ?", (now,)).fetchall()
        return [Owned(Handle(self.name, r[0]), r[1], r[2] or "", Phase.RUNNING, _dt(r[3])) for r in rows]

    # -- what tests look at -----------------------------------------------------------------

    def preempt(self, fraction: float, market: str | None = "spot") -> list[str]:
        """Reclaim `fraction` of the running (spot) instances now; returns their ids."""
        now = self.clock()
        query = "SELECT id FROM instances WHERE state = 'running' AND created + run_s > ?"
        args: list = [now]
        if market:
            query += " AND market = ?"
            args.append(market)
        ids = [r[0] for r in self._db().execute(query, args).fetchall()]
        chosen = self._rng.sample(ids, round(len(ids) * fraction))
        with self._db() as db:
            db.executemany("UPDATE instances SET state = 'preempted', ended = ? WHERE id = ?",
                           [(now, i) for i in chosen])
        return chosen

    def fail(self, instance_ids: Iterable[str], exit_code: int = 1) -> None:
        with self._db() as db:
            db.executemany("UPDATE instances SET state = 'failed', ended = ?, exit_code = ? WHERE id = ?",
                           [(self.clock(), exit_code, i) for i in instance_ids])

    def ledger(self) -> list[tuple[str, str]]:
        """Every create ever made: (idempotency key, instance id)."""
        return self._db().execute("SELECT key, instance FROM ledger ORDER BY n").fetchall()

    def duplicates(self) -> dict[str, int]:
        rows = self._db().execute("SELECT key, COUNT(*) FROM ledger GROUP BY key HAVING COUNT(*) > 1").fetchall()
        return dict(rows)

    def call_times(self, op: str | None = None, outcome: str = "ok") -> list[float]:
        query, args = "SELECT at FROM calls WHERE outcome = ?", [outcome]
        if op:
            query += " AND op = ?"
            args.append(op)
        return [r[0] for r in self._db().execute(query + " ORDER BY at", args).fetchall()]


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
