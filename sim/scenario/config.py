"""Scenario configuration: YAML in, frozen validated models out, one clear error otherwise.

A scenario names a model, a GPU and TP degree (`fleet`), a trace (a file or a synthetic generator
block), the serving engine (`engine`), the roofline's assumptions (`roofline`, optionally starting
from a bundled preset such as `seed`), prices (`pricing`) and SLOs (`slo`). Blocks are
nested frozen pydantic models that reject unknown keys, so later parts of the simulator (engine,
router, autoscaler, lifecycle, slo) extend the schema by adding blocks, not by loosening it.
Paths inside a scenario are relative to the scenario file. This module is the schema only: turning
names into specs, the roofline's numbers and the checks that a model fits are the build phase
(`sim/scenario/resolve.py`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, field_validator, model_validator

from sim.errors import FleetsimError, _short, from_validation_error, unknown_name
from sim.physics.prices import capacity_providers, load_api_prices
from sim.policies.autoscale import AutoscalerConfig, FixedConfig
from sim.policies.lifecycle import LifecycleConfig
from sim.spec import (
    MAX_BILLING_S,
    MAX_COUNT,
    MAX_FRONTEND_S,
    MAX_HW_RATE,
    MAX_OVERHEAD_S,
    MAX_REPLICAS,
    MAX_SEED,
    MAX_STEP_OVERHEAD_S,
    MAX_TOKENS,
    MAX_USD_PER_GPU_HOUR,
    MIN_HW_RATE,
    Frozen,
    IntervalS,
)
from sim.workload.jobs import BatchJob
from sim.workload.synthetic import SyntheticSpec
from sim.workload.transforms import TraceFile, swap_trace_file, trace_note
from sim.yaml_input import check_kind, load_value, read_yaml

DEFAULT_API = "gpt-3.5-turbo-2023-07"


def _unsigned_zero(v: float) -> float:
    return v + 0.0  # (-0.0 -> 0.0: a price given as -0.0 billed as "$-0")


# a price in USD per GPU-hour: within [0, MAX_USD_PER_GPU_HOUR], a zero unsigned
Price = Annotated[float, Field(ge=0, le=MAX_USD_PER_GPU_HOUR), AfterValidator(_unsigned_zero)]


class GpuOverride(Frozen):
    """Per-GPU corrections to the catalog, in the catalog's units."""

    bf16_tflops: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    fp8_tflops: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    fp4_tflops: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    hbm_gb: float | None = Field(default=None, gt=0, le=MAX_HW_RATE)
    hbm_bw_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    interconnect_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    allreduce_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    allreduce_latency_s: float | None = Field(default=None, ge=0, le=MAX_OVERHEAD_S)
    mfu: float | None = Field(default=None, gt=0, le=1)
    mbu: float | None = Field(default=None, gt=0, le=1)
    layer_overhead_s: float | None = Field(default=None, ge=0, le=MAX_OVERHEAD_S)
    overlap: float | None = Field(default=None, ge=0, le=1)
    usd_per_gpu_hour: Price | None = None


class RooflineConfig(Frozen):
    """Assumptions of the step-time model. Unset mfu, mbu, layer_overhead_s and overlap take the GPU
    catalog's values (a `gpu_overrides` entry for the GPU wins over the block-wide value)."""

    preset: str | None = None  # the bundled preset these values started from, if any
    description: str = ""
    weight_bits: Literal[4, 8, 16, 32] | None = None  # None: as the checkpoint ships (its quantization_config)
    kv_bits: Literal[8, 16, 32] = 16
    activation_bits: Literal[8, 16, 32] = 16
    compute_dtype: Literal["bf16", "fp8", "fp4"] | None = None  # None: fp8 for a checkpoint shipped in FP8 on a GPU with FP8
    mfu: float | None = Field(default=None, gt=0, le=1)
    mbu: float | None = Field(default=None, gt=0, le=1)
    attention: bool = True
    comm: bool = True
    logits: Literal["sampled", "every_token"] = "sampled"  # where the LM head runs (every_token: the seed's 2P per token)
    step_overhead_s: float = Field(
        default=0.0, ge=0, le=MAX_STEP_OVERHEAD_S
    )  # fixed seconds per step (scheduler, sampling on the host)
    # host seconds per sequence a step schedules that the GPU waits for (an engine loop without async scheduling)
    seq_overhead_s: float = Field(default=0.0, ge=0, le=MAX_OVERHEAD_S)
    # seconds a request spends in the serving stack outside the engine: the HTTP server, tokenization, the hop to the
    # engine and its first token's way back to the client (vLLM's API server process, the network). Each request
    # reaches the engine this much after its arrival: TTFT and E2E grow by it, TPOT does not
    frontend_latency_s: float = Field(default=0.0, ge=0, le=MAX_FRONTEND_S)
    layer_overhead_s: float | None = Field(default=None, ge=0, le=MAX_OVERHEAD_S)  # fixed seconds per layer per step
    overlap: float | None = Field(default=None, ge=0, le=1)  # 1: max(compute, memory); 0: their sum
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    memory_reserve_gb: float = Field(default=0.0, ge=0, le=MAX_HW_RATE)
    # the KV cache: "vllm" sizes it as vLLM's memory profiling does (the device's reported total, less the weights,
    # the profiled activation peak, non-torch memory and CUDA graphs); "reserve": the datasheet memory less the weights
    kv_memory: Literal["vllm", "reserve"] = "vllm"
    gpu_overrides: dict[str, GpuOverride] = Field(default_factory=dict)

    @field_validator("gpu_overrides", mode="before")
    @classmethod
    def _gpu_names(cls, v: Any) -> Any:
        """GPU names as the catalog looks them up, case aside (`H100-SXM` was checked so, then looked up as given: its
        overrides silently unapplied)."""
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        given: dict[Any, Any] = {}
        for name, body in v.items():
            key = _gpu_key(name)
            if key in out:
                raise ValueError(f"GPU {key!r} is given twice (as {given[key]!r} and {name!r})")
            out[key], given[key] = body, name
        return out


def _gpu_key(name: Any) -> Any:
    """A GPU's name as the catalog keys it (case and surrounding spaces aside)."""
    return name.strip().lower() if isinstance(name, str) else name


class StepTimeConfig(Frozen):
    """`roofline` (default) or `constant`: fixed seconds per prompt token and per decode step."""

    kind: Literal["roofline", "constant"] = "roofline"
    prefill_s_per_token: float = Field(default=0.0, ge=0, le=MAX_STEP_OVERHEAD_S)
    decode_step_s: float | None = Field(default=None, gt=0, le=MAX_STEP_OVERHEAD_S)

    @model_validator(mode="after")
    def _constant_needs_times(self) -> StepTimeConfig:
        if self.kind == "constant" and self.decode_step_s is None:
            raise ValueError("kind constant needs decode_step_s")
        return self


class SpeculativeConfig(Frozen):
    """Speculative decoding (vLLM's speculative_config; see `sim.physics.speculative`)."""

    method: Literal["draft", "mtp", "ngram"]
    num_speculative_tokens: int = Field(ge=1, le=32)
    acceptance_rate: float | list[float]  # per draft position given the earlier ones were accepted (one value: i.i.d.)
    draft_model: str | None = Field(default=None, min_length=1)  # method draft: a catalog name or a config.json
    draft_cost: float | None = Field(default=None, ge=0, le=10)  # mtp: a draft token's share of a target decode step

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeConfig:
        rates = self.acceptance_rate if isinstance(self.acceptance_rate, list) else [self.acceptance_rate]
        if isinstance(self.acceptance_rate, list) and len(rates) != self.num_speculative_tokens:
            raise ValueError(
                f"acceptance_rate: give one rate or one per draft position ({self.num_speculative_tokens}; got {len(rates)})"
            )
        if any(not 0 <= a <= 1 for a in rates):
            raise ValueError(f"acceptance_rate must be within [0, 1] (got {self.acceptance_rate})")
        if (self.method == "draft") != (self.draft_model is not None):
            raise ValueError("draft_model is needed with method: draft, and only then")
        if self.draft_cost is not None and self.method != "mtp":
            raise ValueError("draft_cost applies to method: mtp")
        return self

    @property
    def alphas(self) -> list[float]:
        a = self.acceptance_rate
        return list(a) if isinstance(a, list) else [a] * self.num_speculative_tokens


class LoraConfig(Frozen):
    """LoRA adapters served on the base model (vLLM's --enable-lora and its knobs; see `sim.run.engine.lora`)."""

    max_loras: int = Field(default=1, ge=1, le=256)  # vLLM --max-loras: adapters in one batch (GPU slots)
    max_lora_rank: int = Field(default=16, ge=1, le=512)  # vLLM --max-lora-rank: every adapter's rank (slots sized for it)
    max_cpu_loras: int | None = Field(default=None, ge=1, le=100_000)  # vLLM --max-cpu-loras (None: max_loras)
    target_modules: Literal["all_linear", "attention"] = "all_linear"  # the layers an adapter carries
    adapters_from: str = "local_nvme"  # storage tier an adapter not in host memory is read from (lifecycle's tiers)
    load_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # overrides that tier's bandwidth
    host_to_gpu_gb_per_s: float = Field(
        default=25.0, ge=MIN_HW_RATE, le=MAX_HW_RATE
    )  # copying an adapter from host memory into a GPU slot

    @model_validator(mode="after")
    def _consistent(self) -> LoraConfig:
        from sim.policies.lifecycle import STORAGE_TIERS

        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras must be >= max_loras (got {self.max_cpu_loras} < {self.max_loras})")
        if self.adapters_from not in STORAGE_TIERS:
            raise ValueError(
                f"adapters_from: unknown storage tier {self.adapters_from!r}; valid: {', '.join(sorted(STORAGE_TIERS))}"
            )
        return self

    @property
    def cpu_loras(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras

    @property
    def load_bytes_per_s(self) -> float:
        """Reading an adapter from its storage tier (or the given bandwidth)."""
        from sim.policies.lifecycle import STORAGE_TIERS

        gb = self.load_gb_per_s if self.load_gb_per_s is not None else STORAGE_TIERS[self.adapters_from][0]
        return gb * 1e9


class EngineConfig(Frozen):
    """One replica's serving engine (vLLM's knobs and defaults, where it has them)."""

    policy: Literal["prefill_first", "chunked"] = "chunked"
    max_num_seqs: int = Field(default=256, ge=1, le=MAX_COUNT)
    max_num_batched_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS
    )  # None: 8192 chunked, max(context, 2048) prefill_first
    block_size: int = Field(default=16, ge=1, le=65_536)
    # vLLM's --max-model-len: the longest prompt + output a replica serves (None: the model's context, and a request
    # longer than the KV cache holds refused on its own, as vLLM's `--max-model-len auto` fits the limit to the cache)
    max_model_len: int | None = Field(default=None, ge=2, le=MAX_TOKENS)
    num_gpu_blocks_override: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    watermark: float = Field(default=0.01, ge=0, lt=1)  # share of KV blocks an admission must leave free (vLLM: 1%)
    admission: Literal["first_chunk", "whole_prompt"] = "first_chunk"  # chunked: room for the first chunk or the prompt
    # chunked: vLLM's long_prefill_token_threshold, the most prompt tokens one request computes in a step (0: no cap)
    long_prefill_token_threshold: int = Field(default=0, ge=0, le=MAX_TOKENS)
    preempt_for_priority: bool = False  # vLLM's priority scheduling: a waiting request preempts lower-priority running ones
    fast_forward: bool = True
    # vLLM's --async-scheduling: the next step is scheduled when the one in progress starts, so a request that
    # arrives mid-step joins the step after the next (sim.run.engine.replica: `_hold`)
    async_scheduling: bool = False
    step_time: StepTimeConfig = StepTimeConfig()
    speculative: SpeculativeConfig | None = None  # drafts verified per step (sim.run.engine.speculative)
    prefix_caching: bool = False  # reuse cached KV of shared prompt prefixes (the trace's prefix_hash_ids)
    prefix_hash_block_tokens: int = Field(default=512, ge=1, le=1_048_576)  # tokens per hash id (Mooncake: 512)
    enforce_eager: bool = False  # vLLM's --enforce-eager: no CUDA graphs (their memory is not taken from the KV cache)
    # vLLM's --disable-hybrid-kv-cache-manager: a model with sliding-window layers keeps every layer's KV for every token,
    # as full attention does (their compute still windowed). None: vLLM's default, off in a replica with a KV connector
    # (a disaggregated fleet's prefill and decode pools: "Turning off hybrid kv cache manager because
    # `--kv-transfer-config` is set"), on elsewhere
    disable_hybrid_kv_cache_manager: bool | None = None
    lora: LoraConfig | None = None  # LoRA adapters (requests name theirs in the trace's `adapter` column)

    @model_validator(mode="after")
    def _hash_blocks(self) -> EngineConfig:
        if self.prefix_caching and self.prefix_hash_block_tokens % self.block_size:
            raise ValueError(
                f"prefix_hash_block_tokens must be a multiple of block_size (got {self.prefix_hash_block_tokens} and {self.block_size})"
            )
        return self

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two")
        return v

    def context_tokens(self, max_context_tokens: int) -> int:
        """The longest prompt + output a replica serves: `max_model_len` when set, else the model's context."""
        return self.max_model_len if self.max_model_len is not None else max_context_tokens

    def batched_tokens(self, max_context_tokens: int) -> int:
        """vLLM's max_num_batched_tokens: as set, else 8192 chunked, max(max_model_len, 2048) prefill first."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return 8192 if self.policy == "chunked" else max(self.context_tokens(max_context_tokens), 2048)

    def cuda_graph_tokens(self, max_context_tokens: int) -> int:
        """The largest step vLLM runs as a captured CUDA graph: its default `max_cudagraph_capture_size`,
        min(max_num_seqs x (1 + speculative tokens) x 2, 512, max_num_batched_tokens) (vllm/config/vllm.py,
        `_set_cudagraph_sizes`); 0 with `enforce_eager`."""
        if self.enforce_eager:
            return 0
        query = 1 + (self.speculative.num_speculative_tokens if self.speculative is not None else 0)
        return min(self.max_num_seqs * query * 2, 512, self.batched_tokens(max_context_tokens))


class SloConfig(Frozen):
    """Per-request service-level objectives in milliseconds (vLLM's --goodput)."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2el_ms: float | None = Field(default=None, gt=0)

    def as_dict(self) -> dict[str, float]:
        return {k.removesuffix("_ms"): v for k, v in self.model_dump().items() if v is not None}


LINK_PRESETS: dict[str, tuple[float, float, str]] = {  # GB/s per GPU (one direction), per-transfer latency s, source
    "nvlink": (450.0, 1e-5, "NVLink4 within an HGX H100 node: 900 GB/s per GPU both directions"),
    "infiniband_400g": (50.0, 2e-5, "NDR InfiniBand / ConnectX-7, 400 Gb/s per GPU (one NIC per GPU, as DGX H100)"),
    "infiniband_200g": (
        25.0,
        2e-5,
        "HDR InfiniBand / ConnectX-6, 200 Gb/s per GPU (one NIC per GPU, as DGX A100, Azure ND A100 v4)",
    ),
    "roce_200g": (25.0, 3e-5, "RoCE v2 at 200 Gb/s per GPU (ConnectX-6 Dx class)"),
    "ethernet_100g": (12.5, 1e-4, "100 GbE per GPU over TCP"),
}


def _known_link(v: str) -> str:
    if v not in LINK_PRESETS:
        raise ValueError(f"unknown link preset {v!r}; valid: {', '.join(LINK_PRESETS)}")
    return v


LinkPreset = Annotated[str, AfterValidator(_known_link)]  # a name in LINK_PRESETS


class LinkConfig(Frozen):
    """The KV-cache transfer link of a disaggregated fleet, per prefill replica: its GPUs send their shards in
    parallel, each at the per-GPU bandwidth; transfers from one replica queue (FIFO) on it."""

    preset: LinkPreset = "infiniband_400g"
    gb_per_s_per_gpu: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # overrides the preset's
    latency_s: float | None = Field(default=None, ge=0, le=3600)

    @property
    def bytes_per_s_per_gpu(self) -> float:
        return (self.gb_per_s_per_gpu if self.gb_per_s_per_gpu is not None else LINK_PRESETS[self.preset][0]) * 1e9

    @property
    def latency(self) -> float:
        return self.latency_s if self.latency_s is not None else LINK_PRESETS[self.preset][1]


HOURS_PER_MONTH = 730.0  # (365.25 x 24 / 12)
# The most frequent hazard a scenario may ask for: a GPU failure, or a spot replica's reclaim, every 36 s on average.
# Far more frequent, a replica is lost before it finishes its cold start over and over (a launch at each loss, the
# run's memory growing until the timeline's limit); at 1e-300 hours, lost at the instant it launches (time stands still).
MIN_MTBF_HOURS = 0.01
MAX_INTERRUPTIONS_PER_HOUR = 1 / MIN_MTBF_HOURS


class ClassConfig(Frozen):
    """One capacity class a pool launches replicas on (on-demand, spot): how many at most, and how often a launch finds
    none to be had. A launch fails with `launch_failure_probability` (each try), or when the class's GPUs held would
    exceed `obtainable_gpus` then: a step function, [[t_s, gpus], ...] from each instant on (none before the first:
    unlimited). A failed class is backed off (`CapacityConfig.backoff`) and the next class in the launch order tried;
    with every class out, the launch waits and is tried again when the first back-off ends."""

    max_replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)  # None: the pool's cap only
    launch_failure_probability: float = Field(default=0.0, ge=0, le=1)
    obtainable_gpus: list[tuple[float, int]] = Field(default_factory=list)

    @field_validator("obtainable_gpus", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        if isinstance(v, list) and all(isinstance(x, list | tuple) for x in v):
            if any(len(x) != 2 for x in v):
                raise ValueError("each step is [t_s, gpus]")
            return [(float(t) if isinstance(t, int) and not isinstance(t, bool) else t, g) for t, g in v]
        return v

    @field_validator("obtainable_gpus")
    @classmethod
    def _steps(cls, v: list[tuple[float, int]]) -> list[tuple[float, int]]:
        times = [t for t, _ in v]
        if any(not math.isfinite(t) or t < 0 for t in times):
            raise ValueError(f"instants must be finite and >= 0 (got {times})")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"instants must increase (got {times})")
        if any(g < 0 for _, g in v):
            raise ValueError("GPU counts must be >= 0")
        return v

    def obtainable_at(self, t: float) -> float:
        """GPUs of this class obtainable at `t` (inf before the first step)."""
        out = math.inf
        for at, gpus in self.obtainable_gpus:
            if at > t:
                break
            out = gpus
        return out


class SpotConfig(ClassConfig):
    """Spot (preemptible) capacity: the provider reclaims an instance with a notice (AWS: 2 minutes; GCP Spot VMs and
    Azure Spot VMs: 30 s). The rate: AWS's Spot Instance Advisor publishes a "frequency of interruption", the share of
    instances of a type interrupted over the last month, in bands (<5%, 5-10%, 10-15%, 15-20%, >20%); a share f of a
    month is a rate of -ln(1 - f) per month per replica. `reclaim_at_s` adds reclaims at given instants (each takes the
    lowest-id ready spot replica), for replaying a known pattern. A fall of `obtainable_gpus` below the spot GPUs held
    reclaims the excess at once (the newest first): a zone's spot pool taken back together."""

    monthly_interruption_frequency: float | None = Field(default=None, ge=0, lt=1)
    interruptions_per_hour: float | None = Field(
        default=None, ge=0, le=MAX_INTERRUPTIONS_PER_HOUR
    )  # per replica (instead of the monthly frequency)
    notice_s: float = Field(default=120.0, ge=0, le=3600)
    reclaim_at_s: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_rate(self) -> SpotConfig:
        if self.monthly_interruption_frequency is not None and self.interruptions_per_hour is not None:
            raise ValueError("give monthly_interruption_frequency or interruptions_per_hour, not both")
        if any(t < 0 for t in self.reclaim_at_s):
            raise ValueError("reclaim_at_s must be >= 0")
        return self

    @property
    def rate_per_s(self) -> float:
        """Reclaims per second per replica."""
        if self.interruptions_per_hour is not None:
            return self.interruptions_per_hour / 3600
        if self.monthly_interruption_frequency is not None:
            return -math.log1p(-self.monthly_interruption_frequency) / (HOURS_PER_MONTH * 3600)
        return 0.0


class FallbackConfig(ClassConfig):
    """Another GPU type a pool launches on when no class of its own GPU can give a replica (a Karpenter NodePool or a
    SkyPilot resource list naming several instance types, tried in order): a replica of `tp` (default: the pool's)
    `gpu`s on `capacity` (on-demand, or spot: reclaimed as the pool's `spot` block says), with this class's cap and
    shortages, its KV cache and step times its GPU's, billed at `usd_per_gpu_hour` (default: the capacity price sheet
    for `pricing.provider` and the class, else the GPU catalog). A fallback must serve every request the pool's own
    GPU serves (same model; checked when the run is built)."""

    gpu: str = Field(min_length=1)
    tp: int | None = Field(default=None, ge=1, le=1024)
    capacity: Literal["on_demand", "spot"] = "on_demand"
    usd_per_gpu_hour: Price | None = None


class FailureConfig(Frozen):
    """Hardware failures: each GPU fails at rate 1 / `gpu_mtbf_hours` (a replica of TP GPUs, TP times as often), the
    replica is lost at once. Default: Meta's Llama 3 training run (The Llama 3 Herd of Models, 2024, section 3.3.4):
    419 unexpected interruptions in 54 days on 16,384 H100 GPUs, 16,384 x 54 x 24 / 419 = 50,700 GPU-hours between
    interruptions (78% of them hardware). `fail_at_s` adds failures at given instants (the lowest-id ready replica)."""

    gpu_mtbf_hours: float = Field(default=50_700.0, ge=MIN_MTBF_HOURS)
    fail_at_s: list[float] = Field(default_factory=list)

    @field_validator("fail_at_s")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(t < 0 for t in v):
            raise ValueError("must be >= 0")
        return v


class BackoffConfig(Frozen):
    """How long a capacity class that failed a launch is left alone: `initial_s`, doubled after each further failure up
    to `max_s`, reset by a success. Defaults: the Kubernetes Cluster Autoscaler's node-group back-off
    (`--initial-node-group-backoff-duration` 5 min, `--max-node-group-backoff-duration` 30 min)."""

    initial_s: float = Field(default=300.0, gt=0)
    max_s: float = Field(default=1800.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s must be >= initial_s (got {self.max_s:g} < {self.initial_s:g})")
        return self


CAPACITY_CLASSES = ("reserved", "on_demand", "spot")


class CapacityConfig(Frozen):
    """Where a pool's replicas come from and how they are lost (`sim.run.fleet.supply`, `sim.run.fleet.hazards`).
    A launch takes a free reserved seat (`fleet.reserved_replicas`, billed all the time) first, else the first class
    of `launch_order` with room and capacity to be had (default: spot, then on-demand, when spot is given; else
    on-demand). Spot replicas are reclaimed, any replica can fail; a lost replica's requests go back to the pool and
    are recomputed on another replica (none is lost), and a replacement cold-starts."""

    launch_order: list[Literal["on_demand", "spot"]] | None = None
    on_demand: ClassConfig = ClassConfig()
    spot: SpotConfig | None = None
    failures: FailureConfig | None = None
    backoff: BackoffConfig = BackoffConfig()
    fallback: list[FallbackConfig] = Field(default_factory=list, max_length=8)  # other GPU types, tried in order

    @model_validator(mode="after")
    def _order(self) -> CapacityConfig:
        for i, f in enumerate(self.fallback):
            if f.capacity == "spot" and self.spot is None:
                raise ValueError(f"fallback.{i}: spot capacity needs the pool's spot: block (its reclaims and notice)")
        order = self.launch_order
        if order is None:
            return self
        if not order or len(set(order)) != len(order):
            raise ValueError(f"launch_order: each of on_demand, spot at most once, at least one (got {order})")
        if "spot" in order and self.spot is None:
            raise ValueError("launch_order names spot: give a spot: block (its interruption rate and notice)")
        if self.spot is not None and "spot" not in order:
            raise ValueError(f"a spot: block is given but launch_order leaves spot out (got {order})")
        return self

    @property
    def order(self) -> list[str]:
        """The launch order of the classes beyond the reserved seats."""
        if self.launch_order is not None:
            return list(self.launch_order)
        return ["spot", "on_demand"] if self.spot is not None else ["on_demand"]

    def limits(self, klass: str) -> ClassConfig:
        if klass == "spot":
            assert self.spot is not None
            return self.spot
        return self.on_demand

    @property
    def any(self) -> bool:
        """Replicas can be lost (spot reclaims, failures)."""
        return self.spot is not None or self.failures is not None

    @property
    def shapes_supply(self) -> bool:
        """Anything beyond plain on-demand capacity: a class cap, launch failures, spot, failures."""
        return self != CapacityConfig()


class PoolConfig(Frozen):
    """One pool of a disaggregated fleet; unset keys take the fleet's (gpu, tp, lifecycle), the scenario's
    (engine) or the catalog's (price)."""

    gpu: str | None = Field(default=None, min_length=1)
    tp: int | None = Field(default=None, ge=1, le=1024)
    router: (
        Literal[
            "round_robin", "least_outstanding", "least_kv", "power_of_two", "least_prompt_tokens", "prefix_aware", "lora_aware"
        ]
        | None
    ) = None
    autoscaler: AutoscalerConfig = FixedConfig()
    lifecycle: LifecycleConfig | None = None
    engine: EngineConfig | None = None
    usd_per_gpu_hour: Price | None = None
    capacity: CapacityConfig | None = None  # its capacity classes, spot, failures (None: the fleet's `capacity`)
    reserved_replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)  # None: the fleet's (prefill), 0 (decode)


class FleetConfig(Frozen):
    """Replicas of one GPU type and TP degree behind a router, scaled by an autoscaler."""

    gpu: str = Field(min_length=1)
    tp: int = Field(default=1, ge=1, le=1024)
    router: Literal[
        "round_robin", "least_outstanding", "least_kv", "power_of_two", "least_prompt_tokens", "prefix_aware", "lora_aware"
    ] = "least_outstanding"
    prefix_routing_slack: int = Field(default=4, ge=0, le=MAX_TOKENS)  # prefix_aware, lora_aware: outstanding it may add
    # the router's cap (Ray Serve's max_ongoing_requests): at it, requests wait in the fleet queue (None: no cap)
    max_outstanding_per_replica: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    autoscaler: AutoscalerConfig = FixedConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    max_gpus: int | None = Field(default=None, ge=1, le=MAX_COUNT)  # GPUs obtainable at once
    reserved_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)  # capacity billed all the time
    queue_max: int | None = Field(default=None, ge=0, le=MAX_TOKENS)  # fleet queue bound (requests waiting for any replica)
    queue_timeout_s: float | None = Field(default=None, gt=0)
    timeline_interval_s: IntervalS = 10.0
    mode: Literal["colocated", "disaggregated"] = "colocated"
    prefill: PoolConfig = PoolConfig()  # disaggregated: the prefill pool (router default least_prompt_tokens)
    decode: PoolConfig = PoolConfig()  # disaggregated: the decode pool
    link: LinkConfig = LinkConfig()  # disaggregated: the KV-cache transfer link
    capacity: CapacityConfig = CapacityConfig()  # classes, spot, failures (each pool's, unless a pool gives its own)
    # vLLM's data_parallel_size: each replica is one DP rank (its own scheduler, batch and KV cache, tp GPUs); with an
    # MoE model the dp ranks of a group share the MoE layers, its experts spread over their dp x tp GPUs
    dp: int = Field(default=1, ge=1, le=1024)
    expert_parallel: bool = False  # vLLM's enable_expert_parallel: experts placed whole, tokens exchanged all-to-all
    # expert parallel: the routed tokens the group's hottest GPU receives over the mean (1: uniform routing; TensorRT-LLM
    # measured 2.56 for DeepSeek-R1 at EP 32 without a load balancer, 1.12 with its static EPLB)
    expert_load_imbalance: float = Field(default=1.0, ge=1.0, le=1024.0)
    # vLLM's --all2all-backend: how the group's MoE layers exchange tokens (the default all-gather + reduce-scatter,
    # or a per-destination dispatch: deepep_high_throughput, deepep_low_latency, pplx; those need expert_parallel)
    all2all_backend: Literal["allgather_reducescatter", "deepep_high_throughput", "deepep_low_latency", "pplx"] = (
        "allgather_reducescatter"
    )
    # vLLM's pipeline_parallel_size: a server's layers in pp stages of tp GPUs each, run as pp virtual engines (vLLM
    # 0.8's V0 engine, which serves PP): each replica is one of them (its own scheduler, batch and 1/pp of the KV cache,
    # tp GPUs' share of the server), a step passing through every stage; the replicas of a server come pp together
    pp: int = Field(default=1, ge=1, le=64)
    gpus_per_node: int = Field(default=8, ge=1, le=1024)  # GPUs a node's NVLink joins: a larger TP group spans nodes
    scale_out: LinkPreset = "infiniband_400g"  # the network between nodes, for TP and expert groups spanning nodes

    @model_validator(mode="after")
    def _gpu_cap(self) -> FleetConfig:
        if self.max_gpus is not None and self.max_gpus < self.tp:
            raise ValueError(f"max_gpus must be >= tp (got {self.max_gpus} < {self.tp})")
        if self.pp > 1 and self.mode != "colocated":
            raise ValueError(
                f"pp: with {self.pp} pipeline stages the fleet is colocated (a disaggregated pool of pipelines is not modelled)"
            )
        return self

    def capacity_of(self, pool: str) -> CapacityConfig:
        """A pool's capacity classes: a disaggregated pool's own `capacity` block, else the fleet's (each pool then
        has the fleet's classes, caps and hazards, its own replicas counted against them)."""
        if self.mode == "disaggregated" and pool in ("prefill", "decode"):
            own = (self.prefill if pool == "prefill" else self.decode).capacity
            return own if own is not None else self.capacity
        return self.capacity

    def reserved_of(self, pool: str) -> int:
        """A pool's reserved replicas: the fleet's `reserved_replicas` belong to the online or prefill pool, unless a
        disaggregated pool gives its own."""
        if self.mode == "disaggregated" and pool in ("prefill", "decode"):
            own = (self.prefill if pool == "prefill" else self.decode).reserved_replicas
            if own is not None:
                return own
        return self.reserved_replicas if pool in ("online", "prefill") else 0

    @property
    def pool_names(self) -> tuple[str, ...]:
        """The pools the fleet itself runs (a dedicated batch pool is the batch lane's)."""
        return ("prefill", "decode") if self.mode == "disaggregated" else ("online",)

    @property
    def capacities(self) -> list[CapacityConfig]:
        """Each of the fleet's pools' capacity classes (one for a colocated fleet)."""
        return [self.capacity_of(name) for name in self.pool_names]

    @property
    def replica_cap(self) -> int:
        """Replicas at once: the autoscaler's maximum, within the GPU quota and the capacity classes' caps."""
        cap = self.autoscaler.max_replicas
        cap = cap if self.max_gpus is None else min(cap, self.max_gpus // self.tp)
        caps = [self.capacity.limits(k).max_replicas for k in self.capacity.order]
        caps += [f.max_replicas for f in self.capacity.fallback]
        if all(c is not None for c in caps):
            cap = min(cap, self.reserved_replicas + sum(c for c in caps if c is not None))
        return cap


class GuardConfig(Frozen):
    """Holds batch work back while interactive p99 latency is above target (see `sim.run.fleet.batch`)."""

    ttft_ms: float | None = Field(default=None, gt=0)  # default: slo.ttft_ms
    tpot_ms: float | None = Field(default=None, gt=0)  # default: slo.tpot_ms
    interval_s: IntervalS = 60.0
    step: int = Field(default=1, ge=1, le=MAX_COUNT)  # additive increase of the per-replica batch cap per interval


class DedicatedConfig(Frozen):
    """A pool of the fleet's replica type serving only batch work, launched at the first job's submission."""

    replicas: int | Literal["auto"] = "auto"  # auto: sized so the jobs finish deadline_margin_s before the earliest deadline
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)  # with deadline_scaling: its ceiling

    @field_validator("replicas")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_REPLICAS:
            raise ValueError(f"must be 'auto' or an integer in [1, {MAX_REPLICAS}]")
        return v


class BatchConfig(Frozen):
    """Offline batch jobs and how the fleet serves them (see `sim.run.fleet.batch` and `sim.workload.jobs`)."""

    jobs: list[BatchJob] = Field(default_factory=list)
    fleet: Literal["backfill", "dedicated"] = "backfill"  # the online fleet's spare capacity, or a pool of their own
    max_per_replica: int | None = Field(default=None, ge=1, le=MAX_COUNT)  # batch requests a replica holds (default max_num_seqs)
    guard: GuardConfig | None = None
    deadline_scaling: bool = False  # scale up when the backlog would miss its deadline at the measured rate
    deadline_margin_s: float = Field(default=1800.0, ge=0)  # finish this long before the deadline (cold starts)
    dedicated: DedicatedConfig = DedicatedConfig()

    @field_validator("jobs")
    @classmethod
    def _unique_ids(cls, v: list[BatchJob]) -> list[BatchJob]:
        seen: set[str] = set()
        for job in v:
            if job.job_id in seen:
                raise ValueError(f"job_id must be unique (got {job.job_id!r} twice)")
            seen.add(job.job_id)
        return v


class PricingConfig(Frozen):
    usd_per_gpu_hour: Price | None = None  # on demand; None: the GPU catalog's price
    reserved_usd_per_gpu_hour: Price | None = None  # None: the sheet's (provider), else on-demand
    spot_usd_per_gpu_hour: Price | None = None  # None: the price sheet's (provider)
    provider: str | None = None  # a provider of the capacity price sheet: unset prices come from it
    billing_granularity_s: float = Field(default=1.0, ge=0, le=MAX_BILLING_S)
    billing_minimum_s: float = Field(default=0.0, ge=0, le=MAX_BILLING_S)
    compare_api: str = DEFAULT_API

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str | None) -> str | None:
        if v is None:
            return v
        known = capacity_providers()
        if v not in known:
            raise ValueError(f"unknown provider {v!r}; valid: {', '.join(known)}")
        return v

    @field_validator("compare_api")
    @classmethod
    def _known_sheet(cls, v: str) -> str:
        sheets = load_api_prices()
        if v not in sheets:
            raise ValueError(f"unknown API price sheet {v!r}; valid: {', '.join(sorted(sheets))}")
        return v


DEPLOYMENT_BLOCKS = ("fleet", "engine")  # blocks a deployment merges one level deep (its keys replace the scenario's)
DEPLOYMENT_WHOLE = ("model", "roofline", "pricing", "slo")  # replaced whole when a deployment gives them


class DeploymentConfig(Frozen):
    """One model served on the platform (`Scenario.deployments`): a colocated or disaggregated fleet of its own, on the
    shared GPU budget. Its `fleet` and `engine` keys replace the scenario's (one level deep: `fleet: {gpu: a100}` keeps
    the scenario's router, autoscaler, ...); `model`, `roofline`, `pricing` and `slo` replace the scenario's whole."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    serves: list[str] = Field(default_factory=list, max_length=64)  # the trace's `model` values sent here (default: name)
    # a trace without a `model` column: this share of its requests (a weight: the shares are normalized; bounded so
    # that their sum stays finite, 1e308 each summed to inf and the draw failed)
    share: float | None = Field(default=None, gt=0, le=MAX_COUNT)
    priority: int = Field(default=0, ge=-1000, le=1000)  # with gpu_budget: freed GPUs go to the highest first
    # with gpu_budget: a launch that does not fit takes lower-priority deployments' GPUs (Kubernetes' PreemptLowerPriority)
    preemption: Literal["never", "lower_priority"] = "never"
    model: str | None = Field(default=None, min_length=1)
    fleet: dict[str, Any] = Field(default_factory=dict)
    engine: dict[str, Any] = Field(default_factory=dict)
    roofline: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    slo: dict[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        """The trace's `model` values this deployment serves."""
        return self.serves or [self.name]


class Scenario(Frozen):
    name: str | None = Field(default=None, min_length=1, max_length=200)  # default: the scenario file's name
    model: str = Field(min_length=1)  # a catalog name or a path to a Hugging Face config.json
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    gpu_catalog: str | None = None  # extra GPUs (YAML, catalog format)
    trace: Annotated[str, Field(min_length=1)] | TraceFile | SyntheticSpec | None = (
        None  # a file (relative to the scenario), a file + transforms, or a generator
    )
    fleet: FleetConfig
    engine: EngineConfig = EngineConfig()
    roofline: RooflineConfig = RooflineConfig()
    pricing: PricingConfig = PricingConfig()
    slo: SloConfig = SloConfig()
    batch: BatchConfig | None = None  # offline batch jobs (None: batch-class requests of the trace, if any, take its defaults)
    # several models on one platform (`sim.run.platform`): the top-level blocks are every deployment's defaults
    deployments: list[DeploymentConfig] = Field(default_factory=list, max_length=64)
    gpu_budget: dict[str, int] = Field(default_factory=dict)  # GPU name -> GPUs every deployment together holds at once
    _base_dir: Path | None = PrivateAttr(default=None)  # the scenario file's folder: relative paths start there
    _source: str | None = PrivateAttr(default=None)  # the scenario file, for errors found after validation
    _trace_note: str | None = PrivateAttr(default=None)  # what `--trace FILE` made of the scenario's trace

    @model_validator(mode="after")
    def _platform(self) -> Scenario:
        seen: set[str] = set()
        for i, d in enumerate(self.deployments):
            if d.name in seen:
                raise ValueError(f"deployments.{i}.name: each deployment needs a name of its own ({d.name!r} is taken)")
            seen.add(d.name)
        names: dict[str, str] = {}
        for d in self.deployments:
            for served in d.names:
                if served in names:
                    raise ValueError(f"deployments: the model name {served!r} is served by both {names[served]!r} and {d.name!r}")
                names[served] = d.name
        shares = [d.share is not None for d in self.deployments]
        if any(shares) and not all(shares):
            raise ValueError("deployments: give every deployment a share, or none (then the trace's `model` column decides)")
        for gpu, n in self.gpu_budget.items():
            if isinstance(n, bool) or n < 1 or n > MAX_COUNT:
                raise ValueError(f"gpu_budget.{gpu}: must be an integer in [1, {MAX_COUNT}] (got {n!r})")
        if self.gpu_budget and not self.deployments:
            raise ValueError("gpu_budget: a GPU budget is shared by deployments; list them (deployments:) or use fleet.max_gpus")
        if self.deployments and self.batch is not None:
            raise ValueError("batch: batch jobs on a platform of several deployments are not modelled (run them per deployment)")
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir if self._base_dir is not None else Path(".")

    @property
    def source(self) -> str | None:
        """The file this scenario was read from, if any."""
        return self._source

    @property
    def trace_note(self) -> str | None:
        """With `--trace FILE`: the trace as run, what of the scenario's was kept, set and dropped (one line)."""
        return self._trace_note


# --- presets -----------------------------------------------------------------------------------
def preset_names() -> list[str]:
    folder = resources.files("sim.data").joinpath("presets")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise unknown_name("roofline preset", name, preset_names())
    text = resources.files("sim.data").joinpath("presets", f"{name}.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def is_preset_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name


def load_preset_file(path: Path) -> dict[str, Any]:
    """A roofline block kept in a file (as `fleetsim calibrate --out` writes it): the file's `roofline:` block,
    or the whole file when it is a roofline block itself."""
    try:
        data = read_yaml(path)
    except FleetsimError as err:
        raise FleetsimError(f"roofline.preset: {err}") from None
    if isinstance(data, dict) and set(data) == {"roofline"}:
        data = data["roofline"]
    if not isinstance(data, dict):
        raise FleetsimError(f"roofline.preset {path}: a preset file must hold a roofline block (a mapping)")
    if data.get("preset") is not None:
        raise FleetsimError(f"roofline.preset {path}: a preset file cannot name another preset (preset: {data['preset']!r})")
    try:  # (checked here, so that a bad value is named in the file that holds it, not in the scenario using it)
        RooflineConfig.model_validate(data)
    except ValidationError as err:
        raise from_validation_error(err, where=str(path), prefix="roofline", data=data) from None
    return dict(data)


def merge_preset(block: Any, base_dir: Path | None = None) -> Any:
    """A roofline block with `preset: NAME` becomes the preset's values overlaid with the block's. NAME is a
    bundled preset or a YAML file (relative to the scenario's folder) holding a roofline block."""
    if not isinstance(block, dict) or block.get("preset") is None:
        return block
    block = dict(block)
    name = block.pop("preset")
    if not isinstance(name, str):
        raise FleetsimError(f"roofline.preset must be a name or a .yaml file (got {name!r})")
    if is_preset_file(name):
        path = Path(name) if Path(name).is_absolute() or base_dir is None else base_dir / name
        merged = load_preset_file(path)
    else:
        try:
            merged = load_preset(name)
        except FleetsimError as err:
            raise FleetsimError(f"roofline.preset: {err}") from None
    overrides = {_gpu_key(gpu): body for gpu, body in (merged.get("gpu_overrides") or {}).items()}
    for gpu, body in (block.pop("gpu_overrides", None) or {}).items():
        overrides[_gpu_key(gpu)] = {**overrides.get(_gpu_key(gpu), {}), **(body or {})}
    merged.update(block)
    merged["gpu_overrides"] = overrides
    merged["preset"] = name
    return merged


def roofline_config(preset: str | None = None, /, *, base: dict[str, Any] | None = None, **overrides: Any) -> RooflineConfig:
    """Roofline assumptions: `base` (e.g. a scenario's block), then a preset's values, then overrides."""
    block: dict[str, Any] = dict(base or {})
    if preset:
        block |= merge_preset({"preset": preset})
    block |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return RooflineConfig.model_validate(block)
    except ValidationError as err:
        raise from_validation_error(err, prefix="roofline") from None


# --- deployments (several models on one platform) ----------------------------------------------
def deployment_scenario(scenario: Scenario, i: int, *, base_dir: Path | None = None) -> Scenario:
    """The scenario's i-th deployment as a scenario of its own: the top-level blocks with the deployment's over them
    (`DeploymentConfig`), its name the deployment's. Errors name the deployment."""
    d = scenario.deployments[i]
    raw = scenario.model_dump(exclude={"deployments", "gpu_budget", "name"}, exclude_unset=True)
    given = d.model_dump(include={*DEPLOYMENT_BLOCKS, *DEPLOYMENT_WHOLE}, exclude_none=True)
    for key in DEPLOYMENT_BLOCKS:
        raw[key] = {**raw.get(key, {}), **given.get(key, {})}
    for key in DEPLOYMENT_WHOLE:
        if key in given:
            raw[key] = given[key]
    if "roofline" in given:
        try:
            raw["roofline"] = merge_preset(given["roofline"], base_dir or scenario.base_dir)
        except FleetsimError as err:
            raise FleetsimError(f"deployments.{i} ({d.name}): {err}") from None
    raw["name"] = d.name
    try:
        out = Scenario.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, where=f"deployments.{i} ({d.name})", data=raw) from None
    out._base_dir, out._source = scenario._base_dir, scenario._source
    return out


# --- loading -----------------------------------------------------------------------------------
def parse_config(raw: Any, *, where: str = "<config>", base_dir: Path | None = None) -> Scenario:
    if not isinstance(raw, dict):
        raise FleetsimError(f"{where}: a scenario must be a YAML mapping (got {type(raw).__name__})")
    raw = dict(raw)
    if "roofline" in raw:
        try:
            raw["roofline"] = merge_preset(raw["roofline"], base_dir)
        except FleetsimError as err:  # (named with the scenario file, as its other errors are)
            raise FleetsimError(f"{where}: {err}") from None
    deployments = raw.get("deployments")
    if isinstance(deployments, list) and deployments and isinstance(deployments[0], dict):
        first = deployments[0]  # a platform: the first deployment's model and GPU stand in for the top level's if absent
        if "model" not in raw and first.get("model") is not None:
            raw["model"] = first["model"]
        if isinstance(raw.get("fleet", {}), dict) and "gpu" not in raw.get("fleet", {}):
            gpu = (first.get("fleet") or {}).get("gpu") if isinstance(first.get("fleet") or {}, dict) else None
            if gpu is not None:
                raw["fleet"] = {**raw.get("fleet", {}), "gpu": gpu}
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, where=where, data=raw) from None
    for i in range(len(scenario.deployments)):
        try:
            deployment_scenario(scenario, i, base_dir=base_dir)
        except FleetsimError as err:
            raise FleetsimError(f"{where}: {err}") from None
    return scenario


def parse_set(item: str) -> tuple[list[str], Any]:
    """One `--set PATH=VALUE`: the dotted PATH's keys and VALUE read as YAML (`128`, `l40s`, `[1, 2]`,
    `{policy: fixed, replicas: 4}`, `null`)."""
    path, sep, text = item.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(k.strip() for k in keys):
        raise FleetsimError(f"--set {_short(item)}: give PATH=VALUE with a dotted PATH, e.g. --set fleet.gpu=l40s")
    keys = [k.strip() for k in keys]
    try:
        value = load_value(text)
    except (yaml.YAMLError, FleetsimError) as err:
        problem = str(err) if isinstance(err, FleetsimError) else getattr(err, "problem", None) or "not valid YAML"
        raise FleetsimError(f"--set {path.strip()}: the value {_short(text)} is {problem}") from None
    return keys, value


def apply_sets(raw: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """`--set PATH=VALUE` overrides on a scenario's raw data (`parse_set`): blocks are created as needed, and a
    number indexes a list (`batch.jobs.0.deadline_s`). The result is validated like the file itself, so a wrong
    path or value is named there."""
    out = copy.deepcopy(raw)
    for item in sets:
        keys, value = parse_set(item)
        set_path(out, keys, value, label=f"--set {'.'.join(keys)}")
    return out


def set_path(raw: dict[str, Any], keys: Sequence[str], value: Any, *, label: str) -> None:
    """Put `value` at the dotted path `keys` of a scenario's raw data (in place), creating blocks as needed; an
    integer key indexes a list that exists (`batch.jobs.0.requests`)."""
    node: Any = raw
    for depth, key in enumerate(keys):
        where = ".".join(keys[: depth + 1])
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                parent = ".".join(keys[:depth])
                raise FleetsimError(f"{label}: {parent} is a list of {len(node)}; index it 0-{len(node) - 1} (got {key!r})")
            if last:
                node[int(key)] = copy.deepcopy(value)
                return
            node = node[int(key)]
            continue
        if last:
            node[key] = copy.deepcopy(value)
            return
        child = node.get(key)
        if depth == 0 and key == "trace" and isinstance(child, str):
            child = node[key] = {"file": child}  # a bare trace path is the block {file: PATH}: its transforms can be set
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict | list):
            raise FleetsimError(f"{label}: {where} is a value ({child!r}), not a block; set {where} itself")
        node = child


def with_trace_file(raw: dict[str, Any], trace: str | Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A scenario's raw data with its trace file replaced by `trace` (`--trace FILE`, a path from the working
    folder, stored absolute), its transforms kept (`sim.workload.transforms.swap_trace_file`): the new raw data,
    the new trace block and what was dropped, in words."""
    block, dropped = swap_trace_file(raw.get("trace"), str(Path(trace).resolve()))
    return {**raw, "trace": block}, block, dropped


def load_config(path: str | Path, sets: Sequence[str] = (), *, trace: str | Path | None = None) -> Scenario:
    """Read and validate a scenario, with `--trace FILE` (`with_trace_file`) and then `--set` overrides; paths
    inside it are then relative to its folder."""
    path = Path(path)
    raw = read_yaml(path)
    check_kind(path, raw, expected="scenario")
    note = None
    if trace is not None and isinstance(raw, dict):
        raw, swapped, dropped = with_trace_file(raw, trace)
    if sets and isinstance(raw, dict):
        raw = apply_sets(raw, sets)
    if trace is not None and isinstance(raw, dict):
        note = trace_note(str(trace), swapped, dropped, raw.get("trace"))
    where = f"{path} (with --set)" if sets else str(path)
    scenario = parse_config(raw, where=where, base_dir=path.parent)
    scenario._base_dir = path.parent
    scenario._source = str(path)
    scenario._trace_note = note
    return scenario
