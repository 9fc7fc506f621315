"""A run in three phases: build (resolve the scenario, check it, create the fleet) -> run (SimPy) ->
freeze (records). What leaves `simulate()` is a `SimResult` of records only (no files written).

result = simulate(load_config("configs/default.yaml"))   # paths in the scenario: relative to its file
result.summary()      # the dict written to summary.json
result.requests       # one row per request (DataFrame)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.events import URGENT

from sim.autoscale import FixedConfig, make_policy
from sim.build import resolve_scenario
from sim.capacity import Capacity, saturated_capacity
from sim.clock import ARRIVAL, CountingEnvironment, call_at
from sim.config import BatchConfig, EngineConfig, FleetConfig, Scenario
from sim.engine.kv import KvBlockPool
from sim.engine.prefix_cache import PrefixCache
from sim.engine.records import RequestLog
from sim.engine.replica import Replica, inadmissible
from sim.engine.scheduler import POLICIES, Limits
from sim.engine.sequence import Seq
from sim.engine.step_time import ConstantStepTime, RooflineStepTime, StepTimeModel
from sim.errors import FleetsimError
from sim.fleet.batch import BatchLane, dedicated_loop, guard_loop
from sim.fleet.cluster import Fleet
from sim.fleet.control import (
    MAX_AUTOSCALER_TICKS,
    MAX_TIMELINE_SAMPLES,
    TIMELINE_COLUMNS,
    TIMELINE_DTYPES,
    control_loop,
    sample_timeline,
)
from sim.fleet.disagg import Transfers
from sim.freeze import replicas_frame, requests_frame, run_meta
from sim.metrics import GapDistribution
from sim.result import SimResult
from sim.roofline import RooflineSetup, kv_capacity_tokens
from sim.router import ROUTERS, PrefixAware
from sim.speculative import Speculation
from sim.streams import RunStreams
from sim.workload import load_trace
from sim.workload.jobs import add_jobs, with_classes
from sim.workload.schema import KLASSES, REQUIRED, Where, check_times, check_tokens
from sim.workload.synthetic import SyntheticSpec, generate
from sim.workload.transforms import TraceFile, load_trace_file


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


def with_batch_jobs(scenario: Scenario, trace: pd.DataFrame, *, base_dir: Path) -> pd.DataFrame:
    """The trace with the scenario's batch jobs merged in and every request's class, priority, job and deadline
    filled in (`sim.workload.jobs`); a trace without classes or jobs is returned as it is."""
    jobs = scenario.batch.jobs if scenario.batch is not None else []
    if jobs:
        return add_jobs(trace, jobs, base_dir=base_dir, seed=scenario.seed)
    if "klass" in trace.columns:
        return with_classes(trace)
    return trace


def _step_model(scenario: Scenario, setup: RooflineSetup) -> StepTimeModel:
    cfg = scenario.engine.step_time
    if cfg.kind == "constant":
        assert cfg.decode_step_s is not None
        return ConstantStepTime(prefill_s_per_token=cfg.prefill_s_per_token, decode_step_s=cfg.decode_step_s)
    return RooflineStepTime(setup)


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
        t = trace["arrival_at_s"].to_numpy(dtype=np.float64)
        check_times(t, column="arrival_at_s", where=where)
        if t[0] < 0:
            raise FleetsimError(f"{where.at(0)}: arrival_at_s must be >= 0 (got {t[0]:g})")
        for column in ("prompt_tokens", "output_tokens"):
            check_tokens(trace[column].to_numpy(dtype=np.float64), column=column, where=where)
    except (TypeError, ValueError) as err:
        if isinstance(err, FleetsimError):
            raise
        raise FleetsimError("trace: arrival_at_s, prompt_tokens and output_tokens must be numbers") from None


def _check_bounds(scenario: Scenario, trace: pd.DataFrame) -> None:
    """Refuse a run whose periodic processes would need more samples or ticks than the stated bounds."""
    span = float(trace["arrival_at_s"].iloc[-1]) if len(trace) else 0.0
    fleet = scenario.fleet
    samples = span / fleet.timeline_interval_s
    if samples > MAX_TIMELINE_SAMPLES:
        raise FleetsimError(
            f"fleet.timeline_interval_s={fleet.timeline_interval_s:g} over a trace of {span:,.0f} s is {samples:,.0f} samples, "
            f"more than {MAX_TIMELINE_SAMPLES:,}; raise it to at least {span / MAX_TIMELINE_SAMPLES:.3g}"
        )
    if not isinstance(fleet.autoscaler, FixedConfig):
        ticks = span / fleet.autoscaler.interval_s
        if ticks > MAX_AUTOSCALER_TICKS:
            raise FleetsimError(
                f"fleet.autoscaler.interval_s={fleet.autoscaler.interval_s:g} over a trace of {span:,.0f} s is {ticks:,.0f} ticks, "
                f"more than {MAX_AUTOSCALER_TICKS:,}; raise it to at least {span / MAX_AUTOSCALER_TICKS:.3g}"
            )


def _check_engine(scenario: Scenario, setup: RooflineSetup, n_blocks: int) -> None:
    """A replica that can hold no KV block can serve nothing. (A prompt longer than `prefill_first`'s
    token budget is not the scenario's fault: that request alone is rejected, as vLLM v0 ignores it.)"""
    engine = scenario.engine
    if n_blocks < 1:
        raise FleetsimError(f"engine: the KV cache holds no block of {engine.block_size} tokens on {setup.tp}x {setup.gpu.name}")


class _Feed:
    """Delivers the trace's requests at their arrival times, all requests of one instant together: one
    `ARRIVAL` event per distinct instant, each scheduling the next (a callback, not a process). The
    columns are turned into Python numbers a window at a time (a whole 1 M-request trace as lists would
    hold ~100 MB). Batch-job requests go to the batch lane (`deliver_batch(index)`) when there is one."""

    WINDOW = 4096

    def __init__(
        self,
        env: simpy.Environment,
        trace: pd.DataFrame,
        log: RequestLog,
        deliver: Callable[[Seq], None],
        deliver_batch: Callable[[int], None] | None = None,
        *,
        hashes: bool = False,
    ) -> None:
        self.env, self.deliver, self.deliver_batch = env, deliver, deliver_batch
        self.hashes = trace["prefix_hash_ids"].to_numpy() if hashes else None  # prefix caching: each request's ids
        t = log.arrival_at_s
        self.n = len(t)
        priority = trace["priority"].to_numpy(dtype=np.int64) if "priority" in trace.columns else np.zeros(self.n, np.int64)
        batch = (
            trace["klass"].to_numpy() == "batch"
            if deliver_batch is not None and "klass" in trace.columns
            else np.zeros(self.n, dtype=bool)
        )
        self.columns = (t, log.prompt_tokens, log.output_tokens, priority, batch)
        self.window: tuple[list[Any], ...] = ([], [], [], [], [])
        self.window_lo = 0
        self.i = 0  # the next request to deliver
        if self.n:  # started as a process would be: after what is already due at the start
            call_at(env, 0.0, URGENT, self._schedule)

    def _column(self, i: int) -> int:
        """Make request i part of the window; its offset in it."""
        if i >= self.window_lo + len(self.window[0]):
            self.window_lo = i
            self.window = tuple(c[i : i + self.WINDOW].tolist() for c in self.columns)
        return i - self.window_lo

    def _schedule(self, _event: simpy.Event | None = None) -> None:
        j = self._column(self.i)  # (before reading the window: it may move)
        self._wake_at(self.window[0][j])

    def _wake_at(self, at: float) -> None:
        """Deliver the requests of instant `at` then (now, if it is now)."""
        env = self.env
        now = env.now
        delay = at - now
        while now + delay < at:  # float: make the clock land on (not just below) the arrival
            delay = math.nextafter(delay, math.inf)
        if delay > 0:
            call_at(env, delay, ARRIVAL, self._arrive)
        else:
            self._arrive(None)

    def _arrive(self, _event: simpy.Event | None) -> None:
        i, n, deliver, deliver_batch = self.i, self.n, self.deliver, self.deliver_batch
        j = self._column(i)
        times, prompt, output, priority, batch = self.window
        m = len(times)
        at = times[j]
        while True:
            if batch[j]:
                deliver_batch(i)  # type: ignore[misc]
            elif self.hashes is None:
                deliver(Seq(i, at, prompt[j], output[j], priority[j]))
            else:
                seq = Seq(i, at, prompt[j], output[j], priority[j])
                h = self.hashes[i]
                seq.hashes = h if h is not None and len(h) else None
                deliver(seq)
            i += 1
            j += 1
            if i == n:
                break
            if j == m:
                j = self._column(i)
                times, prompt, output, priority, batch = self.window
                m = len(times)
            if times[j] != at:
                break
        self.i = i
        if i < n:
            self._wake_at(times[j])


def watermark_blocks(engine: EngineConfig, n_blocks: int) -> int:
    """The blocks admission keeps free: vLLM's int(watermark x number of GPU blocks)."""
    return int(engine.watermark * n_blocks)


def engine_limits(engine: EngineConfig, n_blocks: int, budget: int) -> Limits:
    """A replica's batching and admission limits, as its engine block and KV cache set them."""
    return Limits(
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=budget,
        block_size=engine.block_size,
        n_blocks=n_blocks,
        watermark_blocks=watermark_blocks(engine, n_blocks),
        whole_prompt=engine.admission == "whole_prompt",
        preempt_for_priority=engine.preempt_for_priority,
        lookahead=engine.speculative.num_speculative_tokens if engine.speculative is not None else 0,
    )


def _draft_setup(scenario: Scenario, base_dir: Path) -> RooflineSetup | None:
    """Speculative decoding with a draft model: the draft on the scenario's GPUs and TP."""
    spec = scenario.engine.speculative
    if spec is None or spec.draft_model is None:
        return None
    from sim.models import check_draft

    try:
        draft = resolve_scenario(scenario.model_copy(update={"model": spec.draft_model}), base_dir=base_dir)
        check_draft(draft.model, resolve_scenario(scenario, base_dir=base_dir).model)
    except FleetsimError as err:
        raise FleetsimError(f"engine.speculative.draft_model: {err}") from None
    return draft


def kv_blocks(scenario: Scenario, setup: RooflineSetup, draft: RooflineSetup | None) -> int:
    """A replica's KV-cache blocks: what memory leaves after the weights (a draft model's too), or the override."""
    engine = scenario.engine
    if engine.num_gpu_blocks_override:
        return engine.num_gpu_blocks_override
    tokens = kv_capacity_tokens(setup)
    if draft is not None:
        tokens -= math.ceil(draft.weight_bytes / setup.kv_bytes_per_token)
    return max(0, tokens) // engine.block_size


def _replica_factory(
    env: simpy.Environment,
    scenario: Scenario,
    setup: RooflineSetup,
    log: RequestLog,
    limits: Limits,
    role: str = "colocated",
    *,
    streams: RunStreams | None = None,
    draft: RooflineSetup | None = None,
    prefix: bool = False,
) -> Callable[[int], Replica]:
    """Replicas of the scenario's engine (`prefix`: the trace carries prefix hash ids, for prefix caching)."""
    engine = scenario.engine
    caching = prefix and engine.prefix_caching
    step_time = _step_model(scenario, setup)
    spec = engine.speculative
    alphas = np.asarray(spec.alphas, dtype=np.float64) if spec is not None else None

    def speculation(replica_id: int) -> Speculation | None:
        if spec is None:
            return None
        assert streams is not None and alphas is not None
        return Speculation(
            spec.method, alphas, setup, draft, spec.draft_cost, rng=streams.sub_generator("speculative", replica_id)
        )

    def make(replica_id: int) -> Replica:
        return Replica(
            env,
            replica_id=replica_id,
            step_time=step_time,
            policy=POLICIES[engine.policy](),
            limits=limits,
            pool=KvBlockPool(n_blocks=limits.n_blocks, block_size=engine.block_size),
            log=log,
            max_context_tokens=setup.model.max_context_tokens,
            fast_forward=engine.fast_forward,
            role=role,
            spec=speculation(replica_id),
            cache=PrefixCache(hash_tokens=engine.prefix_hash_block_tokens, block_size=engine.block_size) if caching else None,
        )

    return make


def _build_fleet(
    env: simpy.Environment,
    scenario: Scenario,
    setup: RooflineSetup,
    log: RequestLog,
    streams: RunStreams,
    *,
    n_blocks: int,
    budget: int,
    floor: Callable[[int], int] | None = None,
    draft: RooflineSetup | None = None,
    prefix: bool = False,
) -> Fleet:
    """The fleet with its initial replicas (warm or cold-starting) and, unless fixed, its autoscaler (which
    scales to at least `floor(ready replicas)` when given: the batch lane's deadline scaling)."""
    engine = scenario.engine
    limits = engine_limits(engine, n_blocks, budget)
    fleet = _fleet(
        env,
        scenario,
        setup,
        log,
        streams,
        make_engine=_replica_factory(env, scenario, setup, log, limits, streams=streams, draft=draft, prefix=prefix),
        inadmissible=inadmissible(
            log.prompt_tokens,
            log.output_tokens,
            max_context_tokens=setup.model.max_context_tokens,
            limits=limits,
            chunks=POLICIES[engine.policy].chunks_prefill,
        ),
    )
    fcfg = scenario.fleet
    _start_pool(env, fleet, fcfg, floor=floor)
    return fleet


def _fleet(
    env: simpy.Environment,
    scenario: Scenario,
    setup: RooflineSetup,
    log: RequestLog,
    streams: RunStreams,
    *,
    make_engine: Callable[[int], Replica],
    inadmissible: dict[int, str],
    pool: str = "online",
    slots: list[Any] | None = None,
    stream: int | None = None,
    max_replicas: int | None = None,
) -> Fleet:
    """A pool of `scenario.fleet`'s replicas (not started): its router and cold starts draw from the run's
    `router` and `lifecycle` streams, or with `stream` k from their k-th sub-streams (a second pool's); at most
    `max_replicas` (default the fleet's cap)."""
    fcfg = scenario.fleet

    def rng(name: str) -> np.random.Generator:
        return streams.generator(name) if stream is None else streams.sub_generator(name, stream)

    return Fleet(
        env,
        make_engine=make_engine,
        inadmissible=inadmissible,
        router=PrefixAware(slack=fcfg.prefix_routing_slack)
        if fcfg.router == "prefix_aware"
        else ROUTERS[fcfg.router](rng("router")),
        lifecycle=fcfg.lifecycle,
        weight_bytes=setup.weight_bytes,
        log=log,
        rng=rng("lifecycle"),
        max_replicas=fcfg.replica_cap if max_replicas is None else max_replicas,
        queue_max=fcfg.queue_max,
        queue_timeout_s=fcfg.queue_timeout_s,
        max_outstanding=fcfg.max_outstanding_per_replica,
        pool=pool,
        slots=slots,
    )


def _start_pool(env: simpy.Environment, fleet: Fleet, fcfg: FleetConfig, *, floor: Callable[[int], int] | None = None) -> None:
    """A pool's initial replicas (warm or cold-starting) and, unless fixed, its autoscaler."""
    start_n = min(fcfg.autoscaler.start_replicas, fcfg.replica_cap)
    if fcfg.lifecycle.start == "warm":
        fleet.add_ready(start_n)
    else:
        fleet.launch(start_n)
    if not isinstance(fcfg.autoscaler, FixedConfig):
        env.process(control_loop(env, fleet, make_policy(fcfg.autoscaler), fcfg.autoscaler.interval_s, floor=floor))


POOLS = ("prefill", "decode")


def pool_scenario(scenario: Scenario, name: str) -> Scenario:
    """A disaggregated fleet's pool as a colocated scenario: the pool's GPU, TP, router, autoscaler, lifecycle,
    engine and price over the fleet's and the scenario's."""
    f = scenario.fleet
    pool = getattr(f, name)
    router = pool.router or ("least_prompt_tokens" if name == "prefill" else f.router)
    fleet = f.model_copy(
        update={
            "gpu": pool.gpu or f.gpu,
            "tp": pool.tp or f.tp,
            "router": router,
            "autoscaler": pool.autoscaler,
            "lifecycle": pool.lifecycle or f.lifecycle,
            "mode": "colocated",
        }
    )
    update: dict[str, Any] = {"fleet": fleet, "engine": pool.engine or scenario.engine}
    if pool.usd_per_gpu_hour is not None:
        update["pricing"] = scenario.pricing.model_copy(update={"usd_per_gpu_hour": pool.usd_per_gpu_hour})
    return scenario.model_copy(update=update)


@dataclass
class _Pool:
    scenario: Scenario
    setup: RooflineSetup
    n_blocks: int
    budget: int
    limits: Limits
    draft: RooflineSetup | None = None


def _pools(scenario: Scenario, base_dir: Path) -> dict[str, _Pool]:
    out = {}
    for name in POOLS:
        psc = pool_scenario(scenario, name)
        try:
            setup = resolve_scenario(psc, base_dir=base_dir)
            engine = psc.engine
            budget = engine.batched_tokens(setup.model.max_context_tokens)
            draft = _draft_setup(psc, base_dir)
            n_blocks = kv_blocks(psc, setup, draft)
            _check_engine(psc, setup, n_blocks)
        except FleetsimError as err:
            raise FleetsimError(f"fleet.{name}: {err}") from None
        out[name] = _Pool(psc, setup, n_blocks, budget, engine_limits(psc.engine, n_blocks, budget), draft)
    return out


def _disaggregated_inadmissible(log: RequestLog, pools: dict[str, _Pool]) -> dict[int, str]:
    """Requests no prefill replica could prefill, or no decode replica could take (its KV and next token above
    the watermark) or finish (its whole context)."""
    p, o = log.prompt_tokens, log.output_tokens
    pre, dec = pools["prefill"], pools["decode"]
    chunks = POLICIES[pre.scenario.engine.policy].chunks_prefill
    ctx = pre.setup.model.max_context_tokens
    out = {
        i: f"prefill pool: {why}"
        for i, why in inadmissible(p, np.ones_like(o), max_context_tokens=ctx, limits=pre.limits, chunks=chunks).items()
    }
    lim = dec.limits
    room = lim.n_blocks - lim.watermark_blocks
    bad = (-(-(p + 1) // lim.block_size) > room) & (o > 1)
    for i in np.flatnonzero(bad).tolist():
        out.setdefault(
            i,
            f"decode pool: its prompt's KV and next token need {-(-(int(p[i]) + 1) // lim.block_size)} KV blocks, more than "
            f"the {lim.n_blocks} - {lim.watermark_blocks} (engine.watermark) a decode replica offers",
        )
    for i, why in inadmissible(
        p, o, max_context_tokens=ctx, limits=lim, chunks=POLICIES[dec.scenario.engine.policy].chunks_prefill
    ).items():
        if int(o[i]) > 1:
            out.setdefault(i, f"decode pool: {why}")
    return out


def _build_disaggregated(
    env: simpy.Environment, scenario: Scenario, base_dir: Path, trace: pd.DataFrame, log: RequestLog, streams: RunStreams
) -> tuple[list[Fleet], Transfers, dict[str, _Pool]]:
    """The prefill pool (which takes the arrivals), the decode pool and the transfers between them."""
    if "klass" in trace.columns and bool((trace["klass"].to_numpy() == "batch").any()):
        raise FleetsimError("batch jobs with fleet.mode: disaggregated are not supported; serve them colocated")
    pools = _pools(scenario, base_dir)
    pre, dec = pools["prefill"], pools["decode"]
    rejected = _disaggregated_inadmissible(log, pools)
    decode = _fleet(
        env,
        dec.scenario,
        dec.setup,
        log,
        streams,
        make_engine=_replica_factory(
            env, dec.scenario, dec.setup, log, dec.limits, role="decode", streams=streams, draft=dec.draft
        ),
        inadmissible={},
        pool="decode",
        stream=2,
    )
    link = scenario.fleet.link
    transfers = Transfers(
        env,
        log,
        decode=decode,
        kv_bytes_per_token=pre.setup.model.kv_bytes_per_token(pre.setup.kv_bits),
        link_bytes_per_s=link.bytes_per_s_per_gpu * pre.setup.tp,
        latency_s=link.latency,
    )

    def decode_ready(engine: Replica) -> None:
        transfers.attach(engine)
        transfers.freed(engine)

    decode.on_ready = decode_ready
    make_prefill = _replica_factory(
        env, pre.scenario, pre.setup, log, pre.limits, role="prefill", streams=streams, draft=pre.draft
    )

    def make(replica_id: int) -> Replica:
        engine = make_prefill(replica_id)
        engine.on_prefilled = transfers.prefilled
        return engine

    pfc = pre.scenario.fleet
    prefill = _fleet(
        env, pre.scenario, pre.setup, log, streams, make_engine=make, inadmissible=rejected, pool="prefill", slots=decode.slots
    )
    _start_pool(env, prefill, pfc)
    _start_pool(env, decode, dec.scenario.fleet)
    return [prefill, decode], transfers, pools


def _batch_setup(
    env: simpy.Environment,
    scenario: Scenario,
    setup: RooflineSetup,
    trace: pd.DataFrame,
    log: RequestLog,
) -> tuple[BatchLane | None, BatchConfig]:
    """The batch lane, when the trace holds batch-class requests (its settings: the scenario's `batch` block or
    the defaults)."""
    cfg = scenario.batch or BatchConfig()
    if "klass" not in trace.columns:
        return None, cfg
    is_batch = trace["klass"].to_numpy() == "batch"
    if not is_batch.any():
        return None, cfg
    guard = None
    if cfg.guard is not None and cfg.fleet == "backfill":  # a dedicated pool shares nothing with interactive work
        ttft = cfg.guard.ttft_ms if cfg.guard.ttft_ms is not None else scenario.slo.ttft_ms
        tpot = cfg.guard.tpot_ms if cfg.guard.tpot_ms is not None else scenario.slo.tpot_ms
        if ttft is None and tpot is None:
            raise FleetsimError("batch.guard: give ttft_ms or tpot_ms (or an slo: block) for the guard to hold")
        guard = (None if ttft is None else ttft / 1000, None if tpot is None else tpot / 1000)
    rate = None
    if _needs_rate(cfg):  # one replica saturated with the batch mix (repeated: a few requests would never queue)
        mix = trace.loc[is_batch, ["prompt_tokens", "output_tokens"]]
        mix = pd.concat([mix] * max(1, -(-1000 // len(mix))), ignore_index=True)
        rate = _capacity(scenario, setup, mix).max_tokens_per_s_per_replica
    lane = BatchLane(
        env,
        log,
        priority=trace["priority"].to_numpy(dtype=np.int64),
        deadline_at_s=trace["deadline_at_s"].to_numpy(dtype=np.float64),
        n_batch=int(is_batch.sum()),
        cap=cfg.max_per_replica or scenario.engine.max_num_seqs,
        guard=guard,
        guard_step=cfg.guard.step if cfg.guard is not None else 1,
        deadline_margin_s=cfg.deadline_margin_s,
        replica_tokens_per_s=rate,
        cold_start_s=scenario.fleet.lifecycle.expected_cold_start_s(setup.weight_bytes),
    )
    if guard is not None:
        log.watch, log.watch_mask = [], ~is_batch
        lane.completed_interactive = log.watch
        assert cfg.guard is not None
        env.process(guard_loop(env, lane, cfg.guard.interval_s))
    return lane, cfg


def _needs_rate(cfg: BatchConfig) -> bool:
    return cfg.deadline_scaling or (cfg.fleet == "dedicated" and cfg.dedicated.replicas == "auto")


@dataclass
class _Built:
    """The build phase's product: a ready-to-run SimPy model."""

    env: CountingEnvironment
    fleet: Fleet
    log: RequestLog
    done: simpy.Event
    rows: list[tuple[Any, ...]]
    n_blocks: int
    budget: int
    fleets: list[Fleet]  # the online fleet, then a dedicated batch pool if any (disaggregated: prefill, decode)
    transfers: Transfers | None = None
    pools: dict[str, _Pool] | None = None


def _build(
    scenario: Scenario, setup: RooflineSetup, trace: pd.DataFrame, streams: RunStreams, base_dir: Path = Path(".")
) -> _Built:
    engine = scenario.engine
    budget = engine.batched_tokens(setup.model.max_context_tokens)
    draft = _draft_setup(scenario, base_dir) if scenario.fleet.mode == "colocated" else None
    n_blocks = kv_blocks(scenario, setup, draft)
    _check_engine(scenario, setup, n_blocks)
    _check_bounds(scenario, trace)
    env = CountingEnvironment()
    log = RequestLog(trace["arrival_at_s"].to_numpy(), trace["prompt_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    done = env.event()

    def all_resolved() -> None:
        if not done.triggered:
            done.succeed()

    log.on_all_resolved = all_resolved
    prefix = "prefix_hash_ids" in trace.columns
    transfers, pools = None, None
    if scenario.fleet.mode == "disaggregated":
        fleets, transfers, pools = _build_disaggregated(env, scenario, base_dir, trace, log, streams)
        deliver_batch, caching = None, prefix and pools["prefill"].scenario.engine.prefix_caching
    else:
        fleets, deliver_batch = _build_colocated(env, scenario, setup, trace, log, streams, n_blocks, budget, draft, prefix)
        caching = prefix and scenario.engine.prefix_caching
    _Feed(env, trace, log, fleets[0].deliver, deliver_batch, hashes=caching)
    rows: list[tuple[Any, ...]] = []
    waiting = None if transfers is None else (lambda: len(transfers.waiting))
    env.process(sample_timeline(env, fleets, scenario.fleet.timeline_interval_s, rows, transfers_waiting=waiting))
    return _Built(env, fleets[0], log, done, rows, n_blocks, budget, fleets, transfers, pools)


def _build_colocated(
    env: simpy.Environment,
    scenario: Scenario,
    setup: RooflineSetup,
    trace: pd.DataFrame,
    log: RequestLog,
    streams: RunStreams,
    n_blocks: int,
    budget: int,
    draft: RooflineSetup | None,
    prefix: bool,
) -> tuple[list[Fleet], Callable[[int], None] | None]:
    """The fleet, a dedicated batch pool if the scenario has one, and where batch requests go (the lane) if any."""
    lane, bcfg = _batch_setup(env, scenario, setup, trace, log)
    if (
        lane is not None
        and bcfg.deadline_scaling
        and bcfg.fleet == "backfill"
        and isinstance(scenario.fleet.autoscaler, FixedConfig)
    ):
        raise FleetsimError(
            "batch.deadline_scaling with fleet: backfill scales the online fleet: give fleet.autoscaler a policy with "
            "max_replicas (it is fixed), or use fleet: dedicated"
        )
    floor = lane.replicas_needed if lane is not None and bcfg.deadline_scaling and bcfg.fleet == "backfill" else None
    fleet = _build_fleet(
        env, scenario, setup, log, streams, n_blocks=n_blocks, budget=budget, floor=floor, draft=draft, prefix=prefix
    )
    if lane is None:
        return [fleet], None
    if bcfg.fleet == "backfill":
        fleet.set_lane(lane)
        return [fleet], lane.add
    size, ceiling = _dedicated_size(scenario, bcfg, lane, trace)
    pool = _fleet(
        env,
        scenario,
        setup,
        log,
        streams,
        make_engine=fleet.make_engine,
        inadmissible=fleet.inadmissible,
        pool="batch",
        slots=fleet.slots,
        stream=1,
        max_replicas=ceiling,
    )
    pool.set_lane(lane)
    start_at = float(trace["arrival_at_s"].to_numpy()[trace["klass"].to_numpy() == "batch"][0])
    interval = scenario.fleet.autoscaler.interval_s
    env.process(dedicated_loop(env, pool, lane, start_at=start_at, size=size, interval_s=interval, scaling=bcfg.deadline_scaling))
    return [fleet, pool], lane.add


def _dedicated_size(scenario: Scenario, cfg: BatchConfig, lane: BatchLane, trace: pd.DataFrame) -> tuple[int, int]:
    """The dedicated pool's size at launch and its ceiling. `auto`: the batch tokens over one replica's saturated
    throughput for the batch mix times the time from the first submission to `deadline_margin_s` before the
    earliest deadline."""
    ceiling = cfg.dedicated.max_replicas
    if cfg.dedicated.replicas != "auto":
        size = int(cfg.dedicated.replicas)
        return size, max(size, ceiling or size)
    batch = trace["klass"].to_numpy() == "batch"
    tokens = float(trace["prompt_tokens"].to_numpy()[batch].sum() + trace["output_tokens"].to_numpy()[batch].sum())
    start = float(trace["arrival_at_s"].to_numpy()[batch].min())
    window = float(np.nanmin(trace["deadline_at_s"].to_numpy()[batch])) - cfg.deadline_margin_s - start
    if window <= 0:
        raise FleetsimError(
            f"batch.dedicated.replicas: auto: the earliest deadline leaves no time after batch.deadline_margin_s="
            f"{cfg.deadline_margin_s:g} s; lower the margin or give a replica count"
        )
    if not lane.replica_tokens_per_s:
        raise FleetsimError("batch.dedicated.replicas: auto: no request of the batch mix can be served; give a replica count")
    size = max(1, math.ceil(tokens / (lane.replica_tokens_per_s * window)))
    if ceiling is not None:
        size = min(size, ceiling)
    return size, max(size, ceiling or size)


def _run(built: _Built, progress: Callable[[float, float], None] | None) -> None:
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


def _freeze(built: _Built, scenario: Scenario, setup: RooflineSetup, base_dir: Path, trace: pd.DataFrame) -> SimResult:
    env, log = built.env, built.log
    n_trace = len(trace)
    meta = run_meta(
        scenario,
        setup,
        base_dir,
        n_blocks=built.n_blocks,
        budget=built.budget,
        n_trace=n_trace,
        horizon_s=env.now,
        n_events=env.events_processed(),
    )
    requests = requests_frame(log)
    if "klass" in trace.columns:  # the request's class, priority, job and deadline (`sim.workload.jobs.with_classes`)
        requests["klass"] = pd.Categorical(trace["klass"].to_numpy(), categories=KLASSES)
    if "priority" in trace.columns:
        requests["priority"] = trace["priority"].to_numpy(dtype=np.int64)
    if "job_id" in trace.columns:
        requests["job_id"] = pd.Series(trace["job_id"].to_numpy(), dtype="string")
    if "deadline_at_s" in trace.columns:
        requests["deadline_at_s"] = trace["deadline_at_s"].to_numpy(dtype=np.float64)
    caches = [slot.engine.cache for slot in built.fleet.slots if slot.engine is not None and slot.engine.cache is not None]
    if caches:  # prefix caching (in any pool)
        requests["cached_tokens"] = log.cached_tokens
        meta["prefix_cache"] = {
            "hash_block_tokens": caches[0].hash_tokens,
            "prefill_tokens_saved": int(log.prefill_saved_tokens),
            "evicted_entries": sum(c.evicted for c in caches),
            "pinned_at_end": sum(c.pinned() for c in caches),
        }
        hash_counts = trace["prefix_hash_ids"].map(lambda h: 0 if h is None else len(h)).to_numpy()
        requests["prefix_blocks"] = hash_counts
    if built.transfers is not None and built.pools is not None:
        t = built.transfers
        requests["decode_replica_id"] = t.decode_replica_id
        requests["transfer_start_at_s"] = t.transfer_start_at_s
        requests["transfer_end_at_s"] = t.transfer_end_at_s
        meta["pools"] = {
            name: {
                "gpu": pool.setup.gpu.name,
                "tp": pool.setup.tp,
                "usd_per_gpu_hour": pool.setup.usd_per_gpu_hour,
                "peak_flops_per_s_per_gpu": pool.setup.peak_flops_per_s,
                "hbm_bw_bytes_per_s_per_gpu": pool.setup.gpu.hbm_bw_bytes_per_s,
                "kv_blocks_per_replica": pool.n_blocks,
                "max_num_batched_tokens": pool.budget,
                "engine_policy": pool.scenario.engine.policy,
            }
            for name, pool in built.pools.items()
        }
        link = scenario.fleet.link
        meta["link"] = {
            "bytes_per_s_per_gpu": link.bytes_per_s_per_gpu,
            "latency_s": link.latency,
            "peak_transfers_waiting": t.peak_waiting,
        }
    replicas = replicas_frame(built.fleet, log, env.now)
    if built.transfers is not None:  # a decode replica served the requests transferred to it
        d = built.transfers.decode_replica_id
        replicas["requests"] += np.bincount(d[d >= 0], minlength=len(replicas))[: len(replicas)]
    return SimResult(
        requests=requests,
        replicas=replicas,
        timeline=pd.DataFrame(built.rows, columns=TIMELINE_COLUMNS).astype(TIMELINE_DTYPES),
        itl=GapDistribution.from_arrays(**log.itl.arrays()),
        meta=meta,
    )


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
    (for `throughput_utilization`; see `sim.capacity`)."""
    start = time.perf_counter()
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    try:
        setup = resolve_scenario(scenario, base_dir=base_dir)
        if trace is None:
            trace = scenario_trace(scenario, base_dir=base_dir)
        else:
            _check_frame(trace)
        trace = with_batch_jobs(scenario, trace, base_dir=base_dir)
        built = _build(scenario, setup, trace, RunStreams(scenario.seed), base_dir)
    except FleetsimError as err:  # the build phase's errors name the scenario file, when there is one
        source = scenario.source
        if source is None or str(err).startswith(source):
            raise
        raise FleetsimError(f"{source}: {err}") from None
    if observe is not None:
        observe(built.env, [slot.engine for slot in built.fleet.slots if slot.engine is not None])
    built_at = time.perf_counter()
    _run(built, progress)
    result = _freeze(built, scenario, setup, base_dir, trace)
    wall = result.meta["wall_s"]
    wall["build"], wall["simulate"] = built_at - start, time.perf_counter() - built_at  # freezing counts as simulating
    if measure_capacity and scenario.fleet.mode != "colocated":  # one replica's saturation has no disaggregated analogue
        result.meta["capacity"]["reason"] = "disaggregated"
    if measure_capacity and scenario.fleet.mode == "colocated":
        capacity = _capacity(scenario, setup, trace)
        wall["capacity"] = capacity.wall_s
        result.meta["capacity"] = {
            "measured": True,
            "max_tokens_per_s_per_replica": capacity.max_tokens_per_s_per_replica,
            "rel_se": capacity.rel_se,
        }
        wall["capacity_cached"] = capacity.cached  # depends on this process's history: kept with the wall times
    return result


def _run_saturated(scenario: Scenario, setup: RooflineSetup, frame: pd.DataFrame) -> pd.DataFrame:
    """One replica of `setup` (the scenario's engine, no fleet queue bound) on `frame`: its request records."""
    single = scenario.model_copy(
        update={"fleet": scenario.fleet.model_copy(update={"autoscaler": FixedConfig(replicas=1), "queue_max": None})}
    )
    built = _build(single, setup, frame, RunStreams(scenario.seed), scenario.base_dir)
    _run(built, None)
    return requests_frame(built.log)


def replica_capacity(scenario: Scenario, trace: pd.DataFrame, *, base_dir: Path) -> float | None:
    """One replica's saturated throughput (tokens/s) for `trace`'s length mix under the scenario's engine:
    the figure `throughput_utilization` divides by (cached on the resolved setup)."""
    return _capacity(scenario, resolve_scenario(scenario, base_dir=base_dir), trace).max_tokens_per_s_per_replica


def _capacity(scenario: Scenario, setup: RooflineSetup, trace: pd.DataFrame) -> Capacity:
    """One replica of `setup` kept saturated with the trace's lengths (`sim.capacity`; cached)."""
    return saturated_capacity(
        setup,
        scenario.engine,
        trace[["prompt_tokens", "output_tokens"]].to_numpy(),
        run_saturated=functools.partial(_run_saturated, scenario, setup),
    )
