"""The freeze phase: once the clock has stopped, the engine's and the fleet's state become records
(see `sim.result`): the requests and replicas frames and the run's `meta`. The only module besides
the build that reads engine and fleet objects after a run.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import Scenario
from sim.cost import ReplicaLife, state_seconds
from sim.engine.records import RequestLog
from sim.fleet.cluster import Fleet
from sim.roofline import RooflineSetup
from sim.states import STATUS_LABELS


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


def requests_frame(log: RequestLog) -> pd.DataFrame:
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
            "status": pd.Categorical.from_codes(log.status, categories=STATUS_LABELS),
        }
    )
    frame["reject_reason"] = pd.Series(log.reasons, dtype="string").reindex(frame.index)
    return frame


def replicas_frame(fleet: Fleet, log: RequestLog, horizon_s: float) -> pd.DataFrame:
    """One row per replica ever launched: lifecycle instants, seconds by state, the work it did."""
    routed = np.bincount(log.replica_id[log.replica_id >= 0], minlength=len(fleet.slots))
    rows = []
    for slot in fleet.slots:
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
                **{f"{k}_s": v for k, v in state_seconds(life).items()},
                "busy_before_drain_s": life.busy_before_drain_s,
                "prefill_busy_s": e.prefill_busy_s if e is not None else 0.0,
                "decode_busy_s": e.decode_busy_s if e is not None else 0.0,
                "flops": e.flops if e is not None else 0.0,
                "bytes": e.bytes if e is not None else 0.0,
                "n_steps": e.n_steps if e is not None else 0,
                "n_runs": e.n_runs if e is not None else 0,
                "kv_blocks": e.pool.n_blocks if e is not None else 0,
                "kv_peak_blocks": e.pool.peak_used if e is not None else 0,
                "requests": int(routed[slot.replica_id]),
            }
        )
    return pd.DataFrame(rows, columns=REPLICA_COLUMNS)


REPLICA_COLUMNS = [
    "replica_id",
    "provision_at_s",
    "loading_at_s",
    "ready_at_s",
    "drain_at_s",
    "released_at_s",
    "end_at_s",
    "cancelled",
    "pool",
    "provisioning_s",
    "loading_s",
    "busy_s",
    "idle_s",
    "draining_s",
    "busy_before_drain_s",
    "prefill_busy_s",
    "decode_busy_s",
    "flops",
    "bytes",
    "n_steps",
    "n_runs",
    "kv_blocks",
    "kv_peak_blocks",
    "requests",
]


def run_meta(
    scenario: Scenario,
    setup: RooflineSetup,
    base_dir: Path,
    *,
    n_blocks: int,
    budget: int,
    n_trace: int,
    horizon_s: float,
    n_events: int,
) -> dict[str, Any]:
    """The run's `meta`: the scenario as run, what it resolved to, the clock's end; capacity and wall
    seconds are filled in by `simulate`."""
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
            "kv_bytes_per_token_replica": setup.kv_bytes_per_token,
            "kv_blocks_per_replica": n_blocks,
            "max_num_batched_tokens": budget,
            "effective_flops_per_s_per_gpu": setup.effective_flops_per_s,
            "effective_hbm_bw_bytes_per_s_per_gpu": setup.effective_hbm_bw_bytes_per_s,
            "usd_per_gpu_hour": setup.usd_per_gpu_hour,
            "weight_load_s": scenario.fleet.lifecycle.weight_load_s(setup.weight_bytes),
            "trace_requests": n_trace,
        },
        "horizon_s": horizon_s,
        "n_events": n_events,
        "capacity": {"measured": False, "max_tokens_per_s_per_replica": None, "rel_se": None},
        "wall_s": {"build": 0.0, "simulate": 0.0, "capacity": 0.0, "capacity_cached": False, "write": None},
    }
