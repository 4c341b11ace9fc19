"""`POST /v1/jobs:validate`: a dry run. The normalised spec and every offer considered, with
the reason each was rejected; nothing is stored or queued (SkyPilot's dry run)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query

from api.bodies import SPEC_BODY, SpecBody
from scheduler.catalog import load_catalog
from scheduler.planning import build_problem
from scheduler.reasons import consider

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.post("/jobs:validate", summary="Dry run: normalised spec, candidate offers and reasons",
             openapi_extra=SPEC_BODY)
def validate_job(body: SpecBody, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
    """The same body as `POST /v1/jobs` (JSON or YAML); nothing is stored."""
    spec, _ = body
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
                        "cost": round(r.job_cost, 2)} for r in candidates[:limit]],
        "candidate_count": len(candidates),
        "rejected": dict(sorted(rejected.items(), key=lambda kv: -kv[1])),
    }
