"""fleetsim: a discrete-event simulator of an LLM-inference GPU fleet.

Public API so far: scenario loading and the roofline step-time model.
"""

from sim.config import Scenario, build_setup, load_config, resolve_scenario
from sim.errors import FleetsimError
from sim.hardware import GpuSpec, load_gpu_catalog
from sim.models import ModelSpec, load_hf_config, load_model_catalog
from sim.roofline import RooflineSetup

__all__ = [
    "FleetsimError",
    "GpuSpec",
    "ModelSpec",
    "RooflineSetup",
    "Scenario",
    "build_setup",
    "load_config",
    "load_gpu_catalog",
    "load_hf_config",
    "load_model_catalog",
    "resolve_scenario",
]
