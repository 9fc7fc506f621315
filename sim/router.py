"""Routing policies: which ready replica gets a request. Pure: they see plain views, no simpy.

`choose(views)` returns an index into `views` (ready replicas, in id order). Ties go to the lowest id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class ReplicaView:
    replica_id: int
    outstanding: int  # waiting + running requests
    kv_used_fraction: float  # NaN unless the router declares `needs_kv = True`


class Router(Protocol):
    def choose(self, views: list[ReplicaView]) -> int: ...


class RoundRobin:
    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._next = 0

    def choose(self, views: list[ReplicaView]) -> int:
        i = self._next % len(views)
        self._next += 1
        return i


class LeastOutstanding:
    def __init__(self, rng: np.random.Generator | None = None) -> None:
        pass

    def choose(self, views: list[ReplicaView]) -> int:
        return min(range(len(views)), key=lambda i: (views[i].outstanding, views[i].replica_id))


class LeastKv:
    needs_kv = True

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        pass

    def choose(self, views: list[ReplicaView]) -> int:
        return min(range(len(views)), key=lambda i: (views[i].kv_used_fraction, views[i].outstanding, views[i].replica_id))


class PowerOfTwo:
    """Sample two distinct replicas (seeded), keep the one with fewer outstanding requests."""

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._rng = rng if rng is not None else np.random.default_rng(0)

    def choose(self, views: list[ReplicaView]) -> int:
        if len(views) == 1:
            return 0
        a, b = (int(x) for x in self._rng.choice(len(views), size=2, replace=False))
        return min((a, b), key=lambda i: (views[i].outstanding, views[i].replica_id))


ROUTERS: dict[str, type[RoundRobin] | type[LeastOutstanding] | type[LeastKv] | type[PowerOfTwo]] = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "least_kv": LeastKv,
    "power_of_two": PowerOfTwo,
}
