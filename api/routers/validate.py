"""`POST /v1/jobs:validate`: a dry run. The normalised spec and every offer considered, with
the reason each was rejected; nothing is stored or queued (SkyPilot's dry run)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter

from scheduler.catalog import load_catalog
from scheduler.models import JobSpec
from scheduler.planning import build_problem
from scheduler.reasons import consider

router = APIRouter(prefix="/v1", tags=["jobs"])

EXAMPLE = {
    "name": "llama2-70b-pretrain", "team": "nlp", "kind": "training", "gpus": 64, "gpu_types": ["H100"],
    "duration_hours": 672, "not_before": "2026-11-23T00:00:00Z", "deadline": "2026-12-28T00:00:00Z",
}


@router.post("/jobs:validate", summary="Dry run: normalised spec, candidate offers and reasons")
def validate_job(spec: JobSpec, limit: int = 20) -> dict:
    now = datetime.now(timezone.utc)
    problem = build_problem([spec], now=now, catalog=load_catalog())
    rows = consider(problem, spec)
    candidates = sorted((r for r in rows if r.code is None), key=lambda r: r.job_cost)
    rejected: dict[str, int] = {}
    for r in rows:
        if r.code:
            rejected[r.code] = rejected.get(r.code, 0) + 1
    return {
        "spec": spec.model_dump(mode="json"),
        "candidates": [{"offer_id": r.offer.id, "architecture": r.offer.architecture.value,
                        "market": r.offer.market.value, "hours": round(r.est.hours, 3),
                        "cost": round(r.job_cost, 2)} for r in candidates[:max(1, min(limit, 200))]],
        "candidate_count": len(candidates),
        "rejected": dict(sorted(rejected.items(), key=lambda kv: -kv[1])),
    }


validate_job.__doc__ = f"Example body: {EXAMPLE}"
