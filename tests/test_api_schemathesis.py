"""schemathesis against the app's own OpenAPI document, as a submitter and as ops: positive and
negative cases; no server errors, status codes, content types, headers and bodies as documented,
and invalid input rejected.

`positive_data_acceptance` is left out: a schema-valid spec may still be refused with a 422
naming the field for rules JSON Schema cannot say (a managed endpoint must be inference, a
submitter's team must be their own, a deadline after not_before).
"""

from __future__ import annotations

import atexit

import pytest
import schemathesis
import schemathesis.python.asgi as schemathesis_asgi
from api_support import make_api
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

API = make_api(rate_limit_per_minute=10_000_000)
schema = schemathesis.openapi.from_asgi("/openapi.json", API.client.app)


@pytest.fixture(scope="module", autouse=True)
def _stop_schemathesis_portal():
    """schemathesis keeps an event-loop thread for ASGI apps and stops it at exit. A test that forks
    and runs the exit hooks in the child (a Celery pool process) would wait forever on that thread,
    which the child does not have: stop it when this module is done."""
    yield
    shutdown = getattr(schemathesis_asgi, "_shutdown", None)
    if shutdown is not None:
        shutdown()
        atexit.unregister(shutdown)


@pytest.mark.parametrize("who", ["a", "ops"])
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, who):
    # A case whose headers were made invalid on purpose (the required Authorization left out or
    # mangled) keeps them: adding the caller's key back would undo the mutation, and the request
    # the check expects to be refused (401) would be answered.
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(headers={} if negative_headers else API.auth(who),
                           excluded_checks=[positive_data_acceptance])
