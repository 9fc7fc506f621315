"""Pure transforms of canonical trace frames. Each returns a new frame, re-based so that the
first arrival is at 0 s; randomness only through a Generator passed in."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # only what reads or builds a trace needs pandas

from sim.errors import FleetsimError
from sim.schema import KLASSES
from sim.spec import MAX_TIME_S, MAX_TOKENS, Frozen
from sim.streams import RunStreams
from sim.workload.adapters import AdapterMix, assign_adapters
from sim.workload.schema import MAX_REQUESTS


def _rebase(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if len(frame) == 0:
        raise FleetsimError(f"{source}: no requests left")
    out = frame.reset_index(drop=True)
    t0 = float(out["arrival_at_s"].iloc[0])
    if t0:
        out["arrival_at_s"] = out["arrival_at_s"] - t0
        if "deadline_at_s" in out.columns:
            out["deadline_at_s"] = out["deadline_at_s"] - t0
    return out


MIN_RATE_SCALE, MAX_RATE_SCALE = 1e-6, 1e6  # a trace's rate scaled by at most a million either way


def window(frame: pd.DataFrame, *, start_s: float = 0.0, end_s: float | None = None) -> pd.DataFrame:
    """Requests arriving in [start_s, end_s)."""
    for name, value in (("start_s", start_s), ("end_s", end_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise FleetsimError(f"window: {name} must be a finite time >= 0 (got {value})")
    if end_s is not None and end_s <= start_s:
        raise FleetsimError(f"window: end_s must be > start_s (got {end_s} <= {start_s})")
    t = frame["arrival_at_s"]
    mask = t >= start_s
    if end_s is not None:
        mask &= t < end_s
    return _rebase(frame.loc[mask].copy(), f"window [{start_s}, {end_s})")


def scale_rate(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Compress time by `factor` (2.0 doubles the arrival rate); lengths unchanged."""
    if not (MIN_RATE_SCALE <= factor <= MAX_RATE_SCALE):  # (NaN fails too)
        raise FleetsimError(
            f"rate scale factor must be a finite number between {MIN_RATE_SCALE:g} and {MAX_RATE_SCALE:g} (got {factor}); beyond them "
            "arrivals collapse onto one instant or spread past any horizon"
        )
    out = frame.copy()
    out["arrival_at_s"] = frame["arrival_at_s"] / factor
    if "deadline_at_s" in out.columns:
        out["deadline_at_s"] = out["arrival_at_s"] + (frame["deadline_at_s"] - frame["arrival_at_s"])
    _within_horizon(out, f"rate scale {factor:g}")
    return out


def _within_horizon(frame: pd.DataFrame, what: str) -> None:
    """Arrivals (and deadlines) a transform produced stay within the span any trace may hold (`MAX_TIME_S`, as a
    trace file's are checked when read): past it the run's records would be refused by its own report."""
    for column in ("arrival_at_s", "deadline_at_s"):
        if column in frame.columns and len(frame):
            last = float(np.nanmax(np.abs(frame[column].to_numpy(dtype=np.float64)), initial=0.0))
            if not last <= MAX_TIME_S:
                raise FleetsimError(
                    f"{what} puts the trace's {column} at {last:.4g} s, past the {MAX_TIME_S:g} s any trace may span; "
                    "scale or repeat it less"
                )


def subsample(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Keep each request independently with probability `fraction` (Bernoulli thinning)."""
    if not 0 < fraction <= 1:
        raise FleetsimError(f"subsample fraction must be in (0, 1] (got {fraction})")
    keep = rng.random(len(frame)) < fraction
    return _rebase(frame.loc[keep].copy(), "subsample")


def clip_tokens(frame: pd.DataFrame, max_context_tokens: int) -> pd.DataFrame:
    """Fit each request into a context window: prompt <= max - 1, then prompt + output <= max."""
    if not 2 <= max_context_tokens <= MAX_TOKENS:  # (past int64: an OverflowError in the clip below)
        raise FleetsimError(f"max_context_tokens must be within 2..{MAX_TOKENS:,} (got {max_context_tokens})")
    out = frame.copy()
    prompt = np.minimum(frame["prompt_tokens"].to_numpy(), max_context_tokens - 1)
    output = np.minimum(frame["output_tokens"].to_numpy(), max_context_tokens - prompt)
    out["prompt_tokens"], out["output_tokens"] = prompt, output
    block = frame.attrs.get("hash_block_tokens")  # (the tokens each prefix hash id stands for, where the format says)
    if block and "prefix_hash_ids" in out.columns:
        # a cut prompt keeps the ids of the blocks it still holds (one for a partial last block): the ids past it
        # stood for tokens no longer sent, and counted in the block hit rate as blocks never matched
        cut = np.flatnonzero(prompt != frame["prompt_tokens"].to_numpy())
        if cut.size:
            ids = out["prefix_hash_ids"].to_numpy(dtype=object).copy()
            keep = -(-prompt // int(block))
            for i in cut.tolist():
                if ids[i] is not None and len(ids[i]) > keep[i]:
                    ids[i] = ids[i][: keep[i]]
            out["prefix_hash_ids"] = ids
    out.attrs["clipped_requests"] = int(
        np.sum((prompt != frame["prompt_tokens"].to_numpy()) | (output != frame["output_tokens"].to_numpy()))
    )
    # a prompt at the cap of a trace whose ids' size is not declared keeps them all (the engine reads those within the
    # prompt): `sim.run.pools.check_hash_blocks` does not count them against its blocks
    out.attrs["prompt_cap_tokens"] = min(max_context_tokens - 1, frame.attrs.get("prompt_cap_tokens", MAX_TOKENS))
    return out


def repeat(frame: pd.DataFrame, times: int, *, shift_s: float | None = None) -> pd.DataFrame:
    """`times` back-to-back copies; each starts `shift_s` after the previous one's start
    (default: the trace's span plus its mean inter-arrival gap)."""
    if times < 1:
        raise FleetsimError(f"repeat times must be >= 1 (got {times})")
    if times * len(frame) > MAX_REQUESTS:
        raise FleetsimError(
            f"repeat {times:,} x {len(frame):,} requests is more than {MAX_REQUESTS:,}; repeat fewer times or generate in parts"
        )
    t = frame["arrival_at_s"].to_numpy()
    span = float(t[-1] - t[0])
    if shift_s is None:
        shift_s = span + (span / (len(t) - 1) if len(t) > 1 else 1.0)
    if shift_s < span:
        raise FleetsimError(f"repeat shift_s must be >= the trace's span {span:g} s to keep arrivals ordered (got {shift_s})")
    # the copies as one take of the rows (a copy and a column write per repeat cost minutes at millions of repeats)
    n = len(frame)
    k = np.repeat(np.arange(times, dtype=np.int64), n)
    out = frame.iloc[np.tile(np.arange(n), times)].reset_index(drop=True)
    out["arrival_at_s"] = np.tile(t, times) + k * shift_s
    if "deadline_at_s" in out.columns:
        out["deadline_at_s"] = out["deadline_at_s"] + k * shift_s  # (the taken column: its dtype kept, as each copy's was)
    if "request_id" in out.columns:
        out["request_id"] = out["request_id"].astype(str) + "#" + pd.Series(k).astype(str)
    _within_horizon(out, f"repeat {times:,}")
    return out


def merge(frames: Mapping[str, pd.DataFrame], *, klass: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Interleave several traces by arrival time (ties: the order given), labelling each
    request's `klass` (interactive | batch) by the trace it came from."""
    if not frames:
        raise FleetsimError("merge needs at least one trace")
    parts = []
    hashed = any("prefix_hash_ids" in f.columns for f in frames.values())
    blocks = {name: f.attrs.get("hash_block_tokens") for name, f in frames.items() if "prefix_hash_ids" in f.columns}
    declared = sorted({b for b in blocks.values() if b is not None})
    if len(declared) > 1:  # (Mooncake's ids stand for 512 tokens, Bailian's for 16: as one column they collide)
        sizes = ", ".join(f"{name}: {b}" for name, b in blocks.items() if b is not None)
        raise FleetsimError(
            f"merge: the traces' prefix hash ids stand for blocks of different sizes ({sizes} tokens); in one column "
            "they would match unrelated prefixes: merge traces hashed alike"
        )
    for rank, (name, frame) in enumerate(frames.items()):
        part = frame.copy()
        if hashed and "prefix_hash_ids" not in part.columns:  # its requests have none (not NaN: a float is no list)
            part["prefix_hash_ids"] = pd.Series([None] * len(part), index=part.index, dtype=object)
        if klass is not None:
            if name not in klass:
                raise FleetsimError(f"merge: no klass given for trace {name!r}")
            if klass[name] not in KLASSES:
                raise FleetsimError(f"merge: klass must be one of {', '.join(KLASSES)} (got {klass[name]!r} for {name})")
            part["klass"] = klass[name]
        part["_rank"] = rank
        part["_row"] = np.arange(len(part))
        parts.append(part)
    merged = pd.concat(parts, ignore_index=True).sort_values(["arrival_at_s", "_rank", "_row"], kind="stable")
    _check_merged_ids(merged, list(frames))
    out = _rebase(merged.drop(columns=["_rank", "_row"]), "merge")
    if declared:
        out.attrs["hash_block_tokens"] = declared[0]
    return out


def _check_merged_ids(merged: pd.DataFrame, names: list[str]) -> None:
    """Request ids stay unique in a merge (a trace's rule): an id in two inputs (a trace merged with itself), or ids in
    some inputs only (the others' rows empty), would be written into a trace no reader takes back."""
    if "request_id" not in merged.columns:
        return
    missing = merged["request_id"].isna().to_numpy()
    if missing.any():
        rank = int(merged["_rank"].to_numpy()[missing][0])
        having = next(names[int(r)] for r in merged["_rank"].to_numpy()[~missing])
        raise FleetsimError(
            f"merge: {having} has request ids and {names[rank]} has none; give every input a request_id column, or none"
        )
    ids = merged["request_id"].astype(str)  # (as written: 7 and "7" are one id in a CSV)
    again = ids.duplicated(keep="first").to_numpy()
    if again.any():
        value = ids.to_numpy()[again][0]
        first, second = (names[int(r)] for r in merged["_rank"].to_numpy()[(ids == value).to_numpy()][:2])
        raise FleetsimError(
            f"merge: request_id {value!r} is in {first} and in {second}; request ids must be unique across the merged inputs"
        )


class TraceFile(Frozen):
    """A trace file plus the transforms to apply, in this order: window, rate, sample, clip, repeat."""

    file: str = Field(min_length=1)
    format: str | None = None
    columns: dict[str, str] | None = None  # generic format: canonical name -> column in the file
    time_unit: str = "s"  # generic format: s | ms | us | ns | datetime
    model: str | None = None  # BurstGPT: keep only this Model
    start_s: float | None = Field(default=None, ge=0)
    end_s: float | None = Field(default=None, gt=0)
    rate_scale: float | None = Field(default=None, ge=MIN_RATE_SCALE, le=MAX_RATE_SCALE)
    sample: float | None = Field(default=None, gt=0, le=1)
    max_context: int | None = Field(default=None, ge=2, le=MAX_TOKENS)
    repeat: int | None = Field(default=None, ge=1, le=1_000_000)
    adapters: AdapterMix | None = None  # LoRA adapters drawn for the requests (`sim.workload.adapters`)


def _file_and_reader(spec: TraceFile, base_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The file (relative paths: from `base_dir`) and the reader's settings a trace block gives (`READER_KEYS`)."""
    path = Path(spec.file)
    return path if path.is_absolute() else base_dir / path, {k: getattr(spec, k) for k in READER_KEYS}


def load_trace_file(spec: TraceFile, *, base_dir: Path, seed: int) -> pd.DataFrame:
    from sim.workload.readers import load_trace

    path, reading = _file_and_reader(spec, base_dir)
    frame = load_trace(path, **reading)
    if spec.start_s is not None or spec.end_s is not None:
        frame = window(frame, start_s=spec.start_s or 0.0, end_s=spec.end_s)
    if spec.rate_scale is not None:
        frame = scale_rate(frame, spec.rate_scale)
    if spec.sample is not None:
        frame = subsample(frame, spec.sample, RunStreams(seed).generator("trace_sample"))
    if spec.max_context is not None:
        frame = clip_tokens(frame, spec.max_context)
    if spec.repeat is not None:
        frame = repeat(frame, spec.repeat)
    if spec.adapters is not None:
        frame = assign_adapters(frame, spec.adapters, seed)
    return frame


def trace_file_windows(spec: TraceFile, *, base_dir: Path) -> Iterator[pd.DataFrame] | None:
    """`load_trace_file`'s frame a window at a time (`sim.workload.readers.trace_windows`), its transforms applied
    to each window when they act row by row (`rate_scale`, `max_context`: the same values as on the whole); None when
    the file is read whole or a transform needs the whole trace (a time window re-bases to its first arrival,
    sampling and adapters draw over the whole, `repeat` copies it)."""
    from sim.workload.readers import trace_windows

    if any(getattr(spec, k) is not None for k in TRANSFORM_KEYS if k not in ROW_TRANSFORMS):
        return None
    path, reading = _file_and_reader(spec, base_dir)
    windows = trace_windows(path, **reading)
    if windows is None or (spec.rate_scale is None and spec.max_context is None):
        return windows
    return _transformed(windows, spec.rate_scale, spec.max_context)


def _transformed(windows: Iterator[pd.DataFrame], rate_scale: float | None, max_context: int | None) -> Iterator[pd.DataFrame]:
    for frame in windows:
        if rate_scale is not None:
            frame = scale_rate(frame, rate_scale)
        if max_context is not None:
            frame = clip_tokens(frame, max_context)
        yield frame


TRANSFORM_KEYS = ("start_s", "end_s", "rate_scale", "sample", "max_context", "repeat", "adapters")  # TraceFile's transforms
READER_KEYS = ("format", "columns", "time_unit", "model")  # TraceFile's settings for reading its file
ROW_TRANSFORMS = ("rate_scale", "max_context")  # the transforms that act row by row (`trace_file_windows`)


def swap_trace_file(trace: object, file: str) -> tuple[dict[str, object], str]:
    """What `--trace FILE` does to a scenario's `trace` (raw data), before any `--set trace.*`: the file is
    replaced and the scenario's transforms are kept. A `{file: ...}` block keeps its transforms (`TRANSFORM_KEYS`)
    and drops its reader settings (`READER_KEYS`: they describe the replaced file); a bare path or no trace becomes
    `{file: FILE}`; a generator block becomes `{file: FILE}` too, keeping only its `max_context` (the one transform
    a generator shares with a file). Returns the new block and what was dropped, in words ("" if nothing)."""
    block: dict[str, object] = {"file": file}
    dropped: list[str] = []
    if isinstance(trace, dict) and "file" in trace:
        dropped.append(f"file {trace['file']}")
        block |= {k: trace[k] for k in TRANSFORM_KEYS if trace.get(k) is not None}
        readers = [f"{k}={trace[k]}" for k in READER_KEYS if trace.get(k) is not None and trace.get(k) != "s"]
        if readers:
            dropped.append(f"its reader settings {', '.join(readers)} (give them again with --set trace.KEY=VALUE)")
    elif isinstance(trace, dict):
        if trace.get("max_context") is not None:
            block["max_context"] = trace["max_context"]
        dropped.append("the synthetic generator (its arrivals, lengths, duration and seed)")
    elif isinstance(trace, str):
        dropped.append(f"file {trace}")
    return block, "; ".join(dropped)


def describe_trace(trace: object) -> str:
    """A scenario's trace block (raw or as run) in words: the file's name and its transforms, or the generator."""
    if isinstance(trace, str):
        return Path(trace).name
    if isinstance(trace, dict) and "file" in trace:
        steps = [
            f"{k} {trace[k]:g}" if isinstance(trace[k], float) else f"{k} {trace[k]}"
            for k in TRANSFORM_KEYS
            if trace.get(k) is not None
        ]
        return Path(str(trace["file"])).name + (f" ({', '.join(steps)})" if steps else "")
    if isinstance(trace, dict) and isinstance(trace.get("arrivals"), dict):
        arrivals = trace["arrivals"]
        rate = arrivals.get("rate_per_s", arrivals.get("mean_rate_per_s"))
        size = f"{trace['duration_s']:g} s" if trace.get("duration_s") else f"{trace.get('n_requests')} requests"
        at = f" at {rate:g} req/s" if isinstance(rate, int | float) else ""
        return f"synthetic ({arrivals.get('process', 'poisson')} arrivals{at}, {size})"
    return "no trace"


def trace_note(given: str, swapped: dict[str, object], dropped: str, final: object) -> str:
    """One line on what `--trace FILE` (then `--set trace.*`) made of the scenario's trace: the trace as run, the
    transforms kept from the scenario, those set on the command line and what was dropped."""
    if not (isinstance(final, dict) and final.get("file") == swapped["file"]):
        return f"trace as run: {describe_trace(final)} (--set trace replaced --trace {given})"
    kept = [k for k in TRANSFORM_KEYS if k in swapped and final.get(k) == swapped[k]]
    changed = [k for k in (*TRANSFORM_KEYS, *READER_KEYS) if final.get(k) is not None and final.get(k) != swapped.get(k)]
    cleared = [k for k in TRANSFORM_KEYS if k in swapped and final.get(k) is None]
    parts = [f"trace as run: {describe_trace(final)}, the file from --trace {given}"]
    parts.append(
        "kept from the scenario: " + ", ".join(f"{k} {swapped[k]}" for k in kept)
        if kept
        else "no transforms kept from the scenario"
    )
    if changed or cleared:
        parts.append("from --set: " + ", ".join([*(f"{k} {final[k]}" for k in changed), *(f"{k} unset" for k in cleared)]))
    if dropped:
        parts.append(f"dropped: {dropped}")
    return "; ".join(parts)
