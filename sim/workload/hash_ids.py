"""Prefix hash ids (a trace's optional `prefix_hash_ids` column, Mooncake's `hash_ids`): checked and kept as int64.

A request's ids are a list of integers in [0, 2^53 - 1], one per hash block of its prompt; equal ids mean equal
prefixes, so two ids that collide are a false cache hit. 2^53 is where float64 stops holding every integer: an id
above it, read by anything that goes through a float (a JSON parser, a pandas column with a gap), lands on its
neighbour. Such ids, and negative, fractional, boolean, string or nested ones, are refused with the row and the
value. Accepted: a list (or array) of integers, integral floats below 2^53 (exact), in a CSV the ids separated by
spaces; an empty cell or null is a request without ids (None).

The check is vectorized through Arrow (`check_hash_ids`); only what it refuses is located row by row in Python
(`hash_id_problem`), so a trace of millions of requests never costs a Python loop over its ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    pa = LazyModule("pyarrow")
    pc = LazyModule("pyarrow.compute")

from sim.errors import FleetsimError, _short


class Where(Protocol):
    """How a row is named in an error (`sim.workload.schema.Where`)."""

    @property
    def source(self) -> str: ...

    def at(self, index: int) -> str: ...


MAX_HASH_ID = 2**53 - 1
RULE = "must be a list of integers in [0, 2^53 - 1]"


def hash_id_problem(value: Any) -> str | None:
    """Why one row's ids are refused (the offending value, shown), or None if they are fine (Python objects: the
    error path and frames built in Python)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):  # the CSV form: ids separated by spaces
        for token in value.split():
            if not (token.isascii() and token.isdigit()) or int(token) > MAX_HASH_ID:
                return repr(token)
        return None
    if not isinstance(value, list | tuple | np.ndarray):
        return _short(value)
    for item in value.tolist() if isinstance(value, np.ndarray) else value:
        if isinstance(item, bool | np.bool_) or not isinstance(item, int | float | np.integer | np.floating):
            return _short(item)
        if not (0 <= item <= MAX_HASH_ID and float(item).is_integer()):
            return _short(item)
    return None


def locate(values: Sequence[Any], *, column: str, where: Where, offset: int = 0) -> FleetsimError | None:
    """The first refused row of Python values, as the error to raise."""
    for i, value in enumerate(values):
        problem = hash_id_problem(value)
        if problem is not None:
            return FleetsimError(f"{where.at(offset + i)}: {column} {RULE} (got {problem})")
    return None


def from_python(values: Sequence[Any], *, column: str, where: Where) -> list[np.ndarray | None]:
    """A column of Python values (lists, arrays, CSV strings, None) as int64 arrays, or one line naming the row."""
    if any(isinstance(v, str) for v in values):
        error = locate(values, column=column, where=where)
        if error is not None:
            raise error
        values = [[int(t) for t in v.split()] if isinstance(v, str) else v for v in values]
    try:
        array = pa.array(list(values), from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        array = None
    if array is None:
        raise locate(values, column=column, where=where) or FleetsimError(
            f"{where.source}: {column} {RULE} (cannot read the column)"
        )
    return check_hash_ids(array, column=column, where=where)


def check_hash_ids(array: pa.Array | pa.ChunkedArray, *, column: str, where: Where, offset: int = 0) -> list[np.ndarray | None]:
    """An Arrow column of ids (list of integers or integral floats; null type: no ids anywhere) as one int64 array
    per row (None where a row has none); anything else is one line naming the first refused row and value."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=array.type)
    kind = array.type
    n = len(array)
    if pa.types.is_null(kind):
        return [None] * n
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
        pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type) or pa.types.is_null(kind.value_type)
    ):  # (a list of nulls: only empty lists, or null ids, which are refused below)
        raise locate(array.to_pylist(), column=column, where=where, offset=offset) or FleetsimError(
            f"{where.source}: {column} {RULE} (got a column of {kind})"
        )
    flat = array.flatten()
    rows = np.asarray(pc.list_parent_indices(array).to_numpy(), dtype=np.int64)
    if flat.null_count:
        i = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise FleetsimError(f"{where.at(offset + int(rows[i]))}: {column} {RULE} (got None)")
    values = flat.to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, dtype=np.int64)
    ok = (values >= 0) & (values <= MAX_HASH_ID)
    if values.dtype.kind == "f":
        ok &= values == np.floor(values)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise FleetsimError(f"{where.at(offset + int(rows[i]))}: {column} {RULE} (got {_short(values[i].item())})")
    ids = values.astype(np.int64)
    lengths = pc.list_value_length(array).fill_null(0).to_numpy()
    parts = np.split(ids, np.cumsum(lengths)[:-1]) if n else []
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    return [None if nulls[i] else parts[i] for i in range(n)]


def as_column(values: Sequence[np.ndarray | None]) -> np.ndarray:
    """One object per row (numpy would turn equal-length arrays into a 2-D array)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out
