"""The build phase: a scenario and its trace become a ready-to-run SimPy model, one way for every fleet.

A fleet is a list of **pools** plus the **link** between two of them and the **lanes** into them:
- every pool is built by `pool_specs` -> `_pool` from a pool spec (its name and role, its scenario view: GPU, TP,
  router, autoscaler, lifecycle, engine and price; the resolved setup, the KV blocks, the engine's limits): the
  online pool of a colocated fleet, a disaggregated fleet's prefill and decode pools, a dedicated batch pool;
- the link (`sim.run.fleet.disagg.Transfers`) moves KV from the prefill pool to the decode pool;
- the interactive lane is the trace's feed into the entry pool (online or prefill), the batch lane
  (`sim.run.fleet.batch.BatchLane`) holds batch-job requests at the gateway and feeds the entry pool (backfill) or the
  dedicated pool.
Lanes, the link and the guard register as listeners of the pools' replicas before the run (`Pool.listeners`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.errors import FleetsimError
from sim.physics.roofline import RooflineSetup, kv_capacity_tokens
from sim.policies.autoscale import LATENCY_METRICS, FixedConfig, HpaConfig, autoscaler_counts, make_policy
from sim.policies.router import ROUTERS
from sim.run.clock import CountingEnvironment
from sim.run.engine.kv import BlockKv, PrefixCachingKv
from sim.run.engine.lockstep import LockStepReplica, LockSteps
from sim.run.engine.lora import LoraCosts, LoraKv, LoraPrefixCachingKv, LoraState, LoraStepTime
from sim.run.engine.records import RequestLog
from sim.run.engine.replica import COLOCATED, DECODE, PREFILL, Replica, ReplicaListener, inadmissible
from sim.run.engine.scheduler import POLICIES, Limits
from sim.run.engine.sequence import blocks_for
from sim.run.engine.spec_group import SpecGroup
from sim.run.engine.spec_replica import SpecReplica
from sim.run.engine.speculative import Acceptance, SpeculativeStepTime
from sim.run.engine.step_time import ConstantStepTime, RooflineStepTime, StepTimeModel
from sim.run.fleet.batch import BatchLane, dedicated_loop, guard_loop
from sim.run.fleet.cluster import Flavor, Pool, Replicas
from sim.run.fleet.control import MAX_AUTOSCALER_TICKS, MAX_TIMELINE_SAMPLES, control_loop, sample_timeline
from sim.run.fleet.disagg import Transfers
from sim.run.fleet.feed import Feed
from sim.run.fleet.hazards import Hazards
from sim.run.fleet.latency import LatencyWatch
from sim.run.fleet.supply import GpuBudget, Supply, class_prices, spot_rate_per_s, supply_meta
from sim.run.store import FileColumns, SpilledGaps, blocks
from sim.scenario.config import BatchConfig, CapacityConfig, ClassConfig, EngineConfig, FleetConfig, Scenario
from sim.scenario.resolve import resolve_scenario
from sim.streams import RunStreams

ENTRY, BATCH, PREFILL_POOL, DECODE_POOL = "online", "batch", "prefill", "decode"
# each pool's router, lifecycle draws come from the run's stream of that name or, for the k-th pool kind here, its
# k-th sub-stream (fixed per kind, so adding a pool never changes another's draws)
STREAM = {ENTRY: None, PREFILL_POOL: None, BATCH: 1, DECODE_POOL: 2}


@dataclass(frozen=True)
class PoolSpec:
    """One pool, resolved: what it is (name, role), its scenario view, its replica's setup and engine limits."""

    name: str  # online, prefill, decode, batch
    role: str  # colocated, prefill, decode
    scenario: (
        Scenario  # the pool as a colocated scenario: its fleet block (gpu, tp, router, autoscaler, lifecycle), engine, price
    )
    setup: RooflineSetup
    draft: RooflineSetup | None  # speculative decoding's draft model, on the pool's GPUs
    n_blocks: int
    budget: int  # max_num_batched_tokens
    limits: Limits
    caching: bool  # prefix caching on: the engine asks for it and the trace carries prefix hash ids
    fallback: tuple[PoolSpec, ...] = ()  # the pool's other GPU types (`fleet.capacity.fallback`), resolved in order
    lora: LoraCosts | None = None  # LoRA adapters on (`engine.lora`), resolved for this GPU and TP

    @property
    def engine(self) -> EngineConfig:
        return self.scenario.engine

    @property
    def fleet(self) -> FleetConfig:
        return self.scenario.fleet

    @property
    def chunks(self) -> bool:
        return POLICIES[self.engine.policy].chunks_prefill


# --- pool specs (names -> specs, fit checks) ---------------------------------------------------------------
def watermark_blocks(engine: EngineConfig, n_blocks: int) -> int:
    """The blocks admission keeps free: vLLM's int(watermark x number of GPU blocks)."""
    return int(engine.watermark * n_blocks)


def engine_limits(engine: EngineConfig, n_blocks: int, budget: int, window_blocks: int = 0) -> Limits:
    """A replica's batching and admission limits, as its engine block and KV cache set them (`window_blocks`: each
    sequence's sliding-window layers', `RooflineSetup.window_blocks`)."""
    return Limits(
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=budget,
        block_size=engine.block_size,
        n_blocks=n_blocks,
        watermark_blocks=watermark_blocks(engine, n_blocks),
        whole_prompt=engine.admission == "whole_prompt",
        preempt_for_priority=engine.preempt_for_priority,
        lookahead=engine.speculative.num_speculative_tokens if engine.speculative is not None else 0,
        long_prefill=engine.long_prefill_token_threshold if engine.policy == "chunked" else 0,
        async_scheduling=engine.async_scheduling,
        window_blocks=window_blocks,
    )


def draft_setup(scenario: Scenario, base_dir: Path) -> RooflineSetup | None:
    """Speculative decoding with a draft model: the draft on the scenario's GPUs and TP."""
    spec = scenario.engine.speculative
    if spec is None or spec.draft_model is None:
        return None
    from sim.physics.models import check_draft

    try:
        # (vLLM caps the draft's context at the target's max_model_len, its own being shorter or not)
        engine = scenario.engine.model_copy(update={"max_model_len": None})
        draft = resolve_scenario(scenario.model_copy(update={"model": spec.draft_model, "engine": engine}), base_dir=base_dir)
        check_draft(draft.model, resolve_scenario(scenario, base_dir=base_dir).model)
    except FleetsimError as err:
        raise FleetsimError(f"engine.speculative.draft_model: {err}") from None
    return draft


def kv_blocks(scenario: Scenario, setup: RooflineSetup, draft: RooflineSetup | None, lora: LoraCosts | None = None) -> int:
    """A replica's KV-cache blocks: what memory leaves after the weights (a draft model's too, LoRA's adapter slots),
    or the override."""
    engine = scenario.engine
    if engine.num_gpu_blocks_override:
        return engine.num_gpu_blocks_override
    tokens = kv_capacity_tokens(setup)
    if draft is not None:
        tokens -= math.ceil(draft.weight_bytes / setup.kv_pool_bytes_per_token)
    if lora is not None:
        tokens -= math.ceil(lora.max_loras * lora.slot_bytes / setup.kv_pool_bytes_per_token)
    return max(0, tokens) // engine.block_size


def lora_costs(engine: EngineConfig, setup: RooflineSetup) -> LoraCosts | None:
    """`engine.lora` resolved on the replica's model, GPUs and TP (`sim.physics.lora`)."""
    cfg = engine.lora
    if cfg is None:
        return None
    if engine.speculative is not None:
        raise FleetsimError("engine.lora: LoRA adapters with speculative decoding are not modelled (drop one of the two)")
    from sim.physics import lora

    model, rank, target = setup.model, cfg.max_lora_rank, cfg.target_modules
    size = lora.adapter_bytes(model, rank=rank, target=target)
    return LoraCosts(
        max_loras=cfg.max_loras,
        cpu_loras=cfg.cpu_loras,
        adapter_bytes=size,
        load_s=size / cfg.load_bytes_per_s,
        copy_s=size / (cfg.host_to_gpu_gb_per_s * 1e9),
        flops_per_token=lora.flops_per_token(model, rank=rank, target=target),
        slot_bytes=setup.tp * lora.slot_bytes(model, rank=rank, target=target, tp=setup.tp),
        flops_per_s=setup.tp * setup.effective_flops_per_s,
        bytes_per_s=setup.tp * setup.effective_hbm_bw_bytes_per_s,
    )


def pool_scenario(scenario: Scenario, name: str) -> Scenario:
    """A pool as a colocated scenario. A disaggregated fleet's prefill or decode pool: the pool's GPU, TP, router,
    autoscaler, lifecycle, engine and price over the fleet's and the scenario's. A dedicated batch pool: the fleet's
    replica type (GPU, TP, engine, price), launched and sized by the batch lane."""
    f = scenario.fleet
    if name == BATCH:  # (on-demand capacity of its own, no reserved seat)
        pool_fleet = f.model_copy(update={"mode": "colocated", "capacity": CapacityConfig(), "reserved_replicas": 0})
        return scenario.model_copy(update={"fleet": pool_fleet})
    if name == ENTRY or f.mode == "colocated":
        return (
            scenario
            if f.mode == "colocated"
            else scenario.model_copy(update={"fleet": f.model_copy(update={"mode": "colocated"})})
        )
    pool = f.prefill if name == PREFILL_POOL else f.decode
    router = pool.router or ("least_prompt_tokens" if name == PREFILL_POOL else f.router)
    fleet = f.model_copy(
        update={
            "gpu": pool.gpu or f.gpu,
            "tp": pool.tp or f.tp,
            "router": router,
            "autoscaler": pool.autoscaler,
            "lifecycle": pool.lifecycle or f.lifecycle,
            "mode": "colocated",
            "capacity": f.capacity_of(name),
            "reserved_replicas": f.reserved_of(name),
        }
    )
    engine = pool.engine or scenario.engine
    if engine.disable_hybrid_kv_cache_manager is None:  # vLLM's default with a KV connector (`EngineConfig`)
        engine = engine.model_copy(update={"disable_hybrid_kv_cache_manager": True})
    update: dict[str, Any] = {"fleet": fleet, "engine": engine}
    if pool.usd_per_gpu_hour is not None:
        update["pricing"] = scenario.pricing.model_copy(update={"usd_per_gpu_hour": pool.usd_per_gpu_hour})
    return scenario.model_copy(update=update)


def pool_spec(scenario: Scenario, name: str, role: str, *, base_dir: Path, prefix_ids: bool) -> PoolSpec:
    """Resolve one pool (its errors name it, in a disaggregated fleet)."""
    psc = pool_scenario(scenario, name)
    try:
        spec = _resolved_spec(psc, name, role, base_dir=base_dir, prefix_ids=prefix_ids)
    except FleetsimError as err:
        if scenario.fleet.mode == "disaggregated" and name in (PREFILL_POOL, DECODE_POOL):
            text = str(err)
            if text.startswith("fleet.autoscaler."):  # (a pool's autoscaler is always its own block's)
                raise FleetsimError(f"fleet.{name}.{text.removeprefix('fleet.')}") from None
            raise FleetsimError(f"fleet.{name}: {text}") from None
        raise
    fallback = tuple(
        _fallback_spec(scenario, psc, name, role, i, base_dir=base_dir, prefix_ids=prefix_ids)
        for i in range(len(psc.fleet.capacity.fallback))
    )
    return replace(spec, fallback=fallback)


def _resolved_spec(psc: Scenario, name: str, role: str, *, base_dir: Path, prefix_ids: bool) -> PoolSpec:
    """A pool scenario's replica resolved: its setup, draft model, KV blocks and engine limits."""
    setup = resolve_scenario(psc, base_dir=base_dir)
    engine = psc.engine
    budget = engine.batched_tokens(setup.model.max_context_tokens)
    draft = draft_setup(psc, base_dir)
    lora = lora_costs(engine, setup)
    n_blocks = kv_blocks(psc, setup, draft, lora)
    if n_blocks < 1:  # a replica that can hold no KV block can serve nothing: say what else took the memory
        taken = []
        if draft is not None:
            taken.append(f"the draft model's weights ({draft.weight_bytes / 1e9:.1f} GB)")
        if lora is not None and engine.lora is not None:
            taken.append(
                f"{lora.max_loras} LoRA slots of rank {engine.lora.max_lora_rank} ({lora.max_loras * lora.slot_bytes / 1e9:.1f} GB;"
                f" lower engine.lora.max_loras or max_lora_rank)"
            )
        after = f" after {' and '.join(taken)}" if taken else ""
        raise FleetsimError(
            f"engine: the KV cache holds no block of {engine.block_size} tokens on {setup.tp}x {setup.gpu.name}{after}"
        )
    window = setup.window_blocks(engine.block_size)
    if engine.max_model_len is not None and blocks_for(engine.max_model_len, engine.block_size) + window > n_blocks:
        # vLLM refuses to start unless its KV cache holds one request of max_model_len (kv_cache_utils.py,
        # `check_enough_kv_cache_memory`), and says the longest that would fit
        raise FleetsimError(
            f"engine.max_model_len: one request of {engine.max_model_len:,} tokens needs "
            f"{blocks_for(engine.max_model_len, engine.block_size) + window:,} KV blocks of {engine.block_size}, and the KV cache "
            f"on {setup.tp}x {setup.gpu.name} holds {n_blocks:,} ({n_blocks * engine.block_size:,} tokens): lower it to "
            f"at most {(n_blocks - window) * engine.block_size:,} or give the KV cache more memory (vLLM refuses to start too)"
        )
    if engine.speculative is not None and budget < 1 + engine.speculative.num_speculative_tokens:
        # a decoding sequence verifies its token and its drafts in one step: with less budget none is ever scheduled
        k = engine.speculative.num_speculative_tokens
        raise FleetsimError(
            f"engine.max_num_batched_tokens: with speculative decoding a decoding sequence puts 1 + "
            f"num_speculative_tokens = {1 + k} tokens through each step; give at least {1 + k} (got {budget})"
        )
    limits = engine_limits(engine, n_blocks, budget, window)
    check_whole_groups(psc.fleet, setup.dp_group)
    check_pipeline(psc, setup.pp)
    return PoolSpec(name, role, psc, setup, draft, n_blocks, budget, limits, prefix_ids and engine.prefix_caching, lora=lora)


def check_pipeline(psc: Scenario, pp: int) -> None:
    """Pipeline stages (`fleet.pp`): a server's pp virtual engines are replicas that come and go together, which only
    a fixed fleet of whole servers keeps so far; what would launch, drain or lose part of a server is refused."""
    if pp <= 1:
        return
    fleet = psc.fleet

    def refuse(field: str, why: str) -> FleetsimError:
        return FleetsimError(f"{field}: with fleet.pp = {pp} pipeline stages {why}")

    auto = fleet.autoscaler  # (a disaggregated fleet with stages is refused with the fleet's keys: `FleetConfig`)
    if not isinstance(auto, FixedConfig):
        raise refuse(
            "fleet.autoscaler", f"a server's {pp} virtual engines come and go together: use policy fixed (got {auto.policy})"
        )
    if auto.replicas % pp:
        raise refuse(
            "fleet.autoscaler.replicas",
            f"each replica is one of a server's {pp} virtual engines: give a multiple of {pp} (got {auto.replicas})",
        )
    if fleet.capacity_of("online").shapes_supply:
        raise refuse(
            "fleet.capacity",
            "the fleet's replicas launch as whole servers only on plain on-demand capacity: GPU failures, spot reclaims, "
            "fallback GPUs, a capacity class's max_replicas, launch failures and obtainable-GPU schedules (each could "
            "take or launch part of a server) are not modelled",
        )
    if fleet.reserved_replicas % pp:
        raise refuse(
            "fleet.reserved_replicas",
            f"reserved seats hold whole servers: give a multiple of {pp} (got {fleet.reserved_replicas})",
        )
    if fleet.max_gpus is not None and fleet.max_gpus < auto.replicas * fleet.tp:
        raise refuse("fleet.max_gpus", f"the fixed fleet's {auto.replicas // pp} servers need {auto.replicas * fleet.tp} GPUs")
    if psc.engine.speculative is not None:
        raise refuse(
            "engine.speculative", "speculative decoding is not modelled (vLLM's V0 engine, which runs PP, has no PP with it)"
        )
    if psc.batch is not None and psc.batch.fleet == "dedicated":
        raise refuse(
            "batch.fleet",
            "a dedicated batch pool (launched and released as the backlog needs, an engine at a time) is not modelled; use backfill",
        )
    life = fleet.lifecycle
    if life.start == "cold":  # (each engine draws its own cold start: a random one would start a server's engines apart)
        for key in ("cold_start_s", "provision_s", "image_pull_s", "warmup_s"):
            value = getattr(life, key)
            if value is not None and not isinstance(value, int | float):
                raise refuse(
                    f"fleet.lifecycle.{key}",
                    f"a server's {pp} virtual engines start together, which a random cold start (one draw an engine) would "
                    f"not keep: give a fixed duration (got {value.dist})",
                )


def check_whole_groups(fleet: Any, dp: int) -> None:
    """An MoE model's DP ranks share its experts, each holding its share of them: a fleet of such ranks holds whole
    groups of `dp` (as a vLLM server of `--data-parallel-size` dp runs every rank or none), so the autoscaler's counts
    are multiples of it (between them it scales by whole groups: `Pool.scale_to`), and so are the replicas it may hold
    at once (`FleetConfig.replica_cap`: within the GPU quota and the capacity classes' caps; a cap short of a group
    launched part of one, ranks that step together priced as if all were there)."""
    if dp <= 1:
        return
    for name, n in autoscaler_counts(fleet.autoscaler).items():
        if n is not None and n % dp:
            raise FleetsimError(
                f"fleet.autoscaler.{name}: an MoE model's DP ranks share its experts, so a fleet holds whole groups of "
                f"fleet.dp = {dp} ranks; give a multiple of {dp} (got {n})"
            )
    cap = fleet.replica_cap
    if cap % dp == 0:
        return
    if fleet.max_gpus is not None and fleet.max_gpus // fleet.tp == cap:
        raise FleetsimError(
            f"fleet.max_gpus: an MoE model's DP ranks share its experts, so a fleet holds whole groups of fleet.dp = {dp} "
            f"ranks of fleet.tp = {fleet.tp} GPUs; give a multiple of {dp * fleet.tp} GPUs (got {fleet.max_gpus})"
        )
    raise FleetsimError(
        f"fleet.capacity: its classes' max_replicas and fleet.reserved_replicas hold at most {cap} replicas at once, "
        f"part of a group of fleet.dp = {dp} ranks (an MoE model's DP ranks share its experts); give them room for a "
        f"multiple of {dp}"
    )


def fallback_scenario(psc: Scenario, i: int) -> Scenario:
    """A pool's i-th fallback GPU type as a pool of its own: that GPU and TP, its one class, billed at its own price
    (given, or the price sheet's for the class, or the catalog's: not the pool's GPU's)."""
    f = psc.fleet.capacity.fallback[i]
    klass = ClassConfig(
        max_replicas=f.max_replicas, launch_failure_probability=f.launch_failure_probability, obtainable_gpus=f.obtainable_gpus
    )
    own = psc.fleet.capacity
    capacity = CapacityConfig(
        launch_order=[f.capacity],
        on_demand=klass if f.capacity == "on_demand" else ClassConfig(max_replicas=0),
        spot=None if f.capacity == "on_demand" or own.spot is None else own.spot.model_copy(update=klass.model_dump()),
        failures=own.failures,
        backoff=own.backoff,
    )
    fleet = psc.fleet.model_copy(update={"gpu": f.gpu, "tp": f.tp or psc.fleet.tp, "capacity": capacity, "reserved_replicas": 0})
    price = {"usd_per_gpu_hour": f.usd_per_gpu_hour if f.capacity == "on_demand" else None}
    if f.capacity == "spot":
        price["spot_usd_per_gpu_hour"] = f.usd_per_gpu_hour
    return psc.model_copy(update={"fleet": fleet, "pricing": psc.pricing.model_copy(update=price)})


def _fallback_spec(
    scenario: Scenario, psc: Scenario, name: str, role: str, i: int, *, base_dir: Path, prefix_ids: bool
) -> PoolSpec:
    """Resolve a pool's i-th fallback GPU type (its errors name it)."""
    where = (
        f"fleet.capacity.fallback.{i}"
        if name in (ENTRY, BATCH) or scenario.fleet.mode == "colocated"
        else (f"fleet.{name}.capacity.fallback.{i}")
    )
    fsc = fallback_scenario(psc, i)
    try:
        return _resolved_spec(fsc, name, role, base_dir=base_dir, prefix_ids=prefix_ids)
    except FleetsimError as err:
        text = str(err)  # (the fallback's own gpu and tp stand in the fleet block's: fleet.gpu -> <where>.gpu)
        if text.startswith("fleet.gpu, fleet.tp: "):
            raise FleetsimError(f"{where} (gpu, tp): {text.removeprefix('fleet.gpu, fleet.tp: ')}") from None
        for key in ("fleet.gpu: ", "fleet.tp: "):
            if text.startswith(key):
                raise FleetsimError(f"{where}.{key.removeprefix('fleet.')}{text.removeprefix(key)}") from None
        raise FleetsimError(f"{where}: {text}") from None


def has_batch(trace: pd.DataFrame) -> bool:
    return "klass" in trace.columns and bool((trace["klass"].to_numpy() == "batch").any())


def pool_specs(scenario: Scenario, trace: pd.DataFrame, *, base_dir: Path) -> list[PoolSpec]:
    """The fleet's pools, the entry pool (which takes the trace's arrivals) first: online; or prefill, decode; then a
    dedicated batch pool if the trace holds batch requests and `batch.fleet` is dedicated."""
    prefix_ids = "prefix_hash_ids" in trace.columns
    if scenario.fleet.mode == "disaggregated":
        specs = [
            pool_spec(scenario, PREFILL_POOL, PREFILL, base_dir=base_dir, prefix_ids=prefix_ids),
            pool_spec(scenario, DECODE_POOL, DECODE, base_dir=base_dir, prefix_ids=prefix_ids),
        ]
    else:
        specs = [pool_spec(scenario, ENTRY, COLOCATED, base_dir=base_dir, prefix_ids=prefix_ids)]
    cfg = scenario.batch or BatchConfig()
    if has_batch(trace) and cfg.fleet == "dedicated":
        specs.append(pool_spec(scenario, BATCH, COLOCATED, base_dir=base_dir, prefix_ids=prefix_ids))
    for hash_tokens in sorted({spec.scenario.engine.prefix_hash_block_tokens for spec in specs if spec.caching}):
        check_hash_blocks(trace, hash_tokens)
    return specs


HASH_CHECK_ROWS = 100_000  # (a trace's hash block size shows in its first rows: the check reads no more)


def check_hash_blocks(trace: pd.DataFrame, hash_tokens: int) -> None:
    """A trace's prefix hash ids each stand for `hash_tokens` prompt tokens (`engine.prefix_hash_block_tokens`): the
    size the trace's format declares (`frame.attrs["hash_block_tokens"]`: Mooncake's 512, Qwen Bailian's 16) must be
    it, and no request may carry more ids than its prompt has blocks of that size (one more allowed, for a partial
    block): read in blocks too large, a trace hashed in small blocks would match a handful of huge entries, silently."""
    declared = trace.attrs.get("hash_block_tokens")
    fix = "set engine.prefix_hash_block_tokens to the trace's block size"
    if declared is not None and declared != hash_tokens:
        raise FleetsimError(
            f"trace: its {trace.attrs.get('format', '')} hash ids stand for {declared} tokens each, not "
            f"engine.prefix_hash_block_tokens ({hash_tokens}); {fix}"
        )
    head = trace["prefix_hash_ids"].iloc[:HASH_CHECK_ROWS]
    counts = head.map(lambda h: 0 if h is None else len(h)).to_numpy(dtype=np.int64)
    prompts = trace["prompt_tokens"].to_numpy(dtype=np.int64)[: len(counts)]
    too_many = counts > -(-prompts // hash_tokens) + 1
    cap = trace.attrs.get("prompt_cap_tokens")  # (`max_context`: a cut prompt keeps the whole's ids where the format
    # does not say what an id stands for: `transforms.clip_tokens`)
    if cap is not None:
        too_many &= prompts < cap
    bad = np.flatnonzero(too_many)
    if bad.size:
        i = int(bad[0])
        raise FleetsimError(
            f"trace row {i}: {counts[i]} prefix hash ids for {prompts[i]} prompt tokens, more than one per "
            f"engine.prefix_hash_block_tokens ({hash_tokens}) tokens: its ids stand for about "
            f"{prompts[i] / counts[i]:.0f} tokens each (Qwen Bailian traces: 16; Mooncake's: 512); {fix}"
        )


def rejections(log: RequestLog, specs: Sequence[PoolSpec]) -> dict[int, str]:
    """The requests (by index) the entry pool can never serve, with the reason: for a colocated entry pool those no
    replica of it can serve; for a disaggregated fleet those no prefill replica could prefill, or no decode replica
    could take (its KV and next token above the watermark) or finish (its whole context)."""
    p, o = log.prompt_tokens, log.output_tokens
    entry = specs[0]
    ctx, named = context_limit(entry.setup)
    if entry.role == COLOCATED:
        return inadmissible(p, o, max_context_tokens=ctx, limits=entry.limits, chunks=entry.chunks, context_name=named)
    dec = specs[1]
    out = {
        i: f"prefill pool: {why}"
        for i, why in inadmissible(
            p, np.ones_like(o), max_context_tokens=ctx, limits=entry.limits, chunks=entry.chunks, context_name=named
        ).items()
    }
    ctx, named = context_limit(dec.setup)
    lim = dec.limits
    room = lim.n_blocks - lim.watermark_blocks
    bad = [
        i + lo
        for lo, (pp, oo) in blocks(1 << 20, p, o)  # (bounded temporaries; a stored trace's pages handed back)
        for i in np.flatnonzero((-(-(pp + 1) // lim.block_size) + lim.window_blocks > room) & (oo > 1)).tolist()
    ]
    for i in bad:
        out.setdefault(
            i,
            f"decode pool: its prompt's KV and next token need {-(-(int(p[i]) + 1) // lim.block_size) + lim.window_blocks} KV blocks, more than "
            f"the {lim.n_blocks} - {lim.watermark_blocks} (engine.watermark) a decode replica offers",
        )
    for i, why in inadmissible(p, o, max_context_tokens=ctx, limits=lim, chunks=dec.chunks, context_name=named).items():
        if int(o[i]) > 1:
            out.setdefault(i, f"decode pool: {why}")
    return out


def context_limit(setup: RooflineSetup) -> tuple[int, str]:
    """The longest prompt + output a pool's replica serves, and what sets it (for a rejection's reason)."""
    return setup.context_tokens, "engine.max_model_len" if setup.max_model_len is not None else "the model's max context"


def check_bounds(scenario: Scenario, specs: Sequence[PoolSpec], trace: pd.DataFrame) -> None:
    """Refuse a run whose periodic processes would need more samples or ticks than the stated bounds."""
    span = float(trace["arrival_at_s"].iloc[-1]) if len(trace) else 0.0
    fleet = scenario.fleet
    samples = span / fleet.timeline_interval_s
    # (a batch job submitted late stretches the run: say so, for its submit_at_s may be the typo)
    job = trace["job_id"].iloc[-1] if len(trace) and "job_id" in trace.columns else None
    last = "" if job is None or pd.isna(job) else f" (the last request is batch job {job!r}'s: batch.jobs submit_at_s)"
    if samples > MAX_TIMELINE_SAMPLES:
        raise FleetsimError(
            f"fleet.timeline_interval_s={fleet.timeline_interval_s:g} over a trace of {span:,.0f} s{last} is {samples:,.0f} "
            f"samples, more than {MAX_TIMELINE_SAMPLES:,}; raise it to at least {span / MAX_TIMELINE_SAMPLES:.3g}"
        )
    for spec in specs:
        auto = spec.fleet.autoscaler
        if isinstance(auto, FixedConfig):
            continue
        ticks = span / auto.interval_s
        if ticks > MAX_AUTOSCALER_TICKS:
            where = "fleet.autoscaler" if spec.name in (ENTRY, BATCH) else f"fleet.{spec.name}.autoscaler"
            raise FleetsimError(
                f"{where}.interval_s={auto.interval_s:g} over a trace of {span:,.0f} s{last} is {ticks:,.0f} ticks, "
                f"more than {MAX_AUTOSCALER_TICKS:,}; raise it to at least {span / MAX_AUTOSCALER_TICKS:.3g}"
            )


# --- the model ------------------------------------------------------------------------------------------------
def step_model(spec: PoolSpec) -> StepTimeModel:
    """The pool's step-time model: the roofline or the constant test double, wrapped by speculative decoding."""
    cfg = spec.engine.step_time
    base: StepTimeModel
    if cfg.kind == "constant":
        assert cfg.decode_step_s is not None
        base = ConstantStepTime(prefill_s_per_token=cfg.prefill_s_per_token, decode_step_s=cfg.decode_step_s)
    else:
        base = RooflineStepTime(spec.setup)
    sp = spec.engine.speculative
    if sp is None:
        return base
    draft = RooflineStepTime(spec.draft) if spec.draft is not None else None
    cost = sp.draft_cost if sp.draft_cost is not None else 1.0 / spec.setup.model.n_layers  # mtp: one layer's share
    return SpeculativeStepTime(base, draft, method=sp.method, k=sp.num_speculative_tokens, draft_cost=cost)


def replica_step_time(scenario: Scenario, *, pool: str | None = None, base_dir: Path | None = None) -> StepTimeModel:
    """The step-time model of a replica of the scenario's `pool` (default the entry pool: online, or a disaggregated
    fleet's prefill pool): its roofline (or constant) model with the scenario's GPU, TP, precision and engine,
    wrapped by speculative decoding when the engine speculates. `model.step(...)` prices a step."""
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    names = (PREFILL_POOL, DECODE_POOL) if scenario.fleet.mode == "disaggregated" else (ENTRY,)
    name = pool if pool is not None else names[0]
    if name not in names:
        raise FleetsimError(f"pool: this fleet's pools are {', '.join(names)} (got {name!r})")
    role = {ENTRY: COLOCATED, PREFILL_POOL: PREFILL, DECODE_POOL: DECODE}[name]
    return step_model(pool_spec(scenario, name, role, base_dir=base_dir, prefix_ids=False))


def replica_factory(
    env: simpy.Environment, spec: PoolSpec, log: RequestLog, streams: RunStreams
) -> Callable[[int, Sequence[ReplicaListener]], Replica]:
    """Replicas of the pool's engine, each with its listeners."""
    engine = spec.engine
    step_time = step_model(spec)
    sp = engine.speculative
    alphas = np.asarray(sp.alphas, dtype=np.float64) if sp is not None else None
    policy = POLICIES[engine.policy]
    setup = spec.setup
    # an MoE model's DP ranks share its MoE layers and step together; a pipeline's virtual engines share its stages'
    # GPUs and step at the pace of the slowest busy one (`sim.run.engine.lockstep`)
    locksteps = (
        LockSteps(env, dp=setup.dp, step_time=step_time, graph_tokens=engine.cuda_graph_tokens(setup.model.max_context_tokens))
        if setup.dp_group > 1
        else LockSteps(env, dp=setup.pp, step_time=step_time, pipeline=True)
        if setup.pp > 1
        else None
    )

    def make(replica_id: int, listeners: Sequence[ReplicaListener]) -> Replica:
        kv: BlockKv
        replica_time = step_time
        if spec.lora is not None:  # LoRA: its state, seen by the KV manager and the step-time model (per replica)
            lora = LoraState(spec.lora)
            if engine.step_time.kind != "constant":  # (the constant test double's steps cost what it says)
                replica_time = LoraStepTime(step_time, lora)
            kv = (
                LoraPrefixCachingKv(
                    spec.n_blocks,
                    engine.block_size,
                    hash_tokens=engine.prefix_hash_block_tokens,
                    log=log,
                    lora=lora,
                    chunks=policy.chunks_prefill,
                )
                if spec.caching
                else LoraKv(spec.n_blocks, engine.block_size, lora=lora)
            )
        elif spec.caching:
            kv = PrefixCachingKv(
                spec.n_blocks,
                engine.block_size,
                hash_tokens=engine.prefix_hash_block_tokens,
                log=log,
                chunks=policy.chunks_prefill,
            )
        else:
            kv = BlockKv(spec.n_blocks, engine.block_size)
        kv.window_blocks = spec.limits.window_blocks  # (each sequence's sliding-window layers' blocks)
        acceptance = None if alphas is None else Acceptance(alphas, streams.sub_generator("speculative", replica_id))
        kind: Callable[..., Replica] = Replica
        if locksteps is not None:  # a DP rank of an MoE model, or a pipeline's virtual engine: stepped with its group
            kind = functools.partial(LockStepReplica, lockstep=locksteps.group_for_new_rank())
        elif acceptance is not None and engine.fast_forward:  # speculative decoding, fast-forwarded: its own seam
            assert isinstance(step_time, SpeculativeStepTime)
            group = SpecGroup(engine.block_size, acceptance, step_time, log.itl, spec.limits.window_blocks)
            kind = functools.partial(SpecReplica, group=group)
        return kind(
            env,
            replica_id=replica_id,
            step_time=replica_time,
            policy=policy(),
            limits=spec.limits,
            kv=kv,
            log=log,
            max_context_tokens=spec.setup.context_tokens,
            fast_forward=engine.fast_forward,
            role=spec.role,
            acceptance=acceptance,
            listeners=listeners,
        )

    return make


def make_pool(
    env: simpy.Environment,
    spec: PoolSpec,
    log: RequestLog,
    streams: RunStreams,
    replicas: Replicas,
    *,
    rejected: dict[int, str],
    max_replicas: int | None = None,
    supply: Supply | None = None,
) -> Pool:
    """A pool of `spec`'s replicas (not started): its router and cold starts draw from the run's `router` and
    `lifecycle` streams, or their sub-stream for its kind (`STREAM`). `supply`: its capacity classes (default: the
    fleet's reserved seats, in the online or prefill pool, then on-demand capacity without limit)."""
    fcfg = spec.fleet
    k = STREAM[spec.name]

    def rng(name: str) -> np.random.Generator:
        return streams.generator(name) if k is None else streams.sub_generator(name, k)

    return Pool(
        env,
        name=spec.name,
        replicas=replicas,
        make_engine=replica_factory(env, spec, log, streams),
        inadmissible=rejected,
        router=ROUTERS[fcfg.router](rng("router"), fcfg.prefix_routing_slack),
        lifecycle=fcfg.lifecycle,
        weight_bytes=spec.setup.held_weight_bytes,
        log=log,
        rng=rng("lifecycle"),
        max_replicas=fcfg.replica_cap if max_replicas is None else max_replicas,
        queue_max=fcfg.queue_max,
        queue_timeout_s=fcfg.queue_timeout_s,
        max_outstanding=fcfg.max_outstanding_per_replica,
        supply=supply or Supply(tp=spec.setup.tp, reserved=fcfg.reserved_replicas),
        group=spec.setup.dp_group,
    )


def start_pool(
    env: simpy.Environment,
    pool: Pool,
    fcfg: FleetConfig,
    *,
    floor: Callable[[int], int] | None = None,
    per_replica: Callable[[], float] | None = None,
) -> None:
    """A pool's initial replicas (warm or cold-starting) and, unless fixed, its autoscaler (which scales to at least
    `floor(ready replicas)` when given: the batch lane's deadline scaling). `per_replica()`: the requests/s one
    replica serves saturated (a predictive autoscaler's capacity, measured only when asked)."""
    start_n = min(fcfg.autoscaler.start_replicas, fcfg.replica_cap)
    auto = fcfg.autoscaler
    if isinstance(auto, HpaConfig) and auto.metric in LATENCY_METRICS:  # (before any replica is built: it listens)
        pool.latency_watch = LatencyWatch(pool.log, auto.latency_window_s)
        pool.listeners.append(pool.latency_watch)
    if fcfg.lifecycle.start == "warm":
        pool.add_ready(start_n)
    else:
        pool.launch(start_n)
    if not isinstance(fcfg.autoscaler, FixedConfig):
        lead = fcfg.lifecycle.expected_cold_start_s(pool.weight_bytes)
        policy = make_policy(fcfg.autoscaler, lead_s=lead, per_replica=per_replica)
        env.process(control_loop(env, pool, policy, fcfg.autoscaler.interval_s, floor=floor))


FEW_COME_UP = math.log(100)  # a cold start this many mean failure intervals long: under 1% of launches come up


def _check_failures_outlast_start(gpu_mtbf_hours: float, spec: PoolSpec, weight_bytes: float) -> None:
    """A replica must stand a chance of outlasting its own cold start: where failures (a GPU of its tp, each at 1 /
    `gpu_mtbf_hours`) leave under 1% of launches coming up, a run goes on to its horizon with the requests unserved."""
    mtbf_s = gpu_mtbf_hours * 3600 / spec.setup.tp
    start_s = spec.fleet.lifecycle.expected_cold_start_s(weight_bytes)
    # (failures strike from launch: a share exp(-start / MTBF) of the replicas launched come up)
    if start_s > FEW_COME_UP * mtbf_s:
        gpus = f"{spec.setup.tp} GPUs" if spec.setup.tp > 1 else "1 GPU"
        raise FleetsimError(
            f"fleet.capacity.failures.gpu_mtbf_hours: {gpu_mtbf_hours:g} h fails a replica of {gpus} every {mtbf_s:,.4g} s "
            f"on average, far sooner than its cold start ({start_s:,.4g} s expected): {math.exp(-start_s / mtbf_s):.2g} "
            "of its replicas would come up; give a longer mean time between failures"
        )


@dataclass
class Built:
    """The build phase's product: a ready-to-run SimPy model."""

    env: CountingEnvironment
    log: RequestLog
    done: simpy.Event
    specs: list[PoolSpec]
    pools: list[Pool]  # in the order of `specs`
    replicas: Replicas  # every pool's, by id
    rows: list[tuple[Any, ...]]  # the timeline's samples
    lanes: list[BatchLane]
    link: Transfers | None
    hazards: list[Hazards] = field(default_factory=list)  # failures and spot reclaims, of each pool that has them
    # each pool's capacity classes, by pool name (meta.json's `supply`: the entry pool's; `pools.<name>.supply`)
    supply_meta: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)


def build(
    scenario: Scenario,
    specs: list[PoolSpec],
    trace: pd.DataFrame,
    streams: RunStreams,
    *,
    batch_rate: Callable[[pd.DataFrame], float | None],
    extra: Sequence[ReplicaListener] = (),
    feed: bool = True,
    env: CountingEnvironment | None = None,
    budget: GpuBudget | None = None,
    priority: int = 0,
    preempts: bool = False,
    store: FileColumns | None = None,
    spilled: SpilledGaps | None = None,
) -> Built:
    """The SimPy model of `specs` replaying `trace`. `batch_rate(mix)`: one replica's saturated tokens/s for a
    batch mix (deadline scaling, an `auto`-sized dedicated pool). `extra`: more listeners for every replica (a
    capacity probe's closed loop, which then delivers the requests itself: `feed` False). A platform's deployment
    (`sim.run.platform`) is built into the platform's `env`, its pools' GPUs counted against the shared `budget`
    (with its `priority`). `store`, `spilled`: a stored run's request columns and gap record (`sim.run.store`)."""
    check_bounds(scenario, specs, trace)
    env = env if env is not None else CountingEnvironment()
    log = RequestLog(
        trace["arrival_at_s"].to_numpy(),
        trace["prompt_tokens"].to_numpy(),
        trace["output_tokens"].to_numpy(),
        store=store,
        spilled=spilled,
    )
    done = env.event()

    def all_resolved() -> None:
        if not done.triggered:
            done.succeed()

    log.on_all_resolved = all_resolved
    replicas = Replicas()
    rejected = rejections(log, specs)
    said: dict[str, Callable[[], dict[str, Any]]] = {}
    supplies = {}
    for spec in specs[:2] if specs[0].role == PREFILL else specs[:1]:  # (the fleet's own pools, not a batch pool)
        capacity = spec.fleet.capacity
        if feed and capacity.shapes_supply:  # (not in a capacity probe: it measures the replica, not the capacity)
            supplies[spec.name], said[spec.name] = pool_supply(spec, streams)
    entry = make_pool(env, specs[0], log, streams, replicas, rejected=rejected, supply=supplies.get(specs[0].name))
    pools = [entry]
    link = None
    if specs[0].role == PREFILL:
        decode = make_pool(env, specs[1], log, streams, replicas, rejected={}, supply=supplies.get(specs[1].name))
        pools.append(decode)
        pre = specs[0].setup
        fl = scenario.fleet.link
        link = Transfers(
            env,
            log,
            decode=decode,
            kv_bytes_per_token=pre.model.kv_bytes_per_token(pre.kv_bits),
            link_bytes_per_s=fl.bytes_per_s_per_gpu * pre.tp,
            latency_s=fl.latency,
        )
        entry.listeners.append(link.sender)
        decode.listeners.append(link.receiver)
        entry.on_lost.append(link.prefill_lost)
        decode.on_lost.append(link.decode_lost)
        decode.on_exhausted.append(link.reject_waiting)
        decode.held_elsewhere.append(link.n_waiting)
    for spec, pool in zip(specs, pools, strict=False):  # other GPU types the pool falls back to
        if feed and spec.fallback:
            check_fallback(log, specs, spec, rejected if pool is entry else {})
            for fb in spec.fallback:
                supply, said[f"{spec.name}.fallback.{len(pool.flavors) - 1}"] = pool_supply(fb, streams, rng=pool.supply.rng)
                pool.flavors.append(Flavor(replica_factory(env, fb, log, streams), fb.setup.held_weight_bytes, supply))
    if budget is not None:  # every replica type of every pool counts against the platform's GPU budget
        for spec, pool in zip(specs, pools, strict=False):
            gpus = [spec.setup.gpu.name, *(fb.setup.gpu.name for fb in spec.fallback)]
            for k, (flavor, gpu) in enumerate(zip(pool.flavors, gpus, strict=True)):
                flavor.supply.attach(
                    budget, gpu, priority=priority, deployment=scenario.name or "", pool=pool, flavor=k, preempts=preempts
                )
    lane, floor, launch_dedicated = _batch_lane(env, scenario, specs, pools, trace, log, streams, replicas, batch_rate)
    lanes = [lane] if lane is not None else []
    hazards = []
    for spec, pool in zip(specs, pools, strict=False):
        capacity = spec.fleet.capacity
        if feed and spec.name != BATCH and capacity.any:  # (not in a capacity probe: it measures the replica)
            if capacity.failures is not None:
                _check_failures_outlast_start(capacity.failures.gpu_mtbf_hours, spec, pool.weight_bytes)
            spot_rate = 0.0
            if capacity.spot is not None:
                spot_rate = spot_rate_per_s(capacity.spot, spec.scenario.pricing, spec.setup.gpu.name)[0]
            hazards.append(
                Hazards(
                    env,
                    pool,
                    capacity,
                    tp=spec.setup.tp,
                    rng=pool_generator(streams, "hazards", spec.name),
                    reclaim_rate_per_s=spot_rate,
                )
            )
            for fb in spec.fallback if feed else ():
                spot = fb.fleet.capacity.spot
                fb_rate = 0.0 if spot is None else spot_rate_per_s(spot, fb.scenario.pricing, fb.setup.gpu.name)[0]
                hazards[-1].add_flavor(fb.setup.tp, fb_rate)
            if spec.fleet.max_gpus is not None:
                pool.quota = spec.fleet.max_gpus // spec.setup.tp
    for pool in pools:
        pool.listeners.extend(lanes)
        if lane is not None and lane.watch is not None:
            pool.listeners.append(lane.watch)
        pool.listeners.extend(extra)

    def per_replica() -> float:
        """One replica's saturated request rate on the trace's length mix (up to 2,000 of its requests, repeated to
        1,000 at least, as the batch lane measures its mix)."""
        mix = trace[["prompt_tokens", "output_tokens"]]
        mix = mix.iloc[:: max(1, len(mix) // 2000)]
        tokens_s = batch_rate(pd.concat([mix] * max(1, -(-1000 // max(1, len(mix)))), ignore_index=True))
        if not tokens_s or not len(mix):
            raise FleetsimError("fleet.autoscaler.requests_per_replica_s: give it (one replica's rate could not be measured)")
        return float(tokens_s) / float((mix["prompt_tokens"] + mix["output_tokens"]).mean())

    for i, (spec, pool) in enumerate(zip(specs, pools, strict=False)):
        if spec.name != BATCH:  # (a dedicated batch pool is launched by the lane)
            rate = per_replica if spec.role == COLOCATED else None  # (a prefill or decode replica: not measured)
            start_pool(env, pool, spec.fleet, floor=floor[i] if floor is not None else None, per_replica=rate)
    if launch_dedicated is not None:
        launch_dedicated()
    if feed:
        adapters = specs[0].lora is not None and "adapter" in trace.columns
        lane_add = lane.add if lane is not None else None
        delay = scenario.roofline.frontend_latency_s
        Feed(env, trace, log, entry.deliver, lane_add, hashes=specs[0].caching, adapters=adapters, delay_s=delay)
    rows: list[tuple[Any, ...]] = []
    waiting = None if link is None else (lambda: len(link.waiting))
    env.process(sample_timeline(env, pools, lanes, scenario.fleet.timeline_interval_s, rows, transfers_waiting=waiting))
    return Built(env, log, done, specs, pools, replicas, rows, lanes, link, hazards, said)  # (`said` read after the run)


def pool_generator(streams: RunStreams, name: str, pool: str) -> np.random.Generator:
    """The run's stream `name` for a pool: the stream itself for the entry pool, its sub-stream for the pool's kind
    (`STREAM`) otherwise (so adding a pool never changes another's draws)."""
    k = STREAM[pool]
    return streams.generator(name) if k is None else streams.sub_generator(name, k)


def pool_supply(
    spec: PoolSpec, streams: RunStreams, *, rng: np.random.Generator | None = None
) -> tuple[Supply, Callable[[], dict[str, Any]]]:
    """A pool's capacity classes (`sim.run.fleet.supply`) at its GPU's class prices, and its meta.json line (read
    after the run). `rng`: the launch-failure draws (default: the pool's `shortages` stream; a fallback GPU type
    shares its pool's)."""
    capacity, pricing, gpu = spec.fleet.capacity, spec.scenario.pricing, spec.setup.gpu.name
    prices = class_prices(pricing, gpu, spec.setup.usd_per_gpu_hour, spot=capacity.spot is not None)
    spot_rate = None if capacity.spot is None else spot_rate_per_s(capacity.spot, pricing, gpu)
    supply = Supply(
        tp=spec.setup.tp,
        reserved=spec.fleet.reserved_replicas,
        capacity=capacity,
        rng=rng if rng is not None else pool_generator(streams, "shortages", spec.name),
    )
    return supply, functools.partial(supply_meta, supply, prices, spot_rate)


def check_fallback(log: RequestLog, specs: list[PoolSpec], spec: PoolSpec, rejected: dict[int, str]) -> None:
    """A pool's fallback GPU types must serve every request its own GPU serves (a replica that cannot would hold it
    forever): the first request one cannot, with the reason, is an error naming the fallback."""
    i = specs.index(spec)
    base = rejections(log, specs) if spec is not specs[0] else rejected
    for k, fb in enumerate(spec.fallback):
        swapped = [fb if j == i else s for j, s in enumerate(specs)]
        extra = sorted(set(rejections(log, swapped)) - set(base))
        if extra:
            why = rejections(log, swapped)[extra[0]]
            where = "fleet.capacity" if spec.name == ENTRY else f"fleet.{spec.name}.capacity"
            raise FleetsimError(
                f"{where}.fallback.{k}: {fb.setup.tp}x {fb.setup.gpu.name} cannot serve {len(extra)} request(s) "
                f"{spec.setup.tp}x {spec.setup.gpu.name} serves (request {extra[0]}: {why}); choose a larger GPU or TP"
            )


def _batch_lane(
    env: simpy.Environment,
    scenario: Scenario,
    specs: list[PoolSpec],
    pools: list[Pool],
    trace: pd.DataFrame,
    log: RequestLog,
    streams: RunStreams,
    replicas: Replicas,
    batch_rate: Callable[[pd.DataFrame], float | None],
) -> tuple[BatchLane | None, list[Callable[[int], int]] | None, Callable[[], None] | None]:
    """The batch lane, when the trace holds batch-class requests (its settings: the scenario's `batch` block or the
    defaults), feeding the entry pool or a dedicated pool (appended to `pools`); with deadline scaling of a
    backfilled fleet, each pool's floor; for a dedicated pool, what starts its launcher (after the other pools)."""
    if not has_batch(trace):
        return None, None, None
    cfg = scenario.batch or BatchConfig()
    is_batch = trace["klass"].to_numpy() == "batch"
    guard = None
    if cfg.guard is not None and cfg.fleet == "backfill":  # a dedicated pool shares nothing with interactive work
        ttft = cfg.guard.ttft_ms if cfg.guard.ttft_ms is not None else scenario.slo.ttft_ms
        tpot = cfg.guard.tpot_ms if cfg.guard.tpot_ms is not None else scenario.slo.tpot_ms
        if ttft is None and tpot is None:
            raise FleetsimError("batch.guard: give ttft_ms or tpot_ms (or an slo: block) for the guard to hold")
        guard = (None if ttft is None else ttft / 1000, None if tpot is None else tpot / 1000)
    backfill = cfg.fleet == "backfill"
    if backfill and cfg.deadline_scaling and all(isinstance(s.fleet.autoscaler, FixedConfig) for s in specs):
        raise FleetsimError(
            "batch.deadline_scaling with fleet: backfill scales the online fleet: give fleet.autoscaler a policy with "
            "max_replicas (it is fixed), or use fleet: dedicated"
        )
    rate = None
    if cfg.deadline_scaling or (cfg.fleet == "dedicated" and cfg.dedicated.replicas == "auto"):
        # one replica saturated with the batch mix (repeated: a few requests would never queue)
        mix = trace.loc[is_batch, ["prompt_tokens", "output_tokens"]]
        rate = batch_rate(pd.concat([mix] * max(1, -(-1000 // len(mix))), ignore_index=True))
    fed_spec = specs[0] if backfill else specs[-1]
    if backfill:
        fed = pools[0]
    else:
        size, ceiling = _dedicated_size(cfg, rate, trace, fed_spec.setup.dp_group)
        fed = make_pool(env, fed_spec, log, streams, replicas, rejected=rejections(log, [fed_spec]), max_replicas=ceiling)
        pools.append(fed)
    lane = BatchLane(
        env,
        log,
        pool=fed,
        priority=trace["priority"].to_numpy(dtype=np.int64),
        hashes=trace["prefix_hash_ids"].to_numpy() if fed_spec.caching else None,
        adapters=trace["adapter"].to_numpy(dtype=np.int64) if fed_spec.lora is not None and "adapter" in trace.columns else None,
        deadline_at_s=trace["deadline_at_s"].to_numpy(dtype=np.float64),
        n_batch=int(is_batch.sum()),
        cap=cfg.max_per_replica or fed_spec.engine.max_num_seqs,
        guard=guard,
        guard_step=cfg.guard.step if cfg.guard is not None else 1,
        deadline_margin_s=cfg.deadline_margin_s,
        replica_tokens_per_s=rate,
        cold_start_s=fed_spec.fleet.lifecycle.expected_cold_start_s(fed_spec.setup.held_weight_bytes),
    )
    fed.feeders.append(lane)
    if guard is not None:
        assert cfg.guard is not None
        env.process(guard_loop(env, lane, cfg.guard.interval_s))
    if not backfill:
        start_at = float(trace["arrival_at_s"].to_numpy()[is_batch][0])
        interval = fed_spec.fleet.autoscaler.interval_s

        def launch() -> None:
            env.process(
                dedicated_loop(env, fed, lane, start_at=start_at, size=size, interval_s=interval, scaling=cfg.deadline_scaling)
            )

        return lane, None, launch
    if not cfg.deadline_scaling:
        return lane, None, None
    if len(pools) == 1:
        return lane, [lane.replicas_needed], None
    # a disaggregated fleet: the lane feeds the prefill pool and measures its rate per ready prefill replica (the
    # pair's, whichever side binds); the decode pool is asked for as many more in their current proportion
    prefill = pools[0]

    def decode_floor(n_ready: int) -> int:
        ask = lane.last_ask
        p = max(1, len(prefill.ready))
        return math.ceil(ask * max(n_ready, 1) / p) if ask else 0

    return lane, [lane.replicas_needed, decode_floor], None


def _dedicated_size(cfg: BatchConfig, rate: float | None, trace: pd.DataFrame, dp: int = 1) -> tuple[int, int]:
    """The dedicated pool's size at launch and its ceiling. `auto`: the batch tokens over one replica's saturated
    throughput for the batch mix times the time from the first submission to `deadline_margin_s` before the
    earliest deadline (an MoE model's DP ranks: whole groups of `dp`, as given or rounded up)."""
    ceiling = cfg.dedicated.max_replicas
    if dp > 1:
        for key, n in (("replicas", cfg.dedicated.replicas), ("max_replicas", ceiling)):
            if isinstance(n, int) and n % dp:
                raise FleetsimError(
                    f"batch.dedicated.{key}: an MoE model's DP ranks share its experts, so a pool holds whole groups of "
                    f"fleet.dp = {dp} ranks; give a multiple of {dp} (got {n})"
                )
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
    if not rate:
        raise FleetsimError("batch.dedicated.replicas: auto: no request of the batch mix can be served; give a replica count")
    size = max(1, math.ceil(tokens / (rate * window)))
    size = -(-size // dp) * dp
    if ceiling is not None:
        size = min(size, ceiling)
    return size, max(size, ceiling or size)
