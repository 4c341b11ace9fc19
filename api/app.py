"""The FastAPI application: thin routers over the scheduler's services."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors
from api.routers import catalog, validate


def create_app() -> FastAPI:
    # FastAPIOffline serves Swagger UI and ReDoc assets itself: there is no CDN offline.
    app = FastAPIOffline(title="cloudsched", version="0.1.0",
                         description="Place GPU jobs across centralized and distributed clouds at minimum cost.")
    errors.install(app)
    app.include_router(catalog.router)
    app.include_router(validate.router)

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    return app
