"""The normalized offer catalog (DESIGN §3, §4.2), built from the price files shipped in the package.

Inputs (all under `scheduler/data/`, read with importlib.resources, never from `../shared`):
`catalog/<cloud>.csv` (public list prices, see its README), `catalog/ionet.csv` (seed document),
`providers.yaml` (provider facts, each with a source), `gpus.yaml` (GPU speed table) and
`spot/index.csv` (AWS spot traces, for the preemption rate).

Build rules (bump `_RULES_VERSION` when one changes: it is part of `Catalog.version`):
- A source row yields one priced row per market: `price` -> on-demand, `spot_price` -> spot.
  Rows with a fractional or zero GPU count, or without a price for that market, are dropped.
- GCP attachable GPUs (`price_scope=accelerator_only`) are priced with an n1 host VM of the same
  zone: n1-standard-8 for 1-2 GPUs (SkyPilot's default host for GCP GPUs), then 4 vCPUs per GPU
  (n1-standard-16 for 4, n1-standard-32 for 8) so input pipelines keep up. GPU + host, per market.
- One offer per (provider, region, instance type, market). AWS and GCP rows are per zone: the
  region's offer takes the cheapest zone (on-demand prices are per region, so they agree; spot
  is the cheapest AZ). AWS Local Zones (`use1-atl2-az1`) are skipped: opt-in, little capacity.
- Cudo, Spheron and Prime Intellect list many host shapes per GPU count: only the cheapest instance
  per (provider, region, GPU type, GPUs per node, market) is kept, to keep the catalog small.
- A spot offer that is not cheaper than the on-demand offer of the same instance is dropped: it
  would cost as much and add preemptions (e.g. RunPod L40S, whose source columns look swapped).
- Managed endpoints (`providers.yaml: managed`) copy an EC2 on-demand offer with a markup.

Names: `H100` means the SXM/HGX part (also H100-SXM, H100_SXM5, GCP's H100-MEGA, NVLink boards);
PCIe and NVL cards stay separate (`H100-PCIE`, `H100-NVL`), as in SkyPilot, because they are
20-25 % slower and the cost model scales run time by speed. A job accepts both by listing both.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import Field, TypeAdapter

from scheduler.models import Architecture, Compliance, Interconnect, Market, Offer, StrictModel

_RULES_VERSION = "catalog-rules-1"
_PRICE_FILES = ("aws", "azure", "cudo", "fluidstack", "gcp", "hyperbolic", "ionet", "lambda",
                "mithril", "primeintellect", "runpod", "spheron", "vast")
_HOSTS_FILE = "catalog/gcp_n1_hosts.csv"
_FACT_FILES = ("providers.yaml", "gpus.yaml", "spot/index.csv")
_CHEAPEST_SHAPE_ONLY = frozenset({"cudo", "spheron", "primeintellect"})
_GCP_HOST_FOR_GPUS = {1: "n1-standard-8", 2: "n1-standard-8", 4: "n1-standard-16", 8: "n1-standard-32"}
_AWS_LOCAL_ZONE = re.compile(r"^[a-z]+\d-[a-z]+\d+-az\d+$")
# Azure NVv4 sizes are 1/8, 1/4 and 1/2 of an MI25 (Azure NVv4-series docs) but the source counts
# each as one GPU; treated like the other fractional rows.
_FRACTIONAL_DESPITE_SOURCE = frozenset({"Standard_NV4as_v4", "Standard_NV8as_v4", "Standard_NV16as_v4"})
Geo = Literal["us", "eu", "apac", "other"]

# ---------------------------------------------------------------------------------------
# GPU names


_GPU_DISPLAY = {  # canonical key (upper case, alphanumerics only) -> harmonised name
    "A4000": "RTXA4000", "A5000": "RTXA5000", "A6000": "RTXA6000",
    "RTX4000ADA": "RTX4000-Ada", "RTX5880ADA": "RTX5880-Ada", "RTX6000ADA": "RTX6000-Ada",
}
_MEMORY_VARIANTS = {("A100", 80): "A100-80GB", ("V100", 32): "V100-32GB"}
_FORM_SUFFIXES = re.compile(r"(BAREMETAL|HIGHPERF|LOWRAM|WS|MEGA|NVLINK|SXM\d?|PCIE)$")


def normalize_gpu_name(raw: str) -> str:
    """Harmonise a GPU name as spelled by any source (`H100_SXM5`, `A100_80G_PCIE`, `h100`).

    Form-factor and host words (SXM, PCIe, bare metal, WS, MEGA) are dropped because they do not
    change training speed, except for the H100, whose PCIe and NVL cards stay separate names.
    Memory stays in the name where it distinguishes a catalog model (A100-80GB, V100-32GB).
    An unknown name comes back cleaned but otherwise as given, so it simply matches no offer.
    """
    tokens = [t for t in re.split(r"[^A-Z0-9]+", raw.upper()) if t and t not in ("NVIDIA", "TESLA")]
    memory = {int(t.rstrip("GB")) for t in tokens if re.fullmatch(r"\d+GB?", t)}
    key = "".join(t for t in tokens if not re.fullmatch(r"\d+GB?", t))
    if key.startswith("H100"):
        if "NVL" in key.replace("NVLINK", ""):
            return "H100-NVL"
        if "PCIE" in key:
            return "H100-PCIE"
    while (stripped := _FORM_SUFFIXES.sub("", key)) != key and stripped:
        key = stripped
    for size in memory:
        key = _MEMORY_VARIANTS.get((key, size), key)
    return _GPU_DISPLAY.get(key, key)


def _row_gpu_type(cloud: str, accelerator: str, instance_type: str) -> str:
    """A row's GPU name, refined by its instance type where the source name is ambiguous."""
    name = normalize_gpu_name(accelerator)
    if name != "H100":
        return name
    if cloud == "runpod" and accelerator == "H100":
        return "H100-PCIE"  # RunPod's bare "H100" is the PCIe card (its H100-SXM / H100-NVL are separate)
    hint = instance_type.upper()
    if "PCIE" in hint:
        return "H100-PCIE"  # e.g. Lambda gpu_1x_h100_pcie, Fluidstack H100_PCIE_80GB
    if "NVL" in hint.replace("NVLINK", ""):
        return "H100-NVL"  # e.g. Vast 1x-H100_NVL
    return name


def parse_accelerator(spec: str) -> tuple[str, int]:
    """SkyPilot-style `H100:8` (count defaults to 1) -> (harmonised name, count)."""
    name, _, count = spec.partition(":")
    if not name or (count and not count.isdigit()) or count == "0":
        raise ValueError(f"accelerator {spec!r}: expected NAME or NAME:COUNT, e.g. 'H100:8'")
    return normalize_gpu_name(name), int(count or 1)


# ---------------------------------------------------------------------------------------
# Provider facts (providers.yaml): parsed strictly, so a typo in a reviewed file fails loudly

T = TypeVar("T")


class Fact(StrictModel, Generic[T]):
    value: T
    source: str = Field(min_length=3)


class GeoRule(StrictModel):
    match: str | None = None
    country: str | None = None
    geo: Geo | None = None


class InterconnectRule(StrictModel):
    match: str
    value: Interconnect
    source: str = Field(min_length=3)


class CertificationRule(StrictModel):
    value: list[Compliance]
    source: str = Field(min_length=3)
    regions: str | None = None
    geo: Geo | None = None
    instances: str | None = None


class ProviderFacts(StrictModel):
    architecture: Fact[Architecture]
    geo: list[GeoRule]
    interconnect: list[InterconnectRule] = Field(min_length=1)
    certifications: list[CertificationRule]
    egress_usd_per_gb: Fact[float]
    ingress_gbps: Fact[float]
    capacity_gpus: dict[Market, Fact[int]]
    preemption_rate_per_hour: Fact[float | Literal["aws-spot-traces"]] | None = None
    markets: Fact[list[Market]] | None = None


class ManagedEndpoints(StrictModel):
    provider: str
    service: str
    prefix: str
    instance_types: list[str]
    regions: list[str]
    markup: Fact[float]
    capacity_gpus: Fact[int]


class FactsFile(StrictModel):
    countries: dict[Geo, list[str]]
    shared: dict[str, Any] = Field(default_factory=dict)  # YAML anchors only
    providers: dict[str, ProviderFacts]
    managed: list[ManagedEndpoints] = Field(default_factory=list)


class GpuSpeed(StrictModel):
    tflops: float = Field(gt=0)
    source: str = Field(min_length=3)


# ---------------------------------------------------------------------------------------
# The catalog


@dataclass(frozen=True, eq=False)
class Catalog:
    """Offers plus the provider facts and GPU speeds the cost model needs (DESIGN §4.3)."""

    offers: tuple[Offer, ...]
    version: str  # sha256 over the build rules and every data file read: changes when a price does
    facts: Mapping[str, ProviderFacts] = field(repr=False)
    speeds: Mapping[str, float] = field(repr=False)

    def _facts(self, location: str) -> ProviderFacts:
        """Facts for `aws` or a data location such as `aws:us-east-1`."""
        provider = location.partition(":")[0]
        try:
            return self.facts[provider]
        except KeyError:
            raise KeyError(f"unknown provider {provider!r}; known: {', '.join(sorted(self.facts))}") from None

    def egress_usd_per_gb(self, location: str) -> float:
        return self._facts(location).egress_usd_per_gb.value

    def ingress_gbps(self, location: str) -> float:
        return self._facts(location).ingress_gbps.value

    def architecture(self, provider: str) -> Architecture:
        return self._facts(provider).architecture.value

    def gpu_speed(self, name: str) -> float:
        """Relative training throughput (dense BF16 TFLOPS; only ratios are meaningful)."""
        try:
            return self.speeds[normalize_gpu_name(name)]
        except KeyError:
            raise KeyError(f"no speed for GPU {name!r} in gpus.yaml") from None

    def offer(self, offer_id: str) -> Offer:
        return self._by_id[offer_id]

    @functools.cached_property
    def _by_id(self) -> dict[str, Offer]:
        return {offer.id: offer for offer in self.offers}


@functools.cache
def load_catalog() -> Catalog:
    """The packaged catalog, built once per process (about a second at most)."""
    files = _read_data_files()
    facts = FactsFile.model_validate(yaml.safe_load(files["providers.yaml"]))
    speeds = {name: GpuSpeed.model_validate(entry).tflops
              for name, entry in yaml.safe_load(files["gpus.yaml"]).items()}
    offers = build_offers(files, facts, _aws_spot_preemption_rate(files["spot/index.csv"]))
    return Catalog(offers=tuple(offers), version=_version(files), facts=MappingProxyType(facts.providers),
                   speeds=MappingProxyType(speeds))


def _read_data_files() -> dict[str, bytes]:
    root = resources.files("scheduler").joinpath("data")
    names = [f"catalog/{cloud}.csv" for cloud in _PRICE_FILES] + [_HOSTS_FILE, *_FACT_FILES]
    return {name: root.joinpath(name).read_bytes() for name in sorted(names)}


def _version(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256(_RULES_VERSION.encode())
    for name in sorted(files):
        digest.update(f"\0{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    return digest.hexdigest()


def _aws_spot_preemption_rate(index_csv: bytes) -> float:
    """Preemptions per hour from the single-node preemption traces (one instance: clean semantics)."""
    rows = [row for row in _csv(index_csv) if row["kind"] == "preemption" and row["nodes_requested"] == "1"]
    return round(sum(int(r["n_decreases"]) for r in rows) / sum(float(r["hours"]) for r in rows), 4)


def _csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


# ---------------------------------------------------------------------------------------
# Building offers


@dataclass(frozen=True)
class PricedRow:
    """One source row in one market, before aggregation."""

    cloud: str
    region: str  # as the source spells it
    instance_type: str
    gpu_type: str
    gpus: int
    market: Market
    price: float


def build_offers(files: Mapping[str, bytes], facts: FactsFile, aws_spot_rate: float) -> list[Offer]:
    hosts = {(r["zone"], r["instance_type"]): r for r in _csv(files[_HOSTS_FILE])}
    rows = [row for cloud in _PRICE_FILES
            for record in _csv(files[f"catalog/{cloud}.csv"])
            for row in _priced_rows(record, hosts, facts.providers[cloud])]
    kept = _drop_dominated_spot(_one_row_per_offer(rows))
    offers = [_offer(row, facts, aws_spot_rate) for row in kept]
    offers += _managed_offers(offers, facts.managed)
    ids = [offer.id for offer in offers]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate offer ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return sorted(offers, key=lambda offer: offer.id)


def _priced_rows(record: dict[str, str], hosts: Mapping, facts: ProviderFacts) -> Iterator[PricedRow]:
    count = float(record["accelerator_count"])
    if count < 1 or not count.is_integer() or record["instance_type"] in _FRACTIONAL_DESPITE_SOURCE:
        return
    if record["cloud"] == "aws" and _AWS_LOCAL_ZONE.match(record["zone"]):
        return
    if record["price_scope"] == "accelerator_only":
        record = _with_gcp_host(record, hosts)
        if record is None:
            return
    markets = facts.markets.value if facts.markets else [Market.ON_DEMAND, Market.SPOT]
    prices = {Market.ON_DEMAND: record["price"], Market.SPOT: record["spot_price"]}
    for market in markets:
        if prices[market]:
            yield PricedRow(cloud=record["cloud"], region=record["region"],
                            instance_type=record["instance_type"], gpus=int(count), market=market,
                            gpu_type=_row_gpu_type(record["cloud"], record["accelerator_name"],
                                                   record["instance_type"]),
                            price=float(prices[market]))


def _with_gcp_host(record: dict[str, str], hosts: Mapping) -> dict[str, str] | None:
    """A GCP GPU-only row turned into a full VM: GPU price + n1 host price of the same zone."""
    gpus = int(float(record["accelerator_count"]))
    host_type = _GCP_HOST_FOR_GPUS.get(gpus)
    host = hosts.get((record["zone"], host_type))
    if host is None:
        return None  # no host VM priced in that zone: the VM cannot be priced

    def total(column: str) -> str:
        both = record[column] and host[column]
        return f"{float(record[column]) + float(host[column]):.6f}" if both else ""

    name = f"{host_type}-{record['accelerator_name'].lower()}x{gpus}"
    return {**record, "instance_type": name, "price": total("price"), "spot_price": total("spot_price")}


def _cheapest(rows: Iterable[PricedRow], key: Callable[[PricedRow], tuple]) -> list[PricedRow]:
    """The cheapest row per key (ties: the first instance name, so builds are deterministic)."""
    best: dict[tuple, PricedRow] = {}
    for row in rows:
        held = best.get(k := key(row))
        if held is None or (row.price, row.instance_type) < (held.price, held.instance_type):
            best[k] = row
    return list(best.values())


def _one_row_per_offer(rows: list[PricedRow]) -> list[PricedRow]:
    """One row per (cloud, region, instance, market): the cheapest zone; then, for the
    many-shape marketplaces, only the cheapest instance per GPU type and count."""
    rows = _cheapest(rows, lambda r: (r.cloud, _region_slug(r.region), r.instance_type, r.market))
    shapes = [r for r in rows if r.cloud in _CHEAPEST_SHAPE_ONLY]
    return [r for r in rows if r.cloud not in _CHEAPEST_SHAPE_ONLY] + _cheapest(
        shapes, lambda r: (r.cloud, _region_slug(r.region), r.gpu_type, r.gpus, r.market))


def _drop_dominated_spot(rows: list[PricedRow]) -> list[PricedRow]:
    on_demand = {(r.cloud, _region_slug(r.region), r.instance_type): r.price
                 for r in rows if r.market is Market.ON_DEMAND}
    return [r for r in rows if r.market is not Market.SPOT
            or r.price < on_demand.get((r.cloud, _region_slug(r.region), r.instance_type), math.inf)]


def _offer(row: PricedRow, facts: FactsFile, aws_spot_rate: float) -> Offer:
    provider = facts.providers[row.cloud]
    geo = _geo(row.region, provider.geo, facts.countries)
    region = _region_slug(row.region)
    if row.market not in provider.capacity_gpus:
        raise ValueError(f"providers.yaml: {row.cloud} has {row.market} prices but no capacity_gpus for it")
    return Offer(
        id=f"{row.cloud}:{region}:{_id_part(row.instance_type)}:{row.market}",
        provider=row.cloud, architecture=provider.architecture.value, region=region, geo=geo,
        gpu_type=row.gpu_type, gpus_per_node=row.gpus, price_per_node_hour=round(row.price, 6),
        market=row.market, capacity_gpus=max(provider.capacity_gpus[row.market].value, row.gpus),
        interconnect=_first_match(provider.interconnect, row.instance_type).value,
        certifications=_certifications(provider.certifications, row.region, geo, row.instance_type),
        egress_usd_per_gb=provider.egress_usd_per_gb.value,
        preemption_rate_per_hour=_preemption_rate(row, provider, aws_spot_rate),
        instance_type=row.instance_type, ingress_gbps=provider.ingress_gbps.value,
    )


def _preemption_rate(row: PricedRow, provider: ProviderFacts, aws_spot_rate: float) -> float:
    if row.market is not Market.SPOT:
        return 0.0
    if provider.preemption_rate_per_hour is None:
        raise ValueError(f"providers.yaml: {row.cloud} has spot prices but no preemption_rate_per_hour")
    rate = provider.preemption_rate_per_hour.value
    return aws_spot_rate if rate == "aws-spot-traces" else rate


def _geo(region: str, rules: list[GeoRule], countries: Mapping[str, list[str]]) -> Geo:
    for rule in rules:
        if rule.country and (found := re.search(rule.country, region)):
            code = found.group(1).upper()
            return next((geo for geo, codes in countries.items() if code in codes), "other")
        if rule.match and re.search(rule.match, region):
            return rule.geo or "other"
    return "other"


def _first_match(rules: list[InterconnectRule], instance_type: str) -> InterconnectRule:
    for rule in rules:
        if re.search(rule.match, instance_type):
            return rule
    raise ValueError(f"providers.yaml: no interconnect rule matches {instance_type!r}")


def _certifications(rules: list[CertificationRule], region: str, geo: str, instance_type: str) -> list[str]:
    tags = {tag.value for rule in rules
            if (rule.regions is None or re.search(rule.regions, region))
            and (rule.geo is None or rule.geo == geo)
            and (rule.instances is None or re.search(rule.instances, instance_type))
            for tag in rule.value}
    return sorted(tags)


def _managed_offers(offers: list[Offer], endpoints: list[ManagedEndpoints]) -> list[Offer]:
    """Managed endpoints priced as the EC2 (etc.) on-demand offer of the same instance + markup."""
    by_id = {offer.id: offer for offer in offers}
    managed = []
    for spec in endpoints:
        for region in spec.regions:
            for instance in spec.instance_types:
                base = by_id.get(f"{spec.provider}:{region}:{instance}:{Market.ON_DEMAND}")
                if base is None:
                    continue  # that instance is not priced in that region
                name = spec.prefix + instance
                managed.append(Offer.model_validate({
                    **base.model_dump(), "id": f"{spec.provider}:{region}:{name}:{Market.ON_DEMAND}",
                    "instance_type": name, "managed": True,
                    "price_per_node_hour": round(base.price_per_node_hour * spec.markup.value, 6),
                    "capacity_gpus": max(spec.capacity_gpus.value, base.gpus_per_node)}))
    return managed


def _region_slug(region: str) -> str:
    """`Czechia, CZ, EU` -> `czechia-cz-eu`: safe inside an id and in a job's `provider:region`."""
    return re.sub(r"[^a-z0-9._-]+", "-", region.lower()).strip("-") or "default"


def _id_part(instance_type: str) -> str:
    """Instance names keep their case but lose characters that would break `a:b:c:d` ids."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", instance_type).strip("-")


# ---------------------------------------------------------------------------------------
# Queries and external offer files


def find_offers(catalog: Catalog, gpu_type: str, count: int = 1) -> list[Offer]:
    """Offers that can hold `count` GPUs of `gpu_type` (`cloudsched offers --gpu H100:8`).

    An offer qualifies with one node of at least `count` GPUs, or with as many whole nodes as
    needed (ceil(count / gpus_per_node)) when those fit in its `capacity_gpus`: the optimizer
    places multi-node jobs too, and the network efficiency of the interconnect prices that in.
    Sorted by price per GPU-hour, then id.
    """
    name = normalize_gpu_name(gpu_type)
    found = [offer for offer in catalog.offers if offer.gpu_type == name and _can_hold(offer, count)]
    return sorted(found, key=lambda offer: (offer.price_per_gpu_hour, offer.id))


def _can_hold(offer: Offer, count: int) -> bool:
    nodes = math.ceil(count / offer.gpus_per_node)
    return nodes == 1 or nodes * offer.gpus_per_node <= offer.capacity_gpus


_OFFER_LIST = TypeAdapter(list[Offer])


def load_offers_file(path: str | Path) -> list[Offer]:
    """A JSON list of §4.2 offers (e.g. a test fixture or a what-if catalog), strictly validated."""
    offers = _OFFER_LIST.validate_json(Path(path).read_bytes())
    seen: set[str] = set()
    for index, offer in enumerate(offers):
        if offer.id in seen:
            raise ValueError(f"{path}: item {index}: duplicate offer id {offer.id!r}")
        seen.add(offer.id)
    return offers
