"""The speculating decode group: a replica's running decoders under speculative decoding, kept as arrays.

With speculative decoding every decode step of a sequence verifies k drafts and emits 1 + j tokens, j its accepted
drafts (seeded draws, `sim.speculative.Acceptance`). The sequences still step together — every one emits at every
step's end — but their token counts and contexts drift apart, so the plain decode group's aggregates
(`sim.engine.group`) do not hold. This group keeps each member's cached tokens, generated tokens, output length and
KV blocks in numpy arrays, in admission order (the order a step-by-step engine verifies them in, and so draws their
acceptances in), and advances a step, or a run of steps, with array operations: O(1) Python per step or run,
whatever the batch.

A run (the fast-forward): while nothing joins or leaves, the next steps are decided by the draws alone. The group
peeks the draws of up to K steps (K: the fewest tokens any member has left, each step emitting at least one),
finds the first step in which a member finishes and the last step the free KV blocks can feed (each member holds
blocks for its context plus its next token and k lookahead slots), prices every step from the members' context
sum (`sim.speculative.SpeculativeStepTime.steps`) and waits once. An arrival cuts the run at the next step
boundary, as for a plain run; only the draws of the steps taken are consumed, so the stream is the per-step
engine's, draw for draw, and the per-step reference decides equality (tests/test_speculative.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.engine.records import ItlLog
from sim.engine.sequence import Seq

if TYPE_CHECKING:
    from sim.speculative import Acceptance, SpeculativeStepTime

MAX_RUN_STEPS = 4096  # a run's draws are peeked at most this many steps ahead (memory: n x steps)


@dataclass
class SpecRun:
    """A planned run of k_max speculative steps from `start`: each step's end (offset from the start), the draws'
    tokens emitted per step and member, the members' extra KV blocks held after each step's start."""

    ends: np.ndarray  # cumulative seconds after each step (float64, length k_max)
    emitted: np.ndarray  # tokens emitted, per step and member (clipped at each member's output), (k_max, n)
    extra_blocks: np.ndarray  # blocks the members hold beyond their blocks at the start, once step t has begun
    flops: np.ndarray  # per step
    bytes: np.ndarray
    k_max: int

    def total(self, k: int) -> float:
        return float(self.ends[k - 1])

    def at(self, j: int) -> float:
        return float(self.ends[0]) if j == 0 else float(self.ends[j] - self.ends[j - 1])

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]:
        """The first step boundary at or after `elapsed`: (steps, their total)."""
        k = min(int(np.searchsorted(self.ends[:k_max], elapsed, side="left")) + 1, k_max)
        return k, float(self.ends[k - 1])

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        return int(np.searchsorted(self.ends[:k_max], elapsed, side="right"))


class SpecGroup:
    __slots__ = ("acceptance", "adm", "b", "block_size", "c", "ctx", "g", "itl", "la", "model", "n", "out", "seqs", "t_last")

    def __init__(self, block_size: int, acceptance: Acceptance, model: SpeculativeStepTime, itl: ItlLog) -> None:
        self.block_size = block_size
        self.acceptance = acceptance
        self.la = acceptance.k  # lookahead slots (drafts) each member holds
        self.model = model
        self.itl = itl
        self.seqs: list[Seq] = []
        self.adm = np.empty(0, dtype=np.int64)  # admission numbers (the order)
        self.c = np.empty(0, dtype=np.int64)  # cached tokens
        self.g = np.empty(0, dtype=np.int64)  # generated tokens
        self.out = np.empty(0, dtype=np.int64)  # output tokens wanted
        self.b = np.empty(0, dtype=np.int64)  # KV blocks held
        self.n = 0
        self.ctx = 0  # the members' cached tokens
        self.t_last = 0.0  # when every member emitted its last token

    # --- membership ------------------------------------------------------------------------------------
    def join(self, seq: Seq) -> None:
        """Add a decoding sequence whose last token came at `t_last` (its fields are current)."""
        i = int(np.searchsorted(self.adm, seq.admit_no))
        self.seqs.insert(i, seq)
        self.adm = np.insert(self.adm, i, seq.admit_no)
        self.c = np.insert(self.c, i, seq.computed)
        self.g = np.insert(self.g, i, seq.generated)
        self.out = np.insert(self.out, i, seq.output_tokens)
        self.b = np.insert(self.b, i, seq.blocks)
        self.n += 1
        self.ctx += seq.computed

    def _sync(self, i: int) -> Seq:
        seq = self.seqs[i]
        seq.computed, seq.generated, seq.blocks = int(self.c[i]), int(self.g[i]), int(self.b[i])
        seq.last_token_at_s = self.t_last
        return seq

    def release_all(self) -> list[Seq]:
        """Empty the group: every member synced, in admission order."""
        members = [self._sync(i) for i in range(self.n)]
        self.seqs = []
        self.adm = self.c = self.g = self.out = self.b = np.empty(0, dtype=np.int64)
        self.n = self.ctx = 0
        return members

    def _remove(self, keep: np.ndarray) -> list[Seq]:
        """Drop the members not in `keep` (a mask), synced, in admission order."""
        gone = [self._sync(int(i)) for i in np.flatnonzero(~keep)]
        self.seqs = [s for s, k in zip(self.seqs, keep.tolist(), strict=True) if k]
        self.adm, self.c, self.g, self.out, self.b = (a[keep] for a in (self.adm, self.c, self.g, self.out, self.b))
        self.n = len(self.seqs)
        self.ctx = int(self.c.sum())
        return gone

    # --- what a step needs ------------------------------------------------------------------------------
    def _blocks_for(self, slots: np.ndarray) -> np.ndarray:
        return -(-slots // self.block_size)

    @property
    def next_step_blocks(self) -> int:
        """New blocks the members need for the next step: their context, their next token and the drafts' slots."""
        if not self.n:
            return 0
        return int(np.maximum(self._blocks_for(self.c + 1 + self.la) - self.b, 0).sum())

    @property
    def min_tokens_left(self) -> int:
        return int((self.out - self.g).min()) if self.n else 1 << 62

    def blocks_needed(self, k: int) -> int:
        """Blocks the members hold beyond their own after k steps' starts, if each accepted every draft (an upper
        bound, for observers between runs; a run keeps its exact figures)."""
        if k <= 0 or not self.n:
            return 0
        return int(np.maximum(self._blocks_for(self.c + k * (1 + self.la)) - self.b, 0).sum())

    # --- one step -------------------------------------------------------------------------------------------
    def advance(self, k: int, t: float) -> list[Seq]:
        """One verify step ending at `t` (its blocks already granted): draw each member's accepted drafts, emit,
        return the members that finished, synced and removed. (`k` is 1: a step at a time.)"""
        assert k == 1
        n = self.n
        j = self.acceptance.rows(n)
        self.acceptance.take(n)
        self.b = np.maximum(self.b, self._blocks_for(self.c + 1 + self.la))
        emitted = np.minimum(1 + j, self.out - self.g)
        return self._emit(emitted, t)

    def _emit(self, emitted: np.ndarray, t: float) -> list[Seq]:
        """Each member emitted `emitted` tokens, its last at `t`: its KV grows by as many (the drafts it accepted and
        the token it verified), the drafts' zero gaps are recorded, the finished leave."""
        self.c = self.c + emitted
        self.g = self.g + emitted
        self.ctx += int(emitted.sum())
        self.t_last = t
        zeros = int(emitted.sum()) - self.n  # each member's first token of the step has the step's gap
        if zeros > 0:
            self.itl.add_grouped(0.0, zeros)  # accepted drafts come with the verified token: a gap of 0
        done = self.g >= self.out
        return self._remove(~done) if done.any() else []

    # --- a run ----------------------------------------------------------------------------------------------
    def plan_run(self, free_blocks: int) -> SpecRun | None:
        """The run from now (see the module docstring), or None when fewer than two steps can be fed."""
        n = self.n
        left = self.out - self.g
        steps = min(int(left.min()), MAX_RUN_STEPS)
        if steps < 2:
            return None
        j = self.acceptance.rows(n * steps).reshape(steps, n)
        raw = np.cumsum(1 + j, axis=0)  # tokens emitted by the end of each step, unclipped
        finish = raw >= left  # (steps, n): has the member finished by then
        k_fin = int(np.argmax(finish.any(axis=1))) + 1  # the first step in which a member finishes
        before = np.vstack([np.zeros((1, n), dtype=np.int64), raw[: k_fin - 1]])  # emitted before each step
        need = np.maximum(self._blocks_for(self.c + before + 1 + self.la) - self.b, 0).sum(axis=1)  # extra, per step
        k_kv = int(np.searchsorted(need > free_blocks, True)) if (need > free_blocks).any() else k_fin
        k_max = min(k_fin, k_kv)
        if k_max < 2:
            return None
        clipped = np.minimum(raw[:k_max], left)
        emitted = np.diff(np.vstack([np.zeros((1, n), dtype=np.int64), clipped]), axis=0)
        contexts = self.ctx + np.concatenate([[0], clipped[:-1].sum(axis=1)])  # the context sum at each step's start
        dt, flops, n_bytes = self.model.steps(n, contexts)
        return SpecRun(np.cumsum(dt), emitted, need[:k_max], flops, n_bytes, k_max)

    def take_run(self, run: SpecRun, k: int, start: float) -> tuple[list[Seq], int]:
        """Apply the first k steps of `run` (their blocks already granted), started at `start`: record the gaps,
        consume the draws; the members that finished (synced, removed) and the tokens emitted."""
        n = self.n
        ends = start + run.ends[:k]
        itl = self.itl
        itl.add_grouped(float(ends[0] - self.t_last), n)  # every member's first gap of the run
        for gap in np.diff(ends).tolist():
            itl.add_grouped(gap, n)
        self.acceptance.take(n * k)
        emitted = run.emitted[:k].sum(axis=0)
        self.b = np.maximum(self.b, self._blocks_for(self.c + (emitted - run.emitted[k - 1]) + 1 + self.la))
        zeros = int(emitted.sum()) - n * k
        self.c = self.c + emitted
        self.g = self.g + emitted
        self.ctx += int(emitted.sum())
        self.t_last = float(ends[-1])
        if zeros > 0:
            itl.add_grouped(0.0, zeros)
        done = self.g >= self.out
        return (self._remove(~done) if done.any() else []), int(emitted.sum())
