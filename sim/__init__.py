"""fleetsim: a discrete-event simulator of an LLM-inference GPU fleet.

from sim import load_config, load_trace, simulate
result = simulate(load_config("configs/default.yaml"))  # relative paths: from the scenario file
result.summary()    # the dict written to summary.json
result.requests     # one row per request (a DataFrame)
"""

from sim.build import build_setup, resolve_scenario
from sim.config import Scenario, load_config
from sim.errors import FleetsimError
from sim.hardware import GpuSpec, load_gpu_catalog
from sim.models import ModelSpec, load_hf_config, load_model_catalog
from sim.result import SimResult
from sim.roofline import RooflineSetup
from sim.simulation import simulate
from sim.workload import load_trace

__all__ = [
    "FleetsimError",
    "GpuSpec",
    "ModelSpec",
    "RooflineSetup",
    "Scenario",
    "SimResult",
    "build_setup",
    "load_config",
    "load_gpu_catalog",
    "load_hf_config",
    "load_model_catalog",
    "load_trace",
    "resolve_scenario",
    "simulate",
]
