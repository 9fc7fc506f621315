"""Paged KV cache: a pool of fixed-size blocks (vLLM's block manager, counted, not addressed).

A sequence holds ceil(slots / block_size) blocks for the tokens whose KV it stores. Blocks are
taken when a step needs more slots and returned on completion or preemption; the pool checks that
usage never exceeds capacity (an internal invariant, so a violation is a bug, not a user error).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.sequence import Seq, blocks_for


@dataclass(slots=True)
class KvBlockPool:
    n_blocks: int
    block_size: int
    used: int = 0
    peak_used: int = 0

    @property
    def free(self) -> int:
        return self.n_blocks - self.used

    @property
    def capacity_tokens(self) -> int:
        return self.n_blocks * self.block_size

    def grow(self, seq: Seq, n_slots: int) -> None:
        """Make `seq` hold enough blocks for `n_slots` tokens."""
        need = blocks_for(n_slots, self.block_size) - seq.blocks
        if need > 0:
            self.used += need
            seq.blocks += need
            if self.used > self.n_blocks:
                raise AssertionError(f"KV pool over capacity: {self.used} > {self.n_blocks} blocks")
            if self.used > self.peak_used:
                self.peak_used = self.used

    def release(self, seq: Seq) -> None:
        self.used -= seq.blocks
        seq.blocks = 0
        assert self.used >= 0, "KV pool released more blocks than it lent"
