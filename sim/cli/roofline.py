"""The seed article's analysis for any model / GPU / TP: a dict (the `--json` keys) and its text form.

Everything here is computed from `sim.physics.roofline`; nothing is a constant copied from the article.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim.physics.hardware import GIGA
from sim.physics.prices import ApiPrice
from sim.physics.roofline import (
    RooflineSetup,
    crossover_prompt_tokens,
    decode_cost,
    decode_tokens_per_s,
    kv_capacity_bytes,
    kv_capacity_tokens,
    max_batch,
    prefill_time_s,
    prompt_tokens_per_s,
    usd_per_1k_tokens,
)
from sim.physics.speculative import expected_tokens_per_step, speculative_decode_tokens_per_s


def roofline_report(
    setup: RooflineSetup,
    *,
    api: ApiPrice,
    prompt_tokens: int = 2048,
    prefill_lengths: Sequence[int] = (512, 1536),
    batches: Sequence[int] = (1, 8, 32),
    context_tokens: int = 0,
    fit_context_tokens: int | None = None,
    preset: str | None = None,
    speculative: tuple[str, Sequence[float], RooflineSetup | None] | None = None,
    draft_cost: float | None = None,  # mtp: a draft token's share of a target decode step (None: the default)
) -> dict[str, Any]:
    model, gpu = setup.model, setup.gpu
    ring = setup.allreduce_link()
    fit_ctx = fit_context_tokens or min(4096, model.max_context_tokens)
    prompt_rate = prompt_tokens_per_s(setup, prompt_tokens=prompt_tokens)
    decode_rate = {b: decode_tokens_per_s(setup, batch=b, context_tokens=context_tokens) for b in batches}
    fit_batch = max_batch(setup, context_tokens=fit_ctx)
    # a row's batch holds its sequences' KV (each at least the token it decodes) or the table says it does not fit
    fits = {b: b <= max_batch(setup, context_tokens=max(1, context_tokens)) for b in batches}
    fit: dict[str, Any] = {"context_tokens": fit_ctx, "batch": fit_batch}
    if fit_batch >= 1:
        rate = decode_tokens_per_s(setup, batch=fit_batch, context_tokens=fit_ctx)
        fit |= {"decode_tokens_per_s": rate, "usd_per_1k_completion_tokens": usd_per_1k_tokens(setup, rate)}
    spec_block = None
    if speculative is not None:
        method, alphas, draft = speculative
        rates = {
            b: speculative_decode_tokens_per_s(
                setup, method=method, alphas=alphas, batch=b, context_tokens=context_tokens, draft=draft, draft_cost=draft_cost
            )
            for b in batches
        }
        spec_block = {
            "method": method,
            "num_speculative_tokens": len(alphas),
            "acceptance_rate": list(alphas),
            "draft_model": draft.model.name if draft is not None else None,
            "expected_tokens_per_step": expected_tokens_per_step(alphas),
            "decode_tokens_per_s": {str(b): r for b, r in rates.items()},
            "usd_per_1k_completion_tokens": {str(b): usd_per_1k_tokens(setup, r) for b, r in rates.items()},
            "speedup": {str(b): r / decode_rate[b] for b, r in rates.items()},
            "kv_fits": {str(b): fits[b] for b in batches},
        }
    return {
        "speculative": spec_block,
        "model": model.name,
        "gpu": gpu.name,
        "tp": setup.tp,
        "pp": setup.pp,  # pipeline stages: this replica is one of the server's pp virtual engines
        "dp": setup.dp_group,  # DP ranks sharing the MoE layers (this replica is one; weights and KV are its own)
        "preset": preset,
        "assumptions": {
            "weight_bits": setup.weight_bits,
            "weights": setup.weight_words,
            "gpus_per_node": setup.gpus_per_node,
            "scale_out_bytes_per_s": setup.scale_out_bytes_per_s,
            "scale_out_latency_s": setup.scale_out_latency_s,
            "kv_bits": setup.kv_bits,
            "compute_dtype": setup.compute_dtype,
            "effective_flops_per_s_per_gpu": setup.effective_flops_per_s,
            "effective_hbm_bw_bytes_per_s_per_gpu": setup.effective_hbm_bw_bytes_per_s,
            "mfu": setup.effective_flops_per_s / setup.peak_flops_per_s,
            "mbu": setup.effective_hbm_bw_bytes_per_s / gpu.hbm_bw_bytes_per_s,
            "attention": setup.attention,
            "comm": setup.comm,
            "step_overhead_s": setup.step_overhead_s,
            "seq_overhead_s": setup.seq_overhead_s,
            "layer_overhead_s": setup.layer_overhead_s,
            # the model's layers in units of the Llama layer the per-layer overhead is for (by their kernels)
            "layer_units": setup.layer_units,
            "n_layers": model.n_layers,
            "overlap": setup.overlap,
            # what the replica's all-reduce is priced at: the node's link, or across nodes its ring's slowest link
            "allreduce_latency_s": ring[1],
            "allreduce_gb_per_s": ring[0] / 1e9,
            "gpu_memory_utilization": setup.gpu_memory_utilization,
            "memory_reserve_bytes": setup.memory_reserve_bytes,
            "usd_per_gpu_hour": setup.usd_per_gpu_hour,
            # a price other than the catalog's came from the user (--price-per-gpu-hour or pricing:)
            "price_source": gpu.price_source if setup.usd_per_gpu_hour == gpu.usd_per_gpu_hour else "user-supplied",
            "price_as_of": gpu.price_as_of if setup.usd_per_gpu_hour == gpu.usd_per_gpu_hour else None,
        },
        "n_params": model.n_params,
        "n_active_params": model.n_active_params,
        "weight_bytes": setup.weight_bytes,
        "held_weight_bytes": setup.held_weight_bytes,  # on this replica's GPUs (a pipeline's engine: its heaviest stage's)
        "flops_per_token": model.flops_per_token,
        "kv_bytes_per_token": model.kv_bytes_per_token(setup.kv_bits),
        "kv_bytes_per_token_replica": setup.kv_bytes_per_token,
        "kv_capacity_bytes": kv_capacity_bytes(setup),
        "kv_capacity_tokens": kv_capacity_tokens(setup),
        # sliding-window layers: how many attend to how many tokens (their KV held apart: `RooflineSetup.kv_groups`)
        "sliding_window": model.sliding_window or None,
        "n_sliding_layers": model.n_sliding_layers,
        "hybrid_kv_cache": setup.hybrid_kv,  # (False: engine.disable_hybrid_kv_cache_manager, their KV kept whole)
        "crossover_prompt_tokens": crossover_prompt_tokens(setup, peak=True),
        "crossover_prompt_tokens_effective": crossover_prompt_tokens(setup, peak=False),
        "usd_per_replica_hour": None if setup.usd_per_gpu_hour is None else setup.usd_per_gpu_hour * setup.tp,
        "prompt_tokens": prompt_tokens,
        "prompt_fits": prompt_tokens <= min(model.max_context_tokens, kv_capacity_tokens(setup)),
        "max_context_tokens": model.max_context_tokens,
        "prompt_tokens_per_s": prompt_rate,
        "usd_per_1k_prompt_tokens": usd_per_1k_tokens(setup, prompt_rate),
        "prefill_latency_s": {str(n): prefill_time_s(setup, prompt_tokens=n) for n in prefill_lengths},
        "context_tokens": context_tokens,
        "decode_step_bytes": {str(b): decode_cost(setup, batch=b, context_tokens=context_tokens).bytes for b in batches},
        "decode_tokens_per_s": {str(b): r for b, r in decode_rate.items()},
        "decode_kv_fits": {str(b): fits[b] for b in batches},
        "usd_per_1k_completion_tokens": {str(b): usd_per_1k_tokens(setup, r) for b, r in decode_rate.items()},
        "max_batch": fit,
        "api": {
            "name": api.name,
            "usd_per_1k_prompt_tokens": api.usd_per_1k_prompt_tokens,
            "usd_per_1k_completion_tokens": api.usd_per_1k_completion_tokens,
        },
    }


def _usd(x: float | None) -> str:
    if x is None:
        return "n/a (no price)"
    return f"${x:.3g}" if x < 0.01 else f"${x:.4f}"


def _vs(ours: float | None, theirs: float) -> str:
    if ours is None:
        return ""
    if ours <= 0:
        return "free at the price given"
    ratio = theirs / ours if ours <= theirs else ours / theirs
    times = f"{ratio:.1f}x" if ratio < 1e6 else f"{ratio:.2g}x"  # (a price of 1e-300 $/h: not a 300-digit figure)
    return f"{times} cheaper than the API" if ours <= theirs else f"{times} the API's price"


def _no_room(r: dict[str, Any], b: str) -> str:
    """A decode row's caveat when its batch's KV does not fit in the replica's cache (the row is then hypothetical)."""
    if r["decode_kv_fits"][b]:
        return ""
    need = int(b) * max(1, r["context_tokens"])
    return f"   (KV does not fit: {need:,} tokens, the cache holds {r['kv_capacity_tokens']:,})"


def render_text(r: dict[str, Any]) -> str:
    a = r["assumptions"]
    api = r["api"]
    lines = [
        f"fleetsim roofline: {r['model']} on {r['tp']}x {r['gpu']}"
        + (f", one of {r['dp']} data-parallel ranks sharing the experts" if r.get("dp", 1) > 1 else "")
        + (
            f", one of {r['pp']} virtual engines of a server of {r['pp']} pipeline stages ({r['pp'] * r['tp']} GPUs; each "
            "engine's step through every stage, its share of the weights and KV cache; figures an engine)"
            if r.get("pp", 1) > 1
            else ""
        )
        + (f" (preset: {r['preset']})" if r["preset"] else ""),
        f"  {a['weights']} weights, {a['kv_bits']}-bit KV; per GPU {a['effective_flops_per_s_per_gpu'] / 1e12:.1f} TFLOP/s"
        f" and {a['effective_hbm_bw_bytes_per_s_per_gpu'] / 1e12:.2f} TB/s effective (mfu {a['mfu']:.3f}, mbu {a['mbu']:.3f});"
        f" attention {'on' if a['attention'] else 'off'}, TP comm {'on' if a['comm'] else 'off'}"
        + (
            f" (all-reduce latency {a['allreduce_latency_s'] * 1e6:g} us, bus {a['allreduce_gb_per_s']:g} GB/s)"
            if a["comm"] and 1 < r["tp"] <= a["gpus_per_node"]
            else ""
        )
        + (
            f" (across {-(-r['tp'] // a['gpus_per_node'])} nodes of {a['gpus_per_node']} GPUs: over the scale-out network, "
            f"{a['scale_out_bytes_per_s'] / 1e9:g} GB/s per GPU, {a['scale_out_latency_s'] * 1e6:g} us; the ring at its "
            f"slowest link: all-reduce latency {a['allreduce_latency_s'] * 1e6:g} us, bus {a['allreduce_gb_per_s']:g} GB/s)"
            if a["comm"] and r["tp"] > a["gpus_per_node"]
            else ""
        )
        + f"; overhead {a['layer_overhead_s'] * 1e6:g} us per layer"
        + (
            f" (by kernels: this model's {a['n_layers']} layers count as {a['layer_units']:.4g} Llama layers)"
            if a["layer_units"] != a["n_layers"]
            else ""
        )
        + f" + {a['step_overhead_s'] * 1e3:g} ms per step"
        + (f" + {a['seq_overhead_s'] * 1e6:g} us per scheduled sequence (host)" if a["seq_overhead_s"] else "")
        + f"; compute/memory overlap {a['overlap']:g}",
        f"  price ${r['usd_per_replica_hour']:.2f}/h for the replica (${a['usd_per_gpu_hour']:g}/GPU-h: {a['price_source']}"
        + (f", {a['price_as_of']})" if a["price_as_of"] else ")")
        if r["usd_per_replica_hour"] is not None
        else "  price: none in the catalog for this GPU; pass --price-per-gpu-hour",
        "",
        "model",
        f"  parameters                 {r['n_params'] / 1e9:.2f} B (active per token {r['n_active_params'] / 1e9:.2f} B)",
        f"  weights                    {r['weight_bytes'] / GIGA:.2f} GB"
        + (
            f" ({r['held_weight_bytes'] / GIGA:.2f} GB held by this engine's GPUs)"
            if r.get("held_weight_bytes", r["weight_bytes"]) != r["weight_bytes"]
            else ""
        ),
        f"  FLOPs per token            {r['flops_per_token'] / 1e9:.1f} GFLOP (2 x active matmul params)",
        f"  KV cache per token         {r['kv_bytes_per_token']:,.0f} B ({r['kv_bytes_per_token'] / 1024:.1f} KiB)"
        + (
            f"; {r['kv_bytes_per_token_replica']:,.0f} B on the replica (heads replicated)"
            if r["kv_bytes_per_token_replica"] != r["kv_bytes_per_token"]
            else ""
        ),
        f"  HBM left for KV cache      {r['kv_capacity_bytes'] / GIGA:.2f} GB = {r['kv_capacity_tokens']:,} tokens"
        f" (gpu_memory_utilization {a['gpu_memory_utilization']:g})"
        + (
            (
                f"; {r['n_sliding_layers']} of the layers attend to {r['sliding_window']:,} tokens, their KV held apart "
                "(vLLM's hybrid KV cache): tokens of the others"
                if r["hybrid_kv_cache"]
                else f"; {r['n_sliding_layers']} of the layers attend to {r['sliding_window']:,} tokens, their KV kept "
                "whole (the hybrid KV cache manager off)"
            )
            if r["sliding_window"]
            else ""
        ),
        f"  compute-bound above        {r['crossover_prompt_tokens']:.0f} prompt tokens at peak rates"
        f" ({r['crossover_prompt_tokens_effective']:.0f} at effective rates)",
        "",
        f"prompt tokens (prefill)          vs {api['name']} at {_usd(api['usd_per_1k_prompt_tokens'])}/1K",
        f"  throughput                 {r['prompt_tokens_per_s']:,.0f} tok/s (one {r['prompt_tokens']}-token prompt)"
        + (
            ""
            if r["prompt_fits"]
            else f"   (does not fit: the model's context is {r['max_context_tokens']:,} tokens, the cache holds "
            f"{r['kv_capacity_tokens']:,})"
        ),
        f"  cost                       {_usd(r['usd_per_1k_prompt_tokens'])} / 1K prompt tokens"
        f"  ({_vs(r['usd_per_1k_prompt_tokens'], api['usd_per_1k_prompt_tokens'])})",
    ]
    for n, t in r["prefill_latency_s"].items():
        lines.append(f"  latency, {n:>6} tokens      {t:.3f} s (batch 1)")
    lines += [
        "",
        f"completion tokens (decode)       vs {api['name']} at {_usd(api['usd_per_1k_completion_tokens'])}/1K;"
        f" each sequence holds {r['context_tokens']} tokens of context",
        "  batch    tok/s       $/1K completion   bytes/step",
    ]
    for b, rate in r["decode_tokens_per_s"].items():
        usd = r["usd_per_1k_completion_tokens"][b]
        lines.append(
            f"  {b:>5}  {rate:>9,.1f}   {_usd(usd):>15}   {r['decode_step_bytes'][b] / GIGA:7.1f} GB"
            f"   {_vs(usd, api['usd_per_1k_completion_tokens'])}{_no_room(r, b)}"
        )
    fit = r["max_batch"]
    if fit["batch"] >= 1:
        lines.append(
            f"  {fit['batch']:>5}  {fit['decode_tokens_per_s']:>9,.1f}   {_usd(fit['usd_per_1k_completion_tokens']):>15}"
            f"   largest batch whose KV fits at {fit['context_tokens']} tokens/sequence"
        )
    else:
        lines.append(f"  not even one sequence of {fit['context_tokens']} tokens fits in the KV cache")
    spec = r.get("speculative")
    if spec:
        drafts = spec["draft_model"] or spec["method"]
        rates = ", ".join(f"{a:g}" for a in spec["acceptance_rate"])
        lines += [
            "",
            f"with speculative decoding: {spec['num_speculative_tokens']} draft tokens ({drafts}), acceptance {rates}:"
            f" {spec['expected_tokens_per_step']:.2f} tokens per verify step",
            "  batch    tok/s       $/1K completion   vs without",
        ]
        for b, rate in spec["decode_tokens_per_s"].items():
            lines.append(
                f"  {b:>5}  {rate:>9,.1f}   {_usd(spec['usd_per_1k_completion_tokens'][b]):>15}   {spec['speedup'][b]:.2f}x"
                f"{_no_room(r, b)}"
            )
    return "\n".join(lines)
