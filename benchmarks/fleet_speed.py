"""Fleet speed: a 16-replica autoscaled fleet replaying the bundled Azure conversation hour.

Llama-2-70B on 2x A100-80GB replicas (default roofline, chunked), HPA on requests in flight per
replica, the Azure 2023 conversation trace (19,366 requests in ~58 min) rate-scaled so that 16
replicas are needed at full load (one replica's capacity for this mix is measured first, and reported apart).
With --fixed N: N fixed replicas instead, the trace scaled to 90% of their measured capacity.
Prints CPU and wall seconds (best and median of --runs), simulated requests per CPU second and per wall
second, and events per request, then (with --profile) the top of a profile.
With --set PATH=VALUE: a scenario override (e.g. the previous step-time model, to time like for like).
With --fixed N --disaggregated P:D: also P prefill + D decode replicas (P + D = N, the same GPUs) on the same
trace, timed in the same run, and the ratio of the two modes' simulated requests per CPU second.
    python benchmarks/fleet_speed.py [--runs 3] [--fixed 8] [--profile] [--set engine.watermark=0]
    python benchmarks/fleet_speed.py --fixed 8 --disaggregated 3:5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _timing import per_request, print_profile, timed

from sim.run.simulate import simulate
from sim.scenario.config import apply_sets, parse_config
from sim.workload import load_trace
from sim.workload.transforms import clip_tokens, scale_rate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fixed", type=int, default=None, help="N fixed replicas at 90%% load instead of the HPA fleet")
    parser.add_argument("--disaggregated", default=None, help="P:D prefill and decode replicas (with --fixed N, P + D = N)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], help="scenario override PATH=VALUE, as `fleetsim run --set`"
    )
    args = parser.parse_args()
    conv = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 4096)
    raw = {
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
    if args.fixed is not None:
        raw["fleet"]["autoscaler"] = {"policy": "fixed", "replicas": args.fixed}
    sc = parse_config(apply_sets(raw, args.sets))
    # one replica's measured capacity for this length mix (saturated, the same engine), in requests/s
    probe_start = time.process_time()
    probe = simulate(sc, conv.head(1000))
    probe_cpu = time.process_time() - probe_start
    tokens_per_request = conv["prompt_tokens"].mean() + conv["output_tokens"].mean()
    capacity = probe.max_tokens_per_s / tokens_per_request
    rate = len(conv) / conv["arrival_at_s"].iloc[-1]
    target = 16 * capacity if args.fixed is None else 0.9 * args.fixed * capacity
    trace = scale_rate(conv, target / rate)
    print(f"one replica serves {capacity:.2f} req/s of this mix ({probe_cpu:.2f} CPU-s to measure, not timed below);")
    print(f"trace scaled from {rate:.2f} to {target:.2f} req/s")

    def run():
        result = simulate(sc, trace, measure_capacity=False)
        return result, result.summary()

    timing, (result, s) = timed(run, args.runs)
    n = len(trace)
    print(
        f"{n:,} requests over {result.horizon_s / 60:.0f} simulated minutes; replicas launched {s['replicas_launched']}, most ready {s['replicas_max']}"
    )
    print(f"simulate + summary: {timing}")
    print(f"= {timing.per_s(n)} simulated requests; {s['n_events'] / n:.2f} events/request")
    print(f"  {per_request(timing, n)}")
    print(f"p99 TTFT {s['p99_ttft_ms'] / 1000:.1f} s; throughput {s['request_throughput']:.2f} req/s")
    if args.disaggregated is not None:
        n_p, n_d = (int(x) for x in args.disaggregated.split(":"))
        assert args.fixed is not None and n_p + n_d == args.fixed, "--disaggregated P:D needs --fixed P+D"
        fixed = lambda k: {"autoscaler": {"policy": "fixed", "replicas": k}}  # noqa: E731
        dis = parse_config(
            apply_sets(
                {**raw, "fleet": {**raw["fleet"], "mode": "disaggregated", "prefill": fixed(n_p), "decode": fixed(n_d)}},
                args.sets,
            )
        )

        def run_dis():
            result = simulate(dis, trace, measure_capacity=False)
            return result, result.summary()

        dis_timing, (_, ds) = timed(run_dis, args.runs)
        print(f"disaggregated {n_p}:{n_d}, simulate + summary: {dis_timing}")
        print(f"= {dis_timing.per_s(n)} simulated requests; {ds['n_events'] / n:.2f} events/request")
        print(f"  {per_request(dis_timing, n)}")
        print(
            f"p99 TTFT {ds['p99_ttft_ms'] / 1000:.1f} s, p99 TPOT {ds['p99_tpot_ms']:.0f} ms (colocated {s['p99_tpot_ms']:.0f} ms)"
        )
        print(f"requests per CPU-s, disaggregated / colocated: {timing.cpu_best_s / dis_timing.cpu_best_s:.2f}")
    if args.profile:
        print_profile(lambda: simulate(sc, trace, measure_capacity=False), top=12)


if __name__ == "__main__":
    main()
