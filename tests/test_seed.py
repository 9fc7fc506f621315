"""Every row of SEED.md, reproduced from the roofline with the seed preset (2% tolerance: the
article rounds, and uses 2 x 70B = 140 GFLOP where the exact count gives 137.4 GFLOP)."""

import pytest

from sim.physics.prices import api_price
from sim.physics.roofline import (
    crossover_prompt_tokens,
    decode_cost,
    decode_tokens_per_s,
    kv_capacity_bytes,
    max_batch,
    prefill_cost,
    prefill_time_s,
    prompt_tokens_per_s,
    usd_per_1k_tokens,
)

REL = 0.02


def test_flops_per_token_140_gflop(seed2):
    assert seed2.model.flops_per_token == pytest.approx(140e9, rel=REL)


def test_kv_per_token_320_kib(seed2):
    assert seed2.model.kv_bytes_per_token(16) == 2 * 80 * 8 * 128 * 2 == 327_680 == 320 * 1024


def test_kv_for_4096_tokens_batch_1_is_1_34_gb(seed2):
    assert seed2.kv_bytes_per_token * 4096 == pytest.approx(1.34e9, rel=REL)


@pytest.mark.parametrize(("context", "batch"), [(512, 1), (1024, 8), (4096, 16)])
def test_decode_step_memory_traffic_140gb_plus_320kb_n_b(seed2, context, batch):
    # The article's 140 GB + 320 KB x N x B; we also count the B new tokens' KV writes.
    expected = 140e9 + 327_680 * context * batch
    assert decode_cost(seed2, batch=batch, context_tokens=context).bytes == pytest.approx(expected, rel=REL)
    exact = seed2.weight_bytes + 327_680 * (context * batch + batch)
    assert decode_cost(seed2, batch=batch, context_tokens=context).bytes == exact


def test_crossover_156_tokens(seed2):
    assert crossover_prompt_tokens(seed2) == pytest.approx(156, rel=REL)


def test_prompt_throughput_2857_tok_s(seed2):
    assert prompt_tokens_per_s(seed2, prompt_tokens=2048) == pytest.approx(2857, rel=REL)


def test_prompt_cost_0_00042_per_1k_vs_gpt35(seed2):
    usd = usd_per_1k_tokens(seed2, prompt_tokens_per_s(seed2, prompt_tokens=2048))
    assert usd == pytest.approx(0.00042, rel=REL)
    assert api_price("gpt-3.5-turbo-2023-07").usd_per_1k_prompt_tokens / usd > 3  # claim 1: >3x cheaper


def test_prefill_latency_512_and_1536(seed2):
    assert prefill_time_s(seed2, prompt_tokens=512) == pytest.approx(0.175, rel=REL)  # "~0.17-0.18 s"
    assert prefill_time_s(seed2, prompt_tokens=1536) == pytest.approx(0.53, rel=REL)


def test_decode_batch1_18_6_tok_s(seed2):
    assert decode_tokens_per_s(seed2, batch=1, context_tokens=0) == pytest.approx(18.6, rel=REL)


@pytest.mark.parametrize(("batch", "usd"), [(1, 0.066), (8, 0.00825), (32, 0.00206)])
def test_completion_cost_per_1k(seed2, batch, usd):
    rate = decode_tokens_per_s(seed2, batch=batch, context_tokens=0)
    assert usd_per_1k_tokens(seed2, rate) == pytest.approx(usd, rel=REL)


def test_free_memory_for_kv_and_max_batch(seed2):
    """SEED.md: "~25 GB; max batch ~8 at long sequences (article's estimate)".

    The article gets 25 GB from 160 GB minus "135 GB" of weights, which contradicts its own 140 GB
    (2 bytes x 70B); from the exact 137.95 GB of weights, 22.05 GB remain. At 4096 tokens per
    sequence that holds 16 sequences; the article's "~8" halves its own 25/1.34 = 18 for
    "memory storage inefficiency" (pre-paged-attention fragmentation), which a paged KV cache
    does not have. So we pin our figures and check they sit between the article's two.
    """
    free = kv_capacity_bytes(seed2)
    assert free == pytest.approx(160e9 - seed2.weight_bytes)
    assert free == pytest.approx(25e9, rel=0.15)
    batch = max_batch(seed2, context_tokens=4096)
    assert batch == 16
    assert 8 <= batch <= 25e9 // (327_680 * 4096)


def test_decode_8x_a100_batch1_74_tok_s(seed8):
    assert decode_tokens_per_s(seed8, batch=1, context_tokens=0) == pytest.approx(74.3, rel=REL)
    assert decode_tokens_per_s(seed8, batch=1, context_tokens=0) > 70  # faster than gpt-3.5's ~70 tok/s


def test_prefill_64x512_on_8x_a100_2_87_s(seed8):
    assert seed8.tp * seed8.effective_flops_per_s == pytest.approx(1600e12)
    assert prefill_time_s(seed8, prompt_tokens=512, batch=64) == pytest.approx(2.87, rel=REL)


def test_prefill_64x3596_on_8x_a100_20_1_s(seed8):
    assert prefill_time_s(seed8, prompt_tokens=3596, batch=64) == pytest.approx(20.1, rel=REL)


def test_attention_flops_at_8192_context(seed2):
    # Per token of a causal 8192-token prefill (mean context 4096.5): "~10.5-10.7 GFLOP".
    n = 8192
    per_token = seed2.model.attention_flops_per_pair * (n + 1) / 2
    assert 10.5e9 * (1 - REL) <= per_token <= 10.7e9 * (1 + REL)
    # ...and the roofline's prefill FLOPs carry exactly that on top of 2P per token when attention is on.
    from tests.conftest import make_setup

    on = make_setup("llama-2-70b", "a100-80gb", tp=2, preset="seed", attention=True)
    extra = prefill_cost(on, prompt_tokens=n).flops - prefill_cost(seed2, prompt_tokens=n).flops
    assert extra / n == pytest.approx(per_token)
    assert per_token / seed2.model.flops_per_token < 0.08  # negligible, as the article says
