"""The speculating decode group: a replica's running decoders under speculative decoding, as aggregates.

With speculative decoding every decode step of a sequence verifies k drafts and emits 1 + j tokens, j its accepted
drafts. Each sequence's accepted drafts are drawn once, as its **trajectory** — one draw per verify step it will take
(`sim.run.engine.speculative.Acceptance.trajectory`), from the replica's seeded stream, when it first verifies on
the replica (among that step's first verifiers, in admission order) — so its whole future is known from then: the
tokens it emits at each of its steps, the KV blocks it holds at each step's start, the step at which it finishes.
The per-step engine (`engine.fast_forward: false`) reads the same trajectories a step at a time: the reference.

The group keeps, by absolute group step, what its members add up to: `inc[s]`, the tokens they emit at step s (their
contexts' growth), and `held[s]`, the KV blocks they hold at its start (each member until its last step). A member
adds its trajectory in when it first verifies and takes nothing out when it finishes (its sums end there); a heap
gives the next finish. So a run of k steps costs O(k) Python whatever the batch: the context sum at each step is the
running sum of `inc`, the blocks a step needs `held[s]` less what the members hold now, its first finish the heap's
top, the KV cache's limit the first step whose `held` passes what is held and free. Leaving the group early (the
replica falls back to per-sequence planning) empties it: each member synced to the steps it took.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
from typing import TYPE_CHECKING

import numpy as np

from sim.run.engine.records import ItlLog
from sim.run.engine.sequence import Seq

if TYPE_CHECKING:
    from sim.run.engine.speculative import Acceptance, Run, SpeculativeStepTime

MAX_RUN_STEPS = 64  # a run plans at most this many steps (the next run takes over where it ends)


class Member:
    """A sequence in the group, as it was when its trajectory entered the group's sums at group step `d0`."""

    __slots__ = ("b0", "blocks", "c0", "d0", "e0", "emitted", "g0", "left", "p0", "seq")

    def __init__(self, seq: Seq, d0: int, emitted: np.ndarray, e0: int, blocks: np.ndarray, left: int) -> None:
        self.seq = seq
        self.d0 = d0  # the group step of its first verify step here
        self.c0, self.g0, self.b0, self.p0 = seq.computed, seq.generated, seq.blocks, seq.traj_pos  # as it was then
        self.emitted = emitted  # the stream's running sum at each of its steps' starts from d0 and after its last:
        self.e0 = e0  # its first entry (less e0: the tokens emitted from d0 by each step; the last: min with left)
        self.blocks = blocks  # blocks held at each of its steps' starts (nondecreasing, from b0)
        self.left = left  # the tokens it had left then


class SpecRun:
    """A planned run of `k_max` verify steps: each step's end (seconds from the start), FLOPs and bytes; the blocks the
    group holds at each step's start and at the run's (the blocks it takes: the difference) and its tokens through
    each step (cumulative)."""

    __slots__ = ("bytes", "ends", "flops", "held", "holding", "k_max", "tokens")

    def __init__(self, priced: Run, held: list[int], holding: int, tokens: list[int]) -> None:
        self.ends, self.flops, self.bytes = priced
        self.held, self.holding, self.tokens = held, holding, tokens
        self.k_max = len(tokens)

    def total(self, k: int) -> float:
        return self.ends[k - 1]

    def work(self, k: int) -> tuple[float, float]:
        """(FLOPs, bytes) of the first k steps."""
        return sum(self.flops[:k]), sum(self.bytes[:k])

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]:
        """The first step boundary at or after `elapsed`: (steps, their total)."""
        k = min(bisect.bisect_left(self.ends, elapsed, 0, k_max) + 1, k_max)
        return k, self.ends[k - 1]

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        return bisect.bisect_right(self.ends, elapsed, 0, k_max)

    def extra_blocks(self, started: int) -> int:
        """Blocks the group holds beyond its blocks at the start once `started` steps have begun."""
        return self.held[started - 1] - self.holding if started > 0 else 0

    def gaps(self, k: int) -> list[float]:
        """The durations of steps 1..k-1 (the gaps between their tokens)."""
        ends = self.ends
        return list(map(operator.sub, ends[1:k], ends[: k - 1]))


class SpecGroup:
    __slots__ = (
        "_bs",
        "_off",
        "_slack",
        "acceptance",
        "base",
        "block_size",
        "ctx",
        "d",
        "heap",
        "held",
        "holding",
        "inc",
        "itl",
        "la",
        "model",
        "n",
        "pad",
        "pending",
        "pending_need",
        "t_last",
        "verifies",
        "verify_tokens",
    )

    def __init__(self, block_size: int, acceptance: Acceptance, model: SpeculativeStepTime, itl: ItlLog, pad: int = 0) -> None:
        self.block_size = block_size
        self.pad = pad  # blocks a member also holds for its sliding-window layers (`Limits.window_blocks`)
        self.acceptance = acceptance
        self.la = acceptance.k  # lookahead slots (drafts) each member holds
        self.model = model
        self.itl = itl
        self.d = 0  # pragma: no mutate (only differences of d are read)  verify steps the group has taken
        self.base = 0  # the group step `inc[0]` and `held[0]` stand for
        self.inc = np.zeros(256, dtype=np.int64)  # tokens the members emit at each step (from `base`)
        self.held = np.zeros(256, dtype=np.int64)  # blocks they hold at each step's start (those still members then)
        self.holding = 0  # blocks the members in the sums hold now
        # (finish step, admission number, member): every member whose trajectory is in the sums (no other index of
        # them is kept: what reads them all reads them in any order)
        self.heap: list[tuple[int, int, Member]] = []
        self.pending: list[Seq] = []  # joined, not yet verified here (their trajectory is drawn when they first do)
        self.pending_need = 0  # blocks those need at their first step
        self.n = 0
        self.ctx = 0  # the members' cached tokens
        self.t_last = 0.0  # when every member emitted its last token
        self.verifies = 0  # member-steps that verified drafts
        self.verify_tokens = 0  # and the tokens they emitted
        self._bs = np.array(block_size, dtype=np.int64)  # (0-d: see `_enter`)
        self._off = np.zeros((), dtype=np.int64)  # (scratch: a member's offset, see `_enter`)
        self._slack = self.la + block_size * (1 + pad)  # (`_enter`: blocks held, (context + this) // block_size)

    # --- membership ------------------------------------------------------------------------------------
    def join(self, seq: Seq) -> None:
        """Add a decoding sequence whose last token came at `t_last` (its fields are current); it enters the sums when
        it first verifies (`activate`)."""
        self.pending.append(seq)
        self.n += 1
        self.ctx += seq.computed
        self.pending_need += max(0, -(-(seq.computed + 1 + self.la) // self.block_size) + self.pad - seq.blocks)

    def activate(self) -> None:
        """The members joined since the last step verify for the first time in the group: each takes its trajectory
        (drawn now if it has none yet, in admission order) and adds it to the sums from this step on."""
        if not self.pending:
            return
        pending = self.pending
        if len(pending) > 1:
            pending.sort(key=_admit_no)
        self.pending = []
        self.pending_need = 0
        for seq in pending:
            if seq.traj is None:
                self.acceptance.trajectory(seq)
            self._enter(seq)

    def _enter(self, seq: Seq) -> None:
        """Add a member's future (from its trajectory's current position) to the sums from step `d`."""
        assert seq.traj is not None and seq.traj_cum is not None
        left = seq.output_tokens - seq.generated
        p = seq.traj_pos
        tokens, emitted = seq.traj, seq.traj_cum  # (emitted: the stream's running sum at each step's start and after)
        if p == 0 and left == seq.traj_left:  # as drawn
            f = len(tokens)
            e0, end = seq.traj_e0, seq.traj_end
        else:
            e0 = emitted.item(p)
            if p or emitted[-2] - e0 >= left:  # not as drawn for the tokens it has left (a recompute emitted some)
                tokens, emitted = tokens[p:], emitted[p:]  # tokens per step (its last one clipped at its end)
                f = int(emitted.searchsorted(e0 + left))  # the steps it takes
                tokens, emitted = tokens[:f], emitted[: f + 1]
            else:
                f = len(tokens)
            end = emitted.item(-1)
        # blocks held at each step's start: its context then, its next token and the drafts' slots (never fewer
        # than it holds; nondecreasing as the context is)
        c = seq.computed + self._slack
        # (the scalars as 0-d int64 arrays: numpy's arithmetic with a Python int resolves its type first, ~0.2 us an
        # operation here; the same int64 arithmetic)
        off = self._off
        off[()] = c - e0
        blocks = emitted[:-1] + off
        blocks //= self._bs
        b0 = seq.blocks
        if c // self.block_size < b0:  # (its first step's)
            np.maximum(blocks, b0, out=blocks)
        d = self.d
        lo = d - self.base
        hi = lo + f
        inc, held = self.inc, self.held
        if hi > len(inc):
            size = max(2 * len(inc), hi)
            inc = self.inc = np.concatenate([inc, np.zeros(size - len(inc), dtype=np.int64)])
            held = self.held = np.concatenate([held, np.zeros(size - len(held), dtype=np.int64)])
        window = inc[lo:hi]
        window += tokens
        over = end - e0 - left
        if over:
            inc[hi - 1] -= over  # its last step emits what it has left
        window = held[lo:hi]
        window += blocks
        self.holding += b0
        heapq.heappush(self.heap, (d + f, seq.admit_no, Member(seq, d, emitted, e0, blocks, left)))

    def _sync(self, member: Member, steps: int) -> Seq:
        """The member's fields after `steps` of its steps (its last token at `t_last`)."""
        seq = member.seq
        done = min(member.emitted.item(steps) - member.e0, member.left)
        seq.computed, seq.generated = member.c0 + done, member.g0 + done
        seq.blocks = member.blocks.item(steps - 1) if steps else member.b0
        seq.traj_pos = member.p0 + steps
        seq.last_token_at_s = self.t_last
        return seq

    def release_all(self) -> list[Seq]:
        """Empty the group: every member synced (its future taken out of the sums), in admission order."""
        out = list(self.pending)
        for _, _, member in self.heap:
            steps = self.d - member.d0
            out.append(self._sync(member, steps))
        out.sort(key=_admit_no)
        self.heap.clear()
        self.pending = []
        self.pending_need = 0
        self.inc[:] = 0
        self.held[:] = 0
        self.holding = 0
        self.base = self.d
        self.n = self.ctx = 0
        return out

    # --- what a step needs ------------------------------------------------------------------------------
    @property
    def next_step_blocks(self) -> int:
        """New blocks the members need for the next step: their context, their next token and the drafts' slots."""
        return self.held.item(self.d - self.base) - self.holding + self.pending_need

    @property
    def min_tokens_left(self) -> int:
        """The fewest output tokens a member has left."""
        left = [s.output_tokens - s.generated for s in self.pending]
        d = self.d
        for _, _, m in self.heap:
            left.append(m.left - min(m.emitted.item(d - m.d0) - m.e0, m.left))
        return min(left) if left else 1 << 62

    def blocks_needed(self, k: int) -> int:
        """New blocks the members in the sums need over the next k steps, and those joined since for their first."""
        i = self.d - self.base
        return self.held.item(i + k - 1) - self.holding + self.pending_need if k > 0 else 0

    # --- steps and runs ---------------------------------------------------------------------------------------
    def advance(self, k: int, t: float, tokens: int = -1, held: int = -1) -> list[Seq]:
        """k verify steps ending at `t` (their blocks already granted) in which the members emit `tokens` (if known):
        record the zero gaps of the accepted drafts, move the context on; return the members that finished, synced and
        removed. (The step's first gaps are the replica's to record; `held`: the sums' blocks at the last step's start,
        if known.)"""
        d = self.d
        i = d - self.base
        if tokens < 0:
            tokens = self.inc.item(i) if k == 1 else int(self.inc[i : i + k].sum())
        # what they held at the last step's start: they hold it now
        self.holding = self.held.item(i + k - 1) if held < 0 else held
        self.ctx += tokens
        nk = self.n * k
        self.verifies += nk
        self.verify_tokens += tokens
        if tokens > nk:  # accepted drafts come with the verified token: a gap of 0 each
            self.itl.add_grouped(0.0, tokens - nk)
        d = self.d = d + k
        self.t_last = t
        heap = self.heap
        done: list[Seq] = []
        while heap and heap[0][0] <= d:
            member = heapq.heappop(heap)[2]
            seq = self._sync(member, len(member.blocks))
            done.append(seq)
            self.ctx -= seq.computed
            self.holding -= seq.blocks
            self.n -= 1
        if i + k > len(self.inc) // 2:  # move the window on (i + k: the step now, from `base`)
            self._move_window()
        return done

    def _move_window(self) -> None:
        """Move the sums' window on to start at the current step (past steps are never read again)."""
        j = self.d - self.base
        self.inc = np.concatenate([self.inc[j:], np.zeros(j, dtype=np.int64)])
        self.held = np.concatenate([self.held[j:], np.zeros(j, dtype=np.int64)])
        self.base = self.d

    def plan_run(self, free_blocks: int) -> SpecRun | None:
        """The run from now (see the module docstring; one step at least), or None when the KV cache cannot feed even
        the first step (the per-sequence planner then preempts)."""
        if self.pending:
            self.activate()
        d = self.d
        k_max = min(self.heap[0][0] - d, MAX_RUN_STEPS) if self.heap else MAX_RUN_STEPS
        i = d - self.base
        held = self.held[i : i + k_max].tolist()  # (nondecreasing: no member leaves before the run's end)
        holding = self.holding
        if held[-1] - holding > free_blocks:  # the KV cache binds first
            k_max = bisect.bisect_right(held, free_blocks + holding)
            if k_max < 1:
                return None
            del held[k_max:]
        tokens = list(itertools.accumulate(self.inc[i : i + k_max].tolist()))
        priced = self.model.run_fn(self.n)(self.ctx, tokens)  # each step by its context sum
        return SpecRun(priced, held, holding, tokens)

    def take_run(self, run: SpecRun, k: int, start: float) -> tuple[list[Seq], int]:
        """Apply the first k steps of `run` (started at `start`): record the gaps, move on; the members that finished
        (synced, removed) and the blocks the group took."""
        n = self.n
        itl = self.itl
        ends = run.ends
        itl.add_grouped(start + ends[0] - self.t_last, n)  # every member's first gap of the run
        if k > 1:
            itl.add_grouped_many(run.gaps(k), n)
        held = run.held[k - 1]
        return self.advance(k, start + ends[k - 1], run.tokens[k - 1], held), held - run.holding


def _admit_no(seq: Seq) -> int:
    return seq.admit_no
