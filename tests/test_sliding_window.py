"""Sliding-window attention layers (gpt-oss, Gemma, Mistral): which layers have them (config.json), what a step's
attention and KV reads cost with them (`windowed`), vLLM's hybrid KV cache manager's groups and blocks, and the
fast-forward against the per-step engine on models that have them."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.physics.models import load_model_catalog, model_from_hf_config
from sim.physics.roofline import decode_cost, kv_capacity_bytes, kv_capacity_tokens, windowed
from sim.run.engine.step_time import UNBOUNDED, RooflineStepTime
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_equivalence import assert_same

MODELS = load_model_catalog()


def dense(layers: int = 6, **extra) -> dict:
    return {
        "model_type": "mistral",
        "hidden_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
        "sliding_window": 32,
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "n_sliding"),
    [
        ({}, 6),  # Mistral: every layer
        ({"layer_types": ["sliding_attention", "full_attention"] * 3}, 3),
        ({"layer_types": ["full_attention"] * 6}, 0),
        ({"model_type": "gpt_oss"}, 3),  # every other layer, from the first
        ({"model_type": "gemma3_text"}, 5),  # all but every 6th
        ({"model_type": "gemma3_text", "sliding_window_pattern": 2}, 3),
        ({"model_type": "qwen2", "use_sliding_window": False}, 0),  # a window it does not use
        ({"model_type": "llama"}, 0),  # (no pattern known for the family)
        ({"sliding_window": None}, 0),
    ],
)
def test_sliding_layers_as_config_json_places_them(extra, n_sliding):
    m = model_from_hf_config(dense(**extra), name="tiny")
    assert m.n_sliding_layers == n_sliding
    assert m.sliding_window == (32 if n_sliding else 0)
    assert m.sliding_share == n_sliding / 6


def test_the_catalogs_gpt_oss_attends_to_128_tokens_in_half_its_layers():
    for name, layers in (("gpt-oss-20b", 24), ("gpt-oss-120b", 36)):
        m = MODELS.get(name)
        assert (m.sliding_window, m.n_sliding_layers, m.n_layers) == (128, layers // 2, layers)
    assert MODELS.get("llama-3.1-8b").sliding_share == 0.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"layer_types": ["sliding_attention"] * 5}, "field 'layer_types' must list 6 attention types, one a layer"),
        ({"layer_types": "sliding"}, "field 'layer_types' must list 6 attention types"),
        ({"sliding_window": 0}, "field 'sliding_window' must be an integer >= 1 (got 0)"),
        ({"model_type": "gemma3", "sliding_window_pattern": 0}, "field 'sliding_window_pattern' must be an integer >= 1"),
    ],
)
def test_a_broken_window_is_one_line_naming_the_field(extra, message):
    with pytest.raises(FleetsimError) as err:
        model_from_hf_config(dense(**extra), name="tiny", where="config.json")
    text = str(err.value)
    assert text.startswith("config.json: ") and message in text and "\n" not in text


def test_windowed_caps_the_sliding_layers_share_of_pairs_and_decoder_reads():
    """Half the layers sliding, a window of 32: each query counts at most 32 pairs there, each decoder at most 32
    cached tokens; the full layers count everything. Sums on one side of the cap are exact."""
    m = model_from_hf_config(dense(model_type="gpt_oss"), name="tiny")
    # 4 decoders of 100 cached tokens: pairs 404, read 400; sliding halves cap at 4 x 32 = 128
    assert windowed(m, 4, 404.0, 400.0, 4, 400.0) == (404 - 0.5 * (404 - 128), 400 - 0.5 * (400 - 128))
    # inside the window: unchanged
    assert windowed(m, 4, 84.0, 80.0, 4, 80.0) == (84.0, 80.0)
    # a prompt chunk's pairs are capped per query token; its cached tokens (not decoders') are read whole
    assert windowed(m, 64, 64 * 50.0, 500.0, 0, 0.0) == (64 * 50 - 0.5 * (64 * 50 - 64 * 32), 500.0)
    full = model_from_hf_config(dense(sliding_window=None), name="tiny")
    assert windowed(full, 4, 404.0, 400.0, 4, 400.0) == (404.0, 400.0)


def setup_of(model: str, gpu: str = "h100-sxm", tp: int = 1):
    return resolve_scenario(parse_config({"model": model, "fleet": {"gpu": gpu, "tp": tp}}))


def test_a_gpt_oss_decode_step_reads_half_its_layers_kv_up_to_the_window():
    """gpt-oss-120b at 8,192 tokens of context: the 18 full layers read all of it, the 18 sliding ones 128 tokens
    (the window, the query's own token included); their attention FLOPs likewise."""
    s = setup_of("gpt-oss-120b")
    m = s.model
    per_layer = s.kv_bytes_per_token / m.n_layers
    b, ctx = 32, 8192
    cost = decode_cost(s, batch=b, context_tokens=ctx)
    no_window = dataclasses.replace(s, model=dataclasses.replace(m, sliding_window=0, n_sliding_layers=0))
    everything = decode_cost(no_window, batch=b, context_tokens=ctx)
    assert everything.bytes - cost.bytes == pytest.approx(b * 18 * (ctx - 128) * per_layer, rel=1e-12)
    per_pair_layer = m.attention_flops_per_pair / m.n_layers
    assert everything.flops - cost.flops == pytest.approx(b * 18 * (ctx + 1 - 128) * per_pair_layer, rel=1e-12)


def test_vllms_hybrid_kv_groups_and_blocks():
    """gpt-oss: 18 full and 18 sliding layers, one group each, a block a page of 18 layers (twice as many blocks as
    one group of 36 layers would have); a sequence's sliding group holds the blocks covering its last 128 tokens,
    ceil(127 / 16) + 1 = 9. Gemma 3 27B's 10 full and 52 sliding layers: groups of 10, one full and 6 sliding.
    13 full and 12 sliding (gpt-oss-20b with an EAGLE head): under 1.5x, groups of 13."""
    s = setup_of("gpt-oss-120b")
    assert s.kv_groups == (18, 1, 1)
    assert s.kv_pool_bytes_per_token == s.kv_bytes_per_token / 2
    assert s.window_blocks(16) == 9 and s.window_blocks(32) == 5 and s.window_blocks(128) == 2
    assert kv_capacity_tokens(s) == int(kv_capacity_bytes(s) // (s.kv_bytes_per_token / 2))
    gemma = model_from_hf_config(dense(layers=62, model_type="gemma3_text", sliding_window=1024), name="g")
    g = dataclasses.replace(s, model=gemma)
    assert g.kv_groups == (10, 1, 6)
    assert g.window_blocks(16) == 6 * (64 + 1)
    mixed = model_from_hf_config(dense(layers=25, layer_types=["full_attention"] * 13 + ["sliding_attention"] * 12), name="e")
    assert dataclasses.replace(s, model=mixed).kv_groups == (13, 1, 1)
    assert setup_of("llama-3.1-8b").kv_groups == (32, 1, 0) and setup_of("llama-3.1-8b").window_blocks(16) == 0


def test_a_decode_line_holds_up_to_where_the_sliding_layers_stop_growing():
    s = RooflineStepTime(setup_of("gpt-oss-20b"))
    n, w = 4, 128
    assert s.line_steps(n, n * w) == UNBOUNDED  # past the window
    assert s.line_steps(n, n * w - 2) == 1  # the pairs past it, the reads not yet
    assert s.line_steps(n, 100) == (n * w - 100) // n
    full = RooflineStepTime(setup_of("llama-3.1-8b"))
    assert full.line_steps(n, 0) == UNBOUNDED
    # each step of a line equals the per-step price, on either side of the window
    for ctx in (100, n * w - 2, n * w, 5000):
        k = min(s.line_steps(n, ctx), 20)
        line = s.decode_line(n_seqs=n, context_sum=ctx)
        for j in range(k):
            c = ctx + n * j
            assert line.at(j) == pytest.approx(s.step(0, n, c + n, c, c, n)[0], rel=1e-12)
        flops, n_bytes = s.run_work(n, ctx, k)
        steps = [s.step(0, n, ctx + n * j + n, ctx + n * j, ctx + n * j, n) for j in range(k)]
        assert flops == pytest.approx(sum(x[1] for x in steps), rel=1e-12)
        assert n_bytes == pytest.approx(sum(x[2] for x in steps), rel=1e-12)
        assert s.decode_sum(n, ctx, k) == pytest.approx(sum(x[0] for x in steps), rel=1e-12)


def trace(seed: int, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 10, n)),
                "prompt_tokens": rng.integers(1, 600, n),
                "output_tokens": rng.integers(1, 300, n),
            }
        )
    )


@pytest.mark.parametrize(
    "engine",
    [
        {"num_gpu_blocks_override": 400},  # preemptions
        {"num_gpu_blocks_override": 600, "prefix_caching": True},
        {"num_gpu_blocks_override": 500, "policy": "prefill_first"},
        {"num_gpu_blocks_override": 500, "async_scheduling": True},
        {"speculative": {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.7}},
        {"speculative": {"method": "mtp", "num_speculative_tokens": 2, "acceptance_rate": 0.6}, "num_gpu_blocks_override": 500},
    ],
)
def test_the_fast_forward_equals_the_per_step_engine_with_sliding_layers(engine):
    runs = []
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "gpt-oss-20b",
                "fleet": {"gpu": "h100-sxm", "autoscaler": {"policy": "fixed", "replicas": 1}},
                "engine": {"fast_forward": ff, "max_num_seqs": 24, **engine},
            }
        )
        runs.append(simulate(sc, trace(1), measure_capacity=False))
    assert_same(*runs)
    if "num_gpu_blocks_override" in engine and "speculative" not in engine:
        assert runs[0].requests["n_preemptions"].sum() > 0  # (the cache binds: the windows' blocks are counted)


def test_a_dp_group_with_sliding_layers_steps_as_its_per_step_reference():
    runs = []
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "gpt-oss-20b",
                "fleet": {"gpu": "h100-sxm", "dp": 2, "expert_parallel": True, "autoscaler": {"policy": "fixed", "replicas": 2}},
                "engine": {"fast_forward": ff, "max_num_seqs": 16, "num_gpu_blocks_override": 500},
            }
        )
        runs.append(simulate(sc, trace(3), measure_capacity=False))
    assert_same(*runs)


def test_the_window_holds_a_sequences_blocks_besides_its_context():
    """With a pool of 9 + 2 blocks a replica can hold one sequence of 32 tokens (2 blocks and its 9-block window),
    and refuses one whose KV could never fit."""
    sc = parse_config(
        {
            "model": "gpt-oss-20b",
            "fleet": {"gpu": "h100-sxm", "autoscaler": {"policy": "fixed", "replicas": 1}},
            "engine": {"num_gpu_blocks_override": 11, "block_size": 16, "max_num_batched_tokens": 64},
        }
    )
    frame = validate_frame(
        pd.DataFrame({"arrival_at_s": [0.0, 0.1, 0.2], "prompt_tokens": [20, 20, 40], "output_tokens": [13, 13, 1]})
    )
    req = simulate(sc, frame, measure_capacity=False).requests
    assert req["status"].tolist() == ["completed", "completed", "rejected"]
    # the second waited for the first: 11 blocks hold one sequence and its window at a time
    assert req["scheduled_at_s"].iloc[1] >= req["completed_at_s"].iloc[0]


def test_a_window_as_long_as_the_context_holds_no_more_than_the_context():
    """A window no shorter than the longest context (Qwen2-style configs that turn it on at the full length) holds no
    more blocks than a sequence of that context would."""
    s = setup_of("gpt-oss-20b")
    long_window = dataclasses.replace(s.model, sliding_window=10 * s.model.max_context_tokens)
    t = dataclasses.replace(s, model=long_window, max_model_len=4096)
    assert t.window_blocks(16) == 4096 // 16


def test_fleetsim_roofline_says_which_layers_slide_and_counts_the_cache_in_the_others_tokens():
    import json

    from typer.testing import CliRunner

    from sim.cli import app

    r = CliRunner().invoke(app, ["roofline", "--model", "gpt-oss-120b", "--gpu", "h100-sxm", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert (data["sliding_window"], data["n_sliding_layers"]) == (128, 18)
    s = setup_of("gpt-oss-120b")
    assert data["kv_capacity_tokens"] == kv_capacity_tokens(s) == int(kv_capacity_bytes(s) // (s.kv_bytes_per_token / 2))
    text = CliRunner().invoke(app, ["roofline", "--model", "gpt-oss-120b", "--gpu", "h100-sxm"]).output
    assert "18 of the layers attend to 128 tokens, their KV held apart (vLLM's hybrid KV cache)" in text
    plain = json.loads(CliRunner().invoke(app, ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--json"]).output)
    assert plain["sliding_window"] is None and plain["n_sliding_layers"] == 0


def test_the_largest_batch_counts_each_sequences_window_as_long_as_its_context_allows():
    """gpt-oss-120b: a sequence of c tokens also holds min(c, 128) tokens in its one sliding group (one full group)."""
    from sim.physics.roofline import max_batch

    s = setup_of("gpt-oss-120b")
    tokens = kv_capacity_tokens(s)
    assert max_batch(s, context_tokens=4096) == tokens // (4096 + 128)
    assert max_batch(s, context_tokens=64) == tokens // (64 + 64)
    llama = setup_of("llama-3.1-8b")
    assert max_batch(llama, context_tokens=4096) == kv_capacity_tokens(llama) // 4096


def _pools(fleet: dict, engine: dict) -> list:
    from sim.run.pools import pool_specs

    sc = parse_config(
        {
            "model": "gpt-oss-20b",
            "fleet": {"gpu": "h100-sxm", "autoscaler": {"policy": "fixed", "replicas": 1}, **fleet},
            "engine": engine,
        }
    )
    return pool_specs(sc, trace(1), base_dir=Path("."))


def test_a_kv_connector_turns_the_hybrid_kv_cache_off_as_vllm_does():
    """vLLM turns its hybrid KV cache manager off when a KV connector is set ("Turning off hybrid kv cache manager
    because `--kv-transfer-config` is set"), so a disaggregated fleet's prefill and decode replicas keep every layer's
    KV for every token: gpt-oss-20b's 12 sliding layers as its 12 full ones, half the token slots of a colocated
    replica and no window blocks. `engine.disable_hybrid_kv_cache_manager` says otherwise either way; the sliding
    layers' compute stays windowed."""
    (colocated,) = _pools({}, {})
    prefill, decode = _pools({"mode": "disaggregated"}, {})
    assert colocated.setup.hybrid_kv and colocated.limits.window_blocks == 9
    for p in (prefill, decode):
        assert not p.setup.hybrid_kv and p.limits.window_blocks == 0
        assert p.setup.kv_groups == (24, 1, 0) and p.setup.kv_pool_bytes_per_token == p.setup.kv_bytes_per_token
        assert p.n_blocks == colocated.n_blocks // 2  # (the same memory, pages of 24 layers instead of 12)
    opted_in = _pools({"mode": "disaggregated"}, {"disable_hybrid_kv_cache_manager": False})
    assert [(p.n_blocks, p.limits.window_blocks) for p in opted_in] == [(colocated.n_blocks, 9)] * 2
    (off,) = _pools({}, {"disable_hybrid_kv_cache_manager": True})
    assert (off.n_blocks, off.limits.window_blocks) == (prefill.n_blocks, 0)
    # the step times do not change: a sliding layer reads its window either way
    step = colocated.setup, off.setup
    assert decode_cost(step[0], batch=8, context_tokens=4096) == decode_cost(step[1], batch=8, context_tokens=4096)


def test_the_hybrid_switch_reads_and_writes_as_vllms_flag():
    from sim.scenario.vllm_args import engine_args, map_options, parse_args
    from sim.studies.validate import scenario_from_meta

    mapped = map_options(parse_args(["--disable-hybrid-kv-cache-manager"], "cmd"), "cmd")
    assert mapped.values["engine.disable_hybrid_kv_cache_manager"] is True
    args = engine_args({"engine.disable_hybrid_kv_cache_manager": False}, hf_repo="openai/gpt-oss-20b")
    assert "--no-disable-hybrid-kv-cache-manager" in args
    assert not any("hybrid" in a for a in engine_args({}, hf_repo="openai/gpt-oss-20b"))
    meta = {"engine_kwargs": {"model": "openai/gpt-oss-20b"}, "hardware": {"device_name": "NVIDIA H100 80GB HBM3"}}
    assert "disable_hybrid_kv_cache_manager" not in scenario_from_meta(meta)[0]["engine"]
    meta["engine_kwargs"]["kv_transfer_config"] = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert scenario_from_meta(meta)[0]["engine"]["disable_hybrid_kv_cache_manager"] is True


def test_fleetsim_roofline_says_when_the_sliding_layers_kv_is_kept_whole(tmp_path):
    import json

    from typer.testing import CliRunner

    from sim.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text("model: gpt-oss-120b\nfleet: {gpu: h100-sxm}\nengine: {disable_hybrid_kv_cache_manager: true}\n")
    r = CliRunner().invoke(app, ["roofline", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    whole = json.loads(r.output)
    hybrid = json.loads(CliRunner().invoke(app, ["roofline", "--model", "gpt-oss-120b", "--gpu", "h100-sxm", "--json"]).output)
    assert (whole["hybrid_kv_cache"], hybrid["hybrid_kv_cache"]) == (False, True)
    assert whole["kv_capacity_tokens"] == hybrid["kv_capacity_tokens"] // 2
    text = CliRunner().invoke(app, ["roofline", "--config", str(cfg)]).output
    assert "18 of the layers attend to 128 tokens, their KV kept whole (the hybrid KV cache manager off)" in text
