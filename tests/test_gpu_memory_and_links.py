"""The memory a catalog GPU with no logged total reports, and the links no one measured: the datasheet's "N GB" as N
GiB less what the driver keeps (and ECC's 1/16 on data-center GDDR), the measured links' median share of an
unmeasured link, a full mesh's per-link limit, and a pipeline boundary's send over the link between its two GPUs."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pytest
import yaml

from sim.physics.hardware import (
    DRIVER_SHARE,
    ECC_SHARE,
    GIB,
    UNMEASURED_LINK_SHARE,
    load_gpu_catalog,
)
from sim.physics.models import resolve_model
from sim.physics.roofline import check_fits
from sim.scenario.config import roofline_config
from sim.scenario.resolve import build_setup

REPO = Path(__file__).resolve().parents[1]
CATALOG = load_gpu_catalog()
RAW = yaml.safe_load((REPO / "sim" / "data" / "gpus.yaml").read_text())


def test_the_driver_share_is_what_the_logged_hbm_cards_report():
    """DRIVER_SHARE sits among the logged totals over the datasheet's GiB (A100 40/80 GB, H100 SXM)."""
    shares = [RAW[g]["device_memory_bytes"] / (RAW[g]["hbm_gb"] * GIB) for g in ("a100-40gb", "a100-80gb", "h100-sxm")]
    assert min(shares) <= DRIVER_SHARE <= max(shares)
    # an 8x H200 node's vLLM log: total_gpu_memory (139.81GiB); the estimate from 141 within 0.5%
    assert CATALOG.get("h200").total_memory_bytes == pytest.approx(139.81 * GIB, rel=5e-3)
    # the L40S's logged total is the ECC rule's: 48 GiB x 15/16 x the share
    assert RAW["l40s"]["device_memory_bytes"] == pytest.approx(48 * GIB * ECC_SHARE * DRIVER_SHARE, rel=2e-3)


def test_a_card_with_no_logged_total_is_not_read_as_decimal_gigabytes():
    """The H100 PCIe read as 80e9 bytes had 74.5 GiB, 5 GB less than the SXM card of the same 80 GB logs, and
    Llama-3.1-70B did not fit at TP 2 on it where it does on the SXM."""
    pcie, sxm = CATALOG.get("h100-pcie"), CATALOG.get("h100-sxm")
    assert pcie.total_memory_bytes == pytest.approx(sxm.total_memory_bytes, rel=2e-3)
    model = resolve_model("llama-3.1-70b")
    for gpu in (pcie, sxm):
        check_fits(build_setup(model, gpu, tp=2, roofline=roofline_config()))  # (raises if it does not fit)
    for name, entry in RAW.items():
        if not isinstance(entry, dict) or entry.get("device_memory_bytes") is not None:
            continue
        ecc = ECC_SHARE if entry.get("ecc_reserve") else 1.0
        assert CATALOG.get(name).total_memory_bytes == pytest.approx(entry["hbm_gb"] * GIB * DRIVER_SHARE * ecc), name


def test_data_center_gddr_cards_keep_ecc_and_hbm_and_workstation_cards_do_not():
    ecc = {n for n, e in RAW.items() if isinstance(e, dict) and e.get("ecc_reserve")}
    assert ecc == {"t4", "a10", "a10g", "a40", "l4", "l40"}
    l4 = CATALOG.get("l4")
    assert l4.total_memory_bytes == pytest.approx(
        24 * GIB * ECC_SHARE * DRIVER_SHARE
    )  # 22.25 GiB, as nvidia-smi's 23,034 MiB less CUDA's reserve


def test_an_unmeasured_link_takes_the_measured_links_median_share():
    # the links measured (the rest of the catalog's figures copy one of these: the bridges, B200/B300, the RTX 3090)
    measured = ("a100-80gb", "h100-sxm", "rtx-pro-6000", "rtx-pro-6000-server", "rtx-4090", "rtx-5090")
    shares = [RAW[g]["allreduce_gb_per_s"] / (RAW[g]["interconnect_gb_per_s"] / 2) for g in measured]
    assert pytest.approx(statistics.median(shares), abs=0.005) == UNMEASURED_LINK_SHARE
    l40s = CATALOG.get("l40s")  # PCIe 4.0 x16, 64 GB/s both ways, no NCCL figure
    assert l40s.collective_bw_bytes_per_s == pytest.approx(32e9 * UNMEASURED_LINK_SHARE)
    for name in CATALOG.names():  # no GPU all-reduces faster than one direction of its link
        gpu = CATALOG.get(name)
        assert gpu.collective_bw_bytes_per_s <= gpu.interconnect_bw_bytes_per_s / 2, name


def test_a_full_mesh_group_reaches_its_links_and_no_more():
    """MI300X: seven xGMI links, ~48 GB/s usable each; a TP group of n GPUs has n - 1 of them. Half the board's
    896 GB/s aggregate (448) was used at every size: a TP 2 pair all-reduced 9x faster than its one link."""
    mi = CATALOG.get("mi300x")
    assert mi.group_collective_bw_bytes_per_s(2) == pytest.approx(48e9)
    assert mi.group_collective_bw_bytes_per_s(4) == pytest.approx(144e9)
    assert mi.group_collective_bw_bytes_per_s(8) == pytest.approx(min(336e9, 448e9 * UNMEASURED_LINK_SHARE))
    assert mi.p2p_bw_bytes_per_s(0, 1) == pytest.approx(48e9)
    model = resolve_model("llama-3.1-70b")
    tp2, tp4 = (build_setup(model, mi, tp=t, roofline=roofline_config()) for t in (2, 4))
    n_bytes = 2048 * model.hidden_size * 2
    assert tp2.allreduce_s(n_bytes) == pytest.approx(mi.allreduce_latency_s + n_bytes / 48e9)
    assert tp4.allreduce_s(n_bytes) == pytest.approx(mi.allreduce_latency_s + 1.5 * n_bytes / 144e9)


@pytest.mark.parametrize(("tp", "pp", "past_bridge"), [(1, 2, 0), (2, 2, 1), (1, 4, 1), (2, 4, 3)])
def test_a_pipeline_boundary_sends_over_the_link_between_its_gpus(tp, pp, past_bridge):
    """H100 PCIe cards in bridged pairs: stage s on GPUs s*tp.. sends to the next stage's; within a pair over the
    bridge, past it over PCIe (both at their shares), where every send used to take the bridge."""
    gpu = CATALOG.get("h100-pcie")
    setup = build_setup(resolve_model("llama-3.1-8b"), gpu, tp=tp, roofline=roofline_config())
    setup = dataclasses.replace(setup, pp=pp)
    bridge, pcie = gpu.collective_bw_bytes_per_s, 64e9 * UNMEASURED_LINK_SHARE
    expect = (pp - 1 - past_bridge) / bridge + past_bridge / pcie
    assert setup.stage_seconds_per_byte() == pytest.approx(expect)


def test_a_memory_override_keeps_the_catalogs_proportion_and_a_link_override_drops_the_mesh():
    """`gpu_overrides: {h100-pcie: {hbm_gb: 80}}` (the catalog's own figure) changed nothing before the estimate and must
    change nothing after it (it read 80 x 10^9 bytes, and Llama-3.1-70B at TP 2 no longer fit); a replaced link or a
    measured all-reduce figure is not capped by MI300X's xGMI links."""
    from sim.scenario.config import GpuOverride
    from sim.scenario.resolve import apply_override

    pcie = CATALOG.get("h100-pcie")
    assert apply_override(GpuOverride(hbm_gb=80), pcie).total_memory_bytes == pytest.approx(pcie.total_memory_bytes)
    assert apply_override(GpuOverride(hbm_gb=40), pcie).total_memory_bytes == pytest.approx(pcie.total_memory_bytes / 2)
    a100 = CATALOG.get("a100-80gb")  # (a logged total scales alike)
    assert apply_override(GpuOverride(hbm_gb=40), a100).total_memory_bytes == pytest.approx(a100.total_memory_bytes / 2)
    mi = CATALOG.get("mi300x")
    assert apply_override(GpuOverride(allreduce_gb_per_s=300), mi).group_collective_bw_bytes_per_s(2) == pytest.approx(300e9)
    wider = apply_override(GpuOverride(interconnect_gb_per_s=4000), mi)
    assert wider.group_collective_bw_bytes_per_s(2) == pytest.approx(2000e9 * UNMEASURED_LINK_SHARE)
