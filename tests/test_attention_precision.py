"""Attention at its own precision: vLLM runs a checkpoint's GEMMs in FP8 (or FP4) where the GPU has the tensor cores,
but its attention backends take BF16 queries and keys (FP8 ones with an FP8 KV cache, FlashAttention 3's FP8 path), so
attention's FLOPs run at the BF16 (or FP8) peak, not the GEMMs'. By hand: the factor for each precision pair; a
prefill step's compute seconds; the FLOPs counted unchanged. The engine's step model and `step_cost` agree float for
float (a dense model and MLA), its decode runs price each step as `step` does, and whole runs fast-forwarded equal the
per-step reference (plain, speculative, a DP group, MLA with MTP)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from sim.physics.hardware import load_gpu_catalog
from sim.physics.roofline import attention_dtype, attention_time_factor, decode_cost, prefill_cost
from sim.run.engine.step_time import RooflineStepTime
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from tests.conftest import make_setup
from tests.test_engine_equivalence import assert_same_requests, random_trace
from tests.test_host_overhead import FLEETS
from tests.test_mla import DCTX, N_DEC, mixed_step

GPUS = load_gpu_catalog()


def test_the_factor_is_the_gemms_peak_over_attentions():
    h100, b200, a100 = GPUS.get("h100-sxm"), GPUS.get("b200"), GPUS.get("a100-80gb")
    assert attention_time_factor(h100, "bf16", 16) == 1.0
    assert attention_time_factor(h100, "fp8", 16) == h100.fp8_flops_per_s / h100.bf16_flops_per_s  # 1,979 / 989
    assert attention_dtype(h100, "fp8", 8) == "fp8" and attention_time_factor(h100, "fp8", 8) == 1.0
    assert attention_time_factor(b200, "fp4", 16) == b200.fp4_flops_per_s / b200.bf16_flops_per_s  # 4x
    assert attention_time_factor(b200, "fp4", 8) == b200.fp4_flops_per_s / b200.fp8_flops_per_s  # 2x
    assert attention_time_factor(a100, "bf16", 8) == 1.0  # (an FP8 KV cache on a GPU without FP8: BF16 all through)
    # the setup derives it from its GPU, GEMM precision and KV bits: DeepSeek-V3 ships FP8, which an H200 runs W8A8
    assert make_setup("deepseek-v3", "h200", tp=8).attention_time_factor == pytest.approx(2.0, rel=1e-3)
    assert make_setup("deepseek-v3", "h200", tp=8, kv_bits=8).attention_time_factor == 1.0
    assert make_setup("llama-3.1-8b", "h100-sxm", tp=1).attention_time_factor == 1.0  # BF16 GEMMs


def test_a_prefills_compute_counts_attention_at_bf16():
    """One 8,192-token prompt of Llama-3.1-8B on an H100 with FP8 GEMMs: its compute seconds are the GEMMs' FLOPs
    plus twice attention's, at the FP8 rate; the FLOPs counted are the same as with BF16 attention."""
    fp8 = make_setup("llama-3.1-8b", "h100-sxm", tp=1, compute_dtype="fp8")
    same = make_setup("llama-3.1-8b", "h100-sxm", tp=1, compute_dtype="fp8", kv_bits=8)  # FP8 attention: factor 1
    n = 8192
    pairs = n * (n + 1) / 2
    attn = pairs * fp8.model.attention_flops_per_pair
    c, c8 = prefill_cost(fp8, prompt_tokens=n), prefill_cost(same, prompt_tokens=n)
    assert c.flops == c8.flops  # (the FLOPs counted: the step's own)
    r = fp8.attention_time_factor
    assert c.compute_s == pytest.approx((c.flops + (r - 1.0) * attn) / fp8.effective_flops_per_s, rel=1e-12)
    assert c8.compute_s == pytest.approx(c8.flops / same.effective_flops_per_s, rel=1e-12)
    assert 1.1 < c.compute_s / c8.compute_s < 1.2  # attention: an eighth of an 8K prompt's FLOPs, paid twice
    # a decode step is memory-bound: its time moves little, its FLOPs not at all
    d, d8 = decode_cost(fp8, batch=8, context_tokens=2000), decode_cost(same, batch=8, context_tokens=2000)
    assert d.flops == d8.flops
    assert d.compute_s > d8.compute_s


@pytest.mark.parametrize("model", ["llama-3.1-8b", "deepseek-v3"])
def test_the_engines_step_is_step_cost_float_for_float(model):
    setup = make_setup(model, "h200", tp=8, compute_dtype="fp8")
    assert setup.attention_time_factor != 1.0
    st, engine, cost = mixed_step(setup)
    assert engine == (cost.time_s, cost.flops, cost.bytes)
    n_dec, dctx = N_DEC, DCTX
    # a decode run: each step as `step` prices it, and the FLOPs it reports the steps' own
    line = st.decode_line(n_seqs=n_dec, context_sum=dctx)
    total = 0.0
    for j in range(4):
        c = dctx + n_dec * j
        one = st.step(0, n_dec, c + n_dec, c, c, n_dec)[0]
        assert line.at(j) == pytest.approx(one, rel=1e-12)
        total += one
    assert st.decode_sum(n_dec, dctx, 4) == pytest.approx(total, rel=1e-12)
    bf16 = RooflineStepTime(dataclasses.replace(setup, compute_dtype="bf16", effective_flops_per_s=setup.effective_flops_per_s))
    assert st.run_work(n_dec, dctx, 4) == bf16.run_work(n_dec, dctx, 4)


def run(*, fast_forward: bool, frame: pd.DataFrame, **extra):
    engine = {"max_num_seqs": 16, "max_num_batched_tokens": 512, "fast_forward": fast_forward, **extra.pop("engine", {})}
    fleet = {"gpu": "h100-sxm", "tp": 1, "autoscaler": {"policy": "fixed", "replicas": 1}, **extra.pop("fleet", {})}
    raw = {"model": extra.pop("model", "llama-3.1-8b"), "fleet": fleet, "engine": engine, "roofline": {"compute_dtype": "fp8"}}
    return simulate(parse_config(raw), frame, measure_capacity=False)


@pytest.mark.parametrize("extra", FLEETS[0], ids=FLEETS[1])
def test_fast_forward_matches_the_per_step_reference_with_attention_at_bf16(extra):
    frame = random_trace(11, 120, 12.0, max_prompt=1999, max_output=119)
    fast = run(fast_forward=True, frame=frame, **dict(extra))
    slow = run(fast_forward=False, frame=frame, **dict(extra))
    assert_same_requests(fast, slow)
