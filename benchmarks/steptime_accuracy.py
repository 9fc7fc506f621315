"""How accurate the step-time model is: every reference table, the defaults and a calibrated fit.

For each `SOURCE_GPU_MODEL_tpN.csv` in the folder (default: benchmarks/steptimes) prints the mean and max
|relative error| of the model before its per-layer overhead and partial overlap (`sim.studies.calibrate.previous_model`),
of the default model (the catalog as shipped), of the defaults refitted without that table
(how the defaults do on a table they were not fitted to), of `fleetsim calibrate` on the table and its
leave-one-shape-out mean, as a Markdown table (the README's "How accurate is it"). Then the same against measured
kernels: each kernel profile folder in benchmarks/kernels (LLMServingSim's per-layer layout; model, GPU and TP read
from its meta.yaml and folder name), the defaults' mean and max |error| and a fit's.
    python benchmarks/steptime_accuracy.py [FOLDER]
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import yaml

from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import resolve_model
from sim.scenario.config import roofline_config
from sim.scenario.importer import model_from_name
from sim.scenario.resolve import build_setup
from sim.studies.calibrate import accuracy, calibrate, read_kernel_profile, reference_tables
from sim.studies.validate import gpu_name_of_device

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
    kernels(HERE / "kernels")


def kernels(folder: Path) -> None:
    """The defaults against measured kernels (no all-reduce in them: none priced), and a fit."""
    import dataclasses

    print("\n| kernel profile | shapes | default mean / max | calibrated mean / max | fitted mfu / mbu / overlap |")
    print("|---|---|---|---|---|")
    for path in sorted(p for p in folder.iterdir() if (p / "meta.yaml").is_file()):
        meta = yaml.safe_load((path / "meta.yaml").read_text())
        model = resolve_model(model_from_name(meta["model"]) or meta["model"])
        gpu = load_gpu_catalog().get(gpu_name_of_device(meta["gpu"]))
        tp = int(m.group(1)) if (m := re.search(r"_tp(\d+)$", path.name)) else 1
        setup = dataclasses.replace(build_setup(model, gpu, tp=tp, roofline=roofline_config()), comm=False)
        shapes = read_kernel_profile(path, model)
        cal = calibrate(setup, shapes, loo=False)
        before, after = abs(cal.errors("before")), abs(cal.errors("after"))
        p = cal.after
        print(
            f"| {path.name} ({model.name}, {gpu.name}, TP {tp}) | {len(shapes)} | {pct(before.mean())} / {pct(before.max())} |"
            f" {pct(after.mean())} / {pct(after.max())} | {p['mfu']:.3f} / {p['mbu']:.3f} / {p['overlap']:.2f} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "steptimes")
