"""How accurate the step-time model is: every reference table, the defaults and a calibrated fit.

For each `SOURCE_GPU_MODEL_tpN.csv` in the folder (default: benchmarks/steptimes) prints the mean and max
|relative error| of the model before its per-layer overhead and partial overlap (`sim.studies.calibrate.previous_model`),
of the default model (the catalog as shipped), of the defaults refitted without that table
(how the defaults do on a table they were not fitted to), of `fleetsim calibrate` on the table and its
leave-one-shape-out mean, as a Markdown table (the README's "How accurate is it").
    python benchmarks/steptime_accuracy.py [FOLDER]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sim.studies.calibrate import accuracy, reference_tables

HERE = Path(__file__).resolve().parent


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main(folder: Path) -> None:
    start = time.process_time()
    rows = accuracy(reference_tables(folder))
    print(
        "| reference (source_gpu_model_tp) | shapes | previous model mean / max | default mean / max |"
        " default, table held out: mean | calibrated mean / max | calibrated, leave-one-out mean |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.table} | {r.shapes} | {pct(r.previous_mean)} / {pct(r.previous_max)} |"
            f" {pct(r.default_mean)} / {pct(r.default_max)} | {pct(r.held_out_mean)} |"
            f" {pct(r.calibrated_mean)} / {pct(r.calibrated_max)} | {pct(r.loo_mean)} |"
        )
    print(f"\n({len(rows)} tables, {time.process_time() - start:.1f} CPU-s)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "steptimes")
