"""Write a canonical frame to CSV or Parquet, atomically: a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")

from sim.errors import FleetsimError


def write_trace(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise FleetsimError(f"{path}: output must end in .csv or .parquet (got {suffix or 'no suffix'})")
    if not path.parent.exists():
        raise FleetsimError(f"{path}: folder {path.parent} does not exist")
    out = frame.copy()
    if suffix == ".csv" and "prefix_hash_ids" in out.columns:  # lists as space-separated ints
        out["prefix_hash_ids"] = [
            " ".join(map(str, np.asarray(h).tolist())) if h is not None else "" for h in out["prefix_hash_ids"]
        ]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets; a trace gets the mode any new file would
    try:
        if suffix == ".csv":
            out.to_csv(tmp, index=False, float_format="%.9f")
        else:
            out.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
