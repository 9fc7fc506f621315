"""Fleet speed: a 16-replica autoscaled fleet replaying the bundled Azure conversation hour.

Llama-2-70B on 2x A100-80GB replicas (default roofline, chunked), HPA on requests in flight per
replica, the Azure 2023 conversation trace (19,366 requests in ~58 min) rate-scaled so that ~16
replicas are needed (one replica serves ~0.83 req/s of this mix). Prints wall seconds, simulated
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
    trace = scale_rate(conv, 16 * 0.83 / 5.53)
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
