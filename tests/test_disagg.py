"""Disaggregated prefill/decode pools: the timing of one request by hand, FIFO link sharing, backpressure,
no KV leaks, conservation, fast-forward = per-step reference, cold starts, heterogeneous billing, routing."""

import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import FleetsimError
from sim.policies.router import LeastPromptTokens, least_kv_with_room
from sim.run.engine.sequence import Seq
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.conftest import views
from tests.test_engine_equivalence import assert_same_requests

A, D = 1e-4, 0.02  # constant step time: seconds per prefill token, per decode step
KV_BYTES = 32 * 8 * 128 * 2 * 2  # Llama-3.1-8B, 16-bit: layers x KV heads x head dim x (K, V) x bytes = 131,072


def scenario(*, prefill=None, decode=None, link=None, engine=None, step="constant", fleet=None, slo=None):
    st_ = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D} if step == "constant" else {"kind": "roofline"}
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "tp": 1,
                "mode": "disaggregated",
                "prefill": prefill or {},
                "decode": decode or {},
                "link": link or {"preset": "infiniband_400g"},
                **(fleet or {}),
            },
            "engine": {"policy": "chunked", "max_num_batched_tokens": 8192, "step_time": st_, **(engine or {})},
            "slo": slo or {},
        }
    )


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


def wire(prompt, gb_per_s=50.0, latency=2e-5, tp=1):
    return latency + prompt * KV_BYTES / (gb_per_s * 1e9 * tp)


def test_one_request_is_prefill_then_transfer_then_decode_by_hand():
    p, o = 1000, 5
    r = simulate(scenario(), frame([(0.0, p, o)]), measure_capacity=False).requests.iloc[0]
    first = p * A  # one prefill step of the whole prompt
    assert r["first_token_at_s"] == pytest.approx(first)
    assert r["transfer_start_at_s"] == pytest.approx(first)  # room at once: no wait
    assert r["transfer_end_at_s"] == pytest.approx(first + wire(p))
    assert r["completed_at_s"] == pytest.approx(first + wire(p) + (o - 1) * D)  # o - 1 decode steps on the decode replica
    assert r["replica_id"] != r["decode_replica_id"]


def test_the_link_bandwidth_scales_with_the_prefill_replicas_tp_and_its_preset():
    p = 4000
    kw = {"prefill": {"tp": 2}, "link": {"preset": "ethernet_100g"}}
    r = simulate(scenario(**kw), frame([(0.0, p, 3)]), measure_capacity=False).requests.iloc[0]
    assert r["transfer_end_at_s"] - r["transfer_start_at_s"] == pytest.approx(wire(p, 12.5, 1e-4, tp=2))


def test_transfers_from_one_prefill_replica_queue_first_come_first_served():
    p = 2000
    r = simulate(
        scenario(link={"gb_per_s_per_gpu": 1.0, "latency_s": 0.001}), frame([(0.0, p, 4), (0.0, p, 4)]), measure_capacity=False
    )
    q = r.requests
    one = 0.001 + p * KV_BYTES / 1e9
    first = 2 * p * A  # both prompts in one prefill step
    assert q["first_token_at_s"].tolist() == pytest.approx([first, first])
    assert q["transfer_end_at_s"].tolist() == pytest.approx([first + one, first + 2 * one])  # the second waits for the first
    assert r.summary()["p99_transfer_ms"] > one * 1000


def test_a_slow_link_and_a_small_decode_cache_push_back_instead_of_losing_requests():
    rng = np.random.default_rng(1)
    n = 300
    trace = frame(list(zip(np.sort(rng.uniform(0, 20, n)), rng.integers(200, 2000, n), rng.integers(2, 200, n), strict=True)))
    engines = []
    sc = scenario(
        decode={
            "engine": {
                "policy": "chunked",
                "num_gpu_blocks_override": 400,
                "max_num_batched_tokens": 8192,
                "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D},
            }
        },
        link={"gb_per_s_per_gpu": 2.0},
    )
    result = simulate(sc, trace, measure_capacity=False, observe=lambda env, replicas: engines.extend(replicas))
    s = result.summary()
    assert s["completed"] == n and s["rejected"] == 0  # nothing lost
    assert s["p99_transfer_wait_ms"] > 0 and result.meta["link"]["peak_transfers_waiting"] > 1  # transfers waited for room
    assert result.timeline["kv_transfers_waiting"].max() > 0  # and the timeline shows it
    q = result.requests
    assert np.all(q["transfer_start_at_s"] >= q["first_token_at_s"]) and np.all(q["transfer_end_at_s"] <= q["completed_at_s"])
    for e in engines:  # no KV block leaks in either pool, nothing held for a transfer
        assert e.kv.used == 0 and e.held_blocks == 0 and e.n_incoming == 0, e.role


def test_requests_and_tokens_are_conserved_and_one_token_requests_end_at_prefill():
    rng = np.random.default_rng(2)
    n = 400
    out = rng.integers(1, 100, n)
    out[:50] = 1
    trace = frame(list(zip(np.sort(rng.uniform(0, 30, n)), rng.integers(10, 3000, n), out, strict=True)))
    result = simulate(scenario(prefill={"autoscaler": {"policy": "fixed", "replicas": 2}}), trace, measure_capacity=False)
    q, s = result.requests, result.summary()
    assert s["completed"] == n
    # every token the engine emitted after a request's first has a gap (the transfer's wait and wire in its first)
    assert result.itl.count == int((out - 1).sum())
    single = q["output_tokens"] == 1
    assert q.loc[single, "decode_replica_id"].eq(-1).all() and q.loc[single, "transfer_end_at_s"].isna().all()
    assert s["kv_transfers"] == int((~single).sum())
    assert result.replicas["requests"].sum() == n + int((~single).sum())  # each on a prefill replica, most on a decode one too


@settings(
    max_examples=int(os.environ.get("FLEETSIM_EXAMPLES", "10")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_prefill=st.integers(1, 2),
    n_decode=st.integers(1, 3),
    decode_blocks=st.integers(120, 600),
    policy=st.sampled_from(["chunked", "prefill_first"]),
    gbps=st.sampled_from([0.5, 5.0, 50.0]),
)
def test_fast_forward_equals_the_per_step_reference_disaggregated(seed, n_prefill, n_decode, decode_blocks, policy, gbps):
    rng = np.random.default_rng(seed)
    n = 80
    trace = frame(list(zip(np.sort(rng.uniform(0, 10, n)), rng.integers(10, 1500, n), rng.integers(1, 80, n), strict=True)))

    def run(ff):
        eng = {"policy": policy, "fast_forward": ff, "max_num_batched_tokens": 2048, "step_time": {"kind": "roofline"}}
        return simulate(
            scenario(
                prefill={"autoscaler": {"policy": "fixed", "replicas": n_prefill}},
                decode={
                    "autoscaler": {"policy": "fixed", "replicas": n_decode},
                    "engine": {**eng, "num_gpu_blocks_override": decode_blocks},
                },
                link={"gb_per_s_per_gpu": gbps},
                engine=eng,
                step="roofline",
            ),
            trace,
            measure_capacity=False,
        )

    fast, slow = run(True), run(False)
    assert_same_requests(fast, slow)
    for col in ("transfer_start_at_s", "transfer_end_at_s"):
        x, y = fast.requests[col].to_numpy(), slow.requests[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)) and np.nanmax(np.abs(x - y), initial=0.0) <= 1e-9


def test_an_autoscaled_decode_pool_cold_starts_like_a_colocated_fleet():
    life = {"provision_s": 60, "image_pull_s": 30, "cold_start_s": None, "warmup_s": 10, "weights_from": "local_nvme"}
    life = {k: v for k, v in life.items() if v is not None}
    auto = {"policy": "queue", "min_replicas": 0, "max_replicas": 2, "initial_replicas": 0, "target_waiting": 4}
    sc = scenario(decode={"autoscaler": auto, "lifecycle": life})
    result = simulate(sc, frame([(0.0, 500, 10)]), measure_capacity=False)
    reps = result.replicas.set_index("pool")
    decode = reps.loc["decode"]
    colocated = parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "lifecycle": life, "autoscaler": auto}})
    colo = simulate(colocated, frame([(0.0, 500, 10)]), measure_capacity=False).replicas.iloc[0]
    assert decode["ready_at_s"] - decode["provision_at_s"] == pytest.approx(colo["ready_at_s"] - colo["provision_at_s"])
    r = result.requests.iloc[0]
    assert r["transfer_start_at_s"] == pytest.approx(decode["ready_at_s"])  # the transfer waited for the cold start
    assert result.summary()["p99_transfer_wait_ms"] > 90_000


def test_heterogeneous_pools_are_billed_at_their_own_gpus_and_prices():
    sc = scenario(
        prefill={"usd_per_gpu_hour": 4.0}, decode={"gpu": "a100-80gb", "tp": 2, "usd_per_gpu_hour": 1.5}, step="roofline"
    )
    result = simulate(sc, frame([(float(t), 800, 50) for t in range(20)]), measure_capacity=False)
    s = result.summary()
    pools, reps = s["by_pool"], result.replicas.set_index("pool")
    assert result.meta["pools"]["decode"]["gpu"] == "a100-80gb" and result.meta["pools"]["decode"]["tp"] == 2
    horizon = result.horizon_s
    assert pools["prefill"]["cost_usd"] == pytest.approx(math.ceil(horizon) * 4.0 / 3600)
    assert pools["decode"]["cost_usd"] == pytest.approx(math.ceil(horizon) * 2 * 1.5 / 3600)
    assert s["cost_usd"] == pytest.approx(pools["prefill"]["cost_usd"] + pools["decode"]["cost_usd"])
    assert s["billed_gpu_seconds"] == pytest.approx(3 * math.ceil(horizon))
    assert reps.loc["decode", "busy_s"] > 0


def test_the_routers_are_pure_and_break_ties_by_index():
    assert LeastPromptTokens().choose(views([0, 0, 0, 0], prompt=[5000, 1200, 1200, 9000]), Seq(0, 0.0, 1, 1), 0.0) == 1
    assert least_kv_with_room([0.2, 0.1, 0.05], [True, True, False]) == 1
    assert least_kv_with_room([0.2, 0.2], [True, True]) == 0
    assert least_kv_with_room([0.1], [False]) is None


def test_prefill_routing_balances_prompt_tokens():
    # one huge prompt then small ones: least prompt tokens sends the small ones elsewhere
    rows = [(0.0, 6000, 2)] + [(0.001 * i, 100, 2) for i in range(1, 6)]
    q = simulate(
        scenario(prefill={"autoscaler": {"policy": "fixed", "replicas": 2}}), frame(rows), measure_capacity=False
    ).requests
    big = q["replica_id"].iloc[0]
    assert (q["replica_id"].iloc[1:] != big).all()


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ({"link": {"preset": "carrier_pigeon"}}, "unknown link preset"),
        ({"decode": {"gpu": "no-such-gpu"}}, "fleet.decode"),
        ({"prefill": {"tp": 3}}, "fleet.prefill"),
    ],
)
def test_bad_disaggregated_configs_are_one_line_errors(fleet, message):
    with pytest.raises(FleetsimError, match=message) as err:
        base = scenario()
        raw = base.model_dump(mode="json")
        for key, value in fleet.items():
            raw["fleet"][key] = value
        simulate(parse_config(raw), frame([(0.0, 10, 2)]), measure_capacity=False)
    assert "\n" not in str(err.value)


def test_a_model_that_does_not_fit_the_decode_gpu_is_named():
    sc = parse_config(
        {
            "model": "llama-3.1-70b",
            "fleet": {"gpu": "h100-sxm", "tp": 4, "mode": "disaggregated", "decode": {"gpu": "l4", "tp": 1}},
        }
    )
    with pytest.raises(FleetsimError, match=r"fleet\.decode"):
        simulate(sc, frame([(0.0, 10, 2)]), measure_capacity=False)


def test_a_draining_replica_is_released_only_after_its_transfers_and_requests():
    # two replicas per pool until t = 10 s, then one: each pool drains a replica while slow transfers are still
    # leaving it (prefill: KV held) or on their way to it (decode: blocks reserved)
    rng = np.random.default_rng(4)
    n = 60
    trace = frame(list(zip(np.sort(rng.uniform(0, 5, n)), rng.integers(200, 3000, n), rng.integers(2, 80, n), strict=True)))
    auto = {
        "policy": "scheduled",
        "table": [{"at_s": 0, "replicas": 2}, {"at_s": 10, "replicas": 1}],
        "period_s": 1e6,
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 2,
        "interval_s": 1,
    }
    sc = scenario(prefill={"autoscaler": auto}, decode={"autoscaler": auto}, link={"gb_per_s_per_gpu": 0.2})
    result = simulate(sc, trace, measure_capacity=False)
    q, reps = result.requests, result.replicas.set_index("replica_id")
    assert result.summary()["completed"] == n
    assert reps["drain_at_s"].notna().sum() == 2  # one replica of each pool drained
    released = reps["released_at_s"]
    for _, r in q.iterrows():
        assert not released.get(r["replica_id"]) < r["transfer_end_at_s"]  # the prefill replica held the KV until sent
        assert not released.get(r["decode_replica_id"]) < r["completed_at_s"]
    drained = reps[reps["drain_at_s"].notna()]
    assert (drained["released_at_s"] > drained["drain_at_s"] + 1).all()  # it waited for its transfers


def test_the_html_report_shows_pools_and_transfers():
    from sim.results.html_report import render_html

    result = simulate(scenario(step="roofline"), frame([(float(t), 800, 20) for t in range(10)]), measure_capacity=False)
    page = render_html(result)
    assert 'id="pools"' in page and 'id="transfers"' in page and "prefill" in page and "decode" in page


def test_backpressure_on_a_ready_decode_pool_waits_instead_of_launching():
    """Transfers wait for room on the one ready decode replica; the activator launches a decode replica only when
    none is ready or starting (scale from zero), so below its autoscaler's ask the pool stays at one."""
    hold = {"policy": "scheduled", "min_replicas": 1, "max_replicas": 3, "initial_replicas": 1, "interval_s": 5,
            "table": [{"at_s": 0, "replicas": 1}]}  # fmt: skip
    engine = {"policy": "chunked", "num_gpu_blocks_override": 120, "max_num_batched_tokens": 8192,
              "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D}}  # fmt: skip
    sc = scenario(decode={"autoscaler": hold, "engine": engine})
    result = simulate(sc, frame([(0.01 * i, 1000, 100) for i in range(12)]), measure_capacity=False)
    assert result.summary()["completed"] == 12 and result.meta["link"]["peak_transfers_waiting"] > 1
    assert (result.replicas["pool"] == "decode").sum() == 1


def test_pools_with_their_own_gpus_need_not_fit_the_top_level_pair():
    """`fleet.gpu: l4, tp: 1` cannot hold Llama-3.1-70B, and no pool uses it when both give their own GPU and TP: the run
    goes on their setups; a pool that takes the pair is refused, named."""
    pools = {"prefill": {"gpu": "h100-sxm", "tp": 4}, "decode": {"gpu": "h100-sxm", "tp": 4}}
    raw = {
        "model": "llama-3.1-70b",
        "fleet": {"mode": "disaggregated", "gpu": "l4", "tp": 1, **pools},
        "trace": {
            "arrivals": {"process": "poisson", "rate_per_s": 2},
            "n_requests": 20,
            "prompt_tokens": {"dist": "uniform", "low": 16, "high": 2000},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 64},
        },
    }
    result = simulate(parse_config(raw), measure_capacity=False)
    assert result.summary()["completed"] == 20
    raw["fleet"]["decode"] = {"router": "least_kv"}  # (the decode pool now takes fleet.gpu and fleet.tp)
    with pytest.raises(FleetsimError, match=r"fleet\.decode: fleet\.gpu, fleet\.tp: llama-3\.1-70b does not fit on 1x l4"):
        simulate(parse_config(raw), measure_capacity=False)
