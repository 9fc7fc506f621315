"""How long an engine step takes: the `StepTimeModel` protocol and its two implementations.

A step processes `n_prefill_tokens` prompt tokens (chunks of one or more sequences) plus one token
for each of `n_decode_seqs` decoding sequences. Besides the time of any one step, a model gives the
closed form of a *decode run*: steps with the same `n_seqs` decoding sequences whose contexts each
grow by one token per step. Step j of such a run takes

    t(j) = max(a1 + b1*j, a2 + b2*j) + e            (a `StepLine`; seconds)

which the replica sums and inverts in O(1)/O(log n) to fast-forward a whole run in one event.

- `RooflineStepTime`: the roofline (`sim.roofline.step_cost`); the two lines are its compute and
  memory terms, `e` its communication and fixed overhead.
- `ConstantStepTime`: fixed seconds per prompt token and per decode step (a test double whose
  queueing behaviour has closed forms: M/D/1, M/G/1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from sim.roofline import RooflineSetup, allreduce_time_s, step_cost, weight_bytes_read


@dataclass(frozen=True, slots=True)
class StepLine:
    """Step j of a decode run takes max(a1 + b1 j, a2 + b2 j) + e seconds."""

    a1: float
    b1: float
    a2: float
    b2: float
    e: float

    def at(self, j: int) -> float:
        return max(self.a1 + self.b1 * j, self.a2 + self.b2 * j) + self.e

    def pieces(self, k: int) -> list[tuple[int, int, float, float]]:
        """Split steps [0, k) into at most two linear pieces (start, stop, a, b)."""
        d, g = self.b1 - self.b2, self.a2 - self.a1
        if d == 0:
            split = 0 if g <= 0 else k  # line 1 always / never
            first_is_line1_after = True
        elif d > 0:
            split = min(k, max(0, math.ceil(g / d)))  # line 2 on [0, split), line 1 after
            first_is_line1_after = True
        else:
            split = min(k, max(0, math.floor(g / d) + 1))  # line 1 on [0, split), line 2 after
            first_is_line1_after = False
        before, after = (
            ((self.a2, self.b2), (self.a1, self.b1)) if first_is_line1_after else ((self.a1, self.b1), (self.a2, self.b2))
        )
        out = []
        if split > 0:
            out.append((0, split, *before))
        if split < k:
            out.append((split, k, *after))
        return out

    def total(self, k: int) -> float:
        """T(k): the time of steps 0..k-1."""
        s = self.e * k
        for start, stop, a, b in self.pieces(k):
            s += (stop - start) * a + b * (stop * (stop - 1) - start * (start - 1)) / 2
        return s

    def steps_to_reach(self, elapsed: float, k_max: int) -> int:
        """Smallest k in [1, k_max] with T(k) >= elapsed: the first step boundary at or after it."""
        lo, hi = 1, k_max
        while lo < hi:
            mid = (lo + hi) // 2
            if self.total(mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        """Largest k in [0, k_max] with T(k) <= elapsed: steps completed by then."""
        lo, hi = 0, k_max
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.total(mid) <= elapsed:
                lo = mid
            else:
                hi = mid - 1
        return lo


class StepTimeModel(Protocol):
    def step_time_s(
        self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float
    ) -> float: ...

    def decode_line(self, *, n_seqs: int, context_sum: int) -> StepLine: ...

    def step_work(
        self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float
    ) -> tuple[float, float]:
        """(FLOPs, bytes) of one step; (0, 0) when the model does not know them."""
        ...

    def run_work(self, *, n_seqs: int, context_sum: int, k: int) -> tuple[float, float]:
        """(FLOPs, bytes) of the first k steps of a decode run."""
        ...


class RooflineStepTime:
    """The roofline as a step-time model; decode-run coefficients are memoized per batch size."""

    def __init__(self, setup: RooflineSetup) -> None:
        self.setup = setup
        s, m = setup, setup.model
        self._flops_per_s = s.tp * s.effective_flops_per_s
        self._bytes_per_s = s.tp * s.effective_hbm_bw_bytes_per_s
        self._attn = m.attention_flops_per_pair if s.attention else 0.0
        self._kv = s.kv_bytes_per_token
        self._per_batch: dict[int, tuple[float, float, float]] = {}

    def step_time_s(self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float) -> float:
        cost = step_cost(
            self.setup,
            n_tokens=n_prefill_tokens + n_decode_seqs,
            attention_pairs=attention_pairs,
            kv_read_tokens=kv_read_tokens,
        )
        return cost.time_s

    def step_work(
        self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float
    ) -> tuple[float, float]:
        cost = step_cost(
            self.setup,
            n_tokens=n_prefill_tokens + n_decode_seqs,
            attention_pairs=attention_pairs,
            kv_read_tokens=kv_read_tokens,
        )
        return cost.flops, cost.bytes

    def run_work(self, *, n_seqs: int, context_sum: int, k: int) -> tuple[float, float]:
        matmul_flops, weight_bytes, _ = self._batch_terms(n_seqs)
        pairs = k * (context_sum + n_seqs) + n_seqs * k * (k - 1) / 2  # sum over j < k of S + n (j + 1)
        kv_tokens = k * (context_sum + n_seqs) + n_seqs * k * (k - 1) / 2  # reads S + n j plus n writes
        return k * matmul_flops + self._attn * pairs, k * weight_bytes + self._kv * kv_tokens

    def _batch_terms(self, n_seqs: int) -> tuple[float, float, float]:
        """Matmul FLOPs, weight bytes read and fixed seconds (comm + overhead) of an n-token step."""
        terms = self._per_batch.get(n_seqs)
        if terms is None:
            s, m = self.setup, self.setup.model
            comm = 0.0
            if s.comm and s.tp > 1:
                comm = 2 * m.n_layers * allreduce_time_s(s.gpu, tp=s.tp, n_bytes=n_seqs * m.hidden_size * s.activation_bits / 8)
            terms = (n_seqs * m.flops_per_token, weight_bytes_read(s, n_seqs), comm + s.step_overhead_s)
            self._per_batch[n_seqs] = terms
        return terms

    def decode_line(self, *, n_seqs: int, context_sum: int) -> StepLine:
        """`n_seqs` decodes whose cached contexts sum to `context_sum` at step 0 (+n_seqs per step)."""
        matmul_flops, weight_bytes, fixed = self._batch_terms(n_seqs)
        # step j: pairs = context_sum + n (j + 1); KV read = context_sum + n j; KV written = n
        return StepLine(
            a1=(matmul_flops + self._attn * (context_sum + n_seqs)) / self._flops_per_s,
            b1=self._attn * n_seqs / self._flops_per_s,
            a2=(weight_bytes + self._kv * (context_sum + n_seqs)) / self._bytes_per_s,
            b2=self._kv * n_seqs / self._bytes_per_s,
            e=fixed,
        )


@dataclass(frozen=True, slots=True)
class ConstantStepTime:
    """A step costs `prefill_s_per_token` per prompt token plus `decode_step_s` if it decodes."""

    prefill_s_per_token: float
    decode_step_s: float

    def step_time_s(self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float) -> float:
        return n_prefill_tokens * self.prefill_s_per_token + (self.decode_step_s if n_decode_seqs else 0.0)

    def decode_line(self, *, n_seqs: int, context_sum: int) -> StepLine:
        return StepLine(a1=self.decode_step_s, b1=0.0, a2=0.0, b2=0.0, e=0.0)

    def step_work(
        self, *, n_prefill_tokens: int, n_decode_seqs: int, attention_pairs: float, kv_read_tokens: float
    ) -> tuple[float, float]:
        return 0.0, 0.0

    def run_work(self, *, n_seqs: int, context_sum: int, k: int) -> tuple[float, float]:
        return 0.0, 0.0
