"""The batch-job day of `configs/batch-backfill.yaml`: a 24-hour ServeGen-shaped interactive trace on one
Llama-3.1-8B replica (H100) plus a 1,000,000-request batch job backfilled behind the latency guard. Prints
simulated requests per CPU second and per wall second (best and median of --runs), events per request and
the peak resident memory, for the day with the job and for its interactive traffic alone (the ratio of the
two is the cost of the batch lane and the extra work, measured in the same run). Building the trace (the
generator and the job's lengths) is timed apart.
    python benchmarks/batch_day.py                   (about 3 minutes: the full day, one run each)
    python benchmarks/batch_day.py --scale 0.1 --runs 3    (2.4 hours and a 100,000-request job)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _timing import peak_rss_mib, per_request, timed

from sim.run.simulate import scenario_trace, simulate, with_batch_jobs
from sim.scenario.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the day and of the job")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    day, n_job = round(86_400 * args.scale), round(1_000_000 * args.scale)
    sets = [f"trace.duration_s={day}", f"batch.jobs.0.requests={n_job}", f"batch.jobs.0.deadline_s={day}"]
    sc = load_config(REPO / "configs" / "batch-backfill.yaml", sets)
    build_t, trace = timed(lambda: with_batch_jobs(sc, scenario_trace(sc, base_dir=sc.base_dir), base_dir=sc.base_dir), runs=1)
    assert sc.batch is not None
    lane_only = sc.model_copy(update={"batch": sc.batch.model_copy(update={"jobs": []})})  # the jobs are in the trace
    interactive = trace[trace["klass"] == "interactive"].drop(columns=["klass", "priority", "job_id", "deadline_at_s"])
    interactive = interactive.reset_index(drop=True)
    with_t, result = timed(lambda: simulate(lane_only, trace, measure_capacity=False), runs=args.runs)
    alone_t, alone = timed(lambda: simulate(lane_only, interactive, measure_capacity=False), runs=args.runs)
    n, m = len(trace), len(interactive)
    job = result.summary()["by_job"]["summaries"]
    print(f"{n:,} requests ({n_job:,} batch) over {day:,} s; job done at {job['completed_at_s'] / 3600:.1f} h")
    print(f"trace build: {build_t.cpu_best_s:.2f} CPU-s")
    for name, t, k, r in (("day with the job", with_t, n, result), ("interactive alone", alone_t, m, alone)):
        print(
            f"{name:<20} {t};  {t.per_s(k)} requests (median {k / t.cpu_median_s:,.0f} per CPU-s); "
            f"{r.n_events / k:.2f} events/request"
        )
        print(f"  {per_request(t, k)}")
    print(
        f"requests per CPU-s, with the job / alone: {(n / with_t.cpu_best_s) / (m / alone_t.cpu_best_s):.2f}; "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )


if __name__ == "__main__":
    main()
