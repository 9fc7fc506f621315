"""Build a simulation from a scenario and a trace, run it, return in-memory results (no files).

result = simulate(load_config("configs/default.yaml"))   # paths in the scenario: relative to its file
result.summary()      # the dict written to summary.json
result.requests       # one row per request (DataFrame)
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.autoscale import FixedConfig, control_loop, make_policy
from sim.config import Scenario, resolve_scenario
from sim.engine.kv import KvBlockPool
from sim.engine.records import COMPLETED, RequestLog
from sim.engine.replica import Replica, admission_reason
from sim.engine.scheduler import POLICIES, Limits
from sim.engine.sequence import Seq
from sim.engine.step_time import ConstantStepTime, RooflineStepTime, StepTimeModel
from sim.errors import FleetsimError
from sim.fleet.cluster import Fleet
from sim.result import SimResult
from sim.roofline import RooflineSetup, kv_capacity_tokens
from sim.router import ROUTERS
from sim.workload import load_trace
from sim.workload.synthetic import SyntheticSpec, generate
from sim.workload.transforms import TraceFile, load_trace_file


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes."""

    def __init__(self) -> None:
        super().__init__()
        self.n_events = 0

    def step(self) -> None:
        self.n_events += 1
        super().step()


def scenario_trace(scenario: Scenario, *, base_dir: Path = Path(".")) -> pd.DataFrame:
    if scenario.trace is None:
        raise FleetsimError("no trace: give `trace:` in the scenario (a file or a generator block) or --trace FILE")
    if isinstance(scenario.trace, SyntheticSpec):
        return generate(scenario.trace, base_dir=base_dir, default_seed=scenario.seed)
    if isinstance(scenario.trace, TraceFile):
        return load_trace_file(scenario.trace, base_dir=base_dir, seed=scenario.seed)
    path = Path(scenario.trace)
    return load_trace(path if path.is_absolute() else base_dir / path)


def _step_model(scenario: Scenario, setup: RooflineSetup) -> StepTimeModel:
    cfg = scenario.engine.step_time
    if cfg.kind == "constant":
        assert cfg.decode_step_s is not None
        return ConstantStepTime(prefill_s_per_token=cfg.prefill_s_per_token, decode_step_s=cfg.decode_step_s)
    return RooflineStepTime(setup)


def _check_engine(scenario: Scenario, setup: RooflineSetup, trace: pd.DataFrame, n_blocks: int, budget: int) -> None:
    engine = scenario.engine
    if n_blocks < 1:
        raise FleetsimError(f"engine: the KV cache holds no block of {engine.block_size} tokens on {setup.tp}x {setup.gpu.name}")
    if engine.policy == "prefill_first":
        fits = (trace["prompt_tokens"] + trace["output_tokens"]) <= setup.model.max_context_tokens
        largest = int(trace.loc[fits, "prompt_tokens"].max()) if fits.any() else 0
        if largest > budget:
            raise FleetsimError(
                f"engine.max_num_batched_tokens={budget} is below the trace's largest prompt ({largest} tokens): "
                "prefill_first prefills a prompt whole; raise it or use policy chunked"
            )


def _feed(
    env: simpy.Environment, trace: pd.DataFrame, log: RequestLog, deliver: Callable[[Seq], None]
) -> Generator[simpy.Event, Any, None]:
    """Deliver requests at their arrival times, all requests of one instant together."""
    t = log.arrival_at_s
    prompt, output = log.prompt_tokens, log.output_tokens
    priority = trace["priority"].to_numpy() if "priority" in trace.columns else np.zeros(len(t), dtype=np.int64)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(t) > 0) + 1, [len(t)]))
    for lo, hi in itertools.pairwise(bounds):
        delay = t[lo] - env.now
        while env.now + delay < t[lo]:  # float: make the clock land on (not just below) the arrival
            delay = math.nextafter(delay, math.inf)
        if delay > 0:
            yield env.timeout(delay)
        for i in range(lo, hi):
            deliver(
                Seq(
                    idx=i,
                    arrival_at_s=float(t[i]),
                    prompt_tokens=int(prompt[i]),
                    output_tokens=int(output[i]),
                    priority=int(priority[i]),
                )
            )


def _replica_factory(
    env: simpy.Environment, scenario: Scenario, setup: RooflineSetup, log: RequestLog, n_blocks: int, budget: int
) -> Callable[[int], Replica]:
    engine = scenario.engine
    step_time = _step_model(scenario, setup)
    limits = Limits(max_num_seqs=engine.max_num_seqs, max_num_batched_tokens=budget, block_size=engine.block_size)

    def make(replica_id: int) -> Replica:
        return Replica(
            env,
            replica_id=replica_id,
            step_time=step_time,
            policy=POLICIES[engine.policy](),
            limits=limits,
            pool=KvBlockPool(n_blocks=n_blocks, block_size=engine.block_size),
            log=log,
            max_context_tokens=setup.model.max_context_tokens,
            fast_forward=engine.fast_forward,
        )

    return make


def _sampler(
    env: simpy.Environment, fleet: Fleet, interval_s: float, rows: list[tuple[Any, ...]]
) -> Generator[simpy.Event, Any, None]:
    """Every interval: replicas by state, queues, KV use, arrival rate, busy fraction."""
    last_busy: dict[int, float] = {}
    last_arrivals = 0
    while True:
        yield env.timeout(interval_s)
        now = env.now
        counts = dict.fromkeys(("provisioning", "loading", "ready", "draining"), 0)
        busy, kv, running, waiting = [], [], 0, len(fleet.queue)
        for slot in fleet.slots:
            if slot.state in counts:
                counts[slot.state] += 1
            engine = slot.engine
            if engine is None or slot.state == "released":
                continue
            b = engine.busy_s_at(now)
            busy.append(min(1.0, (b - last_busy.get(slot.replica_id, 0.0)) / interval_s))
            last_busy[slot.replica_id] = b
            kv.append(engine.kv_blocks_used_at(now) / engine.pool.n_blocks)
            running += len(engine.running)
            waiting += len(engine.waiting)
        rows.append(
            (
                now,
                *counts.values(),
                waiting,
                running,
                float(np.mean(kv)) if kv else math.nan,
                (fleet.n_arrivals - last_arrivals) / interval_s,
                float(np.mean(busy)) if busy else math.nan,
            )
        )
        last_arrivals = fleet.n_arrivals


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
]


def _build_fleet(
    env: simpy.Environment, scenario: Scenario, setup: RooflineSetup, log: RequestLog, *, n_blocks: int, budget: int
) -> Fleet:
    """The fleet with its initial replicas (warm or cold-starting) and, unless fixed, its autoscaler."""
    engine, fcfg = scenario.engine, scenario.fleet
    router_rng, lifecycle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(scenario.seed).spawn(2))
    fleet = Fleet(
        env,
        make_engine=_replica_factory(env, scenario, setup, log, n_blocks, budget),
        admission=functools.partial(
            admission_reason,
            max_context_tokens=setup.model.max_context_tokens,
            n_blocks=n_blocks,
            block_size=engine.block_size,
            whole_prompt_budget=None if engine.policy == "chunked" else budget,
        ),
        router=ROUTERS[fcfg.router](router_rng),
        lifecycle=fcfg.lifecycle,
        weight_bytes=setup.weight_bytes,
        log=log,
        rng=lifecycle_rng,
        max_replicas=fcfg.replica_cap,
        queue_max=fcfg.queue_max,
        queue_timeout_s=fcfg.queue_timeout_s,
    )
    start_n = min(fcfg.autoscaler.start_replicas, fcfg.replica_cap)
    if fcfg.lifecycle.start == "warm":
        fleet.add_ready(start_n)
    else:
        fleet.launch(start_n)
    if not isinstance(fcfg.autoscaler, FixedConfig):
        env.process(control_loop(env, fleet, make_policy(fcfg.autoscaler), fcfg.autoscaler.interval_s))
    return fleet


def simulate(
    scenario: Scenario,
    trace: pd.DataFrame | None = None,
    *,
    base_dir: Path | None = None,
    progress: Callable[[float, float], None] | None = None,
    observe: Callable[[simpy.Environment, list[Replica]], None] | None = None,
    measure_capacity: bool = True,
) -> SimResult:
    """Run `scenario` on `trace` (default: the scenario's own) until every request is completed or
    rejected. `progress(now_s, horizon_s)` is called every ~1% of the trace's span; `observe(env,
    replicas)` may start processes that watch the initially ready replicas (samplers).
    `measure_capacity` also measures one replica's saturated throughput for the trace's length mix
    (for `throughput_utilization`)."""
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    setup = resolve_scenario(scenario, base_dir=base_dir)
    if trace is None:
        trace = scenario_trace(scenario, base_dir=base_dir)
    engine = scenario.engine
    budget = engine.batched_tokens(setup.model.max_context_tokens)
    n_blocks = engine.num_gpu_blocks_override or kv_capacity_tokens(setup) // engine.block_size
    _check_engine(scenario, setup, trace, n_blocks, budget)

    env = CountingEnvironment()
    log = RequestLog(trace["arrival_at_s"].to_numpy(), trace["prompt_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    done = env.event()

    def all_resolved() -> None:
        if not done.triggered:
            done.succeed()

    log.on_all_resolved = all_resolved
    fleet = _build_fleet(env, scenario, setup, log, n_blocks=n_blocks, budget=budget)
    fcfg = scenario.fleet
    env.process(_feed(env, trace, log, fleet.deliver))
    rows: list[tuple[Any, ...]] = []
    env.process(_sampler(env, fleet, fcfg.timeline_interval_s, rows))
    if observe is not None:
        observe(env, [slot.engine for slot in fleet.slots if slot.engine is not None])
    wall_start = time.perf_counter()
    horizon = float(log.arrival_at_s[-1]) if len(log) else 0.0
    if progress is None:
        env.run(until=done)
    else:
        tick = max(horizon / 100, 1e-3)
        while not done.triggered:
            env.run(until=env.any_of([env.timeout(tick), done]))
            progress(env.now, horizon)
    wall = time.perf_counter() - wall_start
    log.check_invariants()
    capacity = _max_tokens_per_s(scenario, setup, trace, base_dir) if measure_capacity else None
    return SimResult(
        scenario=scenario,
        setup=setup,
        trace=trace,
        log=log,
        fleet=fleet,
        n_events=env.n_events,
        wall_s=wall,
        horizon_s=env.now,
        timeline=pd.DataFrame(rows, columns=TIMELINE_COLUMNS),
        base_dir=base_dir,
        max_tokens_per_s=capacity,
    )


_CAPACITY_CACHE: dict[tuple[str, ...], float] = {}


def _max_tokens_per_s(scenario: Scenario, setup: RooflineSetup, trace: pd.DataFrame, base_dir: Path) -> float | None:
    """One replica's throughput (prompt + output tokens/s) kept saturated with this trace's length mix:
    up to 1,000 requests (a seeded sample of the trace's servable ones) all queued at t = 0, measured
    until the queue first empties. Cached per (model, GPU, TP, roofline, engine, length mix)."""
    lengths = trace[["prompt_tokens", "output_tokens"]].to_numpy()
    key = (
        scenario.model,
        scenario.fleet.gpu,
        str(scenario.fleet.tp),
        scenario.roofline.model_dump_json(),
        scenario.engine.model_dump_json(),
        hashlib.sha1(lengths.tobytes()).hexdigest(),
    )
    if key in _CAPACITY_CACHE:
        return _CAPACITY_CACHE[key]
    fits = lengths.sum(axis=1) <= setup.model.max_context_tokens
    pool = lengths[fits]
    if len(pool) == 0:
        return None
    rng = np.random.default_rng(0)
    pick = pool[rng.choice(len(pool), size=min(1000, len(pool)), replace=False)] if len(pool) > 1000 else pool
    frame = pd.DataFrame({"arrival_at_s": np.zeros(len(pick)), "prompt_tokens": pick[:, 0], "output_tokens": pick[:, 1]})
    single = scenario.model_copy(
        update={"fleet": scenario.fleet.model_copy(update={"autoscaler": FixedConfig(replicas=1), "queue_max": None})}
    )
    result = simulate(single, frame, base_dir=base_dir, measure_capacity=False)
    log = result.log
    scheduled = log.scheduled_at_s[~np.isnan(log.scheduled_at_s)]
    if scheduled.size == 0:
        return None
    cut = float(scheduled.max())  # the queue is never empty before this instant
    done = (log.status == COMPLETED) & (log.completed_at_s <= cut)
    if cut <= 0 or not done.any():
        return None
    value = float((log.prompt_tokens[done].sum() + log.output_tokens[done].sum()) / cut)
    _CAPACITY_CACHE[key] = value
    return value
