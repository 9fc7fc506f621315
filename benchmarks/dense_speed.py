"""Dense-engine speed: one Llama-3.1-8B replica on 4x B200, fixed lengths, ~16 requests in flight.

1,000 requests of 1,024 prompt and 128 output tokens arriving as a Poisson process whose rate is set
(outside the timed part, by bisection on short probes) so that the time-averaged number of requests in
flight, sum(E2E) / duration by Little's law, is about 16. Few sequences per batch and short outputs: every
arrival interrupts a decode run and its prompt shares a step with the decoders, so this measures the
per-event work of the engine rather than the fast-forward's length. Prints CPU and wall seconds (best
and median of --runs), simulated requests per CPU second and per wall second, and events per request.
    python benchmarks/dense_speed.py [--runs 5] [--in-flight 16] [--profile]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _timing import per_request, print_profile, timed

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

SCENARIO = {"model": "llama-3.1-8b", "fleet": {"gpu": "b200", "tp": 4}}


def trace(rate: float, n: int, seed: int = 0) -> pd.DataFrame:
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n))
    arrivals -= arrivals[0]
    return validate_frame(
        pd.DataFrame({"arrival_at_s": arrivals, "prompt_tokens": np.full(n, 1024), "output_tokens": np.full(n, 128)})
    )


def in_flight(sc, rate: float, n: int) -> float:
    r = simulate(sc, trace(rate, n), measure_capacity=False).requests
    e2e = (r["completed_at_s"] - r["arrival_at_s"]).sum()
    return float(e2e / r["completed_at_s"].max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--in-flight", type=float, default=16.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sc = parse_config(SCENARIO)
    lo, hi = 1.0, 1000.0  # req/s; in flight grows with the rate
    for _ in range(30):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if in_flight(sc, mid, args.requests) < args.in_flight else (lo, mid)
    rate = (lo * hi) ** 0.5
    t = trace(rate, args.requests)
    print(f"rate {rate:.1f} req/s keeps {in_flight(sc, rate, args.requests):.1f} requests in flight on average (not timed)")

    def run():
        result = simulate(sc, t, measure_capacity=False)
        return result.summary()

    timing, s = timed(run, args.runs)
    n = args.requests
    print(f"simulate + summary: {timing}")
    print(f"= {timing.per_s(n)} simulated requests; {s['n_events'] / n:.2f} events/request, {s['n_steps'] / n:.1f} steps/request")
    print(f"  {per_request(timing, n)}")
    print(f"mean TTFT {s['mean_ttft_ms']:.1f} ms, mean TPOT {s['mean_tpot_ms']:.2f} ms")
    if args.profile:
        print_profile(lambda: simulate(sc, t, measure_capacity=False), repeat=5)


if __name__ == "__main__":
    main()
