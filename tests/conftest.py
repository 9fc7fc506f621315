from __future__ import annotations

import os

import pytest
from hypothesis import settings

from sim.build import build_setup
from sim.config import roofline_config
from sim.hardware import load_gpu_catalog
from sim.models import load_model_catalog
from sim.roofline import RooflineSetup

# CI replays the same property-test examples every run (a landing never hinges on a new random draw);
# locally hypothesis explores new examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def models():
    return load_model_catalog()


@pytest.fixture(scope="session")
def gpus():
    return load_gpu_catalog()


def make_setup(model: str, gpu: str, *, tp: int, preset: str | None = None, **roofline) -> RooflineSetup:
    return build_setup(
        load_model_catalog().get(model),
        load_gpu_catalog().get(gpu),
        tp=tp,
        roofline=roofline_config(preset, **roofline),
    )


@pytest.fixture(scope="session")
def seed2() -> RooflineSetup:
    """The seed article's setup: Llama-2-70B, 16-bit, on 2x A100-80GB at $2.21/GPU-h."""
    return make_setup("llama-2-70b", "a100-80gb", tp=2, preset="seed")


@pytest.fixture(scope="session")
def seed8() -> RooflineSetup:
    return make_setup("llama-2-70b", "a100-80gb", tp=8, preset="seed")
