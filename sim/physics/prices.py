"""API price sheets (USD per 1K prompt and completion tokens; `sim/data/api_prices.yaml`, each with its source):
the catalog of what an API charges, which cost reports compare a fleet's bill with."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from sim.errors import FleetsimError, unknown_name


@dataclass(frozen=True, slots=True)
class ApiPrice:
    name: str
    description: str
    usd_per_1k_prompt_tokens: float
    usd_per_1k_completion_tokens: float
    source: str


@functools.cache
def load_api_prices() -> dict[str, ApiPrice]:
    raw = yaml.safe_load(resources.files("sim.data").joinpath("api_prices.yaml").read_text())
    return {name: ApiPrice(name=name, **body) for name, body in raw.items()}


def api_price(name: str) -> ApiPrice:
    prices = load_api_prices()
    if name not in prices:
        raise unknown_name("API price sheet", name, prices)
    return prices[name]


# --- capacity classes: what a provider charges for a GPU-hour reserved, on demand and on spot ----------------------
@dataclass(frozen=True, slots=True)
class CapacityPrice:
    """One provider's prices for one GPU (`sim/data/capacity_prices.yaml`, its source and date): $ per GPU-hour on
    demand, on spot, reserved for 1 and 3 years (None where not published), the spot interruption band and notice."""

    gpu: str
    provider: str
    region: str | None
    instance: str | None
    gpus_per_instance: int | None
    on_demand: float | None
    spot: float | None
    reserved_1y: float | None
    reserved_3y: float | None
    spot_interruption: str | None
    notice_s: float | None
    source: str
    as_of: str


# AWS Spot Instance Advisor bands of "frequency of interruption" (share of a month's instances interrupted) -> the
# band's midpoint, used when a spot block gives no rate of its own (">20%": 25%, an assumption: the band is open)
INTERRUPTION_BANDS = {"<5%": 0.025, "5-10%": 0.075, "10-15%": 0.125, "15-20%": 0.175, ">20%": 0.25}


@functools.cache
def load_capacity_prices() -> dict[tuple[str, str], CapacityPrice]:
    raw = yaml.safe_load(resources.files("sim.data").joinpath("capacity_prices.yaml").read_text()) or {}
    fields = set(CapacityPrice.__dataclass_fields__) - {"gpu", "provider"}
    return {
        (gpu, provider): CapacityPrice(gpu=gpu, provider=provider, **{k: body.get(k) for k in fields})
        for gpu, providers in raw.items()
        for provider, body in providers.items()
    }


def capacity_providers() -> list[str]:
    return sorted({provider for _, provider in load_capacity_prices()})


def capacity_price(gpu: str, provider: str) -> CapacityPrice:
    """`provider`'s prices for `gpu` (a catalog name); an error naming what the sheet holds otherwise."""
    sheet = load_capacity_prices()
    if (gpu, provider) not in sheet:
        have = sorted(g for g, p in sheet if p == provider)
        raise FleetsimError(
            f"pricing.provider: the capacity price sheet has no {provider} prices for {gpu} (it has {', '.join(have)}); "
            "give the prices (pricing.usd_per_gpu_hour, spot_usd_per_gpu_hour, reserved_usd_per_gpu_hour)"
        )
    return sheet[(gpu, provider)]
