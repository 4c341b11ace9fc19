"""What the review page shows, computed from a plan document: pure functions, no I/O.

Figures (DESIGN §4.5 names): the summary's totals as the document states them (whole plan,
for submitters too, as the API serves it); the share of GPU-hours on distributed providers
and the low-slack count over the assignments shown (a submitter's: their team's).

GPU-hours of a segment are `gpus × run_hours` (the GPUs billed while the job runs; data
transfer before the run is not counted). A job has little deadline slack when it would end
less than `LOW_SLACK_HOURS` before its deadline: a day's delay at launch or one preemption
and it misses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from api.ui.render import money, signed_money
from scheduler.models import Assignment, Compliance, JobSpec, Offer, PlanDocument
from scheduler.queries import ConsideredOffer
from scheduler.records import PlanInfo

LOW_SLACK_HOURS = 12.0
NO_CHANGE = ""  # the symbol of a job placed exactly as in the previous plan (Terraform's no-op)


@dataclass(frozen=True)
class Figures:
    total_cost: float
    baseline_cost: float
    savings_pct: float
    previous_plan_id: str | None
    previous_cost: float | None
    placed: int
    unplaced: int
    gpu_hours: float
    distributed_gpu_hours: float
    low_slack_jobs: int  # under LOW_SLACK_HOURS

    @property
    def vs_previous(self) -> float | None:
        return None if self.previous_cost is None else round(self.total_cost - self.previous_cost, 2)

    @property
    def distributed_share_pct(self) -> float | None:
        return None if not self.gpu_hours else round(100 * self.distributed_gpu_hours / self.gpu_hours, 1)


def figures(doc: PlanDocument, previous: PlanInfo | PlanDocument | None, architecture: Mapping[str, str]) -> Figures:
    s = doc.summary
    gpu_hours = distributed = 0.0
    for a in doc.assignments:
        for seg in a.segments:
            hours = seg.gpus * seg.run_hours
            gpu_hours += hours
            distributed += hours if architecture.get(seg.provider) == "distributed" else 0.0
    return Figures(
        total_cost=s.total_cost, baseline_cost=s.baseline_centralized_cost, savings_pct=s.savings_pct,
        previous_plan_id=previous.plan_id if previous else None,
        previous_cost=previous.summary.total_cost if previous else None,
        placed=s.jobs_placed, unplaced=s.jobs_unplaced, gpu_hours=round(gpu_hours, 1),
        distributed_gpu_hours=round(distributed, 1),
        low_slack_jobs=sum(a.slack_hours < LOW_SLACK_HOURS for a in doc.assignments))


# -- the assignments table ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    job_id: str
    job_name: str
    team: str
    symbol: str
    gpus: int
    provider: str  # of the first segment
    region: str
    instance: str
    more: int  # further segments (shards) elsewhere
    spot: bool
    start: str
    end: str
    deadline: str
    slack_hours: float
    cost: float
    baseline_cost: float | None
    placement: str
    compliance: str

    @property
    def low_slack(self) -> bool:
        return self.slack_hours < LOW_SLACK_HOURS

    @property
    def where(self) -> str:
        return f"{self.provider} / {self.region} / {self.instance}"


SORT_KEYS: dict[str, Callable[[Row], object]] = {
    "change": lambda r: r.symbol, "job": lambda r: r.job_name, "team": lambda r: r.team, "gpus": lambda r: r.gpus,
    "where": lambda r: r.where, "spot": lambda r: r.spot, "start": lambda r: r.start, "end": lambda r: r.end,
    "deadline": lambda r: r.deadline, "slack": lambda r: r.slack_hours, "cost": lambda r: r.cost,
    "baseline": lambda r: r.baseline_cost if r.baseline_cost is not None else -1.0,
    "placement": lambda r: r.placement, "compliance": lambda r: r.compliance,
}
DEFAULT_SORT = "start"


def instance_of(offer_id: str) -> str:
    """`aws:us-east-1:p5.48xlarge:on-demand` -> `p5.48xlarge`."""
    parts = offer_id.split(":")
    return parts[2] if len(parts) == 4 else offer_id


def compliance_basis(spec: JobSpec | None, offers: list[Offer | None]) -> str:
    """What satisfies the job's compliance tags where it runs: the offers' certifications, and for gdpr an
    EU region. `none required` without tags; a tag no offer holds is flagged (the validator forbids it)."""
    if spec is None:
        return "unknown (job not found)"
    if not spec.compliance:
        return "none required"
    known = [o for o in offers if o is not None]
    parts = []
    for tag in spec.compliance:
        held = bool(known) and all(tag.value in o.certifications for o in known)
        parts.append(tag.value if held else f"{tag.value} NOT HELD")
    text = ", ".join(parts) + " certified"
    if Compliance.GDPR in spec.compliance:
        regions = sorted({o.region for o in known})
        eu = bool(known) and all(o.geo == "eu" for o in known)
        text += f"; EU region ({', '.join(regions)})" if eu else "; NOT in an EU region"
    return text


def rows(doc: PlanDocument, symbols: Mapping[str, str], specs: Mapping[str, JobSpec],
         offer: Callable[[str], Offer | None]) -> list[Row]:
    out = []
    for a in doc.assignments:
        first = min(a.segments, key=lambda s: (s.start, s.shard))
        out.append(Row(
            job_id=a.job_id, job_name=a.job_name, team=a.team, symbol=symbols.get(a.job_id, NO_CHANGE),
            gpus=sum(s.gpus for s in a.segments),
            provider=first.provider, region=first.region, instance=instance_of(first.offer_id),
            more=len({s.offer_id for s in a.segments}) - 1, spot=any(s.market == "spot" for s in a.segments),
            start=first.start, end=max(s.end for s in a.segments), deadline=a.deadline,
            slack_hours=a.slack_hours, cost=a.total_cost, baseline_cost=a.baseline_cost,
            placement=a.placement.value,
            compliance=compliance_basis(specs.get(a.job_id), [offer(s.offer_id) for s in a.segments])))
    return out


def sort_rows(table: list[Row], key: str, descending: bool = False) -> list[Row]:
    """Rows ordered by column `key` (unknown keys: by start), ties by job name."""
    by = SORT_KEYS.get(key, SORT_KEYS[DEFAULT_SORT])
    ordered = sorted(table, key=lambda r: r.job_name)
    return sorted(ordered, key=by, reverse=descending)


# -- "why?": the counterfactual ------------------------------------------------------------


@dataclass(frozen=True)
class Counterfactual:
    provider: str
    offer_id: str | None  # the cheapest feasible offer of another provider; None: there is none
    cost: float | None
    delta: float | None  # its cost minus the chosen placement's

    @property
    def sentence(self) -> str:
        if self.offer_id is None:
            return f"Forbidding {self.provider} leaves no feasible offer: the job would be unplaced."
        verb = "costs" if self.delta >= 0 else "saves"
        return (f"Forbidding {self.provider} {verb} {signed_money(self.delta)} "
                f"(next best: {self.offer_id} at {money(self.cost)}).")


def counterfactuals(considered: list[ConsideredOffer], chosen_cost: float | None) -> list[Counterfactual]:
    """For each provider the job runs on: the cheapest candidate of any other provider, at list price.

    Candidates are the offers that pass every check of the explanation (status `chosen` or `candidate`);
    the figure ignores capacity that other jobs of the plan hold, so it is what the rule costs at most
    as far as this job's own offers go, not a re-solve of the plan.
    """
    if chosen_cost is None:
        return []
    chosen = sorted({c.provider for c in considered if c.status == "chosen"})
    feasible = [c for c in considered if c.status in ("chosen", "candidate") and c.cost is not None]
    out = []
    for provider in chosen:
        others = [c for c in feasible if c.provider != provider]
        best = min(others, key=lambda c: (c.cost, c.offer_id), default=None)
        if best is None:
            out.append(Counterfactual(provider, None, None, None))
        else:
            out.append(Counterfactual(provider, best.offer_id, best.cost, round(best.cost - chosen_cost, 2)))
    return out


def why_rows(considered: list[ConsideredOffer], candidates: int = 10, per_reason: int = 5
             ) -> tuple[list[ConsideredOffer], dict[str, int]]:
    """The rows a why? panel shows: every chosen offer, the cheapest other candidates, and the cheapest
    offers of each rejection reason; plus how many of each kind are left out."""
    chosen = [c for c in considered if c.status == "chosen"]
    feasible = [c for c in considered if c.status == "candidate"]
    by_reason: dict[str, list[ConsideredOffer]] = {}
    for c in considered:
        if c.status == "rejected":
            by_reason.setdefault(c.reason or "?", []).append(c)
    shown = chosen + feasible[:candidates]
    hidden = {"feasible": max(0, len(feasible) - candidates)}
    for reason in sorted(by_reason):
        offers = sorted(by_reason[reason], key=lambda c: (c.cost is None, c.cost or 0.0, c.offer_id))
        shown += offers[:per_reason]
        hidden[reason] = max(0, len(offers) - per_reason)
    return shown, {k: v for k, v in hidden.items() if v}


# -- the plan list --------------------------------------------------------------------------


def decided_by(decision: Mapping | None) -> str:
    """`approved by olga`, `rejected by olga`, `superseded by plan-…`, `stale` — or an en dash."""
    if not decision:
        return "–"
    if "decision" in decision:
        return f"{decision['decision']} by {decision.get('by', '?')}"
    if "superseded_by" in decision:
        return f"superseded by {decision['superseded_by']}"
    if "stale" in decision:
        return "refused: inputs changed"
    if "expired_at" in decision:
        return "expired before approval"
    return "–"


def assignment_of(doc: PlanDocument, job_id: str) -> Assignment | None:
    return next((a for a in doc.assignments if a.job_id == job_id), None)
