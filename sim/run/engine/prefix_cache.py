"""Automatic prefix caching (vLLM's APC, SGLang's radix cache) over a replica's KV blocks.

Requests carry `prefix_hash_ids`: one id per `hash_tokens` tokens of the prompt (Mooncake's `hash_ids`: 512
tokens; prefix-chained, so equal ids mean equal prefixes). A cached id holds `hash_tokens / block_size` KV blocks.

- **Match** (before a step is planned): the longest run of leading ids that are cached, within the prompt's full
  hash blocks and short of its last token (one token is always computed, to produce the first output). The
  matched entries are pinned (reference-counted) and the sequence starts with those tokens cached: its prefill
  computes only the suffix. The head of the waiting queue may pin any cached entry; the sequences behind it that a
  step could also admit hit only entries already pinned (prefixes in use), so matching never takes evictable room
  the head needs. Those not admitted give their pins back once the step is planned.
- **Insert** (at the end of a prompt's prefill): the prompt's full hash blocks that are not cached become cached
  entries pinned by the sequence (its blocks turn from private into shared; an id already cached by another
  sequence leaves this one's copy private, and the chain stops there).
- **Release** (a sequence finishes or is preempted): its private blocks are freed and its entries unpinned; an
  entry pinned by no one stays cached, counted as used, and is evictable: allocations that find too few free
  blocks evict such entries least recently used first (of one release, its chain's tail first). A preempted
  sequence matches again when it is next planned, so it hits its own blocks unless they were evicted meanwhile.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from sim.policies.router import RequestView


class Stamp:
    """An entry's recency: when a sequence last released it (or cached it) and that request's index, its `key`
    (t, idx). One object per release, shared by the entries it released, so that an entry's eviction-heap item
    is stale when `stamp[id]` is no longer that very object (re-released, or evicted and cached again). A class, not
    a tuple: the compiled build keeps a tuple of known shape unboxed, a new object each time it is boxed again."""

    __slots__ = ("key",)

    def __init__(self, t: float, idx: int) -> None:
        self.key = (t, idx)  # (compared as a tuple: no Python-level comparison method on the release path)

    def __repr__(self) -> str:
        return f"Stamp{self.key!r}"


# The eviction heap holds groups: the entries one release left unpinned, in chain order, evicted from the tail.
# (time, index, -position of the group's tail, serial, stamp, ids, positions): least recent release first; of one
# release, the chain's tail first (vLLM frees a request's blocks in reverse order "so that the tail blocks are
# evicted first"; SGLang's radix cache evicts leaves): evicting a prefix's head would leave the rest unreachable.
# The serial only orders two items for the same entry (either evicts it; the other is then stale). With
# prefix-chained ids the entries one release leaves unpinned are a suffix of its chain (whoever pins an entry pins
# its prefix), so a group is evicted tail first without another item's entries coming between its own; ids that are
# not prefix-chained (a malformed trace) are still evicted deterministically, a group at a time.
Group = tuple[float, int, int, int, Stamp, list[int], list[int]]


class PrefixCache:
    """Cached ids with their pin counts; unpinned ones are evicted least recently released first (see `Group`).
    Recency is the instant a sequence released the entry (ties: the request's index, then the tail of its chain),
    so it does not depend on the order in which the events of one instant are processed, nor on how often steps
    are planned (a tentative match, given back after planning, leaves recency as it was). One heap item per
    release rather than per entry: a request's chain is pushed and popped once."""

    __slots__ = ("_heap", "_serial", "blocks_per_entry", "entries", "evicted", "hash_tokens", "n_unpinned", "stamp")

    def __init__(self, *, hash_tokens: int, block_size: int) -> None:
        self.hash_tokens = hash_tokens
        self.blocks_per_entry = hash_tokens // block_size
        self.entries: dict[int, int] = {}  # cached id -> sequences pinning it
        self.stamp: dict[int, Stamp] = {}  # cached id -> its last release
        self._heap: list[Group] = []  # groups of unpinned entries, lazily pruned
        self._serial = 0
        self.n_unpinned = 0
        self.evicted = 0  # entries evicted so far

    def clear(self) -> None:
        """Every entry gone (the replica's memory lost)."""
        self.entries.clear()
        self.stamp.clear()
        self._heap.clear()
        self.n_unpinned = 0

    @property
    def evictable_blocks(self) -> int:
        return self.n_unpinned * self.blocks_per_entry

    def match(self, hashes: Sequence[int], limit: int, *, pinned_only: bool = False) -> int:
        """How many of the leading ids (at most `limit`) are cached (`pinned_only`: and pinned by someone)."""
        entries = self.entries
        n = 0
        for h in hashes:
            if n >= limit:
                break
            rc = entries.get(h)
            if rc is None or (pinned_only and rc == 0):
                break
            n += 1
        return n

    def match_seq(self, seq: RequestView, hashes: Sequence[int], *, pinned_only: bool = False) -> int:
        """`match` of `seq`'s `hashes`: within its prompt's full hash blocks, and short of its last known token (one
        token is always computed, to produce the next output)."""
        t = self.hash_tokens
        limit = min(seq.prompt_tokens // t, (seq.prompt_tokens + seq.generated - 1) // t)
        return self.match(hashes, limit, pinned_only=pinned_only)

    def pin(self, ids: Sequence[int]) -> None:
        entries = self.entries
        for h in ids:
            rc = entries[h]
            if rc == 0:
                self.n_unpinned -= 1
            entries[h] = rc + 1

    def _push(self, stamp: Stamp, ids: list[int], positions: list[int]) -> None:
        self._serial += 1
        heapq.heappush(self._heap, (*stamp.key, -positions[-1], self._serial, stamp, ids, positions))

    def unpin(self, ids: Sequence[int], released: Stamp | None = None) -> None:
        """Release the pins on `ids` (a chain's leading entries, in order); `released` (a sequence's release: a new
        `Stamp(now, its index)`) makes them recently used, None (a tentative match given back) leaves their recency
        as it was."""
        entries, stamps = self.entries, self.stamp
        freed = 0
        if released is None:  # a tentative match given back: recency as it was
            for pos, h in enumerate(ids):
                rc = entries[h] - 1
                entries[h] = rc
                if not rc:
                    freed += 1
                    self._push(stamps[h], [h], [pos])
            self.n_unpinned += freed
            return
        group: list[int] = []
        positions: list[int] = []
        for pos, h in enumerate(ids):
            rc = entries[h] - 1
            entries[h] = rc
            stamp = stamps[h]
            if released.key > stamp.key:
                stamps[h] = released
                if not rc:
                    group.append(h)
                    positions.append(pos)
            elif not rc:
                if stamp is released:  # (an id twice in the chain: already stamped by this release)
                    group.append(h)
                    positions.append(pos)
                else:  # an entry keeping a later release's recency (released in the same instant)
                    freed += 1
                    self._push(stamp, [h], [pos])
        if group:
            freed += len(group)
            self._push(released, group, positions)
        self.n_unpinned += freed

    def insert(self, hashes: Sequence[int], first: int, stop: int, released: Stamp) -> int:
        """Cache the chain's ids `hashes[first:stop]`, each pinned once (the caller's blocks become theirs), up to the
        first one already cached (another sequence's copy: the caller keeps its own, and the rest, private); how many
        it cached. `released`: a new `Stamp(now, the caller's index)`, the new entries' recency."""
        entries, stamps = self.entries, self.stamp
        n = 0
        for h in hashes[first:stop]:
            if h in entries:
                break
            entries[h] = 1
            stamps[h] = released
            n += 1
        return n

    def evict(self, blocks: int) -> int:
        """Evict unpinned entries, least recently released first, until `blocks` blocks are freed (or none is
        left); the blocks freed."""
        n = 0
        need = -(-blocks // self.blocks_per_entry)
        heap, entries, stamps = self._heap, self.entries, self.stamp
        while n < need and heap:
            group = heap[0]  # (the least recent: evicted from its tail)
            stamp, ids = group[4], group[5]
            j = len(ids)
            while j and n < need:
                j -= 1
                h = ids[j]
                if entries.get(h) == 0 and stamps[h] is stamp:
                    del entries[h], stamps[h]
                    n += 1
                # else stale: pinned again, re-released or evicted since the group was pushed
            if j:  # the rest of the group stays, keyed by its new tail (keys are distinct: the same order of evictions)
                positions = group[6]
                del ids[j:], positions[j:]
                heapq.heapreplace(heap, (group[0], group[1], -positions[-1], group[3], stamp, ids, positions))
            else:
                heapq.heappop(heap)
        self.n_unpinned -= n
        self.evicted += n
        return n * self.blocks_per_entry

    def pinned(self) -> int:
        """Pins held (0 once every sequence is released)."""
        return sum(self.entries.values())
