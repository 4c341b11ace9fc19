"""A plan's inputs and their fingerprint (DESIGN §4.5, §6).

Approval names the fingerprint the reviewer saw (dstack's get_plan → apply, Terraform's
stale-plan refusal). When the inputs change — a job added, cancelled or edited, other
prices, another previous plan, other budgets — the fingerprint changes, and
`what_changed()` says how, in words an approver can act on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.models import JobSpec, Offer


@dataclass(frozen=True)
class PlanInputs:
    job_versions: Mapping[str, str]  # job id -> version (a store version, or a hash of the spec)
    catalog_version: str
    previous_plan_id: str | None = None
    budgets: Mapping[str, float] = field(default_factory=dict)
    # Ops' offer rules the plan was made with (job id -> rule JSON), kept to explain the plan later;
    # not fingerprinted apart: a job's version already covers its rule.
    offer_rules: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        blob = json.dumps({"jobs": dict(sorted(self.job_versions.items())), "catalog": self.catalog_version,
                           "previous": self.previous_plan_id, "budgets": dict(sorted(self.budgets.items()))},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> dict:
        rules = {"offer_rules": dict(self.offer_rules)} if self.offer_rules else {}
        return {"job_versions": dict(self.job_versions), "catalog_version": self.catalog_version,
                "previous_plan_id": self.previous_plan_id, "budgets": dict(self.budgets)} | rules

    @classmethod
    def from_json(cls, data: Mapping) -> PlanInputs:
        return cls(dict(data["job_versions"]), data["catalog_version"], data.get("previous_plan_id"),
                   dict(data.get("budgets", {})), dict(data.get("offer_rules", {})))


def spec_version(spec: JobSpec, offer_rule=None) -> str:
    """Content version of what a plan reads of a job: its spec, and ops' offer rule when it has one
    (`OfferRule` or `OfferChoice`, the same text for the same rule); a job without one keeps the
    version of its spec alone."""
    text = spec.model_dump_json() if offer_rule is None else f"{spec.model_dump_json()}\n{offer_rule.to_json()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def offers_version(offers: Sequence[Offer]) -> str:
    rows = sorted(o.model_dump_json() for o in offers)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _names(ids) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def what_changed(planned: PlanInputs, current: PlanInputs) -> list[str]:
    """Every difference between the inputs a plan was made from and the current ones."""
    out = []
    old, new = planned.job_versions, current.job_versions
    added, removed = set(new) - set(old), set(old) - set(new)
    edited = {j for j in set(old) & set(new) if old[j] != new[j]}
    if added:
        out.append(f"{len(added)} job(s) submitted since: {_names(added)}")
    if removed:
        out.append(f"{len(removed)} job(s) cancelled or finished since: {_names(removed)}")
    if edited:
        out.append(f"{len(edited)} job(s) changed since: {_names(edited)}")
    if planned.catalog_version != current.catalog_version:
        before, after = planned.catalog_version[:12], current.catalog_version[:12]
        out.append(f"prices or capacity changed (catalog {before} → {after})")
    if planned.previous_plan_id != current.previous_plan_id:
        out.append(f"another plan was approved since ({current.previous_plan_id})")
    if dict(planned.budgets) != dict(current.budgets):
        out.append("team budgets changed")
    return out
