"""Model catalog and Hugging Face `config.json` import.

Derives, from the architecture alone, what the roofline needs: parameters (total and, for
mixture-of-experts, active per token), weight bytes at a given bit width, matmul FLOPs per token,
attention FLOPs per (query token, context token) pair, and KV-cache bytes per token for MHA, GQA,
MQA and MLA (DeepSeek's latent cache). Counts are exact sums over the weight matrices, biases and
norms of a Llama-style decoder (gated MLP) and its MoE/MLA variants.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sim.errors import FleetsimError, unknown_name
from sim.spec import MAX_TOKENS

# Architectures whose MLP is up/down only (no gate projection).
_UNGATED_MLP = {"gpt2", "gpt_neox", "opt", "bloom", "falcon", "gpt_bigcode", "phi"}
# Architectures with q/k/v projection biases even though config.json has no `attention_bias` key.
_QKV_BIAS = {"qwen2", "qwen2_moe"}
# Architectures that normalize each head's queries and keys before rotary embedding (vLLM's Qwen3, Gemma 3, OLMo 2 and
# OLMoE `q_norm` / `k_norm`; Llama 4's `use_qk_norm`, on in Scout and Maverick): one more kernel a layer (compiled,
# the two norms share one).
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2", "olmoe", "llama4", "llama4_text"}
# Architectures whose router adds a score-correction bias before a grouped top-k (two kernels: vLLM's noaux_tc).
_BIASED_TOPK = {"deepseek_v3", "kimi_k2"}
# Architectures with four norms a layer (before and after attention and the MLP), not two.
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text"}
# The kernels of the layer the per-layer overhead is fitted on (`layer_kernels`): a Llama layer's ten.
REF_LAYER_KERNELS = 10


@dataclass(frozen=True, slots=True)
class MlaSpec:
    """Multi-head latent attention (DeepSeek-V2/V3): the cache holds a compressed latent."""

    q_lora_rank: int  # 0 = queries projected directly from the hidden state
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hf_repo: str
    model_type: str
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context_tokens: int
    tie_embeddings: bool = False
    qkv_bias: bool = False
    gated_mlp: bool = True
    n_experts: int = 0  # routed experts per MoE layer; 0 = dense model
    n_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    n_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0
    n_dense_layers: int = 0  # layers with a dense MLP in an MoE model (DeepSeek's leading ones, Llama 4's interleaved)
    # which layers have experts (0-based; empty: the last n_layers - n_dense_layers, a dense model's none): where a
    # pipeline's stages split the weights (`sim.physics.roofline.stage_weight_bytes`)
    moe_layer_ids: tuple[int, ...] = ()
    mla: MlaSpec | None = None
    # sliding-window attention: `n_sliding_layers` of the layers attend to the last `sliding_window` tokens only
    sliding_window: int = 0
    n_sliding_layers: int = 0
    # the precision the checkpoint ships in (config.json's quantization_config): bits per weight of the linear layers,
    # and of the routed experts when they differ (gpt-oss: MXFP4 experts); embeddings and the LM head stay 16-bit
    shipped_bits: float = 16.0
    shipped_expert_bits: float | None = None
    shipped_quant: str = ""  # the quantization method named ("" for 16-bit weights)

    # Derived counts are cached properties: the spec is frozen, so they never go stale.
    # --- structure -------------------------------------------------------------------------
    @functools.cached_property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def attention_kind(self) -> str:
        if self.mla is not None:
            return "MLA"
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    @functools.cached_property
    def sliding_share(self) -> float:
        """The share of the layers that attend to a sliding window (their attention FLOPs and KV reads a token stop
        growing past the window); 0 without one."""
        return self.n_sliding_layers / self.n_layers if self.sliding_window else 0.0

    @functools.cached_property
    def n_moe_layers(self) -> int:
        return self.n_layers - self.n_dense_layers if self.is_moe else 0

    def layer_kernels(self, moe: bool, quantized_activations: bool = False) -> int:
        """Kernels one decoder layer launches in vLLM's forward (V1, CUDA graphs, its default compilation), its
        all-reduces and MoE token exchanges aside (priced as communication), counted from vLLM 0.19's model and layer
        code (`docs/steptime.md`):
        - norms: 2 (input and post-attention, each fused with the residual add; Gemma 2/3: 4);
        - attention: qkv projection, rotary embedding, KV-cache write, attention, o projection (5); per-head q/k norms
          (Qwen3, Gemma 3, Llama 4) 1 more (compiled, they share a kernel); MLA (DeepSeek-V2/V3, Kimi K2, decoding in
          the absorbed form) the fused q_a/kv_a projection, q_a norm and q_b projection (without a q LoRA: q and kv_a
          projections), kv_a norm, rotary, the W_UK product, the latent cache write, attention, the W_UV product, o
          projection (10; 9);
        - a dense MLP: gate_up, activation, down (3; an ungated MLP's up, activation, down);
        - an MoE block (vLLM's Triton experts): router, top-k, the tokens' alignment by expert, the experts' two grouped
          GEMMs with the activation between them, the top-k sum and the copy out of the workspace (8); the alignment
          takes a second kernel past 64 experts, the top-k one with a score-correction bias (DeepSeek-V3's grouped
          top-k, Kimi K2's) or an expert count that is not a power of two up to 256; shared experts: gate_up,
          activation, down (3; their scaling and add fuse into the next norm), and Qwen2-MoE's sigmoid gate on them
          (1);
        - `quantized_activations` (W8A8 / W4A4 GEMMs): the quantizations of linear inputs that no norm's kernel
          absorbs (vLLM fuses an input's quantization into the norm before it): the o projection's and the down
          projection's (1 each), the experts' two and the shared experts' two.
        A Llama layer is `REF_LAYER_KERNELS` (10); `layer_overhead_s` is fitted on such layers, so a layer costs
        layer_overhead_s x its kernels / 10 (the small kernels each take about the same: 1.9-2.7 us a norm, rotary
        embedding or activation at a few tokens in LLMServingSim's vLLM 0.19 profiles, `benchmarks/kernels/`)."""
        family = self.model_type.lower()
        norms = 4 if family in _FOUR_NORMS else 2
        mla = self.mla
        attn = (10 if mla.q_lora_rank else 9) if mla is not None else 5 + (1 if family in _QK_NORM else 0)
        quant = 1  # the o projection's input
        if moe:
            e = self.n_experts
            mlp = 8 + (1 if e > 64 else 0) + (1 if family in _BIASED_TOPK or (e & (e - 1) and e <= 256) else 0)
            # shared experts: counted (`n_shared_experts`) or sized (`shared_expert_intermediate_size`, Qwen2-MoE's,
            # whose output a sigmoid gate of its own scales: one GEMV more, as `_shared_params_per_moe_layer` counts it)
            if self.n_shared_experts or self.shared_expert_intermediate_size:
                mlp += 3 + (1 if self.shared_expert_intermediate_size else 0)
                quant += 2
            quant += 2
        else:
            mlp = 3
            quant += 1
        return norms + attn + mlp + (quant if quantized_activations else 0)

    def layer_units(self, quantized_activations: bool = False) -> float:
        """The model's layers in units of the reference layer's kernels (`layer_kernels`): what the per-layer
        overhead multiplies (a Llama model's: exactly its layer count)."""
        n_moe = self.n_moe_layers
        total = (self.n_layers - n_moe) * self.layer_kernels(False, quantized_activations)
        if n_moe:
            total += n_moe * self.layer_kernels(True, quantized_activations)
        return total / REF_LAYER_KERNELS

    @functools.cached_property
    def moe_layer_set(self) -> frozenset[int]:
        """The layers with experts (`moe_layer_ids`, by default the last `n_moe_layers`)."""
        if not self.is_moe:
            return frozenset()
        if self.moe_layer_ids:
            return frozenset(self.moe_layer_ids)
        return frozenset(range(self.n_layers - self.n_moe_layers, self.n_layers))

    def layer_params(self, moe: bool) -> tuple[int, int]:
        """(linear parameters, routed-expert parameters) of one decoder layer: its attention, two norms and dense MLP,
        or its MoE block's shared experts, router and routed experts."""
        common = self.attention_params_per_layer + 2 * self.hidden_size
        if moe:
            return common + self._shared_params_per_moe_layer, self.n_experts * self.expert_params
        return common + self._mlp_params(self.intermediate_size), 0

    @property
    def attention_params_per_layer(self) -> int:
        d, h = self.hidden_size, self.n_heads
        if self.mla is not None:
            m = self.mla
            qk_dim = m.qk_nope_head_dim + m.qk_rope_head_dim
            q = d * h * qk_dim if m.q_lora_rank == 0 else d * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * h * qk_dim
            kv_a = d * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv_b = m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim)
            o = h * m.v_head_dim * d
            return q + kv_a + kv_b + o
        hd, kv = self.head_dim, self.n_kv_heads
        params = d * h * hd + 2 * d * kv * hd + h * hd * d
        if self.qkv_bias:
            params += h * hd + 2 * kv * hd
        return params

    def _mlp_params(self, intermediate: int) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * intermediate

    @functools.cached_property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        size = self.moe_intermediate_size or self.intermediate_size
        return self._mlp_params(size)

    @property
    def _shared_params_per_moe_layer(self) -> int:
        """Shared experts and the router: read for every token of an MoE layer."""
        size = self.shared_expert_intermediate_size or self.n_shared_experts * (
            self.moe_intermediate_size or self.intermediate_size
        )
        shared = self._mlp_params(size) if size else 0
        shared_gate = self.hidden_size if self.shared_expert_intermediate_size else 0
        return shared + shared_gate + self.hidden_size * self.n_experts

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def _norm_params(self) -> int:
        return (2 * self.n_layers + 1) * self.hidden_size

    @property
    def _common_params(self) -> int:
        """Everything except the MLP/MoE blocks."""
        return self.n_layers * self.attention_params_per_layer + self._norm_params + self.embedding_params + self.lm_head_params

    # --- parameter counts ------------------------------------------------------------------
    @functools.cached_property
    def routed_expert_params(self) -> int:
        """All routed-expert parameters (0 for a dense model)."""
        return self.n_moe_layers * self.n_experts * self.expert_params

    @functools.cached_property
    def n_params(self) -> int:
        dense_layers = self.n_layers - self.n_moe_layers
        mlp = dense_layers * self._mlp_params(self.intermediate_size)
        moe = self.n_moe_layers * self._shared_params_per_moe_layer + self.routed_expert_params
        return self._common_params + mlp + moe

    @functools.cached_property
    def n_active_params(self) -> int:
        """Parameters used for one token (MoE: only `n_experts_per_tok` routed experts)."""
        if not self.is_moe:
            return self.n_params
        inactive = self.n_moe_layers * (self.n_experts - self.n_experts_per_tok) * self.expert_params
        return self.n_params - inactive

    @functools.cached_property
    def n_matmul_params_per_token(self) -> int:
        """Active parameters that enter a matmul: all but the input-embedding lookup (unless tied)."""
        lookup = 0 if self.tie_embeddings else self.embedding_params
        return self.n_active_params - lookup

    def weight_bytes(self, weight_bits: float | None) -> float:
        """Bytes of all weights: every parameter at `weight_bits`, or (None) as shipped (`part_bits`)."""
        if weight_bits is not None:
            return self.n_params * weight_bits / 8
        embed, linear, experts = self.part_bits(None)
        n_embed = self.embedding_params + self.lm_head_params
        rest = self.n_params - n_embed - self.routed_expert_params
        return (n_embed * embed + rest * linear + self.routed_expert_params * experts) / 8

    def part_bits(self, weight_bits: float | None) -> tuple[float, float, float]:
        """Bits per weight of (embeddings and LM head, other layers, routed experts): all `weight_bits` when given,
        else as the checkpoint ships (FP8 checkpoints such as DeepSeek-V3's keep embeddings and the LM head in BF16;
        gpt-oss quantizes only the experts, to MXFP4: 4-bit values and an 8-bit scale per 32, 4.25 bits)."""
        if weight_bits is not None:
            return float(weight_bits), float(weight_bits), float(weight_bits)
        experts = self.shipped_expert_bits if self.shipped_expert_bits is not None else self.shipped_bits
        return 16.0, self.shipped_bits, experts

    @property
    def shipped_words(self) -> str:
        """The shipped precision in words: "bf16", "fp8", "mxfp4 experts"."""
        if not self.shipped_quant:
            return "bf16"
        return f"{self.shipped_quant} experts" if self.shipped_expert_bits is not None else self.shipped_quant

    # --- FLOPs and KV cache ----------------------------------------------------------------
    @functools.cached_property
    def flops_per_token(self) -> float:
        """Matmul FLOPs of one token's forward pass, attention excluded: 2 per active weight."""
        return 2.0 * self.n_matmul_params_per_token

    @functools.cached_property
    def logit_flops_per_token(self) -> float:
        """FLOPs of the LM head (hidden -> vocabulary; tied to the embedding or not) for one position."""
        return 2.0 * self.vocab_size * self.hidden_size

    @functools.cached_property
    def attention_flops_per_pair(self) -> float:
        """FLOPs for one query token against one context token: QK^T and AV over all heads/layers (MLA: its prefill
        form, multi-head attention over K and V up-projected from the latent)."""
        if self.mla is not None:
            qk = self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
            return 2.0 * self.n_layers * self.n_heads * (qk + self.mla.v_head_dim)
        return 4.0 * self.n_layers * self.n_heads * self.head_dim

    @functools.cached_property
    def decode_attention_flops_per_pair(self) -> float:
        """`attention_flops_per_pair` for a decoding query. MLA decodes in its data-movement-friendly form (vLLM's MLA
        backends, FlashMLA; vllm/v1/attention/backends/mla/common.py): W_UK and W_UV absorbed into the query and the
        output, each head attends over the cached latent itself, multi-query attention with a QK head dim of
        kv_lora_rank + rope dim and a V head dim of kv_lora_rank (576 and 512 in DeepSeek-V3: 3.4x the prefill form's
        FLOPs a pair, for reading only the latent). Other attention decodes as it prefills."""
        if self.mla is not None:
            m = self.mla
            return 2.0 * self.n_layers * self.n_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
        return self.attention_flops_per_pair

    @functools.cached_property
    def context_flops_per_token(self) -> float:
        """FLOPs a prefill chunk spends per cached context token before attending to it: MLA's prefill form
        up-projects each cached latent to K and V (kv_b_proj: kv_lora_rank x heads x (nope + v dims), each layer) for
        every chunk that attends to it (vLLM's chunked-context loop, same source); 0 for other attention."""
        if self.mla is None:
            return 0.0
        m = self.mla
        return 2.0 * self.n_layers * m.kv_lora_rank * self.n_heads * (m.qk_nope_head_dim + m.v_head_dim)

    def kv_elements_per_token(self) -> int:
        """Cached elements per token over all layers (one copy, no TP replication)."""
        if self.mla is not None:
            return self.n_layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim)
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_bits: int = 16) -> float:
        return self.kv_elements_per_token() * kv_bits / 8

    def kv_replication(self, tp: int) -> int:
        """How many copies of each token's KV a TP group holds in total.

        GQA/MQA with more GPUs than KV heads replicates each KV head (vLLM does so), and MLA's
        latent cache is the same on every rank.
        """
        if self.mla is not None:
            return tp
        return max(1, tp // self.n_kv_heads) if tp > self.n_kv_heads else 1

    def check_tp(self, tp: int) -> None:
        """Raise unless tensor parallelism of degree `tp` can shard this model's heads."""
        if tp < 1:
            raise FleetsimError(f"tp must be >= 1 (got {tp})")
        if self.n_heads % tp:
            raise FleetsimError(
                f"tp={tp} must divide num_attention_heads={self.n_heads} of {self.name}; "
                f"valid tp: {', '.join(str(t) for t in self.valid_tps())}"
            )
        if not self._shards_kv_heads(tp):
            kv = self.n_kv_heads
            raise FleetsimError(
                f"tp={tp} and num_key_value_heads={kv} of {self.name} must divide one another "
                f"(KV heads are split when tp <= {kv}, replicated when tp > {kv}); valid tp: "
                f"{', '.join(str(t) for t in self.valid_tps())}"
            )

    def _shards_kv_heads(self, tp: int) -> bool:
        kv = self.n_kv_heads
        return self.mla is not None or not (kv % tp if tp <= kv else tp % kv)

    def valid_tps(self) -> list[int]:
        """The TP degrees up to 64 `check_tp` accepts: dividing the attention heads, and dividing the KV heads or
        divided by them."""
        return [t for t in _divisors(self.n_heads) if self._shards_kv_heads(t)]


def _divisors(n: int) -> list[int]:
    """The TP degrees up to 64 that divide `n` (not a scan to n: a config's head count may be in the billions)."""
    return [t for t in range(1, min(n, 64) + 1) if n % t == 0]


# --- Hugging Face config.json ------------------------------------------------------------------
def _need(cfg: dict[str, Any], key: str, where: str) -> int:
    if key not in cfg or cfg[key] is None:
        raise FleetsimError(f"{where}: missing required field {key!r}")
    return _positive_int(cfg[key], key, where)


def _positive_int(value: Any, key: str, where: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        rule = ">= 0" if allow_zero else ">= 1"
        raise FleetsimError(f"{where}: field {key!r} must be an integer {rule} (got {value!r})")
    if value > MAX_TOKENS:  # (no dimension, count or context of a model comes near: a typo, then 1e53 GB of weights)
        raise FleetsimError(f"{where}: field {key!r} must be <= {MAX_TOKENS:,} (got {value!r})")
    return value


def _flag(cfg: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):  # ("no" is truthy: it would have counted the bias or the tied embeddings)
        raise FleetsimError(f"{where}: field {key!r} must be true or false (got {value!r})")
    return value


def _opt(cfg: dict[str, Any], key: str, where: str, default: int = 0) -> int:
    value = cfg.get(key)
    return default if value is None else _positive_int(value, key, where, allow_zero=True)


def _given(cfg: dict[str, Any], key: str, where: str, default: int) -> int:
    """An optional positive field: `default` when absent or null, else at least 1."""
    value = cfg.get(key)
    return default if value is None else _positive_int(value, key, where)


def model_from_hf_config(cfg: Any, *, name: str, hf_repo: str = "", where: str = "") -> ModelSpec:
    """Build a ModelSpec from the fields of a Hugging Face `config.json` (already parsed)."""
    where = where or name
    if not isinstance(cfg, dict):
        raise FleetsimError(f"{where}: config must be a JSON object (got {type(cfg).__name__})")
    if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrappers
        cfg = cfg["text_config"]
        if not isinstance(cfg, dict):
            raise FleetsimError(f"{where}: field 'text_config' must be an object (got {type(cfg).__name__})")
    d = _need(cfg, "hidden_size", where)
    layers = _need(cfg, "num_hidden_layers", where)
    heads = _need(cfg, "num_attention_heads", where)
    vocab = _need(cfg, "vocab_size", where)
    # (absent or null: the defaults, as transformers fills them; given, at least 1: a 0 is no default but a broken config)
    kv_heads = _given(cfg, "num_key_value_heads", where, heads)
    head_dim = _given(cfg, "head_dim", where, d // heads)
    if head_dim < 1:
        raise FleetsimError(f"{where}: hidden_size={d} over num_attention_heads={heads} leaves no head dimension; give head_dim")
    n_experts = _opt(cfg, "num_local_experts", where) or _opt(cfg, "num_experts", where) or _opt(cfg, "n_routed_experts", where)
    moe_ff = _opt(cfg, "moe_intermediate_size", where)
    intermediate = _opt(cfg, "intermediate_size", where)
    if not intermediate and not (n_experts and moe_ff):
        if cfg.get("intermediate_size") is None:
            raise FleetsimError(f"{where}: missing required field 'intermediate_size'")
        raise FleetsimError(f"{where}: field 'intermediate_size' must be >= 1 (got {cfg['intermediate_size']!r})")
    model_type = cfg.get("model_type", "")
    model_type = "" if model_type is None else model_type
    if not isinstance(model_type, str):  # (str() of a list named no family: its sliding layers, biases, MoE layout unread)
        raise FleetsimError(f"{where}: field 'model_type' must be a string such as 'llama' (got {model_type!r})")
    mla = None
    if cfg.get("kv_lora_rank"):
        mla = MlaSpec(
            q_lora_rank=_opt(cfg, "q_lora_rank", where),
            kv_lora_rank=_need(cfg, "kv_lora_rank", where),
            qk_nope_head_dim=_need(cfg, "qk_nope_head_dim", where),
            qk_rope_head_dim=_need(cfg, "qk_rope_head_dim", where),
            v_head_dim=_need(cfg, "v_head_dim", where),
        )
    dense_first = min(_opt(cfg, "first_k_dense_replace", where), layers) if n_experts else 0
    if dense_first and not intermediate:  # (their MLPs were counted at 0 parameters and 0 FLOPs)
        raise FleetsimError(
            f"{where}: missing required field 'intermediate_size' (the first {dense_first} layers, first_k_dense_replace, "
            "have a dense MLP of that size)"
        )
    llama4 = model_type.startswith("llama4")
    moe_ids = moe_layer_ids(cfg, layers, dense_first, where) if n_experts else ()
    n_moe = len(moe_ids)
    dense_ff = intermediate
    if llama4 and n_experts:  # Llama 4: `intermediate_size` is an expert's (and the shared expert's) FFN width, the
        # dense layers' is `intermediate_size_mlp` (transformers' Llama4TextConfig)
        moe_ff = moe_ff or intermediate
        dense_ff = _opt(cfg, "intermediate_size_mlp", where)
        if n_moe < layers and not dense_ff:
            raise FleetsimError(
                f"{where}: missing required field 'intermediate_size_mlp' (the dense MLP of the {layers - n_moe} layers "
                "interleave_moe_layer_step leaves without experts)"
            )
    elif n_experts and n_moe < layers - dense_first and not intermediate:
        raise FleetsimError(
            f"{where}: missing required field 'intermediate_size' ({layers - n_moe} layers have a dense MLP of that size: "
            "decoder_sparse_step, mlp_only_layers or moe_layer_freq)"
        )
    if n_experts and not n_moe:  # (experts in no layer: the model is dense)
        n_experts = 0
    per_tok = _opt(cfg, "num_experts_per_tok", where)
    if n_experts and not 1 <= per_tok <= n_experts:
        raise FleetsimError(f"{where}: field 'num_experts_per_tok' must be in 1..{n_experts} (got {per_tok})")
    window, n_sliding = sliding_layers(cfg, layers, model_type, mla is not None, where)
    spec = ModelSpec(
        name=name,
        hf_repo=hf_repo or str(cfg.get("_name_or_path", "")),
        model_type=model_type,
        hidden_size=d,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=dense_ff,
        vocab_size=vocab,
        max_context_tokens=_given(cfg, "max_position_embeddings", where, 4096),
        tie_embeddings=_flag(cfg, "tie_word_embeddings", where, False),
        qkv_bias=_flag(cfg, "attention_bias", where, model_type in _QKV_BIAS),
        gated_mlp=model_type not in _UNGATED_MLP,
        n_experts=n_experts,
        n_experts_per_tok=per_tok if n_experts else 0,
        moe_intermediate_size=moe_ff if n_experts else 0,
        # (Llama 4's MoE layers each have one shared expert of an expert's width: Llama4TextMoe.shared_expert)
        n_shared_experts=(1 if llama4 else _opt(cfg, "n_shared_experts", where)) if n_experts else 0,
        shared_expert_intermediate_size=_opt(cfg, "shared_expert_intermediate_size", where) if n_experts else 0,
        n_dense_layers=layers - n_moe if n_experts else 0,
        moe_layer_ids=moe_ids if n_experts else (),
        mla=mla,
        sliding_window=window,
        n_sliding_layers=n_sliding,
    )
    if heads % kv_heads:
        raise FleetsimError(f"{where}: num_attention_heads={heads} must be a multiple of num_key_value_heads={kv_heads}")
    quant = shipped_precision(cfg.get("quantization_config"), where)
    if quant is not None:
        method, bits, expert_bits = quant
        if expert_bits is not None and not n_experts:  # (experts-only formats on a dense model: its linear layers)
            bits, expert_bits = expert_bits, None
        spec = dataclasses.replace(spec, shipped_quant=method, shipped_bits=bits, shipped_expert_bits=expert_bits)
    return spec


def sliding_layers(cfg: dict[str, Any], layers: int, model_type: str, mla: bool, where: str) -> tuple[int, int]:
    """The layers that attend to a sliding window (`sliding_window` tokens, the query's own included) and its size,
    as config.json places them: `layer_types` ("sliding_attention"; gpt-oss, Gemma 3 and newer configs), else each
    family's fixed pattern (gpt-oss and Gemma 2: every other layer from the first; Gemma 3: all but every
    `sliding_window_pattern`-th; Mistral and Mixtral: every layer): (window, layers). (0, 0) where
    `use_sliding_window` is false (Qwen2 ships a window it does not use), for MLA, or for a family whose pattern is not
    known here."""
    window = cfg.get("sliding_window")
    if window is None or mla or not _flag(cfg, "use_sliding_window", where, True):  # ("false" as a string: the window used)
        return 0, 0
    w = _positive_int(window, "sliding_window", where)
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers or not all(isinstance(t, str) for t in types):
            raise FleetsimError(f"{where}: field 'layer_types' must list {layers} attention types, one a layer (got {types!r})")
        n = sum(t == "sliding_attention" for t in types)
    elif model_type in ("gpt_oss", "gemma2"):
        n = len(range(0, layers, 2))
    elif model_type in ("gemma3", "gemma3_text"):
        pattern = _given(cfg, "sliding_window_pattern", where, 6)
        n = sum(1 for i in range(layers) if (i + 1) % pattern)
    elif model_type in ("mistral", "mixtral"):
        n = layers
    else:
        n = 0
    return (w, n) if n else (0, 0)


def moe_layer_ids(cfg: dict[str, Any], layers: int, dense_first: int, where: str) -> tuple[int, ...]:
    """Which of an MoE model's `layers` have experts, as each family's config.json places them (the others have a
    dense MLP; where they sit does not change a step's cost, but does a pipeline stage's weights):
    - `moe_layers` (Llama 4, newer transformers): the listed layers;
    - `interleave_moe_layer_step` s (Llama 4): layers s-1, 2s-1, ... (Maverick: 2, every other layer; 0: none);
    - `decoder_sparse_step` d and `mlp_only_layers` (Qwen2-MoE, Qwen3-MoE): layer i unless listed, when d divides i+1;
    - `first_k_dense_replace` k and `moe_layer_freq` f (DeepSeek-V2/V3, Kimi K2): layer i >= k when f divides i;
    - otherwise every layer (Mixtral, gpt-oss)."""
    listed = cfg.get("moe_layers")
    if listed is not None:
        return tuple(sorted(_layer_list(listed, "moe_layers", layers, where)))
    if cfg.get("interleave_moe_layer_step") is not None:
        step = _opt(cfg, "interleave_moe_layer_step", where)
        return tuple(range(step - 1, layers, step)) if step else ()
    sparse = _given(cfg, "decoder_sparse_step", where, 1)
    dense = set(_layer_list(cfg.get("mlp_only_layers") or [], "mlp_only_layers", layers, where))
    freq = _given(cfg, "moe_layer_freq", where, 1)
    return tuple(i for i in range(dense_first, layers) if i not in dense and (i + 1) % sparse == 0 and i % freq == 0)


def _layer_list(value: Any, key: str, layers: int, where: str) -> list[int]:
    """A config.json list of layer indices, each in [0, layers), without repeats."""
    if not isinstance(value, list):
        raise FleetsimError(f"{where}: field {key!r} must be a list of layer indices (got {value!r})")
    for i in value:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers:
            raise FleetsimError(f"{where}: field {key!r} must list layer indices in 0..{layers - 1} (got {i!r})")
    if len(set(value)) != len(value):
        raise FleetsimError(f"{where}: field {key!r} lists a layer twice (got {value!r})")
    return list(value)


MXFP4_BITS = 4.25  # 4-bit E2M1 values plus one 8-bit E8M0 scale per block of 32 (OCP Microscaling spec v1.0)


def shipped_precision(qc: Any, where: str) -> tuple[str, float, float | None] | None:
    """A checkpoint's `quantization_config` -> (method, bits of its linear layers, bits of its routed experts when
    only they are quantized); None for 16-bit checkpoints. FP8 (DeepSeek-V3/R1, block-scaled: one scale per 128x128,
    under 0.01% more): 8 bits; MXFP4 (gpt-oss: the experts only): 4.25 bits; AWQ/GPTQ and compressed-tensors weight
    formats: their `bits` / `num_bits`; ModelOpt FP8 and NVFP4 (4.5 bits). Another method is counted as 16-bit, and says
    so in its name."""
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise FleetsimError(f"{where}: field 'quantization_config' must be an object (got {type(qc).__name__})")
    method = str(qc.get("quant_method", "")).lower()
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8", 8.0, None
    if method == "mxfp4":
        return "mxfp4", 16.0, MXFP4_BITS
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin", "bitsandbytes"):
        return method, _weight_bits(qc.get("bits", 4), "quantization_config.bits", where), None
    if method == "compressed-tensors":
        groups = qc.get("config_groups") or {}
        if not isinstance(groups, dict):
            raise FleetsimError(
                f"{where}: quantization_config.config_groups must be a mapping of group name to scheme "
                f"(got {type(groups).__name__})"
            )
        weights = [g.get("weights") or {} for g in groups.values() if isinstance(g, dict)]
        bits = [w.get("num_bits") for w in weights if isinstance(w, dict) and w.get("num_bits")]
        if bits:
            return "compressed-tensors", _weight_bits(bits[0], "quantization_config num_bits", where), None
        return None
    if method == "modelopt":  # NVIDIA ModelOpt: FP8, or NVFP4 (4-bit values, an FP8 scale per 16: 4.5 bits)
        algo = str(qc.get("quant_algo", "")).upper()
        if algo == "FP8":
            return "fp8", 8.0, None
        if algo == "NVFP4":
            return "nvfp4", 4.5, None
    return f"{method or 'unnamed'} (not known: counted as 16-bit; set roofline.weight_bits)", 16.0, None


MAX_WEIGHT_BITS = 32  # (a float32 weight; a quantized one holds fewer)


def _weight_bits(value: Any, key: str, where: str) -> float:
    """A quantization's bits per weight: 1..32 (a `bits` of 1000 weighed the weights at 1000 bits each)."""
    bits = _positive_int(value, key, where)
    if bits > MAX_WEIGHT_BITS:
        raise FleetsimError(f"{where}: field {key!r} must be bits per weight, at most {MAX_WEIGHT_BITS} (got {value!r})")
    return float(bits)


def load_hf_config(path: Path) -> ModelSpec:
    """Import a model from a local `config.json` (or a folder that holds one)."""
    from sim.yaml_input import read_json

    file = path / "config.json" if path.is_dir() else path
    cfg = read_json(file, what="model config.json")
    name = file.parent.name if file.name == "config.json" else file.stem
    return model_from_hf_config(cfg, name=name.lower(), where=str(file))


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    models: dict[str, ModelSpec]

    def get(self, name: str) -> ModelSpec:
        key = name.strip().lower()
        if key not in self.models:
            raise unknown_name("model", name, self.models)
        return self.models[key]

    def names(self) -> list[str]:
        return sorted(self.models)


@functools.cache
def load_model_catalog() -> ModelCatalog:
    raw = yaml.safe_load(resources.files("sim.data").joinpath("models.yaml").read_text())
    models = {
        name: model_from_hf_config(body["config"], name=name, hf_repo=body.get("hf_repo", ""), where=f"models.yaml:{name}")
        for name, body in raw.items()
    }
    return ModelCatalog(models=models)


def resolve_model(name_or_path: str, catalog: ModelCatalog | None = None) -> ModelSpec:
    """A catalog name, or a path to a config.json / a folder holding one."""
    catalog = catalog or load_model_catalog()
    if not name_or_path.strip():  # ("" is the current folder as a path: it would be read for a config.json)
        raise FleetsimError("model: the name is empty; give a catalog name (fleetsim models) or a config.json path")
    if name_or_path.strip().lower() in catalog.models:
        return catalog.get(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_dir() or path.exists():
        return load_hf_config(path)
    raise unknown_name("model", name_or_path, catalog.models)


def _size_words(model: ModelSpec) -> str:
    active = f", {model.n_active_params / 1e9:.1f}B active" if model.is_moe else ""
    return f"{model.name} ({model.n_params / 1e9:.1f}B parameters{active})"


def check_draft(draft: ModelSpec, target: ModelSpec) -> None:
    """A speculative-decoding draft model must be smaller than its target, in parameters and in parameters used
    per token: a draft no smaller than its target costs as much per proposed token as the target's own decode step."""
    if draft.n_params >= target.n_params or draft.n_active_params >= target.n_active_params:
        raise FleetsimError(
            f"the draft model {_size_words(draft)} must be smaller than the target model {_size_words(target)}; "
            "a draft no smaller than its target cannot make decoding faster"
        )
