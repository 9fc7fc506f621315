"""The record schema: every column of every record a run leaves, with its dtype, whatever features ran.

A feature that is off leaves its columns null (NaN, <NA>) or at their documented default, never missing, so
readers never test whether a column exists. `docs/metrics.md` documents each column and summary key; a test
holds the two together (tests/test_core_records.py).
"""

from __future__ import annotations

from enum import IntEnum

KLASSES = ("interactive", "batch")  # request classes


class RequestStatus(IntEnum):
    NOT_ARRIVED = 0
    IN_FLIGHT = 1
    COMPLETED = 2
    REJECTED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


STATUS_LABELS: list[str] = [s.label for s in RequestStatus]  # index = code, as in `requests.status`

# requests.parquet: one row per request (pandas dtypes; "category" columns list their categories below)
REQUEST_COLUMNS: dict[str, str] = {
    "request_id": "int64",
    "arrival_at_s": "float64",
    "scheduled_at_s": "float64",
    "first_token_at_s": "float64",
    "completed_at_s": "float64",
    "prompt_tokens": "int64",
    "output_tokens": "int64",
    "n_preemptions": "int32",
    "replica_id": "int32",
    "status": "category",
    "reject_reason": "string",
    # request classes and batch jobs (interactive, priority 0, no job, no deadline when the trace has none)
    "klass": "category",
    "priority": "int64",
    "job_id": "string",
    "deadline_at_s": "float64",
    # prefix caching (NaN / <NA> without it)
    "cached_tokens": "float64",
    "prefix_blocks": "Int64",
    # LoRA: the adapter the trace names (-1: the base model, or a trace without adapters)
    "adapter": "int64",
    # disaggregation (-1 / NaN without a transfer)
    "decode_replica_id": "int32",
    "transfer_start_at_s": "float64",
    "transfer_end_at_s": "float64",
}
CATEGORIES = {"status": STATUS_LABELS, "klass": list(KLASSES)}

# replicas.parquet: one row per replica ever launched
REPLICA_COLUMNS: dict[str, str] = {
    "replica_id": "int64",
    "provision_at_s": "float64",
    "loading_at_s": "float64",
    "ready_at_s": "float64",
    "drain_at_s": "float64",
    "released_at_s": "float64",
    "end_at_s": "float64",
    "cancelled": "bool",
    "pool": "object",
    "capacity": "object",  # its capacity class: reserved, on_demand or spot (`sim.run.fleet.supply`)
    "gpu": "object",  # its GPU type: the pool's, or a fallback's (`fleet.capacity.fallback`)
    "tp": "int64",  # its GPUs
    "provisioning_s": "float64",
    "loading_s": "float64",
    "busy_s": "float64",
    "idle_s": "float64",
    "draining_s": "float64",
    "busy_before_drain_s": "float64",
    "prefill_busy_s": "float64",
    "decode_busy_s": "float64",
    "flops": "float64",
    "bytes": "float64",
    "n_steps": "int64",
    "n_runs": "int64",
    "kv_blocks": "int64",
    "kv_peak_blocks": "int64",
    "requests": "int64",
    "verifies": "int64",
    "verify_tokens": "int64",
    "lora_loads": "int64",  # LoRA adapters loaded into its GPU slots, and the seconds those loads stalled its steps
    "lora_load_s": "float64",
    # capacity that can be lost (fleet.capacity): "" or how it was lost, and what it held then
    "interrupted": "object",
    "requeued": "int64",
    "tokens_lost": "int64",
    "lost_s": "float64",
    # sleep mode (fleet.lifecycle.sleep): a sleeping replica woken (its loading: the wake), or one that fell asleep at its
    # end (its last draining seconds: its weights offloaded)
    "woke": "bool",
    "slept": "bool",
    "sleep_s": "float64",
}

# timeline.parquet: the fleet sampled every `fleet.timeline_interval_s`
TIMELINE_COLUMNS: dict[str, str] = {
    "t_s": "float64",
    "replicas_provisioning": "int64",
    "replicas_loading": "int64",
    "replicas_ready": "int64",
    "replicas_draining": "int64",
    "waiting": "int64",
    "running": "int64",
    "kv_use": "float64",
    "arrival_rate_per_s": "float64",
    "busy_fraction": "float64",
    "kv_transfers_waiting": "int64",
}

LATENCY = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "median", "std", "p90", "p99")


# summary.json: the same keys for every run (null where a feature is off or a figure is undefined)
SUMMARY_KEYS: tuple[str, ...] = (
    "completed",
    "rejected",
    "in_flight",
    "duration",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "request_goodput",
    "slo_attainment",
    "n_preemptions",
    *(f"{stat}_{metric}_ms" for metric in LATENCY for stat in STATS),
    "billed_gpu_seconds",
    "gpu_seconds_by_state",
    "cost_usd",
    "usd_per_1k_tokens",
    "usd_per_1k_prompt_tokens",
    "usd_per_1k_completion_tokens",
    "api",
    "api_usd_for_same_tokens",
    "cost_vs_api",
    "gpu_time_utilization",
    "mfu",
    "mbu",
    "max_tokens_per_s_per_replica",
    "capacity_tokens_per_gpu_s",
    "throughput_utilization",
    "throughput_utilization_rel_se",
    "replicas_max",
    "replicas_launched",
    "replicas_woken",
    "replicas_failed",
    "replicas_reclaimed",
    "requests_requeued",
    "tokens_recomputed",
    "gpu_seconds_lost",
    "cost_by_capacity",
    "launches_failed",
    "availability",
    "without_losses",
    "n_steps",
    "n_events",
    "kv_blocks",
    "kv_peak_blocks",
    "by_class",
    "by_pool",
    "by_gpu",
    "by_job",
    "batch_cost",
    "kv_transfers",
    *(f"{stat}_{what}_ms" for what in ("transfer_wait", "transfer") for stat in ("mean", "median", "p99")),
    "prefix_cached_tokens",
    "prefix_hit_rate_tokens",
    "prefix_hit_rate_blocks",
    "prefill_tokens_saved",
    "spec_tokens_per_verify_step",
    "lora_loads",
    "lora_load_s",
    "sleep_wake_gpu_seconds",
    "scenario",
    "fleet",
)
