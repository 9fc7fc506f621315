"""Which layers of an MoE model have experts, as each family's config.json says (Llama 4's interleaved dense layers and
shared expert, Qwen's decoder_sparse_step and mlp_only_layers, DeepSeek's first_k_dense_replace and moe_layer_freq),
and the Llama 4 catalog entries against their model cards."""

from __future__ import annotations

import pytest

from sim.errors import FleetsimError
from sim.physics.models import load_model_catalog, model_from_hf_config
from sim.physics.roofline import weight_bytes_read
from sim.scenario.config import parse_config
from sim.scenario.importer import model_from_name
from sim.scenario.resolve import resolve_scenario

MODELS = load_model_catalog()

D, V, FF, FF_DENSE, E = 64, 100, 32, 96, 4  # hidden, vocabulary, expert width, Llama 4's dense width, experts
ATTN = D * D * 2 + 2 * D * (D // 2)  # q and o (4 heads of 16), k and v (2 KV heads of 16)
EXPERT = 3 * D * FF
ROUTER = D * E


def llama4(layers: int, **extra) -> dict:
    text = {
        "model_type": "llama4_text",
        "hidden_size": D,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": FF,
        "intermediate_size_mlp": FF_DENSE,
        "vocab_size": V,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "num_local_experts": E,
        "num_experts_per_tok": 1,
    }
    return {"model_type": "llama4", "text_config": {**text, **extra}}


def by_hand(layers: int, moe: int, dense_ff: int, *, shared: int = 1) -> int:
    """Parameters of a tiny model with `moe` MoE layers (E experts, `shared` shared experts, a router) and the rest
    dense MLPs `dense_ff` wide: every matrix, the 2 norms a layer and the final one, the embedding and the LM head."""
    moe_layer = E * EXPERT + shared * EXPERT + ROUTER
    return layers * ATTN + moe * moe_layer + (layers - moe) * 3 * D * dense_ff + (2 * layers + 1) * D + 2 * V * D


@pytest.mark.parametrize(("step", "moe"), [(1, 6), (2, 3), (3, 2), (4, 1), (0, 0)])
def test_llama4_interleaves_its_moe_layers_every_step_layers(step, moe):
    """transformers' Llama4TextConfig: MoE layers are step-1, 2 step-1, ...; the rest dense, intermediate_size_mlp
    wide; each MoE layer has one shared expert as wide as an expert; step 0: no MoE layer (a dense model)."""
    m = model_from_hf_config(llama4(6, interleave_moe_layer_step=step), name="tiny")
    assert m.n_moe_layers == moe and m.is_moe == bool(moe)
    assert m.n_params == by_hand(6, moe, FF_DENSE)
    if moe:
        assert m.n_dense_layers == 6 - moe and m.n_shared_experts == 1 and m.expert_params == EXPERT
        inactive = moe * (E - 1) * EXPERT  # (top-1)
        assert m.n_active_params == m.n_params - inactive


def test_an_explicit_moe_layers_list_wins_over_the_step():
    m = model_from_hf_config(llama4(6, interleave_moe_layer_step=1, moe_layers=[0, 5]), name="tiny")
    assert m.n_moe_layers == 2 and m.n_params == by_hand(6, 2, FF_DENSE)


def qwen_moe(**extra) -> dict:
    return {
        "model_type": "qwen2_moe",
        "hidden_size": D,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": V,
        "intermediate_size": FF_DENSE,
        "moe_intermediate_size": FF,
        "num_experts": E,
        "num_experts_per_tok": 2,
        "attention_bias": False,
        "tie_word_embeddings": False,
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "moe"),
    [
        ({}, 6),
        ({"decoder_sparse_step": 2}, 3),  # layers 1, 3, 5 (i + 1 divisible by 2)
        ({"mlp_only_layers": [0, 1]}, 4),
        ({"decoder_sparse_step": 2, "mlp_only_layers": [1]}, 2),
    ],
)
def test_qwen_moe_places_experts_by_decoder_sparse_step_and_mlp_only_layers(extra, moe):
    """transformers' Qwen2MoeDecoderLayer: experts where the layer is not in mlp_only_layers and decoder_sparse_step
    divides its index + 1; a dense layer's MLP is intermediate_size wide."""
    m = model_from_hf_config(qwen_moe(**extra), name="tiny")
    assert m.n_moe_layers == moe
    assert m.n_params == by_hand(6, moe, FF_DENSE, shared=0)


def test_deepseek_places_experts_after_its_dense_layers_every_moe_layer_freq():
    cfg = qwen_moe(model_type="deepseek_v2", first_k_dense_replace=1, moe_layer_freq=2)
    cfg.pop("num_experts")
    cfg["n_routed_experts"] = E
    m = model_from_hf_config(cfg, name="tiny")
    assert m.n_moe_layers == 2  # layers 2 and 4 (>= 1, even)
    assert m.n_params == by_hand(6, 2, FF_DENSE, shared=0)


def without(cfg: dict, key: str) -> dict:
    return {k: v for k, v in cfg.items() if k != key}


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (qwen_moe(mlp_only_layers=[0, 6]), "field 'mlp_only_layers' must list layer indices in 0..5 (got 6)"),
        (qwen_moe(mlp_only_layers=[1, 1]), "field 'mlp_only_layers' lists a layer twice"),
        (qwen_moe(mlp_only_layers="0,1"), "field 'mlp_only_layers' must be a list of layer indices"),
        (qwen_moe(decoder_sparse_step=0), "field 'decoder_sparse_step' must be an integer >= 1 (got 0)"),
        (llama4(4, moe_layers=[True]), "field 'moe_layers' must list layer indices in 0..3 (got True)"),
        (llama4(4, interleave_moe_layer_step=-1), "field 'interleave_moe_layer_step' must be an integer >= 0"),
        (
            {"text_config": without(llama4(4, interleave_moe_layer_step=2)["text_config"], "intermediate_size_mlp")},
            "missing required field 'intermediate_size_mlp' (the dense MLP of the 2 layers",
        ),
        (
            without(qwen_moe(decoder_sparse_step=2), "intermediate_size"),
            "missing required field 'intermediate_size' (3 layers have a dense MLP of that size",
        ),
    ],
)
def test_a_broken_moe_layout_is_one_line_naming_the_field(cfg, message):
    with pytest.raises(FleetsimError) as err:
        model_from_hf_config(cfg, name="tiny", where="config.json")
    text = str(err.value)
    assert text.startswith("config.json: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("name", "total_b", "active_b", "moe_layers"),
    [
        # the cards: "17B active parameters, 16 experts, 109B total" (with the ~1B vision encoder this entry leaves out)
        # and "17B active, 128 experts, 400B total"; Meta counts the embeddings among the active parameters
        ("llama-4-scout", 109.0, 17.0, 48),
        ("llama-4-maverick", 400.0, 17.0, 24),
    ],
)
def test_the_llama4_entries_match_their_model_cards(name, total_b, active_b, moe_layers):
    m = MODELS.get(name)
    assert m.n_params / 1e9 == pytest.approx(total_b, rel=0.015)
    assert m.n_active_params / 1e9 == pytest.approx(active_b, rel=0.02)
    assert m.n_moe_layers == moe_layers and m.n_shared_experts == 1 and m.n_experts_per_tok == 1


def test_a_maverick_step_reads_the_dense_layers_whole_and_only_the_touched_experts():
    """A one-token decode step on 8x H200 reads every weight but the routed experts, and of those one expert per MoE
    layer: the 24 interleaved dense layers are read whole (they have no experts to skip)."""
    sc = parse_config({"model": "llama-4-maverick", "fleet": {"gpu": "h200", "tp": 8}})
    setup = resolve_scenario(sc)
    m = setup.model
    routed = m.n_moe_layers * m.n_experts * m.expert_params * 2
    assert weight_bytes_read(setup, 1) == pytest.approx(m.n_params * 2 - routed + m.n_moe_layers * m.expert_params * 2)


@pytest.mark.parametrize(
    ("repo", "entry"),
    [
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout"),
        ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "llama-4-maverick"),
    ],
)
def test_a_run_log_naming_a_llama4_repo_replays_on_its_entry(repo, entry):
    assert model_from_name(repo) == entry
