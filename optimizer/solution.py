"""A solution: for every job either nothing, or one (candidate, start) per shard."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from optimizer.problem import Instance

Shard = tuple[int, int]  # (candidate index in the job's list, start minute)


@dataclass
class Solution:
    placed: list[tuple[Shard, ...] | None]
    method: str = ""
    notes: dict[int, str] = field(default_factory=dict)  # job -> why it stays unplaced

    @classmethod
    def empty(cls, n_jobs: int) -> Solution:
        return cls([None] * n_jobs)

    def copy(self) -> Solution:
        return Solution(list(self.placed), self.method, dict(self.notes))

    def job_cost(self, inst: Instance, j: int) -> int:
        shards = self.placed[j]
        return sum(int(inst.cands[j].cost[c]) for c, _ in shards) if shards else 0

    def job_end(self, inst: Instance, j: int) -> int:
        cands = inst.cands[j]
        return max(s + int(cands.dur[c]) for c, s in self.placed[j])

    def job_start(self, j: int) -> int:
        return min(s for _, s in self.placed[j])

    def cost(self, inst: Instance) -> int:
        return sum(self.job_cost(inst, j) for j in range(inst.n_jobs))

    def unplaced_weight(self, inst: Instance) -> int:
        return sum(c.weight for j, c in enumerate(inst.cands) if self.placed[j] is None)

    def objective(self, inst: Instance) -> tuple[int, int]:
        """Lexicographic: priority-weighted unplaced jobs first, then cost in cents."""
        return self.unplaced_weight(inst), self.cost(inst)

    def n_placed(self) -> int:
        return sum(p is not None for p in self.placed)


class Profile:
    """GPUs in use on one capacity pool over time: a step function.

    `times[i]` starts a segment of constant `usage[i]` that lasts until `times[i+1]`;
    the last segment lasts forever at 0.
    """

    __slots__ = ("capacity", "times", "usage")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.times = [0]
        self.usage = [0]

    def _split(self, t: int) -> int:
        i = bisect_right(self.times, t) - 1
        if self.times[i] != t:
            self.times.insert(i + 1, t)
            self.usage.insert(i + 1, self.usage[i])
            i += 1
        return i

    def add(self, start: int, end: int, gpus: int) -> None:
        i, k = self._split(start), self._split(end)
        for x in range(i, k):
            self.usage[x] += gpus

    def remove(self, start: int, end: int, gpus: int) -> None:
        self.add(start, end, -gpus)

    def peak(self, start: int, end: int) -> int:
        times, usage = self.times, self.usage
        i = bisect_right(times, start) - 1
        top = 0
        while i < len(times) and times[i] < end:
            top = max(top, usage[i])
            i += 1
        return top

    def earliest_fit(self, lo: int, latest: int, dur: int, gpus: int) -> int | None:
        """The earliest start in [lo, latest] at which `gpus` fit for `dur` minutes."""
        limit = self.capacity - gpus
        if limit < 0 or lo > latest:
            return None
        times, usage, n = self.times, self.usage, len(self.times)
        i = bisect_right(times, lo) - 1
        start = lo
        while start <= latest:
            end, k = start + dur, i
            while k < n and times[k] < end and usage[k] <= limit:
                k += 1
            if k >= n or times[k] >= end:
                return start
            # Segment k is too full: the next possible start is where it ends.
            if k + 1 >= n:
                return None
            start, i = times[k + 1], k + 1
        return None


def build_profiles(inst: Instance, sol: Solution, skip: set[int] = frozenset()) -> dict[int, Profile]:
    """Capacity profiles of every pool used by `sol`, leaving out the jobs in `skip`."""
    profiles: dict[int, Profile] = {}
    for j, shards in enumerate(sol.placed):
        if shards is None or j in skip:
            continue
        cands = inst.cands[j]
        for c, s in shards:
            pool = int(cands.offers[c])
            if pool not in profiles:
                profiles[pool] = Profile(int(inst.capacity[pool]))
            profiles[pool].add(s, s + int(cands.dur[c]), int(cands.demand[c]))
    return profiles
