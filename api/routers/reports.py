"""Reports: planned against actual cost, per team."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, StoreDep
from api.errors import problem_doc
from scheduler import reports

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/cost", summary="Planned vs actual cost per team (submitters: their own team)",
            responses=problem_doc(403, "A submitter asked for another team"))
def cost(who: CurrentPrincipal, store: StoreDep,
         team: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")] = None,
         since: Annotated[datetime | None, Query(description="only launches due at or after this time")] = None,
         ) -> dict:
    """Actual cost is what the launches cost (the provider's bill where it states one); jobs still
    running count so far. Every attempt counts, a preempted one too."""
    return reports.cost_report(store, who, team, since)
