"""Autoscaling: policies named after the systems users run (pure `decide(obs) -> desired replicas`,
unit-testable without simpy; the control loop that applies them every `interval_s` is
`sim.run.fleet.control`).

- `fixed`: a constant count.
- `hpa` (Kubernetes HPA): desired = ceil(current x metric / target), the metric averaged over ready
  replicas with those still starting counted as 0 (the HPA's rule for not-ready pods), skipped within
  `tolerance`; scale-down
  takes the highest recommendation of the last `scale_down_stabilization_s`; scale-up is limited per
  period to max(`scale_up_percent` of current, `scale_up_pods`). Defaults are kube-controller-manager's:
  15 s sync, 0.1 tolerance, 300 s stabilization, 100% / 4 pods. Metrics: `busy_fraction` (of the last
  period), `outstanding_per_replica`, `kv_use` (averaged per replica); or a latency quantile of the fleet —
  `p90_ttft_s`, `p99_ttft_s`, `p90_tpot_s`, `p99_tpot_s` over the requests completed in the last `latency_window_s`
  (an SLO-driven HPA, as a KEDA Prometheus trigger on `histogram_quantile(0.9, rate(vllm:time_to_first_token_seconds_
  bucket[1m]))` with `metricType: Value` runs it: desired = ceil(current x quantile / target), the target the SLO).
- `kpa` (Knative): observed concurrency (requests in flight, queued ones included) averaged over a 60 s
  stable window and a 6 s panic window, every 2 s tick; panic when the panic-window demand reaches 200%
  of the current scale (then no scale-down); scale to zero only after `scale_to_zero_grace_s` of no
  traffic. Default target: Knative's `container-concurrency-target-default` of 100.
- `queue`: one more replica per `target_waiting` requests waiting to be scheduled beyond what the ready
  replicas hold; one fewer (a DP group's ranks fewer, where the fleet scales in whole groups) after
  `scale_down_delay_s` with nothing waiting and the fleet's busy fraction below `scale_down_busy`.
- `scheduled`: a time-of-day table of replica counts (period 1 day by default).
- `predictive` (NVIDIA Dynamo's SLA planner, its load-based form): every interval, predict the arrival rate
  `lead_s` ahead (the fleet's expected cold start by default: capacity ordered now is ready then) — `constant` (the
  last interval's rate), `moving_average` (over `window_s`), or `seasonal` (the rate one `season_s` earlier at the
  instant predicted, from the run's own history; the moving average until a season has passed, and never below
  it) — and provision ceil(rate / (what one replica serves x `target_utilization`)); one replica's rate is given
  (`requests_per_replica_s`) or measured (its saturated rate on the trace's length mix). Scale-down holds the
  highest recommendation of the last `scale_down_stabilization_s`.
All clamp to [min_replicas, max_replicas]; min_replicas 0 allows scale to zero (a request then waits
for a cold start).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field, model_validator

from sim.errors import FleetsimError
from sim.spec import MAX_REPLICAS, MIN_INTERVAL_S, Frozen, IntervalS

# The smallest target a policy divides a metric by (a busy fraction, requests, seconds, requests/s): below it the
# ratio overflows to inf (a millionth of anything is already far below any real target).
MIN_TARGET = 1e-6


@dataclass(frozen=True, slots=True)
class Observation:
    now: float
    n_ready: int
    n_starting: int
    n_draining: int
    in_flight: int  # requests queued in the fleet (or its batch lane) or outstanding on ready/draining replicas
    waiting: int  # of those, not yet scheduled on a replica (fleet queue, batch lane, replicas' waiting queues)
    busy_fraction: float | None  # mean over ready replicas, over the last control interval
    kv_use: float | None  # mean KV-cache use of ready replicas
    # latency quantiles (s) of the requests completed in the last `latency_window_s` (measured only for an autoscaler
    # that scales on one; None otherwise, or with none completed)
    latency: dict[str, float] | None = None
    arrivals: int = 0  # requests delivered to the pool so far (its arrival rate, for a predictive policy)
    group: int = 1  # replicas one scaling step moves (a pool of DP ranks scales in whole groups: `Pool.scale_to`)

    @property
    def current(self) -> int:
        return self.n_ready + self.n_starting


class _Common(Frozen):
    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    initial_replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)  # default: min_replicas

    @model_validator(mode="after")
    def _bounds(self) -> _Common:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas must be <= max_replicas (got {self.min_replicas} > {self.max_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas must be within [min_replicas, max_replicas] (got {self.initial_replicas})")
        return self

    @property
    def start_replicas(self) -> int:
        return self.initial_replicas if self.initial_replicas is not None else self.min_replicas

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


class FixedConfig(Frozen):
    policy: Literal["fixed"] = "fixed"
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    interval_s: IntervalS = 60.0

    @property
    def start_replicas(self) -> int:
        return self.replicas

    @property
    def max_replicas(self) -> int:
        return self.replicas


LATENCY_METRICS = ("p90_ttft_s", "p99_ttft_s", "p90_tpot_s", "p99_tpot_s")


class HpaConfig(_Common):
    policy: Literal["hpa"] = "hpa"
    metric: Literal[
        "busy_fraction", "outstanding_per_replica", "kv_use", "p90_ttft_s", "p99_ttft_s", "p90_tpot_s", "p99_tpot_s"
    ] = "busy_fraction"
    target: float = Field(default=0.7, ge=MIN_TARGET)
    latency_window_s: float = Field(default=60.0, gt=0)  # latency metrics: the window of completed requests
    tolerance: float = Field(default=0.1, ge=0)
    interval_s: IntervalS = 15.0
    scale_down_stabilization_s: float = Field(default=300.0, ge=0)
    scale_up_percent: float = Field(default=100.0, gt=0, le=100.0 * MAX_REPLICAS)
    scale_up_pods: int = Field(default=4, ge=1, le=MAX_REPLICAS)


class KpaConfig(_Common):
    policy: Literal["kpa"] = "kpa"
    target_concurrency: float = Field(default=100.0, ge=MIN_TARGET)
    stable_window_s: IntervalS = 60.0
    panic_window_percentage: float = Field(default=10.0, gt=0, le=100)
    panic_threshold_percentage: float = Field(default=200.0, gt=100)
    interval_s: IntervalS = 2.0  # Knative's tick-interval
    scale_to_zero_grace_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _panic_window(self) -> KpaConfig:
        # a window shorter than the clock can tell from 0 holds no sample, not even the tick's own
        if self.stable_window_s * self.panic_window_percentage / 100 < MIN_INTERVAL_S:
            raise ValueError(
                f"the panic window (stable_window_s x panic_window_percentage / 100) must be at least {MIN_INTERVAL_S:g} s "
                f"(got {self.stable_window_s:g} x {self.panic_window_percentage:g} / 100)"
            )
        return self


class QueueConfig(_Common):
    policy: Literal["queue"] = "queue"
    target_waiting: float = Field(default=4.0, ge=MIN_TARGET)
    interval_s: IntervalS = 15.0
    scale_down_delay_s: float = Field(default=300.0, ge=0)
    scale_down_busy: float = Field(default=0.5, gt=0, le=1)


class ScheduleEntry(Frozen):
    at_s: float = Field(ge=0)
    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class ScheduledConfig(_Common):
    """A time-of-day table. Its counts are what it runs: `min_replicas`/`max_replicas` not given are the table's
    lowest and highest (the common default, 1 and 1, clamped a table of 6 to one replica without a word); given,
    they must hold every entry, and each entry's `at_s` must fall within the period (it wrapped silently)."""

    policy: Literal["scheduled"] = "scheduled"
    table: list[ScheduleEntry] = Field(min_length=1)
    period_s: float = Field(default=86_400.0, gt=0)
    interval_s: IntervalS = 60.0

    @model_validator(mode="before")
    @classmethod
    def _bounds_from_table(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("table"), list):
            given = [e.get("replicas") if isinstance(e, dict) else getattr(e, "replicas", None) for e in data["table"]]
            counts: list[int] = [c for c in given if isinstance(c, int) and not isinstance(c, bool)]
            if counts and len(counts) == len(given):
                data = dict(data)
                data.setdefault("max_replicas", max(1, *counts))
                top = data["max_replicas"]
                data.setdefault("min_replicas", min(*counts, top) if isinstance(top, int) else min(counts))
        return data

    @model_validator(mode="after")
    def _table_within(self) -> ScheduledConfig:
        for i, e in enumerate(self.table):
            if not self.min_replicas <= e.replicas <= self.max_replicas:
                raise ValueError(
                    f"table[{i}].replicas must be within [min_replicas, max_replicas] = [{self.min_replicas}, "
                    f"{self.max_replicas}] (got {e.replicas}): the schedule would be clamped without a word"
                )
            if e.at_s >= self.period_s:
                raise ValueError(f"table[{i}].at_s must be below period_s ({self.period_s:g}) (got {e.at_s:g})")
        return self


class PredictiveConfig(_Common):
    policy: Literal["predictive"] = "predictive"
    predictor: Literal["constant", "moving_average", "seasonal"] = "moving_average"
    window_s: float = Field(default=300.0, gt=0)
    season_s: float = Field(default=86_400.0, gt=0)
    lead_s: float | None = Field(default=None, ge=0)  # None: the fleet's expected cold start
    requests_per_replica_s: float | None = Field(default=None, ge=MIN_TARGET)  # None: one replica's measured saturated rate
    target_utilization: float = Field(default=0.8, gt=0, le=1)
    interval_s: IntervalS = 60.0
    scale_down_stabilization_s: float = Field(default=300.0, ge=0)


def _fixed_by_default(value: Any) -> Any:
    """A block with no policy but a fixed fleet's keys is the default's kind, fixed (`--set fleet.autoscaler.replicas=3`
    on a scenario that has no autoscaler block); any other block without a policy still needs one."""
    if isinstance(value, dict) and "policy" not in value and value and set(value) <= {"replicas", "interval_s"}:
        return {"policy": "fixed", **value}
    return value


AutoscalerConfig = Annotated[
    FixedConfig | HpaConfig | KpaConfig | QueueConfig | ScheduledConfig | PredictiveConfig,
    Field(discriminator="policy"),
    BeforeValidator(_fixed_by_default),
]


class Policy(Protocol):
    def decide(self, obs: Observation) -> int: ...


class Fixed:
    def __init__(self, cfg: FixedConfig) -> None:
        self.cfg = cfg

    def decide(self, obs: Observation) -> int:
        return self.cfg.replicas


class Hpa:
    def __init__(self, cfg: HpaConfig) -> None:
        self.cfg = cfg
        # the deployment starts at its initial size, which counts as a recommendation made at t = 0
        self._recommendations: deque[tuple[float, int]] = deque([(0.0, cfg.start_replicas)])

    def _metric(self, obs: Observation) -> float | None:
        """The per-replica average, counting replicas still starting as 0 (as the HPA does for
        not-ready pods), so that capacity on its way damps further scale-up."""
        if self.cfg.metric in LATENCY_METRICS:  # a fleet-wide value (KEDA's metricType Value): not per replica
            return None if obs.latency is None else obs.latency.get(self.cfg.metric)
        if self.cfg.metric == "busy_fraction":
            per_ready = obs.busy_fraction
        elif self.cfg.metric == "kv_use":
            per_ready = obs.kv_use
        else:
            per_ready = obs.in_flight / obs.n_ready if obs.n_ready else None
        return None if per_ready is None else per_ready * obs.n_ready / obs.current

    def decide(self, obs: Observation) -> int:
        cfg, current = self.cfg, obs.current
        value = self._metric(obs) if obs.n_ready else None
        if value is None:
            rec = current if current else (1 if obs.in_flight else 0)
        else:
            ratio = value / cfg.target
            rec = current if abs(ratio - 1) <= cfg.tolerance else math.ceil(current * ratio)
        rec = cfg.clamp(rec)
        limit = current + max(math.ceil(current * cfg.scale_up_percent / 100), cfg.scale_up_pods)
        rec = min(rec, limit)
        self._recommendations.append((obs.now, rec))
        while self._recommendations and self._recommendations[0][0] < obs.now - cfg.scale_down_stabilization_s:
            self._recommendations.popleft()
        if rec < current:  # scale down only as far as the highest recent recommendation
            rec = min(current, max(r for _, r in self._recommendations))
        return cfg.clamp(rec)


class Kpa:
    def __init__(self, cfg: KpaConfig) -> None:
        self.cfg = cfg
        self._samples: deque[tuple[float, int]] = deque()
        self._panic_until = -math.inf
        self._last_traffic = 0.0
        self._desired = cfg.start_replicas

    def decide(self, obs: Observation) -> int:
        cfg = self.cfg
        self._samples.append((obs.now, obs.in_flight))
        while self._samples and self._samples[0][0] <= obs.now - cfg.stable_window_s:
            self._samples.popleft()
        panic_window = cfg.stable_window_s * cfg.panic_window_percentage / 100
        stable = sum(c for _, c in self._samples) / len(self._samples)
        recent = [c for t, c in self._samples if t > obs.now - panic_window]
        panic = sum(recent) / len(recent)
        want_stable = math.ceil(stable / cfg.target_concurrency)
        want_panic = math.ceil(panic / cfg.target_concurrency)
        current = max(obs.current, 1)
        if want_panic >= current * cfg.panic_threshold_percentage / 100 and want_panic > obs.current:
            self._panic_until = obs.now + cfg.stable_window_s
        if obs.in_flight:
            self._last_traffic = obs.now
        # while panicking, no scale-down
        desired = max(want_panic, self._desired) if obs.now < self._panic_until else want_stable
        if desired == 0 and obs.current > 0 and obs.now - self._last_traffic < cfg.scale_to_zero_grace_s:
            desired = 1  # the last replica lingers for the grace period
        self._desired = cfg.clamp(desired)
        return self._desired


class Queue:
    def __init__(self, cfg: QueueConfig) -> None:
        self.cfg = cfg
        self._calm_since: float | None = None

    def decide(self, obs: Observation) -> int:
        cfg, current = self.cfg, obs.current
        excess = obs.waiting - cfg.target_waiting * obs.n_ready
        if obs.waiting and (excess > 0 or current == 0):
            self._calm_since = None
            # enough ready replicas to hold the excess; replicas already starting count towards it
            needed = obs.n_ready + max(1, math.ceil(excess / cfg.target_waiting))
            return cfg.clamp(max(current, needed))
        calm = obs.waiting == 0 and (obs.busy_fraction is None or obs.busy_fraction < cfg.scale_down_busy)
        if not calm:
            self._calm_since = None
            return cfg.clamp(current)
        if self._calm_since is None:
            self._calm_since = obs.now
        if obs.now - self._calm_since >= cfg.scale_down_delay_s:
            self._calm_since = obs.now
            return cfg.clamp(current - obs.group)  # (one step: a rank fewer would round back up to a whole group)
        return cfg.clamp(current)


class Scheduled:
    def __init__(self, cfg: ScheduledConfig) -> None:
        self.cfg = cfg
        self._table = sorted((e.at_s % cfg.period_s, e.replicas) for e in cfg.table)

    def decide(self, obs: Observation) -> int:
        t = obs.now % self.cfg.period_s
        count = self._table[-1][1]  # before the first entry of the day: the last one of the day before
        for at, n in self._table:
            if at <= t:
                count = n
        return self.cfg.clamp(count)


class Predictive:
    """See the module docstring. `lead_s` and `per_replica` (requests/s one replica serves saturated) resolved."""

    def __init__(self, cfg: PredictiveConfig, *, lead_s: float, per_replica: float) -> None:
        self.cfg = cfg
        self.lead_s = lead_s
        self.per_replica = per_replica
        self._history: list[tuple[float, int]] = [(0.0, 0)]  # (time, arrivals so far) at each tick
        self._recommendations: deque[tuple[float, int]] = deque([(0.0, cfg.start_replicas)])

    def _arrivals_at(self, t: float) -> float:
        """Arrivals by `t`, interpolated linearly between ticks (t within the history)."""
        h = self._history
        lo, hi = 0, len(h) - 1
        while lo < hi:  # the last tick at or before t
            mid = (lo + hi + 1) // 2
            if h[mid][0] <= t:
                lo = mid
            else:
                hi = mid - 1
        t0, a0 = h[lo]
        if lo + 1 >= len(h) or h[lo + 1][0] == t0:
            return float(a0)
        t1, a1 = h[lo + 1]
        return a0 + (a1 - a0) * (t - t0) / (t1 - t0)

    def _rate(self, start: float, end: float) -> float:
        start = max(start, 0.0)
        return (self._arrivals_at(end) - self._arrivals_at(start)) / (end - start) if end > start else 0.0

    def predict(self, now: float) -> float:
        """The arrival rate expected `lead_s` from now (requests/s)."""
        cfg = self.cfg
        if cfg.predictor == "constant":
            prev = self._history[-2][0] if len(self._history) > 1 else 0.0
            return self._rate(prev, now)
        average = self._rate(now - cfg.window_s, now)
        if cfg.predictor == "moving_average":
            return average
        at = now + self.lead_s - cfg.season_s  # the same instant a season ago
        if at - cfg.window_s / 2 < 0:
            return average
        return max(average, self._rate(at - cfg.window_s / 2, min(now, at + cfg.window_s / 2)))

    def decide(self, obs: Observation) -> int:
        cfg = self.cfg
        if obs.now > self._history[-1][0]:
            self._history.append((obs.now, obs.arrivals))
        rate = self.predict(obs.now)
        rec = cfg.clamp(math.ceil(rate / (self.per_replica * cfg.target_utilization) - 1e-9))
        self._recommendations.append((obs.now, rec))
        while self._recommendations and self._recommendations[0][0] < obs.now - cfg.scale_down_stabilization_s:
            self._recommendations.popleft()
        if rec < obs.current:
            rec = min(obs.current, max(r for _, r in self._recommendations))
        return cfg.clamp(rec)


def make_policy(
    cfg: FixedConfig | HpaConfig | KpaConfig | QueueConfig | ScheduledConfig | PredictiveConfig,
    *,
    lead_s: float = 0.0,
    per_replica: Callable[[], float] | None = None,
) -> Policy:
    """The policy for `cfg`; a predictive one takes its lead (the expected cold start unless given) and one
    replica's request rate (`per_replica()`, called only when the scenario does not give it)."""
    if isinstance(cfg, PredictiveConfig):
        rate = cfg.requests_per_replica_s
        if rate is None:
            if per_replica is None:
                raise FleetsimError(
                    "fleet.autoscaler.requests_per_replica_s: a predictive autoscaler of a prefill or decode pool needs "
                    "one replica's request rate given (it is measured for colocated replicas only)"
                )
            rate = per_replica()
        return Predictive(cfg, lead_s=lead_s if cfg.lead_s is None else cfg.lead_s, per_replica=rate)
    policies: dict[str, Any] = {"fixed": Fixed, "hpa": Hpa, "kpa": Kpa, "queue": Queue, "scheduled": Scheduled}
    policy: Policy = policies[cfg.policy](cfg)
    return policy


def autoscaler_counts(autoscaler: Any) -> dict[str, int | None]:
    """The replica counts an autoscaler gives, by key (`replicas`, `min_replicas`, ..., a schedule's `table.I.replicas`;
    None where its policy has no such key)."""
    counts = {name: getattr(autoscaler, name, None) for name in ("replicas", "min_replicas", "max_replicas", "initial_replicas")}
    return counts | {f"table.{i}.replicas": e.replicas for i, e in enumerate(getattr(autoscaler, "table", None) or [])}
