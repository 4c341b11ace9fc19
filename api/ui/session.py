"""The review page's session: a signed cookie naming the API key it was opened with, and its CSRF token.

Signing in posts an API key once; the cookie then holds the key's id (the first 16 hex
digits of its SHA-256, as `cloudsched keys list` shows it) — never the key — plus a random
CSRF token (forms carry it masked afresh: `mask_csrf`) and the time it was issued, signed
with HMAC-SHA256 (the standard library: no dependency beyond what the API already has).
Every request looks the key id up again, so revoking the key ends the session at the next click.

The signing secret is `CLOUDSCHED_UI_SESSION_SECRET`, else one generated once and kept in
`<data_dir>/ui-session-secret` (mode 0600), so sessions survive a restart and every process
on the same data directory agrees on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from scheduler.settings import Settings

COOKIE = "cloudsched_ui"
LOGIN_CSRF_COOKIE = "cloudsched_ui_login"  # double-submit token of the sign-in form (no session yet)
COOKIE_PATH = "/ui"
MAX_AGE_S = 12 * 3600  # a working day: sign in again tomorrow
SECRET_FILE = "ui-session-secret"


@dataclass(frozen=True)
class Session:
    key_id: str
    csrf: str
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Turns a `Session` into a cookie value and back; a tampered, foreign or expired cookie reads as None."""

    def __init__(self, secret: bytes, max_age_s: int = MAX_AGE_S, clock=time.time):
        if len(secret) < 32:
            raise ValueError("the session secret must have at least 32 bytes")
        self._key = hashlib.sha256(b"cloudsched-ui-session\0" + secret).digest()
        self.max_age_s, self._clock = max_age_s, clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def new(self, key_id: str) -> Session:
        return Session(key_id=key_id, csrf=secrets.token_urlsafe(24), issued_at=int(self._clock()))

    def dumps(self, session: Session) -> str:
        payload = _b64(json.dumps({"k": session.key_id, "c": session.csrf, "t": session.issued_at},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None) -> Session | None:
        if not value or value.count(".") != 1:
            return None
        payload, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(key_id=str(data["k"]), csrf=str(data["c"]), issued_at=int(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - session.issued_at < self.max_age_s:
            return None
        return session


def mask_csrf(token: str) -> str:
    """The token as a form carries it: a fresh random pad, then the token XOR the pad.

    Pages go out gzip'd, and some repeat what the caller sent (an id in an error, the sign-in
    form's `next`); a secret that is the same bytes in every page could then be read from the
    compressed sizes (BREACH). Masked, no two pages carry the same bytes.
    """
    raw = token.encode()
    pad = secrets.token_bytes(len(raw))
    return _b64(pad + bytes(a ^ b for a, b in zip(raw, pad)))


def _unmask(given: str) -> str | None:
    try:
        data = _unb64(given)
    except ValueError:
        return None
    half = len(data) // 2
    if not half or len(data) % 2:
        return None
    try:
        return bytes(a ^ b for a, b in zip(data[:half], data[half:])).decode("ascii")
    except UnicodeDecodeError:
        return None


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Whether a form's (masked) token is the session's."""
    token = _unmask(given) if given else None
    return bool(expected) and token is not None and hmac.compare_digest(expected.encode(), token.encode())


def load_secret(settings: Settings) -> bytes:
    """The configured secret, else the one kept in the data directory (created on first use)."""
    if settings.ui_session_secret is not None:
        return settings.ui_session_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_urlsafe(48).encode())
    try:  # link() never replaces: of two processes starting at once, both end up with the first one's secret
        os.link(fresh, path)
    except FileExistsError:
        pass
    finally:
        fresh.unlink()
    return path.read_bytes().strip()
