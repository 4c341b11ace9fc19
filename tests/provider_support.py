"""What the provider adapter tests share: the job they launch, its keys, and the recorded answers they replay.

The recordings carry these values (a marketplace listing holds the label `LABEL`), so they are fixed here once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from scheduler.catalog import load_catalog
from scheduler.models import Offer
from workers.providers.base import LaunchRequest

RECORDINGS = Path(__file__).parent / "recordings"
JOB = "job_01jd2k8q6v3m9x4c7b2n5r8t1w"
IDEM = f"{JOB}/plan-20260521T0200Z-5f2c9a1b/0.1"  # a marketplace launch's key (RunPod, Vast.ai)
LABEL = f"cloudsched.{JOB}.{IDEM}"  # the name or label that key gives the instance
VM_KEY = f"{JOB}:seg0:attempt1"  # a cloud VM launch's key (Azure, GCP)


def recording(provider: str, name: str = "api.json") -> dict:
    """A recorded file of tests/recordings/<provider>/."""
    return json.loads((RECORDINGS / provider / name).read_text())


def reply(rec: dict, name: str) -> httpx.Response:
    """The recorded answer of interaction `name` as an httpx response (for respx)."""
    r = rec["interactions"][name]["response"]
    if "json" in r:
        return httpx.Response(r["status"], headers=r.get("headers"), json=r["json"])
    return httpx.Response(r["status"], headers=r.get("headers"), text=r["text"])


def catalog_offer(offer_id: str) -> Offer:
    return load_catalog().offer(offer_id)


def launch_request(offer: Offer, *, nodes: int = 1, **fields: Any) -> LaunchRequest:
    """`JOB` of team vision on `nodes` nodes of `offer`, with all their GPUs unless `fields` say otherwise."""
    return LaunchRequest(**{"job_id": JOB, "team": "vision", "gpus": nodes * offer.gpus_per_node, **fields},
                         offer=offer, nodes=nodes)
