"""The catalog entry a Hugging Face repo id denotes, as a run log's meta.json or a manifest's `--model` names it: the
catalog's own repos, the suffixes releases add (instruct, chat, hf, quantized), and the repos that share an
architecture (models.yaml `aliases`). Before, only the exact repo matched: a real run of
meta-llama/Llama-3.1-8B-Instruct replayed, one of Llama-3.3-70B-Instruct or Llama-2-7b-chat-hf did not."""

from __future__ import annotations

import pytest

from sim.physics.models import load_model_catalog
from sim.scenario.importer import model_aliases, model_from_name, weight_bits_from_name
from sim.studies.validate import scenario_from_meta


@pytest.mark.parametrize(
    ("repo", "entry"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8", "llama-3.1-8b"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
        ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "llama-3.1-70b"),
        ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "llama-3.1-70b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "qwen2.5-32b"),
        ("Qwen/QwQ-32B", "qwen2.5-32b"),
        ("Qwen/Qwen3-14B", "qwen3-14b"),
        ("Qwen/Qwen3-8B-FP8", "qwen3-8b"),
        ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b-instruct-2507"),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-30b-a3b-instruct-2507"),
        ("mistralai/Mistral-Small-24B-Instruct-2501", "mistral-small-24b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek-v3"),
        ("/models/llama-3.2-3b", "llama-3.2-3b"),
        ("llama-3.1-8b", "llama-3.1-8b"),
    ],
)
def test_a_repo_id_finds_its_catalog_entry(repo, entry):
    assert model_from_name(repo) == entry


@pytest.mark.parametrize("repo", ["google/gemma-3-27b-it", "Qwen/Qwen3-0.6B", "facebook/opt-13b", "", "/", "-instruct"])
def test_a_model_the_catalog_lacks_is_not_matched(repo):
    assert model_from_name(repo) is None


def test_every_alias_is_a_distinct_repo_and_resolves_to_its_own_entry():
    aliases = model_aliases()
    catalog = load_model_catalog()
    seen: dict[str, str] = {}
    for name, repos in aliases.items():
        assert name in catalog.models
        for repo in repos:
            assert repo not in seen, (repo, seen.get(repo), name)
            seen[repo] = name
            assert model_from_name(repo) == name


@pytest.mark.parametrize(
    ("repo", "bits"),
    [("Qwen/Qwen3-235B-A22B-FP8", 8), ("x/Llama-3.1-70B-Instruct-AWQ-INT4", 4), ("x/model-w8a8", 8), ("Qwen/Qwen3-8B", None)],
)
def test_a_quantized_release_names_its_weight_precision(repo, bits):
    assert weight_bits_from_name(repo) == bits


def test_a_run_log_of_an_fp8_release_replays_its_weights_at_8_bits():
    meta = {
        "model": "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
        "engine_kwargs": {"tensor_parallel_size": 4},
        "hardware": {"device_name": "NVIDIA H100 80GB HBM3"},
    }
    scenario, notes = scenario_from_meta(meta)
    assert scenario["model"] == "llama-3.1-70b" and scenario["roofline"]["weight_bits"] == 8
    assert any("8-bit, as the model's name says" in n for n in notes)
    meta["resolved_config"] = {"model_config": {"quantization": "fp8"}}  # the log's own word wins
    assert scenario_from_meta(meta)[0]["roofline"]["weight_bits"] == 8


def test_a_quantized_name_does_not_override_a_catalog_entry_that_ships_quantized():
    """gpt-oss ships MXFP4 experts beside 16-bit attention, DeepSeek-V3 FP8: a `-mxfp4`/`-FP8` name is what they
    ship, not an order to put every weight at that precision."""
    for repo in ("openai/gpt-oss-120b-mxfp4", "deepseek-ai/DeepSeek-V3-FP8"):
        meta = {"model": repo, "engine_kwargs": {"tensor_parallel_size": 8}, "hardware": {"device_name": "NVIDIA H200"}}
        assert scenario_from_meta(meta)[0]["roofline"]["weight_bits"] is None
