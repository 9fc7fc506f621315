"""Admission: vLLM's free-block watermark, chunked's whole-prompt option, and what can never be admitted."""

import pytest

from sim.run.engine.scheduler import Chunked, Limits, PrefillFirst
from sim.run.engine.sequence import Seq
from sim.run.simulate import simulate
from tests.test_engine_units import frame, tiny_scenario


def limits(**kw):
    base = {"max_num_seqs": 8, "max_num_batched_tokens": 4096, "block_size": 16, "n_blocks": 100, "watermark_blocks": 10}
    return Limits(**(base | kw))


@pytest.mark.parametrize("policy", [PrefillFirst, Chunked])
def test_admission_leaves_the_watermark_free(policy):
    """85 blocks of prompt: admitted with 95 free (10 left = the watermark), not with 94."""
    for free, admitted in ((95, True), (94, False)):
        waiting = [Seq(0, 0.0, 85 * 16, 10)]
        batch = policy().next_batch(waiting, [], free_blocks=free, limits=limits())
        assert bool(batch.admitted) == admitted, (policy.__name__, free)


def test_running_sequences_grow_into_the_watermark():
    """The reserve is for new requests only (vLLM): a decode takes the last free block without preempting."""
    seq = Seq(0, 0.0, 16, 10)
    seq.computed, seq.generated, seq.blocks = 16, 1, 1  # its next token needs a second block
    batch = Chunked().next_batch([], [seq], free_blocks=1, limits=limits())
    assert batch.work == [(seq, 1)] and not batch.preempted


@pytest.mark.parametrize(("policy", "chunks"), [(PrefillFirst, False), (Chunked, True)])
def test_a_recompute_above_the_watermark_is_dropped_with_its_reason(policy, chunks):
    """A preempted sequence whose recompute needs more than n_blocks - watermark can never be admitted:
    dropped with the reason, not left waiting forever."""
    seq = Seq(0, 0.0, 80 * 16, 20 * 16)
    seq.generated = 11 * 16  # recompute 91 blocks > 100 - 10
    waiting = [seq]
    batch = policy().next_batch(waiting, [], free_blocks=100, limits=limits())
    assert waiting == [] and [s for s, _ in batch.dropped] == [seq]
    assert "recompute needs 91 KV blocks" in batch.dropped[0][1] and "watermark" in batch.dropped[0][1]


def test_chunked_whole_prompt_admission_needs_room_for_the_prompt():
    """20-block prompt, 10 blocks free, a 64-token budget: the first chunk (4 blocks) fits, the prompt does not."""
    for whole, admitted in ((False, True), (True, False)):
        waiting = [Seq(0, 0.0, 320, 10)]
        lim = limits(max_num_batched_tokens=64, watermark_blocks=0, whole_prompt=whole)
        batch = Chunked().next_batch(waiting, [], free_blocks=10, limits=lim)
        assert bool(batch.admitted) == admitted
        if admitted:
            assert batch.work[0][1] == 64  # still chunked: the step takes one chunk


@pytest.mark.parametrize("ff", [True, False])
def test_watermark_exact_scenario(ff):
    """10 blocks of 16. A: 144-token prompt (9 blocks), B: 16 tokens (1 block), both at t = 0, one token each,
    prefill_first at 1 ms a token. Without a watermark both prefill in one 160-token step (first tokens at
    0.160 s); with 10% (1 block kept free) B waits for A: A at 0.144 s, B scheduled then, done at 0.160 s."""
    trace = frame([(0.0, 144, 1), (0.0, 16, 1)])
    none = simulate(
        tiny_scenario("prefill_first", ff, num_gpu_blocks_override=10, watermark=0.0, max_num_batched_tokens=200), trace
    )
    kept = simulate(
        tiny_scenario("prefill_first", ff, num_gpu_blocks_override=10, watermark=0.1, max_num_batched_tokens=200), trace
    )
    assert none.requests["scheduled_at_s"].tolist() == pytest.approx([0.0, 0.0])
    assert none.requests["first_token_at_s"].tolist() == pytest.approx([0.160, 0.160])
    assert kept.requests["scheduled_at_s"].tolist() == pytest.approx([0.0, 0.144])
    assert kept.requests["first_token_at_s"].tolist() == pytest.approx([0.144, 0.160])


@pytest.mark.parametrize("ff", [True, False])
def test_whole_prompt_admission_exact_scenario(ff):
    """10 blocks of 16, a 32-token budget. A and B: 96-token prompts (6 blocks) growing to 159 tokens (10 blocks).
    First-chunk admission lets B in beside A and the two preempt each other; whole-prompt admission keeps B
    out until A has finished and freed its blocks: no preemption, B scheduled the instant A completes."""
    trace = frame([(0.0, 96, 64), (0.001, 96, 64)])
    kw = {"num_gpu_blocks_override": 10, "watermark": 0.0, "max_num_batched_tokens": 32}
    first = simulate(tiny_scenario("chunked", ff, admission="first_chunk", **kw), trace)
    whole = simulate(tiny_scenario("chunked", ff, admission="whole_prompt", **kw), trace)
    assert first.summary()["n_preemptions"] > 0
    r = whole.requests
    assert whole.summary()["n_preemptions"] == 0 and r["status"].tolist() == ["completed", "completed"]
    assert r["scheduled_at_s"].iloc[1] == pytest.approx(r["completed_at_s"].iloc[0])
    # A alone: 3 chunks of 32 (0.032 s each, first token at 0.096), then 63 decode steps of 0.01 s
    assert r["completed_at_s"].iloc[0] == pytest.approx(0.096 + 63 * 0.01)


def test_a_prompt_that_cannot_clear_the_watermark_is_rejected_with_its_reason():
    """prefill_first admits whole prompts: one needing more than n_blocks - watermark is refused up front."""
    sc = tiny_scenario("prefill_first", num_gpu_blocks_override=10, watermark=0.1, max_num_batched_tokens=400)
    r = simulate(sc, frame([(0.0, 150, 1), (0.0, 10, 1)])).requests  # 150 tokens = 10 blocks > 10 - 1
    assert r["status"].tolist() == ["rejected", "completed"]
    assert "engine.watermark" in r["reject_reason"].iloc[0] and "10 KV blocks" in r["reject_reason"].iloc[0]


@pytest.mark.slow
def test_whole_prompt_admission_stops_the_long_prompt_thrash():
    """The README's table: on configs/long-prompts.yaml first-chunk admission thrashes, whole-prompt does not."""
    from pathlib import Path

    from sim.scenario.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "long-prompts.yaml"
    first = simulate(load_config(path)).summary()
    whole = simulate(load_config(path, sets=["engine.admission=whole_prompt"])).summary()
    assert first["n_preemptions"] > 1000 and whole["n_preemptions"] == 0
    assert whole["total_token_throughput"] > 1.5 * first["total_token_throughput"]


def test_the_never_admitted_reason_counts_the_blocks_that_would_be_needed():
    """Chunked, a prompt needs its first chunk's blocks (min(prompt, budget)); with `whole_prompt`, or prefill_first,
    the whole prompt's; a preempted sequence's recompute is named as such."""
    small = {"max_num_seqs": 8, "max_num_batched_tokens": 2048, "block_size": 16, "n_blocks": 10}
    chunked = Limits(**small)
    assert chunked.never_reason(5000, recompute=False, chunks=True) == (
        "its prompt needs 128 KV blocks to be admitted, more than the 10 - 0 (engine.watermark) an empty cache offers"
    )
    whole = Limits(**small, whole_prompt=True)
    assert "its recompute needs 313 KV blocks" in whole.never_reason(5000, recompute=True, chunks=True)
    first = Limits(**(small | {"max_num_batched_tokens": 8192}))
    assert "its prompt needs 313 KV blocks" in first.never_reason(5000, recompute=False, chunks=False)
    assert "exceeds max_num_batched_tokens=2048" in chunked.never_reason(5000, recompute=False, chunks=False)
    # a prompt of exactly the budget fits the budget: what keeps it out is the cache (128 blocks > 10)
    assert "its prompt needs 128 KV blocks" in chunked.never_reason(2048, recompute=False, chunks=False)


def test_each_preemption_of_a_request_is_recorded(monkeypatch):
    """The per-request preemption counts are what the engine did: one per time the request was picked as a victim
    (counted here at the engine's own preemption call), and in this thrash some request is preempted repeatedly."""
    from collections import Counter

    from sim.run.engine.replica import Replica

    victims: Counter[int] = Counter()
    preempt = Replica._preempt

    def counting(self, seqs):
        victims.update(s.idx for s in seqs)
        preempt(self, seqs)

    monkeypatch.setattr(Replica, "_preempt", counting)
    trace = frame([(0.0, 96, 64), (0.001, 96, 64), (0.002, 96, 64)])
    kw = {"num_gpu_blocks_override": 10, "watermark": 0.0, "max_num_batched_tokens": 32}
    r = simulate(tiny_scenario("chunked", True, admission="first_chunk", **kw), trace, measure_capacity=False).requests
    assert r["n_preemptions"].tolist() == [victims[i] for i in range(3)]
    assert max(victims.values()) >= 2
