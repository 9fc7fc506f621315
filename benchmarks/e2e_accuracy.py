"""End-to-end accuracy against real serving runs: replay each run's requests on its own setup (uncalibrated, from
the GPU catalog) and print the error of mean / p50 / p90 / p99 TTFT, TPOT and E2E, with the KV cache sized by
fleetsim ("computed", the prediction) and with vLLM's own logged block count ("logged": the step times alone).
    python benchmarks/e2e_accuracy.py [RUN ...]      (default: every run folder in benchmarks/e2e)
A run is a folder with requests.jsonl and meta.json (see benchmarks/e2e/README.md), or any log `fleetsim validate`
reads (with --scenario there)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sim.errors import FleetsimError
from sim.studies.validate import validate
from sim.workload.runlog import read_run_log

HERE = Path(__file__).resolve().parent


def main(runs: list[Path]) -> None:
    print(
        "| run | KV blocks (fleetsim / vLLM) | KV | TTFT mean / p50 / p90 / p99 | TPOT mean / p50 / p90 / p99 | E2E mean / p50 / p90 / p99 |"
    )
    print("|---|---|---|---|---|---|")
    start = time.process_time()
    for run in runs:
        log = read_run_log(run)
        for kv in ("computed", "logged"):
            try:
                cmp = validate(log, kv_blocks=kv)
            except FleetsimError as err:  # a setup fleetsim cannot describe, or no logged block count: say what is missing
                print(f"| {run.name} | - | {kv} | not replayed: {err} | | |")
                continue
            cells = []
            for metric in ("ttft", "tpot", "e2e"):
                errs = [cmp.error(metric, s) for s in ("mean", "p50", "p90", "p99")]
                cells.append(" / ".join(f"{e:+.1%}" for e in errs if e is not None))
            b = cmp.kv_blocks
            logged = f"{b['logged']:,}" if b["logged"] else "-"
            print(f"| {run.name} | {b['simulated']:,} / {logged} | {kv} | " + " | ".join(cells) + " |")
    print(f"\n({len(runs)} runs, {time.process_time() - start:.1f} CPU-s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders or logs (default: every run in benchmarks/e2e)")
    args = parser.parse_args()
    main(args.runs or sorted(p for p in (HERE / "e2e").iterdir() if (p / "requests.jsonl").is_file()))
