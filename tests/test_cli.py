"""`cloudsched` end to end, as a user runs it: the installed console script on example files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.validate import validate
from scheduler.catalog import load_catalog
from scheduler.models import PlanDocument
from scheduler.planning import build_problem
from scheduler.workloads import load_jobs

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-23T00:00:00Z"


def cloudsched(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("cloudsched", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_solve_json_prints_only_a_valid_plan_document():
    jobs_file = ROOT / "examples" / "mixed-week.yaml"
    run = cloudsched("solve", "--jobs", str(jobs_file), "--now", NOW, "--time-limit", "5", "--json")
    assert run.returncode == 0, run.stderr
    doc = PlanDocument.model_validate_json(run.stdout)  # stdout is the document and nothing else
    jobs = load_jobs(jobs_file)
    from datetime import datetime
    problem = build_problem(jobs, now=datetime.fromisoformat(NOW.replace("Z", "+00:00")), catalog=load_catalog())
    assert validate(problem, doc) == []
    assert {a.job_name for a in doc.assignments} | {u.job_name for u in doc.unplaced} == {j.name for j in jobs}
    reasons = {u.job_name: u.reason.value for u in doc.unplaced}
    assert reasons == {"gov-detector-train": "ComplianceNoMatch", "rush-llm-ablation": "DeadlineInfeasible",
                       "gb200-trial": "NoOffer"}
    assert doc.summary.total_cost < doc.summary.baseline_centralized_cost


def test_solve_table_shows_totals_savings_and_reasons():
    run = cloudsched("solve", "--jobs", str(ROOT / "examples" / "mixed-week.yaml"), "--now", NOW,
                     "--time-limit", "5")
    assert run.returncode == 0, run.stderr
    assert "vs all-centralized" in run.stdout and "saves" in run.stdout
    assert "DeadlineInfeasible" in run.stdout and "rush-llm-ablation" in run.stdout


def test_solve_with_offers_file_replaces_the_catalog(tmp_path):
    offers = [{
        "id": "ionet:us:H100x8:on-demand", "provider": "ionet", "architecture": "distributed", "region": "us",
        "geo": "us", "gpu_type": "H100", "gpus_per_node": 8, "price_per_node_hour": 32.0, "market": "on-demand",
        "capacity_gpus": 64, "interconnect": "roce", "certifications": [], "egress_usd_per_gb": 0.0,
        "preemption_rate_per_hour": 0.0, "managed": False,
    }]
    path = tmp_path / "offers.json"
    path.write_text(json.dumps(offers))
    run = cloudsched("solve", "--jobs", str(ROOT / "examples" / "llama2-70b.yaml"), "--offers", str(path),
                     "--now", NOW, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    (assignment,) = doc["assignments"]
    assert assignment["segments"][0]["offer_id"] == "ionet:us:H100x8:on-demand"
    assert assignment["total_cost"] == pytest.approx(176_624, abs=1)  # the seed calibration (§4.3)


def test_bad_job_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  team: a\n  gpus: 0\n  gpu_types: [H100]\n  duration_hours: 1\n"
                   "  deadline: '2026-12-01T00:00:00Z'\n")
    run = cloudsched("solve", "--jobs", str(bad), "--now", NOW)
    assert run.returncode == 2
    assert "gpus" in run.stderr


def test_explain_marks_the_chosen_offer_and_rejections():
    run = cloudsched("explain", "llama2-70b-pretrain", "--jobs", str(ROOT / "examples" / "llama2-70b.yaml"),
                     "--now", NOW, "--time-limit", "5")
    assert run.returncode == 0, run.stderr
    assert "✔" in run.stdout
    assert "SpotNotAllowed" in run.stdout  # spot H100 offers are rejected for this job, with the reason
    assert "offers of other GPU types not shown" in run.stdout


def test_offers_sorted_by_price_per_gpu_hour():
    run = cloudsched("offers", "--gpu", "H100:8", "--json", "--limit", "50")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    prices = [r["price_per_node_hour"] / r["gpus_per_node"] for r in rows]
    assert rows and prices == sorted(prices)
    assert all(r["gpu_type"] == "H100" for r in rows)
