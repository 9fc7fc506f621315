#!/usr/bin/env python3
"""Measure vLLM V1 engine-core host (CPU) work per engine step vs. number of
running decode requests N.  No GPU, no weights: the real V1 Scheduler, the real
shm MessageQueue (TP=8 broadcast + 8 worker-response queues) and the real
MsgpackEncoder are driven with a fabricated ModelRunnerOutput.

Per step (same order as EngineCore.step + MultiprocExecutor.collective_rpc):
  sched   : Scheduler.schedule()
  bcast   : rpc_broadcast_mq.enqueue(("execute_model",(SchedulerOutput,),{}))
            (pickle.dumps + copy into shm ring, 8 local readers)
  resp    : for 8 workers: worker_response_mq.dequeue()  (pickle.loads;
            rank 0 returns the ModelRunnerOutput, ranks 1..7 return None)
  update  : Scheduler.update_from_output(SchedulerOutput, ModelRunnerOutput)
  encode  : MsgpackEncoder.encode_into(EngineCoreOutputs)  (output IO thread)
  [fab    : building the ModelRunnerOutput -- worker side, NOT in the sum]
Worker-side reads/writes of the queues are done in this process, untimed.

Usage: python measure_host.py [--reps 5] [--steps 300] [--ns 1,8,16,...]
"""

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_USE_V1", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.join(tempfile.gettempdir(), "fleetsim-host-llama70b")  # a config.json only, no weights
LLAMA_70B_CONFIG = """{"architectures":["LlamaForCausalLM"],"attention_bias":false,
"bos_token_id":128000,"eos_token_id":[128001,128008,128009],"hidden_act":"silu",
"hidden_size":8192,"initializer_range":0.02,"intermediate_size":28672,
"max_position_embeddings":131072,"model_type":"llama","num_attention_heads":64,
"num_hidden_layers":80,"num_key_value_heads":8,"pretraining_tp":1,"rms_norm_eps":1e-05,
"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
"original_max_position_embeddings":8192,"rope_type":"llama3"},"rope_theta":500000.0,
"tie_word_embeddings":false,"torch_dtype":"bfloat16","vocab_size":128256}"""

TP = 8
BLOCK_SIZE = 16
NUM_BLOCKS = 24000
MAX_NUM_SEQS = 1024
MAX_BATCHED = 2048
EOS = 128001


def build_configs():
    from vllm.platforms import current_platform

    # UnspecifiedPlatform (no GPU) raises NotImplementedError here; the answer
    # only affects V0 async output processing.
    try:
        current_platform.is_async_output_supported(True)
    except NotImplementedError:  # vLLM 0.8.x
        type(current_platform).is_async_output_supported = classmethod(lambda cls, enforce_eager: False)
    except TypeError:  # attribute absent in newer versions: not needed
        pass
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig, VllmConfig

    mkw = dict(
        model=MODEL_DIR,
        tokenizer=MODEL_DIR,
        tokenizer_mode="auto",
        trust_remote_code=False,
        dtype="bfloat16",
        seed=0,
        skip_tokenizer_init=True,
    )
    try:
        mc = ModelConfig(task="generate", **mkw)
    except TypeError:
        mc = ModelConfig(**mkw)
    cc = CacheConfig(
        block_size=BLOCK_SIZE, gpu_memory_utilization=0.9, swap_space=0, cache_dtype="auto", enable_prefix_caching=True
    )
    cc.num_gpu_blocks = NUM_BLOCKS
    sc = SchedulerConfig(
        runner_type="generate",
        max_num_batched_tokens=MAX_BATCHED,
        max_num_seqs=MAX_NUM_SEQS,
        max_model_len=mc.max_model_len,
        enable_chunked_prefill=True,
    )
    pc = ParallelConfig(tensor_parallel_size=TP)
    vkw = dict(model_config=mc, cache_config=cc, scheduler_config=sc, parallel_config=pc)
    try:
        vc = VllmConfig(**vkw)
    except RuntimeError:  # vLLM >= 0.10 cannot infer a device without GPU
        from vllm.config import DeviceConfig

        vc = VllmConfig(device_config=DeviceConfig(device="cpu"), **vkw)
    return vc


def _accepted(cls, kw):
    import dataclasses
    import inspect

    try:
        names = {f.name for f in dataclasses.fields(cls)}
    except TypeError:
        names = set(inspect.signature(cls).parameters)
    return {k: v for k, v in kw.items() if k in names}


def build_kv_cache_config():
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    spec = FullAttentionSpec(
        **_accepted(
            FullAttentionSpec,
            dict(block_size=BLOCK_SIZE, num_kv_heads=8 // TP, head_size=128, dtype=torch.bfloat16, use_mla=False),
        )
    )
    names = [f"model.layers.{i}.self_attn.attn" for i in range(80)]
    groups = [KVCacheGroupSpec(names, spec)]
    return KVCacheConfig(
        **_accepted(KVCacheConfig, dict(num_blocks=NUM_BLOCKS, tensors={}, kv_cache_tensors=[], kv_cache_groups=groups))
    )


def build_scheduler(vc, log_stats):
    import inspect

    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.structured_output import StructuredOutputManager

    som = StructuredOutputManager(vc)
    if "vllm_config" in inspect.signature(Scheduler.__init__).parameters:
        return Scheduler(
            vllm_config=vc,
            kv_cache_config=build_kv_cache_config(),
            structured_output_manager=som,
            include_finished_set=False,
            log_stats=log_stats,
        )
    return Scheduler(
        scheduler_config=vc.scheduler_config,
        model_config=vc.model_config,
        cache_config=vc.cache_config,
        lora_config=None,
        kv_cache_config=build_kv_cache_config(),
        structured_output_manager=som,
        include_finished_set=False,
        log_stats=log_stats,
    )


_BLOCK_HASHER = []


def block_hasher(vc):
    """vLLM >= 0.10: EngineCore builds a per-request block hasher."""
    if not _BLOCK_HASHER:
        try:
            from vllm.utils import get_hash_fn_by_name
            from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

            fn = get_hash_fn_by_name(vc.cache_config.prefix_caching_hash_algo)
            init_none_hash(fn)
            _BLOCK_HASHER.append(get_request_block_hasher(BLOCK_SIZE, fn))
        except ImportError:
            _BLOCK_HASHER.append(None)
    return _BLOCK_HASHER[0]


def make_request(i, rng, tag, vc):
    import inspect

    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    plen = rng.randint(200, 1000)  # ShareGPT-like prompt length
    prompt = [rng.randrange(1000, 128000) for _ in range(plen)]
    sp = SamplingParams(max_tokens=60000, temperature=0.8, top_p=0.95)
    params = inspect.signature(Request.__init__).parameters
    common = dict(
        request_id=f"cmpl-{tag}-{i:05d}-0",
        prompt_token_ids=prompt,
        sampling_params=sp,
        eos_token_id=EOS,
        arrival_time=time.time(),
    )
    if "pooling_params" in params:  # vLLM >= 0.10
        return Request(**common, pooling_params=None, block_hasher=block_hasher(vc))
    return Request(**common, prompt=None, multi_modal_inputs=None, multi_modal_hashes=None, multi_modal_placeholders=None)


class Queues:
    """Real shm MessageQueues as MultiprocExecutor(TP=8) creates them."""

    def __init__(self):
        import inspect

        import vllm.v1.executor.multiproc_executor as mpe
        from vllm.distributed.device_communicators.shm_broadcast import MessageQueue
        from vllm.v1.executor.multiproc_executor import WorkerProc

        self.SUCCESS = WorkerProc.ResponseStatus.SUCCESS
        # vLLM >= ~0.9: execute_model uses unique_reply_rank -> only the
        # output rank replies and the broadcast tuple has a 4th element.
        self.unique_reply = "unique_reply_rank" in inspect.getsource(mpe)
        self.n_resp = 1 if self.unique_reply else TP
        self.bcast = MessageQueue(TP, TP)
        h = self.bcast.export_handle()
        self.bcast_readers = [MessageQueue.create_from_handle(h, r) for r in range(TP)]
        self.bcast.wait_until_ready()
        for r in self.bcast_readers:
            r.wait_until_ready()
        self.resp_w, self.resp_r = [], []
        for _ in range(TP):
            w = MessageQueue(1, 1)
            r = MessageQueue.create_from_handle(w.export_handle(), 0)
            w.wait_until_ready()
            r.wait_until_ready()
            self.resp_w.append(w)
            self.resp_r.append(r)

    def workers_consume_broadcast(self):
        # worker side: mark the chunk read without unpickling (untimed)
        for r in self.bcast_readers:
            with r.acquire_read() as _buf:
                pass

    def workers_reply(self, mro):
        for i, w in enumerate(self.resp_w[: self.n_resp]):
            w.enqueue((self.SUCCESS, mro if i == 0 else None))

    def broadcast(self, so):
        if self.unique_reply:
            self.bcast.enqueue(("execute_model", (so,), {}, 0))
        else:
            self.bcast.enqueue(("execute_model", (so,), {}))

    def collect(self):
        return [r.dequeue() for r in self.resp_r[: self.n_resp]]


def make_mro(so, tok_iter):
    from vllm.v1.outputs import ModelRunnerOutput

    req_ids = list(so.num_scheduled_tokens.keys())
    # new (prefill) reqs may finish their prompt this step -> 1 token;
    # partial prefills -> [] (the runner's behaviour).
    sampled = []
    for _rid in req_ids:
        sampled.append([next(tok_iter)])
    kw = dict(
        req_ids=req_ids,
        req_id_to_index={r: i for i, r in enumerate(req_ids)},
        sampled_token_ids=sampled,
        spec_token_ids=None,
        logprobs=None,
        prompt_logprobs_dict={},
    )
    try:
        return ModelRunnerOutput(**kw)
    except TypeError:  # newer versions have extra fields
        kw.pop("spec_token_ids")
        kw["pooler_output"] = []
        return ModelRunnerOutput(**kw)


def make_prefill_mro(sched, so, tok_iter):
    """During prefill only requests whose prompt is complete sample a token."""

    req_ids = list(so.num_scheduled_tokens.keys())
    sampled = []
    for rid in req_ids:
        req = sched.requests[rid]
        sampled.append([next(tok_iter)] if req.num_computed_tokens >= req.num_tokens else [])
    mro = make_mro(so, tok_iter)
    mro.sampled_token_ids = sampled
    return mro


def token_stream(seed):
    rng = random.Random(seed)
    pool = [rng.randrange(1000, 128000) for _ in range(100003)]
    while True:
        yield from pool


class Bench:
    def __init__(self, n, vc, q, log_stats, seed):
        self.n = n
        self.q = q
        self.sched = build_scheduler(vc, log_stats)
        rng = random.Random(seed)
        for i in range(n):
            self.sched.add_request(make_request(i, rng, f"n{n}", vc))
        self.toks = token_stream(seed)
        # prefill to steady state (all requests decoding)
        guard = 0
        while True:
            so = self.sched.schedule()
            mro = make_prefill_mro(self.sched, so, self.toks)
            self.sched.update_from_output(so, mro)
            guard += 1
            if (
                not self.sched.waiting
                and len(self.sched.running) == n
                and all(r.num_computed_tokens >= r.num_tokens - 1 and r.num_output_tokens > 0 for r in self.sched.running)
            ):
                break
            assert guard < 10000
        from vllm.v1.serial_utils import MsgpackEncoder

        self.encoder = MsgpackEncoder()
        self.buf = bytearray()

    def run(self, steps):
        """Returns list of per-step dicts of seconds."""
        pc, pt = time.perf_counter, time.process_time
        sched, q, enc, buf, toks = (self.sched, self.q, self.encoder, self.buf, self.toks)
        out = []
        for _ in range(steps):
            c0 = pt()
            t0 = pc()
            so = sched.schedule()
            t1 = pc()
            q.broadcast(so)
            t2 = pc()
            c1 = pt()
            # ---- worker side (untimed) ----
            assert so.total_num_scheduled_tokens == self.n  # pure decode
            q.workers_consume_broadcast()
            tf0 = pc()
            mro_w = make_mro(so, toks)
            tf1 = pc()
            q.workers_reply(mro_w)
            # ---- engine core again ----
            c2 = pt()
            t3 = pc()
            res = q.collect()
            mro = res[0][1]
            t4 = pc()
            eco = sched.update_from_output(so, mro)
            eco = list(eco.values()) if isinstance(eco, dict) else [eco]  # vLLM >= 0.9: {client_idx: outputs}
            t5 = pc()
            for e in eco:
                enc.encode_into(e, buf)
            t6 = pc()
            c3 = pt()
            assert len(sched.running) == self.n
            out.append(
                dict(
                    sched=t1 - t0,
                    bcast=t2 - t1,
                    resp=t4 - t3,
                    update=t5 - t4,
                    encode=t6 - t5,
                    fab=tf1 - tf0,
                    cpu=(c1 - c0) + (c3 - c2),
                )
            )
        return out


COMPS = ["sched", "bcast", "resp", "update", "encode"]


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / sxx
    return my - b * mx, b


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1,8,16,32,64,128,256")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--no-log-stats", action="store_true", help="log_stats=False (vllm serve default is True)")
    args = ap.parse_args()
    os.makedirs(MODEL_DIR, exist_ok=True)
    cfg = os.path.join(MODEL_DIR, "config.json")
    if not os.path.exists(cfg):
        with open(cfg, "w") as f:
            f.write(LLAMA_70B_CONFIG)
    import torch
    import vllm

    ns = [int(x) for x in args.ns.split(",")]
    vc = build_configs()
    q = Queues()
    print(
        f"# vllm {vllm.__version__}  torch {torch.__version__}  python "
        f"{sys.version.split()[0]}  cpu: {cpu_model()}  "
        f"log_stats={not args.no_log_stats}",
        flush=True,
    )
    # A fresh scheduler per (rep, N) so contexts stay ShareGPT-like
    # (prompt 200-1000 + warmup+steps decode tokens) and the 24k-block
    # KV cache never preempts.
    # meds[rep][n][comp] = median seconds over the rep's steps
    meds = []
    means = {n: {c: [] for c in [*COMPS, "fab", "cpu", "sum"]} for n in ns}
    rng = random.Random(0)
    for rep in range(args.reps):
        order = ns[:]
        rng.shuffle(order)
        mrep = {}
        for n in order:
            bench = Bench(n, vc, q, not args.no_log_stats, seed=1000 + 7 * rep + n)
            bench.run(args.warmup)
            gc.collect()
            rows = bench.run(args.steps)
            del bench
            for r in rows:
                r["sum"] = sum(r[c] for c in COMPS)
            mrep[n] = {c: statistics.median(r[c] for r in rows) for c in rows[0]}
            for c in rows[0]:
                means[n][c].append(statistics.fmean(r[c] for r in rows))
        meds.append(mrep)
        print(f"# rep {rep + 1}/{args.reps} done", flush=True)
    cols = [*COMPS, "sum", "cpu", "fab"]
    us = 1e6
    print("\nPer-step time in us: median-of-step-medians across reps [best rep median] (mean of step means)")
    print("N".rjust(5) + "".join(c.rjust(22) for c in cols))
    for n in ns:
        cells = []
        for c in cols:
            vals = [m[n][c] * us for m in meds]
            cells.append(
                f"{statistics.median(vals):7.1f} [{min(vals):6.1f}]({statistics.median(means[n][c]) * us:6.1f})".rjust(22)
            )
        print(str(n).rjust(5) + "".join(cells))
    print(
        "\nLeast squares time = a + b*N on per-step medians "
        "(a us/step, b us/running req/step); median [min..max] over reps;"
        " 'best' = fit to best-rep medians"
    )
    for c in cols:
        fits = [fit(ns, [m[n][c] * us for n in ns]) for m in meds]
        a_s = [f[0] for f in fits]
        b_s = [f[1] for f in fits]
        ab, bb = fit(ns, [min(m[n][c] for m in meds) * us for n in ns])
        print(
            f"{c:>7}: a = {statistics.median(a_s):7.1f} "
            f"[{min(a_s):7.1f}..{max(a_s):7.1f}]  b = "
            f"{statistics.median(b_s):6.3f} [{min(b_s):6.3f}..{max(b_s):6.3f}]"
            f"   best: a={ab:7.1f} b={bb:6.3f}"
        )


if __name__ == "__main__":
    main()
