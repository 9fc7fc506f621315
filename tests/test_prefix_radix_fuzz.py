"""The prefix cache's radix tree under random operations (its invariants after each one, and the entry-by-entry
eviction rule on prefix-chained ids), and whole runs that broke it: a prefix-aware router reading a cache whose
evictions a decode run had not made yet, and a head of the queue kept out forever by its own hit."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.run.engine.prefix_cache import PrefixCache, Stamp
from sim.run.simulate import scenario_trace, simulate
from sim.scenario.config import load_config
from tests.test_engine_equivalence import assert_same_requests
from tests.test_prefix_cache import T, _ReferenceCache, chain_ids, scenario, trace

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "prefix-cache.yaml"


def check_tree(cache, pins):
    """The tree's invariants; `pins`: where each pinning sequence's pins end."""
    nodes = cache.nodes()
    stack = [cache.root]
    while stack:
        node = stack.pop()
        for key, child in node.children.items():
            assert child.ids and key == child.ids[0]  # non-empty, keyed by its first id
            assert child.parent is node and child.start == node.end
            stack.append(child)
        if node.parent is not None:
            assert node.rc >= sum(c.rc for c in node.children.values()) >= 0
            if node.rc == 0:  # (an unpinned node is never older than its children: they are evicted first)
                assert all(c.stamp.key <= node.stamp.key for c in node.children.values())
    assert cache.n_unpinned == sum(len(n.ids) for n in nodes if n.rc == 0)
    assert cache.pinned() == sum(node.end for node in pins)
    live = {id(n) for n in nodes} | {id(cache.root)}
    assert all(id(node) in live for node in pins)  # (no pin ends at an evicted node)
    valid = {id(item[4]): item for item in cache._heap if item[4].serial == item[3]}
    for node in nodes:
        if node.rc == 0 and not node.children:  # an unpinned leaf: its heap item, keyed by its recency and tail
            item = valid.get(id(node))
            assert item is not None and item[:3] == (*node.stamp.key, 1 - node.end)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_random_operations_keep_the_tree_whole_and_evict_as_the_entry_by_entry_rule(data, chained):
    """Matches ending inside runs (pinned only or not), inserts, releases (tentative, and stamped, several in one
    instant), evictions and clears: the tree's invariants hold after each; on prefix-chained ids the cached entries and
    their pins are the entry-by-entry reference's, on any ids an eviction frees what it can (never a pinned entry)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n_ids = 30
    deep = data.draw(st.sampled_from([0.0, 0.9]))  # (long runs: matches and evictions inside them)
    parent = [-1] + [i - 1 if rng.random() < deep else int(rng.integers(0, i)) for i in range(1, n_ids)]

    def ids_of(leaf):
        if not chained:  # ids from a small pool, repeated within a request too
            return [int(h) for h in rng.integers(0, 5, int(rng.integers(0, 7)))]
        return chain_ids(parent, leaf)

    cache, ref = PrefixCache(hash_tokens=64, block_size=16), _ReferenceCache()
    active: dict[int, tuple[list[int], object]] = {}
    now = 0.0
    for step in range(data.draw(st.integers(10, 80))):
        op = data.draw(st.sampled_from(["admit", "admit", "tentative", "release", "release", "evict", "clear"]))
        now += float(rng.integers(0, 2))  # (releases in one instant too)
        if op in ("admit", "tentative"):
            ids = ids_of(int(rng.integers(0, n_ids)))
            limit = int(rng.integers(-1, len(ids) + 2))
            pinned_only = bool(rng.random() < 0.3)
            m, node = cache.pin_match(ids, limit, pinned_only=pinned_only)
            assert node.end == m <= max(0, min(limit, len(ids)))
            if chained:
                hit = next((i for i, h in enumerate(ids) if h not in ref.rc or (pinned_only and ref.rc[h] == 0)), len(ids))
                assert m == max(0, min(hit, limit))
                for h in ids[:m]:
                    ref.rc[h] += 1
            if op == "tentative":
                check_tree(cache, [*(p for _, p in active.values()), node])
                cache.unpin(node)
                if chained:
                    ref.release(ids[:m])
            else:
                n, node = cache.insert(node, ids, int(rng.integers(0, len(ids) + 2)), Stamp(now, step))
                if chained:
                    for pos in range(m, m + n):
                        ref.rc[ids[pos]], ref.key[ids[pos]] = 1, (now, step, -pos)
                active[step] = (ids[: m + n], node)
        elif op == "release" and active:
            idx = sorted(active)[int(rng.integers(0, len(active)))]
            ids, node = active.pop(idx)
            cache.unpin(node, Stamp(now, idx))
            if chained:
                ref.release(ids, now, idx)
        elif op == "evict":
            k = int(rng.integers(1, 7))
            before = cache.n_unpinned
            assert cache.evict(4 * k - int(rng.integers(0, 4))) == 4 * min(k, before)
            assert cache.n_unpinned == before - min(k, before)
            if chained:
                ref.evict(k)
        elif op == "clear" and not active:  # (the replica lost: no one holds pins)
            cache.clear()
            ref = _ReferenceCache()
        check_tree(cache, [p for _, p in active.values()])
        if chained:
            assert cache.entries == ref.rc


def test_a_prefix_aware_router_sees_the_evictions_a_decode_run_made_so_far():
    """A decode run allocates its growth at its end; past the free blocks that growth evicts cached entries, which the
    per-step engine evicts at the step that needs the room. The prefix-aware router read the cache mid-run as if
    nothing were evicted yet: the fast-forward sent a request to the replica whose (evicted) prefix it would hit, the
    per-step engine to the idle one. Now a mid-run read makes the evictions the run made so far first."""
    rows = [
        (0.0, 2 * T + 1, 2, [1, 2]),  # caches 1, 2 on replica 0
        (1.0, 16, 360, [9]),  # a long decode on replica 0 (no match anywhere: the least loaded, the first)
        (4.3, 2 * T + 1, 2, [1, 2]),  # arrives once that decode has evicted 1 and 2
    ]
    results = [
        simulate(scenario(blocks=24, replicas=2, router="prefix_aware", fast_forward=ff), trace(rows), measure_capacity=False)
        for ff in (True, False)
    ]
    for r in results:
        assert r.requests["replica_id"].tolist() == [0, 0, 1]
        assert r.meta["prefix_cache"]["evicted_entries"] == 2
    assert_same_requests(*results)


@pytest.mark.parametrize("ff", [True, False], ids=["fast_forward", "per_step"])
def test_a_hit_never_keeps_the_queues_head_out_for_ever(ff):
    """A prompt longer than the room above the watermark is admitted by its first chunk and grows into the watermark
    as it runs. Its hit's blocks are taken with that admission: a long hit left its first chunk no room, even with the
    cache otherwise empty, and the replica idled with it waiting ("idle with admissible work waiting"; the Mooncake
    sample did so on 2,500 blocks at the default watermark). Now its hit leaves its first chunk room."""
    # 40 blocks of 16 tokens, 10 kept free: 30 blocks = 480 tokens admit; first chunks of 64 tokens (4 blocks)
    rows = [(0.0, 9 * T, 2, list(range(1, 10))), (10.0, 9 * T, 2, list(range(1, 10)))]  # 36 blocks each, 9 ids
    sc = scenario(blocks=40, watermark=0.25, max_num_batched_tokens=T, fast_forward=ff)
    result = simulate(sc, trace(rows), measure_capacity=False)
    assert result.summary()["completed"] == 2
    # 8 ids could hit (short of the last token): 32 blocks + a 4-block chunk > 30; at most (30 - 4) // 4 = 6 do
    assert result.requests["cached_tokens"].tolist() == [0, 6 * T]
    assert result.meta["prefix_cache"]["pinned_at_end"] == 0


def _hostile(kind, frame):
    frame = frame.iloc[:1200].copy()
    ids = frame["prefix_hash_ids"]
    if kind == "one_id":  # every id the same: one long chain everyone shares
        frame["prefix_hash_ids"] = [np.full(len(h), 7, dtype=np.int64) for h in ids]
    elif kind == "small_pool":  # ids drawn from eight: not prefix-chained, repeated within a request
        rng = np.random.default_rng(2)
        frame["prefix_hash_ids"] = [rng.integers(0, 8, len(h)).astype(np.int64) for h in ids]
    elif kind == "none_or_few":  # a third without ids, the rest with a few leading ones
        frame["prefix_hash_ids"] = [np.asarray(h[: i % 5] if i % 3 else [], dtype=np.int64) for i, h in enumerate(ids)]
    return frame


@pytest.mark.parametrize("kind", ["one_id", "small_pool", "none_or_few"])
def test_hostile_ids_on_the_mooncake_sample_finish_with_no_pins_and_as_the_per_step_engine(kind):
    """Ids that are not prefix-chained, repeated, missing or few, on four replicas behind the prefix-aware router with
    small caches: every run ends with no pins held and KV use within 1, the fast-forward as the per-step engine."""
    overrides = ["fleet.autoscaler.replicas=4", "engine.num_gpu_blocks_override=2500"]
    out = []
    for ff in ("true", "false"):
        sc = load_config(CONFIG, [*overrides, f"engine.fast_forward={ff}"])
        frame = _hostile(kind, scenario_trace(sc, base_dir=sc.base_dir))
        r = simulate(sc, frame, measure_capacity=False)
        assert r.meta["prefix_cache"]["pinned_at_end"] == 0
        assert np.nanmax(r.timeline["kv_use"].to_numpy()) <= 1.0
        out.append(r)
    assert_same_requests(*out)
    assert out[0].requests["cached_tokens"].equals(out[1].requests["cached_tokens"])


def test_a_prefix_aware_routers_match_is_the_hit_an_admission_would_take():
    """The router's view of a replica's cache (`kv.match`) caps a long prompt's hit as its admission does
    (`PrefixCachingKv.hit_limit`): it counted hits the admission could not take, and sent the request for them."""
    from sim.run.engine.kv import PrefixCachingKv
    from sim.run.engine.scheduler import Limits
    from sim.run.engine.sequence import Seq

    kv = PrefixCachingKv(40, 16, hash_tokens=T, log=None)
    kv.cache.insert(kv.cache.root, list(range(1, 10)), 9, Stamp(0.0, 0))
    limits = Limits(max_num_seqs=4, max_num_batched_tokens=T, block_size=16, n_blocks=40, watermark_blocks=10)
    long, short = Seq(1, 0.0, 9 * T, 2), Seq(2, 0.0, 7 * T + 1, 2)
    long.hashes, short.hashes = list(range(1, 10)), list(range(1, 8))
    # the long one: 8 ids short of its last token, but (30 - 4) // 4 = 6 leave its first chunk room; the short one fits
    assert (kv.match(long, limits), kv.match(short, limits)) == (6, 7)
    assert kv.hit_limit(long, limits) == 6 and kv.hit_limit(short, limits) == kv.cache.limit(short) == 7
