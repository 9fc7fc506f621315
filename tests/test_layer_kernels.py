"""The per-layer overhead by a layer's kernels (`ModelSpec.layer_kernels`, `RooflineSetup.layer_units`): a Llama layer
is the unit the overhead is fitted on, a layer of more kernels (MLA, an MoE block, shared experts, per-head q/k norms,
activation quantization) costs proportionally more, and every step path prices it alike."""

from __future__ import annotations

import dataclasses

import pytest

from sim.physics.models import REF_LAYER_KERNELS, load_model_catalog
from sim.physics.roofline import decode_cost, fixed_overhead_s, prefill_cost
from sim.run.engine.step_time import RooflineStepTime
from tests.conftest import make_setup

CATALOG = load_model_catalog()


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-70b", "llama-2-70b", "mistral-7b"])
def test_a_llama_layer_is_the_unit(name):
    """A Llama (or Mistral) layer: 2 norms, qkv, rotary, KV write, attention, o, gate_up, activation, down: the
    overhead's own unit, so the model's units are its layer count exactly and every BF16 Llama figure is as before."""
    m = CATALOG.get(name)
    assert m.layer_kernels(False) == REF_LAYER_KERNELS == 10
    assert m.layer_units() == m.n_layers
    s = make_setup(name, "h100-sxm", tp=1 if m.n_params < 20e9 else 4)
    assert s.layer_units == m.n_layers
    assert fixed_overhead_s(s) == m.n_layers * s.layer_overhead_s + s.step_overhead_s


def test_counts_by_hand():
    """DeepSeek-V3 (MLA with a q LoRA, 3 dense layers, 58 MoE layers of 256 experts with a biased grouped top-k and one
    shared expert), Qwen3 (per-head q/k norms), Qwen3-MoE (128 experts) and Mixtral (8), counted from vLLM 0.19's code."""
    ds = CATALOG.get("deepseek-v3")
    # MLA: q_a(+kv_a), q_a norm, q_b, kv_a norm, rotary, W_UK, cache write, attention, W_UV, o = 10
    assert ds.layer_kernels(False) == 2 + 10 + 3
    # MoE: router, top-k (2: noaux_tc), align (2: past 64 experts), w13, activation, w2, sum, copy = 10; shared: 3
    assert ds.layer_kernels(True) == 2 + 10 + 10 + 3
    # FP8 activations the norms do not absorb: o and down | o, the experts' two and the shared experts' two
    assert ds.layer_kernels(False, True) == 15 + 2
    assert ds.layer_kernels(True, True) == 25 + 1 + 2 + 2
    assert ds.layer_units(True) == pytest.approx((3 * 17 + 58 * 30) / 10)
    assert ds.layer_units() == pytest.approx((3 * 15 + 58 * 25) / 10)
    q = CATALOG.get("qwen3-32b")
    assert q.layer_kernels(False) == 11 and q.layer_units() == pytest.approx(1.1 * q.n_layers)
    qm = CATALOG.get("qwen3-30b-a3b")
    assert qm.layer_kernels(True) == 2 + 6 + 9 and qm.layer_units() == pytest.approx(1.7 * qm.n_layers)
    # a model whose layers are all MoE: no dense layer enters its units
    assert qm.n_moe_layers == qm.n_layers
    mx = CATALOG.get("mixtral-8x7b")  # 8 experts: one top-k kernel, one alignment kernel
    assert mx.layer_kernels(True) == 2 + 5 + 8


def test_top_k_and_alignment_kernels_follow_the_expert_count():
    """topk_softmax takes a second kernel for an expert count that is not a power of two (up to 256); the alignment by
    expert a second past 64 experts."""
    qm = CATALOG.get("qwen3-30b-a3b")
    base = qm.layer_kernels(True)
    assert dataclasses.replace(qm, n_experts=64).layer_kernels(True) == base - 1
    assert dataclasses.replace(qm, n_experts=96).layer_kernels(True) == base + 1
    assert dataclasses.replace(qm, n_experts=512).layer_kernels(True) == base


def test_mla_without_a_q_lora_has_one_kernel_fewer():
    ds = CATALOG.get("deepseek-v3")
    lite = dataclasses.replace(ds, mla=dataclasses.replace(ds.mla, q_lora_rank=0))
    assert lite.layer_kernels(True) == ds.layer_kernels(True) - 1
    assert lite.layer_kernels(True, True) == ds.layer_kernels(True, True) - 1


def test_activation_quantization_follows_the_gemms_precision():
    """FP8 GEMMs quantize the linear inputs no norm absorbs (the o and down projections' in a Llama layer); BF16 GEMMs
    (weight-only quantization) quantize nothing."""
    fp8 = make_setup("deepseek-v3", "h200", tp=8)
    assert fp8.compute_dtype == "fp8"
    assert fp8.layer_units == pytest.approx(CATALOG.get("deepseek-v3").layer_units(True))
    llama = make_setup("llama-3.1-8b", "h100-sxm", tp=1, compute_dtype="fp8")
    assert llama.layer_units == pytest.approx(1.2 * 32)
    bf16 = make_setup("llama-3.1-8b", "h100-sxm", tp=1)
    assert bf16.layer_units == 32


@pytest.mark.parametrize(
    ("name", "gpu", "tp"), [("deepseek-v3", "h200", 8), ("qwen3-30b-a3b", "h100-sxm", 1), ("qwen3-32b", "h100-sxm", 2)]
)
def test_every_step_path_prices_the_units(name, gpu, tp):
    """The physics' step_cost and the engine's memoized step both add layer_units x layer_overhead_s, float for
    float, for a prefill and a decode."""
    s = make_setup(name, gpu, tp=tp)
    zero = dataclasses.replace(s, layer_overhead_s=0.0)
    assert s.layer_units > s.model.n_layers
    for cost in (lambda x: prefill_cost(x, prompt_tokens=700), lambda x: decode_cost(x, batch=12, context_tokens=900)):
        assert cost(s).time_s - cost(zero).time_s == pytest.approx(s.layer_units * s.layer_overhead_s, rel=1e-9)
    for args in ((700, 0, 700 * 701 / 2, 0.0), (0, 12, 12 * 901, 12 * 900)):
        with_units, without = RooflineStepTime(s).step(*args)[0], RooflineStepTime(zero).step(*args)[0]
        assert with_units - without == pytest.approx(s.layer_units * s.layer_overhead_s, rel=1e-9)


def test_deepseek_v3_decode_against_a_published_server():
    """SemiAnalysis InferenceX (PR #3173): DeepSeek-R1-0528 (DeepSeek-V3's architecture, FP8) on 8x H200 at TP 8,
    SGLang v0.5.12, 1K in / 1K out, measured a TPOT of 9.7, 15.3 and 29.8 ms at 4, 16 and 64 concurrent requests. The
    roofline (1,500 tokens of context each) prices its steps within 16% of them: a regression bound (with a Llama
    layer's overhead for every layer it read 42%, 24% and 24% fast)."""
    s = make_setup("deepseek-v3", "h200", tp=8)
    for batch, measured_s in ((4, 9.7e-3), (16, 15.3e-3), (64, 29.8e-3)):
        priced = decode_cost(s, batch=batch, context_tokens=1500).time_s
        assert abs(priced / measured_s - 1) < 0.16, (batch, priced)
        flat = decode_cost(
            dataclasses.replace(s, layer_overhead_s=s.layer_overhead_s * s.model.n_layers / s.layer_units),
            batch=batch,
            context_tokens=1500,
        ).time_s
        assert flat / measured_s - 1 < -0.2, (batch, flat)


def test_family_kernels_by_model_type():
    """Gemma 2/3's four norms, Llama 4's q/k norm, Kimi K2's biased grouped top-k, an expert count past 256 (one top-k
    kernel whatever it is), Qwen2-MoE's gated shared expert sized by `shared_expert_intermediate_size` alone, and a
    model_type spelt in capitals."""
    llama = CATALOG.get("llama-3.1-8b")
    assert dataclasses.replace(llama, model_type="gemma2").layer_kernels(False) == 12
    assert dataclasses.replace(llama, model_type="gemma3_text").layer_kernels(False) == 12 + 1  # and q/k norms
    scout = CATALOG.get("llama-4-scout")  # 16 experts, one shared: one top-k and one alignment kernel
    assert scout.model_type.startswith("llama4") and scout.layer_kernels(True) == 2 + 6 + 8 + 3
    kimi = CATALOG.get("kimi-k2")  # 384 experts: biased grouped top-k (2), alignment past 64 (2)
    assert kimi.layer_kernels(True) == 2 + 10 + 10 + 3
    assert dataclasses.replace(kimi, model_type="deepseek_v2").layer_kernels(True) == 2 + 10 + 9 + 3  # 384 > 256: 1
    qm = CATALOG.get("qwen3-30b-a3b")
    qwen2 = dataclasses.replace(qm, model_type="qwen2_moe", n_experts=60, shared_expert_intermediate_size=5632)
    assert qwen2.n_shared_experts == 0
    # router, top-k (60: two), alignment, w13, act, w2, sum, copy = 9; shared 3 and its gate 1
    assert qwen2.layer_kernels(True) == 2 + 5 + 9 + 4
    assert qwen2.layer_kernels(True, True) == qwen2.layer_kernels(True) + 1 + 2 + 2
    assert dataclasses.replace(qm, model_type="Qwen3_MoE").layer_kernels(True) == qm.layer_kernels(True)


def test_fp4_gemms_quantize_their_inputs_too():
    """W4A4 (FP4 GEMMs on a Blackwell part, `weight_bits: 4`) quantizes as W8A8 does."""
    fp4 = make_setup("llama-3.1-8b", "b200", tp=1, weight_bits=4)
    assert fp4.compute_dtype == "fp4"
    assert fp4.layer_units == pytest.approx(1.2 * 32)
