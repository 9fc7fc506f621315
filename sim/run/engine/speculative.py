"""Speculative decoding in the engine: a replica's seeded draws of accepted drafts (`Acceptance`) and the step-time
model that prices a verify step (`SpeculativeStepTime`, a wrapper around the target's model). The arithmetic of
what speculation buys (expected tokens per step, a verify step's cost) is `sim.physics.speculative`'s."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from sim.run.engine.step_time import RooflineStepTime, StepTimeModel, linear_runs


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
        self._verify_fns: dict[int, Callable[[int], tuple[float, float, float]]] = {}

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

    def verify(self, n_seqs: int, context_sum: int) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of a step in which `n_seqs` decoders whose contexts sum to `context_sum` verify
        their drafts and nothing else runs: `step` of such a batch."""
        return self.step(0, n_seqs, context_sum + n_seqs, context_sum, context_sum)

    def verify_fn(self, n_seqs: int) -> Callable[[int], tuple[float, float, float]]:
        """`verify` for `n_seqs` decoders as a function of their context sum, its per-batch terms bound once (a
        speculative run prices each of its steps with it): the same arithmetic, operation for operation, so the
        same floats as `step`."""
        fn = self._verify_fns.get(n_seqs)
        if fn is None:
            fn = self._verify_fns[n_seqs] = self._make_verify_fn(n_seqs)
        return fn

    def _make_verify_fn(self, n: int) -> Callable[[int], tuple[float, float, float]]:
        target, lines = self.target, self._lines
        if not isinstance(target, RooflineStepTime) or not isinstance(lines, RooflineStepTime | None):
            return functools.partial(self.verify, n)
        k = self.k
        n_tok = n * k + n
        target.step(n * k, n, 0, 0)  # (fills the memo of this token count's terms)
        flops0, weight_bytes, comm = target._step_terms[n_tok]
        per_pair = target._attn_per_pair if target._attention else 0.0
        kv, fps, bps = target._kv, target._flops_per_s, target._bytes_per_s
        overlap, g, overhead = target._overlap, target._g, target._overhead
        extra = n * self._extra_pairs
        draft_method, share = self.method == "draft", self.draft_cost
        d = lines._batch_terms(n) if lines is not None else None

        def verify(s: int) -> tuple[float, float, float]:
            pairs = s + n + k * s + extra
            flops = flops0 + pairs * per_pair if per_pair else flops0
            n_bytes = weight_bytes + kv * (s + n_tok)
            compute_s, memory_s = flops / fps, n_bytes / bps
            if overlap == 1.0:
                core = max(compute_s, memory_s)
            else:
                core = compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s
            dt = core + comm + overhead
            if d is not None:  # `draft_s`: `decode_sum` of the drafter's line
                assert lines is not None
                mm, wb, dfixed = d
                attn, dkv, f, b, dg = lines._attn, lines._kv, lines._flops_per_s, lines._bytes_per_s, lines._g
                total = 0.0
                for j in range(k):
                    ctx = s + n * (j + 1)
                    c_s, m_s = (mm + attn * ctx) / f, (wb + dkv * ctx) / b
                    total += (c_s + dg * m_s if c_s >= m_s else m_s + dg * c_s) + dfixed
                dt += total if draft_method else share * total
            return dt, flops, n_bytes

        return verify

    def draft_s(self, n_seqs: int, context_sum: int) -> float:
        """Drafting k tokens for `n_seqs` sequences whose cached contexts sum to `context_sum`: k decode steps, their
        contexts growing a token a step (a decode line's steps, summed)."""
        if self._lines is None or n_seqs == 0:
            return 0.0
        total = self._lines.decode_sum(n_seqs, context_sum, self.k)
        return total if self.method == "draft" else self.draft_cost * total
