"""States of a request and of a replica, as enums (engine, fleet and the records that leave a run
all use these names; the request statuses are part of the record schema, `sim.schema`).

A request's status: `not_arrived` -> `in_flight` (queued in the fleet, waiting on a replica or
running) -> `completed` or `rejected` (with a reason). A replica's state: `provisioning` (node and
image) -> `loading` (weights, warm-up) -> `ready` (takes requests) -> `draining` (finishes what it
holds, takes nothing new) -> `released`; a replica still starting may go straight to `released`
(cancelled).
"""

from __future__ import annotations

from enum import StrEnum

from sim.schema import STATUS_LABELS, RequestStatus

__all__ = ["STARTING", "STATUS_LABELS", "ReplicaState", "RequestStatus"]


class ReplicaState(StrEnum):
    PROVISIONING = "provisioning"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    RELEASED = "released"


STARTING = (ReplicaState.PROVISIONING, ReplicaState.LOADING)
