"""Engine pieces on plain values: step lines, KV pool, batching policies, tiny exact scenarios."""

import math

import numpy as np
import pandas as pd
import pytest

from sim.run.engine.kv import BlockKv
from sim.run.engine.scheduler import Chunked, Limits, PrefillFirst
from sim.run.engine.sequence import Seq
from sim.run.engine.step_time import RooflineStepTime, StepLine
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.conftest import make_setup


@pytest.mark.parametrize(
    "args",
    [
        dict(a1=1.0, b1=0.5, a2=3.0, b2=0.1, e=0.2),  # line 2 first, line 1 after j = 5
        dict(a1=3.0, b1=0.1, a2=1.0, b2=0.5, e=0.0),  # line 1 first, line 2 after
        dict(a1=2.0, b1=0.0, a2=1.0, b2=0.0, e=0.1),  # parallel
        dict(a1=0.02, b1=0.0, a2=0.0, b2=0.0, e=0.0),
        dict(a1=1.0, b1=0.5, a2=3.0, b2=0.1, e=0.2, g=0.3),  # partial overlap: max + 0.3 min
        dict(a1=3.0, b1=0.1, a2=1.0, b2=0.5, e=0.0, g=1.0),  # no overlap: the sum
        dict(a1=2.0, b1=0.0, a2=1.0, b2=0.0, e=0.1, g=0.5),
        dict(a1=1.0, b1=1e-18, a2=2.0, b2=0.0, e=0.0, g=0.5),  # lines that cross beyond any run
    ],
)
def test_step_line_sums_and_inverts(args):
    line = StepLine(**args)  # (built in the test: a line built at collection would escape the mutation tests)
    steps = [line.at(j) for j in range(40)]
    for k in range(41):
        assert line.total(k) == pytest.approx(sum(steps[:k]), rel=1e-12, abs=1e-12)
    cum = [line.total(k) for k in range(41)]
    for x in (0.0, 0.3, cum[4], cum[4] + 1e-9, cum[18] - 1e-9, cum[40]):
        k = line.steps_to_reach(x, 40)
        assert line.total(k) >= x and (k == 1 or line.total(k - 1) < x)
        d = line.steps_done_by(x, 40)
        assert line.total(d) <= x and (d == 40 or line.total(d + 1) > x)


@pytest.mark.parametrize("model", ["llama-2-70b", "mixtral-8x7b", "deepseek-v3"])
def test_roofline_decode_line_matches_step_time(model):
    setup = make_setup(model, "h200", tp=8, weight_bits=8) if model == "deepseek-v3" else make_setup(model, "a100-80gb", tp=2)
    st = RooflineStepTime(setup)
    n, s0 = 7, 9_000
    line = st.decode_line(n_seqs=n, context_sum=s0)
    for j in (0, 1, 50, 4000):
        direct = st.step(0, n, s0 + n * (j + 1), s0 + n * j, s0 + n * j)[0]
        assert line.at(j) == pytest.approx(direct, rel=1e-12)


def test_step_line_with_overlap_is_max_plus_share_of_min():
    line = StepLine(a1=1.0, b1=0.5, a2=3.0, b2=0.1, e=0.2, g=0.25)
    for j in range(12):
        l1, l2 = 1.0 + 0.5 * j, 3.0 + 0.1 * j
        assert line.at(j) == pytest.approx(max(l1, l2) + 0.25 * min(l1, l2) + 0.2, rel=1e-12)


def test_kv_pool_grows_releases_and_guards_capacity():
    pool = BlockKv(n_blocks=4, block_size=16)
    a, b = Seq(0, 0.0, 20, 5), Seq(1, 0.0, 5, 5)
    pool.grow(a, 20)
    assert a.blocks == 2 and pool.used == 2
    pool.grow(a, 32)
    assert a.blocks == 2
    pool.grow(b, 17)
    assert pool.free == 0 and pool.peak_used == 4
    with pytest.raises(AssertionError, match="over capacity"):
        pool.grow(b, 33)
    pool.release(a, 0.0)
    assert pool.used == 3 - 0 and a.blocks == 0  # b grew to 3 blocks before the guard tripped


LIMITS = Limits(max_num_seqs=3, max_num_batched_tokens=100, block_size=16)


def seqs(*prompts, decoding=False):
    out = []
    for i, p in enumerate(prompts):
        s = Seq(i, float(i), p, 50)
        if decoding:
            s.computed, s.generated, s.blocks = p, 1, -(-(p + 1) // 16)
        out.append(s)
    return out


def test_prefill_first_admits_fcfs_until_a_limit():
    waiting = seqs(40, 40, 30, 10)
    b = PrefillFirst().next_batch(waiting, [], free_blocks=100, limits=LIMITS)
    assert [(s.idx, n) for s, n in b.work] == [(0, 40), (1, 40)]  # 3rd would exceed 100 tokens: stop (no skipping)
    b = PrefillFirst().next_batch(seqs(10, 10, 10, 10), [], free_blocks=100, limits=LIMITS)
    assert len(b.work) == 3  # max_num_seqs
    b = PrefillFirst().next_batch(seqs(40, 40), [], free_blocks=3, limits=LIMITS)
    assert len(b.work) == 1  # blocks: 3 each


def test_prefill_first_decodes_and_preempts_the_newest():
    running = seqs(16, 16, 16, decoding=True)  # each holds 2 blocks (17 slots) and needs no more for slot 18
    for s in running:
        s.computed = 32  # now each needs a 3rd block for its next token
        s.generated = 17
    b = PrefillFirst().next_batch([], running, free_blocks=1, limits=LIMITS)
    assert [s.idx for s, _ in b.work] == [0, 1] and [s.idx for s in b.preempted] == [2]


def test_chunked_decodes_first_then_chunks_prompts():
    running = seqs(30, 30, decoding=True)
    waiting = seqs(500)
    waiting[0].idx = 9
    b = Chunked().next_batch(waiting, running, free_blocks=100, limits=LIMITS)
    assert [(s.idx, n) for s, n in b.work] == [(0, 1), (1, 1), (9, 98)]


def test_chunked_admits_nothing_in_a_step_that_preempts():
    running = seqs(32, 32, decoding=True)
    for s in running:
        s.blocks = 2  # 32 computed -> the next token needs a 3rd block
    b = Chunked().next_batch(seqs(5), running, free_blocks=0, limits=LIMITS)
    assert [s.idx for s in b.preempted] == [1] and [s.idx for s, _ in b.work] == [0] and not b.admitted


def test_prefill_first_drops_a_recompute_that_outgrew_the_budget():
    s = Seq(0, 0.0, 90, 50)
    s.generated = 20  # preempted after 20 tokens: recompute = 110 > 100
    waiting = [s]
    b = PrefillFirst().next_batch(waiting, [], free_blocks=100, limits=LIMITS)
    assert [seq for seq, _ in b.dropped] == [s] and waiting == []
    assert "recompute of 110 tokens exceeds max_num_batched_tokens=100" in b.dropped[0][1]


def tiny_scenario(policy="chunked", fast_forward=True, **engine):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb"},
            "engine": {
                "policy": policy,
                "fast_forward": fast_forward,
                "max_num_batched_tokens": 100,
                "step_time": {"kind": "constant", "prefill_s_per_token": 1e-3, "decode_step_s": 0.01},
                **engine,
            },
        }
    )


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


@pytest.mark.parametrize("ff", [True, False])
def test_exact_timestamps_chunked(ff):
    # A: prefill 10 tok (0.01 s) -> token 1 at 0.01; decode -> token 2 at 0.02 (B arrived at 0.015,
    # joins at that boundary); step [decode A + prefill B 20 tok] = 0.03 s -> A done, B's first token
    # at 0.05; decode B -> done at 0.06.
    r = simulate(tiny_scenario(fast_forward=ff), frame([(0.0, 10, 3), (0.015, 20, 2)])).requests
    assert r["scheduled_at_s"].tolist() == pytest.approx([0.0, 0.02])
    assert r["first_token_at_s"].tolist() == pytest.approx([0.01, 0.05])
    assert r["completed_at_s"].tolist() == pytest.approx([0.05, 0.06])


@pytest.mark.parametrize("ff", [True, False])
def test_exact_timestamps_prefill_first(ff):
    # B's arrival at 0.015 makes the step at 0.02 a prefill-only step (0.02 s): A waits.
    r = simulate(tiny_scenario("prefill_first", fast_forward=ff), frame([(0.0, 10, 3), (0.015, 20, 2)])).requests
    assert r["first_token_at_s"].tolist() == pytest.approx([0.01, 0.04])
    assert r["completed_at_s"].tolist() == pytest.approx([0.05, 0.05])


def test_rejections_have_reasons():
    sc = tiny_scenario(num_gpu_blocks_override=4)
    r = simulate(sc, frame([(0.0, 4000, 200), (1.0, 60, 10), (2.0, 10, 10)])).requests  # llama-3.1-8b: 131072 context
    assert r["status"].tolist() == ["rejected", "rejected", "completed"]
    assert "more than the replica's KV cache holds (64)" in r["reject_reason"][0]
    sc = parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb"}})
    r = simulate(sc, frame([(0.0, 4000, 200)])).requests
    assert "exceeds the model's max context 4096" in r["reject_reason"][0]


def test_kv_observation_mid_run_matches_per_step():
    """A sampler reading the replica between events sees the same KV use in both modes."""
    rng = np.random.default_rng(5)
    n = 30
    trace = frame(list(zip(np.cumsum(rng.exponential(0.2, n)), rng.integers(5, 60, n), rng.integers(20, 90, n), strict=True)))
    seen = {}
    for ff in (True, False):
        samples = []

        def observe(env, replicas, samples=samples):
            def sampler():
                for _ in range(4000):
                    yield env.timeout(0.0123)
                    samples.append(replicas[0].kv_blocks_used_at(env.now))

            env.process(sampler())

        sc = parse_config(
            {
                "model": "llama-3.1-8b",
                "fleet": {"gpu": "a100-80gb"},
                "engine": {"fast_forward": ff, "num_gpu_blocks_override": 40},
            }
        )
        simulate(sc, trace, observe=observe)
        seen[ff] = samples
    assert len(seen[True]) == len(seen[False]) > 300  # sampled until the last request completes
    assert seen[True] == seen[False]
    assert max(seen[True]) > 20 and not math.isnan(seen[True][0])


def test_a_prefix_caching_pool_lends_cached_blocks_nobody_pins():
    """A 200-token prompt with 3 full 64-token hash blocks caches them (4 blocks of 16 each) after its prefill; once
    it is released its one private block is free and the 12 cached ones are evictable: all 100 are available again,
    and a sequence needing 95 blocks evicts the least recent entries it must (2 of 3)."""
    from sim.run.engine.kv import PrefixCachingKv

    kv = PrefixCachingKv(100, 16, hash_tokens=64, log=None)
    a = Seq(0, 0.0, 200, 5)
    a.hashes, a.pins = [11, 12, 13], kv.cache.root
    kv.grow(a, 200)
    kv.prompt_computed(a, 1.0)
    assert (kv.used, a.blocks, a.shared, kv.available()) == (13, 13, 12, 87)
    kv.release(a, 2.0)
    assert (kv.used, kv.cache.evictable_blocks, kv.available(), kv.pins()) == (12, 12, 100, 0)
    b = Seq(1, 0.0, 1500, 5)
    kv.grow(b, 95 * 16)
    assert (kv.used, kv.cache.evicted, kv.available()) == (99, 2, 5)  # 7 short: 2 entries (8 blocks) evicted


def test_the_priority_count_tells_when_the_queue_outranks_running_work():
    from sim.run.engine.scheduler import PriorityCount

    count = PriorityCount()
    low, high = Seq(0, 0.0, 10, 5, priority=2), Seq(1, 0.0, 10, 5, priority=0)
    count.add(low)
    count.add(low)
    assert count.outranked_by(1) and not count.outranked_by(2)
    count.remove(low)
    assert count.outranked_by(1)  # one of the two is still running
    count.remove(low)
    count.add(high)
    assert not count.outranked_by(1) and not count.outranked_by(0)


def test_a_batch_is_pure_decode_only_while_every_entry_is_one_running_sequences_last_token():
    from sim.run.engine.scheduler import Batch

    a, b = Seq(0, 0.0, 100, 10), Seq(1, 0.0, 50, 30)
    a.generated, a.computed, b.generated, b.computed = 4, 103, 1, 50
    batch = Batch(work=[(a, 1), (b, 1)])
    batch.note(a, 103, 1, 1)
    batch.note(b, 50, 1, 1)
    assert batch.is_pure_decode and batch.context_sum == 153 and batch.min_tokens_left == 6
    recompute = Seq(2, 0.0, 100, 10)
    recompute.generated = 3  # preempted: its prompt and generated tokens are recomputed, one token at a time here
    batch.note(recompute, 0, 1, 103)
    assert not batch.is_pure_decode


def test_chunked_spends_the_token_budget_to_its_last_token():
    """max_num_batched_tokens = 3 and three decoders: each gets its token (the last one spends the budget's last)."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=3, block_size=16)
    b = Chunked().next_batch(seqs(5), seqs(30, 30, 30, decoding=True), free_blocks=100, limits=limits)
    assert [(s.idx, n) for s, n in b.work] == [(0, 1), (1, 1), (2, 1)] and not b.admitted


def test_a_lone_decoder_is_one_run_after_its_prefill():
    """One request, 100 tokens to generate, fast-forward: its prompt step, then one decode run of 99 steps."""
    r = simulate(tiny_scenario(), frame([(0.0, 50, 100)]), measure_capacity=False)
    assert r.replicas.loc[0, "n_steps"] == 100 and r.replicas.loc[0, "n_runs"] == 1
