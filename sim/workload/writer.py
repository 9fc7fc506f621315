"""Write a canonical frame to CSV or Parquet, atomically: a reader never sees half a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")

from sim.atomic import atomic_file, check_writable
from sim.errors import FleetsimError


def check_trace_path(path: Path, label: str = "") -> None:
    """Before any work: a .csv or .parquet file that can be written at `path` (`label`: the option naming it)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        head = f"{label} {path}" if label else str(path)
        raise FleetsimError(f"{head}: output must end in .csv or .parquet (got {suffix or 'no suffix'})")
    check_writable(path, label)


def write_trace(frame: pd.DataFrame, path: str | Path, label: str = "") -> Path:
    path = Path(path)
    check_trace_path(path, label)
    out = frame.copy()
    if path.suffix.lower() == ".csv" and "prefix_hash_ids" in out.columns:  # lists as space-separated ints
        out["prefix_hash_ids"] = [
            " ".join(map(str, np.asarray(h).tolist())) if h is not None else "" for h in out["prefix_hash_ids"]
        ]
    with atomic_file(path, label) as tmp:  # a trace gets the mode any new file would, as every output does
        if path.suffix.lower() == ".csv":
            out.to_csv(tmp, index=False, float_format="%.9f")
        else:
            out.to_parquet(tmp, index=False)
    return path
