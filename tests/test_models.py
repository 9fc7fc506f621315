import json

import pytest

from sim.errors import FleetsimError
from sim.physics.models import load_hf_config, model_from_hf_config, resolve_model

# Published totals (model cards / papers), billions of parameters.
PUBLISHED = {
    "llama-2-7b": 6.74,
    "llama-2-13b": 13.0,
    "llama-2-70b": 69.0,
    "llama-3.1-8b": 8.03,
    "llama-3.1-70b": 70.6,
    "llama-3.1-405b": 405.9,
    "mixtral-8x7b": 46.7,
    "qwen2.5-72b": 72.7,
    "deepseek-v3": 671.0,
}

# KV bytes per token at 16 bits, from reference/ecosystem.md section 5 (exact).
KV_BYTES = {
    "llama-2-7b": 524_288,
    "llama-2-13b": 819_200,
    "llama-2-70b": 327_680,
    "llama-3.1-8b": 131_072,
    "llama-3.1-70b": 327_680,
    "llama-3.1-405b": 516_096,
    "mixtral-8x7b": 131_072,
    "qwen2.5-72b": 327_680,
    "deepseek-v3": 70_272,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_total_params_match_published_within_1pct(models, name):
    assert models.get(name).n_params / 1e9 == pytest.approx(PUBLISHED[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(KV_BYTES))
def test_kv_bytes_per_token_exact(models, name):
    assert models.get(name).kv_bytes_per_token(16) == KV_BYTES[name]


def test_dense_models_are_fully_active(models):
    for name in ["llama-2-70b", "llama-3.1-8b", "qwen2.5-72b"]:
        m = models.get(name)
        assert m.n_active_params == m.n_params


def test_mixtral_active_params(models):
    m = models.get("mixtral-8x7b")
    assert m.n_active_params / 1e9 == pytest.approx(12.9, rel=0.01)


def test_deepseek_v3_active_params(models):
    # DeepSeek reports "37B activated"; the exact sum over its config is 37.55 B
    # (reference/ecosystem.md: 37.6 B), which the published figure rounds down.
    m = models.get("deepseek-v3")
    assert m.n_active_params / 1e9 == pytest.approx(37.6, rel=0.01)
    assert m.n_active_params / 1e9 == pytest.approx(37.0, rel=0.02)


def test_flops_per_token_match_kaplan_convention(models):
    # 2 x active params without the input-embedding lookup (ecosystem.md section 5).
    assert models.get("llama-3.1-8b").flops_per_token / 1e9 == pytest.approx(15.0, rel=0.01)
    assert models.get("llama-3.1-70b").flops_per_token / 1e9 == pytest.approx(139.0, rel=0.01)
    assert models.get("mixtral-8x7b").flops_per_token / 1e9 == pytest.approx(25.5, rel=0.01)


def test_weight_bytes_scale_with_bits(models):
    m = models.get("llama-2-7b")
    assert m.weight_bytes(16) == 2 * m.n_params
    assert m.weight_bytes(8) == m.n_params
    assert m.weight_bytes(4) == m.n_params / 2


def test_llama2_7b_param_count_by_hand(models):
    d, L, ff, V = 4096, 32, 11008, 32000
    per_layer = 4 * d * d + 3 * d * ff + 2 * d
    assert models.get("llama-2-7b").n_params == L * per_layer + d + 2 * V * d


def test_attention_flops_per_pair(models):
    m = models.get("llama-2-70b")
    assert m.attention_flops_per_pair == 4 * 80 * 64 * 128


def test_kv_replication_when_tp_exceeds_kv_heads(models):
    m = models.get("llama-3.1-8b")  # 8 KV heads
    assert m.kv_replication(8) == 1
    assert m.kv_replication(16) == 2
    assert models.get("deepseek-v3").kv_replication(8) == 8  # MLA latent on every rank


def test_check_tp_accepts_valid_degrees(models):
    m = models.get("llama-2-70b")
    for tp in (1, 2, 4, 8, 16, 32, 64):
        m.check_tp(tp)


def test_check_tp_rejects_non_divisor(models):
    with pytest.raises(FleetsimError, match=r"tp=3 must divide num_attention_heads=64 of llama-2-70b"):
        models.get("llama-2-70b").check_tp(3)


def test_check_tp_rejects_kv_mismatch():
    m = model_from_hf_config(
        {
            "hidden_size": 1536,
            "num_hidden_layers": 2,
            "num_attention_heads": 12,
            "num_key_value_heads": 4,
            "intermediate_size": 64,
            "vocab_size": 100,
        },
        name="odd",
    )
    with pytest.raises(FleetsimError, match=r"tp=6 and num_key_value_heads=4 .* must divide one another"):
        m.check_tp(6)
    # the TP degrees an error offers are the ones it accepts: 3, 6 and 12 divide the 12 heads, not the 4 KV heads
    assert m.valid_tps() == [1, 2, 4, 12]
    for tp in m.valid_tps():
        m.check_tp(tp)
    with pytest.raises(FleetsimError, match=r"tp=24 must divide num_attention_heads=12 .*; valid tp: 1, 2, 4, 12$"):
        m.check_tp(24)


def _write(tmp_path, cfg):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_hf_import_matches_catalog(tmp_path, models):
    cfg = {
        "model_type": "llama",
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
    }
    m = load_hf_config(_write(tmp_path, cfg))
    ref = models.get("llama-2-70b")
    assert (m.n_params, m.kv_bytes_per_token(16), m.max_context_tokens) == (ref.n_params, ref.kv_bytes_per_token(16), 4096)
    assert resolve_model(str(tmp_path)).n_params == ref.n_params  # a folder holding config.json


def test_hf_import_prefers_explicit_head_dim(tmp_path):
    cfg = {
        "hidden_size": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "intermediate_size": 1024,
        "vocab_size": 1000,
    }
    m = load_hf_config(_write(tmp_path, cfg))
    assert m.kv_bytes_per_token(16) == 2 * 2 * 8 * 256 * 2


def test_hf_import_missing_field(tmp_path):
    path = _write(tmp_path, {"hidden_size": 4096, "num_attention_heads": 32, "vocab_size": 32000, "intermediate_size": 1})
    with pytest.raises(FleetsimError, match=r"config.json: missing required field 'num_hidden_layers'"):
        load_hf_config(path)


def test_hf_import_bad_value(tmp_path):
    path = _write(
        tmp_path, {"hidden_size": -1, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10, "intermediate_size": 4}
    )
    with pytest.raises(FleetsimError, match=r"field 'hidden_size' must be an integer >= 1 \(got -1\)"):
        load_hf_config(path)


@pytest.mark.parametrize("field", ["num_key_value_heads", "head_dim", "max_position_embeddings"])
def test_hf_import_a_zero_where_a_default_exists_is_refused_not_defaulted(tmp_path, field):
    """A 0 in an optional dimension used to fall back to its default (num_key_value_heads to the heads, head_dim to
    hidden / heads, the context to 4,096): a broken config read as a different model. Absent or null still defaults."""
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10, "intermediate_size": 8}
    with pytest.raises(FleetsimError, match=rf"field '{field}' must be an integer >= 1 \(got 0\)"):
        load_hf_config(_write(tmp_path, {**base, field: 0}))
    assert load_hf_config(_write(tmp_path, {**base, field: None})).n_kv_heads == 4


def test_hf_import_invalid_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(FleetsimError, match=r"config.json line 1: invalid JSON"):
        load_hf_config(path)


def test_unknown_model_lists_valid_names():
    with pytest.raises(FleetsimError, match=r"unknown model 'llama-9'; valid names: .*llama-2-70b"):
        resolve_model("llama-9")
