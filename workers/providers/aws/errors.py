"""The one place botocore errors become ours: `translate`, applied to every adapter call by `translated`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from botocore import exceptions as sdk
from botocore.exceptions import ClientError

from workers.providers.aws.resources import NAME
from workers.providers.base import (
    AuthFailed,
    InvalidRequest,
    NoCapacity,
    ProviderError,
    QuotaExceeded,
    Throttled,
    Transient,
)

T = TypeVar("T")

_CODES: dict[str, type[ProviderError]] = {
    **dict.fromkeys(["InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
                     "InsufficientReservedInstanceCapacity", "SpotMaxPriceTooLow", "CapacityError",
                     "InsufficientCapacityError"], NoCapacity),
    **dict.fromkeys(["VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
                     "ResourceLimitExceeded"], QuotaExceeded),
    **dict.fromkeys(["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
                     "RequestThrottled", "RequestThrottledException", "SlowDown"], Throttled),
    **dict.fromkeys(["InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
                     "Unavailable", "RequestTimeout", "RequestTimeoutException"], Transient),
    **dict.fromkeys(["AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "UnrecognizedClientException",
                     "SignatureDoesNotMatch", "IncompleteSignature", "AccessDenied", "AccessDeniedException",
                     "ExpiredToken", "ExpiredTokenException", "OptInRequired", "Blocked"], AuthFailed),
    "FilterLimitExceeded": InvalidRequest,  # our bug, not a quota
}


def translate(exc: Exception) -> ProviderError:
    """Our error for a botocore one: the only place AWS errors are interpreted."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        code, status = error.get("Code", ""), int(meta.get("HTTPStatusCode") or 0)
        cls = _CODES.get(code) or (QuotaExceeded if code.endswith("LimitExceeded") else
                                   Transient if status >= 500 else InvalidRequest)
        return cls(f"{code}: {error.get('Message') or exc}", provider=NAME)
    if isinstance(exc, (sdk.NoCredentialsError, sdk.PartialCredentialsError, sdk.CredentialRetrievalError,
                        sdk.ProfileNotFound)):
        return AuthFailed(str(exc), provider=NAME)
    if isinstance(exc, sdk.ParamValidationError):
        return InvalidRequest(str(exc), provider=NAME)
    # Timeouts, refused or dropped connections: the call may or may not have taken effect.
    return Transient(f"{type(exc).__name__}: {exc}", provider=NAME)


def translated(method: Callable[..., T]) -> Callable[..., T]:
    """`method` with every botocore error it lets out translated."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except (ClientError, sdk.BotoCoreError) as exc:
            raise translate(exc) from exc
    return wrapper

