"""Mixture-of-experts speed: the Azure 2023 conversation hour (19,366 requests) on 4 fixed replicas of a dense model
and of an MoE model deployed two ways, each trace scaled to 90% of that fleet's own measured capacity, timed in the
same run.

- dense: Llama-3.1-8B, 1x H100-SXM per replica;
- MoE, tensor parallel: Qwen3-30B-A3B, 1x H100-SXM per replica (its step priced by the experts its tokens touch);
- MoE, DP2 + EP: the same model with `fleet.dp: 2, fleet.expert_parallel: true` (each replica one DP rank, the
  experts spread over the group's GPUs, tokens exchanged all-to-all; the two ranks of a group in lock-step, their
  decode runs fast-forwarded together: `sim.run.engine.lockstep`).

Prints, for each, CPU and wall seconds (best and median of --runs; the capacity probe is not timed), simulated
requests per CPU second, CPU microseconds and heap-operation equivalents per request, events per request, and the
MoE deployments' cost per request over the dense one's (the MoE step must stay on the fast path: issue 28 asks
within 1.5x).
    python benchmarks/moe_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _timing import per_request, timed

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import load_trace
from sim.workload.transforms import clip_tokens, scale_rate

REPO = Path(__file__).resolve().parents[1]
REPLICAS = 4
DEPLOYMENTS = {
    "dense (llama-3.1-8b)": {"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm"}},
    "MoE TP1 (qwen3-30b-a3b)": {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm"}},
    "MoE DP2+EP (qwen3-30b-a3b)": {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "dp": 2, "expert_parallel": True}},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    conv = clip_tokens(load_trace(REPO / "traces" / "azure2023_conv.csv"), 4096)
    tokens_per_request = conv["prompt_tokens"].mean() + conv["output_tokens"].mean()
    rate = len(conv) / conv["arrival_at_s"].iloc[-1]
    cost = {}
    for name, raw in DEPLOYMENTS.items():
        raw = {**raw, "fleet": {**raw["fleet"], "autoscaler": {"policy": "fixed", "replicas": REPLICAS}}}
        sc = parse_config(raw)
        capacity = simulate(sc, conv.head(1000)).max_tokens_per_s / tokens_per_request  # one replica, req/s (not timed)
        trace = scale_rate(conv, 0.9 * REPLICAS * capacity / rate)

        def run(sc=sc, trace=trace):
            result = simulate(sc, trace, measure_capacity=False)
            return result.summary()

        timing, s = timed(run, args.runs)
        n = len(trace)
        cost[name] = timing.cpu_best_s / n
        print(f"{name}: one replica serves {capacity:.2f} req/s; {timing}")
        print(f"  {timing.per_s(n)} simulated requests; {per_request(timing, n, s['n_events'])}/request")
    dense = cost[next(iter(DEPLOYMENTS))]
    for name in list(DEPLOYMENTS)[1:]:
        print(f"{name}: {cost[name] / dense:.2f}x the dense deployment's CPU per request")


if __name__ == "__main__":
    main()
