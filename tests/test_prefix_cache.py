"""Automatic prefix caching: exact hits and prefill savings on a hand-built trace, an unbounded cache's hit rate
against the trace itself, LRU eviction order, pins released, a preempted sequence hitting its own blocks,
fast-forward = per-step reference, and the prefix-aware router's rule."""

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.policies.router import prefix_choice
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests

A, D, T = 1e-3, 0.01, 64  # constant step time (s per prompt token, s per decode step); tokens per hash id


def scenario(*, blocks=None, step="constant", replicas=1, router="least_outstanding", **engine):
    st_ = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D} if step == "constant" else {"kind": "roofline"}
    eng = {"prefix_caching": True, "prefix_hash_block_tokens": T, "block_size": 16, "watermark": 0.0, "step_time": st_, **engine}
    if blocks is not None:
        eng["num_gpu_blocks_override"] = blocks
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "router": router, "autoscaler": {"policy": "fixed", "replicas": replicas}},
            "engine": eng,
        }
    )


def trace(rows):
    """rows: (arrival, prompt, output, hash ids)."""
    frame = pd.DataFrame(
        {
            "arrival_at_s": [r[0] for r in rows],
            "prompt_tokens": [r[1] for r in rows],
            "output_tokens": [r[2] for r in rows],
        }
    )
    frame = validate_frame(frame)
    frame["prefix_hash_ids"] = [np.asarray(r[3], dtype=np.int64) for r in rows]
    return frame


def test_hits_and_prefill_savings_on_a_hand_built_trace():
    rows = [
        (0.0, 256, 2, [1, 2, 3, 4]),
        (10.0, 200, 2, [1, 2, 9, 10]),  # shares two blocks with the first
        (20.0, 256, 2, [1, 2, 3, 4]),  # all four cached, but one token must be computed: three blocks hit
        (30.0, 100, 2, [7, 8]),  # nothing shared
    ]
    result = simulate(scenario(), trace(rows), measure_capacity=False)
    r = result.requests
    assert r["cached_tokens"].tolist() == [0, 128, 192, 0]
    computed = [256, 200 - 128, 256 - 192, 100]
    assert (r["first_token_at_s"] - r["arrival_at_s"]).tolist() == pytest.approx([n * A for n in computed])
    assert result.meta["prefix_cache"]["prefill_tokens_saved"] == 128 + 192
    s = result.summary()
    assert s["prefix_hit_rate_tokens"] == pytest.approx(320 / (256 + 200 + 256 + 100))
    assert s["prefix_hit_rate_blocks"] == pytest.approx(5 / 14)  # hit ids over ids looked up


def test_an_unbounded_cache_hits_every_full_block_seen_before():
    rng = np.random.default_rng(7)
    # prefix-chained ids: each request walks a random path down a small tree (equal ids = equal prefixes)
    children: dict[tuple[int, ...], list[int]] = {}
    next_id = [0]
    rows, t = [], 0.0
    for _ in range(300):
        depth = int(rng.integers(1, 7))
        path: list[int] = []
        for _ in range(depth):
            kids = children.setdefault(tuple(path), [])
            if kids and rng.random() < 0.7:
                path.append(int(rng.choice(kids)))
            else:
                kids.append(next_id[0])
                path.append(next_id[0])
                next_id[0] += 1
        prompt = (depth - 1) * T + int(rng.integers(1, T + 1))  # the last block partial or full
        rows.append((t, prompt, int(rng.integers(1, 5)), path))
        t += 5.0  # each request done before the next: the cache holds everything earlier prompts computed
    result = simulate(scenario(blocks=1_000_000), trace(rows), measure_capacity=False)
    seen: set[int] = set()
    expected = []
    for _, prompt, _, ids in rows:  # independently: leading ids cached as full blocks of earlier prompts
        m = 0
        while m < min(len(ids), (prompt - 1) // T) and ids[m] in seen:
            m += 1
        expected.append(m * T)
        seen.update(ids[: prompt // T])
    assert result.requests["cached_tokens"].tolist() == expected
    assert result.meta["prefix_cache"]["evicted_entries"] == 0


def test_lru_eviction_order_on_a_small_cache():
    # 20 blocks of 16 tokens; a hash id holds 4; each request holds 2 full ids + 1 partial block + its output
    x, y, z = [1, 2], [3, 4], [5, 6]
    order = [x, y, z, z, y, x, z]
    rows = [(10.0 * i, 2 * T + 1, 2, ids) for i, ids in enumerate(order)]
    result = simulate(scenario(blocks=20), trace(rows), measure_capacity=False)
    # X, Y cached; Z evicts X's ids (oldest); Z and Y hit; X misses and evicts Z's (least recently used: 5, 6);
    # the last Z misses and evicts Y's
    assert result.requests["cached_tokens"].tolist() == [0, 0, 0, 128, 128, 0, 0]
    assert result.meta["prefix_cache"]["evicted_entries"] == 6


def test_a_burst_behind_the_head_hits_entries_no_one_pins():
    """vLLM's scheduler matches each waiting request in turn (`get_computed_blocks` before `allocate_slots`), so
    every request a step admits hits the cached blocks of prompts served earlier, not only the queue's head: a
    benchmark rerun at an unbounded rate (all prompts at once, the cache warm) prefills only each prompt's last
    token. Two prompts served and done, then both again and a new one at one instant: all three admitted in one
    step, the two cached ones hitting two ids each."""
    rows = [(0.0, 2 * T + 1, 2, [1, 2]), (1.0, 2 * T + 1, 2, [3, 4])]
    rows += [(10.0, 2 * T + 1, 2, [1, 2]), (10.0, 2 * T + 1, 2, [3, 4]), (10.0, 2 * T + 1, 2, [5, 6])]
    r = simulate(scenario(), trace(rows), measure_capacity=False).requests
    assert r["cached_tokens"].tolist() == [0, 0, 128, 128, 0]
    first = (r["first_token_at_s"] - 10.0).tolist()[2:]
    assert first == pytest.approx([(1 + 1 + 2 * T + 1) * A] * 3)  # one step: 1 + 1 + 129 prompt tokens


def test_behind_the_head_hits_on_evictable_entries_count_against_the_room_as_in_vllm():
    """vLLM counts the evictable blocks a request hits against the free blocks it allocates from
    (`num_evictable_computed_blocks`), so a full cache of unpinned entries is room too: 57 blocks, seven 2-id prompts
    served (the cache full of their entries), then two of them again at once behind each other, both hit. With 17
    blocks and a new 160-token prompt at the head (10 blocks, evicting entries), the warm prompt behind it would take
    the head's room with its hit: it pins nothing this step, the head's allocation evicts (least recently used) the
    other prompt and the tail of this one, and it is admitted a step later with what is left (one id)."""
    junk = [(0.1 * i, 2 * T + 1, 2, [100 + 2 * i, 101 + 2 * i]) for i in range(5)]
    rows = [*junk, (1.0, 2 * T + 1, 2, [1, 2]), (1.1, 2 * T + 1, 2, [3, 4])]
    rows += [(10.0, 2 * T + 1, 2, [1, 2]), (10.0, 2 * T + 1, 2, [3, 4]), (10.0, 2 * T + 1, 2, [5, 6])]
    r = simulate(scenario(blocks=57), trace(rows), measure_capacity=False).requests
    assert r["cached_tokens"].tolist()[-3:] == [128, 128, 0]
    rows = [(0.0, 2 * T + 1, 2, [1, 2]), (1.0, 2 * T + 1, 2, [3, 4])]
    rows += [(10.0, 160, 2, [7, 8]), (10.0, 2 * T + 1, 2, [3, 4])]
    r = simulate(scenario(blocks=17), trace(rows), measure_capacity=False).requests
    assert r["cached_tokens"].tolist() == [0, 0, 0, 64]  # the head's allocation evicted the tail of its prefix
    head, behind = r["first_token_at_s"].tolist()[2:]
    assert head == pytest.approx(10.0 + 160 * A)
    assert behind > head


def test_under_async_scheduling_the_blocks_given_back_this_instant_are_not_room_for_hits():
    """Async scheduling hides the seats and blocks a finishing request gives back at this instant from the step being
    planned (`Replica._plan`). The room a hit behind the head may take counts without them: here a 320-token request
    finishes (21 blocks held back) as two warm prompts become visible; the head is admitted at once with its hit, where
    counting the held blocks let the request behind it pin the evictable entries the head's room needed, and the head
    waited a step (the fast-forward and the per-step engine alike)."""
    rows = [(0.0, 2 * T + 1, 2, [1, 2]), (0.001, 2 * T + 1, 2, [3, 4]), (1.0, 16, 200, [900]), (1.0, 320, 5, [])]
    rows += [(1.461, 2 * T + 1, 2, [1, 2]), (1.461, 2 * T + 1, 2, [3, 4])]
    engine = {"async_scheduling": True, "max_num_batched_tokens": 32, "max_num_seqs": 8}
    runs = [simulate(scenario(blocks=39, fast_forward=ff, **engine), trace(rows), measure_capacity=False) for ff in (True, False)]
    assert_same_requests(*runs)
    r = runs[0].requests
    done_320 = r["completed_at_s"].iloc[3]
    assert r["scheduled_at_s"].iloc[4] == pytest.approx(done_320)  # the head, at the boundary the 320-token one ends
    assert r["cached_tokens"].iloc[4] == 128


def test_pins_are_released_and_no_block_leaks():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(200):
        base = int(rng.integers(0, 5))
        ids = [base * 100 + j for j in range(int(rng.integers(1, 8)))]
        rows.append((i * 0.05, len(ids) * T, int(rng.integers(1, 60)), ids))
    engines = []
    result = simulate(
        scenario(blocks=300, step="roofline"), trace(rows), measure_capacity=False, observe=lambda env, reps: engines.extend(reps)
    )
    assert result.summary()["completed"] == 200 and result.meta["prefix_cache"]["pinned_at_end"] == 0
    for e in engines:
        cache = e.kv.cache
        assert all(rc == 0 for rc in cache.entries.values())
        assert e.kv.used == len(cache.entries) * cache.blocks_per_entry  # only cached blocks remain


def test_a_preempted_sequence_hits_its_own_blocks():
    # two long decodes on a small cache: one is preempted after its prompt was cached and recomputes with a hit
    rows = [(0.0, 4 * T, 400, [1, 2, 3, 4]), (0.0, 4 * T, 400, [5, 6, 7, 8])]
    result = simulate(scenario(blocks=70, policy="chunked"), trace(rows), measure_capacity=False)
    r = result.requests
    assert r["n_preemptions"].sum() > 0
    assert result.meta["prefix_cache"]["prefill_tokens_saved"] > r["cached_tokens"].sum()  # the recompute hit
    assert result.summary()["completed"] == 2


@settings(
    max_examples=int(os.environ.get("FLEETSIM_EXAMPLES", "10")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    blocks=st.integers(80, 400),
    replicas=st.integers(1, 2),
    router=st.sampled_from(["least_outstanding", "prefix_aware"]),
)
def test_fast_forward_equals_the_per_step_reference_with_prefix_caching(seed, blocks, replicas, router):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(120):
        base = int(rng.integers(0, 6))
        n = int(rng.integers(1, 6))
        rows.append((i * 0.02, n * T + int(rng.integers(0, T)), int(rng.integers(1, 40)), [base * 100 + j for j in range(n + 1)]))
    tr = trace(rows)

    def run(ff):
        return simulate(
            scenario(blocks=blocks, step="roofline", replicas=replicas, router=router, fast_forward=ff),
            tr,
            measure_capacity=False,
        )

    fast, slow = run(True), run(False)
    assert_same_requests(fast, slow)
    assert fast.requests["cached_tokens"].tolist() == slow.requests["cached_tokens"].tolist()


def test_the_prefix_aware_rule():
    assert prefix_choice([3, 1, 5], [2, 0, 9], slack=2) == 0  # 5 is beyond the slack; of the rest, the longer match
    assert prefix_choice([3, 1, 5], [2, 0, 9], slack=4) == 2
    assert prefix_choice([2, 2], [1, 1], slack=0) == 0
    assert prefix_choice([4, 2], [0, 0], slack=8) == 1  # no match anywhere: the least loaded


def test_the_html_report_shows_the_prefix_cache():
    from sim.results.html_report import render_html

    rows = [(0.0, 256, 2, [1, 2, 3, 4]), (10.0, 256, 2, [1, 2, 3, 4])]
    page = render_html(simulate(scenario(), trace(rows), measure_capacity=False))
    assert 'id="prefix"' in page


def test_a_release_evicts_the_tail_of_its_chain_first():
    """vLLM frees a request's blocks in reverse order "so that the tail blocks are evicted first" (SGLang evicts
    radix-tree leaves): evicting one entry of a released chain keeps its head reachable."""
    from sim.run.engine.prefix_cache import PrefixCache, Stamp

    cache = PrefixCache(hash_tokens=64, block_size=16)
    chain = [7, 3, 9]  # ids in chain order, not in numeric order
    n, node = cache.insert(cache.root, chain, 3, Stamp(0.0, 0))
    assert n == 3
    cache.unpin(node, Stamp(1.0, 0))
    assert cache.evict(4) == 4 and set(cache.entries) == {7, 3}
    assert cache.match(chain, 3) == 2
    assert cache.evict(5) == 8 and cache.entries == {} and cache.n_unpinned == 0


def chain_ids(parent: list[int], leaf: int) -> list[int]:
    """The prefix-chained ids of a random tree's node `leaf` (`parent[i]` its parent, -1 the root's): its ancestors'
    ids from the root down, then its own (node i's id i + 100)."""
    out = []
    while leaf >= 0:
        out.append(leaf + 100)
        leaf = parent[leaf]
    return out[::-1]


class _ReferenceCache:
    """The eviction rule, entry by entry: evict the unpinned entry with the least (release time, request index,
    -position in its chain)."""

    def __init__(self):
        self.rc, self.key = {}, {}

    def release(self, ids, now=None, idx=None):
        for pos, h in enumerate(ids):
            self.rc[h] -= 1
            if now is not None:
                self.key[h] = max(self.key[h], (now, idx, -pos))

    def evict(self, n):
        for _ in range(n):
            free = [h for h, rc in self.rc.items() if rc == 0]
            if not free:
                return
            h = min(free, key=self.key.__getitem__)
            del self.rc[h], self.key[h]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_group_heap_evicts_as_the_entry_by_entry_rule(data):
    """`PrefixCache` keeps one heap item per release; on random admissions, releases, tentative matches given back and
    evictions over prefix-chained ids (a random tree) it evicts exactly the entries the entry-by-entry rule does."""
    from sim.run.engine.prefix_cache import PrefixCache, Stamp

    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, 40)]  # a tree of ids 0..39, 0 the root

    cache, ref = PrefixCache(hash_tokens=64, block_size=16), _ReferenceCache()
    active, now = [], 0.0
    for step in range(data.draw(st.integers(5, 60))):
        op = data.draw(st.sampled_from(["admit", "admit", "release", "tentative", "evict"]))
        now += data.draw(st.sampled_from([0.0, 1.0]))  # releases in one instant too
        if op in ("admit", "tentative"):
            ids = chain_ids(parent, int(rng.integers(0, 40)))
            limit = data.draw(st.integers(0, len(ids)))  # (a match may end inside a cached run: it is split there)
            pinned_only = data.draw(st.booleans())
            hit = next((i for i, h in enumerate(ids) if h not in ref.rc or (pinned_only and ref.rc[h] == 0)), len(ids))
            assert cache.match(ids, limit, pinned_only=pinned_only) == min(hit, limit)
            m, node = cache.pin_match(ids, limit, pinned_only=pinned_only)
            assert m == min(hit, limit) and node.end == m
            for h in ids[:m]:
                ref.rc[h] += 1
            if op == "tentative":
                cache.unpin(node)
                ref.release(ids[:m])
                continue
            n, node = cache.insert(node, ids, len(ids), Stamp(now, step))
            assert n == (0 if m < len(ids) and ids[m] in ref.rc else len(ids) - m)  # (cached already: it stops)
            for pos in range(m, m + n):
                ref.rc[ids[pos]], ref.key[ids[pos]] = 1, (now, step, -pos)
            active.append((step, ids[: m + n], node))
        elif op == "release" and active:
            idx, pins, node = active.pop(int(rng.integers(0, len(active))))
            cache.unpin(node, Stamp(now, idx))
            ref.release(pins, now, idx)
        elif op == "evict":
            k = data.draw(st.integers(1, 6))
            cache.evict(4 * k)
            ref.evict(k)
        assert cache.entries == ref.rc
        assert cache.n_unpinned == sum(rc == 0 for rc in ref.rc.values())


def test_an_id_is_an_entry_at_its_place_in_the_chain_and_a_continuation_cached_already_stays_private():
    """Ids stand for their whole prefix (vLLM's block hashes chain their parent's): the same id under another prefix
    (a trace whose ids are not prefix-chained) is another entry. A sequence whose continuation another cached
    meanwhile caches nothing (its blocks stay its own) and its pins end where they were."""
    from sim.run.engine.prefix_cache import PrefixCache, Stamp

    cache = PrefixCache(hash_tokens=64, block_size=16)
    assert cache.insert(cache.root, [5], 1, Stamp(0.0, 0))[0] == 1
    n, node = cache.insert(cache.root, [1, 2, 5, 6], 4, Stamp(1.0, 1))
    assert n == 4 and node.ids == [1, 2, 5, 6] and node.end == 4
    assert cache.match([5, 6], 2) == 1 and cache.match([1, 2, 5, 7], 4) == 3
    m, head = cache.pin_match([1, 2, 5, 7], 4)  # ends inside the run [1, 2, 5, 6]: split after 5
    assert m == 3 and head.ids == [1, 2, 5] and node.ids == [6] and node.parent is head
    assert cache.insert(head, [1, 2, 5, 6, 8], 5, Stamp(2.0, 2)) == (0, head)  # 6 is cached under it already
    n, tail = cache.insert(head, [1, 2, 5, 7], 4, Stamp(2.0, 2))
    assert (n, tail.ids, tail.end) == (1, [7], 4)
    assert cache.insert(tail, [1, 2, 5, 7], 9, Stamp(2.0, 2)) == (0, tail)  # no ids past the chain's: nothing
    runs = sorted((node.ids, node.rc) for node in cache.nodes())
    assert runs == [([1, 2, 5], 2), ([5], 1), ([6], 1), ([7], 1)] and cache.pinned() == 9  # (5 twice: two entries)


def test_kv_use_read_mid_run_counts_the_evictions_the_growth_makes():
    """A decode run's growth past the free blocks evicts cached entries; the timeline read mid-run counted the growth
    without them, so the fast-forward's KV use passed 1 (1.00078 on this scenario) and differed from the per-step
    engine's by up to 0.0011. Now both read the same series, never above 1."""
    from pathlib import Path

    import numpy as np

    from sim.run.simulate import simulate
    from sim.scenario.config import load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "prefix-cache.yaml"
    kv = {}
    for ff in (True, False):
        sc = load_config(config, [f"engine.fast_forward={str(ff).lower()}"])
        kv[ff] = simulate(sc, measure_capacity=False).timeline["kv_use"].to_numpy()
    assert np.nanmax(kv[True]) <= 1.0
    assert np.array_equal(kv[True], kv[False], equal_nan=True)
    assert np.nanmax(kv[True]) > 0.99  # (the cache does fill: the case is exercised)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=6), st.integers(0, 4))
def test_the_prefix_choice_is_the_least_key_within_the_slack(rows, slack):
    """`prefix_choice` (a loop) picks what its rule says: among replicas within `slack` of the least outstanding, the
    least (-matched, outstanding, index)."""
    from sim.policies.router import prefix_choice

    outstanding, matched = [o for o, _ in rows], [m for _, m in rows]
    bound = min(outstanding) + slack
    want = min((i for i in range(len(rows)) if outstanding[i] <= bound), key=lambda i: (-matched[i], outstanding[i], i))
    assert prefix_choice(outstanding, matched, slack) == want


def test_the_benchmark_recut_keeps_the_prefixes_in_finer_blocks():
    """`benchmarks/prefix_cache.py --recut N` cuts each 512-token id into 512 / N chained ids: as many as the prompt has
    blocks of N tokens, and two requests that shared k leading ids share at least k x 512 / N of the new ones."""
    import importlib.util
    import sys
    from pathlib import Path

    import pandas as pd

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    spec = importlib.util.spec_from_file_location("prefix_cache_bench", bench_dir / "prefix_cache.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trace = pd.DataFrame({"prompt_tokens": [1100, 1030], "prefix_hash_ids": [np.array([7, 8, 9]), np.array([7, 8, 4])]})
    out = bench.recut(trace, 512, 16)
    a, b = (ids.tolist() for ids in out["prefix_hash_ids"])
    assert (len(a), len(b)) == (69, 65) and out.attrs["hash_block_tokens"] == 16
    assert a[:64] == b[:64] and a[64] != b[64] and a[:3] == [224, 225, 226]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(0, 300), st.integers(0, 320))
def test_a_match_that_leaves_a_long_run_midway_counts_the_ids_it_shares(size, diverge, limit):
    """A run of `size` ids cached at once; a chain equal to it up to `diverge` (then other ids) matches the shared ids,
    within `limit` (the first difference found by bisection on slices)."""
    from sim.run.engine.prefix_cache import PrefixCache, Stamp

    cache = PrefixCache(hash_tokens=16, block_size=16)
    run = list(range(1000, 1000 + size))
    cache.insert(cache.root, run, size, Stamp(0.0, 0))
    chain = run[:diverge] + list(range(5000, 5000 + max(0, size + 5 - diverge)))
    want = min(diverge, size, limit)
    assert cache.match(chain, limit) == want
    m, node = cache.pin_match(chain, limit)
    assert m == want and node.end == want and cache.pinned() == size + want
