"""Batching policies: which sequences a step runs, how many tokens each, whom to preempt.

Pure functions of the queues and the free KV blocks; they decide and the replica applies.
- `prefill_first` (vLLM v0): if waiting requests can be admitted (FCFS, within `max_num_seqs`,
  `max_num_batched_tokens` and free blocks; a request that does not fit stops admission), the step
  prefills them whole and decodes nothing; otherwise it decodes every running sequence.
- `chunked` (Sarathi-Serve / vLLM v1): running sequences first, in admission order, each taking its
  pending tokens (1 when decoding, the next chunk when prefilling) from the `max_num_batched_tokens`
  budget; then waiting requests fill what is left of the budget with prompt chunks. No admissions in a
  step that preempted.
Under KV pressure both preempt the most recently admitted running sequence (recompute), possibly the
very sequence that needed the room, as vLLM does. Under `prefill_first` a preempted sequence whose
recompute (prompt + generated tokens) exceeds `max_num_batched_tokens` can never be prefilled whole;
vLLM v0 drops such a request ("ignored") and so does this policy, which reports it in `dropped`.

Admission keeps a watermark, as vLLM's block manager does: a waiting sequence is admitted only if the
blocks it needs leave at least `watermark_blocks` free (`engine.watermark`, a share of the cache, 1% by
default); running sequences grow into the reserve. What admission needs: `prefill_first`, the whole prompt;
`chunked`, its first chunk (vLLM v1's default), or with `whole_prompt` (vLLM's option to schedule on the
full input length) room for the whole prompt, counted against the free blocks, while its chunks are still
allocated as they run. A waiting sequence that could not be admitted even into an empty cache is dropped
with the reason (a recompute that outgrew the reserve), never left to wait forever.

Priority preemption (`engine.preempt_for_priority`, vLLM's `--scheduling-policy priority`): the waiting
queue is always ordered by priority (lower first), then arrival. With the option on, when the head of the
queue is not admitted by the step the policy planned, the running sequence of the lowest priority
(the numerically largest; the most recently admitted among equals) with a lower priority than the head is
preempted (recompute) and the step planned again, until the head is admitted or no such sequence runs.

Two entry points with one meaning: `next_batch` plans over explicit sequences (the per-step reference
and the fallback); `plan` plans the common step in which every running sequence is served, given the
lock-step decoders as an aggregate (`sim.run.engine.group`): their number and the blocks their next step
needs. When every running sequence gets all its pending tokens within the budget and the free blocks,
order cannot matter and no one is preempted, so `plan` decides exactly what `next_batch` would in time
O(non-group sequences); otherwise it returns None and the replica falls back to `next_batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from sim.run.engine.sequence import Seq, blocks_for


@dataclass(frozen=True, slots=True)
class Limits:
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    n_blocks: int = 1 << 62  # the replica's KV cache, in blocks
    watermark_blocks: int = 0  # free blocks an admission must leave
    whole_prompt: bool = False  # chunked: admit only when the whole prompt's blocks fit
    preempt_for_priority: bool = False  # a waiting request that cannot be admitted preempts lower-priority running ones
    lookahead: int = 0  # speculative decoding: draft tokens a decoding sequence also verifies (slots and budget)
    long_prefill: int = 0  # chunked: vLLM's long_prefill_token_threshold, a request's most tokens in one step (0: none)
    async_scheduling: bool = False  # vLLM's async scheduling: an arrival mid-step is seen at the boundary after the next
    # blocks a sequence holding KV also holds for its sliding-window layers' window (vLLM's hybrid KV cache manager:
    # `RooflineSetup.window_blocks`), whatever its length: its blocks are ceil(slots / block_size) + these
    window_blocks: int = 0
    # derived: a waiting sequence with more pending tokens than this can never be admitted (prefill_first, chunked)
    never_above: tuple[int, int] = field(init=False, default=(0, 0))
    chunk_cap: int = field(init=False, default=1 << 62)  # derived: the most tokens one request takes in a step

    def __post_init__(self) -> None:
        room = (self.n_blocks - self.watermark_blocks - self.window_blocks) * self.block_size  # tokens an empty cache admits
        cap = self.long_prefill if self.long_prefill > 0 else 1 << 62
        chunk = min(self.max_num_batched_tokens, cap)  # a request's largest chunk
        chunked = room if self.whole_prompt or chunk > room else 1 << 62  # a first chunk that fits an empty cache
        object.__setattr__(self, "never_above", (min(self.max_num_batched_tokens, room), chunked))
        object.__setattr__(self, "chunk_cap", cap)

    def never_reason(self, pending: int, *, recompute: bool, chunks: bool) -> str | None:
        """Why a waiting sequence with `pending` tokens to compute can never be admitted (even into an empty
        cache), or None: `prefill_first` (chunks False) prefills it whole, within the token budget; admission
        needs its blocks (the first chunk's, or the prompt's with `whole_prompt`) above the watermark."""
        if pending <= self.never_above[chunks]:
            return None  # the common case, decided by one comparison
        budget = self.max_num_batched_tokens
        what = "recompute" if recompute else "prompt"
        if not chunks and pending > budget:
            return (
                f"{'preempted or handed back by a lost replica, and its recompute' if recompute else 'its prompt'} of {pending} tokens exceeds "
                f"max_num_batched_tokens={budget} (prefill_first prefills it whole; vLLM v0 ignores such a request)"
            )
        n = pending if not chunks or self.whole_prompt else min(pending, budget, self.chunk_cap)
        need = blocks_for(n, self.block_size) + self.window_blocks
        return (
            f"its {what} needs {need} KV blocks to be admitted, more than the {self.n_blocks} - "
            f"{self.watermark_blocks} (engine.watermark) an empty cache offers"
        )

    def never_admitted(self, seq: Seq, chunks: bool) -> str | None:
        """`never_reason` for a waiting sequence (a recompute once it has generated tokens)."""
        pending = seq.prompt_tokens + seq.generated - seq.computed
        if pending <= self.never_above[chunks]:
            return None
        return self.never_reason(pending, recompute=seq.generated > 0, chunks=chunks)


class Batch:
    """A step's plan: (seq, tokens to process) in order, newly admitted ones, preempted ones. (A plain class, not a
    dataclass: one is made for every step planned, and the compiled build compiles a written `__init__`, not the one
    `dataclasses` generates at import.)"""

    __slots__ = (
        "admitted",
        "context_sum",
        "decodes_only",
        "dropped",
        "group",
        "min_tokens_left",
        "preempted",
        "reordered",
        "stall_s",
        "work",
    )

    def __init__(self, work: list[tuple[Seq, int]] | None = None, group: bool = False) -> None:
        self.work: list[tuple[Seq, int]] = [] if work is None else work
        self.admitted: list[Seq] = []
        self.preempted: list[Seq] = []
        self.dropped: list[tuple[Seq, str]] = []  # waiting sequences that can never be scheduled, why
        self.group = group  # the decode group takes its step too (one token each)
        self.stall_s = 0.0  # seconds the step waits before it runs (LoRA: adapters loaded for it)
        self.reordered = False  # admitted sequences are not the waiting queue's head (LoRA skipped some before them)
        # filled while planning, for the fast-forward: do all work items decode, and the decoders' figures
        self.decodes_only = True
        self.min_tokens_left = 1 << 62  # fewest output tokens any decoder still has to produce
        self.context_sum = 0  # decoders' cached tokens

    def __repr__(self) -> str:
        return f"Batch(work={self.work!r}, admitted={self.admitted!r}, preempted={self.preempted!r}, group={self.group})"

    def note(self, seq: Seq, computed: int, n: int, pending: int) -> None:
        """Account for `seq` taking n of its `pending` tokens with `computed` cached: a decode (one token,
        the last) feeds the fast-forward's figures, anything else rules it out."""
        if n == 1 and pending == 1 and seq.generated >= 1:
            left = seq.output_tokens - seq.generated
            if left < self.min_tokens_left:
                self.min_tokens_left = left
            self.context_sum += computed
        else:
            self.decodes_only = False

    @property
    def is_pure_decode(self) -> bool:
        """Only decodes of already running sequences: a candidate for fast-forward."""
        return (
            (bool(self.work) or self.group)
            and self.decodes_only
            and not self.admitted
            and not self.preempted
            and not self.stall_s
        )


class BatchPolicy(Protocol):
    chunks_prefill: bool  # False: a prompt is prefilled whole, in one step

    def next_batch(self, waiting: list[Seq], running: list[Seq], free_blocks: int, limits: Limits, reserve: int = 0) -> Batch:
        """Plan one step. May remove `dropped` sequences from the head of `waiting`. `reserve`: free blocks
        admissions may not use (prefix caching: cached entries the queue's head hit, evictable for running work)."""
        ...

    def plan(
        self,
        waiting: list[Seq],
        running: list[Seq],
        n_group: int,
        group_need: int,
        free_blocks: int,
        limits: Limits,
        reserve: int = 0,
    ) -> Batch | None:
        """Plan a step that serves all of `running` plus a decode group of `n_group` needing `group_need`
        blocks, or None when that step is not the one `next_batch` would plan."""
        ...


def _serve_all(running: list[Seq], batch: Batch, limits: Limits) -> tuple[int, int]:
    """Every running sequence takes all its pending tokens (a speculating decoder its drafts' too): (tokens, new
    blocks) that costs."""
    demand = need = 0
    work = batch.work
    bs, la, cap, pad = limits.block_size, limits.lookahead, limits.chunk_cap, limits.window_blocks
    for seq in running:
        c = seq.computed
        pending = seq.prompt_tokens + seq.generated - c
        n = pending if pending <= cap else cap  # (a long prefill's chunk: long_prefill_token_threshold)
        extra = la if la and pending == 1 and seq.generated >= 1 else 0
        demand += n + extra
        need += -(-(c + n + extra) // bs) + pad - seq.blocks
        work.append((seq, n))
        batch.note(seq, c, n, pending)
    return demand, need


def _decode_with_preemption(
    queue: list[Seq], free: int, limits: Limits, batch: Batch, budget: int | None
) -> tuple[int, int | None]:
    """Schedule running sequences in order, preempting from the back when blocks run out.
    (The hot loop of the engine: block arithmetic inlined.)"""
    bs = limits.block_size
    la = limits.lookahead
    cap = limits.chunk_cap
    pad = limits.window_blocks
    work = batch.work
    i = 0
    while i < len(queue):
        if budget is not None and budget <= 0:
            break
        seq = queue[i]
        c = seq.computed
        pending = seq.prompt_tokens + seq.generated - c
        n = pending if pending <= cap else cap  # (a long prefill's chunk: long_prefill_token_threshold)
        if budget is not None and n > budget:
            n = budget
        if la and pending == 1 and seq.generated >= 1:  # a speculating decoder: its draft slots and tokens too
            if budget is not None and 1 + la > budget:
                break  # its verify does not fit what is left of the token budget
            n_slots = c + 1 + la
        else:
            n_slots = c + n
        need = -(-n_slots // bs) + pad - seq.blocks
        if need > free:
            preempted_self = False
            while need > free:
                victim = queue.pop()
                batch.preempted.append(victim)
                free += victim.blocks - victim.shared  # (prefix caching: its shared blocks stay cached)
                if victim is seq:
                    preempted_self = True
                    break
            if preempted_self:
                break
        work.append((seq, n))
        batch.note(seq, c, n, pending)
        if need > 0:
            free -= need
        if budget is not None:
            budget -= n_slots - c
        i += 1
    return free, budget


def _drop_never(waiting: list[Seq], batch: Batch, limits: Limits, chunks: bool) -> None:
    """Drop, from the head of the queue, the sequences that can never be admitted."""
    while waiting:
        reason = limits.never_admitted(waiting[0], chunks)
        if reason is None:
            return
        batch.dropped.append((waiting.pop(0), reason))


def _admit_whole(waiting: list[Seq], batch: Batch, n_seqs: int, free: int, limits: Limits) -> None:
    """prefill_first's admission: whole prompts in FCFS order until one does not fit the token budget,
    `max_num_seqs` (counting the `n_seqs` running) or the free blocks above the watermark."""
    budget = limits.max_num_batched_tokens
    free -= limits.watermark_blocks
    for seq in waiting:
        n = seq.pending
        need = blocks_for(n, limits.block_size) + limits.window_blocks
        if n > budget or n_seqs + 1 > limits.max_num_seqs or need > free:
            break
        batch.work.append((seq, n))
        batch.admitted.append(seq)
        batch.decodes_only = False
        budget -= n
        n_seqs += 1
        free -= need


def _admit_chunks(waiting: list[Seq], batch: Batch, budget: int, n_running: int, free: int, limits: Limits) -> None:
    """chunked's admission: prompt chunks in FCFS order from what is left of the token budget, while
    `max_num_seqs` (counting the `n_running`) and the free blocks above the watermark allow (with
    `whole_prompt`, room for the whole prompt)."""
    free -= limits.watermark_blocks
    bs = limits.block_size
    for seq in waiting:
        if budget <= 0 or n_running >= limits.max_num_seqs:
            break
        n = min(seq.pending, budget, limits.chunk_cap)
        need = blocks_for(seq.pending if limits.whole_prompt else n, bs) + limits.window_blocks
        if need > free:
            break
        batch.work.append((seq, n))
        batch.admitted.append(seq)
        batch.decodes_only = False
        budget -= n
        free -= need
        n_running += 1


def _lower_priority_victim(running: list[Seq], than: int) -> Seq | None:
    """The running sequence to preempt for a waiting one of priority `than`: the lowest priority (largest
    value) above it, the most recently admitted among equals; None if every running one ranks as high."""
    victim = None
    for seq in running:
        if seq.priority > than and (victim is None or (seq.priority, seq.admit_no) > (victim.priority, victim.admit_no)):
            victim = seq
    return victim


def with_priority_preemption(
    plan: Callable[[list[Seq], list[Seq], int, Limits, int], Batch],
    waiting: list[Seq],
    running: list[Seq],
    free_blocks: int,
    limits: Limits,
    reserve: int = 0,
) -> Batch:
    """`plan`, and while the head of `waiting` is not admitted and lower-priority work runs, preempt the
    lowest-priority running sequence and plan again (the victims join the batch's `preempted`)."""
    batch = plan(waiting, running, free_blocks, limits, reserve)
    if not limits.preempt_for_priority:
        return batch
    victims: list[Seq] = []
    rest = running
    while waiting and not (batch.admitted and batch.admitted[0] is waiting[0]):
        victim = _lower_priority_victim(rest, waiting[0].priority)
        if victim is None:
            break
        if rest is running:
            rest = list(running)
        rest.remove(victim)
        victims.append(victim)
        free_blocks += victim.blocks - victim.shared
        batch = plan(waiting, rest, free_blocks, limits, reserve)
    if victims:
        batch.preempted[:0] = victims
    return batch


class PriorityCount:
    """With priority preemption: how many running sequences of each priority, so that the replica knows when the
    head of its queue outranks some running one (then only the per-sequence planner may pick the victim)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count: dict[int, int] = {}

    def add(self, seq: Seq) -> None:
        self.count[seq.priority] = self.count.get(seq.priority, 0) + 1

    def remove(self, seq: Seq) -> None:
        self.count[seq.priority] -= 1

    def outranked_by(self, priority: int) -> bool:
        """Does some running sequence rank below (a larger value than) `priority`?"""
        return any(p > priority for p, n in self.count.items() if n)


class PrefillFirst:
    chunks_prefill: ClassVar[bool] = False

    def next_batch(self, waiting: list[Seq], running: list[Seq], free_blocks: int, limits: Limits, reserve: int = 0) -> Batch:
        return with_priority_preemption(self._next_batch, waiting, running, free_blocks, limits, reserve)

    def _next_batch(self, waiting: list[Seq], running: list[Seq], free_blocks: int, limits: Limits, reserve: int = 0) -> Batch:
        batch = Batch()
        _drop_never(waiting, batch, limits, chunks=False)
        _admit_whole(waiting, batch, len(running), free_blocks - reserve, limits)
        if batch.work:
            return batch
        _decode_with_preemption(list(running), free_blocks, limits, batch, budget=None)
        return batch

    def plan(
        self,
        waiting: list[Seq],
        running: list[Seq],
        n_group: int,
        group_need: int,
        free_blocks: int,
        limits: Limits,
        reserve: int = 0,
    ) -> Batch | None:
        if waiting and limits.never_admitted(waiting[0], chunks=False):
            return None  # next_batch drops it
        batch = Batch()
        _admit_whole(waiting, batch, n_group + len(running), free_blocks - reserve, limits)
        if batch.work:
            return batch
        _, need = _serve_all(running, batch, limits)
        if need + group_need > free_blocks:
            return None
        batch.group = n_group > 0
        return batch


class Chunked:
    chunks_prefill: ClassVar[bool] = True

    def next_batch(self, waiting: list[Seq], running: list[Seq], free_blocks: int, limits: Limits, reserve: int = 0) -> Batch:
        return with_priority_preemption(self._next_batch, waiting, running, free_blocks, limits, reserve)

    def _next_batch(self, waiting: list[Seq], running: list[Seq], free_blocks: int, limits: Limits, reserve: int = 0) -> Batch:
        batch = Batch()
        queue = list(running)
        free, budget = _decode_with_preemption(queue, free_blocks, limits, batch, budget=limits.max_num_batched_tokens)
        assert budget is not None
        if batch.preempted:
            return batch
        _drop_never(waiting, batch, limits, chunks=True)
        _admit_chunks(waiting, batch, budget, len(queue), free - reserve, limits)
        return batch

    def plan(
        self,
        waiting: list[Seq],
        running: list[Seq],
        n_group: int,
        group_need: int,
        free_blocks: int,
        limits: Limits,
        reserve: int = 0,
    ) -> Batch | None:
        if waiting and limits.never_admitted(waiting[0], chunks=True):
            return None  # next_batch drops it
        batch = Batch()
        demand, need = _serve_all(running, batch, limits)
        demand += n_group * (1 + limits.lookahead)  # a speculating decoder verifies its drafts too
        need += group_need
        budget = limits.max_num_batched_tokens - demand
        free = free_blocks - need
        if budget < 0 or free < 0:
            return None
        batch.group = n_group > 0
        _admit_chunks(waiting, batch, budget, n_group + len(running), free - reserve, limits)
        return batch


POLICIES: dict[str, type[PrefillFirst] | type[Chunked]] = {"prefill_first": PrefillFirst, "chunked": Chunked}
