"""The decode group: a replica's running sequences that decode in lock-step, kept as aggregates.

In continuous batching most running sequences decode, one token each per step, all in the same steps.
Their state then moves together: after the group's D-th step every member has generated one more token
and cached one more. So the group keeps one step counter `d` and per member only constants fixed when
it joined; a step costs O(1) and a run of k steps O(block_size), whatever the batch:

- tokens: a member that joined at step d0 with g0 generated and c0 cached holds g0 + (d - d0) and
  c0 + (d - d0); it finishes at step `d0 + output - g0` (a heap of those steps gives the batch's fewest
  tokens left and the finishes of a step in O(log n));
- context: the members' cached tokens sum to `ctx`, which grows by n each step;
- KV blocks: a member holds ceil(c / block_size) blocks and needs a new one in a step that starts with
  c a multiple of the block size. Its phase, (c - d) mod block_size, is constant while it decodes, so the
  members needing a block at step d are those of phase -d mod block_size (`count` by phase);
- inter-token gaps: every member emitted its last token at the same instant `t_last`, so a step's gaps
  are one value with weight n.

A member's explicit `Seq` fields go stale while it is in the group; `sync` brings them up to date when
it leaves (it finished, or the replica falls back to per-sequence planning for a step: see `Replica`).
"""

from __future__ import annotations

import heapq

from sim.run.engine.sequence import Seq


class DecodeGroup:
    __slots__ = ("block_size", "count", "ctx", "d", "heap", "n", "pad", "t_last")

    def __init__(self, block_size: int, pad: int = 0) -> None:
        self.block_size = block_size
        self.pad = pad  # blocks a member also holds for its sliding-window layers (`Limits.window_blocks`)
        self.d = 0  # steps the group has taken
        self.n = 0
        self.ctx = 0  # the members' cached tokens
        self.count = [0] * block_size  # members by phase (computed - d) mod block_size
        self.heap: list[tuple[int, int, Seq]] = []  # (finishing step, admission number, member)
        self.t_last = 0.0  # when every member emitted its last token

    def join(self, seq: Seq) -> None:
        """Add a decoding sequence whose last token came at `t_last` (its fields are current)."""
        d = self.d
        seq.join_d = d
        self.n += 1
        self.ctx += seq.computed
        self.count[(seq.computed - d) % self.block_size] += 1
        heapq.heappush(self.heap, (d + seq.output_tokens - seq.generated, seq.admit_no, seq))

    def sync(self, seq: Seq) -> None:
        """Bring a member's explicit fields up to step `d` (blocks included)."""
        k = self.d - seq.join_d
        seq.join_d = self.d
        if k:
            seq.generated += k
            seq.computed += k
            seq.blocks = -(-seq.computed // self.block_size) + self.pad
        seq.last_token_at_s = self.t_last

    def _drop(self, seq: Seq) -> None:
        """Remove a synced member from the aggregates (not from the heap)."""
        self.n -= 1
        self.ctx -= seq.computed
        self.count[(seq.computed - self.d) % self.block_size] -= 1

    @property
    def min_tokens_left(self) -> int:
        return self.heap[0][0] - self.d if self.heap else 1 << 62

    @property
    def next_step_blocks(self) -> int:
        """New blocks the members need for the next step."""
        return self.count[-self.d % self.block_size]

    def blocks_needed(self, k: int) -> int:
        """New blocks the members need for the next k steps."""
        if k <= 0 or not self.n:
            return 0
        bs = self.block_size
        full, rem = divmod(k, bs)
        total = full * self.n
        if rem:  # phases -d, -d-1, ..., -d-rem+1 (mod bs): a window of `count` read downward, maybe wrapping
            count, top = self.count, -self.d % bs
            bottom = top - rem + 1
            if bottom >= 0:
                total += sum(count[bottom : top + 1])
            else:
                total += sum(count[: top + 1]) + sum(count[bs + bottom :])
        return total

    def advance(self, k: int, t: float) -> list[Seq]:
        """Take k steps ending at `t` (blocks already granted); return the members that finished, synced
        and removed."""
        d = self.d = self.d + k
        self.ctx += self.n * k
        self.t_last = t
        heap = self.heap
        done: list[Seq] = []
        while heap and heap[0][0] <= d:
            seq = heapq.heappop(heap)[2]
            self.sync(seq)
            self._drop(seq)
            done.append(seq)
        return done

    def release_all(self) -> list[Seq]:
        """Empty the group: every member synced, in admission order."""
        members = sorted((entry[2] for entry in self.heap), key=lambda s: s.admit_no)
        for seq in members:
            self.sync(seq)
        self.heap.clear()
        self.n = self.ctx = 0
        self.count = [0] * self.block_size
        return members
