"""Disaggregated serving: a prefill pool, a decode pool, and the KV-cache transfers between them
(DistServe, Splitwise, Mooncake, NVIDIA Dynamo, llm-d).

- A request is routed to a prefill replica (by default the one with the fewest prompt tokens routed and not yet
  prefilled) and prefilled there (chunked or whole, as the pool's engine says). Its first token ends the prefill:
  TTFT is measured there (DistServe's and Splitwise's definition). A one-token request ends there.
- It then waits, its KV blocks held on the prefill replica, for a decode replica with room: a sequence slot and
  blocks for its KV plus its next token, above the watermark. Among those with room, the least KV use wins
  (reservations included); with none, the transfer waits (by priority, then in order of prefill completion:
  interactive work before batch work) and the held
  blocks push back on the prefill replica's admissions — backpressure, never a lost request. A decode pool
  with no replica ready and none starting launches one.
- The chosen decode replica reserves the blocks, and the KV moves over the prefill replica's link: `latency +
  bytes / bandwidth`, bytes = the model's KV bytes per token (at its KV precision; MLA's latent included) x the
  prompt, bandwidth = the link's per-GPU bandwidth x the prefill replica's TP (its GPUs send their shards in
  parallel). Transfers from one prefill replica go one at a time, first come first served (FIFO, not fair
  sharing: a transfer's time is its own wire time plus the queue ahead of it).
- A search that found no room is retried when a decode replica resolves a request, preempts one or becomes ready,
  and then only on those replicas (any other's room can only have shrunk), so backpressure costs O(1) a retry.
- On arrival the prefill replica frees the blocks and the sequence joins the decode replica's running batch at
  its next step boundary. Its second token's gap includes the wait and the transfer. If the decode replica
  preempts it later, it recomputes there (prompt and generated tokens), as a colocated engine would.
- Lost replicas (failures, spot reclaims: `sim.run.fleet.hazards`). A lost prefill replica's requests not yet
  prefilled go back to the prefill pool; those it had prefilled and not yet sent (waiting, or on the wire: the
  decode replica's reservation is returned) lost their KV and go to the decode pool, to be recomputed there (prompt
  and first token) as a preempted sequence is. A lost decode replica's requests go back to the decode pool and are
  recomputed there; transfers on their way to it are sent again (the prefill replica still holds their KV). If the
  decode pool can never launch a replica again (no capacity), the transfers waiting are rejected with the reason.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.policies.router import least_kv_with_room
from sim.run.clock import ARRIVAL, call_at
from sim.run.engine.records import RequestLog
from sim.run.engine.replica import ReplicaListener
from sim.run.engine.sequence import Seq
from sim.run.fleet.cluster import Pool

if TYPE_CHECKING:
    from sim.run.engine.replica import Replica
    from sim.run.fleet.cluster import ReplicaSlot


class Transfers:
    def __init__(
        self,
        env: simpy.Environment,
        log: RequestLog,
        *,
        decode: Pool,
        kv_bytes_per_token: float,
        link_bytes_per_s: float,
        latency_s: float,
    ) -> None:
        self.env, self.log, self.decode = env, log, decode
        self.kv_bytes_per_token = kv_bytes_per_token
        self.link_bytes_per_s = link_bytes_per_s  # of each prefill replica's link
        self.latency_s = latency_s
        # prefilled, waiting for a decode replica with room: (priority, order, prefill replica, sequence)
        self.waiting: list[tuple[int, int, Replica, Seq]] = []
        self._order = 0
        self.sender = _Sender(self)  # listens to the prefill pool's replicas
        self.receiver = _Receiver(self)  # listens to the decode pool's replicas
        self._link_free_at: dict[int, float] = {}  # prefill replica id -> when its link is free
        self._pump_due = False
        # a failed search's head, and the decode replicas that may have freed room since (a replica's room only
        # shrinks otherwise: its sequences grow), so a retry for the same head looks only at those
        self._blocked: Seq | None = None
        self._dirty: set[int] = set()
        self._in_flight: dict[int, tuple[Replica, Seq, Replica, int]] = {}  # request -> (prefill, seq, decode, blocks)
        n = len(log)
        if log.store is None:
            self.decode_replica_id = np.full(n, -1, dtype=np.int32)
            self.transfer_start_at_s = np.full(n, np.nan)  # the decode replica reserved room and the bytes began to queue
            self.transfer_end_at_s = np.full(n, np.nan)
        else:  # a stored run's: in files, as the log's (`sim.run.store`)
            self.decode_replica_id = log.store.column("decode_replica_id", n, np.int32, -1)
            self.transfer_start_at_s, self.transfer_end_at_s = (
                log.store.column(name, n, np.float64, np.nan) for name in ("transfer_start_at_s", "transfer_end_at_s")
            )
        self.n_transfers = 0
        self.peak_waiting = 0

    # --- the prefill side ------------------------------------------------------------------------------------
    def prefilled(self, replica: Replica, seq: Seq) -> None:
        """A prefill replica's sequence emitted its first token (its KV is held there)."""
        self._order += 1
        heapq.heappush(self.waiting, (seq.priority, self._order, replica, seq))
        if len(self.waiting) > self.peak_waiting:
            self.peak_waiting = len(self.waiting)
        self.pump_soon()

    def n_waiting(self) -> int:
        """Prefilled requests waiting for a decode replica with room (demand the decode pool's autoscaler sees)."""
        return len(self.waiting)

    # --- dispatch ----------------------------------------------------------------------------------------------
    def freed(self, engine: Replica) -> None:
        """A decode replica may have more room (a resolution, a preemption, or it just became ready)."""
        self._dirty.add(engine.replica_id)
        self.pump_soon()

    def pump_soon(self, *_: object) -> None:
        if not self._pump_due and self.waiting:
            self._pump_due = True
            call_at(self.env, 0.0, ARRIVAL, self._pump)

    def _pump(self, _event: simpy.Event | None = None) -> None:
        self._pump_due = False
        decode = self.decode
        while self.waiting:
            _, _, prefill, seq = self.waiting[0]
            engines = [slot.engine for slot in decode.ready if slot.engine is not None]
            if seq is self._blocked:  # it found no room last time: only replicas that freed some since can have it now
                dirty = self._dirty
                rooms = [e.room_for(seq) if e.replica_id in dirty else None for e in engines]
            else:
                rooms = [e.room_for(seq) for e in engines]  # (blocks needed, blocks in use) or None
            self._dirty = set()
            choice = least_kv_with_room(
                [r[1] / e.kv.n_blocks if r is not None else 1.0 for e, r in zip(engines, rooms, strict=True)],
                [r is not None for r in rooms],
            )
            if choice is None:
                self._blocked = seq
                if not engines and not decode.coming() and decode.held() < decode.max_replicas:
                    decode.launch(1)  # scale from zero: the activator
                return  # backpressure: retried when a decode replica frees room or becomes ready
            self._blocked = None
            heapq.heappop(self.waiting)
            room = rooms[choice]
            assert room is not None
            self._start(prefill, seq, engines[choice], room[0])

    def _start(self, prefill: Replica, seq: Seq, decode: Replica, blocks: int) -> None:
        now = self.env.now
        decode.reserve(blocks, seq)
        wire = self.latency_s + seq.prompt_tokens * self.kv_bytes_per_token / self.link_bytes_per_s
        start = max(now, self._link_free_at.get(prefill.replica_id, now))
        end = start + wire
        self._link_free_at[prefill.replica_id] = end
        self.transfer_start_at_s[seq.idx] = now
        self.decode_replica_id[seq.idx] = decode.replica_id
        self.n_transfers += 1
        mine = self._in_flight[seq.idx] = (prefill, seq, decode, blocks)

        def arrive(_event: simpy.Event) -> None:
            if self._in_flight.get(seq.idx) is not mine:  # cut short: one end was lost (it may be on the wire again)
                return
            del self._in_flight[seq.idx]
            self.transfer_end_at_s[seq.idx] = self.env.now
            prefill.release_held(seq)
            decode.receive(seq, blocks)

        delay = end - now
        while now + delay < end:  # land on the instant
            delay = math.nextafter(delay, math.inf)
        call_at(self.env, delay, ARRIVAL, arrive)

    # --- lost replicas (`Pool.on_lost`) --------------------------------------------------------------------------
    def prefill_lost(self, slot: ReplicaSlot, prefill: Replica) -> None:
        """A prefill replica was lost with the KV of the sequences it had prefilled and not yet sent: each goes to the
        decode pool to be recomputed there (a transfer on the wire is cut: its decode replica's reservation returned)."""
        lost = [e[3] for e in self.waiting if e[2] is prefill]
        if lost:
            self.waiting = [e for e in self.waiting if e[2] is not prefill]
            heapq.heapify(self.waiting)
            if self._blocked is not None and self._blocked in lost:
                self._blocked = None
        for idx, (source, seq, decode, blocks) in list(self._in_flight.items()):
            if source is prefill:
                del self._in_flight[idx]
                self.transfer_start_at_s[idx] = np.nan
                self.decode_replica_id[idx] = -1
                decode.cancel_incoming(blocks, seq)
                lost.append(seq)
        self._link_free_at.pop(prefill.replica_id, None)
        for seq in sorted(lost, key=lambda q: (q.priority, q.idx)):
            slot.requeued += 1
            slot.tokens_lost += seq.computed
            seq.computed = seq.blocks = seq.shared = 0
            seq.pins = None
            self.decode.redeliver(seq)

    def decode_lost(self, slot: ReplicaSlot, decode: Replica) -> None:
        """A decode replica was lost: the transfers on their way to it wait again for a decode replica with room (their
        prefill replicas still hold the KV)."""
        for idx, (prefill, seq, target, _blocks) in list(self._in_flight.items()):
            if target is decode:
                del self._in_flight[idx]
                self.transfer_start_at_s[idx] = np.nan
                self.decode_replica_id[idx] = -1
                self._order += 1
                heapq.heappush(self.waiting, (seq.priority, self._order, prefill, seq))
        self.pump_soon()

    def reject_waiting(self, reason: str) -> None:
        """The decode pool can never launch a replica again: the transfers waiting for one are rejected (their prefill
        replicas free the KV they held)."""
        waiting, self.waiting = self.waiting, []
        self._blocked = None
        for _, _, prefill, seq in sorted(waiting):
            self.log.reject(seq.idx, f"decode pool: {reason}")
            prefill.release_held(seq)


class _Sender(ReplicaListener):
    """The link's ear on the prefill pool: a sequence prefilled, its KV to be sent."""

    def __init__(self, link: Transfers) -> None:
        self.link = link

    def prefilled(self, replica: Replica, seq: Seq) -> None:
        self.link.prefilled(replica, seq)


class _Receiver(ReplicaListener):
    """The link's ear on the decode pool: a replica that becomes ready, resolves a request (its slot and blocks are
    free) or preempts one (blocks freed) may take waiting transfers. (A transfer's arrival frees nothing.)"""

    def __init__(self, link: Transfers) -> None:
        self.link = link

    def ready(self, replica: Replica) -> None:
        self.link.freed(replica)

    def finished(self, replica: Replica, seq: Seq) -> None:
        self.link.freed(replica)

    def room_freed(self, replica: Replica) -> None:
        self.link.freed(replica)
