"""LoRA adapters on a base model: their size, the GPU memory their slots take, their per-token FLOPs. Pure functions.

An adapter of rank r on a linear layer of `in` inputs and `out` outputs adds A (in x r) and B (r x out): r (in + out)
parameters, 2 r (in + out) FLOPs a token (the shrink x @ A and the expand (x A) @ B), stored at 16 bits (vLLM keeps
adapter weights in the model's activation dtype). The layers an adapter carries (`target_modules`):
- `attention`: the attention projections (q, k, v, o; with MLA q_a/q_b or q, kv_a, kv_b, o);
- `all_linear`: those and the dense MLP (gate, up, down) of every layer that has one (an MoE model's dense layers and
  shared experts; routed experts carry none, as vLLM's LoRA layers wrap the dense linear layers).

With tensor parallelism vLLM shards an adapter as its base layer (`vllm/lora/layers`): a column-parallel layer (q, k,
v, gate, up; MLA's q_b, kv_b) keeps A whole on every rank and shards B's outputs; a row-parallel layer (o, down) shards
A's inputs and keeps B whole; MLA's q_a and kv_a are replicated whole. `slot_bytes` is what one adapter slot takes on
one GPU; vLLM allocates `max_loras` slots at `max_lora_rank` when the engine starts, out of the KV cache's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sim.physics.models import ModelSpec

LORA_BYTES_PER_PARAM = 2  # 16-bit adapter weights
COLUMN, ROW, REPLICATED = "column", "row", "replicated"


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    inputs: int
    outputs: int
    parallel: str  # column | row | replicated
    layers: int  # how many layers carry it


def modules(model: ModelSpec, target: str) -> Iterator[Module]:
    """The linear layers an adapter with `target` modules carries, with their shapes and how TP shards them."""
    d, h, layers = model.hidden_size, model.n_heads, model.n_layers
    if model.mla is not None:
        m = model.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            yield Module("q_a", d, m.q_lora_rank, REPLICATED, layers)
            yield Module("q_b", m.q_lora_rank, h * qk, COLUMN, layers)
        else:
            yield Module("q", d, h * qk, COLUMN, layers)
        yield Module("kv_a", d, m.kv_lora_rank + m.qk_rope_head_dim, REPLICATED, layers)
        yield Module("kv_b", m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim), COLUMN, layers)
        yield Module("o", h * m.v_head_dim, d, ROW, layers)
    else:
        hd, kv = model.head_dim, model.n_kv_heads
        yield Module("q", d, h * hd, COLUMN, layers)
        yield Module("k", d, kv * hd, COLUMN, layers)
        yield Module("v", d, kv * hd, COLUMN, layers)
        yield Module("o", h * hd, d, ROW, layers)
    if target == "attention":
        return
    dense = model.n_dense_layers if model.is_moe else layers
    mlps = []
    if dense:
        mlps.append((model.intermediate_size, dense))
    if model.is_moe:
        shared = model.shared_expert_intermediate_size or model.n_shared_experts * (
            model.moe_intermediate_size or model.intermediate_size
        )
        if shared:
            mlps.append((shared, model.n_moe_layers))
    for size, n in mlps:
        if model.gated_mlp:
            yield Module("gate", d, size, COLUMN, n)
        yield Module("up", d, size, COLUMN, n)
        yield Module("down", size, d, ROW, n)


def adapter_params(model: ModelSpec, *, rank: int, target: str) -> int:
    """Parameters of one adapter of `rank` (all layers, unsharded)."""
    return sum(rank * (mod.inputs + mod.outputs) * mod.layers for mod in modules(model, target))


def adapter_bytes(model: ModelSpec, *, rank: int, target: str) -> float:
    """Its size (what loading it reads from storage and copies to a GPU slot)."""
    return adapter_params(model, rank=rank, target=target) * LORA_BYTES_PER_PARAM


def slot_bytes(model: ModelSpec, *, rank: int, target: str, tp: int) -> float:
    """One adapter slot on one GPU of a `tp`-way replica, sharded as its base layers are."""
    params = 0.0
    for mod in modules(model, target):
        if mod.parallel == COLUMN:  # A whole, B's outputs sharded
            per_rank = mod.inputs + mod.outputs / tp
        elif mod.parallel == ROW:  # A's inputs sharded, B whole
            per_rank = mod.inputs / tp + mod.outputs
        else:
            per_rank = mod.inputs + mod.outputs
        params += rank * per_rank * mod.layers
    return params * LORA_BYTES_PER_PARAM


def flops_per_token(model: ModelSpec, *, rank: int, target: str) -> float:
    """The shrink and expand FLOPs of one token through one adapter (all layers, the whole replica)."""
    return 2.0 * adapter_params(model, rank=rank, target=target)
