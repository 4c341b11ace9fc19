"""Liveness, readiness and metrics: no key needed (probes and scrapers carry none)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import store_of
from api.errors import problem, problem_doc
from api.routers.catalog import DATA_AS_OF
from scheduler.catalog import load_catalog
from scheduler.errors import StoreUnavailable

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready to serve: the store and broker answer, the catalog is loaded (with its age)",
            responses=problem_doc(503, "Not ready; `checks` says which part"))
def readyz(request: Request):
    checks: dict[str, dict] = {}
    try:
        checks["store"] = {"ok": bool(store_of(request).ping())}
    except (StoreUnavailable, OSError) as exc:
        checks["store"] = {"ok": False, "error": type(exc).__name__}
    # Celery's broker is the store's Redis (DESIGN §5): it answers when the store does.
    checks["broker"] = {"ok": checks["store"]["ok"], "same_redis_as_store": True}
    try:
        catalog = load_catalog()
        age = (datetime.now(timezone.utc).date() - DATA_AS_OF).days
        checks["catalog"] = {"ok": bool(catalog.offers), "offers": len(catalog.offers),
                             "version": catalog.version, "data_as_of": DATA_AS_OF.isoformat(), "age_days": age}
    except Exception as exc:  # a broken data file must show here, not crash the probe
        checks["catalog"] = {"ok": False, "error": type(exc).__name__}
    if all(c["ok"] for c in checks.values()):
        return {"status": "ready", "checks": checks}
    failing = ", ".join(name for name, c in checks.items() if not c["ok"])
    return problem(503, "Not ready", f"not ready: {failing}", code="not-ready", instance="/readyz", checks=checks,
                   headers={"Retry-After": "5"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
