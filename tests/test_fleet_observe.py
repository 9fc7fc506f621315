"""What the autoscaler and the timeline see of a real fleet, checked against hand-computed values.

Constant step times make the engine's state at any instant computable by hand:
prefill 1 ms per prompt token, 10 ms per decode step.
"""

import math

import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

STEP = {"kind": "constant", "prefill_s_per_token": 1e-3, "decode_step_s": 0.01}


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


def scenario(autoscaler, *, engine=None, **fleet):
    return parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {
                "gpu": "a100-80gb",
                "tp": 2,
                "autoscaler": autoscaler,
                "lifecycle": {"provision_s": 5, "image_pull_s": 0, "load_gb_per_s": 137.953296384, "warmup_s": 0},
                **fleet,
            },
            "engine": {"step_time": STEP, **(engine or {})},
        }
    )


def test_busy_fraction_is_the_share_of_the_interval_spent_in_steps(observations):
    # one request at t = 0: prefill 100 tokens (0.1 s) + 399 decode steps (3.99 s) = 4.09 s of work.
    # HPA ticks every 10 s: busy fraction 0.409 over [0, 10], then 0.
    hpa = {"policy": "hpa", "min_replicas": 1, "max_replicas": 3, "interval_s": 10, "target": 0.7}
    simulate(scenario(hpa), frame([(0.0, 100, 400), (25.0, 1, 1)]), measure_capacity=False)
    by_time = {o.now: o for o in observations}
    assert by_time[10.0].busy_fraction == pytest.approx(0.409, abs=1e-9)
    assert by_time[20.0].busy_fraction == 0.0


def test_kv_use_counts_blocks_held_mid_run(observations):
    # 100 blocks of 16 tokens; a 160-token prompt (10 blocks) prefilled in 0.16 s, then one token per
    # 10 ms. At the tick at 1.005 s, 84 decode steps are done and the 85th is in progress: the sequence
    # holds 160 + 85 = 245 KV slots = 16 blocks -> 0.16.
    hpa = {"policy": "hpa", "metric": "kv_use", "min_replicas": 1, "max_replicas": 1, "interval_s": 1.005}
    engine = {"num_gpu_blocks_override": 100}
    r = simulate(scenario(hpa, engine=engine, timeline_interval_s=1.005), frame([(0.0, 160, 1000)]), measure_capacity=False)
    first = observations[0]
    assert first.now == pytest.approx(1.005) and first.kv_use == pytest.approx(0.16)
    assert r.timeline["kv_use"].iloc[0] == pytest.approx(0.16)
    # at 2.01 s: 184 steps done, the 185th in progress -> 345 slots = 22 blocks
    assert observations[1].kv_use == pytest.approx(0.22) and r.timeline["kv_use"].iloc[1] == pytest.approx(0.22)


AUTOSCALERS = {
    "hpa busy_fraction (default)": {"policy": "hpa", "target": 0.5, "scale_down_stabilization_s": 30},
    "hpa kv_use": {"policy": "hpa", "metric": "kv_use", "target": 0.3, "scale_down_stabilization_s": 30},
    "kpa concurrency (default metric)": {"policy": "kpa", "target_concurrency": 40, "stable_window_s": 20},
    "queue waiting (default metric)": {"policy": "queue", "target_waiting": 20, "scale_down_delay_s": 30},
}


@pytest.mark.parametrize("name", list(AUTOSCALERS))
def test_autoscalers_default_metrics_scale_a_loaded_fleet_out_and_back(name):
    """Each policy's default metric (and the HPA's kv_use), observed on a real fleet: a saturated
    replica makes it scale out; once the load is gone it scales back in."""
    hpa = {**AUTOSCALERS[name], "min_replicas": 1, "max_replicas": 4, "interval_s": 5}
    rows = [(0.1 * i, 200, 800) for i in range(600)] + [(300.0, 10, 2)]  # 10 req/s for 60 s, then one late request
    engine = {"num_gpu_blocks_override": 3000, "max_num_seqs": 64}
    r = simulate(scenario(hpa, engine=engine, timeline_interval_s=5), frame(rows), measure_capacity=False)
    s = r.summary()
    assert s["replicas_launched"] >= 3 and s["replicas_max"] >= 3
    assert not r.replicas["drain_at_s"].isna().all()  # and back in once the burst is served


def test_timeline_busy_fraction_and_kv_use_match_the_engine():
    # one replica, one request of 4.09 s of work from t = 0, sampled every 2 s
    sc = scenario({"policy": "fixed", "replicas": 1}, engine={"num_gpu_blocks_override": 100}, timeline_interval_s=2)
    r = simulate(sc, frame([(0.0, 100, 400), (9.5, 1, 1)]), measure_capacity=False)
    t = r.timeline.set_index("t_s")
    assert t.loc[2.0, "busy_fraction"] == 1.0 and t.loc[4.0, "busy_fraction"] == 1.0
    assert t.loc[6.0, "busy_fraction"] == pytest.approx(0.09 / 2)
    assert t.loc[8.0, "busy_fraction"] == 0.0
    # at t = 2: 190 decode steps done, the 191st in progress -> 100 + 191 = 291 slots = 19 blocks
    assert t.loc[2.0, "kv_use"] == pytest.approx(0.19)
    assert t.loc[6.0, "kv_use"] == 0.0 and t.loc[2.0, "running"] == 1 and t.loc[6.0, "running"] == 0


def test_scale_down_drains_the_least_loaded_replica():
    # round robin over 2 replicas: requests 0 and 2 go to replica 0, request 1 to replica 1. At t = 10
    # the schedule drops to 1 replica: replica 1 (1 outstanding) drains, not replica 0 (2 outstanding).
    sched = {
        "policy": "scheduled",
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 2,
        "interval_s": 1,
        "table": [{"at_s": 0, "replicas": 2}, {"at_s": 10, "replicas": 1}],
    }
    sc = scenario(sched, router="round_robin")
    r = simulate(sc, frame([(0.0, 10, 3000), (0.1, 10, 3000), (0.2, 10, 3000)]), measure_capacity=False)
    reps = r.replicas.set_index("replica_id")
    assert r.requests["replica_id"].tolist() == [0, 1, 0]
    assert reps.loc[1, "drain_at_s"] == 10.0 and math.isnan(reps.loc[0, "drain_at_s"])
