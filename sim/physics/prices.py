"""API price sheets (USD per 1K prompt and completion tokens; `sim/data/api_prices.yaml`, each with its source):
the catalog of what an API charges, which cost reports compare a fleet's bill with."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from sim.errors import unknown_name


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
