"""A whole autoscaled day, end to end: a 24-hour ServeGen-shaped diurnal trace (the first day of the
bundled ServeGen M-large rate table, scaled to --requests over the day; lengths resampled from the Azure
2023 conversation trace, clipped to 4,096 tokens) replayed by Llama-2-70B replicas on 2x A100-80GB under
an HPA on requests in flight (4-64 replicas at 1 M requests, scaled with --requests), then summarized
and written as a run folder. Prints each phase's CPU and wall seconds, simulated requests per CPU second,
events per request and the peak resident memory; the saturated-capacity probe is timed apart.
    python benchmarks/day_speed.py [--requests 1000000]       (about 3 minutes at 1 M; --requests 50000 for a quick look)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from _timing import peak_rss_mib, per_request, timed

from sim.results.report import write_run
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload.synthetic import SyntheticSpec, generate
from sim.workload.transforms import clip_tokens

REPO = Path(__file__).resolve().parents[1]
DAY_S = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args()
    scale = args.requests / 1_000_000
    conv = str(REPO / "traces" / "azure2023_conv.csv")
    table = pd.read_csv(REPO / "traces" / "servegen_m-large_rate.csv")
    rates = table.iloc[:, 1]
    first_day = rates[table.iloc[:, 0] < DAY_S].mean() / rates.mean()  # the generator scales the whole table's mean
    spec = SyntheticSpec.model_validate(
        {
            "arrivals": {
                "process": "diurnal",
                "mean_rate_per_s": args.requests / DAY_S / first_day,
                "rate_table": str(REPO / "traces" / "servegen_m-large_rate.csv"),
            },
            "prompt_tokens": {"dist": "empirical", "trace": conv, "column": "prompt_tokens"},
            "output_tokens": {"dist": "empirical", "trace": conv, "column": "output_tokens"},
            "duration_s": DAY_S,
            "seed": 1,
        }
    )
    gen_t, trace = timed(lambda: clip_tokens(generate(spec), 4096), runs=1)
    n = len(trace)
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
                    "min_replicas": max(1, round(4 * scale)),
                    "max_replicas": max(2, round(64 * scale)),
                },
                "lifecycle": {"provision_s": 120, "image_pull_s": 60, "weights_from": "local_nvme", "warmup_s": 30},
                "timeline_interval_s": 60,
            },
        }
    )
    sim_t, result = timed(lambda: simulate(sc, trace, measure_capacity=False), runs=1)
    summary_t, summary = timed(result.summary, runs=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_t, _ = timed(lambda: write_run(result, Path(tmp) / "day", summary=summary), runs=1)
    cap_t, probe = timed(lambda: simulate(sc, trace.head(5000)), runs=1)  # the capacity probe, apart
    print(f"{n:,} requests over 24 h; replicas launched {summary['replicas_launched']}, most ready {summary['replicas_max']}")
    print(f"{'phase':<22}{'CPU s':>10}{'wall s':>10}")
    total_cpu = total_wall = 0.0
    for name, t in (("trace generation", gen_t), ("simulation", sim_t), ("summary", summary_t), ("run folder", write_t)):
        print(f"{name:<22}{t.cpu_best_s:>10.2f}{t.wall_best_s:>10.2f}")
        total_cpu += t.cpu_best_s
        total_wall += t.wall_best_s
    print(f"{'end to end':<22}{total_cpu:>10.2f}{total_wall:>10.2f}")
    print(f"{'(capacity probe)':<22}{cap_t.cpu_best_s:>10.2f}{cap_t.wall_best_s:>10.2f}")
    print(
        f"{n / sim_t.cpu_best_s:,.0f} simulated requests per CPU-s (simulation), {n / total_cpu:,.0f} end to end; "
        f"{summary['n_events'] / n:.2f} events/request; peak RSS {peak_rss_mib():,.0f} MiB"
    )
    print(f"simulation: {per_request(sim_t, n)}")
    print(
        f"p99 TTFT {summary['p99_ttft_ms'] / 1000:.1f} s; $/1K tokens {summary['usd_per_1k_tokens']:.5f}; capacity {probe.max_tokens_per_s:,.0f} tok/s"
    )


if __name__ == "__main__":
    main()
