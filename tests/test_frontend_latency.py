"""`roofline.frontend_latency_s`: a fixed delay each request spends in the serving stack before the engine sees it
(the HTTP server, tokenization, the hop to the engine): TTFT and E2E grow by it, TPOT does not; `fleetsim calibrate`
fits it from a run's logs beside mfu and mbu."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import load_config, parse_config
from sim.studies.calibrate import overrides_block
from sim.studies.validate import best_shift, calibrate_from_log
from sim.workload import validate_frame
from sim.workload.runlog import read_run_log
from tests.test_validate import write_requests_log

RAW = {
    "model": "llama-3.1-8b",
    "fleet": {"gpu": "l40s", "tp": 1},
    "engine": {"max_num_seqs": 64, "max_num_batched_tokens": 2048},
}


def _trace(n: int, seed: int, span_s: float = 60.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, span_s, n)),
                "prompt_tokens": rng.integers(100, 3000, n),
                "output_tokens": rng.integers(2, 400, n),
            }
        )
    )


def _latencies(raw: dict, trace: pd.DataFrame) -> pd.DataFrame:
    r = simulate(parse_config(raw), trace, measure_capacity=False).requests
    return pd.DataFrame(
        {
            "arrival": r["arrival_at_s"],
            "ttft": r["first_token_at_s"] - r["arrival_at_s"],
            "e2e": r["completed_at_s"] - r["arrival_at_s"],
            "decode": r["completed_at_s"] - r["first_token_at_s"],
        }
    )


@pytest.mark.parametrize("delay", [0.004, 0.25])
def test_a_fixed_fleet_replays_the_same_run_later_by_the_latency(delay):
    """Every arrival delayed alike on a fixed fleet: the engine runs the same schedule `delay` later, so each request's
    TTFT and E2E grow by exactly `delay` (to a rounding), its decode time does not change, its arrival is the trace's."""
    trace = _trace(300, 1)
    base = _latencies(RAW, trace)
    late = _latencies({**RAW, "roofline": {"frontend_latency_s": delay}}, trace)
    assert np.array_equal(late["arrival"], trace["arrival_at_s"])
    assert np.allclose(late["ttft"] - base["ttft"], delay, rtol=0, atol=1e-9)
    assert np.allclose(late["e2e"] - base["e2e"], delay, rtol=0, atol=1e-9)
    assert np.allclose(late["decode"], base["decode"], rtol=0, atol=1e-9)


def test_an_autoscaled_fleet_sees_its_requests_late_too():
    """Under an autoscaler the shift is not a pure translation (the fleet scales on the clock), but no request's first
    token comes sooner than `delay` after its arrival, and every request is served."""
    trace = _trace(200, 2, span_s=120.0)
    raw = {**RAW, "fleet": {**RAW["fleet"], "autoscaler": {"policy": "hpa", "target": 4, "min_replicas": 1, "max_replicas": 4}}}
    late = _latencies({**raw, "roofline": {"frontend_latency_s": 0.3}}, trace)
    assert len(late) == len(trace) and (late["ttft"] >= 0.3 - 1e-9).all()


def test_the_latency_is_checked_at_the_door():
    for bad in (-0.001, 61.0, "fast"):
        with pytest.raises(FleetsimError, match="frontend_latency_s"):
            parse_config({**RAW, "roofline": {"frontend_latency_s": bad}})


def test_best_shift_recovers_a_known_shift_and_never_goes_negative():
    rng = np.random.default_rng(0)
    sim = {m: rng.uniform(0.02, 0.5, 200) for m in ("ttft", "tpot", "e2e")}
    sim["e2e"] = sim["e2e"] + 5.0
    floor = {"ttft": 0.001, "tpot": 0.001, "e2e": 0.01}
    mask = np.ones(200, dtype=bool)
    real = {"ttft": sim["ttft"] + 0.013, "tpot": sim["tpot"], "e2e": sim["e2e"] + 0.013}
    assert best_shift(real, sim, mask, floor) == pytest.approx(0.013, abs=2e-5)
    early = {"ttft": sim["ttft"] - 0.01, "tpot": sim["tpot"], "e2e": sim["e2e"] - 0.01}  # the replay is already late
    assert best_shift(early, sim, mask, floor) == 0.0


def test_calibration_recovers_a_frontend_latency_with_mfu_and_mbu(tmp_path):
    """A run made with mfu 0.5, mbu 0.62 and a 12 ms frontend latency, fitted from the defaults (no latency) on its
    first half: all three found, both halves reproduced (mean errors under 0.5%)."""
    trace = _trace(400, 5)
    truth = {"mfu": 0.5, "mbu": 0.62}
    made = simulate(
        parse_config({**RAW, "roofline": {"frontend_latency_s": 0.012, "gpu_overrides": {"l40s": truth}}}),
        trace,
        measure_capacity=False,
    )
    write_requests_log(tmp_path, made, {})
    cal = calibrate_from_log(read_run_log(tmp_path), RAW)
    assert cal.before["frontend_latency_s"] == 0.0
    assert cal.after["frontend_latency_s"] == pytest.approx(0.012, abs=5e-4)
    for p, v in truth.items():
        assert cal.after[p] == pytest.approx(v, rel=1e-2), p
    for part in ("fit", "held_out"):
        for m in ("ttft", "tpot", "e2e"):
            assert abs(cal.error(part, "after", m)) < 5e-3, (part, m)


def test_the_fitted_block_carries_the_latency_into_a_scenario(tmp_path):
    """`overrides_block` puts the latency beside the GPU's parameters, and a scenario using the block as a preset file
    runs with it."""
    block = overrides_block("l40s", {"mfu": 0.5, "mbu": 0.6, "frontend_latency_s": 0.0075}, ["mfu", "mbu", "frontend_latency_s"])
    assert block == {"roofline": {"frontend_latency_s": 0.0075, "gpu_overrides": {"l40s": {"mfu": 0.5, "mbu": 0.6}}}}
    assert "frontend_latency_s" not in overrides_block("l40s", {"mfu": 0.5}, ["mfu"])["roofline"]
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(block["roofline"]))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**RAW, "roofline": {"preset": "fit.yaml"}}))
    sc = load_config(tmp_path / "s.yaml")
    assert sc.roofline.frontend_latency_s == 0.0075
    assert sc.roofline.gpu_overrides["l40s"].mfu == 0.5


def test_the_html_report_says_its_latencies_hold_the_frontend_latency():
    """A report of a run with a frontend latency says so beside the scenario (its TTFTs are not the engine's alone);
    one without says nothing of it."""
    from sim.results.html_report import render_html

    trace = _trace(40, 3, span_s=10.0)
    with_it = simulate(parse_config({**RAW, "roofline": {"frontend_latency_s": 0.012}}), trace, measure_capacity=False)
    assert "reaches the engine 12 ms after it arrives" in render_html(with_it)
    without = simulate(parse_config(RAW), trace, measure_capacity=False)
    assert "reaches the engine" not in render_html(without)
