"""The provider interface, as `workers.providers.base`: the port defined in `scheduler.providers`.

Adapters import everything they implement from here; the contract is in the docstrings of
`scheduler.providers.Provider`.
"""

from scheduler.providers import (  # noqa: F401  (re-exported)
    CALL_TIMEOUT_S,
    ERRORS,
    TAG,
    TAG_JOB,
    AuthFailed,
    Handle,
    InvalidRequest,
    LaunchRequest,
    NoCapacity,
    Owned,
    Phase,
    Provider,
    ProviderError,
    QuotaExceeded,
    Quote,
    Status,
    Throttled,
    Transient,
    catalog_quote,
)
