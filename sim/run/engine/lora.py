"""LoRA adapters in a replica (vLLM's multi-LoRA serving, `--enable-lora`): what a batch may hold, where adapters are,
what loading one costs. It enters through two seams, built per replica when `engine.lora` is set: the KV manager
(`lora_kv`: admission and residency, around the plain or prefix-caching pool) and the step-time model (`LoraStepTime`:
the adapters' kernels), sharing one `LoraState`.

- **Admission** (vLLM's scheduler): the running batch holds at most `max_loras` distinct adapters. Before a step is
  planned, waiting requests whose adapter is not running are skipped once the running adapters and those the step
  would admit already number `max_loras` (they keep their place in the queue, as vLLM's skipped requests do); requests
  for the base model are never skipped.
- **Residency**: `max_loras` GPU slots and `max_cpu_loras` adapters in host memory, each least recently used first.
  A step that admits a request whose adapter is not in a GPU slot first loads it (vLLM activates a batch's adapters
  before its forward pass): from host memory at `host_to_gpu_gb_per_s`, or, not cached there, from `adapters_from`
  (a storage tier, as weight loading) and then into host memory too. The load's seconds stall that step; they are
  counted per replica (`lora_loads`, `lora_load_s`). A replica lost (failure, reclaim) loses both caches.
- **Cost** (`sim.physics.lora`): while any adapter runs, every token of a step pays the adapters' shrink and expand
  FLOPs at `max_lora_rank`, and the step reads each running adapter's slot once; both after the base model's step,
  as vLLM's LoRA kernels run after each base GEMM (FLOPs and bytes only: their launch overheads are not priced).
- **Memory**: the `max_loras` slots are allocated at start, out of the KV cache (`slot_bytes` a GPU each).

A disaggregated decode replica takes a transfer only if its adapter is running or on its way there, or fewer than
`max_loras` are (the link holds the transfer back otherwise, as for want of KV room); the adapter is loaded when the
sequence arrives.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sim.run.engine.kv import BlockKv, Plan, Planning, PrefixCachingKv
from sim.run.engine.scheduler import Batch
from sim.run.engine.sequence import Seq
from sim.run.engine.step_time import LinearWrapper, StepLine, StepTimeModel, linear_runs

if TYPE_CHECKING:
    from sim.run.engine.records import RequestLog


@dataclass(frozen=True, slots=True)
class LoraCosts:
    """A pool's LoRA figures, resolved (`sim.physics.lora`; seconds from bytes at the configured bandwidths)."""

    max_loras: int
    cpu_loras: int
    adapter_bytes: float  # one adapter, all of it (storage and host memory)
    load_s: float  # reading it from its storage tier into host memory
    copy_s: float  # copying it from host memory into a GPU slot
    flops_per_token: float  # shrink + expand, the whole replica
    slot_bytes: float  # one slot, the whole replica (read once a step per running adapter)
    flops_per_s: float  # the replica's effective FLOP/s and bytes/s (the roofline's)
    bytes_per_s: float


@dataclass(slots=True)
class LoraState:
    """One replica's adapters: those running (with how many sequences), in GPU slots, in host memory; the loads."""

    costs: LoraCosts
    running: dict[int, int] = field(default_factory=dict)  # adapter -> running sequences with it
    coming: dict[int, int] = field(default_factory=dict)  # adapter -> transfers on their way (a decode replica)
    gpu: OrderedDict[int, None] = field(default_factory=OrderedDict)  # GPU slots, least recently used first
    host: OrderedDict[int, None] = field(default_factory=OrderedDict)  # host memory, least recently used first
    stall_s: float = 0.0  # loads not yet charged to a step
    loads: int = 0
    load_s: float = 0.0

    def start(self, adapter: int) -> None:
        """A sequence with `adapter` joins the running batch: its adapter must be in a GPU slot."""
        n = self.running.get(adapter, 0)
        self.running[adapter] = n + 1
        gpu = self.gpu
        if adapter in gpu:
            gpu.move_to_end(adapter)
            return
        c = self.costs
        seconds = c.copy_s
        host = self.host
        if adapter in host:
            host.move_to_end(adapter)
        else:
            seconds += c.load_s
            host[adapter] = None
            if len(host) > c.cpu_loras:
                host.popitem(last=False)
        if len(gpu) >= c.max_loras:  # evict the least recently used slot whose adapter is not running
            victim = next((a for a in gpu if self.running.get(a, 0) == 0), None)
            if victim is not None:
                del gpu[victim]
        gpu[adapter] = None
        self.stall_s += seconds
        self.loads += 1
        self.load_s += seconds

    def stop(self, adapter: int) -> None:
        """A sequence with `adapter` left the running batch (finished, preempted, handed off)."""
        n = self.running[adapter] - 1
        if n:
            self.running[adapter] = n
        else:
            del self.running[adapter]

    def takes(self, adapter: int) -> bool:
        """Whether a sequence with `adapter` may join without the running and promised adapters passing `max_loras`."""
        if adapter < 0 or adapter in self.running or adapter in self.coming:
            return True
        return len(self.running.keys() | self.coming.keys()) < self.costs.max_loras

    def promise(self, adapter: int) -> None:
        self.coming[adapter] = self.coming.get(adapter, 0) + 1

    def unpromise(self, adapter: int) -> None:
        n = self.coming[adapter] - 1
        if n:
            self.coming[adapter] = n
        else:
            del self.coming[adapter]

    def lose_all(self) -> None:
        self.coming.clear()
        self.running.clear()
        self.gpu.clear()
        self.host.clear()
        self.stall_s = 0.0

    def extra(self, tokens: int) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) the adapters add to a step of `tokens` tokens."""
        if not self.running:
            return 0.0, 0.0, 0.0
        c = self.costs
        flops = tokens * c.flops_per_token
        n_bytes = len(self.running) * c.slot_bytes
        return flops / c.flops_per_s + n_bytes / c.bytes_per_s, flops, n_bytes


class LoraKv(BlockKv):
    """The plain pool with LoRA's admission and adapters (see the module docstring); `LoraPrefixCachingKv` is the same
    over the prefix-caching pool. (No `__slots__` of its own: `lora` lives in its dict, so that the two pools can share
    this class as a base.)"""

    lora: LoraState

    def __init__(self, n_blocks: int, block_size: int, *, lora: LoraState) -> None:
        super().__init__(n_blocks, block_size)
        self.lora = lora

    def plan(self, plan: Plan, replica: Planning) -> Batch:
        lora = self.lora
        waiting = replica.waiting
        active = lora.running.keys() | lora.coming.keys() if lora.coming else lora.running
        room = lora.costs.max_loras - len(active)
        chosen: set[int] = set()
        eligible: list[Seq] | None = None
        n_ok, most = 0, replica.limits.max_num_seqs  # (a step admits no more: the rest of the queue need not be seen)
        for i, seq in enumerate(waiting):
            if n_ok >= most:
                break
            a = seq.adapter
            if a < 0 or a in active or a in chosen:
                n_ok += 1
                if eligible is not None:
                    eligible.append(seq)
            elif len(chosen) < room:
                chosen.add(a)
                n_ok += 1
                if eligible is not None:
                    eligible.append(seq)
            elif eligible is None:  # the first skipped: the queue as the step sees it, from here on
                eligible = waiting[:i]
        if eligible is None:
            batch = super().plan(plan, replica)
        else:
            replica.waiting = eligible
            try:
                batch = super().plan(plan, replica)
            finally:
                replica.waiting = waiting
            if batch.dropped:  # (dropped from the step's view of the queue: from the queue itself)
                gone = {id(seq) for seq, _ in batch.dropped}
                waiting[:] = [seq for seq in waiting if id(seq) not in gone]
            batch.reordered = True  # admitted sequences are not the queue's head
        for seq in batch.admitted:
            if seq.adapter >= 0:
                lora.start(seq.adapter)
        if lora.stall_s:
            batch.stall_s = lora.stall_s
            lora.stall_s = 0.0
        return batch

    def release(self, seq: Seq, now: float) -> None:
        """(Finished, handed off and sent, or preempted: the pools' `preempted` releases.)"""
        if seq.adapter >= 0:
            self.lora.stop(seq.adapter)
        super().release(seq, now)

    def takes_adapter(self, adapter: int) -> bool:
        return self.lora.takes(adapter)

    def promised(self, seq: Seq) -> None:
        if seq.adapter >= 0:
            self.lora.promise(seq.adapter)

    def unpromised(self, seq: Seq) -> None:
        if seq.adapter >= 0:
            self.lora.unpromise(seq.adapter)

    def received(self, seq: Seq) -> None:
        if seq.adapter >= 0:
            self.lora.unpromise(seq.adapter)
            self.lora.start(seq.adapter)

    def lose_all(self, seqs: list[Seq]) -> None:
        super().lose_all(seqs)
        self.lora.lose_all()

    def holds_adapter(self, adapter: int) -> bool:
        return adapter in self.lora.gpu

    def lora_counts(self) -> tuple[int, float]:
        return self.lora.loads, self.lora.load_s


class LoraPrefixCachingKv(LoraKv, PrefixCachingKv):
    """LoRA over the prefix-caching pool: `LoraKv`'s methods first, each then the prefix cache's."""

    def __init__(
        self, n_blocks: int, block_size: int, *, hash_tokens: int, log: RequestLog, lora: LoraState, chunks: bool = True
    ) -> None:
        PrefixCachingKv.__init__(self, n_blocks, block_size, hash_tokens=hash_tokens, log=log, chunks=chunks)
        self.lora = lora


class LoraStepTime(LinearWrapper):
    """A replica's step-time model with its adapters' kernels (`LoraState.extra`) added to each step; a decode run's
    steps each pay the same (its batch, so its running adapters, cannot change during the run)."""

    def __init__(self, inner: StepTimeModel, state: LoraState) -> None:
        self.inner = inner
        self.state = state
        self._lines = linear_runs(inner)
        # the adapters' cost of the decode run in progress, as priced at its start (its batch: n_seqs, context_sum);
        # an adapter started mid-run (a transfer received) joins the steps after it, not the run's work
        self._run_extra: tuple[int, int, tuple[float, float, float]] | None = None

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
        dt, flops, n_bytes = self.inner.step(
            n_prefill_tokens,
            n_decode_seqs,
            attention_pairs,
            kv_read_tokens,
            decode_context_tokens,
            logit_tokens,
            decode_pairs,
            group_tokens,
            seqs,
        )
        s, f, b = self.state.extra(n_prefill_tokens + n_decode_seqs)
        return dt + s, flops + f, n_bytes + b

    # the fast-forward's linear runs, when the base model has them
    def decode_line(self, *, n_seqs: int, context_sum: int, group_tokens: int | None = None) -> StepLine:
        assert self._lines is not None
        line = self._lines.decode_line(n_seqs=n_seqs, context_sum=context_sum, group_tokens=group_tokens)
        extra = self.state.extra(n_seqs)
        self._run_extra = (n_seqs, context_sum, extra)
        s = extra[0]
        return StepLine(line.a1, line.b1, line.a2, line.b2, line.e + s, line.g) if s else line

    def run_work(self, n_seqs: int, context_sum: int, k: int, group_tokens: int | None = None) -> tuple[float, float]:
        assert self._lines is not None
        flops, n_bytes = self._lines.run_work(n_seqs, context_sum, k, group_tokens)
        run = self._run_extra
        _, f, b = run[2] if run is not None and run[:2] == (n_seqs, context_sum) else self.state.extra(n_seqs)
        return flops + k * f, n_bytes + k * b

    def decode_sum(self, n_seqs: int, context_sum: int, k: int, host: bool = True) -> float:
        assert self._lines is not None
        return self._lines.decode_sum(n_seqs, context_sum, k, host) + k * self.state.extra(n_seqs)[0]

    def line_steps(self, n_seqs: int, context_sum: int) -> int:
        assert self._lines is not None
        return self._lines.line_steps(n_seqs, context_sum)
