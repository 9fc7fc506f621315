"""Routing policies: which ready replica gets a request. Pure: they read `ReplicaView`s (numbers), no simpy.

`choose(replicas, seq, now)` gets the ready replicas with room, in id order, the request and the instant, and
returns an index into `replicas`. Ties go to the lowest index. Every router is named in `ROUTERS`, the one
registry the scenario schema, the pool builder and the docs read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class RequestView(Protocol):
    """What a router (and a prefix cache's lookup) may read of a request (`sim.run.engine.sequence.Seq` is one)."""

    @property
    def hashes(self) -> Sequence[int] | None:
        """Its prompt's prefix hash ids, with prefix caching."""
        ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def generated(self) -> int:
        """Output tokens it has so far."""
        ...

    @property
    def adapter(self) -> int:
        """The LoRA adapter it names (-1: the base model)."""
        ...


class ReplicaView(Protocol):
    """What a router may read of a ready replica (`sim.run.engine.replica.Replica` is one)."""

    @property
    def n_outstanding(self) -> int:
        """Requests routed to it and not yet resolved (waiting + running)."""
        ...

    @property
    def pending_prompt_tokens(self) -> int:
        """Prompt tokens of requests routed to it and not yet prefilled."""
        ...

    def kv_use_at(self, now: float) -> float:
        """The share of its KV cache in use at `now`."""
        ...

    def prefix_match(self, seq: RequestView) -> int:
        """Leading prefix hash blocks of the request its KV cache holds (0 without prefix caching)."""
        ...

    def holds_adapter(self, adapter: int) -> bool:
        """Whether the LoRA adapter is in one of its GPU slots (False without LoRA)."""
        ...


class Router(Protocol):
    indexed: bool  # True: the pool may answer with its least-loaded index (`LeastLoaded`) instead of calling `choose`

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int: ...


def _least(values: Sequence[int | float]) -> int:
    return min(range(len(values)), key=values.__getitem__)


class RoundRobin:
    indexed = False

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


class LeastOutstanding:
    indexed = True  # the pool keeps a `LeastLoaded` index that gives the same answer in O(log R)

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        return _least([r.n_outstanding for r in replicas])


class LeastKv:
    """The least KV-cache use (ties: fewer outstanding requests, then lowest index). KV use moves every decode
    step, so it is read from every ready replica for every request: O(R)."""

    indexed = False

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        keys = [(r.kv_use_at(now), r.n_outstanding) for r in replicas]
        return min(range(len(keys)), key=keys.__getitem__)


class LeastPromptTokens:
    """The replica with the fewest prompt tokens routed to it and not yet prefilled (a disaggregated prefill
    pool's default: prefill time follows prompt tokens, not requests)."""

    indexed = False

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        return _least([r.pending_prompt_tokens for r in replicas])


class PrefixAware:
    """Prefer the replica holding the longest cached prefix of the request, within a load slack: among the ready
    replicas with at most `slack` more outstanding requests than the least loaded, the most matched prefix blocks
    wins (ties: fewer outstanding, then lowest index) — SGLang's cache-aware router and llm-d's prefix scorer
    weigh the same two things. A request without prefix ids goes to the least outstanding."""

    indexed = False

    def __init__(self, slack: int = 4) -> None:
        self.slack = slack

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        outstanding = [r.n_outstanding for r in replicas]
        if seq.hashes is None:
            return _least(outstanding)
        return prefix_choice(outstanding, [r.prefix_match(seq) for r in replicas], self.slack)


class LoraAware:
    """Prefer a replica that holds the request's LoRA adapter in a GPU slot, within a load slack: among the ready
    replicas with at most `slack` more outstanding requests than the least loaded, one holding the adapter wins (ties:
    fewer outstanding, then lowest index), so a popular adapter's requests gather where it is loaded and a rare one's
    do not evict it everywhere (the affinity S-LoRA's and llm-d's LoRA-aware routing use; `prefix_routing_slack`
    sets the slack). A request for the base model goes to the least outstanding."""

    indexed = False

    def __init__(self, slack: int = 4) -> None:
        self.slack = slack

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        outstanding = [r.n_outstanding for r in replicas]
        if seq.adapter < 0:
            return _least(outstanding)
        return prefix_choice(outstanding, [int(r.holds_adapter(seq.adapter)) for r in replicas], self.slack)


def prefix_choice(outstanding: Sequence[int], matched: Sequence[int], slack: int) -> int:
    """`PrefixAware`'s rule on plain numbers."""
    bound = min(outstanding) + slack
    best = -1
    for i, load in enumerate(outstanding):  # (the least (-matched, outstanding, index) within the bound)
        if load <= bound and (
            best < 0 or matched[i] > matched[best] or (matched[i] == matched[best] and load < outstanding[best])
        ):
            best = i
    return best


def least_kv_with_room(kv_used: Sequence[float], room: Sequence[bool]) -> int | None:
    """A disaggregated decode pool's choice for a finished prefill: among the replicas with room for its KV (and
    a sequence slot), the least KV use (ties: lowest index); None when none has room."""
    best = None
    for i, ok in enumerate(room):
        if ok and (best is None or kv_used[i] < kv_used[best]):
            best = i
    return best


class PowerOfTwo:
    """Sample two distinct replicas (seeded), keep the one with fewer outstanding requests."""

    indexed = False

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def choose(self, replicas: Sequence[ReplicaView], seq: RequestView, now: float) -> int:
        if len(replicas) == 1:
            return 0
        a, b = (int(x) for x in self._rng.choice(len(replicas), size=2, replace=False))
        return min((a, b), key=lambda i: (replicas[i].n_outstanding, i))


# name -> a router built from the run's `router` stream and the fleet's prefix routing slack
ROUTERS: dict[str, Callable[[np.random.Generator, int], Router]] = {
    "round_robin": lambda rng, slack: RoundRobin(),
    "least_outstanding": lambda rng, slack: LeastOutstanding(),
    "least_kv": lambda rng, slack: LeastKv(),
    "power_of_two": lambda rng, slack: PowerOfTwo(rng),
    "least_prompt_tokens": lambda rng, slack: LeastPromptTokens(),
    "prefix_aware": lambda rng, slack: PrefixAware(slack),
    "lora_aware": lambda rng, slack: LoraAware(slack),
}
