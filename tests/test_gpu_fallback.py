"""Falling back to another GPU type (`fleet.capacity.fallback`): when no class of the pool's own GPU can give a replica,
the next GPU type in order is launched, with its own KV cache, step times, failure rate and price; the bill, the
peaks and the capacity count each replica at its own GPU's figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame


def scenario(capacity, *, replicas=3, pricing=None, **fleet):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "autoscaler": {"policy": "fixed", "replicas": replicas},
                "lifecycle": {"cold_start_s": 30.0},
                "capacity": capacity,
                **fleet,
            },
            "pricing": pricing or {"usd_per_gpu_hour": 4.0, "billing_granularity_s": 0},
        }
    )


def frame(n=240, span=60.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, span, n))
    data = {"arrival_at_s": t, "prompt_tokens": rng.integers(50, 1500, n), "output_tokens": rng.integers(20, 300, n)}
    return validate_frame(pd.DataFrame(data), source="test")


FALLBACK = [
    {"gpu": "a100-80gb", "max_replicas": 1, "usd_per_gpu_hour": 2.0},
    {"gpu": "l40s", "tp": 2, "usd_per_gpu_hour": 1.5},
]


def test_launches_go_to_the_next_gpu_type_when_the_pools_own_is_capped():
    """Three replicas, the H100 class capped at one: the second is an A100 (capped at one), the third 2x L40S. Each is
    billed for its life at its own GPUs and price; the A100 replica decodes slower than the H100 one."""
    r = simulate(scenario({"on_demand": {"max_replicas": 1}, "fallback": FALLBACK}), frame())
    reps, s = r.replicas, r.summary()
    assert list(zip(reps["gpu"], reps["tp"], strict=True)) == [("h100-sxm", 1), ("a100-80gb", 1), ("l40s", 2)]
    assert s["completed"] == 240 and (reps["requests"] > 0).all()
    assert s["fleet"] == "3 replicas of 1x h100-sxm, falling back to 1x a100-80gb, 2x l40s"
    life = (reps["end_at_s"] - reps["provision_at_s"]).to_numpy()
    want = life[0] * 1 * 4.0 / 3600 + life[1] * 1 * 2.0 / 3600 + life[2] * 2 * 1.5 / 3600
    assert s["cost_usd"] == pytest.approx(want, rel=1e-9)
    assert s["billed_gpu_seconds"] == pytest.approx(life[0] + life[1] + 2 * life[2], rel=1e-9)
    od = s["cost_by_capacity"]["on_demand"]
    assert od["replicas"] == 3 and od["usd_per_gpu_hour"] is None  # (three prices: no one price for the class)
    req = r.requests
    tpot = (req["completed_at_s"] - req["first_token_at_s"]) / (req["output_tokens"] - 1)
    assert tpot[req["replica_id"] == 1].mean() > 1.3 * tpot[req["replica_id"] == 0].mean()  # A100: slower HBM
    # the peaks and the capacity at each replica's own GPU
    pools = r.meta["pools"]["online"]
    peaks = [pools["peak_flops_per_s_per_gpu"], *(f["peak_flops_per_s_per_gpu"] for f in pools["fallback"])]
    gpu_s = [life[0], life[1], 2 * life[2]]
    assert s["mfu"] == pytest.approx(float(reps["flops"].sum()) / sum(p * g for p, g in zip(peaks, gpu_s, strict=True)))
    cap = r.meta["capacity"]
    per = [cap["tokens_per_gpu_s"], cap["fallback"]["online.a100-80gb.1"], cap["fallback"]["online.l40s.2"]]
    assert per[0] > per[1] > per[2] > 0  # (per GPU-second: H100, A100, L40S)
    served = s["total_input_tokens"] + s["total_output_tokens"]
    assert s["throughput_utilization"] == pytest.approx(served / sum(p * g for p, g in zip(per, gpu_s, strict=True)))


def test_a_shortage_of_the_pools_gpu_falls_back_and_the_fallback_is_billed_at_its_class_price():
    """No H100 launch ever succeeds (a shortage): both replicas run on the fallback, on spot at the price sheet's A100
    spot price (AWS), reclaimed as the pool's spot block says (H100 spot capped at 0); the H100 class is backed off and counted as failed launches."""
    capacity = {
        "launch_order": ["on_demand", "spot"],
        "on_demand": {"launch_failure_probability": 1.0},
        "spot": {"max_replicas": 0, "interruptions_per_hour": 0.0},
        "fallback": [{"gpu": "a100-80gb", "capacity": "spot"}],
    }
    sc = scenario(
        capacity,
        replicas=2,
        pricing={"provider": "aws", "billing_granularity_s": 0},
        lifecycle={"start": "cold", "cold_start_s": 30.0},
    )
    r = simulate(sc, frame(n=60), measure_capacity=False)
    reps, s = r.replicas, r.summary()
    assert set(reps["gpu"]) == {"a100-80gb"} and set(reps["capacity"]) == {"spot"} and len(reps) == 2
    assert s["launches_failed"] == 1 and s["completed"] == 60  # (the second launch finds the H100 class backed off)
    price = r.meta["pools"]["online"]["fallback"][0]["supply"]["prices"]["spot"]["usd_per_gpu_hour"]
    assert price == pytest.approx(1.1582, abs=0.2)  # (the sheet's p4de median-AZ spot, about a third of on-demand)
    assert s["cost_usd"] == pytest.approx(float(s["billed_gpu_seconds"]) * price / 3600, rel=1e-9)


def test_a_fallback_that_cannot_serve_what_the_pool_serves_is_an_error():
    """A 60,000-token request fits an H100's KV cache but not an L4's: the fallback is refused, naming it."""
    trace = validate_frame(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [60_000], "output_tokens": [10]}), source="t")
    with pytest.raises(FleetsimError, match=r"fleet\.capacity\.fallback\.0: 1x l4 cannot serve 1 request"):
        simulate(scenario({"fallback": [{"gpu": "l4"}]}, replicas=1), trace, measure_capacity=False)


def test_a_spot_fallback_needs_the_pools_spot_block():
    with pytest.raises(ValueError, match=r"fallback\.0: spot capacity needs the pool's spot"):
        scenario({"fallback": [{"gpu": "a100-80gb", "capacity": "spot"}]})


def test_failures_strike_a_replica_by_its_gpu_count():
    """The failure rate is per GPU: a 2-GPU fallback replica fails twice as often as a 1-GPU one."""
    from sim.run.fleet.hazards import Hazards

    class _Pool:
        def __init__(self) -> None:
            self.on_launch: list = []

    capacity = scenario({"failures": {"gpu_mtbf_hours": 100.0}, "fallback": FALLBACK}).fleet.capacity
    h = Hazards(None, _Pool(), capacity, tp=1, rng=np.random.default_rng(0))  # type: ignore[arg-type]
    h.add_flavor(2, 0.0)
    assert h.fail_rates == pytest.approx([1 / 360_000, 2 / 360_000])


def test_the_same_seed_replays_a_run_with_fallbacks_and_losses():
    capacity = {
        "on_demand": {"max_replicas": 1, "launch_failure_probability": 0.5},
        "failures": {"gpu_mtbf_hours": 0.02},
        "fallback": FALLBACK,
        "backoff": {"initial_s": 5.0, "max_s": 20.0},
    }
    sc = scenario(capacity, lifecycle={"cold_start_s": 5.0})
    a = simulate(sc, frame(), measure_capacity=False)
    b = simulate(sc, frame(), measure_capacity=False)
    assert a.summary()["completed"] == 240 and a.summary()["replicas_failed"] > 0
    pd.testing.assert_frame_equal(a.replicas, b.replicas)
    pd.testing.assert_frame_equal(a.requests, b.requests)
