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

from sim.physics.roofline import RooflineSetup, StepCost, step_cost


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
        logit_tokens=batch * (k + 1),
        decode_pairs=batch * ((k + 1) * context_tokens + (k + 1) * (k + 2) / 2),  # a verify decodes its k + 1 tokens
        decode_seqs=batch,
        decode_context_tokens=batch * context_tokens,
        seqs=batch,  # (the host's work a request: once a step, not at each of its k + 1 positions)
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
        setup,
        n_tokens=batch,
        attention_pairs=batch * (context_tokens + 1),
        kv_read_tokens=batch * context_tokens,
        logit_tokens=batch,
        decode_pairs=batch * (context_tokens + 1),
        decode_seqs=batch,
        decode_context_tokens=batch * context_tokens,
        seqs=0,  # (a draft step runs inside the verify's engine step, whose host time the verify counts)
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
