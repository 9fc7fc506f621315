"""Build a simulation from a scenario and a trace, run it, return in-memory results (no files).

result = simulate(load_config("configs/default.yaml"))
result.summary()      # the dict written to summary.json
result.requests       # one row per request (DataFrame)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.config import Scenario, resolve_scenario
from sim.engine.kv import KvBlockPool
from sim.engine.records import STATUS_NAMES, RequestLog
from sim.engine.replica import Replica
from sim.engine.scheduler import POLICIES, Limits
from sim.engine.sequence import Seq
from sim.engine.step_time import ConstantStepTime, RooflineStepTime, StepTimeModel
from sim.errors import FleetsimError
from sim.metrics import summarize
from sim.roofline import RooflineSetup, kv_capacity_tokens
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


@dataclass
class SimResult:
    scenario: Scenario
    setup: RooflineSetup
    trace: pd.DataFrame
    log: RequestLog
    replicas: list[Replica]
    n_events: int
    wall_s: float
    base_dir: Path = Path(".")

    def scenario_as_run(self) -> dict[str, Any]:
        """The scenario with defaults filled in and file paths made absolute."""
        data = self.scenario.model_dump(mode="json")

        def absolute(path: str) -> str:
            p = Path(path)
            return str(p if p.is_absolute() else (self.base_dir / p).resolve())

        trace = data.get("trace")
        if isinstance(trace, str):
            data["trace"] = absolute(trace)
        elif isinstance(trace, dict) and "file" in trace:
            trace["file"] = absolute(trace["file"])
        if data.get("gpu_catalog"):
            data["gpu_catalog"] = absolute(data["gpu_catalog"])
        if not self.setup.model.name or Path(data["model"]).suffix == ".json":
            data["model"] = absolute(data["model"])
        return data

    def summary(self) -> dict[str, Any]:
        out = summarize(self.log, slo=self.scenario.slo.as_dict() or None)
        # one always-on replica, billed for the whole run
        billed = self.setup.tp * out["duration"] * len(self.replicas)
        price = self.setup.usd_per_gpu_hour
        cost = None if price is None else billed * price / 3600
        tokens = out["total_input_tokens"] + out["total_output_tokens"]
        busy = sum(r.busy_s for r in self.replicas)
        out |= {
            "billed_gpu_seconds": billed,
            "cost_usd": cost,
            "usd_per_1k_tokens": None if cost is None or not tokens else cost / tokens * 1000,
            "gpu_time_utilization": busy / (out["duration"] * len(self.replicas)) if out["duration"] else 0.0,
        }
        out["n_steps"] = sum(r.n_steps for r in self.replicas)
        out["n_events"] = self.n_events
        out["kv_blocks"] = sum(r.pool.n_blocks for r in self.replicas)
        out["kv_peak_blocks"] = max(r.pool.peak_used for r in self.replicas)
        return out

    def resolved(self) -> dict[str, Any]:
        """What the scenario's defaults and catalogs resolved to, for the run folder."""
        s, r = self.setup, self.replicas[0]
        return {
            "model_params": s.model.n_params,
            "weight_bytes": s.weight_bytes,
            "kv_bytes_per_token_replica": s.kv_bytes_per_token,
            "kv_blocks": r.pool.n_blocks,
            "max_num_batched_tokens": r.limits.max_num_batched_tokens,
            "effective_flops_per_s_per_gpu": s.effective_flops_per_s,
            "effective_hbm_bw_bytes_per_s_per_gpu": s.effective_hbm_bw_bytes_per_s,
            "usd_per_gpu_hour": s.usd_per_gpu_hour,
            "trace_requests": len(self.trace),
        }

    @property
    def requests(self) -> pd.DataFrame:
        log = self.log
        frame = pd.DataFrame(
            {
                "request_id": np.arange(len(log)),
                "arrival_at_s": log.arrival_at_s,
                "scheduled_at_s": log.scheduled_at_s,
                "first_token_at_s": log.first_token_at_s,
                "completed_at_s": log.completed_at_s,
                "prompt_tokens": log.prompt_tokens,
                "output_tokens": log.output_tokens,
                "n_preemptions": log.n_preemptions,
                "replica_id": log.replica_id,
                "status": pd.Categorical.from_codes(log.status, categories=[STATUS_NAMES[k] for k in sorted(STATUS_NAMES)]),
            }
        )
        frame["reject_reason"] = pd.Series(log.reasons, dtype="string").reindex(frame.index)
        return frame


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


def simulate(
    scenario: Scenario,
    trace: pd.DataFrame | None = None,
    *,
    base_dir: Path = Path("."),
    progress: Callable[[float, float], None] | None = None,
    observe: Callable[[simpy.Environment, list[Replica]], None] | None = None,
) -> SimResult:
    """Run `scenario` on `trace` (default: the scenario's own) for one replica until every request is
    completed or rejected. `progress(now_s, horizon_s)` is called every ~1% of the trace's span;
    `observe(env, replicas)` may start processes that watch the replicas (samplers)."""
    setup = resolve_scenario(scenario, base_dir=base_dir)
    if trace is None:
        trace = scenario_trace(scenario, base_dir=base_dir)
    engine = scenario.engine
    budget = engine.batched_tokens(setup.model.max_context_tokens)
    n_blocks = engine.num_gpu_blocks_override or kv_capacity_tokens(setup) // engine.block_size
    _check_engine(scenario, setup, trace, n_blocks, budget)

    env = CountingEnvironment()
    log = RequestLog(trace["arrival_at_s"].to_numpy(), trace["prompt_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    replica = Replica(
        env,
        replica_id=0,
        step_time=_step_model(scenario, setup),
        policy=POLICIES[engine.policy](),
        limits=Limits(max_num_seqs=engine.max_num_seqs, max_num_batched_tokens=budget, block_size=engine.block_size),
        pool=KvBlockPool(n_blocks=n_blocks, block_size=engine.block_size),
        log=log,
        max_context_tokens=setup.model.max_context_tokens,
        fast_forward=engine.fast_forward,
    )
    env.process(_feed(env, trace, log, replica.enqueue))
    if observe is not None:
        observe(env, [replica])
    start = time.perf_counter()
    horizon = float(log.arrival_at_s[-1]) if len(log) else 0.0
    if progress is None:
        env.run()
    else:
        tick = max(horizon / 100, 1e-3)
        while env.peek() != math.inf:
            env.run(until=env.now + tick)
            progress(env.now, horizon)
    wall = time.perf_counter() - start
    log.check_invariants()
    return SimResult(
        scenario=scenario,
        setup=setup,
        trace=trace,
        log=log,
        replicas=[replica],
        n_events=env.n_events,
        wall_s=wall,
        base_dir=base_dir,
    )
