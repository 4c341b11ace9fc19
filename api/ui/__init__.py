"""The ops review page (issue 5): server-rendered HTML under /ui on the API's keys and roles.

`install(app)` adds the routes and the page's own assets (no CDN: every file is served here),
and gzip for the responses under /ui only: the page of a 1,000-job plan is ~2 MB of HTML that
compresses about twelvefold, while the /v1 API answers as the app itself decides.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.ui.render import STATIC_DIR, STATIC_PREFIX
from api.ui.routes import router

PREFIX = "/ui"
GZIP_MIN_BYTES = 1024  # below this the gzip header and the work cost more than they save
GZIP_LEVEL = 6  # a 1,000-job plan page (2.2 MB): 187 KiB in 17 ms; level 9: 177 KiB in 53 ms


class GZipUnder:
    """Starlette's `GZipMiddleware` for the paths under one prefix; every other request passes untouched."""

    def __init__(self, app: ASGIApp, prefix: str, minimum_size: int = GZIP_MIN_BYTES,
                 compresslevel: int = GZIP_LEVEL):
        self.app, self.prefix = app, prefix
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=compresslevel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(GZipUnder, prefix=PREFIX)
