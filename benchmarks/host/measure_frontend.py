#!/usr/bin/env python3
"""Measure vLLM V1's API-server (front-end) CPU work per engine step vs. the number of running streamed requests N.

No GPU, no weights, no engine core: vLLM 0.8.3's own `OutputProcessor.process_outputs` (stats, incremental
detokenization, `RequestOutput`s put in each request's `RequestOutputCollector`), as `AsyncLLM`'s output handler
runs it on each step's `EngineCoreOutputs` (one new token per request), then, per request, what the OpenAI
completions stream does with it (`serving_completion.completion_stream_generator`: the collector's output, a
`CompletionStreamResponse` chunk and its `model_dump_json`, the SSE line). Not measured: the engine core's
output encoding and the ZMQ hop (in `measure_host.py`), asyncio's task switches and Starlette/uvicorn writing the
chunk to the socket, and the client.

The tokenizer is `measure_host_v0.py`'s fabricated byte-level BPE of Llama 3's vocabulary size.
Usage: python measure_frontend.py [--reps 7] [--steps 200] [--ns 1,8,16,32,64,128]
"""

import argparse
import os
import platform
import random
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_USE_V1", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure_host import fit  # noqa: E402
from measure_host_v0 import MODEL_DIR, VOCAB, write_model_dir  # noqa: E402

EOS = 128001


def run_point(n, steps, seed, log_stats=True):
    from vllm.entrypoints.openai.protocol import CompletionResponseStreamChoice, CompletionStreamResponse
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.transformers_utils.tokenizer_group import TokenizerGroup
    from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest
    from vllm.v1.engine.output_processor import OutputProcessor, RequestOutputCollector
    from vllm.v1.metrics.stats import IterationStats

    rng = random.Random(seed)
    group = TokenizerGroup(MODEL_DIR, enable_lora=False, max_num_seqs=1024, max_input_length=None)
    proc = OutputProcessor(group, log_stats=log_stats)
    queues = {}
    for i in range(n):
        rid = f"cmpl-{i}"
        params = SamplingParams(max_tokens=1 << 20, ignore_eos=True, output_kind=RequestOutputKind.DELTA)
        prompt = [rng.randrange(256, VOCAB - 256) for _ in range(rng.randint(200, 1000))]
        req = EngineCoreRequest(
            request_id=rid,
            prompt=None,
            prompt_token_ids=prompt,
            mm_inputs=None,
            mm_hashes=None,
            mm_placeholders=None,
            sampling_params=params,
            eos_token_id=EOS,
            arrival_time=time.time(),
            lora_request=None,
        )
        q = RequestOutputCollector(output_kind=params.output_kind)
        proc.add_request(req, None, 0, q)
        queues[rid] = q
    ids = list(queues)
    handler = stream = 0.0
    created = int(time.time())
    for step in range(steps):
        outs = [EngineCoreOutput(request_id=r, new_token_ids=[rng.randrange(256, VOCAB - 256)]) for r in ids]
        stats = IterationStats() if log_stats else None
        t0 = time.perf_counter()
        proc.process_outputs(outs, time.monotonic(), stats)
        t1 = time.perf_counter()
        for r in ids:  # each request's stream generator, in turn
            out = queues[r].get_nowait()
            o = out.outputs[0]
            chunk = CompletionStreamResponse(
                id=r,
                created=created,
                model="meta-llama/Llama-3.3-70B-Instruct",
                choices=[
                    CompletionResponseStreamChoice(
                        index=0, text=o.text, logprobs=None, finish_reason=o.finish_reason, stop_reason=o.stop_reason
                    )
                ],
            )
            line = f"data: {chunk.model_dump_json(exclude_unset=False)}\n\n"
            line.encode()
        t2 = time.perf_counter()
        if step >= steps // 5:  # (the first fifth warms up)
            handler += t1 - t0
            stream += t2 - t1
    k = steps - steps // 5
    return handler / k, stream / k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ns", default="1,8,16,32,64,128")
    args = ap.parse_args()
    import vllm

    write_model_dir()
    ns = [int(x) for x in args.ns.split(",")]
    print(f"vLLM {vllm.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}")
    print("N, output handler us/step, stream chunks us/step, total us/step (median of reps; min in brackets)")
    rows = []
    for n in ns:
        hs, ss = [], []
        for rep in range(args.reps):
            h, s = run_point(n, args.steps, seed=rep)
            hs.append(h * 1e6)
            ss.append(s * 1e6)
        tot = [a + b for a, b in zip(hs, ss, strict=True)]
        rows.append((n, statistics.median(tot)))
        print(
            f"{n:4d}  {statistics.median(hs):8.1f} [{min(hs):7.1f}]  {statistics.median(ss):8.1f} [{min(ss):7.1f}]  "
            f"{statistics.median(tot):8.1f} [{min(tot):7.1f}]"
        )
    xs, ys = [r[0] for r in rows], [r[1] for r in rows]
    a, b = fit(xs, ys)  # (measure_host.py's least squares, as the engine-loop figures are fitted)
    print(f"fit: {a:.1f} us a step + {b:.2f} us a running request")


if __name__ == "__main__":
    main()
