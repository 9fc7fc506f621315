"""The base of every validated spec: frozen (never mutated after validation), unknown keys rejected,
no infinite or NaN numbers, and no silent coercions (strict types: `true` is not a token count, the
string "8" is not a replica count; an integer is still accepted where a float is expected)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The shortest period a scenario may ask of a periodic process (autoscaler tick, timeline sample): 1 ms.
MIN_INTERVAL_S = 1e-3
IntervalS = Annotated[float, Field(ge=MIN_INTERVAL_S)]
# Upper bounds on counts, far beyond any real deployment, so that a typo (or 2**63) is an error, not an
# overflow or an hours-long run: replicas in one fleet, other counts (sequences, GPUs), and tokens.
MAX_REPLICAS = 100_000
MAX_COUNT = 10_000_000
MAX_TOKENS = 10_000_000_000
# Physical bounds on hardware and price figures, far past any real one: beyond them a figure is a typo (1e308 GB/s,
# $1e308 an hour), and the arithmetic it feeds overflows to inf or underflows to 0.
MAX_USD_PER_GPU_HOUR = 1e6
MAX_HW_RATE = 1e6  # TFLOP/s, GB, GB/s
MIN_HW_RATE = 1e-3  # TFLOP/s, GB/s (a thousandth: slower is a typo, and prices become 300-digit numbers)
MAX_OVERHEAD_S = 1.0  # per layer or per all-reduce
MAX_FRONTEND_S = 60.0  # a request's path outside the engine (`roofline.frontend_latency_s`): a minute is a typo's
MAX_STEP_OVERHEAD_S = 3600.0
MAX_BILLING_S = 366 * 86_400.0
MAX_TIME_S = 1e12  # an instant or a span, in seconds (31,700 years): past it a trace, log or record holds a typo or an edit
MAX_SEED = 2**63 - 1  # a scenario's or generator's seed (numpy's seeds are 64-bit; a study keeps below 2**62)
PRIORITY_RANGE = (-(2**31), 2**31 - 1)  # a request's or batch job's priority (int32, as a trace column stores it)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
