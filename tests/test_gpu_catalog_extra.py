"""The GPUs added to the catalog for common vLLM deployments: each loads with its datasheet's figures (dense, SI
units), resolves from the name CUDA or a node label gives it, fits or does not fit a model as the arithmetic says, and
`fleetsim roofline` runs on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.scenario.config import roofline_config
from sim.scenario.importer import gpu_from_label
from sim.scenario.resolve import build_setup

REPO = Path(__file__).resolve().parents[1]
GPUS = load_gpu_catalog()
MODELS = load_model_catalog()

# name: (bf16 TFLOPS dense, fp8 TFLOPS dense or None, memory GB, memory GB/s, interconnect GB/s, SMs or CUs), as cited
# in sim/data/gpus.yaml (vendor figures "with sparsity" halved)
DATASHEET = {
    "h100-nvl": (1671 / 2, 3341 / 2, 94, 3900, 600, 132),
    "a100-80gb-pcie": (312, None, 80, 1935, 600, 108),
    "b300": (4500 / 2, 9000 / 2, 270, 7700, 1800, 148),
    "mi325x": (1307.4, 2614.9, 256, 6000, 896, 304),
    "a40": (149.7, None, 48, 696, 64, 84),
    "rtx-3090": (142 / 2, None, 24, 936, 64, 82),
    "rtx-6000-ada": (364.2, 1457 / 2, 48, 960, 64, 142),
    "a100-40gb-pcie": (312, None, 40, 1555, 600, 108),
    "h200-nvl": (1671 / 2, 3341 / 2, 141, 4800, 900, 132),
    "gh200": (989, 1979, 96, 4000, 900, 132),
}


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_each_new_gpu_carries_its_datasheet_figures_in_si_units(name):
    bf16, fp8, mem_gb, bw, link, sms = DATASHEET[name]
    g = GPUS.get(name)
    assert g.bf16_flops_per_s == pytest.approx(bf16 * 1e12, rel=1e-12)
    assert (g.fp8_flops_per_s is None) == (fp8 is None)
    if fp8 is not None:
        assert g.fp8_flops_per_s == pytest.approx(fp8 * 1e12, rel=1e-12)
        assert g.peak_flops_per_s("fp8") == g.fp8_flops_per_s
    else:
        with pytest.raises(FleetsimError, match="no FP8 tensor cores"):
            g.peak_flops_per_s("fp8")
    assert g.hbm_bytes == pytest.approx(mem_gb * 1e9)
    assert g.hbm_bw_bytes_per_s == pytest.approx(bw * 1e9)
    assert g.interconnect_bw_bytes_per_s == pytest.approx(link * 1e9)
    assert g.sm_count == sms
    assert g.description and g.interconnect


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_efficiencies_follow_the_catalogs_rule_for_gpus_without_a_reference(name):
    """Hopper parts (and Blackwell, as B200) take the H100's fitted values, GA100 parts the A100's, the rest the
    generic means; a price, where there is one, names its source and date."""
    g = GPUS.get(name)
    like = {"h100-nvl": "h100-sxm", "b300": "b200", "a100-80gb-pcie": "a100-80gb", "mi325x": "mi300x"}
    like |= {"a40": "a10g", "rtx-3090": "rtx-a6000", "rtx-6000-ada": "l40"}
    like |= {"a100-40gb-pcie": "a100-40gb", "h200-nvl": "h200", "gh200": "h200"}
    ref = GPUS.get(like[name])
    assert (g.mfu, g.mbu, g.layer_overhead_s, g.overlap) == (ref.mfu, ref.mbu, ref.layer_overhead_s, ref.overlap)
    assert g.usd_per_gpu_hour > 0 and g.price_source and g.price_as_of


def test_pcie_parts_take_the_pcie_all_reduce_latency_and_nvlink_parts_the_nvlink_one():
    for name in ("h100-nvl", "a100-80gb-pcie", "a40", "rtx-6000-ada", "a100-40gb-pcie", "h200-nvl"):
        assert GPUS.get(name).allreduce_latency_s == GPUS.get("h100-pcie").allreduce_latency_s == 2.5e-5, name
    for name in ("b300", "mi325x", "gh200"):
        assert GPUS.get(name).allreduce_latency_s == 1e-5, name
    assert GPUS.get("rtx-3090").allreduce_latency_s == GPUS.get("rtx-4090").allreduce_latency_s  # host-staged NCCL


@pytest.mark.parametrize(
    ("device", "name"),
    [
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),  # was an alias of the SXM card before the PCIe card had an entry
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("NVIDIA B300 SXM6 AC", "b300"),
        ("AMD Instinct MI325X", "mi325x"),
        ("A100", "a100-80gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb-pcie"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA GH200 480GB", "gh200"),  # (CUDA names the 96 GB superchip by its 480 GB of CPU memory)
    ],
)
def test_cuda_device_names_resolve_to_the_new_entries(device, name):
    assert GPUS.get(device).name == name


@pytest.mark.parametrize(
    ("key", "value", "gpu"),
    [
        ("nvidia.com/gpu.product", "NVIDIA-H100-NVL", "h100-nvl"),
        ("nvidia.com/gpu.product", "NVIDIA-A100-80GB-PCIe", "a100-80gb-pcie"),
        ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB", "a100-80gb"),
        ("nvidia.com/gpu.product", "NVIDIA-GeForce-RTX-3090", "rtx-3090"),
        ("nvidia.com/gpu.product", "NVIDIA-B300-SXM6-AC", "b300"),
        ("nvidia.com/gpu.product", "NVIDIA-A100-PCIE-40GB", "a100-40gb-pcie"),
        ("nvidia.com/gpu.product", "NVIDIA-H200-NVL", "h200-nvl"),
        ("nvidia.com/gpu.product", "NVIDIA-GH200-480GB", "gh200"),
    ],
)
def test_node_labels_name_the_new_gpus(key, value, gpu):
    assert gpu_from_label(key, value) == gpu


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "fits"),
    [
        ("llama-3.1-70b", "h100-nvl", 1, False),  # 141 GB of 16-bit weights > 0.9 x 94 GB
        ("llama-3.1-70b", "h100-nvl", 2, True),
        ("llama-3.1-70b", "mi325x", 1, True),  # 0.9 x 256 GB = 230 GB
        ("llama-3.1-70b", "b300", 1, True),
        ("llama-3.1-70b", "rtx-3090", 4, False),
        ("llama-3.1-8b", "rtx-3090", 1, True),  # 16.1 GB < 0.9 x 25.29 GB the driver reports
        ("llama-3.1-70b", "h200-nvl", 1, False),  # 141.1 GB of weights > 0.9 x 141 GB
        ("llama-3.1-70b", "h200-nvl", 2, True),
        ("llama-3.1-70b", "gh200", 1, False),  # 141 GB > 0.9 x 96 GB
        ("llama-3.1-70b", "gh200", 2, True),
        ("llama-3.1-70b", "a100-40gb-pcie", 2, False),  # 141 GB > 0.9 x 80 GB
        ("llama-3.1-8b", "a100-40gb-pcie", 1, True),  # 16.1 GB < 0.9 x 40 GB
    ],
)
def test_models_fit_as_the_memory_arithmetic_says(model, gpu, tp, fits):
    m, g = MODELS.get(model), GPUS.get(gpu)
    weights = m.weight_bytes(16)
    budget = 0.9 * g.total_memory_bytes * tp
    assert (weights < budget) == fits  # the arithmetic, before the engine's activations and CUDA graphs
    if fits:
        assert build_setup(m, g, tp=tp, roofline=roofline_config()).weight_bytes == weights
    else:
        with pytest.raises(FleetsimError, match=rf"does not fit on {tp}x {gpu}: .*short by"):
            build_setup(m, g, tp=tp, roofline=roofline_config())


def test_the_catalog_lists_the_new_gpus():
    """`fleetsim gpus --json` lists them, each with its price."""
    import json

    r = CliRunner().invoke(app, ["gpus", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(DATASHEET) <= set(rows)
    assert rows["b300"]["bf16_tflops"] == pytest.approx(2250)
    assert all(rows[n]["usd_per_gpu_hour"] > 0 for n in DATASHEET)


@pytest.mark.parametrize("gpu", sorted(DATASHEET))
def test_roofline_runs_on_every_new_gpu(gpu):
    r = CliRunner().invoke(app, ["roofline", "--model", "llama-3.1-8b", "--gpu", gpu, "--json"])
    assert r.exit_code == 0, r.output
    assert f'"gpu": "{gpu}"' in r.stdout


def test_the_fleetsim_command_runs_roofline_on_a_new_gpu():
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "roofline", "--model", "llama-3.1-8b", "--gpu", "h100-nvl"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "llama-3.1-8b on 1x h100-nvl" in proc.stdout and "$2.59/GPU-h" in proc.stdout


def test_an_alias_that_is_another_gpus_name_is_refused(tmp_path):
    entry = (
        "my-gpu:\n  description: custom\n  aliases: [{alias}]\n  bf16_tflops: 100\n  hbm_gb: 80\n  hbm_bw_gb_per_s: 2000\n"
        "  interconnect: NVLink4\n  interconnect_gb_per_s: 900\n  usd_per_gpu_hour: 1.0\n"
    )
    (tmp_path / "g.yaml").write_text(entry.format(alias="h100-sxm"))
    with pytest.raises(FleetsimError, match=r"my-gpu.aliases: 'h100-sxm' is another GPU's name"):
        load_gpu_catalog(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text(entry.format(alias="my-card"))
    catalog = load_gpu_catalog(tmp_path / "g.yaml")
    assert catalog.get("my-card").name == "my-gpu" and catalog.get("h100-sxm").name == "h100-sxm"


def test_an_all_reduce_runs_at_nccls_measured_bus_bandwidth_and_an_overridden_link_drops_it(tmp_path):
    """The catalog's `allreduce_gb_per_s` (NCCL measured, one direction) prices a TP all-reduce; a GPU without one runs
    at the measured links' share of one direction of its datasheet link; a scenario that overrides the link alone drops the figure measured on the old link."""
    from sim.physics.hardware import UNMEASURED_LINK_SHARE
    from sim.physics.roofline import allreduce_time_s

    a100 = GPUS.get("a100-80gb")
    assert a100.interconnect_bw_bytes_per_s == 600e9 and a100.collective_bw_bytes_per_s == 150e9
    eight_mb = 8 * 2**20
    # 8x A100, 8 MB: Vidur's DGX profile measures ~146 us; the datasheet's 300 GB/s a direction would give ~79 us
    assert allreduce_time_s(a100, tp=8, n_bytes=eight_mb) == pytest.approx(30e-6 + 2 * 7 / 8 * eight_mb / 150e9)
    assert 120e-6 < allreduce_time_s(a100, tp=8, n_bytes=eight_mb) < 146e-6 * 1.1
    m = MODELS.get("llama-3.1-70b")
    base = build_setup(m, a100, tp=8, roofline=roofline_config())
    link_only = build_setup(m, a100, tp=8, roofline=roofline_config(gpu_overrides={"a100-80gb": {"interconnect_gb_per_s": 900}}))
    # the measured links' share of the overridden link's direction: the measurement was not of it
    assert link_only.gpu.collective_bw_bytes_per_s == pytest.approx(450e9 * UNMEASURED_LINK_SHARE)
    both = roofline_config(gpu_overrides={"a100-80gb": {"interconnect_gb_per_s": 900, "allreduce_gb_per_s": 200}})
    assert build_setup(m, a100, tp=8, roofline=both).gpu.collective_bw_bytes_per_s == 200e9
    assert link_only.comm_s(2048) < base.comm_s(2048)
    # a user catalog entry may give its own measurement; without one, the share of one direction of its link
    entry = (
        "my-gpu:\n  bf16_tflops: 100\n  hbm_gb: 80\n  hbm_bw_gb_per_s: 2000\n  interconnect_gb_per_s: 128\n{extra}"
        "  usd_per_gpu_hour: 1.0\n"
    )
    (tmp_path / "g.yaml").write_text(entry.format(extra="  allreduce_gb_per_s: 20\n"))
    assert load_gpu_catalog(tmp_path / "g.yaml").get("my-gpu").collective_bw_bytes_per_s == 20e9
    (tmp_path / "g.yaml").write_text(entry.format(extra=""))
    assert load_gpu_catalog(tmp_path / "g.yaml").get("my-gpu").collective_bw_bytes_per_s == pytest.approx(
        64e9 * UNMEASURED_LINK_SHARE
    )
    (tmp_path / "g.yaml").write_text(entry.format(extra="  allreduce_gb_per_s: -1\n"))
    with pytest.raises(FleetsimError, match="allreduce_gb_per_s"):
        load_gpu_catalog(tmp_path / "g.yaml")
