"""Offers and providers: the catalog as the planner sees it."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query

from api.errors import ApiError
from scheduler.catalog import find_offers, load_catalog, parse_accelerator

router = APIRouter(prefix="/v1", tags=["catalog"])

# The newest dated source of the shipped prices (scheduler/data/catalog/README.md: the
# anycloud-sh/catalog commit of 2026-05-20); the SkyPilot files carry no dates.
DATA_AS_OF = date(2026, 5, 20)


@router.get("/offers", summary="Offers sorted by price per GPU-hour")
def list_offers(
    gpu: Annotated[str | None, Query(description="SkyPilot-style accelerator", examples=["H100:8"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    catalog = load_catalog()
    if gpu:
        try:
            name, count = parse_accelerator(gpu)
        except ValueError as exc:
            raise ApiError(422, "Invalid request", str(exc), "validation-error",
                           errors=[{"field": "gpu", "message": str(exc)}]) from exc
        offers = find_offers(catalog, name, count)
    else:
        offers = sorted(catalog.offers, key=lambda o: (o.price_per_gpu_hour, o.id))
    age = (datetime.now(timezone.utc).date() - DATA_AS_OF).days
    return {"catalog_version": catalog.version, "catalog_data_as_of": DATA_AS_OF.isoformat(),
            "catalog_age_days": age, "total": len(offers),
            "offers": [o.model_dump(mode="json") for o in offers[:limit]]}


@router.get("/providers", summary="Provider facts, each with its source")
def list_providers() -> dict:
    catalog = load_catalog()
    counts: dict[str, int] = {}
    for offer in catalog.offers:
        counts[offer.provider] = counts.get(offer.provider, 0) + 1
    return {"providers": [{"name": name, "offers": counts.get(name, 0), **facts.model_dump(mode="json")}
                          for name, facts in sorted(catalog.facts.items())]}
