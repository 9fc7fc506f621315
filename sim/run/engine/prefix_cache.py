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
  blocks evict such entries least recently used first. A preempted sequence matches again when it is next
  planned, so it hits its own blocks unless they were evicted meanwhile.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from sim.policies.router import RequestView

Stamp = tuple[float, int]  # when an entry was last released by a sequence, and that request's index


class PrefixCache:
    """Cached ids with their pin counts; unpinned ones are evicted least recently released first. Recency is the
    instant a sequence released the entry (ties: the request's index), so it does not depend on the order in which
    the events of one instant are processed, nor on how often steps are planned (a tentative match, given back
    after planning, leaves recency as it was)."""

    __slots__ = ("_heap", "blocks_per_entry", "entries", "evicted", "hash_tokens", "n_unpinned", "stamp")

    def __init__(self, *, hash_tokens: int, block_size: int) -> None:
        self.hash_tokens = hash_tokens
        self.blocks_per_entry = hash_tokens // block_size
        self.entries: dict[int, int] = {}  # cached id -> sequences pinning it
        self.stamp: dict[int, Stamp] = {}  # cached id -> its last release
        self._heap: list[tuple[Stamp, int]] = []  # (stamp, id) of unpinned entries, lazily pruned
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
        for h in ids:
            rc = self.entries[h]
            if rc == 0:
                self.n_unpinned -= 1
            self.entries[h] = rc + 1

    def unpin(self, ids: Sequence[int], stamp: Stamp | None = None) -> None:
        """Release pins; `stamp` (a sequence's release: now, its index) makes the entries recently used, None (a
        tentative match given back) leaves their recency as it was."""
        for h in ids:
            rc = self.entries[h] - 1
            self.entries[h] = rc
            if stamp is not None and stamp > self.stamp[h]:
                self.stamp[h] = stamp
            if rc == 0:
                self.n_unpinned += 1
                heapq.heappush(self._heap, (self.stamp[h], h))

    def insert(self, h: int, stamp: Stamp) -> bool:
        """Cache `h` pinned once (the caller's blocks become its); False if it is cached already."""
        if h in self.entries:
            return False
        self.entries[h] = 1
        self.stamp[h] = stamp
        return True

    def evict(self, blocks: int) -> int:
        """Evict unpinned entries, least recently released first, until `blocks` blocks are freed (or none is
        left); the blocks freed."""
        freed = 0
        heap, entries, stamps = self._heap, self.entries, self.stamp
        while freed < blocks and heap:
            stamp, h = heapq.heappop(heap)
            if entries.get(h) != 0 or stamps[h] != stamp:
                continue  # stale: pinned again, re-stamped or evicted since it was pushed
            del entries[h], stamps[h]
            self.n_unpinned -= 1
            freed += self.blocks_per_entry
            self.evicted += 1
        return freed

    def pinned(self) -> int:
        """Pins held (0 once every sequence is released)."""
        return sum(self.entries.values())
