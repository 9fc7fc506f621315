"""vLLM's `long_prefill_token_threshold` (chunked policy): a request computes at most that many prompt tokens a step,
running or newly admitted (vllm/v1/core/sched/scheduler.py caps `num_new_tokens` at it before the token budget), so a
long prompt no longer takes a whole step's budget and the decoders beside it keep their pace. By hand on the constant
step model; the fast-forward equals the per-step reference with it; `fleetsim import` maps the flag."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.run.engine.scheduler import Chunked, Limits
from sim.run.engine.sequence import Seq
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.vllm_args import engine_args, map_options
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests

A, D = 1e-4, 0.01


def scenario(threshold, *, ff=True, step="constant", **engine):
    st_ = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D} if step == "constant" else {"kind": "roofline"}
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm"},
            "engine": {"fast_forward": ff, "step_time": st_, "long_prefill_token_threshold": threshold, **engine},
        }
    )


def frame(rows):
    return validate_frame(
        pd.DataFrame(
            {"arrival_at_s": [r[0] for r in rows], "prompt_tokens": [r[1] for r in rows], "output_tokens": [r[2] for r in rows]}
        )
    )


def test_a_long_prompt_is_cut_into_threshold_sized_chunks():
    """A 350-token prompt with threshold 100: four steps of 100, 100, 100 and 50 prompt tokens (the last emits the
    first token), where without the threshold one step of 350 does it."""
    one = frame([(0.0, 350, 1)])
    capped = simulate(scenario(100), one, measure_capacity=False)
    whole = simulate(scenario(0), one, measure_capacity=False)
    assert capped.summary()["n_steps"] == 4 and whole.summary()["n_steps"] == 1
    assert capped.requests["first_token_at_s"].iloc[0] == pytest.approx(350 * A, rel=1e-12)  # the same tokens, in 4 steps


def test_the_cap_holds_for_running_and_newly_admitted_requests():
    limits = Limits(max_num_seqs=8, max_num_batched_tokens=1000, block_size=16, long_prefill=64)
    running = Seq(0, 0.0, 500, 5)
    running.computed = 64  # a chunk in
    newcomer = Seq(1, 0.0, 300, 5)
    batch = Chunked().next_batch([newcomer], [running], free_blocks=1000, limits=limits)
    assert batch.work == [(running, 64), (newcomer, 64)]
    assert Limits(max_num_seqs=8, max_num_batched_tokens=1000, block_size=16).chunk_cap == 1 << 62


def test_decoders_beside_a_long_prompt_keep_their_pace():
    """A decoder steps every D; a 6,000-token prompt arriving beside it takes one step of 6,000 A + D without the
    threshold (the decoder's longest gap), and steps of 500 A + D with threshold 500; the prompt's first token comes
    later for it (twelve steps, each with the decoder's token)."""
    rows = [(0.0, 10, 40), (0.05, 6000, 2)]
    longest, ttft = {}, {}
    for threshold in (0, 500):
        res = simulate(scenario(threshold), frame(rows), measure_capacity=False)
        longest[threshold] = res.itl.percentile(100)
        r = res.requests
        ttft[threshold] = float(r["first_token_at_s"].iloc[1] - r["arrival_at_s"].iloc[1])
    assert longest[0] == pytest.approx(6000 * A + D, rel=1e-9)
    assert longest[500] == pytest.approx(500 * A + D, rel=1e-9)
    assert ttft[500] > ttft[0] + 10 * D


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), threshold=st.sampled_from([16, 100, 512]), blocks=st.sampled_from([None, 80]))
def test_the_fast_forward_equals_the_per_step_reference_with_the_threshold(seed, threshold, blocks):
    rng = np.random.default_rng(seed)
    n = 60
    rows = list(zip(np.cumsum(rng.exponential(0.05, n)), rng.integers(1, 1500, n), rng.integers(1, 60, n), strict=True))
    extra = {"num_gpu_blocks_override": blocks, "max_num_batched_tokens": 1024, "max_num_seqs": 16}
    out = {
        ff: simulate(scenario(threshold, ff=ff, step="roofline", **extra), frame(rows), measure_capacity=False)
        for ff in (True, False)
    }
    assert_same_requests(out[True], out[False])


def test_import_and_export_carry_the_flag():
    m = map_options({"long_prefill_token_threshold": "2048"}, "cmd")
    assert m.values == {"engine.long_prefill_token_threshold": 2048}
    assert "--long-prefill-token-threshold" in engine_args(m.values, hf_repo="x")
