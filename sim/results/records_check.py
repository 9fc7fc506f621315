"""What a run folder's records must satisfy to be read back: the invariants every run `fleetsim run` writes holds.

A folder edited by hand (or corrupted) can hold records no simulation leaves: a request whose first token precedes its
arrival, negative token counts, an unknown status, NaN or infinite instants, negative replica seconds, negative
inter-token gaps. Summarizing such records prints impossible figures with exit 0, so `SimResult.load` checks them
first and names the file, the row, the rule and the value in one line. Each check is vectorized: a million-request
folder costs a few array passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import FleetsimError
from sim.schema import REPLICA_COLUMNS, REQUEST_COLUMNS, STATUS_LABELS

TOLERANCE_S = 1e-6  # instants are written as float64 seconds; an order may only be off by rounding
REPLICA_SECONDS = ("provisioning_s", "loading_s", "busy_s", "idle_s", "draining_s", "prefill_busy_s", "decode_busy_s")
ITL_COLUMNS = ("a", "b", "j0", "j1", "weight")


def _fail(path: Path, frame: pd.DataFrame, bad: np.ndarray, rule: str, column: str, id_column: str | None) -> None:
    """Raise naming the first row of `frame` where `bad` holds."""
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    which = f"row {i}" + (f" ({id_column} {frame[id_column].iloc[i]!s})" if id_column else "")
    value = frame[column].iloc[i]
    value = value.item() if isinstance(value, np.generic) else value
    raise FleetsimError(f"{path}: {which}: {rule} (got {column} = {value!r}); was the folder edited? nothing written")


def _missing(path: Path, frame: pd.DataFrame, columns: dict[str, str] | tuple[str, ...]) -> None:
    gone = [c for c in columns if c not in frame.columns]
    if gone:
        raise FleetsimError(f"{path}: missing column {', '.join(gone)}; was the folder edited? nothing written")


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    try:
        values: np.ndarray = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        return values
    except (TypeError, ValueError):
        raise FleetsimError(
            f"{path}: column {column} must hold numbers (got {frame[column].dtype}); was the folder edited? nothing written"
        ) from None


def check_requests(path: Path, requests: pd.DataFrame) -> None:
    """requests.parquet: every column; known statuses; finite arrivals >= 0; token counts >= 0; a completed request's
    instants finite and in order (arrival <= scheduled <= first token <= completion)."""
    _missing(path, requests, REQUEST_COLUMNS)
    ids = "request_id"
    status = requests["status"].astype(str).to_numpy()
    _fail(path, requests, ~np.isin(status, STATUS_LABELS), f"status must be one of {', '.join(STATUS_LABELS)}", "status", ids)
    arrival = _numbers(path, requests, "arrival_at_s")
    _fail(path, requests, ~(np.isfinite(arrival) & (arrival >= 0)), "arrival must be a finite time >= 0", "arrival_at_s", ids)
    for column in ("prompt_tokens", "output_tokens", "n_preemptions"):
        v = _numbers(path, requests, column)
        _fail(path, requests, ~(np.isfinite(v) & (v >= 0)), "token and preemption counts must be >= 0", column, ids)
    done = status == "completed"
    earlier, earlier_name = arrival, "arrival_at_s"
    for column in ("scheduled_at_s", "first_token_at_s", "completed_at_s"):
        t = _numbers(path, requests, column)
        _fail(path, requests, done & ~np.isfinite(t), "a completed request's instants must be finite", column, ids)
        with np.errstate(invalid="ignore"):
            _fail(path, requests, done & (t < earlier - TOLERANCE_S), f"{column} must not precede {earlier_name}", column, ids)
        earlier, earlier_name = t, column


def check_replicas(path: Path, replicas: pd.DataFrame) -> None:
    """replicas.parquet: every column; seconds by state finite and >= 0; a replica's end not before its provisioning."""
    _missing(path, replicas, REPLICA_COLUMNS)
    for column in REPLICA_SECONDS:
        v = _numbers(path, replicas, column)
        ok = np.isfinite(v) & (v >= -TOLERANCE_S)  # (sums of float seconds: -6e-14 is a zero)
        _fail(path, replicas, ~ok, "seconds must be finite and >= 0", column, "replica_id")
    start, end = _numbers(path, replicas, "provision_at_s"), _numbers(path, replicas, "end_at_s")
    with np.errstate(invalid="ignore"):
        _fail(path, replicas, end < start - TOLERANCE_S, "end_at_s must not precede provision_at_s", "end_at_s", "replica_id")


def check_itl(path: Path, itl: pd.DataFrame) -> None:
    """itl.parquet: gaps a + b j for j in [j0, j1) with a weight; every gap and weight finite and >= 0."""
    _missing(path, itl, ITL_COLUMNS)
    col = {c: _numbers(path, itl, c) for c in ITL_COLUMNS}
    for c in ITL_COLUMNS:
        _fail(path, itl, ~np.isfinite(col[c]), "must be finite", c, None)
    _fail(path, itl, col["weight"] < 0, "weights must be >= 0", "weight", None)
    _fail(path, itl, col["j1"] < col["j0"], "a piece's j1 must not be below its j0", "j1", None)
    last = np.maximum(col["j1"] - 1, col["j0"])
    low = np.minimum(col["a"] + col["b"] * col["j0"], col["a"] + col["b"] * last)
    _fail(path, itl, low < -TOLERANCE_S, "gaps must be >= 0", "a", None)
