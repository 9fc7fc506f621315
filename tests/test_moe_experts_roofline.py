"""An MoE model's routed experts priced as a roofline of their own (`sim.physics.roofline.step_cost`): by hand on small
cases, never faster than one max over the step's sums, a dense model unchanged, and the engine's memoized price, its
decode runs and the calibration's vectorized model all the same arithmetic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.physics.roofline import (
    combine,
    expected_experts_touched,
    expert_bytes_read,
    resident_bytes_read,
    step_cost,
    weight_bytes_read,
)
from sim.run.engine.step_time import RooflineStepTime
from sim.scenario.config import EngineConfig, RooflineConfig
from sim.scenario.resolve import build_setup
from sim.studies.calibrate import predict, read_kernel_profile
from tests.conftest import make_setup

REPO = Path(__file__).resolve().parent.parent


def dp_setup(dp: int = 2, **kw):
    """Qwen3-30B-A3B as a DP group with expert parallelism over RTX PRO 6000s (the real run's layout)."""
    return build_setup(
        load_model_catalog().get("qwen3-30b-a3b-instruct-2507"),
        load_gpu_catalog().get("rtx-pro-6000-server"),
        tp=1,
        roofline=RooflineConfig(),
        engine=EngineConfig(max_num_seqs=128, max_num_batched_tokens=2048),
        dp=dp,
        expert_parallel=True,
        **kw,
    )


def test_a_prefill_chunk_by_hand():
    """2,048 prompt tokens of Qwen3-30B-A3B on one H100: the experts (128, top 8, every one touched) are a roofline of
    their own, the rest (attention, projections, router, embeddings, LM head) another; FLOPs and bytes reported whole."""
    s = make_setup("qwen3-30b-a3b", "h100-sxm", tp=1)
    m, n = s.model, 2048
    f, b, g = s.effective_flops_per_s, s.effective_hbm_bw_bytes_per_s, s.overlap
    cost = step_cost(s, n_tokens=n, attention_pairs=n * (n + 1) / 2, kv_read_tokens=0, logit_tokens=1)
    expert_flops = n * 2 * m.n_moe_layers * m.n_experts_per_tok * m.expert_params
    touched = m.n_experts * (1 - (1 - m.n_experts_per_tok / m.n_experts) ** n)
    assert touched == pytest.approx(m.n_experts)  # 2,048 tokens x 8 picks reach all 128
    expert_bytes = m.n_moe_layers * touched * m.expert_params * 2
    kv_bytes = s.kv_bytes_per_token * n
    assert cost.flops - expert_flops == pytest.approx(
        n * m.flops_per_token - expert_flops - (n - 1) * m.logit_flops_per_token + n * (n + 1) / 2 * m.attention_flops_per_pair
    )
    assert cost.bytes == pytest.approx(s.weight_bytes + kv_bytes)  # every weight read once
    assert cost.expert_compute_s == pytest.approx(expert_flops / f)
    assert cost.expert_memory_s == pytest.approx(expert_bytes / b)
    assert cost.compute_s == pytest.approx((cost.flops - expert_flops) / f)
    assert cost.memory_s == pytest.approx((s.weight_bytes - expert_bytes + kv_bytes) / b)
    # the rest is compute-bound, the experts memory-bound: each its own max, back to back
    assert cost.compute_s > cost.memory_s and cost.expert_memory_s > cost.expert_compute_s
    rest = cost.compute_s + (1 - g) * cost.memory_s
    experts = cost.expert_memory_s + (1 - g) * cost.expert_compute_s
    assert cost.time_s == pytest.approx(rest + experts + cost.comm_s + cost.overhead_s, rel=1e-12)
    one_max = combine(cost.compute_s + cost.expert_compute_s, cost.memory_s + cost.expert_memory_s, g)
    assert cost.time_s - one_max - cost.comm_s - cost.overhead_s > 0.05 * cost.time_s  # what one max hid


def test_the_weights_split_into_those_every_step_reads_and_the_touched_experts():
    for name in ("qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3", "gpt-oss-20b"):
        s = make_setup(name, "h200", tp=8) if name == "deepseek-v3" else make_setup(name, "h100-sxm", tp=2)
        m = s.model
        for n in (1, 7, 64, 4096):
            per_expert = m.expert_params * m.part_bits(s.weight_bits)[2] / 8
            assert expert_bytes_read(s, n) == pytest.approx(m.n_moe_layers * expected_experts_touched(m, n) * per_expert)
            assert resident_bytes_read(s) + expert_bytes_read(s, n) == pytest.approx(weight_bytes_read(s, n), rel=1e-12)
    dense = make_setup("llama-3.1-8b", "h100-sxm", tp=1)
    assert expert_bytes_read(dense, 100) == 0.0 and resident_bytes_read(dense) == weight_bytes_read(dense, 100)


def test_a_dense_step_is_one_roofline_as_before():
    s = make_setup("llama-3.1-70b", "h100-sxm", tp=4)
    cost = step_cost(s, n_tokens=600, attention_pairs=600 * 2000, kv_read_tokens=500 * 1000, logit_tokens=120)
    assert (cost.expert_compute_s, cost.expert_memory_s, cost.experts_s) == (0.0, 0.0, 0.0)
    assert cost.compute_s == cost.flops / (4 * s.effective_flops_per_s)
    assert cost.memory_s == cost.bytes / (4 * s.effective_hbm_bw_bytes_per_s)
    assert cost.time_s == combine(cost.compute_s, cost.memory_s, s.overlap) + cost.comm_s + cost.overhead_s


@settings(deadline=None, max_examples=150)
@given(
    st.sampled_from(["qwen3-30b-a3b", "mixtral-8x7b", "gpt-oss-120b", "qwen3-235b-a22b"]),
    st.integers(0, 2048),
    st.integers(0, 256),
    st.integers(0, 8000),
    st.sampled_from([0.0, 0.3, 0.71, 1.0]),
)
def test_experts_apart_are_never_faster_than_one_max(name, n_prefill, n_decode, ctx, overlap):
    """max(a, b) + g min(a, b) = (1 - g) max + g (a + b), and a sum of maxes is at least the max of the sums: pricing the
    experts apart never speeds a step, and leaves it as it was when both parts are bound by the same resource."""
    n = n_prefill + n_decode
    if n == 0:
        return
    tp = {"qwen3-235b-a22b": 8, "mixtral-8x7b": 2}.get(name, 1)
    s = dataclasses.replace(make_setup(name, "h100-sxm", tp=tp), overlap=overlap)
    pairs = n_decode * (ctx + 1) + n_prefill * (n_prefill + 1) / 2
    cost = step_cost(
        s,
        n_tokens=n,
        attention_pairs=pairs,
        kv_read_tokens=n_decode * ctx,
        logit_tokens=n_decode + (1 if n_prefill else 0),
        decode_seqs=n_decode,
        decode_context_tokens=n_decode * ctx,
    )
    one = combine(cost.compute_s + cost.expert_compute_s, cost.memory_s + cost.expert_memory_s, overlap)
    split = combine(cost.compute_s, cost.memory_s, overlap) + cost.experts_s
    assert split >= one * (1 - 1e-12)
    if (cost.compute_s >= cost.memory_s) == (cost.expert_compute_s >= cost.expert_memory_s) or overlap == 0.0:
        assert split == pytest.approx(one, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "group"),
    [("qwen3-30b-a3b", None), ("gpt-oss-20b", None), ("deepseek-v3", None), ("dp", None), ("dp", 300), ("dp", 2048)],
)
def test_the_engines_memoized_price_is_step_cost_to_the_bit(name, group):
    """The engine's step (the experts' seconds memoized with the communication's) gives step_cost's floats, FLOPs and
    bytes whole (MLA, FP8 and shared experts in DeepSeek-V3, MXFP4 experts and sliding windows in gpt-oss); a DP
    group's step too, by its group's tokens (`group_tokens`)."""
    if name == "dp":
        s = dp_setup()
    else:
        s = make_setup(name, "h200", tp=8) if name == "deepseek-v3" else make_setup(name, "h100-sxm", tp=1)
    model_time = RooflineStepTime(s)
    rng = np.random.default_rng(1)
    for _ in range(200):
        n_prefill, n_decode = int(rng.integers(0, 3000)), int(rng.integers(0, 200))
        if n_prefill + n_decode == 0:
            continue
        pairs, kv = int(rng.integers(0, 10**7)), int(rng.integers(0, 10**6))
        g = None if group is None else max(group, n_prefill + n_decode)
        for _repeat in range(2):
            dc = min(kv, n_decode * 3000)  # the decoders' cached tokens, of the KV read (the rest: prefill chunks')
            got = model_time.step(n_prefill, n_decode, pairs, kv, dc, None, None, g)
            cost = step_cost(
                s,
                n_tokens=n_prefill + n_decode,
                attention_pairs=pairs,
                kv_read_tokens=kv,
                decode_pairs=dc + n_decode,
                context_tokens=kv - dc,
                group_tokens=g,
                decode_seqs=n_decode,
                decode_context_tokens=dc,
            )
            assert got == (cost.time_s, cost.flops, cost.bytes)


@pytest.mark.parametrize("group", [None, 256])
def test_a_decode_run_prices_each_step_as_the_step_itself(group):
    """The fast-forward's closed form (`decode_line`, `run_work`) against the engine's steps one by one: the experts'
    seconds are the same every step of a run, so they ride in its fixed seconds."""
    s = dp_setup()
    model_time = RooflineStepTime(s)
    for n, ctx in [(1, 0), (16, 16 * 900), (128, 128 * 1500)]:
        line = model_time.decode_line(n_seqs=n, context_sum=ctx, group_tokens=group)
        total, flops, n_bytes = 0.0, 0.0, 0.0
        for j in range(50):
            c = ctx + n * j
            dt, fl, by = model_time.step(0, n, c + n, c, c, n, group_tokens=group)
            assert line.at(j) == pytest.approx(dt, rel=1e-12)
            total, flops, n_bytes = total + dt, flops + fl, n_bytes + by
        assert line.total(50) == pytest.approx(total, rel=1e-12)
        if group is None:  # (`decode_sum` prices a replica's own runs: a DP group's runs are its `decode_line`'s)
            assert model_time.decode_sum(n, ctx, 50) == pytest.approx(total, rel=1e-12)
        assert model_time.run_work(n, ctx, 50, group) == pytest.approx((flops, n_bytes), rel=1e-12)


def test_the_calibrations_vectorized_model_prices_the_experts_apart_too():
    folder = REPO / "benchmarks" / "kernels" / "rtxpro6000_qwen3-30b-a3b-instruct-2507_tp1"
    s = dataclasses.replace(dp_setup(dp=1), comm=False)
    shapes = read_kernel_profile(folder, s.model)
    direct = [
        sum(step_cost(s, n_tokens=n, attention_pairs=p, kv_read_tokens=kv, logit_tokens=g).time_s for n, p, kv, g in sh.steps)
        for sh in shapes
    ]
    assert predict(s, shapes) == pytest.approx(direct, rel=1e-12)
    # the profile's long prefills: within 10% of the kernels with the experts apart (16-26% fast as one max)
    err = {sh.label: t / sh.measured_s - 1 for sh, t in zip(shapes, direct, strict=True)}
    assert all(abs(err[f"prefill n=2048 ctx={c}"]) < 0.1 for c in (0, 1024, 4096))
