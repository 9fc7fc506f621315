"""The gateway's batch lane: offline batch-job requests held at the gateway and fed to replicas as they
have room, as a batch API does (OpenAI's and Anthropic's batch endpoints accept a job and finish it
within a window; llm-d's flow control keeps a lane per priority band).

- **Queue.** A batch request that arrives (a job submitted at once delivers all its requests in one
  instant) waits here, by priority (lower first), then arrival, then index. It is held as an index, and
  becomes an engine sequence only when dispatched, so a million-request job costs a few bytes a request.
- **Backfill slots.** A ready replica of the pool the lane feeds (the online pool, a disaggregated fleet's
  prefill pool, or a dedicated batch pool) is given batch requests while it holds fewer than `cap` of them
  (`batch.max_per_replica`; default the engine's `max_num_seqs`; a prefill replica holds one until it hands it
  off): the lane dispatches whenever a batch request completes or is handed off, a replica becomes ready or a
  request is submitted, at that instant (as an arrival would be, before the replicas plan). The lane listens
  to every pool's replicas (`sim.run.engine.replica.ReplicaListener`): a batch request may finish on a decode replica. Interactive requests are not held: they reach the replicas at once,
  and the engine's queue serves them first (priority order; with `engine.preempt_for_priority` they
  preempt running batch work).
- **Guard** (`batch.guard`, optional): the per-replica cap is a congestion window, as TCP's. It starts at 1;
  every `interval_s` the lane reads the p99 TTFT and p99 TPOT of the interactive requests completed in the
  interval; above a target (`ttft_ms`, `tpot_ms`; default the scenario's SLO) it halves the cap (to 0:
  no batch work is dispatched until an interval passes clean), otherwise it doubles it until the first
  violation (slow start) and then raises it by `step` (additive increase, multiplicative decrease), never
  above `max_per_replica`. Batch requests already on a replica finish; the guard only holds back new ones.
  Reactive: a violation is seen after it happened, so the guard bounds the interactive p99 to within what
  one interval of over-admission can do.
- **Deadline scaling** (`batch.deadline_scaling`): at each autoscaler tick the lane estimates the
  replicas the backlog needs to finish `deadline_margin_s` before its earliest pending deadline:
  ceil(remaining batch tokens / (batch tokens/s per ready replica x time left)), the rate measured over the
  last 5 minutes (batch tokens of requests completed / ready replica-seconds) once that window saw a full
  batch (`max_per_replica`) of completions per replica, before that one replica's saturated throughput for
  the batch mix. A replica added now serves only after the
  lifecycle's mean cold start, so the ask is the ready replicas plus what covers the shortfall from then
  on, and nothing is added once no cold start could finish in time (the job is then reported late, not
  hidden). The fleet scales to at least the highest such ask of the last 5 minutes (within its
  max_replicas); otherwise the autoscaler alone decides. Remaining tokens count a request whole until it
  completes, so the estimate errs early.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from sim.run.clock import ARRIVAL, LIFECYCLE, OBSERVE, At, call_at
from sim.run.engine.records import COMPLETED, IN_FLIGHT, RequestLog
from sim.run.engine.replica import ReplicaListener
from sim.run.engine.sequence import Seq, hash_list
from sim.run.fleet.cluster import Pool

if TYPE_CHECKING:
    from sim.run.engine.replica import Replica


RATE_WINDOW_S = 300.0  # deadline scaling: the batch rate is measured over this window,
HOLD_S = 1800.0  # asks are held this long (scale-down stabilization: no replica launched for a deadline is drained
AIM = 0.8  # sooner), and the backlog is planned to finish within this share of the time left


class BatchLane(ReplicaListener):
    def __init__(
        self,
        env: simpy.Environment,
        log: RequestLog,
        *,
        pool: Pool,
        priority: np.ndarray,
        hashes: np.ndarray | None,
        deadline_at_s: np.ndarray,
        adapters: np.ndarray | None = None,
        n_batch: int,
        cap: int,
        guard: tuple[float | None, float | None] | None = None,
        guard_step: int = 1,
        deadline_margin_s: float = 0.0,
        replica_tokens_per_s: float | None = None,
        cold_start_s: float = 0.0,
    ) -> None:
        self.env, self.log = env, log
        self.priority = priority
        self.deadline_at_s = deadline_at_s
        self.max_cap = cap
        self.cap = cap if guard is None else 1  # a guarded lane starts small and doubles until latency objects
        self._slow_start = True
        self.guard = guard  # (ttft_s, tpot_s) targets of the interactive p99, or None
        self.guard_step = guard_step
        self.deadline_margin_s = deadline_margin_s
        self.replica_tokens_per_s = replica_tokens_per_s
        self.cold_start_s = cold_start_s  # a replica added now serves this much later (the lifecycle's mean)
        self.pool = pool  # the pool it feeds
        self.hashes = hashes  # prefix caching: each request's prefix hash ids (None: not cached)
        self.adapters = adapters  # LoRA: each request's adapter (None: LoRA off)
        self.n_batch = n_batch  # batch requests in the trace
        self.n_resolved = 0  # of those, completed or rejected
        self.when_finished: list[Callable[[], None]] = []  # called once every batch request is resolved
        self._held: dict[int, int] = {}  # replica id -> batch requests dispatched there, not yet resolved or handed off
        self._heap: list[tuple[int, float, int]] = []
        self._fifo = array("q")  # requests in key order, appended in order (the common case: no heap); 8 bytes each
        self._fifo_at = 0
        self._returned: list[tuple[tuple[int, float, int], Seq]] = []  # handed back by lost replicas (their progress kept)
        self._pump_due = False  # pragma: no mutate (False/None)
        self.n_queued = 0
        self.n_added = 0  # batch requests submitted to the lane (rejected ones excluded)
        self.remaining_tokens = 0  # prompt + output tokens of batch requests submitted and not resolved
        self.done_tokens = 0  # of batch requests completed
        self.n_done = 0  # batch requests completed
        self._pending: dict[float, int] = {}  # deadline -> batch requests submitted and unresolved (a job shares one)
        # deadline scaling: (time, batch tokens completed, ready replica-seconds so far) at each tick, and the asks
        self._history: deque[tuple[float, int, float, int]] = deque()
        self._n_ready_prev = 0
        self._asked: deque[tuple[float, int]] = deque()
        self.last_ask = 0  # replicas_needed's latest answer
        self._guard_from = 0  # interactive completions looked at so far
        self.watch = InteractiveWatch(log) if guard is not None else None  # interactive completions, for the guard
        self.cap_changes: list[tuple[float, int]] = []  # (time, cap) each time the guard moves it

    # --- intake -----------------------------------------------------------------------------------
    def add(self, idx: int) -> None:
        """A batch request arrives at the gateway."""
        reason = self.pool.inadmissible.get(idx)
        if reason is not None:
            self.log.reject(idx, reason)
            self._resolved()
            return
        self.log.status[idx] = IN_FLIGHT
        key = (int(self.priority[idx]), float(self.log.arrival_at_s[idx]), idx)
        fifo = self._fifo
        if not self._heap and (self._fifo_at == len(fifo) or self._key(fifo[-1]) <= key):
            fifo.append(idx)
        else:
            heapq.heappush(self._heap, key)
        self.n_queued += 1
        self.n_added += 1
        self.remaining_tokens += int(self.log.prompt_tokens[idx] + self.log.output_tokens[idx])
        deadline = float(self.deadline_at_s[idx])
        self._pending[deadline] = self._pending.get(deadline, 0) + 1
        self.pump_soon()

    def take_back(self, replica_id: int, seq: Seq) -> bool:
        """A lost replica hands `seq` back (`Pool.interrupt`): a batch request returns to the lane, ahead of later keys,
        with what it had streamed (its KV is gone: recomputed where it lands); the replica holds one fewer. Interactive
        requests are not the lane's (False)."""
        if not seq.batch:
            return False
        if replica_id in self._held:
            self._unhold(replica_id)
        heapq.heappush(self._returned, (seq.key, seq))
        self.n_queued += 1
        self.pump_soon()
        return True

    def reject_waiting(self, reason: str) -> None:
        """The pool it feeds can never serve again (no capacity to be had): every request waiting here is rejected."""
        while self.n_queued:
            seq = self._next_seq()
            self.log.reject(seq.idx, reason)
            self._done(seq)

    def _next_seq(self) -> Seq:
        """The next batch request to dispatch, in key order: one handed back, or a new engine sequence."""
        returned = self._returned
        if returned and ((self._fifo_at >= len(self._fifo) and not self._heap) or returned[0][0] <= self._peek()):
            self.n_queued -= 1
            return heapq.heappop(returned)[1]
        idx = self._pop()
        log = self.log
        seq = Seq(
            idx,
            float(log.arrival_at_s[idx]),
            int(log.prompt_tokens[idx]),
            int(log.output_tokens[idx]),
            int(self.priority[idx]),
            True,
        )
        if self.hashes is not None:
            h = self.hashes[idx]
            seq.hashes = hash_list(h)
        if self.adapters is not None:
            seq.adapter = int(self.adapters[idx])
        return seq

    def _peek(self) -> tuple[int, float, int]:
        """The key of the next request `_pop` gives (there is one)."""
        fifo, heap = self._fifo, self._heap
        if self._fifo_at < len(fifo) and (not heap or self._key(fifo[self._fifo_at]) <= heap[0]):
            return self._key(fifo[self._fifo_at])
        return heap[0]

    def _key(self, idx: int) -> tuple[int, float, int]:
        return (int(self.priority[idx]), float(self.log.arrival_at_s[idx]), idx)

    def _pop(self) -> int:
        fifo, heap = self._fifo, self._heap
        if self._fifo_at < len(fifo) and (not heap or self._key(fifo[self._fifo_at]) <= heap[0]):
            idx = fifo[self._fifo_at]
            self._fifo_at += 1
            if self._fifo_at > 4096 and self._fifo_at * 2 > len(fifo):  # drop the consumed head now and then
                del fifo[: self._fifo_at]
                self._fifo_at = 0
        else:
            idx = heapq.heappop(heap)[2]
        self.n_queued -= 1
        return idx

    # --- dispatch ---------------------------------------------------------------------------------
    def pump_soon(self, *_: object) -> None:
        """Dispatch at this instant, once, among the arrivals (before the replicas plan)."""
        if not self._pump_due and self.n_queued:
            self._pump_due = True
            call_at(self.env, 0.0, ARRIVAL, self._pump)

    def _pump(self, _event: simpy.Event | None = None) -> None:
        self._pump_due = False
        if not self.n_queued or self.cap <= 0:
            return
        pool = self.pool
        if not pool.ready and not pool.coming() and pool.held() < pool.max_replicas:
            pool.launch(1)  # batch work waits and the pool has scaled to zero: the activator, as for an arrival
        held, cap = self._held, self.cap
        for slot in self.pool.ready:
            engine = slot.engine
            assert engine is not None
            rid = engine.replica_id
            while held.get(rid, 0) < cap and self.n_queued:
                seq = self._next_seq()
                held[rid] = held.get(rid, 0) + 1
                engine.enqueue(seq)
            if not self.n_queued:
                return

    # --- what the lane hears from the replicas (of every pool) -----------------------------------------
    def ready(self, replica: Replica) -> None:
        """A replica became ready: if it is of the pool the lane feeds, it takes batch work from now."""
        self.pump_soon()

    def prefilled(self, replica: Replica, seq: Seq) -> None:
        """A prefill replica handed a batch request off: it holds one fewer."""
        if seq.batch:
            self._unhold(replica.replica_id)

    def finished(self, replica: Replica, seq: Seq) -> None:
        if seq.batch:
            if replica.replica_id in self._held:  # (a decode replica never held it)
                self._unhold(replica.replica_id)
            self._done(seq)

    def _unhold(self, replica_id: int) -> None:
        held = self._held
        n = held[replica_id] - 1
        if n:
            held[replica_id] = n
        else:
            del held[replica_id]
        self.pump_soon()

    def _unpend(self, idx: int) -> None:
        deadline = float(self.deadline_at_s[idx])
        left = self._pending[deadline] - 1
        if left:
            self._pending[deadline] = left
        else:
            del self._pending[deadline]

    def _done(self, seq: Seq) -> None:
        self._unpend(seq.idx)
        tokens = seq.prompt_tokens + seq.output_tokens
        self.remaining_tokens -= tokens
        if self.log.status[seq.idx] == COMPLETED:
            self.done_tokens += tokens
            self.n_done += 1
        self._resolved()
        self.pump_soon()

    def _resolved(self) -> None:
        self.n_resolved += 1
        if self.n_resolved == self.n_batch and self.when_finished:
            call_at(self.env, 0.0, ARRIVAL, self._finished)

    def _finished(self, _event: simpy.Event) -> None:
        for f in self.when_finished:
            f()

    # --- guard --------------------------------------------------------------------------------------
    def guard_tick(self) -> None:
        """AIMD on `cap` from the interactive p99 TTFT and TPOT of the requests completed since the last tick."""
        assert self.guard is not None and self.watch is not None
        done = self.watch.completed
        idx = np.asarray(done[self._guard_from :], dtype=np.int64)
        self._guard_from = len(done)
        ttft_target, tpot_target = self.guard
        over = False
        if idx.size:
            log = self.log
            first, arrival = log.first_token_at_s[idx], log.arrival_at_s[idx]
            if ttft_target is not None and float(np.percentile(first - arrival, 99)) > ttft_target:
                over = True
            out = log.output_tokens[idx]
            multi = out > 1
            if tpot_target is not None and multi.any():
                tpot = (log.completed_at_s[idx][multi] - first[multi]) / (out[multi] - 1)
                if float(np.percentile(tpot, 99)) > tpot_target:
                    over = True
        if over:
            self._slow_start = False
            new = self.cap // 2
        else:
            new = min(self.max_cap, max(1, self.cap * 2) if self._slow_start else self.cap + self.guard_step)
        if new != self.cap:
            self.cap = new
            self.cap_changes.append((self.env.now, new))
            self.pump_soon()

    # --- deadline ------------------------------------------------------------------------------------
    def earliest_deadline(self) -> float | None:
        """The earliest deadline among batch requests not yet resolved."""
        return min(self._pending) if self._pending else None

    def replicas_needed(self, n_ready: int) -> int:
        """Replicas the backlog needs to finish `deadline_margin_s` before its earliest pending deadline (0 with
        nothing pending); see the module's docstring. Called once per autoscaler tick."""
        now = self.env.now
        history = self._history
        t_prev, _, rs_prev, _ = history[-1] if history else (now, 0, 0.0, 0)
        history.append((now, self.done_tokens, rs_prev + self._n_ready_prev * (now - t_prev), self.n_done))
        self._n_ready_prev = n_ready
        while len(history) > 2 and history[1][0] <= now - RATE_WINDOW_S:
            history.popleft()
        deadline = self.earliest_deadline()
        if deadline is None or self.remaining_tokens <= 0:
            self._asked.clear()
            self.last_ask = 0
            return 0
        t0, d0, rs0, n0 = history[0]
        t1, d1, rs1, n1 = history[-1]
        # measured once the window saw a full batch of completions per replica (before, a batch's first
        # completions are still to come and the rate reads low), else one replica's saturated rate
        measured = rs1 > rs0 and n1 - n0 >= self.max_cap * (rs1 - rs0) / max(t1 - t0, 1e-9)
        rate = (d1 - d0) / (rs1 - rs0) if measured else self.replica_tokens_per_s
        left = AIM * (deadline - self.deadline_margin_s - now)
        remaining = self.remaining_tokens
        if not rate:
            need = 1 << 30
        elif remaining <= rate * n_ready * max(left, 0.0):
            need = math.ceil(remaining / (rate * left))  # the ready replicas (or fewer) make it
        else:  # replicas starting serve from the end of their cold start, one added now a whole cold start later
            need, covered = n_ready, rate * n_ready * max(left, 0.0)
            for started in sorted(s.provision_at_s for s in self.pool.starting):
                if covered >= remaining:
                    break
                covered += rate * max(0.0, left - max(0.0, self.cold_start_s - (now - started)))
                need += 1
            useful = left - self.cold_start_s
            if covered < remaining and useful > 0:  # none is added too late to help
                need += math.ceil((remaining - covered) / (rate * useful))
        # hold the highest ask of the last window (as the HPA's scale-down stabilization): completions come in
        # bursts, and a replica cancelled while it cold-starts is paid for and serves nothing
        asked = self._asked
        asked.append((now, need))
        while asked and asked[0][0] <= now - HOLD_S:
            asked.popleft()
        self.last_ask = max(n for _, n in asked)
        return self.last_ask


class InteractiveWatch(ReplicaListener):
    """The interactive requests completed so far, in completion order (the guard reads each interval's): it listens
    to every pool's replicas."""

    def __init__(self, log: RequestLog) -> None:
        self.log = log
        self.completed: list[int] = []

    def finished(self, replica: Replica, seq: Seq) -> None:
        if not seq.batch and self.log.status[seq.idx] == COMPLETED:
            self.completed.append(seq.idx)


def guard_loop(env: simpy.Environment, lane: BatchLane, interval_s: float) -> Generator[simpy.Event, Any, None]:
    """The guard's tick, every `interval_s` while batch work remains."""
    while lane.n_resolved < lane.n_batch:
        yield At(env, interval_s, OBSERVE)
        lane.guard_tick()


def dedicated_loop(
    env: simpy.Environment, pool: Pool, lane: BatchLane, *, start_at: float, size: int, interval_s: float, scaling: bool
) -> Generator[simpy.Event, Any, None]:
    """A dedicated batch pool: `size` replicas launched at the first submission (cold, or ready at once with a
    warm lifecycle), released (drained) when every batch request is resolved; with deadline scaling, every
    `interval_s` scaled to max(size, what the backlog needs), within its ceiling."""
    yield At(env, max(0.0, start_at - env.now), LIFECYCLE)
    finished = False

    def release() -> None:
        nonlocal finished
        finished = True
        pool.scale_to(0)

    lane.when_finished.append(release)
    if pool.lifecycle.start == "warm":
        pool.add_ready(size)
    else:
        pool.launch(size)
    if lane.n_resolved == lane.n_batch:
        release()
    while scaling and not finished:
        yield At(env, interval_s, OBSERVE)
        if not finished:
            pool.scale_to(max(size, lane.replicas_needed(len(pool.ready))))
