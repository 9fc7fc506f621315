"""The canonical trace frame every reader produces and every consumer reads.

Columns (one row per request, ordered by arrival):
  arrival_at_s   float64 >= 0, non-decreasing, seconds after the trace's first arrival
  prompt_tokens  int64 >= 1
  output_tokens  int64 >= 1
optional:
  request_id     string, unique
  klass          "interactive" | "batch" (empty: interactive)
  priority       int64, lower is served first (empty: 0 for interactive, 1 for batch)
  deadline_at_s  float64 >= arrival_at_s, a batch request's job deadline (empty: 24 h after its job's first arrival)
  job_id         string, the batch job a request belongs to (empty: job "batch")
  prefix_hash_ids  list of int64 in [0, 2^53 - 1] (Mooncake-style prefix-chained block hashes); in a CSV,
                 the ids separated by spaces. Ids above 2^53 are refused: any reader that passes them through
                 a float64 (JSON, pandas) makes neighbours collide, and a collision is a false cache hit.
  adapter        int64 in [0, 2^31 - 1], the LoRA adapter the request names (empty or -1: the base model); kept as
                 int64 with -1 for the base model
  model          string, the model (a platform's deployment, `deployments[].serves`) the request is for; at most
                 200 characters, empty: none named (BurstGPT's `Model` column is read as it)

Equal timestamps are legal: real traces log at millisecond resolution or coarser and hold many
requests that arrive in the same instant; they keep their file order. A decreasing timestamp is an
error (sort the file first), as are missing, non-numeric, zero or negative token counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # only what reads or builds a trace needs pandas

from sim.errors import FleetsimError
from sim.schema import KLASSES  # (the record schema names the request classes)
from sim.spec import MAX_TIME_S, MAX_TOKENS, PRIORITY_RANGE
from sim.workload.hash_ids import as_column, from_python

REQUIRED = ("arrival_at_s", "prompt_tokens", "output_tokens")
OPTIONAL = ("request_id", "klass", "priority", "deadline_at_s", "job_id", "prefix_hash_ids", "adapter", "model")
BASE_MODEL = -1  # the `adapter` of a request for the base model
MAX_ADAPTER = 2**31 - 1
MAX_REQUESTS = 100_000_000  # the most requests a generated or transformed trace may hold (about 3 GB as a frame)


@dataclass(frozen=True, slots=True)
class Where:
    """How to name a row of a source in an error: `file line N` or `file row N`. `line_of`: the file line of data row
    `index`, where the file may hold lines its reader skips (blank ones: `file_line`)."""

    source: str
    first_row_number: int = 2  # the line of the first data row (after a CSV header)
    unit: str = "line"
    line_of: Callable[[int], int] | None = None

    def at(self, index: int) -> str:
        if self.line_of is not None:
            return f"{self.source} line {self.line_of(index)}"
        return f"{self.source} {self.unit} {self.first_row_number + index}"


def file_line(path: str | Path, index: int, *, header: bool, blank: Callable[[bytes], bool]) -> int:
    """The line (from 1) of data row `index` (from 0) of a line-per-row file whose reader skips the lines `blank` says
    are blank (and the first, a header, with `header`): the file read again up to it, on the error path only."""
    row, number = -1, 0
    with Path(path).open("rb") as f:
        for number, line in enumerate(f, start=1):
            if (header and number == 1) or blank(line):
                continue
            row += 1
            if row == index:
                return number
    return number + 1  # (past the end: the line after the last)


def empty_line(line: bytes) -> bool:
    """A line with nothing before its end (CSV readers skip it: pyarrow's `ignore_empty_lines`)."""
    return not line.rstrip(b"\r\n")


def blank_line(line: bytes) -> bool:
    """A line of whitespace alone (JSON-lines readers and pandas' `skip_blank_lines` skip it)."""
    return not line.strip()


def first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def check_tokens(values: np.ndarray, *, column: str, where: Where, offset: int = 0) -> None:
    """Token counts: present, integral, >= 1 and at most MAX_TOKENS (vectorized; names the first offending row)."""
    bad = first_bad(~(values >= 1))  # NaN fails too
    if bad is not None:
        raise FleetsimError(f"{where.at(offset + bad)}: {column} must be >= 1 (got {_show(values[bad])})")
    bad = first_bad(values > MAX_TOKENS)  # (beyond it a count no model serves, and int64 wraps past 9.2e18)
    if bad is not None:
        raise FleetsimError(f"{where.at(offset + bad)}: {column} must be <= {MAX_TOKENS:,} (got {_show(values[bad])})")
    if values.dtype.kind == "f":
        bad = first_bad(values != np.floor(values))
        if bad is not None:
            raise FleetsimError(f"{where.at(offset + bad)}: {column} must be an integer (got {_show(values[bad])})")


def check_times(values: np.ndarray, *, column: str, where: Where, offset: int = 0, previous: float = -np.inf) -> None:
    """Timestamps: finite and non-decreasing, also across chunk boundaries (`previous`)."""
    bad = first_bad(~np.isfinite(values))
    if bad is not None:
        raise FleetsimError(f"{where.at(offset + bad)}: {column} must be a finite number (got {_show(values[bad])})")
    bad = first_bad(np.abs(values) > MAX_TIME_S)  # (a span of 1e300 s: a run asks for 1e299 timeline samples)
    if bad is not None:
        raise FleetsimError(f"{where.at(offset + bad)}: {column} must be within +-{MAX_TIME_S:g} s (got {_show(values[bad])} s)")
    if values.size:
        prev = np.concatenate(([previous], values[:-1]))
        bad = first_bad(values < prev)
        if bad is not None:
            raise FleetsimError(
                f"{where.at(offset + bad)}: {column} must be non-decreasing (got {_show(values[bad])} after {_show(prev[bad])}); sort the trace by time"
            )


def _show(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(float(value)) < 1e15:
        return str(int(value))
    return repr(value.item() if isinstance(value, np.generic) else value)


def canonical_frame(
    arrival_at_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    source: str,
    extra: dict[str, object] | None = None,
) -> pd.DataFrame:
    """Assemble a validated frame: times re-based to the first arrival, tokens as int64."""
    if arrival_at_s.size == 0:
        raise FleetsimError(f"{source}: the trace has no requests")
    t = np.asarray(arrival_at_s, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "arrival_at_s": t - t[0],
            "prompt_tokens": np.asarray(prompt_tokens, dtype=np.int64),
            "output_tokens": np.asarray(output_tokens, dtype=np.int64),
        },
        copy=False,
    )
    for name, values in (extra or {}).items():
        frame[name] = values
    frame.attrs["source"] = source
    return frame


def validate_frame(frame: pd.DataFrame, *, source: str = "<trace>", where: Where | None = None) -> pd.DataFrame:
    """Check a frame against the schema (used on frames built in Python and read from Parquet)."""
    where = where or Where(source, first_row_number=0, unit="row")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise FleetsimError(f"{source}: missing column {missing[0]!r} (found: {', '.join(map(str, frame.columns))})")
    unknown = [c for c in frame.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise FleetsimError(f"{source}: unknown column {unknown[0]!r} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    if len(frame) == 0:
        raise FleetsimError(f"{source}: the trace has no requests")
    t = checked_arrivals(frame["arrival_at_s"], where)
    for col in ("prompt_tokens", "output_tokens"):
        check_tokens(numeric_column(frame[col], col, where), column=col, where=where)
    out = frame.copy()
    out["arrival_at_s"] = t - t[0]
    out["prompt_tokens"] = frame["prompt_tokens"].to_numpy(dtype=np.float64).astype(np.int64)
    out["output_tokens"] = frame["output_tokens"].to_numpy(dtype=np.float64).astype(np.int64)
    _check_optional(out, where)
    if "deadline_at_s" in out.columns:
        deadline = out["deadline_at_s"].to_numpy(dtype=np.float64) - t[0]
        bad = first_bad(deadline < out["arrival_at_s"].to_numpy())
        if bad is not None:
            raise FleetsimError(
                f"{where.at(bad)}: deadline_at_s must be >= arrival_at_s (got {_show(frame['deadline_at_s'].iloc[bad])} "
                f"with arrival_at_s {_show(t[bad])})"
            )
        bad = first_bad(deadline > MAX_TIME_S)  # (as an arrival: a deadline of 1e300 s is a 300-digit CSV field)
        if bad is not None:
            raise FleetsimError(
                f"{where.at(bad)}: deadline_at_s must be within {MAX_TIME_S:g} s of the first arrival "
                f"(got {_show(deadline[bad] + t[0])})"
            )
        out["deadline_at_s"] = deadline
    out.attrs["source"] = frame.attrs.get("source", source)
    return out


def checked_arrivals(series: pd.Series, where: Where, previous: float = -np.inf) -> np.ndarray:
    """A frame's arrival_at_s as float64, checked: numbers, finite, non-decreasing (after `previous`: a window read
    before it) and >= 0."""
    t = numeric_column(series, "arrival_at_s", where)
    check_times(t, column="arrival_at_s", where=where, previous=previous)
    bad = first_bad(t < 0)
    if bad is not None:
        raise FleetsimError(f"{where.at(bad)}: arrival_at_s must be >= 0 (got {_show(t[bad])})")
    return t


def numeric_column(series: pd.Series, column: str, where: Where) -> np.ndarray:
    """A column's values as float64; booleans are refused (pandas would read True as 1)."""
    if series.dtype == bool or isinstance(series.dtype, pd.BooleanDtype) or series.dtype.kind in "mM":
        # (as numbers a duration or date-time column is counted in its unit: 1 s of timedelta64[us] read as 1e6 s)
        raise FleetsimError(f"{where.source}: {column} must be numbers (got a column of type {series.dtype})")
    if series.dtype == object:
        bad = first_bad(series.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool))
        if bad is not None:
            raise FleetsimError(f"{where.at(bad)}: {column} must be a number (got {series.iloc[bad]!r})")
    values: np.ndarray = np.asarray(pd.to_numeric(series, errors="coerce"), dtype=np.float64)
    bad = first_bad(np.isnan(values) & series.notna().to_numpy())
    if bad is not None:
        raise FleetsimError(f"{where.at(bad)}: {column} must be a number (got {series.iloc[bad]!r})")
    bad = first_bad(np.isnan(values))
    if bad is not None:
        raise FleetsimError(f"{where.at(bad)}: {column} is missing")
    return values


def _whole_within(values: pd.Series, low: int, high: int) -> np.ndarray:
    """Whole numbers within [low, high] (past int64 or 1e300, a cast to int64 wraps or saturates)."""
    v = values.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray((v == np.floor(v)) & (v >= low) & (v <= high))


def _check_optional(frame: pd.DataFrame, where: Where) -> None:
    checks: dict[str, Callable[[pd.Series], np.ndarray]] = {
        "klass": lambda s: (s.notna() & ~s.isin(KLASSES)).to_numpy(),
        "deadline_at_s": lambda s: s.notna().to_numpy() & ~(pd.to_numeric(s, errors="coerce").to_numpy() >= 0),
        "priority": lambda s: s.notna().to_numpy() & ~_whole_within(pd.to_numeric(s, errors="coerce"), *PRIORITY_RANGE),
    }
    rules = {
        "klass": f"must be one of {', '.join(KLASSES)}",
        "deadline_at_s": "must be a number >= 0 (or empty: no deadline)",
        "priority": f"must be an integer within {PRIORITY_RANGE[0]:,}..{PRIORITY_RANGE[1]:,} (or empty: the class's default)",
    }
    for col, bad_of in checks.items():
        if col in ("deadline_at_s", "priority") and col in frame.columns and frame[col].dtype.kind in "mM":
            raise FleetsimError(f"{where.source}: {col} must be numbers (got a column of type {frame[col].dtype})")
        if col in frame.columns:
            bad = first_bad(bad_of(frame[col]))
            if bad is not None:
                value = frame[col].iloc[bad]
                value = value.item() if isinstance(value, np.generic) else value  # (1e+20, not np.float64(1e+20))
                raise FleetsimError(f"{where.at(bad)}: {col} {rules[col]} (got {value!r})")
    if "prefix_hash_ids" in frame.columns:
        ids = from_python(frame["prefix_hash_ids"].tolist(), column="prefix_hash_ids", where=where)
        frame["prefix_hash_ids"] = as_column(ids)
    if "adapter" in frame.columns:
        frame["adapter"] = adapter_column(frame["adapter"], where)
    if "model" in frame.columns:
        frame["model"] = model_column(frame["model"], where)
    if "request_id" in frame.columns:
        dup = first_bad(frame["request_id"].duplicated().to_numpy())
        if dup is not None:
            raise FleetsimError(f"{where.at(dup)}: request_id must be unique (got {frame['request_id'].iloc[dup]!r} again)")


MAX_MODEL_NAME = 200


def model_column(series: pd.Series, where: Where) -> np.ndarray:
    """The `model` column as strings of at most 200 characters, "" where a request names none (an empty cell: only a
    platform's deployments read the column, and they refuse it); integer names (a CSV column of digits, read as
    numbers) are kept as their digits. Anything else names the row and the value."""
    values = series.to_numpy(dtype=object)
    if series.dtype.kind in "iu":
        values = np.array([str(v) for v in values], dtype=object)
    values = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values], dtype=object)
    ok = np.fromiter((isinstance(v, str) and len(v.strip()) <= MAX_MODEL_NAME for v in values), dtype=bool, count=len(values))
    bad = first_bad(~ok)
    if bad is not None:
        raise FleetsimError(
            f"{where.at(bad)}: model must be a name of at most {MAX_MODEL_NAME} characters (got {_show(series.iloc[bad])})"
        )
    return np.array([v.strip() for v in values], dtype=object)


def adapter_column(series: pd.Series, where: Where) -> np.ndarray:
    """The `adapter` column as int64, -1 (`BASE_MODEL`) where a request names none (empty, null or -1); an adapter
    id must be an integer in [0, 2^31 - 1] (names the row and the value otherwise)."""
    rule = f"must be an integer in [0, {MAX_ADAPTER}] (or empty / -1: the base model)"
    if series.dtype == bool or isinstance(series.dtype, pd.BooleanDtype):
        raise FleetsimError(f"{where.source}: adapter {rule} (got a column of type {series.dtype})")
    present = series.notna().to_numpy().copy()
    if series.dtype == object:
        strings = series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
        present &= ~strings  # an empty string is an empty cell
        bad = first_bad(series.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool))
        if bad is not None:
            raise FleetsimError(f"{where.at(bad)}: adapter {rule} (got {_show(series.iloc[bad])})")
    values = np.asarray(pd.to_numeric(series.where(present, None), errors="coerce"), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = ~present | ((values == np.floor(values)) & (values >= BASE_MODEL) & (values <= MAX_ADAPTER))
    bad = first_bad(~ok)
    if bad is not None:
        raise FleetsimError(f"{where.at(bad)}: adapter {rule} (got {_show(series.iloc[bad])})")
    return np.where(present, np.nan_to_num(values, nan=BASE_MODEL), BASE_MODEL).astype(np.int64)


class RepeatedKey(ValueError):
    """A key given twice in one JSON object (its name the argument)."""


def no_repeated_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RepeatedKey(key)
        seen[key] = value
    return seen
