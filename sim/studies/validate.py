"""End-to-end accuracy: replay a real serving run's requests on the run's own setup and compare latencies.

`validate(log, scenario)` replays the log's arrivals and token counts (`sim.workload.runlog`) on one warm replica of
the scenario's fleet (never autoscaled: the real run had a fixed server) and compares, simulated against measured,
TTFT, TPOT, ITL (when the log has per-token times) and E2E: mean, median, p90, p99, with the relative error; and,
when the log has a time series, the running and waiting requests and the KV-cache use over time.

`scenario_from_meta(meta)` writes the scenario a run's `meta.json` describes (vLLM's engine arguments and resolved
configuration, the hardware): model, GPU, TP, DP and expert parallelism, `max_num_seqs`, `max_num_batched_tokens`,
chunked prefill and `long_prefill_token_threshold`, block size, `gpu_memory_utilization`, `num_gpu_blocks_override`,
`enforce_eager`, async scheduling, weights and KV-cache dtypes. A value vLLM resolved (`resolved_config`, `kv_cache`)
wins over the argument it was given (`engine_kwargs`), which wins over vLLM's default; what cannot be mapped is
listed. The KV cache is sized by fleetsim (`kv_blocks="computed"`, the prediction being judged) or taken from the
run's log (`"logged"`: vLLM's own count, to judge the step times alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError, _short
from sim.physics.hardware import gpu_of_device
from sim.physics.models import resolve_model
from sim.results.result import SimResult
from sim.run.fleet.control import MAX_TIMELINE_SAMPLES
from sim.run.pools import check_pipeline
from sim.run.simulate import simulate
from sim.scenario.config import LINK_PRESETS, Scenario, parse_config
from sim.scenario.importer import model_from_name, weight_bits_from_name
from sim.scenario.resolve import resolve_scenario
from sim.scenario.vllm_args import KV_DTYPES_KNOWN, kv_bits_of, weight_bits_of
from sim.spec import MIN_INTERVAL_S
from sim.workload.hash_ids import as_column
from sim.workload.runlog import RunLog

STATS = ("mean", "p50", "p90", "p99")
# no run's fastest first token takes longer: a CSV log whose every TTFT does is likely on another time unit (a note)
SLOWEST_FIRST_TOKEN_S = 60.0
MAX_TICK_S = 3600.0  # a run's time series samples every tick_seconds: more than an hour a tick is no time series
METRICS = ("ttft", "tpot", "itl", "e2e")


@dataclass(frozen=True, slots=True)
class Comparison:
    """Simulated vs measured, per metric and statistic (seconds), and over time."""

    rows: list[dict[str, Any]]  # metric, stat, real_s, sim_s, error (sim / real - 1)
    series: pd.DataFrame | None  # t_s, real/sim running, waiting, kv_use (a share) on the log's ticks
    kv_blocks: dict[
        str, int | None
    ]  # the simulated replica's blocks, vLLM's logged count for one (a pipeline's engine: 1/pp) and the server's
    notes: list[str] = field(default_factory=list)
    result: SimResult | None = None

    def error(self, metric: str, stat: str = "mean") -> float | None:
        for r in self.rows:
            if r["metric"] == metric and r["stat"] == stat:
                return None if r["error"] is None else float(r["error"])
        return None


def _stat(values: np.ndarray, stat: str) -> float:
    if stat == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, {"p50": 50, "p90": 90, "p99": 99}[stat]))


def _lookup_model(name: str) -> str:
    found = model_from_name(name)
    if found is None:
        raise FleetsimError(
            f"meta.json model: {name!r} is not in the model catalog; pass --scenario with the model (a catalog name or a config.json)"
        )
    return found


def gpu_name_of_device(device: str) -> str:
    """The catalog GPU a CUDA device name denotes (`sim.physics.hardware.gpu_of_device`), or a one-line refusal."""
    found = gpu_of_device(device)
    if found is not None:
        return found
    raise FleetsimError(
        f"meta.json hardware.device_name: no catalog GPU is named {device!r}; pass --scenario with the fleet's GPU (a "
        "catalog name, or one its gpu_catalog file adds)"
    )


def _section(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """meta.json's object at `key` ({} when absent or null)."""
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise FleetsimError(f"meta.json {where}{key}: must be a JSON object (got {_short(v)})")
    return v


def _int(d: dict[str, Any], key: str, where: str, default: int | None, minimum: int = 1) -> int | None:
    """meta.json's whole number at `key` (`default` when absent or null)."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise FleetsimError(f"meta.json {where}{key}: must be a whole number >= {minimum} (got {_short(v)})")
    return v


def _flag(d: dict[str, Any], key: str, where: str) -> bool | None:
    """meta.json's true/false at `key` (None when absent or null)."""
    v = d.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise FleetsimError(f"meta.json {where}{key}: must be true or false (got {_short(v)})")


def _text(d: dict[str, Any], key: str, where: str) -> str | None:
    """meta.json's string at `key` (None when absent, null or empty)."""
    v = d.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise FleetsimError(f"meta.json {where}{key}: must be a string (got {_short(v)})")
    return v


def _cache_section(meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """meta.json's cache configuration (`kv_cache`, else `resolved_config.cache_config`) and where it was read."""
    if meta.get("kv_cache"):
        return _section(meta, "kv_cache", ""), "kv_cache."
    return _section(_section(meta, "resolved_config", ""), "cache_config", "resolved_config."), "resolved_config.cache_config."


@contextlib.contextmanager
def meta_named(log: RunLog) -> Iterator[None]:
    """Errors in the log's meta.json (raised as `meta.json FIELD: ...`) name the file by its path."""
    try:
        yield
    except FleetsimError as err:
        text = str(err)
        if not text.startswith(("meta.json ", "meta.json:")):
            raise
        raise FleetsimError(f"{Path(log.source).parent / 'meta.json'}{text.removeprefix('meta.json')}") from None


def log_scenario(log: RunLog) -> tuple[dict[str, Any], list[str]]:
    """`scenario_from_meta` of the log's meta.json, its errors naming the file by its path."""
    assert log.meta is not None
    with meta_named(log):
        return scenario_from_meta(log.meta)


def scenario_from_meta(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A scenario dict for one replica of the run's setup, and notes on what was not mapped. Each field it reads is
    checked for its type (a bad one is named, as `meta.json engine_kwargs.tensor_parallel_size`)."""
    kw = _section(meta, "engine_kwargs", "")
    resolved = _section(meta, "resolved_config", "")
    sched = _section(resolved, "scheduler_config", "resolved_config.")
    cache, cache_where = _cache_section(meta)
    hardware = _section(meta, "hardware", "")
    model_config = _section(resolved, "model_config", "resolved_config.")
    notes: list[str] = []
    model = _text(kw, "model", "engine_kwargs.") or _text(meta, "model", "")
    if not model:
        raise FleetsimError("meta.json: no model (engine_kwargs.model or model)")
    device = _text(hardware, "device_name", "hardware.")
    if not device:
        raise FleetsimError("meta.json: no hardware.device_name; pass --scenario with the fleet's GPU")
    tp = _int(kw, "tensor_parallel_size", "engine_kwargs.", 1)
    dp = _int(kw, "data_parallel_size", "engine_kwargs.", 1)
    assert tp is not None and dp is not None
    pp = _int(kw, "pipeline_parallel_size", "engine_kwargs.", 1)
    assert pp is not None
    devices = _int(hardware, "device_count", "hardware.", None)
    if devices is not None and devices < tp * pp * dp:  # (a server cannot run on fewer GPUs than its layout takes)
        raise FleetsimError(
            f"meta.json hardware.device_count: {devices} GPUs, fewer than the layout takes (tensor_parallel_size x "
            f"pipeline_parallel_size x data_parallel_size = {tp} x {pp} x {dp} = {tp * pp * dp})"
        )
    version = vllm_version(meta.get("vllm_version"))
    on_v0 = False  # (vLLM before 0.9 serves PP on its V0 engine: its host loop is V0's)
    if pp > 1:
        on_v0 = version is not None and version < (0, 9)
        how = (
            " (vLLM before 0.9 runs PP on its V0 engine so)"
            if on_v0
            else " as V0 ran them (vLLM 0.9+ runs PP on its V1 engine with one scheduler over the whole KV cache and pp "
            "batches in flight, which this approximates)"
        )
        notes.append(
            f"pipeline_parallel_size={pp}: replayed as the server's {pp} virtual engines{how}, each its own scheduler, batch "
            f"and 1/{pp} of the KV cache, its steps through all {pp} stages of {tp} GPUs (fleet.pp)"
        )
    if devices is not None and devices > tp * pp * dp:
        notes.append(
            f"hardware.device_count={devices}: more GPUs than the server's layout takes ({tp * pp * dp}); replayed as "
            "that one server"
        )
    if dp > 1:  # each DP rank has its own scheduler, batch and KV cache; the coordinator balances requests
        notes.append(
            f"data_parallel_size={dp}: each rank replayed as a replica of its own behind a least-outstanding router "
            "(an MoE model's ranks share its experts, fleet.dp, and step in lock-step, in groups of dp)"
        )
    weight_bits: int | None = None  # (as the checkpoint ships)
    quant = _text(kw, "quantization", "engine_kwargs.") or _text(model_config, "quantization", "resolved_config.model_config.")
    if quant:
        bits = weight_bits_of(quant)
        if bits is None:
            notes.append(
                f"quantization={quant}: its weight precision is not known from the method (the checkpoint's own precision assumed)"
            )
        else:
            weight_bits = bits
    elif (named := weight_bits_from_name(model)) is not None:  # (vLLM reads a quantized checkpoint's own config)
        weight_bits = named
        notes.append(f"weights: {named}-bit, as the model's name says (no quantization in meta.json)")
    kv_field = "engine_kwargs.kv_cache_dtype"
    kv_dtype = _text(kw, "kv_cache_dtype", "engine_kwargs.")
    if kv_dtype is None:
        kv_field, kv_dtype = f"{cache_where}cache_dtype", _text(cache, "cache_dtype", cache_where) or "auto"
    kv_bits = kv_bits_of(kv_dtype)
    if kv_bits is None:
        raise FleetsimError(f"meta.json {kv_field}: not a KV cache type fleetsim knows ({KV_DTYPES_KNOWN}) (got {kv_dtype!r})")
    # (a setting vLLM resolved wins over the argument it was given; the argument, over vLLM's default)
    chunked = _flag(sched, "enable_chunked_prefill", "resolved_config.scheduler_config.")
    if chunked is None:
        chunked = _flag(kw, "enable_chunked_prefill", "engine_kwargs.")
    engine: dict[str, Any] = {
        "policy": "chunked" if chunked is None or chunked else "prefill_first",
        "max_num_seqs": _int(kw, "max_num_seqs", "engine_kwargs.", None)
        or _int(sched, "max_num_seqs", "resolved_config.scheduler_config.", 256),
        "block_size": _int(cache, "block_size", cache_where, None) or _int(kw, "block_size", "engine_kwargs.", 16),
    }
    eager = _flag(model_config, "enforce_eager", "resolved_config.model_config.")
    if eager is None:
        eager = _flag(kw, "enforce_eager", "engine_kwargs.")
    if eager:
        engine["enforce_eager"] = True
        notes.append(
            "enforce_eager: no CUDA graphs, so no graph memory taken from the KV cache; the steps are still priced as "
            "with graphs (eager mode's kernel-launch time is not modelled)"
        )
    override = _int(cache, "num_gpu_blocks_override", cache_where, None) or _int(
        kw, "num_gpu_blocks_override", "engine_kwargs.", None
    )
    if override:
        engine["num_gpu_blocks_override"] = override
    threshold = _int(sched, "long_prefill_token_threshold", "resolved_config.scheduler_config.", None, minimum=0)
    if threshold is None:
        threshold = _int(kw, "long_prefill_token_threshold", "engine_kwargs.", None, minimum=0)
    if threshold:  # (0: vLLM's "no threshold")
        engine["long_prefill_token_threshold"] = threshold
    no_hybrid = _flag(sched, "disable_hybrid_kv_cache_manager", "resolved_config.scheduler_config.")
    if no_hybrid is None:
        no_hybrid = _flag(kw, "disable_hybrid_kv_cache_manager", "engine_kwargs.")
    if no_hybrid is None and (kw.get("kv_transfer_config") or resolved.get("kv_transfer_config")):
        no_hybrid = True  # (vLLM turns the hybrid KV cache manager off when a KV connector is set)
    if no_hybrid is not None:
        engine["disable_hybrid_kv_cache_manager"] = no_hybrid
    spec = kw.get("speculative_config") or resolved.get("speculative_config")
    if spec:
        notes.append(
            "speculative_config: the run decoded speculatively; replayed without (the log says nothing of the "
            "acceptance rate: set engine.speculative with --scenario)"
        )
    dtype = _text(kw, "dtype", "engine_kwargs.") or _text(model_config, "dtype", "resolved_config.model_config.")
    if dtype and dtype.strip().lower().removeprefix("torch.") in ("float32", "float", "fp32"):
        notes.append(f"dtype={dtype}: 32-bit activations are not modelled (replayed with 16-bit)")
    mnbt = _int(kw, "max_num_batched_tokens", "engine_kwargs.", None) or _int(
        sched, "max_num_batched_tokens", "resolved_config.scheduler_config.", None
    )
    if mnbt:
        if mnbt < engine["max_num_seqs"]:  # (vLLM's SchedulerConfig refuses to start so: a run never had it)
            raise FleetsimError(
                f"meta.json: max_num_batched_tokens must be >= max_num_seqs, as vLLM requires (got {mnbt} and "
                f"{engine['max_num_seqs']})"
            )
        engine["max_num_batched_tokens"] = mnbt
    # async scheduling: as the run set it, else vLLM's default (on since 0.14: PR #27614)
    asynchronous = _flag(sched, "async_scheduling", "resolved_config.scheduler_config.")
    given = _flag(kw, "async_scheduling", "engine_kwargs.")
    if asynchronous is None:
        asynchronous = given
    if asynchronous is not None:
        notes.append(f"async scheduling: {'on' if asynchronous else 'off'}, as the run set it")
    else:
        asynchronous = version is not None and version >= (0, 14)
        if version is None:
            notes.append("async scheduling: the run's vLLM version is not known (replayed without)")
        else:
            notes.append(f"async scheduling: {'on' if asynchronous else 'off'}, vLLM {version[0]}.{version[1]}'s default")
    engine["async_scheduling"] = bool(asynchronous)
    host = host_loop(version, asynchronous=bool(asynchronous), v0=on_v0)
    if host is not None:
        (step_s, seq_s), measured_on = host
        notes.append(
            f"host loop: {step_s * 1e6:g} us a step + {seq_s * 1e6:g} us a scheduled request the GPU waits for (no async "
            f"scheduling; {measured_on} measured on one 2.6 GHz Zen 4 core: benchmarks/host/)"
        )
    elif not asynchronous and version is not None:  # (older than any measurement: said, not guessed)
        notes.append(
            f"host loop: none measured for vLLM {version[0]}.{version[1]} (the earliest measured is 0.8.3: "
            "benchmarks/host/); replayed without the host time a synchronous engine's GPU waits for, which grows with "
            "the running requests (vLLM 0.8.3's V0 loop took 156 us a request a step)"
        )
    if _flag(cache, "enable_prefix_caching", cache_where):
        notes.append("prefix caching: on in the run; replayed without shared prefixes (the log has no prompt hashes)")
    tick = meta.get("tick_seconds")
    # (the replay samples its time series every tick: as often as a scenario's timeline may, fleet.timeline_interval_s)
    if tick is not None and (
        isinstance(tick, bool) or not isinstance(tick, int | float) or not MIN_INTERVAL_S <= tick <= MAX_TICK_S
    ):
        raise FleetsimError(
            f"meta.json tick_seconds: must be in [{MIN_INTERVAL_S:g}, {MAX_TICK_S:g}] seconds (got {_short(tick)})"
        )
    gmu_where, gmu = cache_where, cache.get("gpu_memory_utilization")
    if gmu is None:
        gmu_where, gmu = "engine_kwargs.", kw.get("gpu_memory_utilization")
    if gmu is not None and (isinstance(gmu, bool) or not isinstance(gmu, int | float) or not 0 < gmu <= 1):
        raise FleetsimError(f"meta.json {gmu_where}gpu_memory_utilization: must be in (0, 1] (got {_short(gmu)})")
    a2a = _text(kw, "all2all_backend", "engine_kwargs.")
    nodes = _int(hardware, "gpus_per_node", "hardware.", None)  # (a server across nodes: its stages' and TP's links)
    network = _text(hardware, "scale_out", "hardware.")  # the network between them (a LINK_PRESETS name)
    if network is not None and network not in LINK_PRESETS:
        raise FleetsimError(f"meta.json hardware.scale_out: one of {', '.join(LINK_PRESETS)} (got {network!r})")
    catalog_model = _lookup_model(model)
    expert_parallel = bool(_flag(kw, "enable_expert_parallel", "engine_kwargs."))
    if (expert_parallel or a2a) and not resolve_model(catalog_model).is_moe:  # (vLLM runs a dense model so: no experts)
        flags = " and ".join(f for f, v in (("enable_expert_parallel", expert_parallel), (f"all2all_backend={a2a}", a2a)) if v)
        notes.append(
            f"{flags}: {catalog_model} has no experts (vLLM ignores {'them' if ' and ' in flags else 'it'}; replayed without)"
        )
        expert_parallel, a2a = False, None
    scenario = {
        "model": catalog_model,
        "fleet": {
            "gpu": gpu_name_of_device(device),
            "tp": tp,
            "autoscaler": {"policy": "fixed", "replicas": dp * pp},
            "dp": dp,
            "pp": pp,
            **({"gpus_per_node": nodes} if nodes else {}),
            **({"scale_out": network} if network else {}),
            "expert_parallel": expert_parallel,
            **({"all2all_backend": a2a} if a2a else {}),
            "router": "least_outstanding",
            "timeline_interval_s": float(tick or 1.0),
        },
        "engine": engine,
        "roofline": {
            "gpu_memory_utilization": float(gmu or 0.9),
            "weight_bits": weight_bits,
            "kv_bits": kv_bits,
            **({"step_overhead_s": host[0][0], "seq_overhead_s": host[0][1]} if host is not None else {}),
        },
    }
    return scenario, notes


# vLLM's V1 engine core per step, measured (benchmarks/host/measure_host.py: the real Scheduler, the shared-memory
# broadcast to 8 TP workers and their replies, update_from_output and the output encoding, fed a fabricated model
# output, on a 2.6 GHz Zen 4 core): seconds a step and a running request, by the first version each applies from
HOST_LOOP: tuple[tuple[tuple[int, int], str, float, float], ...] = (
    ((0, 8), "vLLM 0.8.3's V1 engine core", 60e-6, 5.9e-6),
    ((0, 11), "vLLM 0.11.0's V1 engine core", 13e-6, 9.3e-6),
)
# vLLM's V0 engine loop for one virtual engine of a pipeline (async output processing off, as V0 runs pipeline
# parallelism), measured the same way (benchmarks/host/measure_host_v0.py: the real LLMEngine.step, its V0 scheduler,
# output processing and incremental detokenization, with the step's request pickled to the later stages' driver
# worker and the sampler's output built and pickled back as the Ray executor does)
HOST_LOOP_V0: tuple[tuple[tuple[int, int], str, float, float], ...] = (
    ((0, 8), "vLLM 0.8.3's V0 engine loop (a pipeline's virtual engine)", 200e-6, 156e-6),
)
# vLLM's V1 model runner on the host per step, synchronous scheduling (benchmarks/host/measure_worker.py: the real
# GPUModelRunner.execute_model on CPU tensors, the forward pass and the sampler stubbed, as on a GPU they are device
# work), added to the engine core's
HOST_WORKER: tuple[tuple[tuple[int, int], str, float, float], ...] = (
    ((0, 8), "vLLM 0.8.3's V1 model runner", 154e-6, 2.36e-6),
    ((0, 11), "vLLM 0.11.0's V1 model runner", 254e-6, 6.3e-6),
)
# V0's first pipeline stage's driver worker preparing the step's input tensors on the engine's own thread
# (benchmarks/host/measure_worker_v0.py: the real ModelRunner._prepare_model_input_tensors with FlashAttention's V0
# metadata builder, on CPU tensors; the last stage's sampling metadata overlaps the first stage's GPU work), added to
# V0's loop
HOST_WORKER_V0: tuple[tuple[tuple[int, int], str, float, float], ...] = (
    ((0, 8), "vLLM 0.8.3's V0 driver worker (the first stage's input tensors)", 112e-6, 16.5e-6),
)


def _latest(
    table: tuple[tuple[tuple[int, int], str, float, float], ...], version: tuple[int, int]
) -> tuple[float, float, str] | None:
    """The last measurement in `table` at or before `version`: (seconds a step, a request, what was measured)."""
    found = None
    for since, name, step_s, seq_s in table:
        if version >= since:
            found = (step_s, seq_s, name)
    return found


def host_loop(version: tuple[int, int] | None, *, asynchronous: bool, v0: bool) -> tuple[tuple[float, float], str] | None:
    """The engine loop's host time the GPU waits for, (seconds a step, a scheduled request) and what was measured: the
    latest measurement at or before the run's vLLM version, of its V1 engine core or (`v0`: a pipeline served by vLLM
    before 0.9) of its V0 engine loop, plus its model runner's (`HOST_WORKER`, `HOST_WORKER_V0`) where one was measured
    at or before the version; None with async scheduling (the loop runs under the GPU's step) or for a version older than
    any measured."""
    if asynchronous or version is None:
        return None
    core = _latest(HOST_LOOP_V0 if v0 else HOST_LOOP, version)
    if core is None:
        return None
    worker = _latest(HOST_WORKER_V0 if v0 else HOST_WORKER, version)  # (its inputs prepared while the GPU waits)
    if worker is None:
        return (core[0], core[1]), core[2]
    return (core[0] + worker[0], core[1] + worker[1]), f"{core[2]} and {worker[2]}"


def vllm_version(text: object) -> tuple[int, int] | None:
    """(major, minor) of a vLLM version string ("0.19.0", "0.11.1rc2", "v0.8.3"), None when there is none."""
    m = re.match(r"v?(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def logged_blocks(meta: dict[str, Any] | None) -> int | None:
    if not meta:
        return None
    return _int(_section(meta, "kv_cache", ""), "num_gpu_blocks", "kv_cache.", None)


def replay_scenario(
    log: RunLog,
    scenario: dict[str, Any] | None,
    *,
    kv_blocks: str = "computed",
    base_dir: Path | None = None,
    given_as: str = "--scenario",
) -> tuple[Scenario, list[str]]:
    """The scenario to replay: the given one (a scenario dict, paths in it relative to `base_dir`) or the run's
    meta.json's, as one fixed warm replica, with vLLM's logged KV block count when `kv_blocks` is "logged"."""
    notes: list[str] = []
    where = given_as
    if scenario is None:
        where = f"the scenario replayed from {Path(log.source).parent / 'meta.json'}"
        if log.meta is None:
            raise FleetsimError(
                f"{log.source}: no meta.json beside the log; pass --scenario with the run's model, GPU and engine"
            )
        raw, notes = log_scenario(log)
    else:
        raw = dict(scenario)
        raw.pop("trace", None)
        parse_config(raw, where=given_as, base_dir=base_dir)  # checked as given (its fleet is replaced below)
        if raw.get("batch") is not None:  # (its jobs would add requests the log does not hold)
            raw.pop("batch")
            notes.append("batch: the scenario's batch jobs are not replayed (a replay serves the log's requests only)")
        logged = (log.meta or {}).get("model")
        if isinstance(logged, str) and isinstance(raw.get("model"), str):
            ran = model_from_name(logged)  # (a name the catalog does not know is left to the user's scenario)
            given = model_from_name(raw["model"])
            if ran is not None and given is not None and ran != given:
                notes.append(
                    f"model: the scenario replays {given}, the run served {logged} (meta.json): a what-if, not the "
                    "run's own setup"
                )
    fleet = dict(raw.get("fleet") or {})
    auto = fleet.get("autoscaler") or {}
    fixed = auto.get("replicas") if auto.get("policy") == "fixed" else auto.get("initial_replicas", auto.get("min_replicas"))
    fleet["autoscaler"] = {"policy": "fixed", "replicas": int(fixed or 1)}  # the real server's replicas, held
    fleet["lifecycle"] = {"start": "warm"}
    raw["fleet"] = fleet
    if kv_blocks not in ("computed", "logged"):
        raise FleetsimError(f"--kv-blocks must be 'computed' or 'logged' (got {kv_blocks!r})")
    if kv_blocks == "logged":
        n = logged_blocks(log.meta)
        if n is None:
            raise FleetsimError(f"{log.source}: --kv-blocks logged needs meta.json's kv_cache.num_gpu_blocks")
        pp = int((raw.get("fleet") or {}).get("pp") or 1)  # (a pipeline's virtual engines split the server's blocks)
        if n < pp:
            raise FleetsimError(
                f"{log.source}: meta.json kv_cache.num_gpu_blocks: {n} blocks for the server's {pp} virtual engines (at "
                "least one each)"
            )
        given = (raw.get("engine") or {}).get("num_gpu_blocks_override")
        # (the user's count and the log's: which one is meant is unsaid; the run's own override, copied from its
        # meta.json, is the server's count, its engines' share, or the logged one)
        if given is not None and given not in (n, n // pp):
            raise FleetsimError(
                f"{where}: engine.num_gpu_blocks_override is {_short(given)}, and --kv-blocks logged takes the run's "
                f"logged count ({n // pp} blocks{'' if pp == 1 else ' an engine'}, meta.json kv_cache.num_gpu_blocks): "
                "give one of them"
            )
        raw["engine"] = {**(raw.get("engine") or {}), "num_gpu_blocks_override": n // pp}
    sc = parse_config(raw, where=where, base_dir=base_dir)
    if base_dir is not None:
        sc._base_dir = base_dir
    try:  # the model on the run's GPU and layout (named here: the fields are the run's, not a scenario file's)
        setup = resolve_scenario(sc, base_dir=base_dir)
        check_pipeline(sc, setup.pp)  # (what `simulate` would refuse of a pipeline's fleet, said here with its source)
    except FleetsimError as err:
        raise FleetsimError(f"{where}: {err}") from None
    return sc, notes


def per_request(result: SimResult) -> dict[str, np.ndarray]:
    """The replay's TTFT, TPOT and E2E per request, in trace order (NaN where not completed; TPOT NaN for 1 token)."""
    req = result.requests
    done = (req["status"].astype(str) == "completed").to_numpy()
    arrival = req["arrival_at_s"].to_numpy(dtype=np.float64)
    first = np.where(done, req["first_token_at_s"].to_numpy(dtype=np.float64), np.nan)
    last = np.where(done, req["completed_at_s"].to_numpy(dtype=np.float64), np.nan)
    out = req["output_tokens"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (last - first) / (out - 1), np.nan)
    return {"ttft": first - arrival, "tpot": tpot, "e2e": last - arrival}


def measured(log: RunLog) -> dict[str, np.ndarray]:
    """The log's TTFT, TPOT and E2E per request, in trace order (TPOT NaN for 1-token requests)."""
    out = log.trace["output_tokens"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (log.e2e_s - log.ttft_s) / (out - 1), np.nan)
    return {"ttft": log.ttft_s, "tpot": tpot, "e2e": log.e2e_s}


def compare_rows(real: dict[str, np.ndarray], sim: dict[str, np.ndarray], mask: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per metric and statistic, measured vs simulated over the requests in `mask` (each side's defined values)."""
    rows = []
    for metric in ("ttft", "tpot", "e2e"):
        r_all, s_all = real[metric], sim[metric]
        if mask is not None:
            r_all, s_all = r_all[mask], s_all[mask]
        r_v, s_v = r_all[~np.isnan(r_all)], s_all[~np.isnan(s_all)]
        if not r_v.size or not s_v.size:
            continue
        for stat in STATS:
            r, sv = _stat(r_v, stat), _stat(s_v, stat)
            rows.append({"metric": metric, "stat": stat, "real_s": r, "sim_s": sv, "error": _relative(sv, r)})
    return rows


def by_arrival(log: RunLog, result: SimResult, bins: int) -> list[dict[str, Any]]:
    """Mean TTFT, TPOT and E2E, measured and replayed, over `bins` groups of the requests in arrival order (as equal
    in size as they split): where in the run an error sits (a queue's ramp, its saturation, its drain)."""
    n = len(log.trace)
    if not 1 <= bins <= n:
        raise FleetsimError(f"by arrival: {bins} groups of {n} requests (1 to one a request)")
    real, sim = measured(log), per_request(result)
    arrival = log.trace["arrival_at_s"].to_numpy(dtype=np.float64)
    out = []
    for idx in np.array_split(np.arange(n), bins):
        mask = np.zeros(n, dtype=bool)
        mask[idx] = True
        row: dict[str, Any] = {"from_s": float(arrival[idx[0]]), "to_s": float(arrival[idx[-1]]), "requests": int(idx.size)}
        for r in compare_rows(real, sim, mask):
            if r["stat"] == "mean":
                row[r["metric"]] = {"real_s": r["real_s"], "sim_s": r["sim_s"], "error": r["error"]}
        out.append(row)
    return out


def by_prompt(log: RunLog, result: SimResult, bins: int) -> dict[str, Any]:
    """Mean TTFT, measured and replayed, over `bins` groups of the completed requests by prompt length (as equal in
    size as they split), and a least-squares line TTFT = a + b x prompt tokens through each side's requests: an error
    in the prefill's price shows in the slope b, one a request pays whatever its prompt (the wait for the step under
    way, queueing, the server's front end, the client) in the intercept a."""
    real, sim = measured(log), per_request(result)
    prompt = log.trace["prompt_tokens"].to_numpy(dtype=np.float64)
    eligible = np.flatnonzero(np.isfinite(real["ttft"]) & np.isfinite(sim["ttft"]))
    if not 1 <= bins <= eligible.size:
        raise FleetsimError(
            f"by prompt: {bins} groups of {eligible.size} requests completed in the run and the replay (1 to one a request)"
        )
    order = eligible[np.argsort(prompt[eligible], kind="stable")]
    groups = []
    for idx in np.array_split(order, bins):
        r, s = float(np.mean(real["ttft"][idx])), float(np.mean(sim["ttft"][idx]))
        groups.append(
            {
                "from_tokens": int(prompt[idx[0]]),
                "to_tokens": int(prompt[idx[-1]]),
                "requests": int(idx.size),
                "ttft": {"real_s": r, "sim_s": s, "error": _relative(s, r)},
            }
        )
    x = prompt[eligible]
    lines: dict[str, Any] = {"real": None, "sim": None}
    if np.ptp(x) > 0:  # (one prompt length: no slope to fit)
        for side, y in (("real", real["ttft"][eligible]), ("sim", sim["ttft"][eligible])):
            slope, intercept = np.polyfit(x, y, 1)
            lines[side] = {"intercept_s": float(intercept), "s_per_token": float(slope)}
    return {"groups": groups, "line": lines}


def decode_concurrency(arrival: np.ndarray, ttft: np.ndarray, e2e: np.ndarray) -> np.ndarray:
    """Each request's time-weighted mean count of requests decoding (between their first and last tokens, itself
    included) over its own decode, from the requests' instants alone (a log without per-step batch sizes has them);
    NaN where it has no decode (one output token, or not completed)."""
    first, last = arrival + ttft, arrival + e2e
    ok = np.isfinite(first) & np.isfinite(last) & (last > first)
    out = np.full(len(arrival), np.nan)
    if not ok.any():
        return out
    a, b = first[ok], last[ok]
    times = np.concatenate([a, b])
    order = np.argsort(times, kind="stable")
    t = times[order]
    count = np.cumsum(np.concatenate([np.ones(a.size), -np.ones(b.size)])[order])  # decoding just after each instant
    area = np.concatenate([[0.0], np.cumsum(np.diff(t) * count[:-1])])  # its integral from the first instant to each

    def integral(x: np.ndarray) -> np.ndarray:
        k = np.searchsorted(t, x, side="right") - 1  # (the last instant at or before x: every event there counted)
        got: np.ndarray = area[k] + count[k] * (x - t[k])
        return got

    out[ok] = (integral(b) - integral(a)) / (b - a)
    return out


def by_batch(log: RunLog, result: SimResult, bins: int) -> list[dict[str, Any]]:
    """Mean TPOT, measured and replayed, over `bins` groups of the requests by the batch they decoded in (the mean
    count of requests decoding alongside each, measured: `decode_concurrency`; as equal in size as they split), and
    the difference a running request a step: (measured - replayed TPOT) / the group's mean batch. A cost the replay
    misses for each running request (host work, say) reads as a steady figure there, a fixed one per step as a
    falling one."""
    real, sim = measured(log), per_request(result)
    arrival = log.trace["arrival_at_s"].to_numpy(dtype=np.float64)
    batch_real = decode_concurrency(arrival, real["ttft"], real["e2e"])
    sim_arrival = result.requests["arrival_at_s"].to_numpy(dtype=np.float64)
    batch_sim = decode_concurrency(sim_arrival, sim["ttft"], sim["e2e"])
    eligible = np.flatnonzero(np.isfinite(batch_real) & np.isfinite(real["tpot"]) & np.isfinite(sim["tpot"]))
    if not 1 <= bins <= eligible.size:
        raise FleetsimError(
            f"by batch: {bins} groups of {eligible.size} requests that decoded in the run and the replay (1 to one a request)"
        )
    order = eligible[np.argsort(batch_real[eligible], kind="stable")]
    out = []
    for idx in np.array_split(order, bins):
        r_tpot, s_tpot = float(np.mean(real["tpot"][idx])), float(np.mean(sim["tpot"][idx]))
        b_real = float(np.mean(batch_real[idx]))
        s_batch = batch_sim[idx]
        out.append(
            {
                "from_batch": float(batch_real[idx[0]]),
                "to_batch": float(batch_real[idx[-1]]),
                "requests": int(idx.size),
                "batch": {"real": b_real, "sim": float(np.nanmean(s_batch)) if np.isfinite(s_batch).any() else None},
                "tpot": {"real_s": r_tpot, "sim_s": s_tpot, "error": _relative(s_tpot, r_tpot)},
                "gap_per_running_s": (r_tpot - s_tpot) / b_real,
            }
        )
    return out


def _relative(sim: float, real: float) -> float | None:
    """sim / real - 1; None where it is no number (a real figure of 0, or one so small the ratio overflows)."""
    if not real > 0:
        return None
    with np.errstate(over="ignore"):
        ratio = float(np.float64(sim) / np.float64(real))
    return ratio - 1 if math.isfinite(ratio) else None


def check_span(log: RunLog, interval_s: float) -> None:
    """A log whose arrivals span more than the replay's timeline samples (at the log's tick) is refused naming the
    log: one request stamped on another clock (the epoch's, say) stretches a minute's run to decades."""
    span = float(log.trace["arrival_at_s"].max())
    if span / interval_s > MAX_TIMELINE_SAMPLES // 2:
        raise FleetsimError(
            f"{log.source}: its requests' arrivals span {span:,.0f} s, more than a replay samples at a tick of "
            f"{interval_s:g} s ({MAX_TIMELINE_SAMPLES // 2:,} ticks); is a timestamp on another clock?"
        )


def prompts_served_before(meta: dict[str, Any] | None) -> bool:
    """meta.json's `benchmark.prompts_served_before`: the server had served these same prompts just before the run
    (a benchmark sweeping request rates on one server sends one prompt set at each), so their KV sat in its prefix
    cache when the run began. False when absent."""
    return bool(_flag(_section(meta or {}, "benchmark", ""), "prompts_served_before", "benchmark."))


def series_of_kv(log: RunLog) -> bool:
    """Whether the log's time series has a KV use that says something (some tick above 0)."""
    ts = log.timeseries
    return ts is not None and "kv_cache_pct" in ts.columns and bool((ts["kv_cache_pct"].to_numpy() > 0).any())


def _run_prefix_caching(meta: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether the run had prefix caching on (None: not said), and where meta.json says it."""
    cache, where = _cache_section(meta)
    got = _flag(cache, "enable_prefix_caching", where)
    if got is None:
        where = "engine_kwargs."
        got = _flag(_section(meta, "engine_kwargs", ""), "enable_prefix_caching", where)
    return got, where


WARM_GAP_S = 1.0  # idle seconds between the warm-up's last request and the run's first


def replay(sc: Scenario, log: RunLog, *, warm_prompts: bool = False) -> SimResult:
    """The log's requests replayed on `sc`. With `warm_prompts`, the prefix cache starts holding every prompt's full
    blocks, as a server that had just served the same prompts (a benchmark rerun) holds them: each request gets one
    prefix hash id per `block_size` tokens of its prompt (its own: the log has no prompt text, so two requests
    share nothing), the prompts are first served once (at t = 0, one output token each; what the cache cannot
    hold is evicted as it would be, a prompt the setup cannot serve stays uncached), and the run follows after an
    idle gap. The result's requests and timeline are the run's alone, on its own clock (shifted back; the warm-up
    emits no inter-token gaps); its summary, replicas and meta count the warm-up too. On several replicas or DP
    ranks a prompt is cached where the warm-up's routing sent it, which the run's may not (vLLM's would not either)."""
    if not warm_prompts:
        return simulate(sc, log.trace, measure_capacity=False)
    caching, where = _run_prefix_caching(log.meta or {})
    if caching is False:
        raise FleetsimError(
            f"{log.source}: warm prompts (--warm-prompts, or meta.json's benchmark.prompts_served_before) need the "
            f"prefix cache, and meta.json says the run had it off ({where}enable_prefix_caching: false); pass --cold-prompts"
        )
    bs = sc.engine.block_size  # (a warm cache is a prefix cache: on, an id per block)
    update = {"prefix_caching": True, "prefix_hash_block_tokens": bs}
    sc = sc.model_copy(update={"engine": sc.engine.model_copy(update=update)})
    trace = log.trace
    n = len(trace)
    prompts = trace["prompt_tokens"].to_numpy(dtype=np.int64)
    ends = np.cumsum(prompts // bs)
    ids = as_column([np.arange(e - k, e, dtype=np.int64) for e, k in zip(ends.tolist(), (prompts // bs).tolist(), strict=True)])
    warm = trace.assign(arrival_at_s=0.0, output_tokens=1, prefix_hash_ids=ids)
    first = simulate(sc, warm, measure_capacity=False).requests
    served = first["completed_at_s"].to_numpy(dtype=np.float64)
    if np.isnan(served).all():
        raise FleetsimError(
            f"{log.source}: the warm-up (each prompt served once before the run) served no prompt in the replayed setup "
            f"(the first refused: {first['reject_reason'].dropna().iloc[0]}); check it (--scenario, --set, --kv-blocks)"
        )
    tick = sc.fleet.timeline_interval_s
    gap = max(WARM_GAP_S, tick)  # (a tick's interval holds no warm-up work)
    shift = tick * math.ceil((float(np.nanmax(served)) + gap) / tick)  # (the timeline's ticks stay the run's)
    run = trace.assign(arrival_at_s=trace["arrival_at_s"].to_numpy(dtype=np.float64) + shift, prefix_hash_ids=ids)
    both = pd.concat([warm, run], ignore_index=True)
    both.attrs = dict(trace.attrs)
    result = simulate(sc, both, measure_capacity=False)
    req = result.requests.iloc[n:].reset_index(drop=True).copy()
    for col in req.columns:
        if col.endswith("_at_s"):
            req[col] = req[col] - shift
    if "request_id" in req.columns:
        req["request_id"] = req["request_id"] - n
    tl = result.timeline
    tl = tl[tl["t_s"].to_numpy() >= shift].reset_index(drop=True).copy()
    tl["t_s"] = tl["t_s"] - shift
    return dataclasses.replace(result, requests=req, timeline=tl)


def check_all_served(log: RunLog, result: SimResult) -> None:
    """Every request the run served is served in the replay of the run's own setup: one it refuses (a logged KV cache
    too small for it, a context too short) means the replayed setup is not the run's, and the comparison would cover
    other requests. (A setup the user gives is a what-if: `validate` compares the rest and notes the refusals.)"""
    req = result.requests
    status = req["status"].astype(str).to_numpy()
    refused = np.flatnonzero(status != "completed")
    if not refused.size:
        return
    i = int(refused[0])
    row = log.trace.iloc[i]
    reason = req["reject_reason"].iloc[i]
    raise FleetsimError(
        f"{log.source}: the replayed setup refuses {refused.size} of the run's {len(req)} requests, which the run served "
        f"(the earliest, sent at {float(row['arrival_at_s']):.3f} s with {int(row['prompt_tokens']):,} prompt + "
        f"{int(row['output_tokens']):,} output tokens: {reason}), so the comparison would cover other requests; check "
        "the replayed setup (--scenario, --set, --kv-blocks: vLLM does not start with a KV cache smaller than its "
        "longest request) or the log"
    )


def validate(
    log: RunLog,
    scenario: dict[str, Any] | None = None,
    *,
    kv_blocks: str = "computed",
    base_dir: Path | None = None,
    given_as: str = "--scenario",
    warm_prompts: bool | None = None,
) -> Comparison:
    """Replay `log` on `scenario` (default: its meta.json's) and compare; see the module docstring. `given_as`:
    what errors in the given scenario name (the file, or the --set overrides); `warm_prompts` (default: meta.json's
    `benchmark.prompts_served_before`): the prompts' blocks are in the prefix cache when the run starts (`replay`)."""
    with meta_named(log):
        return _validate(log, scenario, kv_blocks=kv_blocks, base_dir=base_dir, given_as=given_as, warm_prompts=warm_prompts)


def _validate(
    log: RunLog,
    scenario: dict[str, Any] | None,
    *,
    kv_blocks: str,
    base_dir: Path | None,
    given_as: str,
    warm_prompts: bool | None,
) -> Comparison:
    sc, notes = replay_scenario(log, scenario, kv_blocks=kv_blocks, base_dir=base_dir, given_as=given_as)
    if log.sends_rebuilt:
        notes.append(log.sends_rebuilt)
    check_span(log, sc.fleet.timeline_interval_s)
    warm = prompts_served_before(log.meta) if warm_prompts is None else warm_prompts
    result = replay(sc, log, warm_prompts=warm)
    if warm:
        notes = [n for n in notes if not n.startswith("prefix caching: on in the run")]
        notes.append("warm prompts: the run's prompts were served once before it, so their full blocks start in the prefix cache")
        if series_of_kv(log):
            notes.append(
                "KV use: the replay's counts cached blocks no request holds; vLLM's (1 - free / total) does not, as its "
                "free queue holds them"
            )
    req = result.requests
    status = req["status"].astype(str).to_numpy()
    if not (status == "completed").any():  # nothing to compare: the replay's setup cannot serve the run
        raise FleetsimError(
            f"{log.source}: no request completed in the replay, so there is nothing to compare (the first refused: "
            f"{req['reject_reason'].dropna().iloc[0]}); check the replayed setup (--scenario, --set, --kv-blocks)"
        )
    if scenario is None:  # (the run's own setup, as meta.json gives it: it served them all)
        check_all_served(log, result)
    elif not (status == "completed").all():  # (a what-if setup of the user's: the rest compared, the refusals noted)
        n = int((status != "completed").sum())
        notes.append(f"{n} requests were not completed in the replay (first reason: {req['reject_reason'].dropna().iloc[0]})")
    rows = compare_rows(measured(log), per_request(result))
    shortest = float(np.min(log.ttft_s))
    if shortest > SLOWEST_FIRST_TOKEN_S:  # (a unit read 1,000 times too large reads so)
        hint = (
            "if the log's times are in milliseconds, pass --time-unit ms"
            if log.layout == "csv"
            else "check the log's timestamps: this layout's are in seconds, and a clock in milliseconds reads so"
        )
        notes.append(
            f"every request waited over {SLOWEST_FIRST_TOKEN_S:g} s for its first token (the shortest: {shortest:,.4g} s): {hint}"
        )
    if log.itl_s is not None and log.itl_s.size and result.itl.count:
        for stat in STATS:
            r = _stat(log.itl_s, stat)
            sv = result.itl.mean() if stat == "mean" else result.itl.percentile({"p50": 50, "p90": 90, "p99": 99}[stat])
            rows.append({"metric": "itl", "stat": stat, "real_s": r, "sim_s": sv, "error": _relative(sv, r)})
    series = _series(log, result)
    if series is not None and log.timeseries is not None and len(series) < len(log.timeseries):
        gone = len(log.timeseries) - len(series)
        notes.append(f"{gone} of the time series' {len(log.timeseries)} ticks fall outside the replay's span: not compared")
        series = series if len(series) else None
    logged, pp = logged_blocks(log.meta), sc.fleet.pp
    # (a pipeline's server logs its blocks, which its pp virtual engines split: the simulated count is one engine's)
    blocks = {
        "simulated": int(result.replicas["kv_blocks"].iloc[0]),
        "logged": logged // pp if logged is not None else None,
        "logged_server": logged,
    }
    return Comparison(rows, series, blocks, notes, result)


# --- calibration from a run's own logs ---------------------------------------------------------------------------------
CAL_PARAMS = ("mfu", "mbu")  # replayed (GPU overrides)
# profiled out of each replay (`roofline.frontend_latency_s`: a request's delay before the engine)
FRONTEND = "frontend_latency_s"
FRONTEND_MAX_S = 10.0  # the fit's bound (a fit that stops there is noted: the log's clocks, not a frontend)
CAL_BOUNDS = {"mfu": (0.05, 1.0), "mbu": (0.05, 1.0), "layer_overhead_s": (0.0, 1e-3)}
GRID_FACTORS = (0.5, 0.63, 0.79, 1.0, 1.26, 1.59, 2.0)


def _simplex(x: np.ndarray, step: float) -> np.ndarray:
    return np.vstack([x] + [x + step * np.eye(x.size)[i] for i in range(x.size)])


@dataclass(frozen=True, slots=True)
class LogCalibration:
    """Step-time parameters fitted so that the replay of the run's first requests reproduces them, and the error
    before and after on those (`fit`) and on the rest, replayed with the whole run (`held_out`)."""

    gpu: str
    before: dict[str, float]
    after: dict[str, float]
    fit_requests: int
    held_out_requests: int
    rows: dict[str, dict[str, list[dict[str, Any]]]]  # {"fit" | "held_out": {"before" | "after": rows}}
    replays: int
    notes: tuple[str, ...] = ()  # fitted values that stopped at a bound of the search

    def error(self, part: str, when: str, metric: str, stat: str = "mean") -> float | None:
        for r in self.rows[part][when]:
            if r["metric"] == metric and r["stat"] == stat:
                return None if r["error"] is None else float(r["error"])
        return None


def _with_params(raw: dict[str, Any], gpu: str, p: dict[str, float]) -> dict[str, Any]:
    roofline = dict(raw.get("roofline") or {})
    p = dict(p)
    if FRONTEND in p:
        roofline[FRONTEND] = p.pop(FRONTEND)
    overrides = {k: dict(v) for k, v in (roofline.get("gpu_overrides") or {}).items()}
    overrides[gpu] = {**overrides.get(gpu, {}), **p}
    roofline["gpu_overrides"] = overrides
    return {**raw, "roofline": roofline}


def _log_residuals(
    real: dict[str, np.ndarray], sim: dict[str, np.ndarray], mask: np.ndarray, floor: dict[str, float], shift: float = 0.0
) -> np.ndarray:
    """Per request of `mask`, the log of simulated over measured TTFT, TPOT and E2E (a floor keeps ~0 TTFTs sane), each
    metric's weighted by 1 / sqrt(its count); `shift` seconds added to the simulated TTFT and E2E (a frontend latency)."""
    out = []
    for m in ("ttft", "tpot", "e2e"):
        r, sv = real[m][mask], sim[m][mask]
        ok = ~np.isnan(r)
        add = shift if m != "tpot" else 0.0
        d = np.log((np.nan_to_num(sv[ok], nan=1e6) + add + floor[m]) / (r[ok] + floor[m]))
        out.append(d / math.sqrt(max(1, d.size)))
    return np.concatenate(out)


def best_shift(real: dict[str, np.ndarray], sim: dict[str, np.ndarray], mask: np.ndarray, floor: dict[str, float]) -> float:
    """The frontend latency (seconds, in [0, FRONTEND_MAX_S]) that fits the simulated TTFT and E2E of `mask`'s requests
    best, as `_log_residuals` scores them: a replay's requests reach the engine that much later, and with every arrival
    delayed alike a fixed fleet's replay is the same run shifted, so its TTFT and E2E grow by it exactly."""
    from scipy.optimize import minimize_scalar

    fit = minimize_scalar(
        lambda d: float(np.sum(_log_residuals(real, sim, mask, floor, d) ** 2)),
        bounds=(0.0, FRONTEND_MAX_S),
        method="bounded",
        options={"xatol": 1e-5},
    )
    at_zero = float(np.sum(_log_residuals(real, sim, mask, floor) ** 2))
    return float(fit.x) if fit.fun < at_zero else 0.0


def calibrate_from_log(
    log: RunLog,
    scenario: dict[str, Any] | None = None,
    *,
    kv_blocks: str = "computed",
    base_dir: Path | None = None,
    fit_share: float = 0.5,
    warm_prompts: bool | None = None,
    given_as: str = "--scenario",
    fit_frontend: bool = True,
) -> LogCalibration:
    """Fit mfu and mbu so that the replay reproduces the TTFT, TPOT and E2E of the run's first `fit_share` requests
    (by arrival): least squares on the log of simulated over measured, request by request, every request's arrival
    replayed (they load the engine) but only the first ones' latencies fitted; the rest are the hold-out. With them the
    frontend latency (`roofline.frontend_latency_s`, a fixed delay each request spends before the engine), fitted to
    each replay's TTFT and E2E without replaying (`best_shift`): the time a run's first tokens take beyond what the
    engine explains, which mfu and mbu would otherwise absorb by mispricing the steps."""
    from scipy.optimize import minimize

    from sim.scenario.resolve import resolve_scenario
    from sim.studies.calibrate import params_of

    if not 0 < fit_share < 1:
        raise FleetsimError(f"--fit-share must be in (0, 1) (got {fit_share})")
    n = len(log.trace)
    n_fit = int(n * fit_share)
    if n_fit < 10 or n - n_fit < 10:
        raise FleetsimError(
            f"{log.source}: {n} requests are too few to fit on {n_fit} and hold out {n - n_fit} (10 each at least: "
            f"--fit-share {fit_share:g} of {n} leaves {min(n_fit, n - n_fit)})"
        )
    with meta_named(log):
        sc, _ = replay_scenario(log, scenario, kv_blocks=kv_blocks, base_dir=base_dir, given_as=given_as)
        warm = prompts_served_before(log.meta) if warm_prompts is None else warm_prompts
    raw = sc.model_dump(mode="json")
    raw.pop("trace", None)
    setup = resolve_scenario(sc, base_dir=base_dir)
    gpu = setup.gpu.name
    before = {k: float(v) for k, v in params_of(setup).items() if k in CAL_PARAMS}
    before[FRONTEND] = float(sc.roofline.frontend_latency_s)
    real = measured(log)
    fit_mask = np.arange(n) < n_fit
    replays = 0
    last: list[SimResult] = []  # (the latest replay)

    def run(p: dict[str, float]) -> dict[str, np.ndarray]:
        """The whole run replayed (every arrival is an input; only the first requests' latencies are fitted)."""
        nonlocal replays
        replays += 1
        s = parse_config(_with_params(raw, gpu, p), where="the calibrated scenario", base_dir=base_dir)
        if base_dir is not None:
            s._base_dir = base_dir
        result = replay(s, log, warm_prompts=warm)
        last[:] = [result]
        return per_request(result)

    if np.isnan(real["tpot"][fit_mask]).all():
        raise FleetsimError(
            f"{log.source}: no request of the first {n_fit} (the fitted share) has more than one output token: no TPOT to fit on"
        )
    if np.isnan(run(before)["e2e"]).all():
        raise FleetsimError(
            f"{log.source}: no request completed in the replay, so there is nothing to fit (check the replayed setup: "
            "--scenario, --set, --kv-blocks)"
        )
    check_all_served(log, last[0])  # (a refusal is at the door: the fitted parameters do not move it)
    floor = {m: max(float(np.nanmedian(v[fit_mask])) * 0.05, 1e-6) for m, v in real.items()}

    def residuals(x: np.ndarray) -> np.ndarray:
        # replayed without a frontend latency (the shift is fitted on top: `best_shift`)
        p = dict(zip(CAL_PARAMS, map(float, np.exp(x)), strict=True))
        if not fit_frontend:  # (held at the scenario's value: replayed with it)
            return _log_residuals(real, run({**p, FRONTEND: before[FRONTEND]}), fit_mask, floor)
        sim = run({**p, FRONTEND: 0.0})
        return _log_residuals(real, sim, fit_mask, floor, best_shift(real, sim, fit_mask, floor))

    lo = np.log([max(CAL_BOUNDS[k][0], 1e-7) for k in CAL_PARAMS])
    hi = np.log([CAL_BOUNDS[k][1] for k in CAL_PARAMS])
    x0 = np.clip(np.log([max(before[k], 1e-7) for k in CAL_PARAMS]), lo, hi)

    def cost(x: np.ndarray) -> float:
        return float(np.sum(residuals(np.clip(x, lo, hi)) ** 2))

    # a replay is a discrete-event run: its latencies move in small steps as the parameters change, which stalls a
    # gradient method; a coarse grid (each parameter x 0.5 to 2) finds the basin, Nelder-Mead refines it
    steps = np.log(GRID_FACTORS)
    grid = [np.clip(x0 + np.array(d), lo, hi) for d in itertools.product(steps, repeat=len(CAL_PARAMS))]
    best = min(grid, key=cost)
    fit = minimize(cost, best, method="Nelder-Mead", options={"xatol": 2e-3, "fatol": 1e-9, "maxfev": 80,
                                                               "initial_simplex": _simplex(best, 0.1)})  # fmt: skip
    after = dict(zip(CAL_PARAMS, map(float, np.exp(np.clip(fit.x, lo, hi))), strict=True))
    after[FRONTEND] = (
        round(best_shift(real, run({**after, FRONTEND: 0.0}), fit_mask, floor), 6) if fit_frontend else before[FRONTEND]
    )
    sim_before, sim_after = run(before), run(after)  # (each a replay of its own: the latency delays the arrivals)
    rows = {
        "fit": {"before": compare_rows(real, sim_before, fit_mask), "after": compare_rows(real, sim_after, fit_mask)},
        "held_out": {"before": compare_rows(real, sim_before, ~fit_mask), "after": compare_rows(real, sim_after, ~fit_mask)},
    }
    notes = [
        f"{p} stopped at its bound {bound:g}: the fit wanted it further, so the run holds something it does not model"
        for p, bound in ((k, CAL_BOUNDS[k][i]) for k in CAL_PARAMS for i in (0, 1))
        if abs(after[p] - bound) <= 1e-3 * bound
    ]
    if fit_frontend and after[FRONTEND] >= FRONTEND_MAX_S * (1 - 1e-3):
        notes.append(
            f"{FRONTEND} stopped at the fit's bound of {FRONTEND_MAX_S:g} s: the run's first tokens come that much later "
            "than the replay's, which is more likely the log's clocks than a serving stack"
        )
    return LogCalibration(gpu, before, after, n_fit, n - n_fit, rows, replays, tuple(notes))


def _series(log: RunLog, result: SimResult) -> pd.DataFrame | None:
    """The run's time series next to the replay's timeline, on the log's ticks (a tick at t covers (t - 1, t]); None
    without one, or when the replay ended before its first sample."""
    ts = log.timeseries
    tl = result.timeline
    if ts is None or not len(tl):
        return None
    samples = tl["t_s"].to_numpy()
    step = float(samples[1] - samples[0]) if len(samples) > 1 else float(samples[0])
    t = ts["t"].to_numpy(dtype=np.float64)
    within = (t >= 0) & (t <= samples[-1] + step)  # (a tick past the replay's last sample has nothing to meet)
    t = t[within]
    idx = np.clip(np.searchsorted(samples, t, side="right") - 1, 0, len(tl) - 1)
    return pd.DataFrame(
        {
            "t_s": t,
            "real_running": ts["running"].to_numpy()[within],
            "sim_running": tl["running"].to_numpy()[idx],
            "real_waiting": ts["waiting"].to_numpy()[within],
            "sim_waiting": tl["waiting"].to_numpy()[idx],
            "real_kv_use": ts["kv_cache_pct"].to_numpy()[within] / 100.0,
            "sim_kv_use": tl["kv_use"].to_numpy()[idx],
        }
    )
