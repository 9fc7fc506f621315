"""The build phase's physics: a scenario's names resolved to specs (catalog lookups, a Hugging Face
config.json import, the user's GPU catalog), the roofline's numbers for one replica, and the checks
that the model runs on `tp` GPUs and fits in their memory. `config` only validates the schema; this
module is where a valid scenario can still turn out impossible (one-line errors, as everywhere).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sim.errors import FleetsimError, unknown_name
from sim.physics.hardware import GIGA, TERA, GpuCatalog, GpuSpec, load_gpu_catalog
from sim.physics.models import ModelCatalog, ModelSpec, load_model_catalog, resolve_model
from sim.physics.prices import capacity_price
from sim.physics.roofline import RooflineSetup, check_fits, check_step_time
from sim.scenario.config import LINK_PRESETS, EngineConfig, GpuOverride, RooflineConfig, Scenario


def apply_override(override: GpuOverride, gpu: GpuSpec) -> GpuSpec:
    """The catalog's GPU with a scenario's per-GPU corrections (given in the catalog's units)."""
    changes: dict[str, Any] = {}
    scaled = {
        "bf16_tflops": ("bf16_flops_per_s", TERA),
        "fp8_tflops": ("fp8_flops_per_s", TERA),
        "fp4_tflops": ("fp4_flops_per_s", TERA),
        "hbm_gb": ("hbm_bytes", GIGA),
        "hbm_bw_gb_per_s": ("hbm_bw_bytes_per_s", GIGA),
        "interconnect_gb_per_s": ("interconnect_bw_bytes_per_s", GIGA),
        "allreduce_gb_per_s": ("allreduce_bw_bytes_per_s", GIGA),
    }
    for key, value in override.model_dump(exclude_none=True).items():
        field, factor = scaled.get(key, (key, 1.0))
        changes[field] = value * factor
    if "hbm_bytes" in changes:  # the driver's total in the same proportion to the datasheet's as the catalog's (a
        # logged total, or the datasheet's GiB less what the driver keeps): the catalog's own figure changes nothing
        total = gpu.device_memory_bytes if gpu.device_memory_bytes is not None else gpu.hbm_bytes
        changes["device_memory_bytes"] = total * changes["hbm_bytes"] / gpu.hbm_bytes
    if "interconnect_bw_bytes_per_s" in changes:
        changes["link_gpus"] = None  # the link replaced may have joined only a pair (a bridge): the new one, the node
        changes["mesh_link_bw_bytes_per_s"] = None  # (and a mesh's links with it)
        if "allreduce_bw_bytes_per_s" not in changes:
            changes["allreduce_bw_bytes_per_s"] = None  # the catalog's NCCL figure was measured on the link replaced
    if "allreduce_bw_bytes_per_s" in changes:
        changes["mesh_link_bw_bytes_per_s"] = None  # a measured figure is the group's own, not capped by a mesh's links
    return replace(gpu, **changes)


def build_setup(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    tp: int,
    roofline: RooflineConfig,
    usd_per_gpu_hour: float | None = None,
    engine: EngineConfig | None = None,
    gpus_per_node: int = 8,
    scale_out: str = "infiniband_400g",
    dp: int = 1,
    expert_parallel: bool = False,
    expert_load_imbalance: float = 1.0,
    all2all_backend: str = "allgather_reducescatter",
    pp: int = 1,
) -> RooflineSetup:
    """Check that the model can run on `tp` GPUs and fits, then resolve the roofline's numbers. `engine`: the
    replica's engine, whose batch limits vLLM's memory profiling uses (default: the engine defaults)."""
    engine = engine if engine is not None else EngineConfig()
    model.check_tp(tp)
    if engine.max_model_len is not None and engine.max_model_len > model.max_context_tokens:
        raise FleetsimError(
            f"engine.max_model_len: {engine.max_model_len:,} tokens is above {model.name}'s context of "
            f"{model.max_context_tokens:,} (its max_position_embeddings; vLLM refuses a longer max_model_len too)"
        )
    check_moe_layout(model, tp=tp, dp=dp, expert_parallel=expert_parallel, imbalance=expert_load_imbalance)
    if pp > 1 and pp > model.n_layers:
        raise FleetsimError(f"fleet.pp: {pp} pipeline stages for {model.name}'s {model.n_layers} layers (at most one a layer)")
    if pp > 1 and model.is_moe and dp > 1:
        raise FleetsimError(
            f"fleet.pp: pipeline stages with an MoE model's DP group (fleet.dp = {dp}) are not modelled; give fleet.pp 1 "
            "or fleet.dp 1"
        )
    if all2all_backend != "allgather_reducescatter" and not expert_parallel:
        raise FleetsimError(
            f"fleet.all2all_backend: {all2all_backend} dispatches tokens to whole experts and needs "
            "fleet.expert_parallel (experts sharded by tensor parallelism exchange by allgather_reducescatter)"
        )
    override = roofline.gpu_overrides.get(gpu.name)
    if override is not None:
        gpu = apply_override(override, gpu)

    def pick(name: str) -> float:
        """The GPU's own figure (catalog, or its `gpu_overrides` entry, which wins) unless the block sets one."""
        block = getattr(roofline, name)
        if block is not None and (override is None or getattr(override, name) is None):
            return float(block)
        return float(getattr(gpu, name))

    mfu, mbu = pick("mfu"), pick("mbu")
    dtype = compute_dtype(roofline, model, gpu)
    setup = RooflineSetup(
        model=model,
        gpu=gpu,
        tp=tp,
        effective_flops_per_s=gpu.peak_flops_per_s(dtype) * mfu,
        effective_hbm_bw_bytes_per_s=gpu.hbm_bw_bytes_per_s * mbu,
        weight_bits=roofline.weight_bits,
        kv_bits=roofline.kv_bits,
        activation_bits=roofline.activation_bits,
        compute_dtype=dtype,
        attention=roofline.attention,
        comm=roofline.comm,
        logits_sampled_only=roofline.logits == "sampled",
        step_overhead_s=roofline.step_overhead_s,
        seq_overhead_s=roofline.seq_overhead_s,
        layer_overhead_s=pick("layer_overhead_s"),
        overlap=pick("overlap"),
        gpu_memory_utilization=roofline.gpu_memory_utilization,
        memory_reserve_bytes=roofline.memory_reserve_gb * GIGA,
        usd_per_gpu_hour=usd_per_gpu_hour if usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour,
        kv_memory=roofline.kv_memory,
        profile_tokens=engine.batched_tokens(model.max_context_tokens),
        profile_seqs=engine.max_num_seqs,
        max_model_len=engine.max_model_len,
        cuda_graphs=not engine.enforce_eager,
        hybrid_kv=not engine.disable_hybrid_kv_cache_manager,
        gpus_per_node=gpus_per_node,
        scale_out_bytes_per_s=LINK_PRESETS[scale_out][0] * GIGA,
        scale_out_latency_s=LINK_PRESETS[scale_out][1],
        dp=dp,
        expert_parallel=expert_parallel,
        expert_load_imbalance=expert_load_imbalance,
        all2all=all2all_backend,
        pp=pp,
    )
    check_fits(setup)
    check_step_time(setup)
    return setup


def check_moe_layout(model: ModelSpec, *, tp: int, dp: int, expert_parallel: bool, imbalance: float = 1.0) -> None:
    """Expert parallelism needs an MoE model whose routed experts divide evenly over the group's GPUs; without it each
    expert is sharded over the dp x tp GPUs, which must divide its intermediate size (vLLM's FusedMoE asserts so: its
    MoE layers' tensor-parallel group is the DP group's GPUs flattened); a load imbalance is the hottest GPU's share over
    the mean, so it needs expert parallelism and is at most the group's GPU count."""
    if not expert_parallel:
        if imbalance != 1.0:
            raise FleetsimError(
                f"fleet.expert_load_imbalance: the hottest GPU's routed tokens over the mean apply with "
                f"fleet.expert_parallel (got {imbalance:g} without it)"
            )
        width, group = model.moe_intermediate_size or model.intermediate_size, dp * tp
        if model.is_moe and width % group:
            raise FleetsimError(
                f"fleet.dp x fleet.tp = {group} GPUs must divide the experts' intermediate size {width} of {model.name} "
                "(without fleet.expert_parallel each expert is sharded over them); set fleet.expert_parallel or pick "
                f"dp x tp among {', '.join(str(g) for g in range(1, 129) if width % g == 0)}"
            )
        return
    if not model.is_moe:
        raise FleetsimError(f"fleet.expert_parallel: {model.name} is not a mixture-of-experts model (it has no experts)")
    group = dp * tp
    if model.n_experts % group:
        raise FleetsimError(
            f"fleet.expert_parallel: {model.n_experts} experts of {model.name} do not divide over dp x tp = {group} GPUs"
        )
    if imbalance > group:
        raise FleetsimError(
            f"fleet.expert_load_imbalance: the hottest of dp x tp = {group} GPUs gets at most {group}x the mean "
            f"(got {imbalance:g})"
        )


def compute_dtype(roofline: RooflineConfig, model: ModelSpec, gpu: GpuSpec) -> str:
    """The GEMMs' precision: as given; else FP4 for 4-bit weights on a GPU with FP4 tensor cores (Blackwell: vLLM runs
    an NVFP4 checkpoint W4A4, FP4 GEMMs; give `bf16` for a weight-only 4-bit format such as AWQ or GPTQ, W4A16); else
    FP8 for a checkpoint shipped in FP8 (its weights as shipped) on a GPU with FP8 tensor cores (vLLM runs such
    checkpoints W8A8: block-scaled FP8 GEMMs); else BF16 (an A100 runs them W8A16)."""
    if roofline.compute_dtype is not None:
        return roofline.compute_dtype
    if roofline.weight_bits == 4 and gpu.fp4_flops_per_s is not None:
        return "fp4"
    shipped_fp8 = roofline.weight_bits is None and model.shipped_quant == "fp8"
    return "fp8" if shipped_fp8 and gpu.fp8_flops_per_s is not None else "bf16"


def check_override_names(roofline: RooflineConfig, gpus: GpuCatalog) -> None:
    for name in roofline.gpu_overrides:
        if name in gpus.aliases and gpus.aliases[name] != name:
            raise FleetsimError(
                f"roofline.gpu_overrides: {name!r} is an alias of {gpus.aliases[name]!r}; key its overrides by the GPU's "
                f"name, {gpus.aliases[name]}"
            )
        if name not in gpus.gpus:
            raise FleetsimError(f"roofline.gpu_overrides: {unknown_name('gpu', name, gpus.gpus)}")


def _relative(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def resolve_scenario(
    scenario: Scenario,
    *,
    base_dir: Path | None = None,
    models: ModelCatalog | None = None,
    gpus: GpuCatalog | None = None,
) -> RooflineSetup:
    """Names -> specs (catalog lookups, config.json import), then `build_setup`."""
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    if gpus is None:
        extra = _relative(scenario.gpu_catalog, base_dir) if scenario.gpu_catalog else None
        gpus = load_gpu_catalog(extra)
    models = models or load_model_catalog()
    check_override_names(scenario.roofline, gpus)
    name = _model_name("model", scenario.model, base_dir, models)
    model = _keyed("model", lambda: resolve_model(name, models))
    gpu = _keyed("fleet.gpu", lambda: gpus.get(scenario.fleet.gpu))
    _keyed("fleet.tp", lambda: model.check_tp(scenario.fleet.tp))
    price = on_demand_price(scenario.pricing.usd_per_gpu_hour, scenario.pricing.provider, gpu.name)
    return _keyed(
        "fleet.gpu, fleet.tp",
        lambda: build_setup(
            model,
            gpu,
            tp=scenario.fleet.tp,
            roofline=scenario.roofline,
            usd_per_gpu_hour=price,
            engine=scenario.engine,
            gpus_per_node=scenario.fleet.gpus_per_node,
            scale_out=scenario.fleet.scale_out,
            dp=scenario.fleet.dp,
            expert_parallel=scenario.fleet.expert_parallel,
            expert_load_imbalance=scenario.fleet.expert_load_imbalance,
            all2all_backend=scenario.fleet.all2all_backend,
            pp=scenario.fleet.pp,
        ),
    )


def on_demand_price(given: float | None, provider: str | None, gpu: str) -> float | None:
    """The on-demand $/GPU-hour: as given, else the provider's in the capacity price sheet (`pricing.provider`), else
    None (the GPU catalog's, in `build_setup`)."""
    if given is not None or provider is None:
        return given
    price = capacity_price(gpu, provider).on_demand
    if price is None:
        raise FleetsimError(
            f"pricing.provider: the capacity price sheet has no {provider} on-demand price for {gpu}; give pricing.usd_per_gpu_hour"
        )
    return price


def _model_name(key: str, name: str, base_dir: Path, models: ModelCatalog) -> str:
    """A catalog name as it is, a path made relative to the scenario; an unknown name is an error listing the catalog."""
    if name.strip().lower() in models.models:
        return name
    candidate = _relative(name, base_dir)
    if not (candidate.suffix == ".json" or candidate.exists()):  # a name that is not in the catalog
        raise FleetsimError(f"{key}: {unknown_name('model', name, models.models)} (or a path to a config.json)")
    return str(candidate)


def check_names(scenario: Scenario, *, base_dir: Path | None = None, gpus: GpuCatalog | None = None) -> None:
    """Every name the scenario gives resolves: the model and the speculative draft model (the catalog, or a
    config.json path), each GPU (the fleet's and its pools'). An unknown one is the error the build would raise,
    naming the key and the valid names; cheap (catalog lookups: no config.json is read, no fit is checked), so a
    sweep or plan checks every point before anything runs."""
    base_dir = base_dir if base_dir is not None else scenario.base_dir
    if gpus is None:
        gpus = load_gpu_catalog(_relative(scenario.gpu_catalog, base_dir) if scenario.gpu_catalog else None)
    models = load_model_catalog()
    _model_name("model", scenario.model, base_dir, models)
    fleet = scenario.fleet
    for key, gpu in (("fleet.gpu", fleet.gpu), ("fleet.prefill.gpu", fleet.prefill.gpu), ("fleet.decode.gpu", fleet.decode.gpu)):
        if gpu is not None:
            _keyed(key, functools.partial(gpus.get, gpu))
    for key, engine in (
        ("engine", scenario.engine),
        ("fleet.prefill.engine", fleet.prefill.engine),
        ("fleet.decode.engine", fleet.decode.engine),
    ):
        if engine is not None and engine.speculative is not None and engine.speculative.draft_model is not None:
            _model_name(f"{key}.speculative.draft_model", engine.speculative.draft_model, base_dir, models)


T = TypeVar("T")


def _keyed(key: str, step: Callable[[], T]) -> T:
    """Run one resolution step; its error names the scenario key it came from (unless it names its own key: a check
    of `fleet.expert_parallel` in the step was `fleet.gpu, fleet.tp: fleet.expert_parallel: ...`)."""
    try:
        return step()
    except FleetsimError as err:
        if _OWN_KEY.match(str(err)):
            raise
        raise FleetsimError(f"{key}: {err}") from None


_OWN_KEY = re.compile(r"(fleet|engine|roofline|pricing|model)(\.[a-z0-9_]+)*: ")
