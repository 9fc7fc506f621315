"""A request inside a replica, as the scheduler sees it (token counts; no simpy, no time).

Token bookkeeping: `prompt_tokens + generated` tokens are known; `computed` of them have their KV
in cache. A step processes some of the pending ones; when none remain pending the step samples the
next output token. So a fresh request prefills its prompt (emitting token 1), then each decode step
processes the last token (pending = 1) and emits the next; a sequence preempted by recompute drops
its KV (`computed = 0`) and later prefills prompt + generated tokens, emitting its next token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.run.engine.prefix_cache import Node


@dataclass(slots=True, eq=False)
class Seq:
    idx: int  # the request's row in the run's records
    arrival_at_s: float
    prompt_tokens: int
    output_tokens: int
    priority: int = 0
    batch: bool = False  # an offline batch-job request (klass batch): the gateway's batch lane dispatched it
    generated: int = 0
    computed: int = 0
    blocks: int = 0
    last_token_at_s: float = 0.0
    admit_no: int = 0  # order of (latest) admission into the running batch
    join_d: int = 0  # the decode group's step count when this sequence joined it (see sim.run.engine.group)
    adapter: int = -1  # LoRA: the adapter it runs with (-1: the base model)
    hashes: list[int] | None = None  # prefix caching: its prompt's hash-block ids, if any (`hash_list`)
    shared: int = 0  # prefix caching: of `blocks`, those of cached entries it pins (not its own to free)
    pins: Node | None = None  # prefix caching: where its pins end in the cache (None: not matched since last planned)
    # speculative decoding: the tokens it emits at each verify step (its own and the drafts accepted: drawn at its
    # first), their running sum, and the verify steps it has taken
    traj: np.ndarray | None = None
    traj_cum: np.ndarray | None = None
    traj_pos: int = 0
    # when it drew it: the tokens it had left, `traj_cum`'s first and last entries (as Python ints)
    traj_left: int = 0
    traj_e0: int = 0
    traj_end: int = 0
    # async scheduling: the step boundary after which the replica's scheduler sees it (it arrived mid-step)
    visible_after_s: float = -math.inf

    @property
    def key(self) -> tuple[int, float, int]:
        """Waiting-queue order: priority class, then arrival (FCFS), then request index."""
        return (self.priority, self.arrival_at_s, self.idx)

    @property
    def pending(self) -> int:
        return self.prompt_tokens + self.generated - self.computed


def hash_list(ids: Sequence[int] | np.ndarray | None) -> list[int] | None:
    """A request's prefix hash ids as the replica keeps them: Python ints (a dict keyed by numpy scalars hashes
    each one on every lookup), None for a request without any."""
    if ids is None or not len(ids):
        return None
    return ids.tolist() if isinstance(ids, np.ndarray) else [int(h) for h in ids]


def blocks_for(n_slots: int, block_size: int) -> int:
    return -(-n_slots // block_size)
