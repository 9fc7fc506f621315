import pytest

from sim.errors import FleetsimError

EXPECTED = {
    "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l4", "l40s", "mi300x",
    "rtx-4090", "rtx-5090", "rtx-pro-6000", "rtx-pro-6000-server", "rtx-a6000", "a10g", "l40",
    "a100-80gb-pcie", "h100-nvl", "b300", "mi325x", "rtx-3090", "rtx-6000-ada", "a40", "a10", "t4", "v100-16gb",
    "v100-32gb", "a100-40gb-pcie", "h200-nvl", "gh200",
}  # fmt: skip


def test_catalog_has_the_listed_gpus(gpus):
    assert set(gpus.names()) == EXPECTED


def test_every_gpu_has_a_dated_sourced_price(gpus):
    for name in gpus.names():
        g = gpus.get(name)
        assert g.usd_per_gpu_hour and g.usd_per_gpu_hour > 0, name
        assert g.price_source and g.price_as_of, name


def test_units_converted_once(gpus):
    a100 = gpus.get("a100-80gb")
    assert a100.bf16_flops_per_s == 312e12
    assert a100.hbm_bytes == 80e9
    assert a100.hbm_bw_bytes_per_s == 2039e9
    assert a100.fp8_flops_per_s is None
    assert gpus.get("h100-sxm").fp8_flops_per_s == 1979e12


def test_aliases_and_case(gpus):
    assert gpus.get("A100").name == "a100-80gb"
    assert gpus.get("H100").name == "h100-sxm"


def test_unknown_gpu_lists_valid_names(gpus):
    with pytest.raises(
        FleetsimError,
        match=r"unknown gpu 'p100'; valid names: a10, a100-40gb, a100-40gb-pcie, a100-80gb, a100-80gb-pcie, a10g, a40, b200",
    ):
        gpus.get("p100")
