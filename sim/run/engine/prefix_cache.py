"""Automatic prefix caching (vLLM's APC, SGLang's radix cache) over a replica's KV blocks.

Requests carry `prefix_hash_ids`: one id per `hash_tokens` tokens of the prompt (Mooncake's `hash_ids`: 512
tokens; prefix-chained, as vLLM's block hashes chain their parent's: an id stands for its whole prefix). A cached id
holds `hash_tokens / block_size` KV blocks.

- **Match** (before a step is planned): the longest run of leading ids that are cached, within the prompt's full
  hash blocks and short of its last token (one token is always computed, to produce the first output). The
  matched entries are pinned (reference-counted) and the sequence starts with those tokens cached: its prefill
  computes only the suffix. The head of the waiting queue may pin any cached entry; so may the sequences behind it
  that a step could also admit (vLLM matches each waiting request in turn) while the free and evictable blocks left
  after its hits cover what the running work and the sequences ahead could allocate this step, and past that only
  entries already pinned
  (prefixes in use), so matching never takes evictable room a sequence ahead needs (`PrefixCachingKv._match_waiting`).
  Those not admitted give their pins back once the step is planned.
- **Insert** (at the end of a prompt's prefill): the prompt's full hash blocks that are not cached become cached
  entries pinned by the sequence (its blocks turn from private into shared; where another sequence cached the same
  continuation meanwhile, this one's copy stays private, and the chain stops there).
- **Release** (a sequence finishes or is preempted): its private blocks are freed and its entries unpinned; an
  entry pinned by no one stays cached, counted as used, and is evictable: allocations that find too few free
  blocks evict such entries least recently used first (of one release, its chain's tail first). A preempted
  sequence matches again when it is next planned, so it hits its own blocks unless they were evicted meanwhile.

The entries form a radix tree (as SGLang's cache): a node holds a run of consecutive ids of one chain that were
cached together and have been pinned by the same sequences since, so the run shares one pin count and one recency.
Inserting a prompt's blocks adds one node, a release walks the nodes of its path (not its ids), and eviction takes
whole runs off the leaves' tails; a match compares runs (list slices, compared in C; where one differs, the first
difference found by bisection) and splits a node where a pin ends inside it. An id is an entry at its place in the tree: the same
id under another prefix (a trace whose ids are not prefix-chained) is another entry, as vLLM's chained block hashes
would make it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from sim.policies.router import RequestView


class Stamp:
    """A release's recency: when a sequence released its entries (or cached them) and that request's index, its `key`
    (t, idx), compared as a tuple. A class, not a tuple: the compiled build keeps a tuple of known shape unboxed, a new
    object each time it is boxed again."""

    __slots__ = ("key",)

    def __init__(self, t: float, idx: int) -> None:
        self.key = (t, idx)  # (compared as a tuple: no Python-level comparison method on the release path)

    def __repr__(self) -> str:
        return f"Stamp{self.key!r}"


class Node:
    """A run of consecutive cached ids of one chain (`ids`, the first at chain position `start`), under the node that
    holds the ids before them (`parent`; None: the root, which holds none, or a node evicted). Every id of a run has
    the same pins (`rc`: sequences pinning it, or anything below it) and the same recency (`stamp`: the latest
    release among them). `serial` names the eviction-heap item that stands for it while it is an unpinned leaf."""

    __slots__ = ("children", "ids", "parent", "rc", "serial", "stamp", "start")

    def __init__(self, ids: list[int], start: int, parent: Node | None, rc: int, stamp: Stamp) -> None:
        self.ids = ids
        self.start = start
        self.parent = parent
        self.children: dict[int, Node] = {}  # keyed by each child's first id
        self.rc = rc
        self.stamp = stamp
        self.serial = 0

    @property
    def end(self) -> int:
        """The chain position after its last id: how many leading ids a sequence pinning down to it holds."""
        return self.start + len(self.ids)

    def __repr__(self) -> str:
        return f"Node({self.ids!r} at {self.start}, rc={self.rc})"


# The eviction heap holds unpinned leaves: (time, index, -position of the leaf's tail, serial, node), least recent
# release first; of one release, the chain's tail first (vLLM frees a request's blocks in reverse order "so that the
# tail blocks are evicted first"; SGLang's radix cache evicts leaves): evicting a prefix's head would leave the rest
# unreachable. The unpinned entry with the least (time, index, -position) is always at a leaf's tail: whoever
# released an entry released its whole prefix, so a node's recency is never older than its children's. An item is
# stale once its node is pinned again, gains children, is evicted or is pushed anew (its `serial` moves on).
Item = tuple[float, int, int, int, Node]
ROOT_STAMP = Stamp(-math.inf, -1)


class PrefixCache:
    """The cached ids as a radix tree (see `Node`) with their pin counts; unpinned ones are evicted least recently
    released first (see `Item`). Recency is the instant a sequence released the entry (ties: the request's index, then
    the tail of its chain), so it does not depend on the order in which the events of one instant are processed, nor
    on how often steps are planned (a tentative match, given back after planning, leaves recency as it was)."""

    __slots__ = ("_heap", "_serial", "blocks_per_entry", "evicted", "hash_tokens", "n_unpinned", "root")

    def __init__(self, *, hash_tokens: int, block_size: int) -> None:
        self.hash_tokens = hash_tokens
        self.blocks_per_entry = hash_tokens // block_size
        self.root = Node([], 0, None, 0, ROOT_STAMP)
        self._heap: list[Item] = []  # unpinned leaves, lazily pruned
        self._serial = 0
        self.n_unpinned = 0  # cached ids no one pins
        self.evicted = 0  # entries evicted so far

    def clear(self) -> None:
        """Every entry gone (the replica's memory lost; its sequences hold no pins)."""
        self.root = Node([], 0, None, 0, ROOT_STAMP)
        self._heap.clear()
        self.n_unpinned = 0

    @property
    def evictable_blocks(self) -> int:
        return self.n_unpinned * self.blocks_per_entry

    def _walk(self, hashes: Sequence[int], limit: int, pinned_only: bool) -> tuple[int, Node, int]:
        """The leading ids cached (at most `limit`; `pinned_only`: pinned by someone), the deepest node they reach and
        how many of its ids they cover (the root: 0)."""
        node, m, k = self.root, 0, 0
        n = min(limit, len(hashes))
        while m < n:
            child = node.children.get(hashes[m])
            if child is None or (pinned_only and child.rc == 0):
                break
            ids = child.ids
            size = len(ids)
            stop = min(size, n - m)
            if hashes[m : m + stop] == (ids if stop == size else ids[:stop]):
                if stop == size:  # the whole run: on to its children
                    node, m, k = child, m + size, size
                    continue
                return m + stop, child, stop
            j, miss = 1, stop  # its first `j` ids match (the first: the child's key), its first `miss` do not
            while miss - j > 1:  # (bisection on the matching prefix: slices compared in C, not id by id)
                mid = (j + miss) // 2
                if hashes[m : m + mid] == ids[:mid]:
                    j = mid
                else:
                    miss = mid
            return m + j, child, j
        return m, node, k

    def match(self, hashes: Sequence[int], limit: int, *, pinned_only: bool = False) -> int:
        """How many of the leading ids (at most `limit`) are cached (`pinned_only`: and pinned by someone)."""
        return self._walk(hashes, limit, pinned_only)[0]

    def limit(self, seq: RequestView) -> int:
        """The most leading ids `seq` may hit: within its prompt's full hash blocks, and short of its last known token
        (one token is always computed, to produce the next output)."""
        p = seq.prompt_tokens  # (a recompute knows a token past its prompt: all its full blocks may hit)
        return p // self.hash_tokens if seq.generated else (p - 1) // self.hash_tokens

    def pin_match(self, hashes: Sequence[int], limit: int, *, pinned_only: bool = False) -> tuple[int, Node]:
        """`match`, and pin what it matched: the count, and the node the pins end at (the root for none), which
        `unpin` and `insert` take."""
        m, node, k = self._walk(hashes, limit, pinned_only)
        if k < len(node.ids):  # the match ends inside a run: split it there
            node = self._split(node, k)
        self.pin(node)
        return m, node

    def _split(self, node: Node, k: int) -> Node:
        """Cut `node` after its first k ids into a new parent holding them; the new parent. (`node` keeps the tail,
        its pins, recency and heap item: a sequence pinning down to it still ends there.)"""
        parent = node.parent
        assert parent is not None
        head = Node(node.ids[:k], node.start, parent, node.rc, node.stamp)
        del node.ids[:k]
        node.start += k
        parent.children[head.ids[0]] = head  # (in node's place: same first id)
        head.children[node.ids[0]] = node
        node.parent = head
        return head

    def pin(self, node: Node) -> None:
        """Pin the ids from the root down to `node`'s last."""
        while node.parent is not None:
            rc = node.rc
            if rc == 0:
                self.n_unpinned -= len(node.ids)
            node.rc = rc + 1
            node = node.parent

    def _push(self, node: Node) -> None:
        self._serial += 1
        node.serial = self._serial
        t, idx = node.stamp.key
        heapq.heappush(self._heap, (t, idx, 1 - node.start - len(node.ids), self._serial, node))

    def unpin(self, node: Node, released: Stamp | None = None) -> None:
        """Release the pins from the root down to `node` (as `pin_match` or `insert` gave it); `released` (a
        sequence's release: a new `Stamp(now, its index)`) makes them recently used, None (a tentative match given
        back) leaves their recency as it was."""
        leaf, freed = node, 0
        while node.parent is not None:
            rc = node.rc - 1
            node.rc = rc
            if released is not None and released.key > node.stamp.key:
                node.stamp = released
            if not rc:
                freed += len(node.ids)
            node = node.parent
        self.n_unpinned += freed
        if leaf.rc == 0 and not leaf.children and leaf.parent is not None:  # (only the path's end can be a leaf)
            self._push(leaf)

    def insert(self, node: Node, hashes: Sequence[int], stop: int, released: Stamp) -> tuple[int, Node]:
        """Cache the chain's ids after `node`'s, `hashes[node.end:stop]`, as one run pinned once (the caller's blocks
        become theirs), unless another sequence cached that continuation already (the caller keeps its own, and the
        rest, private): how many it cached, and the node the caller's pins now end at. `released`: a new
        `Stamp(now, the caller's index)`, the new entries' recency."""
        first, stop = node.end, min(stop, len(hashes))
        if first >= stop or hashes[first] in node.children:
            return 0, node
        child = Node(list(hashes[first:stop]), first, node, 1, released)
        node.children[child.ids[0]] = child
        return stop - first, child

    def evict(self, blocks: int) -> int:
        """Evict unpinned entries, least recently released first, until `blocks` blocks are freed (or none is
        left); the blocks freed."""
        n = 0
        need = -(-blocks // self.blocks_per_entry)
        heap = self._heap
        while n < need and heap:
            item = heap[0]
            node = item[4]
            parent = node.parent
            if node.serial != item[3] or node.rc or node.children or parent is None:
                heapq.heappop(heap)  # stale
                continue
            ids = node.ids
            size = len(ids)
            take = min(size, need - n)
            n += take
            if take < size:  # the rest of the run stays, keyed by its new tail (the same order of evictions)
                del ids[size - take :]
                self._serial += 1
                node.serial = self._serial
                heapq.heapreplace(heap, (item[0], item[1], 1 - node.start - len(ids), self._serial, node))
                continue
            heapq.heappop(heap)
            del parent.children[ids[0]]
            node.parent = None  # (evicted: any item left for it is stale)
            if parent.rc == 0 and not parent.children and parent.parent is not None:
                self._push(parent)  # its tail is now a leaf's
        self.n_unpinned -= n
        self.evicted += n
        return n * self.blocks_per_entry

    def nodes(self) -> list[Node]:
        """Every cached run (not the root), parents before children."""
        out: list[Node] = []
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    def pinned(self) -> int:
        """Pins held, an entry's counted once per sequence pinning it (0 once every sequence is released)."""
        return sum(node.rc * len(node.ids) for node in self.nodes())

    @property
    def entries(self) -> dict[int, int]:
        """The cached ids and their pins (a snapshot, for checks: ids are prefix-chained, so each is one entry)."""
        return {h: node.rc for node in self.nodes() for h in node.ids}
