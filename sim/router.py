"""Routing policies: which ready replica gets a request. Pure: they see plain numbers, no simpy.

`choose(outstanding, kv_used)` gets, for the ready replicas in id order, their outstanding requests
(waiting + running) and, for routers that declare `needs_kv = True`, their KV-cache use (a fraction);
it returns an index into those lists. Ties go to the lowest index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Router(Protocol):
    needs_kv: bool
    indexed: bool  # True: the fleet may answer with `LeastLoaded` instead of calling `choose`

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int: ...


class RoundRobin:
    needs_kv = False
    indexed = False

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._next = 0

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        i = self._next % len(outstanding)
        self._next += 1
        return i


class LeastOutstanding:
    needs_kv = False
    indexed = True  # the fleet keeps a `LeastLoaded` index that gives the same answer in O(log R)

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        pass

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        return min(range(len(outstanding)), key=outstanding.__getitem__)


class LeastKv:
    needs_kv = True
    indexed = False  # KV use moves every decode step: O(R) per request

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        pass

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        assert kv_used is not None
        return min(range(len(outstanding)), key=lambda i: (kv_used[i], outstanding[i]))


class LeastPromptTokens:
    """The replica with the fewest prompt tokens routed to it and not yet prefilled (a disaggregated prefill
    pool's default: prefill time follows prompt tokens, not requests); `outstanding` holds those token counts."""

    needs_kv = False
    indexed = False
    load = "prompt_tokens"

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        pass

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        return min(range(len(outstanding)), key=outstanding.__getitem__)


class PrefixAware:
    """Prefer the replica holding the longest cached prefix of the request, within a load slack: among the ready
    replicas with at most `slack` more outstanding requests than the least loaded, the most matched prefix blocks
    wins (ties: fewer outstanding, then lowest index) — SGLang's cache-aware router and llm-d's prefix scorer
    weigh the same two things. `choose` without matches is least outstanding."""

    needs_kv = False
    indexed = False
    load = "prefix"

    def __init__(self, rng: np.random.Generator | None = None, slack: int = 4) -> None:
        self.slack = slack

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        return min(range(len(outstanding)), key=outstanding.__getitem__)

    def choose_prefix(self, outstanding: Sequence[int], matched: Sequence[int]) -> int:
        return prefix_choice(outstanding, matched, self.slack)


def prefix_choice(outstanding: Sequence[int], matched: Sequence[int], slack: int) -> int:
    """The pure rule of `PrefixAware`."""
    bound = min(outstanding) + slack
    return min((i for i in range(len(outstanding)) if outstanding[i] <= bound), key=lambda i: (-matched[i], outstanding[i], i))


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

    needs_kv = False
    indexed = False

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._rng = rng if rng is not None else np.random.default_rng(0)

    def choose(self, outstanding: Sequence[int], kv_used: Sequence[float] | None = None) -> int:
        if len(outstanding) == 1:
            return 0
        a, b = (int(x) for x in self._rng.choice(len(outstanding), size=2, replace=False))
        return min((a, b), key=lambda i: (outstanding[i], i))


ROUTERS: dict[
    str,
    type[RoundRobin] | type[LeastOutstanding] | type[LeastKv] | type[PowerOfTwo] | type[LeastPromptTokens] | type[PrefixAware],
] = {
    "prefix_aware": PrefixAware,
    "round_robin": RoundRobin,
    "least_prompt_tokens": LeastPromptTokens,
    "least_outstanding": LeastOutstanding,
    "least_kv": LeastKv,
    "power_of_two": PowerOfTwo,
}
