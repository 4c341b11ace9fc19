"""Realistic job batches from real GPU cluster traces, and reading/writing job files.

`generate_jobs(n, seed=, now=, trace=)` turns rows of the traces shipped in
`scheduler/data/traces/` (sources, licences: its README) into `JobSpec`s. GPU count, run time
and submission order/spacing come from the rows; every other field is drawn from one
`random.Random(seed)`, so a batch is a pure function of (n, seed, now, trace). The rules:

Rows and time
- `trace`: "microsoft_itp_cluster04" (5,000 DL training jobs), "alibaba_gpu_v2023" (3,101
  pods) or "mixed". Job i comes from row i in submission order.
- Gaps between submissions are capped at 6 h (`MAX_GAP_S`): the Alibaba sample opens with 25
  long-lived pods spread over 115 days, which would otherwise squeeze its other 3,000 pods
  into minutes of the window. ITP has one gap over 6 h.
- "mixed": both timelines are scaled to the same span and merged by time (ties: source, job
  id), so the traces overlap from start to end, each keeping its own bursts and lulls.
- n > rows: the trace repeats; repetition k is shifted by k x (span + median gap).
- `not_before = now + (t_i - t_0) x min(1, 3 days / (t_last - t_0))`, floored to the minute:
  the nightly run plans the jobs submitted over the past day(s); their earliest starts keep
  the trace's order and relative spacing and spread over at most 3 days (`WINDOW`).

Size
- `gpus` = the row's GPU count (Alibaba GPU-sharing pods already count 1).
- `duration_hours` = run time clipped to [0.25 h, 14 days], rounded to 0.0001 h. Shorter runs
  are dominated by provisioning; longer ones are Alibaba pods still "Running" when the trace
  ended (up to 145 days): their run time measures the trace window, not the job.

Kind and shape
- `kind`: a job of <= 8 GPUs is inference with p 0.15 (its duration is the serving window).
- `shards`: multi-GPU inference with p 0.5 becomes gpus / g equal shards, g drawn from the
  divisors 1, 2, 4 of gpus that leave at least two shards (batch inference, evaluation).
- `managed`: unsharded inference from a row without a GPU constraint, p 0.2.
- `interruptible`: training and sharded inference with p 0.4 when <= 8 h, else p 0.05;
  unsharded serving never.

GPU types (catalog names only)
- ITP rows (the trace has none) and unconstrained Alibaba rows draw the reference type from
  `PRIMARY_MIX`, GPU-sharing pods (< 1 GPU) from `SMALL_MIX`, managed jobs from `MANAGED_MIX`
  (the models managed endpoints offer: A100, H100, L40S, as SageMaker's ml.p4d, ml.p5 and
  ml.g6e); then each alternative in
  `ALTERNATIVES[reference]` is added with its probability (all have at least the
  reference's memory, so the job still fits).
- Alibaba constraints map to catalog names: T4, A10 as is; V100M16 -> V100; V100M32 ->
  V100-32GB; P100 -> V100 (P100 is not in the catalog; V100 is its 16 GB successor); G1-G3
  (undisclosed) -> a draw from `PRIMARY_MIX`. Order: T4, V100, V100-32GB, A10, then drawn
  types, so the reference is the oldest model the pod allows. No alternatives added.

Deadline
- `deadline = not_before + duration x U(1.3, 4.0) + 2 h`, rounded up to the minute; the margin
  covers provisioning and moving <= 5 TB of input at 10 Gbps (1.1 h), so every job can finish
  on its reference type on one fast cluster. The ITP `deadline_s` column is not used: 51.6 %
  of those synthetic deadlines are shorter than the job's own run.

Policy and ownership
- `team` uniform over `TEAMS`; `priority` from `PRIORITY_MIX` (70 % at 50); `compliance` from
  `COMPLIANCE_MIX` (76 % none, soc2 14 %, hipaa 4 %, gdpr 4 %, iso27001 and fedramp 1 % each).
- `regions`: jobs without gdpr/fedramp get ["us"] with p 0.10, ["eu"] with p 0.05 (gdpr pins
  the EU by itself; fedramp is US-only); managed jobs never (few regions have endpoints).
- `data`: training jobs with p 0.30, from `DATA_LOCATIONS` (EU-bound jobs: `EU_DATA_LOCATIONS`),
  size log-uniform 10 GB - 5 TB.
- `after`: an inference job with p 0.25 runs after the latest earlier training job of its team
  that can end (not_before + duration) by the inference job's not_before: edges point back in
  the batch (acyclic) and the pair is feasible when the training job runs at once.
- `name`: "{itp|ali}-{train|serve}-{i:05d}", unique through the index.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import random
import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml
from pydantic import ValidationError

from scheduler.models import JobSpec

TRACES = ("microsoft_itp_cluster04", "alibaba_gpu_v2023")
TRACE_CHOICES = (*TRACES, "mixed")
MAX_GAP_S = 6 * 3600
WINDOW = timedelta(days=3)
MIN_HOURS, MAX_HOURS = 0.25, 14 * 24
SLACK = (1.3, 4.0)
MARGIN = timedelta(hours=2)
TEAMS = ("vision", "nlp", "speech", "recsys", "research")
PRIMARY_MIX = {"H100": 35, "A100-80GB": 25, "A100": 15, "L40S": 10, "V100": 10, "H200": 5}
SMALL_MIX = {"T4": 40, "L4": 40, "A10": 20}
MANAGED_MIX = {"A100": 40, "H100": 30, "L40S": 30}
ALTERNATIVES = {  # each has at least the reference's memory
    "H100": {"H200": 0.5, "B200": 0.1}, "H200": {"B200": 0.3},
    "A100-80GB": {"H100": 0.4, "H200": 0.1}, "A100": {"A100-80GB": 1.0, "H100": 0.2},
    "L40S": {"RTXA6000": 0.4, "A100-80GB": 0.2}, "V100": {"V100-32GB": 1.0, "A100": 0.3},
    "T4": {"L4": 0.5, "A10": 0.5}, "L4": {"A10": 0.5}, "A10": {"L4": 0.3, "RTX4090": 0.2},
}
ALIBABA_TYPES = {"T4": "T4", "P100": "V100", "V100M16": "V100", "V100M32": "V100-32GB", "A10": "A10"}
ALIBABA_ORDER = ("T4", "V100", "V100-32GB", "A10")
PRIORITY_MIX = {50: 70, 70: 12, 30: 10, 90: 5, 10: 3}
COMPLIANCE_MIX = {"": 76, "soc2": 14, "hipaa": 4, "gdpr": 4, "iso27001": 1, "fedramp": 1}
DATA_LOCATIONS = {"aws:us-east-1": 35, "gcp:us-central1": 25, "aws:us-west-2": 15, "azure:eastus": 10,
                  "azure:westeurope": 15}
EU_DATA_LOCATIONS = {"azure:westeurope": 50, "aws:eu-west-1": 30, "gcp:europe-west4": 20}


@dataclass(frozen=True)
class TraceRow:
    """One trace job; `submit_s` is on the generator's timeline (capped gaps, merged, cycled)."""

    job_id: str
    source: str
    submit_s: float
    gpus: int
    duration_s: float
    gpu_type: str
    gpu_milli: int = 1000


@functools.cache
def load_trace(name: str) -> tuple[TraceRow, ...]:
    """The rows of a shipped trace, in file order, with gaps capped at `MAX_GAP_S`."""
    if name not in TRACES:
        raise ValueError(f"unknown trace {name!r}; choose one of {', '.join(TRACE_CHOICES)}")
    text = resources.files("scheduler").joinpath("data", "traces", f"{name}.csv").read_text()
    rows, clock, previous = [], 0.0, None
    for record in csv.DictReader(io.StringIO(text)):
        submit = float(record["submit_time_s"])
        clock += 0.0 if previous is None else min(submit - previous, MAX_GAP_S)
        previous = submit
        rows.append(TraceRow(record["job_id"], record["source"], clock, int(record["num_gpus"]),
                             float(record["duration_s"]), record["gpu_type"],
                             int(record.get("gpu_milli") or 1000)))
    return tuple(rows)


def trace_rows(n: int, trace: str = "mixed") -> list[TraceRow]:
    """The n rows behind `generate_jobs(n, trace=trace)`, in job order."""
    if trace not in TRACE_CHOICES:
        raise ValueError(f"unknown trace {trace!r}; choose one of {', '.join(TRACE_CHOICES)}")
    base = _merged() if trace == "mixed" else load_trace(trace)
    times = [row.submit_s for row in base]
    period = times[-1] - times[0] + statistics.median(b - a for a, b in zip(times, times[1:]))
    rows = [base[i % len(base)] for i in range(n)]
    return [replace(row, submit_s=row.submit_s + (i // len(base)) * period) for i, row in enumerate(rows)]


@functools.cache
def _merged() -> tuple[TraceRow, ...]:
    traces = [load_trace(name) for name in TRACES]
    span = max(rows[-1].submit_s for rows in traces)
    scaled = [replace(row, submit_s=row.submit_s * span / rows[-1].submit_s)
              for rows in traces for row in rows]
    return tuple(sorted(scaled, key=lambda row: (row.submit_s, row.source, row.job_id)))


def generate_jobs(n: int, *, seed: int = 0, now: datetime, trace: str = "mixed") -> list[JobSpec]:
    """n job specs from `trace`, by the rules in this module's docstring; deterministic."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rows = trace_rows(n, trace)
    now = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
    rng = random.Random(seed)
    specs = [_job_spec(i, row, now + offset, rng, width=max(5, len(str(n - 1))))
             for i, (row, offset) in enumerate(zip(rows, _start_offsets(rows)))]
    _link_pipelines(specs, rng)
    return [JobSpec.model_validate(spec) for spec in specs]


def _start_offsets(rows: list[TraceRow]) -> list[timedelta]:
    if not rows:
        return []
    first, span = rows[0].submit_s, rows[-1].submit_s - rows[0].submit_s
    scale = min(1.0, WINDOW.total_seconds() / span) if span > 0 else 1.0
    return [timedelta(minutes=math.floor((row.submit_s - first) * scale / 60)) for row in rows]


def _job_spec(i: int, row: TraceRow, not_before: datetime, rng: random.Random, *, width: int) -> dict:
    kind = "inference" if row.gpus <= 8 and rng.random() < 0.15 else "training"
    hours = round(min(max(row.duration_s / 3600, MIN_HOURS), MAX_HOURS), 4)
    source = "itp" if row.source == TRACES[0] else "ali"
    shape = _shape(kind, row, hours, rng)
    spec = {
        "name": f"{source}-{'train' if kind == 'training' else 'serve'}-{i:0{width}d}",
        "team": rng.choice(TEAMS),
        "kind": kind,
        "gpus": row.gpus,
        "gpu_types": _gpu_types(row, rng, managed=shape["managed"]),
        "duration_hours": hours,
        "not_before": not_before,
        "deadline": _deadline(not_before, hours, rng),
        "priority": _draw(PRIORITY_MIX, rng),
    }
    return spec | _policy(kind, rng, managed=shape["managed"]) | shape


def _draw(mix: dict, rng: random.Random):
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _gpu_types(row: TraceRow, rng: random.Random, *, managed: bool) -> list[str]:
    codes = [code for code in row.gpu_type.split("|") if code]
    if not codes:
        mix = MANAGED_MIX if managed else SMALL_MIX if row.gpu_milli < 1000 else PRIMARY_MIX
        reference = _draw(mix, rng)
        extra = [alt for alt, p in ALTERNATIVES.get(reference, {}).items() if rng.random() < p]
        return [reference, *extra]
    known = {ALIBABA_TYPES[code] for code in codes if code in ALIBABA_TYPES}
    drawn = [_draw(PRIMARY_MIX, rng) for code in sorted(set(codes)) if code not in ALIBABA_TYPES]
    ordered = [name for name in ALIBABA_ORDER if name in known] + drawn
    return list(dict.fromkeys(ordered))


def _deadline(not_before: datetime, hours: float, rng: random.Random) -> datetime:
    window_s = hours * 3600 * rng.uniform(*SLACK) + MARGIN.total_seconds()
    return not_before + timedelta(minutes=math.ceil(window_s / 60))


def _policy(kind: str, rng: random.Random, *, managed: bool) -> dict:
    tag = _draw(COMPLIANCE_MIX, rng)
    regions = []
    if tag not in ("gdpr", "fedramp") and not managed:
        roll = rng.random()
        regions = ["us"] if roll < 0.10 else ["eu"] if roll < 0.15 else []
    policy = {"compliance": [tag] if tag else [], "regions": regions}
    if kind == "training" and rng.random() < 0.30:
        eu_bound = tag == "gdpr" or regions == ["eu"]
        location = _draw(EU_DATA_LOCATIONS if eu_bound else DATA_LOCATIONS, rng)
        policy["data"] = {"location": location, "size_gb": round(10 ** rng.uniform(1, math.log10(5000)))}
    return policy


def _shape(kind: str, row: TraceRow, hours: float, rng: random.Random) -> dict:
    shards, managed, gpus = 1, False, row.gpus
    if kind == "inference" and gpus > 1 and rng.random() < 0.5:
        shards = gpus // rng.choice([g for g in (1, 2, 4) if gpus % g == 0 and gpus // g > 1])
    elif kind == "inference":
        managed = not row.gpu_type and rng.random() < 0.2
    serving = kind == "inference" and shards == 1
    interruptible = not serving and rng.random() < (0.4 if hours <= 8 else 0.05)
    return {"shards": shards, "managed": managed, "interruptible": interruptible}


def _link_pipelines(specs: list[dict], rng: random.Random) -> None:
    """Train -> serve pairs: see `after` in the module docstring."""
    for i, spec in enumerate(specs):
        if spec["kind"] != "inference" or rng.random() >= 0.25:
            continue
        for earlier in reversed(specs[:i]):
            ends = earlier["not_before"] + timedelta(hours=earlier["duration_hours"])
            same_team = earlier["team"] == spec["team"]
            if earlier["kind"] == "training" and same_team and ends <= spec["not_before"]:
                spec["after"] = [earlier["name"]]
                break


# ---------------------------------------------------------------------------------------
# Job files


def write_jobs(jobs: Iterable[JobSpec], path: str | Path) -> None:
    """Write a list of job specs as JSON (`.json`) or YAML (`.yaml`/`.yml`)."""
    path = Path(path)
    documents = [job.model_dump(mode="json", exclude_none=True) for job in jobs]
    if _format(path) == "json":
        path.write_text(json.dumps(documents, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(documents, sort_keys=False, allow_unicode=True))


def load_jobs(path: str | Path) -> list[JobSpec]:
    """Read a JSON or YAML list of job specs (or a single mapping), strictly.

    Raises ValueError naming the file, the item index and the offending field(s); an
    unknown field is an error, and so is a (team, name) pair used twice in the file.
    """
    path = Path(path)
    document = _read(path)
    items = [] if document is None else document if isinstance(document, list) else [document]
    jobs, seen = [], {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: item {index}: expected a job mapping, got {type(item).__name__}")
        try:
            job = JobSpec.model_validate(item)
        except ValidationError as exc:
            label = f"item {index} ({item.get('name', 'unnamed')})"
            raise ValueError(f"{path}: {label}: {_describe(exc)}") from exc
        if (job.team, job.name) in seen:
            raise ValueError(f"{path}: item {index}: field 'name': {job.name!r} already used by item "
                             f"{seen[job.team, job.name]} of team {job.team!r}")
        seen[job.team, job.name] = index
        jobs.append(job)
    return jobs


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ValueError(f"{path}: unsupported job file suffix {suffix!r}; use .json, .yaml or .yml")


def _read(path: Path):
    text = path.read_text()
    try:
        return json.loads(text) if _format(path) == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {_format(path).upper()}: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"field '{field}': {message}" if field else message)
    return "; ".join(parts)
