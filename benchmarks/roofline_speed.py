"""How fast the roofline prices a step: the engine calls it once per batch change.

Prints step-cost evaluations per wall second for decode and prefill steps (dense and MoE), and
the ratio of the full model (attention + comm) to the seed preset's, measured in the same run.
    python benchmarks/roofline_speed.py
"""

from __future__ import annotations

import time

from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.physics.roofline import decode_step_time_s, prefill_time_s
from sim.scenario.config import roofline_config
from sim.scenario.resolve import build_setup


def rate(fn, n: int = 200_000) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    models, gpus = load_model_catalog(), load_gpu_catalog()
    setups = {
        "llama-2-70b 2xA100 seed": build_setup(
            models.get("llama-2-70b"), gpus.get("a100-80gb"), tp=2, roofline=roofline_config("seed")
        ),
        "llama-2-70b 2xA100 full": build_setup(
            models.get("llama-2-70b"), gpus.get("a100-80gb"), tp=2, roofline=roofline_config()
        ),
        "mixtral-8x7b 2xH100 full": build_setup(
            models.get("mixtral-8x7b"), gpus.get("h100-sxm"), tp=2, roofline=roofline_config()
        ),
    }
    results = {}
    for name, s in setups.items():
        d = rate(lambda i, s=s: decode_step_time_s(s, batch=1 + i % 64, context_tokens=i % 4096))
        p = rate(lambda i, s=s: prefill_time_s(s, prompt_tokens=1 + i % 4096))
        results[name] = d
        print(f"{name:<28} decode steps/s {d:>12,.0f}   prefill steps/s {p:>12,.0f}")
    ratio = results["llama-2-70b 2xA100 seed"] / results["llama-2-70b 2xA100 full"]
    print(f"seed preset / full model decode evaluation speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
