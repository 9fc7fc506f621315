"""Fleet speed: a 16-replica autoscaled fleet replaying the bundled Azure conversation hour.

Llama-2-70B on 2x A100-80GB replicas (default roofline, chunked), HPA on requests in flight per
replica, the Azure 2023 conversation trace (19,366 requests in ~58 min) rate-scaled so that 16
replicas are needed at full load (one replica's capacity for this mix is measured first). Prints wall seconds, simulated
requests per wall second and events per request, then the top of a profile.
    python benchmarks/fleet_speed.py [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from sim.config import parse_config
from sim.simulation import simulate
from sim.workload import load_trace
from sim.workload.transforms import clip_tokens, scale_rate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    conv = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 4096)
    sc = parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {
                "gpu": "a100-80gb",
                "tp": 2,
                "autoscaler": {
                    "policy": "hpa",
                    "metric": "outstanding_per_replica",
                    "target": 12,
                    "min_replicas": 4,
                    "max_replicas": 24,
                    "initial_replicas": 16,
                },
            },
        }
    )
    # one replica's measured capacity for this length mix (saturated, the same engine), in requests/s
    probe = simulate(sc, conv.head(1000))
    per_request = conv["prompt_tokens"].mean() + conv["output_tokens"].mean()
    capacity = probe.max_tokens_per_s / per_request
    rate = len(conv) / conv["arrival_at_s"].iloc[-1]
    trace = scale_rate(conv, 16 * capacity / rate)
    print(f"one replica serves {capacity:.2f} req/s of this mix; trace scaled from {rate:.2f} to {16 * capacity:.2f} req/s")
    start = time.perf_counter()
    result = simulate(sc, trace, measure_capacity=False)
    wall = time.perf_counter() - start
    s = result.summary()
    n = len(trace)
    print(
        f"{n:,} requests over {result.horizon_s / 60:.0f} simulated minutes; replicas launched {s['replicas_launched']}, most ready {s['replicas_max']}"
    )
    print(f"wall {wall:.2f} s = {n / wall:,.0f} simulated requests per wall second; {s['n_events'] / n:.2f} events/request")
    print(f"p99 TTFT {s['p99_ttft_ms'] / 1000:.1f} s; throughput {s['request_throughput']:.2f} req/s")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        simulate(sc, trace, measure_capacity=False)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
