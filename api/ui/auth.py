"""Who is looking at a /ui page, and how the page's errors are answered.

A page is opened with the session cookie a sign-in left (see `session`), or — for scripts,
`curl` and the access-matrix test — with the API's own `Authorization: Bearer <key>`,
authenticated by the API's `current_principal`. Only the cookie is sent by browsers on
their own, so only cookie-authenticated POSTs must carry the session's CSRF token.

Errors follow the `Accept` header: a browser (`text/html`) gets a page — or, without a
valid session, a redirect to `/ui/login` — while any other client gets the API's RFC 9457
problem+json, from the same error map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from api.deps import Credentials, SettingsDep, StoreDep, count_request, current_principal
from api.errors import error_response
from api.ui import session as sessions
from api.ui.render import SECURITY_HEADERS, page
from scheduler.errors import CloudschedError, Forbidden, Unauthenticated
from scheduler.records import Principal

LOGIN_PATH = "/ui/login"
DECIDERS = ("ops", "admin")  # the services enforce it; the page hides the form and refuses the POST early


class SignInRequired(Unauthenticated):
    """No session, or one that ended (expired, tampered with, or its key revoked)."""

    WHY = {"signin": "Sign in with an API key.",
           "ended": "Your session has ended: sign in again.",
           "revoked": "The API key of this session was revoked: sign in with another one."}

    def __init__(self, why: str = "signin"):
        super().__init__(self.WHY[why])
        self.why = why


class CsrfRejected(Forbidden):
    code = "csrf"

    def __init__(self):
        super().__init__("the form's CSRF token is missing or belongs to another session: reload the page")


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    session: sessions.Session | None  # None: authenticated by an Authorization header

    @property
    def csrf(self) -> str:
        """The session's token for a form, masked afresh on every use."""
        return sessions.mask_csrf(self.session.csrf) if self.session else ""

    @property
    def can_decide(self) -> bool:
        return self.principal.role in DECIDERS


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def signer(request: Request) -> sessions.SessionSigner:
    state = request.app.state
    if getattr(state, "ui_signer", None) is None:  # made on first use: building the app touches no file
        state.ui_signer = sessions.SessionSigner(sessions.load_secret(state.settings))
    return state.ui_signer


def current_viewer(request: Request, store: StoreDep, settings: SettingsDep, credentials: Credentials) -> Viewer:
    if credentials is not None:
        return Viewer(current_principal(request, store, settings, credentials), None)
    raw = request.cookies.get(sessions.COOKIE)
    if not raw:
        raise SignInRequired()
    session = signer(request).loads(raw)
    if session is None:
        raise SignInRequired("ended")
    who = store.principal_for_key_id(session.key_id)
    if who is None:
        raise SignInRequired("revoked")
    count_request(request, store, settings, who)  # the API's count: 429 beyond the limit, the name for logs
    return Viewer(who, session)


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]


def check_csrf(viewer: Viewer, token: str | None) -> None:
    """A cookie-authenticated form must carry its session's token."""
    if viewer.session is not None and not sessions.csrf_matches(viewer.session.csrf, token):
        raise CsrfRejected()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a /ui path of this app only (no open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/plans"


def sign_in_redirect(request: Request, why: str) -> Response:
    """To the sign-in form, which comes back here (a GET page) or to the plan list afterwards."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = safe_next(back if request.method == "GET" else None)
    response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='/')}&why={why}", status_code=303,
                                headers=SECURITY_HEADERS)
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH)
    return response


def error_page(request: Request, exc: CloudschedError, viewer: Viewer | None = None) -> Response:
    """The error as a page, with the status the API would answer."""
    api_answer = error_response(exc, request.url.path)
    context = {"viewer": viewer, "status": api_answer.status_code, "message": exc.message}
    return page(request, "ui/error.html", context, status=api_answer.status_code)


class UiRoute(APIRoute):
    """A route of the page: errors as pages (or a sign-in redirect) for browsers, problem+json for the rest."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except CloudschedError as exc:
                if not wants_html(request):
                    raise  # the app's error map answers problem+json
                if isinstance(exc, SignInRequired):
                    return sign_in_redirect(request, exc.why)
                return error_page(request, exc)

        return route
