"""Multi-head latent attention (DeepSeek-V2/V3, Kimi K2) priced in the form vLLM runs it: a decoding query attends in
the absorbed form (multi-query attention over the latent), a prefill chunk in the multi-head form after up-projecting
its cached context (vllm/v1/attention/backends/mla/common.py). By hand for DeepSeek-V3; the engine's step model and
the physics agree float for float; the fast-forward equals the per-step reference with MLA, with and without MTP."""

import numpy as np
import pandas as pd
import pytest

from sim.physics.models import load_model_catalog
from sim.physics.roofline import decode_cost, prefill_cost, step_cost
from sim.run.engine.step_time import RooflineStepTime
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.conftest import make_setup
from tests.test_engine_equivalence import assert_same_requests

MODELS = load_model_catalog()


def test_deepseek_v3s_attention_flops_a_pair_by_hand():
    """61 layers x 128 heads. Prefill form: QK over 128 + 64 dims, AV over 128: 2 x (192 + 128) = 640 FLOPs a head and
    layer. Absorbed (decode): QK over the 512-dim latent + 64 rope dims, AV over the latent: 2 x (576 + 512) = 2,176.
    A prefill chunk up-projects each cached latent with kv_b_proj (512 x 128 x (128 + 128)): 2 x 16.8 M a layer."""
    m = MODELS.get("deepseek-v3")
    assert m.attention_flops_per_pair == 61 * 128 * 640
    assert m.decode_attention_flops_per_pair == 61 * 128 * 2176
    assert m.context_flops_per_token == 2 * 61 * 512 * 128 * 256
    dense = MODELS.get("llama-3.1-70b")
    assert dense.decode_attention_flops_per_pair == dense.attention_flops_per_pair
    assert dense.context_flops_per_token == 0.0


def test_a_decode_step_pays_the_absorbed_form_and_a_prefill_chunk_its_context_up_projection():
    setup = make_setup("deepseek-v3", "h200", tp=8, weight_bits=8)
    m = setup.model
    b, c = 32, 4000
    dec = decode_cost(setup, batch=b, context_tokens=c)
    plain = step_cost(setup, n_tokens=b, attention_pairs=0.0, kv_read_tokens=b * c, logit_tokens=b)
    assert dec.flops - plain.flops == pytest.approx(b * (c + 1) * m.decode_attention_flops_per_pair, rel=1e-12)
    n, cached = 512, 3000
    pre = prefill_cost(setup, prompt_tokens=n, cached_tokens=cached)
    fresh = step_cost(setup, n_tokens=n, attention_pairs=0.0, kv_read_tokens=cached, logit_tokens=1)
    pairs = n * cached + n * (n + 1) / 2
    expected = pairs * m.attention_flops_per_pair + cached * m.context_flops_per_token
    assert pre.flops - fresh.flops == pytest.approx(expected, rel=1e-12)
    # a dense model's decode and prefill attention cost the same a pair, and its cached context nothing more
    dense = make_setup("llama-3.1-70b", "h200", tp=8)
    d = decode_cost(dense, batch=b, context_tokens=c).flops
    assert d == step_cost(dense, n_tokens=b, attention_pairs=b * (c + 1), kv_read_tokens=b * c, logit_tokens=b).flops


N_DEC, DCTX = 12, 12 * 3000  # (`mixed_step`'s decoders and their contexts' sum)


def mixed_step(setup):
    """A mixed step (a 256-token prompt chunk after 1,024 cached tokens, 12 decoders at 3,000 tokens each), priced by
    the engine's step model and by `step_cost`: (its step model, (seconds, FLOPs, bytes), the StepCost)."""
    st = RooflineStepTime(setup)
    chunk, cached = 256, 1024
    pairs = chunk * cached + chunk * (chunk + 1) // 2 + DCTX + N_DEC
    kv_read = cached + DCTX
    engine = st.step(chunk, N_DEC, pairs, kv_read, DCTX, N_DEC + 1)
    cost = step_cost(
        setup,
        n_tokens=chunk + N_DEC,
        attention_pairs=pairs,
        kv_read_tokens=kv_read,
        logit_tokens=N_DEC + 1,
        decode_pairs=DCTX + N_DEC,
        context_tokens=cached,
    )
    return st, engine, cost


@pytest.mark.parametrize("model", ["deepseek-v3", "llama-3.1-70b"])
def test_the_engines_step_is_the_physics_step_float_for_float(model):
    """A mixed step (a prompt chunk after cached context, decoders): the engine's memoized step model and `step_cost`
    with the step's decode pairs and the prompt's cached context give the same seconds, FLOPs and bytes."""
    st, (dt, flops, n_bytes), cost = mixed_step(make_setup(model, "h200", tp=8, weight_bits=8))
    n_dec, dctx = N_DEC, DCTX
    assert (flops, n_bytes) == (cost.flops, cost.bytes)
    assert dt == pytest.approx(cost.time_s, rel=1e-12)
    line = st.decode_line(n_seqs=n_dec, context_sum=dctx)  # a decode run prices its steps in the absorbed form too
    assert line.at(0) == pytest.approx(st.step(0, n_dec, dctx + n_dec, dctx, dctx, n_dec)[0], rel=1e-12)


@pytest.mark.parametrize("speculative", [None, {"method": "mtp", "num_speculative_tokens": 1, "acceptance_rate": 0.8}])
def test_the_fast_forward_equals_the_per_step_reference_with_mla(speculative):
    rng = np.random.default_rng(11)
    n = 60
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 4.0, n)),
                "prompt_tokens": rng.integers(100, 3000, n),
                "output_tokens": rng.integers(1, 300, n),
            }
        )
    )
    out = {}
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "deepseek-v3",
                "fleet": {"gpu": "h200", "tp": 8},
                "engine": {"fast_forward": ff, "speculative": speculative, "max_num_batched_tokens": 2048},
            }
        )
        out[ff] = simulate(sc, frame, measure_capacity=False)
    assert_same_requests(out[True], out[False])
    assert out[True].summary()["completed"] == n
