"""Fleet invariants on random scenarios (hypothesis): requests conserved, GPU time by state sums to
the bill and is never negative, the GPU cap holds, per-request instants are ordered, runs repeat."""

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.results.cost import state_seconds
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests, random_trace

POLICIES = {
    "hpa": {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": 3,
        "min_replicas": 1,
        "max_replicas": 4,
        "interval_s": 3,
        "scale_down_stabilization_s": 10,
    },
    "kpa": {
        "policy": "kpa",
        "target_concurrency": 3,
        "min_replicas": 0,
        "max_replicas": 4,
        "initial_replicas": 1,
        "scale_to_zero_grace_s": 5,
    },
    "queue": {
        "policy": "queue",
        "target_waiting": 2,
        "min_replicas": 0,
        "max_replicas": 4,
        "initial_replicas": 0,
        "interval_s": 3,
        "scale_down_delay_s": 10,
    },
    "scheduled": {
        "policy": "scheduled",
        "min_replicas": 0,
        "max_replicas": 4,
        "interval_s": 2,
        "period_s": 40,
        "table": [{"at_s": 0, "replicas": 1}, {"at_s": 15, "replicas": 3}, {"at_s": 30, "replicas": 0}],
    },
}


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    policy=st.sampled_from(sorted(POLICIES)),
    router=st.sampled_from(["round_robin", "least_outstanding", "least_kv", "power_of_two"]),
    engine_policy=st.sampled_from(["chunked", "prefill_first"]),
    n=st.integers(1, 60),
    rate=st.floats(0.2, 20),
    cold=st.floats(0.5, 20),
    max_gpus=st.sampled_from([None, 2, 6]),
    granularity=st.sampled_from([0, 1, 7]),
    queue_timeout=st.sampled_from([None, 8.0]),
    cap=st.sampled_from([None, 1, 3]),
)
def test_fleet_invariants(seed, policy, router, engine_policy, n, rate, cold, max_gpus, granularity, queue_timeout, cap):
    rng = np.random.default_rng(seed)
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(1 / rate, n)),
                "prompt_tokens": rng.integers(1, 120, n),
                "output_tokens": rng.integers(1, 80, n),
            }
        )
    )
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "seed": seed % 1000,
            "fleet": {
                "gpu": "a100-80gb",
                "tp": 2,
                "router": router,
                "autoscaler": POLICIES[policy],
                "max_gpus": max_gpus,
                "queue_timeout_s": queue_timeout,
                "max_outstanding_per_replica": cap,
                "timeline_interval_s": 1.0,
                "lifecycle": {
                    "provision_s": {"dist": "uniform", "low": 0, "high": cold},
                    "image_pull_s": 0.2 * cold,
                    "load_gb_per_s": 16.0,
                    "warmup_s": 0.1 * cold,
                },
            },
            "engine": {
                "policy": engine_policy,
                "max_num_batched_tokens": 256,
                "num_gpu_blocks_override": 30,
                "step_time": {"kind": "constant", "prefill_s_per_token": 1e-3, "decode_step_s": 0.02},
            },
            "pricing": {"usd_per_gpu_hour": 2.0, "billing_granularity_s": granularity},
        }
    )
    result = simulate(sc, trace, measure_capacity=False)
    s = result.summary()
    r = result.requests
    assert s["completed"] + s["rejected"] == n and s["in_flight"] == 0
    done = r[r["status"] == "completed"]
    assert (done["arrival_at_s"] <= done["scheduled_at_s"]).all()
    assert (done["scheduled_at_s"] <= done["first_token_at_s"]).all()
    assert (done["first_token_at_s"] <= done["completed_at_s"]).all()
    states = s["gpu_seconds_by_state"]
    assert abs(sum(states.values()) - s["billed_gpu_seconds"]) <= 1e-6 * max(1.0, s["billed_gpu_seconds"])
    assert all(v >= -1e-9 for v in states.values()), states
    for life in result.lives():
        assert all(v >= -1e-9 for v in state_seconds(life).values())
    t = result.timeline
    held = t["replicas_provisioning"] + t["replicas_loading"] + t["replicas_ready"] + t["replicas_draining"]
    cap = 4 if max_gpus is None else min(4, max_gpus // 2)
    assert len(t) >= math.floor(result.horizon_s) - 1  # sampled every second until the run ends
    assert len(t) == 0 or held.max() <= cap
    again = simulate(sc, trace, measure_capacity=False)
    assert again.requests.equals(r) and again.summary() == s


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    policy=st.sampled_from(sorted(POLICIES)),
    router=st.sampled_from(["round_robin", "least_outstanding", "least_kv", "power_of_two"]),
    engine_policy=st.sampled_from(["chunked", "prefill_first"]),
    n=st.integers(1, 50),
    rate=st.floats(0.5, 30),
    n_blocks=st.integers(12, 60),
    cap=st.sampled_from([None, 1, 4]),
)
def test_fleet_fast_forward_matches_per_step(seed, policy, router, engine_policy, n, rate, n_blocks, cap):
    """The lazy engine (decode group, fast-forwarded runs, cut runs) inside a fleet that routes on its
    load and KV use, scales and drains: every request's instants equal the per-step reference's."""
    trace = random_trace(seed, n, rate, 149, 99)

    def scenario(fast_forward):
        return parse_config(
            {
                "model": "llama-3.1-8b",
                "seed": seed % 1000,
                "fleet": {
                    "gpu": "a100-80gb",
                    "tp": 1,
                    "router": router,
                    "autoscaler": POLICIES[policy],
                    "max_outstanding_per_replica": cap,
                    "lifecycle": {"provision_s": 3.1, "image_pull_s": 0.7, "load_gb_per_s": 16.0, "warmup_s": 0.3},
                },
                "engine": {
                    "policy": engine_policy,
                    "fast_forward": fast_forward,
                    "max_num_batched_tokens": 160,
                    "max_num_seqs": 12,
                    "num_gpu_blocks_override": n_blocks,
                },
            }
        )

    fast = simulate(scenario(True), trace, measure_capacity=False)
    slow = simulate(scenario(False), trace, measure_capacity=False)
    assert_same_requests(fast, slow)
