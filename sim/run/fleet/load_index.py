"""Least-loaded lookup over the ready replicas in O(log R) per change instead of O(R) per request.

A heap of (outstanding, replica id) with lazy deletion: every change pushes the replica's new figure;
a lookup pops entries that no longer match. The top is then the replica with the fewest outstanding
requests and, among those, the lowest id: exactly `LeastOutstanding.choose` over the ready replicas in
id order (a property test holds the two together). The heap is rebuilt from the current figures when
stale entries outnumber live ones, so it stays O(R).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from sim.run.engine.replica import ReplicaListener

if TYPE_CHECKING:
    from sim.run.engine.replica import Replica


# the heap is rebuilt when it holds more than STALE_RATIO entries per member plus STALE_SLACK (a memory bound
# only: the answers are the same whenever it is rebuilt)
STALE_RATIO, STALE_SLACK = 4, 64


class LeastLoaded(ReplicaListener):
    """The index; it listens to its replicas' load (`load_changed`)."""

    __slots__ = ("_heap", "_load")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []
        self._load: dict[int, int] = {}  # replica id -> outstanding, for members

    def __len__(self) -> int:
        return len(self._load)

    def __contains__(self, replica_id: int) -> bool:
        return replica_id in self._load

    def add(self, replica_id: int, load: int) -> None:
        self._load[replica_id] = load
        heapq.heappush(self._heap, (load, replica_id))

    def remove(self, replica_id: int) -> None:
        self._load.pop(replica_id, None)

    def load_changed(self, replica: Replica, n_outstanding: int) -> None:
        """`replica`'s outstanding requests changed (it runs at every routing and every resolution)."""
        loads, rid = self._load, replica.replica_id
        if rid in loads:
            loads[rid] = n_outstanding
            heap = self._heap
            heapq.heappush(heap, (n_outstanding, rid))
            if len(heap) > STALE_RATIO * len(loads) + STALE_SLACK:
                self._heap = [(v, k) for k, v in loads.items()]
                heapq.heapify(self._heap)

    def least(self) -> int:
        """The member with the fewest outstanding requests, lowest id first. (Not empty.)"""
        heap, loads = self._heap, self._load
        while True:
            load, replica_id = heap[0]
            if loads.get(replica_id) == load:
                return replica_id
            heapq.heappop(heap)
