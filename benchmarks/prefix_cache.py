"""Prefix caching on the bundled Mooncake sample (`configs/prefix-cache.yaml`): without caching, with caching
and least-outstanding routing, with caching and prefix-aware routing. Prints the README's table (hit rates,
prefill tokens saved, TTFT, TPOT, $/1K tokens, simulated requests per CPU second: best of --runs) and the hit
rate a cache that never evicts would reach (the share of blocks whose id an earlier request had). `--recut N` cuts
each 512-token id into 512 / N chained ids of N tokens (as Qwen's Bailian traces carry: 16), the same prefixes in
finer blocks, to time the cache with many ids per request.
    python benchmarks/prefix_cache.py [--runs 3] [--recut 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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


def recut(trace: pd.DataFrame, hash_tokens: int, tokens: int) -> pd.DataFrame:
    """Each id of `hash_tokens` tokens as hash_tokens / tokens chained ids (id x parts + j), as many as the prompt
    has blocks of `tokens` (its last one partial, as a trace's last id may be)."""
    parts = hash_tokens // tokens
    out = trace.copy()
    out["prefix_hash_ids"] = [
        (np.repeat(np.asarray(ids, dtype=np.int64) * parts, parts) + np.tile(np.arange(parts), len(ids)))[: -(-int(p) // tokens)]
        for ids, p in zip(trace["prefix_hash_ids"], trace["prompt_tokens"], strict=True)
    ]
    out.attrs = {**trace.attrs, "hash_block_tokens": tokens}
    return out


def reuse_bound(trace: pd.DataFrame) -> float:
    """The share of the trace's hash blocks whose id an earlier request carried."""
    seen: set[int] = set()
    hit = total = 0
    for ids in trace["prefix_hash_ids"]:
        for h in ids.tolist():
            total += 1
            hit += h in seen
        seen.update(ids.tolist())
    return hit / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recut", type=int, default=None, help="tokens per id: the 512-token ids cut this fine")
    args = parser.parse_args()
    if args.recut is not None and (args.recut < 1 or 512 % args.recut):
        parser.error(f"--recut: a divisor of 512 (got {args.recut})")
    print(HEADER)
    costs = []
    trace = None
    for name, sets in VARIANTS.items():
        if args.recut is not None:
            sets = [*sets, f"engine.prefix_hash_block_tokens={args.recut}"]
        sc = load_config(CONFIG, sets)
        trace = scenario_trace(sc, base_dir=sc.base_dir)  # (read once, not timed: the runs time the simulation)
        if args.recut is not None:
            trace = recut(trace, 512, args.recut)
        timing, result = timed(lambda sc=sc, trace=trace: simulate(sc, trace, measure_capacity=False), args.runs)
        print(row(name, result.summary(), len(result.requests) / timing.cpu_best_s))
        costs.append(f"{name}: {per_request(timing, len(result.requests))}")
    assert trace is not None
    print(f"a cache that never evicts: {reuse_bound(trace):.1%} of blocks hit")
    print("\n".join(costs))


if __name__ == "__main__":
    main()
