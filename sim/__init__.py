"""fleetsim: a discrete-event simulator of an LLM-inference GPU fleet.

from sim import load_config, load_trace, simulate
result = simulate(load_config("configs/default.yaml"))  # relative paths: from the scenario file
result.summary()    # the dict written to summary.json
result.requests     # one row per request (a DataFrame)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.lazy import lazy_attributes

if TYPE_CHECKING:
    from sim.build import build_setup, resolve_scenario
    from sim.config import Scenario, load_config
    from sim.errors import FleetsimError
    from sim.hardware import GpuSpec, load_gpu_catalog
    from sim.models import ModelSpec, load_hf_config, load_model_catalog
    from sim.result import SimResult
    from sim.roofline import RooflineSetup
    from sim.simulation import simulate
    from sim.workload import load_trace

# Imported on first use (PEP 562), so that `import sim.cli` or `sim.roofline` does not load pandas and SimPy.
_LAZY = {
    "build_setup": "sim.build",
    "resolve_scenario": "sim.build",
    "Scenario": "sim.config",
    "load_config": "sim.config",
    "FleetsimError": "sim.errors",
    "GpuSpec": "sim.hardware",
    "load_gpu_catalog": "sim.hardware",
    "ModelSpec": "sim.models",
    "load_hf_config": "sim.models",
    "load_model_catalog": "sim.models",
    "SimResult": "sim.result",
    "RooflineSetup": "sim.roofline",
    "simulate": "sim.simulation",
    "load_trace": "sim.workload",
}


__getattr__ = lazy_attributes("sim", _LAZY)

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
