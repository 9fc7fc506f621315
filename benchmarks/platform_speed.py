"""Platform speed: the bundled Azure conversation hour served by K deployments on one GPU budget, against the same
trace on one fleet of the same replicas, timed in the same run.

Llama-3.1-8B replicas on 1x H100 (chunked prefill, the default roofline), the trace rate-scaled to 90% of N fixed
replicas' measured capacity; the platform splits it by shares over K deployments of N / K fixed replicas each (the same
model, so each deployment sees what the one fleet's replicas would), on a budget of N H100s. Prints CPU and wall
seconds (best and median of --runs), simulated requests per CPU second and per wall second, events per request, and
the ratio of the two modes' requests per CPU second (what splitting one clock into deployments costs). With --sleep,
every deployment scales to zero between bursts (KPA, 6 s window) with sleep mode, the swap path.
    python benchmarks/platform_speed.py [--runs 3] [--replicas 8] [--deployments 4] [--sleep]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _timing import per_request, timed

from sim.run.platform import simulate_platform
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import load_trace
from sim.workload.transforms import clip_tokens, scale_rate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--deployments", type=int, default=4)
    parser.add_argument("--sleep", action="store_true")
    args = parser.parse_args()
    n, k = args.replicas, args.deployments
    assert n % k == 0, "--replicas must be a multiple of --deployments"
    conv = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 8192)
    fleet = {"gpu": "h100", "autoscaler": {"policy": "fixed", "replicas": n}}
    one = parse_config({"model": "llama-3.1-8b", "fleet": fleet})
    probe_start = time.process_time()
    capacity = simulate(one, conv.head(1000)).max_tokens_per_s / (conv["prompt_tokens"].mean() + conv["output_tokens"].mean())
    probe_cpu = time.process_time() - probe_start
    rate = len(conv) / conv["arrival_at_s"].iloc[-1]
    trace = scale_rate(conv, 0.9 * n * capacity / rate)
    per = {"policy": "fixed", "replicas": n // k}
    if args.sleep:
        per = {"policy": "kpa", "min_replicas": 0, "max_replicas": n // k, "initial_replicas": 0, "stable_window_s": 6}
        per["scale_to_zero_grace_s"] = 0
    lifecycle = {"cold_start_s": 60, **({"sleep": {"level": 1, "initial_sleeping": n // k}} if args.sleep else {})}
    platform = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100", "autoscaler": per, "lifecycle": lifecycle},
            "gpu_budget": {"h100": n},
            "deployments": [{"name": f"d{i}", "share": 1.0} for i in range(k)],
        }
    )
    print(f"one replica serves {capacity:.2f} req/s of this mix ({probe_cpu:.2f} CPU-s to measure, not timed below);")
    print(f"trace scaled to {0.9 * n * capacity:.2f} req/s: {len(trace):,} requests")

    def run_one():
        result = simulate(one, trace, measure_capacity=False)
        return result.summary()

    def run_platform():
        result = simulate_platform(platform, trace, measure_capacity=False)
        return result.summary(), result.meta["n_events"]

    t1, s1 = timed(run_one, args.runs)
    tp, (sp, events) = timed(run_platform, args.runs)
    m = len(trace)
    print(f"one fleet of {n}, simulate + summary: {t1}")
    print(f"= {t1.per_s(m)} simulated requests; {s1['n_events'] / m:.2f} events/request; {per_request(t1, m)}")
    mode = "scaling to zero with sleep mode" if args.sleep else f"{n // k} fixed replicas each"
    print(f"{k} deployments, {mode}, simulate + summary: {tp}")
    print(f"= {tp.per_s(m)} simulated requests; {events / m:.2f} events/request; {per_request(tp, m)}")
    if args.sleep:
        woken = sum(d["replicas_woken"] for d in sp["deployments"].values())
        print(f"  {woken:,} wakes, {sp['gpu_seconds_swapping'] / 3600:.3f} GPU-hours swapping")
    print(f"p99 TTFT: one fleet {s1['p99_ttft_ms']:.0f} ms, platform {sp['p99_ttft_ms']:.0f} ms")
    print(f"requests per CPU-s, platform / one fleet: {t1.cpu_best_s / tp.cpu_best_s:.2f}")


if __name__ == "__main__":
    main()
