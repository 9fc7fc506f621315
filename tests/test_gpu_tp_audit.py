"""Cases an audit sweep over every catalog GPU x model x TP in {1, 2, 3, 4, 6, 8, 16} (and the MoE models' DP/EP layouts,
and `gpus_per_node` below a node of eight) found wrong, each checked over the whole catalog where it is cheap."""

from __future__ import annotations

import dataclasses

import pytest

from sim.errors import FleetsimError
from sim.physics import roofline as rl
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.scenario.config import roofline_config
from sim.scenario.resolve import build_setup

GPUS = load_gpu_catalog()
MODELS = load_model_catalog()
REL = 1e-12

# each NVLink-bridged PCIe card and the NVSwitch (SXM) part of the same NVLink generation
BRIDGED = {
    "a100-40gb-pcie": "a100-80gb",
    "a100-80gb-pcie": "a100-80gb",
    "h100-pcie": "h100-sxm",
    "h100-nvl": "h100-sxm",
    "h200-nvl": "h200",
}


def test_an_nvlink_bridge_reaches_no_more_of_its_link_than_nccl_does_over_nvswitch():
    """The SXM parts' all-reduce bus bandwidth is NCCL's measured share of their NVLink (A100 150 of 300 GB/s a direction,
    H100 280 of 450); a bridge of the same NVLink reaches no more of its own link. The bridged cards used to take half
    their datasheet link, so two A100 PCIe cards all-reduced at 300 GB/s, twice an A100 SXM node, and four H200 NVL at
    450 (H200 SXM: 280): at TP 4 a 4,096-token prefill of Llama-3.2-3B was faster on the H200 NVL, which has less
    compute and the same memory."""
    assert set(BRIDGED) <= {name for name in GPUS.names() if GPUS.get(name).link_gpus is not None}
    for card, sxm in BRIDGED.items():
        c, s = GPUS.get(card), GPUS.get(sxm)
        share = s.collective_bw_bytes_per_s / (s.interconnect_bw_bytes_per_s / 2)
        assert c.group_collective_bw_bytes_per_s(c.link_gpus) <= share * c.interconnect_bw_bytes_per_s / 2 * 1.005, card
    for model, tp in (("llama-3.2-3b", 4), ("llama-3.1-70b", 2), ("llama-3.1-70b", 4), ("gpt-oss-120b", 4)):
        nvl, sxm = (build_setup(MODELS.get(model), GPUS.get(g), tp=tp, roofline=roofline_config()) for g in ("h200-nvl", "h200"))
        for p in (512, 4096):
            assert rl.prefill_time_s(nvl, prompt_tokens=p) >= rl.prefill_time_s(sxm, prompt_tokens=p), (model, tp, p)
        for b, c in ((1, 0), (64, 2000)):
            assert rl.decode_step_time_s(nvl, batch=b, context_tokens=c) >= rl.decode_step_time_s(sxm, batch=b, context_tokens=c)


@pytest.mark.parametrize("gpu", GPUS.names())
def test_fewer_gpus_a_node_never_make_a_group_communicate_faster(gpu):
    """A TP group (or an MoE group) split over more, smaller nodes crosses the network more, never less: its collectives
    never get cheaper as `gpus_per_node` falls. A bridged card reaches the network over its PCIe link: nodes of one bridged
    pair of A100 PCIe cards each (gpus_per_node 2) rang at the network's 50 GB/s, faster than four cards in one node over
    their 32 GB/s of PCIe, so TP 4 of them cost a third less per 4,096-token step spread over two nodes."""
    g = GPUS.get(gpu)  # (the collectives do not depend on the weights fitting: setups built on a large GPU, then this one)
    base = dataclasses.replace(build_setup(MODELS.get("llama-3.2-1b"), GPUS.get("h200"), tp=1, roofline=roofline_config()), gpu=g)
    moe = dataclasses.replace(build_setup(MODELS.get("qwen3-30b-a3b"), GPUS.get("h200"), tp=1, roofline=roofline_config()), gpu=g)
    for tp in (2, 4, 8, 16):
        previous: list[float] | None = None
        for gpn in (16, 8, 4, 2, 1):
            s = dataclasses.replace(base, tp=tp, gpus_per_node=gpn)
            group = dataclasses.replace(moe, dp=tp, expert_parallel=True, gpus_per_node=gpn)
            costs = [s.allreduce_s(n) for n in (8, 1e6, 64e6)] + [s.comm_s(n) for n in (1, 4096)]
            costs += [group.moe_exchange_s(n) for n in (1, 4096)]
            assert all(c > 0 for c in costs), (tp, gpn, costs)
            if previous is not None:
                assert all(c >= p * (1 - REL) for c, p in zip(costs, previous, strict=True)), (tp, gpn, previous, costs)
            previous = costs


@pytest.mark.parametrize(
    ("gpu", "tp"), [("rtx-4090", 16), ("h100-sxm", 16), ("a100-80gb-pcie", 16), ("h100-sxm", 4), ("l40s", 2)]
)
def test_roofline_reports_the_all_reduce_its_step_times_are_priced_at(gpu, tp):
    """`fleetsim roofline` states the all-reduce latency and bus bandwidth the replica's TP all-reduces are priced at. Past
    a node (TP 16) it gave the node's link and the network's figures, neither the ring's: for RTX 4090s, 50 GB/s and 20 us
    where the steps were priced at 14.5 GB/s and 42 us; for H100s, 280 GB/s and 10 us where they were at 50 and 20."""
    import json

    from typer.testing import CliRunner

    from sim.cli.commands import app

    args = ["roofline", "--model", "llama-3.1-70b", "--gpu", gpu, "--tp", str(tp), "--weight-bits", "4"]
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    a = json.loads(out.output)["assumptions"]
    setup = build_setup(MODELS.get("llama-3.1-70b"), GPUS.get(gpu), tp=tp, roofline=roofline_config(None, weight_bits=4))
    n_bytes = 4096 * setup.model.hidden_size * 2
    assert setup.allreduce_s(n_bytes) == pytest.approx(
        a["allreduce_latency_s"] + 2 * (tp - 1) / tp * n_bytes / (a["allreduce_gb_per_s"] * 1e9)
    )
    text = CliRunner().invoke(app, args).output
    assert f"all-reduce latency {a['allreduce_latency_s'] * 1e6:g} us, bus {a['allreduce_gb_per_s']:g} GB/s" in text


@pytest.mark.parametrize("model", [name for name in MODELS.names() if MODELS.get(name).is_moe])
def test_experts_sharded_without_expert_parallelism_need_dp_x_tp_to_divide_their_width(model):
    """Without expert parallelism vLLM shards each expert over the DP group's dp x tp GPUs (FusedMoE's tensor-parallel
    group is them, flattened) and asserts that they divide its intermediate size; DeepSeek-V3 (2,048) at dp 3, or
    Mixtral (14,336) at dp 3 x tp 2, was priced as if they did. With expert parallelism experts are placed whole."""
    m, b300 = MODELS.get(model), GPUS.get("b300")
    width = m.moe_intermediate_size or m.intermediate_size
    for dp, tp in ((3, 1), (3, 2), (3, 8), (16, 8), (6, 4)):
        if width % (dp * tp):
            with pytest.raises(FleetsimError, match=rf"fleet.dp x fleet.tp = {dp * tp} GPUs must divide .* size {width} of"):
                build_setup(m, b300, tp=tp, dp=dp, roofline=roofline_config(None, weight_bits=4))
        elif m.n_heads % tp == 0:
            try:
                build_setup(m, b300, tp=tp, dp=dp, roofline=roofline_config(None, weight_bits=4))
            except FleetsimError as err:
                assert "does not fit" in str(err) or "must divide num_attention_heads" in str(err), str(err)
    for dp in (2, 4):  # dense models: DP ranks are plain replicas, whatever their MLP's width
        assert build_setup(MODELS.get("llama-3.1-8b"), b300, tp=1, dp=dp, roofline=roofline_config()).dp_group == 1
