"""Runs one scenario of every feature and pickles what each returned: `tests/test_compiled.py` runs this script once on
the pure-Python modules and once on the compiled ones and compares the two, value for value.
    python tests/compiled_runs.py OUT.pickle
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

from sim import compiled, load_config, simulate, simulate_platform
from sim.scenario.config import parse_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# the bundled scenarios, each a feature (batch-backfill's day is left out: a minute of CPU; the MoE scenario below
# and `disagg` cover its paths' seams)
FILES = [
    "default",
    "disagg",
    "lora",
    "prefix-cache",
    "speculative",
    "startup-spot",
    "startup-autoscale",
]

MOE = {
    "name": "moe-dp-ep",
    "seed": 3,
    "model": "qwen3-30b-a3b",
    "trace": {
        "arrivals": {"process": "gamma", "rate_per_s": 30, "cv": 2.0},
        "n_requests": 2000,
        "prompt_tokens": {"dist": "uniform", "low": 100, "high": 4000},
        "output_tokens": {"dist": "uniform", "low": 10, "high": 600},
    },
    "fleet": {
        "gpu": "h100",
        "tp": 1,
        "dp": 2,
        "expert_parallel": True,
        "autoscaler": {"policy": "fixed", "replicas": 4},
        "lifecycle": {"start": "warm"},
    },
    "engine": {"policy": "chunked", "max_num_batched_tokens": 2048},
}


def outputs(result: Any) -> dict[str, Any]:
    """The frames and the summary a run returned (the summary without the CPU and wall times it measured)."""
    out: dict[str, Any] = {"summary": {k: v for k, v in result.summary().items() if "wall" not in k and "cpu" not in k}}
    for name in ("requests", "timeline", "replicas"):
        frame = getattr(result, name, None)
        if frame is not None:
            out[name] = frame
    return out


def main(path: str) -> None:
    import sim

    runs: dict[str, Any] = {"_compiled": compiled.active(), "_sim": sim.__file__}
    for name in FILES:
        runs[name] = outputs(simulate(load_config(CONFIGS / f"{name}.yaml")))
    runs["moe-dp-ep"] = outputs(simulate(parse_config(MOE)))
    for name in ("platform", "swap"):  # several deployments on one GPU budget (swap: models swapped in and out)
        runs[name] = {"summary": simulate_platform(load_config(CONFIGS / f"{name}.yaml")).summary()}
    runs["_compiled_after"] = compiled.active()
    Path(path).write_bytes(pickle.dumps(runs))


if __name__ == "__main__":
    main(sys.argv[1])
