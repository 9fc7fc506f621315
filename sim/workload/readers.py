"""Trace readers: real formats -> the canonical frame (`sim.workload.schema`).

Formats, detected from the extension and the CSV header unless forced:
  azure      Azure LLM inference 2023/2024 CSV: TIMESTAMP (wall clock), ContextTokens, GeneratedTokens
  burstgpt   BurstGPT CSV: Timestamp (s), Model, Request tokens, Response tokens, Total tokens, Log Type;
             optionally one Model; failed requests (0 response tokens) are dropped and counted
  mooncake   Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids (512 tokens each)
  bailian    Qwen Bailian JSONL (Alibaba's anonymized traces): timestamp (s), input_length, output_length, hash_ids
             (16 tokens each), chat_id, parent_chat_id, type, turn
  vidur      Vidur trace CSV: arrived_at (s), num_prefill_tokens, num_decode_tokens
  canonical  CSV or Parquet with the canonical columns
  generic    CSV or Parquet with a column mapping and a time unit
  vllm-bench `vllm bench serve --save-result` JSON: start_times, input_lens, output_lens (failed requests,
             which have no output length, are left out; `sim.workload.runlog`)
  otel       OpenTelemetry spans as OTLP/JSON, GenAI semantic conventions (`sim.workload.otel`); optionally one model
CSV files are read a block at a time (16 MiB), parsed by pyarrow's typed parser and validated with numpy per block,
so a file of tens of millions of rows never becomes a Python object per row; `trace_windows` hands the blocks (a
Parquet file's row groups) on one at a time, for a run larger than memory. Errors name the file,
the line (CSV/JSONL; the header is line 1) or row (Parquet, from 1) and the value.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq
else:  # loaded when a trace is read
    pd = LazyModule("pandas")
    pa = LazyModule("pyarrow")
    pcsv = LazyModule("pyarrow.csv")
    pa_json = LazyModule("pyarrow.json")
    pc = LazyModule("pyarrow.compute")
    pq = LazyModule("pyarrow.parquet")

from sim.errors import FleetsimError, _short
from sim.spec import MAX_TOKENS
from sim.workload.compressed import decompressed, is_gzip
from sim.workload.hash_ids import RULE as HASH_RULE
from sim.workload.hash_ids import as_column, check_hash_ids, hash_id_problem
from sim.workload.schema import (
    OPTIONAL,
    REQUIRED,
    RepeatedKey,
    Where,
    blank_line,
    canonical_frame,
    check_times,
    check_tokens,
    checked_arrivals,
    empty_line,
    file_line,
    no_repeated_key,
    numeric_column,
    validate_frame,
)

FORMATS = ("azure", "burstgpt", "mooncake", "bailian", "vidur", "canonical", "generic", "vllm-bench", "otel")
# JSON-lines formats of the Mooncake kind: arrival time, input and output lengths, prefix-chained block hashes. Their
# time unit and the tokens each hash id stands for (`engine.prefix_hash_block_tokens` must match for prefix caching):
# Mooncake (kvcache-ai/Mooncake FAST'25 traces) ms and 512; Qwen Bailian (alibaba-edu/qwen-bailian-usagetraces-anon,
# ATC'25) s and 16, with chat_id, parent_chat_id, type and turn besides
JSONL_FORMATS = {"mooncake": (1e-3, 512), "bailian": (1.0, 16)}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
BLOCK_BYTES = 16 << 20  # a CSV line may not be longer (the reader reads and parses a block of this at a time)
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Which source columns hold time and tokens, and how the time is written."""

    time: str
    prompt: str
    output: str
    time_unit: str = "s"  # or "datetime"
    extra: tuple[str, ...] = ()  # further columns to keep, by source name
    filters: dict[str, str] = field(default_factory=dict)


AZURE = CsvLayout("TIMESTAMP", "ContextTokens", "GeneratedTokens", time_unit="datetime")
BURSTGPT = CsvLayout("Timestamp", "Request tokens", "Response tokens")
VIDUR = CsvLayout("arrived_at", "num_prefill_tokens", "num_decode_tokens")
CANONICAL = CsvLayout("arrival_at_s", "prompt_tokens", "output_tokens")
HEADERS = {"azure": AZURE, "burstgpt": BURSTGPT, "vidur": VIDUR, "canonical": CANONICAL}


def load_trace(
    path: str | Path,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
    model: str | None = None,
) -> pd.DataFrame:
    """Read a trace file into the canonical frame. `columns` maps canonical -> source names. Anything
    that cannot be read (not UTF-8, compressed, truncated or corrupt Parquet, not a table) is one line
    naming the file."""
    path = Path(path)
    with _reading(path), decompressed(path) as plain:  # (a `*.gz` file: its content, the file named without .gz)
        frame = _load_trace(plain, format=format, columns=columns, time_unit=time_unit, model=model)
    if plain != path:
        frame.attrs["source"] = str(path)
    return frame


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """What a reader raises, as one line naming the file."""
    try:
        yield
    except FleetsimError:
        raise
    except UnicodeDecodeError as err:
        raise FleetsimError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); a trace is UTF-8 CSV, JSON lines or Parquet"
        ) from None
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, OSError, EOFError, ValueError) as err:
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        raise FleetsimError(f"{path}: cannot read this trace ({detail})") from None


def trace_windows(
    path: str | Path,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
    model: str | None = None,
) -> Iterator[pd.DataFrame] | None:
    """The trace `load_trace` reads, a window at a time (a CSV block, a Parquet row group), for a run larger than
    memory (`sim.run.store.stored_trace`): frames of the canonical columns whose concatenation is `load_trace`'s
    frame, value for value, each checked as it is read (the same checks and errors, one line naming the file, the
    line or row and the value). None for a file read whole: a format of whole documents (mooncake, bailian, vllm-bench, otel),
    and a file with columns beyond the canonical three (BurstGPT's model; canonical optional columns), which a stored
    trace does not hold. The file's own checks (found, not empty, its format) run on this call. None for a compressed
    file too (`*.gz`, or gzip content: read whole, decompressed: `load_trace`)."""
    path = Path(path)
    if is_gzip(path):
        return None
    with _reading(path):
        format, suffix = _checked_format(path, format=format, columns=columns, time_unit=time_unit, model=model)
        if format in (*JSONL_FORMATS, "vllm-bench", "otel", "burstgpt"):
            return None
        if suffix == ".parquet":
            if format != "canonical" or set(pq.ParquetFile(path).schema_arrow.names) != set(REQUIRED):
                return None  # (a mapping, optional columns: read whole)
            return _windowed(path, _parquet_windows(path))
        layout = _csv_layout(path, format, columns=columns, time_unit=time_unit, model=model)
        if layout.extra:
            return None
        return _windowed(path, _csv_windows(path, layout, format))


def _windowed(path: Path, windows: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    with _reading(path):
        yield from windows


def _checked_format(
    path: Path, *, format: str | None, columns: Mapping[str, str] | None, time_unit: str, model: str | None = None
) -> tuple[str, str]:
    """The file's checks before any row is read, and its format (given or detected) and suffix."""
    if format is not None and format not in FORMATS:
        raise FleetsimError(f"unknown trace format {format!r}; valid formats: {', '.join(FORMATS)}")
    if time_unit not in (*TIME_UNITS, "datetime"):
        raise FleetsimError(f"time unit must be one of {', '.join((*TIME_UNITS, 'datetime'))} (got {time_unit!r})")
    if path.is_dir():
        raise FleetsimError(f"{path}: is a folder, not a trace file")
    if not path.is_file():
        if path.exists():  # a device, a pipe or a socket: its size says nothing and a read may never end
            raise FleetsimError(f"{path}: not a regular file (a device, pipe or socket); give a trace file")
        raise FleetsimError(f"{path}: no such trace file")
    if path.stat().st_size == 0:
        raise FleetsimError(f"{path}: empty file")
    suffix = path.suffix.lower()
    if columns is not None and format in (None, "generic"):
        format = "generic"
    if format is None:
        format = _detect(path, suffix)
    if suffix == ".parquet" and format not in ("canonical", "generic", *JSONL_FORMATS, "vllm-bench", "otel"):
        raise FleetsimError(f"{path}: format {format} is a CSV format; Parquet traces are canonical or generic")
    # (settings only some formats read are refused elsewhere, not ignored: a canonical trace's seconds read as given
    # under --time-unit ms, a canonical trace's `model` column not filtered by --model GPT-4, without a word)
    if time_unit != "s" and format != "generic":
        raise FleetsimError(
            f"{path}: time unit {time_unit!r} is read by the generic format only (with its column mapping); "
            f"a {format} trace's times have their format's unit"
        )
    if model is not None and format not in ("burstgpt", "otel"):
        raise FleetsimError(
            f"{path}: model {model!r}: only BurstGPT and OpenTelemetry traces are filtered by model, not a {format} trace"
        )
    return format, suffix


def _load_trace(
    path: Path, *, format: str | None, columns: Mapping[str, str] | None, time_unit: str, model: str | None
) -> pd.DataFrame:
    format, suffix = _checked_format(path, format=format, columns=columns, time_unit=time_unit, model=model)
    if format in JSONL_FORMATS:
        return _read_mooncake(path, format)
    if format == "vllm-bench":
        from sim.workload.runlog import read_run_log

        frame = read_run_log(path, layout="vllm-bench").trace
        frame.attrs["format"] = format
        return frame
    if format == "otel":
        from sim.workload.otel import read_otel

        frame = read_otel(path, model=model)
        frame.attrs["format"] = format
        return frame
    if suffix == ".parquet":
        return _read_parquet(path, columns=columns, time_unit=time_unit)
    return _read_csv(path, _csv_layout(path, format, columns=columns, time_unit=time_unit, model=model), format)


def _csv_layout(path: Path, format: str, *, columns: Mapping[str, str] | None, time_unit: str, model: str | None) -> CsvLayout:
    """The columns a CSV format reads (and BurstGPT's model filter)."""
    layout = _generic_layout(columns, time_unit, path) if format == "generic" else HEADERS[format]
    if format == "burstgpt":
        layout = CsvLayout(
            BURSTGPT.time,
            BURSTGPT.prompt,
            BURSTGPT.output,
            extra=("Model",),
            filters={"Model": model} if model and model != "*" else {},  # ("*": every model, in the `model` column)
        )
    elif format == "canonical":
        header = read_header(path)
        _check_near_miss(path, header)
        layout = CsvLayout(CANONICAL.time, CANONICAL.prompt, CANONICAL.output, extra=tuple(c for c in OPTIONAL if c in header))
    return layout


def _check_near_miss(path: Path, header: list[str]) -> None:
    """A canonical CSV's columns beyond the schema's are not read (an index, a user id): one spelt like a schema
    column it lacks (`deadline_s` for `deadline_at_s`, `adaptor` for `adapter`) is a typo whose values would be
    lost without a word (deadlines defaulted, adapters dropped): refused, naming the column meant."""
    import difflib

    known = (*REQUIRED, *OPTIONAL)
    missing = [c for c in known if c not in header and c != "request_id"]  # (an id lost changes no figure)
    for name in header:
        if name in known or not name:
            continue
        near = difflib.get_close_matches(name.lower(), missing, n=1, cutoff=0.8)
        if near:
            raise FleetsimError(
                f"{path}: column {name!r} is not a canonical column; did you mean {near[0]!r}? (rename it, or drop it: "
                f"columns beyond {', '.join(known)} are not read)"
            )


def _detect(path: Path, suffix: str) -> str:
    if suffix in (".jsonl", ".json"):
        with path.open("rb") as f:
            head = f.read(65_536).decode("utf-8", errors="replace")
        if '"resourceSpans"' in head:
            return "otel"
        if '"input_lens"' in head or '"ttfts"' in head:  # (the first of a bench result's per-request lists)
            return "vllm-bench"
        if '"parent_chat_id"' in head:  # (a Qwen Bailian record's session link)
            return "bailian"
        return "mooncake"
    if suffix == ".parquet":
        names = set(pq.ParquetFile(path).schema_arrow.names)
        if set(REQUIRED) <= names:
            return "canonical"
        raise FleetsimError(
            f"{path}: Parquet without the canonical columns; give the format as generic with its columns (trace commands: --format generic --columns; a scenario: trace: {{file, format: generic, columns}})"
        )
    header = set(read_header(path))
    for name, layout in HEADERS.items():
        if {layout.time, layout.prompt, layout.output} <= header:
            return name
    raise FleetsimError(
        f"{path}: cannot tell the trace format from its header {_names(sorted(header))}; give the format ({', '.join(FORMATS)}): --format on trace commands, `trace: {{file, format}}` in a scenario"
    )


def _names(names: list[str], most: int = 8) -> str:
    """A header's names for a message, bounded (a first line may be a megabyte of one field, or of thousands)."""
    shown = ", ".join(_short(n) for n in names[:most])
    return f"[{shown}{f', ... (+{len(names) - most:,} more)' if len(names) > most else ''}]"


def read_header(path: Path) -> list[str]:
    """The column names on a CSV's first line. A first line over `MAX_HEADER_BYTES` is refused: read whole, a
    file of one 50 MB line (or millions of fields) would be held in memory before any check could run."""
    with path.open("rb") as f:
        line = f.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise FleetsimError(
            f"{path}: the first line is longer than {MAX_HEADER_BYTES:,} bytes; a CSV header names a few columns "
            "(this reader reads no further)"
        )
    row = next(csv.reader([line.decode("utf-8-sig")]), [])
    return [c.strip() for c in row]


def _generic_layout(columns: Mapping[str, str] | None, time_unit: str, path: Path) -> CsvLayout:
    if not columns:
        raise FleetsimError(
            f"{path}: format generic needs a column mapping (arrival_at_s=..., prompt_tokens=..., output_tokens=...)"
        )
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise FleetsimError(f"column mapping: missing {missing[0]!r} (have {', '.join(columns)})")
    unknown = [c for c in columns if c not in REQUIRED]
    if unknown:
        raise FleetsimError(f"column mapping: unknown canonical column {unknown[0]!r} (map {', '.join(REQUIRED)})")
    sources = [columns[c] for c in REQUIRED]
    shared = next((c for c in sources if sources.count(c) > 1), None)
    if shared is not None:
        raise FleetsimError(f"column mapping: column {shared!r} is mapped to two fields; each field reads its own column")
    return CsvLayout(columns["arrival_at_s"], columns["prompt_tokens"], columns["output_tokens"], time_unit=time_unit)


# --- CSV -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _CsvPiece:
    """One block of a CSV trace, checked: its times (seconds, not yet re-based), token counts, the rows kept (BurstGPT
    drops failed requests and other models' rows) and its extra columns."""

    times: np.ndarray
    prompts: np.ndarray
    outputs: np.ndarray
    keep: np.ndarray
    extras: dict[str, np.ndarray]


def _csv_pieces(path: Path, layout: CsvLayout, format: str) -> Iterator[_CsvPiece]:
    """The file's blocks, each checked (times finite and non-decreasing across blocks, token counts). A file with a
    header only is refused once read."""
    header = read_header(path)
    needed = [layout.time, layout.prompt, layout.output, *layout.extra]
    for col in needed:
        if col not in header:
            raise FleetsimError(f"{path}: missing column {col!r} for format {format} (found: {', '.join(header)})")
        if header.count(col) > 1:  # (which of the two is the trace's? neither is read silently)
            raise FleetsimError(f"{path}: column {col!r} appears {header.count(col)} times in the header; keep one")
    # date-times as the file writes them: naive (Azure 2023), or with a zone offset (Azure 2024's `+00:00`), read in UTC;
    # the first row decides, and a row that differs is an error (`_first_unparsable`)
    zoned = layout.time_unit == "datetime" and _zoned_times(path, layout.time)
    time_type = pa.timestamp("ns", tz="UTC" if zoned else None) if layout.time_unit == "datetime" else pa.float64()
    # token counts as text, checked decimal before the cast: pyarrow's int64 parser reads `0x10` as 16 (and
    # `0xFFFFFFFFFFFFFFFF` as -1)
    types = {layout.time: time_type, layout.prompt: pa.string(), layout.output: pa.string()}
    if "prefix_hash_ids" in layout.extra:  # as text: an inferred type would read big ids as float64 (collisions)
        types["prefix_hash_ids"] = pa.string()
    where = Where(str(path), line_of=functools.partial(file_line, path, header=True, blank=empty_line))
    offset, previous, origin = 0, -np.inf, None
    try:
        for batch in _csv_batches(path, needed, types):
            t_col = batch.column(layout.time)
            if t_col.null_count:
                bad = int(np.flatnonzero(t_col.is_null().to_numpy(zero_copy_only=False))[0])
                raise FleetsimError(f"{where.at(offset + bad)}: {layout.time} is missing")
            if layout.time_unit == "datetime":
                ns = t_col.cast(pa.int64()).to_numpy()
                origin = ns[0] if origin is None else origin
                d = ns - origin
                # over 292 years apart `ns - origin` wraps past int64 (1700 after 2262 read as 22 years later: an
                # unsorted trace taken as sorted): such differences in float64
                wrapped = (ns < origin) != (d < 0)
                t = (np.where(wrapped, ns.astype(np.float64) - float(origin), d.astype(np.float64))) * 1e-9
            else:
                t = t_col.to_numpy() * TIME_UNITS[layout.time_unit]
            p = _int_column(batch, layout.prompt, where, offset)
            o = _int_column(batch, layout.output, where, offset)
            check_times(t, column=layout.time, where=where, offset=offset, previous=previous)
            check_tokens(p, column=layout.prompt, where=where, offset=offset)
            keep = np.ones(len(t), dtype=bool)
            if format == "burstgpt":
                check_tokens(np.where(o == 0, 1, o), column=layout.output, where=where, offset=offset)
                keep &= o > 0  # failed requests: logged with 0 response tokens (a negative count is an error above)
                for col, value in layout.filters.items():
                    keep &= batch.column(col).to_numpy(zero_copy_only=False) == value
            check_tokens(np.where(keep, o, 1), column=layout.output, where=where, offset=offset)
            for col in layout.extra:  # an empty cell is "none"; the text NaN is no value (a deadline of NaN: no deadline?)
                column = batch.column(col)
                if pa.types.is_floating(column.type):
                    nan = pc.fill_null(pc.is_nan(column), False).to_numpy(zero_copy_only=False)
                    if nan.any():
                        raise FleetsimError(
                            f"{where.at(offset + int(np.argmax(nan)))}: {col} is NaN; leave the cell empty for none"
                        )
            extras = {col: batch.column(col).to_numpy(zero_copy_only=False) for col in layout.extra}
            previous = t[-1] if len(t) else previous
            offset += batch.num_rows
            yield _CsvPiece(t, p, o, keep, extras)
    except pa.ArrowInvalid as err:
        if "straddl" in str(err):  # pyarrow: a row did not fit in one block
            raise FleetsimError(
                f"{path}: a line is longer than {BLOCK_BYTES:,} bytes (the reader's block); a trace's rows are short"
            ) from None
        raise _locate_bad_value(path, layout, err, zoned=zoned) from None
    if offset == 0:
        raise FleetsimError(f"{path}: the trace has no requests (header only)")


def _read_csv(path: Path, layout: CsvLayout, format: str) -> pd.DataFrame:
    times, prompts, outputs, keep_masks = [], [], [], []
    extras: dict[str, list[np.ndarray]] = {c: [] for c in layout.extra}
    for piece in _csv_pieces(path, layout, format):
        times.append(piece.times)
        prompts.append(piece.prompts)
        outputs.append(piece.outputs)
        keep_masks.append(piece.keep)
        for col, values in piece.extras.items():
            extras[col].append(values)
    keep_all = np.concatenate(keep_masks)
    offset = len(keep_all)  # (rows read)
    n_failed = int(sum(int(np.sum(o == 0)) for o in outputs)) if format == "burstgpt" else 0
    renamed = {"Model": "model"} if format == "burstgpt" else {}  # (BurstGPT's Model: the schema's `model`)
    extra_cols: dict[str, object] = {
        renamed.get(c, c): np.concatenate(v)[keep_all] for c, v in extras.items() if renamed.get(c, c) in OPTIONAL
    }
    columns = []
    for chunks in (times, prompts, outputs):  # one column at a time, freeing each column's chunks as we go
        column = np.concatenate(chunks)
        chunks.clear()
        columns.append(column if keep_all.all() else column[keep_all])
    frame = canonical_frame(*columns, source=str(path), extra=extra_cols)
    frame.attrs["format"] = format
    frame.attrs["rows_read"] = offset
    if format == "burstgpt":
        frame.attrs["dropped_failed"] = n_failed
        frame.attrs["dropped_other_models"] = int(offset - keep_all.sum() - frame.attrs["dropped_failed"])
    if len(frame) and extra_cols:
        # checked in the file's own times: validate_frame re-bases arrivals and deadlines alike (given the re-based
        # arrivals, it would take a deadline as already re-based)
        frame["arrival_at_s"] = np.asarray(columns[0], dtype=np.float64)
        return validate_frame(frame, source=str(path), where=Where(str(path)))
    return frame


def _csv_windows(path: Path, layout: CsvLayout, format: str) -> Iterator[pd.DataFrame]:
    """`_read_csv`'s frame a block at a time (a layout with no extra columns): the rows kept, times re-based to the
    first kept arrival as `canonical_frame` re-bases them, tokens as int64."""
    first: float | None = None
    for piece in _csv_pieces(path, layout, format):
        t, p, o = piece.times, piece.prompts, piece.outputs
        if not piece.keep.all():
            t, p, o = t[piece.keep], p[piece.keep], o[piece.keep]
        if not t.size:
            continue
        t = np.asarray(t, dtype=np.float64)
        if first is None:
            first = t[0]
        yield pd.DataFrame(
            {
                "arrival_at_s": t - first,
                "prompt_tokens": np.asarray(p, dtype=np.int64),
                "output_tokens": np.asarray(o, dtype=np.int64),
            },
            copy=False,
        )
    if first is None:
        raise FleetsimError(f"{path}: the trace has no requests")


def _csv_batches(path: Path, columns: list[str], types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches, read a block of `BLOCK_BYTES` at a time (cut after its last newline; the
    header line put before every block after the first, so that each parses as the first does) and parsed whole:
    the process holds one block and its batches, however large the file (pyarrow's own streaming reader reads
    ahead as fast as it can, the whole file if the consumer is slower)."""
    # (parsed on the calling thread: with pyarrow's worker threads parsing a block held as Python bytes, a CI run
    # crashed in a worker thread once, a segmentation fault with tracemalloc on, as the bad-input corpus runs)
    read = pcsv.ReadOptions(block_size=BLOCK_BYTES, encoding="utf8", use_threads=False)
    parse = pcsv.ParseOptions(newlines_in_values=False)
    convert = pcsv.ConvertOptions(column_types=types, include_columns=columns, null_values=[""], strings_can_be_null=True)
    too_long = f"{path}: a line is longer than {BLOCK_BYTES:,} bytes (the reader's block); a trace's rows are short"
    with path.open("rb") as f:
        header = f.readline(MAX_HEADER_BYTES + 1)  # (`read_header` has refused a longer first line)
        rest = header
        first = True
        while True:
            data = f.read(BLOCK_BYTES)
            buf = rest + data if rest else data
            cut = buf.rfind(b"\n") + 1 if data else len(buf)  # (at the end: the last line, with or without its newline)
            if len(buf) - cut > BLOCK_BYTES:  # (a line not ended within a block)
                raise FleetsimError(too_long)
            block, rest = buf[:cut], buf[cut:]
            if block:
                table = pcsv.read_csv(
                    pa.BufferReader(block if first else header + block),
                    read_options=read,
                    parse_options=parse,
                    convert_options=convert,
                )
                first = False
                # (not an empty batch: pyarrow gives one for a part holding the header alone, when the header and the
                # first row overrun its block; a datetime column's origin and the token checks want a row)
                yield from (batch for batch in table.to_batches() if batch.num_rows)
            if not data:
                return


def _int_column(batch: pa.RecordBatch, name: str, where: Where, offset: int) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise FleetsimError(f"{where.at(offset + bad)}: {name} is missing")
    if not pc.all(pc.match_substring_regex(col, r"^[ \t]*-?[0-9]+[ \t]*$")).as_py():
        raise pa.ArrowInvalid(f"{name}: not a decimal integer")  # (located, with its line, by _locate_bad_value)
    try:
        return np.asarray(pc.cast(col, pa.int64()).to_numpy())
    except pa.ArrowInvalid:  # (spaces around a count: trimmed, as pyarrow's CSV reader does; else past int64)
        return np.asarray(pc.cast(pc.utf8_trim(col, " \t"), pa.int64()).to_numpy())


# a date-time's zone designator, at its end after a time of day: every form pandas' ISO 8601 parser reads as one
# (`+00`, `+0000`, `+00:00`, `Z`, a space before it, one-digit fields), so that a value read as naive never parses as
# zoned (pandas then refuses the mix, with a hint about utc=True); a date alone (`2024-05-10`) has none
ZONE_OFFSET = r"[T ]\d{1,2}(?::?\d{1,2}){0,2}(?:[.,]\d*)?\s*(?:Z|[+-]\d{1,2}(?::?\d{1,2})?)$"
# the date-times pyarrow's CSV reader reads as timestamp[ns] (naive) and timestamp[ns, UTC] (zoned), the whole cell:
# no surrounding spaces, at most nine fractional digits, a zone only after a time of day
_ARROW_NAIVE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d(?::\d\d(?::\d\d(?:\.\d{1,9})?)?)?)?"
_ARROW_ZONED = r"\d{4}-\d\d-\d\d[T ]\d\d(?::\d\d(?::\d\d(?:\.\d{1,9})?)?)?(?:Z|[+-]\d\d(?::?\d\d)?)"


def _zone_rule(zoned: bool) -> str:
    """A date-time column is naive or zoned as its first value is: the rule a row that differs breaks."""
    return f"must be a date-time {'with' if zoned else 'without'} a zone offset, as the first row's"


def _zoned_times(path: Path, column: str) -> bool:
    """Whether the first data row's `column` is a date-time with a zone offset (read from the file's first lines)."""
    header = read_header(path)
    with path.open("rb") as f:
        f.readline(MAX_HEADER_BYTES + 1)  # (the header)
        for _ in range(1000):  # (blank lines skipped, as the CSV reader skips them)
            line = f.readline(BLOCK_BYTES + 1)
            if not line:
                return False
            row = next(csv.reader([line.decode("utf-8", errors="replace")]), [])
            if row:
                break
        else:
            return False
    i = header.index(column)
    return i < len(row) and re.search(ZONE_OFFSET, row[i].strip()) is not None


def _locate_bad_value(path: Path, layout: CsvLayout, err: pa.ArrowInvalid, *, zoned: bool = False) -> FleetsimError:
    """pyarrow says a value did not parse but not where: scan as text (the error path only)."""
    columns = [layout.time, layout.prompt, layout.output]
    with pd.read_csv(path, usecols=columns, dtype=str, chunksize=1_000_000, keep_default_na=False) as chunks:
        found = _first_unparsable(chunks, layout, Where(str(path)), zoned=zoned)
    if found is not None:
        return found
    if "Expected" in str(err) and "columns, got" in str(err):  # (pyarrow: a row of more or fewer fields, no line)
        ragged = _first_ragged_row(path)
        if ragged is not None:
            return ragged
    return FleetsimError(f"{path}: cannot parse ({str(err).splitlines()[0]})")


def _first_ragged_row(path: Path) -> FleetsimError | None:
    """The first row whose number of fields differs from the header's (the error path only)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:  # (empty lines are skipped, as pyarrow skips them)
                return FleetsimError(
                    f"{path} line {rows.line_num}: {len(row)} fields where the header has {width} (got {_short(','.join(row))})"
                )
    return None


def _first_unparsable(chunks: Any, layout: CsvLayout, where: Where, *, zoned: bool = False) -> FleetsimError | None:
    """The first value pyarrow could not read, located (`zoned`: the file's date-times carry a zone offset)."""
    offset = 0
    for chunk in chunks:
        for col, kind in ((layout.time, layout.time_unit), (layout.prompt, "int"), (layout.output, "int")):
            text = chunk[col].str.strip()
            if kind == "datetime":  # (as pyarrow reads timestamp[ns]: a zone offset on every row or none, within int64 ns)
                has_zone = text.str.contains(ZONE_OFFSET, regex=True).to_numpy(dtype=bool)
                # pandas judges only what pyarrow's grammar admits (it reads `00:00:00 +00:00` and twelve digits too)
                arrow = chunk[col].str.fullmatch(_ARROW_ZONED if zoned else _ARROW_NAIVE).to_numpy(dtype=bool)
                readable = text.where(arrow & (has_zone == zoned))
                parsed = pd.to_datetime(readable, errors="coerce", format="ISO8601", utc=zoned)
                if zoned:
                    parsed = parsed.dt.tz_convert(None)
                ok = (parsed.notna() & (parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max)).to_numpy(dtype=bool)
                rule = "must be a date-time"
            elif kind == "int":  # (as pyarrow reads int64: no leading +, and at most 18 digits past leading zeros)
                ok = text.str.fullmatch(r"-?\d+").to_numpy(dtype=bool) & (
                    text.str.lstrip("-").str.lstrip("0").str.len().to_numpy() <= 18
                )
                rule = "must be an integer"
            else:
                ok = pd.to_numeric(text, errors="coerce").notna().to_numpy()
                rule = "must be a number"
            bad = np.flatnonzero(~ok)
            if bad.size:
                i = int(bad[0])
                value = text.iloc[i]
                if value == "":
                    return FleetsimError(f"{where.at(offset + i)}: {col} is missing")
                if kind == "datetime":  # (as written: pyarrow reads no spaces around a date-time)
                    value = chunk[col].iloc[i]
                if kind == "datetime" and has_zone[i] != zoned:
                    rule = _zone_rule(zoned)
                elif kind == "datetime" and pd.notna(parsed.iloc[i]):
                    rule = f"must be a date-time within {pd.Timestamp.min:%Y-%m-%d}..{pd.Timestamp.max:%Y-%m-%d}"
                if kind == "int" and value.startswith("+"):
                    rule = "must be an integer without a + sign"
                elif kind == "int" and value.lstrip("-")[:2].lower() == "0x":
                    rule = "must be a decimal integer"
                elif kind == "int" and value.lstrip("-").isdigit():
                    rule = "must be >= 1" if value.startswith("-") else f"must be <= {MAX_TOKENS:,}"
                return FleetsimError(f"{where.at(offset + i)}: {col} {rule} (got {value!r})")
        offset += len(chunk)
    return None


# --- JSONL (Mooncake) ------------------------------------------------------------------------------
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")


MAX_JSON_DEPTH = 64  # a trace row nests a list or two; pyarrow's JSON reader crashes (SIGSEGV) on ~20,000 levels


def _check_json_depth(path: Path, chunk: int = 1 << 24) -> None:
    """Refuse a JSON-lines file nesting brackets deeper than MAX_JSON_DEPTH, before pyarrow's reader, which recurses
    into it (a 40 KB line of 20,000 brackets crashes the process; 14,000 take minutes). Counted in chunks with numpy,
    each line counted from its start (brackets in a line's strings included: a text field does not open sixty-four)."""
    lut = np.zeros(256, dtype=np.int32)
    lut[[ord("["), ord("{")]], lut[[ord("]"), ord("}")]] = 1, -1
    carry, line = 0, 1  # carry: the depth reached so far on the line a chunk starts within
    with path.open("rb") as f:
        while block := f.read(chunk):
            b = np.frombuffer(block, dtype=np.uint8)
            running = np.cumsum(lut[b])
            newline = b == ord("\n")
            # each position's depth on its own line: the running sum less its value at the line's newline
            last = np.maximum.accumulate(np.where(newline, np.arange(b.size), -1))
            depth = np.where(last >= 0, running - running[np.maximum(last, 0)], running + carry)
            deep = np.flatnonzero(depth > MAX_JSON_DEPTH)
            if deep.size:
                at = line + int(np.count_nonzero(newline[: deep[0]]))
                raise FleetsimError(f"{path} line {at}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
            carry = int(depth[-1])
            line += int(np.count_nonzero(newline))


def _read_mooncake(path: Path, format: str = "mooncake") -> pd.DataFrame:
    """A JSON-lines trace of the Mooncake kind (`JSONL_FORMATS`: Mooncake's or Qwen Bailian's), vectorized through
    pyarrow's JSON reader; a line-by-line scan only finds what it rejected."""
    _check_json_depth(path)
    try:
        table = pa_json.read_json(path, read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES))
    except pa.ArrowInvalid as err:
        raise _locate_bad_json(path, err) from None
    names = set(table.column_names)
    for key in MOONCAKE_FIELDS:
        if key not in names:
            raise FleetsimError(f"{path}: missing field {key!r} (found: {', '.join(sorted(names))})")
        if not (pa.types.is_integer(table[key].type) or pa.types.is_floating(table[key].type)):
            raise _locate_bad_json(path, None)
    lines = Where(str(path), line_of=functools.partial(file_line, path, header=False, blank=blank_line))
    if table.num_rows == 0:
        raise FleetsimError(f"{path}: the trace has no requests")
    columns = {key: table[key].to_numpy().astype(np.float64) for key in MOONCAKE_FIELDS}  # nulls -> NaN
    seconds, hash_tokens = JSONL_FORMATS[format]
    t = columns["timestamp"] * seconds
    check_times(t, column="timestamp", where=lines)
    check_tokens(columns["input_length"], column="input_length", where=lines)
    check_tokens(columns["output_length"], column="output_length", where=lines)
    extra: dict[str, object] = {}
    if "hash_ids" in names:
        ids = table["hash_ids"]
        if not (pa.types.is_list(ids.type) and pa.types.is_integer(ids.type.value_type)):
            # JSON's inferred type may hold coerced values (an int beside a float becomes a float): name the line
            # and the value as written
            located = _locate_bad_json(path, None, hash_ids_only=True)
            if located is not None:
                raise located
        extra["prefix_hash_ids"] = as_column(check_hash_ids(ids, column="hash_ids", where=lines))
    frame = canonical_frame(t, columns["input_length"], columns["output_length"], source=str(path), extra=extra)
    frame.attrs["format"] = format
    frame.attrs["rows_read"] = len(frame)
    if "prefix_hash_ids" in extra:
        frame.attrs["hash_block_tokens"] = hash_tokens
    return frame


@overload
def _locate_bad_json(path: Path, err: pa.ArrowInvalid | None) -> FleetsimError: ...
@overload
def _locate_bad_json(path: Path, err: None, *, hash_ids_only: bool) -> FleetsimError | None: ...
def _locate_bad_json(path: Path, err: pa.ArrowInvalid | None, *, hash_ids_only: bool = False) -> FleetsimError | None:
    """The first line Python's exact JSON reader refuses (the error path only); `hash_ids_only`: the first line
    whose hash_ids are refused, or None."""
    where = Where(str(path), first_row_number=1)
    kinds: dict[str, str] = {}  # each field's JSON type so far (pyarrow's reader refuses a field that changes type)
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=no_repeated_key)
            except json.JSONDecodeError as e:
                return FleetsimError(f"{where.at(i)}: invalid JSON ({e.msg})")
            except RepeatedKey as e:
                return FleetsimError(f"{where.at(i)}: field {e.args[0]} is given twice")
            except (RecursionError, ValueError):  # nested too deep; an integer of thousands of digits
                return FleetsimError(f"{where.at(i)}: unreadable JSON: nested too deep or a number too long")
            if not isinstance(row, dict):
                return FleetsimError(f"{where.at(i)}: each line must be a JSON object (got {type(row).__name__})")
            for key in () if hash_ids_only else MOONCAKE_FIELDS:
                value = row.get(key)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    return FleetsimError(f"{where.at(i)}: {key} must be a number (got {_short(value)})")
            problem = hash_id_problem(row.get("hash_ids"))
            if problem is not None:
                return FleetsimError(f"{where.at(i)}: hash_ids {HASH_RULE} (got {problem})")
            changed = _changed_kind(row, "", kinds)
            if changed is not None:
                field, was, now = changed
                return FleetsimError(f"{where.at(i)}: field {field} is {now}, on earlier lines {was} (one type per field)")
    if hash_ids_only:
        return None
    detail = str(err).splitlines()[0] if err is not None else "inconsistent field types"
    return FleetsimError(f"{path}: cannot parse as JSON lines ({detail})")


def _json_kind(value: Any) -> str | None:
    if value is None:
        return None  # (null fits any type)
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, dict) else "an array"


def _changed_kind(value: Any, field: str, kinds: dict[str, str]) -> tuple[str, str, str] | None:
    """The first field (nested as `a.b`, `a[]`) of `value` whose JSON type differs from the one `kinds` holds for it
    (which records the types seen): (field, earlier type, this type), or None."""
    kind = _json_kind(value)
    if kind is None:
        return None
    if field:
        was = kinds.setdefault(field, kind)
        if was != kind:
            return field, was, kind
    if isinstance(value, dict):
        for key, item in value.items():
            found = _changed_kind(item, f"{field}.{key}" if field else key, kinds)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _changed_kind(item, f"{field}[]", kinds)
            if found is not None:
                return found
    return None


# --- Parquet -----------------------------------------------------------------------------------------
def _unreadable(path: Path, err: Exception) -> FleetsimError:
    return FleetsimError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})")


def _parquet_windows(path: Path) -> Iterator[pd.DataFrame]:
    """A canonical Parquet trace of the three required columns a row group at a time, each checked as
    `validate_frame` checks the whole (times finite, non-decreasing across groups and >= 0; token counts), times
    re-based to the first arrival, tokens as int64: `_read_parquet`'s frame, value for value."""
    source = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise _unreadable(path, err) from None
    offset, previous, first = 0, -np.inf, None
    for i in range(pf.num_row_groups):
        try:
            frame = pf.read_row_group(i, columns=list(REQUIRED)).to_pandas()
        except (pa.ArrowInvalid, OSError) as err:
            raise _unreadable(path, err) from None
        if not len(frame):
            continue
        where = Where(source, first_row_number=1 + offset, unit="row")
        try:
            t = checked_arrivals(frame["arrival_at_s"], where, previous)
            for col in ("prompt_tokens", "output_tokens"):
                check_tokens(numeric_column(frame[col], col, where), column=col, where=where)
        except FleetsimError as err:  # (a later group may break a rule the whole-file check runs first)
            raise _parquet_problem(path) or err from None
        if first is None:
            first = t[0]
        yield pd.DataFrame(
            {
                "arrival_at_s": t - first,
                "prompt_tokens": frame["prompt_tokens"].to_numpy(dtype=np.float64).astype(np.int64),
                "output_tokens": frame["output_tokens"].to_numpy(dtype=np.float64).astype(np.int64),
            },
            copy=False,
        )
        previous = t[-1]
        offset += len(frame)
    if first is None:
        raise FleetsimError(f"{source}: the trace has no requests")


def _parquet_problem(path: Path) -> FleetsimError | None:
    """The error `validate_frame` finds in the whole of a canonical Parquet trace (the error path of
    `_parquet_windows` only: it checks each row group whole, the whole-file check each rule over all rows, a column
    at a time, so a rule broken in a later group can come first), reading one column at a time."""
    where = Where(str(path), first_row_number=1, unit="row")
    try:
        for col in REQUIRED:
            try:
                series = pq.read_table(path, columns=[col]).to_pandas()[col]
            except (pa.ArrowInvalid, OSError) as err:
                return _unreadable(path, err)
            if col == "arrival_at_s":
                checked_arrivals(series, where)
            else:
                check_tokens(numeric_column(series, col, where), column=col, where=where)
            del series
    except FleetsimError as err:
        return err
    return None


def _parquet_seconds(path: Path, name: str, t: pd.Series, time_unit: str) -> pd.Series:
    """A generic Parquet file's time column as seconds from its first row: date-times (`datetime`: a timestamp column,
    or ISO 8601 text), or numbers in `time_unit`; anything else (booleans, integers read as date-times, text that is
    no number) names the column and the first such value."""
    if time_unit == "datetime":
        if t.dtype.kind != "M":
            if t.dtype.kind in "biuf":
                raise FleetsimError(f"{path}: column {name!r} holds {t.dtype}, not date-times; give the unit of its numbers")
            text = t.astype(str).str.strip().where(t.notna())
            # naive, or with a zone offset (read in UTC), as the first value is; a row that differs is named
            has_zone = text.str.contains(ZONE_OFFSET, regex=True, na=False).to_numpy(dtype=bool)
            first = np.flatnonzero(t.notna().to_numpy())
            zoned = bool(first.size and has_zone[first[0]])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (pandas' "could not infer format" note: the error below says it)
                parsed = pd.to_datetime(text.where(has_zone == zoned), errors="coerce", format="ISO8601", utc=zoned)
            bad = np.flatnonzero(parsed.isna().to_numpy() & t.notna().to_numpy())
            if bad.size:
                i = int(bad[0])
                rule = _zone_rule(zoned) if has_zone[i] != zoned else "must be a date-time"
                raise FleetsimError(f"{path}: row {i + 1}: column {name!r} {rule} (got {t.iloc[i]!r})")
            t = parsed
        return (t - t.iloc[0]).dt.total_seconds()
    if t.dtype.kind == "b":
        raise FleetsimError(f"{path}: column {name!r} holds booleans, not numbers of {time_unit}")
    numbers = pd.to_numeric(t, errors="coerce") if t.dtype.kind in "iuf" else pd.to_numeric(t.astype(object), errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy() & t.notna().to_numpy())
    if bad.size:
        raise FleetsimError(
            f"{path}: row {int(bad[0]) + 1}: column {name!r} must be a number of {time_unit} (got {t.iloc[int(bad[0])]!r})"
        )
    return numbers * TIME_UNITS[time_unit]


def _read_parquet(path: Path, *, columns: Mapping[str, str] | None, time_unit: str) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise _unreadable(path, err) from None
    frame = table.to_pandas()
    if columns:
        layout = _generic_layout(columns, time_unit, path)
        for col in (layout.time, layout.prompt, layout.output):
            if col not in frame.columns:
                raise FleetsimError(f"{path}: missing column {col!r} (found: {', '.join(frame.columns)})")
        t = frame[layout.time]
        if t.dtype.kind == "m" or (t.dtype.kind == "M" and time_unit != "datetime"):
            held = f"durations ({t.dtype})" if t.dtype.kind == "m" else f"date-times ({t.dtype})"
            wanted = "date-times" if time_unit == "datetime" else f"numbers of {time_unit}"
            hint = "; give the time unit as datetime" if t.dtype.kind == "M" else ""
            raise FleetsimError(f"{path}: column {layout.time!r} holds {held}, not {wanted}{hint}")
        seconds = _parquet_seconds(path, layout.time, t, time_unit)
        frame = pd.DataFrame(
            {"arrival_at_s": seconds, "prompt_tokens": frame[layout.prompt], "output_tokens": frame[layout.output]}
        )
    out = validate_frame(frame, source=str(path), where=Where(str(path), first_row_number=1, unit="row"))
    out.attrs["format"] = "generic" if columns else "canonical"
    out.attrs["rows_read"] = len(out)
    return out
