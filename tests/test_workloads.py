"""Trace-driven job batches and job-file I/O (scheduler/workloads.py, examples/)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.models import NAME_PATTERN, JobKind
from scheduler.workloads import (
    MARGIN,
    TRACE_CHOICES,
    TRACES,
    WINDOW,
    generate_jobs,
    load_jobs,
    trace_rows,
    write_jobs,
)

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CATALOG_NAMES = {"H100", "H200", "A100", "A100-80GB", "L40S", "L4", "A10", "T4", "V100",
                 "V100-32GB", "RTX4090", "RTXA6000", "B200"}


def raw_rows(trace: str) -> list[dict]:
    text = resources.files("scheduler").joinpath("data", "traces", f"{trace}.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("trace", TRACE_CHOICES)
def test_same_inputs_give_the_same_batch(trace):
    first = generate_jobs(300, seed=7, now=NOW, trace=trace)
    assert first == generate_jobs(300, seed=7, now=NOW, trace=trace)
    assert first != generate_jobs(300, seed=8, now=NOW, trace=trace)


@pytest.mark.parametrize("trace", TRACE_CHOICES)
def test_generated_jobs_are_valid_and_feasible(trace):
    jobs = generate_jobs(2000, seed=0, now=NOW, trace=trace)
    assert len(jobs) == 2000
    assert len({job.name for job in jobs}) == len(jobs)
    for job in jobs:
        assert re.fullmatch(NAME_PATTERN, job.name)
        assert set(job.gpu_types) <= CATALOG_NAMES, job.gpu_types
        assert NOW <= job.not_before <= NOW + WINDOW
        assert job.deadline - job.not_before >= timedelta(hours=job.duration_hours) + MARGIN
        assert 0.25 <= job.duration_hours <= 14 * 24
        assert job.gpus % job.shards == 0
        if "gdpr" in job.compliance:
            assert job.regions in ([], ["eu"])
        if job.managed:
            assert job.kind is JobKind.INFERENCE and job.shards == 1
            assert job.gpu_types[0] in {"A100", "H100", "L40S"} and not job.regions


@pytest.mark.parametrize("trace", TRACES)
def test_gpus_durations_and_order_come_from_the_trace(trace):
    rows = raw_rows(trace)[:1500]
    jobs = generate_jobs(1500, seed=3, now=NOW, trace=trace)
    for row, job, used in zip(rows, jobs, trace_rows(1500, trace)):
        assert used.job_id == row["job_id"]
        assert job.gpus == int(row["num_gpus"])
        expected = min(max(int(row["duration_s"]) / 3600, 0.25), 14 * 24)
        assert job.duration_hours == pytest.approx(expected, abs=1e-4)
    assert [job.not_before for job in jobs] == sorted(job.not_before for job in jobs)


def test_mixed_interleaves_both_traces_by_time():
    rows = trace_rows(8101, "mixed")
    assert sorted(row.job_id for row in rows) == sorted(
        r["job_id"] for trace in TRACES for r in raw_rows(trace))
    assert [row.submit_s for row in rows] == sorted(row.submit_s for row in rows)
    first_half = {row.source for row in rows[:500]}
    assert first_half == set(TRACES)


def test_itp_gpu_types_are_drawn_and_alibaba_constraints_are_mapped():
    jobs = generate_jobs(3101, seed=0, now=NOW, trace="alibaba_gpu_v2023")
    for row, job in zip(raw_rows("alibaba_gpu_v2023"), jobs):
        if row["gpu_type"] == "V100M16|V100M32":
            assert job.gpu_types == ["V100", "V100-32GB"]
        elif row["gpu_type"] == "T4":
            assert job.gpu_types == ["T4"]
    itp = generate_jobs(2000, seed=0, now=NOW, trace="microsoft_itp_cluster04")
    references = [job.gpu_types[0] for job in itp]
    assert 0.28 < references.count("H100") / len(references) < 0.42


def test_more_jobs_than_rows_cycle_with_a_time_shift():
    jobs = generate_jobs(10_000, seed=0, now=NOW, trace="microsoft_itp_cluster04")
    assert len({job.name for job in jobs}) == 10_000
    assert [job.gpus for job in jobs[5000:5100]] == [job.gpus for job in jobs[:100]]
    assert jobs[4999].not_before <= jobs[5000].not_before <= NOW + WINDOW
    assert [job.not_before for job in jobs] == sorted(job.not_before for job in jobs)


def test_pipelines_are_acyclic_same_team_and_feasible():
    jobs = generate_jobs(3000, seed=1, now=NOW)
    index = {job.name: i for i, job in enumerate(jobs)}
    linked = [job for job in jobs if job.after]
    assert linked, "expected a few train -> serve pairs"
    for job in linked:
        (parent_name,) = job.after
        parent = jobs[index[parent_name]]
        assert index[parent_name] < index[job.name]
        assert parent.team == job.team and parent.kind is JobKind.TRAINING
        assert job.kind is JobKind.INFERENCE
        assert parent.not_before + timedelta(hours=parent.duration_hours) <= job.not_before


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 400), seed=st.integers(0, 2**32), trace=st.sampled_from(TRACE_CHOICES),
       minute=st.integers(0, 60 * 24 * 365))
def test_any_batch_is_valid_and_feasible(n, seed, trace, minute):
    now = NOW + timedelta(minutes=minute)
    jobs = generate_jobs(n, seed=seed, now=now, trace=trace)
    assert len(jobs) == n
    for job in jobs:
        assert now <= job.not_before <= now + WINDOW
        assert job.deadline - job.not_before >= timedelta(hours=job.duration_hours)


def test_naive_now_is_utc_and_unknown_trace_is_refused():
    naive = generate_jobs(5, seed=0, now=NOW.replace(tzinfo=None))
    assert naive == generate_jobs(5, seed=0, now=NOW)
    with pytest.raises(ValueError, match="unknown trace"):
        generate_jobs(5, now=NOW, trace="philly")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_write_then_load_round_trips(tmp_path, suffix):
    jobs = generate_jobs(200, seed=5, now=NOW) + load_jobs(EXAMPLES / "hybrid-pipeline.yaml")
    path = tmp_path / f"batch{suffix}"
    write_jobs(jobs, path)
    assert load_jobs(path) == jobs


def test_json_file_holds_the_exclude_none_dump(tmp_path):
    jobs = generate_jobs(3, seed=0, now=NOW)
    write_jobs(jobs, tmp_path / "jobs.json")
    documents = json.loads((tmp_path / "jobs.json").read_text())
    assert documents == [job.model_dump(mode="json", exclude_none=True) for job in jobs]
    assert documents[0]["not_before"].endswith("Z")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_file_loads(path):
    jobs = load_jobs(path)
    assert jobs
    for job in jobs:
        assert job.not_before >= NOW


def test_examples_show_what_the_readme_says():
    (llama,) = load_jobs(EXAMPLES / "llama2-70b.yaml")
    assert (llama.gpus, llama.gpu_types, llama.duration_hours) == (64, ["H100"], 672)
    assert llama.deadline - llama.not_before == timedelta(days=35) and not llama.compliance
    train, serve = load_jobs(EXAMPLES / "hybrid-pipeline.yaml")
    assert serve.after == [train.name] and serve.managed and serve.compliance == ["hipaa"]
    assert train.data.location == "aws:us-east-1"
    week = {job.name: job for job in load_jobs(EXAMPLES / "mixed-week.yaml")}
    assert len(week) == 10
    rush = week["rush-llm-ablation"]
    assert rush.deadline - rush.not_before < timedelta(hours=rush.duration_hours)
    assert week["gb200-trial"].gpu_types == ["GB200"]
    assert any(job.shards == 4 for job in week.values())
    assert any(job.max_hourly_cost for job in week.values())
    assert any("gdpr" in job.compliance and job.regions == ["eu"] for job in week.values())
    assert any("fedramp" in job.compliance for job in week.values())


GOOD = {"name": "ok", "team": "nlp", "gpus": 1, "gpu_types": ["H100"], "duration_hours": 1,
        "deadline": "2026-11-24T00:00:00Z"}


@pytest.mark.parametrize("bad, field, words", [
    ({"gpuss": 2}, "gpuss", "unknown field"),
    ({"gpus": 0}, "gpus", "greater than or equal to 1"),
    ({"gpus": "eight"}, "gpus", "integer"),
    ({"data": {"location": "aws:us-east-1", "size": 3}}, "data.size", "unknown field"),
])
def test_load_errors_name_the_file_the_item_and_the_field(tmp_path, bad, field, words):
    path = tmp_path / "jobs.yaml"
    path.write_text(json.dumps([GOOD, {**GOOD, "name": "broken", **bad}]))
    with pytest.raises(ValueError) as info:
        load_jobs(path)
    message = str(info.value)
    assert str(path) in message and "item 1 (broken)" in message
    assert f"field '{field}'" in message and words in message


def test_load_accepts_a_single_mapping_and_refuses_bad_files(tmp_path):
    single = tmp_path / "job.json"
    single.write_text(json.dumps(GOOD))
    assert [job.name for job in load_jobs(single)] == ["ok"]
    twice = tmp_path / "twice.yaml"
    twice.write_text(json.dumps([GOOD, GOOD]))
    with pytest.raises(ValueError, match=r"item 1: field 'name': 'ok' already used"):
        load_jobs(twice)
    for name, text, words in [("a.yaml", "- [1, 2]\n", "item 0: expected a job mapping"),
                              ("b.yaml", "- {name: [\n", "not valid YAML"),
                              ("c.txt", "[]", "unsupported job file suffix")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=words):
            load_jobs(tmp_path / name)


def test_every_generated_gpu_type_has_an_offer():
    from scheduler.catalog import load_catalog

    sold = {offer.gpu_type for offer in load_catalog().offers}
    emitted = {name for trace in TRACE_CHOICES
               for job in generate_jobs(3000, seed=0, now=NOW, trace=trace) for name in job.gpu_types}
    assert emitted <= sold, emitted - sold
