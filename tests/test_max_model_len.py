"""`engine.max_model_len`, vLLM's `--max-model-len`: the longest prompt + output a replica serves. Requests above it
are refused at the door with the reason; a limit above the model's context, or one the KV cache cannot hold a whole
request of, is refused before anything runs (as vLLM refuses to start); non-chunked scheduling batches up to it; the
importer reads vLLM's spellings of it and the exporter writes it back."""

from __future__ import annotations

import pytest

from sim.errors import FleetsimError
from sim.physics.roofline import kv_capacity_tokens
from sim.run.simulate import simulate
from sim.scenario.config import EngineConfig, parse_config
from sim.scenario.resolve import resolve_scenario
from sim.scenario.vllm_args import context_length, engine_args, map_options
from tests.conftest import one_line_error
from tests.test_engine_units import frame, tiny_scenario


@pytest.mark.parametrize("ff", [True, False])
def test_a_request_longer_than_max_model_len_is_refused_with_the_reason_and_one_at_it_is_served(ff):
    """600 + 400 = 1,000 tokens fits a max_model_len of 1,000; 600 + 401 does not (without the limit both are served,
    the model's context being 131,072)."""
    rows = [(0.0, 600, 400), (0.1, 600, 401)]
    capped = simulate(tiny_scenario(fast_forward=ff, max_model_len=1000), frame(rows)).requests
    assert capped["status"].astype(str).tolist() == ["completed", "rejected"]
    assert capped["reject_reason"].iloc[1] == "prompt + output = 1001 tokens exceeds engine.max_model_len 1000"
    free = simulate(tiny_scenario(fast_forward=ff), frame(rows)).requests
    assert free["status"].astype(str).tolist() == ["completed", "completed"]
    alone = simulate(tiny_scenario(fast_forward=ff), frame(rows[:1])).requests  # (the refused one took nothing)
    assert capped["completed_at_s"].iloc[0] == alone["completed_at_s"].iloc[0]


def test_the_models_context_still_names_itself_when_no_limit_is_set():
    r = simulate(tiny_scenario(), frame([(0.0, 131_000, 100)])).requests
    assert r["reject_reason"].iloc[0] == "prompt + output = 131100 tokens exceeds the model's max context 131072"


def test_a_max_model_len_above_the_models_context_is_refused():
    sc = tiny_scenario(max_model_len=131_073)
    with pytest.raises(FleetsimError, match=r"engine.max_model_len: 131,073 tokens is above llama-3.1-8b's context of 131,072"):
        resolve_scenario(sc)
    resolve_scenario(tiny_scenario(max_model_len=131_072))  # (at it: fine)


def test_the_kv_cache_must_hold_one_whole_request_of_max_model_len():
    """100 blocks of 16 hold 1,600 tokens: a limit of 1,600 starts, 1,601 is refused, saying the longest that fits."""
    simulate(tiny_scenario(num_gpu_blocks_override=100, max_model_len=1600), frame([(0.0, 10, 2)]))
    with pytest.raises(FleetsimError) as err:
        simulate(tiny_scenario(num_gpu_blocks_override=100, max_model_len=1601), frame([(0.0, 10, 2)]))
    said = str(err.value)
    assert said.startswith("engine.max_model_len: one request of 1,601 tokens needs 101 KV blocks of 16")
    assert "holds 100 (1,600 tokens): lower it to at most 1,600" in said


def test_the_kv_check_uses_the_computed_cache_too():
    """Llama-3.1-8B on one RTX 4090 at 0.9 holds 2,601 blocks of 16 (`test_roofline`): a 64K limit does not fit (its
    131K context does not either: unset, the replica serves what the cache holds), 32K does."""
    raw = {"model": "llama-3.1-8b", "fleet": {"gpu": "rtx-4090"}, "engine": {"max_num_batched_tokens": 2048}}
    with pytest.raises(FleetsimError, match="holds 2,601 \\(41,616 tokens\\): lower it to at most 41,616"):
        simulate(parse_config({**raw, "engine": {**raw["engine"], "max_model_len": 65_536}}), frame([(0.0, 10, 2)]))
    simulate(parse_config({**raw, "engine": {**raw["engine"], "max_model_len": 32_768}}), frame([(0.0, 10, 2)]))


def test_the_cli_refuses_an_impossible_limit_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    one_line_error(
        ["run", "configs/default.yaml", "--set", "engine.max_model_len=200000", "--out", str(out)],
        "engine.max_model_len: 200,000 tokens is above",
    )
    assert not out.exists()
    one_line_error(["run", "configs/default.yaml", "--set", "engine.max_model_len=1", "--out", str(out)], "max_model_len")
    assert not out.exists()


def test_non_chunked_scheduling_batches_up_to_max_model_len_and_profiles_memory_for_it():
    """vLLM's default max_num_batched_tokens without chunked prefill is max(max_model_len, 2048): the memory profile
    runs a forward of that many tokens, so a shorter limit leaves more room for the KV cache."""
    assert EngineConfig(policy="prefill_first", max_model_len=4096).batched_tokens(131_072) == 4096
    assert EngineConfig(policy="prefill_first", max_model_len=1000).batched_tokens(131_072) == 2048
    assert EngineConfig(policy="prefill_first").batched_tokens(131_072) == 131_072
    assert EngineConfig(policy="chunked", max_model_len=65_536).batched_tokens(131_072) == 8192

    def kv(**engine):
        return kv_capacity_tokens(
            resolve_scenario(parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb"}, "engine": engine}))
        )

    assert kv(policy="prefill_first", max_model_len=8192) > kv(policy="prefill_first")


def test_a_draft_model_with_a_shorter_context_than_the_limit_is_accepted():
    """vLLM caps the draft's context at the target's limit: a draft whose own context is shorter is no error."""
    raw = {
        "model": "llama-3.1-70b",
        "fleet": {"gpu": "h100-sxm", "tp": 4},
        "engine": {
            "max_model_len": 100_000,
            "speculative": {
                "method": "draft",
                "num_speculative_tokens": 3,
                "acceptance_rate": 0.7,
                "draft_model": "llama-3.1-8b",
            },
        },
    }
    r = simulate(parse_config(raw), frame([(0.0, 100, 5)])).requests
    assert r["status"].astype(str).tolist() == ["completed"]


@pytest.mark.parametrize(
    ("written", "tokens"),
    [("8192", 8192), ("32k", 32_000), ("32K", 32_768), ("25.6k", 25_600), ("1M", 1_048_576), (16384, 16384)],
)
def test_vllms_spellings_of_max_model_len(written, tokens):
    """As vLLM's `human_readable_int_or_auto`: lower-case suffixes decimal, upper-case binary."""
    assert context_length("max_model_len", written, "x") == tokens
    assert map_options({"max_model_len": written}, "x").values == {"engine.max_model_len": tokens}


@pytest.mark.parametrize("written", ["auto", "AUTO", "-1", -1])
def test_auto_max_model_len_is_fleetsims_default_and_said_so(written):
    m = map_options({"max_model_len": written}, "serve.sh")
    assert m.values == {} and "fits the limit to its KV cache" in m.notes[0]


@pytest.mark.parametrize("written", ["1.5K", "eight", "0", "-2", True, "32 k"])
def test_a_max_model_len_vllm_would_not_parse_is_refused(written):
    with pytest.raises(FleetsimError, match=r"serve\.sh: vLLM option max_model_len must be"):
        map_options({"max_model_len": written}, "serve.sh")


def test_the_exporter_writes_the_limit_back():
    args = engine_args({"engine.max_model_len": 16384}, hf_repo="meta-llama/Llama-3.1-8B-Instruct")
    assert args[-2:] == ["--max-model-len", "16384"]
    assert "--max-model-len" not in engine_args({"engine.max_model_len": None}, hf_repo="x")
