"""GPU catalog: peak dense FLOP/s, HBM bytes and bandwidth, interconnect, default price.

All quantities are SI inside the code (FLOP/s, bytes, bytes/s, seconds, USD). The catalog file
`sim/data/gpus.yaml` states them in datasheet units named in each key (`bf16_tflops`, `hbm_gb`,
`hbm_bw_gb_per_s`); they are converted once, here. Users add GPUs with a YAML file in the same
format (`load_gpu_catalog(extra=...)`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from sim.errors import FleetsimError, from_validation_error, unknown_name
from sim.spec import MAX_HW_RATE, MAX_OVERHEAD_S, MAX_USD_PER_GPU_HOUR, MIN_HW_RATE, Frozen
from sim.yaml_input import read_yaml

TERA = 1e12
GIGA = 1e9

# Defaults for a GPU that has no reference step times of its own (a user catalog entry that leaves them out):
# the means of the fitted A100 and H100 values in sim/data/gpus.yaml (see benchmarks/steptime_defaults.py).
GENERIC_MFU = 0.685
GENERIC_MBU = 0.76
GENERIC_LAYER_OVERHEAD_S = 2.2e-5
GENERIC_OVERLAP = 0.71

# A GPU's total memory as the driver reports it (cudaMemGetInfo, the total vLLM's gpu_memory_utilization is a share of)
# where no log gives it: the datasheet's "N GB" is N GiB of memory (HBM stacks and GDDR chips come in powers of two),
# of which the driver keeps about 1.1% (logged totals over datasheet GiB: A100 40 GB 0.987, A100 80 GB 0.989, H100 SXM
# 0.990, an 8x H200 node's vLLM log 0.992 with nvidia-smi's 143,771 MiB beside it; the logged GDDR cards 0.980-0.996),
# and a data-center GDDR card, which ships with ECC on, keeps 1/16 more for its check bits (the L40S logs 44.52 GiB of
# 48: 0.927 = 15/16 x 0.989). Reading "N GB" as N x 10^9 bytes instead put these cards 6-7% short (H100 PCIe 74.5 GiB
# where the SXM card logs 79.2).
DRIVER_SHARE = 0.989
ECC_SHARE = 15 / 16
GIB = 2**30

# The bus bandwidth a collective reaches on a link the catalog has no measured figure for, as a share of one direction
# of its datasheet rate: the median of the shares NCCL reaches on the links measured (sim/data/gpus.yaml: NVLink3 0.50,
# NVLink4 0.62, PCIe 5.0 0.62 and 0.35, host-staged PCIe 4.0 and 5.0 0.45 and 0.44). The full line rate, which an
# unmeasured link used to get, is what none of them reaches.
UNMEASURED_LINK_SHARE = 0.475


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator, in SI units. Efficiencies turn peaks into what a serving engine reaches."""

    name: str
    description: str
    bf16_flops_per_s: float
    fp8_flops_per_s: float | None
    hbm_bytes: float
    hbm_bw_bytes_per_s: float
    interconnect: str
    interconnect_bw_bytes_per_s: float
    allreduce_latency_s: float
    mfu: float
    mbu: float
    usd_per_gpu_hour: float | None
    price_source: str
    price_as_of: str
    layer_overhead_s: float = 0.0  # fixed seconds per layer per step: launches, norms, rotary, sampling
    overlap: float = 1.0  # share of the shorter of compute and memory time hidden under the longer (1: max)
    device_memory_bytes: float | None = None  # what the driver reports as total (cudaMemGetInfo), if known
    sm_count: int = 128  # streaming multiprocessors (vLLM's sampler keeps one vocabulary row per SM)
    allreduce_bw_bytes_per_s: float | None = None  # NCCL's measured all-reduce bus bandwidth, one direction, if known
    # GPUs the interconnect joins when fewer than a node's (an NVLink bridge pairs two PCIe cards), and the PCIe link a
    # larger group's ring crosses instead (both directions, as the datasheet states it)
    link_gpus: int | None = None
    pcie_bw_bytes_per_s: float | None = None
    fp4_flops_per_s: float | None = None  # dense FP4 tensor-core FLOP/s (Blackwell: NVFP4/MXFP4 GEMMs), if it has them
    # a fully connected mesh's point-to-point link, usable bytes/s one direction (MI300X xGMI: each GPU a link to each
    # other one), so that a group of n GPUs has n - 1 links each
    mesh_link_bw_bytes_per_s: float | None = None

    @property
    def collective_bw_bytes_per_s(self) -> float:
        """The bus bandwidth the in-node collectives (TP all-reduces, MoE exchanges) run at: NCCL's measured figure
        where the catalog has one, else the measured links' share of one direction of the datasheet's link
        (`UNMEASURED_LINK_SHARE`)."""
        if self.allreduce_bw_bytes_per_s is not None:
            return self.allreduce_bw_bytes_per_s
        return self.interconnect_bw_bytes_per_s / 2 * UNMEASURED_LINK_SHARE

    @property
    def past_bridge_bw_bytes_per_s(self) -> float:
        """What a collective reaches over the PCIe link past the GPUs a bridge joins (unmeasured: the share of one
        direction of it); infinite for a card with no such link."""
        if self.pcie_bw_bytes_per_s is None:
            return math.inf
        return self.pcie_bw_bytes_per_s / 2 * UNMEASURED_LINK_SHARE

    def group_collective_bw_bytes_per_s(self, n_gpus: int) -> float:
        """`collective_bw_bytes_per_s` for a group of `n_gpus` in one node: over a full mesh, at most its n - 1 links
        a GPU; past the GPUs the interconnect joins (`link_gpus`: bridged pairs) the ring crosses PCIe between them."""
        bw = self.collective_bw_bytes_per_s
        if self.mesh_link_bw_bytes_per_s is not None:
            bw = min(bw, max(1, n_gpus - 1) * self.mesh_link_bw_bytes_per_s)
        if self.link_gpus is not None and self.pcie_bw_bytes_per_s is not None and n_gpus > self.link_gpus:
            bw = min(bw, self.past_bridge_bw_bytes_per_s)
        return bw

    def p2p_bw_bytes_per_s(self, a: int, b: int) -> float:
        """A point-to-point send from GPU `a` to GPU `b` of one node (a pipeline boundary's): over the one mesh link
        between them, past a bridge (GPUs in different bridged groups of `link_gpus`) over PCIe, else the node's link."""
        bw = self.collective_bw_bytes_per_s
        if self.mesh_link_bw_bytes_per_s is not None:
            bw = min(bw, self.mesh_link_bw_bytes_per_s)
        if self.link_gpus is not None and self.pcie_bw_bytes_per_s is not None and a // self.link_gpus != b // self.link_gpus:
            bw = min(bw, self.past_bridge_bw_bytes_per_s)
        return bw

    @property
    def total_memory_bytes(self) -> float:
        """The device's total memory as CUDA reports it (vLLM's budget is a share of this), else the datasheet's."""
        return self.device_memory_bytes if self.device_memory_bytes is not None else self.hbm_bytes

    def peak_flops_per_s(self, compute_dtype: str) -> float:
        if compute_dtype == "bf16":
            return self.bf16_flops_per_s
        if compute_dtype == "fp8":
            if self.fp8_flops_per_s is None:
                raise FleetsimError(f"gpu {self.name}: compute_dtype fp8 is not supported (no FP8 tensor cores)")
            return self.fp8_flops_per_s
        if compute_dtype == "fp4":
            if self.fp4_flops_per_s is None:
                raise FleetsimError(f"gpu {self.name}: compute_dtype fp4 is not supported (no FP4 tensor cores)")
            return self.fp4_flops_per_s
        raise FleetsimError(f"compute_dtype must be 'bf16', 'fp8' or 'fp4' (got {compute_dtype!r})")


class _GpuEntry(Frozen):
    """The YAML form of a catalog entry (datasheet units in the key names)."""

    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    bf16_tflops: float = Field(ge=MIN_HW_RATE, le=MAX_HW_RATE)
    fp8_tflops: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    fp4_tflops: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # dense, where it has FP4 tensor cores
    hbm_gb: float = Field(gt=0, le=MAX_HW_RATE)
    hbm_bw_gb_per_s: float = Field(ge=MIN_HW_RATE, le=MAX_HW_RATE)
    interconnect: str = ""
    interconnect_gb_per_s: float = Field(ge=MIN_HW_RATE, le=MAX_HW_RATE)
    allreduce_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)
    allreduce_latency_s: float = Field(default=1e-5, ge=0, le=MAX_OVERHEAD_S)
    mfu: float = Field(default=GENERIC_MFU, gt=0, le=1)
    mbu: float = Field(default=GENERIC_MBU, gt=0, le=1)
    layer_overhead_s: float = Field(default=GENERIC_LAYER_OVERHEAD_S, ge=0, le=MAX_OVERHEAD_S)
    overlap: float = Field(default=GENERIC_OVERLAP, ge=0, le=1)
    usd_per_gpu_hour: float | None = Field(default=None, ge=0, le=MAX_USD_PER_GPU_HOUR)
    price_source: str = ""
    price_as_of: str = ""
    device_memory_bytes: int | None = Field(default=None, gt=0, le=int(MAX_HW_RATE * GIGA))
    sm_count: int = Field(default=128, ge=1, le=100_000)
    link_gpus: int | None = Field(default=None, ge=1, le=100_000)  # GPUs the interconnect joins (a bridge: 2)
    pcie_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # the PCIe link past them
    ecc_reserve: bool = False  # GDDR with ECC on as shipped (data-center cards): 1/16 of it holds check bits
    mesh_link_gb_per_s: float | None = Field(default=None, ge=MIN_HW_RATE, le=MAX_HW_RATE)  # a full mesh's link

    @model_validator(mode="after")
    def _link_group_needs_pcie(self) -> _GpuEntry:
        if self.link_gpus is not None and self.pcie_gb_per_s is None:
            raise ValueError("link_gpus needs pcie_gb_per_s (the link a larger group crosses)")
        # the driver reports less than the datasheet's "N GB" read as N GiB (`DRIVER_SHARE`): more is another card's
        if self.device_memory_bytes is not None and self.device_memory_bytes > self.hbm_gb * GIB:
            raise ValueError(
                f"device_memory_bytes {self.device_memory_bytes:,} is more than hbm_gb {self.hbm_gb:g} GiB "
                f"({self.hbm_gb * GIB:,.0f} bytes): a driver reports less than the datasheet's memory, never more"
            )
        return self

    def driver_total(self) -> float:
        """The total the driver would report, from the datasheet's figure (`DRIVER_SHARE`), where no log gives it."""
        return self.hbm_gb * GIB * DRIVER_SHARE * (ECC_SHARE if self.ecc_reserve else 1.0)

    def to_spec(self, name: str) -> GpuSpec:
        return GpuSpec(
            name=name,
            description=self.description,
            bf16_flops_per_s=self.bf16_tflops * TERA,
            fp8_flops_per_s=None if self.fp8_tflops is None else self.fp8_tflops * TERA,
            fp4_flops_per_s=None if self.fp4_tflops is None else self.fp4_tflops * TERA,
            hbm_bytes=self.hbm_gb * GIGA,
            hbm_bw_bytes_per_s=self.hbm_bw_gb_per_s * GIGA,
            interconnect=self.interconnect,
            interconnect_bw_bytes_per_s=self.interconnect_gb_per_s * GIGA,
            allreduce_latency_s=self.allreduce_latency_s,
            mfu=self.mfu,
            mbu=self.mbu,
            layer_overhead_s=self.layer_overhead_s,
            overlap=self.overlap,
            usd_per_gpu_hour=self.usd_per_gpu_hour,
            price_source=self.price_source,
            price_as_of=self.price_as_of,
            device_memory_bytes=float(self.device_memory_bytes) if self.device_memory_bytes is not None else self.driver_total(),
            sm_count=self.sm_count,
            allreduce_bw_bytes_per_s=None if self.allreduce_gb_per_s is None else self.allreduce_gb_per_s * GIGA,
            link_gpus=self.link_gpus,
            pcie_bw_bytes_per_s=None if self.pcie_gb_per_s is None else self.pcie_gb_per_s * GIGA,
            mesh_link_bw_bytes_per_s=None if self.mesh_link_gb_per_s is None else self.mesh_link_gb_per_s * GIGA,
        )


@dataclass(frozen=True, slots=True)
class GpuCatalog:
    """Named GPUs plus aliases; lookups are case-insensitive."""

    gpus: dict[str, GpuSpec]
    aliases: dict[str, str]

    def get(self, name: str) -> GpuSpec:
        key = name.strip().lower()
        key = self.aliases.get(key, key)
        if key not in self.gpus:
            raise unknown_name("gpu", name, self.gpus)
        return self.gpus[key]

    def names(self) -> list[str]:
        return sorted(self.gpus)


def parse_gpu_entries(raw: Any, *, where: str) -> tuple[dict[str, GpuSpec], dict[str, str]]:
    if not isinstance(raw, dict):
        raise FleetsimError(f"{where}: a GPU catalog must be a mapping of name -> spec (got {type(raw).__name__})")
    if not raw:
        raise FleetsimError(f"{where}: a GPU catalog must name at least one GPU (got an empty mapping)")
    gpus: dict[str, GpuSpec] = {}
    aliases: dict[str, str] = {}
    for name, body in raw.items():
        key = str(name).lower()
        if not key.strip() or key != key.strip() or not key.isprintable():  # (listed, it printed "valid names: , a100")
            raise FleetsimError(f"{where}: a GPU's name must be printable text without surrounding spaces (got {name!r})")
        try:
            entry = _GpuEntry.model_validate(body)
        except ValidationError as err:
            raise from_validation_error(err, where=where, prefix=key, data=body) from None
        gpus[key] = entry.to_spec(key)
        for alias in entry.aliases:
            if not alias.strip() or not alias.isprintable():
                raise FleetsimError(f"{where}: {key}.aliases: an alias must be printable text (got {alias!r})")
            other = aliases.get(alias.lower())
            if other is not None and other != key:  # (the later would silently take the name from the earlier)
                raise FleetsimError(f"{where}: {key}.aliases: {alias!r} is already {other}'s alias; an alias names one GPU")
            aliases[alias.lower()] = key
    return gpus, aliases


@functools.cache
def _bundled_gpus() -> tuple[dict[str, GpuSpec], dict[str, str]]:
    text = resources.files("sim.data").joinpath("gpus.yaml").read_text()
    return parse_gpu_entries(yaml.safe_load(text), where="sim/data/gpus.yaml")


def load_gpu_catalog(extra: Path | None = None) -> GpuCatalog:
    """The bundled catalog, plus (overriding by name) the GPUs in `extra`, if given."""
    bundled_gpus, bundled_aliases = _bundled_gpus()
    gpus, aliases = dict(bundled_gpus), dict(bundled_aliases)
    if extra is not None:
        more_gpus, more_aliases = parse_gpu_entries(read_yaml(extra), where=str(extra))
        for alias, key in more_aliases.items():  # an alias that names another GPU would take that GPU's name over
            if alias != key and (alias in gpus or alias in more_gpus):
                raise FleetsimError(f"{extra}: {key}.aliases: {alias!r} is another GPU's name; an alias must not shadow it")
        for key in more_gpus:  # a GPU named as a bundled alias is that name's GPU now (overriding by name, as the rest)
            aliases.pop(key, None)
        gpus.update(more_gpus)
        aliases.update(more_aliases)
    return GpuCatalog(gpus=gpus, aliases=aliases)


def gpu_of_device(device: str) -> str | None:
    """The catalog GPU a CUDA device name denotes ("NVIDIA GeForce RTX 4090" -> rtx-4090), via the catalog's aliases;
    None for a device the catalog does not know."""
    catalog = load_gpu_catalog()
    key = device.strip().lower()
    for candidate in (key, key.removeprefix("nvidia ").strip(), key.removeprefix("nvidia ").replace(" ", "-")):
        if candidate in catalog.gpus or candidate in catalog.aliases:
            return catalog.get(candidate).name
    return None
