"""How the cost of simulating a request grows: with the number of requests, with the number of replicas
(at proportional load), and with the mean batch size. Llama-2-70B on 2x A100-80GB (default roofline,
chunked), lengths resampled from the Azure 2023 conversation trace (clipped to 4,096 tokens), Poisson
arrivals. Each row: CPU microseconds per simulated request (best of --runs, simulate + summary, no capacity
probe), simulated requests per CPU second, events per request.
    python benchmarks/scaling.py [--runs 2] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _timing import timed

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import load_trace, validate_frame
from sim.workload.transforms import clip_tokens

REPO = Path(__file__).resolve().parents[1]
LOAD = 0.8  # offered load per replica, as a share of one replica's measured saturated rate for this mix


def poisson(n: int, rate: float, pool: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(pool), n)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(1 / rate, n)),
                "prompt_tokens": pool["prompt_tokens"].to_numpy()[pick],
                "output_tokens": pool["output_tokens"].to_numpy()[pick],
            }
        )
    )


def fleet(replicas: int, **engine: int) -> object:
    return parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {"gpu": "a100-80gb", "tp": 2, "autoscaler": {"policy": "fixed", "replicas": replicas}},
            "engine": engine,
        }
    )


def row(label: str, scenario: object, trace: pd.DataFrame, runs: int) -> None:
    timing, s = timed(lambda: simulate(scenario, trace, measure_capacity=False).summary(), runs)  # type: ignore[arg-type]
    n = len(trace)
    print(f"{label:<28}{n:>9,}{timing.cpu_best_s / n * 1e6:>12.1f}{n / timing.cpu_best_s:>12,.0f}{s['n_events'] / n:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a minute instead of several)")
    args = parser.parse_args()
    pool = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 4096)
    # one replica's saturated rate for this mix, measured once (not timed)
    probe = simulate(fleet(1), pool.head(1000).assign(arrival_at_s=0.0))
    per_replica = LOAD * probe.max_tokens_per_s / (pool["prompt_tokens"].mean() + pool["output_tokens"].mean())
    print(f"one replica at {LOAD:.0%} load: {per_replica:.3f} req/s\n")
    head = f"{'case':<28}{'requests':>9}{'CPU us/req':>12}{'req/CPU-s':>12}{'ev/req':>9}"

    print("requests (8 replicas at 80% load)\n" + head)
    for n in (10_000, 30_000, 100_000) if args.quick else (10_000, 30_000, 100_000, 300_000):
        row(f"{n:,} requests", fleet(8), poisson(n, 8 * per_replica, pool), args.runs)

    print("\nreplicas at proportional load (1,000 requests per replica, at least 10,000)\n" + head)
    for r in (1, 4, 16, 64) if args.quick else (1, 4, 16, 64, 256):
        n = max(10_000, 1_000 * r)
        row(f"{r} replicas", fleet(r), poisson(n, r * per_replica, pool), args.runs)

    print("\nmean batch (one replica kept saturated, max_num_seqs = target batch, KV ample)\n" + head)
    for batch in (10, 30, 60, 90):
        trace = validate_frame(
            pool.sample(n=20_000, replace=True, random_state=0).assign(arrival_at_s=0.0).reset_index(drop=True)
        )
        row(f"max_num_seqs {batch}", fleet(1, max_num_seqs=batch, num_gpu_blocks_override=20_000), trace, args.runs)


if __name__ == "__main__":
    main()
