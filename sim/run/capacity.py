"""The fleet's saturated throughput for a workload: the denominator of `throughput_utilization`.

**Definition.** The capacity of a fleet's GPUs for a length mix is the highest throughput (prompt + output tokens
per GPU-second) that its replica type sustains with the queue never empty, over the ways of keeping it full:
- *all queued*: a sample of the mix's servable requests (`SAMPLE_SIZE` of them, a fixed seeded sample, so the figure
  is a property of the setup and the mix, not of the run's seed; a mix of fewer is drawn with replacement) queued
  at t = 0;
- *closed loop at concurrency N*: the same requests released N at a time, the next one the instant one completes
  (a replica fed continuously at the concurrency where it thrashes least), N found by a climb: from as many as the
  batch takes or the KV cache holds, doubling (or halving) while the throughput rises by more than 1%.
Each regime's throughput is measured in its saturated stretch: from the instant a fifth of the sample has completed
(the batch has filled) until the queue first empties (the last request is scheduled, or released into the loop);
tokens count at completion. The capacity is the best regime's, and its relative standard error is that regime's,
by batch means (the stretch cut into `N_WINDOWS` windows). An open-loop run is one more way of feeding the replica,
so a saturated run reads a throughput utilization within about two standard errors of 1 — the figure's and the run's
own, a saturated run being one more sample of the same rate — not above it (tests/validation/test_capacity_bound.py
holds this over random scenarios).

- **Colocated**: one replica of the entry pool, under its own engine: `tokens_per_gpu_s` is its saturated tokens/s
  (`max_tokens_per_s_per_replica`) over its TP. An MoE model's DP ranks are measured as a whole group of dp, and a
  pipeline server's virtual engines as its pp (`group_size`: they step together), each replica's share of it.
- **Disaggregated**: the best split of GPUs between the two pools. A prefill replica's rate `r_p` (requests/s of
  the mix, each prefilled to its first token) and a decode replica's `r_d` (requests/s of the mix's multi-token
  requests, each arriving prefilled over an instant link) are measured as above; a request then costs
  `tp_p / r_p + q tp_d / r_d` GPU-seconds (q: the share of requests with more than one output token, the only ones
  a decode replica sees), so the pair's `tokens_per_gpu_s` is the mix's tokens per request over that. It is the
  throughput of a fleet split in the ideal proportion with free transfers: an upper bound for every real split.

The figure is cached on the resolved content — the pools' model and GPU specs as resolved, TP, the roofline's
numbers, the engines and the length mix — never on names.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import simpy

from sim.run.clock import call_at
from sim.run.engine.replica import PREFILL, ReplicaListener
from sim.run.engine.sequence import Seq
from sim.run.store import blocks
from sim.scenario.config import StepTimeConfig
from sim.schema import RequestStatus

if TYPE_CHECKING:
    from sim.run.engine.replica import Replica
    from sim.run.pools import Built, PoolSpec

SAMPLE_SIZE = 1000
SAMPLE_SEED = 0  # the sample is part of the measurement's definition, independent of the run's seed
N_WINDOWS = 8
FILL_SHARE = 0.2  # the saturated stretch starts once this share of the sample has completed
CLIMB = 0.01  # the search goes on while the next concurrency is this much faster
_CACHE_SIZE = 64
_cache: OrderedDict[str, Capacity] = OrderedDict()

# probe(specs, frame, concurrency) -> the request records of `specs`' pools (one replica each) on `frame`, all
# queued at t = 0 (concurrency None) or released `concurrency` at a time; and the instant the last was released
Probe = Callable[[Sequence["PoolSpec"], pd.DataFrame, int | None], tuple[pd.DataFrame, float]]


@dataclass(frozen=True)
class Capacity:
    tokens_per_gpu_s: float | None  # None: nothing servable to measure
    max_tokens_per_s_per_replica: float | None  # colocated: one replica's; disaggregated: None
    rel_se: float | None  # relative standard error of the figure (batch means), None if not estimable
    regime: str | None  # how the best measurement kept the replicas full
    wall_s: float = 0.0  # spent measuring (0 when cached)
    cached: bool = False

    def as_meta(self) -> dict[str, Any]:
        unmeasured = (
            {} if self.tokens_per_gpu_s is not None else {"reason": "no request the replicas can serve to measure it with"}
        )
        return {
            **unmeasured,
            "measured": self.tokens_per_gpu_s is not None,
            "max_tokens_per_s_per_replica": self.max_tokens_per_s_per_replica,
            "tokens_per_gpu_s": self.tokens_per_gpu_s,
            "rel_se": self.rel_se,
            "regime": self.regime,
        }


@dataclass(frozen=True)
class Rate:
    """One regime's saturated rate: requests and tokens per second, with the tokens' relative standard error."""

    requests_per_s: float
    tokens_per_s: float
    rel_se: float | None
    regime: str


# --- the closed loop ---------------------------------------------------------------------------------------------
class ClosedLoop(ReplicaListener):
    """Releases requests into the entry pool `concurrency` at a time, the next one the instant one is resolved (it
    listens to every pool's replicas: a request may finish on a decode replica)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.next = 0
        self.n = 0
        self.released_at_s = 0.0  # when the last request was released
        self._deliver: Callable[[Seq], None] | None = None
        self._log: Any = None
        self._env: simpy.Environment | None = None

    def attach(self, built: Built) -> None:
        self._deliver, self._log, self._env = built.pools[0].deliver, built.log, built.env
        self.n = len(built.log)
        call_at(built.env, 0.0, simpy.events.URGENT, lambda _e: self._release(self.concurrency))

    def _release(self, k: int) -> None:
        assert self._deliver is not None and self._env is not None
        log = self._log
        while k > 0 and self.next < self.n:
            i = self.next
            self.next += 1
            k -= 1
            self.released_at_s = self._env.now
            self._deliver(Seq(i, 0.0, int(log.prompt_tokens[i]), int(log.output_tokens[i])))
            if log.status[i] == RequestStatus.REJECTED:  # (refused at the gateway: release another in its place)
                k += 1

    def finished(self, replica: Replica, seq: Seq) -> None:
        self._release(1)


# --- measuring ------------------------------------------------------------------------------------------------------
class Lengths:
    """A trace's (prompt, output) token counts, read a block of rows at a time: a stored run's trace is in files
    (`sim.run.store`), and a copy of a long trace's two columns as one array would hold 16 bytes a request."""

    ROWS = 1 << 20

    def __init__(self, prompt: np.ndarray, output: np.ndarray) -> None:
        self.prompt, self.output = prompt, output

    @classmethod
    def of(cls, lengths: np.ndarray | pd.DataFrame | Lengths) -> Lengths:
        """From (prompt, output) rows, or a frame with the trace's columns."""
        if isinstance(lengths, Lengths):
            return lengths
        if isinstance(lengths, pd.DataFrame):
            return cls(lengths["prompt_tokens"].to_numpy(), lengths["output_tokens"].to_numpy())
        return cls(lengths[:, 0], lengths[:, 1])

    def __len__(self) -> int:
        return len(self.prompt)

    def blocks(self) -> Iterator[np.ndarray]:
        """(prompt, output) rows as int64, ROWS at a time."""
        for _, (prompt, output) in blocks(self.ROWS, self.prompt, self.output):  # (a stored trace's pages handed back)
            yield np.column_stack((prompt, output)).astype(np.int64, copy=False)


def sample_requests(lengths: np.ndarray | Lengths, max_context_tokens: int) -> np.ndarray:
    """SAMPLE_SIZE (prompt, output) rows a replica can serve (seeded, fixed): drawn from the servable ones, with
    replacement when there are fewer (a short trace's mix repeated: too few requests to fill the batch, and the
    replica would be measured below what it sustains; its throughput utilization would read above 1)."""
    mix = Lengths.of(lengths)
    servable = sum(int(np.sum(block.sum(axis=1) <= max_context_tokens)) for block in mix.blocks())
    if not servable:
        return np.zeros((0, 2), dtype=np.int64)
    if servable == SAMPLE_SIZE:
        picks = np.arange(servable)
    else:
        rng = np.random.default_rng(SAMPLE_SEED)
        picks = rng.choice(servable, size=SAMPLE_SIZE, replace=servable < SAMPLE_SIZE)
    order = np.argsort(picks, kind="stable")
    out = np.zeros((picks.size, 2), dtype=np.int64)
    seen = k = 0  # servable rows before the block; picks (in order) placed
    for block in mix.blocks():
        ok = np.flatnonzero(block.sum(axis=1) <= max_context_tokens)
        end = k + int(np.searchsorted(picks[order[k:]], seen + ok.size))
        out[order[k:end]] = block[ok[picks[order[k:end]] - seen]]
        seen, k = seen + ok.size, end
    return out


def saturated_rate(requests: pd.DataFrame, cut: float, regime: str, *, count: np.ndarray | None = None) -> Rate | None:
    """The rate of a saturated run's records: requests (those in `count`, default all) and tokens completed in the
    stretch from the completion of the first `FILL_SHARE` of the sample to `cut` (when the queue first emptied),
    with the tokens' relative standard error by batch means; None if too little completed to tell."""
    status = np.asarray(requests["status"].cat.codes.to_numpy())
    completed_at = requests["completed_at_s"].to_numpy(dtype=np.float64)
    done = status == RequestStatus.COMPLETED
    if count is not None:
        done &= count
    times = np.sort(completed_at[done])
    if times.size < 5 * N_WINDOWS:
        return None
    start = float(times[int(FILL_SHARE * times.size)])
    if not cut > start:
        return None
    tokens = (requests["prompt_tokens"].to_numpy() + requests["output_tokens"].to_numpy())[done]
    at = completed_at[done]
    inside = (at > start) & (at <= cut)
    duration = cut - start
    n_in = int(inside.sum())
    if n_in < N_WINDOWS:
        return None
    tokens_per_s = float(tokens[inside].sum()) / duration
    edges = np.linspace(start, cut, N_WINDOWS + 1)
    per_window = np.histogram(at[inside], bins=edges, weights=tokens[inside])[0] / np.diff(edges)
    mean = float(per_window.mean())
    rel_se = float(per_window.std(ddof=1) / math.sqrt(N_WINDOWS) / mean) if mean > 0 else None
    return Rate(n_in / duration, tokens_per_s, rel_se, regime)


def group_size(spec: PoolSpec) -> int:
    """Replicas a probe runs of the pool: one, an MoE model's whole DP group (its ranks step together and share
    the MoE layers, `sim.run.engine.lockstep`: one rank alone would price those layers for its tokens only), or a
    pipeline server's pp virtual engines (they share its stages' GPUs and step at the slowest busy one's pace: one
    engine alone would run unhindered)."""
    setup = spec.setup
    return setup.dp_group if setup.dp_group > 1 else setup.pp


def first_concurrency(spec: PoolSpec, pick: np.ndarray) -> int:
    """Where the search starts: as many requests as the batch takes (`max_num_seqs`) or the KV cache holds at their
    mean mid-life context, whichever is fewer (each replica of the probe's group)."""
    mid = float(np.mean(pick[:, 0] + pick[:, 1] / 2)) if len(pick) else 1.0
    fits = spec.n_blocks * spec.engine.block_size / max(mid, 1.0)
    return max(2, int(min(spec.engine.max_num_seqs, fits)) * group_size(spec))


def best_rate(
    specs: Sequence[PoolSpec], frame: pd.DataFrame, probe: Probe, *, fed: PoolSpec, count: np.ndarray | None = None
) -> Rate | None:
    """The best regime's rate for `specs` on `frame` (see the module docstring)."""
    rates: dict[int | None, Rate | None] = {}

    def measure(concurrency: int | None) -> Rate | None:
        if concurrency not in rates:
            records, released_at = probe(specs, frame, concurrency)
            if concurrency is None:  # all queued: until the last request was scheduled
                scheduled = records["scheduled_at_s"].to_numpy(dtype=np.float64)
                cut = float(np.nanmax(scheduled)) if not np.isnan(scheduled).all() else 0.0
                regime = "all queued"
            else:
                cut, regime = released_at, f"closed loop at concurrency {concurrency}"
            rates[concurrency] = saturated_rate(records, cut, regime, count=count)
        return rates[concurrency]

    def tokens_per_s(concurrency: int) -> float:
        rate = measure(concurrency)
        return rate.tokens_per_s if rate is not None else 0.0

    measure(None)
    # closed loops: at most a quarter of the sample in flight (so that the loop runs saturated for most of it);
    # from the first guess, climb by factors of 2 (up, then down) while the throughput rises by more than CLIMB
    top = len(frame) // 4
    start = min(first_concurrency(fed, frame[["prompt_tokens", "output_tokens"]].to_numpy()), top)
    if start >= 2:
        for factor in (2.0, 0.5):
            n = start
            while 2 <= round(n * factor) <= top and tokens_per_s(round(n * factor)) > (1 + CLIMB) * tokens_per_s(n):
                n = round(n * factor)
            if factor == 2.0 and n != start:
                break  # it rose upward: the way down from the start can only fall
    found = [r for r in rates.values() if r is not None]
    if not found:
        return None
    # the fastest; among regimes as fast within a millionth (rounding), the one measured most precisely
    fastest = max(r.tokens_per_s for r in found)
    return min((r for r in found if r.tokens_per_s >= fastest * (1 - 1e-6)), key=lambda r: (r.rel_se is None, r.rel_se or 0.0))


# --- the figures, cached ---------------------------------------------------------------------------------------
def cache_key(kind: str, specs: Sequence[PoolSpec], lengths: np.ndarray | Lengths) -> str:
    """A digest of everything the measurement depends on, by content."""
    h = hashlib.sha256(kind.encode())
    for spec in specs:
        h.update(repr(spec.setup).encode())  # frozen dataclasses of numbers: model spec, GPU spec, TP, efficiencies
        h.update(repr(spec.draft).encode())
        h.update(spec.engine.model_dump_json().encode())
        h.update(f"{spec.role}:{spec.n_blocks}:{spec.budget}".encode())
    for block in Lengths.of(lengths).blocks():  # (the rows' bytes in order, as one array's)
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()


def _cached(key: str, measure: Callable[[], Capacity]) -> Capacity:
    if key in _cache:
        _cache.move_to_end(key)
        return replace(_cache[key], wall_s=0.0, cached=True)
    start = time.perf_counter()
    value = measure()
    _cache[key] = value
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return replace(value, wall_s=time.perf_counter() - start, cached=False)


def _frame(pick: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"arrival_at_s": np.zeros(len(pick)), "prompt_tokens": pick[:, 0], "output_tokens": pick[:, 1]})


def saturated_capacity(specs: Sequence[PoolSpec], lengths: np.ndarray | Lengths, *, probe: Probe) -> Capacity:
    """One colocated replica of `specs[0]` (see the module docstring); `lengths`: the trace's (prompt, output) rows."""
    spec = specs[0]

    def measure() -> Capacity:
        pick = sample_requests(lengths, spec.setup.context_tokens)
        rate = best_rate(specs, _frame(pick), probe, fed=spec) if len(pick) else None
        if rate is None:
            return Capacity(None, None, None, None)
        g = group_size(spec)
        return Capacity(rate.tokens_per_s / (spec.setup.tp * g), rate.tokens_per_s / g, rate.rel_se, rate.regime)

    return _cached(cache_key("colocated", specs, lengths), measure)


def pair_capacity(specs: Sequence[PoolSpec], lengths: np.ndarray | Lengths, *, probe: Probe) -> Capacity:
    """A disaggregated fleet's prefill and decode pools, split at their best (see the module docstring)."""
    pre, dec = specs[0], specs[1]

    def measure() -> Capacity:
        ctx = min(pre.setup.context_tokens, dec.setup.context_tokens)
        pick = sample_requests(lengths, ctx)
        if not len(pick):
            return Capacity(None, None, None, None)
        prefill_only = replace(pre, role="colocated")  # a request of one output token ends at its prefill
        first = pick.copy()
        first[:, 1] = 1
        r_p = best_rate([prefill_only], _frame(first), probe, fed=prefill_only)
        multi = pick[:, 1] > 1
        q = float(multi.mean())
        r_d = best_rate([instant_prefill(dec), dec], _frame(pick[multi]), probe, fed=dec) if multi.any() else None
        if r_p is None or (q > 0 and r_d is None):
            return Capacity(None, None, None, None)
        a = pre.setup.tp * group_size(pre) / r_p.requests_per_s
        b = q * dec.setup.tp * group_size(dec) / r_d.requests_per_s if r_d is not None else 0.0
        tokens_per_request = float(pick.sum(axis=1).mean())
        se = None
        if r_p.rel_se is not None and (r_d is None or r_d.rel_se is not None):
            se = math.hypot(a * r_p.rel_se, b * (r_d.rel_se if r_d is not None and r_d.rel_se is not None else 0.0)) / (a + b)
        regime = f"prefill {r_p.regime}; decode {r_d.regime if r_d is not None else '-'}"
        return Capacity(tokens_per_request / (a + b), None, se, regime)

    return _cached(cache_key("disaggregated", specs, lengths), measure)


def instant_prefill(decode: PoolSpec) -> PoolSpec:
    """A prefill pool that costs nothing and holds everything, to feed a decode replica as fast as it can take work
    (the decode probe's: its link is instant too, see `sim.run.simulate`)."""
    engine = decode.engine.model_copy(
        update={
            "step_time": StepTimeConfig.model_construct(kind="constant", prefill_s_per_token=0.0, decode_step_s=1e-9),
            "speculative": None,
            "prefix_caching": False,
        }
    )
    limits = replace(
        decode.limits, max_num_seqs=1 << 30, max_num_batched_tokens=1 << 40, n_blocks=1 << 50, watermark_blocks=0, lookahead=0
    )
    return replace(
        decode,
        name="prefill",
        role=PREFILL,
        scenario=decode.scenario.model_copy(update={"engine": engine}),
        draft=None,
        n_blocks=1 << 50,
        budget=1 << 40,
        limits=limits,
        caching=False,
    )
