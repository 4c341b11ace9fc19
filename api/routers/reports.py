"""Reports: planned against actual cost, per team."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, StoreDep
from api.errors import problem_doc
from scheduler import reports
from scheduler.errors import InvalidArgument
from scheduler.models import parse_utc

ISO_8601 = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?$"

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/cost", summary="Planned vs actual cost per team (submitters: their own team)",
            responses=problem_doc(403, "A submitter asked for another team"))
def cost(who: CurrentPrincipal, store: StoreDep,
         team: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")] = None,
         since: Annotated[str | None, Query(max_length=40, pattern=ISO_8601, examples=["2026-11-01T00:00:00Z"],
                                            description="only launches due at or after this time (ISO 8601)")] = None,
         ) -> dict:
    """Actual cost is what the launches cost (the provider's bill where it states one); jobs still
    running count so far. Every attempt counts, a preempted one too."""
    return reports.cost_report(store, who, team, _instant(since) if since else None)


def _instant(text: str) -> datetime:
    try:
        value = parse_utc(text)
    except ValueError:
        raise InvalidArgument("since", f"{text!r} is not a date or time (ISO 8601)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
