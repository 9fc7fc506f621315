"""A pool of replicas as a SimPy model: replica lifecycles, routing, the pool's queue, scaling.

A request goes to a ready replica chosen by the router, at once, whatever that replica already holds
(vLLM behind a plain load balancer). With `max_outstanding_per_replica` (Ray Serve's
`max_ongoing_requests`, llm-d's flow control) the router only sends it to a ready replica holding fewer
requests than that, and when every ready replica is at the cap it waits in the fleet's queue instead
(priority, then arrival order), dispatched the instant a replica frees a slot or a new one becomes ready.
With no replica ready it also waits in the fleet queue (bounded by `queue_max`, each request for at most
`queue_timeout_s`; beyond either it is rejected with the reason) and, if nothing is starting either, one
replica is launched at once (the "activator" of scale-from-zero systems). A scale-up cold-starts replicas (provision, image pull, weight
load, warm-up; billed from provisioning); a scale-down first cancels replicas still starting (the
youngest), then drains ready ones (the least loaded, newest first): they take no new requests, finish
what they hold and are released.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Generator, Sequence, ValuesView
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import simpy

from sim.policies.autoscale import Observation
from sim.policies.lifecycle import LifecycleConfig
from sim.policies.router import Router
from sim.run.clock import ARRIVAL, LIFECYCLE, At, call_at
from sim.run.engine.records import IN_FLIGHT, RequestLog
from sim.run.engine.replica import Replica, ReplicaListener
from sim.run.engine.sequence import Seq
from sim.run.fleet.latency import LatencyWatch
from sim.run.fleet.load_index import LeastLoaded
from sim.run.fleet.supply import Supply
from sim.states import STARTING, ReplicaState


class FleetQueue:
    """Requests waiting for any replica: priority class, then arrival, then index (the engine's order);
    removal (a timeout) is lazy."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, int], Seq]] = []
        self._gone: set[int] = set()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __contains__(self, seq: Seq) -> bool:
        return seq.idx not in self._gone and any(s is seq for _, s in self._heap)

    def append(self, seq: Seq) -> None:
        heapq.heappush(self._heap, (seq.key, seq))
        self._n += 1

    def popleft(self) -> Seq:
        while True:
            _, seq = heapq.heappop(self._heap)
            if seq.idx in self._gone:
                self._gone.discard(seq.idx)
                continue
            self._n -= 1
            return seq

    def remove(self, seq: Seq) -> None:
        self._gone.add(seq.idx)
        self._n -= 1


@dataclass(eq=False)
class ReplicaSlot:
    """One replica's life: when each stage began, and its engine once ready."""

    replica_id: int
    provision_at_s: float
    stages_s: tuple[float, float, float, float]  # provision, image pull, weight load, warm-up
    pool: str  # the pool it belongs to: online, batch (a dedicated batch pool), prefill or decode
    capacity: str = "on_demand"  # its capacity class (`sim.run.fleet.supply`): reserved, on_demand or spot
    flavor: int = 0  # its replica type: 0 the pool's own GPU, k its k-th fallback GPU type (`Pool.flavors`)
    state: ReplicaState = ReplicaState.PROVISIONING
    ready_at_s: float = math.nan
    drain_at_s: float = math.nan
    released_at_s: float = math.nan
    busy_at_drain_s: float = 0.0
    cancelled: bool = False
    interrupted: str = ""  # "failure" or "reclaim" when it was lost (`Pool.interrupt`)
    requeued: int = 0  # requests it held when lost, handed back to the pool
    tokens_lost: int = 0  # their KV, computed here and lost (to be recomputed)
    lost_s: float = 0.0  # seconds of work under way when lost
    woke: bool = False  # sleep mode: a sleeping replica woken (no provisioning, image pull or warm-up)
    slept: bool = False  # sleep mode: it fell asleep at its end (its last draining seconds: the weights offloaded)
    sleep_s: float = 0.0  # sleep mode: those seconds (its weights on the way out, its GPUs held)
    falling_asleep: bool = False
    engine: Replica | None = None
    process: simpy.Process | None = field(default=None, repr=False)

    @property
    def loading_at_s(self) -> float:
        """When weight loading began (after provisioning and the image pull)."""
        return self.provision_at_s + self.stages_s[0] + self.stages_s[1]


class Replicas:
    """Every replica of the run, of every pool, by id (ids are given out here, in launch order): the fleet-wide
    view the freeze and the timeline read."""

    def __init__(self) -> None:
        self.slots: list[ReplicaSlot] = []

    def add(
        self,
        provision_at_s: float,
        stages_s: tuple[float, float, float, float],
        pool: str,
        capacity: str = "on_demand",
        flavor: int = 0,
    ) -> ReplicaSlot:
        slot = ReplicaSlot(len(self.slots), provision_at_s, stages_s, pool, capacity, flavor)
        self.slots.append(slot)
        return slot


class Feeder(Protocol):
    """A lane that holds requests for the pool at the gateway (the batch lane): its queue is demand the pool's
    autoscaler sees."""

    @property
    def n_queued(self) -> int: ...

    def take_back(self, replica_id: int, seq: Seq) -> bool:
        """A lost replica hands `seq` back: True if it is this lane's to hold again."""
        ...

    def reject_waiting(self, reason: str) -> None:
        """The pool can never serve again: reject every request the lane holds."""
        ...


MakeEngine = Callable[[int, Sequence[ReplicaListener]], Replica]  # (replica id, its listeners) -> a ready engine


@dataclass
class Flavor:
    """A replica type a pool launches: its engine factory, weights (their load time) and capacity classes. A pool has
    its own (`Pool.flavors[0]`) and, with `fleet.capacity.fallback`, other GPU types tried in order after it."""

    make_engine: MakeEngine
    weight_bytes: float
    supply: Supply


class Pool:
    """Replicas of one GPU type, TP degree and engine behind a router, scaled by its autoscaler (see the module
    docstring). `listeners` (the batch lane, the KV-transfer link, the guard: registered before the run) are given
    to each replica it builds, after the pool's own."""

    def __init__(
        self,
        env: simpy.Environment,
        *,
        name: str,
        replicas: Replicas,
        make_engine: MakeEngine,
        inadmissible: dict[int, str],
        router: Router,
        lifecycle: LifecycleConfig,
        weight_bytes: float,
        log: RequestLog,
        rng: np.random.Generator,
        max_replicas: int,
        supply: Supply,
        queue_max: int | None = None,
        queue_timeout_s: float | None = None,
        max_outstanding: int | None = None,
        group: int = 1,
    ) -> None:
        self.env = env
        self.name = name
        # replicas launched and released together: an MoE model's DP ranks, which share its experts (a rank of a
        # group short of ranks would hold experts no other rank holds)
        self.group = group
        self.replicas = replicas
        self.inadmissible = inadmissible  # request index -> why no replica can ever serve it
        self.router = router
        self.lifecycle = lifecycle
        self.weight_bytes = weight_bytes
        self.log = log
        self.rng = rng
        self.max_replicas = max_replicas
        self.queue_max = queue_max
        self.queue_timeout_s = queue_timeout_s
        self.max_outstanding = max_outstanding  # per replica, the router's cap (None: none)
        self.supply = supply  # capacity classes, launch failures
        self.flavors = [Flavor(make_engine, weight_bytes, self.supply)]  # its own replica type, then fallbacks
        self.pending = 0  # launches waiting for capacity (every class out: `sim.run.fleet.supply`)
        self.latency_watch: LatencyWatch | None = None  # recent latency, for an autoscaler scaling on it
        self._retry_at: float | None = None  # when the waiting launches are next tried
        self.listeners: list[ReplicaListener] = []
        self.feeders: list[Feeder] = []  # lanes holding requests for this pool (registered at build)
        # requests held for this pool elsewhere, counted as waiting for it (a disaggregated fleet's prefilled requests
        # waiting for a decode replica: unseen, a decode pool scaled to zero by KPA cancelled each launch the link's
        # activator made, the run never resolving)
        self.held_elsewhere: list[Callable[[], int]] = []
        self._pump_due = False
        # this pool's slots not yet released, by id (in id order): a release is O(1), not a scan of a list (scaling a
        # pool of 100,000 replicas down was quadratic: minutes)
        self._live: dict[int, ReplicaSlot] = {}
        self._ready: list[ReplicaSlot] | None = None  # the ready slots, in id order (None: recompute)
        self._by_id: dict[int, ReplicaSlot] = {}
        self._index = LeastLoaded() if router.indexed else None
        self.queue = FleetQueue()
        self.on_launch: list[Callable[[ReplicaSlot], None]] = []  # told of every new slot (hazards: failures, reclaims)
        # told of a ready or draining replica lost (the KV-transfer link: the sequences it held for or sent to it)
        self.on_lost: list[Callable[[ReplicaSlot, Replica], None]] = []
        self.on_exhausted: list[Callable[[str], None]] = []  # told when no replica can ever be launched again (why)
        self.quota: int | None = None  # replicas the GPU quota (fleet.max_gpus) allows at once, draining ones included
        self._owed = 0  # replacements the quota held back
        # sleep mode: replicas asleep, by flavor (woken before any cold start), the pool's own from `initial_sleeping`
        self.sleeping: dict[int, int] = {0: lifecycle.sleep.initial_sleeping} if lifecycle.sleep is not None else {}
        self._falling: dict[int, int] = {}  # falling asleep (their weights on the way out), by flavor
        self._recalled = 0  # launches waiting for a replica falling asleep (the pool's own GPU type) to wake it
        self._busy_seen: dict[int, tuple[float, float]] = {}  # replica id -> (time, busy seconds) at last observation
        self.n_arrivals = 0

    # --- what the pool hears from its replicas --------------------------------------------------------
    def _own_listeners(self) -> list[ReplicaListener]:
        """The pool listens to its replicas' idleness (to release a drained one); its load index and, with a cap,
        its queue listen to their load."""
        own: list[ReplicaListener] = [_Drain(self)]
        if self._index is not None:
            own.append(self._index)
        if self.max_outstanding is not None:
            own.append(_CapWatch(self))
        return own

    def release_if_drained(self, replica: Replica) -> None:
        slot = self._by_id[replica.replica_id]
        if slot.state == ReplicaState.DRAINING and replica.settled and not slot.falling_asleep:
            self._retire(slot)

    def _retire(self, slot: ReplicaSlot) -> None:
        """A drained replica leaves: with sleep mode (`LifecycleConfig.sleep`), a scaled-down one with room among the
        sleepers falls asleep (its GPUs held while its weights go out, then freed); otherwise it is released."""
        sleep = self.lifecycle.sleep
        k = slot.flavor
        room = sleep is not None and (
            sleep.max_sleeping is None or self.sleeping.get(k, 0) + self._falling.get(k, 0) < sleep.max_sleeping
        )
        if sleep is None or slot.interrupted or not room:
            self._release(slot)
            return
        flavor = self.flavors[k]
        slot.falling_asleep = True
        self._falling[k] = self._falling.get(k, 0) + 1
        t = sleep.sleep_s(flavor.weight_bytes, flavor.supply.tp)
        slot.sleep_s = t
        if t > 0:
            call_at(self.env, t, LIFECYCLE, lambda _e: self._asleep(slot))
        else:
            self._asleep(slot)

    def _asleep(self, slot: ReplicaSlot) -> None:
        k = slot.flavor
        self._falling[k] -= 1
        if slot.state == ReplicaState.RELEASED:  # (lost while its weights went out: nothing sleeps)
            slot.sleep_s = 0.0
            orphaned = self._recalled - self._falling.get(0, 0) if k == 0 else 0
            if orphaned > 0:  # a launch that called it back finds none left to wake: it launches as any other
                self._recalled -= orphaned
                self.launch(orphaned)
            return
        slot.slept = True
        self.sleeping[k] = self.sleeping.get(k, 0) + 1
        self._release(slot)
        if k == 0 and self._recalled:  # called back while falling asleep: woken now, on the GPUs it just freed
            self._recalled -= 1
            self.launch(1)

    # --- views (no scan of released slots: a long day launches hundreds) ------------------------------
    def in_state(self, state: ReplicaState) -> list[ReplicaSlot]:
        return [s for s in self._live.values() if s.state == state]

    @property
    def ready(self) -> list[ReplicaSlot]:
        if self._ready is None:
            self._ready = self.in_state(ReplicaState.READY)
        return self._ready

    @property
    def live(self) -> ValuesView[ReplicaSlot]:
        """Slots not released (starting, ready or draining), in id order."""
        return self._live.values()

    @property
    def starting(self) -> list[ReplicaSlot]:
        return [s for s in self._live.values() if s.state in STARTING]

    def coming(self) -> int:
        """Replicas on their way: starting, or waiting for capacity to launch on."""
        return len(self.starting) + self.pending + self._recalled

    def _set_state(self, slot: ReplicaSlot, state: ReplicaState) -> None:
        if (slot.state == ReplicaState.READY) != (state == ReplicaState.READY):
            self._ready = None
            if self._index is not None:
                if state == ReplicaState.READY:
                    assert slot.engine is not None
                    self._index.add(slot.replica_id, slot.engine.n_outstanding)
                else:
                    self._index.remove(slot.replica_id)
        slot.state = state
        if state == ReplicaState.RELEASED:
            del self._live[slot.replica_id]

    # --- requests ------------------------------------------------------------------------------------
    def deliver(self, seq: Seq) -> None:
        self.n_arrivals += 1
        reason = self.inadmissible.get(seq.idx)
        if reason is not None:
            self.log.reject(seq.idx, reason)
            return
        if self._has_room():
            self._route(seq)
            return
        if self.queue_max is not None and len(self.queue) >= self.queue_max:
            why = "with no replica ready" if not self._any_ready() else "with every ready replica at max_outstanding_per_replica"
            self.log.reject(seq.idx, f"fleet queue full ({self.queue_max} requests) {why}")
            return
        self.log.status[seq.idx] = IN_FLIGHT  # in the fleet queue
        self.queue.append(seq)
        if self.queue_timeout_s is not None:
            self.env.process(self._expire(seq, self.queue_timeout_s))
        if not self._any_ready() and not self.coming() and self.held() - self._recallable() < self.max_replicas:
            self.launch(1)

    def _any_ready(self) -> bool:
        return bool(len(self._index) if self._index is not None else self.ready)

    def _has_room(self) -> bool:
        """Is there a ready replica the router may send a request to now?"""
        if not self._any_ready():
            return False
        cap = self.max_outstanding
        if cap is None:
            return True
        if self._index is not None:
            engine = self._by_id[self._index.least()].engine
            return engine is not None and engine.n_outstanding < cap
        return any(slot.engine is not None and slot.engine.n_outstanding < cap for slot in self.ready)

    def _route(self, seq: Seq) -> None:
        """To a ready replica with room (there is one): by the least-loaded index when the router has one, else
        by the router's choice over the ready replicas with room, in id order."""
        if self._index is not None:
            engine = self._by_id[self._index.least()].engine
            assert engine is not None
            engine.enqueue(seq)
            return
        cap = self.max_outstanding
        engines = [s.engine for s in self.ready if s.engine is not None and (cap is None or s.engine.n_outstanding < cap)]
        engines[self.router.choose(engines, seq, self.env.now)].enqueue(seq)

    def _expire(self, seq: Seq, timeout_s: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(timeout_s)
        if self.log.replica_id[seq.idx] < 0 and self.log.status[seq.idx] == IN_FLIGHT:  # still in the fleet queue
            self.queue.remove(seq)
            self.log.reject(seq.idx, f"waited {timeout_s:g} s in the fleet queue for a replica (queue_timeout_s)")

    def pump(self, _event: simpy.Event | None = None) -> None:
        """Dispatch waiting requests while a ready replica has room (the queue's order)."""
        self._pump_due = False
        while self.queue and self._has_room():
            self._route(self.queue.popleft())

    def pump_soon(self) -> None:
        """Dispatch at this instant, once, as an arrival would be (before the replicas plan)."""
        if self.queue and not self._pump_due:
            self._pump_due = True
            call_at(self.env, 0.0, ARRIVAL, self.pump)

    # --- lifecycle -----------------------------------------------------------------------------------
    def add_ready(self, n: int) -> None:
        """Replicas that exist before the trace starts (warm): ready at once, billed from now."""
        for _ in range(n):
            got = self._take(warm=True)
            if got is None:  # (every class at its cap)
                return
            slot = self._new_slot((0.0, 0.0, 0.0, 0.0), *got)
            self._become_ready(slot)

    def _take(self, *, warm: bool = False) -> tuple[str, int] | None:
        """The capacity class and replica type (flavor) a launch gets now: the pool's own GPU's classes first, then
        each fallback GPU type's; None when every one is out."""
        now = self.env.now
        for k, flavor in enumerate(self.flavors):
            klass = flavor.supply.take(now, warm=warm)
            if klass is not None:
                return klass, k
        return None

    def launch(self, n: int) -> None:
        """`n` cold starts, each on the capacity class the supply gives; one that finds none waits (`pending`). With
        sleep mode a launch wakes a sleeping replica instead; with none asleep but one falling asleep, it calls that one
        back: it is woken as soon as its weights are out (vLLM serves a wake-up after the sleep under way)."""
        sleep = self.lifecycle.sleep
        for _ in range(n):
            if sleep is not None and not self.sleeping.get(0, 0) and self._falling.get(0, 0) > self._recalled:
                self._recalled += 1
                continue
            got = self._take()
            if got is None:
                self.pending += 1
                continue
            k = got[1]
            flavor = self.flavors[k]
            if sleep is not None and self.sleeping.get(k, 0):  # sleep mode: wake a sleeping replica, no cold start
                self.sleeping[k] -= 1
                slot = self._new_slot((0.0, 0.0, sleep.wake_s(flavor.weight_bytes, flavor.supply.tp), 0.0), *got)
                slot.woke = True
            else:
                slot = self._new_slot(self.lifecycle.stages(flavor.weight_bytes, self.rng), *got)
            slot.process = self.env.process(self._cold_start(slot))
        if self.pending:
            if not self._live and all(f.supply.exhausted(self.env.now) for f in self.flavors):
                self._no_capacity()
                return
            self._schedule_retry()
            for f in self.flavors:  # (a platform's GPU budget: tried again when GPUs of its type are given back)
                if f.supply.budget is not None and f.supply.over_budget():
                    f.supply.budget.wait(self._retry, f.supply.priority)

    def _no_capacity(self) -> None:
        """No replica left and none can ever be launched: the waiting launches are dropped and the requests waiting in
        the pool's queue rejected (later ones are too, as they come)."""
        self.pending = 0
        why = f"no capacity to launch a replica on from {self.env.now:g} s (every capacity class out for good)"
        while self.queue:
            self.log.reject(self.queue.popleft().idx, why)
        for lane in self.feeders:
            lane.reject_waiting(why)
        for tell in self.on_exhausted:
            tell(why)

    def _schedule_retry(self) -> None:
        tries = [t for f in self.flavors if (t := f.supply.next_try(self.env.now)) is not None]
        at = min(tries) if tries else None
        if at is not None and (self._retry_at is None or at < self._retry_at):
            self._retry_at = at
            call_at(self.env, at - self.env.now, LIFECYCLE, lambda _e: self._retry())

    def _retry(self) -> None:
        """Try the waiting launches again (a back-off ended, a replica was released)."""
        if self._retry_at is not None and self._retry_at <= self.env.now:
            self._retry_at = None
        n, self.pending = self.pending, 0
        if n:
            self.launch(n)

    def _new_slot(self, stages: tuple[float, float, float, float], klass: str, flavor: int = 0) -> ReplicaSlot:
        slot = self.replicas.add(self.env.now, stages, self.name, klass, flavor)
        self._live[slot.replica_id] = slot
        self._by_id[slot.replica_id] = slot
        for tell in self.on_launch:
            tell(slot)
        return slot

    # --- loss: failures and reclaims (`sim.run.fleet.hazards`) -------------------------------------------
    def interrupt(self, slot: ReplicaSlot, reason: str) -> None:
        """`slot`'s replica is lost now: a starting one is cancelled; a ready or draining one stops (`Replica.stop`) and
        every request it held goes back to the pool (routed at once or queued, never rejected for it), to be
        recomputed. A replacement is launched (a cold start) while the pool is under its cap."""
        if slot.state == ReplicaState.RELEASED:
            return
        slot.interrupted = reason
        replace = slot.state != ReplicaState.DRAINING  # (a draining one was on its way out: no replacement)
        now = self.env.now
        if slot.state in STARTING:
            slot.cancelled = True
            assert slot.process is not None
            slot.process.interrupt()
            self._release(slot)
        else:
            engine = slot.engine
            assert engine is not None
            if slot.state == ReplicaState.READY:
                slot.busy_at_drain_s = engine.busy_s_at(now)
            self._release(slot)
            seqs, slot.lost_s, slot.tokens_lost = engine.stop()
            slot.requeued = len(seqs)
            if replace:
                self._replace()  # (before the requests: with nothing ready or starting, they would launch one too)
            for seq in seqs:  # (a lane's own requests go back to it: a batch request to the batch lane)
                if not any(f.take_back(slot.replica_id, seq) for f in self.feeders):
                    self.redeliver(seq)
            for tell in self.on_lost:
                tell(slot, engine)
            return
        if replace:
            self._replace()

    def notice(self, slot: ReplicaSlot, notice_s: float) -> None:
        """A reclaim notice: the replica takes no new requests (it drains: what it holds may finish) and a replacement
        is launched; at the notice's end what is left is lost (`interrupt`)."""
        if slot.state == ReplicaState.RELEASED:
            return
        if slot.state in STARTING:
            self.interrupt(slot, "reclaim")  # nothing to let finish
            return
        slot.interrupted = "reclaim"
        if slot.state == ReplicaState.READY:
            engine = slot.engine
            assert engine is not None
            now = self.env.now
            self._set_state(slot, ReplicaState.DRAINING)
            slot.drain_at_s = now
            slot.busy_at_drain_s = engine.busy_s_at(now)
            if engine.n_outstanding == 0 and engine.settled:
                self._release(slot)
            self._replace()
        call_at(self.env, notice_s, LIFECYCLE, lambda _e: self.interrupt(slot, "reclaim"))

    def _replace(self) -> None:
        """A replacement for a lost replica, while the starting and ready ones are under the cap (a replica draining out
        its notice does not hold its place, as a Deployment replaces a pod evicted from a reclaimed node at once) and
        the GPUs held are under the quota (`fleet.max_gpus`); over the quota it is owed, launched when GPUs free."""
        if self.coming() + len(self.ready) >= self.max_replicas:
            return
        if self.quota is not None and self.held() >= self.quota:
            self._owed += 1
            return
        self.launch(1)

    def redeliver(self, seq: Seq) -> None:
        """A request handed back by a lost replica: to a ready replica with room, else the pool's queue (whatever its
        bound: it was admitted once); with nothing ready or starting, a replica is launched."""
        if self._has_room():
            self._route(seq)
            return
        self.queue.append(seq)
        if not self._any_ready() and not self.coming() and self.held() - self._recallable() < self.max_replicas:
            self.launch(1)

    def _cold_start(self, slot: ReplicaSlot) -> Generator[simpy.Event, Any, None]:
        provision, pull, load, warmup = slot.stages_s
        try:
            yield At(self.env, provision + pull, LIFECYCLE)
            self._set_state(slot, ReplicaState.LOADING)
            yield At(self.env, load + warmup, LIFECYCLE)
        except simpy.Interrupt:
            return
        self._become_ready(slot)

    def _become_ready(self, slot: ReplicaSlot) -> None:
        slot.ready_at_s = self.env.now
        engine = self.flavors[slot.flavor].make_engine(slot.replica_id, [*self._own_listeners(), *self.listeners])
        slot.engine = engine
        self._set_state(slot, ReplicaState.READY)
        self._busy_seen[slot.replica_id] = (self.env.now, 0.0)
        self.pump()
        engine.became_ready()

    def _release(self, slot: ReplicaSlot) -> None:
        self._set_state(slot, ReplicaState.RELEASED)
        if slot.engine is not None:
            slot.engine.released()
        slot.released_at_s = self.env.now
        self.flavors[slot.flavor].supply.give_back(slot.capacity)
        if self.pending:  # (its class may have room again)
            self._retry()
        if self._owed and (self.quota is None or self.held() < self.quota):
            self._owed -= 1
            if self.coming() + len(self.ready) < self.max_replicas:
                self.launch(1)

    # --- scaling -------------------------------------------------------------------------------------
    def _recallable(self) -> int:
        """Replicas falling asleep that a launch would call back (none asleep to wake instead)."""
        if self.lifecycle.sleep is None or self.sleeping.get(0, 0):
            return 0
        return self._falling.get(0, 0) - self._recalled

    def preemption_candidates(self, flavor: int) -> list[tuple[bool, int, ReplicaSlot]]:
        """Its replicas of replica type `flavor` holding GPUs, as a platform's budget may preempt them: (started, -id,
        slot), so that starting ones sort before ready or draining ones, and the newest first."""
        return [(s.state not in STARTING, -s.replica_id, s) for s in self._live.values() if s.flavor == flavor]

    def held(self) -> int:
        """Replicas holding GPUs: starting, ready or draining."""
        return len(self._live)

    def scale_to(self, desired: int) -> None:
        if self.group > 1:  # whole DP groups (the cap is a whole number of them: `sim.run.pools.check_whole_groups`)
            desired = -(-desired // self.group) * self.group
        desired = min(desired, self.max_replicas)
        starting, ready = self.starting, self.ready
        current = len(starting) + len(ready) + self.pending + self._recalled
        if desired > current:
            # the GPU cap counts draining replicas too (not one falling asleep that a launch would call back)
            room = self.max_replicas - self.held() - self.pending + self._recallable()
            self.launch(min(desired - current, room))  # (none at or over the cap)
            return
        excess = current - desired
        self._owed = 0  # (the autoscaler's count supersedes replacements the quota held back)
        cut = min(excess, self._recalled)  # wake-ups waiting for a replica falling asleep go first,
        self._recalled -= cut
        excess -= cut
        cut = min(excess, self.pending)  # then launches still waiting for capacity
        self.pending -= cut
        excess -= cut
        for slot in sorted(starting, key=lambda s: s.provision_at_s, reverse=True)[:excess]:
            slot.cancelled = True
            assert slot.process is not None
            slot.process.interrupt()
            self._release(slot)
            excess -= 1
        if excess <= 0:
            return
        now = self.env.now

        def least_busy_newest(s: ReplicaSlot) -> tuple[int, int]:
            assert s.engine is not None  # (ready)
            return s.engine.n_outstanding, -s.replica_id

        for slot in self._whole_groups(ready, excess) if self.group > 1 else sorted(ready, key=least_busy_newest)[:excess]:
            engine = slot.engine
            assert engine is not None
            self._set_state(slot, ReplicaState.DRAINING)
            slot.drain_at_s = now
            slot.busy_at_drain_s = engine.busy_s_at(now)
            if engine.n_outstanding == 0 and engine.settled:
                self._retire(slot)

    def _whole_groups(self, ready: list[ReplicaSlot], excess: int) -> list[ReplicaSlot]:
        """Ready DP ranks to drain for `excess` fewer, a whole group at a time (every rank of it): groups short of ranks
        first (a rank lost and not yet replaced), then the least busy, the newest; a group larger than what is left to
        cut is kept."""
        groups: dict[int, list[ReplicaSlot]] = {}
        for slot in ready:
            assert slot.engine is not None
            groups.setdefault(id(getattr(slot.engine, "lockstep", slot)), []).append(slot)

        def order(members: list[ReplicaSlot]) -> tuple[bool, int, int]:
            outstanding = sum(s.engine.n_outstanding for s in members if s.engine is not None)
            return len(members) >= self.group, outstanding, -max(s.replica_id for s in members)

        out: list[ReplicaSlot] = []
        for members in sorted(groups.values(), key=order):
            if len(out) + len(members) <= excess:
                out += members
        return out

    def observe(self) -> Observation:
        now = self.env.now
        ready = self.ready
        busy, kv = [], []
        for slot in ready:
            engine = slot.engine
            assert engine is not None
            t0, b0 = self._busy_seen[slot.replica_id]  # (set when it became ready)
            b1 = engine.busy_s_at(now)
            if now > t0:
                busy.append((b1 - b0) / (now - t0))
            self._busy_seen[slot.replica_id] = (now, b1)
            kv.append(engine.kv_use_at(now))
        engines = [
            s.engine
            for s in self._live.values()
            if s.state in (ReplicaState.READY, ReplicaState.DRAINING) and s.engine is not None
        ]
        held_back = len(self.queue) + sum(f.n_queued for f in self.feeders) + sum(n() for n in self.held_elsewhere)
        in_flight = held_back + sum(e.n_outstanding for e in engines)
        waiting = held_back + sum(len(e.waiting) for e in engines)
        return Observation(
            now=now,
            n_ready=len(ready),
            n_starting=self.coming(),
            n_draining=len(self.in_state(ReplicaState.DRAINING)),
            in_flight=in_flight,
            waiting=waiting,
            busy_fraction=float(np.mean(busy)) if busy else None,
            kv_use=float(np.mean(kv)) if kv else None,
            latency=None if self.latency_watch is None else self.latency_watch.quantiles(now),
            arrivals=self.n_arrivals,
            group=self.group,
        )


class _Drain(ReplicaListener):
    """A draining replica that runs out of work (and has no KV transfer in flight) is released."""

    __slots__ = ("pool",)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def idle(self, replica: Replica) -> None:
        self.pool.release_if_drained(replica)


class _CapWatch(ReplicaListener):
    """With `max_outstanding_per_replica`: when a capped replica frees a slot with requests waiting in the pool's
    queue, dispatch them at this instant (as an arrival would be: before the replicas plan)."""

    __slots__ = ("cap", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.cap = pool.max_outstanding

    def load_changed(self, replica: Replica, n_outstanding: int) -> None:
        if self.cap is not None and n_outstanding < self.cap:
            self.pool.pump_soon()
