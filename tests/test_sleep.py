"""vLLM's sleep mode (`fleet.lifecycle.sleep`): a scaled-down replica falls asleep (its weights out to host memory, level
1, or dropped, level 2) and a later launch wakes it instead of a cold start — by hand on one fleet, and as model
swapping on a platform whose deployments share one GPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.run.platform import simulate_platform
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

WEIGHTS = 16_060_522_496.0  # Llama-3.1-8B at 16 bits (the catalog's count), bytes
LEVEL1_S = WEIGHTS / 25e9  # one H100's shard copied over PCIe at 25 GB/s
LEVEL2_S = WEIGHTS / 7e9  # reloaded from the page cache (the host_ram tier, 7 GB/s)


def fleet(sleep: dict | None, *, table=((0, 1), (50, 0), (300, 1))) -> dict:
    lifecycle = {"cold_start_s": 120, "start": "warm"}
    if sleep is not None:
        lifecycle["sleep"] = sleep
    return {
        "model": "llama-3.1-8b",
        "fleet": {
            "gpu": "h100",
            "autoscaler": {
                "policy": "scheduled",
                "min_replicas": 0,
                "max_replicas": 1,
                "initial_replicas": 1,
                "interval_s": 10,
                "table": [{"at_s": t, "replicas": n} for t, n in table],
            },
            "lifecycle": lifecycle,
        },
        "pricing": {"usd_per_gpu_hour": 2.0, "billing_granularity_s": 0},
    }


TRACE = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 305.0], "prompt_tokens": 100, "output_tokens": 3}))


def replicas(raw: dict):
    result = simulate(parse_config(raw), TRACE, measure_capacity=False)
    return result, result.replicas


@pytest.mark.parametrize("level, sleep_s, wake_s", [(1, LEVEL1_S, LEVEL1_S), (2, 0.0, LEVEL2_S)])
def test_a_scaled_down_replica_sleeps_and_the_next_launch_wakes_it(level, sleep_s, wake_s):
    result, r = replicas(fleet({"level": level}))
    assert r["slept"].tolist()[0] and not r["woke"].tolist()[0]
    # scaled to 0 at the 50 s tick: drained at once (idle), then its weights out for sleep_s, GPU held till then
    assert r["drain_at_s"].iloc[0] == 50.0
    assert r["end_at_s"].iloc[0] == pytest.approx(50.0 + sleep_s)
    # back to 1 at the 300 s tick: a launch, which wakes the sleeper: no provisioning, the wake as its loading
    woken = r.iloc[1]
    assert woken["woke"] and woken["provision_at_s"] == 300.0 and woken["loading_at_s"] == 300.0
    assert woken["ready_at_s"] == pytest.approx(300.0 + wake_s)
    assert woken["loading_s"] == pytest.approx(wake_s)
    first = result.requests["first_token_at_s"].iloc[1]
    assert 305.0 < first < 305.05  # (ready before it arrived: its prefill only, a 100-token prompt)
    s = result.summary()
    assert s["replicas_woken"] == 1 and s["replicas_launched"] == 2


def test_without_sleep_or_room_to_sleep_the_launch_is_a_cold_start():
    for sleep in (None, {"level": 1, "max_sleeping": 0}):
        _, r = replicas(fleet(sleep))
        assert not r["slept"].any() and not r["woke"].any()
        assert r["end_at_s"].iloc[0] == 50.0
        assert r["ready_at_s"].iloc[1] == pytest.approx(300.0 + 120.0)


def test_the_sleep_and_wake_seconds_are_billed_as_draining_and_loading():
    result, r = replicas(fleet({"level": 1}))
    states = result.summary()["gpu_seconds_by_state"]
    assert states["draining"] == pytest.approx(LEVEL1_S)  # (the first replica's weights on their way out)
    assert states["loading"] == pytest.approx(LEVEL1_S)  # (the second's on their way back)
    lives = float(((r["end_at_s"] - r["provision_at_s"]) * r["tp"]).sum())
    assert result.summary()["billed_gpu_seconds"] == pytest.approx(lives)


def test_a_replica_lost_while_falling_asleep_does_not_sleep():
    from sim.run.freeze import freeze
    from sim.run.simulate import _build, _resolve, run

    sc = parse_config(fleet({"level": 1}))
    setup, full, specs = _resolve(sc, TRACE, sc.base_dir)
    built = _build(sc, specs, full)
    built.env.run(until=50.3)  # (during its 0.64 s offload)
    pool = built.pools[0]
    (slot,) = pool.live
    assert slot.falling_asleep
    pool.interrupt(slot, "failure")
    run(built)
    r = freeze(built, sc, setup, sc.base_dir, full).replicas
    assert r["interrupted"].iloc[0] == "failure" and not r["slept"].iloc[0]
    assert r["end_at_s"].iloc[0] == pytest.approx(50.3)
    assert not r["woke"].any() and not any(pool.sleeping.values())  # nothing asleep: the next launch a cold start
    assert r["ready_at_s"].iloc[1] == pytest.approx(300.0 + 120.0)


def test_models_swap_on_one_gpu():
    """Two models share one H100 (gpu_budget 1) and scale to zero between their requests: each launch after the first
    wakes its model on the GPU the other just freed, in a wake, not a cold start."""
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 200.0, 400.0, 600.0],
                "prompt_tokens": 100,
                "output_tokens": 3,
                "model": ["a", "b", "a", "b"],
            }
        )
    )
    auto = {"policy": "kpa", "min_replicas": 0, "max_replicas": 1, "initial_replicas": 0, "scale_to_zero_grace_s": 30}
    raw = {
        "name": "swap",
        "model": "llama-3.1-8b",
        "fleet": {"gpu": "h100", "autoscaler": auto, "lifecycle": {"cold_start_s": 60, "sleep": {"level": 1}}},
        "pricing": {"usd_per_gpu_hour": 2.0, "billing_granularity_s": 0},
        "gpu_budget": {"h100": 1},
        "deployments": [{"name": "a"}, {"name": "b", "model": "qwen2.5-7b"}],
    }
    result = simulate_platform(parse_config(raw), frame, measure_capacity=False)
    a, b = (result.deployments[k].replicas for k in ("a", "b"))
    assert a["woke"].tolist() == [False, True] and b["woke"].tolist() == [False, True]
    assert a["slept"].tolist() == [True, True] and b["slept"].tolist() == [True, False]  # (b's last: up at the end)
    ttft = {
        k: r.requests["first_token_at_s"].to_numpy() - r.requests["arrival_at_s"].to_numpy()
        for k, r in result.deployments.items()
    }
    assert ttft["a"][0] > 60 and ttft["a"][1] < 2  # a cold start, then a wake
    assert ttft["b"][0] > 60 and ttft["b"][1] < 2
    assert result.summary()["gpu_budget"]["h100-sxm"]["peak_held"] == 1
    events = sorted(
        [(t, 1) for r in (a, b) for t in r["provision_at_s"]] + [(t, -1) for r in (a, b) for t in r["end_at_s"]],
        key=lambda e: (e[0], e[1]),
    )
    assert max(np.cumsum([d for _, d in events])) == 1


def test_a_launch_while_a_replica_falls_asleep_calls_it_back():
    """A request at 50.3 s finds the only replica falling asleep (50.0 to 50.64 s): the launch waits for it and wakes it
    on the GPU it frees, instead of a cold start (or a second GPU)."""
    frame = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 50.3], "prompt_tokens": 100, "output_tokens": 3}))
    result = simulate(parse_config(fleet({"level": 1}, table=((0, 1), (50, 0)))), frame, measure_capacity=False)
    r = result.replicas
    assert r["slept"].iloc[0] and r["end_at_s"].iloc[0] == pytest.approx(50.0 + LEVEL1_S)
    assert r["woke"].iloc[1] and r["provision_at_s"].iloc[1] == pytest.approx(50.0 + LEVEL1_S)
    assert r["ready_at_s"].iloc[1] == pytest.approx(50.0 + 2 * LEVEL1_S)
    first = result.requests["first_token_at_s"].iloc[1]
    assert 50.0 + 2 * LEVEL1_S < first < 50.0 + 2 * LEVEL1_S + 0.05
    assert len(r) == 2


def test_vllm_enable_sleep_mode_imports_as_sleep_mode(tmp_path):
    from sim.scenario.importer import import_files, nest, scenario_values

    script = tmp_path / "serve.sh"
    script.write_text("vllm serve meta-llama/Llama-3.1-8B-Instruct --enable-sleep-mode --max-num-seqs 64\n")
    imp = import_files([script])
    values = nest(scenario_values(imp, gpu="h100"))
    assert values["fleet"]["lifecycle"]["sleep"] == {"level": 1}
    assert any("--enable-sleep-mode: scaled-down replicas sleep at level 1" in n for n in imp.notes)
    parse_config(values)  # (a valid scenario)


def test_the_swaps_cost_is_reported_and_the_cluster_view_keeps_the_budget():
    frame = validate_frame(
        pd.DataFrame(
            {"arrival_at_s": [0.0, 200.0, 400.0, 600.0], "prompt_tokens": 100, "output_tokens": 3, "model": ["a", "b"] * 2}
        )
    )
    auto = {"policy": "kpa", "min_replicas": 0, "max_replicas": 1, "initial_replicas": 0, "scale_to_zero_grace_s": 30}
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {
            "gpu": "h100",
            "autoscaler": auto,
            "lifecycle": {"cold_start_s": 60, "sleep": {"level": 1, "initial_sleeping": 1}},
        },
        "gpu_budget": {"h100": 1},
        "deployments": [{"name": "a"}, {"name": "b", "model": "qwen2.5-7b"}],
    }
    result = simulate_platform(parse_config(raw), frame, measure_capacity=False)
    s = result.summary()
    total = 0.0
    for run in result.deployments.values():
        r = run.replicas
        assert r["woke"].all()  # (every model asleep at the start: no cold start at all)
        wake = r["loading_s"].to_numpy()
        assert np.allclose(wake, wake[0])  # level 1: the same copy each way, for one model
        assert np.allclose(r.loc[r["slept"], "sleep_s"], wake[0])
        total += float(wake.sum() + r["sleep_s"].sum())
    assert s["gpu_seconds_swapping"] == pytest.approx(total)
    assert s["deployments"]["a"]["sleep_wake_gpu_seconds"] + s["deployments"]["b"]["sleep_wake_gpu_seconds"] == pytest.approx(
        total
    )
    from sim.scenario.resolve import resolve_scenario

    qwen = resolve_scenario(parse_config({"model": "qwen2.5-7b", "fleet": {"gpu": "h100"}})).weight_bytes
    assert wake[0] == pytest.approx(qwen / 25e9)  # (b, the last run looked at: its weights over PCIe)
    held = result.gpus_held()
    assert held["a"].max() == 1 and held["b"].max() == 1 and (held["a"] + held["b"]).max() == 1
    assert s["gpu_seconds_adapter_loads"] == 0.0
