"""Write requests.jsonl from the run's `benchmark_serving.py --save-result` JSON (vLLM 0.8.3), which has no send times.

Each request's send time is rebuilt as vLLM 0.8.3's benchmark drew it: `main()` seeds `np.random` with `--seed` (0), the
ShareGPT sampler draws from Python's `random` only, and `get_request()` sends request i, then sleeps
`np.random.gamma(burstiness, 1 / (rate * burstiness))` before request i + 1 (request order = the JSON's order; at
rate inf, none: all are sent at once). The first send is t = 0. TTFT and the end of the stream are the client's (`ttfts`, `ttfts + sum(itls)`).
    python benchmarks/e2e/a100-40gb-llama-3.3-70b-tp8-qps1/convert.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0  # the run's --seed (its Namespace in benchmark-script-run.sh)


def main() -> None:
    data = json.loads(gzip.decompress((HERE / "vllm_bench_result.json.gz").read_bytes()))
    n = len(data["input_lens"])
    rate, burstiness = float(data["request_rate"]), float(data["burstiness"])
    np.random.seed(SEED)
    if rate == float("inf"):  # (all sent at once: the benchmark draws no gaps)
        gaps = [0.0] * n
    else:
        gaps = [np.random.gamma(shape=burstiness, scale=1.0 / (rate * burstiness)) for _ in range(n)]
    sent = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    end = np.array([t + sum(g) for t, g in zip(data["ttfts"], data["itls"], strict=True)])
    # the check: the benchmark's duration runs from the first send to the last stream's end
    print(f"{n} requests; last stream ends at {float(np.max(sent + end)):.3f} s, the run's duration {data['duration']:.3f} s")
    with (HERE / "requests.jsonl").open("w") as out:
        for i in range(n):
            if data["errors"][i]:
                continue
            q = float(sent[i])
            row = {
                "request_id": i,
                "input_toks": data["input_lens"][i],
                "output_toks": data["output_lens"][i],
                "queued_ts": round(q, 6),
                "first_token_ts": round(q + data["ttfts"][i], 6),
                "last_token_ts": round(q + float(end[i]), 6),
            }
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
