"""Cases an audit sweep over every catalog GPU x model x TP in {1, 2, 3, 4, 6, 8, 16} (and the MoE models' DP/EP layouts,
and `gpus_per_node` below a node of eight) found wrong, each checked over the whole catalog where it is cheap."""

from __future__ import annotations

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
