"""The order of simultaneous events: a contract, pinned by exact-time tests (tests/test_event_order.py).

SimPy processes events by (time, priority, insertion order). fleetsim gives each kind of event a
priority, so that whatever was scheduled first, things that happen at the same instant are seen in
this order:

1. `LIFECYCLE` (-2): a replica's cold-start stage ends; a replica that becomes ready at t takes the
   requests that arrive at t and is counted by an autoscaler tick at t.
2. `ARRIVAL` (-1): requests arriving at t are routed (or queued) before any replica plans its next step
   at t: a step that ends at t is followed by a batch that already sees them, as in a real engine whose
   scheduler runs after the step's outputs are processed.
3. SimPy's own URGENT (0) and NORMAL (1): process starts, interrupts, engine step ends, queue timeouts.
4. `OBSERVE` (2): the autoscaler's tick observes the fleet after everything else at t.
5. `SAMPLE` (3): the timeline sampler records t last, after the autoscaler's decision at t.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from mypy_extensions import mypyc_attr
from simpy.core import StopSimulation
from simpy.events import EventPriority

LIFECYCLE = EventPriority(-2)
ARRIVAL = EventPriority(-1)
OBSERVE = EventPriority(2)
SAMPLE = EventPriority(3)


@mypyc_attr(native_class=False)  # (a SimPy event: SimPy sets its callbacks to None once processed)
class At(simpy.Event):
    """A timeout of `delay` seconds processed with `priority` among the events of its instant."""

    def __init__(self, env: simpy.Environment, delay: float, priority: EventPriority, value: Any = None) -> None:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        # Event.__init__ inlined, as simpy's own Timeout does (this runs once per arrival and per tick)
        self.env = env
        self.callbacks: list[Any] = []
        self._value = value
        self._ok = True
        env.schedule(self, priority, delay)


def call_at(
    env: simpy.Environment, delay: float, priority: EventPriority, callback: Callable[[simpy.Event], None]
) -> simpy.Event:
    """Schedule `callback(event)` `delay` seconds from now, processed with `priority` among the events of its
    instant: what `At` plus a callback does, with SimPy's own event initialization and scheduling inlined
    (the engine calls it for every step)."""
    if delay < 0:
        raise ValueError(f"negative delay {delay}")
    event = simpy.Event.__new__(simpy.Event)
    event.env = env
    event.callbacks = [callback]
    event._value = None
    event._ok = True
    heappush(env._queue, (env._now + delay, priority, next(env._eid), event))  # Environment.schedule
    return event


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that can tell how many events it processed, at no cost per event: every event
    scheduled so far (SimPy numbers them from 0) was processed or is still queued."""

    def run_until(self, until: simpy.Event) -> None:
        """`run(until=until)`, with SimPy's `step` inlined in the loop (one Python call less per event; the
        same order, the same failure and stop semantics)."""
        waiting: list[Any] | None = until.callbacks  # (None once processed, whatever SimPy's annotation says)
        if waiting is None:  # already processed
            return
        waiting.append(StopSimulation.callback)
        queue: list[Any] = self._queue  # (its events untyped: SimPy types `callbacks` a list; a processed event's is None)
        try:
            while queue:
                self._now, _, _, event = heappop(queue)
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):  # a failed event crashes the run, as in SimPy
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation:
            return
        raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')

    def events_processed(self) -> int:
        scheduled = next(self._eid)  # the next event's number: how many were scheduled (skipping one is harmless)
        return scheduled - len(self._queue)
