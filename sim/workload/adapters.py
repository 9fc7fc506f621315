"""LoRA adapters named by a trace's requests: a synthetic popularity over adapters (`AdapterMix`), applied to any trace
(a generator's or a file's) as its `adapters:` block.

Real platforms serve a long tail of fine-tunes: a few adapters take most requests (S-LoRA and Punica evaluate on
power-law popularity over hundreds to thousands of adapters). A request is for the base model with probability
`base_share`, else for adapter i in [0, count) with probability proportional to 1 / (i + 1)^zipf (zipf 0: uniform),
drawn from the run's seeded stream "adapters".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from sim.spec import Frozen
from sim.streams import RunStreams
from sim.workload.schema import BASE_MODEL, MAX_ADAPTER

if TYPE_CHECKING:
    import pandas as pd


class AdapterMix(Frozen):
    count: int = Field(ge=1, le=MAX_ADAPTER)  # adapters 0 .. count - 1
    zipf: float = Field(default=1.0, ge=0, le=10)  # popularity exponent (0: uniform)
    base_share: float = Field(default=0.0, ge=0, lt=1)  # requests for the base model


def adapter_probabilities(mix: AdapterMix) -> np.ndarray:
    """Each adapter's share of the requests that name one (sums to 1)."""
    weights: np.ndarray = 1.0 / np.arange(1, mix.count + 1, dtype=np.float64) ** mix.zipf
    out: np.ndarray = weights / weights.sum()
    return out


def assign_adapters(frame: pd.DataFrame, mix: AdapterMix, seed: int) -> pd.DataFrame:
    """The frame with an `adapter` column drawn from `mix` (replacing any it had)."""
    rng = RunStreams(seed).generator("adapters")
    n = len(frame)
    base = rng.random(n) < mix.base_share
    ids = rng.choice(mix.count, size=n, p=adapter_probabilities(mix))
    out = frame.copy()
    out["adapter"] = np.where(base, BASE_MODEL, ids).astype(np.int64)
    return out
