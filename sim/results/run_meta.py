"""What a run folder's `meta.json` must hold for `SimResult.load` and the reports to read it, checked on load.

A run folder outlives the fleetsim that wrote it: one from another version may lack a key this version reads or
hold it in another shape. Either is one line saying which version wrote the file and what is missing or wrong
(`check_meta`), never a KeyError from deep in a report. Only what is read is checked (`RunMeta`, and in the
scenario as run `ScenarioRead`): keys this version does not read, a newer version's included, are let through.
Nothing here imports the config, the engine or the fleet (a result is read without them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.errors import FleetsimError, _short
from sim.spec import MAX_BILLING_S, MAX_HW_RATE, MAX_TIME_S, MAX_USD_PER_GPU_HOUR, MIN_HW_RATE

# figures a report computes with: finite, in range, numbers as numbers (a "2" for tp was read as the text it is)
Count = Annotated[int, Field(ge=0, strict=True)]
Positive = Annotated[int, Field(ge=1, strict=True)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# the bounds the scenario and the GPU catalog hold a run to: a figure past them was edited in, and reports would print
# 300-digit costs or an MFU of infinity from it
Price = Annotated[float, Field(ge=0, le=MAX_USD_PER_GPU_HOUR, allow_inf_nan=False)]
BillingS = Annotated[float, Field(ge=0, le=MAX_BILLING_S, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=MAX_TIME_S, allow_inf_nan=False)]
PeakFlops = Annotated[float, Field(ge=MIN_HW_RATE * 1e12, le=MAX_HW_RATE * 1e12, allow_inf_nan=False)]
PeakBytes = Annotated[float, Field(ge=MIN_HW_RATE * 1e9, le=MAX_HW_RATE * 1e9, allow_inf_nan=False)]
SloMs = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Open(BaseModel):
    """Keys this version reads are checked; others (newer figures, notes) are let through."""

    model_config = ConfigDict(extra="allow")


class Capacity(_Open):
    measured: bool
    max_tokens_per_s_per_replica: Amount | None
    rel_se: Amount | None = None
    fallback: dict[str, Amount | None] | None = None  # each fallback GPU type's measured tokens per GPU-second


class WallSeconds(_Open):
    build: Seconds
    simulate: Seconds
    capacity: Seconds | None = None


class ClassPrice(_Open):
    usd_per_gpu_hour: Price | None


class Supply(_Open):
    """A pool's capacity classes as the run resolved them (`sim.run.fleet.supply.supply_meta`): the bill reads their
    prices, the summary counts the launches that found no capacity."""

    prices: dict[str, ClassPrice]
    launches_failed: dict[str, Count]


class FallbackPool(_Open):
    """A pool's other GPU type (`fleet.capacity.fallback`): its line is a pool's."""

    gpu: str
    tp: Positive
    usd_per_gpu_hour: Price | None
    peak_flops_per_s_per_gpu: PeakFlops
    hbm_bw_bytes_per_s_per_gpu: PeakBytes
    supply: Supply | None = None


class Pool(FallbackPool):
    # (the report walks them: a fallback of another shape was an AttributeError or a TypeError from the report)
    fallback: list[FallbackPool] | None = None


class PrefixCache(_Open):
    hash_block_tokens: int
    prefill_tokens_saved: int


class Autoscaler(_Open):
    policy: str
    replicas: Count | None = None
    min_replicas: Count | None = None
    max_replicas: Count | None = None

    @model_validator(mode="after")
    def _counts(self) -> Autoscaler:
        if self.policy == "fixed" and self.replicas is None:
            raise ValueError("a fixed autoscaler needs replicas")
        if self.policy != "fixed" and (self.min_replicas is None or self.max_replicas is None):
            raise ValueError(f"a {self.policy} autoscaler needs min_replicas and max_replicas")
        return self


class PoolFleet(_Open):
    autoscaler: Autoscaler


class Fleet(_Open):
    mode: str = "colocated"
    router: str
    reserved_replicas: Count
    autoscaler: Autoscaler | None = None
    prefill: PoolFleet | None = None
    decode: PoolFleet | None = None

    @model_validator(mode="after")
    def _pools(self) -> Fleet:
        if self.mode == "disaggregated" and (self.prefill is None or self.decode is None):
            raise ValueError("a disaggregated fleet needs prefill and decode")
        if self.mode != "disaggregated" and self.autoscaler is None:
            raise ValueError("a colocated fleet needs an autoscaler")
        return self


class Pricing(_Open):
    reserved_usd_per_gpu_hour: Price | None
    billing_granularity_s: BillingS
    billing_minimum_s: BillingS
    compare_api: str


class ScenarioRead(_Open):
    """The scenario as run, as far as the summary and the reports read it."""

    slo: dict[str, SloMs | None]
    pricing: Pricing
    fleet: Fleet


class RunMeta(_Open):
    """meta.json as `SimResult.summary`, `fleetsim report`, the HTML and OpenMetrics writers read it."""

    fleetsim_version: str | None = None
    name: str | None = None
    seed: int
    scenario: ScenarioRead
    model: str
    gpu: str
    tp: Positive
    engine_policy: str
    step_time: str
    usd_per_gpu_hour: Price | None
    peak_flops_per_s_per_gpu: PeakFlops
    hbm_bw_bytes_per_s_per_gpu: PeakBytes
    resolved: dict[str, Any]
    horizon_s: Seconds
    n_events: Count
    capacity: Capacity
    wall_s: WallSeconds
    pools: dict[str, Pool] | None = None
    supply: Supply | None = None
    prefix_cache: PrefixCache | None = None
    without_losses: dict[str, Any] | None = None  # the same run's headline figures without losses (spot, failures)


def this_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleetsim")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def check_meta(meta: Any, run_dir: Path) -> dict[str, Any]:
    """`meta` (meta.json, parsed) if this version can read it; otherwise one line naming the version that wrote it
    and the keys missing, or the first key in the wrong shape."""
    written = meta.get("fleetsim_version") if isinstance(meta, dict) else None
    current = this_version()
    if written is None:
        who = f"an unstamped fleetsim (this is {current})"
    elif written == current:
        who = f"fleetsim {written} (this version)"
    else:
        who = f"fleetsim {str(written)[:40]} (this is {current})"
    head = f"{run_dir}: meta.json was written by {who}"
    tail = "; rerun its scenario (config.resolved.yaml) with this version" if written != current else ""
    if not isinstance(meta, dict):
        raise FleetsimError(f"{head} and is not a JSON object (got {type(meta).__name__}){tail}")
    try:
        RunMeta.model_validate(meta)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        missing = [_loc(e["loc"]) for e in errors if e["type"] == "missing"]
        if missing:  # the likeliest difference between versions
            more = f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""
            raise FleetsimError(f"{head} and lacks {', '.join(missing[:6])}{more}{tail}") from None
        e = errors[0]
        problem = e["msg"].removeprefix("Value error, ")
        raise FleetsimError(f"{head}: {_loc(e['loc'])}: {problem} (got {_short(e.get('input'))}){tail}") from None
    return meta
