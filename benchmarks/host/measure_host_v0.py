#!/usr/bin/env python3
"""Measure vLLM's V0 engine loop on the host (CPU) per engine step vs. the number of running decode requests N.
No GPU, no weights: the real V0 `LLMEngine.step()` (its `Scheduler.schedule()`, the `ExecuteModelRequest` it builds,
`_process_model_outputs` with incremental detokenization, stop checks and the `RequestOutput`s) runs against an
executor that does, in this process, what a Ray-distributed V0 server's executor does around the GPU's work:

  req     : the ExecuteModelRequest pickled (Ray sends it to the later pipeline stages' driver workers)
  req_load: and unpickled there (not in `total`: the later stages read it while the first stage computes)
  sample  : the sampler's output built as Python objects, one `CompletionSequenceGroupOutput` a request
            (`vllm.model_executor.layers.sampler._build_sampler_output`'s objects, its per-request loop)
  resp    : that SamplerOutput pickled and unpickled (Ray returns it to the engine)
  engine  : the rest of `LLMEngine.step()`: scheduling, building the request, processing the outputs
  total   : what the GPUs wait for a step: all of the above but req_load
  sched   : of which `Scheduler.schedule()`

Not measured here: the driver workers' `prepare_model_input` (`measure_worker_v0.py` measures it), the tensor
broadcast to their TP peers, Ray's own task dispatch, the asyncio loop of `AsyncLLMEngine` and the API server's
streaming, and the GIL contention between a pipeline's virtual engines (one process runs both).

The tokenizer is a fabricated byte-level BPE of Llama 3's vocabulary size (no download); incremental detokenization
costs per call, not per vocabulary entry.

Usage (vLLM 0.8.x installed beside CPU torch; see README.md):
    python measure_host_v0.py [--reps 7] [--steps 200] [--warmup 10] [--prompts 100,340] [--ns 1,8,16,32,64,128]
"""

import argparse
import gc
import json
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ["VLLM_USE_V1"] = "0"

MODEL_DIR = os.path.join(tempfile.gettempdir(), "fleetsim-host-v0-llama70b")  # config.json and a tokenizer, no weights
LLAMA_70B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 8192,
    "initializer_range": 0.02,
    "intermediate_size": 28672,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
VOCAB = 128256
BLOCK_SIZE = 16
NUM_BLOCKS = 12794  # one virtual engine's share of the TP4 x PP2 run's 25,588 blocks
MAX_NUM_SEQS = 256
MAX_BATCHED = 2048
TP = 4


def write_model_dir():
    """config.json plus a fast tokenizer: byte-level BPE over VOCAB tokens of 1-3 byte-level characters, no merges."""
    os.makedirs(MODEL_DIR, exist_ok=True)
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(LLAMA_70B_CONFIG, f)
    if os.path.exists(os.path.join(MODEL_DIR, "tokenizer.json")):
        return
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    toks = list(alphabet)
    for a in alphabet:
        for b in alphabet:
            toks.append(a + b)
    rng = random.Random(0)
    seen = set(toks)
    while len(toks) < VOCAB - 256:
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6)))
        if t not in seen:
            seen.add(t)
            toks.append(t)
    specials = [f"<|reserved_special_token_{i}|>" for i in range(256)]
    specials[0], specials[1] = "<|begin_of_text|>", "<|end_of_text|>"
    vocab = {t: i for i, t in enumerate(toks)}
    for j, s in enumerate(specials):
        vocab[s] = len(toks) + j
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    tk.save(os.path.join(MODEL_DIR, "tokenizer.json"))
    with open(os.path.join(MODEL_DIR, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|end_of_text|>",
                "model_max_length": 131072,
            },
            f,
        )


TIMES = {}


def _acc(key, dt):
    TIMES[key] = TIMES.get(key, 0.0) + dt


def build_engine():
    from vllm.platforms import current_platform

    for name in ("is_async_output_supported",):
        try:
            getattr(current_platform, name)(True)
        except (NotImplementedError, AttributeError):
            setattr(type(current_platform), name, classmethod(lambda cls, enforce_eager: False))
    from vllm.config import (
        CacheConfig,
        DeviceConfig,
        LoadConfig,
        ModelConfig,
        ObservabilityConfig,
        ParallelConfig,
        SchedulerConfig,
        VllmConfig,
    )
    from vllm.core.scheduler import Scheduler
    from vllm.engine.llm_engine import LLMEngine
    from vllm.executor.executor_base import ExecutorBase
    from vllm.model_executor.layers.sampler import SamplerOutput
    from vllm.sequence import CompletionSequenceGroupOutput, Logprob, SequenceOutput

    mc = ModelConfig(
        model=MODEL_DIR,
        task="generate",
        tokenizer=MODEL_DIR,
        tokenizer_mode="auto",
        trust_remote_code=False,
        dtype="bfloat16",
        seed=0,
    )
    cc = CacheConfig(
        block_size=BLOCK_SIZE, gpu_memory_utilization=0.9, swap_space=0, cache_dtype="auto", enable_prefix_caching=True
    )
    sc = SchedulerConfig(
        runner_type="generate",
        max_num_batched_tokens=MAX_BATCHED,
        max_num_seqs=MAX_NUM_SEQS,
        max_model_len=mc.max_model_len,
        enable_chunked_prefill=True,
    )
    pc = ParallelConfig(tensor_parallel_size=1)
    parts = dict(
        model_config=mc,
        cache_config=cc,
        scheduler_config=sc,
        parallel_config=pc,
        load_config=LoadConfig(),
        observability_config=ObservabilityConfig(),
    )
    try:
        vc = VllmConfig(**parts)
    except RuntimeError:  # (no device to infer without a GPU)
        vc = VllmConfig(**parts, device_config=DeviceConfig(device="cpu"))
    vc.model_config.use_async_output_proc = False  # a pipeline-parallel server runs without it (as the run logged)

    class RayLikeExecutor(ExecutorBase):
        """What a Ray V0 executor does on the host around the GPU: the request to the last stage's driver and back."""

        uses_ray = False

        def _init_executor(self):
            self.tok = random.Random(1)

        def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
            return []

        def determine_num_available_blocks(self):
            return NUM_BLOCKS, 0

        def initialize_cache(self, num_gpu_blocks, num_cpu_blocks):
            self.cache_config.num_gpu_blocks = num_gpu_blocks
            self.cache_config.num_cpu_blocks = num_cpu_blocks

        def check_health(self):
            return None

        def execute_model(self, execute_model_req):
            pc_ = time.perf_counter
            t0 = pc_()
            blob = pickle.dumps(execute_model_req, protocol=5)
            tm = pc_()
            req = pickle.loads(blob)
            t1 = pc_()
            outs = []
            rng = self.tok
            for md in req.seq_group_metadata_list:
                if md.do_sample:
                    (sid,) = md.seq_data.keys()
                    tok = rng.randrange(1000, 128000)
                    outs.append(
                        CompletionSequenceGroupOutput(
                            samples=[SequenceOutput(sid, tok, {tok: Logprob(logprob=float("inf"))})], prompt_logprobs=None
                        )
                    )
                else:
                    outs.append(CompletionSequenceGroupOutput(samples=[], prompt_logprobs=None))
            so = SamplerOutput(outputs=outs)
            t2 = pc_()
            out = pickle.loads(pickle.dumps([so], protocol=5))
            t3 = pc_()
            _acc("req", tm - t0)
            _acc("req_load", t1 - tm)
            _acc("sample", t2 - t1)
            _acc("resp", t3 - t2)
            return out

        def shutdown(self):
            return None

    orig = Scheduler.schedule

    def timed_schedule(self):
        t0 = time.perf_counter()
        r = orig(self)
        _acc("sched", time.perf_counter() - t0)
        return r

    Scheduler.schedule = timed_schedule
    return LLMEngine(vllm_config=vc, executor_class=RayLikeExecutor, log_stats=True)


_ENGINE = []


def engine():
    if not _ENGINE:
        _ENGINE.append(build_engine())
    return _ENGINE[0]


def run_point(n, steps, warmup, seed, prompt_range=(200, 1000)):
    """Per-step seconds by part for N running decode requests (a fresh batch of requests each call)."""
    from vllm import SamplingParams

    eng = engine()
    sch = eng.scheduler[0]
    ids = [g.request_id for q in (sch.waiting, sch.running, sch.swapped) for g in q]
    if ids:  # drop the last point's requests
        eng.abort_request(ids)
        eng.step()
    assert not eng.has_unfinished_requests()
    rng = random.Random(seed)
    for i in range(n):
        plen = rng.randint(*prompt_range)
        prompt = [rng.randrange(1000, 128000) for _ in range(plen)]
        sp = SamplingParams(max_tokens=60000, temperature=0.8, top_p=0.95, ignore_eos=True)
        eng.add_request(f"cmpl-{seed}-{n}-{i}", {"prompt_token_ids": prompt}, sp)
    guard = 0
    while True:  # prefill to a steady state: every request decoding
        eng.step()
        guard += 1
        groups = eng.scheduler[0].running
        if not eng.scheduler[0].waiting and len(groups) == n and all(not g.is_prefill() for g in groups):
            break
        assert guard < 10000
    for _ in range(warmup):
        eng.step()
    out = []
    pc_ = time.perf_counter
    for _ in range(steps):
        TIMES.clear()
        t0 = pc_()
        eng.step()
        total = pc_() - t0
        row = {k: TIMES.get(k, 0.0) for k in ("sched", "req", "req_load", "sample", "resp")}
        row["engine"] = total - row["req"] - row["req_load"] - row["sample"] - row["resp"]
        # the critical path: all but the worker's unpickling of the request, which overlaps the first stage's GPU work
        row["total"] = total - row["req_load"]
        out.append(row)
    assert len(eng.scheduler[0].running) == n
    return out


COMPS = ["sched", "engine", "req", "req_load", "sample", "resp", "total"]


def main():
    from measure_host import cpu_model, fit  # (its sibling: the same fit and CPU name as the V1 figures)

    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1,8,16,32,64,128")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument(
        "--prompts",
        default="100,340",
        help="prompt lengths drawn uniformly from MIN,MAX (a request's tokens are pickled every step)",
    )
    args = ap.parse_args()
    write_model_dir()
    import torch
    import vllm

    ns = [int(x) for x in args.ns.split(",")]
    lo, hi = (int(x) for x in args.prompts.split(","))
    prompt_range = (lo, hi)
    engine()
    print(
        f"# vllm {vllm.__version__} (V0 engine)  torch {torch.__version__}  python {sys.version.split()[0]}  "
        f"cpu: {cpu_model()}  log_stats=True  async output processing off  prompts {lo}-{hi} tokens, "
        f"{args.warmup} + {args.steps} decode steps (mean context {(lo + hi) / 2 + args.warmup + args.steps / 2:.0f})",
        flush=True,
    )
    meds = []
    for rep in range(args.reps):
        order = ns[:]
        random.Random(rep).shuffle(order)
        per = {}
        for n in order:
            gc.collect()
            rows = run_point(n, args.steps, args.warmup, seed=1000 * rep + n, prompt_range=prompt_range)
            per[n] = {c: statistics.median(r[c] for r in rows) for c in COMPS}
        meds.append(per)
        print(f"# rep {rep + 1}/{args.reps} done", flush=True)
    print("\nPer-step time in us: median over reps of the step medians")
    print(f"{'N':>5}" + "".join(f"{c:>10}" for c in COMPS))
    for n in ns:
        print(f"{n:>5}" + "".join(f"{statistics.median(m[n][c] for m in meds) * 1e6:10.1f}" for c in COMPS))
    print("\nLeast squares time = a + b*N on each rep's step medians (a us/step, b us/running request/step); median [min..max]")
    for c in COMPS:
        fits = [fit(ns, [m[n][c] * 1e6 for n in ns]) for m in meds]
        a = [f[0] for f in fits]
        b = [f[1] for f in fits]
        print(
            f"{c:>7}: a = {statistics.median(a):8.1f} [{min(a):8.1f}..{max(a):8.1f}]  "
            f"b = {statistics.median(b):7.2f} [{min(b):7.2f}..{max(b):7.2f}]"
        )


if __name__ == "__main__":
    main()
