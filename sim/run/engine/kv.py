"""A replica's KV cache: paged blocks (vLLM's block manager, counted, not addressed), chosen at build time.

- `BlockKv`: the plain pool. A sequence holds ceil(slots / block_size) blocks for the tokens whose KV it stores;
  blocks are taken when a step needs more slots and returned on completion or preemption. Usage never exceeds
  capacity (an internal invariant: a violation is a bug, not a user error).
- `PrefixCachingKv`: the same pool with automatic prefix caching (`sim.run.engine.prefix_cache`): before a step is
  planned the queue's head (and those a step could admit behind it) pin what they find cached, allocations evict unpinned cached entries (LRU) when too
  few blocks are free, a computed prompt's full hash blocks become cached entries, and a released sequence
  unpins its entries instead of freeing them. A sequence longer than the room above the watermark hits no more than
  leaves its first admission room there (`PrefixCachingKv.hit_cap`): a longer hit would keep it out for ever.

The replica talks to either through the same methods, so its step loop reads the same whichever is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mypy_extensions import mypyc_attr

from sim.policies.router import RequestView
from sim.run.engine.prefix_cache import PrefixCache, Stamp
from sim.run.engine.scheduler import Batch, Limits
from sim.run.engine.sequence import Seq

if TYPE_CHECKING:
    from sim.run.engine.records import RequestLog

Plan = Callable[[int, int], Batch]  # plan(free blocks, blocks reserved for running work) -> the step's batch


class Planning(Protocol):
    """What a KV manager reads of the replica planning a step (LoRA's admission hands the step a view of the queue:
    `waiting` is set for the planning and put back)."""

    waiting: list[Seq]

    @property
    def n_running(self) -> int: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def held_for_plan(self) -> tuple[int, int]:
        """Seats and blocks given back at this instant that the step being planned cannot use yet (async scheduling:
        `Replica._plan` hides them); (0, 0) otherwise."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)
class BlockKv:
    """The plain paged pool (no caching)."""

    __slots__ = ("block_size", "n_blocks", "peak_used", "used", "window_blocks")

    def __init__(self, n_blocks: int, block_size: int) -> None:
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.used = 0
        self.peak_used = 0
        # blocks a sequence holding KV also holds for its sliding-window layers (`Limits.window_blocks`; set by the pool)
        self.window_blocks = 0

    @property
    def free(self) -> int:
        return self.n_blocks - self.used

    @property
    def capacity_tokens(self) -> int:
        return self.n_blocks * self.block_size

    def available(self) -> int:
        """Blocks an allocation can have now (free ones; with prefix caching, evictable cached ones too)."""
        return self.n_blocks - self.used

    def plan(self, plan: Plan, replica: Planning) -> Batch:
        """The next step's batch (`plan` over the free blocks)."""
        return plan(self.n_blocks - self.used, 0)

    def run_room(self, queued: bool) -> int:
        """Blocks a decode run may grow into without any step of it planning differently from the per-step engine:
        what an allocation can have (`queued`: requests wait, which a change in the cache could admit)."""
        return self.n_blocks - self.used

    def used_after(self, blocks: int) -> int:
        """Blocks in use once `blocks` more have been allocated (a decode run's growth so far, read mid-run)."""
        return self.used + blocks

    def grow(self, seq: Seq, n_slots: int) -> None:
        """Make `seq` hold enough blocks for `n_slots` tokens (and its sliding-window layers' window)."""
        need = -(-n_slots // self.block_size) + self.window_blocks - seq.blocks
        if need > 0:
            self.used += need
            seq.blocks += need
            if self.used > self.n_blocks:
                raise AssertionError(f"KV pool over capacity: {self.used} > {self.n_blocks} blocks")
            if self.used > self.peak_used:
                self.peak_used = self.used

    def grant(self, blocks: int) -> None:
        """`blocks` more blocks in use (the decode group's growth, or a reservation for a transfer)."""
        self.used += blocks
        assert self.used <= self.n_blocks, "KV pool over capacity"
        if self.used > self.peak_used:
            self.peak_used = self.used

    def revoke(self, blocks: int) -> None:
        """A reservation for a transfer is given back (its sender was lost): `blocks` free again."""
        self.used -= blocks
        assert self.used >= 0, "KV pool released more blocks than it lent"

    def release(self, seq: Seq, now: float) -> None:
        """A sequence is done (finished, or its KV sent away): its blocks are free."""
        self.used -= seq.blocks
        seq.blocks = 0
        assert self.used >= 0, "KV pool released more blocks than it lent"

    def preempted(self, seq: Seq, now: float) -> None:
        """A sequence is preempted (recompute): its blocks are free."""
        self.release(seq, now)

    def dropped(self, seq: Seq) -> None:
        """A waiting sequence is dropped (it holds nothing)."""

    def prompt_computed(self, seq: Seq, now: float) -> None:
        """A sequence with prefix hash ids emitted its first token."""

    def takes_adapter(self, adapter: int) -> bool:
        """Whether a transferred sequence with this LoRA adapter may come (True without LoRA)."""
        return True

    def promised(self, seq: Seq) -> None:
        """A transfer of `seq` is on its way here (a disaggregated decode replica)."""

    def unpromised(self, seq: Seq) -> None:
        """That transfer was cut (its prefill replica lost)."""

    def received(self, seq: Seq) -> None:
        """A transferred sequence joined the running batch with its KV (a disaggregated decode replica)."""

    def holds_adapter(self, adapter: int) -> bool:
        """Whether a LoRA adapter is in one of its GPU slots (False without LoRA)."""
        return False

    def lora_counts(self) -> tuple[int, float]:
        """LoRA adapters loaded, and the seconds their loads took ((0, 0.0) without LoRA)."""
        return 0, 0.0

    def match(self, seq: RequestView, limits: Limits) -> int:
        """Leading prefix hash blocks of `seq` cached here that its admission under `limits` would hit (for a
        prefix-aware router)."""
        return 0

    def evict_for(self, blocks: int) -> None:
        """Make the evictions an allocation of `blocks` more blocks will make (a decode run's growth so far, read
        mid-run: the allocation itself comes at the run's end; nothing without caching)."""

    def pins(self) -> int:
        """Cached entries' pins still held (0 once every sequence is released; 0 without caching)."""
        return 0

    def lose_all(self, seqs: list[Seq]) -> None:
        """The replica is lost with its GPUs' memory: `seqs` (all it held) hold nothing; nothing is in use."""
        for seq in seqs:
            seq.blocks = seq.shared = 0
            seq.pins = None
        self.used = 0


@mypyc_attr(allow_interpreted_subclasses=True)
class PrefixCachingKv(BlockKv):
    """The pool with automatic prefix caching over the trace's prefix hash ids (see the module docstring and
    `sim.run.engine.prefix_cache` for the rules)."""

    __slots__ = ("cache", "chunks", "log")

    def __init__(self, n_blocks: int, block_size: int, *, hash_tokens: int, log: RequestLog, chunks: bool = True) -> None:
        super().__init__(n_blocks, block_size)
        self.cache = PrefixCache(hash_tokens=hash_tokens, block_size=block_size)
        self.log = log
        self.chunks = chunks  # the policy prefills in chunks (`chunked`), else whole (`prefill_first`): see `hit_cap`

    def available(self) -> int:
        return self.n_blocks - self.used + self.cache.evictable_blocks

    def run_room(self, queued: bool) -> int:
        """With requests waiting, the free blocks only: an eviction changes what the queue's head finds cached (so
        what it reserves and whether it is admitted), which the per-step engine sees at the very step it happens."""
        return self.n_blocks - self.used if queued else self.available()

    def used_after(self, blocks: int) -> int:
        """`BlockKv.used_after`, less the cached entries the allocations evict: growth past the free blocks evicts
        whole entries (`_make_room`), the same count whether it happens a step at a time or at a run's end."""
        short = blocks - (self.n_blocks - self.used)
        if short <= 0:
            return self.used + blocks
        epb = self.cache.blocks_per_entry
        return self.used + blocks - epb * -(-short // epb)

    def _make_room(self, blocks: int) -> None:
        """Evict unpinned cached entries (LRU) until `blocks` blocks are free."""
        short = blocks - (self.n_blocks - self.used)
        if short > 0:
            self.used -= self.cache.evict(short)

    def plan(self, plan: Plan, replica: Planning) -> Batch:
        """Match the queue's head (and what a step could admit with it) first, plan over the free and evictable
        blocks (the hits on evictable entries reserved for running work), give tentative matches back, record the hits of those
        admitted."""
        cache = self.cache
        before = cache.evictable_blocks
        waiting = replica.waiting
        if not waiting:  # nothing to match, nothing admitted
            return plan(self.n_blocks - self.used + before, 0)
        matched = self._match_waiting(waiting, replica.n_running, replica.limits, replica.held_for_plan)
        reserve = before - cache.evictable_blocks  # cached entries the matches hit: evictable for running work only
        batch = plan(self.n_blocks - self.used + before, reserve)
        if matched:
            self._unmatch(batch, matched)
        log = self.log
        for seq in batch.admitted:
            if seq.pins is not None:  # its prefix hit, as admitted
                if seq.generated == 0 and math.isnan(log.cached_tokens[seq.idx]):
                    log.cached_tokens[seq.idx] = seq.computed
                log.prefill_saved_tokens += seq.computed
        return batch

    def _match_waiting(self, waiting: list[Seq], n_running: int, limits: Limits, held: tuple[int, int]) -> list[Seq]:
        """Match the sequences a step may admit (the head of the queue, within the free sequence slots, or all the
        slots with priority preemption, and the token budget) against the cache, pinning what they hit (until the
        step is planned: see `_unmatch`); those it matched. `held`: seats and blocks the step cannot use yet."""
        cache = self.cache
        t, epb = cache.hash_tokens, cache.blocks_per_entry
        # only as far down the queue as one step could admit: with priority preemption, as many as the batch holds
        # (running work may make way for them)
        slots = limits.max_num_seqs - (0 if limits.preempt_for_priority else n_running) - held[0]
        budget = limits.max_num_batched_tokens
        cap = limits.chunk_cap  # (a request's chunk is at most this: long_prefill_token_threshold)
        # vLLM's scheduler matches each waiting request in turn and allocates its blocks, counting the evictable
        # blocks it hits against the free ones (`allocate_slots`), so every request it admits hits cached entries no
        # one pins. Here the head always may; a request behind it may too while the blocks an allocation can take
        # (free and evictable, less those held back and the watermark) still cover, after its own hits, what the
        # running work (at most the token budget's blocks and one more a sequence for a block boundary) and every
        # request ahead of it (the rest of its prompt) could take this step; else it hits only entries already
        # pinned (prefixes in use), so its pins never take room a request ahead needs.
        bs, pad = limits.block_size, limits.window_blocks
        head = waiting[0]  # (`plan` matches only a non-empty queue)
        room: int | None = None  # (worked out once a candidate behind the head is matched, the head's hits out of it)
        spent = 0  # blocks the candidates may take: the rest of their prompts, and the hits of those behind the head
        matched: list[Seq] = []
        for seq in waiting:
            if slots <= 0 or budget <= 0:  # pragma: no mutate (budget < 0: one more matched, not admitted, given back)
                break
            slots -= 1
            hashes = seq.hashes
            if seq.pins is None and hashes is not None:
                limit = self.hit_limit(seq, limits)
                if seq is head:
                    m, seq.pins = cache.pin_match(hashes, limit)
                else:
                    before = cache.evictable_blocks
                    if room is None:
                        full = limits.max_num_batched_tokens
                        running = min(-(-full // bs), n_running * -(-min(full, cap) // bs)) + n_running
                        room = self.n_blocks - self.used + before - held[1] - limits.watermark_blocks - running
                    left = room - spent
                    m, seq.pins = cache.pin_match(hashes, limit, pinned_only=left < 0)
                    if left - (before - cache.evictable_blocks) < 0 <= left:  # its hits would take room one ahead needs
                        cache.unpin(seq.pins)
                        m, seq.pins = cache.pin_match(hashes, limit, pinned_only=True)
                    spent += before - cache.evictable_blocks  # evictable blocks its pins took out of the pool
                seq.computed = m * t
                seq.blocks = seq.shared = m * epb
                matched.append(seq)
            pending = seq.prompt_tokens + seq.generated - seq.computed
            budget -= min(pending, cap)
            spent += -(-pending // bs) + 1 + pad
        return matched

    def hit_limit(self, seq: RequestView, limits: Limits) -> int:
        """The most leading entries `seq` may hit here: `PrefixCache.limit`, and `hit_cap` for a sequence longer than
        the room above the watermark."""
        limit = self.cache.limit(seq)
        room = limits.n_blocks - limits.watermark_blocks - limits.window_blocks
        if (seq.prompt_tokens + seq.generated) > room * limits.block_size:
            return min(limit, self.hit_cap(limits))  # (rare)
        return limit

    def hit_cap(self, limits: Limits) -> int:
        """The most entries a sequence longer than the room above the watermark may hit. Its hit's blocks are taken
        with its first admission, which must leave the watermark free; it reaches its full length only by growing as it
        runs (into the watermark, as running work may). A longer hit would keep it from ever being admitted, even into
        an otherwise empty cache (the replica idle, the queue stuck behind it), where with no hit it would be: so its
        hit leaves its first chunk room above the watermark (`chunked`), or is none (a prompt prefilled whole, or with
        `whole_prompt`: it cannot be admitted with any hit, and is dropped as without caching)."""
        if not self.chunks or limits.whole_prompt:
            return 0
        # (its first chunk's blocks, and its window's)
        first = -(-min(limits.max_num_batched_tokens, limits.chunk_cap) // limits.block_size) + limits.window_blocks
        return max(0, (limits.n_blocks - limits.watermark_blocks - first) // self.cache.blocks_per_entry)

    def _unmatch(self, batch: Batch, matched: list[Seq]) -> None:
        """Sequences matched for this step and not admitted give their pins back (matched again next time), so a
        queued request holds no cached blocks another could need. (Only those matched can hold pins while waiting:
        a sequence leaves the queue when admitted, and comes back preempted, without pins.)"""
        cache = self.cache
        admitted = {id(seq) for seq in batch.admitted}
        for seq in matched:
            if seq.pins is not None and id(seq) not in admitted:
                cache.unpin(seq.pins)
                seq.pins, seq.computed, seq.blocks, seq.shared = None, 0, 0, 0  # pragma: no mutate (set again when matched)

    def grow(self, seq: Seq, n_slots: int) -> None:
        need = -(-n_slots // self.block_size) + self.window_blocks - seq.blocks
        if need > 0:
            self._make_room(need)
            BlockKv.grow(self, seq, n_slots)

    def grant(self, blocks: int) -> None:
        if blocks:
            self._make_room(blocks)
        super().grant(blocks)

    def release(self, seq: Seq, now: float) -> None:
        """Its own blocks are freed; its cached entries are unpinned, not freed (they stay cached, evictable)."""
        if seq.pins is None:
            super().release(seq, now)
            return
        self.used -= seq.blocks - seq.shared
        self.cache.unpin(seq.pins, Stamp(now, seq.idx))
        seq.blocks = seq.shared = 0

    def preempted(self, seq: Seq, now: float) -> None:
        self.release(seq, now)
        seq.pins = None  # matched again when next planned (its own blocks, if still cached)

    def dropped(self, seq: Seq) -> None:
        if seq.pins is not None:
            self.cache.unpin(seq.pins)  # a tentative match given back
        seq.pins, seq.blocks, seq.shared = None, 0, 0

    def prompt_computed(self, seq: Seq, now: float) -> None:
        """The prompt's prefill is done: its full hash blocks not yet cached become cached entries it pins."""
        cache = self.cache
        hashes, pins = seq.hashes, seq.pins
        assert hashes is not None and pins is not None
        n, seq.pins = cache.insert(pins, hashes, seq.prompt_tokens // cache.hash_tokens, Stamp(now, seq.idx))
        if n:
            seq.shared += n * cache.blocks_per_entry

    def match(self, seq: RequestView, limits: Limits) -> int:
        return 0 if seq.hashes is None else self.cache.match(seq.hashes, self.hit_limit(seq, limits))

    def evict_for(self, blocks: int) -> None:
        """Evict as `grow` will: ceil(short / blocks per entry) entries however the growth is split, so evicting
        part of it early changes neither which entries go nor how many (nor `used_after`)."""
        self._make_room(blocks)

    def pins(self) -> int:
        return self.cache.pinned()

    def lose_all(self, seqs: list[Seq]) -> None:
        super().lose_all(seqs)
        self.cache.clear()
