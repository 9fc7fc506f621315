"""Where the catalog's step-time defaults come from: one least-squares fit over every reference table.

mfu and mbu per GPU, the per-layer overhead and the compute/memory overlap shared by all GPUs, all-reduce
latencies held at the catalog's published figures. Prints the fitted values next to the catalog's (which
round them; tests/test_steptime_accuracy.py checks they agree).
    python benchmarks/steptime_defaults.py [FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.studies.calibrate import DEFAULT_PER_GPU, DEFAULT_SHARED, fit_defaults, params_of, reference_tables

HERE = Path(__file__).resolve().parent


def main(folder: Path) -> None:
    tables = reference_tables(folder)
    fitted = fit_defaults(tables)
    catalog = {t.group: params_of(t.setup) for t in tables}
    print(f"{'gpu':<12}{'parameter':<20}{'fitted':>12}{'catalog':>12}")
    for gpu, p in fitted.items():
        for name in DEFAULT_PER_GPU:
            print(f"{gpu:<12}{name:<20}{p[name]:>12.4g}{catalog[gpu][name]:>12.4g}")
    any_gpu = next(iter(fitted))
    for name in DEFAULT_SHARED:
        print(f"{'(all)':<12}{name:<20}{fitted[any_gpu][name]:>12.4g}{catalog[any_gpu][name]:>12.4g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "steptimes")
