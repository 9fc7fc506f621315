"""A run larger than memory: its per-request columns in files, and its gap record spilled to files as it grows.

A stored run (`sim.run.simulate.simulate_stored`) keeps the request log's columns (`RequestLog`) in files of the
run folder being written, mapped into memory (`FileColumns`): the engine reads and writes them as numpy arrays,
unchanged, and the pages it touched are handed back to the operating system every `RELEASE_EVERY` arrivals
(`madvise(MADV_DONTNEED)`: the data stays in the file and the page cache, which the kernel writes out and may
evict; the process keeps only the pages it touches again, those of the requests in flight). The gap record
(`records.ItlLog`) is appended to files (`SpilledGaps`) at the same instants. What stays in memory grows with
the requests in flight, not with the run.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import FleetsimError
from sim.workload.schema import REQUIRED, Where, check_times, check_tokens

RELEASE_EVERY = 1 << 18  # arrivals between two hand-backs of the touched pages (and two spills of the gap record)
_FILL_ROWS = 1 << 20  # rows written at a time when a column starts at a value other than zero


class FileColumns:
    """Fixed-length numpy columns backed by files in `folder` (shared mappings: what is written lands in the file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._maps: list[mmap.mmap] = []

    def column(self, name: str, n: int, dtype: type | np.dtype, fill: float | int = 0) -> np.ndarray:
        """A new column of `n` values of `dtype`, each `fill`: a plain ndarray over the file `folder/name.bin`."""
        dt = np.dtype(dtype)
        size = max(n * dt.itemsize, 1)  # (mmap cannot map an empty file)
        with open(self.folder / f"{name}.bin", "w+b") as f:
            f.truncate(size)  # zeros, without touching a page
            _reserve(f.fileno(), size)
            mm = mmap.mmap(f.fileno(), size)
        self._maps.append(mm)
        values: np.ndarray = np.frombuffer(mm, dtype=dt, count=n)
        if fill != 0:
            for lo in range(0, n, _FILL_ROWS):
                values[lo : lo + _FILL_ROWS] = fill
                self._release(mm, lo * dt.itemsize, (lo + _FILL_ROWS) * dt.itemsize)
        return values

    def adopt(self, values: np.ndarray) -> None:
        """Hand back with the columns the pages of `values` too, when it is a view of a mapped file (a stored trace's
        column: `stored_trace`); an array in memory is left alone."""
        mm = _mapping(values)
        if mm is not None and not any(m is mm for m in self._maps):
            self._maps.append(mm)

    @staticmethod
    def _release(mm: mmap.mmap, start: int, stop: int) -> None:
        page = mmap.PAGESIZE
        start, stop = start - start % page, min(stop, len(mm))
        if stop > start and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def release(self) -> None:
        """Hand the columns' resident pages back (their data stays in the files)."""
        for mm in self._maps:
            self._release(mm, 0, len(mm))


def _reserve(fd: int, size: int) -> None:
    """Claim the disk blocks of a mapped file before any page is written: a write through the mapping to a sparse
    file on a full disk is a SIGBUS that kills the process (no message, the temporary folders left behind); claimed
    here, a full disk is an OSError (the run folder's writer turns it into one line). Nothing is written: the
    blocks are allocated unwritten, reading as zeros. Where the file system cannot (no fallocate), the file stays
    sparse, as before."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return
        raise


def _mapping(values: np.ndarray) -> mmap.mmap | None:
    """The mapped file `values` is a view of, if any."""
    base: object = values
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def hand_back(values: np.ndarray) -> None:
    """Hand the pages of `values` (a contiguous slice of a column) back to the operating system when it is a view of
    a mapped file (a stored run's column, a stored trace's); nothing otherwise. A pass over a whole stored column
    calls it after each block (`blocks`), so that the pass leaves nothing resident."""
    mm = _mapping(values)
    if mm is None or not values.size:
        return
    start = values.__array_interface__["data"][0] - np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
    FileColumns._release(mm, start, start + values.nbytes)


def blocks(rows: int, *columns: np.ndarray) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """`columns` (of one length) `rows` at a time: (first row, the slices); each block's pages handed back after it."""
    n = len(columns[0])
    for lo in range(0, n, rows):
        part = tuple(c[lo : lo + rows] for c in columns)
        yield lo, part
        for c in part:
            hand_back(c)


GAP_COLUMNS = {
    "singles": np.float64,
    "grouped_v": np.float64,
    "grouped_w": np.int64,
    "piece_a": np.float64,
    "piece_b": np.float64,
    "piece_j0": np.int64,
    "piece_j1": np.int64,
    "piece_w": np.int64,
}


class SpilledGaps:
    """The gap record's columns appended to files `folder/<column>.bin` (raw little-endian values)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in GAP_COLUMNS:
            (self.folder / f"{name}.bin").write_bytes(b"")

    def append(self, name: str, values: memoryview | bytes) -> None:
        with open(self.folder / f"{name}.bin", "ab") as f:
            f.write(values)

    def chunks(self, name: str, rows: int) -> Iterator[np.ndarray]:
        """A column's spilled values, `rows` at a time (read from the file: nothing stays mapped)."""
        dt = np.dtype(GAP_COLUMNS[name])
        with open(self.folder / f"{name}.bin", "rb") as f:
            while True:
                part = np.fromfile(f, dtype=dt, count=rows)
                if not part.size:
                    return
                yield part

    def frames(self, rows: int) -> Iterator[pd.DataFrame]:
        """The record as the run folder's itl.parquet rows (`metrics.GapDistribution.frame_chunks`' layout: a single
        gap g of weight w is the row a=g, b=0, j0=0, j1=1), `rows` at a time; at least one frame, maybe empty."""

        def singles(values: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
            n = values.size
            return pd.DataFrame(
                {"a": values, "b": np.zeros(n), "j0": np.zeros(n, np.int64), "j1": np.ones(n, np.int64), "weight": weights}
            )

        for values in self.chunks("singles", rows):
            yield singles(values, np.ones(values.size, np.int64))
        for values, weights in zip(self.chunks("grouped_v", rows), self.chunks("grouped_w", rows), strict=True):
            yield singles(values, weights)
        names = ("piece_a", "piece_b", "piece_j0", "piece_j1", "piece_w")
        empty = True
        for a, b, j0, j1, w in zip(*(self.chunks(name, rows) for name in names), strict=True):
            empty = False
            yield pd.DataFrame({"a": a, "b": b, "j0": j0, "j1": j1, "weight": w})
        if empty:
            yield pd.DataFrame(
                {
                    "a": np.zeros(0),
                    "b": np.zeros(0),
                    "j0": np.zeros(0, np.int64),
                    "j1": np.zeros(0, np.int64),
                    "weight": np.zeros(0, np.int64),
                }
            )


def stored_trace(frames: Iterable[pd.DataFrame], folder: Path) -> pd.DataFrame:
    """A trace larger than memory: `frames` (windows of a trace, in time order: a generator's windows, a file's row
    groups) written a window at a time to files in `folder` as arrival_at_s, prompt_tokens and output_tokens, each
    window checked as a trace file's rows are (times finite and non-decreasing across windows, token counts
    whole and >= 1); the frame returned is a view of the files (its pages handed back as a stored run goes,
    `FileColumns.adopt`). The windows may hold no other column."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtypes = {"arrival_at_s": np.float64, "prompt_tokens": np.int64, "output_tokens": np.int64}
    files = {name: open(folder / f"{name}.bin", "wb") for name in REQUIRED}  # noqa: SIM115 (closed below)
    n, previous = 0, -np.inf
    where = Where("stored trace", first_row_number=0, unit="row")
    try:
        for frame in frames:
            extra = [c for c in frame.columns if c not in REQUIRED]
            if extra:
                raise FleetsimError(
                    f"stored trace: a window holds column {extra[0]!r}; a stored trace holds {', '.join(REQUIRED)} only"
                )
            missing = [c for c in REQUIRED if c not in frame.columns]
            if missing:
                raise FleetsimError(f"stored trace: a window misses column {missing[0]!r}")
            try:
                t = frame["arrival_at_s"].to_numpy(dtype=np.float64)
                tokens = [frame[name].to_numpy(dtype=np.float64) for name in ("prompt_tokens", "output_tokens")]
            except (TypeError, ValueError):  # (as `simulate` refuses such a frame)
                raise FleetsimError("stored trace: arrival_at_s, prompt_tokens and output_tokens must be numbers") from None
            check_times(t, column="arrival_at_s", where=where, offset=n, previous=previous)
            if n == 0 and t.size and t[0] < 0:
                raise FleetsimError(f"{where.at(0)}: arrival_at_s must be >= 0 (got {t[0]:g})")
            for name, values in zip(("prompt_tokens", "output_tokens"), tokens, strict=True):
                check_tokens(values, column=name, where=where, offset=n)
            for name, f in files.items():
                f.write(np.ascontiguousarray(frame[name].to_numpy(dtype=dtypes[name])).tobytes())
            n += len(frame)
            previous = float(t[-1]) if t.size else previous
    finally:
        for f in files.values():
            f.close()
    if n == 0:
        raise FleetsimError("stored trace: the trace has no requests")
    columns = {}
    for name, dtype in dtypes.items():
        with open(folder / f"{name}.bin", "r+b") as g:
            mm = mmap.mmap(g.fileno(), 0)
        columns[name] = np.frombuffer(mm, dtype=dtype, count=n)
    return pd.DataFrame(columns, copy=False)
