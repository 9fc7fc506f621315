"""Prefix caching on the bundled Mooncake sample (`configs/prefix-cache.yaml`): without caching, with caching
and least-outstanding routing, with caching and prefix-aware routing. Prints the README's table (hit rates,
prefill tokens saved, TTFT, TPOT, $/1K tokens, simulated requests per CPU second: best of --runs) and the hit
rate a cache that never evicts would reach (the share of blocks whose id an earlier request had).
    python benchmarks/prefix_cache.py [--runs 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _timing import per_request, timed

from sim.run.simulate import scenario_trace, simulate
from sim.scenario.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "prefix-cache.yaml"
VARIANTS = {
    "no prefix caching": ["engine.prefix_caching=false", "fleet.router=least_outstanding"],
    "prefix caching, least_outstanding": ["fleet.router=least_outstanding"],
    "prefix caching, prefix_aware": [],
}
HEADER = (
    "| variant | hit rate (tokens / blocks) | prefill tokens saved | mean / p99 TTFT (ms) | p99 TPOT (ms) | $/1K tokens | req per CPU-s |\n"
    "|---|---|---|---|---|---|---|"
)


def row(name: str, s: dict[str, Any], per_cpu_s: float) -> str:
    cached = s["prefix_hit_rate_tokens"] is not None  # (null without prefix caching)
    hit = f"{s['prefix_hit_rate_tokens']:.1%} / {s['prefix_hit_rate_blocks']:.1%}" if cached else "—"
    saved = f"{s['prefill_tokens_saved']:,}" if cached else "—"
    return (
        f"| {name} | {hit} | {saved} | {s['mean_ttft_ms']:,.0f} / {s['p99_ttft_ms']:,.0f} | {s['p99_tpot_ms']:.1f} | "
        f"${s['usd_per_1k_tokens']:.6f} | {per_cpu_s:,.0f} |"
    )


def reuse_bound() -> float:
    """The share of the trace's hash blocks whose id an earlier request carried."""
    sc = load_config(CONFIG)
    seen: set[int] = set()
    hit = total = 0
    for ids in scenario_trace(sc, base_dir=sc.base_dir)["prefix_hash_ids"]:
        for h in ids.tolist():
            total += 1
            hit += h in seen
        seen.update(ids.tolist())
    return hit / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(HEADER)
    costs = []
    for name, sets in VARIANTS.items():
        sc = load_config(CONFIG, sets)
        trace = scenario_trace(sc, base_dir=sc.base_dir)  # (read once, not timed: the runs time the simulation)
        timing, result = timed(lambda sc=sc, trace=trace: simulate(sc, trace, measure_capacity=False), args.runs)
        print(row(name, result.summary(), len(result.requests) / timing.cpu_best_s))
        costs.append(f"{name}: {per_request(timing, len(result.requests))}")
    print(f"a cache that never evicts: {reuse_bound():.1%} of blocks hit")
    print("\n".join(costs))


if __name__ == "__main__":
    main()
