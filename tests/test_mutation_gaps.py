"""Behaviour that mutation testing found unpinned: small, exact scenarios for the batching policies, the replica, the
speculative draws, the prefix cache, the batch lane, the KV-transfer link and the metrics."""

import numpy as np
import pandas as pd
import pytest
import simpy

from sim.results.metrics import GapDistribution
from sim.run.engine.kv import BlockKv
from sim.run.engine.prefix_cache import PrefixCache, Stamp
from sim.run.engine.records import RequestLog
from sim.run.engine.replica import Replica, inadmissible
from sim.run.engine.scheduler import Chunked, Limits, PrefillFirst
from sim.run.engine.sequence import Seq
from sim.run.engine.speculative import Acceptance
from sim.run.engine.step_time import ConstantStepTime
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.test_engine_units import tiny_scenario


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


def decoding(idx, prompt, generated=1, output=50):
    """A running sequence that has emitted `generated` tokens and caches all but its last one."""
    s = Seq(idx, float(idx), prompt, output)
    s.generated, s.computed = generated, prompt + generated - 1
    s.blocks = -(-(s.computed + 1) // 16)
    return s


# --- batching policies ------------------------------------------------------------------------------------------------


def test_chunked_admission_is_fcfs_a_prompt_that_does_not_fit_stops_it():
    """chunked admits prompt chunks in FCFS order: a waiting prompt whose first chunk's blocks do not fit stops
    admission; a smaller prompt behind it is not admitted past it."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=100, block_size=16)
    big, small = Seq(0, 0.0, 90, 5), Seq(1, 1.0, 10, 5)  # first chunks: 6 blocks, 1 block
    b = Chunked().next_batch([big, small], [], free_blocks=3, limits=limits)
    assert b.work == [] and b.admitted == []
    # with room for both, both are admitted, in order
    b = Chunked().next_batch([big, small], [], free_blocks=7, limits=limits)
    assert [(s.idx, n) for s, n in b.work] == [(0, 90), (1, 10)]


def test_chunked_plan_admission_is_fcfs_too():
    """The aggregate planner (`plan`, a decode group running) admits in the same FCFS way as `next_batch`."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=100, block_size=16)
    big, small = Seq(0, 0.0, 60, 5), Seq(1, 1.0, 10, 5)
    b = Chunked().plan([big, small], [], n_group=2, group_need=0, free_blocks=3, limits=limits)
    assert b is not None and b.group and b.admitted == []


def test_a_speculating_decoder_fits_a_budget_of_exactly_one_plus_its_drafts():
    """With lookahead k a decoding sequence's verify takes 1 + k tokens of the budget: a budget of exactly 1 + k
    schedules it; one token less does not."""
    s = decoding(0, 30)
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=3, block_size=16, lookahead=2)
    b = Chunked().next_batch([], [s], free_blocks=100, limits=limits)
    assert [(x.idx, n) for x, n in b.work] == [(0, 1)]
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=2, block_size=16, lookahead=2)
    b = Chunked().next_batch([], [decoding(0, 30)], free_blocks=100, limits=limits)
    assert b.work == [] and b.preempted == []


def test_a_speculating_decoder_spends_one_plus_its_drafts_of_the_budget():
    """Two speculating decoders with lookahead 2 and a budget of 5: the first takes 3 tokens of it, the second's
    verify (3) does not fit what is left (2) and is not scheduled."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=5, block_size=16, lookahead=2)
    b = Chunked().next_batch([], [decoding(0, 30), decoding(1, 30)], free_blocks=100, limits=limits)
    assert [(x.idx, n) for x, n in b.work] == [(0, 1)]
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=6, block_size=16, lookahead=2)
    b = Chunked().next_batch([], [decoding(0, 30), decoding(1, 30)], free_blocks=100, limits=limits)
    assert [(x.idx, n) for x, n in b.work] == [(0, 1), (1, 1)]


@pytest.mark.parametrize("how", ["next_batch", "plan"])
def test_prefill_first_admission_leaves_the_reserved_blocks(how):
    """`reserve` blocks of the free ones are not for admissions (prefix caching: cached entries the head hit): a
    prompt needing 3 blocks is admitted with 4 free and 1 reserved, not with 4 free and 2 reserved."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=100, block_size=16)

    def admitted(reserve):
        seq = Seq(0, 0.0, 40, 5)  # 3 blocks
        if how == "next_batch":
            b = PrefillFirst().next_batch([seq], [], 4, limits, reserve)
        else:
            b = PrefillFirst().plan([seq], [], 0, 0, 4, limits, reserve)
        return [s.idx for s in b.admitted]

    assert admitted(1) == [0]
    assert admitted(2) == []
    assert admitted(0) == [0]


# --- the replica ------------------------------------------------------------------------------------------------------


def test_inadmissible_counts_the_kv_slots_of_prompt_plus_output_minus_one():
    """A request needs prompt + output - 1 KV slots (its last token's KV is never stored): with 4 blocks of 16
    (64 slots), 50 + 15 fits exactly and 50 + 16 does not."""
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=1000, block_size=16, n_blocks=4)
    p, o = np.array([50, 50, 10, 49]), np.array([16, 15, 60, 16])
    bad = inadmissible(p, o, max_context_tokens=10_000, limits=limits, chunks=True)
    assert sorted(bad) == [0, 2]
    assert "needs 65 KV slots" in bad[0] and "needs 69 KV slots" in bad[2]
    assert bad == inadmissible(p, o, max_context_tokens=10_000, limits=limits, chunks=False)


def run_keeping_replicas(sc, trace):
    """simulate, and the replicas it built (to read their state once every request is resolved)."""
    got = []
    r = simulate(sc, trace, observe=lambda env, replicas: got.append(replicas), measure_capacity=False)
    return r, got[0]


@pytest.mark.parametrize("ff", [True, False])
@pytest.mark.parametrize(
    ("second", "blocks", "generated"),
    [((0.001, 90, 50), 14, 23), ((0.145, 100, 20), 13, 1)],  # the second preempted after 23 tokens, or after its first
)
def test_a_dropped_recompute_leaves_no_pending_prompt_tokens(ff, second, blocks, generated):
    """prefill_first drops a preempted sequence whose recompute outgrew the token budget; its prompt was prefilled
    already (its first token came), so the replica's pending prompt tokens (what a router reads) end at 0, and so
    does its count of outstanding requests."""
    r, replicas = run_keeping_replicas(
        tiny_scenario("prefill_first", fast_forward=ff, num_gpu_blocks_override=blocks), frame([(0.0, 90, 50), second])
    )
    assert r.requests["status"].tolist() == ["completed", "rejected"]
    assert r.requests["n_preemptions"].tolist() == [0, 1]
    assert f"recompute of {second[1] + generated} tokens exceeds" in r.requests["reject_reason"][1]
    assert [(x.pending_prompt_tokens, x.n_outstanding) for x in replicas] == [(0, 0)]


def bare_replica(n_blocks, *, block_size=16):
    log = RequestLog(np.zeros(1), np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int64))
    limits = Limits(max_num_seqs=64, max_num_batched_tokens=4096, block_size=block_size, n_blocks=n_blocks)
    return Replica(
        simpy.Environment(),
        replica_id=0,
        step_time=ConstantStepTime(prefill_s_per_token=1e-4, decode_step_s=0.01),
        policy=Chunked(),
        limits=limits,
        kv=BlockKv(n_blocks, block_size),
        log=log,
        max_context_tokens=1 << 20,
    )


def test_kv_steps_is_the_most_steps_the_free_blocks_feed():
    """`_kv_steps`: the largest k <= k_max whose block growth (each sequence ceil((computed + k) / block_size) less
    what it holds) fits the free blocks — checked against the count itself for every free-block count."""
    bs = 16
    for computed in ([16, 40, 70], [5, 31, 32, 100], [47]):
        for used in range(0, 40):
            replica = bare_replica(40, block_size=bs)
            seqs = []
            for i, c in enumerate(computed):
                s = Seq(i, 0.0, c, 500, generated=1, computed=c)
                s.blocks = -(-c // bs)
                seqs.append(s)
            replica.kv.used = used

            def need(k, seqs=seqs):
                return sum(max(0, -(-(s.computed + k) // bs) - s.blocks) for s in seqs)

            free = replica.kv.available()
            for k_max in (1, 2, 3, 7, 18, 33, 34, 100):
                if need(1) > free:
                    continue  # (the planner preempts before a run: a run always has its first step's blocks)
                expected = max(k for k in range(1, k_max + 1) if need(k) <= free)
                assert replica._kv_steps(seqs, k_max) == expected, (computed, used, k_max)


def roofline_scenario(fast_forward, mfu=None, **engine):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb", "tp": 1},
            "roofline": {"mfu": mfu},
            "engine": {"fast_forward": fast_forward, "step_time": {"kind": "roofline"}, **engine},
        }
    )


@pytest.mark.parametrize(
    ("mfu", "prompts"),
    [
        (0.03, (1700, 1800)),  # compute-bound at first, memory-bound later: the first run crosses the lines' split
        (0.02, (1700, 1800)),  # compute-bound throughout: every run ends before the split
        (None, (10, 400)),  # memory-bound throughout (split 0)
    ],
)
def test_fast_forward_gap_record_is_the_per_step_engines(mfu, prompts):
    """The fast-forward records a decode run's gaps as linear pieces on either side of the step line's split (where
    the compute and memory lines cross); the gap distribution they make (count, mean, spread, every percentile, min
    and max) is the per-step engine's."""
    rng = np.random.default_rng(3)
    n = 8
    trace = frame(list(zip(np.zeros(n), rng.integers(*prompts, n), rng.integers(350, 700, n), strict=True)))
    fast, slow = (simulate(roofline_scenario(ff, mfu), trace, measure_capacity=False) for ff in (True, False))
    assert fast.itl.a.size > 0 and slow.itl.a.size == 0  # (pieces in the fast-forward's record only)
    assert np.all(fast.itl.j1 > fast.itl.j0)  # a piece holds one gap at least (its extent is its first and last gap)
    assert fast.itl.count == slow.itl.count == int((trace["output_tokens"] - 1).sum())
    assert fast.itl.mean() == pytest.approx(slow.itl.mean(), rel=1e-9)
    assert fast.itl.std() == pytest.approx(slow.itl.std(), rel=1e-6)
    for q in (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100):
        assert fast.itl.percentile(q) == pytest.approx(slow.itl.percentile(q), rel=1e-9), q


def test_decoders_prefilled_together_share_one_first_gap_entry():
    """Eight requests prefilled in one step then decode in lock-step (the decode group, from their first token on):
    the fast-forward's gap record holds their run's first gap once, weighted by the eight that share it, and the
    run's other gaps as pieces — not one entry per sequence — while the gaps are the per-step engine's."""
    trace = frame([(0.0, 10, 50)] * 8)
    fast, slow = (simulate(tiny_scenario(fast_forward=ff), trace, measure_capacity=False) for ff in (True, False))
    assert fast.itl.count == slow.itl.count == 8 * 49
    assert fast.itl.singles.size == 1 and slow.itl.singles.size == 8 * 49
    assert fast.replicas.loc[0, "n_runs"] == 1 and fast.replicas.loc[0, "n_steps"] == 50
    assert fast.itl.mean() == pytest.approx(slow.itl.mean(), rel=1e-12)


def test_decoders_back_from_a_per_sequence_step_rejoin_the_group():
    """Fast-forward keeps lock-step decoders in the decode group: eight decoders leave it while a long prompt is
    prefilled in chunks beside them (those steps are planned per sequence), and once every running sequence decodes
    again all nine are in the group, none explicit; the outputs are the per-step engine's."""
    trace = frame([(0.0, 10, 200)] * 8 + [(0.1, 300, 200)])
    seen = []

    def observe(env, replicas):
        def sample():
            yield env.timeout(1.0)
            seen.append((replicas[0].group.n, len(replicas[0].running)))

        env.process(sample())

    fast = simulate(tiny_scenario(), trace, observe=observe, measure_capacity=False)
    slow = simulate(tiny_scenario(fast_forward=False), trace, measure_capacity=False)
    assert seen == [(9, 0)]
    for col in ("first_token_at_s", "completed_at_s"):
        assert fast.requests[col].to_numpy() == pytest.approx(slow.requests[col].to_numpy(), abs=1e-9)


# --- speculative decoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alphas", [[0.7, 0.5, 0.3], [0.1]])
@pytest.mark.parametrize("buffer", [4096, 7, 3])
def test_trajectories_consume_the_acceptance_stream_in_order(buffer, alphas):
    """`Acceptance.trajectory`: sequences take consecutive rows of the stream (drawn a block at a time: the same rows
    as one at a time), each as many verify steps as its tokens left need — the steps before its last emit fewer
    tokens than it has left, its last reaches them — whatever the block size."""
    alphas = np.array(alphas)
    acc = Acceptance(alphas, np.random.default_rng(11))
    acc.BUFFER = buffer
    ref = np.random.default_rng(11)
    lefts = [5, 1, 12, 3, 30, 2, 9, 1, 17, *np.random.default_rng(2).integers(1, 9, 60).tolist()]
    taken = []
    for i, left in enumerate(lefts):
        seq = Seq(i, 0.0, 10, left + 4, generated=4)
        acc.trajectory(seq)
        emitted = seq.traj_cum - seq.traj_cum[0]  # (the stream's running sum: the tokens by each step's start, and after)
        assert seq.traj_pos == 0 and np.array_equal(emitted, np.cumsum([0, *seq.traj]))
        assert emitted[-1] >= left and emitted[-2] < left
        taken.extend(seq.traj.tolist())
    expected = []
    for _ in taken:  # the stream one step at a time: 1 + the drafts whose joint acceptance chance exceeds its uniform
        u = ref.random()
        j, reach = 0, 1.0
        while j < len(alphas):
            reach *= alphas[j]
            if not u < reach:
                break
            j += 1
        expected.append(1 + j)
    assert taken == expected


@pytest.mark.parametrize("alphas", [[0.8, 0.7, 0.6, 0.5], [0.7, 0.7, 0.7, 0.7], [0.3], [1.0, 0.5], [0.9, 0.0, 0.9]])
def test_a_steps_accepted_drafts_follow_the_first_rejection_law(alphas):
    """One uniform a step: P(j drafts accepted) = alphas[0] ... alphas[j - 1] (1 - alphas[j]) (all k: the product), within
    five standard errors over 400,000 steps; a certain draft (1.0) is always accepted, an impossible one (0.0) never."""
    n = 400_000
    tokens = Acceptance(np.array(alphas), np.random.default_rng(3))._draw(n)
    law, reach = [], 1.0
    for a in alphas:
        law.append(reach * (1 - a))
        reach *= a
    law.append(reach)
    seen = np.bincount(tokens - 1, minlength=len(alphas) + 1) / n
    for p, q in zip(law, seen, strict=True):
        assert abs(p - q) <= 5 * (p * (1 - p) / n) ** 0.5 + 1e-12


def spec_scenario(fast_forward, blocks, alpha=0.6, policy="chunked"):
    spec = {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": alpha}
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "tp": 1},
            "engine": {
                "policy": policy,
                "fast_forward": fast_forward,
                "num_gpu_blocks_override": blocks,
                "max_num_batched_tokens": 2048,
                "step_time": {"kind": "roofline"},
                "speculative": spec,
            },
        }
    )


def sampled_run(sc, trace, every=0.0173, n=3000):
    """simulate, sampling replica 0's KV blocks in use (and steps into its run) every `every` seconds."""
    samples = []

    def observe(env, replicas):
        def sampler():
            for _ in range(n):
                yield env.timeout(every)
                samples.append((replicas[0].kv_blocks_used_at(env.now), replicas[0].kv.used))

        env.process(sampler())

    return simulate(sc, trace, observe=observe, measure_capacity=False), samples


@pytest.mark.parametrize(("blocks", "policy"), [(4000, "chunked"), (120, "chunked"), (120, "prefill_first")])
def test_speculative_fast_forward_long_decodes_and_kv_observation_match_the_reference(blocks, policy):
    """Speculative runs over hundreds of group steps (the group's window of per-step sums moves on), arrivals that cut
    runs at a step boundary, and (with a small cache) members leaving the group for per-sequence steps and
    preemptions: every request's instants, the steps and verify counts, and the KV blocks in use read mid-run, are
    the per-step engine's."""
    rng = np.random.default_rng(4)
    n = 10
    trace = frame(list(zip(np.sort(rng.uniform(0, 4, n)), rng.integers(20, 300, n), rng.integers(300, 1400, n), strict=True)))
    (fast, fs), (slow, ss) = (sampled_run(spec_scenario(ff, blocks, policy=policy), trace) for ff in (True, False))
    for col in ("scheduled_at_s", "first_token_at_s", "completed_at_s"):
        assert np.max(np.abs(fast.requests[col].to_numpy() - slow.requests[col].to_numpy())) <= 1e-9, col
    assert fast.requests["n_preemptions"].tolist() == slow.requests["n_preemptions"].tolist()
    a, b = fast.summary(), slow.summary()
    assert a["n_steps"] == b["n_steps"] and a["spec_tokens_per_verify_step"] == b["spec_tokens_per_verify_step"]
    assert [x for x, _ in fs] == [x for x, _ in ss]
    assert max(x for x, _ in fs) > 0


def test_an_arrival_cuts_a_two_step_speculative_run_at_its_first_boundary():
    """Speculative decoding at acceptance 0 (one token a verify step of 0.02 + 3 x 1e-4 s): A's prompt (0.01 s), a run
    of 64 verify steps, then a run of the 2 steps A has left. B arrives during that run's first step: it is scheduled at
    that step's end, as the per-step engine schedules it, not after the run."""
    a_pre, step = 100 * 1e-4, 0.02 + 3 * 1e-4
    second = a_pre + 64 * step
    trace = frame([(0.0, 100, 1 + 64 + 2), (second + step / 2, 50, 3)])
    spec = {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.0}
    runs = []
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "llama-3.1-8b",
                "fleet": {"gpu": "h100-sxm", "tp": 1},
                "engine": {
                    "fast_forward": ff,
                    "step_time": {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02},
                    "speculative": spec,
                },
            }
        )
        runs.append(simulate(sc, trace, measure_capacity=False).requests)
    fast, slow = runs
    assert fast["scheduled_at_s"][1] == pytest.approx(second + step, abs=1e-9)
    for col in ("scheduled_at_s", "first_token_at_s", "completed_at_s"):
        assert fast[col].to_numpy() == pytest.approx(slow[col].to_numpy(), abs=1e-9)


# --- prefix caching ---------------------------------------------------------------------------------------------------


def test_a_prefix_match_stays_within_full_hash_blocks_and_short_of_the_last_token():
    """`PrefixCache.limit`: the leading cached ids a sequence may use lie within its prompt's full hash blocks (a partial last
    block is never a hit, even for a recompute whose generated tokens fill it) and short of its last known token."""
    cache = PrefixCache(hash_tokens=512, block_size=16)
    hashes = [1, 2, 3]
    assert cache.insert(cache.root, hashes, 3, Stamp(0.0, 0))[0] == 3

    def match(prompt, generated=0):
        return cache.match(hashes, cache.limit(Seq(0, 0.0, prompt, 10, generated=generated)))

    assert match(1024) == 1  # two full blocks, but the last token of the second must be computed
    assert match(1025) == 2
    assert match(1000, generated=100) == 1  # a recompute: 1099 tokens known, the prompt's full blocks: 1
    assert match(1536, generated=5) == 3
    assert match(511, generated=600) == 0


# --- the batch lane ---------------------------------------------------------------------------------------------------


def batch_lane(n, *, priority=None, arrival=None, deadline=None, cap=4, guard=None, cold_start_s=0.0, rate=100.0):
    """A lane over n batch requests, its pool a stand-in with one ready replica that records what it is given."""
    from types import SimpleNamespace

    from sim.run.fleet.batch import BatchLane

    env = SimpleNamespace(now=0.0)
    given = []
    engine = SimpleNamespace(replica_id=7, enqueue=given.append)
    pool = SimpleNamespace(
        inadmissible={}, ready=[SimpleNamespace(engine=engine)], coming=lambda: 0, held=lambda: 1, max_replicas=1, starting=[]
    )
    lane = BatchLane(
        env,
        SimpleNamespace(
            status=np.zeros(n, dtype=np.int8),
            arrival_at_s=np.asarray(arrival if arrival is not None else np.arange(n, dtype=float)),
            prompt_tokens=np.full(n, 10),
            output_tokens=np.full(n, 5),
            first_token_at_s=np.full(n, np.nan),
            completed_at_s=np.full(n, np.nan),
        ),
        pool=pool,
        priority=np.asarray(priority if priority is not None else np.zeros(n, dtype=np.int64)),
        hashes=None,
        deadline_at_s=np.asarray(deadline if deadline is not None else np.full(n, 100.0)),
        n_batch=n,
        cap=cap,
        guard=guard,
        replica_tokens_per_s=rate,
        cold_start_s=cold_start_s,
    )
    lane._pump_due = True  # (dispatch only when the test pumps)
    return env, lane, given


def test_the_lane_dispatches_engine_sequences_with_the_requests_own_fields_in_key_order():
    """A dispatched batch request becomes an engine sequence carrying its index, arrival, prompt and output tokens,
    priority and the batch mark, handed out by (priority, arrival, index) up to the replica's cap."""
    _env, lane, given = batch_lane(5, priority=[1, 1, 0, 1, 0], arrival=[0.5, 1.5, 2.5, 3.5, 4.5], cap=3)
    for idx in range(5):
        lane.add(idx)
    lane._pump()
    assert [(s.idx, s.arrival_at_s, s.prompt_tokens, s.output_tokens, s.priority, s.batch) for s in given] == [
        (2, 2.5, 10, 5, 0, True),
        (4, 4.5, 10, 5, 0, True),
        (0, 0.5, 10, 5, 1, True),
    ]
    assert lane.n_queued == 2 and lane._held == {7: 3}


def test_in_order_submissions_queue_in_the_fifo_and_all_pop_in_key_order():
    """A job submitted at once arrives in key order: its requests stay in the compact FIFO (8 bytes each, no heap);
    a more urgent request arriving later goes to the heap; popping interleaved with adds (the FIFO's consumed head
    dropped now and then) always yields the smallest key queued."""
    import heapq

    n = 9000
    rng = np.random.default_rng(1)
    priority = np.where(rng.random(n) < 0.05, 0, 1)
    priority[:5000] = 1
    _env, lane, _ = batch_lane(n, priority=priority)
    for idx in range(5000):
        lane.add(idx)
    assert lane._heap == [] and len(lane._fifo) == 5000
    ref = [(1, float(i), i) for i in range(5000)]
    popped, expected = [], []
    for idx in range(5000, n):
        lane.add(idx)
        heapq.heappush(ref, (int(priority[idx]), float(idx), idx))
        if idx % 2:
            popped.append(lane._pop())
            expected.append(heapq.heappop(ref)[2])
    while ref:
        popped.append(lane._pop())
        expected.append(heapq.heappop(ref)[2])
    assert popped == expected and lane.n_queued == 0


def test_a_deadline_stays_pending_until_its_last_request_resolves():
    """`earliest_deadline`: the earliest deadline among submitted, unresolved batch requests, each deadline counted
    by its requests."""
    from sim.run.engine.records import COMPLETED

    _env, lane, _ = batch_lane(4, deadline=[100.0, 50.0, 100.0, 50.0])
    for idx in range(4):
        lane.add(idx)
    lane.log.status[:] = COMPLETED
    assert lane.earliest_deadline() == 50.0
    lane._done(Seq(1, 0.0, 10, 5, 0, True))
    assert lane.earliest_deadline() == 50.0
    lane._done(Seq(3, 0.0, 10, 5, 0, True))
    assert lane.earliest_deadline() == 100.0
    lane._done(Seq(0, 0.0, 10, 5, 0, True))
    assert lane.earliest_deadline() == 100.0
    lane._done(Seq(2, 0.0, 10, 5, 0, True))
    assert lane.earliest_deadline() is None and lane.remaining_tokens == 0 and lane.n_done == 4


def test_deadline_scaling_adds_no_replica_whose_cold_start_ends_at_the_deadline():
    """0.8 of the 1,000 s left is 800 s; a cold start of 800 s would serve nothing: the ask is the ready replica alone
    (the job is reported late), with a shorter cold start new replicas are added."""
    _env, lane, _ = batch_lane(1, cold_start_s=800.0)
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 200_000
    assert lane.replicas_needed(1) == 1
    _env, lane, _ = batch_lane(1, cold_start_s=700.0)
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 200_000
    assert lane.replicas_needed(1) == 1 + 12  # 120,000 left over 100 useful s at 100 tok/s
    _env, lane, _ = batch_lane(1, cold_start_s=799.5)
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 200_000
    assert lane.replicas_needed(1) == 1 + 2400  # half a useful second each


def test_a_tpot_only_guard_reads_the_interactive_p99_tpot():
    """A guard with only a TPOT target (50 ms) ignores TTFT; TPOT is (completion - first token) / (output - 1): 11-token
    requests at 46 ms and at exactly 50 ms are within the target (the cap doubles: slow start), at 55 ms over it (the
    cap halves)."""
    from types import SimpleNamespace

    _env, lane, _ = batch_lane(6, cap=8, guard=(None, 0.05))
    lane.watch = SimpleNamespace(completed=[])
    log = lane.log
    log.arrival_at_s[:] = 0.0
    log.output_tokens[:] = 11
    log.first_token_at_s[:] = 30.0  # a TTFT of 30 s: no TTFT target, no objection
    log.completed_at_s[:] = [30.46, 30.46, 30.5, 30.5, 30.55, 30.55]
    caps = []
    for pair in ([0, 1], [2, 3], [4, 5]):
        lane.watch.completed.extend(pair)
        lane.guard_tick()
        caps.append(lane.cap)
    assert caps == [2, 4, 2] and not lane._slow_start


# --- disaggregation ---------------------------------------------------------------------------------------------------


def disagg_scenario(decode_blocks, n_decode=2):
    step = {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02}
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "tp": 1,
                "mode": "disaggregated",
                "prefill": {"autoscaler": {"policy": "fixed", "replicas": 1}},
                "decode": {
                    "autoscaler": {"policy": "fixed", "replicas": n_decode},
                    "engine": {"policy": "chunked", "num_gpu_blocks_override": decode_blocks, "step_time": step},
                },
                "link": {"preset": "infiniband_400g"},
            },
            "engine": {"policy": "chunked", "max_num_batched_tokens": 8192, "step_time": step},
        }
    )


def test_a_blocked_transfer_starts_when_a_decode_replica_frees_room():
    """Two decode replicas with room for one 1000-token sequence each: A and B take them, C's transfer waits
    (backpressure) and starts the instant A — the first to finish — frees its replica, not when B does; a one-token
    request ends at its prefill and makes no transfer (its transfer instants stay NaN)."""
    trace = frame([(0.0, 1000, 5), (0.0, 1000, 40), (0.0, 1000, 10), (0.0, 200, 1)])
    r = simulate(disagg_scenario(100), trace, measure_capacity=False)
    q = r.requests
    assert q["status"].eq("completed").all()
    a, b, c = (q.iloc[i] for i in range(3))
    assert a["decode_replica_id"] != b["decode_replica_id"] and c["decode_replica_id"] == a["decode_replica_id"]
    assert c["transfer_start_at_s"] == a["completed_at_s"] < b["completed_at_s"]
    assert r.meta["link"]["peak_transfers_waiting"] >= 1
    single = q.iloc[3]
    assert single["decode_replica_id"] == -1 and np.isnan(single["transfer_start_at_s"]) and np.isnan(single["transfer_end_at_s"])
    assert q["transfer_start_at_s"].dtype == np.float64
    assert r.summary()["kv_transfers"] == 3


# --- the fleet --------------------------------------------------------------------------------------------------------


def test_requests_queued_while_the_first_replica_cold_starts_launch_no_other():
    """Scale from zero: the first request launches one replica (the activator); those that arrive while it cold-starts
    wait in the fleet queue without launching more (one is coming), and all are served by it once ready."""
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "a100-80gb",
                "autoscaler": {"policy": "queue", "min_replicas": 0, "max_replicas": 3, "initial_replicas": 0, "interval_s": 900},
                "lifecycle": {"provision_s": 10, "image_pull_s": 5, "warmup_s": 5},
            },
            "engine": {"step_time": {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.01}},
        }
    )
    r = simulate(sc, frame([(0.0, 100, 10), (1.0, 100, 10), (2.0, 100, 10), (5.0, 100, 10)]), measure_capacity=False)
    assert len(r.replicas) == 1 and r.replicas["provision_at_s"].tolist() == [0.0]
    ready = r.replicas["ready_at_s"].iloc[0]
    assert ready > 5.0
    assert r.requests["status"].eq("completed").all() and r.requests["scheduled_at_s"].min() == pytest.approx(ready)


# --- metrics ----------------------------------------------------------------------------------------------------------


def test_a_class_with_nothing_completed_has_zero_rates_and_its_keys():
    """Per class: counts, TTFT / TPOT / E2E latency as mean, median, p90 and p99 (no spread), throughput and goodput
    over the class's own duration — 0 for a class none of whose requests completed (its duration is 0), not a
    division by zero nor a rate."""
    from sim.results.metrics import class_summary
    from sim.states import STATUS_LABELS, RequestStatus

    ok, no, nan = int(RequestStatus.COMPLETED), int(RequestStatus.REJECTED), np.nan
    r = pd.DataFrame(
        {
            "arrival_at_s": [0.0, 1.0, 2.0, 3.0],
            "first_token_at_s": [0.1, 1.2, nan, nan],
            "completed_at_s": [1.0, 3.0, nan, nan],
            "prompt_tokens": [10] * 4,
            "output_tokens": [11] * 4,
            "status": pd.Categorical.from_codes([ok, ok, no, no], categories=STATUS_LABELS),
            "klass": ["interactive", "interactive", "batch", "batch"],
        }
    )
    s = class_summary(r, slo={"ttft": 500.0})
    batch, inter = s["batch"], s["interactive"]
    assert (batch["requests"], batch["completed"], batch["rejected"], batch["duration"]) == (2, 0, 2, 0.0)
    assert batch["request_throughput"] == 0.0 and batch["request_goodput"] == 0.0 and batch["slo_attainment"] == 0.0
    assert inter["request_throughput"] == pytest.approx(2 / 3.0) and inter["request_goodput"] == pytest.approx(2 / 3.0)
    latency = {f"{stat}_{m}_ms" for m in ("ttft", "tpot", "e2el") for stat in ("mean", "median", "p90", "p99")}
    rates = {"request_throughput", "request_goodput", "slo_attainment"}
    assert set(inter) == {"requests", "completed", "rejected", "duration", "total_output_tokens"} | rates | latency
    assert set(batch) == set(inter) and batch["mean_ttft_ms"] is None
    assert inter["p99_tpot_ms"] == pytest.approx(np.percentile([90.0, 180.0], 99))


def test_gap_percentiles_are_numpys_over_the_expanded_gaps(gap_search):
    """`GapDistribution.percentile`: numpy's percentile (linear interpolation) of every gap the record holds —
    weighted singles and rising, falling and flat pieces, some wholly above or below the others, some sharing
    values with them."""
    rng = np.random.default_rng(8)
    singles = rng.uniform(0.01, 0.05, 40).round(3).tolist()
    grouped = [(float(v), int(w)) for v, w in zip(rng.uniform(0.01, 0.05, 15).round(3), rng.integers(1, 6, 15), strict=True)]
    pieces = []
    for _ in range(30):
        a, b = float(rng.uniform(0.005, 0.2)), float(rng.choice([-1e-4, 0.0, 2e-4, 1e-3]))
        j0 = int(rng.integers(1, 20))
        pieces.append((a, b, j0, j0 + int(rng.integers(1, 40)), int(rng.integers(1, 4))))
    pieces += [(0.5, 0.0, 1, 9, 3), (0.001, 0.0, 1, 4, 2), (0.03, 0.001, 1, 30, 1)]
    gaps = GapDistribution.from_lists(singles, pieces, grouped)
    expanded = list(singles)
    for v, w in grouped:
        expanded += [v] * w
    for a, b, j0, j1, w in pieces:
        expanded += [a + b * j for j in range(j0, j1) for _ in range(w)]
    assert gaps.count == len(expanded)
    for q in (0, 0.5, 5, 25, 50, 63.7, 90, 99, 99.9, 100):
        assert gaps.percentile(q) == pytest.approx(np.percentile(expanded, q), rel=1e-9, abs=1e-12), q
