"""Weights at the precision a checkpoint ships in (config.json's quantization_config), FP8 GEMMs where the GPU has
them, and tensor parallelism across nodes priced over the scale-out network."""

from __future__ import annotations

import pytest

from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import MXFP4_BITS, load_model_catalog, model_from_hf_config, shipped_precision
from sim.physics.roofline import allreduce_time_s, expected_experts_touched, weight_bytes_read
from sim.scenario import vllm_args
from sim.scenario.config import LINK_PRESETS, RooflineConfig, parse_config
from sim.scenario.resolve import build_setup, resolve_scenario

MODELS = load_model_catalog()
GPUS = load_gpu_catalog()

TINY_MOE = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "intermediate_size": 128,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
}


def test_deepseek_v3_ships_in_fp8_with_bf16_embeddings_and_fits_on_eight_h200s():
    m = MODELS.get("deepseek-v3")
    assert (m.shipped_quant, m.shipped_bits, m.shipped_expert_bits) == ("fp8", 8.0, None)
    embed = m.embedding_params + m.lm_head_params
    assert m.weight_bytes(None) == pytest.approx(embed * 2 + (m.n_params - embed) * 1)
    assert m.weight_bytes(16) == m.n_params * 2  # a precision given applies to every weight
    setup = build_setup(m, GPUS.get("h200"), tp=8, roofline=RooflineConfig())
    assert setup.compute_dtype == "fp8" and setup.weight_words == "fp8 (as shipped)"
    with pytest.raises(FleetsimError, match="does not fit on 8x h200: weights at 16-bit"):
        build_setup(m, GPUS.get("h200"), tp=8, roofline=RooflineConfig(weight_bits=16))


def test_fp8_gemms_only_on_gpus_with_fp8_and_only_for_weights_as_shipped():
    m = MODELS.get("deepseek-v3")
    b200 = build_setup(m, GPUS.get("b200"), tp=8, roofline=RooflineConfig())
    assert b200.compute_dtype == "fp8"
    a100 = build_setup(m, GPUS.get("a100-80gb"), tp=16, roofline=RooflineConfig(), gpus_per_node=16)
    assert a100.compute_dtype == "bf16"  # no FP8 tensor cores: W8A16
    given = build_setup(m, GPUS.get("b200"), tp=8, roofline=RooflineConfig(compute_dtype="bf16"))
    assert given.compute_dtype == "bf16"
    dense = build_setup(MODELS.get("llama-3.1-8b"), GPUS.get("h100-sxm"), tp=1, roofline=RooflineConfig())
    assert dense.compute_dtype == "bf16" and dense.weight_words == "16-bit"
    assert dense.weight_bytes == dense.model.n_params * 2  # unchanged for a 16-bit checkpoint


def test_fp4_gemms_for_4_bit_weights_on_gpus_with_fp4_tensor_cores():
    """Blackwell runs an NVFP4 checkpoint W4A4 (FP4 GEMMs at twice FP8's rate); a weight-only 4-bit format (AWQ,
    GPTQ: W4A16) says `compute_dtype: bf16`; a GPU without FP4 tensor cores refuses FP4 maths; an override sets it."""
    m = MODELS.get("llama-3.1-70b")
    four = RooflineConfig(weight_bits=4)
    b200 = build_setup(m, GPUS.get("b200"), tp=1, roofline=four)
    assert b200.compute_dtype == "fp4" and b200.peak_flops_per_s == 9000e12
    assert b200.effective_flops_per_s == pytest.approx(9000e12 * GPUS.get("b200").mfu)
    assert build_setup(m, GPUS.get("b200"), tp=1, roofline=RooflineConfig(weight_bits=8)).compute_dtype == "bf16"
    w4a16 = build_setup(m, GPUS.get("b200"), tp=1, roofline=RooflineConfig(weight_bits=4, compute_dtype="bf16"))
    assert w4a16.compute_dtype == "bf16" and w4a16.weight_bytes == b200.weight_bytes
    from sim.physics.roofline import prefill_time_s

    assert prefill_time_s(b200, prompt_tokens=8192) < prefill_time_s(w4a16, prompt_tokens=8192)  # compute-bound: faster
    assert build_setup(m, GPUS.get("h100-sxm"), tp=2, roofline=four).compute_dtype == "bf16"  # Hopper: no FP4, W4A16
    with pytest.raises(FleetsimError, match="gpu h100-sxm: compute_dtype fp4 is not supported \\(no FP4 tensor cores\\)"):
        build_setup(m, GPUS.get("h100-sxm"), tp=2, roofline=RooflineConfig(weight_bits=4, compute_dtype="fp4"))
    sc = parse_config(
        {
            "model": "llama-3.1-70b",
            "fleet": {"gpu": "h100-sxm", "tp": 2},
            "roofline": {"weight_bits": 4, "gpu_overrides": {"h100-sxm": {"fp4_tflops": 4000}}},
        }
    )
    assert resolve_scenario(sc).peak_flops_per_s == 4000e12  # (a catalog entry of the user's: `fp4_tflops` too)


@pytest.mark.parametrize(
    ("qc", "expected"),
    [
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, ("fp8", 8.0, None)),
        ({"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}, ("mxfp4", 16.0, 4.25)),
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, ("awq", 4.0, None)),
        ({"quant_method": "gptq", "bits": 8}, ("gptq", 8.0, None)),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g0": {"weights": {"num_bits": 8}}}},
            ("compressed-tensors", 8.0, None),
        ),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, ("nvfp4", 4.5, None)),
        (None, None),
    ],
)
def test_quantization_configs_give_the_bits_per_weight(qc, expected):
    assert shipped_precision(qc, "t") == expected


def test_an_unknown_quantization_method_counts_as_16_bit_and_says_so():
    method, bits, experts = shipped_precision({"quant_method": "quark"}, "t")
    assert bits == 16.0 and experts is None and "not known: counted as 16-bit" in method
    with pytest.raises(FleetsimError, match="quantization_config' must be an object"):
        shipped_precision("fp8", "t")


def test_mxfp4_experts_are_read_at_their_bits_and_the_rest_at_16():
    m = model_from_hf_config({**TINY_MOE, "quantization_config": {"quant_method": "mxfp4"}}, name="tiny")
    assert (m.shipped_bits, m.shipped_expert_bits) == (16.0, MXFP4_BITS)
    rest = m.n_params - m.routed_expert_params
    assert m.weight_bytes(None) == pytest.approx(rest * 2 + m.routed_expert_params * MXFP4_BITS / 8)
    gpu = GPUS.get("h100-sxm")
    setup = build_setup(m, gpu, tp=1, roofline=RooflineConfig())
    touched = expected_experts_touched(m, 3) * m.n_moe_layers * m.expert_params
    assert weight_bytes_read(setup, 3) == pytest.approx(rest * 2 + touched * MXFP4_BITS / 8)
    dense_mx = model_from_hf_config(
        {k: v for k, v in TINY_MOE.items() if "expert" not in k} | {"quantization_config": {"quant_method": "mxfp4"}}, name="d"
    )
    assert (dense_mx.shipped_bits, dense_mx.shipped_expert_bits) == (MXFP4_BITS, None)  # a dense model: its linear layers


def test_tensor_parallelism_across_nodes_is_priced_over_the_scale_out_network():
    m, gpu = MODELS.get("llama-3.1-405b"), GPUS.get("h100-sxm")
    inside = build_setup(m, gpu, tp=8, roofline=RooflineConfig(weight_bits=8))
    across = build_setup(m, gpu, tp=16, roofline=RooflineConfig())
    n_bytes = 1e6
    assert inside.allreduce_s(n_bytes) == allreduce_time_s(gpu, tp=8, n_bytes=n_bytes)
    bw, lat, _ = LINK_PRESETS["infiniband_400g"]
    assert across.n_nodes == 2
    assert across.allreduce_s(n_bytes) == pytest.approx(lat + 2 * 15 / 16 * n_bytes / (bw * 1e9))
    one_node = build_setup(m, gpu, tp=16, roofline=RooflineConfig(), gpus_per_node=16)  # an NVL16-class node
    assert one_node.allreduce_s(n_bytes) == allreduce_time_s(gpu, tp=16, n_bytes=n_bytes) < across.allreduce_s(n_bytes)
    sc = parse_config({"model": "llama-3.1-405b", "fleet": {"gpu": "h100-sxm", "tp": 16, "scale_out": "roce_200g"}, "engine": {}})
    slow = resolve_scenario(sc)
    assert slow.scale_out_bytes_per_s == LINK_PRESETS["roce_200g"][0] * 1e9
    with pytest.raises(FleetsimError, match="unknown link preset"):
        parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "scale_out": "carrier_pigeon"}})


@pytest.mark.parametrize(
    ("name", "total_b", "active_b", "rel"),
    [
        # the model cards' counts (active: with the LM head, without the input embedding, as OpenAI and DeepSeek count)
        ("qwen3-235b-a22b", 235.0, 22.0, 0.01),  # "235B total, 22B activated"
        ("gpt-oss-20b", 20.91, 3.61, 0.005),  # "20.91B total / 3.61B active" (expert biases and sinks not counted)
        ("gpt-oss-120b", 116.83, 5.13, 0.005),
        ("deepseek-r1", 671.0, 36.6, 0.01),  # README_WEIGHTS: main model 671B, 36.6B activated
        ("kimi-k2", 1000.0, 32.0, 0.05),  # "1T total / 32B activated"
    ],
)
def test_the_moe_catalog_counts_match_the_model_cards(name, total_b, active_b, rel):
    m = MODELS.get(name)
    assert m.n_params / 1e9 == pytest.approx(total_b, rel=rel)
    assert (m.n_active_params - m.embedding_params) / 1e9 == pytest.approx(active_b, rel=max(rel, 0.02))


# --- data parallelism over an MoE model's experts (fleet.dp, fleet.expert_parallel) -----------------------------------
def dp_setup(model, *, dp, ep, tp=1, gpu="h100-sxm", imbalance=1.0):
    sc = parse_config(
        {
            "model": model,
            "fleet": {"gpu": gpu, "tp": tp, "dp": dp, "expert_parallel": ep, "expert_load_imbalance": imbalance},
        }
    )
    return resolve_scenario(sc)


def test_a_dense_models_dp_ranks_are_plain_replicas():
    from sim.physics.roofline import step_cost

    one, two = dp_setup("llama-3.1-8b", dp=1, ep=False), dp_setup("llama-3.1-8b", dp=2, ep=False)
    assert two.moe_group == two.tp == 1 and two.weight_bytes == one.weight_bytes
    args = {"n_tokens": 37, "attention_pairs": 37 * 900, "kv_read_tokens": 37 * 900, "logit_tokens": 37}
    assert step_cost(two, **args) == step_cost(one, **args)


def test_dp_ranks_of_an_moe_model_share_its_experts_by_hand():
    m = MODELS.get("qwen3-30b-a3b")
    one, two = dp_setup("qwen3-30b-a3b", dp=1, ep=False), dp_setup("qwen3-30b-a3b", dp=2, ep=True)
    experts = m.routed_expert_params * 2  # bytes at 16 bits
    assert two.moe_group == 2 and two.expert_share == 0.5
    assert two.weight_bytes == pytest.approx(one.weight_bytes - experts / 2)
    n = 5
    always = one.weight_bytes - experts
    touched = m.n_moe_layers * expected_experts_touched(m, n * 2) * m.expert_params * 2
    assert weight_bytes_read(two, n) == pytest.approx(always + touched / 2)
    from sim.physics.roofline import kv_capacity_tokens

    assert kv_capacity_tokens(two) > kv_capacity_tokens(one)  # the experts' half freed for KV


def test_the_token_exchange_by_hand():
    m, gpu = MODELS.get("qwen3-30b-a3b"), GPUS.get("h100-sxm")
    n, k, h, e = 64, m.n_experts_per_tok, m.hidden_size, m.n_experts
    bw, lat = 280e9, gpu.allreduce_latency_s  # NCCL's measured bus bandwidth on H100 NVLink (the catalog's)
    assert gpu.collective_bw_bytes_per_s == bw
    # vLLM's default exchange (allgather_reducescatter), expert parallel or not: the group's hidden states and router
    # logits gathered onto every GPU, the outputs reduce-scattered back, each a ring moving 3/4 of the group's tokens
    for ep in (True, False):
        ag = dp_setup("qwen3-30b-a3b", dp=4, ep=ep)
        gathered = 4 * n * (h * 2 + e * 2) * 3 / 4  # hidden states and router logits, 16-bit
        scattered = 4 * n * h * 2 * 3 / 4
        assert ag.moe_exchange_s(n) == pytest.approx(2 * lat + (gathered + scattered) / bw)
        assert ag.comm_s(n) == pytest.approx(m.n_moe_layers * ag.moe_exchange_s(n))  # (tp 1: no all-reduce)
        # the group's own tokens, when its ranks carry different ones: 100 in all
        assert ag.moe_exchange_s(n, 100) == pytest.approx(2 * lat + 100 * (4 * h + 2 * e) * 3 / 4 / bw)
    # DeepEP (a per-destination dispatch): each token sent once to each other GPU one of its top-8 experts is on
    ll = parse_config(
        {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "dp": 4, "expert_parallel": True,
                                             "all2all_backend": "deepep_low_latency"}}
    )  # fmt: skip
    deep = resolve_scenario(ll)
    miss = 1.0
    for i in range(k):  # none of a token's 8 experts among another GPU's 32 of 128
        miss *= (e - 32 - i) / (e - i)
    assert deep.remote_expert_gpus == pytest.approx(3 * (1 - miss))
    assert deep.moe_exchange_s(n) == pytest.approx(2 * lat + 2 * n * deep.remote_expert_gpus * h * 2 / bw)
    # two GPUs: a token's 8 experts are almost surely on both, so it crosses once, not k (G-1)/G = 4 times
    assert dp_setup("qwen3-30b-a3b", dp=2, ep=True).remote_expert_gpus == pytest.approx(1.0, abs=0.005)
    tpep = dp_setup("qwen3-30b-a3b", dp=2, ep=True, tp=2)
    ar = tpep.allreduce_s(n * h * 2)
    assert tpep.comm_s(n) == pytest.approx((2 * m.n_layers - m.n_moe_layers) * ar + m.n_moe_layers * tpep.moe_exchange_s(n))
    wide = dp_setup("qwen3-30b-a3b", dp=16, ep=True)  # 16 GPUs: two nodes, over the scale-out network
    bw_out, lat_out, _ = LINK_PRESETS["infiniband_400g"]
    assert wide.moe_exchange_s(n) == pytest.approx(2 * lat_out + 16 * n * (4 * h + 2 * e) * 15 / 16 / (bw_out * 1e9))
    with pytest.raises(FleetsimError, match=r"fleet\.all2all_backend: pplx dispatches tokens to whole experts"):
        resolve_scenario(
            parse_config({"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "dp": 2, "all2all_backend": "pplx"}})
        )


def test_expert_parallel_needs_experts_that_divide_over_the_group():
    with pytest.raises(FleetsimError, match="not a mixture-of-experts model"):
        dp_setup("llama-3.1-8b", dp=2, ep=True)
    with pytest.raises(FleetsimError, match="128 experts of qwen3-30b-a3b do not divide over dp x tp = 3"):
        dp_setup("qwen3-30b-a3b", dp=3, ep=True)


def test_a_dp_expert_parallel_fleet_conserves_and_fast_forward_matches_the_per_step_reference():
    import numpy as np
    import pandas as pd

    from sim.run.simulate import simulate
    from sim.workload import validate_frame

    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 20, 60))
    trace = validate_frame(
        pd.DataFrame({"arrival_at_s": t, "prompt_tokens": rng.integers(50, 2000, 60), "output_tokens": rng.integers(2, 300, 60)}),
        source="test",
    )
    runs = []
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "qwen3-30b-a3b",
                "fleet": {"gpu": "h100-sxm", "dp": 2, "expert_parallel": True, "autoscaler": {"policy": "fixed", "replicas": 2}},
                "engine": {"fast_forward": ff, "max_num_seqs": 16},
            }
        )
        r = simulate(sc, trace, measure_capacity=False)
        assert r.summary()["completed"] == 60 and r.itl.count == int((trace["output_tokens"] - 1).sum())
        runs.append(r.requests)
    pd.testing.assert_series_equal(runs[0]["completed_at_s"], runs[1]["completed_at_s"], rtol=1e-9)


def test_an_expert_load_imbalance_slows_the_hottest_gpu_by_hand():
    from sim.physics.roofline import step_cost
    from sim.run.engine.step_time import RooflineStepTime

    m, gpu = MODELS.get("qwen3-30b-a3b"), GPUS.get("h100-sxm")
    even, hot = dp_setup("qwen3-30b-a3b", dp=4, ep=True), dp_setup("qwen3-30b-a3b", dp=4, ep=True, imbalance=2.5)
    n, k, h = 512, m.n_experts_per_tok, m.hidden_size
    bw, lat = gpu.collective_bw_bytes_per_s, gpu.allreduce_latency_s
    # an all-gather moves every token whatever its experts: the exchange is the same
    assert hot.moe_exchange_s(n) == even.moe_exchange_s(n)
    # a per-destination dispatch: the hottest GPU receives 2.5x the mean, and its exchange sets the layer's
    deep = resolve_scenario(
        parse_config(
            {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "dp": 4, "expert_parallel": True,
                                                 "expert_load_imbalance": 2.5, "all2all_backend": "pplx"}}
        )
    )  # fmt: skip
    assert deep.moe_exchange_s(n) == pytest.approx(2 * lat + 2 * 2.5 * n * deep.remote_expert_gpus * h * 2 / bw)
    # and computes 2.5x the mean of the routed experts' FLOPs: 1.5x more than uniform routing, in time only
    routed = 2 * m.n_moe_layers * k * m.expert_params
    assert hot.hot_expert_flops_per_token == pytest.approx(1.5 * routed) and even.hot_expert_flops_per_token == 0
    args = {"n_tokens": n, "attention_pairs": n * (n + 1) / 2, "kv_read_tokens": 0, "logit_tokens": 1}
    a, b = step_cost(even, **args), step_cost(hot, **args)
    assert b.flops == a.flops and b.bytes == a.bytes
    # (in the routed experts' own roofline, `step_cost`: the rest of the step is the same)
    assert b.expert_compute_s == pytest.approx(a.expert_compute_s + n * 1.5 * routed / even.effective_flops_per_s)
    assert b.compute_s == a.compute_s and b.time_s > a.time_s
    # the engine's step-time model prices it operation for operation as step_cost does, and its decode runs too
    rt = RooflineStepTime(hot)
    assert rt.step(n, 0, args["attention_pairs"], 0, 0, 1)[0] == pytest.approx(b.time_s, rel=1e-12)
    line = rt.decode_line(n_seqs=64, context_sum=64 * 500)
    assert line.total(1) == pytest.approx(rt.step(0, 64, 64 * 501, 64 * 500, 64 * 500, 64)[0], rel=1e-12)
    assert rt.run_work(64, 64 * 500, 3)[0] == RooflineStepTime(even).run_work(64, 64 * 500, 3)[0]  # FLOPs: the tokens'


def test_an_expert_load_imbalance_needs_expert_parallelism_and_at_most_the_groups_gpus():
    with pytest.raises(FleetsimError, match=r"fleet.expert_load_imbalance: .* apply with fleet.expert_parallel"):
        dp_setup("qwen3-30b-a3b", dp=2, ep=False, imbalance=1.5)
    with pytest.raises(FleetsimError, match="hottest of dp x tp = 2 GPUs gets at most 2x the mean"):
        dp_setup("qwen3-30b-a3b", dp=2, ep=True, imbalance=2.5)


def test_a_weight_only_4_bit_method_imports_16_bit_maths():
    """AWQ and GPTQ are W4A16 (BF16 GEMMs, even on a GPU with FP4 tensor cores); an NVFP4 checkpoint runs W4A4."""
    assert vllm_args.map_options({"quantization": "awq"}, "x").values == {
        "roofline.weight_bits": 4,
        "roofline.compute_dtype": "bf16",
    }
    assert vllm_args.map_options({"quantization": "modelopt_fp4"}, "x").values == {"roofline.weight_bits": 4}
