"""The hot path's shortcuts against the plain computations they replace: the step line's closed-form
inversion, the memoized step price, the decode group's aggregates, the least-loaded index, the arrival
window, and the lazy engine against the per-sequence reference where order matters (budget shortfall)."""

import heapq
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.physics.roofline import step_cost
from sim.policies.router import LeastOutstanding
from sim.run.engine.group import DecodeGroup
from sim.run.engine.sequence import Seq
from sim.run.engine.step_time import RooflineStepTime, StepLine
from sim.run.fleet.feed import Feed
from sim.run.fleet.load_index import STALE_RATIO, STALE_SLACK, LeastLoaded
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.conftest import make_setup, views
from tests.test_engine_equivalence import assert_same, both_modes, random_trace

COEF = st.floats(0.0, 1.0, allow_nan=False)


@settings(deadline=None)
@given(
    a1=st.floats(1e-4, 1.0),
    b1=st.floats(0.0, 1e-3),
    a2=st.floats(1e-4, 1.0),
    b2=st.floats(0.0, 1e-3),
    e=st.floats(0.0, 0.1),
    k_max=st.integers(1, 1_000_000),
    share=st.floats(0.0, 1.0),
    g=st.sampled_from([0.0, 0.32, 1.0]) | st.floats(0.0, 1.0),
)
def test_step_line_inversion_is_exact_at_any_length(a1, b1, a2, b2, e, k_max, share, g):
    line = StepLine(a1=a1, b1=b1, a2=a2, b2=b2, e=e, g=g)
    elapsed = share * line.total(k_max)
    k = line.steps_to_reach(elapsed, k_max)
    assert 1 <= k <= k_max and (line.total(k) >= elapsed or k == k_max)
    assert k == 1 or line.total(k - 1) < elapsed
    d = line.steps_done_by(elapsed, k_max)
    assert 0 <= d <= k_max and line.total(d) <= elapsed
    assert d == k_max or line.total(d + 1) > elapsed
    # the closed form lands within a step of the answer, so the exact correction is a step or two
    j = max(1, round(share * k_max))
    assert abs(line._k_at(line.total(j)) - j) < 1.0 + 1e-6 * j


@pytest.mark.parametrize(
    ("model", "gpu", "tp"),
    [
        ("llama-2-70b", "a100-80gb", 2),
        ("llama-3.1-8b", "h100-sxm", 1),
        ("llama-3.1-70b", "h100-sxm", 8),
        ("mixtral-8x7b", "h100-sxm", 4),
    ],
)
def test_memoized_step_price_is_step_cost_to_the_bit(model, gpu, tp):
    setup = make_setup(model, gpu, tp=tp)
    model_time = RooflineStepTime(setup)
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_prefill, n_decode = int(rng.integers(0, 3000)), int(rng.integers(0, 200))
        pairs, kv = int(rng.integers(0, 10**7)), int(rng.integers(0, 10**6))
        for _repeat in range(2):  # the first call fills the memo, the second reads it
            dt, flops, n_bytes = model_time.step(n_prefill, n_decode, pairs, kv)
            cost = step_cost(setup, n_tokens=n_prefill + n_decode, attention_pairs=pairs, kv_read_tokens=kv)
            assert (dt, flops, n_bytes) == (cost.time_s, cost.flops, cost.bytes)
        if n_decode:
            line = model_time.decode_line(n_seqs=n_decode, context_sum=kv)
            # a decode run's step 0 is the step of those decodes alone
            assert model_time.step(0, n_decode, kv + n_decode, kv)[0] == pytest.approx(line.at(0), rel=1e-12)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 300), st.integers(1, 60)), min_size=1, max_size=40),
    st.integers(1, 40),
)
def test_decode_group_aggregates_match_explicit_sequences(ops, bs):
    """Join sequences at random steps, advance by random k: tokens, context, finishes and the blocks each
    step range needs equal the per-sequence arithmetic (kept apart, in `shadow`)."""
    group = DecodeGroup(bs)
    shadow: dict[int, list[int]] = {}  # idx -> [computed, generated, output]
    seqs: dict[int, Seq] = {}
    t = 0.0
    for n, (op, prompt, output) in enumerate(ops):
        if op == 0 or not shadow:  # a sequence that just emitted its first token joins
            seq = Seq(n, 0.0, prompt, output + 1, generated=1, computed=prompt, blocks=-(-prompt // bs), admit_no=n)
            seq.last_token_at_s = group.t_last
            group.join(seq)
            shadow[n] = [prompt, 1, output + 1]
            seqs[n] = seq
            continue
        k = min(op * 7, group.min_tokens_left)
        assert group.blocks_needed(k) == sum(-(-(c + k) // bs) - -(-c // bs) for c, _, _ in shadow.values())
        assert group.min_tokens_left == min(o - g for _, g, o in shadow.values())
        assert group.ctx == sum(c for c, _, _ in shadow.values())
        t += 1.0
        done = group.advance(k, t)
        for row in shadow.values():
            row[0] += k
            row[1] += k
        finished = {i for i, (_, g, o) in shadow.items() if g == o}
        assert {x.idx for x in done} == finished
        for x in done:
            c, g, _ = shadow.pop(x.idx)
            assert (x.computed, x.generated, x.last_token_at_s, x.blocks) == (c, g, t, -(-c // bs))
        assert group.n == len(shadow) and group.next_step_blocks == group.blocks_needed(1)
    left = group.release_all()
    assert [x.idx for x in left] == sorted(shadow)
    for x in left:
        assert (x.computed, x.generated, x.blocks) == (shadow[x.idx][0], shadow[x.idx][1], -(-shadow[x.idx][0] // bs))
        assert x is seqs[x.idx]


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "inc", "dec", "pick"]), st.integers(0, 9)), max_size=200))
def test_least_loaded_index_answers_as_the_router_does(ops):
    index, loads = LeastLoaded(), {}
    router = LeastOutstanding()
    for op, rid in ops:
        if op == "add" and rid not in loads:
            loads[rid] = 0
            index.add(rid, 0)
        elif op == "remove" and rid in loads:
            del loads[rid]
            index.remove(rid)
        elif op in ("inc", "dec") and rid in loads:
            loads[rid] = max(0, loads[rid] + (1 if op == "inc" else -1))
            index.load_changed(SimpleNamespace(replica_id=rid), loads[rid])
        elif op == "pick" and loads:
            ids = sorted(loads)
            assert index.least() == ids[router.choose(views([loads[i] for i in ids]), Seq(0, 0.0, 1, 1), 0.0)]
    assert len(index) == len(loads) and len(index._heap) <= STALE_RATIO * len(loads) + STALE_SLACK + 1
    heapq.heapify(index._heap)  # still a valid heap


def test_arrival_window_boundaries_change_nothing(monkeypatch):
    """Requests are handed over a window at a time; simultaneous arrivals that straddle a window's edge
    are still delivered together."""
    rng = np.random.default_rng(4)
    t = np.repeat(np.cumsum(rng.exponential(0.3, 40)), rng.integers(1, 5, 40))
    trace = validate_frame(
        pd.DataFrame(
            {"arrival_at_s": t, "prompt_tokens": rng.integers(1, 400, t.size), "output_tokens": rng.integers(1, 80, t.size)}
        )
    )
    sc = parse_config(
        {"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb", "tp": 1, "autoscaler": {"policy": "fixed", "replicas": 2}}}
    )
    wide = simulate(sc, trace, measure_capacity=False)
    monkeypatch.setattr(Feed, "WINDOW", 3)
    narrow = simulate(sc, trace, measure_capacity=False)
    pd.testing.assert_frame_equal(wide.requests, narrow.requests)
    assert wide.summary() | {"wall_s": None} == narrow.summary() | {"wall_s": None}


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), budget=st.integers(2, 12), n_blocks=st.integers(10, 60))
def test_lazy_engine_matches_reference_when_the_budget_starves_decoders(seed, budget, n_blocks):
    """A token budget below the running batch: each step serves only the oldest sequences, so the order
    matters and the engine must fall back from the group to per-sequence planning (and come back)."""
    trace = random_trace(seed, 30, 20.0, 60, 60)
    fast, slow = both_modes(trace, policy="chunked", n_blocks=n_blocks, max_num_seqs=16, budget=budget, kind="roofline")
    assert_same(fast, slow)


def test_inadmissible_requests_are_rejected_with_the_reason():
    trace = validate_frame(
        pd.DataFrame({"arrival_at_s": [0.0, 1.0, 2.0], "prompt_tokens": [100, 200_000, 50], "output_tokens": [10, 10, 5]})
    )
    r = simulate(parse_config({"model": "llama-2-70b", "fleet": {"gpu": "a100-80gb", "tp": 2}}), trace, measure_capacity=False)
    status = r.requests["status"].tolist()
    assert status == ["completed", "rejected", "completed"]
    assert "max context" in r.requests["reject_reason"].iloc[1]
    assert math.isnan(r.requests["first_token_at_s"].iloc[1])


def test_run_until_keeps_simpy_semantics():
    """The inlined dispatch loop: same order as `Environment.run`, stops at the event, re-raises a failed
    process's exception, and reports an exhausted schedule."""
    from sim.run.clock import CountingEnvironment

    def trace_of(runner):
        env = CountingEnvironment()
        seen = []

        def proc(name, delay):
            yield env.timeout(delay)
            seen.append((env.now, name))

        for i, d in enumerate([3, 1, 2, 1, 5]):
            env.process(proc(i, d))
        stop = env.timeout(4)
        runner(env, stop)
        return seen, env.now, env.events_processed()

    ours = trace_of(lambda env, stop: env.run_until(stop))
    simpys = trace_of(lambda env, stop: env.run(until=stop))
    assert ours[:2] == simpys[:2] and ours[0] == [(1, 1), (1, 3), (2, 2), (3, 0)]

    env = CountingEnvironment()

    def boom():
        yield env.timeout(1)
        raise ValueError("bad thing")

    env.process(boom())
    with pytest.raises(ValueError, match="bad thing"):
        env.run_until(env.timeout(10))
    env = CountingEnvironment()
    never = env.event()
    env.timeout(1)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run_until(never)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 5000)), min_size=1, max_size=60),
    st.integers(1, 400),
    st.sampled_from([1, 16, 128]),
    st.sampled_from([None, 512, 3000]),
    st.sampled_from([0, 3]),
    st.booleans(),
)
def test_the_trace_wide_admission_check_is_admission_reason(lengths, n_blocks, block_size, budget, watermark, whole):
    """`inadmissible` (numpy over the whole trace) rejects exactly the requests `admission_reason` would,
    with its reason. (budget None: chunked, admitting by the first 8192-token chunk or the whole prompt;
    else prefill_first with that budget.)"""
    from sim.run.engine.replica import admission_reason, inadmissible
    from sim.run.engine.scheduler import Limits

    p, o = np.array([x for x, _ in lengths]), np.array([y for _, y in lengths])
    limits = Limits(
        max_num_seqs=8,
        max_num_batched_tokens=8192 if budget is None else budget,
        block_size=block_size,
        n_blocks=n_blocks,
        watermark_blocks=min(watermark, n_blocks),
        whole_prompt=whole,
    )
    kw = {"max_context_tokens": 4096, "limits": limits, "chunks": budget is None}
    expected = {i: r for i, (x, y) in enumerate(lengths) if (r := admission_reason(x, y, **kw)) is not None}
    assert inadmissible(p, o, **kw) == expected
