"""Speculative decoding: k cheap draft tokens per sequence, then one target step that verifies them (vLLM's
`speculative_config`: a draft model, MTP heads, or n-gram prompt lookup).

A decode step of a speculating sequence processes k + 1 tokens in the target model — its pending token and k
drafts — against its cached context (attention over it for each), after k draft steps. Of the k drafts the first
j are accepted, where draft i is accepted with probability `alpha[i]` given drafts 0..i-1 were (i.i.d.: alpha for
every i); the step emits j + 1 tokens (the accepted drafts and the target's own next token), so the mean is

    E[tokens per step] = sum over i = 0..k of alpha[0] x ... x alpha[i-1]  = (1 - a^(k+1)) / (1 - a)  (i.i.d.)

The drafts' cost: `draft`, the draft model's own roofline, k decode steps at the same batch and contexts, on the
same GPUs (its weights take KV-cache memory); `mtp`, each draft token costs `draft_cost` of a target decode step
(default one layer's share, 1 / n_layers, as an MTP module is one transformer layer); `ngram`, nothing (a lookup
in the prompt). The KV cache reserves k lookahead slots per speculating sequence, and its k + 1 tokens count
against the step's token budget (as vLLM does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.engine.step_time import ConstantStepTime, RooflineStepTime, StepTimeModel, linear_runs
from sim.roofline import RooflineSetup, StepCost, step_cost


def expected_tokens_per_step(alphas: Sequence[float]) -> float:
    """Mean tokens a verify step emits: 1 + a0 + a0 a1 + ... + a0...a(k-1)."""
    total, p = 1.0, 1.0
    for a in alphas:
        p *= a
        total += p
    return total


def verify_cost(setup: RooflineSetup, *, batch: int, k: int, context_tokens: int) -> StepCost:
    """The target step that verifies k drafts for `batch` sequences of `context_tokens` cached tokens."""
    return step_cost(
        setup,
        n_tokens=batch * (k + 1),
        attention_pairs=batch * ((k + 1) * context_tokens + (k + 1) * (k + 2) / 2),
        kv_read_tokens=batch * context_tokens,
    )


def draft_time_s(
    method: str,
    *,
    k: int,
    batch: int,
    context_tokens: float,
    target: RooflineSetup,
    draft: RooflineSetup | None,
    draft_cost: float | None,
) -> float:
    """Seconds of drafting k tokens for `batch` sequences at `context_tokens` (see the module docstring)."""
    if method == "ngram":
        return 0.0
    if method == "draft":
        assert draft is not None
        return sum(_decode_s(draft, batch, context_tokens + i) for i in range(k))
    share = draft_cost if draft_cost is not None else 1.0 / target.model.n_layers
    return share * sum(_decode_s(target, batch, context_tokens + i) for i in range(k))


def _decode_s(setup: RooflineSetup, batch: int, context_tokens: float) -> float:
    """A decode step of `batch` sequences of (mean) `context_tokens` cached tokens (`decode_cost`'s terms)."""
    cost: StepCost = step_cost(
        setup, n_tokens=batch, attention_pairs=batch * (context_tokens + 1), kv_read_tokens=batch * context_tokens
    )
    return float(cost.time_s)


def speculative_decode_tokens_per_s(
    target: RooflineSetup,
    *,
    method: str,
    alphas: Sequence[float],
    batch: int,
    context_tokens: int,
    draft: RooflineSetup | None = None,
    draft_cost: float | None = None,
) -> float:
    """Decode throughput (tokens/s) of `batch` speculating sequences: expected tokens per step over a step's time
    (drafting plus verifying)."""
    k = len(alphas)
    step_s = verify_cost(target, batch=batch, k=k, context_tokens=context_tokens).time_s + draft_time_s(
        method, k=k, batch=batch, context_tokens=context_tokens, target=target, draft=draft, draft_cost=draft_cost
    )
    return batch * expected_tokens_per_step(alphas) / step_s


class Acceptance:
    """A replica's seeded draws of accepted drafts: for each verifying sequence in a step's order, how many of its k
    drafts were accepted (draft i with probability `alphas[i]` given the earlier ones were; the first rejection
    ends the run). Rows of the stream are consumed in order, drawn a block at a time (the same sequence as one row
    at a time)."""

    BUFFER = 4096

    def __init__(self, alphas: np.ndarray, rng: np.random.Generator) -> None:
        self.alphas = alphas
        self.rng = rng
        self._buffer: np.ndarray | None = None
        self._at = 0

    @property
    def k(self) -> int:
        return len(self.alphas)

    def rows(self, n: int) -> np.ndarray:
        """The next n draws, not consumed (`take` consumes them)."""
        buf, at = self._buffer, self._at
        if buf is None or at + n > len(buf):
            fresh = np.cumprod(self.rng.random((max(self.BUFFER, n), self.k)) < self.alphas, axis=1).sum(axis=1)
            buf = fresh if buf is None or at >= len(buf) else np.concatenate([buf[at:], fresh])
            self._buffer, self._at, at = buf, 0, 0
        return buf[at : at + n]

    def take(self, n: int) -> None:
        self._at += n

    def accepted(self, n: int) -> list[int]:
        """The next n draws, consumed."""
        counts: list[int] = self.rows(n).tolist()
        self.take(n)
        return counts


class SpeculativeStepTime:
    """The target's step-time model with speculative decoding: each decoding sequence's step also verifies k drafts
    (k more tokens through the target, attending to its context and to the drafts before them), after k draft
    decode steps (`method` draft: the draft model's own step-time model; mtp: `draft_cost` of the target's decode
    step each; ngram: free). A wrapper: the engine asks it as it asks any step-time model."""

    def __init__(
        self,
        target: StepTimeModel,
        draft: StepTimeModel | None,
        *,
        method: str,
        k: int,
        draft_cost: float,
    ) -> None:
        self.target = target
        self.method = method
        self.k = k
        self.draft_cost = draft_cost  # mtp: a draft token's share of a target decode step
        drafter = None if method == "ngram" else draft if method == "draft" else target
        self._lines = None if drafter is None else linear_runs(drafter)
        assert drafter is None or self._lines is not None, "a draft model without decode lines"
        self._extra_pairs = (k + 1) * (k + 2) // 2 - 1  # a verify's pairs beyond a decode's, per sequence (besides k x context)

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
    ) -> tuple[float, float, float]:
        k = self.k
        dt, flops, n_bytes = self.target.step(
            n_prefill_tokens + n_decode_seqs * k,
            n_decode_seqs,
            attention_pairs + k * decode_context_tokens + n_decode_seqs * self._extra_pairs,
            kv_read_tokens,
            decode_context_tokens,
        )
        return dt + self.draft_s(n_decode_seqs, decode_context_tokens), flops, n_bytes

    def steps(self, n_seqs: int, context_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seconds, FLOPs, bytes) of verify steps of `n_seqs` decoders whose contexts sum to each of `context_sums`
        (a speculative run's steps): `step`'s arithmetic on arrays."""
        k = self.k
        s = np.asarray(context_sums, dtype=np.float64)
        pairs = (s + n_seqs) + k * s + n_seqs * self._extra_pairs
        base = self.target
        if isinstance(base, RooflineStepTime):
            dt, flops, n_bytes = base.steps(n_seqs * k, n_seqs, pairs, s)
        elif isinstance(base, ConstantStepTime):
            one = base.step(n_seqs * k, n_seqs, 0, 0)
            dt, flops, n_bytes = np.full(s.size, one[0]), np.zeros(s.size), np.zeros(s.size)
        else:  # any other model: a step at a time
            rows = [base.step(n_seqs * k, n_seqs, float(p), float(c), int(c)) for p, c in zip(pairs, s, strict=True)]
            dt, flops, n_bytes = (np.asarray(col, dtype=np.float64) for col in zip(*rows, strict=True))
        return dt + self._draft_many(n_seqs, s), flops, n_bytes

    def _draft_many(self, n_seqs: int, context_sums: np.ndarray) -> np.ndarray:
        """`draft_s` for each of `context_sums`: the k draft steps of a decode line, evaluated step by step."""
        if self._lines is None or n_seqs == 0:
            return np.zeros(context_sums.size)
        if not isinstance(self._lines, RooflineStepTime | ConstantStepTime):
            return np.asarray([self.draft_s(n_seqs, int(c)) for c in context_sums])
        total = np.zeros(context_sums.size)
        for j in range(self.k):  # step j of the line: contexts grown by n_seqs a step
            total += self._lines.steps(0, n_seqs, context_sums + n_seqs * (j + 1), context_sums + n_seqs * j)[0]
        return total if self.method == "draft" else self.draft_cost * total

    def draft_s(self, n_seqs: int, context_sum: int) -> float:
        """Drafting k tokens for `n_seqs` sequences whose cached contexts sum to `context_sum`: k decode steps, their
        contexts growing a token a step (a decode line's sum)."""
        if self._lines is None or n_seqs == 0:
            return 0.0
        total = float(self._lines.decode_line(n_seqs=n_seqs, context_sum=context_sum).total(self.k))
        return total if self.method == "draft" else self.draft_cost * total
