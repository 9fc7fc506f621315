"""Hostile inputs, round 12: a decode pool scaled from zero, a platform's GPU budget, calibrate's --out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame
from tests.conftest import one_line_error

STEPS = Path(__file__).resolve().parents[1] / "benchmarks" / "steptimes" / "aisimulate-vllm0.24_h100-sxm_llama-3.1-8b_tp1.csv"


def test_a_decode_pool_scaled_to_zero_by_kpa_sees_the_requests_waiting_for_it():
    # (the prefilled requests waiting on the link were not the decode pool's demand: KPA cancelled each replica the
    # link's activator launched, and the run went on for 2,000,000 autoscaler ticks, half a minute, before an error
    # blaming the cold starts)
    scenario = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "mode": "disaggregated",
                "decode": {"autoscaler": {"policy": "kpa", "min_replicas": 0, "max_replicas": 2, "initial_replicas": 0}},
            },
            "engine": {"step_time": {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02}},
        }
    )
    trace = validate_frame(
        pd.DataFrame({"arrival_at_s": [0.0, 0.5, 1.0], "prompt_tokens": [50, 60, 70], "output_tokens": [5, 6, 7]})
    )
    requests = simulate(scenario, trace, measure_capacity=False).requests
    assert (requests["status"] == "completed").all()


@pytest.mark.parametrize("name", ["fit.json", "fit"])
def test_calibrate_out_is_a_yaml_file_a_scenario_can_name(tmp_path, name):
    # (`--out fit.json` wrote the block and said "use it as `roofline: {preset: fit.json}`", which a scenario then refused
    # as an unknown bundled preset: a preset file is told from a preset's name by its .yaml or .yml)
    out = tmp_path / name
    one_line_error(
        ["calibrate", str(STEPS), "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--out", str(out)],
        f"--out {out}: the file name must end in .yaml or .yml",
    )
    assert not out.exists()
