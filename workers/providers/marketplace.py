"""What the marketplace adapters (io.net, Vast.ai, RunPod) share: none of their APIs takes an idempotency key.

- **The label.** Every instance we create is named `cloudsched.<job_id>.<idempotency_key>` (`make_label`) and
  carries the same two values as environment variables (`label_env`). `adopt_or_create` looks the label up with
  one list call before it creates anything, on every attempt, the first included: after a lost response or a
  crash a worker cannot tell that it is retrying, so the lookup is what keeps a retry from buying a second machine.
- **One error table.** `classify` maps an HTTP status, else the provider's own words, onto the error tree of
  `scheduler.providers`; each adapter's `translate` feeds it, and `translating` applies that translate function to
  whatever is raised inside it, scrubbing the API key out of the message.
- **Exited containers.** Vast and RunPod report a stopped container with, at best, an exit code in a status text:
  `stopped_phase` reads it (0 → succeeded, else failed); a spot machine stopped without one was taken back, and an
  on-demand one is reported failed, because nothing says the command succeeded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from workers.providers.base import (
    TAG,
    TAG_JOB,
    AuthFailed,
    Handle,
    InvalidRequest,
    NoCapacity,
    Phase,
    ProviderError,
    QuotaExceeded,
    Throttled,
    Transient,
)

log = logging.getLogger(__name__)

LABEL_PREFIX = "cloudsched"
_SEP = "."
MAX_MESSAGE = 300


class NotFound(InvalidRequest):
    """The provider has no such instance (404, "not found", already deleted): `status` says GONE, `cancel` is silent."""

    code = "NotFound"


# -- the label ----------------------------------------------------------------------------


def make_label(job_id: str, idempotency_key: str) -> str:
    """`cloudsched.<job_id>.<key>`: the name or label that makes a launch findable again."""
    if not job_id or _SEP in job_id or not idempotency_key:
        raise InvalidRequest(f"cannot label job {job_id!r} with key {idempotency_key!r}: "
                             f"both are needed and the job id may not contain {_SEP!r}")
    return f"{LABEL_PREFIX}{_SEP}{job_id}{_SEP}{idempotency_key}"


def parse_label(text: str | None) -> tuple[str, str] | None:
    """(job_id, idempotency_key) of one of our labels; None for anything else."""
    prefix, _, rest = (text or "").partition(_SEP)
    job_id, _, key = rest.partition(_SEP)
    return (job_id, key) if prefix == LABEL_PREFIX and job_id and key else None


def label_env(job_id: str, idempotency_key: str) -> dict[str, str]:
    """The tags as environment variables (`CLOUDSCHED_KEY`, `CLOUDSCHED_JOB`), so the job can read them too."""
    return {TAG.upper().replace("-", "_"): idempotency_key, TAG_JOB.upper().replace("-", "_"): job_id}


def adopt_or_create(label: str, find: Callable[[str], Handle | None], create: Callable[[], Handle]) -> Handle:
    """The instance already carrying `label` if there is one, else a new one: the launch's idempotency."""
    found = find(label)
    if found is not None:
        log.info("launch adopts existing instance", extra={"provider": found.provider, "instance": found.id})
        return found
    return create()


# -- errors ---------------------------------------------------------------------------------


def require_key(key: str | None, env_key: str, provider: str) -> str:
    """The API key a client is built with: AuthFailed, before any call, if none was given or set in `env_key`."""
    if not key:
        raise AuthFailed(f"no API key: set {env_key}", provider=provider)
    return key


_AUTH = re.compile(r"unauthori[sz]ed|forbidden|invalid (?:api )?key|authenticat", re.I)
_THROTTLE = re.compile(r"rate.?limit|too many requests", re.I)
_ENDED = re.compile(r"not found|does not exist|no such (?:instance|pod|deployment)|no_such_instance"
                    r"|already (?:terminated|destroyed|deleted)", re.I)
_QUOTA = re.compile(r"balance|insufficient.(?:funds|credit)|not enough (?:funds|credit)|spend(?:ing)? limit|quota"
                    r"|payment required", re.I)
_CAPACITY = re.compile(r"no (?:longer )?(?:any )?(?:machines?|instances?|hosts?|gpus?|hardware|capacity|offers?)\b"
                       r"[^.]*available|not (?:enough|sufficient) (?:hardware|gpus?|capacity|machines?)"
                       r"|no longer available|not available|no_such_ask|out of (?:stock|capacity)|sold out", re.I)


def classify(provider: str, message: str, *, status: int | None = None,
             retry_after_s: float | None = None) -> ProviderError:
    """The error for an answer: its HTTP status first, then the provider's words (GraphQL errors have no status)."""
    text = " ".join(str(message).split())[:MAX_MESSAGE] or "no message"
    said = f"HTTP {status}: {text}" if status else text
    if status in (401, 403) or (status is None and _AUTH.search(text)):
        return AuthFailed(said, provider=provider)
    if status == 429 or (status is None and _THROTTLE.search(text)):
        return Throttled(said, provider=provider, retry_after_s=retry_after_s)
    if status is not None and (status >= 500 or status == 408):
        return Transient(said, provider=provider)
    if status == 404 or _ENDED.search(text):
        return NotFound(said, provider=provider)
    if status == 402 or _QUOTA.search(text):
        return QuotaExceeded(said, provider=provider)
    if status == 409 or _CAPACITY.search(text):
        return NoCapacity(said, provider=provider)
    return InvalidRequest(said, provider=provider)


def unexpected(provider: str, exc: Exception) -> ProviderError:
    """Anything an SDK raises outside its own error classes.

    A `ValueError` is the SDK refusing our input (an unknown GPU name): InvalidRequest. Anything else is an
    answer we could not read (a missing field): the call may have taken effect, so Transient, and the retry's
    label lookup finds what it created.
    """
    if isinstance(exc, ValueError) and type(exc).__name__ != "ValidationError":
        return InvalidRequest(str(exc)[:MAX_MESSAGE], provider=provider)
    return Transient(f"unexpected answer ({type(exc).__name__}: {str(exc)[:MAX_MESSAGE]})", provider=provider)


def timed_out(provider: str, exc: Exception) -> Transient:
    return Transient(f"no answer ({type(exc).__name__}); the call may have taken effect", provider=provider)


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@contextmanager
def translating(translate: Callable[[Exception], ProviderError], secret: str | None) -> Iterator[None]:
    """Run SDK calls: whatever they raise leaves as `translate(exc)`, with `secret` scrubbed from the message."""
    try:
        yield
    except Exception as exc:
        err = exc if isinstance(exc, ProviderError) else translate(exc)
        if secret and secret in err.message:
            err = type(err)(err.message.replace(secret, "***"), provider=err.provider, retry_after_s=err.retry_after_s)
        if err is exc:
            raise
        raise err from exc


# -- states ---------------------------------------------------------------------------------

_EXIT = re.compile(r"exit(?:ed)?(?: with)?(?: code)?\s*[:(]?\s*(-?\d+)", re.I)


def exit_code(text: str | None) -> int | None:
    """The exit code in a status text ("Exited (0) 5 s ago", "exit code 137"), if it has one."""
    found = _EXIT.search(text or "")
    return int(found.group(1)) if found else None


def stopped_phase(text: str | None, *, spot: bool) -> tuple[Phase, str]:
    """Phase of a container that is no longer running, from the provider's status text."""
    code = exit_code(text)
    said = (text or "").strip()[:MAX_MESSAGE]
    if code == 0:
        return Phase.SUCCEEDED, said
    if code is not None:
        return Phase.FAILED, said or f"exit code {code}"
    if spot:
        return Phase.PREEMPTED, said or "spot machine stopped"
    return Phase.FAILED, f"stopped without an exit code: {said}" if said else "stopped without an exit code"
