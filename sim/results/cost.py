"""Billing (pure): GPU time billed per replica from provisioning to
release (granularity, minimum, reserved vs on-demand); cost by replica state; effective $/1K tokens
split into prompt and completion next to an API's bill for the same tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.physics.prices import ApiPrice


# --- billing ---------------------------------------------------------------------------------------
def billed_seconds(duration_s: float, *, granularity_s: float, minimum_s: float) -> float:
    """Billed length of one instance's life: at least `minimum_s`, rounded up to `granularity_s`."""
    if duration_s <= 0 and minimum_s <= 0:
        return 0.0
    billed = max(duration_s, minimum_s)
    steps = billed / granularity_s if granularity_s > 0 else math.inf
    if math.isfinite(steps):  # (a granularity of 1e-300 s and a life of years: the count overflows, nothing to round)
        billed = math.ceil(steps - 1e-12) * granularity_s
    return billed


@dataclass(frozen=True, slots=True)
class ReplicaLife:
    """One replica's timeline and work, in seconds on the simulation clock (plain numbers)."""

    start_at_s: float  # billing starts (provisioning)
    loading_at_s: float  # weight loading began (nan if never)
    ready_at_s: float  # nan if never ready
    drain_at_s: float  # nan if never drained
    end_at_s: float  # released, or the end of the run
    busy_s: float  # engine busy seconds over its whole life
    busy_before_drain_s: float


def state_seconds(life: ReplicaLife) -> dict[str, float]:
    """Replica-seconds by state: provisioning, loading, idle, busy, draining (sums to its life)."""
    end = life.end_at_s
    loading_at = min(life.loading_at_s, end) if not math.isnan(life.loading_at_s) else end
    ready_at = min(life.ready_at_s, end) if not math.isnan(life.ready_at_s) else end
    drain_at = min(life.drain_at_s, end) if not math.isnan(life.drain_at_s) else end
    out = {
        "provisioning": loading_at - life.start_at_s,
        "loading": ready_at - loading_at,
        "busy": life.busy_s,
        "idle": (drain_at - ready_at) - life.busy_before_drain_s,
        "draining": (end - drain_at) - (life.busy_s - life.busy_before_drain_s),
    }
    # (differences of float sums: a state with no time can come out at -2e-14 s; a report prints no negative time)
    return {state: 0.0 if -1e-6 < seconds < 0.0 else seconds for state, seconds in out.items()}


def seat_classes(lives: list[ReplicaLife], reserved_replicas: int) -> list[str]:
    """Each life's capacity class for a run that did not record it (a run folder written before capacity classes):
    a replica that started while a reserved seat was free ran on it for its life, the others on demand."""
    seats_free_at = [0.0] * reserved_replicas  # when each reserved seat frees up
    out = ["on_demand"] * len(lives)
    for i in sorted(range(len(lives)), key=lambda j: lives[j].start_at_s):
        life = lives[i]
        seat = next((k for k, free_at in enumerate(seats_free_at) if free_at <= life.start_at_s), None)
        if seat is not None:
            seats_free_at[seat] = life.end_at_s
            out[i] = "reserved"
    return out


CLASSES = ("reserved", "on_demand", "spot")


def fleet_bill(
    lives: list[ReplicaLife],
    *,
    horizon_s: float,
    tp: int,
    usd_per_gpu_hour: float | None,
    reserved_usd_per_gpu_hour: float | None,
    reserved_replicas: int,
    granularity_s: float,
    minimum_s: float,
    classes: list[str] | None = None,
    spot_usd_per_gpu_hour: float | None = None,
) -> dict[str, Any]:
    """GPU-seconds by state, and cost, in all and by capacity class (`classes`: each life's, as the run recorded it;
    None: by `seat_classes`). Reserved capacity is billed for the whole horizon, whether replicas ran on its seats or
    not; on-demand and spot replicas each for their life (granularity and minimum applied per replica) at their
    class's price."""
    classes = classes if classes is not None else seat_classes(lives, reserved_replicas)
    by_state = dict.fromkeys(("provisioning", "loading", "idle", "busy", "draining"), 0.0)
    billed_s = dict.fromkeys(CLASSES, 0.0)  # replica-seconds billed per class
    n = dict.fromkeys(CLASSES, 0)
    reserved_covered_s = rounding_s = 0.0
    for life, klass in zip(lives, classes, strict=True):
        for state, seconds in state_seconds(life).items():
            by_state[state] += seconds * tp
        n[klass] += 1
        duration = life.end_at_s - life.start_at_s
        if klass == "reserved":
            reserved_covered_s += duration
        else:
            billed = billed_seconds(duration, granularity_s=granularity_s, minimum_s=minimum_s)
            billed_s[klass] += billed
            rounding_s += billed - duration
    billed_s["reserved"] = reserved_replicas * horizon_s
    by_state["billing_rounding"] = rounding_s * tp
    by_state["reserved_unused"] = max(0.0, billed_s["reserved"] - reserved_covered_s) * tp
    billed_gpu_s = sum(billed_s.values()) * tp
    price: dict[str, float | None] = {"reserved": None, "on_demand": usd_per_gpu_hour, "spot": spot_usd_per_gpu_hour}
    if usd_per_gpu_hour is not None:
        price["reserved"] = reserved_usd_per_gpu_hour if reserved_usd_per_gpu_hour is not None else usd_per_gpu_hour

    def usd(k: str) -> float | None:
        p = price[k]
        return 0.0 if not billed_s[k] else None if p is None else billed_s[k] * tp * p / 3600

    by_class = {
        k: {"replicas": n[k], "billed_gpu_seconds": billed_s[k] * tp, "usd_per_gpu_hour": price[k], "cost_usd": usd(k)}
        for k in CLASSES  # (every class, whether it billed or not: one schema for every run)
    }
    costs = [c["cost_usd"] for c in by_class.values()]
    cost = None if usd_per_gpu_hour is None or any(c is None for c in costs) else float(sum(c for c in costs if c is not None))
    return {"billed_gpu_seconds": billed_gpu_s, "gpu_seconds_by_state": by_state, "cost_usd": cost, "cost_by_capacity": by_class}


BATCH_API_DISCOUNT = 0.5  # OpenAI's and Anthropic's batch APIs: half the list price, results within 24 h


def batch_cost(
    *,
    prompt_tokens: int,
    output_tokens: int,
    dedicated: dict[str, Any] | None,
    billed_gpu_seconds: float,
    cost_usd: float | None,
    without_batch: dict[str, Any] | None,
    api: ApiPrice,
) -> dict[str, Any]:
    """What batch work cost: a dedicated batch pool's bill, or for batch work backfilled into the fleet, the
    marginal bill — the run's GPU-seconds and dollars less those of the same run without the batch work
    (`without_batch`: its `billed_gpu_seconds` and `cost_usd`; None when it was not run) — per 1K batch tokens
    (prompt + output of the batch requests completed), next to a batch API's bill for the same tokens (the
    compared sheet at `BATCH_API_DISCOUNT`)."""
    tokens = prompt_tokens + output_tokens
    api_usd = (
        prompt_tokens / 1000 * api.usd_per_1k_prompt_tokens + output_tokens / 1000 * api.usd_per_1k_completion_tokens
    ) * BATCH_API_DISCOUNT
    gpu_s: float | None
    usd: float | None
    if dedicated is not None:
        method, gpu_s, usd = "dedicated pool", dedicated["billed_gpu_seconds"], dedicated["cost_usd"]
    elif without_batch is not None:
        method = "marginal"
        gpu_s = billed_gpu_seconds - without_batch["billed_gpu_seconds"]
        usd = None if cost_usd is None or without_batch["cost_usd"] is None else cost_usd - without_batch["cost_usd"]
    else:
        method, gpu_s, usd = "not measured", None, None
    return {
        "method": method,
        "tokens": tokens,
        "gpu_seconds": gpu_s,
        "cost_usd": usd,
        "usd_per_1k_tokens": usd / tokens * 1000 if usd is not None and tokens else None,
        "api_batch_usd_for_same_tokens": api_usd,
    }


def attribute_cost(
    cost_usd: float | None, *, prefill_busy_s: float, decode_busy_s: float, prompt_tokens: int, output_tokens: int, api: ApiPrice
) -> dict[str, Any]:
    """Effective $/1K tokens: blended, and split into prompt and completion by the busy time spent on
    each (idle, cold-start, draining and rounding time spread in the same proportion); the API's bill
    for the same tokens alongside."""
    api_usd = prompt_tokens / 1000 * api.usd_per_1k_prompt_tokens + output_tokens / 1000 * api.usd_per_1k_completion_tokens
    out: dict[str, Any] = {
        "usd_per_1k_tokens": None,
        "usd_per_1k_prompt_tokens": None,
        "usd_per_1k_completion_tokens": None,
        "api": api.name,
        "api_usd_for_same_tokens": api_usd,
        "cost_vs_api": None,
    }
    tokens = prompt_tokens + output_tokens
    if cost_usd is None or tokens == 0:
        return out
    busy = prefill_busy_s + decode_busy_s
    prompt_share = prefill_busy_s / busy if busy else prompt_tokens / tokens
    out["usd_per_1k_tokens"] = cost_usd / tokens * 1000
    out["usd_per_1k_prompt_tokens"] = cost_usd * prompt_share / prompt_tokens * 1000 if prompt_tokens else None
    out["usd_per_1k_completion_tokens"] = cost_usd * (1 - prompt_share) / output_tokens * 1000 if output_tokens else None
    out["cost_vs_api"] = cost_usd / api_usd if api_usd else None
    return out
