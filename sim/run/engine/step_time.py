"""How long an engine step takes: the `StepTimeModel` protocol (one method, `step`) and its implementations.

A step processes `n_prefill_tokens` prompt tokens (chunks of one or more sequences) plus one token
for each of `n_decode_seqs` decoding sequences. Besides the time of any one step, a model may give
(`LinearRuns`, the capability the fast-forward uses) the closed form of a *decode run*: steps with the same `n_seqs` decoding sequences whose contexts each
grow by one token per step. Step j of such a run takes

    t(j) = max(l1, l2) + g * min(l1, l2) + e,   l1 = a1 + b1*j, l2 = a2 + b2*j    (a `StepLine`; seconds)

which the replica sums and inverts in O(1)/O(log n) to fast-forward a whole run in one event.

- `RooflineStepTime`: the roofline (`sim.physics.roofline.step_cost`); the two lines are its compute and
  memory terms, g = 1 - overlap, `e` its communication and fixed overheads (and an MoE model's routed experts, a
  roofline of their own whose terms a run's steps share: `sim.physics.roofline.experts_s`). The step time stays linear in
  j on either side of the lines' crossing, so a run's total is still a sum of two arithmetic series.
- `ConstantStepTime`: fixed seconds per prompt token and per decode step (a test double whose
  queueing behaviour has closed forms: M/D/1, M/G/1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from sim.physics.roofline import (
    RooflineSetup,
    experts_s,
    fixed_overhead_s,
    resident_bytes_read,
    scheduled_seqs,
    weight_bytes_read,
    windowed,
)

_NEVER = 1e15  # steps: a crossing further away than this is treated as never reached
UNBOUNDED = 1 << 62  # steps: a decode line that holds for ever (`LinearRuns.line_steps`)
GROUP_MEMO = 1 << 16  # memoized DP-group step terms, at most (then the memo starts again)


class StepLine:
    """Step j of a decode run takes max(l1, l2) + g min(l1, l2) + e seconds, l1 = a1 + b1 j, l2 = a2 + b2 j.

    The steps split once, at `split`, where the lines cross; on either side the step time is one line,
    `a_before + b_before j` before and `a_after + b_after j` after (the larger line plus g times the smaller),
    precomputed: `total` runs inside bisections."""

    __slots__ = ("a1", "a2", "a_after", "a_before", "b1", "b2", "b_after", "b_before", "e", "g", "split")

    def __init__(self, a1: float, b1: float, a2: float, b2: float, e: float, g: float = 0.0) -> None:
        self.a1, self.b1, self.a2, self.b2, self.e, self.g = a1, b1, a2, b2, e, g
        d, gap = b1 - b2, a2 - a1  # line 1 is the max where d * j >= gap
        q = gap / d if d != 0 else math.inf
        if d == 0:
            split, line1_after = (0 if gap <= 0 else math.inf), True
        elif abs(q) > _NEVER:  # the lines cross beyond any run (or the slopes differ by a denormal)
            # (|q| > _NEVER: any small bound tells its sign, so the comparison is not mutated)
            split, line1_after = (math.inf if q > 0 else 0), d > 0  # pragma: no mutate
        elif d > 0:
            split, line1_after = max(0, math.ceil(q)), True  # line 2 on [0, split), line 1 after
        else:
            split, line1_after = max(0, math.floor(q) + 1), False  # line 1 on [0, split), line 2 after
        self.split = split
        # the larger line before the split and the larger after it; each is the smaller on the other side
        if line1_after:
            ba, bb, aa, ab = a2, b2, a1, b1
        else:
            ba, bb, aa, ab = a1, b1, a2, b2
        if g:
            self.a_before, self.b_before = ba + g * aa, bb + g * ab
            self.a_after, self.b_after = aa + g * ba, ab + g * bb
        else:
            self.a_before, self.b_before, self.a_after, self.b_after = ba, bb, aa, ab

    def __repr__(self) -> str:
        return f"StepLine(a1={self.a1!r}, b1={self.b1!r}, a2={self.a2!r}, b2={self.b2!r}, e={self.e!r}, g={self.g!r})"

    def at(self, j: int) -> float:
        l1, l2 = self.a1 + self.b1 * j, self.a2 + self.b2 * j
        if self.g:
            return (l1 + self.g * l2 if l1 >= l2 else l2 + self.g * l1) + self.e
        return max(l1, l2) + self.e

    def pieces(self, k: int) -> list[tuple[int, int, float, float]]:
        """Split steps [0, k) into at most two linear pieces (start, stop, a, b)."""
        m = int(min(k, self.split))
        out = []
        if m > 0:
            out.append((0, m, self.a_before, self.b_before))
        if m < k:
            out.append((m, k, self.a_after, self.b_after))
        return out

    def add_gaps(self, itl: GapLog, k: int, n: int) -> None:
        """Record the gaps of steps 1..k-1 of a run of `n` sequences as `pieces(k)` (`Replica._advance` does this
        inline for a `StepLine`, the hot path)."""
        for lo, hi, a, b in self.pieces(k):
            if max(lo, 1) < hi:
                itl.add_piece(a + self.e, b, max(lo, 1), hi, n)

    def total(self, k: int) -> float:
        """T(k): the time of steps 0..k-1."""
        s = self.e * k
        m = k if self.split >= k else int(self.split)
        if m > 0:
            s += m * self.a_before + self.b_before * (m * (m - 1)) / 2
        if m < k:
            s += (k - m) * self.a_after + self.b_after * (k * (k - 1) - m * (m - 1)) / 2
        return s

    def _k_at(self, elapsed: float) -> float:
        """The real k with T(k) = elapsed, T continued between integers (the sum's quadratic form)."""
        m = self.split
        a, b = self.a_before, self.b_before
        base = 0.0
        if m > 0 and (m == math.inf or elapsed <= self.total(int(m))):
            m = 0
        elif m > 0:
            m = int(m)
            base = self.total(m)
            a, b = self.a_after, self.b_after
            a += b * m
        else:
            a, b = self.a_after, self.b_after
        # T(m + i) - T(m) = (b/2) i^2 + (a + e - b/2) i: the root in its stable form
        x = elapsed - base
        lin = a + self.e - b / 2
        den = lin + math.sqrt(max(0.0, lin * lin + 2 * b * x))
        return m + (2 * x / den if den > 0 else 0.0)

    def steps_to_reach(self, elapsed: float, k_max: int) -> int:
        """Smallest k in [1, k_max] with T(k) >= elapsed: the first step boundary at or after it.
        (The quadratic's root, then corrected against `total` itself, so it is exact.)"""
        return self.boundary(elapsed, k_max)[0]

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]:
        """`steps_to_reach(elapsed, k_max)` and T of it."""
        est = self._k_at(elapsed)
        k = min(max(math.ceil(est), 1), k_max) if math.isfinite(est) else k_max
        while k > 1 and self.total(k - 1) >= elapsed:
            k -= 1
        while True:
            t = self.total(k)
            if k == k_max or t >= elapsed:
                return k, t
            k += 1

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        """Largest k in [0, k_max] with T(k) <= elapsed: steps completed by then."""
        est = self._k_at(elapsed)
        k = min(max(math.floor(est), 0), k_max) if math.isfinite(est) else k_max
        while k > 0 and self.total(k) > elapsed:
            k -= 1
        while k < k_max and self.total(k + 1) <= elapsed:
            k += 1
        return k


class GapLog(Protocol):
    """Where a run's inter-token gaps go (`sim.results.metrics`' ITL log): gaps a + b j for steps j in [j0, j1),
    each shared by `weight` sequences."""

    def add_piece(self, a: float, b: float, j0: int, j1: int, weight: int) -> None: ...


class RunLine(Protocol):
    """What times a decode run's steps: one replica's `StepLine`, or a DP group's (`sim.run.engine.lockstep`)."""

    def at(self, j: int) -> float: ...

    def total(self, k: int) -> float: ...

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]: ...

    def steps_done_by(self, elapsed: float, k_max: int) -> int: ...

    def add_gaps(self, itl: GapLog, k: int, n: int) -> None: ...


class StepTimeModel(Protocol):
    """What the engine asks of a step-time model: one method."""

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
        logit_tokens: int | None = None,
        decode_pairs: float | None = None,
        group_tokens: int | None = None,
        seqs: int | None = None,
    ) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of one step (FLOPs and bytes 0 when the model does not know them): it processes
        `n_prefill_tokens` prompt (or recompute) tokens and one token for each of `n_decode_seqs` decoding
        sequences, whose cached contexts sum to `decode_context_tokens`; `attention_pairs` (query, key) pairs
        and `kv_read_tokens` cached tokens read over the whole batch; `logit_tokens` positions get logits (one per
        scheduled sequence; None: every token). Of the pairs, `decode_pairs` are decoding queries' (None: one per
        decoder and cached token, `decode_context_tokens + n_decode_seqs`; a speculative verify has more). `group_tokens`: a DP group's step, the tokens all its ranks put through the MoE
        layers they share (None: dp times this step's; models with no such layers ignore it). `seqs`: the sequences the
        step schedules, which a host cost a sequence counts (None: `logit_tokens`, one a scheduled sequence, else
        the decoders plus one for any prefill; a speculative verify gives it, its logit positions being more)."""
        ...


class LinearRuns(Protocol):
    """The optional capability the fast-forward uses: a decode run's steps in closed form."""

    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        """Step j of a run of `n_seqs` decodes whose cached contexts sum to `context_sum` at step 0 (+n_seqs per
        step): its seconds, as a `StepLine` (`group_tokens`: as `StepTimeModel.step`'s, each step's)."""
        ...

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        """(FLOPs, bytes) of the first k steps of that run."""
        ...

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        """Seconds of the first k steps of that run, summed step by step (`decode_line(...).total(k)` up to rounding,
        cheaper for a few steps); `host` False leaves out the host seconds a sequence (a speculative step's drafts,
        which run inside a step whose host time is counted once)."""
        ...

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        """How many steps from its start that run's `decode_line` holds (`UNBOUNDED`: all): a run plans no more."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)
class LinearWrapper:
    """A step-time model around another that adds a cost constant over a decode run (LoRA's adapters): it has linear
    runs when the model it wraps has them (`decode_line`, `run_work` and `decode_sum` its own)."""

    inner: StepTimeModel

    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        raise NotImplementedError

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        raise NotImplementedError

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        raise NotImplementedError

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        raise NotImplementedError


def linear_runs(model: StepTimeModel) -> LinearRuns | None:
    """The model's linear-run capability, if it has one (a `LinearWrapper` has it when the model it wraps does)."""
    if isinstance(model, RooflineStepTime | ConstantStepTime):
        return model
    if isinstance(model, LinearWrapper) and linear_runs(model.inner) is not None:
        return model
    return None


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store `value` under `key` in a bounded memo of pure values (emptied when it holds `GROUP_MEMO`: a long run meets
    ever more DP-group token counts) and return it."""
    if len(memo) >= GROUP_MEMO:
        memo.clear()
    memo[key] = value
    return value


class RooflineStepTime:
    """The roofline as a step-time model; decode-run coefficients are memoized per batch size."""

    def __init__(self, setup: RooflineSetup) -> None:
        self.setup = setup
        s, m = setup, setup.model
        self._flops_per_s = s.tp * s.effective_flops_per_s
        self._bytes_per_s = s.tp * s.effective_hbm_bw_bytes_per_s
        # a decode run's attention FLOPs a pair (MLA decodes in its absorbed form: `decode_attention_flops_per_pair`),
        # as counted and as its time counts them (below the GEMMs' precision: `attention_time_factor` times)
        self._attn_flops = m.decode_attention_flops_per_pair if s.attention else 0.0
        self._attn_factor = s.attention_time_factor
        self._attn = self._attn_flops * self._attn_factor if self._attn_factor != 1.0 else self._attn_flops
        self._kv = s.kv_bytes_per_token
        self._attention = s.attention
        self._attn_per_pair = m.attention_flops_per_pair
        # MLA: a decoding query's extra FLOPs a pair over the prefill form, and a prefill chunk's per cached token
        self._mla = m.mla is not None and s.attention
        self._decode_extra = m.decode_attention_flops_per_pair - m.attention_flops_per_pair
        self._context_flops = m.context_flops_per_token
        self._overhead = fixed_overhead_s(s)
        self._seq_overhead = s.seq_overhead_s  # host seconds a scheduled sequence (`host_s`)
        self._logits_sampled = s.logits_sampled_only
        self._logit_flops = m.logit_flops_per_token
        self._overlap = s.overlap
        self._g = 1.0 - s.overlap
        self._flops_per_token = m.flops_per_token
        # an MoE model's routed experts: priced on their own (`experts_s`), their FLOPs and bytes reported with the rest's
        # (a dense model's: none, its FLOPs, weight bytes and seconds the same floats either way)
        self._moe = m.is_moe
        self._routed_flops = s.routed_flops_per_token
        self._resident = resident_bytes_read(s)  # the weight bytes every step reads (a dense model's all)
        self._model = m
        # sliding-window layers (`windowed`): their share, and a decoder's most keys there
        self._share = m.sliding_share
        self._window = m.sliding_window
        self._per_batch: dict[int, tuple[float, float, float]] = {}
        self._step_terms: dict[int, tuple[float, float, float, float, float]] = {}
        # a DP group's steps, by (tokens, the group's tokens): bounded (`GROUP_MEMO`), as a long run meets ever more pairs
        self._group_terms: dict[tuple[int, int], tuple[float, float, float, float, float]] = {}
        self._group_batch: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._group_weights: dict[int, float] = {}  # a DP group's tokens -> weight bytes a rank reads
        self._solo_weights: dict[int, float] = {}  # an MoE step's tokens -> weight bytes read (reported)
        self._group_experts: dict[int, float] = {}  # a DP group's tokens -> its routed experts' seconds (`experts_s`)
        self._group_comm: dict[int, float] = {}  # a DP group's tokens -> a rank's communication, where only they set it
        # (`comm_s`: one GPU a rank, and an exchange that moves the group's tokens whoever sends them)
        per_destination = s.expert_parallel and s.all2all != "allgather_reducescatter"
        self._comm_by_group = s.moe_group != s.tp and s.tp == 1 and not per_destination

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
        logit_tokens: int | None = None,
        decode_pairs: float | None = None,
        group_tokens: int | None = None,
        seqs: int | None = None,
    ) -> tuple[float, float, float]:
        """`step_cost`'s arithmetic, operation for operation (so the same floats), with its per-token-count
        terms memoized."""
        n = n_prefill_tokens + n_decode_seqs
        if group_tokens is None:
            terms = self._step_terms.get(n)
            if terms is None:
                terms = self._step_terms[n] = self._terms(n, None)
        else:
            key = (n, group_tokens)
            terms = self._group_terms.get(key)
            if terms is None:
                terms = _remember(self._group_terms, key, self._terms(n, group_tokens))
        flops, weight_bytes, comm, hot, time_weight_bytes = terms
        if self._share:
            attention_pairs, kv_read_tokens = windowed(
                self._model, n, attention_pairs, kv_read_tokens, n_decode_seqs, decode_context_tokens
            )
        if logit_tokens is not None and self._logits_sampled and logit_tokens < n:
            flops -= (n - logit_tokens) * self._logit_flops
        if self._attention:
            attn = attention_pairs * self._attn_per_pair
            flops += attn
            if self._mla:
                if decode_pairs is None:
                    decode_pairs = decode_context_tokens + n_decode_seqs
                decode = decode_pairs * self._decode_extra
                context = (kv_read_tokens - decode_context_tokens) * self._context_flops
                flops += decode
                flops += context
                attn = attn + decode  # (the context's up-projection: a GEMM, `step_cost`)
            if self._attn_factor != 1.0:  # (`step_cost`'s time-only FLOPs: attention below the GEMMs' precision)
                hot = hot + (self._attn_factor - 1.0) * attn
        kv_bytes = self._kv * (kv_read_tokens + n)
        n_bytes = weight_bytes + kv_bytes
        compute_s, memory_s = (flops + hot) / self._flops_per_s, (time_weight_bytes + kv_bytes) / self._bytes_per_s
        if self._overlap == 1.0:
            core = max(compute_s, memory_s)
        else:
            core = compute_s + self._g * memory_s if compute_s >= memory_s else memory_s + self._g * compute_s
        if self._seq_overhead:  # (host time a scheduled sequence: with the fixed overheads, as `step_cost` adds them)
            if seqs is None:
                seqs = scheduled_seqs(logit_tokens, n_decode_seqs, n_prefill_tokens)
            return core + comm + (self._overhead + self._seq_overhead * seqs), flops, n_bytes
        return core + comm + self._overhead, flops, n_bytes

    def host_s(self, n_seqs: int) -> float:
        """Host seconds a step of `n_seqs` scheduled sequences adds to the fixed overheads (`seq_overhead_s` each)."""
        return self._seq_overhead * n_seqs

    def _terms(self, n: int, group_tokens: int | None) -> tuple[float, float, float, float, float]:
        """An n-token step's matmul FLOPs, weight bytes read, communication plus an MoE model's routed experts
        (`experts_s`), the FLOPs its time counts beyond its own (less the routed experts', priced apart) and the weight
        bytes its time counts (those every step reads)."""
        s = self.setup
        return (
            n * s.model.flops_per_token,
            self._weight_bytes(n, group_tokens),
            self._comm_s(n, group_tokens) + self._experts_s(n, group_tokens),
            -(n * self._routed_flops),
            self._resident,
        )

    def _comm_s(self, n: int, group_tokens: int | None) -> float:
        """`comm_s`; a DP group's memoized by the group's tokens where they alone set it (no TP all-reduce, an exchange of
        the group's tokens: the same float whatever this rank's share)."""
        if group_tokens is None or not self._comm_by_group or n <= 0:
            return self.setup.comm_s(n, group_tokens)
        c = self._group_comm.get(group_tokens)
        if c is None:
            c = _remember(self._group_comm, group_tokens, self.setup.comm_s(n, group_tokens))
        return c

    def _experts_s(self, n: int, group_tokens: int | None) -> float:
        """`experts_s`; a DP group's (a function of the group's tokens alone: `expert_costs`) memoized."""
        if not self._moe:
            return 0.0
        if group_tokens is None or self.setup.moe_group == self.setup.tp:
            return experts_s(self.setup, n, group_tokens)
        t = self._group_experts.get(group_tokens)
        if t is None:
            t = _remember(self._group_experts, group_tokens, experts_s(self.setup, n, group_tokens))
        return t

    def _weight_bytes(self, n: int, group_tokens: int | None) -> float:
        """`weight_bytes_read`; a DP group's step (its experts touched by the group's tokens alone) memoized."""
        if group_tokens is None:
            if not self._moe:
                return weight_bytes_read(self.setup, n)
            w = self._solo_weights.get(n)
            if w is None:
                w = _remember(self._solo_weights, n, weight_bytes_read(self.setup, n))
            return w
        w = self._group_weights.get(group_tokens)
        if w is None:
            w = self._group_weights[group_tokens] = weight_bytes_read(self.setup, n, group_tokens)
        return w

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        """Seconds of the first k steps of `decode_line(n_seqs, context_sum)`, step by step (for short runs: a
        speculative step's drafts, which run inside a step whose host time is counted once: `host` False leaves the
        host seconds a sequence out)."""
        if host and self._seq_overhead and k > 0:
            return self.decode_sum(n_seqs, context_sum, k, False) + k * self.host_s(n_seqs)
        matmul_flops, weight_bytes, fixed = self._batch_terms(n_seqs)
        attn, kv, f, b, g = self._attn, self._kv, self._flops_per_s, self._bytes_per_s, self._g
        if self._share:  # sliding-window layers: step by step (their keys stop growing past the window)
            total = 0.0
            for j in range(max(k, 0)):
                c = context_sum + n_seqs * j
                pairs, kv_read = windowed(self._model, n_seqs, c + n_seqs, c, n_seqs, c)
                compute_s, memory_s = (matmul_flops + attn * pairs) / f, (weight_bytes + kv * (kv_read + n_seqs)) / b
                total += (compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s) + fixed
            return total
        if k <= 1:  # (one step: the plain engine's decode alone, every step of it)
            if k <= 0:
                return 0.0
            ctx = context_sum + n_seqs
            compute_s, memory_s = (matmul_flops + attn * ctx) / f, (weight_bytes + kv * ctx) / b
            return (compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s) + fixed
        # step j: pairs = context_sum + n (j + 1); KV read context_sum + n j, n written. Compute less memory time is
        # linear in the context, so when the first and last steps are bound by the same one, every step is, and the
        # k steps sum in closed form (`SpeculativeStepTime`'s runs repeat this arithmetic, operation for operation).
        lo, hi = context_sum + n_seqs, context_sum + n_seqs * k
        first = (matmul_flops + attn * lo) / f >= (weight_bytes + kv * lo) / b
        if first == ((matmul_flops + attn * hi) / f >= (weight_bytes + kv * hi) / b):
            ctx = k * context_sum + n_seqs * (k * (k + 1) // 2)
            compute_s, memory_s = (k * matmul_flops + attn * ctx) / f, (k * weight_bytes + kv * ctx) / b
            return (compute_s + g * memory_s if first else memory_s + g * compute_s) + k * fixed
        total = 0.0
        for j in range(k):
            ctx = context_sum + n_seqs * (j + 1)
            compute_s, memory_s = (matmul_flops + attn * ctx) / f, (weight_bytes + kv * ctx) / b
            total += (compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s) + fixed
        return total

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        matmul_flops, weight_bytes, _ = self._batch_terms(n_seqs, group_tokens)  # (a dense model's, as reported)
        if self._moe:  # (the tokens' own FLOPs and every weight byte read: the routed experts' too, priced apart)
            matmul_flops = n_seqs * self._flops_per_token
            weight_bytes = self._weight_bytes(n_seqs, group_tokens)
        if self._share:  # (sliding-window layers: their terms on the run's side of the window)
            pairs0, pairs_slope, kv0, kv_slope = self._line_terms(n_seqs, context_sum)
            pairs = k * pairs0 + pairs_slope * (k * (k - 1) / 2)  # sum over j < k of step j's pairs
            kv_tokens = k * (kv0 + n_seqs) + kv_slope * (k * (k - 1) / 2)  # its reads plus n writes
        else:
            pairs = k * (context_sum + n_seqs) + n_seqs * k * (k - 1) / 2  # sum over j < k of S + n (j + 1)
            kv_tokens = k * (context_sum + n_seqs) + n_seqs * k * (k - 1) / 2  # reads S + n j plus n writes
        return k * matmul_flops + self._attn_flops * pairs, k * weight_bytes + self._kv * kv_tokens

    def _line_terms(self, n_seqs: int, context_sum: int) -> tuple[float, float, float, float]:
        """A decode run's step 0 attention pairs and KV tokens read and their growth a step: context_sum + n and
        context_sum, n each, as sliding-window layers count them (`windowed`) on the run's side of the window
        (`line_steps` ends a run where it crosses). Read only with such layers."""
        pairs0, kv0 = context_sum + n_seqs, context_sum
        share, cap = self._share, n_seqs * self._window
        if kv0 >= cap:  # every step past the window: (1 - share) of the growth counts
            slope = (1.0 - share) * n_seqs
            return pairs0 - share * (pairs0 - cap), slope, kv0 - share * (kv0 - cap), slope
        if pairs0 > cap:  # (the pairs past it, the KV read not yet: a run of one step)
            return pairs0 - share * (pairs0 - cap), (1.0 - share) * n_seqs, kv0, n_seqs
        return pairs0, n_seqs, kv0, n_seqs

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        """How many steps from its start `decode_line(n_seqs, context_sum)` holds: for ever, unless sliding-window
        layers' keys stop growing within the run (then up to the step that crosses; see `_line_terms`)."""
        if not self._share:
            return UNBOUNDED
        cap = n_seqs * self._window
        if context_sum >= cap:
            return UNBOUNDED
        if context_sum + n_seqs > cap:
            return 1
        return (cap - context_sum) // n_seqs

    def _batch_terms(self, n_seqs: int, group_tokens: int | None = None) -> tuple[float, float, float]:
        """Matmul FLOPs and weight bytes read as the step's time counts them, and its fixed seconds (comm + overhead):
        an MoE model's without its routed experts, whose seconds (`experts_s`) the fixed ones hold."""
        if group_tokens is None:
            terms = self._per_batch.get(n_seqs)
            if terms is None:
                terms = self._per_batch[n_seqs] = self._batch(n_seqs, None)
            return terms
        key = (n_seqs, group_tokens)
        terms = self._group_batch.get(key)
        if terms is None:
            terms = _remember(self._group_batch, key, self._batch(n_seqs, group_tokens))
        return terms

    def _batch(self, n_seqs: int, group_tokens: int | None) -> tuple[float, float, float]:
        s = self.setup
        # (an MoE model's routed experts a roofline of their own, the same every step of a run: in the fixed seconds)
        return (
            n_seqs * s.model.flops_per_token - n_seqs * self._routed_flops,
            self._resident,
            self._comm_s(n_seqs, group_tokens) + self._experts_s(n_seqs, group_tokens) + self._overhead,
        )

    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        """`n_seqs` decodes whose cached contexts sum to `context_sum` at step 0 (+n_seqs per step)."""
        matmul_flops, weight_bytes, fixed = self._batch_terms(n_seqs, group_tokens)
        if self._seq_overhead:  # (host time: each step schedules the run's n_seqs)
            fixed = fixed + self.host_s(n_seqs)
        # step j: pairs = context_sum + n (j + 1); KV read = context_sum + n j; KV written = n
        if not self._share:
            return StepLine(
                (matmul_flops + self._attn * (context_sum + n_seqs)) / self._flops_per_s,
                self._attn * n_seqs / self._flops_per_s,
                (weight_bytes + self._kv * (context_sum + n_seqs)) / self._bytes_per_s,
                self._kv * n_seqs / self._bytes_per_s,
                fixed,
                self._g,
            )
        # (sliding-window layers: as `_line_terms` counts them on the run's side of the window)
        pairs0, pairs_slope, kv0, kv_slope = self._line_terms(n_seqs, context_sum)
        return StepLine(
            (matmul_flops + self._attn * pairs0) / self._flops_per_s,
            self._attn * pairs_slope / self._flops_per_s,
            (weight_bytes + self._kv * (kv0 + n_seqs)) / self._bytes_per_s,
            self._kv * kv_slope / self._bytes_per_s,
            fixed,
            self._g,
        )


@dataclass(frozen=True, slots=True)
class ConstantStepTime:
    """A step costs `prefill_s_per_token` per prompt token plus `decode_step_s` if it decodes."""

    prefill_s_per_token: float
    decode_step_s: float

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
        logit_tokens: int | None = None,
        decode_pairs: float | None = None,
        group_tokens: int | None = None,
        seqs: int | None = None,
    ) -> tuple[float, float, float]:
        return n_prefill_tokens * self.prefill_s_per_token + (self.decode_step_s if n_decode_seqs else 0.0), 0.0, 0.0

    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        return StepLine(a1=self.decode_step_s, b1=0.0, a2=0.0, b2=0.0, e=0.0)

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        return k * self.decode_step_s

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        return 0.0, 0.0

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        return UNBOUNDED
