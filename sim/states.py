"""States of a request and of a replica, as enums (no other imports: engine, fleet and the records
that leave a run all use these names).

A request's status: `not_arrived` -> `in_flight` (queued in the fleet, waiting on a replica or
running) -> `completed` or `rejected` (with a reason). A replica's state: `provisioning` (node and
image) -> `loading` (weights, warm-up) -> `ready` (takes requests) -> `draining` (finishes what it
holds, takes nothing new) -> `released`; a replica still starting may go straight to `released`
(cancelled).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class RequestStatus(IntEnum):
    NOT_ARRIVED = 0
    IN_FLIGHT = 1
    COMPLETED = 2
    REJECTED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


STATUS_LABELS: list[str] = [s.label for s in RequestStatus]  # index = code, as in `requests.status`


class ReplicaState(StrEnum):
    PROVISIONING = "provisioning"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    RELEASED = "released"


STARTING = (ReplicaState.PROVISIONING, ReplicaState.LOADING)
