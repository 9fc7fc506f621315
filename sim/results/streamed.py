"""Exact statistics of more values than memory holds, in a bounded number of passes over them in chunks (a stored
run's records: `sim.results.stored`).

Order statistics by radix selection on the values' bit patterns: each float64 maps to an unsigned 64-bit key in
the same order; a pass counts the values of a key range in 2**BITS buckets, the bucket holding the wanted rank
becomes the next range, and once a range holds at most LIMIT values they are gathered and the rank picked among
them (`np.partition`). At most four counting passes (64 bits, BITS at a time) and one gathering pass; most
statistics need one of each. Percentiles, the median, the mean and the standard deviation follow numpy's
definitions (`np.percentile`'s linear interpolation, computed as numpy computes it), so a percentile is the same
number `metrics.summarize` gives for the same records; a mean or standard deviation is summed a chunk at a time
and may differ from numpy's pairwise sum in the last bits.

The gap record's pieces (a + b*j for j in [j0, j1), each with a weight: `metrics.GapDistribution`) are selected
the same way: a counting pass splits each piece among the buckets it spans, and the pieces that reach into the
wanted bucket are gathered into a `GapDistribution` that picks the rank among them. Its percentiles agree with
`GapDistribution.percentile`'s to the last bit or two: a gap a + b*j is computed in floating point, and one that
lies within a rounding of a bracket's end may be counted on either side of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from sim.results.metrics import GapDistribution

BITS = 20  # a counting pass splits a key range into 2**BITS buckets (8 MiB of counts)
LIMIT = 1 << 21  # values gathered into memory at most (16 MiB)
_TOP = np.uint64(1 << 63)

Values = Callable[[], Iterator[np.ndarray]]  # each call: a fresh pass over the values (float64), a chunk at a time
Pieces = Callable[[], Iterator[pd.DataFrame]]  # each call: a fresh pass over the gap record's rows (a, b, j0, j1, weight)


def keys(x: np.ndarray) -> np.ndarray:
    """float64 -> uint64 in the same order (negative values below positive ones)."""
    u = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    out: np.ndarray = np.where(u >= _TOP, ~u, u | _TOP)
    return out


def values_of(k: np.ndarray) -> np.ndarray:
    """The float64s of keys (`keys`' inverse)."""
    u = np.asarray(k, dtype=np.uint64)
    out: np.ndarray = np.where(u >= _TOP, u & ~_TOP, ~u).view(np.float64)
    return out


def value_of(key: int) -> float:
    return float(values_of(np.array([key & ((1 << 64) - 1)], dtype=np.uint64))[0])


def _shift(width: int) -> int:
    return max(0, (width - 1).bit_length() - BITS)


def _inside(k: np.ndarray, lo: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The keys of `k` in [lo, lo + width): a mask, and their offsets from lo."""
    offset = k - np.uint64(lo)  # (wraps below lo: then above any width < 2**64)
    mask = np.ones(k.size, dtype=bool) if width >= 1 << 64 else offset < np.uint64(width)
    return mask, offset


def order_statistics(values: Values, ranks: Iterable[int]) -> dict[int, float]:
    """The values' k-th smallest (0-based) for each k of `ranks` (each below the number of values)."""
    todo = {k: (0, 1 << 64, k) for k in set(ranks)}  # rank -> (key range start, width, rank within the range)
    known: dict[tuple[int, int], int] = {}  # a range's count, once counted
    out: dict[int, float] = {}
    while todo:
        ranges = {(lo, width) for lo, width, _ in todo.values()}
        gather = {r for r in ranges if known.get(r, LIMIT + 1) <= LIMIT}
        hist = {r: np.zeros(((r[1] - 1) >> _shift(r[1])) + 1, dtype=np.int64) for r in ranges - gather}
        got: dict[tuple[int, int], list[np.ndarray]] = {r: [] for r in gather}
        for chunk in values():
            k = keys(chunk)
            for lo, width in ranges:
                mask, offset = _inside(k, lo, width)
                if (lo, width) in gather:
                    got[(lo, width)].append(np.asarray(chunk, dtype=np.float64)[mask])
                else:
                    h = hist[(lo, width)]
                    h += np.bincount((offset[mask] >> np.uint64(_shift(width))).astype(np.int64), minlength=h.size)
        for rank, (lo, width, k_in) in list(todo.items()):
            if (lo, width) in gather:
                pool = np.concatenate(got[(lo, width)])
                out[rank] = float(np.partition(pool, k_in)[k_in])
                del todo[rank]
                continue
            sub, k_sub, bucket = _descend(hist[(lo, width)], lo, width, _shift(width), k_in)
            if sub[1] == 1:  # one key: the value
                out[rank] = value_of(sub[0])
                del todo[rank]
                continue
            known[sub] = int(hist[(lo, width)][bucket])
            todo[rank] = (*sub, k_sub)
    return out


def _descend(counts: np.ndarray, lo: int, width: int, shift: int, k_in: int) -> tuple[tuple[int, int], int, int]:
    """The bucket of a range's counts (2**shift keys a bucket) that holds its k_in-th smallest: the bucket's key range
    (start, width), the rank within it, and the bucket's number."""
    cum = np.cumsum(counts)
    bucket = min(int(np.searchsorted(cum, k_in, side="right")), cum.size - 1)
    before = int(cum[bucket - 1]) if bucket else 0
    start = lo + (bucket << shift)
    return (start, min(1 << shift, lo + width - start)), k_in - before, bucket


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation (`numpy.lib._function_base_impl._lerp`), for the same rounding."""
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


def _percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """np.percentile(x, q)'s (linear) neighbouring ranks and weight for n values."""
    quantile = np.true_divide(q, 100)
    virtual = (n - 1) * quantile  # (numpy's virtual index for its "linear" method)
    below = int(np.floor(virtual))
    below = min(max(below, 0), n - 1)
    return below, min(below + 1, n - 1), float(virtual - np.floor(virtual))


def value_stats(prefix: str, values: Values, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    """`metrics._stats` over values read in passes: mean, median, std and percentiles, in the same keys."""
    n, total = 0, 0.0
    for chunk in values():
        n += chunk.size
        total += float(np.sum(chunk))
    keys_out = [f"mean_{prefix}_ms", f"median_{prefix}_ms", f"std_{prefix}_ms", *(f"p{p:g}_{prefix}_ms" for p in percentiles)]
    if n == 0:
        return dict.fromkeys(keys_out)
    mean = total / n
    squares = sum(float(np.sum(np.abs(chunk - mean) ** 2)) for chunk in values())
    wanted = [_percentile_ranks(n, p) for p in percentiles]
    middle = [(n - 1) // 2, n // 2]
    picked = order_statistics(values, {r for lo, hi, _ in wanted for r in (lo, hi)} | set(middle))
    median = picked[middle[0]] if n % 2 else (picked[middle[0]] + picked[middle[1]]) / 2
    out: dict[str, float | None] = {keys_out[0]: mean, keys_out[1]: float(median), keys_out[2]: math.sqrt(squares / n)}
    for key, (lo, hi, t) in zip(keys_out[3:], wanted, strict=True):
        out[key] = _lerp(picked[lo], picked[hi], t)
    return out


# --- the gap record ------------------------------------------------------------------------------------------
def _piece_columns(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(frame[c].to_numpy(dtype=np.float64) for c in ("a", "b", "j0", "j1", "weight"))


def _extent(a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, last = a + b * j0, a + b * (j1 - 1)
    return np.minimum(first, last), np.maximum(first, last)


def _counts_below(v: np.ndarray, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray) -> np.ndarray:
    """Per piece, its gaps < v (elementwise: v one per piece), as `metrics._pieces_le` counts them (<= v's predecessor)."""
    v = np.nextafter(v, -np.inf)
    n = j1 - j0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (v - a) / b
        up = np.clip(np.floor(x) - j0 + 1, 0, n)
        down = np.clip(j1 - np.ceil(x), 0, n)
    out: np.ndarray = np.where(b > 0, up, np.where(b < 0, down, np.where(a <= v, n, 0)))
    return out


def gap_stats(pieces: Pieces, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    """`metrics._gap_stats` over a gap record read in passes: mean, median, std, percentiles of every gap (ms)."""
    keys_out = ["mean", "median", "std", *(f"p{p:g}" for p in percentiles)]
    count, total = 0, 0.0
    for frame in pieces():
        part = GapDistribution.from_frame(frame)
        count += part.count
        total += part._sums()[0]
    if count == 0:
        return {f"{k}_itl_ms": None for k in keys_out}
    mean = total / count
    squares = sum(GapDistribution.from_frame(frame)._sums(shift=mean)[1] for frame in pieces())
    quantiles = [50.0, *percentiles]
    ranks = [((count - 1) * q / 100, math.floor((count - 1) * q / 100)) for q in quantiles]
    picked = gap_order_statistics(pieces, {r for h, k in ranks for r in ((k,) if h == k else (k, k + 1))})
    values = [mean, math.nan, math.sqrt(squares / count)]
    for h, k in ranks:  # `GapDistribution.percentile`'s interpolation
        lower = picked[k]
        values.append(lower if h == k else lower + (h - k) * (picked[k + 1] - lower))
    values[1] = values.pop(3)  # the median
    return {f"{k}_itl_ms": v * 1000 for k, v in zip(keys_out, values, strict=True)}


PIECE_BITS = 12  # after the first pass, a counting pass over the gap record splits a range into 2**PIECE_BITS buckets
PIECE_LIMIT = 1 << 19  # pieces gathered into memory at most (20 MiB, and `GapDistribution`'s selection's temporaries)


def gap_order_statistics(pieces: Pieces, ranks: Iterable[int]) -> dict[int, float]:
    """The gap record's k-th smallest gap (0-based) for each k of `ranks`, as `GapDistribution.order_statistic` finds
    it. A counting pass splits each piece's gaps among the buckets of the range it reaches into (counted at the
    buckets' edges: its gaps below each edge, as `metrics._pieces_le` counts them); once the rank's bucket is reached
    by at most LIMIT pieces they are gathered, and the rank picked among them, offset by their gaps below it."""
    todo = {k: (0, 1 << 64, k) for k in set(ranks)}  # rank -> (key range start, width, rank within the range)
    reached: dict[tuple[int, int], int] = {}  # a range's pieces, once counted
    out: dict[int, float] = {}
    while todo:
        ranges = {(lo, width) for lo, width, _ in todo.values()}
        gather = {r for r in ranges if reached.get(r, PIECE_LIMIT + 1) <= PIECE_LIMIT}
        bits = {r: BITS if r[1] == 1 << 64 else PIECE_BITS for r in ranges - gather}
        hist = {
            r: (np.zeros(((r[1] - 1) >> _shift_by(r[1], bits[r])) + 1), np.zeros(((r[1] - 1) >> _shift_by(r[1], bits[r])) + 1))
            for r in bits
        }
        got: dict[tuple[int, int], list[tuple[np.ndarray, ...]]] = {r: [] for r in gather}
        offset = dict.fromkeys(gather, 0)  # the gathered pieces' gaps below the range
        for frame in pieces():
            cols = _piece_columns(frame)
            low, high = _extent(*cols[:4])
            kl, kh = _widened(keys(low), keys(high))
            for r in ranges:
                lo, width = r
                near = kh >= np.uint64(lo)
                if lo + width < 1 << 64:
                    near &= kl < np.uint64(lo + width)
                if r in gather:
                    part = tuple(c[near] for c in cols)
                    below = _counts_below(np.full(part[0].size, value_of(lo)), *part[:4]) if lo else np.zeros(part[0].size)
                    above = _edge_counts(lo + width, *part[:4])
                    keep = above > below  # (its gaps in the range)
                    got[r].append(tuple(c[keep] for c in part))
                    offset[r] += int(np.sum(part[4][keep] * below[keep]))
                else:
                    gaps, rows = _split(lo, width, _shift_by(width, bits[r]), tuple(c[near] for c in cols), kl[near], kh[near])
                    hist[r][0][:] += gaps
                    hist[r][1][:] += rows
        for rank, (lo, width, k_in) in list(todo.items()):
            r = (lo, width)
            if r in gather:
                a, b, j0, j1, w = (np.concatenate([p[i] for p in got[r]]) for i in range(5))
                single = (j0 == 0) & (j1 == 1)
                order = np.argsort(a[single], kind="stable")
                near_set = GapDistribution.weighted(
                    a[single][order], a[~single], b[~single], j0[~single], j1[~single], w[~single], w[single][order]
                )
                out[rank] = near_set.order_statistic(min(k_in + offset[r], near_set.count - 1))
                del todo[rank]
                continue
            gaps, rows = hist[r]
            sub, k_sub, bucket = _descend(gaps, lo, width, _shift_by(width, bits[r]), k_in)
            if sub[1] == 1:  # one key: the value
                out[rank] = value_of(sub[0])
                del todo[rank]
                continue
            reached[sub] = int(rows[bucket])
            todo[rank] = (*sub, k_sub)
    return out


MARGIN = 1 << 16  # keys (about 1e-11 relative) a piece's extent is widened by: its ends are computed, and may be off


def _widened(kl: np.ndarray, kh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A piece's extent's keys widened by MARGIN each side (saturating), so that no piece a gap of which the count
    formula places in a range is left out of it: which buckets it reaches is decided by counts, not by its ends."""
    m = np.uint64(MARGIN)
    low = np.where(kl >= m, kl - m, np.uint64(0))
    high = np.where(kh <= ~np.uint64(0) - m, kh + m, ~np.uint64(0))
    return low, high


def _shift_by(width: int, bits: int) -> int:
    return max(0, (width - 1).bit_length() - bits)


def _edge_counts(key: int, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray) -> np.ndarray:
    """Per piece, its gaps below the value of `key` (all of them at the key range's end, 2**64)."""
    if key >= 1 << 64:
        out: np.ndarray = j1 - j0
        return out
    return _counts_below(np.full(a.size, value_of(key)), a, b, j0, j1)


class _Edges:
    """A key range [lo, lo + width) cut into buckets of 2**shift keys; edge e is the start of bucket e (edge nb: the
    range's end). `below(e, ...)`: per piece, its gaps below edge e, as `metrics._pieces_le` counts them."""

    def __init__(self, lo: int, width: int, shift: int) -> None:
        self.lo, self.hi, self.shift = lo, lo + width, shift
        self.nb = ((width - 1) >> shift) + 1

    def below(self, e: np.ndarray, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray) -> np.ndarray:
        key = np.uint64(self.lo) + (np.minimum(e, self.nb - 1).astype(np.uint64) << np.uint64(self.shift))
        value = values_of(key)
        n = j1 - j0
        counts = _counts_below(value, a, b, j0, j1)
        counts = np.where(np.isnan(value), np.where(key >= _TOP, n, 0.0), counts)  # (edges past +-inf)
        at_end = e == self.nb
        if self.hi >= 1 << 64:
            counts = np.where(at_end, n, counts)
        elif at_end.any():
            counts = np.where(at_end, _counts_below(np.full(a.size, value_of(self.hi)), a, b, j0, j1), counts)
        if self.lo == 0:
            counts = np.where(e == 0, 0.0, counts)
        return counts


_EXPAND = 1 << 18  # (piece, edge) or (piece, gap) pairs evaluated at a time


def _split(
    lo: int, width: int, shift: int, cols: tuple[np.ndarray, ...], kl: np.ndarray, kh: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The gaps of the pieces `cols` (reaching into the key range [lo, lo + width)) in each of the range's buckets of
    2**shift keys, weighted; and the pieces reaching into each bucket. A piece spanning few buckets is counted at
    each edge of the buckets its extent spans (one more each side: the extent is rounded), a bucket holding the
    difference between its two edges' counts; a piece spanning more buckets than it has gaps in the range has each
    gap's bucket found by bisection on the same counts. Both count as `GapDistribution` does."""
    a, b, j0, j1, w = cols
    edges = _Edges(lo, width, shift)
    nb = edges.nb
    hi = lo + width
    first = np.where(kl < np.uint64(lo), np.uint64(0), (kl - np.uint64(lo)) >> np.uint64(shift)).astype(np.int64)
    above = kh >= np.uint64(hi) if hi < 1 << 64 else np.zeros(kh.size, bool)
    last = np.where(above, np.uint64(nb - 1), (kh - np.uint64(lo)) >> np.uint64(shift))
    last = np.minimum(last.astype(np.int64), nb - 1)
    c_lo = edges.below(np.zeros(a.size, np.int64), a, b, j0, j1)
    c_hi = edges.below(np.full(a.size, nb, np.int64), a, b, j0, j1)
    in_range = (c_hi - c_lo).astype(np.int64)
    steps = max(1, nb.bit_length())
    by_edges = last - first + 2 <= steps * in_range + 2
    gaps, rows = np.zeros(nb), np.zeros(nb)
    cost = np.where(by_edges, last - first + 2, steps * in_range)
    for part in _groups(cost):
        e_part, g_part = part[by_edges[part]], part[~by_edges[part]]
        if e_part.size:
            ends = (c_lo[e_part], c_hi[e_part])
            g, r = _by_edges(edges, first[e_part], last[e_part], ends, a[e_part], b[e_part], j0[e_part], j1[e_part], w[e_part])
            gaps += g
            rows += r
        if g_part.size:
            g, r = _by_gaps(edges, c_lo[g_part], in_range[g_part], a[g_part], b[g_part], j0[g_part], j1[g_part], w[g_part])
            gaps += g
            rows += r
    return gaps, rows


def _groups(cost: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive index ranges whose costs add up to about _EXPAND (one piece alone if it costs more)."""
    total = np.cumsum(cost)
    start = 0
    while start < cost.size:
        base = total[start - 1] if start else 0
        stop = max(int(np.searchsorted(total, base + _EXPAND, side="right")), start + 1)
        yield np.arange(start, stop)
        start = stop


def _by_edges(
    edges: _Edges,
    first: np.ndarray,
    last: np.ndarray,
    ends: tuple[np.ndarray, np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    j0: np.ndarray,
    j1: np.ndarray,
    w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each piece's gaps below each edge of buckets first..last; its first and last edges' counts are the range's
    ends' (`ends`: its gaps below the range, and below its end), so that every gap in the range is counted."""
    span = last - first + 2  # edges of buckets first..last
    piece = np.repeat(np.arange(a.size), span)
    start = np.cumsum(span) - span
    e = first[piece] + (np.arange(piece.size) - start[piece])
    counts = edges.below(e, a[piece], b[piece], j0[piece], j1[piece])
    counts[start] = ends[0]
    counts[start + span - 1] = ends[1]
    inner = np.ones(piece.size, dtype=bool)
    inner[start] = False  # (a piece's first edge opens its first bucket)
    contribution = np.diff(counts, prepend=0.0)[inner]
    bucket = (e - 1)[inner]
    gaps = np.bincount(bucket, weights=w[piece][inner] * contribution, minlength=edges.nb)
    rows = np.bincount(bucket[contribution > 0], minlength=edges.nb).astype(np.float64)
    return gaps, rows


def _by_gaps(
    edges: _Edges, c_lo: np.ndarray, m: np.ndarray, a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each in-range gap t of each piece (its count rank: c_lo <= t < c_hi) in the bucket L with below(L) <= t <
    below(L + 1), by bisection on the edges."""
    piece = np.repeat(np.arange(a.size), m)
    start = np.cumsum(m) - m
    t = c_lo[piece] + (np.arange(piece.size) - start[piece])
    pa, pb, p0, p1 = a[piece], b[piece], j0[piece], j1[piece]
    left, right = np.zeros(piece.size, np.int64), np.full(piece.size, edges.nb, np.int64)
    while True:
        open_ = right - left > 1
        if not open_.any():
            break
        mid = (left + right) // 2
        go = edges.below(mid, pa, pb, p0, p1) <= t
        left = np.where(open_ & go, mid, left)
        right = np.where(open_ & ~go, mid, right)
    gaps = np.bincount(left, weights=w[piece], minlength=edges.nb)
    rows = np.bincount(np.unique(piece * edges.nb + left) % edges.nb, minlength=edges.nb).astype(np.float64)
    return gaps, rows
