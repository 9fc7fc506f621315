#!/usr/bin/env python3
"""Measure vLLM's V0 driver worker's input preparation per engine step vs. the number of running decode requests N:
what the first pipeline stage's driver does on the engine's own thread before the GPUs start (V0 runs the first
stage's driver worker in the engine process, so it waits in line with the engine loop that `measure_host_v0.py`
measures).

No GPU, no weights: vLLM 0.8.3's own V0 `ModelRunner._prepare_model_input_tensors` (the `ModelInputForGPUBuilder`
walking each scheduled sequence group, FlashAttention's V0 metadata builder, the tensors, padded for CUDA graphs) on
CPU tensors, fed the `ExecuteModelRequest`s of `measure_host_v0.py`'s engine (the real `LLMEngine.step()` and its V0
scheduler, prompts of 100-340 tokens, prefix caching on, temperature 0.8 and top-p 0.95). FlashAttention's kernels are
stubbed at import (its metadata builder needs none of them). The sampling metadata (`SamplingMetadata.prepare`) is
timed apart: in a pipeline the last stage's driver builds it, while the first stage computes. Not measured: the
host-to-device copies a GPU adds, the broadcast of the inputs to the stage's TP peers.

Usage (vLLM 0.8.x beside CPU torch, numba; see README.md):
    python measure_worker_v0.py [--reps 5] [--steps 100] [--ns 1,8,16,32,64,128]
"""

import argparse
import copy
import os
import random
import statistics
import sys
import time
import types
import warnings

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ["VLLM_USE_V1"] = "0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure_host import fit  # noqa: E402


def stub_flash_attn():
    """FlashAttention's compiled kernels need CUDA; its V0 backend module imports them at the top."""
    fa = types.ModuleType("vllm.vllm_flash_attn")
    fa.__path__ = []
    fa.flash_attn_varlen_func = fa.flash_attn_with_kvcache = lambda *a, **k: None
    fu = types.ModuleType("vllm.vllm_flash_attn.fa_utils")
    fu.flash_attn_supports_fp8 = lambda *a, **k: False
    fu.get_flash_attn_version = lambda *a, **k: 2
    sys.modules["vllm.vllm_flash_attn"] = fa
    sys.modules["vllm.vllm_flash_attn.fa_utils"] = fu


def build():
    stub_flash_attn()
    import measure_host_v0 as host

    host.write_model_dir()
    eng = host.engine()
    import vllm.worker.model_runner as runner_module
    from vllm.attention.backends.flash_attn import FlashAttentionBackend
    from vllm.config import DeviceConfig
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    runner_module.get_attn_backend = lambda *a, **k: FlashAttentionBackend  # (the CPU platform names its own)
    vc = copy.deepcopy(eng.vllm_config)
    vc.parallel_config.pipeline_parallel_size = 2  # (a pipeline's runner: no sampling-metadata cache, as vLLM's)
    if vc.device_config is None:
        vc.device_config = DeviceConfig(device="cpu")
    vc.device_config.device = torch.device("cpu")
    runner = runner_module.ModelRunner(vc, is_driver_worker=True)
    runner.pin_memory = False
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + random.randrange(1000)))
    init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo")
    initialize_model_parallel(1, 1)
    times = {"tensors": [], "sampling": []}
    from vllm.model_executor import SamplingMetadata

    executor = eng.model_executor
    inner = executor.execute_model

    def execute_model(execute_model_req):
        req = execute_model_req
        t0 = time.perf_counter()
        mi = runner._prepare_model_input_tensors(req.seq_group_metadata_list, req.finished_requests_ids)
        t1 = time.perf_counter()
        SamplingMetadata.prepare(
            req.seq_group_metadata_list, mi.seq_lens, mi.query_lens, runner.device, runner.pin_memory, {}, None
        )
        t2 = time.perf_counter()
        times["tensors"].append(t1 - t0)
        times["sampling"].append(t2 - t1)
        return inner(execute_model_req=execute_model_req)

    executor.execute_model = execute_model
    return eng, times


def run_point(eng, times, n, steps, seed):
    from vllm import SamplingParams

    sch = eng.scheduler[0]
    ids = [g.request_id for q in (sch.waiting, sch.running, sch.swapped) for g in q]
    if ids:
        eng.abort_request(ids)
        eng.step()
    rng = random.Random(seed)
    for i in range(n):
        prompt = [rng.randrange(1000, 128000) for _ in range(rng.randint(100, 340))]
        sp = SamplingParams(max_tokens=60000, temperature=0.8, top_p=0.95, ignore_eos=True)
        eng.add_request(f"w-{seed}-{n}-{i}", {"prompt_token_ids": prompt}, sp)
    while True:  # prefill to a steady state: every request decoding
        eng.step()
        if not sch.waiting and len(sch.running) == n and all(not g.is_prefill() for g in sch.running):
            break
    for _ in range(10):
        eng.step()
    for v in times.values():
        v.clear()
    for _ in range(steps):
        eng.step()
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--ns", default="1,8,16,32,64,128")
    args = ap.parse_args()
    import vllm

    eng, times = build()
    ns = [int(x) for x in args.ns.split(",")]
    print(f"vLLM {vllm.__version__} (V0 engine), Python {sys.version.split()[0]}; prompts 100-340 tokens")
    got = {n: [] for n in ns}
    for rep in range(args.reps):
        order = ns[:]
        random.Random(rep).shuffle(order)
        for n in order:
            got[n].append(run_point(eng, times, n, args.steps, seed=1000 * rep + n))
    print("N, us a step (median of the repeats' step medians): the input tensors (first stage), the sampling metadata")
    rows = []
    for n in ns:
        t = statistics.median(g["tensors"] for g in got[n]) * 1e6
        s = statistics.median(g["sampling"] for g in got[n]) * 1e6
        rows.append((n, t, s))
        print(f"{n:5d} {t:10.1f} {s:10.1f}")
    for i, name in ((1, "input tensors"), (2, "sampling metadata")):
        xs, ys = [r[0] for r in rows], [r[i] for r in rows]
        a, b = fit(xs, ys)
        print(f"fit, {name}: {a:.1f} us a step + {b:.2f} us a running request")


if __name__ == "__main__":
    main()
