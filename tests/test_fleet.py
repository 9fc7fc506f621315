"""Fleet behaviour with exact, hand-checkable timings (constant step times, fixed cold starts)."""

import math

import numpy as np
import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame

STEP = {"kind": "constant", "prefill_s_per_token": 1e-3, "decode_step_s": 0.01}
LIFE = {"provision_s": 100.0, "image_pull_s": 20.0, "weights_from": "local_nvme", "warmup_s": 7.0}


def scenario(autoscaler, *, lifecycle=None, pricing=None, router="least_outstanding", **fleet):
    return parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {
                "gpu": "a100-80gb",
                "tp": 2,
                "router": router,
                "autoscaler": autoscaler,
                "lifecycle": lifecycle or LIFE,
                **fleet,
            },
            "engine": {"step_time": STEP},
            "pricing": pricing or {"usd_per_gpu_hour": 2.0, "billing_granularity_s": 0},
        }
    )


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


def load_s():
    setup = resolve_scenario(scenario({"policy": "fixed"}))
    return setup.weight_bytes / (138e9 / 84)  # local NVMe: ServerlessLLM's 84 s for Llama-2-70B


def test_fixed_fleet_without_traffic_costs_replicas_x_gpus_x_price_x_duration():
    # three always-on replicas; the only request comes at t = 1000 s (10 prompt, 1 output token)
    r = simulate(scenario({"policy": "fixed", "replicas": 3}), frame([(0.0, 10, 1)]).assign(arrival_at_s=[1000.0]))
    s = r.summary()
    assert r.horizon_s == pytest.approx(1000.0 + 10 * 1e-3)
    assert s["billed_gpu_seconds"] == pytest.approx(3 * 2 * r.horizon_s)
    assert s["cost_usd"] == pytest.approx(3 * 2 * 2.0 * r.horizon_s / 3600)
    assert sum(s["gpu_seconds_by_state"].values()) == pytest.approx(s["billed_gpu_seconds"])


def test_cold_start_delays_the_first_request_by_exactly_its_stages():
    sc = scenario({"policy": "queue", "min_replicas": 0, "max_replicas": 2, "initial_replicas": 0})
    r = simulate(sc, frame([(5.0, 100, 3)]))
    req = r.requests.iloc[0]
    cold = 100.0 + 20.0 + load_s() + 7.0
    assert req["scheduled_at_s"] - req["arrival_at_s"] == pytest.approx(cold - 0.0, abs=1e-9)
    assert req["first_token_at_s"] == pytest.approx(req["arrival_at_s"] + cold + 100 * 1e-3)
    s = r.summary()
    states = s["gpu_seconds_by_state"]
    assert states["provisioning"] == pytest.approx(2 * 120.0) and states["loading"] == pytest.approx(2 * (load_s() + 7.0))


def test_scale_to_zero_releases_after_grace_and_the_next_request_pays_the_cold_start():
    kpa = {
        "policy": "kpa",
        "min_replicas": 0,
        "max_replicas": 2,
        "initial_replicas": 1,
        "target_concurrency": 4,
        "scale_to_zero_grace_s": 30,
    }
    r = simulate(scenario(kpa), frame([(0.0, 100, 3), (2000.0, 100, 3)]))
    reps = r.replicas
    first = reps.iloc[0]
    # the request is done at 0.12 s, before the first 2 s tick: every tick sees no concurrency, so the
    # autoscaler wants 0 at once and the last replica lingers for the 30 s grace period
    assert first["released_at_s"] == pytest.approx(30.0)
    second = r.requests.iloc[1]
    cold = 120.0 + load_s() + 7.0
    assert second["scheduled_at_s"] - second["arrival_at_s"] == pytest.approx(cold, abs=1e-9)
    assert len(reps) == 2 and reps.iloc[1]["provision_at_s"] == pytest.approx(2000.0)


def test_costs_by_state_sum_to_the_bill_and_requests_and_tokens_are_conserved():
    rng = np.random.default_rng(4)
    n = 400
    rows = list(zip(np.cumsum(rng.exponential(0.05, n)), rng.integers(50, 400, n), rng.integers(1, 300, n), strict=True))
    hpa = {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": 8,
        "min_replicas": 1,
        "max_replicas": 6,
        "interval_s": 5,
        "scale_down_stabilization_s": 20,
    }
    sc = scenario(hpa, pricing={"usd_per_gpu_hour": 2.0, "billing_granularity_s": 60, "billing_minimum_s": 120})
    sc = sc.model_copy(update={"engine": sc.engine.model_copy(update={"num_gpu_blocks_override": 100_000})})  # no preemption
    r = simulate(sc, frame(rows))
    s = r.summary()
    assert s["replicas_launched"] > 1  # it did scale
    # the bill from each replica's instants: its life rounded up to the minute, at least two, on 2 GPUs
    reps = r.replicas
    life = (reps["end_at_s"] - reps["provision_at_s"]).to_numpy()
    billed = np.ceil(np.maximum(life, 120.0) / 60.0 - 1e-12) * 60.0
    assert s["billed_gpu_seconds"] == pytest.approx(2 * billed.sum())
    states = s["gpu_seconds_by_state"]
    assert states["billing_rounding"] == pytest.approx(2 * (billed - life).sum()) and states["billing_rounding"] > 0
    ready = reps["ready_at_s"].to_numpy()
    started = ~np.isnan(ready)
    assert states["provisioning"] + states["loading"] == pytest.approx(
        2 * (ready[started] - reps["provision_at_s"].to_numpy()[started]).sum() + 2 * life[~started].sum()
    )
    assert states["busy"] == pytest.approx(2 * reps["busy_s"].sum())
    drained = reps["drain_at_s"].notna().to_numpy()
    assert states["draining"] == pytest.approx(
        2 * (reps["end_at_s"] - reps["drain_at_s"]).to_numpy()[drained].sum()
        - 2 * (reps["busy_s"] - reps["busy_before_drain_s"]).to_numpy()[drained].sum()
    )
    assert s["completed"] + s["rejected"] == n
    done = r.requests[r.requests["status"] == "completed"]
    assert s["total_output_tokens"] == done["output_tokens"].sum()
    # prompt work is 1 ms per prompt token (recomputes included) and decode work 10 ms per decoding
    # step: the prompt's share of the cost is its share of busy time, computed here from the records
    assert s["n_preemptions"] == 0
    busy_s = s["gpu_seconds_by_state"]["busy"] / 2
    prompt_share = 1e-3 * s["total_input_tokens"] / busy_s
    assert 0 < prompt_share < 1
    assert s["usd_per_1k_prompt_tokens"] == pytest.approx(s["cost_usd"] * prompt_share / s["total_input_tokens"] * 1000)
    assert s["usd_per_1k_completion_tokens"] == pytest.approx(
        s["cost_usd"] * (1 - prompt_share) / s["total_output_tokens"] * 1000
    )


def test_same_seed_same_results_with_random_router_and_cold_starts():
    life = {
        "provision_s": {"dist": "lognormal", "mean": 60, "cv": 0.5},
        "image_pull_s": {"dist": "uniform", "low": 5, "high": 30},
        "weights_from": "host_ram",
        "warmup_s": 5,
    }
    hpa = {"policy": "hpa", "metric": "outstanding_per_replica", "target": 4, "max_replicas": 5, "interval_s": 5}
    rng = np.random.default_rng(1)
    n = 3000  # ~10 req/s for 300 s: 1.5x what one replica prefills, so the fleet scales out
    rows = list(zip(np.cumsum(rng.exponential(0.1, n)), rng.integers(10, 300, n), rng.integers(1, 200, n), strict=True))
    runs = [
        simulate(scenario(hpa, lifecycle=life, router="power_of_two").model_copy(update={"seed": seed}), frame(rows))
        for seed in (3, 3, 4)
    ]
    a, b, c = (x.summary() for x in runs)
    assert a == b
    assert runs[0].requests.equals(runs[1].requests)
    assert a["replicas_launched"] > 1
    assert a["mean_ttft_ms"] != c["mean_ttft_ms"]  # another seed: other cold-start draws and router picks


def test_fleet_queue_bound_and_timeout_reject_with_reasons():
    sc = scenario(
        {"policy": "queue", "min_replicas": 0, "max_replicas": 1, "initial_replicas": 0}, queue_max=2, queue_timeout_s=50
    )
    r = simulate(sc, frame([(0.0, 10, 1), (1.0, 10, 1), (2.0, 10, 1)]))
    reasons = r.requests["reject_reason"].tolist()
    assert "waited 50 s in the fleet queue" in reasons[0] and "waited 50 s" in reasons[1]
    assert "fleet queue full (2 requests)" in reasons[2]


def test_draining_finishes_work_then_releases():
    # scheduled: 2 replicas, then 1 from t = 10 s; the drained replica finishes its request first
    sched = {
        "policy": "scheduled",
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 2,
        "interval_s": 1,
        "table": [{"at_s": 0, "replicas": 2}, {"at_s": 10, "replicas": 1}],
    }
    r = simulate(scenario(sched, router="round_robin"), frame([(0.0, 10, 2000), (0.5, 10, 2000)]))
    reps = r.replicas
    drained = reps[~reps["drain_at_s"].isna()].iloc[0]
    assert drained["drain_at_s"] == pytest.approx(10.0)
    done = r.requests.set_index("replica_id").loc[drained["replica_id"], "completed_at_s"]
    assert drained["released_at_s"] == pytest.approx(done) and done > 10.0
    assert (r.requests["status"] == "completed").all()


def test_gpu_cap_limits_replicas():
    hpa = {"policy": "hpa", "metric": "outstanding_per_replica", "target": 1, "max_replicas": 10, "interval_s": 5}
    rows = [(0.5 * i, 100, 500) for i in range(1200)]  # 2 req/s for 10 min: ~10 in flight
    r = simulate(scenario(hpa, max_gpus=6), frame(rows))
    s = r.summary()
    assert s["replicas_launched"] >= 3 and s["replicas_max"] == 3  # 6 GPUs / TP 2
    t = r.timeline
    held = t["replicas_provisioning"] + t["replicas_loading"] + t["replicas_ready"] + t["replicas_draining"]
    assert held.max() <= 3
    assert not math.isnan(s["mean_ttft_ms"])


def test_a_cold_start_given_as_one_total():
    """`lifecycle.cold_start_s` replaces the four stages: a cold replica is ready exactly that long after
    it is launched, billed as provisioning throughout; giving it with a stage is an error."""
    from sim.errors import FleetsimError

    trace = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [100, 100], "output_tokens": [10, 10]}))
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb", "tp": 1, "lifecycle": {"cold_start_s": 100, "start": "cold"}},
        }
    )
    r = simulate(sc, trace, measure_capacity=False)
    assert r.replicas["ready_at_s"].iloc[0] == 100.0
    assert r.requests["first_token_at_s"].min() > 100.0
    states = r.summary()["gpu_seconds_by_state"]
    assert states["provisioning"] == pytest.approx(100.0) and states["loading"] == 0.0
    assert r.meta["resolved"]["weight_load_s"] == 0.0
    with pytest.raises(FleetsimError, match="give either cold_start_s or the stages"):
        parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb", "lifecycle": {"cold_start_s": 100, "warmup_s": 5}}})


def test_scaling_down_cancels_the_newest_starting_replicas_then_drains_ready_ones():
    """3 ready from the start, 2 more asked at 400 s (a cold start is 127 s + weights), 1 asked at 450 s: the 2 starting are
    cancelled first, then 2 of the 3 ready drained: 4 fewer."""
    sched = {
        "policy": "scheduled",
        "min_replicas": 1,
        "max_replicas": 8,
        "initial_replicas": 3,
        "interval_s": 5,
        "table": [{"at_s": 0, "replicas": 3}, {"at_s": 400, "replicas": 5}, {"at_s": 450, "replicas": 1}],
    }
    r = simulate(scenario(sched), frame([(0.0, 10, 5), (600.0, 10, 5)]), measure_capacity=False)
    reps = r.replicas.sort_values("replica_id")
    assert len(reps) == 5
    assert reps["cancelled"].tolist() == [False, False, False, True, True]
    assert (reps.loc[reps["cancelled"], "released_at_s"] == 450.0).all()
    drained = reps[~reps["cancelled"] & reps["drain_at_s"].notna()]
    assert len(drained) == 2 and (drained["drain_at_s"] == 450.0).all()
    assert r.requests["status"].tolist() == ["completed", "completed"]


def test_scaling_down_cancels_the_most_recently_launched_starting_replica_first():
    """One launched at 400 s, one at 420 s, one fewer asked at 450 s: the later one (furthest from ready) is
    cancelled, the earlier one becomes ready."""
    sched = {
        "policy": "scheduled",
        "min_replicas": 1,
        "max_replicas": 8,
        "initial_replicas": 1,
        "interval_s": 5,
        "table": [
            {"at_s": 0, "replicas": 1},
            {"at_s": 400, "replicas": 2},
            {"at_s": 420, "replicas": 3},
            {"at_s": 450, "replicas": 2},
        ],
    }
    r = simulate(scenario(sched), frame([(0.0, 10, 5), (900.0, 10, 5)]), measure_capacity=False)
    reps = r.replicas.sort_values("replica_id")
    assert reps["provision_at_s"].tolist() == [0.0, 400.0, 420.0]
    assert reps["cancelled"].tolist() == [False, False, True]
    assert reps["ready_at_s"].iloc[1] > 450.0


def test_a_released_replica_frees_its_place_under_the_replica_cap():
    """Cap 2: two replicas, one drained (idle: released at once) at 100 s, two asked again at 300 s: the cap counts
    replicas holding GPUs, so the released one's place goes to a new launch."""
    sched = {
        "policy": "scheduled",
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 2,
        "interval_s": 5,
        "table": [{"at_s": 0, "replicas": 2}, {"at_s": 100, "replicas": 1}, {"at_s": 300, "replicas": 2}],
    }
    r = simulate(scenario(sched), frame([(0.0, 10, 5), (900.0, 10, 5)]), measure_capacity=False)
    reps = r.replicas.sort_values("replica_id")
    assert len(reps) == 3 and reps["provision_at_s"].iloc[2] == 300.0
    assert reps["released_at_s"].notna().sum() >= 1 and reps["released_at_s"].min() == 100.0


def test_the_timeline_counts_every_replicas_running_requests_and_the_arrival_rate():
    """Two fixed replicas, each given one of two 3,000-token requests at t = 0 (least outstanding), 20 short ones in
    the first 10 s: the first sample (10 s) counts 2 running and 22 arrivals (2.2 per s), the second none arrived."""
    rows = [(0.0, 10, 3000), (0.0, 10, 3000)] + [(0.5 * i, 10, 2) for i in range(20)]
    r = simulate(scenario({"policy": "fixed", "replicas": 2}, timeline_interval_s=10.0), frame(sorted(rows)),
                 measure_capacity=False)  # fmt: skip
    tl = r.timeline.set_index("t_s")
    assert tl.loc[10.0, "running"] == 2 and tl.loc[10.0, "arrival_rate_per_s"] == pytest.approx(2.2)
    assert tl.loc[20.0, "arrival_rate_per_s"] == 0.0


def test_a_full_fleet_queue_with_no_replica_ready_says_so():
    """Cold start, no replica ready at t = 0 and a fleet queue of 0: the request is rejected with the reason."""
    sc = scenario({"policy": "fixed", "replicas": 1}, lifecycle={**LIFE, "start": "cold"}, queue_max=0)
    r = simulate(sc, frame([(0.0, 10, 5)]), measure_capacity=False).requests
    assert r["status"].tolist() == ["rejected"]
    assert r["reject_reason"].iloc[0] == "fleet queue full (0 requests) with no replica ready"


def test_the_timeline_reads_every_replica_after_one_still_starting():
    """A replica still loading (no engine yet) listed before a ready one: the sample counts both states and reads the
    ready one's running requests, KV use and busy fraction."""
    from types import SimpleNamespace

    import simpy

    from sim.run.fleet.control import sample_timeline
    from sim.states import ReplicaState

    engine = SimpleNamespace(busy_s_at=lambda now: 5.0, kv_use_at=lambda now: 0.25, n_running=3, waiting=[1, 2])
    slots = [
        SimpleNamespace(state=ReplicaState.LOADING, engine=None, replica_id=0),
        SimpleNamespace(state=ReplicaState.READY, engine=engine, replica_id=1),
    ]
    pool = SimpleNamespace(live=slots, queue=[7], n_arrivals=4)
    env, rows = simpy.Environment(), []
    env.process(sample_timeline(env, [pool], [], 10.0, rows))
    env.run(until=10.5)
    (row,) = rows
    assert row[:9] == (10.0, 0, 1, 1, 0, 1 + 2, 3, 0.25, 0.4) and row[9] == 0.5
