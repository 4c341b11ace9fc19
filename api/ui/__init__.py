"""The ops review page (issue 5): server-rendered HTML under /ui on the API's keys and roles.

`install(app)` adds the routes and the page's own assets (no CDN: every file is served here).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.ui.render import STATIC_DIR, STATIC_PREFIX
from api.ui.routes import router


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="ui-static")
