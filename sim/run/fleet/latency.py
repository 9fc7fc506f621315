"""The fleet's recent latency, for an autoscaler that scales on a latency quantile (`hpa` with `p90_ttft_s`, ...).

A `LatencyWatch` listens to the pool's replicas and keeps the interactive requests completed in the last
`window_s`, in completion order (as a Prometheus `rate(...[1m])` window over vLLM's latency histograms keeps the last
minute's observations; here each request counts when it completes, its TTFT with it). `quantiles(now)` gives the
p90/p99 TTFT and TPOT of that window (numpy's linear percentile), or None with nothing completed in it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sim.run.engine.records import COMPLETED, RequestLog
from sim.run.engine.replica import Replica, ReplicaListener
from sim.run.engine.sequence import Seq


class LatencyWatch(ReplicaListener):
    __slots__ = ("_done", "log", "window_s")

    def __init__(self, log: RequestLog, window_s: float) -> None:
        self.log = log
        self.window_s = window_s
        self._done: deque[tuple[float, int]] = deque()  # (completed at, request index), in completion order

    def finished(self, replica: Replica, seq: Seq) -> None:
        if not seq.batch and self.log.status[seq.idx] == COMPLETED:
            self._done.append((float(self.log.completed_at_s[seq.idx]), seq.idx))

    def quantiles(self, now: float) -> dict[str, float] | None:
        done = self._done
        while done and done[0][0] <= now - self.window_s:
            done.popleft()
        if not done:
            return None
        log = self.log
        idx = np.fromiter((i for _, i in done), dtype=np.int64, count=len(done))
        first = log.first_token_at_s[idx]
        ttft = first - log.arrival_at_s[idx]
        out = {"p90_ttft_s": float(np.percentile(ttft, 90)), "p99_ttft_s": float(np.percentile(ttft, 99))}
        n_out = log.output_tokens[idx]
        multi = n_out > 1
        if multi.any():
            tpot = (log.completed_at_s[idx][multi] - first[multi]) / (n_out[multi] - 1)
            out |= {"p90_tpot_s": float(np.percentile(tpot, 90)), "p99_tpot_s": float(np.percentile(tpot, 99))}
        return out
