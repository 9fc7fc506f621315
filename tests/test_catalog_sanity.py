"""A sanity sweep over every GPU x model x parallelism the catalogs allow.

fleetsim is used on GPUs, models and TP degrees no other test names, so this file walks them all: every GPU in
`sim/data/gpus.yaml` x every model in `sim/data/models.yaml` x tp in {1, 2, 4, 8, 16}, at the shipped and at 4/8/16-bit
weights, 8/16-bit KV and BF16/FP8 GEMMs; for the MoE models also dp in {1, 2, 4, 8} with and without expert parallelism;
and a dozen-request `simulate` on a selection that names every GPU and every model. It asserts what must hold whatever
the figures are (no expected figure is written down here):

- a setup is either refused with one line or fits: KV capacity at least one token, finite;
- step times positive, finite and non-decreasing in decode batch, decode context and prompt length; tokens/s per GPU
  and $/1K tokens positive and finite;
- more GPUs never hold more weight bytes or fewer KV tokens each; a faster GPU (same memory) is never slower; fewer bits
  (weights or KV) are never slower and never hold fewer KV tokens; FP8 GEMMs are refused on a GPU without FP8;
- TP that does not shard the heads is refused, KV heads are replicated past their count, a larger group never gets a
  faster link (a bridged PCIe pair's TP > 2 ring crosses PCIe), a group spanning nodes never communicates faster than
  one inside a node; `roofline --config` prices the replica `run` builds;
- MoE: top-k within the experts, expert parallelism refused exactly when the experts do not divide over the group, more
  DP ranks never hold more weights each, a load imbalance never speeds a step up;
- a short run conserves its requests, has TTFT <= E2E, utilizations and MFU/MBU within [0, 1] and a positive cost.

About 5 s on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from sim.errors import FleetsimError
from sim.physics import roofline as rl
from sim.physics.hardware import load_gpu_catalog, parse_gpu_entries
from sim.physics.models import ModelSpec, load_model_catalog
from sim.physics.roofline import RooflineSetup
from sim.run.simulate import simulate
from sim.scenario.config import GpuOverride, parse_config, roofline_config
from sim.scenario.resolve import apply_override, build_setup
from sim.schema import RequestStatus

GPUS = load_gpu_catalog()
MODELS = load_model_catalog()
TPS = (1, 2, 4, 8, 16)
PRECISIONS = [  # (weight_bits, kv_bits, compute_dtype); None: as shipped / as the code picks
    (None, 16, None),
    (None, 8, None),
    (16, 16, None),
    (8, 16, None),
    (8, 8, "fp8"),
    (4, 8, None),
    (4, 16, "fp8"),
]
BATCHES = (1, 2, 8, 32, 128, 512)
CONTEXTS = (0, 1, 100, 2000, 30_000, 120_000)
PROMPTS = (1, 2, 17, 256, 2048, 16_384)
REL = 1e-12  # float noise allowed in the monotonicity checks


def setup_or_refusal(model: str, gpu: str, tp: int, **kw) -> RooflineSetup | str:
    """The setup, or the one-line refusal (anything else is a failure)."""
    layout = {k: kw.pop(k) for k in ("dp", "expert_parallel", "expert_load_imbalance", "all2all_backend") if k in kw}
    try:
        return build_setup(MODELS.get(model), GPUS.get(gpu), tp=tp, roofline=roofline_config(None, **kw), **layout)
    except FleetsimError as err:
        msg = str(err)
        assert msg and "\n" not in msg, f"{model} on {tp}x {gpu} {kw}: refusal not one line: {msg!r}"
        return msg


def tp_shards_heads(m: ModelSpec, tp: int) -> bool:
    """What vLLM accepts: tp divides the attention heads, and the KV heads divide over tp or tp over them."""
    if m.n_heads % tp:
        return False
    kv = m.n_kv_heads
    return m.mla is not None or (kv % tp == 0 if tp <= kv else tp % kv == 0)


def non_decreasing(values: list[float], what: str) -> None:
    for a, b in itertools.pairwise(values):
        assert b >= a * (1 - REL), f"{what}: {values}"


def check_step_times(s: RooflineSetup, where: str) -> None:
    decode = [rl.decode_step_time_s(s, batch=b, context_tokens=1000) for b in BATCHES]
    assert all(math.isfinite(t) and t > 0 for t in decode), where
    non_decreasing(decode, f"{where}: decode step time over batch {BATCHES}")
    non_decreasing(
        [rl.decode_step_time_s(s, batch=8, context_tokens=c) for c in CONTEXTS], f"{where}: decode over context {CONTEXTS}"
    )
    non_decreasing([rl.prefill_time_s(s, prompt_tokens=p) for p in PROMPTS], f"{where}: prefill over prompt {PROMPTS}")
    non_decreasing(
        [rl.prefill_time_s(s, prompt_tokens=512, cached_tokens=c) for c in CONTEXTS], f"{where}: prefill over cached tokens"
    )
    for b in (1, 64):
        per_gpu = rl.decode_tokens_per_s(s, batch=b, context_tokens=1000) / s.tp
        assert math.isfinite(per_gpu) and per_gpu > 0, where
        usd = rl.usd_per_1k_tokens(s, per_gpu * s.tp)
        assert (usd is None) == (s.usd_per_gpu_hour is None), where
        assert usd is None or (math.isfinite(usd) and usd > 0), f"{where}: $/1K {usd}"
    prompt_rate = rl.prompt_tokens_per_s(s, prompt_tokens=2048)
    assert math.isfinite(prompt_rate) and prompt_rate > 0, where


def same_shapes_never_slower(fast: RooflineSetup, slow: RooflineSetup, where: str) -> None:
    """`fast` never takes longer on the same shapes, beyond the per-layer overhead of any kernels it launches more
    (FP8 GEMMs quantize their inputs: `ModelSpec.layer_kernels`), which at a few tokens can outweigh what they save."""
    extra = max(0.0, (fast.layer_units - slow.layer_units) * fast.layer_overhead_s)
    for b, c in ((1, 0), (8, 2000), (256, 500)):
        assert rl.decode_step_time_s(fast, batch=b, context_tokens=c) - extra <= rl.decode_step_time_s(
            slow, batch=b, context_tokens=c
        ) * (1 + REL), f"{where}: decode batch {b} context {c}"
    for p in (16, 4096):
        assert rl.prefill_time_s(fast, prompt_tokens=p) - extra <= rl.prefill_time_s(slow, prompt_tokens=p) * (1 + REL), (
            f"{where}: prefill {p}"
        )


def non_torch_tokens(s: RooflineSetup, previous: RooflineSetup) -> int:
    """KV tokens that `s`'s GPUs' larger non-torch memory (a group's, across nodes') takes over `previous`'s, + 1."""
    extra = s.tp * max(0.0, rl.non_torch_bytes(s) - rl.non_torch_bytes(previous))
    return math.ceil(extra / s.kv_pool_bytes_per_token) + 1


@pytest.mark.parametrize("gpu", GPUS.names())
def test_every_model_tp_and_precision_on_the_gpu_fits_or_is_refused_and_prices_sanely(gpu):
    g = GPUS.get(gpu)
    for model, (wb, kb, dtype) in itertools.product(MODELS.names(), PRECISIONS):
        m = MODELS.get(model)
        previous: RooflineSetup | None = None  # the same setup at the last accepted smaller tp
        for tp in TPS:
            where = f"{model} on {tp}x {gpu}, weight_bits={wb} kv_bits={kb} compute_dtype={dtype}"
            s = setup_or_refusal(model, gpu, tp, weight_bits=wb, kv_bits=kb, compute_dtype=dtype)
            if isinstance(s, str):
                if not tp_shards_heads(m, tp):
                    assert "must divide" in s, f"{where}: {s}"
                elif dtype == "fp8" and g.fp8_flops_per_s is None:
                    assert "fp8 is not supported" in s, f"{where}: {s}"
                else:
                    assert "does not fit" in s, f"{where}: {s}"
                continue
            assert tp_shards_heads(m, tp), f"{where}: accepted a TP that does not shard the heads"
            assert dtype != "fp8" or g.fp8_flops_per_s is not None, f"{where}: FP8 GEMMs on a GPU without FP8"
            cap_bytes, cap = rl.kv_capacity_bytes(s), rl.kv_capacity_tokens(s)
            assert math.isfinite(cap_bytes) and cap_bytes > 0 and cap >= 1, f"{where}: KV capacity {cap_bytes} B"
            # KV heads: split while tp <= their count, then one per GPU (replicated), as vLLM does; MLA's latent everywhere
            per_gpu_kv = s.kv_bytes_per_token / tp
            one_head = m.kv_bytes_per_token(kb) / (1 if m.mla is not None else m.n_kv_heads)
            assert per_gpu_kv == pytest.approx(max(m.kv_bytes_per_token(kb) / tp, one_head)), where
            check_step_times(s, where)
            if previous is not None:
                assert s.weight_bytes / tp <= previous.weight_bytes / previous.tp * (1 + REL), f"{where}: more weights per GPU"
                # (more GPUs hold more KV, less what a GPU of a larger group holds outside torch: its communicators'
                # buffers, more across nodes, where replicated KV heads add no tokens)
                assert cap + non_torch_tokens(s, previous) >= rl.kv_capacity_tokens(previous), (
                    f"{where}: fewer KV tokens than at tp={previous.tp}"
                )
            previous = s
            # the same GPU, twice as fast in FLOP/s and bandwidth (same memory), is never slower
            fast = dataclasses.replace(
                s,
                effective_flops_per_s=2 * s.effective_flops_per_s,
                effective_hbm_bw_bytes_per_s=2 * s.effective_hbm_bw_bytes_per_s,
            )
            same_shapes_never_slower(fast, s, f"{where}: a faster GPU")
            # fewer bits are never slower and never hold fewer KV tokens
            if kb == 8:
                kv16 = dataclasses.replace(s, kv_bits=16)
                assert cap >= rl.kv_capacity_tokens(kv16), where
                same_shapes_never_slower(s, kv16, f"{where}: 8-bit KV against 16")
            if wb in (4, 8):
                same_shapes_never_slower(
                    s, dataclasses.replace(s, weight_bits=2 * wb), f"{where}: {wb}-bit weights against {2 * wb}"
                )
            if dtype == "fp8":
                bf16 = dataclasses.replace(
                    s,
                    compute_dtype="bf16",
                    effective_flops_per_s=g.bf16_flops_per_s * s.effective_flops_per_s / s.peak_flops_per_s,
                )
                same_shapes_never_slower(s, bf16, f"{where}: FP8 GEMMs against BF16")


def test_a_faster_catalog_gpu_is_never_slower():
    """Of two catalog GPUs, one whose effective FLOP/s, bandwidth, collective bandwidth and overlap are all at least the
    other's and whose overheads and latency are at most its, is never slower at any shape the other runs."""
    setups = {}
    for gpu in GPUS.names():
        s = setup_or_refusal("llama-3.1-70b", gpu, 4, weight_bits=4)
        if not isinstance(s, str):
            setups[gpu] = s
    assert len(setups) >= 10
    pairs = 0
    for a, b in itertools.permutations(setups, 2):
        fa, fb = setups[a], setups[b]
        ga, gb = fa.gpu, fb.gpu
        if (
            fa.effective_flops_per_s >= fb.effective_flops_per_s
            and fa.effective_hbm_bw_bytes_per_s >= fb.effective_hbm_bw_bytes_per_s
            and ga.group_collective_bw_bytes_per_s(4) >= gb.group_collective_bw_bytes_per_s(4)
            and ga.allreduce_latency_s <= gb.allreduce_latency_s
            and fa.layer_overhead_s <= fb.layer_overhead_s
            and fa.overlap >= fb.overlap
        ):
            pairs += 1
            same_shapes_never_slower(fa, fb, f"{a} against {b}")
    assert pairs >= 10


@pytest.mark.parametrize("gpu", GPUS.names())
def test_a_group_spanning_nodes_never_communicates_faster_than_one_inside_a_node(gpu):
    """A TP group (or MoE group) past `gpus_per_node` crosses the scale-out network *and* the nodes' own links: its ring
    is never faster than the same collective inside one node (a host-staged PCIe box's 14.5 GB/s and 42 us all-reduce
    once became the network's 50 GB/s and 20 us at TP 16)."""
    g = GPUS.get(gpu)
    m = MODELS.get("llama-3.1-70b")  # (fits at 4-bit on 16 of the smallest GPUs, across nodes' buffers included)
    for scale_out in ("nvlink", "infiniband_400g", "roce_200g", "ethernet_100g"):
        inside = build_setup(m, g, tp=16, roofline=roofline_config(None, weight_bits=4), gpus_per_node=16, scale_out=scale_out)
        across = build_setup(m, g, tp=16, roofline=roofline_config(None, weight_bits=4), gpus_per_node=8, scale_out=scale_out)
        assert across.n_nodes == 2
        for n_bytes in (8, 16e3, 1e6, 64e6):
            assert across.allreduce_s(n_bytes) >= inside.allreduce_s(n_bytes), (scale_out, n_bytes)
        assert across.comm_s(1) >= inside.comm_s(1) and across.comm_s(8192) >= inside.comm_s(8192), scale_out
        moe = MODELS.get("qwen3-30b-a3b")
        for backend in ("allgather_reducescatter", "deepep_low_latency"):
            kw = {"dp": 16, "expert_parallel": True, "all2all_backend": backend, "scale_out": scale_out}
            one = build_setup(moe, g, tp=1, roofline=roofline_config(None), gpus_per_node=16, **kw)
            two = build_setup(moe, g, tp=1, roofline=roofline_config(None), gpus_per_node=8, **kw)
            for n in (1, 64, 4096):
                assert two.moe_exchange_s(n) >= one.moe_exchange_s(n), (scale_out, backend, n)


@pytest.mark.parametrize("gpu", GPUS.names())
def test_a_larger_group_in_a_node_never_gets_a_faster_link_and_a_bridge_joins_only_its_pair(gpu):
    """The bus bandwidth of a node's collective never grows with the group; an NVLink bridge (PCIe cards: A100 PCIe,
    H100 PCIe and NVL) joins two cards, so a larger TP group's ring crosses PCIe (the sweep found TP 8 of H100 PCIe
    all-reducing at 300 GB/s, over the 280 GB/s NCCL measures on an NVSwitch H100 SXM node)."""
    from sim.physics.hardware import UNMEASURED_LINK_SHARE
    from sim.physics.roofline import allreduce_time_s

    g = GPUS.get(gpu)
    bws = [g.group_collective_bw_bytes_per_s(n) for n in (2, 4, 8)]
    if g.mesh_link_bw_bytes_per_s is not None:  # a full mesh: a larger group has more links a GPU, up to the board's share
        assert bws == sorted(bws) and max(bws) <= g.collective_bw_bytes_per_s and all(b > 0 for b in bws)
        times = [allreduce_time_s(g, tp=n, n_bytes=64e6) for n in (2, 4, 8)]
        assert times == sorted(times, reverse=True)  # (more links share a message: never slower)
        return
    assert bws == sorted(bws, reverse=True) and all(b > 0 for b in bws)
    if "NVLink bridge" in g.interconnect and "pairs two cards" in g.description:
        assert g.link_gpus == 2 and g.pcie_bw_bytes_per_s is not None
        assert g.group_collective_bw_bytes_per_s(2) == g.collective_bw_bytes_per_s
        for tp in (4, 8):
            n_bytes = 64e6
            ring = 2 * (tp - 1) / tp * n_bytes
            assert allreduce_time_s(g, tp=tp, n_bytes=n_bytes) >= ring / g.past_bridge_bw_bytes_per_s, tp
        # a gpu_overrides entry that replaces the link replaces the pairing with it (an unmeasured link: its share)
        switched = apply_override(GpuOverride(interconnect_gb_per_s=900), g)
        assert switched.group_collective_bw_bytes_per_s(8) == switched.group_collective_bw_bytes_per_s(2)
        assert switched.group_collective_bw_bytes_per_s(8) == pytest.approx(450e9 * UNMEASURED_LINK_SHARE)


def test_a_link_group_needs_the_link_past_it():
    with pytest.raises(FleetsimError, match="link_gpus needs pcie_gb_per_s"):
        parse_gpu_entries(
            {"x": {"bf16_tflops": 100, "hbm_gb": 40, "hbm_bw_gb_per_s": 1000, "interconnect_gb_per_s": 600, "link_gpus": 2}},
            where="extra.yaml",
        )


@pytest.mark.parametrize("model", [name for name in MODELS.names() if MODELS.get(name).is_moe])
def test_moe_layouts_are_consistent(model):
    m = MODELS.get(model)
    assert 1 <= m.n_experts_per_tok <= m.n_experts
    assert 0 < m.n_active_params < m.n_params
    assert m.routed_expert_params == m.n_moe_layers * m.n_experts * m.expert_params
    for gpu in ("h100-sxm", "mi300x", "l40s", "rtx-4090"):
        for tp, ep in itertools.product((1, 2, 4, 8), (False, True)):
            previous: RooflineSetup | None = None
            for dp in (1, 2, 4, 8):
                where = f"{model} on {gpu} tp={tp} dp={dp} expert_parallel={ep}"
                s = setup_or_refusal(model, gpu, tp, dp=dp, expert_parallel=ep)
                group = dp * tp
                if isinstance(s, str):
                    if ep and m.n_experts % group:
                        assert "do not divide over dp x tp" in s, f"{where}: {s}"
                    else:
                        assert "does not fit" in s or "must divide" in s, f"{where}: {s}"
                    continue
                assert not (ep and m.n_experts % group), f"{where}: experts that do not divide over the group accepted"
                assert rl.kv_capacity_tokens(s) >= 1, where
                check_step_times(s, where)
                if previous is not None:
                    assert s.weight_bytes <= previous.weight_bytes * (1 + REL), f"{where}: more weights per rank"
                    assert rl.kv_capacity_tokens(s) + non_torch_tokens(s, previous) >= rl.kv_capacity_tokens(previous), (
                        f"{where}: less KV per rank"
                    )
                previous = s
                if ep and group > 1:
                    hot = setup_or_refusal(model, gpu, tp, dp=dp, expert_parallel=True, expert_load_imbalance=2.0)
                    assert not isinstance(hot, str), where
                    same_shapes_never_slower(s, hot, f"{where}: uniform routing against an imbalance of 2")
                if s.dp_group > 1:  # a group putting more tokens through the shared layers is never faster
                    for n in (1, 64):
                        kw = {"n_tokens": n, "attention_pairs": 100 * n, "kv_read_tokens": 100 * n, "logit_tokens": n}
                        alone = rl.step_cost(s, **kw, group_tokens=n * dp).time_s
                        busier = rl.step_cost(s, **kw, group_tokens=2 * n * dp).time_s
                        assert busier >= alone * (1 - REL), where


def run_cases() -> list[tuple[str, str, dict]]:
    """Every model once (on a GPU taken in turn from the catalog) and every GPU once (with a model taken in turn), each at
    the smallest catalog TP that fits, shipped precision; plus 4-bit weights and 8-bit KV, a TP group spanning two nodes,
    and the MoE models as two expert-parallel DP ranks."""
    gpus, models = GPUS.names(), MODELS.names()

    def fitting(model: str, gpu: str) -> tuple[str, str, dict] | None:
        for precision in ({}, {"weight_bits": 4, "kv_bits": 8}):
            for tp in TPS:
                if not isinstance(setup_or_refusal(model, gpu, tp, **precision), str):
                    return (model, gpu, {"tp": tp, "roofline": precision})
        return None

    cases = []
    # each model on the GPUs in turn from its own (the first it fits on), each GPU with the models in turn likewise
    for i, model in enumerate(models):
        cases.append(next(c for j in range(len(gpus)) if (c := fitting(model, gpus[(i + j) % len(gpus)]))))
    for i, gpu in enumerate(gpus):
        cases.append(next(c for j in range(len(models)) if (c := fitting(models[(i + j) % len(models)], gpu))))
    cases.append(("llama-3.1-70b", "rtx-4090", {"tp": 16, "roofline": {"weight_bits": 4}}))
    for model in (m for m in models if MODELS.get(m).is_moe):
        tp = next(t for t in TPS if not isinstance(setup_or_refusal(model, "h200", t, dp=2, expert_parallel=True), str))
        cases.append((model, "h200", {"tp": tp, "dp": 2, "expert_parallel": True}))
    return cases


def test_a_short_run_on_every_gpu_and_model_is_sane():
    cases = run_cases()
    assert {g for _, g, _ in cases} == set(GPUS.names()) and {m for m, _, _ in cases} == set(MODELS.names())
    for model, gpu, opts in cases:
        where = f"{model} on {gpu} {opts}"
        fleet = {"gpu": gpu, "tp": opts["tp"], **{k: opts[k] for k in ("dp", "expert_parallel") if k in opts}}
        fleet["autoscaler"] = {"policy": "fixed", "replicas": opts.get("dp", 1)}  # (an MoE model's DP ranks: a whole group)
        n = 12
        sc = parse_config(
            {
                "model": model,
                "seed": 0,
                "fleet": fleet,
                "roofline": opts.get("roofline", {}),
                "trace": {
                    "arrivals": {"process": "poisson", "rate_per_s": 4},
                    "n_requests": n,
                    "prompt_tokens": {"dist": "uniform", "low": 16, "high": 3000},
                    "output_tokens": {"dist": "uniform", "low": 1, "high": 64},
                },
            }
        )
        result = simulate(sc, measure_capacity=False)
        s, q = result.summary(), result.requests
        assert len(q) == n and s["completed"] + s["rejected"] == n and s["in_flight"] == 0, where
        status = q["status"].cat.codes.to_numpy()
        assert ((status == RequestStatus.COMPLETED) | (status == RequestStatus.REJECTED)).all(), where
        done = q[status == RequestStatus.COMPLETED]
        assert len(done) == s["completed"], where
        assert q.loc[status == RequestStatus.REJECTED, "reject_reason"].notna().all(), f"{where}: rejected without a reason"
        ttft = done.first_token_at_s - done.arrival_at_s
        e2e = done.completed_at_s - done.arrival_at_s
        assert (ttft >= 0).all() and (ttft <= e2e + 1e-9).all(), where
        for key in ("gpu_time_utilization", "mfu", "mbu", "throughput_utilization"):
            v = s.get(key)
            assert v is None or 0 <= v <= 1, f"{where}: {key} {v}"
        assert s["usd_per_1k_tokens"] is None or (math.isfinite(s["usd_per_1k_tokens"]) and s["usd_per_1k_tokens"] > 0), where
        assert s["completed"] == 0 or s["output_throughput"] > 0, where


def test_roofline_config_prices_the_replica_the_run_builds(tmp_path):
    """`fleetsim roofline --config` resolves the scenario's replica as `run` does: one rank of its DP group (the sweep
    found Qwen3-235B-A22B as 2 expert-parallel ranks of 4 H100s refused there, 'does not fit on 4x h100-sxm', while
    `run` served it), its engine's batch limits and CUDA graphs (vLLM's memory profile, so the KV capacity), and its
    pricing provider's on-demand price."""
    import json

    from typer.testing import CliRunner

    from sim.cli import app
    from sim.physics.prices import capacity_price
    from sim.scenario.config import load_config
    from sim.scenario.resolve import resolve_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        "model: qwen3-235b-a22b\n"
        "fleet: {gpu: h100-sxm, tp: 4, dp: 2, expert_parallel: true}\n"
        "engine: {max_num_seqs: 64, enforce_eager: true}\n"
        "pricing: {provider: aws}\n"
    )
    res = CliRunner().invoke(app, ["roofline", "--config", str(path), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    built = resolve_scenario(load_config(path))
    assert report["weight_bytes"] == built.weight_bytes < MODELS.get("qwen3-235b-a22b").weight_bytes(16)
    assert report["kv_capacity_tokens"] == rl.kv_capacity_tokens(built)
    assert report["usd_per_replica_hour"] == pytest.approx(4 * capacity_price("h100-sxm", "aws").on_demand)
    text = CliRunner().invoke(app, ["roofline", "--config", str(path)]).output
    assert "one of 2 data-parallel ranks" in text.splitlines()[0]
