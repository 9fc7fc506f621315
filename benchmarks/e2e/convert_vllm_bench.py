"""Write each run folder's requests.jsonl from its `benchmark_serving.py --save-result` JSON (vLLM 0.8.3), which has no send times.

Each request's send time is rebuilt as vLLM 0.8.3's benchmark drew it: `main()` seeds `np.random` with `--seed` (0), the
ShareGPT sampler draws from Python's `random` only, and `get_request()` sends request i, then sleeps
`np.random.gamma(burstiness, 1 / (rate * burstiness))` before request i + 1 (request order = the JSON's order; at
rate inf, none: all are sent at once). The first send is t = 0. TTFT and the end of the stream are the client's (`ttfts`, `ttfts + sum(itls)`).
    python benchmarks/e2e/convert_vllm_bench.py [FOLDER ...]   (default: the four llm-k8s A100 TP 8 runs)
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = [HERE / f"a100-40gb-llama-3.3-70b-tp8-qps{q}" for q in ("1", "4", "16", "inf")]
SEED = 0  # the run's --seed (its Namespace in benchmark-script-run.sh)


def convert(folder: Path) -> None:
    data = json.loads(gzip.decompress((folder / "vllm_bench_result.json.gz").read_bytes()))
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
    with (folder / "requests.jsonl").open("w") as out:
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


def main() -> None:
    for folder in [Path(p) for p in sys.argv[1:]] or RUNS:
        convert(folder)


if __name__ == "__main__":
    main()
