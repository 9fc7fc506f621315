"""Capacity that can be lost: hardware failures and spot reclaims of a pool's replicas.

Each replica, from the instant it is launched, draws its time to failure (exponential, rate TP / GPU MTBF) and, on
spot capacity (its class, `sim.run.fleet.supply`), its time to a reclaim notice (exponential, the spot rate per
replica), from the run's `hazards` stream in launch order. A failure loses the replica at once; a reclaim notice
stops it taking requests (it drains), launches its replacement, and loses it at the notice's end. Either way its
remaining requests go back to the pool (`Pool.interrupt`) to be recomputed elsewhere: none is lost. Instants given in
the scenario (`fail_at_s`, `reclaim_at_s`) hit the lowest-id ready replica then (a spot one for a reclaim; none
ready: nothing happens; meta.json's `hazards` counts them and `fleetsim run` warns). When spot's obtainable GPUs
fall below the spot GPUs held, the excess is reclaimed at once, the newest replicas first (a zone's spot pool taken
back together).
"""

from __future__ import annotations

import math

import numpy as np
import simpy

from sim.run.clock import LIFECYCLE, call_at
from sim.run.fleet.cluster import Pool, ReplicaSlot
from sim.scenario.config import CapacityConfig


class Hazards:
    """A pool's failures and reclaims; it listens to its launches (`Pool.on_launch`)."""

    def __init__(
        self,
        env: simpy.Environment,
        pool: Pool,
        capacity: CapacityConfig,
        *,
        tp: int,
        rng: np.random.Generator,
        reclaim_rate_per_s: float = 0.0,
    ) -> None:
        self.env = env
        self.pool = pool
        self.rng = rng
        self.tp = tp
        failures, spot = capacity.failures, capacity.spot
        self.per_gpu_fail_rate = 0.0 if failures is None else 1 / (failures.gpu_mtbf_hours * 3600)
        # per replica type (`Pool.flavors`): failures per second (TP times a GPU's), spot reclaims per second
        self.fail_rates = [tp * self.per_gpu_fail_rate]
        self.reclaim_rates = [reclaim_rate_per_s]
        self.notice_s = 0.0 if spot is None else spot.notice_s
        self.spot = spot
        self.missed = 0  # given instants with no ready replica to hit
        pool.on_launch.append(self.watch)
        for t in [] if failures is None else failures.fail_at_s:
            call_at(env, t, LIFECYCLE, lambda _e: self._hit_first(failure=True))
        for t in [] if spot is None else spot.reclaim_at_s:
            call_at(env, t, LIFECYCLE, lambda _e: self._hit_first(failure=False))
        for t, _gpus in [] if spot is None else spot.obtainable_gpus:
            call_at(env, t, LIFECYCLE, lambda _e: self._take_back())

    def add_flavor(self, tp: int, reclaim_rate_per_s: float) -> None:
        """A fallback replica type of `tp` GPUs whose spot replicas are reclaimed at `reclaim_rate_per_s`."""
        self.fail_rates.append(tp * self.per_gpu_fail_rate)
        self.reclaim_rates.append(reclaim_rate_per_s)

    def watch(self, slot: ReplicaSlot) -> None:
        """A replica launched now: when it will fail, when its reclaim notice comes if on spot (whichever is first
        acts)."""
        fail_rate, reclaim_rate = self.fail_rates[slot.flavor], self.reclaim_rates[slot.flavor]
        if fail_rate > 0:
            after = float(self.rng.exponential(1 / fail_rate))
            call_at(self.env, after, LIFECYCLE, lambda _e: self.pool.interrupt(slot, "failure"))
        if reclaim_rate > 0 and slot.capacity == "spot":
            after = float(self.rng.exponential(1 / reclaim_rate))
            call_at(self.env, after, LIFECYCLE, lambda _e: self.pool.notice(slot, self.notice_s))

    def _hit_first(self, *, failure: bool) -> None:
        ready = self.pool.ready if failure else [s for s in self.pool.ready if s.capacity == "spot"]
        if not ready:
            self.missed += 1
            return
        slot = ready[0]
        if failure:
            self.pool.interrupt(slot, "failure")
        else:
            self.pool.notice(slot, self.notice_s)

    def _take_back(self) -> None:
        """Spot's obtainable GPUs changed: reclaim the spot replicas beyond them (not already on notice), newest first."""
        assert self.spot is not None
        held = [s for s in self.pool.live if s.capacity == "spot" and not s.interrupted and s.flavor == 0]
        excess = len(held) * self.tp - self.spot.obtainable_at(self.env.now)
        for slot in sorted(held, key=lambda s: -s.replica_id)[: max(0, math.ceil(excess / self.tp))]:
            self.pool.notice(slot, self.notice_s)
