"""One adapter per provider behind one interface (`workers.providers.base`).

`get_provider(name)` builds the adapter for a provider name of the catalog (or `local`,
`fake`); each adapter module imports its SDK itself, so a deployment installs only the
extras it uses (`pip install 'cloudsched[aws]'`).
"""

from __future__ import annotations

import importlib
from typing import Any

from scheduler.providers import InvalidRequest, Provider

# provider name -> "module:factory"; the factory takes keyword settings and returns a Provider.
ADAPTERS: dict[str, str] = {
    "local": "workers.providers.local:LocalProvider",
    "fake": "workers.providers.fake:FakeProvider",
    "aws": "workers.providers.aws:AwsProvider",
    "gcp": "workers.providers.gcp:GcpProvider",
    "azure": "workers.providers.azure:AzureProvider",
    "ionet": "workers.providers.ionet:IonetProvider",
    "vast": "workers.providers.vast:VastProvider",
    "runpod": "workers.providers.runpod:RunpodProvider",
}


def get_provider(name: str, **options: Any) -> Provider:
    """The adapter for `name`; `InvalidRequest` if cloudsched has none (e.g. a catalog-only marketplace)."""
    target = ADAPTERS.get(name)
    if target is None:
        raise InvalidRequest(f"no launch adapter for provider {name!r} (adapters: {', '.join(sorted(ADAPTERS))})",
                             provider=name)
    module, _, factory = target.partition(":")
    return getattr(importlib.import_module(module), factory)(**options)
