"""The error tree of cloudsched's services.

These classes steer control flow (a `VersionConflict` is retried, a `StateConflict` loses a
race) and the API maps them to HTTP in one place; callers never see a Redis exception.
Every message names the record and the field at fault, so it can be shown to a user as is.

    CloudschedError
    ├── InvalidArgument        a parameter outside its domain (a bad cursor, a limit of 0)
    ├── Unauthenticated        no key, or a key that is not ours
    ├── Forbidden              a known principal that may not do this
    ├── NotFound               no such record (also what a submitter sees for another team's job)
    ├── AlreadyExists          a record with that id exists and records are immutable
    ├── Conflict               the request contradicts the stored state
    │   ├── NameTaken              a live job of the team already has that name
    │   ├── IdempotencyConflict    the Idempotency-Key was used with another body
    │   ├── VersionConflict        the record changed since the caller read it
    │   └── StateConflict          the record is not in the state the caller expected
    │       └── TransitionNotAllowed   the lifecycle has no such transition
    └── StoreUnavailable       the store could not be reached; safe to retry
"""

from __future__ import annotations


class CloudschedError(Exception):
    """Base of every error a cloudsched service raises on purpose."""

    code = "error"

    def __init__(self, message: str, **details: object):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(CloudschedError):
    code = "invalid-argument"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class Unauthenticated(CloudschedError):
    code = "unauthenticated"


class Forbidden(CloudschedError):
    code = "forbidden"


class NotFound(CloudschedError):
    code = "not-found"

    def __init__(self, kind: str, record_id: str):
        super().__init__(f"{kind} {record_id!r} does not exist", kind=kind, id=record_id)
        self.kind, self.record_id = kind, record_id


class AlreadyExists(CloudschedError):
    code = "already-exists"

    def __init__(self, kind: str, record_id: str):
        super().__init__(f"{kind} {record_id!r} already exists", kind=kind, id=record_id)
        self.kind, self.record_id = kind, record_id


class Conflict(CloudschedError):
    code = "conflict"


class NameTaken(Conflict):
    code = "name-taken"

    def __init__(self, team: str, name: str, job_id: str):
        super().__init__(
            f"name: team {team!r} already has a live job named {name!r} ({job_id})",
            field="name", team=team, name=name, job_id=job_id,
        )
        self.team, self.name, self.job_id = team, name, job_id


class IdempotencyConflict(Conflict):
    code = "idempotency-conflict"

    def __init__(self, key: str, job_id: str):
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body (job {job_id})",
            field="Idempotency-Key", job_id=job_id,
        )
        self.key, self.job_id = key, job_id


class VersionConflict(Conflict):
    code = "version-conflict"

    def __init__(self, kind: str, record_id: str, expected: int, actual: int):
        super().__init__(
            f"version: {kind} {record_id!r} is at version {actual}, not {expected}",
            field="version", kind=kind, id=record_id, expected=expected, actual=actual,
        )
        self.kind, self.record_id, self.expected, self.actual = kind, record_id, expected, actual


class StateConflict(Conflict):
    code = "state-conflict"

    def __init__(self, kind: str, record_id: str, expected: str, actual: str, message: str | None = None):
        super().__init__(
            message or f"state: {kind} {record_id!r} is {actual!r}, not {expected!r}",
            field="state", kind=kind, id=record_id, expected=expected, actual=actual,
        )
        self.kind, self.record_id, self.expected, self.actual = kind, record_id, expected, actual


class TransitionNotAllowed(StateConflict):
    code = "transition-not-allowed"

    def __init__(self, kind: str, record_id: str, current: str, target: str):
        super().__init__(
            kind, record_id, expected=f"a state that may become {target!r}", actual=current,
            message=f"state: {kind} {record_id!r} is {current!r} and cannot become {target!r}",
        )
        self.current, self.target = current, target


class StoreUnavailable(CloudschedError):
    code = "store-unavailable"
