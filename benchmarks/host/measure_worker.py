#!/usr/bin/env python3
"""Measure vLLM V1's model-runner host (CPU) work per engine step vs. the number of running decode requests N, with
synchronous scheduling: what a GPU worker does around the forward pass while the GPU waits.

No GPU, no real weights: vLLM 0.11.0's own `GPUModelRunner.execute_model` (through its CPU subclass, which shares it:
`_update_states`, `_prepare_inputs` with the attention metadata, `_preprocess`, the forward context, the logits'
rows, `_bookkeeping_sync` and the `ModelRunnerOutput`) on CPU tensors, with the forward pass and the sampler replaced
by stubs that return preallocated tensors (on a GPU both are device work: a CUDA graph's replay and the sampling
kernels). The steps come from vLLM's own V1 `Scheduler`, fed back its outputs, as `EngineCore.step` does: N requests
of 200-1,000 prompt tokens, prefilled, then steady decode (the first steps of decode are the warm-up).

The model is a Llama-2-7B-shaped config with 32 layers made tiny inside (hidden 64), so the runner's per-layer
bookkeeping is a 7B's while the stubs' tensors stay small. What a GPU adds is not measured: the kernel launches and
host-to-device copies `_prepare_inputs` issues (a few microseconds each), and the CUDA graph's own launch. The
attention metadata is the CPU backend's (`TorchSDPAMetadataBuilderV1`), not FlashAttention's.

Usage: python measure_worker.py [--reps 5] [--steps 200] [--ns 1,2,4,8,16,32,64,128]
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure_host import fit

warnings.filterwarnings("ignore")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
MODEL_DIR = "/tmp/fleetsim-host-worker-llama2-7b"
BLOCK_SIZE = 16
NUM_BLOCKS = 8192
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float16",
    "vocab_size": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


def old_vllm():
    """vLLM before 0.10: its V1 has no CPU model runner (and no CPU V1 platform), so the GPU runner itself is built on
    CPU tensors, with FlashAttention's own metadata builder (its kernels are imported only on CUDA)."""
    import vllm

    major, minor = (int(x) for x in vllm.__version__.split(".")[:2])
    return (major, minor) < (0, 10)


def init_groups(vc):
    """One process, one rank: the TP/PP groups the runner asks for (gloo)."""
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + random.randrange(1000)))
    with set_current_vllm_config(vc):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo")
        initialize_model_parallel(1, 1)


def build_old():
    """vLLM 0.8-0.9: the V1 `GPUModelRunner` on CPU tensors (no model loaded: the stubs stand in for it), its
    FlashAttention metadata builder, the V1 `Scheduler` with the same blocks."""
    import types

    import vllm.v1.worker.gpu_model_runner as runner_module
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, ParallelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    os.makedirs(MODEL_DIR, exist_ok=True)
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    mc = ModelConfig(
        model=MODEL_DIR,
        task="generate",
        tokenizer=MODEL_DIR,
        tokenizer_mode="auto",
        trust_remote_code=False,
        dtype="float16",
        seed=0,
        skip_tokenizer_init=True,
        max_model_len=4096,
    )
    cc = CacheConfig(
        block_size=BLOCK_SIZE, gpu_memory_utilization=0.9, swap_space=0, cache_dtype="auto", enable_prefix_caching=True
    )
    cc.num_gpu_blocks = NUM_BLOCKS
    sc = SchedulerConfig(
        runner_type="generate", max_num_batched_tokens=4096, max_num_seqs=256, max_model_len=4096, enable_chunked_prefill=True
    )
    vc = VllmConfig(
        model_config=mc,
        cache_config=cc,
        scheduler_config=sc,
        parallel_config=ParallelConfig(),
        device_config=DeviceConfig(device="cpu"),
    )
    init_groups(vc)
    runner_module.get_attn_backend = lambda *a, **k: FlashAttentionBackend  # (the CPU platform names a V0 backend)
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=108)
    runner = runner_module.GPUModelRunner(vc, torch.device("cpu"))
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=2, head_size=32, dtype=torch.float16, use_mla=False)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(CONFIG["num_hidden_layers"])]
    kv = KVCacheConfig(num_blocks=NUM_BLOCKS, tensors={}, kv_cache_groups=[KVCacheGroupSpec(names, spec)])
    sched = Scheduler(
        scheduler_config=sc,
        model_config=mc,
        cache_config=cc,
        lora_config=None,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(vc),
        include_finished_set=False,
        log_stats=True,
    )
    return vc, runner, sched


def build():
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()  # (no GPU here: the CPU platform, which runs the same model runner)
    if old_vllm():
        return build_old()
    from vllm.engine.arg_utils import EngineArgs

    os.makedirs(MODEL_DIR, exist_ok=True)
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    args = EngineArgs(
        model=MODEL_DIR,
        skip_tokenizer_init=True,
        max_model_len=4096,
        max_num_batched_tokens=4096,
        max_num_seqs=256,
        dtype="float16",
        enforce_eager=True,
        load_format="dummy",
        enable_prefix_caching=True,
        block_size=BLOCK_SIZE,
    )
    vc = args.create_engine_config()
    vc.cache_config.num_gpu_blocks = NUM_BLOCKS
    init_groups(vc)
    from vllm.config import set_current_vllm_config
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec, KVCacheTensor
    from vllm.v1.structured_output import StructuredOutputManager
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    runner = CPUModelRunner(vc, torch.device("cpu"))
    with set_current_vllm_config(vc):
        runner.load_model()
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=2, head_size=32, dtype=torch.float16)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(32)]
    per_layer = spec.page_size_bytes * NUM_BLOCKS
    kv = KVCacheConfig(
        num_blocks=NUM_BLOCKS,
        kv_cache_tensors=[KVCacheTensor(size=per_layer, shared_by=[n]) for n in names],
        kv_cache_groups=[KVCacheGroupSpec(names, spec)],
    )
    with set_current_vllm_config(vc):
        runner.initialize_kv_cache(kv)
    sched = Scheduler(
        vllm_config=vc,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(vc),
        include_finished_set=False,
        log_stats=True,
    )
    return vc, runner, sched


class StubModel(torch.nn.Module):
    """The model's forward and logits: preallocated tensors' rows (on a GPU, device work)."""

    def __init__(self, hidden, vocab, max_tokens):
        super().__init__()
        self.h = torch.zeros(max_tokens, hidden, dtype=torch.float16)
        self.logits = torch.zeros(max_tokens, vocab, dtype=torch.float32)

    def forward(self, input_ids=None, positions=None, intermediate_tensors=None, inputs_embeds=None, **kw):
        return self.h[: positions.shape[-1]]

    def compute_logits(self, hidden_states, *a, **kw):
        return self.logits[: hidden_states.shape[0]]

    def sample(self, logits, sampling_metadata):  # (vLLM before 0.10 samples through the model)
        return self.sampler(logits=logits, sampling_metadata=sampling_metadata)


class StubSampler:
    def __init__(self, rng):
        self.rng = rng

    def __call__(self, logits, sampling_metadata, **kw):
        import torch
        from vllm.v1.outputs import SamplerOutput

        n = logits.shape[0]
        ids = torch.tensor([[self.rng.randrange(3, 31999)] for _ in range(n)], dtype=torch.int32)
        return SamplerOutput(sampled_token_ids=ids, logprobs_tensors=None)


def make_request(request_id, prompt, sp):
    from vllm.v1.request import Request

    if old_vllm():
        return Request(
            request_id=request_id,
            prompt=None,
            prompt_token_ids=prompt,
            multi_modal_inputs=None,
            multi_modal_hashes=None,
            multi_modal_placeholders=None,
            sampling_params=sp,
            eos_token_id=2,
            arrival_time=time.time(),
        )
    from vllm.utils import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    init_none_hash(sha256)
    return Request(
        request_id=request_id,
        prompt_token_ids=prompt,
        sampling_params=sp,
        pooling_params=None,
        eos_token_id=2,
        arrival_time=time.time(),
        block_hasher=get_request_block_hasher(BLOCK_SIZE, sha256),
    )


def run_point(vc, runner, sched, n, steps, seed):
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import RequestStatus

    rng = random.Random(seed)
    runner.model = StubModel(64, 32000, 4096)
    runner.model.sampler = runner.sampler = StubSampler(rng)
    tag = f"{seed}-{n}-{time.monotonic_ns()}"
    for i in range(n):
        prompt = [rng.randrange(3, 31999) for _ in range(rng.randint(200, 1000))]
        sp = SamplingParams(max_tokens=100000, temperature=0.6, top_p=0.9, ignore_eos=True)
        sched.add_request(make_request(f"r-{tag}-{i}", prompt, sp))
    names = ("_update_states", "_prepare_inputs", "_preprocess", "_bookkeeping_sync")  # (the last two from vLLM 0.10)
    parts = {name: 0.0 for name in names if hasattr(type(runner), name)}
    timing = [False]

    def timed(name, fn):
        def call(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if timing[0]:
                    parts[name] += time.perf_counter() - t

        return call

    for name in parts:  # (each part's own time, on the instance: the class's methods untouched)
        setattr(runner, name, timed(name, getattr(type(runner), name).__get__(runner)))
    times = []
    warm = None
    for _ in range(steps + 400):
        so = sched.schedule()
        timing[0] = warm is not None and warm + 1 >= steps // 5
        t0 = time.perf_counter()
        out = runner.execute_model(so)
        t1 = time.perf_counter()
        sched.update_from_output(so, out)
        decode = all(v == 1 for v in so.num_scheduled_tokens.values()) and len(so.num_scheduled_tokens) == n
        if decode:
            warm = 0 if warm is None else warm + 1
            if warm >= steps // 5:
                times.append(t1 - t0)
            if len(times) >= steps - steps // 5:
                break
    sched.finish_requests(list(sched.requests), RequestStatus.FINISHED_ABORTED)
    so = sched.schedule()  # (the runner drops the finished requests)
    timing[0] = False
    runner.execute_model(so)
    for name in parts:
        del runner.__dict__[name]
    return statistics.median(times), {k: v / len(times) for k, v in parts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ns", default="1,2,4,8,16,32,64,128")
    args = ap.parse_args()
    import vllm

    vc, runner, sched = build()
    ns = [int(x) for x in args.ns.split(",")]
    print(f"vLLM {vllm.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}")
    print("N, model runner execute_model us/step (median step of each repeat: median [min])")
    rows = []
    order = [(n, rep) for n in ns for rep in range(args.reps)]
    random.Random(0).shuffle(order)
    got = {n: [] for n in ns}
    split = {n: [] for n in ns}
    for n, rep in order:
        t, parts = run_point(vc, runner, sched, n, args.steps, seed=rep)
        got[n].append(t * 1e6)
        split[n].append(parts)
    for n in ns:
        rows.append((n, statistics.median(got[n])))
        mean = {k: statistics.median(p[k] for p in split[n]) * 1e6 for k in split[n][0]}
        cells = ", ".join(f"{k.strip('_')} {v:.1f}" for k, v in mean.items())
        print(f"{n:4d}  {statistics.median(got[n]):8.1f} [{min(got[n]):7.1f}]   of which (mean): {cells}")
    xs, ys = [r[0] for r in rows], [r[1] for r in rows]
    a, b = fit(xs, ys)  # (measure_host.py's least squares, as the engine-loop figures are fitted)
    print(f"fit: {a:.1f} us a step + {b:.2f} us a running request")


if __name__ == "__main__":
    main()
