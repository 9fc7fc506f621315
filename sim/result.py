"""The result of a run, in memory: records, the fleet, the timeline, and the summary derived from them
(vLLM-keyed metrics, billing and cost, utilization). `report.write_run` turns it into a run folder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import Scenario
from sim.cost import ReplicaLife, api_price, attribute_cost, fleet_bill, state_seconds
from sim.engine.records import STATUS_NAMES, RequestLog
from sim.engine.replica import Replica
from sim.engine.step_time import RooflineStepTime
from sim.fleet.cluster import Fleet
from sim.metrics import summarize
from sim.roofline import RooflineSetup


@dataclass
class SimResult:
    scenario: Scenario
    setup: RooflineSetup
    trace: pd.DataFrame
    log: RequestLog
    fleet: Fleet
    n_events: int
    wall_s: float
    horizon_s: float
    timeline: pd.DataFrame
    base_dir: Path = Path(".")
    max_tokens_per_s: float | None = None  # one replica's saturated throughput for this length mix

    @property
    def replicas(self) -> list[Replica]:
        """The engines of every replica that became ready, in id order."""
        return [slot.engine for slot in self.fleet.slots if slot.engine is not None]

    def lives(self) -> list[ReplicaLife]:
        out = []
        for slot in self.fleet.slots:
            end = slot.released_at_s if not math.isnan(slot.released_at_s) else self.horizon_s
            busy = slot.engine.busy_s_at(end) if slot.engine is not None else 0.0
            drained = not math.isnan(slot.drain_at_s)
            loading_at = slot.loading_at_s if not slot.cancelled or slot.loading_at_s <= end else math.nan
            out.append(
                ReplicaLife(
                    slot.provision_at_s,
                    loading_at,
                    slot.ready_at_s,
                    slot.drain_at_s,
                    end,
                    busy,
                    slot.busy_at_drain_s if drained else busy,
                )
            )
        return out

    def summary(self) -> dict[str, Any]:
        sc, setup = self.scenario, self.setup
        out = summarize(self.log, slo=sc.slo.as_dict() or None)
        bill = fleet_bill(
            self.lives(),
            horizon_s=self.horizon_s,
            tp=setup.tp,
            usd_per_gpu_hour=setup.usd_per_gpu_hour,
            reserved_usd_per_gpu_hour=sc.pricing.reserved_usd_per_gpu_hour,
            reserved_replicas=sc.fleet.reserved_replicas,
            granularity_s=sc.pricing.billing_granularity_s,
            minimum_s=sc.pricing.billing_minimum_s,
        )
        engines = self.replicas
        billed = bill["billed_gpu_seconds"]
        busy_gpu_s = bill["gpu_seconds_by_state"]["busy"]
        out |= bill
        out |= attribute_cost(
            bill["cost_usd"],
            prefill_busy_s=sum(e.prefill_busy_s for e in engines),
            decode_busy_s=sum(e.decode_busy_s for e in engines),
            prompt_tokens=out["total_input_tokens"],
            output_tokens=out["total_output_tokens"],
            api=api_price(sc.pricing.compare_api),
        )
        flops, n_bytes = sum(e.flops for e in engines), sum(e.bytes for e in engines)
        known = isinstance(engines[0].step_time, RooflineStepTime) if engines else False
        out["gpu_time_utilization"] = busy_gpu_s / billed if billed else None
        out["mfu"] = flops / (setup.peak_flops_per_s * billed) if billed and known else None
        out["mbu"] = n_bytes / (setup.gpu.hbm_bw_bytes_per_s * billed) if billed and known else None
        served = out["total_input_tokens"] + out["total_output_tokens"]
        capacity = None if self.max_tokens_per_s is None else self.max_tokens_per_s * billed / setup.tp
        out["max_tokens_per_s_per_replica"] = self.max_tokens_per_s
        out["throughput_utilization"] = served / capacity if capacity else None
        out["replicas_max"] = int(self.timeline["replicas_ready"].max()) if len(self.timeline) else len(engines)
        out["replicas_launched"] = len(self.fleet.slots)
        out["n_steps"] = sum(e.n_steps for e in engines)
        out["n_events"] = self.n_events
        out["kv_blocks"] = engines[0].pool.n_blocks if engines else 0
        out["kv_peak_blocks"] = max((e.pool.peak_used for e in engines), default=0)
        return out

    def resolved(self) -> dict[str, Any]:
        """What the scenario's defaults and catalogs resolved to, for the run folder."""
        s = self.setup
        engines = self.replicas
        return {
            "model_params": s.model.n_params,
            "weight_bytes": s.weight_bytes,
            "kv_bytes_per_token_replica": s.kv_bytes_per_token,
            "kv_blocks_per_replica": engines[0].pool.n_blocks if engines else None,
            "max_num_batched_tokens": engines[0].limits.max_num_batched_tokens if engines else None,
            "effective_flops_per_s_per_gpu": s.effective_flops_per_s,
            "effective_hbm_bw_bytes_per_s_per_gpu": s.effective_hbm_bw_bytes_per_s,
            "usd_per_gpu_hour": s.usd_per_gpu_hour,
            "weight_load_s": s.weight_bytes / self.scenario.fleet.lifecycle.load_bw_bytes_per_s(),
            "trace_requests": len(self.trace),
        }

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
        if Path(data["model"]).suffix == ".json":
            data["model"] = absolute(data["model"])
        return data

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

    def replicas_frame(self) -> pd.DataFrame:
        rows = []
        for slot, life in zip(self.fleet.slots, self.lives(), strict=True):
            states = state_seconds(life)
            rows.append(
                {
                    "replica_id": slot.replica_id,
                    "provision_at_s": slot.provision_at_s,
                    "loading_at_s": life.loading_at_s,
                    "ready_at_s": slot.ready_at_s,
                    "drain_at_s": slot.drain_at_s,
                    "released_at_s": slot.released_at_s,
                    "cancelled": slot.cancelled,
                    **{f"{k}_s": v for k, v in states.items()},
                    "requests": int(np.sum(self.log.replica_id == slot.replica_id)),
                }
            )
        return pd.DataFrame(rows)
