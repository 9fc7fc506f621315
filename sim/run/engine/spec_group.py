"""The speculating decode group: a replica's running decoders under speculative decoding, kept as arrays.

With speculative decoding every decode step of a sequence verifies k drafts and emits 1 + j tokens, j its accepted
drafts (seeded draws, `sim.physics.speculative.Acceptance`). The sequences still step together — every one emits at every
step's end — but their token counts and contexts drift apart, so the plain decode group's aggregates
(`sim.run.engine.group`) do not hold. This group keeps each member's cached tokens, generated tokens, output length and
KV blocks in numpy arrays, in admission order (the order a step-by-step engine verifies them in, and so draws their
acceptances in), and advances a step, or a run of steps, with array operations: O(1) Python per step or run,
whatever the batch.

A run (the fast-forward): while nothing joins or leaves, the next steps are decided by the draws alone. The group
peeks the draws of up to K steps (K: the fewest tokens any member has left, each step emitting at least one),
finds the first step in which a member finishes and the last step the free KV blocks can feed (each member holds
blocks for its context plus its next token and k lookahead slots), prices every step from the members' context
sum (`sim.physics.speculative.SpeculativeStepTime.steps`) and waits once. An arrival cuts the run at the next step
boundary, as for a plain run; only the draws of the steps taken are consumed, so the stream is the per-step
engine's, draw for draw, and the per-step reference decides equality (tests/test_speculative.py).
"""

from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING

import numpy as np

from sim.run.engine.records import ItlLog
from sim.run.engine.sequence import Seq

if TYPE_CHECKING:
    from sim.run.engine.speculative import Acceptance, SpeculativeStepTime

ADM, C, LEFT, OUT, B = range(5)  # the rows of a group's state: admission number, cached tokens, tokens left to
# generate, output tokens, KV blocks held (one column per member, members in admission order)
MAX_RUN_STEPS = 16  # a run plans at most this many steps (the next run takes over where it ends)
_STEP = np.arange(1, MAX_RUN_STEPS + 1, dtype=np.int64)[:, None]  # tokens of t + 1 steps, one each


class SpecRun:
    """A planned run of `k_max` verify steps of the group's members (whose state does not change until the run is
    taken): each step's end (seconds from the start), (seconds, FLOPs, bytes), and the members' tokens emitted
    through each step (the unclipped draws)."""

    __slots__ = ("cum", "emitted", "ends", "group", "k_max", "steps")

    def __init__(self, steps: list[tuple[float, float, float]], cum: np.ndarray, emitted: list[int], group: SpecGroup) -> None:
        self.steps, self.cum, self.emitted, self.group = steps, cum, emitted, group
        self.ends = list(itertools.accumulate(dt for dt, _, _ in steps))
        self.k_max = len(steps)

    def work(self, k: int) -> tuple[float, float]:
        """(FLOPs, bytes) of the first k steps."""
        return sum(f for _, f, _ in self.steps[:k]), sum(x for _, _, x in self.steps[:k])

    def total(self, k: int) -> float:
        return self.ends[k - 1]

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]:
        """The first step boundary at or after `elapsed`: (steps, their total)."""
        k = min(bisect.bisect_left(self.ends, elapsed, 0, k_max) + 1, k_max)
        return k, self.ends[k - 1]

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        return bisect.bisect_right(self.ends, elapsed, 0, k_max)

    def extra_blocks(self, started: int) -> int:
        """Blocks the members hold beyond their blocks at the start once `started` steps have begun (each step holds
        its context, its next token and the drafts' slots)."""
        if started <= 0:
            return 0
        group = self.group
        n = group.n
        before = self.cum[started - 2] if started >= 2 else 0
        return group._grown(group.st[C, :n] + before, group.st[B, :n])


class SpecGroup:
    __slots__ = (
        "acceptance",
        "block_size",
        "ctx",
        "draws",
        "itl",
        "la",
        "model",
        "n",
        "need",
        "seqs",
        "st",
        "t_last",
        "verifies",
        "verify_tokens",
    )

    def __init__(self, block_size: int, acceptance: Acceptance, model: SpeculativeStepTime, itl: ItlLog) -> None:
        self.block_size = block_size
        self.acceptance = acceptance
        self.la = acceptance.k  # lookahead slots (drafts) each member holds
        self.model = model
        self.itl = itl
        self.seqs: list[Seq] = []
        self.st = np.zeros((5, 16), dtype=np.int64)  # the members' state (rows ADM ... B), first `n` columns used
        self.n = 0
        self.ctx = 0  # the members' cached tokens
        self.need = 0  # new blocks the members need for their next step (kept up to date)
        self.t_last = 0.0  # when every member emitted its last token
        self.draws: np.ndarray | None = None  # the step in progress's accepted drafts, per member (drawn at its start)
        self.verifies = 0  # member-steps that verified drafts
        self.verify_tokens = 0  # and the tokens they emitted

    def _grown(self, c: np.ndarray, b: np.ndarray, *, next_step: bool = False) -> int:
        """Blocks members of cached tokens `c` holding `b` blocks need for a step (their next token and drafts).
        `next_step`: `b` covers `c` (the members' own state), so with k + 1 <= block_size a member needs at most one."""
        bs = self.block_size
        if next_step and 1 + self.la <= bs:  # (count the members past their blocks)
            return int(np.count_nonzero(c + (1 + self.la) > b * bs))
        grown = -(-(c + (1 + self.la)) // bs) - b
        return int(grown[grown > 0].sum())

    # --- membership ------------------------------------------------------------------------------------
    def join(self, seq: Seq) -> None:
        """Add a decoding sequence whose last token came at `t_last` (its fields are current)."""
        n, st = self.n, self.st
        if n == st.shape[1]:
            st = self.st = np.concatenate([st, np.zeros_like(st)], axis=1)
        i = n if not n or st[ADM, n - 1] < seq.admit_no else int(np.searchsorted(st[ADM, :n], seq.admit_no))
        if i < n:  # (a sequence admitted before some members joins after them: its place in admission order)
            st[:, i + 1 : n + 1] = st[:, i:n]
        c, b = seq.computed, seq.blocks
        st[:, i] = (seq.admit_no, c, seq.output_tokens - seq.generated, seq.output_tokens, b)
        self.seqs.insert(i, seq)
        self.n = n + 1
        self.ctx += c
        self.need += max(0, -(-(c + 1 + self.la) // self.block_size) - b)

    def _sync(self, i: int) -> Seq:
        seq = self.seqs[i]
        _, c, left, out, b = self.st[:, i].tolist()
        seq.computed, seq.generated, seq.blocks = c, out - left, b
        seq.last_token_at_s = self.t_last
        return seq

    def release_all(self) -> list[Seq]:
        """Empty the group: every member synced, in admission order."""
        members = [self._sync(i) for i in range(self.n)]
        self.seqs = []
        self.n = self.ctx = self.need = 0
        return members

    def _finish(self) -> list[Seq]:
        """The members that have all their tokens leave (synced, in admission order)."""
        n, st = self.n, self.st
        keep = st[LEFT, :n] > 0
        gone = [self._sync(i) for i in np.flatnonzero(~keep).tolist()]
        m = n - len(gone)
        st[:, :m] = st[:, :n][:, keep]
        seqs = self.seqs
        for seq in gone:
            seqs.remove(seq)
            self.ctx -= seq.computed
        self.n = m
        self.need = self._grown(st[C, :m], st[B, :m], next_step=True) if m else 0
        return gone

    # --- what a step needs ------------------------------------------------------------------------------
    @property
    def next_step_blocks(self) -> int:
        """New blocks the members need for the next step: their context, their next token and the drafts' slots."""
        return self.need

    @property
    def min_tokens_left(self) -> int:
        return int(self.st[LEFT, : self.n].min()) if self.n else 1 << 62

    def blocks_needed(self, k: int) -> int:
        """New blocks the members need for the next k steps if each accepts every draft: exact for one step, an
        upper bound beyond (a run keeps its exact figures; only the plain replica's run code asks for more)."""
        if k <= 0 or not self.n:
            return 0
        n = self.n
        return self._grown(self.st[C, :n] + (k - 1) * (1 + self.la), self.st[B, :n])

    # --- one step -------------------------------------------------------------------------------------------
    def advance(self, k: int, t: float) -> list[Seq]:
        """One verify step ending at `t` (its blocks already granted, its draws in `draws`): each member emits its
        token and the drafts it accepted (its KV grows by as many), the drafts' zero gaps are recorded; return the
        members that finished, synced and removed. (`k` is 1: a step at a time.)"""
        assert k == 1 and self.draws is not None
        n, st = self.n, self.st
        c, left, b = st[C, :n], st[LEFT, :n], st[B, :n]
        bs = self.block_size
        if 1 + self.la <= bs:  # the step's slots: at most one more block each
            b += c + (1 + self.la) > b * bs
        else:
            np.maximum(b, -(-(c + (1 + self.la)) // bs), out=b)
        emitted = np.minimum(self.draws + 1, left)
        self.draws = None
        c += emitted
        left -= emitted
        self._emitted(int(emitted.sum()), n, t)
        if left.all():
            self.need = self._grown(c, b, next_step=True)
            return []
        return self._finish()

    def _emitted(self, total: int, member_steps: int, t: float) -> None:
        self.ctx += total
        self.t_last = t
        self.verifies += member_steps
        self.verify_tokens += total
        if total > member_steps:  # accepted drafts come with the verified token: a gap of 0 each
            self.itl.add_grouped(0.0, total - member_steps)

    # --- a run ----------------------------------------------------------------------------------------------
    def plan_run(self, free_blocks: int) -> SpecRun | None:
        """The run from now (see the module docstring; one step at least), or None when the KV cache cannot feed even
        the first step (the per-sequence planner then preempts)."""
        n, st = self.n, self.st
        left = st[LEFT, :n]
        steps = min(int(left.min()), MAX_RUN_STEPS)
        if steps < 1:
            return None
        cum = self.acceptance.rows(n * steps).reshape(steps, n).cumsum(axis=0)
        cum += _STEP[:steps]  # tokens each member emits by the end of each step (before clipping at its end)
        hit: np.ndarray = np.asarray((cum >= left).any(axis=1))
        first = int(hit.argmax())
        k_max = first + 1 if hit[first] else steps  # through the first step in which a member finishes
        la, bs = self.la, self.block_size
        if self.need + n * -(-(k_max * (1 + la)) // bs) > free_blocks:  # the KV cache may bind: where?
            c, b = st[C, :n], st[B, :n]
            before = np.vstack([np.zeros((1, n), dtype=np.int64), cum[: k_max - 1]])
            grown = -(-(c + before + (1 + la)) // bs) - b
            short = np.where(grown > 0, grown, 0).sum(axis=1) > free_blocks
            if short.any():
                k_max = int(short.argmax())
        if k_max < 1:
            return None
        ctx = self.ctx
        verify = self.model.verify_fn(n)
        emitted = cum[:k_max].sum(axis=1).tolist()  # all members' tokens through each step (unclipped)
        steps_ = [verify(ctx)] + [verify(ctx + x) for x in emitted[:-1]]  # priced by each step's context sum
        return SpecRun(steps_, cum[:k_max], emitted, self)

    def take_run(self, run: SpecRun, k: int, start: float) -> tuple[list[Seq], int]:
        """Apply the first k steps of `run` (started at `start`): record the gaps, consume the draws, grow the KV;
        the members that finished (synced, removed) and the blocks the members grew by."""
        n, st = self.n, self.st
        itl = self.itl
        ends = run.ends
        itl.add_grouped(start + ends[0] - self.t_last, n)  # every member's first gap of the run
        for j in range(1, k):
            itl.add_grouped(ends[j] - ends[j - 1], n)
        self.acceptance.take(n * k)
        c, left, b = st[C, :n], st[LEFT, :n], st[B, :n]
        la, bs = self.la, self.block_size
        if k == 1:  # the step's blocks are the group's next-step need
            grown = self.need
            if 1 + la <= bs:
                b += c + (1 + la) > b * bs
            else:
                np.maximum(b, -(-(c + (1 + la)) // bs), out=b)
        else:
            blocks = -(-(c + run.cum[k - 2] + (1 + la)) // bs)
            more = blocks - b
            grown = int(more[more > 0].sum())
            np.maximum(b, blocks, out=b)
        last = k == run.k_max
        emitted = run.cum[k - 1]
        if last:  # (a finishing member emits only what it has left: clipped in the run's last step alone)
            emitted = np.minimum(emitted, left)
            total = int(emitted.sum())
        else:
            total = run.emitted[k - 1]
        c += emitted
        left -= emitted
        self._emitted(total, n * k, start + ends[k - 1])
        if not last or left.all():
            self.need = self._grown(c, b, next_step=True)
            return [], grown
        return self._finish(), grown
