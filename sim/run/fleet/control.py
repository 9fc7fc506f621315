"""The fleet's periodic processes: the autoscaler's control loop and the timeline sampler.

Both run at low priority among the events of an instant (`sim.run.clock`): the autoscaler observes
after every arrival, step end and lifecycle change at its tick, and the sampler records after the
autoscaler has acted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from sim.errors import FleetsimError
from sim.policies.autoscale import Policy
from sim.run.clock import OBSERVE, SAMPLE, At
from sim.run.fleet.batch import BatchLane
from sim.run.fleet.cluster import Pool
from sim.states import ReplicaState

TIMELINE_COLUMNS = [
    "t_s",
    "replicas_provisioning",
    "replicas_loading",
    "replicas_ready",
    "replicas_draining",
    "waiting",
    "running",
    "kv_use",
    "arrival_rate_per_s",
    "busy_fraction",
    "kv_transfers_waiting",
]


# Bounds on the periodic processes (each tick or sample costs microseconds to tens of microseconds): a
# scenario whose trace needs more is refused before it runs, and a run that goes on this long past its
# trace (a cold start of years, say) stops with an error instead of running for hours.
MAX_TIMELINE_SAMPLES = 2_000_000
MAX_AUTOSCALER_TICKS = 2_000_000

TIMELINE_DTYPES = {
    c: ("float64" if c in ("t_s", "kv_use", "arrival_rate_per_s", "busy_fraction") else "int64") for c in TIMELINE_COLUMNS
}


def control_loop(
    env: simpy.Environment, fleet: Pool, policy: Policy, interval_s: float, floor: Callable[[int], int] | None = None
) -> Generator[simpy.Event, Any, None]:
    """Every `interval_s`: observe the fleet, ask the policy (and scale to at least `floor(ready replicas)` when
    given), reconcile."""
    for _ in range(MAX_AUTOSCALER_TICKS):
        yield At(env, interval_s, OBSERVE)
        obs = fleet.observe()
        desired = policy.decide(obs)
        if floor is not None:
            desired = max(desired, floor(obs.n_ready))
        fleet.scale_to(desired)
    raise FleetsimError(
        f"the run went on for {MAX_AUTOSCALER_TICKS:,} autoscaler ticks ({env.now:,.0f} s simulated) without resolving "
        "every request; check the cold-start durations and the trace's time span"
    )


def _mean(values: list[float]) -> float:
    """`np.mean` of a few floats without its array: numpy's pairwise sum adds fewer than 8 values one at a time from
    0.0, as `sum` does, so the same float (a fleet's per-tick means, sampled every interval, cost ~9 us each through
    numpy, most of a tick's work on a small fleet)."""
    n = len(values)
    return sum(values) / n if n < 8 else float(np.mean(values))


def sample_timeline(
    env: simpy.Environment,
    pools: list[Pool],
    lanes: list[BatchLane],
    interval_s: float,
    rows: list[tuple[Any, ...]],
    transfers_waiting: Callable[[], int] | None = None,
) -> Generator[simpy.Event, Any, None]:
    """Every interval: replicas by state, queues, KV use, arrival rate, busy fraction (see TIMELINE_COLUMNS), over
    every pool; `waiting` counts the pools' queues and the batch lanes' too."""

    def arrivals() -> int:
        return sum(pool.n_arrivals for pool in pools) + sum(lane.n_added for lane in lanes)

    last_busy: dict[int, float] = {}
    last_arrivals = 0
    states = (ReplicaState.PROVISIONING, ReplicaState.LOADING, ReplicaState.READY, ReplicaState.DRAINING)
    for _ in range(MAX_TIMELINE_SAMPLES):
        yield At(env, interval_s, SAMPLE)
        now = env.now
        counts = dict.fromkeys(states, 0)
        busy, kv, running = [], [], 0
        waiting = sum(len(pool.queue) for pool in pools) + sum(lane.n_queued for lane in lanes)
        for slot in (s for pool in pools for s in pool.live):
            if slot.state in counts:
                counts[slot.state] += 1
            engine = slot.engine
            if engine is None or slot.state == ReplicaState.RELEASED:
                continue
            b = engine.busy_s_at(now)  # (busy and kv: one entry each per replica with an engine)
            busy.append(min(1.0, (b - last_busy.get(slot.replica_id, 0.0)) / interval_s))
            last_busy[slot.replica_id] = b
            kv.append(engine.kv_use_at(now))
            running += engine.n_running
            waiting += len(engine.waiting)
        kv_mean, busy_mean = (_mean(kv), _mean(busy)) if kv else (math.nan, math.nan)
        rows.append(
            (
                now,
                *counts.values(),
                waiting,
                running,
                kv_mean,
                (arrivals() - last_arrivals) / interval_s,
                busy_mean,
                transfers_waiting() if transfers_waiting is not None else 0,
            )
        )
        last_arrivals = arrivals()
    last = dict(zip(TIMELINE_COLUMNS, rows[-1], strict=True))
    state = "no replica up" if math.isnan(last["busy_fraction"]) else f"replicas {last['busy_fraction']:.0%} busy"
    raise FleetsimError(
        f"the run went on for {MAX_TIMELINE_SAMPLES:,} timeline samples ({env.now:,.0f} s simulated) without resolving "
        f"every request ({last['waiting']:,} waiting and {last['running']:,} running at the end, {state}): the "
        "replicas are far too slow for the trace (check the step times: engine.step_time, roofline figures) or never "
        "came up (check the cold-start durations); a longer fleet.timeline_interval_s allows a longer run"
    )
