"""Speculative decoding's simulation speed: the fast-forward, the per-step reference and the same scenario without
speculation, measured in the same run.

`configs/speculative.yaml`: Llama-3.1-70B on one 4x H100-SXM replica, an 8B draft model, k = 4, α = 0.7, the first
20 minutes of the Azure 2023 conversation trace (5,985 requests). Prints CPU and wall seconds (best and median of
--runs; loading the trace is not timed), simulated requests per CPU second and per wall second, events and steps per
request, and the ratios.
    python benchmarks/spec_speed.py [--runs 5] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _timing import per_request, timed

from sim.run.simulate import scenario_trace, simulate
from sim.scenario.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a scenario override, as `fleetsim run --set`")
    args = parser.parse_args()
    modes = {
        "speculative, fast-forward": ["engine.fast_forward=true"],
        "speculative, per-step    ": ["engine.fast_forward=false"],
        "without speculation      ": ["engine.speculative=null"],
    }
    cpu = {}
    summaries = {}
    for name, sets in modes.items():
        sc = load_config(REPO / "configs" / "speculative.yaml", [*args.sets, *sets])
        trace = scenario_trace(sc, base_dir=sc.base_dir)  # (read once, not timed)
        simulate(sc, trace, measure_capacity=False)  # (a warm-up run, not timed)
        timing, s = timed(lambda sc=sc, trace=trace: simulate(sc, trace, measure_capacity=False).summary(), args.runs)
        n = s["completed"] + s["rejected"]
        cpu[name], summaries[name] = timing.cpu_best_s / n, s
        print(
            f"{name}: {timing}; {timing.per_s(n)} simulated requests, {s['n_events'] / n:.2f} events/request, "
            f"{s['n_steps'] / n:.1f} steps/request"
        )
        print(f"  {per_request(timing, n)}")
    ff, ps, plain = (cpu[name] for name in modes)
    a, b = (summaries[name] for name in list(modes)[:2])
    same = all(a[k] == b[k] or abs(a[k] - b[k]) < 1e-6 for k in ("completed", "mean_ttft_ms", "p99_itl_ms", "n_steps"))
    print(f"fast-forward / per-step speed (CPU, best runs): {ps / ff:.1f}x; summaries agree: {same}")
    print(f"without speculation / fast-forward speed: {ff / plain:.2f}x")


if __name__ == "__main__":
    main()
