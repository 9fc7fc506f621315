"""A run folder summarized in passes over its files: memory bounded by a row group, not by the run.

`StoredResult.open(run_dir)` reads the small records (replicas, timeline, meta.json) whole and leaves the requests
and the gap record in requests.parquet and itl.parquet; its `summary()` is `SimResult.summary()`'s, the request and
gap figures computed a row group at a time (`sim.results.streamed`: exact percentiles by radix selection). What a
stored run writes (`sim.run.simulate.simulate_stored`) is summarized so; `SimResult.load(run_dir).summary()` gives
the same figures (means and standard deviations to the last bits: they are summed a chunk at a time).

Per-class and per-job figures (batch classes, batch jobs) read their columns whole: a run with them is held in
memory for that part.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim.errors import FleetsimError
from sim.results.metrics import CLASS_PERCENTILES, PERCENTILES, _meets_slo, class_summary, job_summary
from sim.results.records_check import check_replicas, check_timeline
from sim.results.result import RECORD_FILES, SimResult
from sim.results.run_meta import check_meta
from sim.results.streamed import gap_stats, value_stats
from sim.schema import STATUS_LABELS, RequestStatus

ROWS = 1 << 18  # rows read at a time (a pass's temporaries are a few times a row group's columns)
COMPLETED, REJECTED = int(RequestStatus.COMPLETED), int(RequestStatus.REJECTED)


def _status(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The status column of a row group as `RequestStatus` codes (it is stored as labels)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        labels = column.dictionary.to_pylist()
        lookup = np.array([STATUS_LABELS.index(str(label)) for label in labels], dtype=np.int8)
        codes: np.ndarray = lookup[column.indices.to_numpy(zero_copy_only=False)]
        return codes
    return np.array([STATUS_LABELS.index(str(v)) for v in column.to_pylist()], dtype=np.int8)


def _row_groups(path: Path, columns: list[str] | None) -> Iterator[pa.Table]:
    """A Parquet file's `columns`, at most ROWS rows at a time (a row group, or a slice of one; `iter_batches` keeps
    what it has read until it is done, so a pass over a long file would hold all of it)."""
    f = pq.ParquetFile(path)
    for i in range(f.metadata.num_row_groups):
        group = f.read_row_group(i, columns=columns)
        for lo in range(0, group.num_rows, ROWS):
            yield group.slice(lo, ROWS).combine_chunks()


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):  # (a categorical: its labels)
        column = column.dictionary_decode()
    return np.asarray(column.to_numpy(zero_copy_only=False))


@dataclass
class StoredResult(SimResult):
    """A run folder's result with its requests and gaps left in their files (`requests` is empty: read
    requests.parquet a row group at a time, as `chunks` does)."""

    folder: Path = Path(".")

    @classmethod
    def open(cls, run_dir: str | Path) -> StoredResult:
        run_dir = Path(run_dir)
        missing = [name for name in RECORD_FILES if not (run_dir / name).is_file()]
        if missing:
            raise FleetsimError(f"{run_dir}: not a complete run folder (missing {', '.join(missing)})")
        meta = check_meta(json.loads((run_dir / "meta.json").read_text()), run_dir)
        replicas = pd.read_parquet(run_dir / "replicas.parquet")
        check_replicas(run_dir / "replicas.parquet", replicas)
        timeline = pd.read_parquet(run_dir / "timeline.parquet")
        check_timeline(run_dir / "timeline.parquet", timeline)
        return cls(requests=pd.DataFrame(), replicas=replicas, timeline=timeline, itl=None, meta=meta, folder=run_dir)  # type: ignore[arg-type]

    def chunks(self, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """requests.parquet's `columns`, ROWS rows at a time, as numpy arrays (`status` as codes)."""
        for batch in _row_groups(self.folder / "requests.parquet", columns):
            yield {name: _status(batch.column(name)) if name == "status" else _numpy(batch.column(name)) for name in columns}

    def _gaps(self) -> Iterator[pd.DataFrame]:
        for batch in _row_groups(self.folder / "itl.parquet", None):
            yield batch.to_pandas()

    def records_summary(self, slo: dict[str, float] | None) -> dict[str, Any]:
        return {
            "latency": self._latency(slo),
            "by_class": self._whole(
                class_summary,
                ["klass", "status", "arrival_at_s", "first_token_at_s", "completed_at_s", "output_tokens"],
                "klass",
                slo=slo,
            ),
            "transfers": self._transfers(),
            "prefix": self._prefix(),
            "by_job": self._whole(
                job_summary,
                ["job_id", "status", "arrival_at_s", "completed_at_s", "deadline_at_s", "prompt_tokens", "output_tokens"],
                "job_id",
            ),
            "batch_tokens": self._batch_tokens(),
        }

    def _latency(self, slo: dict[str, float] | None) -> dict[str, Any]:
        """`metrics.summarize`, in passes."""
        cols = ["status", "arrival_at_s", "first_token_at_s", "completed_at_s", "prompt_tokens", "output_tokens", "n_preemptions"]
        n = done_n = rejected = in_tokens = out_tokens = preemptions = good = 0
        duration = 0.0
        for c in self.chunks(cols):
            done = c["status"] == COMPLETED
            n += done.size
            done_n += int(done.sum())
            rejected += int(np.sum(c["status"] == REJECTED))
            in_tokens += int(c["prompt_tokens"][done].sum())
            out_tokens += int(c["output_tokens"][done].sum())
            preemptions += int(c["n_preemptions"].sum())
            if done.any():
                duration = max(duration, float(c["completed_at_s"][done].max()))
            if slo:
                ttft, tpot, multi, e2el = _latencies(c, done)
                good += int(_meets_slo(slo, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el).sum())
        summary: dict[str, Any] = {
            "completed": done_n,
            "rejected": rejected,
            "in_flight": n - done_n - rejected,
            "duration": duration,
            "total_input_tokens": in_tokens,
            "total_output_tokens": out_tokens,
            "request_throughput": done_n / duration if duration else 0.0,
            "output_throughput": float(out_tokens) / duration if duration else 0.0,
            "total_token_throughput": float(in_tokens + out_tokens) / duration if duration else 0.0,
            "request_goodput": good / duration if slo and duration else (0.0 if slo else None),
            "slo_attainment": (good / n if n else None) if slo else None,
            "n_preemptions": preemptions,
        }
        for k, name in enumerate(("ttft", "tpot", "e2el")):
            summary |= value_stats(name, self._latency_values(k), PERCENTILES)
            if name == "tpot":
                summary |= gap_stats(self._gaps, PERCENTILES)
        return summary

    def _latency_values(self, k: int) -> Any:
        cols = ["status", "arrival_at_s", "first_token_at_s", "completed_at_s", "output_tokens"]

        def values() -> Iterator[np.ndarray]:
            for c in self.chunks(cols):
                ttft, tpot, _, e2el = _latencies(c, c["status"] == COMPLETED)
                yield np.multiply((ttft, tpot, e2el)[k], 1000)

        return values

    def _values(self, column: str) -> set[str | None]:
        """The distinct values of a (categorical or string) column of requests.parquet, read a row group at a time."""
        out: set[str | None] = set()
        for batch in _row_groups(self.folder / "requests.parquet", [column]):
            out |= set(pc.unique(batch.column(column)).to_pylist())
        return out

    def _whole(self, summary: Any, columns: list[str], key: str, **kw: Any) -> dict[str, Any] | None:
        """A per-class or per-job summary: None when no request has a class other than interactive (a job); else
        its columns read whole (see the module docstring)."""
        values = self._values(key)
        if not (values - {None, "interactive"} if key == "klass" else values - {None}):
            return None
        frame = pd.read_parquet(self.folder / "requests.parquet", columns=columns)
        frame["status"] = pd.Categorical(frame["status"].astype(str), categories=STATUS_LABELS)
        result: dict[str, Any] | None = summary(frame, **kw)
        return result

    def _transfers(self) -> dict[str, Any] | None:
        """`metrics.transfer_summary`, in passes."""
        if self.meta.get("link") is None:
            return None
        cols = ["first_token_at_s", "transfer_start_at_s", "transfer_end_at_s"]
        count = sum(int(np.sum(~np.isnan(c["transfer_end_at_s"]))) for c in self.chunks(cols))
        out: dict[str, Any] = {"kv_transfers": count}
        for k, prefix in enumerate(("transfer_wait", "transfer")):

            def values(k: int = k) -> Iterator[np.ndarray]:
                for c in self.chunks(cols):
                    done = ~np.isnan(c["transfer_end_at_s"])
                    start, end, first = (c[n][done] for n in ("transfer_start_at_s", "transfer_end_at_s", "first_token_at_s"))
                    yield np.multiply(start - first if k == 0 else end - start, 1000)

            stats = value_stats(prefix, values, CLASS_PERCENTILES)
            out |= {key: v for key, v in stats.items() if not key.startswith(("std_", "p90_"))}
        return out

    def _prefix(self) -> dict[str, Any] | None:
        """`metrics.prefix_summary`, in passes."""
        cache = self.meta.get("prefix_cache")
        if cache is None:
            return None
        hit = prompt = 0.0
        blocks = 0
        ratio = 0.0
        t = cache["hash_block_tokens"]
        for c in self.chunks(["cached_tokens", "prompt_tokens", "prefix_blocks"]):
            cached = c["cached_tokens"].astype(np.float64)
            admitted = ~np.isnan(cached)
            hit += float(cached[admitted].sum())
            prompt += float(c["prompt_tokens"][admitted].sum())
            blocks += int(np.nan_to_num(c["prefix_blocks"].astype(np.float64))[admitted].sum())
            ratio += float((cached[admitted] / t).sum())
        return {
            "prefix_cached_tokens": int(hit),
            "prefix_hit_rate_tokens": hit / prompt if prompt else None,
            "prefix_hit_rate_blocks": ratio / blocks if blocks else None,
            "prefill_tokens_saved": int(cache["prefill_tokens_saved"]),
        }

    def _batch_tokens(self) -> tuple[int, int] | None:
        if "batch" not in self._values("klass"):
            return None
        prompt = output = 0
        any_batch = False
        for c in self.chunks(["klass", "status", "prompt_tokens", "output_tokens"]):
            batch = pd.Series(c["klass"], dtype="string").to_numpy() == "batch"
            any_batch |= bool(batch.any())
            done = batch & (c["status"] == COMPLETED)
            prompt += int(c["prompt_tokens"][done].sum())
            output += int(c["output_tokens"][done].sum())
        return (prompt, output) if any_batch else None


def _latencies(c: dict[str, np.ndarray], done: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A row group's TTFT, TPOT (of its requests of more than one output token), which those are, E2E latency; over
    its completed requests, in seconds (as `metrics.summarize` computes them)."""
    arrival, first, completed = c["arrival_at_s"][done], c["first_token_at_s"][done], c["completed_at_s"][done]
    out = c["output_tokens"][done]
    multi = out > 1
    tpot = (completed[multi] - first[multi]) / (out[multi] - 1)
    return first - arrival, tpot, multi, completed - arrival
