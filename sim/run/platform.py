"""A platform: several models served side by side from one GPU budget, on one clock.

A scenario with `deployments:` lists the models a platform serves, each a fleet of its own (model, GPU, TP, engine,
router, autoscaler, lifecycle, capacity, price, SLO: the scenario's top-level blocks with the deployment's over them,
`sim.scenario.config.deployment_scenario`). The trace says which deployment a request is for: its `model` column (a
deployment serves its `name`, or the names in `serves`), or, without one, a draw by the deployments' `share`s (the
run's `models` stream). Every deployment is built by the one pool builder (`sim.run.pools.build`) into the same
SimPy environment, its random streams keyed by its name; the replicas of all of them count against `gpu_budget`
(GPUs of each type held at once, `sim.run.fleet.supply.GpuBudget`), which hands freed GPUs to waiting deployments by
`priority`. Each deployment's records are frozen as a run of its own (`SimResult`, its bill up to the platform's end,
the instant its last request anywhere is resolved); `sim.results.platform.PlatformResult` adds the platform's totals.

    result = simulate_platform(load_config("configs/platform.yaml"))
    result.summary()["deployments"]["chat"]["p99_ttft_ms"]
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.roofline import RooflineSetup
from sim.policies.autoscale import FixedConfig
from sim.results.platform import PlatformResult
from sim.run.clock import CountingEnvironment
from sim.run.fleet.supply import GpuBudget
from sim.run.freeze import freeze
from sim.run.pools import Built, PoolSpec, build, pool_specs
from sim.run.simulate import _check_frame, colocated_capacity, fleet_capacity, scenario_trace
from sim.scenario.config import DeploymentConfig, Scenario, deployment_scenario
from sim.scenario.resolve import _relative, resolve_scenario
from sim.streams import RunStreams
from sim.workload.jobs import with_classes


@dataclass
class Deployment:
    """One deployment as built: its scenario, its share of the trace (rows of the platform's), its model."""

    config: DeploymentConfig
    scenario: Scenario
    rows: np.ndarray  # the platform trace's rows it serves
    trace: pd.DataFrame
    setup: RooflineSetup
    specs: list[PoolSpec]


def assign(scenario: Scenario, trace: pd.DataFrame) -> np.ndarray:
    """Each request's deployment (an index into `scenario.deployments`): by the trace's `model` column, else drawn by
    the deployments' shares (stream `models`)."""
    deps = scenario.deployments
    if "model" in trace.columns:
        served = {name: i for i, d in enumerate(deps) for name in d.names}
        names = trace["model"].astype(object)
        idx = names.map(served).to_numpy()
        missing = pd.isna(idx)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            known = ", ".join(sorted(served))
            if not names.iloc[row]:
                raise FleetsimError(f"trace: request {row} names no model (its `model` is empty); the deployments serve: {known}")
            raise FleetsimError(
                f"trace: request {row} is for model {names.iloc[row]!r}, which no deployment serves (they serve: {known}; "
                "name it in a deployment's `serves`)"
            )
        return np.asarray(idx, dtype=np.int64)
    shares = [d.share for d in deps]
    if any(s is None for s in shares):
        raise FleetsimError(
            "deployments: the trace has no `model` column to say which deployment a request is for; give each deployment "
            "a share (deployments[].share), or a trace with a `model` column"
        )
    p = np.asarray(shares, dtype=np.float64)
    return RunStreams(scenario.seed).generator("models").choice(len(deps), size=len(trace), p=p / p.sum()).astype(np.int64)


def budget_limits(scenario: Scenario, deployments: list[Deployment], base_dir: Path) -> dict[str, int]:
    """`gpu_budget` by the GPU catalog's names, checked: every deployment can hold what it needs to serve at all (each
    of its pools its minimum, or one replica: a disaggregated deployment's prefill and decode pools both, an MoE
    model's DP ranks a whole group) while the others hold their minimum (else a deployment could wait for GPUs
    forever) — those it may preempt aside."""
    extra = _relative(scenario.gpu_catalog, base_dir) if scenario.gpu_catalog else None
    catalog = load_gpu_catalog(extra)
    limits: dict[str, int] = {}
    given_as: dict[str, str] = {}
    for given, n in scenario.gpu_budget.items():
        try:
            name = catalog.get(given).name
        except FleetsimError as err:
            raise FleetsimError(f"gpu_budget.{given}: {err}") from None
        if name in limits:  # (an alias and the catalog name, or two cases of it: their counts were added up)
            raise FleetsimError(f"gpu_budget.{given}: GPU {name!r} is given twice (as {given_as[name]!r} and {given!r})")
        limits[name], given_as[name] = n, given
    used = {gpu.setup.gpu.name for d in deployments for spec in d.specs for gpu in (spec, *spec.fallback)}
    for name, given in given_as.items():
        if name not in used:  # (a typo for the GPU the deployments run on: they ran without a budget, silently)
            raise FleetsimError(
                f"gpu_budget.{given}: no deployment runs on {name} (they run on {', '.join(sorted(used))}); a budget "
                "limits the GPUs of the deployments' fleets (fleet.gpu, fleet.capacity.fallback)"
            )

    def floor(d: Deployment, serving: bool = False) -> dict[str, int]:
        """GPUs a deployment holds at its fewest (its pools' minimum replicas, reserved ones included), by type;
        `serving`: at least what serves a request (each pool one replica, an MoE model's DP group whole)."""
        out: dict[str, int] = {}
        for spec in d.specs:
            auto = spec.fleet.autoscaler
            least = max(auto.replicas if isinstance(auto, FixedConfig) else auto.min_replicas, spec.fleet.reserved_replicas)
            if serving:
                least = max(least, spec.setup.dp_group)
            out[spec.setup.gpu.name] = out.get(spec.setup.gpu.name, 0) + least * spec.setup.tp
        return out

    floors = [floor(d) for d in deployments]
    needs = [floor(d, serving=True) for d in deployments]
    for i, d in enumerate(deployments):
        preempts = d.config.preemption == "lower_priority"  # (it takes lower-priority deployments' GPUs when it must)
        for spec in d.specs:
            gpu = spec.setup.gpu.name
            if gpu not in limits:
                continue
            others = sum(
                f.get(gpu, 0)
                for j, f in enumerate(floors)
                if j != i and not (preempts and deployments[j].config.priority < d.config.priority)
            )
            own = needs[i].get(gpu, 0)
            if others + own > limits[gpu]:
                raise FleetsimError(
                    f"gpu_budget.{gpu}: {limits[gpu]} GPUs cannot hold deployment {d.config.name!r}'s "
                    f"{own} while the others hold their minimum {others} (a deployment could wait for GPUs forever); "
                    "raise the budget or lower min_replicas"
                )
    return limits


def _classes(trace: pd.DataFrame) -> pd.DataFrame:
    """A trace's request classes filled in (`with_classes`), refusing batch-class requests: batch jobs on a platform are
    not modelled (run them per deployment)."""
    if "klass" not in trace.columns:
        return trace
    trace = with_classes(trace)
    batch = np.flatnonzero(trace["klass"].to_numpy() == "batch")
    if batch.size:
        raise FleetsimError(
            f"trace: request {int(batch[0])} is a batch-class request ({batch.size} in all); batch work on a platform of "
            "several deployments is not modelled (run it per deployment)"
        )
    return trace


def _deployments(scenario: Scenario, trace: pd.DataFrame, base_dir: Path) -> list[Deployment]:
    which = assign(scenario, trace)
    out = []
    for i, d in enumerate(scenario.deployments):
        sub = deployment_scenario(scenario, i, base_dir=base_dir)
        rows = np.flatnonzero(which == i)
        part = trace.iloc[rows].reset_index(drop=True)
        try:
            if sub.fleet.pp > 1:  # (a deployment's replicas may be preempted or put to sleep one at a time)
                raise FleetsimError(
                    f"fleet.pp: {sub.fleet.pp} pipeline stages in a platform's deployment are not modelled (preemption "
                    "and sleep would take part of a server); give the deployment fleet.pp 1, or run it as a scenario of its own"
                )
            setup = resolve_scenario(sub, base_dir=base_dir)
            specs = pool_specs(sub, part, base_dir=base_dir)
        except FleetsimError as err:
            raise FleetsimError(f"deployments.{i} ({d.name}): {err}") from None
        out.append(Deployment(d, sub, rows, part, setup, specs))
    return out


def simulate_platform(
    scenario: Scenario,
    trace: pd.DataFrame | None = None,
    *,
    base_dir: Path | None = None,
    progress: Callable[[float, float], None] | None = None,
    measure_capacity: bool = True,
) -> PlatformResult:
    """Run every deployment of `scenario` on one clock and one GPU budget until every request is resolved."""
    start = time.perf_counter()
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    try:
        if trace is None:
            trace = scenario_trace(scenario, base_dir=base_dir)
        else:
            _check_frame(trace)
        trace = _classes(trace)
        deployments = _deployments(scenario, trace, base_dir)
        limits = budget_limits(scenario, deployments, base_dir)
    except FleetsimError as err:
        source = scenario.source
        if source is None or str(err).startswith(source):
            raise
        raise FleetsimError(f"{source}: {err}") from None
    env = CountingEnvironment()
    budget = GpuBudget(env, limits)
    builts: list[Built] = []
    order = sorted(range(len(deployments)), key=lambda i: -deployments[i].config.priority)  # (initial GPUs by priority)
    by_index: dict[int, Built] = {}
    for i in order:
        d = deployments[i]

        def batch_rate(mix: pd.DataFrame, d: Deployment = d) -> float | None:
            return colocated_capacity(d.scenario, d.specs[0].setup, mix).max_tokens_per_s_per_replica

        streams = RunStreams(scenario.seed, domain=d.config.name)
        try:
            built = build(
                d.scenario,
                d.specs,
                d.trace,
                streams,
                batch_rate=batch_rate,
                env=env,
                budget=budget,
                priority=d.config.priority,
                preempts=d.config.preemption == "lower_priority",
            )
        except FleetsimError as err:
            raise FleetsimError(f"deployments.{i} ({d.config.name}): {err}") from None
        if not len(d.trace):  # (a deployment no request is for: its replicas run, and are billed, all the same)
            built.done.succeed()
        by_index[i] = built
    builts = [by_index[i] for i in range(len(deployments))]
    built_at = time.perf_counter()
    # every deployment resolved: a plain event (not a Condition: SimPy strips a Condition nested in another, as the
    # progress loop's any_of would nest it, of its callbacks when the outer one triggers first)
    everything = env.event()
    left = [len(builts)]

    def one_done(_event: simpy.Event) -> None:
        left[0] -= 1
        if not left[0]:
            everything.succeed()

    for b in builts:
        assert b.done.callbacks is not None  # (triggered at most: nothing has run)
        b.done.callbacks.append(one_done)
    horizon = float(trace["arrival_at_s"].iloc[-1]) if len(trace) else 0.0
    if progress is None:
        env.run_until(everything)
    else:
        tick = max(horizon / 100, 1e-3)
        while not everything.triggered:
            env.run_until(env.any_of([env.timeout(tick), everything]))
            progress(env.now, horizon)
    for b in builts:
        b.log.check_invariants()
    results = {}
    for d, b in zip(deployments, builts, strict=True):
        result = freeze(b, d.scenario, d.setup, base_dir, d.trace)
        result.meta["deployment"] = {"name": d.config.name, "priority": d.config.priority, "serves": d.config.names}
        result.meta["without_batch"] = result.meta["without_losses"] = None
        results[d.config.name] = result
    simulated = time.perf_counter() - built_at
    capacity_s = 0.0
    if measure_capacity:
        for d, result in zip(deployments, results.values(), strict=True):
            if not len(d.trace):
                continue
            capacity = fleet_capacity(d.scenario, d.specs, d.trace)
            capacity_s += capacity.wall_s
            result.meta["capacity"] = capacity.as_meta()
        gc.collect()
    meta: dict[str, Any] = {
        "name": scenario.name or (Path(scenario.source).stem if scenario.source else None),
        "seed": scenario.seed,
        "horizon_s": env.now,
        "n_trace": len(trace),
        "n_events": env.events_processed(),
        "deployments": [
            {
                "name": d.config.name,
                "model": d.setup.model.name,
                "gpu": d.setup.gpu.name,
                "tp": d.setup.tp,
                "priority": d.config.priority,
                "serves": d.config.names,
                "share": d.config.share,
                "requests": len(d.trace),
            }
            for d in deployments
        ],
        "gpu_budget": {gpu: {"gpus": n, "peak_held": budget.peak[gpu]} for gpu, n in sorted(limits.items())},
        "launches_held_back": {d.config.name: budget.refused.get(d.config.name, 0) for d in deployments},
        "wall_s": {"build": built_at - start, "simulate": simulated, "capacity": capacity_s},
    }
    return PlatformResult(results, meta)
