"""The freeze phase: once the clock has stopped, the engine's and the fleet's state become records
(see `sim.results.result`, in the one schema of `sim.schema`): the requests, replicas and timeline frames, the gap
record and the run's `meta`. The only module besides the build that reads engine and fleet objects after a
run.
"""

from __future__ import annotations

import functools
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.physics.roofline import RooflineSetup
from sim.results.cost import ReplicaLife, state_seconds
from sim.results.metrics import GapDistribution
from sim.results.result import SimResult
from sim.run.engine.kv import PrefixCachingKv
from sim.run.engine.records import REJECTED, RequestLog
from sim.run.fleet.cluster import Replicas
from sim.run.pools import Built, PoolSpec
from sim.run.store import blocks
from sim.scenario.config import Scenario
from sim.schema import CATEGORIES, KLASSES, REPLICA_COLUMNS, REQUEST_COLUMNS, TIMELINE_COLUMNS


@functools.cache
def _version() -> str:
    try:
        return version("fleetsim")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def scenario_as_run(scenario: Scenario, base_dir: Path) -> dict[str, Any]:
    """The scenario with defaults filled in and file paths made absolute (plain data)."""
    data = scenario.model_dump(mode="json")

    def absolute(path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else (base_dir / p).resolve())

    trace = data.get("trace")
    if isinstance(trace, str):
        data["trace"] = absolute(trace)
    elif isinstance(trace, dict) and "file" in trace:
        trace["file"] = absolute(trace["file"])
    if data.get("gpu_catalog"):
        data["gpu_catalog"] = absolute(data["gpu_catalog"])
    if Path(data["model"]).suffix == ".json":
        data["model"] = absolute(data["model"])
    return data


def requests_frame(
    log: RequestLog,
    trace: pd.DataFrame | None = None,
    link_records: dict[str, np.ndarray] | None = None,
    rows: slice = slice(None),
) -> pd.DataFrame:
    """The requests record in the schema's columns: the log's instants and counts; the trace's class, priority, job
    and deadline (interactive, 0, none, none where it has none); prefix caching's and the link's columns (null and
    -1 without them). `rows`: those requests only (a stored run writes its records a row group at a time)."""
    lo, hi, _ = rows.indices(len(log))
    rows = slice(lo, hi)
    n = hi - lo
    columns = trace.columns if trace is not None else ()

    def from_trace(name: str, dtype: type, default: object) -> np.ndarray:
        if trace is not None and name in columns:
            values: np.ndarray = trace[name].iloc[rows].to_numpy(dtype=dtype)
            return values
        return np.full(n, default, dtype=dtype)

    reasons = np.full(n, None, dtype=object)
    for idx, reason in log.reasons.items() if n == len(log) else _reasons_in(log, lo, hi):
        reasons[idx - lo] = reason
    if "klass" in columns:
        assert trace is not None
        klass = pd.Categorical(trace["klass"].iloc[rows].to_numpy(), categories=KLASSES)
    else:
        klass = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=KLASSES)
    if trace is not None and "prefix_hash_ids" in columns:
        counts = trace["prefix_hash_ids"].iloc[rows].map(lambda h: 0 if h is None else len(h)).to_numpy(dtype=np.int64)
        prefix_blocks = pd.arrays.IntegerArray(counts, np.zeros(n, dtype=bool))
    else:
        prefix_blocks = pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
    links = {k: v[rows] for k, v in (link_records or {}).items()}
    data = {
        "request_id": np.arange(lo, hi, dtype=np.int64),
        "arrival_at_s": log.arrival_at_s[rows],
        "scheduled_at_s": log.scheduled_at_s[rows],
        "first_token_at_s": log.first_token_at_s[rows],
        "completed_at_s": log.completed_at_s[rows],
        "prompt_tokens": log.prompt_tokens[rows],
        "output_tokens": log.output_tokens[rows],
        "n_preemptions": log.n_preemptions[rows],
        "replica_id": log.replica_id[rows],
        "status": pd.Categorical.from_codes(log.status[rows], categories=CATEGORIES["status"]),
        "reject_reason": pd.array(reasons, dtype="string"),
        "klass": klass,
        "priority": from_trace("priority", np.int64, 0),
        "job_id": pd.array(from_trace("job_id", object, None), dtype="string"),
        "deadline_at_s": from_trace("deadline_at_s", np.float64, np.nan),
        "cached_tokens": log.cached_tokens[rows],
        "prefix_blocks": prefix_blocks,
        "adapter": from_trace("adapter", np.int64, -1),
        "decode_replica_id": links.get("decode_replica_id", np.full(n, -1, dtype=np.int32)),
        "transfer_start_at_s": links.get("transfer_start_at_s", np.full(n, np.nan)),
        "transfer_end_at_s": links.get("transfer_end_at_s", np.full(n, np.nan)),
    }
    frame = pd.DataFrame(data)
    wrong = {c: t for c, t in REQUEST_COLUMNS.items() if t != "category" and str(frame[c].dtype) != t}
    return frame.astype(wrong) if wrong else frame


def _reasons_in(log: RequestLog, lo: int, hi: int) -> list[tuple[int, str]]:
    """The rejected requests in [lo, hi) with their reasons."""
    return [(i, log.reasons[i]) for i in (np.flatnonzero(log.status[lo:hi] == REJECTED) + lo).tolist()]


def replicas_frame(
    replicas: Replicas,
    log: RequestLog,
    horizon_s: float,
    decode_replica_id: np.ndarray | None = None,
    kinds: dict[tuple[str, int], tuple[str, int]] | None = None,
) -> pd.DataFrame:
    """One row per replica ever launched, of every pool: lifecycle instants, seconds by state, the work it did.
    `kinds`: (pool, flavor) -> (GPU, TP) of each replica type (`Pool.flavors`)."""
    slots = replicas.slots
    routed = np.zeros(len(slots), dtype=np.int64)
    for ids in (log.replica_id, decode_replica_id):  # (a decode replica served the requests transferred to it)
        if ids is not None:
            for _, (part,) in blocks(1 << 20, ids):  # (bounded temporaries; a stored run's pages handed back)
                routed += np.bincount(part[part >= 0], minlength=len(slots))[: len(slots)]
    rows = []
    for slot in slots:
        end = slot.released_at_s if not math.isnan(slot.released_at_s) else horizon_s
        e = slot.engine
        busy = e.busy_s_at(end) if e is not None else 0.0
        drained = not math.isnan(slot.drain_at_s)
        loading_at = slot.loading_at_s if not slot.cancelled or slot.loading_at_s <= end else math.nan
        life = ReplicaLife(
            slot.provision_at_s,
            loading_at,
            slot.ready_at_s,
            slot.drain_at_s,
            end,
            busy,
            slot.busy_at_drain_s if drained else busy,
        )
        rows.append(
            {
                "replica_id": slot.replica_id,
                "provision_at_s": slot.provision_at_s,
                "loading_at_s": loading_at,
                "ready_at_s": slot.ready_at_s,
                "drain_at_s": slot.drain_at_s,
                "released_at_s": slot.released_at_s,
                "end_at_s": end,
                "cancelled": slot.cancelled,
                "pool": slot.pool,
                "capacity": slot.capacity,
                "gpu": kinds[(slot.pool, slot.flavor)][0] if kinds else "",
                "tp": kinds[(slot.pool, slot.flavor)][1] if kinds else 0,
                **{f"{k}_s": v for k, v in state_seconds(life).items()},
                "busy_before_drain_s": life.busy_before_drain_s,
                "prefill_busy_s": e.prefill_busy_s if e is not None else 0.0,
                "decode_busy_s": e.decode_busy_s if e is not None else 0.0,
                "flops": e.flops if e is not None else 0.0,
                "bytes": e.bytes if e is not None else 0.0,
                "n_steps": e.n_steps if e is not None else 0,
                "n_runs": e.n_runs if e is not None else 0,
                "kv_blocks": e.kv.n_blocks if e is not None else 0,
                "kv_peak_blocks": e.kv.peak_used if e is not None else 0,
                "requests": int(routed[slot.replica_id]),
                "verifies": e.spec_counts()[0] if e is not None else 0,
                "verify_tokens": e.spec_counts()[1] if e is not None else 0,
                "lora_loads": e.kv.lora_counts()[0] if e is not None else 0,
                "lora_load_s": e.kv.lora_counts()[1] if e is not None else 0.0,
                "interrupted": slot.interrupted,
                "woke": slot.woke,
                "slept": slot.slept,
                "sleep_s": slot.sleep_s,
                "requeued": slot.requeued,
                "tokens_lost": slot.tokens_lost,
                "lost_s": slot.lost_s,
            }
        )
    return pd.DataFrame({name: np.asarray([row[name] for row in rows], dtype=dtype) for name, dtype in REPLICA_COLUMNS.items()})


def timeline_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """The timeline's samples, a column at a time in the schema's types."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(TIMELINE_COLUMNS)
    return pd.DataFrame(
        {name: np.asarray(col, dtype=dtype) for (name, dtype), col in zip(TIMELINE_COLUMNS.items(), columns, strict=True)}
    )


def pool_meta(spec: PoolSpec) -> dict[str, Any]:
    """A pool's line in `meta.pools`: its replica type and price."""
    setup = spec.setup
    return {
        "role": spec.role,
        "gpu": setup.gpu.name,
        "tp": setup.tp,
        "usd_per_gpu_hour": setup.usd_per_gpu_hour,
        "peak_flops_per_s_per_gpu": setup.peak_flops_per_s,
        "hbm_bw_bytes_per_s_per_gpu": setup.gpu.hbm_bw_bytes_per_s,
        "kv_blocks_per_replica": spec.n_blocks,
        "max_num_batched_tokens": spec.budget,
        "engine_policy": spec.engine.policy,
        "reserved_replicas": spec.fleet.reserved_replicas,
        "supply": None,  # its capacity classes (a disaggregated fleet's pools; a colocated fleet's: meta.supply)
        "fallback": [pool_meta(fb) for fb in spec.fallback],  # its other GPU types (`fleet.capacity.fallback`), in order
    }


def run_meta(
    scenario: Scenario,
    setup: RooflineSetup,
    base_dir: Path,
    *,
    specs: list[PoolSpec],
    n_trace: int,
    horizon_s: float,
    n_events: int,
) -> dict[str, Any]:
    """The run's `meta`: the scenario as run, what it resolved to, its pools, the clock's end; capacity and wall
    seconds are filled in by `simulate`."""
    entry = specs[0]
    return {
        "fleetsim_version": _version(),
        "name": scenario.name or (Path(scenario.source).stem if scenario.source else None),
        "seed": scenario.seed,
        "scenario": scenario_as_run(scenario, base_dir),
        "model": setup.model.name,
        "gpu": setup.gpu.name,
        "tp": setup.tp,
        "engine_policy": scenario.engine.policy,
        "step_time": scenario.engine.step_time.kind,
        "usd_per_gpu_hour": setup.usd_per_gpu_hour,
        "peak_flops_per_s_per_gpu": setup.peak_flops_per_s,
        "hbm_bw_bytes_per_s_per_gpu": setup.gpu.hbm_bw_bytes_per_s,
        "resolved": {
            "model_params": setup.model.n_params,
            "weight_bytes": setup.weight_bytes,
            "held_weight_bytes": setup.held_weight_bytes,  # on a replica's GPUs (a pipeline's engine: its heaviest stage's)
            "kv_bytes_per_token_replica": setup.kv_bytes_per_token,
            "kv_blocks_per_replica": entry.n_blocks,
            "max_num_batched_tokens": entry.budget,
            "effective_flops_per_s_per_gpu": setup.effective_flops_per_s,
            "effective_hbm_bw_bytes_per_s_per_gpu": setup.effective_hbm_bw_bytes_per_s,
            "usd_per_gpu_hour": setup.usd_per_gpu_hour,
            "weight_load_s": scenario.fleet.lifecycle.weight_load_s(setup.held_weight_bytes),
            "trace_requests": n_trace,
        },
        "pools": {spec.name: pool_meta(spec) for spec in specs},
        "link": None,
        "prefix_cache": None,
        "lora": None,
        "without_batch": None,
        "horizon_s": horizon_s,
        "n_events": n_events,
        "capacity": {"measured": False, "max_tokens_per_s_per_replica": None, "tokens_per_gpu_s": None, "rel_se": None},
        "wall_s": {"build": 0.0, "simulate": 0.0, "capacity": 0.0, "capacity_cached": False, "write": None},
    }


def freeze(built: Built, scenario: Scenario, setup: RooflineSetup, base_dir: Path, trace: pd.DataFrame) -> SimResult:
    """The run's records, once its clock has stopped."""
    meta, links, replicas, timeline = freeze_small(built, scenario, setup, base_dir, trace)
    return SimResult(
        requests=requests_frame(built.log, trace, links),
        replicas=replicas,
        timeline=timeline,
        itl=GapDistribution.from_arrays(**built.log.itl.arrays()),
        meta=meta,
    )


def freeze_small(
    built: Built, scenario: Scenario, setup: RooflineSetup, base_dir: Path, trace: pd.DataFrame
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None, pd.DataFrame, pd.DataFrame]:
    """The records that do not grow with the requests: meta, the link's per-request columns (for `requests_frame`),
    the replicas and the timeline."""
    env, log = built.env, built.log
    meta = run_meta(
        scenario, setup, base_dir, specs=built.specs, n_trace=len(trace), horizon_s=env.now, n_events=env.events_processed()
    )
    link = built.link
    links = None
    if link is not None:
        links = {
            "decode_replica_id": link.decode_replica_id,
            "transfer_start_at_s": link.transfer_start_at_s,
            "transfer_end_at_s": link.transfer_end_at_s,
        }
        fl = scenario.fleet.link
        meta["link"] = {
            "bytes_per_s_per_gpu": fl.bytes_per_s_per_gpu,
            "latency_s": fl.latency,
            "peak_transfers_waiting": link.peak_waiting,
        }
    kvs = [s.engine.kv for s in built.replicas.slots if s.engine is not None and isinstance(s.engine.kv, PrefixCachingKv)]
    if any(spec.caching for spec in built.specs):
        meta["prefix_cache"] = {
            "hash_block_tokens": next(spec.engine.prefix_hash_block_tokens for spec in built.specs if spec.caching),
            "prefill_tokens_saved": int(log.prefill_saved_tokens),
            "evicted_entries": sum(kv.cache.evicted for kv in kvs),
            "pinned_at_end": sum(kv.pins() for kv in kvs),
        }
    lora_spec = next((spec for spec in built.specs if spec.lora is not None), None)
    if lora_spec is not None and lora_spec.lora is not None:
        cfg, c = lora_spec.engine.lora, lora_spec.lora
        assert cfg is not None
        named = trace["adapter"].to_numpy() if "adapter" in trace.columns else np.zeros(0, dtype=np.int64)
        meta["lora"] = {
            "max_loras": cfg.max_loras,
            "max_lora_rank": cfg.max_lora_rank,
            "max_cpu_loras": cfg.cpu_loras,
            "target_modules": cfg.target_modules,
            "adapter_bytes": c.adapter_bytes,
            "slot_bytes_per_gpu": c.slot_bytes / lora_spec.setup.tp,
            "load_s": c.load_s,
            "host_to_gpu_s": c.copy_s,
            "adapters_in_trace": int(np.unique(named[named >= 0]).size),
            "requests_with_adapter": int((named >= 0).sum()),
        }
    if built.hazards:  # given instants with no ready replica to hit
        meta["hazards"] = {"missed_instants": sum(h.missed for h in built.hazards)}
    for name, said in built.supply_meta.items():  # (a fallback's: "<pool>.fallback.<k>")
        pool, _, k = name.partition(".fallback.")
        (meta["pools"][pool]["fallback"][int(k)] if k else meta["pools"][pool])["supply"] = said()
    entry = built.specs[0].name
    if entry in built.supply_meta:
        meta["supply"] = meta["pools"][entry]["supply"]
    kinds = {(spec.name, k): (s.setup.gpu.name, s.setup.tp) for spec in built.specs for k, s in enumerate((spec, *spec.fallback))}
    replicas = replicas_frame(built.replicas, log, env.now, None if link is None else link.decode_replica_id, kinds)
    return meta, links, replicas, timeline_frame(built.rows)
