"""A run in three phases: build (resolve the scenario, check it, create the fleet) -> run (SimPy) ->
freeze (records). What leaves `simulate()` is a `SimResult` of records only (no files written).

result = simulate(load_config("configs/default.yaml"))   # paths in the scenario: relative to its file
result.summary()      # the dict written to summary.json
result.requests       # one row per request (DataFrame)
"""

from __future__ import annotations

import functools
import gc
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.errors import FleetsimError
from sim.physics.roofline import RooflineSetup
from sim.policies.autoscale import FixedConfig
from sim.results.result import SimResult
from sim.run.capacity import Capacity, ClosedLoop, Lengths, group_size, pair_capacity, saturated_capacity
from sim.run.engine.replica import COLOCATED, Replica, ReplicaListener
from sim.run.freeze import freeze, freeze_small, requests_frame
from sim.run.pools import BATCH, ENTRY, Built, PoolSpec, build, has_batch, pool_spec, pool_specs
from sim.run.store import FileColumns, SpilledGaps, blocks
from sim.scenario.config import CapacityConfig, LinkConfig, Scenario
from sim.scenario.resolve import resolve_scenario
from sim.streams import RunStreams
from sim.workload import load_trace
from sim.workload.jobs import add_jobs, with_classes
from sim.workload.schema import REQUIRED, Where, check_times, check_tokens
from sim.workload.synthetic import SyntheticSpec, generate
from sim.workload.transforms import TraceFile, load_trace_file, trace_file_windows


def scenario_trace(scenario: Scenario, *, base_dir: Path = Path(".")) -> pd.DataFrame:
    if scenario.trace is None and scenario.batch is not None and scenario.batch.jobs:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "arrival_at_s" else "int64") for c in REQUIRED})  # jobs only
    if scenario.trace is None:
        raise FleetsimError("no trace: give `trace:` in the scenario (a file or a generator block), --trace FILE, or batch.jobs")
    if isinstance(scenario.trace, SyntheticSpec):
        return generate(scenario.trace, base_dir=base_dir, default_seed=scenario.seed)
    if isinstance(scenario.trace, TraceFile):
        return load_trace_file(scenario.trace, base_dir=base_dir, seed=scenario.seed)
    path = Path(scenario.trace)
    return load_trace(path if path.is_absolute() else base_dir / path)


def scenario_trace_windows(scenario: Scenario, *, base_dir: Path = Path(".")) -> Iterator[pd.DataFrame] | None:
    """`scenario_trace`'s frame a window at a time, for a run larger than memory, when the trace is a file read in
    windows (`sim.workload.transforms.trace_file_windows`); None otherwise (a generated trace, batch jobs, a format
    or transform read whole)."""
    if (
        scenario.trace is None
        or isinstance(scenario.trace, SyntheticSpec)
        or (scenario.batch is not None and scenario.batch.jobs)
    ):
        return None
    spec = scenario.trace if isinstance(scenario.trace, TraceFile) else TraceFile(file=str(scenario.trace))
    return trace_file_windows(spec, base_dir=base_dir)


def with_batch_jobs(scenario: Scenario, trace: pd.DataFrame, *, base_dir: Path) -> pd.DataFrame:
    """The trace with the scenario's batch jobs merged in and every request's class, priority, job and deadline
    filled in (`sim.workload.jobs`); a trace without classes or jobs is returned as it is."""
    jobs = scenario.batch.jobs if scenario.batch is not None else []
    if jobs:
        return add_jobs(trace, jobs, base_dir=base_dir, seed=scenario.seed)
    if "klass" in trace.columns:
        return with_classes(trace)
    return trace


_CHECK_ROWS = 1 << 20


def _check_frame(trace: pd.DataFrame) -> None:
    """A frame handed to `simulate` from Python (files are checked by their readers): the schema's
    checks of times and token counts, without `validate_frame`'s copy and re-basing."""
    missing = [c for c in REQUIRED if c not in trace.columns]
    if missing:
        raise FleetsimError(f"trace: missing column {missing[0]!r} (found: {', '.join(map(str, trace.columns))})")
    if len(trace) == 0:
        raise FleetsimError("trace: the trace has no requests")
    where = Where("trace", first_row_number=0, unit="row")
    try:
        columns = [trace[c].to_numpy() for c in REQUIRED]
        previous = -np.inf
        for lo, (times, *tokens) in blocks(_CHECK_ROWS, *columns):  # (bounded temporaries; a stored trace's pages handed back)
            t = times.astype(np.float64, copy=False)
            check_times(t, column="arrival_at_s", where=where, offset=lo, previous=previous)
            if lo == 0 and t[0] < 0:
                raise FleetsimError(f"{where.at(0)}: arrival_at_s must be >= 0 (got {t[0]:g})")
            previous = float(t[-1])
            for column, values in zip(("prompt_tokens", "output_tokens"), tokens, strict=True):
                check_tokens(values.astype(np.float64, copy=False), column=column, where=where, offset=lo)
    except (TypeError, ValueError) as err:
        if isinstance(err, FleetsimError):
            raise
        raise FleetsimError("trace: arrival_at_s, prompt_tokens and output_tokens must be numbers") from None


def _resolve(
    scenario: Scenario, trace: pd.DataFrame | None, base_dir: Path
) -> tuple[RooflineSetup, pd.DataFrame, list[PoolSpec]]:
    """The build phase's checks: names -> specs, the trace (the scenario's own, or a checked frame) with its batch
    jobs, the pools. Errors name the scenario file, when there is one."""
    try:
        try:
            setup: RooflineSetup | None = resolve_scenario(scenario, base_dir=base_dir)
        except FleetsimError:
            # a disaggregated fleet whose pools each give their own GPU and TP need not fit the top-level pair: the
            # pools are checked below, and one that uses the pair fails there with the same error
            if scenario.fleet.mode != "disaggregated":
                raise
            setup = None
        if trace is None:
            trace = scenario_trace(scenario, base_dir=base_dir)
        else:
            _check_frame(trace)
        trace = with_batch_jobs(scenario, trace, base_dir=base_dir)
        specs = pool_specs(scenario, trace, base_dir=base_dir)
        return (setup if setup is not None else specs[0].setup), trace, specs
    except FleetsimError as err:
        source = scenario.source
        if source is None or str(err).startswith(source):
            raise
        raise FleetsimError(f"{source}: {err}") from None


def _build(
    scenario: Scenario,
    specs: list[PoolSpec],
    trace: pd.DataFrame,
    extra: Sequence[ReplicaListener] = (),
    *,
    store: FileColumns | None = None,
    spilled: SpilledGaps | None = None,
) -> Built:
    def batch_rate(mix: pd.DataFrame) -> float | None:
        return colocated_capacity(scenario, specs[0].setup, mix).max_tokens_per_s_per_replica

    try:
        return build(
            scenario, specs, trace, RunStreams(scenario.seed), batch_rate=batch_rate, extra=extra, store=store, spilled=spilled
        )
    except FleetsimError as err:
        source = scenario.source
        if source is None or str(err).startswith(source):
            raise
        raise FleetsimError(f"{source}: {err}") from None


def run(built: Built, progress: Callable[[float, float], None] | None = None) -> None:
    """Run the model until every request is resolved; check the cheap invariants."""
    env, done, log = built.env, built.done, built.log
    horizon = float(log.arrival_at_s[-1]) if len(log) else 0.0
    if progress is None:
        env.run_until(done)
    else:
        tick = max(horizon / 100, 1e-3)
        while not done.triggered:
            env.run_until(env.any_of([env.timeout(tick), done]))
            progress(env.now, horizon)
    log.check_invariants()


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
    rejected: build -> run -> freeze. `progress(now_s, horizon_s)` is called every ~1% of the trace's span;
    `observe(env, replicas)` may start processes that watch the initially ready replicas (samplers).
    `measure_capacity` also measures the fleet's saturated throughput for the trace's length mix
    (for `throughput_utilization`; see `sim.run.capacity`)."""
    if scenario.deployments:
        raise FleetsimError(
            "deployments: a platform of several deployments runs with sim.simulate_platform (`fleetsim run` runs either); "
            "this command takes a scenario of one fleet"
        )
    start = time.perf_counter()
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    setup, trace, specs = _resolve(scenario, trace, base_dir)
    built = _build(scenario, specs, trace)
    if observe is not None:
        observe(built.env, [slot.engine for slot in built.replicas.slots if slot.engine is not None])
    built_at = time.perf_counter()
    run(built, progress)
    result = freeze(built, scenario, setup, base_dir, trace)
    wall = result.meta["wall_s"]
    wall["build"], wall["simulate"] = built_at - start, time.perf_counter() - built_at  # freezing counts as simulating
    if measure_capacity:
        _measure(result.meta, scenario, specs, trace, base_dir, _summary_in_memory)
    return result


Summarize = Callable[[Scenario, pd.DataFrame, Path], dict[str, Any]]  # a counterfactual run's summary


def _summary_in_memory(scenario: Scenario, trace: pd.DataFrame, base_dir: Path) -> dict[str, Any]:
    return simulate(scenario, trace, base_dir=base_dir, measure_capacity=False).summary()


def _measure(
    meta: dict[str, Any], scenario: Scenario, specs: list[PoolSpec], trace: pd.DataFrame, base_dir: Path, again: Summarize
) -> None:
    """A run's `meta` gains the fleet's saturated capacity and the counterfactual runs' figures (`again` runs them)."""
    wall = meta["wall_s"]
    capacity = fleet_capacity(scenario, specs, trace)
    if not capacity.cached:  # the probes' fleets are garbage with cycles (replicas and their listeners): freed now,
        gc.collect()  # not by the collector's passes during the caller's next run
    wall["capacity"] = capacity.wall_s
    wall["capacity_cached"] = capacity.cached  # depends on this process's history: kept with the wall times
    meta["capacity"] = capacity.as_meta()
    if specs[0].role == COLOCATED and specs[0].fallback:  # each fallback GPU type's replica, for its GPU-seconds
        lengths = Lengths.of(trace)
        probe = functools.partial(_probe_records, scenario)
        meta["capacity"]["fallback"] = {
            f"{ENTRY}.{fb.setup.gpu.name}.{fb.setup.tp}": saturated_capacity([fb], lengths, probe=probe).tokens_per_gpu_s
            for fb in specs[0].fallback
        }
    meta["without_batch"] = _without_batch(scenario, specs, trace, base_dir, again)
    meta["without_losses"] = _without_losses(scenario, trace, base_dir, again)


def simulate_stored(
    scenario: Scenario,
    out_dir: Path,
    trace: pd.DataFrame | None = None,
    *,
    base_dir: Path | None = None,
    progress: Callable[[float, float], None] | None = None,
    measure_capacity: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """`simulate` and `report.write_run` for a run larger than memory: the run folder `out_dir` is the store (see
    `sim.run.store`). The request log's columns live in files of the folder being written, its gap record is
    spilled to files as it grows, the records are written a row group at a time, and the summary is computed in
    passes over them (`sim.results.stored.StoredResult`); `trace` may be a view of files (`sim.run.store.stored_trace`).
    Returns the summary (summary.json's, without `resolved`). The same scenario, trace and seed give the records
    `simulate` gives and the same summary (means and standard deviations to the last bits). The folder is written
    as `write_run` writes one: whole, or not at all."""
    from sim.results.report import CHUNK_ROWS, _write_files, write_atomically, write_chunks
    from sim.results.stored import StoredResult

    if scenario.deployments:
        raise FleetsimError(
            "deployments: a platform of several deployments runs with sim.simulate_platform; a stored run takes one fleet"
        )
    start = time.perf_counter()
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    setup, trace, specs = _resolve(scenario, trace, base_dir)
    summary: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        store = FileColumns(tmp / ".store")
        spilled = SpilledGaps(tmp / ".store" / "itl")
        built = _build(scenario, specs, trace, store=store, spilled=spilled)
        built_at = time.perf_counter()
        run(built, progress)
        ran_at = time.perf_counter()
        meta, links, replicas, timeline = freeze_small(built, scenario, setup, base_dir, trace)
        log = built.log

        def request_rows() -> Iterator[pd.DataFrame]:
            for lo in range(0, max(len(log), 1), CHUNK_ROWS):
                yield requests_frame(log, trace, links, slice(lo, lo + CHUNK_ROWS))
                store.release()

        write_chunks(request_rows(), tmp / "requests.parquet")
        log.itl.spill()
        write_chunks(spilled.frames(CHUNK_ROWS), tmp / "itl.parquet")
        wall = meta["wall_s"]
        wall["build"], wall["simulate"] = built_at - start, ran_at - built_at  # (write: the records, summary and files)
        del built
        store.release()
        if measure_capacity:  # (the counterfactual runs stored too, in folders beside this one)
            _measure(meta, scenario, specs, trace, base_dir, functools.partial(_summary_stored, beside=tmp.parent))
        shutil.rmtree(tmp / ".store")
        result = StoredResult(requests=pd.DataFrame(), replicas=replicas, timeline=timeline, itl=None, meta=meta, folder=tmp)  # type: ignore[arg-type]
        summary.update(result.summary())
        _write_files(result, tmp, summary, ran_at, records=False)

    write_atomically(Path(out_dir), write, force=force)
    return summary


def _summary_stored(scenario: Scenario, trace: pd.DataFrame, base_dir: Path, *, beside: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=".fleetsim-counterfactual-", dir=beside) as tmp:
        return simulate_stored(scenario, Path(tmp) / "run", trace, base_dir=base_dir, measure_capacity=False)


def _without_losses(
    scenario: Scenario, trace: pd.DataFrame, base_dir: Path, again: Summarize | None = None
) -> dict[str, float | None] | None:
    """With replicas that can be lost (spot reclaims, failures): the headline figures of the same run without any loss
    (no failures; spot capacity, at its price, never reclaimed: no rate, no given instants, no obtainable series);
    None otherwise."""
    fleet = scenario.fleet
    if not any(c.any for c in fleet.capacities):
        return None
    update: dict[str, Any] = {"capacity": _no_losses(fleet.capacity)}
    for name in ("prefill", "decode"):
        pool = getattr(fleet, name)
        if pool.capacity is not None:
            update[name] = pool.model_copy(update={"capacity": _no_losses(pool.capacity)})
    fleet = fleet.model_copy(update=update)
    summary = (again or _summary_in_memory)(scenario.model_copy(update={"fleet": fleet}), trace, base_dir)
    return {k: summary[k] for k in LOSS_COUNTERFACTUAL}


def _no_losses(capacity: CapacityConfig) -> CapacityConfig:
    """The same capacity classes, nothing ever lost: no failures; spot at its price, never reclaimed."""
    spot = capacity.spot
    if spot is not None:
        spot = spot.model_copy(
            update={
                "monthly_interruption_frequency": None,
                "interruptions_per_hour": 0.0,
                "reclaim_at_s": [],
                "obtainable_gpus": [],
            }
        )
    return capacity.model_copy(update={"failures": None, "spot": spot})


LOSS_COUNTERFACTUAL = ("completed", "slo_attainment", "request_goodput", "mean_ttft_ms", "p99_ttft_ms", "p99_tpot_ms", "cost_usd")


def _without_batch(
    scenario: Scenario, specs: list[PoolSpec], trace: pd.DataFrame, base_dir: Path, again: Summarize | None = None
) -> dict[str, float | None] | None:
    """Batch work backfilled into the fleet: the bill of the same run without it (for `batch_cost`'s marginal
    figure); None otherwise (no batch work, or a dedicated pool, whose bill is the batch work's own)."""
    if not has_batch(trace) or specs[-1].name == BATCH:
        return None
    interactive = trace[(trace["klass"] != "batch").to_numpy()].reset_index(drop=True)
    if not len(interactive):
        return {"billed_gpu_seconds": 0.0, "cost_usd": 0.0}
    alone = scenario.model_copy(update={"batch": None})
    summary = (again or _summary_in_memory)(
        alone, interactive.drop(columns=["klass", "job_id", "priority", "deadline_at_s"], errors="ignore"), base_dir
    )
    return {"billed_gpu_seconds": summary["billed_gpu_seconds"], "cost_usd": summary["cost_usd"]}


# --- one replica (or one prefill:decode pair) saturated: the capacity probes (`sim.run.capacity`) -------------------
PROBE_TIMELINE_S = 1e7  # a capacity probe's timeline interval (2,000,000 samples of it: 630,000 years simulated)


def _probe_records(
    scenario: Scenario, specs: Sequence[PoolSpec], frame: pd.DataFrame, concurrency: int | None
) -> tuple[pd.DataFrame, float]:
    """`specs`' pools, one fixed warm replica each (an MoE model's DP group: dp, `group_size`; no fleet queue bound, no batch work, no prefix cache: the sample
    has lengths only; a pair's link instant), on `frame`: its request records, and when the last request was
    released. With `concurrency`, a closed loop: the requests are released `concurrency` at a time, the next at
    each resolution."""
    one = [
        replace(
            spec,
            caching=False,
            scenario=spec.scenario.model_copy(
                update={
                    "fleet": spec.fleet.model_copy(
                        update={
                            "autoscaler": FixedConfig(replicas=group_size(spec)),
                            "queue_max": None,
                            "queue_timeout_s": None,
                            "max_outstanding_per_replica": None,
                            "lifecycle": spec.fleet.lifecycle.model_copy(update={"start": "warm"}),
                        }
                    )
                }
            ),
        )
        for spec in specs
    ]
    fleet = scenario.fleet.model_copy(
        update={
            "link": LinkConfig.model_construct(preset="nvlink", gb_per_s_per_gpu=1e12, latency_s=0.0),
            # the probe reads request records, not the timeline: sampled rarely, so that a slow replica's long
            # saturated run is not stopped by the sampler's bound (it would blame the scenario's own run)
            "timeline_interval_s": PROBE_TIMELINE_S,
        }
    )
    sc = scenario.model_copy(update={"batch": None, "fleet": fleet})
    loop = ClosedLoop(concurrency) if concurrency is not None else None
    built = build(
        sc, one, frame, RunStreams(scenario.seed), batch_rate=lambda mix: None, extra=[loop] if loop else (), feed=loop is None
    )
    if loop is not None:
        loop.attach(built)
    run(built)
    return requests_frame(built.log), (loop.released_at_s if loop is not None else 0.0)


def colocated_capacity(scenario: Scenario, setup: RooflineSetup, trace: pd.DataFrame) -> Capacity:
    """One colocated replica of `setup` under the scenario's engine, saturated with the trace's lengths (cached)."""
    colocated = scenario.model_copy(update={"fleet": scenario.fleet.model_copy(update={"mode": "colocated"})})
    spec = pool_spec(colocated, ENTRY, COLOCATED, base_dir=scenario.base_dir, prefix_ids=False)
    return saturated_capacity([spec], Lengths.of(trace), probe=functools.partial(_probe_records, scenario))


def fleet_capacity(scenario: Scenario, specs: list[PoolSpec], trace: pd.DataFrame) -> Capacity:
    """The fleet's saturated throughput per GPU-second for the trace's length mix (`sim.run.capacity`): of its entry
    pool's replica (colocated), or of the best prefill:decode split of its pools' replicas (disaggregated)."""
    lengths = Lengths.of(trace)
    if specs[0].role == COLOCATED:
        return saturated_capacity(specs[:1], lengths, probe=functools.partial(_probe_records, scenario))
    return pair_capacity(specs[:2], lengths, probe=functools.partial(_probe_records, scenario))


def replica_capacity(scenario: Scenario, trace: pd.DataFrame, *, base_dir: Path) -> float | None:
    """One replica's saturated throughput (tokens/s) for `trace`'s length mix under the scenario's engine:
    the figure `throughput_utilization` divides by (cached on the resolved setup)."""
    return colocated_capacity(scenario, resolve_scenario(scenario, base_dir=base_dir), trace).max_tokens_per_s_per_replica
