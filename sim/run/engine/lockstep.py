"""Data-parallel ranks of an MoE model stepping in lock-step: the seam vLLM's DP + EP engine enters through.

With `--data-parallel-size` an MoE model's DP ranks each keep their own scheduler, running batch and KV cache, but
share the MoE layers: every MoE layer's dispatch and combine (or all-gather and reduce-scatter) is a collective over
the group's GPUs, so the ranks run each forward together. A rank with nothing scheduled runs a dummy batch (vLLM's
`execute_dummy_batch`, one token) so the others' collectives complete, and the group stops stepping only when every
rank is idle (vLLM's DP coordinator ends the "wave"). A group's step therefore lasts as long as its slowest rank's:
the rank with the longest prompt chunk holds every other rank's decoders for that long, and a request arriving at a
rank whose group is mid-step waits for the group's step boundary.

`LockStep` is one group: its ranks (`LockStepReplica`, the plain replica with its steps and runs started and ended by
the group) join it when they become ready (the first group of the pool's replica type with fewer than `dp` ranks,
else a new one) and leave it when they are released or lost. At each boundary every rank that is not idle plans with
the plain replica's own planner (its policy, KV cache and queue): a step, or (fast-forward) a decode run. Then the
group prices each rank's step (`GroupPricing`) with the tokens the whole group puts through the MoE layers they share
(its expert reads, its share of the experts' FLOPs, the exchange): the ranks' own, or, when every rank's step fits a
captured CUDA graph, every rank padded to the largest, as vLLM's `coordinate_batch_across_dp` pads them.

- When every working rank plans a decode run, the group runs them together: step j lasts the longest of the ranks'
  step j (each rank's `StepLine`, and the idle ranks' dummy batch) — `GroupLine`, the upper envelope of their lines,
  convex and piecewise linear — for as many steps as the shortest run allows. An arrival at any rank cuts the run at
  the group's next boundary, as one replica's run is cut.
- Otherwise the group takes one step, as long as the slowest rank's (a rank that planned a run takes one step of it).
- `engine.fast_forward: false` (and speculative decoding) steps every rank every step: the reference.

The same seam holds a pipeline-parallel server's virtual engines (`fleet.pp`, vLLM V0's one scheduler per pipeline
stage, `pipeline`). Each stage's GPUs run the engines' microbatches one after another, so while several engines are
busy each steps once per cycle of the pipeline: with engines whose whole-model steps take T_v (p stages, t_v = T_v / p
each), a stage is busy sum_v t_v a cycle and an engine's step needs its p stages in turn, so the cycle lasts
max(sum_v t_v, p max_v t_v) = max_v T_v: every busy engine steps at the pace of the slowest, as a DP group does. An
idle engine puts no microbatch through the stages (no dummy batch), and each engine's step is priced on its own
tokens (no layer is shared across engines). What the cycle leaves out: the engines' steps are offset by a stage, so
an arrival at an idle engine could start when the first stage frees, not at the group's boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import simpy
from simpy.events import NORMAL

from sim.run.clock import call_at
from sim.run.engine.kv import BlockKv
from sim.run.engine.records import RequestLog
from sim.run.engine.replica import COLOCATED, NO_LIMIT, Replica, ReplicaListener
from sim.run.engine.scheduler import Batch, BatchPolicy, Limits
from sim.run.engine.sequence import Seq
from sim.run.engine.spec_group import SpecRun
from sim.run.engine.speculative import Acceptance
from sim.run.engine.step_time import GapLog, LinearWrapper, RunLine, StepLine, StepTimeModel, linear_runs


class GroupLine:
    """Step j of a DP group's decode run: the slowest rank's, max over lines a + b j (each rank's `StepLine` is the max
    of its two sides, and an idle rank's dummy batch a constant). Kept as the envelope's pieces over [0, k): `starts`
    (the first step of each), `a`, `b` and `cum` (the time of the steps before each)."""

    __slots__ = ("a", "b", "cum", "k", "starts")

    def __init__(self, lines: list[tuple[float, float]], k: int) -> None:
        self.k = k
        if len(lines) == 1:  # (one line, a group step's constant among them: its own envelope, the loop below's result)
            a0, b0 = lines[0]
            self.starts, self.a, self.b, self.cum = [0], [a0], [b0], [0.0]
            return
        # the upper envelope over j >= 0: from the line on top at 0, step to the line that overtakes it first (the
        # largest (a, b): tuples compare so)
        cur = max(lines)
        starts, a, b = [0], [cur[0]], [cur[1]]
        j = 0
        while True:
            # (the first step m > j at which a steeper line is at least the current one; of those overtaking first,
            # the one on top there, the steeper on a tie)
            best: tuple[int, float, float, float] | None = None
            for la, lb in lines:
                if lb <= cur[1]:
                    continue
                m = max(j + 1, math.ceil((cur[0] - la) / (lb - cur[1])))
                while m > j + 1 and la + lb * (m - 1) >= cur[0] + cur[1] * (m - 1):
                    m -= 1
                while la + lb * m < cur[0] + cur[1] * m:
                    m += 1
                v = la + lb * m
                if best is None or m < best[0] or (m == best[0] and (v, lb) > (best[3], best[2])):
                    best = (m, la, lb, v)
            if best is None or best[0] >= k:
                break
            j, cur = best[0], (best[1], best[2])
            starts.append(j)
            a.append(cur[0])
            b.append(cur[1])
        cum, t = [], 0.0
        for i, s in enumerate(starts):
            cum.append(t)
            stop = starts[i + 1] if i + 1 < len(starts) else k
            t += (stop - s) * a[i] + b[i] * (stop * (stop - 1) - s * (s - 1)) / 2
        self.starts, self.a, self.b, self.cum = starts, a, b, cum

    @classmethod
    def constant(cls, dt: float) -> GroupLine:
        """One step of `dt` seconds."""
        return cls([(dt, 0.0)], 1)

    def __repr__(self) -> str:
        return f"GroupLine(starts={self.starts}, a={self.a}, b={self.b}, k={self.k})"

    def _piece(self, j: int) -> int:
        starts = self.starts
        i = len(starts) - 1
        while starts[i] > j:
            i -= 1
        return i

    def at(self, j: int) -> float:
        i = self._piece(j)
        return self.a[i] + self.b[i] * j

    def total(self, k: int) -> float:
        """The time of steps 0..k-1."""
        if k <= 0:
            return 0.0
        i = self._piece(k - 1)
        s = self.starts[i]
        return self.cum[i] + (k - s) * self.a[i] + self.b[i] * (k * (k - 1) - s * (s - 1)) / 2

    def boundary(self, elapsed: float, k_max: int) -> tuple[int, float]:
        """The first step boundary k in [1, k_max] with total(k) >= elapsed (or k_max), and its time."""
        lo, hi = 1, k_max
        while lo < hi:
            mid = (lo + hi) // 2
            if self.total(mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        return lo, self.total(lo)

    def steps_done_by(self, elapsed: float, k_max: int) -> int:
        """Steps completed by `elapsed`: the largest k in [0, k_max] with total(k) <= elapsed."""
        lo, hi = 0, k_max
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.total(mid) <= elapsed:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def add_gaps(self, itl: GapLog, k: int, n: int) -> None:
        """The gaps of steps 1..k-1 of a run of `n` sequences, a piece at a time."""
        starts = self.starts
        for i, s in enumerate(starts):
            stop = min(starts[i + 1] if i + 1 < len(starts) else k, k)
            lo = max(s, 1)
            if lo < stop:
                itl.add_piece(self.a[i], self.b[i], lo, stop, n)


def line_sides(line: StepLine) -> list[tuple[float, float]]:
    """A `StepLine` as the max of two lines a + b j: the larger line before its split and the larger after (each the
    smaller on the other side: a convex step time)."""
    return [(line.a_before + line.e, line.b_before), (line.a_after + line.e, line.b_after)]


class GroupPricing(LinearWrapper):
    """A DP rank's step-time model: the pool's, with the group's tokens through the shared MoE layers. While the
    group plans (`deferred`) a step is only recorded; once every rank has planned, the group prices it with the
    tokens they all put through (`price`), and a run's lines and work with them (`group_tokens`)."""

    def __init__(self, inner: StepTimeModel) -> None:
        self.inner = inner
        self._lines = linear_runs(inner)
        self.group_tokens: int | None = None  # the run in progress's group tokens (its work is priced with them)
        self.deferred = False  # the group is planning: a step is recorded, and priced once the group's tokens are known
        self._planned: tuple[int, int, float, float, int, int | None, float | None] | None = None  # that step's arguments
        self._planned_seqs: int | None = None  # and its scheduled sequences, when given

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
        logit_tokens: int | None = None,
        decode_pairs: float | None = None,
        group_tokens: int | None = None,
        seqs: int | None = None,
    ) -> tuple[float, float, float]:
        args = (
            n_prefill_tokens,
            n_decode_seqs,
            attention_pairs,
            kv_read_tokens,
            decode_context_tokens,
            logit_tokens,
            decode_pairs,
        )
        if self.deferred:  # (`price` prices it: its seconds, FLOPs and bytes are counted then)
            self._planned = args
            self._planned_seqs = seqs
            return 0.0, 0.0, 0.0
        return self.inner.step(*args, group_tokens, seqs)

    def tokens(self) -> int:
        """The planned step's tokens."""
        assert self._planned is not None
        return self._planned[0] + self._planned[1]

    def price(self, group_tokens: int | None) -> tuple[float, float, float]:
        """The planned step in a group step of `group_tokens`: its seconds, FLOPs and bytes."""
        assert self._planned is not None
        return self.inner.step(*self._planned, group_tokens, self._planned_seqs)

    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        assert self._lines is not None
        return self._lines.decode_line(n_seqs=n_seqs, context_sum=context_sum, group_tokens=group_tokens)

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        assert self._lines is not None
        return self._lines.run_work(n_seqs, context_sum, k, group_tokens if group_tokens is not None else self.group_tokens)

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        assert self._lines is not None
        return self._lines.decode_sum(n_seqs, context_sum, k, host)

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        assert self._lines is not None
        return self._lines.line_steps(n_seqs, context_sum)


class LockStep:
    """One DP group: its ranks, and the step or run they are in."""

    __slots__ = (
        "_due",
        "_dummy",
        "_end_event",
        "_line",
        "_runs",
        "_start",
        "_steps",
        "_tokens",
        "_working",
        "dp",
        "dummy_steps",
        "env",
        "graph_tokens",
        "in_step",
        "n_steps",
        "pipeline",
        "ranks",
        "step_time",
        "wait_s",
    )

    def __init__(
        self, env: simpy.Environment, *, dp: int, step_time: StepTimeModel, graph_tokens: int = 0, pipeline: bool = False
    ) -> None:
        self.env = env
        self.dp = dp  # ranks a full group holds
        self.pipeline = pipeline  # a server's virtual engines: no dummy batches, each step priced on its own tokens
        self.graph_tokens = graph_tokens  # the largest step vLLM runs as a captured CUDA graph (0: eager)
        self.step_time = step_time  # the ranks' model (an idle rank's dummy batch is priced by it)
        self._dummy: dict[int, float] = {}
        self._tokens = 0  # the tokens of the step or run in progress, all ranks
        self.ranks: list[LockStepReplica] = []  # in the order they joined
        self.in_step = False  # a group step or run in progress (its end plans the next)
        self._due = False  # a group step is due to start at this instant
        self._working: list[LockStepReplica] = []  # the ranks in the step or run (in join order)
        self._runs = False  # whether they are in a run (each rank's `_run`), else each in one step (`_stepping`)
        self._line: GroupLine | None = None  # the run's line
        self._start = 0.0
        self._steps = 0  # the run's steps (cut short by an arrival)
        self._end_event: simpy.Event | None = None
        self.n_steps = 0  # group steps taken (a run's each)
        self.dummy_steps = 0  # rank-steps spent on dummy batches
        self.wait_s = 0.0  # rank-seconds spent waiting on a slower rank (its own step, or its dummy batch, done)

    def _dummy_s(self, group_tokens: int) -> float:
        """An idle rank's dummy batch (vLLM's: one token, no context) in a group step of `group_tokens`."""
        dt = self._dummy.get(group_tokens)
        if dt is None:
            dt = self._dummy[group_tokens] = self.step_time.step(0, 1, 1, 0, 0, 1, group_tokens=group_tokens)[0]
        return dt

    def _dummies(self, working: list[LockStepReplica]) -> int:
        """The members not in `working` that run dummy batches (a pipeline's idle engine runs none)."""
        return 0 if self.pipeline else len(self.ranks) - len(working)

    @property
    def full(self) -> bool:
        return len(self.ranks) >= self.dp

    def join(self, rank: LockStepReplica) -> None:
        self.ranks.append(rank)

    def leave(self, rank: LockStepReplica) -> None:
        if rank in self.ranks:
            self.ranks.remove(rank)
            self.cut()  # (the slowest rank may have gone: the others plan again at the next boundary)

    def wants(self) -> None:
        """A rank has work: the group plans at this instant, or at the next boundary of the step or run it is in."""
        if self.in_step:
            self.cut()
        elif not self._due:
            self._due = True
            call_at(self.env, 0.0, NORMAL, self._begin)

    def cut(self, *, later: bool = False) -> None:
        """End the run in progress at its first step boundary at or after now (`later`: the one after it, where an
        arrival under async scheduling is first seen); a step in progress ends as it is."""
        line = self._line
        if not self.in_step or not self._runs or line is None or self._steps <= 1:
            return
        now = self.env._now
        k, total = line.boundary(now - self._start, self._steps)
        if later and k < self._steps:
            k += 1
            total = line.total(k)
        if k == self._steps:
            return
        self._steps = k
        event = self._end_event = call_at(self.env, max(0.0, self._start + total - now), NORMAL, self._end)
        for rank in self._working:
            if rank._run is not None:
                rank._interruptible = later and k > 1  # (cut later: an earlier cause may still cut it sooner)
                rank._run_steps, rank._run_total = k, total
                rank._run_end_event = event

    def _begin(self, _event: simpy.Event | None) -> None:
        """Every rank that is not idle plans (the plain replica's planner); the group then runs or steps together."""
        self._due = False
        working: list[LockStepReplica] = []
        sizes: list[int] = []  # their tokens (a run's: each step's)
        steps = False  # whether any plans a step (else every one a decode run)
        for rank in tuple(self.ranks):  # (a rank that goes idle may be released, and leave, as it does)
            if not rank._idle and not rank._stopped:
                rank.clear_plan()  # (a call: what its planner sets below is not read as the None set here)
                pricing = rank._pricing
                pricing.deferred = True
                Replica._next(rank)  # its own planner: a step leaves its batch in `_stepping`, a run its plan in `_wants_run`
                pricing.deferred = False
                if rank._dt is not None:  # a step: its tokens
                    working.append(rank)
                    sizes.append(pricing.tokens())
                    steps = True
                elif rank._wants_run is not None:  # a decode run: each step's tokens
                    working.append(rank)
                    sizes.append(rank._run_work[0])
        idle = self._dummies(working)
        if not working:
            return  # every rank idle: the next arrival starts a step
        self.in_step = True
        self._working = working
        now = self.env._now
        self._start = now
        # the tokens the group's step puts through the MoE layers: each rank's and an idle rank's dummy token; when
        # every rank's step fits a captured CUDA graph, vLLM pads every rank to the largest (`coordinate_batch_across_dp`)
        most = max(sizes)
        tokens: int | None
        if self.pipeline:  # (each engine's microbatch through the layers alone; no dummy batch to price)
            tokens = None
        elif most <= self.graph_tokens:
            tokens = self._tokens = most * (len(working) + idle)
        else:
            tokens = self._tokens = idle + sum(sizes)
        dummy = self._dummy_s(self._tokens) if idle else 0.0
        if not steps:  # every working rank decodes only: a run together
            lines: list[tuple[float, float]] = []
            k = NO_LIMIT
            for rank in working:
                lines += line_sides(rank._planned_line(tokens))
                k = min(k, rank._planned_k())
            if idle:
                lines.append((dummy, 0.0))
            line = GroupLine(lines, k)
            self._line, self._steps, self._runs = line, k, True
            total = line.total(k)
            for rank in working:
                rank._start_group_run(line, k, total)
        else:  # one step, as long as the slowest rank's (a planned run: its first step)
            total = 0.0
            for rank in working:
                dt = rank._priced_step(tokens)
                if dt > total:
                    total = dt
            if idle:
                total = max(total, dummy)
            line = GroupLine.constant(total)
            self._line, self._steps, self._runs = line, 1, False
            for rank in working:
                if rank._dt is not None:
                    stepping = rank._stepping
                    assert stepping is not None
                    rank._stepping = (stepping[0], total, *stepping[2:])  # busy for the group's step
                else:
                    rank._start_group_run(line, 1, total)
        event = self._end_event = call_at(self.env, total, NORMAL, self._end)
        for rank in working:
            if rank._run is not None:
                rank._run_end_event = event
        for rank in working:
            if rank._unseen or rank._held_plan:  # async scheduling: arrivals, or seats and blocks given back, seen at
                self.cut()  # the first boundary: it ends there
                break

    def _end(self, event: simpy.Event) -> None:
        """The group's step or run ends: each rank's ends at this instant (in join order), then the next one starts."""
        if event is not self._end_event:
            return  # superseded by `cut`
        steps, line, working = self._steps, self._line, self._working
        assert line is not None
        self._line = None  # (`cut` has nothing to cut while the ranks' steps end)
        total = line.total(steps)
        idle = self._dummies(working)
        self.n_steps += steps
        self.dummy_steps += idle * steps
        if idle:
            self.wait_s += idle * (total - steps * self._dummy_s(self._tokens))
        for rank in working:
            if rank._stopped:
                continue
            if rank._run is not None:
                self.wait_s += total - rank._own_s(steps)
                Replica._run_end(rank, event)  # (its `_next` is `wants`: a no-op while in the step)
            elif rank._stepping is not None:
                own = rank._dt
                assert own is not None
                self.wait_s += total - own
                Replica._step_end(rank, None)  # (its `_next` is `wants`: a no-op while in the step)
        self.in_step = False
        self._working = []
        self._end_event = None
        self._begin(None)


class LockStepReplica(Replica):
    """A DP rank of an MoE model: the plain replica, its steps and decode runs started and ended by its group."""

    __slots__ = ("_dt", "_own_line", "_pricing", "_wants_run", "lockstep")

    def __init__(
        self,
        env: simpy.Environment,
        *,
        lockstep: LockStep,
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
        self._pricing = GroupPricing(step_time)
        # (Replica's keywords spelled out, not passed on as **kwargs: mypyc's compiled super() call mishandles those)
        super().__init__(
            env,
            replica_id=replica_id,
            step_time=self._pricing,
            policy=policy,
            limits=limits,
            kv=kv,
            log=log,
            max_context_tokens=max_context_tokens,
            fast_forward=fast_forward,
            role=role,
            acceptance=acceptance,
            listeners=listeners,
        )
        self.lockstep = lockstep
        self._dt: float | None = None  # the step it just planned, in seconds (read by the group)
        # the decode run it just planned: its sequences, most steps and (once the group has priced it) its line
        self._wants_run: tuple[list[Seq], int, StepLine | None] | None = None
        self._own_line: StepLine | None = None  # the run in progress's own line (its steps had it run alone)
        lockstep.join(self)

    def clear_plan(self) -> None:
        """Forget the last plan, before its planner makes the next."""
        self._dt = None
        self._wants_run = None
        self._held_plan = False

    def _next(self, _event: simpy.Event | None = None) -> None:
        if not self._stopped:
            self.lockstep.wants()

    def _end_step_at(self, delay: float, callback: Callable[[simpy.Event], None]) -> None:
        """(The group ends its steps: `LockStep._end`.)"""

    def _start_step(self, batch: Batch) -> None:
        Replica._start_step(self, batch)
        stepping = self._stepping
        assert stepping is not None
        self._dt = stepping[1]

    def _start_run(self, seqs: list[Seq], context_sum: int, min_tokens_left: int) -> None:
        # the plain replica's run as `Replica._start_run` plans it, its most steps and its work; its line, timing and
        # end are the group's (`_planned_line`, `_start_group_run`)
        group = self.group
        n_seqs = len(seqs) + group.n
        context_sum += group.ctx
        k_max = min(group.min_tokens_left, min_tokens_left)
        if k_max > 1 and n_seqs * -(-k_max // self.kv.block_size) > self.kv.run_room(bool(self.waiting)):
            k_max = self._kv_steps(seqs, k_max)
        if self._windowed:  # (sliding-window layers: up to where the run's sums cross the window)
            assert self._lines is not None
            k_max = min(k_max, self._lines.line_steps(n_seqs, context_sum))
        self._run_work = (n_seqs, context_sum)
        self._wants_run = (seqs, k_max, None)

    def _cut_run(self) -> None:
        self.lockstep.cut()

    def _cut_later(self, start: float, line: RunLine | SpecRun, k: int) -> None:
        self.lockstep.cut(later=True)

    def _priced_step(self, group_tokens: int | None) -> float:
        """Its planned step (a run: its first step) in a group step of `group_tokens`, its counters and `_dt` with it."""
        if self._dt is None:
            return self._planned_line(group_tokens).at(0)
        stepping = self._stepping
        assert stepping is not None
        dt, flops, n_bytes = self._pricing.price(group_tokens)
        self.flops += flops
        self.bytes += n_bytes
        self._dt = dt + stepping[0].stall_s
        return self._dt

    def _planned_line(self, group_tokens: int | None) -> StepLine:
        """Its planned run's line in a group of `group_tokens` a step (the run's work priced with them too)."""
        assert self._wants_run is not None and self._lines is not None
        self._pricing.group_tokens = group_tokens
        n_seqs, context_sum = self._run_work
        line = self._lines.decode_line(n_seqs=n_seqs, context_sum=context_sum, group_tokens=group_tokens)
        seqs, k_max, _ = self._wants_run
        self._wants_run = (seqs, k_max, line)
        return line

    def _planned_k(self) -> int:
        assert self._wants_run is not None
        return self._wants_run[1]

    def _start_group_run(self, line: GroupLine, k: int, total: float) -> None:
        assert self._wants_run is not None
        seqs, _, own = self._wants_run
        self._wants_run = None
        self._own_line = own
        start = self.env._now  # (the plain replica's run, timed by the group's line; its end event: the group's)
        self._run = (start, line, seqs, k)
        self._run_steps = k
        self._work_start = start
        self._interruptible = k > 1
        self._run_total = total  # (`line.total(k)`)

    def _own_s(self, k: int) -> float:
        """Seconds its run's first k steps would have taken alone."""
        return self._own_line.total(k) if self._own_line is not None else 0.0

    def released(self) -> None:
        self.lockstep.leave(self)

    def stop(self) -> tuple[list[Any], float, int]:
        out = super().stop()
        self.lockstep.leave(self)
        return out


class LockSteps:
    """A pool's replica type's DP groups (or pipelines' virtual engines, `pipeline`): a new rank joins the oldest group
    with room, else starts one."""

    __slots__ = ("dp", "env", "graph_tokens", "groups", "pipeline", "step_time")

    def __init__(
        self, env: simpy.Environment, *, dp: int, step_time: StepTimeModel, graph_tokens: int = 0, pipeline: bool = False
    ) -> None:
        self.env = env
        self.dp = dp
        self.step_time = step_time
        self.graph_tokens = graph_tokens
        self.pipeline = pipeline
        self.groups: list[LockStep] = []

    def group_for_new_rank(self) -> LockStep:
        self.groups = [g for g in self.groups if g.ranks or g.in_step]  # (emptied groups go)
        for group in self.groups:
            if not group.full:
                return group
        group = LockStep(self.env, dp=self.dp, step_time=self.step_time, graph_tokens=self.graph_tokens, pipeline=self.pipeline)
        self.groups.append(group)
        return group
