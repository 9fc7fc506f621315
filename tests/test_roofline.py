"""Exact roofline values on a small made-up model and GPU, computed by hand."""

from dataclasses import replace

import pytest

from sim.errors import FleetsimError
from sim.physics.hardware import UNMEASURED_LINK_SHARE, GpuSpec
from sim.physics.models import model_from_hf_config
from sim.physics.roofline import (
    RooflineSetup,
    allreduce_time_s,
    check_fits,
    decode_cost,
    decode_step_time_s,
    expected_experts_touched,
    kv_capacity_tokens,
    prefill_cost,
    step_cost,
    weight_bytes_read,
)
from tests.conftest import make_setup

# d=64, 2 layers, 4 heads of 16, 2 KV heads, ff=128, vocab 100, untied.
TINY = model_from_hf_config(
    {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
        "max_position_embeddings": 256,
    },
    name="tiny",
)
GPU = GpuSpec(
    name="toy",
    description="",
    bf16_flops_per_s=1e9,
    fp8_flops_per_s=None,
    hbm_bytes=1e6,
    hbm_bw_bytes_per_s=1e6,
    interconnect="toy",
    interconnect_bw_bytes_per_s=2e5,
    allreduce_latency_s=1e-3,
    mfu=1.0,
    mbu=1.0,
    usd_per_gpu_hour=3.6,
    price_source="",
    price_as_of="",
)


def tiny(**kw) -> RooflineSetup:
    base = dict(
        model=TINY,
        gpu=GPU,
        tp=1,
        effective_flops_per_s=1e9,
        effective_hbm_bw_bytes_per_s=1e6,
        attention=True,
        comm=False,
        gpu_memory_utilization=1.0,
        kv_memory="reserve",  # (the toy's memory is the datasheet's, less the weights: vLLM's accounting is tested below)
    )
    return RooflineSetup(**(base | kw))


def test_tiny_param_count():
    attn = 64 * 64 + 2 * 64 * 32 + 64 * 64  # q, k, v (2 KV heads x 16), o
    mlp = 3 * 64 * 128
    assert TINY.n_params == 2 * (attn + mlp + 2 * 64) + 64 + 2 * 100 * 64 == 86_848
    assert TINY.flops_per_token == 2 * (86_848 - 6_400)
    assert TINY.kv_bytes_per_token(16) == 2 * 2 * 2 * 16 * 2 == 256
    assert TINY.attention_flops_per_pair == 4 * 2 * 4 * 16 == 512


def test_decode_step_exact():
    s = tiny()
    c = decode_cost(s, batch=3, context_tokens=10)
    assert c.flops == 3 * 160_896 + 3 * 11 * 512
    assert c.bytes == 173_696 + 256 * (30 + 3)
    assert c.compute_s == pytest.approx(c.flops / 1e9)
    assert c.memory_s == pytest.approx(c.bytes / 1e6)
    assert decode_step_time_s(s, batch=3, context_tokens=10) == pytest.approx(max(c.compute_s, c.memory_s))
    assert not c.compute_bound


def test_prefill_attention_pairs_causal_and_cached():
    s = tiny()
    # 4 new tokens after 6 cached: contexts 7, 8, 9, 10 -> 34 pairs; KV read for the 6 cached.
    # The LM head (2 x 100 x 64 = 12,800 FLOPs a position) runs at the one position sampled, not at the other 3.
    c = prefill_cost(s, prompt_tokens=4, cached_tokens=6)
    assert c.flops == 4 * 160_896 - 3 * 12_800 + 34 * 512
    assert c.bytes == 173_696 + 256 * (6 + 4)
    assert prefill_cost(s, prompt_tokens=4, batch=2).flops == 2 * (4 * 160_896 - 3 * 12_800 + 10 * 512)
    every = prefill_cost(tiny(logits_sampled_only=False), prompt_tokens=4, cached_tokens=6)  # the seed's arithmetic
    assert every.flops == 4 * 160_896 + 34 * 512


def test_step_time_divides_by_tp_and_adds_overhead():
    one, two = tiny(), tiny(tp=2, step_overhead_s=0.5)
    c1 = step_cost(one, n_tokens=5, attention_pairs=0, kv_read_tokens=0)
    c2 = step_cost(two, n_tokens=5, attention_pairs=0, kv_read_tokens=0)
    assert c2.time_s == pytest.approx(c1.time_s / 2 + 0.5)


def test_attention_switch():
    on, off = tiny(), tiny(attention=False)
    assert decode_cost(on, batch=1, context_tokens=99).flops - decode_cost(off, batch=1, context_tokens=99).flops == 100 * 512


def test_allreduce_alpha_beta():
    # 4 GPUs: 1 ms latency + 2 x 3/4 of 1000 B over the share NCCL reaches of one direction (2e5 / 2 B/s; no measured
    # figure)
    assert allreduce_time_s(GPU, tp=4, n_bytes=1000) == pytest.approx(1e-3 + 1.5 * 1000 / (1e5 * UNMEASURED_LINK_SHARE))
    assert allreduce_time_s(GPU, tp=1, n_bytes=1000) == 0.0


def test_comm_two_allreduces_per_layer():
    s = tiny(tp=2, comm=True)
    c = decode_cost(s, batch=4, context_tokens=0)
    assert c.comm_s == pytest.approx(2 * 2 * allreduce_time_s(GPU, tp=2, n_bytes=4 * 64 * 2))
    assert c.time_s == pytest.approx(max(c.compute_s, c.memory_s) + c.comm_s)


def test_kv_capacity_tokens():
    s = tiny(gpu_memory_utilization=0.5, memory_reserve_bytes=1_904)
    assert kv_capacity_tokens(s) == (500_000 - 173_696 - 1_904) // 256


def test_does_not_fit_says_by_how_much():
    s = tiny(gpu=replace(GPU, hbm_bytes=1e5))
    with pytest.raises(FleetsimError, match=r"tiny does not fit on 1x toy: .* need 0\.0 GB.*short by"):
        check_fits(s)


def test_llama70b_on_one_a100_does_not_fit():
    with pytest.raises(
        FleetsimError,
        match=r"llama-2-70b does not fit on 1x a100-80gb: weights at 16-bit \+ the engine \(activations, CUDA graphs\) "
        r"need 140\.3 GB.*76\.5 GB.*short by 63\.8 GB",
    ):
        make_setup("llama-2-70b", "a100-80gb", tp=1)


def test_moe_reads_only_touched_experts(models):
    m = models.get("mixtral-8x7b")
    s = make_setup("mixtral-8x7b", "h100-sxm", tp=2)
    assert expected_experts_touched(m, 1) == pytest.approx(2.0)
    assert expected_experts_touched(m, 1000) == pytest.approx(8.0)
    one = weight_bytes_read(s, 1)
    assert one == pytest.approx(2 * (m.n_active_params))  # 16-bit: only the 2 experts one token uses
    assert weight_bytes_read(s, 10_000) == pytest.approx(s.weight_bytes)


def test_dense_decode_time_grows_linearly_with_context():
    s = make_setup("llama-3.1-8b", "h100-sxm", tp=1, comm=False)
    t = [decode_step_time_s(s, batch=16, context_tokens=c) for c in (1000, 2000, 3000)]
    assert t[2] - t[1] == pytest.approx(t[1] - t[0])


def test_fp8_compute_needs_fp8_gpu():
    with pytest.raises(FleetsimError, match=r"gpu a100-80gb: compute_dtype fp8 is not supported"):
        make_setup("llama-3.1-8b", "a100-80gb", tp=1, compute_dtype="fp8")
    s = make_setup("llama-3.1-8b", "h100-sxm", tp=1, compute_dtype="fp8")
    assert s.effective_flops_per_s == pytest.approx(1979e12 * s.gpu.mfu)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(batch=0, context_tokens=5), r"batch must be >= 1 \(got 0\)"),
        (dict(batch=2, context_tokens=-1), r"context_tokens must be >= 0 \(got -1\)"),
    ],
)
def test_decode_rejects_bad_sizes(bad, message):
    with pytest.raises(FleetsimError, match=message):
        decode_cost(tiny(), **bad)


def test_prefill_rejects_zero_length():
    with pytest.raises(FleetsimError, match=r"prompt_tokens must be >= 1 \(got 0\)"):
        prefill_cost(tiny(), prompt_tokens=0)


def test_the_kv_cache_is_sized_as_vllm_profiles_memory_by_hand():
    """Llama-3.1-8B on one RTX 4090 (the driver reports 25,250,627,584 bytes) at 0.9, max_num_batched_tokens 2048,
    max_num_seqs 256, term by term: the budget ceil(0.9 x total); the weights; the profiled peak (the sampler's 256
    rows x 14 bytes x 128,256 entries plus 128 SM rows of fp32, plus the 2,048 hidden states, above the forward's
    2,048 x (2 x 4,096 + 3 x 14,336) x 2 bytes); 0.14 GiB non-torch; 0.45 GiB of CUDA graphs; the 32 MiB rotary cache.
    2,601 blocks of 16 (2 MiB each); vLLM 0.19 logged 2,588 for this setup."""
    from sim.physics.hardware import load_gpu_catalog
    from sim.physics.models import load_model_catalog
    from sim.physics.roofline import activation_peak_bytes, kv_capacity_bytes
    from sim.scenario.config import EngineConfig, roofline_config
    from sim.scenario.resolve import build_setup

    model, gpu = load_model_catalog().get("llama-3.1-8b"), load_gpu_catalog().get("rtx-4090")
    engine = EngineConfig(max_num_batched_tokens=2048, max_num_seqs=256)
    s = build_setup(model, gpu, tp=1, roofline=roofline_config(), engine=engine)
    assert activation_peak_bytes(s) == 14 * 256 * 128_256 + 4 * 128 * 128_256 + 2048 * 4096 * 2 > 2048 * 51_200 * 2
    other = activation_peak_bytes(s) + 0.14 * 2**30 + 0.45 * 2**30 + 131_072 * 128 * 2
    assert kv_capacity_bytes(s) == pytest.approx(22_725_564_826 - 16_060_522_496 - other, abs=1.0)
    block = 32 * 8 * 128 * 2 * 2 * 16
    assert int(kv_capacity_bytes(s) // block) == 2601
    eager = build_setup(model, gpu, tp=1, roofline=roofline_config(), engine=engine.model_copy(update={"enforce_eager": True}))
    assert kv_capacity_bytes(eager) - kv_capacity_bytes(s) == pytest.approx(0.45 * 2**30)
    flat = build_setup(model, gpu, tp=1, roofline=roofline_config(kv_memory="reserve"), engine=engine)
    assert kv_capacity_bytes(flat) == pytest.approx(0.9 * 24e9 - 16_060_522_496)  # the datasheet's 24 GB, nothing else


def test_the_profiled_peak_follows_the_engines_batch_limits():
    """A larger token budget makes the forward pass the peak; more sequences make the sampler's rows the peak."""
    from sim.physics.hardware import load_gpu_catalog
    from sim.physics.models import load_model_catalog
    from sim.physics.roofline import activation_peak_bytes
    from sim.scenario.config import EngineConfig, roofline_config
    from sim.scenario.resolve import build_setup

    model, gpu = load_model_catalog().get("llama-3.1-70b"), load_gpu_catalog().get("h100-sxm")

    def peak(tp, **engine):
        return activation_peak_bytes(build_setup(model, gpu, tp=tp, roofline=roofline_config(), engine=EngineConfig(**engine)))

    big = peak(4, max_num_batched_tokens=32_768, max_num_seqs=16)
    assert big == 32_768 * (2 * 8192 + 3 * 28_672 / 4) * 2  # the forward: MLP sharded over TP
    assert peak(2, max_num_batched_tokens=32_768, max_num_seqs=16) > big
    many = peak(4, max_num_batched_tokens=8192, max_num_seqs=1024)
    assert many == 14 * 1024 * 128_256 + 4 * 132 * 128_256 + 8192 * 8192 * 2  # a row per SM: 132 (fewer than 256)


def test_non_torch_memory_grows_with_the_group_a_gpu_talks_in():
    """vLLM counts memory outside torch against the KV cache: one GPU's workspaces (0.14 GiB logged at TP 1), plus a
    group's communicator buffers inside a node (0.55 GiB logged at TP 2), more where the group spans nodes (2.11-2.24
    GiB logged by a pipeline's later stage across two nodes); each case by hand."""
    from sim.physics.roofline import (
        NON_TORCH_BYTES,
        NON_TORCH_CROSS_NODE_BYTES,
        NON_TORCH_GROUP_BYTES,
        kv_capacity_bytes,
        non_torch_bytes,
    )
    from sim.scenario.config import parse_config
    from sim.scenario.resolve import resolve_scenario

    def setup(model: str = "llama-3.1-70b", **fleet):
        return resolve_scenario(parse_config({"model": model, "fleet": {"gpu": "h100-sxm", **fleet}}))

    gib = 2**30
    assert (0.14 * gib, 0.55 * gib, 2.24 * gib) == (NON_TORCH_BYTES, NON_TORCH_GROUP_BYTES, NON_TORCH_CROSS_NODE_BYTES)
    assert non_torch_bytes(setup("llama-3.1-8b", tp=1)) == NON_TORCH_BYTES
    assert non_torch_bytes(setup("llama-3.1-8b", tp=1, dp=2)) == NON_TORCH_BYTES  # a dense model's ranks share nothing
    assert non_torch_bytes(setup(tp=2)) == non_torch_bytes(setup(tp=8)) == NON_TORCH_GROUP_BYTES
    assert non_torch_bytes(setup(tp=4, pp=2)) == NON_TORCH_GROUP_BYTES  # both stages in one node of 8
    assert non_torch_bytes(setup(tp=4, pp=2, gpus_per_node=4)) == NON_TORCH_CROSS_NODE_BYTES  # a stage a node
    assert non_torch_bytes(setup(tp=16)) == NON_TORCH_CROSS_NODE_BYTES  # TP past a node
    moe = "qwen3-30b-a3b"
    assert non_torch_bytes(setup(moe, tp=1, dp=2, expert_parallel=True)) == NON_TORCH_GROUP_BYTES  # its ranks' experts
    assert non_torch_bytes(setup(moe, tp=4, dp=4, expert_parallel=True)) == NON_TORCH_CROSS_NODE_BYTES  # 16 GPUs
    # each of the replica's GPUs gives the difference up to the KV cache
    a, b = setup(tp=4, pp=2), setup(tp=4, pp=2, gpus_per_node=4)
    per_layer = b.model.n_layers / (b.pp * max(b.model.n_layers // b.pp, 1))  # (an engine's share, bytes of all layers)
    assert kv_capacity_bytes(a) - kv_capacity_bytes(b) == pytest.approx(
        4 * (NON_TORCH_CROSS_NODE_BYTES - NON_TORCH_GROUP_BYTES) * per_layer, rel=1e-9
    )
