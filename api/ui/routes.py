"""The ops review page under /ui: sign in, plans, a plan (with its decision form), why?, a job.

Thin like the API's routers: read the request, call `pages` (reads) or the services
(approve, reject), answer with a page or a redirect (POST → 303 → GET, so a reload never
re-submits a decision).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse

from api.deps import StoreDep
from api.errors import error_response
from api.ui import pages
from api.ui import session as sessions
from api.ui.auth import (
    CsrfRejected,
    CurrentViewer,
    SignInRequired,
    UiRoute,
    Viewer,
    check_csrf,
    safe_next,
    signer,
    wants_html,
)
from api.ui.render import SECURITY_HEADERS, page
from scheduler import services
from scheduler.errors import CloudschedError, Forbidden, InvalidArgument
from scheduler.store_keys import key_id

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)

PlanId = Annotated[str, Path(max_length=128)]
JobId = Annotated[str, Path(max_length=64)]
FormText = Annotated[str, Form(max_length=4000)]


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _set_cookie(request: Request, response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=sessions.COOKIE_PATH, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


@router.get("")
def home() -> RedirectResponse:
    return _redirect("/ui/plans")


# -- signing in and out ------------------------------------------------------------------


def _login_page(request: Request, *, error: str = "", next_url: str = "/ui/plans", status: int = 200):
    token = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = page(request, "ui/login.html", {"viewer": None, "csrf": sessions.mask_csrf(token), "error": error,
                                               "next": next_url}, status=status)
    _set_cookie(request, response, sessions.LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None,
               why: Annotated[str | None, Query(max_length=20)] = None):
    notice = SignInRequired.WHY.get(why or "", "") if why != "signin" else ""
    return _login_page(request, error=notice, next_url=safe_next(next))


@router.post("/login")
def login(request: Request, store: StoreDep, api_key: FormText = "", csrf: FormText = "", next: FormText = ""):
    """The same key check as the API's; the session keeps the key's id, never the key."""
    if not sessions.csrf_matches(request.cookies.get(sessions.LOGIN_CSRF_COOKIE), csrf):
        raise CsrfRejected()
    key = api_key.strip()
    if store.principal_for_key(key) is None:
        return _login_page(request, error="That is not a valid API key of this installation (revoked or mistyped).",
                           next_url=safe_next(next), status=401)
    session = signer(request).new(key_id(key))
    response = _redirect(safe_next(next))
    _set_cookie(request, response, sessions.COOKIE, signer(request).dumps(session), max_age=sessions.MAX_AGE_S)
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.post("/logout")
def logout(request: Request, csrf: FormText = ""):
    raw = request.cookies.get(sessions.COOKIE)
    session = signer(request).loads(raw) if raw else None  # no secret needed (or made) without a cookie
    if session is not None and not sessions.csrf_matches(session.csrf, csrf):
        raise CsrfRejected()
    response = _redirect("/ui/login")
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH)
    return response


# -- plans ---------------------------------------------------------------------------------


@router.get("/plans")
def plans(request: Request, viewer: CurrentViewer, store: StoreDep,
          cursor: Annotated[str | None, Query(max_length=32)] = None):
    return page(request, "ui/plans.html", pages.plans_context(store, viewer, cursor))


def _plan_page(request: Request, viewer: Viewer, store, plan_id: str, *, sort: str = "start", desc: bool = False,
               notice: str = "", refusal: CloudschedError | None = None, comment: str = "", status: int = 200):
    context = pages.plan_context(store, viewer, plan_id, sort, desc)
    context.update(notice=notice, refusal=refusal, comment=comment)
    return page(request, "ui/plan.html", context, status=status)


@router.get("/plans/{plan_id}")
def plan(request: Request, plan_id: PlanId, viewer: CurrentViewer, store: StoreDep,
         sort: Annotated[str, Query(max_length=20)] = "start", desc: bool = False,
         decided: Annotated[str | None, Query(max_length=20)] = None):
    notice = {"approved": "Plan approved.", "rejected": "Plan rejected."}.get(decided or "", "")
    return _plan_page(request, viewer, store, plan_id, sort=sort, desc=desc, notice=notice)


@router.post("/plans/{plan_id}/decision")
def decide(request: Request, plan_id: PlanId, viewer: CurrentViewer, store: StoreDep, action: FormText = "",
           comment: FormText = "", fingerprint: Annotated[str, Form(max_length=128)] = "", csrf: FormText = ""):
    """Approve (with the fingerprint the reviewer saw) or reject (with a comment). A refusal — stale, expired,
    already decided, no comment — comes back on the plan page with the services' own words."""
    check_csrf(viewer, csrf)
    if not viewer.can_decide:
        raise Forbidden("only ops and admins approve or reject plans")
    try:
        if action == "approve":
            services.approve_plan(store, viewer.principal, plan_id, fingerprint, comment)
        elif action == "reject":
            services.reject_plan(store, viewer.principal, plan_id, comment)
        else:
            raise InvalidArgument("action", "must be 'approve' or 'reject'")
    except CloudschedError as exc:
        if not wants_html(request) or isinstance(exc, Forbidden):
            raise
        status = error_response(exc).status_code
        return _plan_page(request, viewer, store, plan_id, refusal=exc, comment=comment, status=status)
    return _redirect(f"/ui/plans/{plan_id}?decided={'approved' if action == 'approve' else 'rejected'}")


@router.get("/plans/{plan_id}/jobs/{job_id}")
def why(request: Request, plan_id: PlanId, job_id: JobId, viewer: CurrentViewer, store: StoreDep,
        show_all: Annotated[bool, Query(alias="all")] = False):
    """The why? panel as a page of its own (the plan page loads its `#why` part into a panel)."""
    return page(request, "ui/why.html", pages.why_context(store, viewer, plan_id, job_id, show_all))


# -- jobs ----------------------------------------------------------------------------------


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: JobId, viewer: CurrentViewer, store: StoreDep):
    return page(request, "ui/job.html", pages.job_context(store, viewer, job_id))
