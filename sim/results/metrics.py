"""Run summary with `vllm bench serve`'s keys and definitions (pure; numpy on the records).

- TTFT = first token - arrival; E2EL = completion - arrival, over completed requests.
- TPOT = (completion - first token) / (output tokens - 1), over completed requests with > 1 output
  token (vLLM's "excl. 1st token"); a 1-token request counts as TPOT 0 for goodput, as in vLLM.
- ITL = every inter-token gap, pooled over all requests and tokens. Computed exactly from the run's
  compact gap record (`GapDistribution`): single gaps plus weighted linear pieces of decode-run step times;
  order statistics from the gaps sorted once (up to GATHER_LIMIT values), else by bisection on the value, so
  percentiles use numpy's linear interpolation between the exact neighbouring gaps.
- duration = the last completion (the trace starts at 0); throughputs divide by it.
- request_goodput = completed requests meeting every given SLO, per second (vLLM's --goodput).
- slo_attainment = the share of all requests (rejected and unfinished ones count as misses) meeting every SLO.
Times in the summary are milliseconds, as vLLM prints them. Reads records only (the `requests`
frame and the gap record), never engine or fleet objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sim.states import RequestStatus

PERCENTILES = (90, 99)


@dataclass(frozen=True)
class GapDistribution:
    """Exact multiset of gaps: weighted singles plus pieces a + b*j for j in [j0, j1), each with a weight."""

    singles: np.ndarray  # sorted
    a: np.ndarray
    b: np.ndarray
    j0: np.ndarray
    j1: np.ndarray
    w: np.ndarray
    cum: np.ndarray | None = None  # the singles' weights as a running sum: gaps <= singles[i] is cum[i] (None: each 1)
    # every gap value sorted, with the running sum of their weights (`_gathered`): built on the first order statistic
    # of a record of at most GATHER_LIMIT values; False for a larger one (bisection)
    _sorted: tuple[np.ndarray, np.ndarray] | bool | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cum is None:
            object.__setattr__(self, "cum", np.arange(1, self.singles.size + 1, dtype=np.float64))

    @classmethod
    def weighted(
        cls, singles: np.ndarray, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray, w: np.ndarray, sw: np.ndarray
    ) -> GapDistribution:
        """From the singles' weights `sw`, float64 (kept as their running sum: exact, integers < 2**53)."""
        return cls(singles, a, b, j0, j1, w, np.cumsum(sw))

    @property
    def _cum(self) -> np.ndarray:
        assert self.cum is not None
        return self.cum

    def _weights(self, lo: int, hi: int) -> np.ndarray:
        """The singles' weights in [lo, hi)."""
        cum = self._cum
        return np.diff(cum[lo:hi], prepend=cum[lo - 1] if lo else 0.0)

    def _piece_extent(self, part: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest gap of the pieces `part`."""
        a, b = self.a[part], self.b[part]
        first, last = a + b * self.j0[part], a + b * (self.j1[part] - 1)
        return np.minimum(first, last), np.maximum(first, last)

    @classmethod
    def from_lists(
        cls,
        singles: list[float],
        pieces: list[tuple[float, float, int, int, int]],
        grouped: list[tuple[float, int]] | None = None,
    ) -> GapDistribution:
        """From lists: single gaps, pieces (a, b, j0, j1, weight) and weighted single gaps (value, weight)."""
        p = np.array(pieces, dtype=np.float64).reshape(-1, 5)
        g = np.array(grouped or [], dtype=np.float64).reshape(-1, 2)
        return cls.from_arrays(
            np.asarray(singles, dtype=np.float64), g[:, 0], g[:, 1], p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
        )

    @classmethod
    def from_arrays(
        cls,
        singles: np.ndarray,
        grouped_v: np.ndarray,
        grouped_w: np.ndarray,
        piece_a: np.ndarray,
        piece_b: np.ndarray,
        piece_j0: np.ndarray,
        piece_j1: np.ndarray,
        piece_w: np.ndarray,
    ) -> GapDistribution:
        """From the engine's record (`sim.run.engine.records.ItlLog.arrays()`)."""
        values = np.concatenate((singles, grouped_v))
        order = np.argsort(values)  # (ties: equal values, any order reads the same)
        values = values[order]
        weights = np.concatenate((np.ones(singles.size), grouped_w))[order]  # float64
        del order
        return cls.weighted(values, piece_a, piece_b, piece_j0, piece_j1, piece_w, weights)  # the pieces as given: no copy

    # As a table (the run folder's itl.parquet): a single gap g with weight w is the row (a=g, b=0, j0=0,
    # j1=1, weight=w); pieces always have j0 >= 1 (a run's first gap is a single), so rows split back exactly.
    def to_frame(self) -> pd.DataFrame:
        return pd.concat(list(self.frame_chunks()), ignore_index=True)

    def frame_chunks(self, rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """`to_frame()` in pieces of at most `rows` rows (a long run has tens of millions of gaps)."""
        for lo in range(0, self.singles.size, rows):
            part = self.singles[lo : lo + rows]
            n = part.size
            yield pd.DataFrame(
                {
                    "a": part,
                    "b": np.zeros(n),
                    "j0": np.zeros(n, np.int64),
                    "j1": np.ones(n, np.int64),
                    "weight": self._weights(lo, lo + rows).astype(np.int64),
                }
            )
        for lo in range(0, max(self.a.size, 0 if self.singles.size else 1), rows):
            rng = slice(lo, lo + rows)
            yield pd.DataFrame(
                {
                    "a": self.a[rng],
                    "b": self.b[rng],
                    "j0": self.j0[rng].astype(np.int64),
                    "j1": self.j1[rng].astype(np.int64),
                    "weight": self.w[rng].astype(np.int64),
                }
            )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> GapDistribution:
        single = frame["j0"].to_numpy() == 0
        col = {c: frame[c].to_numpy(dtype=np.float64) for c in ("a", "b", "j0", "j1", "weight")}
        p = ~single
        order = np.argsort(col["a"][single], kind="stable")
        return cls.weighted(
            col["a"][single][order],
            col["a"][p],
            col["b"][p],
            col["j0"][p],
            col["j1"][p],
            col["weight"][p],
            col["weight"][single][order],
        )

    @property
    def count(self) -> int:
        singles = float(self._cum[-1]) if self.singles.size else 0.0
        return int(singles + np.sum(self.w * (self.j1 - self.j0)))

    def _sums(self, shift: float = 0.0) -> tuple[float, float]:
        """Sum of (gap - shift) and of its square, in closed form over the pieces."""
        total = squares = 0.0
        for lo in range(0, self.singles.size, _BLOCK):  # a block at a time: bounded temporaries
            x, sw = self.singles[lo : lo + _BLOCK] - shift, self._weights(lo, lo + _BLOCK)
            total += float(np.sum(sw * x))
            squares += float(np.sum(sw * x**2))
        for lo in range(0, self.a.size, _BLOCK):
            part = slice(lo, lo + _BLOCK)
            j0, j1, w = (np.asarray(v[part], dtype=np.float64) for v in (self.j0, self.j1, self.w))  # (the engine's are int64)
            a, b = self.a[part] - shift, self.b[part]
            n = j1 - j0
            s1 = (j1 * (j1 - 1) - j0 * (j0 - 1)) / 2  # sum of j
            s2 = ((j1 - 1) * j1 * (2 * j1 - 1) - (j0 - 1) * j0 * (2 * j0 - 1)) / 6  # sum of j^2
            total += float(np.sum(w * (n * a + b * s1)))
            squares += float(np.sum(w * (n * a**2 + 2 * a * b * s1 + b**2 * s2)))
        return total, squares

    def mean(self) -> float:
        return self._sums()[0] / self.count

    def std(self) -> float:
        """Population standard deviation: the squares are summed about the mean (where they do not cancel, and the
        sum of the deviations is zero to rounding)."""
        n = self.count
        squares = self._sums(shift=self.mean())[1]
        return math.sqrt(squares / n)

    def _count_le(self, v: float) -> int:
        count = self._singles_le(v)
        for lo in range(0, self.a.size, _BLOCK):
            hi = lo + _BLOCK
            count += _pieces_le(v, self.a[lo:hi], self.b[lo:hi], self.j0[lo:hi], self.j1[lo:hi], self.w[lo:hi])
        return count

    def _singles_le(self, v: float) -> int:
        i = int(np.searchsorted(self.singles, v, side="right"))
        return int(self._cum[i - 1]) if i else 0

    def _bounds(self) -> tuple[float, float]:
        lo, hi = [], []
        if self.singles.size:
            lo.append(self.singles[0])
            hi.append(self.singles[-1])
        for start in range(0, self.a.size, _BLOCK):
            low, high = self._piece_extent(slice(start, start + _BLOCK))
            lo.append(low.min())
            hi.append(high.max())
        return float(min(lo)), float(max(hi))

    def _gathered(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(values, running weights): every gap of a record of at most GATHER_LIMIT values (singles plus the pieces'
        steps, before weights), each piece's computed as a + b*j, sorted; None for a larger record."""
        if self._sorted is None:
            steps = (self.j1 - self.j0).astype(np.int64)
            gathered: tuple[np.ndarray, np.ndarray] | bool = False
            if self.singles.size + int(steps.sum()) <= GATHER_LIMIT:
                idx = np.repeat(np.arange(self.a.size), steps)
                first = np.cumsum(steps) - steps
                j = self.j0[idx] + (np.arange(idx.size) - first[idx])
                values = np.concatenate((self.singles, self.a[idx] + self.b[idx] * j))
                weights = np.concatenate((self._weights(0, self.singles.size), np.asarray(self.w[idx], dtype=np.float64)))
                order = np.argsort(values, kind="stable")
                gathered = (values[order], np.cumsum(weights[order]))
            object.__setattr__(self, "_sorted", gathered)
        return self._sorted if isinstance(self._sorted, tuple) else None

    def order_statistic(self, k: int) -> float:
        """The k-th smallest gap (0-based). A record of at most GATHER_LIMIT values is sorted whole once
        (`_gathered`: the k-th is where the running weight first reaches k + 1). A larger one bisects on the
        value: each round first sets aside the pieces
        that lie wholly at or below the bracket (all their gaps count) or wholly above it (none do), so a
        round costs O(pieces that straddle the bracket), which shrink with it, not O(all pieces); pieces
        are handled by index, a block at a time, so memory stays O(block) beyond the record itself."""
        gathered = self._gathered()
        if gathered is not None:
            values, cum = gathered
            return float(values[min(int(np.searchsorted(cum, k + 1)), values.size - 1)])
        lo, hi = self._bounds()
        if self._count_le(lo) >= k + 1:
            return lo
        active = np.arange(self.a.size)
        below = 0  # gaps of the pieces set aside as wholly <= lo
        for _ in range(200):  # invariant: count_le(lo) < k + 1 <= count_le(hi)
            mid = (lo + hi) / 2
            if mid <= lo or mid >= hi:
                break
            keep = []
            for part in _blocks(active):
                low, high = self._piece_extent(part)
                under = high <= lo
                if under.any():
                    below += int(np.sum(self.w[part[under]] * (self.j1[part[under]] - self.j0[part[under]])))
                keep.append(part[~(under | (low > hi))])
            active = np.concatenate(keep) if keep else active
            count = self._singles_le(mid) + below
            for part in _blocks(active):
                count += _pieces_le(mid, self.a[part], self.b[part], self.j0[part], self.j1[part], self.w[part])
            if count >= k + 1:
                hi = mid
            else:
                lo = mid
        return hi

    def percentile(self, q: float) -> float:
        """numpy.percentile(all_gaps, q) with linear interpolation."""
        h = (self.count - 1) * q / 100
        k = math.floor(h)
        lower = self.order_statistic(k)
        if h == k:
            return lower
        # the next gap is the same value when at least k + 2 gaps are <= it (weighted gaps: usually)
        if self._gathered() is not None:
            upper = self.order_statistic(k + 1)
        else:
            upper = lower if self._count_le(lower) >= k + 2 else self.order_statistic(k + 1)
        return lower + (h - k) * (upper - lower)


GATHER_LIMIT = 1 << 21  # gap values (before weights) a record's order statistics sort whole (32 MiB with weights)
_BLOCK = 1 << 18  # pieces evaluated at a time (bounds the temporaries of a pass to a few MB)


def _blocks(index: np.ndarray) -> Iterator[np.ndarray]:
    for lo in range(0, index.size, _BLOCK):
        yield index[lo : lo + _BLOCK]


def _pieces_le(v: float, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray, w: np.ndarray) -> int:
    """Gaps <= v among pieces a + b*j, j in [j0, j1), weighted by w."""
    if not a.size:
        return 0
    n = j1 - j0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (v - a) / b
        up = np.clip(np.floor(x) - j0 + 1, 0, n)  # b > 0: j <= x
        down = np.clip(j1 - np.ceil(x), 0, n)  # b < 0: j >= x
    flat = np.where(a <= v, n, 0)
    k = np.where(b > 0, up, np.where(b < 0, down, flat))
    return int(np.sum(w * k))


def _stats(prefix: str, values_s: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    ms = np.multiply(values_s, 1000, out=values_s)  # in place: the caller's array is a temporary
    out: dict[str, float | None] = {}
    empty = ms.size == 0
    out[f"mean_{prefix}_ms"] = None if empty else float(np.mean(ms))
    out[f"median_{prefix}_ms"] = None if empty else float(np.median(ms))
    out[f"std_{prefix}_ms"] = None if empty else float(np.std(ms))
    for p in percentiles:
        out[f"p{p:g}_{prefix}_ms"] = None if empty else float(np.percentile(ms, p))
    return out


def _gap_stats(gaps: GapDistribution, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    keys = ["mean", "median", "std", *(f"p{p:g}" for p in percentiles)]
    if gaps.count == 0:
        return {f"{k}_itl_ms": None for k in keys}
    values = [gaps.mean(), gaps.percentile(50), gaps.std(), *(gaps.percentile(p) for p in percentiles)]
    return {f"{k}_itl_ms": v * 1000 for k, v in zip(keys, values, strict=True)}


CLASS_PERCENTILES = (90.0, 99.0)


def _meets_slo(slo: dict[str, float], *, ttft: np.ndarray, tpot: np.ndarray, multi: np.ndarray, e2el: np.ndarray) -> np.ndarray:
    """Which completed requests meet every SLO given (ms); `tpot` holds only the `multi`-token ones (a 1-token
    request has TPOT 0)."""
    checks = [np.ones(ttft.size, dtype=bool)]
    if "ttft" in slo:
        checks.append(ttft * 1000 <= slo["ttft"])
    if "tpot" in slo:
        all_tpot = np.zeros(ttft.size)
        all_tpot[multi] = tpot
        checks.append(all_tpot * 1000 <= slo["tpot"])
    if "e2el" in slo:
        checks.append(e2el * 1000 <= slo["e2el"])
    good: np.ndarray = np.logical_and.reduce(checks)
    return good


def class_summary(requests: pd.DataFrame, *, slo: dict[str, float] | None = None) -> dict[str, dict[str, Any]] | None:
    """Per request class (the trace's `klass`: interactive, batch), the latency summary of its requests:
    counts, TTFT, TPOT and E2E latency (mean, median, p90, p99; ms) and, with an SLO, goodput and attainment. Each
    class's own duration is its first arrival to its last completion. Inter-token gaps are pooled for the
    whole run (the compact gap record keeps no request identity), so they are not split. None when every request is
    interactive."""
    column = requests["klass"]
    if isinstance(column.dtype, pd.CategoricalDtype):  # (the records' own: read its codes, not a string per request)
        codes = np.unique(column.cat.codes.to_numpy())
        if {column.cat.categories[c] for c in codes.tolist() if c >= 0} <= {"interactive"}:
            return None
    klass = column.astype("string").fillna("interactive").to_numpy()
    if not (klass != "interactive").any():
        return None
    out: dict[str, dict[str, Any]] = {}
    status = status_codes(requests)
    for name in sorted(set(klass)):
        mine = klass == name
        done = mine & (status == RequestStatus.COMPLETED)
        arrival = requests["arrival_at_s"].to_numpy()[done]
        first = requests["first_token_at_s"].to_numpy()[done]
        completed = requests["completed_at_s"].to_numpy()[done]
        out_tokens = requests["output_tokens"].to_numpy()[done]
        n = int(done.sum())
        start = float(requests["arrival_at_s"].to_numpy()[mine].min())
        duration = float(completed.max()) - start if n else 0.0
        multi = out_tokens > 1
        ttft, e2el = first - arrival, completed - arrival
        tpot = (completed[multi] - first[multi]) / (out_tokens[multi] - 1)
        rec: dict[str, Any] = {
            "requests": int(mine.sum()),
            "completed": n,
            "rejected": int(np.sum(mine & (status == RequestStatus.REJECTED))),
            "duration": duration,
            "total_output_tokens": int(out_tokens.sum()),
            "request_throughput": n / duration if duration else 0.0,
            "request_goodput": None,
            "slo_attainment": None,
        }
        if slo:
            good = _meets_slo(slo, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el)
            rec["request_goodput"] = int(good.sum()) / duration if duration else 0.0
            rec["slo_attainment"] = int(good.sum()) / int(mine.sum())
        for prefix, values in (("ttft", ttft), ("tpot", tpot), ("e2el", e2el)):
            stats = _stats(prefix, values.astype(np.float64, copy=True), CLASS_PERCENTILES)
            rec |= {k: v for k, v in stats.items() if not k.startswith("std_")}
        out[name] = rec
    return out


def job_summary(requests: pd.DataFrame) -> dict[str, dict[str, Any]] | None:
    """Per batch job (`job_id`): its requests, when it was submitted (first arrival), its deadline (the latest of
    its requests'), when it finished (its last completion; null while any request is unfinished or rejected),
    whether it met the deadline (every request completed by then), how late it was, and its tokens. None without
    jobs."""
    if not requests["job_id"].notna().any():  # (before the string copy: most runs have no jobs)
        return None
    job = requests["job_id"].astype("string")
    status = status_codes(requests)
    out: dict[str, dict[str, Any]] = {}
    arrival = requests["arrival_at_s"].to_numpy()
    completed_at = requests["completed_at_s"].to_numpy()
    deadline_col = requests["deadline_at_s"].to_numpy(dtype=np.float64)
    tokens = requests["prompt_tokens"].to_numpy() + requests["output_tokens"].to_numpy()
    names = job.to_numpy(dtype=object, na_value=None)
    for name in sorted({n for n in names if n is not None}):
        mine = names == name
        done = mine & (status == RequestStatus.COMPLETED)
        n, n_done = int(mine.sum()), int(done.sum())
        finished = n_done == n
        last = float(completed_at[done].max()) if n_done else math.nan
        deadline = float(np.nanmax(deadline_col[mine])) if np.isfinite(deadline_col[mine]).any() else None
        submitted = float(arrival[mine].min())
        rec: dict[str, Any] = {
            "requests": n,
            "completed": n_done,
            "rejected": int(np.sum(mine & (status == RequestStatus.REJECTED))),
            "submitted_at_s": submitted,
            "deadline_at_s": deadline,
            "completed_at_s": last if finished else None,
            "makespan_s": last - submitted if finished else None,
            "deadline_met": bool(finished and deadline is not None and last <= deadline) if deadline is not None else None,
            "late_s": max(0.0, last - deadline) if finished and deadline is not None else None,
            "on_time_share": float(np.sum(done & (completed_at <= (deadline if deadline is not None else math.inf))) / n),
            "tokens": int(tokens[done].sum()),
        }
        out[name] = rec
    return out


def transfer_summary(requests: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any] | None:
    """A disaggregated run's KV transfers, over the requests that made one: the wait for a decode replica with
    room (first token -> transfer start: backpressure) and the transfer itself (start -> end: the link's queue
    and wire time), mean / median / p99 in ms. None without a link (a colocated fleet)."""
    if meta.get("link") is None:
        return None
    start = requests["transfer_start_at_s"].to_numpy(dtype=np.float64)
    end = requests["transfer_end_at_s"].to_numpy(dtype=np.float64)
    first = requests["first_token_at_s"].to_numpy(dtype=np.float64)
    done = ~np.isnan(end)
    out: dict[str, Any] = {"kv_transfers": int(done.sum())}
    for prefix, values in (("transfer_wait", start[done] - first[done]), ("transfer", end[done] - start[done])):
        stats = _stats(prefix, values, CLASS_PERCENTILES)
        out |= {k: v for k, v in stats.items() if not k.startswith(("std_", "p90_"))}
    return out


def prefix_summary(requests: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Prefix caching: prompt tokens found cached at each request's first admission, over the prompt tokens of the
    requests admitted (`prefix_hit_rate_tokens`), hash blocks hit over hash blocks looked up (`..._blocks`), and the
    prompt tokens never computed, recomputes included (`prefill_tokens_saved`). None without prefix caching."""
    if meta.get("prefix_cache") is None:
        return None
    cached = requests["cached_tokens"].to_numpy(dtype=np.float64)
    admitted = ~np.isnan(cached)
    prompt = requests["prompt_tokens"].to_numpy()[admitted]
    blocks = requests["prefix_blocks"].to_numpy(dtype=np.int64, na_value=0)[admitted]
    hit = cached[admitted]
    t = meta["prefix_cache"]["hash_block_tokens"]
    return {
        "prefix_cached_tokens": int(hit.sum()),
        "prefix_hit_rate_tokens": float(hit.sum() / prompt.sum()) if prompt.sum() else None,
        "prefix_hit_rate_blocks": float((hit / t).sum() / blocks.sum()) if blocks.sum() else None,
        "prefill_tokens_saved": int(meta["prefix_cache"]["prefill_tokens_saved"]),
    }


def status_codes(requests: pd.DataFrame) -> np.ndarray:
    """The `status` column as `RequestStatus` codes (it is stored as a categorical of their labels)."""
    return np.asarray(requests["status"].cat.codes.to_numpy())


def summarize(
    requests: pd.DataFrame,
    itl: GapDistribution,
    *,
    slo: dict[str, float] | None = None,
    percentiles: tuple[float, ...] = PERCENTILES,
) -> dict[str, Any]:
    """vLLM's metrics over the `requests` records and the gap record; `slo` in ms by metric."""
    status = status_codes(requests)
    done = status == RequestStatus.COMPLETED
    col = {c: requests[c].to_numpy() for c in ("arrival_at_s", "first_token_at_s", "completed_at_s")}
    arrival, first, completed = col["arrival_at_s"][done], col["first_token_at_s"][done], col["completed_at_s"][done]
    out_tokens = requests["output_tokens"].to_numpy()[done]
    in_tokens = requests["prompt_tokens"].to_numpy()[done]
    n = int(done.sum())
    duration = float(completed.max()) if n else 0.0
    ttft, e2el = first - arrival, completed - arrival
    multi = out_tokens > 1
    tpot = (completed[multi] - first[multi]) / (out_tokens[multi] - 1)
    summary: dict[str, Any] = {
        "completed": n,
        "rejected": int(np.sum(status == RequestStatus.REJECTED)),
        "in_flight": int(np.sum(~done & (status != RequestStatus.REJECTED))),
        "duration": duration,
        "total_input_tokens": int(in_tokens.sum()),
        "total_output_tokens": int(out_tokens.sum()),
        "request_throughput": n / duration if duration else 0.0,
        "output_throughput": float(out_tokens.sum()) / duration if duration else 0.0,
        "total_token_throughput": float(in_tokens.sum() + out_tokens.sum()) / duration if duration else 0.0,
        "request_goodput": None,
        "slo_attainment": None,
        "n_preemptions": int(requests["n_preemptions"].sum()),
    }
    if slo:
        good = _meets_slo(slo, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el)
        summary["request_goodput"] = int(good.sum()) / duration if duration else 0.0
        summary["slo_attainment"] = int(good.sum()) / len(requests) if len(requests) else None
    del arrival, first, completed, out_tokens, in_tokens, multi
    summary |= _stats("ttft", ttft, percentiles)
    summary |= _stats("tpot", tpot, percentiles)
    del ttft, tpot
    summary |= _gap_stats(itl, percentiles)
    summary |= _stats("e2el", e2el, percentiles)
    return summary
