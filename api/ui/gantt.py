"""The plan's Gantt chart as geometry: lanes per provider/region, one bar per job segment.

Pure: it takes assignments and returns coordinates the `_gantt.html` template draws as
inline SVG. Jobs that overlap in time on one provider/region are stacked in rows of that
lane (interval partitioning: a bar takes the lowest row free at its start, so a lane is as
tall as its peak concurrency). The time axis runs from the first start to the last end at
no less than `MIN_PX_PER_HOUR`, so a long plan gets a wide chart that scrolls sideways
instead of bars too thin to see; deadlines past the last end are not drawn.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from api.ui.render import money, short_time
from scheduler.models import Assignment, parse_utc

LABEL_WIDTH = 150  # px: "provider / region" on the left of each lane
LABEL_CHARS = 21  # longer labels are cut (the full one is the tooltip)
PLOT_WIDTH = 1060  # px the axis gets when the plan is short enough
MIN_PX_PER_HOUR = 2.0
MAX_PLOT_WIDTH = 8000
ROW_HEIGHT, ROW_GAP, LANE_GAP, AXIS_HEIGHT = 14, 3, 8, 26
MIN_BAR_WIDTH = 2.0
TICK_STEPS_H = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720)
MIN_TICK_SPACING = 84  # px between axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    job_id: str
    job_name: str
    title: str
    spot: bool
    low_slack: bool
    architecture: str
    deadline_x: float | None


@dataclass(frozen=True)
class Lane:
    label: str
    y: float
    height: float
    architecture: str
    rows: int

    @property
    def short_label(self) -> str:
        return self.label if len(self.label) <= LABEL_CHARS else self.label[:LABEL_CHARS - 1] + "…"


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Gantt:
    width: float
    height: float
    row_height: int
    lanes: list[Lane]
    bars: list[Bar]
    ticks: list[Tick]

    @property
    def empty(self) -> bool:
        return not self.bars


def _pack(intervals: list[tuple[float, float, int]]) -> tuple[dict[int, int], int]:
    """Row of each interval (start, end, key) so that no two in a row overlap; returns (rows, row count)."""
    active: list[tuple[float, int]] = []  # (end, row)
    free: list[int] = []
    rows: dict[int, int] = {}
    count = 0
    for start, end, key in sorted(intervals):
        while active and active[0][0] <= start:
            heapq.heappush(free, heapq.heappop(active)[1])
        if free:
            row = heapq.heappop(free)
        else:
            row, count = count, count + 1
        rows[key] = row
        heapq.heappush(active, (end, row))
    return rows, count


def _ticks(t0: datetime, hours: float, px_per_hour: float) -> list[Tick]:
    step = next((s for s in TICK_STEPS_H if s * px_per_hour >= MIN_TICK_SPACING), TICK_STEPS_H[-1])
    first = t0.replace(minute=0, second=0, microsecond=0)
    if step >= 24:
        first = first.replace(hour=0)
    else:
        first = first.replace(hour=first.hour - first.hour % step)
    fmt = "%a %m-%d" if step >= 24 else "%m-%d %H:%M"
    out, at = [], first
    while at <= t0 + timedelta(hours=hours):
        offset = (at - t0).total_seconds() / 3600
        if offset >= 0:
            out.append(Tick(x=round(LABEL_WIDTH + offset * px_per_hour, 1), label=at.strftime(fmt)))
        at += timedelta(hours=step)
    return out


def _title(a: Assignment, seg, shards: int) -> str:
    part = f" (shard {seg.shard + 1} of {shards})" if shards > 1 else ""
    cost = money(seg.compute_cost + seg.egress_cost)
    return (f"{a.job_name}{part} · {seg.offer_id} · {short_time(seg.start)} → {short_time(seg.end)} UTC · "
            f"deadline {short_time(a.deadline)} · slack {a.slack_hours:.1f} h · {cost}")


def layout(assignments: list[Assignment], architecture: dict[str, str], low_slack_hours: float) -> Gantt:
    """The chart of `assignments`; `architecture` maps a provider to centralized/distributed."""
    segments = [(a, s) for a in assignments for s in a.segments]
    if not segments:
        return Gantt(LABEL_WIDTH + PLOT_WIDTH, AXIS_HEIGHT, ROW_HEIGHT, [], [], [])
    starts = [parse_utc(s.start) for _, s in segments]
    ends = [parse_utc(s.end) for _, s in segments]
    t0 = min(starts).astimezone(timezone.utc)
    hours = max((max(ends) - t0).total_seconds() / 3600, 1.0)
    px_per_hour = min(max(PLOT_WIDTH / hours, MIN_PX_PER_HOUR), MAX_PLOT_WIDTH / hours)

    def x_of(at: datetime) -> float:
        return LABEL_WIDTH + (at - t0).total_seconds() / 3600 * px_per_hour

    by_lane: dict[tuple[str, str], list[int]] = {}
    for i, (_, s) in enumerate(segments):
        by_lane.setdefault((s.provider, s.region), []).append(i)
    order = sorted(by_lane, key=lambda k: (architecture.get(k[0], "other"), k))
    lanes, bars, y = [], [], AXIS_HEIGHT
    for key in order:
        members = by_lane[key]
        rows, count = _pack([(starts[i].timestamp(), ends[i].timestamp(), i) for i in members])
        arch = architecture.get(key[0], "other")
        height = count * (ROW_HEIGHT + ROW_GAP) + ROW_GAP
        lanes.append(Lane(label=f"{key[0]} / {key[1]}", y=y, height=height, architecture=arch, rows=count))
        for i in members:
            a, s = segments[i]
            x = x_of(starts[i])
            deadline = parse_utc(a.deadline)
            bars.append(Bar(
                x=round(x, 1), y=y + ROW_GAP + rows[i] * (ROW_HEIGHT + ROW_GAP),
                width=round(max(x_of(ends[i]) - x, MIN_BAR_WIDTH), 1), job_id=a.job_id, job_name=a.job_name,
                title=_title(a, s, len(a.segments)), spot=s.market == "spot",
                low_slack=a.slack_hours < low_slack_hours, architecture=arch,
                deadline_x=round(x_of(deadline), 1) if deadline <= max(ends) else None))
        y += height + LANE_GAP
    width = LABEL_WIDTH + hours * px_per_hour + 12
    return Gantt(round(width, 1), y, ROW_HEIGHT, lanes, bars, _ticks(t0, hours, px_per_hour))
