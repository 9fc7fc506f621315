"""One model replica on the SimPy kernel: continuous batching over a paged KV cache.

Each step the batching policy picks the work; the step takes `StepTimeModel` seconds; at its end
prefills that completed emit a token, decodes emit theirs, finished sequences free their blocks.

Fast-forward: when a step would only decode running sequences (nothing admitted, nothing preempted)
the batch cannot change until a sequence finishes, the KV cache runs out or a request arrives. The
replica computes how many such steps fit (`k_max`), sums their closed-form durations (`StepLine`)
and waits once. An arrival wakes it mid-run; it then waits for the first step boundary at or after
that instant and resumes scheduling there, exactly where a step-by-step engine would have seen the
arrival. `fast_forward=False` runs every step as its own event: the reference.

Lazy decoders (fast-forward mode only): running sequences that decode in lock-step live in a
`DecodeGroup` (aggregates, O(1) a step); the rest (prompt chunks, recomputes, decoders whose last token
came at another instant) are explicit in `running`, in admission order. A step that serves every running
sequence is planned by the policy's `plan` from the aggregates; any other step (budget or KV shortfall:
the order of sequences matters) first returns the group's members to `running` and plans per sequence
with `next_batch`, the reference's own code. After a step, explicit decoders that emitted with the group
join it. The reference mode never forms a group: it is the per-sequence engine, step by step.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import simpy
from mypy_extensions import mypyc_attr
from simpy.events import NORMAL, URGENT, EventPriority

from sim.policies.router import RequestView
from sim.run.clock import call_at
from sim.run.engine.group import DecodeGroup
from sim.run.engine.kv import BlockKv
from sim.run.engine.records import IN_FLIGHT, RequestLog
from sim.run.engine.scheduler import Batch, BatchPolicy, Limits, PriorityCount
from sim.run.engine.sequence import Seq, blocks_for
from sim.run.engine.spec_group import SpecGroup, SpecRun
from sim.run.engine.speculative import Acceptance
from sim.run.engine.step_time import UNBOUNDED, RunLine, StepLine, StepTimeModel, linear_runs
from sim.run.store import blocks

COLOCATED, PREFILL, DECODE = "colocated", "prefill", "decode"
ROLES = (COLOCATED, PREFILL, DECODE)
NO_LIMIT = 1 << 62  # tokens left: more than any run


def _key(seq: Seq) -> tuple[int, float, int]:
    return seq.key


_ROWS = 1 << 20


def inadmissible(
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    max_context_tokens: int,
    limits: Limits,
    chunks: bool,
    context_name: str = "the model's max context",
) -> dict[int, str]:
    """The requests (by index) that no replica so configured can ever serve, with `admission_reason`'s
    reason: decided for the whole trace at once (numpy), so the fleet looks a request up instead of checking it."""
    p, o = np.asarray(prompt_tokens, dtype=np.int64), np.asarray(output_tokens, dtype=np.int64)
    found = []
    for lo, (pp, oo) in blocks(_ROWS, p, o):  # a block at a time: bounded temporaries (a stored trace's pages handed back)
        bad = (pp + oo > max_context_tokens) | (-(-(pp + oo - 1) // limits.block_size) + limits.window_blocks > limits.n_blocks)
        bad |= pp > limits.never_above[chunks]
        found.extend((np.flatnonzero(bad) + lo).tolist())
    out = {}
    for i in found:
        reason = admission_reason(
            int(p[i]), int(o[i]), max_context_tokens=max_context_tokens, limits=limits, chunks=chunks, context_name=context_name
        )
        if reason is not None:
            out[i] = reason
    return out


def admission_reason(
    prompt_tokens: int,
    output_tokens: int,
    *,
    max_context_tokens: int,
    limits: Limits,
    chunks: bool,
    context_name: str = "the model's max context",
) -> str | None:
    """Why a request can never be served by a replica so configured, or None: it outgrows the context (`context_name`:
    the model's, or the engine's max_model_len) or the whole KV cache, or its prompt can never be admitted
    (`Limits.never_reason`)."""
    if prompt_tokens + output_tokens > max_context_tokens:
        return f"prompt + output = {prompt_tokens + output_tokens} tokens exceeds {context_name} {max_context_tokens}"
    slots = prompt_tokens + output_tokens - 1
    if blocks_for(slots, limits.block_size) + limits.window_blocks > limits.n_blocks:
        room = (limits.n_blocks - limits.window_blocks) * limits.block_size
        return f"needs {slots} KV slots, more than the replica's KV cache holds ({room})"
    return limits.never_reason(prompt_tokens, recompute=False, chunks=chunks)


@mypyc_attr(allow_interpreted_subclasses=True)
class ReplicaListener:
    """What a replica tells whoever cares: its listeners, registered when it is built (as SimPy's `Event.callbacks`).
    A listener overrides the events it cares about; the replica calls, in registration order, only the methods a
    listener overrides, so an event nobody listens to costs a loop over an empty tuple. The fleet's pool (routing
    index, fleet queue, drain), the batch lane (its per-replica counts, deadlines), the KV-transfer link (room on a
    decode replica, hand-offs from a prefill replica), the batch guard (interactive latencies) and the capacity
    probe's closed loop each register one; none of them is known to the replica.

    Events (all at the current instant; `seq` is the engine's sequence, read it, never keep it):
    - `ready(replica)`: the replica became ready and takes work (its pool has counted it).
    - `load_changed(replica, n_outstanding)`: requests routed here and not yet resolved (or handed off) changed.
    - `idle(replica)`: it ran out of work it can do now.
    - `room_freed(replica)`: a preemption freed KV blocks.
    - `prefilled(replica, seq)`: a prefill replica's sequence emitted its first token and leaves its batch; its KV
      stays held here until the link calls `release_held`.
    - `finished(replica, seq)`: a request was resolved here: completed, or dropped with a reason.
    """

    def ready(self, replica: Replica) -> None:
        pass

    def load_changed(self, replica: Replica, n_outstanding: int) -> None:
        pass

    def idle(self, replica: Replica) -> None:
        pass

    def room_freed(self, replica: Replica) -> None:
        pass

    def prefilled(self, replica: Replica, seq: Seq) -> None:
        pass

    def finished(self, replica: Replica, seq: Seq) -> None:
        pass


class Replica:
    __slots__ = (
        "_acceptance",
        "_async",
        "_freed_blocks",
        "_freed_seats",
        "_freed_t",
        "_hands_off",
        "_held_plan",
        "_holding",
        "_idle",
        "_interruptible",
        "_lines",
        "_n_admitted",
        "_on_finished",
        "_on_idle",
        "_on_load",
        "_on_prefilled",
        "_on_ready",
        "_on_room",
        "_prio",
        "_run",
        "_run_end_event",
        "_run_steps",
        "_run_total",
        "_run_work",
        "_stepping",
        "_stopped",
        "_unseen",
        "_verifying",
        "_windowed",
        "_work_start",
        "busy_s",
        "bytes",
        "decode_busy_s",
        "env",
        "fast_forward",
        "flops",
        "group",
        "held_blocks",
        "kv",
        "limits",
        "log",
        "max_context_tokens",
        "n_incoming",
        "n_outstanding",
        "n_runs",
        "n_steps",
        "pending_prompt_tokens",
        "policy",
        "prefill_busy_s",
        "replica_id",
        "role",
        "running",
        "step_time",
        "verifies",
        "verify_tokens",
        "waiting",
    )

    def __init__(
        self,
        env: simpy.Environment,
        *,
        replica_id: int,
        step_time: StepTimeModel,
        policy: BatchPolicy,
        limits: Limits,
        kv: BlockKv,
        log: RequestLog,
        max_context_tokens: int,
        fast_forward: bool = True,
        role: str = COLOCATED,
        acceptance: Acceptance | None = None,
        listeners: Sequence[ReplicaListener] = (),
    ) -> None:
        assert role in ROLES, role
        self.env = env
        # colocated; or in a disaggregated fleet prefill (hands a sequence off at its first token: `prefilled`) or
        # decode (takes sequences with their KV from the link: `room_for`, `reserve`, `receive`)
        self.role = role
        self._hands_off = role == PREFILL
        self.replica_id = replica_id
        self.step_time = step_time
        self._lines = linear_runs(step_time)  # the decode-run closed form, when the model has one
        # sliding-window layers: a decode line holds only up to where its sums cross the window (`line_steps`)
        self._windowed = self._lines is not None and self._lines.line_steps(1, 0) < UNBOUNDED
        self.policy = policy
        self.limits = limits
        self.kv = kv  # the KV cache: plain blocks or prefix caching (`sim.run.engine.kv`), chosen at build
        self.log = log
        self.max_context_tokens = max_context_tokens
        self._acceptance = acceptance  # speculative decoding's draws (then every step is its own event)
        self.fast_forward = fast_forward and acceptance is None and self._lines is not None
        self._verifying: list[Seq] = []  # the step in progress's speculating decoders
        self.waiting: list[Seq] = []
        self.running: list[Seq] = []  # explicit running sequences, in admission order
        # lock-step decoders (fast-forward mode only); a speculating replica keeps a SpecGroup here
        self.group: DecodeGroup | SpecGroup = DecodeGroup(limits.block_size, limits.window_blocks)
        self._n_admitted = 0
        self.n_outstanding = 0  # requests routed here and not yet resolved (or handed off)
        self.pending_prompt_tokens = 0  # prompt tokens of requests routed here and not yet prefilled
        self.held_blocks = 0  # prefill role: blocks of handed-off sequences until the link has sent them
        self.n_incoming = 0  # decode role: transfers on their way here (blocks reserved, a sequence slot promised)
        # priority preemption: the running sequences' priorities (to know when the head of the queue outranks one)
        self._prio = PriorityCount() if limits.preempt_for_priority else None
        # each event's listeners, in order, leaving out those that do not override it
        base = ReplicaListener
        self._on_ready = tuple(x.ready for x in listeners if type(x).ready is not base.ready)
        self._on_load = tuple(x.load_changed for x in listeners if type(x).load_changed is not base.load_changed)
        self._on_idle = tuple(x.idle for x in listeners if type(x).idle is not base.idle)
        self._on_room = tuple(x.room_freed for x in listeners if type(x).room_freed is not base.room_freed)
        self._on_prefilled = tuple(x.prefilled for x in listeners if type(x).prefilled is not base.prefilled)
        self._on_finished = tuple(x.finished for x in listeners if type(x).finished is not base.finished)
        self._idle = False  # pragma: no mutate (False/None)  waiting for work: the next arrival schedules a wake-up
        self._async = limits.async_scheduling  # an arrival mid-step is seen at the boundary after the next
        self._unseen: list[Seq] = []  # async scheduling: queued requests the scheduler may not see yet (`_hold`)
        # async scheduling: the seats and blocks requests finishing at instant `_freed_t` gave back (the next step was
        # scheduled before their last tokens were known: `_next_holding`); while planning that step, `_holding`
        self._freed_t = -math.inf
        self._freed_seats = self._freed_blocks = 0
        self._holding: tuple[int, int] | None = None
        self._held_plan = False  # the last plan held freed seats or blocks back (a run planned then ends at its first boundary)
        self._interruptible = False  # in a fast-forwarded run: the next arrival cuts it short
        self._run: tuple[float, RunLine, list[Seq], int] | None = None  # start, line, explicit seqs, k_max
        self._run_steps = 0  # steps the run in progress will take
        self._run_work: tuple[int, int] = (0, 0)  # its batch size and context sum at the start
        self._run_end_event: simpy.Event | None = None
        self._run_total = 0.0  # line.total(_run_steps)
        self._stepping: tuple[Batch, float, int, int, int] | None = None  # the step in progress
        self._stopped = False  # lost (a failure, a reclaim): it plans nothing more (see `stop`)
        self.n_steps = 0
        self.n_runs = 0
        self.busy_s = 0.0  # seconds spent in steps, split next into prompt and completion work
        self.prefill_busy_s = 0.0
        self.decode_busy_s = 0.0
        self.flops = 0.0
        self.bytes = 0.0
        self.verifies = 0  # speculative decoding: sequence-steps that verified drafts
        self.verify_tokens = 0  # and the tokens they emitted (the step's own and the accepted drafts)
        self._work_start: float | None = None
        self._after(0.0, self._next, URGENT)  # as a process would start: after what is already due now

    def became_ready(self) -> None:
        """Its pool counts it ready: tell the listeners."""
        for tell in self._on_ready:
            tell(self)

    # --- intake ----------------------------------------------------------------------------------
    def enqueue(self, seq: Seq) -> None:
        """Take a request the fleet routed here (it has already rejected those no replica can serve)."""
        self.log.status[seq.idx] = IN_FLIGHT
        self.log.replica_id[seq.idx] = self.replica_id
        n = self.n_outstanding = self.n_outstanding + 1
        if not seq.generated:  # (a request handed back by a lost replica has its first token: its prompt is not pending)
            self.pending_prompt_tokens += seq.prompt_tokens
        for f in self._on_load:
            f(self, n)
        waiting = self.waiting
        if not waiting:
            waiting.append(seq)
        else:
            if _key(waiting[-1]) <= seq.key:  # FCFS arrivals append
                waiting.append(seq)
            else:
                bisect.insort(waiting, seq, key=_key)
        if self._async and self._hold(seq):
            return
        self._wake()

    def _hold(self, seq: Seq) -> bool:
        """Async scheduling (vLLM's `--async-scheduling`, its default since 0.14): the engine schedules step N+1 as
        soon as step N is launched, so a request arriving while N runs is first seen when N+2 is scheduled, at N's
        end, and runs in N+2 (`AsyncScheduler`; `EngineCore.step_with_batch_queue`). It waits in the queue, unseen
        until the boundary after the one ending the step in progress (a decode run is cut there); whether the
        replica was working (an idle one schedules it at once)."""
        now = self.env._now
        if self._run_end_event is not None:  # a decode run: the first of its boundaries at or after now
            start, line = self._run_in_progress()
            k, total = line.boundary(now - start, self._run_steps)
            seq.visible_after_s = start + total
            self._unseen.append(seq)
            if self._interruptible and k + 1 < self._run_steps:
                self._cut_later(start, line, k + 1)
            return True
        if self._work_start is not None and self._stepping is not None:  # a step: its end
            seq.visible_after_s = self._work_start + self._stepping[1]
            self._unseen.append(seq)
            return True
        return False

    def _cut_later(self, start: float, line: RunLine | SpecRun, k: int) -> None:
        """Async scheduling: an arrival mid-run is seen at the run's step boundary k (the one after the next): the
        run ends there at the latest (still interruptible: a transfer or freed blocks cut it at the next boundary, as
        without async scheduling)."""
        self._run_steps, self._run_total = k, line.total(k)
        self._run_end_event = call_at(self.env, max(0.0, start + self._run_total - self.env._now), NORMAL, self._run_end)

    def _next_hiding(self) -> None:
        """`_next` with the requests the scheduler has not seen yet (`_hold`) set aside: those whose boundary is now
        wait for the next one (a decode run planned now ends at its first boundary). With nothing left running, or
        a plan that leaves the replica idle, the engine scheduled an empty step: it schedules them now."""
        now = self.env._now
        unseen = [s for s in self._unseen if s.visible_after_s >= now]
        self._unseen = []
        hidden: list[Seq] = []
        if unseen and (self.running or self.group.n):
            waiting = self.waiting
            for seq in unseen:  # (out of the queue while it plans: found by its key, the queue's order)
                i = bisect.bisect_left(waiting, seq.key, key=_key)
                if i < len(waiting) and waiting[i] is seq:
                    del waiting[i]
                    hidden.append(seq)
        if not hidden:
            Replica._next(self)
            return
        try:
            Replica._next(self)
        finally:
            for seq in hidden:
                bisect.insort(self.waiting, seq, key=_key)
        if self._idle:  # (nothing it could schedule: they are seen now)
            for seq in hidden:
                seq.visible_after_s = -math.inf
            self._wake()
            return
        self._unseen = hidden + self._unseen
        if self._interruptible:
            self._cut_run()

    def _next_holding(self) -> None:
        """`_next` right after requests finished, under async scheduling: vLLM scheduled this step when the last one
        was launched, before their last tokens were known, so their seats and blocks are still taken in it (vLLM's
        scheduler frees them when it processes that step's output, and skips a request it knows has reached
        max_tokens) and the queue gets them a step later. The plan holds them back (`_plan`); a decode run planned
        then ends at its first boundary. With nothing else running, or a plan that leaves the replica idle, the step
        was empty: the engine processed the output first and schedules with them now."""
        seats, blocks = self._freed_seats, self._freed_blocks
        self._freed_t = -math.inf
        self._held_plan = False
        if not (self.running or self.group.n):
            Replica._next(self)
            return
        self._holding = (seats, blocks)
        try:
            Replica._next(self)
        finally:
            self._holding = None
        if self._idle:  # (nothing it could schedule: it schedules with them now)
            self._wake()
            return
        # with a queue, the next step may admit into what was held: a run ends at its first boundary. Without one, the
        # held seats change nothing and the held blocks only the first step, which this plan checked (a run's later
        # steps have them, as the per-step engine's plans do)
        if self.waiting:
            self._held_plan = True
            if self._interruptible:
                self._cut_run()

    # --- observation (exact mid-run state) ----------------------------------------------------------
    def steps_done_in_run(self, now: float) -> int:
        if self._run is None:
            return 0
        start, line, _, k_max = self._run
        return line.steps_done_by(now - start, k_max)

    def run_growth_bound(self) -> int:
        """At least the blocks a decode run in progress grows by to its end (0 without a run): each of its sequences
        ceil(steps / block size) at most, as `_start_run` bounds it."""
        if self._run is None:
            return 0
        _, _, seqs, k_max = self._run
        return (len(seqs) + self.group.n) * -(-k_max // self.kv.block_size)

    def run_growth_at(self, now: float) -> int:
        """Blocks a decode run in progress has grown by at `now` (the step under way holds its slots): the per-step
        engine has allocated them by then, a run allocates them at its end (0 without a run)."""
        if self._run is None:
            return 0
        _, _, seqs, k_max = self._run
        slots_ahead = min(self.steps_done_in_run(now) + 1, k_max)  # the step in progress holds its slot
        bs, pad = self.kv.block_size, self.kv.window_blocks
        explicit = sum(max(0, blocks_for(s.computed + slots_ahead, bs) + pad - s.blocks) for s in seqs)
        return self.group.blocks_needed(slots_ahead) + explicit

    def kv_blocks_used_at(self, now: float) -> int:
        """Blocks in use at `now`, counting the growth of a decode run in progress."""
        return self.kv.used_after(self.run_growth_at(now))

    def kv_use_at(self, now: float) -> float:
        """The share of its KV blocks in use at `now`."""
        return self.kv_blocks_used_at(now) / self.kv.n_blocks

    @property
    def n_running(self) -> int:
        return len(self.running) + self.group.n

    @property
    def held_for_plan(self) -> tuple[int, int]:
        """Seats and blocks given back at this instant that `_plan` hides from the step (async scheduling)."""
        hold = self._holding
        if hold is not None and (self.running or self.group.n):
            return (hold[0] if self.waiting else 0), hold[1]
        return 0, 0

    @property
    def settled(self) -> bool:
        """No KV transfer in flight to or from it (a draining replica is released only then)."""
        return self.held_blocks == 0 and self.n_incoming == 0

    def busy_s_at(self, now: float) -> float:
        """Seconds spent working up to `now`, counting a step or run in progress."""
        return self.busy_s + (now - self._work_start if self._work_start is not None else 0.0)

    def prefix_match(self, seq: RequestView) -> int:
        """Leading prefix hash blocks of `seq` its KV cache holds (0 without prefix caching). Mid-run, the cached
        entries the run's growth so far evicted are gone first, as the per-step engine evicted them step by step (the
        same entries, the same count: a run that evicts them at its end would show a router entries already gone)."""
        kv = self.kv
        if self.run_growth_bound() > kv.n_blocks - kv.used:  # (else the run's growth fits the free blocks: no eviction)
            growth = self.run_growth_at(self.env._now)
            if growth:
                kv.evict_for(growth)
        return kv.match(seq, self.limits)

    def holds_adapter(self, adapter: int) -> bool:
        """Whether the LoRA adapter is in one of its GPU slots (False without LoRA)."""
        return self.kv.holds_adapter(adapter)

    # --- the process: callbacks on the SimPy kernel -----------------------------------------------------
    # The replica is a chain of events rather than a generator process: `_next` plans and schedules the
    # step's (or run's) end, whose callback applies it and calls `_next` again. An idle replica waits for
    # a wake-up event that `enqueue` schedules at the arrival's instant (so every request of that instant
    # is queued before the replica plans); a run in progress is cut short by scheduling its end at the
    # next step boundary (the event scheduled before goes stale and is ignored). Same instants, same order
    # as a SimPy process, without a generator resume or an Interrupt per event.
    # schedules a step's end (a lock-step DP rank's group ends its steps instead: `sim.run.engine.lockstep`)
    def _end_step_at(self, delay: float, callback: Callable[[simpy.Event], None]) -> None:
        call_at(self.env, delay, NORMAL, callback)

    def _after(self, delay: float, callback: Callable[[simpy.Event], None], priority: EventPriority = NORMAL) -> simpy.Event:
        return call_at(self.env, delay, priority, callback)

    def _wake(self) -> None:
        """New work (an arrival, a transfer, freed blocks): a decode run in progress ends at its next step boundary,
        an idle replica plans at this instant."""
        if self._interruptible:
            self._cut_run()
        elif self._idle:
            self._idle = False
            self._after(0.0, self._next)

    def _admit(self, seq: Seq) -> None:
        """`seq` joins the running batch (explicit, in admission order)."""
        self._n_admitted += 1
        seq.admit_no = self._n_admitted
        self.running.append(seq)
        if self._prio is not None:
            self._prio.add(seq)

    def _plan(self, free: int, reserve: int = 0) -> Batch:
        """The next step's batch, given `free` blocks, `reserve` of them not for admissions."""
        group, limits = self.group, self.limits
        if self._holding is not None:  # async scheduling: seats and blocks given back this instant (`held_for_plan`)
            seats, blocks = self.held_for_plan
            if seats:
                limits = replace(limits, max_num_seqs=limits.max_num_seqs - seats)
            free = max(0, free - blocks)
        if group.n:
            waiting = self.waiting
            batch = self.policy.plan(waiting, self.running, group.n, group.next_step_blocks, free, limits, reserve)
            # when the head of the queue outranks running work, the plan stands only if it admits the head (then
            # priority preemption has nothing to do); otherwise the per-sequence planner picks the victims
            if batch is not None and (
                not waiting
                or self._prio is None
                or not self._prio.outranked_by(waiting[0].priority)
                or (batch.admitted and batch.admitted[0] is waiting[0])
            ):
                return batch
            members = group.release_all()  # per-sequence planning, in admission order
            if self.running:
                members.extend(self.running)
                members.sort(key=_admit_no)
            self.running = members
        return self.policy.next_batch(self.waiting, self.running, free, limits, reserve)

    def _next(self, _event: simpy.Event | None = None) -> None:
        """Plan and start the next step or decode run, or go idle."""
        if self._stopped:
            return
        if self._async:  # (what its scheduler has not seen yet: arrivals mid-step, seats and blocks given back now)
            if self._unseen:
                self._next_hiding()
                return
            if self._freed_t == self.env._now:
                self._next_holding()
                return
        group = self.group
        kv = self.kv
        # only the group, nothing to admit: the policies' plan is its decode run when the budget and the
        # free blocks allow a step (checked here as the chunked policy does, the stricter of the two)
        if (
            group.n
            and self._holding is None
            and not self.running
            and not self.waiting
            and group.n * (1 + self.limits.lookahead) <= self.limits.max_num_batched_tokens
            and group.next_step_blocks <= kv.available()
        ):
            self._start_run([], 0, NO_LIMIT)
            return
        while True:
            batch = kv.plan(self._plan, self)
            for seq, reason in batch.dropped:
                kv.dropped(seq)
                if seq.generated == 0:
                    self.pending_prompt_tokens -= seq.prompt_tokens
                self._resolved(1)
                self.log.reject(seq.idx, reason)
                for f in self._on_finished:
                    f(self, seq)
            if batch.preempted:
                self._preempt(batch.preempted)
            if batch.work or batch.group:
                break
            if batch.preempted or batch.dropped:
                continue
            # (blocks held for a transfer out, or reserved for one coming in: a release or an arrival wakes it)
            assert not self.waiting or self.held_blocks or self.n_incoming, "idle with admissible work waiting"
            self._idle = True
            for tell in self._on_idle:
                tell(self)
            return
        if self.fast_forward and batch.is_pure_decode:
            self._start_run([s for s, _ in batch.work], batch.context_sum, batch.min_tokens_left)
        else:
            self._start_step(batch)

    def _preempt(self, victims: list[Seq]) -> None:
        for tell in self._on_room:
            tell(self)
        now = self.env._now
        for seq in victims:
            self.running.remove(seq)
            self.kv.preempted(seq, now)
            seq.computed = 0
            self.log.n_preemptions[seq.idx] += 1
            if self._prio is not None:
                self._prio.remove(seq)
            bisect.insort(self.waiting, seq, key=_key)

    def _start_step(self, batch: Batch) -> None:
        now = self.env._now  # SimPy's clock without its property (the hot path reads it once per event)
        if batch.admitted:
            if batch.preempted or batch.reordered:  # priority preemption: victims back in the queue; LoRA: skipped ones
                gone = {id(seq) for seq in batch.admitted}
                self.waiting = [seq for seq in self.waiting if id(seq) not in gone]
            else:
                del self.waiting[: len(batch.admitted)]
            scheduled = self.log.scheduled_at_s
            for seq in batch.admitted:
                self._admit(seq)
                if math.isnan(scheduled[seq.idx]):
                    scheduled[seq.idx] = now
        la = self.limits.lookahead  # speculative decoding: each decoder holds slots for its k drafts too
        verifying = self._verifying  # (filled only with speculative decoding)
        n_prefill = n_decode = decode_ctx = n_prefill_seqs = 0
        pairs = kv_read = 0
        kv = self.kv
        for seq, n in batch.work:
            c = seq.computed
            if seq.generated >= 1 and seq.prompt_tokens + seq.generated - c == 1:  # decoding (n is 1)
                n_decode += 1
                decode_ctx += c
                if la:
                    kv.grow(seq, c + 1 + la)
                    verifying.append(seq)
                    if seq.traj is None:  # its first verify step here: its trajectory (in the step's order)
                        assert self._acceptance is not None
                        self._acceptance.trajectory(seq)
                else:
                    kv.grow(seq, c + 1)
            else:
                n_prefill += n
                n_prefill_seqs += 1
                kv.grow(seq, c + n)
            pairs += n * c + n * (n + 1) // 2
            kv_read += c
        group = self.group
        if batch.group:
            n_decode += group.n
            decode_ctx += group.ctx
            pairs += group.ctx + group.n
            kv_read += group.ctx
            kv.grant(group.next_step_blocks)
        dt, flops, n_bytes = self.step_time.step(n_prefill, n_decode, pairs, kv_read, decode_ctx, n_decode + n_prefill_seqs)
        if batch.stall_s:
            dt += batch.stall_s  # (LoRA: the adapters it admits are loaded first)
        self._work_start = now
        self._stepping = (batch, dt, n_prefill, n_decode, decode_ctx)
        self.flops += flops
        self.bytes += n_bytes
        self._end_step_at(dt, self._step_end)

    def _step_end(self, _event: simpy.Event | None) -> None:
        assert self._stepping is not None
        batch, dt, n_prefill, n_decode, decode_ctx = self._stepping
        self._work_start = None
        self.n_steps += 1
        self.busy_s += dt
        if n_decode and n_prefill:  # the decodes pay what they would cost alone; the prompt pays the rest
            alone = min(dt, self._decode_alone_s(n_decode, decode_ctx))
            self.decode_busy_s += alone
            self.prefill_busy_s += dt - alone
        elif n_decode:
            self.decode_busy_s += dt
        else:
            self.prefill_busy_s += dt
        end = self.env._now
        group = self.group
        if batch.group:
            self._group_steps(1, end - group.t_last, end)
        emitted = False
        if self._verifying:  # speculative: a verifying sequence emits its accepted drafts with its own token
            emitted = self._emit_verified(batch.work, end)
        else:
            for seq, n in batch.work:
                seq.computed += n
                if seq.computed == seq.prompt_tokens + seq.generated:
                    self._emit(seq, end)
                    # (speed only: decoders not regrouped here join the group when their decode run ends, ~8% later
                    # in CPU on benchmarks/engine_speed.py; the outputs are the same, so this line is not mutated)
                    emitted = True  # pragma: no mutate
        if emitted and self.fast_forward and (batch.group or not group.n):
            self._regroup(end)
        self._next()

    def _decode_alone_s(self, n_seqs: int, context_sum: int) -> float:
        """Seconds of a step in which `n_seqs` decoders whose contexts sum to `context_sum` run alone."""
        lines = self._lines
        if lines is not None:
            return lines.decode_sum(n_seqs, context_sum, 1)
        return self.step_time.step(0, n_seqs, context_sum + n_seqs, context_sum, context_sum, n_seqs)[0]

    def _emit_verified(self, work: list[tuple[Seq, int]], end: float) -> bool:
        """The step's tokens, in the step's order, its speculating decoders (explicit ones: `_verifying`, in the same
        order) emitting the drafts they accepted right after their own token — the next entry of each one's
        trajectory (drawn at its first verify step here). Whether any token came."""
        verifying = self._verifying
        self.verifies += len(verifying)
        self.verify_tokens += len(verifying)
        v = 0
        emitted = False
        for seq, n in work:
            seq.computed += n
            if seq.computed == seq.prompt_tokens + seq.generated:
                self._emit(seq, end)
                emitted = True
                if v < len(verifying) and verifying[v] is seq:
                    v += 1
                    assert seq.traj is not None
                    j = int(seq.traj[seq.traj_pos]) - 1
                    seq.traj_pos += 1
                    for _ in range(min(j, seq.output_tokens - seq.generated)):
                        seq.computed += 1
                        self.verify_tokens += 1
                        self._emit(seq, end)
        assert v == len(verifying)
        verifying.clear()
        return emitted

    def spec_counts(self) -> tuple[int, int]:
        """Speculative decoding: (sequence-steps that verified drafts, tokens they emitted)."""
        return self.verifies, self.verify_tokens

    def _group_steps(self, k: int, first_gap: float, end: float) -> None:
        """The group took k steps ending at `end`, its first gap `first_gap`: record it, finish those done."""
        group = self.group
        self.log.itl.add_grouped(first_gap, group.n)
        for seq in group.advance(k, end):
            self._completed(seq, end)

    def _resolved(self, n: int) -> None:
        n = self.n_outstanding = self.n_outstanding - n
        for f in self._on_load:
            f(self, n)

    def _regroup(self, t: float) -> None:
        """Explicit decoders whose last token came at `t` join the group (which then emitted at `t`)."""
        group = self.group
        keep = []
        for seq in self.running:
            if seq.last_token_at_s == t and seq.generated >= 1 and seq.computed == seq.prompt_tokens + seq.generated - 1:
                if not group.n:
                    group.t_last = t
                group.join(seq)
            else:
                keep.append(seq)
        self.running = keep

    def _emit(self, seq: Seq, t: float) -> None:
        if seq.generated == 0:
            self.log.first_token_at_s[seq.idx] = t
            self.pending_prompt_tokens -= seq.prompt_tokens
            if seq.hashes is not None:
                self.kv.prompt_computed(seq, t)
        else:
            self.log.itl.singles.append(t - seq.last_token_at_s)
        seq.generated += 1
        seq.last_token_at_s = t
        if seq.generated == seq.output_tokens:
            self._finish(seq, t)
        elif self._hands_off and seq.generated == 1:
            self._hand_off(seq)

    # --- disaggregation ---------------------------------------------------------------------------------
    def _hand_off(self, seq: Seq) -> None:
        """A prefill replica's sequence produced its first token: it leaves the batch (and this replica's load)
        but its KV blocks stay held here until the link has sent them (`release_held`)."""
        self.running.remove(seq)
        if self._prio is not None:
            self._prio.remove(seq)
        self.held_blocks += seq.blocks
        self._resolved(1)
        for f in self._on_prefilled:
            f(self, seq)

    def release_held(self, seq: Seq) -> None:
        """The transfer of `seq`'s KV has completed: free its blocks here (and plan, if waiting work was blocked)."""
        self.held_blocks -= seq.blocks
        self.kv.release(seq, self.env._now)
        if self.waiting:
            self._wake()
        elif self._idle:  # idle already: a draining replica may now be released
            for tell in self._on_idle:
                tell(self)

    def room_for(self, seq: Seq) -> tuple[int, int] | None:
        """A decode replica: (the blocks `seq` needs — its prompt cached, its first token emitted —, the blocks in use
        now) if it can be taken now — a sequence slot and the blocks, above the watermark — else None."""
        limits = self.limits
        if self.n_running + self.n_incoming + len(self.waiting) >= limits.max_num_seqs:
            return None
        if not self.kv.takes_adapter(seq.adapter):  # (LoRA: its adapter would pass max_loras)
            return None
        need = blocks_for(seq.computed + 1, limits.block_size) + limits.window_blocks  # its KV and next token's slot
        used = self.kv_blocks_used_at(self.env._now)  # mid-run: as a step-by-step engine sees it
        return (need, used) if need <= self.kv.n_blocks - used - limits.watermark_blocks else None

    def reserve(self, blocks: int, seq: Seq) -> None:
        """Reserve KV blocks for a transfer of `seq` on its way (they count as used from now, and its LoRA adapter as
        running); a decode run in progress ends at its next step boundary, where a step-by-step engine would first see
        the smaller free pool."""
        self.kv.grant(blocks)
        self.kv.promised(seq)
        self.n_incoming += 1
        if self._interruptible:
            self._cut_run()

    def cancel_incoming(self, blocks: int, seq: Seq) -> None:
        """A transfer of `seq` on its way here was cut (its prefill replica was lost): its reservation is given back.
        (A lost replica's reservations went with its memory.)"""
        if self._stopped:
            return
        self.n_incoming -= 1
        self.kv.revoke(blocks)
        self.kv.unpromised(seq)
        for f in self._on_room:  # (the link may now place a waiting transfer here)
            f(self)
        if self._interruptible or self.waiting:  # (a run in progress ends at its next step boundary, as on `reserve`)
            self._wake()
        elif self._idle:  # idle already: a draining replica may now be released
            for tell in self._on_idle:
                tell(self)

    def receive(self, seq: Seq, blocks: int) -> None:
        """A transferred sequence arrives with its KV (`blocks` reserved for it): it joins the running batch at the
        next step boundary, as an arrival would."""
        self.n_incoming -= 1
        seq.blocks = blocks
        seq.pins = None  # (prefix-cache pins belong to the replica that prefilled it)
        seq.shared = 0
        self.kv.received(seq)
        self._admit(seq)
        n = self.n_outstanding = self.n_outstanding + 1
        for f in self._on_load:
            f(self, n)
        self._wake()

    def _finish(self, seq: Seq, t: float) -> None:
        self.running.remove(seq)
        self._resolved(1)  # (`_completed`, inlined: once per request)
        self.log.complete(seq.idx, t)
        if self._async:
            self._freed_at_boundary(seq, t)
        else:
            self.kv.release(seq, t)
        if self._prio is not None:
            self._prio.remove(seq)
        for f in self._on_finished:
            f(self, seq)

    def _completed(self, seq: Seq, t: float) -> None:
        """`seq` (out of the batch already) emitted its last token at `t`: it is resolved, its KV freed, and the
        listeners told — one request at a time, so that they hear the same thing in the same order whether it
        finished alone or with others of the decode group."""
        self._resolved(1)
        self.log.complete(seq.idx, t)
        if self._async:
            self._freed_at_boundary(seq, t)
        else:
            self.kv.release(seq, t)
        if self._prio is not None:
            self._prio.remove(seq)
        for f in self._on_finished:
            f(self, seq)

    def _freed_at_boundary(self, seq: Seq, t: float) -> None:
        """Async scheduling: `kv.release` of a finishing request, the seat and blocks it gave back counted for this
        instant's plan (`_next_holding`)."""
        kv = self.kv
        before = kv.available()
        kv.release(seq, t)
        now = self.env._now
        if self._freed_t != now:
            self._freed_t = now
            self._freed_seats = self._freed_blocks = 0
        self._freed_seats += 1
        self._freed_blocks += kv.available() - before

    def _kv_steps(self, seqs: list[Seq], k_max: int) -> int:
        """Most steps (<= k_max) the free blocks can feed without preempting anyone."""
        bs, free, group = self.kv.block_size, self.kv.run_room(bool(self.waiting)), self.group
        pad = self.kv.window_blocks

        def need(k: int) -> int:
            total = group.blocks_needed(k)
            for s in seqs:
                extra = -(-(s.computed + k) // bs) + pad - s.blocks
                if extra > 0:
                    total += extra
            return total

        if need(k_max) <= free:  # the common case: the whole run fits
            return k_max
        lo, hi = 1, k_max - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _start_run(self, seqs: list[Seq], context_sum: int, min_tokens_left: int) -> None:
        """Decode steps of the explicit decoders `seqs` (their cached tokens `context_sum`, the fewest
        tokens any has left `min_tokens_left`) and the group, until the batch changes."""
        start = self.env._now
        group = self.group
        n_seqs = len(seqs) + group.n
        context_sum += group.ctx
        k_max = group.min_tokens_left
        if min_tokens_left < k_max:
            k_max = min_tokens_left
        # each sequence needs at most ceil(k / block_size) more blocks: within that bound the whole run fits
        # (k_max 1: _kv_steps answers 1 too, so >= reads the same: not mutated)
        if k_max > 1 and n_seqs * -(-k_max // self.kv.block_size) > self.kv.run_room(bool(self.waiting)):  # pragma: no mutate
            k_max = self._kv_steps(seqs, k_max)
        assert self._lines is not None
        if self._windowed:
            k_max = min(k_max, self._lines.line_steps(n_seqs, context_sum))
        line = self._lines.decode_line(n_seqs=n_seqs, context_sum=context_sum)
        self._run = (start, line, seqs, k_max)
        self._run_steps = k_max
        self._run_work = (n_seqs, context_sum)
        self._work_start = start
        self._interruptible = k_max > 1  # an arrival cuts the run at the next step boundary (see enqueue)
        self._run_total = line.total(k_max)
        self._run_end_event = call_at(self.env, self._run_total, NORMAL, self._run_end)

    def _cut_run(self) -> None:
        """An arrival mid-run: end the run at the first step boundary at or after now."""
        assert self._run is not None
        self._interruptible = False
        start, line, _, k_max = self._run
        now = self.env._now
        self._run_steps, self._run_total = line.boundary(now - start, k_max)
        self._run_end_event = call_at(self.env, max(0.0, start + self._run_total - now), NORMAL, self._run_end)

    def _run_end(self, event: simpy.Event) -> None:
        if event is not self._run_end_event:
            return  # superseded by `_cut_run`
        assert self._run is not None and self._lines is not None
        start, line, seqs, _ = self._run
        k = self._run_steps
        self._run = None
        self._run_end_event = None
        self._interruptible = False
        self._work_start = None
        n_seqs, context_sum = self._run_work
        flops, n_bytes = self._lines.run_work(n_seqs, context_sum, k)
        self.flops += flops
        self.bytes += n_bytes
        self._advance(seqs, line, start, k, self._run_total)
        self._next()

    # --- loss: a failure or a reclaim ------------------------------------------------------------------
    def released(self) -> None:
        """Its pool has released it (drained, or lost and stopped): nothing more is routed here."""

    def stop(self) -> tuple[list[Seq], float, int]:
        """The replica is lost now (its GPUs failed, or its spot instance was reclaimed): the tokens of steps that
        ended by now stand, the step under way is lost, and every sequence it held is handed back with its KV gone
        (to be recomputed elsewhere, as a preempted one is here). Returns the sequences (the queue's order: priority,
        arrival), the seconds of GPU work lost (the unfinished step or run's part), and the KV tokens lost. It then
        plans nothing more: what is scheduled for it is voided."""
        env = self.env
        now = env._now
        self._stopped = True
        # a step under way (`_stepping` outlives its step: a run, or idleness, has no `_work_start` of a step)
        stepping = self._stepping if self._run_end_event is None and self._work_start is not None else None
        if stepping is not None and self._work_start is not None and self._work_start + stepping[1] <= now:
            self._step_end(None)  # a step that ended at this very instant stands (as a run's steps by now do)
            stepping = None
        for entry in env._queue:  # (time, priority, id, event): its step's or run's end, its wake-ups
            callbacks = entry[3].callbacks
            # (its bound methods: a Python method, or a compiled class's, whose type is not MethodType)
            if callbacks and any(getattr(cb, "__self__", None) is self for cb in callbacks):
                entry[3].callbacks = [cb for cb in callbacks if getattr(cb, "__self__", None) is not self]
        started, before = self._work_start, self.busy_s
        if self._run_end_event is not None:
            start, line = self._run_in_progress()
            done = line.steps_done_by(now - start, self._run_steps)
            if done < self._run_steps and now > start + (line.total(done) if done else 0.0):
                # the step under way is lost, but its work was done on the GPUs: counted, as a step's is when it starts
                flops, n_bytes = self._step_work(done)
                self.flops += flops
                self.bytes += n_bytes
            if self._truncate_run(now):  # steps of the run ended by now: applied
                self._run_end(self._run_end_event)  # (its `_next` plans nothing: stopped)
        self._clear_run()
        lost = 0.0 if started is None else max(0.0, now - started - (self.busy_s - before))
        self.busy_s += lost  # (split as the step's own time would have been: busy = prefill + decode)
        if stepping is not None and stepping[2]:  # a step with prompt work
            _, _, _, n_decode, decode_ctx = stepping
            alone = min(lost, self._decode_alone_s(n_decode, decode_ctx)) if n_decode else 0.0
            self.decode_busy_s += alone
            self.prefill_busy_s += lost - alone
        else:
            self.decode_busy_s += lost
        self._stepping = None
        self._verifying.clear()
        self._work_start = None
        self._interruptible = self._idle = False
        members = self.group.release_all() if self.group.n else []
        held = sorted([*self.running, *members], key=_admit_no)
        tokens = 0
        for seq in held:
            tokens += seq.computed
            seq.computed = 0
        out = sorted([*held, *self.waiting], key=_key)
        self.kv.lose_all(out)  # the GPUs' memory is gone: every block, and a prefix cache's entries
        self.running, self.waiting = [], []
        self.n_outstanding = self.pending_prompt_tokens = 0
        # (with the memory went the KV held for transfers out and the reservations for transfers in: the link's)
        self.held_blocks = self.n_incoming = 0
        if self._prio is not None:
            self._prio = PriorityCount()
        return out, lost, tokens

    def _run_in_progress(self) -> tuple[float, RunLine | SpecRun]:
        """The decode run under way: its start and its step line (a speculating replica's: its run plan)."""
        assert self._run is not None
        return self._run[0], self._run[1]

    def _step_work(self, j: int) -> tuple[float, float]:
        """(FLOPs, bytes) of step j of the run in progress (the difference of its first j + 1 steps' and first j's)."""
        assert self._lines is not None
        n_seqs, context_sum = self._run_work
        f1, b1 = self._lines.run_work(n_seqs, context_sum, j + 1)
        f0, b0 = self._lines.run_work(n_seqs, context_sum, j)
        return f1 - f0, b1 - b0

    def _truncate_run(self, now: float) -> bool:
        """Cut the run in progress to the steps that ended by `now`; whether there are any."""
        start, line = self._run_in_progress()
        k = line.steps_done_by(now - start, self._run_steps)
        if k == 0:
            return False
        self._run_steps, self._run_total = k, line.total(k)
        return True

    def _clear_run(self) -> None:
        self._run = None
        self._run_end_event = None

    def _advance(self, seqs: list[Seq], line: RunLine, start: float, k: int, total: float) -> None:
        """Apply k decode steps of a run (`total` = `line.total(k)` seconds): KV growth, tokens, gaps, finishes."""
        end = start + total
        first = start + line.at(0)
        group = self.group
        n = len(seqs) + group.n
        if k > 1:  # gaps 1..k-1 as `line.pieces(k)` (read off its split, no list), the first gap (j = 0) a single
            itl = self.log.itl
            if isinstance(line, StepLine):
                m = k if line.split >= k else int(line.split)
                if m > 1:
                    itl.add_piece(line.a_before + line.e, line.b_before, 1, m, n)
                if m < k:
                    itl.add_piece(line.a_after + line.e, line.b_after, max(m, 1), k, n)
            else:  # (a DP group's run: `sim.run.engine.lockstep.GroupLine`)
                line.add_gaps(itl, k, n)
        self.n_steps += k
        self.n_runs += 1
        self.busy_s += total
        self.decode_busy_s += total
        bs, pad = self.kv.block_size, self.kv.window_blocks
        grown = group.blocks_needed(k)
        finished = []
        singles = self.log.itl.singles
        for seq in seqs:
            singles.append(first - seq.last_token_at_s)
            seq.computed += k
            extra = -(-seq.computed // bs) + pad - seq.blocks
            if extra > 0:
                seq.blocks += extra
                grown += extra
            seq.generated += k
            seq.last_token_at_s = end
            if seq.generated == seq.output_tokens:
                finished.append(seq)
        if grown:
            self.kv.grant(grown)
        if group.n:
            self._group_steps(k, first - group.t_last, end)
        for seq in finished:
            self._finish(seq, end)
        if seqs and self.fast_forward:
            self._regroup(end)


def _admit_no(seq: Seq) -> int:
    return seq.admit_no
