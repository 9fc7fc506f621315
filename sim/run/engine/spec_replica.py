"""A replica that decodes speculatively, fast-forwarded: the seam speculative decoding enters the engine through.

It is the plain replica (`sim.run.engine.replica.Replica`) with its decoders kept in a `SpecGroup` (arrays, stepped in
O(1) Python) instead of the lock-step `DecodeGroup`, and with decode runs of its own (`SpecGroup.plan_run`): a run of
verify steps whose draws are known in advance is as predictable as a plain decode run. What differs from the plain
replica, and only here:
- a sequence's trajectory (its accepted drafts at every verify step it will take) is drawn at its first verify step
  here, among that step's first verifiers in admission order — the group's newcomers and any explicit ones merged —
  so the stream is consumed exactly as the per-step engine (the plain replica with `engine.fast_forward: false`, the
  reference, which reads the same trajectories a step at a time) consumes it;
- a run holds the group's steps until a member finishes or the KV cache could not feed the next step; an arrival
  cuts it at a step boundary (`SpecRun.boundary`), and KV use mid-run is read off the run.
The step-time model is the same `SpeculativeStepTime` wrapper either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import simpy
from simpy.events import NORMAL

from sim.run.clock import call_at
from sim.run.engine.kv import BlockKv
from sim.run.engine.records import RequestLog
from sim.run.engine.replica import COLOCATED, Replica, ReplicaListener
from sim.run.engine.scheduler import Batch, BatchPolicy, Limits
from sim.run.engine.sequence import Seq
from sim.run.engine.spec_group import SpecGroup, SpecRun
from sim.run.engine.speculative import Acceptance
from sim.run.engine.step_time import StepTimeModel


class SpecReplica(Replica):
    __slots__ = ("_spec", "_spec_run")

    def __init__(
        self,
        env: simpy.Environment,
        *,
        group: SpecGroup,
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
        # (Replica's keywords spelled out, not passed on as **kwargs: mypyc's compiled super() call mishandles those)
        super().__init__(
            env,
            replica_id=replica_id,
            step_time=step_time,
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
        assert self._acceptance is not None and group.acceptance is self._acceptance  # one stream for both
        self.group = group
        self._spec = group  # (`group`, typed: read on every step and run, where a checked property cost ~0.5 us a request)
        self.fast_forward = True
        self._spec_run: tuple[float, SpecRun] | None = None  # the run in progress and its start (`_run` stays None)

    def spec_counts(self) -> tuple[int, int]:
        group = self._spec
        return self.verifies + group.verifies, self.verify_tokens + group.verify_tokens

    # --- steps: trajectories drawn at a sequence's first verify step, the step's first verifiers in admission order
    def _start_step(self, batch: Batch) -> None:
        group = self._spec
        first = [
            s for s, _ in batch.work if s.traj is None and s.generated >= 1 and s.prompt_tokens + s.generated - s.computed == 1
        ]
        if batch.group and group.pending:
            first += [s for s in group.pending if s.traj is None]
        if len(first) > 1:
            first.sort(key=_admit_no)
        acceptance = self._acceptance
        assert acceptance is not None
        for seq in first:
            acceptance.trajectory(seq)
        if batch.group and group.pending:
            group.activate()
        super()._start_step(batch)

    def _decode_alone_s(self, n_seqs: int, context_sum: int) -> float:
        return self._spec.model.verify_s(n_seqs, context_sum)  # (the same float as the step-time model's)

    # --- runs ----------------------------------------------------------------------------------------------------
    def _start_run(self, seqs: list[Seq], context_sum: int, min_tokens_left: int) -> None:
        """A pure decode step: the group alone decodes, a run; explicit decoders too (after a per-sequence plan), a
        step (they join the group at its end)."""
        if seqs:
            self._start_step(Batch(work=[(s, 1) for s in seqs], group=self.group.n > 0))
        else:
            self._start_spec_run()

    def _start_spec_run(self) -> None:
        run = self._spec.plan_run(self.kv.run_room(bool(self.waiting)))
        if run is None:  # the KV cache cannot feed the group's next step: a step (the planner preempts)
            self._start_step(Batch(group=True))  # (made only here: a batch a run costs ~0.8 us)
            return
        start = self.env._now
        self._spec_run = (start, run)
        k_max = self._run_steps = run.k_max
        self._work_start = start
        self._interruptible = k_max > 1  # an arrival cuts the run at the next step boundary
        total = self._run_total = run.ends[-1]  # (`run.total(k_max)`)
        self._run_end_event = call_at(self.env, total, NORMAL, self._run_end)

    def _cut_run(self) -> None:
        """An arrival mid-run: end the run at the first step boundary at or after now."""
        assert self._spec_run is not None
        self._interruptible = False
        start, run = self._spec_run
        now = self.env._now
        self._run_steps, self._run_total = run.boundary(now - start, run.k_max)
        self._run_end_event = call_at(self.env, max(0.0, start + self._run_total - now), NORMAL, self._run_end)

    def steps_done_in_run(self, now: float) -> int:
        if self._spec_run is None:
            return 0
        start, run = self._spec_run
        return run.steps_done_by(now - start, self._run_steps)

    def _run_end(self, event: simpy.Event) -> None:
        if event is not self._run_end_event:
            return  # superseded by `_cut_run`
        assert self._spec_run is not None
        start, run = self._spec_run
        k, total = self._run_steps, self._run_total
        self._run_end_event = self._spec_run = None
        self._interruptible = False
        self._work_start = None
        flops, n_bytes = run.work(k)
        self.flops += flops
        self.bytes += n_bytes
        self.n_steps += k
        self.n_runs += 1
        self.busy_s += total
        self.decode_busy_s += total
        end = start + total
        done, grown = self._spec.take_run(run, k, start)
        self.kv.grant(grown)
        for seq in done:
            self._completed(seq, end)
        self._next()

    def _step_work(self, j: int) -> tuple[float, float]:
        assert self._spec_run is not None
        run = self._spec_run[1]
        return run.flops[j], run.bytes[j]

    def _run_in_progress(self) -> tuple[float, SpecRun]:
        assert self._spec_run is not None
        return self._spec_run

    def _clear_run(self) -> None:
        self._spec_run = None
        self._run_end_event = None

    def run_growth_bound(self) -> int:
        """The blocks the run in progress grows by to its end (0 without a run)."""
        return 0 if self._spec_run is None else self._spec_run[1].extra_blocks(self._run_steps)

    def run_growth_at(self, now: float) -> int:
        """Blocks a run in progress has grown by at `now` (the step under way holds its slots; 0 without a run)."""
        if self._spec_run is None:
            return 0
        start, run = self._spec_run
        done = run.steps_done_by(now - start, self._run_steps)
        return run.extra_blocks(min(done + 1, self._run_steps))


def _admit_no(seq: Seq) -> int:
    return seq.admit_no
