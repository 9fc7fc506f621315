"""Where a pool's replicas come from: capacity classes, their caps, launches that find no capacity, and prices.

A launch takes a free reserved seat first (`fleet.reserved_replicas`: capacity paid for the whole run, never short),
else tries the classes of `fleet.capacity.launch_order` in turn: a class at its `max_replicas` is passed over; one
backed off after a failure is passed over until its back-off ends; otherwise the launch fails when the class's GPUs
held would exceed what is obtainable then (`obtainable_gpus`) or with `launch_failure_probability` (a draw from the
run's `shortages` stream), and the class is backed off (the Cluster Autoscaler's node-group back-off: `initial_s`,
doubled per further failure up to `max_s`, reset by a success) before the next class is tried. With every class out
the launch waits (`Pool.pending`) and is tried again when the first back-off ends or when a replica is released (a
class's obtainable GPUs rising is not seen before its back-off ends, as an autoscaler learns it only by trying).
Each replica keeps its class for its life (the bill prices it by class).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import simpy

from sim.errors import FleetsimError
from sim.physics.prices import INTERRUPTION_BANDS, capacity_price
from sim.run.clock import LIFECYCLE, call_at
from sim.scenario.config import HOURS_PER_MONTH, CapacityConfig, PricingConfig, SpotConfig


class Preemptible(Protocol):
    """What the budget sees of a pool whose replicas it may preempt (`sim.run.fleet.cluster.Pool`)."""

    def preemption_candidates(self, flavor: int) -> list[tuple[bool, int, Any]]: ...

    def interrupt(self, slot: Any, reason: str) -> None: ...


class GpuBudget:
    """GPUs of each type that every deployment of a platform holds at once (`gpu_budget`; types not named: no limit),
    as a cluster's GPU quota or node pool bounds them. A launch that would pass its type's budget waits (its pool's
    `pending`) whatever its capacity classes offer; when GPUs of the type are given back, the waiting pools try again
    at that instant in the order of their deployment's `priority` (highest first; equal priorities: the one waiting
    longest first), as the Kubernetes scheduler takes its queue in PriorityClass order: a waiting pool whose replica
    does not fit the GPUs freed leaves them to the next.

    A deployment with `preemption: lower_priority` (Kubernetes' PreemptLowerPriority) whose launch does not fit takes
    the GPUs from lower-priority deployments' replicas of its type, when that makes it fit: the lowest priority first,
    starting replicas before ready ones, the newest first (the least work lost); each victim is lost as a failed one
    is (`Pool.interrupt`: its requests back to its pool, recomputed; `interrupted`: "preempted") and its pool asks for
    a replacement, which waits for GPUs at its own priority."""

    def __init__(self, env: simpy.Environment, limits: dict[str, int]) -> None:
        self.env = env
        self.limits = dict(limits)
        self.held = dict.fromkeys(self.limits, 0)
        self.peak = dict.fromkeys(self.limits, 0)
        self.refused: dict[str, int] = {}  # launch attempts the budget held back, per deployment
        self._waiting: dict[Callable[[], None], tuple[int, int]] = {}  # a pool's retry -> (-priority, arrival order)
        self._order = 0
        self._wake_due = False
        self._members: list[tuple[Supply, Preemptible, int]] = []  # every pool's replica types, for preemption
        self._claimed: dict[str, int] = {}  # GPUs a preemption under way frees for its launch (no one else takes them)

    def join(self, supply: Supply, pool: Preemptible, flavor: int) -> None:
        self._members.append((supply, pool, flavor))

    def preempt(self, gpu: str, need: int, priority: int) -> bool:
        """Free `need` GPUs of `gpu` by preempting lower-priority replicas, if that suffices (then True)."""
        limit = self.limits.get(gpu)
        if limit is None:
            return False
        free = limit - self.held[gpu] - self._claimed.get(gpu, 0)  # (GPUs an outer preemption frees are its own)
        candidates = []
        for supply, pool, flavor in self._members:
            if supply.gpu == gpu and supply.priority < priority:
                for started, newest, slot in pool.preemption_candidates(flavor):
                    candidates.append((supply.priority, started, newest, supply.tp, pool, slot))
        candidates.sort(key=lambda c: c[:3])
        chosen, freed = [], 0
        for c in candidates:
            if free + freed >= need:
                break
            chosen.append(c)
            freed += c[3]
        if free + freed < need:
            return False
        self._claimed[gpu] = self._claimed.get(gpu, 0) + need  # (the victims' replacements wait, as they would)
        try:
            for *_, pool, slot in chosen:
                pool.interrupt(slot, "preempted")
        finally:
            self._claimed[gpu] -= need
        return True

    def room(self, gpu: str, n: int) -> bool:
        limit = self.limits.get(gpu)
        return limit is None or self.held[gpu] + self._claimed.get(gpu, 0) + n <= limit

    def take(self, gpu: str, n: int) -> None:
        if gpu in self.limits:
            self.held[gpu] += n
            self.peak[gpu] = max(self.peak[gpu], self.held[gpu])

    def give_back(self, gpu: str, n: int) -> None:
        if gpu not in self.limits:
            return
        self.held[gpu] -= n
        if self._waiting and not self._wake_due:
            self._wake_due = True
            call_at(self.env, 0.0, LIFECYCLE, self._wake)

    def wait(self, retry: Callable[[], None], priority: int) -> None:
        """A pool with launches held back by the budget: `retry()` when GPUs are given back."""
        if retry not in self._waiting:
            self._waiting[retry] = (-priority, self._order)
            self._order += 1

    def _wake(self, _event: simpy.Event | None = None) -> None:
        self._wake_due = False
        for retry in sorted(self._waiting, key=self._waiting.__getitem__):
            del self._waiting[retry]  # (a pool still short registers again, at the back of its priority)
            retry()


class Supply:
    """One pool's capacity classes (see the module docstring). Counts replicas held per class (not yet released)."""

    def __init__(
        self, *, tp: int, reserved: int, capacity: CapacityConfig | None = None, rng: np.random.Generator | None = None
    ) -> None:
        capacity = capacity if capacity is not None else CapacityConfig()
        self.budget: GpuBudget | None = None  # a platform's shared GPU budget (`attach`)
        self.gpu = ""
        self.priority = 0
        self.deployment = ""
        self.preempts = False  # its launches preempt lower-priority replicas (`GpuBudget.preempt`)
        self.tp = tp
        self.reserved = reserved
        self.order = capacity.order
        self.limits = {k: capacity.limits(k) for k in self.order}
        self.backoff = capacity.backoff
        self.rng = rng
        self.held = {"reserved": 0, **dict.fromkeys(self.order, 0)}
        self.backed_off_until = dict.fromkeys(self.order, -math.inf)
        self._backoff_s: dict[str, float | None] = dict.fromkeys(self.order, None)  # the last back-off (None: none)
        self.failed = dict.fromkeys(self.order, 0)  # launch attempts that found no capacity, per class

    def _room(self, klass: str) -> bool:
        cap = self.limits[klass].max_replicas
        return cap is None or self.held[klass] < cap

    def attach(
        self,
        budget: GpuBudget,
        gpu: str,
        *,
        priority: int,
        deployment: str,
        pool: Preemptible,
        flavor: int = 0,
        preempts: bool = False,
    ) -> None:
        """Count this pool's replicas of replica type `flavor` (`gpu`, `tp` GPUs each) against a platform's GPU budget."""
        self.budget, self.gpu, self.priority, self.deployment, self.preempts = budget, gpu, priority, deployment, preempts
        budget.join(self, pool, flavor)

    def over_budget(self) -> bool:
        """Would a launch now pass the platform's GPU budget?"""
        return self.budget is not None and not self.budget.room(self.gpu, self.tp)

    def take(self, now: float, *, warm: bool = False) -> str | None:
        """The class a replica launched now runs on (counted as held), or None when every class is out (or the
        platform's GPU budget is). `warm`: a replica that exists before the run (no launch to fail)."""
        budget = self.budget
        if budget is not None:
            if not budget.room(self.gpu, self.tp) and not (
                self.preempts and not warm and budget.preempt(self.gpu, self.tp, self.priority)
            ):
                budget.refused[self.deployment] = budget.refused.get(self.deployment, 0) + 1
                return None
            klass = self._take(now, warm=warm)
            if klass is not None:
                budget.take(self.gpu, self.tp)
            return klass
        return self._take(now, warm=warm)

    def _take(self, now: float, *, warm: bool) -> str | None:
        if self.held["reserved"] < self.reserved:
            self.held["reserved"] += 1
            return "reserved"
        for klass in self.order:
            lim = self.limits[klass]
            if not self._room(klass):
                continue
            if not warm:
                if self.backed_off_until[klass] > now:
                    continue
                short = (self.held[klass] + 1) * self.tp > lim.obtainable_at(now)
                if not short and lim.launch_failure_probability > 0:
                    assert self.rng is not None
                    short = bool(self.rng.random() < lim.launch_failure_probability)
                if short:
                    self._back_off(klass, now)
                    continue
                self._backoff_s[klass] = None
            self.held[klass] += 1
            return klass
        return None

    def _back_off(self, klass: str, now: float) -> None:
        last = self._backoff_s[klass]
        wait = self.backoff.initial_s if last is None else min(2 * last, self.backoff.max_s)
        self._backoff_s[klass] = wait
        self.backed_off_until[klass] = now + wait
        self.failed[klass] += 1

    def give_back(self, klass: str) -> None:
        """A replica of `klass` was released."""
        self.held[klass] -= 1
        if self.budget is not None:
            self.budget.give_back(self.gpu, self.tp)

    def next_try(self, now: float) -> float | None:
        """When a waiting launch may next succeed by a back-off's end: the earliest among classes with room (None: every
        class is at its cap, only a release frees one)."""
        ends = [self.backed_off_until[k] for k in self.order if self._room(k)]
        later = [t for t in ends if t > now]
        return min(later) if later else None

    def exhausted(self, now: float) -> bool:
        """Can no launch ever succeed from `now` on? (No reserved seat; each class capped at 0, failing every try, or
        obtainable in fewer GPUs than a replica needs now and at every later step.)"""
        if self.reserved > 0:
            return False
        for klass in self.order:
            lim = self.limits[klass]
            if lim.max_replicas == 0 or lim.launch_failure_probability >= 1:
                continue
            later = [g for t, g in lim.obtainable_gpus if t > now]
            if lim.obtainable_at(now) >= self.tp or any(g >= self.tp for g in later):
                return False
        return True


# --- prices and rates --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClassPrice:
    usd_per_gpu_hour: float | None
    source: str


def class_prices(pricing: PricingConfig, gpu: str, on_demand: float | None, *, spot: bool) -> dict[str, ClassPrice]:
    """$ per GPU-hour of each class and where it came from: given in `pricing`, else the capacity price sheet for
    `pricing.provider` (reserved: its 1-year price), else reserved at the on-demand price (no commitment discount
    assumed). `on_demand` is the resolved on-demand price. A spot fleet without a spot price is an error."""
    sheet = capacity_price(gpu, pricing.provider) if pricing.provider is not None else None
    where = f"capacity price sheet: {pricing.provider} ({sheet.source}, {sheet.as_of})" if sheet is not None else ""
    od = ClassPrice(on_demand, "pricing.usd_per_gpu_hour" if pricing.usd_per_gpu_hour is not None else where or "GPU catalog")
    if pricing.reserved_usd_per_gpu_hour is not None:
        reserved = ClassPrice(pricing.reserved_usd_per_gpu_hour, "pricing.reserved_usd_per_gpu_hour")
    elif sheet is not None and sheet.reserved_1y is not None:
        reserved = ClassPrice(sheet.reserved_1y, where + ", 1-year")
    else:
        reserved = ClassPrice(on_demand, "the on-demand price (no reserved price given)")
    out = {"reserved": reserved, "on_demand": od}
    if spot:
        if pricing.spot_usd_per_gpu_hour is not None:
            out["spot"] = ClassPrice(pricing.spot_usd_per_gpu_hour, "pricing.spot_usd_per_gpu_hour")
        elif sheet is not None and sheet.spot is not None:
            out["spot"] = ClassPrice(sheet.spot, where)
        else:
            why = f"the sheet has no {pricing.provider} spot price for {gpu}" if sheet is not None else "no pricing.provider"
            raise FleetsimError(
                f"pricing.spot_usd_per_gpu_hour: spot capacity needs a price ({why}); give it, or pricing.provider to "
                "take it from the capacity price sheet"
            )
    return out


def spot_rate_per_s(spot: SpotConfig, pricing: PricingConfig, gpu: str) -> tuple[float, str]:
    """Reclaims per second per spot replica, and where the rate came from: the spot block's, else the price sheet's
    interruption band for `pricing.provider` (its midpoint, `INTERRUPTION_BANDS`), else none (only given instants)."""
    if spot.monthly_interruption_frequency is not None or spot.interruptions_per_hour is not None:
        return spot.rate_per_s, "fleet.capacity.spot"
    if pricing.provider is not None:
        band = capacity_price(gpu, pricing.provider).spot_interruption
        if band in INTERRUPTION_BANDS:
            share = INTERRUPTION_BANDS[band]
            return -math.log1p(-share) / (HOURS_PER_MONTH * 3600), f"{pricing.provider} interruption band {band}"
    return 0.0, "none given (only fleet.capacity.spot.reclaim_at_s)"


def supply_meta(supply: Supply, prices: dict[str, ClassPrice], spot_rate: tuple[float, str] | None) -> dict[str, Any]:
    """meta.json's `supply`: each class's price and source, launches that found no capacity, the spot rate used."""
    return {
        "order": ["reserved", *supply.order],
        "prices": {k: {"usd_per_gpu_hour": p.usd_per_gpu_hour, "source": p.source} for k, p in prices.items()},
        "launches_failed": dict(supply.failed),
        "spot_reclaims_per_hour": None if spot_rate is None else spot_rate[0] * 3600,
        "spot_rate_source": None if spot_rate is None else spot_rate[1],
    }
