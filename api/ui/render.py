"""Templates of the review page: one Jinja environment (autoescape on), its filters, and HTML responses.

Every page is sent with a Content-Security-Policy that allows only the app's own scripts,
styles and images (there is no CDN, and no inline script or style), no framing (the decision
form must not be clickjacked) and `Cache-Control: no-store` (pages show one caller's view).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

API_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = API_DIR / "templates"
STATIC_DIR = API_DIR / "static" / "ui"
STATIC_PREFIX = "/ui/static"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def money(value: float | None) -> str:
    """`$1,234.56`; negative amounts as `-$1,234.56`; None as an en dash."""
    if value is None:
        return "–"
    return f"{'-' if value < 0 else ''}${abs(value):,.2f}"


def signed_money(value: float | None) -> str:
    """`+$12.00` / `-$3.50`: a difference."""
    if value is None:
        return "–"
    return f"{'+' if value >= 0 else '-'}${abs(value):,.2f}"


def short_time(value: str | datetime | None) -> str:
    """`11-23 04:00` (UTC) from a plan timestamp or a datetime."""
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.strftime("%m-%d %H:%M")
    return value[5:16].replace("T", " ")


def iso(value: str | datetime | None) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return value or ""


def _asset_versions() -> dict[str, str]:
    """`ui.css` -> `ui.css?v=<hash>`: browsers may cache assets for as long as their content stays."""
    return {p.name: f"{STATIC_PREFIX}/{p.name}?v={hashlib.sha256(p.read_bytes()).hexdigest()[:10]}"
            for p in STATIC_DIR.iterdir() if p.is_file()}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=money, signed_money=signed_money, short_time=short_time, iso=iso)
    env.globals["asset"] = _asset_versions()
    return env


ENV = _environment()


def render(name: str, **context) -> str:
    return ENV.get_template(name).render(**context)


def page(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
    """A full HTML page; `context` needs `viewer` (None on the sign-in and error pages)."""
    html = render(name, request=request, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
