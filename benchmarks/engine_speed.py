"""Engine speed: fast-forward vs the per-step reference, measured in the same run.

One Llama-2-70B replica on 2x A100-80GB (default roofline, chunked policy), a Poisson trace at ~80%
of the replica's measured capacity, with Azure-conv-like lengths (resampled from the bundled Azure
2023 conversation trace, clipped to the model's 4096-token context). Capacity is measured, not
guessed: the same engine kept saturated (every request queued at t=0).
Prints CPU and wall seconds (best and median of --runs; the capacity probe is not timed), simulated requests
per CPU second and per wall second, SimPy events per request, peak traced memory and the speed ratio.
    python benchmarks/engine_speed.py [--requests 20000] [--policy chunked] [--runs 3]
"""

from __future__ import annotations

import argparse
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from _timing import per_request, timed

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import load_trace, validate_frame
from sim.workload.transforms import clip_tokens

REPO = Path(__file__).resolve().parents[1]


def scenario(policy: str, fast_forward: bool):
    return parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {"gpu": "a100-80gb", "tp": 2},
            "engine": {"policy": policy, "fast_forward": fast_forward},
        }
    )


def lengths(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    conv = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 4096)
    pick = rng.integers(0, len(conv), n)
    return conv["prompt_tokens"].to_numpy()[pick], conv["output_tokens"].to_numpy()[pick]


def trace(arrivals: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> pd.DataFrame:
    return validate_frame(pd.DataFrame({"arrival_at_s": arrivals, "prompt_tokens": prompt, "output_tokens": output}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--policy", default="chunked", choices=["chunked", "prefill_first"])
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    n_sat = 2000
    p, o = lengths(n_sat, rng)
    saturated = simulate(scenario(args.policy, True), trace(np.zeros(n_sat), p, o)).summary()
    capacity = saturated["request_throughput"]
    rate = args.load * capacity
    print(
        f"capacity (saturated, {n_sat} requests): {capacity:.3f} req/s, {saturated['output_throughput']:.0f} output tok/s; offered {rate:.3f} req/s"
    )

    p, o = lengths(args.requests, rng)
    arrivals = np.cumsum(rng.exponential(1 / rate, args.requests))
    arrivals -= arrivals[0]
    t = trace(arrivals, p, o)
    results = {}
    for ff in (True, False):
        sc = scenario(args.policy, ff)
        timing, s = timed(lambda sc=sc: simulate(sc, t, measure_capacity=False).summary(), args.runs)
        tracemalloc.start()  # a separate, traced run for memory (tracing slows Python several-fold)
        simulate(sc, t, measure_capacity=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results[ff] = (timing.cpu_best_s, s)
        name = "fast-forward" if ff else "per-step    "
        print(
            f"{name}: {timing}; {timing.per_s(args.requests)} simulated requests, "
            f"{s['n_events'] / args.requests:.2f} events/request, {s['n_steps'] / args.requests:.1f} steps/request, "
            f"peak traced memory {peak / 2**20:,.0f} MiB"
        )
        print(f"  {per_request(timing, args.requests)}")
    (w_ff, s_ff), (w_ps, s_ps) = results[True], results[False]
    same = all(
        s_ff[k] == s_ps[k] or abs(s_ff[k] - s_ps[k]) < 1e-6 for k in ("completed", "mean_ttft_ms", "p99_itl_ms", "n_preemptions")
    )
    print(f"fast-forward / per-step speed (CPU, best runs): {w_ps / w_ff:.1f}x; summaries agree: {same}")
    print(
        f"simulated {s_ff['duration'] / 3600:.2f} h; mean TTFT {s_ff['mean_ttft_ms']:.0f} ms, mean TPOT {s_ff['mean_tpot_ms']:.1f} ms, preemptions {s_ff['n_preemptions']}"
    )


if __name__ == "__main__":
    main()
