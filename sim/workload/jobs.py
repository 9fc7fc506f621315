"""Offline batch jobs as requests: a job's frame (from a generator block or a trace file) and the merge of
jobs into the interactive trace.

A job (`batch.jobs[]` in a scenario) is `requests` requests submitted at `submit_at_s`, all at once
(`window_s: 0`, a batch API's upload) or spread evenly over `window_s`, with lengths from distributions
(`prompt_tokens`, `output_tokens`: fixed, uniform, lognormal or empirical from a trace), or the requests of a
trace `file` (its arrivals shifted by `submit_at_s`). Each request gets `klass: batch`, the job's `job_id`,
`priority` (default 1: after interactive work at 0) and `deadline_at_s` = submit + `deadline_s` (default
24 h, as the OpenAI and Anthropic batch APIs). Interactive requests that carry no class get `interactive`,
priority 0, no job and no deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, model_validator

from sim.lazy import LazyModule
from sim.schema import KLASSES
from sim.spec import MAX_SEED, MAX_TIME_S, MAX_TOKENS, PRIORITY_RANGE, Frozen
from sim.streams import RunStreams
from sim.workload.schema import MAX_REQUESTS
from sim.workload.synthetic import Lengths, draw_lengths
from sim.workload.transforms import TraceFile, clip_tokens, load_trace_file

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")

from sim.errors import FleetsimError

DEFAULT_DEADLINE_S = 86_400.0
BATCH_PRIORITY = 1


class BatchJob(Frozen):
    job_id: str = Field(min_length=1, max_length=200)
    requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    prompt_tokens: Lengths | None = None
    output_tokens: Lengths | None = None
    file: str | TraceFile | None = None  # the job's requests from a trace (instead of requests + lengths)
    submit_at_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    window_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)  # 0: all submitted at submit_at_s; else evenly over the window
    deadline_s: float = Field(default=DEFAULT_DEADLINE_S, gt=0, le=MAX_TIME_S)  # after submit_at_s
    priority: int = Field(default=BATCH_PRIORITY, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])
    max_context: int | None = Field(default=None, ge=2, le=MAX_TOKENS)  # clip each request into this context
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # None: the scenario's

    @model_validator(mode="after")
    def _one_source(self) -> BatchJob:
        generated = self.requests is not None
        if generated == (self.file is not None):
            raise ValueError("give either requests (with prompt_tokens and output_tokens) or file")
        if generated and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("a generated job needs prompt_tokens and output_tokens")
        if self.file is not None and (self.prompt_tokens is not None or self.output_tokens is not None):
            raise ValueError("a job read from a file takes its lengths from the file (drop prompt_tokens, output_tokens)")
        return self


def job_frame(job: BatchJob, *, base_dir: Path, seed: int, rank: int) -> pd.DataFrame:
    """The job's requests (canonical columns plus klass, job_id, priority, deadline_at_s)."""
    seed = job.seed if job.seed is not None else seed
    if job.file is not None:
        spec = job.file if isinstance(job.file, TraceFile) else TraceFile(file=job.file)
        frame = load_trace_file(spec, base_dir=base_dir, seed=seed)
        keep = ["arrival_at_s", "prompt_tokens", "output_tokens"] + (
            ["prefix_hash_ids"] if "prefix_hash_ids" in frame.columns else []
        )
        frame = frame[keep].copy()
        frame["arrival_at_s"] = frame["arrival_at_s"].to_numpy(dtype=np.float64) + job.submit_at_s
    else:
        assert job.requests is not None and job.prompt_tokens is not None and job.output_tokens is not None
        n = job.requests
        streams = RunStreams(seed)
        # each job draws from its own streams (named by its place in the list): adding a job changes no other
        prompt = draw_lengths(job.prompt_tokens, streams.sub_generator("batch_prompt", rank), n, base_dir=base_dir)
        output = draw_lengths(job.output_tokens, streams.sub_generator("batch_output", rank), n, base_dir=base_dir)
        at = job.submit_at_s + job.window_s * np.arange(n) / n
        frame = pd.DataFrame({"arrival_at_s": at, "prompt_tokens": prompt, "output_tokens": output})
    if job.max_context is not None:
        frame = clip_tokens(frame, job.max_context)
    n = len(frame)
    frame["klass"] = pd.Categorical.from_codes(np.full(n, KLASSES.index("batch"), dtype=np.int8), categories=KLASSES)
    frame["job_id"] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[job.job_id])
    frame["priority"] = np.full(n, job.priority, dtype=np.int64)
    frame["deadline_at_s"] = np.full(n, job.submit_at_s + job.deadline_s)
    return frame


def with_classes(trace: pd.DataFrame) -> pd.DataFrame:
    """The trace with klass, priority, job_id and deadline_at_s filled in: interactive (priority 0) where it
    has no class; batch requests without a priority at 1, without a job in job "batch", without a deadline
    24 h after their job's first arrival. `klass` and `job_id` become categoricals (a byte or two a request);
    a trace already complete is returned as it is."""
    if _complete(trace):
        return trace
    out = trace.copy()
    n = len(out)
    klass = out["klass"].astype("string").fillna("interactive") if "klass" in out.columns else pd.Series(["interactive"] * n)
    batch = klass.to_numpy() == "batch"
    out["klass"] = pd.Categorical(np.where(batch, "batch", "interactive"), categories=KLASSES)
    if "priority" not in out.columns:
        out["priority"] = np.where(batch, BATCH_PRIORITY, 0).astype(np.int64)
    else:
        given = pd.to_numeric(out["priority"]).to_numpy(dtype=np.float64)
        out["priority"] = np.where(np.isnan(given), np.where(batch, BATCH_PRIORITY, 0), given).astype(np.int64)
    job = out["job_id"].astype("string") if "job_id" in out.columns else pd.Series(pd.NA, index=out.index, dtype="string")
    job = job.where(~batch | job.notna(), "batch").where(batch, pd.NA)
    out["job_id"] = pd.Categorical(job.to_numpy(dtype=object, na_value=None))
    deadline = (
        out["deadline_at_s"].to_numpy(dtype=np.float64, copy=True)
        if "deadline_at_s" in out.columns
        else np.full(n, np.nan, dtype=np.float64)
    )
    missing = batch & np.isnan(deadline)
    if missing.any():
        first = pd.Series(out["arrival_at_s"].to_numpy()[batch], index=job[batch].to_numpy()).groupby(level=0).min()
        deadline[missing] = job[missing].map(first).to_numpy(dtype=np.float64) + DEFAULT_DEADLINE_S
    deadline[~batch] = np.nan
    out["deadline_at_s"] = deadline
    return out


def _complete(trace: pd.DataFrame) -> bool:
    """Already labelled by `with_classes` (categorical class and job, an integer priority)."""
    cols = trace.columns
    return (
        all(c in cols for c in ("klass", "priority", "job_id", "deadline_at_s"))
        and isinstance(trace["klass"].dtype, pd.CategoricalDtype)
        and list(trace["klass"].cat.categories) == list(KLASSES)
        and not trace["klass"].isna().any()
        and isinstance(trace["job_id"].dtype, pd.CategoricalDtype)
        and trace["priority"].dtype == np.int64
    )


def add_jobs(trace: pd.DataFrame, jobs: list[BatchJob], *, base_dir: Path, seed: int) -> pd.DataFrame:
    """The interactive trace and the jobs' requests, by arrival (ties: the trace first, then the jobs in order)."""
    frames = [with_classes(trace)]
    for rank, job in enumerate(jobs):
        frames.append(with_classes(job_frame(job, base_dir=base_dir, seed=seed, rank=rank)))
    if len(frames) == 1:
        return frames[0]
    total = sum(len(f) for f in frames)
    if total > MAX_REQUESTS:
        raise FleetsimError(f"batch.jobs: the trace and jobs hold {total:,} requests, more than {MAX_REQUESTS:,}")
    # column by column, in one stable order (arrival, then the frame's rank, then its row): no frame-wide copies
    arrival = np.concatenate([f["arrival_at_s"].to_numpy(dtype=np.float64) for f in frames])
    ranks = np.concatenate([np.full(len(f), k, dtype=np.int32) for k, f in enumerate(frames)])
    order = np.lexsort((ranks, arrival))  # stable: rows of a frame keep their order
    columns: dict[str, object] = {}
    names = list(frames[0].columns)
    if any("prefix_hash_ids" in f.columns for f in frames) and "prefix_hash_ids" not in names:
        names.append("prefix_hash_ids")
    for name in names:
        if name == "job_id":
            names = sorted({str(c) for f in frames for c in f["job_id"].cat.categories})
            where = {c: i for i, c in enumerate(names)}
            codes = []
            for f in frames:  # each frame's codes into the union's (-1, no job, stays -1)
                remap = np.array([where[str(c)] for c in f["job_id"].cat.categories] + [-1], dtype=np.int32)
                codes.append(remap[f["job_id"].cat.codes.to_numpy()])
            columns[name] = pd.Categorical.from_codes(np.concatenate(codes)[order], categories=names)
        elif name == "klass":
            columns[name] = pd.Categorical.from_codes(
                np.concatenate([f["klass"].cat.codes.to_numpy() for f in frames])[order], categories=KLASSES
            )
        elif name == "prefix_hash_ids":  # the requests of a frame without prefix ids have none
            ids = [f[name].to_numpy() if name in f.columns else np.full(len(f), None, dtype=object) for f in frames]
            columns[name] = np.concatenate(ids)[order]
        elif all(name in f.columns for f in frames):
            columns[name] = np.concatenate([f[name].to_numpy() for f in frames])[order]
    merged = pd.DataFrame(columns)
    merged.attrs = dict(trace.attrs)
    return merged


def label(
    frame: pd.DataFrame,
    *,
    klass: str | None = None,
    priority: int | None = None,
    deadline_s: float | None = None,
    job_id: str | None = None,
    source: str = "trace",
) -> pd.DataFrame:
    """Label every request of `frame` (`trace gen` / `trace merge` options): its class, priority, job, and a
    deadline `deadline_s` after the first arrival (a job's submission). Options left None leave the columns as
    they are; a job or a deadline needs the batch class."""
    out = frame.copy()
    if klass is not None:
        if klass not in KLASSES:
            raise FleetsimError(f"{source}: --klass must be one of {', '.join(KLASSES)} (got {klass!r})")
        out["klass"] = klass
    is_batch = "klass" in out.columns and bool((out["klass"] == "batch").all())
    if (job_id is not None or deadline_s is not None) and not is_batch:
        raise FleetsimError(f"{source}: --job-id and --deadline-s label batch jobs: give --klass batch too")
    if priority is not None:
        low, high = PRIORITY_RANGE
        if not low <= priority <= high:
            raise FleetsimError(f"{source}: --priority must be within {low:,}..{high:,} (got {priority})")
        out["priority"] = np.full(len(out), priority, dtype=np.int64)
    if job_id is not None:
        if not job_id.strip():
            raise FleetsimError(f"{source}: --job-id must not be empty")
        out["job_id"] = job_id
    if deadline_s is not None:
        if not (0 < deadline_s <= MAX_TIME_S):  # (as an arrival is: 1e300 was a 300-digit CSV field)
            raise FleetsimError(
                f"{source}: --deadline-s must be a number of seconds > 0 and <= {MAX_TIME_S:g} (got {deadline_s:g})"
            )
        out["deadline_at_s"] = float(out["arrival_at_s"].iloc[0]) + deadline_s
    return out
