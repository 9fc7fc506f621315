"""A whole autoscaled day (or --days of them), end to end: a ServeGen-shaped diurnal trace (the bundled ServeGen
M-large rate table's first --days days, scaled to --requests over them; lengths resampled from the Azure 2023
conversation trace, clipped to 4,096 tokens) replayed by Llama-2-70B replicas on 2x A100-80GB under an HPA on
requests in flight (4-64 replicas at 1 M requests a day, scaled with the requests a day), then summarized and
written as a run folder. Prints each phase's CPU and wall seconds, simulated requests per CPU second, events per
request and the peak resident memory; the saturated-capacity probe is timed apart.

Above 5 M requests (or with --stored) the run is a stored one (`sim.run.simulate.simulate_stored`): the trace is
generated an hour at a time into files, the request columns live in the run folder's files, the gap record is
spilled as it grows and the summary is computed in passes over the written records, so memory stays bounded by
the requests in flight, not the run's length. Its folder is written beside the working folder's runs/ (on disk:
not /tmp, which may be memory).
    python benchmarks/day_speed.py [--requests 1000000]       (about 3 minutes at 1 M; --requests 50000 for a quick look)
    python benchmarks/day_speed.py --requests 100000000 --days 7     (a week of a busy platform: about an hour)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from _timing import Timing, peak_rss_mib, per_request, timed

from sim.results.report import write_run
from sim.run.simulate import simulate, simulate_stored
from sim.run.store import stored_trace
from sim.scenario.config import Scenario, parse_config
from sim.workload.synthetic import SyntheticSpec, generate, generate_windows
from sim.workload.transforms import clip_tokens

REPO = Path(__file__).resolve().parents[1]
DAY_S = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=1, help="days of the rate table (1-14)")
    parser.add_argument("--stored", action="store_true", help="a stored run (the default above 5 M requests)")
    parser.add_argument("--folder", type=Path, default=Path("runs") / "day_speed", help="a stored run's folder")
    args = parser.parse_args()
    if not 1 <= args.days <= 14:
        parser.error("--days: the rate table spans 14 days")
    span_s = args.days * DAY_S
    scale = args.requests / args.days / 1_000_000  # requests a day, in millions
    conv = str(REPO / "traces" / "azure2023_conv.csv")
    table = pd.read_csv(REPO / "traces" / "servegen_m-large_rate.csv")
    rates = table.iloc[:, 1]
    share = rates[table.iloc[:, 0] < span_s].mean() / rates.mean()  # the generator scales the whole table's mean
    spec = SyntheticSpec.model_validate(
        {
            "arrivals": {
                "process": "diurnal",
                "mean_rate_per_s": args.requests / span_s / share,
                "rate_table": str(REPO / "traces" / "servegen_m-large_rate.csv"),
            },
            "prompt_tokens": {"dist": "empirical", "trace": conv, "column": "prompt_tokens"},
            "output_tokens": {"dist": "empirical", "trace": conv, "column": "output_tokens"},
            "duration_s": span_s,
            "seed": 1,
        }
    )
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
    if args.stored or args.requests > 5_000_000:
        stored(spec, sc, args.folder)
    else:
        in_memory(spec, sc)


def in_memory(spec: SyntheticSpec, sc: Scenario) -> None:
    gen_t, trace = timed(lambda: clip_tokens(generate(spec), 4096), runs=1)
    n = len(trace)
    sim_t, result = timed(lambda: simulate(sc, trace, measure_capacity=False), runs=1)
    summary_t, summary = timed(result.summary, runs=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_t, _ = timed(lambda: write_run(result, Path(tmp) / "day", summary=summary), runs=1)
    cap_t, probe = timed(lambda: simulate(sc, trace.head(5000)), runs=1)  # the capacity probe, apart
    phases = (("trace generation", gen_t), ("simulation", sim_t), ("summary", summary_t), ("run folder", write_t))
    report(n, summary, phases, sim_t, cap_t, probe.max_tokens_per_s)


def stored(spec: SyntheticSpec, sc: Scenario, folder: Path) -> None:
    print(f"a stored run: its folder {folder} (the trace's files in {folder}.trace)")
    trace_dir = Path(f"{folder}.trace")
    clipped = (clip_tokens(window, 4096) for window in generate_windows(spec, 3600.0))
    gen_t, trace = timed(lambda: stored_trace(clipped, trace_dir), runs=1)
    n = len(trace)
    shown = [0.0]

    def progress(now: float, horizon: float) -> None:  # (a long run: where it is, and its memory)
        if now >= shown[0] + horizon / 20:
            shown[0] = now
            print(
                f"  simulated {now / horizon:4.0%} of {horizon / 3600:,.0f} h; peak RSS so far {peak_rss_mib():,.0f} MiB",
                flush=True,
            )

    run_t, summary = timed(
        lambda: simulate_stored(sc, folder, trace, measure_capacity=False, force=True, progress=progress), runs=1
    )
    wall = json.loads((folder / "meta.json").read_text())["wall_s"]
    print(f"(the stored run's wall seconds: simulation {wall['simulate']:.1f}, records and summary {wall['write']:.1f})")
    cap_t, probe = timed(lambda: simulate(sc, trace.head(5000).copy()), runs=1)  # the capacity probe, apart
    shutil.rmtree(trace_dir)
    report(n, summary, (("trace generation", gen_t), ("stored run", run_t)), run_t, cap_t, probe.max_tokens_per_s)


def report(n: int, summary: dict[str, Any], phases: Any, sim_t: Timing, cap_t: Timing, capacity: float | None) -> None:
    print(f"{n:,} requests; replicas launched {summary['replicas_launched']}, most ready {summary['replicas_max']}")
    print(f"{'phase':<22}{'CPU s':>10}{'wall s':>10}")
    total_cpu = total_wall = 0.0
    for name, t in phases:
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
        f"p99 TTFT {summary['p99_ttft_ms'] / 1000:.1f} s; $/1K tokens {summary['usd_per_1k_tokens']:.5f}; capacity {capacity:,.0f} tok/s"
    )


if __name__ == "__main__":
    main()
