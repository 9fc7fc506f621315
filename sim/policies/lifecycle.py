"""Replica lifecycle: provisioning -> image pull -> weight loading -> warm-up -> ready -> draining -> released.

Durations in seconds. Weight loading takes weight bytes / the bandwidth of the storage tier the weights
come from; the presets below are derived from published cold-start measurements (see
reference figures in README): each is the effective GB/s of one such measurement.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sim.distributions import lognormal
from sim.errors import unknown_name
from sim.spec import MAX_HW_RATE, MIN_HW_RATE, Frozen

# Effective weight-loading bandwidth (GB/s = 1e9 bytes/s) by storage tier, and where it comes from.
STORAGE_TIERS: dict[str, tuple[float, str]] = {
    "local_nvme": (138e9 / 84 / 1e9, "ServerlessLLM (OSDI'24): Llama-2-70B loads in 84 s with baseline loaders"),
    "network_disk": (
        15e9 / 47.99 / 1e9,
        "NVIDIA Run:ai streamer benchmark: Llama-3-8B (15 GB) from AWS GP3 SSD, safetensors, 47.99 s",
    ),
    "object_store": (138e9 / 265 / 1e9, "Anyscale (2023): Llama-2-70B from S3 to a p4de in 4 min 25 s before optimizing"),
    "host_ram": (70e9 / 10 / 1e9, "vLLM issue #19824: ~10 s to load Llama-70B-FP8 (~70 GB) from a hot page cache"),
}


MAX_STAGE_S = 86_400.0  # one cold-start stage lasts at most a day (a longer one is a units mistake)


class UniformDuration(Frozen):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0, le=MAX_STAGE_S)
    high: float = Field(ge=0, le=MAX_STAGE_S)

    @model_validator(mode="after")
    def _ordered(self) -> UniformDuration:
        if self.high < self.low:
            raise ValueError(f"high must be >= low (got {self.high} < {self.low})")
        return self


class LognormalDuration(Frozen):
    dist: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0, le=MAX_STAGE_S)
    cv: float = Field(gt=0, le=10)


Duration = (
    Annotated[float, Field(ge=0, le=MAX_STAGE_S)] | Annotated[UniformDuration | LognormalDuration, Field(discriminator="dist")]
)


def draw(duration: Duration, rng: np.random.Generator) -> float:
    if isinstance(duration, UniformDuration):
        return float(rng.uniform(duration.low, duration.high))
    if isinstance(duration, LognormalDuration):
        return float(lognormal(rng, mean=duration.mean, cv=duration.cv))
    return float(duration)


def _mean(duration: Duration) -> float:
    if isinstance(duration, UniformDuration):
        return (duration.low + duration.high) / 2
    if isinstance(duration, LognormalDuration):
        return duration.mean
    return float(duration)


PCIE_HOST_TO_GPU_GB_PER_S = 25.0  # PCIe Gen4 x16's effective host-to-device copy rate (its 32 GB/s, less protocol overhead)


class SleepConfig(Frozen):
    """vLLM's sleep mode (`--enable-sleep-mode`; blog.vllm.ai/2025/10/26/sleep-mode.html): a replica the autoscaler
    scales down falls asleep instead of exiting — its KV cache dropped, its weights offloaded to host memory (level 1)
    or discarded (level 2), its GPUs freed for another model — and a later scale-up wakes it instead of a cold start:
    the process, its CUDA graphs and compiled kernels kept, so no provisioning, image pull or warm-up; level 1 copies
    each GPU's shard of the weights back at `host_to_gpu_gb_per_s`, level 2 reloads the weights from the page cache (the
    `host_ram` storage tier). Falling asleep at level 1 copies the shards out at the same rate (the replica drains that
    long, holding its GPUs); level 2 frees them at once. A sleeping replica holds host memory, not GPUs: at most
    `max_sleeping` per pool sleep (None: no cap), `initial_sleeping` of them from the start (loaded and put to sleep before
    the trace: a swapping platform's models, all resident in host memory); it wakes on any free GPUs of its type (the
    layout of model-swapping platforms, where each node keeps every model's process). The blog measures 0.1-6 s wakes (level 1) and 0.8-2.6 s
    (level 2) against 30-100+ s reloads for 0.6B-235B models on A4000-A100."""

    level: Literal[1, 2] = 1
    max_sleeping: int | None = Field(default=None, ge=0, le=100_000)
    host_to_gpu_gb_per_s: float = Field(default=PCIE_HOST_TO_GPU_GB_PER_S, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    initial_sleeping: int = Field(default=0, ge=0, le=100_000)  # replicas loaded and put to sleep before the trace starts

    @model_validator(mode="after")
    def _initial_fit(self) -> SleepConfig:
        if self.max_sleeping is not None and self.initial_sleeping > self.max_sleeping:
            raise ValueError(f"initial_sleeping must be <= max_sleeping (got {self.initial_sleeping} > {self.max_sleeping})")
        return self

    def wake_s(self, weight_bytes: float, tp: int) -> float:
        """Seconds from a wake-up call to ready: the weights back on the GPUs."""
        if self.level == 1:
            return weight_bytes / tp / (self.host_to_gpu_gb_per_s * 1e9)
        return weight_bytes / (STORAGE_TIERS["host_ram"][0] * 1e9)

    def sleep_s(self, weight_bytes: float, tp: int) -> float:
        """Seconds from a sleep call to the GPUs freed: level 1 copies the weights out first."""
        return weight_bytes / tp / (self.host_to_gpu_gb_per_s * 1e9) if self.level == 1 else 0.0


class LifecycleConfig(Frozen):
    """Cold-start stages. Defaults: ~5 minutes for a 70B model from local NVMe (assumptions: node
    provisioning 2 min, an image pull of 1 min, CUDA-graph warm-up 30 s)."""

    provision_s: Duration = 120.0
    image_pull_s: Duration = 60.0
    weights_from: str = "local_nvme"
    load_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # overrides the storage tier's bandwidth
    warmup_s: Duration = 30.0
    start: Literal["warm", "cold"] = "warm"  # the initial replicas: ready at t=0, or cold-starting then
    # the whole cold start as one figure, for who knows only the total: it replaces the four stages (and
    # is billed and sampled as provisioning)
    cold_start_s: Duration | None = None
    sleep: SleepConfig | None = None  # scaled-down replicas sleep and wake instead of exiting and cold-starting

    @model_validator(mode="after")
    def _total_or_stages(self) -> LifecycleConfig:
        stages = {"provision_s", "image_pull_s", "weights_from", "load_gb_per_s", "warmup_s"} & self.model_fields_set
        if self.cold_start_s is not None and stages:
            raise ValueError(
                f"give either cold_start_s or the stages, not both (got cold_start_s and {', '.join(sorted(stages))})"
            )
        return self

    @field_validator("weights_from")
    @classmethod
    def _known_tier(cls, v: str) -> str:
        if v not in STORAGE_TIERS:
            raise ValueError(f"unknown storage tier {v!r}; valid: {', '.join(sorted(STORAGE_TIERS))}")
        return v

    def load_bw_bytes_per_s(self) -> float:
        if self.load_gb_per_s is not None:
            return self.load_gb_per_s * 1e9
        if self.weights_from not in STORAGE_TIERS:
            raise unknown_name("fleet.lifecycle.weights_from storage tier", self.weights_from, STORAGE_TIERS)
        return STORAGE_TIERS[self.weights_from][0] * 1e9

    def weight_load_s(self, weight_bytes: float) -> float:
        """The weight-loading stage (0 when `cold_start_s` gives the whole cold start)."""
        return 0.0 if self.cold_start_s is not None else weight_bytes / self.load_bw_bytes_per_s()

    def expected_cold_start_s(self, weight_bytes: float) -> float:
        """The mean cold start: each stage's mean (a uniform's midpoint, a lognormal's mean) plus the weight load."""
        parts = (self.cold_start_s,) if self.cold_start_s is not None else (self.provision_s, self.image_pull_s, self.warmup_s)
        return sum(_mean(d) for d in parts) + self.weight_load_s(weight_bytes)

    def stages(self, weight_bytes: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(provision, image pull, weight load, warm-up) seconds for one cold start."""
        if self.cold_start_s is not None:
            return (draw(self.cold_start_s, rng), 0.0, 0.0, 0.0)
        return (
            draw(self.provision_s, rng),
            draw(self.image_pull_s, rng),
            weight_bytes / self.load_bw_bytes_per_s(),
            draw(self.warmup_s, rng),
        )
