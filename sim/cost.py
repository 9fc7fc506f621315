"""Prices: API price sheets to compare a fleet's effective $/1K tokens against.

Billing of GPU time and the attribution of cost to prompt and completion tokens build on this.
"""

from __future__ import annotations

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


def load_api_prices() -> dict[str, ApiPrice]:
    raw = yaml.safe_load(resources.files("sim.data").joinpath("api_prices.yaml").read_text())
    return {name: ApiPrice(name=name, **body) for name, body in raw.items()}


def api_price(name: str) -> ApiPrice:
    prices = load_api_prices()
    if name not in prices:
        raise unknown_name("API price sheet", name, prices)
    return prices[name]
