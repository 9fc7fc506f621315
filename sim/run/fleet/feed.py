"""The interactive lane: the trace's requests delivered at their arrival times (a callback chain on the SimPy
kernel, not a process), into the entry pool; batch-job requests into the batch lane."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.events import URGENT

from sim.run.clock import ARRIVAL, call_at
from sim.run.engine.records import RequestLog
from sim.run.engine.sequence import Seq, hash_list


class Feed:
    """Delivers the trace's requests at their arrival times, all requests of one instant together: one
    `ARRIVAL` event per distinct instant, each scheduling the next (a callback, not a process). The
    columns are turned into Python numbers a window at a time (a whole 1 M-request trace as lists would
    hold ~100 MB). Batch-job requests go to the batch lane (`deliver_batch(index)`) when there is one. `delay_s`: each
    instant's requests are delivered that long after it (`roofline.frontend_latency_s`: the serving stack's path
    before the engine), their arrival unchanged."""

    WINDOW = 4096

    def __init__(
        self,
        env: simpy.Environment,
        trace: pd.DataFrame,
        log: RequestLog,
        deliver: Callable[[Seq], None],
        deliver_batch: Callable[[int], None] | None = None,
        *,
        hashes: bool = False,
        adapters: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self.env, self.deliver, self.deliver_batch = env, deliver, deliver_batch
        self.delay_s = delay_s
        self.hashes = trace["prefix_hash_ids"].to_numpy() if hashes else None  # prefix caching: each request's ids
        self.adapters = trace["adapter"].to_numpy(dtype=np.int64) if adapters else None  # LoRA: each request's adapter
        self.decorated = self.hashes is not None or self.adapters is not None
        t = log.arrival_at_s
        self.n = len(t)
        priority = trace["priority"].to_numpy(dtype=np.int64) if "priority" in trace.columns else None  # (None: all 0)
        batch = trace["klass"].to_numpy() == "batch" if deliver_batch is not None and "klass" in trace.columns else None
        self.columns: tuple[np.ndarray | None, ...] = (t, log.prompt_tokens, log.output_tokens, priority, batch)
        self.window: tuple[list[Any], ...] = ([], [], [], [], [])
        self.window_lo = 0
        self.delivered = log.delivered if log.store is not None else None  # a stored run's hand-back (`sim.run.store`)
        self.i = 0  # the next request to deliver
        if self.n:  # started as a process would be: after what is already due at the start
            call_at(env, 0.0, URGENT, self._schedule)

    def _column(self, i: int) -> int:
        """Make request i part of the window; its offset in it."""
        if i >= self.window_lo + len(self.window[0]):
            if self.delivered is not None:
                self.delivered(i)
            self.window_lo = i
            rows = slice(i, i + self.WINDOW)
            times = self.columns[0][rows].tolist()  # type: ignore[index]
            self.window = (times, *([0] * len(times) if c is None else c[rows].tolist() for c in self.columns[1:]))
        return i - self.window_lo

    def _schedule(self, _event: simpy.Event | None = None) -> None:
        j = self._column(self.i)  # (before reading the window: it may move)
        self._wake_at(self.window[0][j] + self.delay_s)

    def _wake_at(self, at: float) -> None:
        """Deliver the next instant's requests at `at` (now, if it is now)."""
        env = self.env
        now = env.now
        delay = at - now
        while now + delay < at:  # float: make the clock land on (not just below) the arrival
            delay = math.nextafter(delay, math.inf)
        if delay > 0:
            call_at(env, delay, ARRIVAL, self._arrive)
        else:
            self._arrive(None)

    def _arrive(self, _event: simpy.Event | None) -> None:
        i, n, deliver, deliver_batch = self.i, self.n, self.deliver, self.deliver_batch
        j = self._column(i)
        times, prompt, output, priority, batch = self.window
        m = len(times)
        at = times[j]
        while True:
            if batch[j]:
                assert deliver_batch is not None
                deliver_batch(i)
            elif not self.decorated:
                deliver(Seq(i, at, prompt[j], output[j], priority[j]))
            else:
                seq = Seq(i, at, prompt[j], output[j], priority[j])
                if self.hashes is not None:
                    seq.hashes = hash_list(self.hashes[i])
                if self.adapters is not None:
                    seq.adapter = int(self.adapters[i])
                deliver(seq)
            i += 1
            j += 1
            if i == n:
                break
            if j == m:
                j = self._column(i)
                times, prompt, output, priority, batch = self.window
                m = len(times)
            if times[j] != at:
                break
        self.i = i
        if i < n:
            self._wake_at(times[j] + self.delay_s)
