"""fleetsim: a discrete-event simulator of an LLM-inference GPU fleet.

from sim import load_config, load_trace, simulate
result = simulate(load_config("configs/default.yaml"))  # relative paths: from the scenario file
result.summary()    # the dict written to summary.json
result.requests     # one row per request (a DataFrame)

The names below are the stable API (scripts and notebooks import them from `sim`); the modules behind them are
grouped by layer (`sim.physics`, `sim.policies`, `sim.workload`, `sim.scenario`, `sim.results`, `sim.run`,
`sim.studies`, `sim.cli`) and may move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.compiled import select as _select_compiled
from sim.lazy import lazy_attributes

_select_compiled()  # the compiled hot modules when a current build is present, else the pure-Python ones (`sim.compiled`)

if TYPE_CHECKING:
    from sim.errors import FleetsimError
    from sim.physics.hardware import GpuSpec, load_gpu_catalog
    from sim.physics.models import ModelSpec, load_hf_config, load_model_catalog
    from sim.physics.roofline import RooflineSetup
    from sim.results.platform import PlatformResult
    from sim.results.result import SimResult
    from sim.run.capacity import Capacity
    from sim.run.engine.step_time import StepTimeModel
    from sim.run.platform import simulate_platform
    from sim.run.pools import replica_step_time
    from sim.run.simulate import replica_capacity, simulate
    from sim.scenario.config import Scenario, apply_sets, load_config, parse_config
    from sim.scenario.resolve import build_setup, resolve_scenario
    from sim.workload import load_trace

# Imported on first use (PEP 562), so that `import sim.cli` or `sim.physics.roofline` does not load pandas and SimPy.
_LAZY = {
    "build_setup": "sim.scenario.resolve",
    "resolve_scenario": "sim.scenario.resolve",
    "Scenario": "sim.scenario.config",
    "load_config": "sim.scenario.config",
    "parse_config": "sim.scenario.config",
    "apply_sets": "sim.scenario.config",
    "replica_step_time": "sim.run.pools",
    "StepTimeModel": "sim.run.engine.step_time",
    "replica_capacity": "sim.run.simulate",
    "Capacity": "sim.run.capacity",
    "FleetsimError": "sim.errors",
    "GpuSpec": "sim.physics.hardware",
    "load_gpu_catalog": "sim.physics.hardware",
    "ModelSpec": "sim.physics.models",
    "load_hf_config": "sim.physics.models",
    "load_model_catalog": "sim.physics.models",
    "SimResult": "sim.results.result",
    "RooflineSetup": "sim.physics.roofline",
    "simulate": "sim.run.simulate",
    "simulate_platform": "sim.run.platform",
    "PlatformResult": "sim.results.platform",
    "load_trace": "sim.workload",
}


__getattr__ = lazy_attributes("sim", _LAZY)

__all__ = [
    "Capacity",
    "FleetsimError",
    "GpuSpec",
    "ModelSpec",
    "PlatformResult",
    "RooflineSetup",
    "Scenario",
    "SimResult",
    "StepTimeModel",
    "apply_sets",
    "build_setup",
    "load_config",
    "load_gpu_catalog",
    "load_hf_config",
    "load_model_catalog",
    "load_trace",
    "parse_config",
    "replica_capacity",
    "replica_step_time",
    "resolve_scenario",
    "simulate",
    "simulate_platform",
]
