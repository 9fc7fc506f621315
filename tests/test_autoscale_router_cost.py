"""Pure policies on plain values: autoscalers, routers, billing."""

import math

import numpy as np
import pytest

from sim.errors import FleetsimError
from sim.physics.prices import api_price
from sim.policies.autoscale import Hpa, HpaConfig, Kpa, KpaConfig, Observation, Queue, QueueConfig, Scheduled, ScheduledConfig
from sim.policies.router import LeastKv, LeastOutstanding, PowerOfTwo, RoundRobin
from sim.results.cost import ReplicaLife, attribute_cost, billed_seconds, fleet_bill, state_seconds
from sim.run.engine.sequence import Seq
from sim.scenario.config import parse_config
from tests.conftest import views

NO_PREFIX = Seq(0, 0.0, 1, 1)  # a request without prefix hash ids


def obs(now, *, ready=2, starting=0, in_flight=0, waiting=0, busy=None, kv=None):
    return Observation(
        now=now,
        n_ready=ready,
        n_starting=starting,
        n_draining=0,
        in_flight=in_flight,
        waiting=waiting,
        busy_fraction=busy,
        kv_use=kv,
    )


def test_hpa_scales_by_ratio_within_tolerance_and_limits():
    hpa = Hpa(HpaConfig(metric="busy_fraction", target=0.5, min_replicas=1, max_replicas=20))
    assert hpa.decide(obs(0, ready=4, busy=0.54)) == 4  # |0.54/0.5 - 1| = 0.08 <= 0.1: no change
    assert hpa.decide(obs(15, ready=4, busy=1.0)) == 8  # ceil(4 x 2)
    assert hpa.decide(obs(30, ready=2, busy=1.0 * 10)) == 6  # scale-up limit: 2 + max(100% of 2, 4 pods)


def test_hpa_scale_down_waits_for_the_stabilization_window():
    hpa = Hpa(HpaConfig(metric="busy_fraction", target=0.5, min_replicas=1, max_replicas=20, scale_down_stabilization_s=300))
    assert hpa.decide(obs(0, ready=8, busy=0.5)) == 8
    assert hpa.decide(obs(15, ready=8, busy=0.1)) == 8  # the 8 of t=0 is within the window
    assert hpa.decide(obs(299, ready=8, busy=0.1)) == 8  # ...and still is
    assert hpa.decide(obs(301, ready=8, busy=0.1)) == 2  # gone: ceil(8 x 0.1 / 0.5)


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking():
    kpa = Kpa(KpaConfig(target_concurrency=10, min_replicas=1, max_replicas=50))
    for t in range(0, 60, 2):
        assert kpa.decide(obs(t, ready=1, in_flight=8)) == 1
    # the 6 s panic window holds the ticks at 56, 58, 60: (8 + 8 + 100) / 3 = 38.7 -> 4 replicas, >= 200% of 1
    assert kpa.decide(obs(60, ready=1, in_flight=100)) == 4
    assert kpa.decide(obs(62, ready=4, in_flight=5)) == 4  # panicking: no scale-down
    assert kpa.decide(obs(200, ready=10, in_flight=5)) == 1  # out of panic, stable average 5 -> 1


def test_queue_policy_adds_for_excess_waiting_and_removes_after_calm():
    q = Queue(QueueConfig(target_waiting=4, min_replicas=1, max_replicas=10, scale_down_delay_s=60))
    assert q.decide(obs(0, ready=2, waiting=20)) == 5  # excess 12 -> 3 more
    assert q.decide(obs(15, ready=5, waiting=0, busy=0.2)) == 5
    assert q.decide(obs(75, ready=5, waiting=0, busy=0.2)) == 4


def test_the_queue_policy_steps_down_a_whole_dp_group():
    """A pool of DP ranks scales in whole groups (`Pool.scale_to` rounds a count up to them): a step of one rank fewer
    rounded back up, so an idle grouped pool never shrank (and, on a GPU budget, starved a lower-priority deployment
    for ever: the platform combination test found it). A step is a group."""
    import dataclasses

    q = Queue(QueueConfig(target_waiting=2, min_replicas=1, max_replicas=6, scale_down_delay_s=6))
    calm = dataclasses.replace(obs(0, ready=4, waiting=0, busy=0.0), group=2)
    assert q.decide(calm) == 4
    assert q.decide(dataclasses.replace(calm, now=6.0)) == 2


def test_scheduled_follows_the_time_of_day_table():
    s = Scheduled(
        ScheduledConfig(min_replicas=0, max_replicas=9, table=[{"at_s": 3600, "replicas": 5}, {"at_s": 7200, "replicas": 2}])
    )
    assert [s.decide(obs(t)) for t in (0, 3600, 5000, 7200, 86_400 + 4000)] == [2, 5, 5, 2, 5]


def test_autoscaler_bounds_are_validated():
    with pytest.raises(FleetsimError, match=r"fleet.autoscaler.hpa: min_replicas must be <= max_replicas \(got 8 > 4\)"):
        parse_config({"model": "m", "fleet": {"gpu": "g", "autoscaler": {"policy": "hpa", "min_replicas": 8, "max_replicas": 4}}})
    with pytest.raises(FleetsimError, match=r"fleet: max_gpus must be >= tp \(got 1 < 2\)"):
        parse_config({"model": "m", "fleet": {"gpu": "g", "tp": 2, "max_gpus": 1}})


def test_routers():
    rr = RoundRobin()
    assert [rr.choose(views([0, 0, 0]), NO_PREFIX, 0.0) for _ in range(4)] == [0, 1, 2, 0]
    assert LeastOutstanding().choose(views([3, 1, 1]), NO_PREFIX, 0.0) == 1
    assert LeastKv().choose(views([0, 5, 1], kv=[0.9, 0.1, 0.1]), NO_PREFIX, 0.0) == 2
    p2 = PowerOfTwo(np.random.default_rng(0))
    picks = [p2.choose(views([5, 0, 9, 9]), NO_PREFIX, 0.0) for _ in range(200)]
    # the rule, from the same random numbers: sample two distinct replicas, keep the less loaded one
    same = np.random.default_rng(0)
    load = [5, 0, 9, 9]
    expected = [min(same.choice(4, size=2, replace=False).tolist(), key=lambda i: (load[i], i)) for _ in range(200)]
    assert picks == expected
    assert picks.count(1) / 200 == pytest.approx(0.5, abs=0.1)  # replica 1 is picked whenever sampled: P = 1/2
    assert picks.count(2) + picks.count(3) < picks.count(0)  # a 9 only wins against the other 9
    assert PowerOfTwo(np.random.default_rng(0)).choose(views([4]), NO_PREFIX, 0.0) == 0


def test_billing_granularity_minimum_and_states():
    assert billed_seconds(61, granularity_s=60, minimum_s=0) == 120
    assert billed_seconds(5, granularity_s=1, minimum_s=60) == 60
    assert billed_seconds(59.5, granularity_s=0, minimum_s=0) == 59.5
    life = ReplicaLife(
        start_at_s=0, loading_at_s=100, ready_at_s=150, drain_at_s=400, end_at_s=450, busy_s=120, busy_before_drain_s=100
    )
    st = state_seconds(life)
    assert st == {"provisioning": 100, "loading": 50, "busy": 120, "idle": 150, "draining": 30}
    assert sum(st.values()) == 450


def test_reserved_capacity_and_on_demand():
    lives = [ReplicaLife(0, math.nan, 0, math.nan, 1000, 500, 500), ReplicaLife(100, 150, 200, math.nan, 700, 100, 100)]
    bill = fleet_bill(
        lives,
        horizon_s=1000,
        tp=2,
        usd_per_gpu_hour=3.6,
        reserved_usd_per_gpu_hour=1.8,
        reserved_replicas=1,
        granularity_s=60,
        minimum_s=0,
    )
    # replica 0 sits on the reserved seat; replica 1 is on demand: 600 s, billed 600 s
    assert bill["billed_gpu_seconds"] == (1000 + 600) * 2
    assert bill["cost_usd"] == pytest.approx((600 * 3.6 + 1000 * 1.8) * 2 / 3600)
    assert sum(bill["gpu_seconds_by_state"].values()) == pytest.approx(bill["billed_gpu_seconds"])


def test_cost_attribution_splits_by_busy_time():
    out = attribute_cost(
        10.0, prefill_busy_s=1, decode_busy_s=3, prompt_tokens=2000, output_tokens=500, api=api_price("gpt-3.5-turbo-2023-07")
    )
    assert out["usd_per_1k_prompt_tokens"] == pytest.approx(10 * 0.25 / 2)
    assert out["usd_per_1k_completion_tokens"] == pytest.approx(10 * 0.75 / 0.5)
    assert out["api_usd_for_same_tokens"] == pytest.approx(2 * 0.0015 + 0.5 * 0.002)


def test_queue_policy_counts_starting_replicas_and_never_cancels_them_to_scale_up():
    q = Queue(QueueConfig(target_waiting=4, min_replicas=0, max_replicas=20))
    assert q.decide(obs(0, ready=2, starting=3, waiting=20)) == 5  # 2 ready + 3 for the excess: the 3 starting suffice
    assert q.decide(obs(15, ready=2, starting=5, waiting=9)) == 7  # more than enough starting: keep them
    assert q.decide(obs(30, ready=0, starting=0, waiting=1)) == 1  # from zero


def test_a_schedule_runs_its_own_counts_and_refuses_bounds_that_would_clamp_it():
    """Bounds not given are the table's (the common default max_replicas of 1 ran a table of 6 on one replica without a
    word); bounds given must hold every entry, and each entry must fall within the period (it wrapped silently)."""
    auto = {"policy": "scheduled", "table": [{"at_s": 28800, "replicas": 6}, {"at_s": 72000, "replicas": 2}]}
    cfg = parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "autoscaler": auto}}).fleet.autoscaler
    assert (cfg.min_replicas, cfg.max_replicas) == (2, 6)
    assert Scheduled(cfg).decide(obs(30_000)) == 6
    for extra, says in (
        ({"max_replicas": 4}, r"table\[0\].replicas must be within \[min_replicas, max_replicas\] = \[2, 4\] \(got 6\)"),
        ({"min_replicas": 3}, r"table\[1\].replicas must be within \[min_replicas, max_replicas\] = \[3, 6\] \(got 2\)"),
        ({"period_s": 3600}, r"table\[0\].at_s must be below period_s \(3600\) \(got 28800\)"),
    ):
        with pytest.raises(FleetsimError, match=says):
            parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "autoscaler": {**auto, **extra}}})
