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


def test_a_generated_trace_cannot_span_past_what_a_trace_may_hold(tmp_path):
    # (`trace gen --rate 1e-300 --requests 10` wrote arrivals 1e300 s apart, with a numpy overflow warning, a file every
    # reader then refused; in a scenario the run was refused for the timeline samples it needed, a 300-digit number)
    out = tmp_path / "g.csv"
    one_line_error(
        ["trace", "gen", "--rate", "1e-300", "--requests", "10", "--out", str(out)],
        "n_requests=10 at 1e-300 requests/s (the process's peak) span at least 1e+301 s, past the 1e+12 s a trace may",
    )
    one_line_error(
        ["trace", "gen", "--rate", "1e-12", "--duration-s", "1e13", "--out", str(out)],
        "duration_s: Input should be less than or equal to 1000000000000",
    )
    assert not out.exists()
