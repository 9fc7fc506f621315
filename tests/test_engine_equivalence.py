"""Fast-forward vs the per-step reference: identical per-request timestamps (<= 1e-9 s) and
preemption counts, for both policies, under KV pressure that forces preemption (property test)."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame


def scenario(*, policy, fast_forward, n_blocks, max_num_seqs, budget, kind, watermark=0.01, admission="first_chunk"):
    step_time = (
        {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02} if kind == "constant" else {"kind": "roofline"}
    )
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb", "tp": 1},
            "engine": {
                "policy": policy,
                "fast_forward": fast_forward,
                "num_gpu_blocks_override": n_blocks,
                "max_num_seqs": max_num_seqs,
                "max_num_batched_tokens": budget,
                "block_size": 16,
                "watermark": watermark,
                "admission": admission,
                "step_time": step_time,
            },
        }
    )


def random_trace(seed, n, rate, max_prompt, max_output):
    rng = np.random.default_rng(seed)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(1 / rate, n)),
                "prompt_tokens": rng.integers(1, max_prompt + 1, n),
                "output_tokens": rng.integers(1, max_output + 1, n),
            }
        )
    )


def both_modes(trace, **kw):
    fast = simulate(scenario(fast_forward=True, **kw), trace)
    slow = simulate(scenario(fast_forward=False, **kw), trace)
    return fast, slow


def assert_same_requests(fast, slow):
    """Every request's instants within 1e-9 s, its preemptions, status and replica; the same engine steps."""
    a, b = fast.requests, slow.requests
    for col in ("scheduled_at_s", "first_token_at_s", "completed_at_s"):
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        ok = ~np.isnan(x)
        assert np.max(np.abs(x[ok] - y[ok]), initial=0.0) <= 1e-9, col
    assert a["n_preemptions"].tolist() == b["n_preemptions"].tolist()
    assert a["status"].tolist() == b["status"].tolist()
    assert a["replica_id"].tolist() == b["replica_id"].tolist()
    assert fast.summary()["n_steps"] == slow.summary()["n_steps"]


def assert_same(fast, slow):
    assert_same_requests(fast, slow)
    rf, rs = fast.replicas.iloc[0], slow.replicas.iloc[0]
    for attr in ("busy_s", "prefill_busy_s", "decode_busy_s", "flops", "bytes"):
        x, y = rf[attr], rs[attr]
        assert abs(x - y) <= 1e-9 * max(1.0, abs(y)), attr


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    rate=st.floats(0.5, 50),
    policy=st.sampled_from(["prefill_first", "chunked"]),
    kind=st.sampled_from(["roofline", "constant"]),
    n_blocks=st.integers(8, 40),
    max_num_seqs=st.integers(1, 12),
    max_prompt=st.integers(1, 150),
    max_output=st.integers(1, 120),
    watermark=st.sampled_from([0.0, 0.01, 0.1, 0.3]),
    admission=st.sampled_from(["first_chunk", "whole_prompt"]),
)
def test_fast_forward_matches_per_step(
    seed, n, rate, policy, kind, n_blocks, max_num_seqs, max_prompt, max_output, watermark, admission
):
    budget = 160 if policy == "prefill_first" else 48
    trace = random_trace(seed, n, rate, max_prompt, max_output)
    fast, slow = both_modes(
        trace,
        policy=policy,
        n_blocks=n_blocks,
        max_num_seqs=max_num_seqs,
        budget=budget,
        kind=kind,
        watermark=watermark,
        admission=admission,
    )
    assert_same(fast, slow)


def test_kv_pressure_forces_preemption_and_modes_agree():
    trace = random_trace(1, 60, 20.0, 120, 120)
    for policy in ("prefill_first", "chunked"):
        fast, slow = both_modes(trace, policy=policy, n_blocks=20, max_num_seqs=16, budget=160, kind="roofline")
        assert fast.summary()["n_preemptions"] > 0
        assert_same(fast, slow)
        assert fast.summary()["n_events"] < slow.summary()["n_events"]


def test_itl_summary_is_exact_in_both_modes():
    trace = random_trace(3, 80, 5.0, 200, 200)
    fast, slow = both_modes(trace, policy="chunked", n_blocks=400, max_num_seqs=8, budget=64, kind="roofline")
    sf, ss = fast.summary(), slow.summary()
    for key in ("mean_itl_ms", "median_itl_ms", "std_itl_ms", "p90_itl_ms", "p99_itl_ms"):
        assert abs(sf[key] - ss[key]) <= 1e-6, key
    # and the per-step record's explicit gaps give numpy's own figures
    gaps = slow.itl.singles * 1000
    assert slow.itl.a.size == 0
    assert abs(np.percentile(gaps, 99) - ss["p99_itl_ms"]) <= 1e-9
    assert abs(np.mean(gaps) - ss["mean_itl_ms"]) <= 1e-9
