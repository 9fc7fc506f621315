"""Hostile inputs, round 14 (a review of the frontend latency, its calibration and the pipeline's lock-step): a
pipeline's capacity probe runs the whole server; a replay drops a scenario's batch jobs; a calibration whose latency
stops at its bound says so, and --fix holds the latency; control characters in an --out name; a preset file's bad
value named in that file; a pipeline's random cold starts refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.run.capacity import group_size
from sim.run.pools import pool_spec
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.studies.validate import FRONTEND_MAX_S, calibrate_from_log, validate
from sim.workload import validate_frame
from sim.workload.runlog import read_run_log
from tests.test_validate import write_requests_log

REPO = Path(__file__).resolve().parents[1]
RAW = {
    "model": "llama-3.1-8b",
    "fleet": {"gpu": "l40s", "tp": 1},
    "engine": {"max_num_seqs": 64, "max_num_batched_tokens": 2048},
}
PP = {
    "model": "llama-3.1-70b",
    "fleet": {"gpu": "a100-80gb", "tp": 2, "pp": 2, "autoscaler": {"policy": "fixed", "replicas": 2}},
}


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def _made_run(folder: Path, *, shift_s: float = 0.0) -> None:
    """A run fleetsim made (mfu 0.5, mbu 0.62) written as a requests log, its first and last tokens `shift_s` late."""
    rng = np.random.default_rng(5)
    n = 200
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 30, n)),
                "prompt_tokens": rng.integers(100, 2000, n),
                "output_tokens": rng.integers(2, 300, n),
            }
        )
    )
    made = simulate(
        parse_config({**RAW, "roofline": {"gpu_overrides": {"l40s": {"mfu": 0.5, "mbu": 0.62}}}}), trace, measure_capacity=False
    )
    write_requests_log(folder, made, {})
    if shift_s:
        rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
        for r in rows:
            r["first_token_ts"] += shift_s
            r["last_token_ts"] += shift_s
        (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_pipeline_servers_capacity_probe_runs_all_its_engines():
    """The engines of a server step at the slowest busy one's pace: a probe of one engine alone would run unhindered
    and overstate the server (a saturated pp fleet read a throughput utilization of 0.74)."""
    spec = pool_spec(parse_config(PP), "online", "colocated", base_dir=REPO, prefix_ids=False)
    assert group_size(spec) == 2
    assert group_size(pool_spec(parse_config(RAW), "online", "colocated", base_dir=REPO, prefix_ids=False)) == 1


def test_a_replay_on_a_scenario_with_batch_jobs_serves_the_logs_requests_only(tmp_path):
    _made_run(tmp_path)
    job = {
        "job_id": "j",
        "requests": 500,
        "prompt_tokens": {"dist": "lognormal", "mean": 100, "cv": 0.5},
        "output_tokens": {"dist": "lognormal", "mean": 10, "cv": 0.5},
    }
    scenario = {**RAW, "batch": {"jobs": [job]}}
    cmp = validate(read_run_log(tmp_path), scenario)
    assert len(cmp.result.requests) == 200
    assert any(n.startswith("batch: the scenario's batch jobs are not replayed") for n in cmp.notes)
    assert abs(cmp.error("e2e")) > 0.05  # (replayed at the catalog's defaults, not the run's own: a what-if)


@pytest.mark.slow
def test_a_latency_at_the_fits_bound_is_noted_and_fix_holds_it(tmp_path):
    """First tokens 12 s late (a log's clock, not a frontend): the fit stops at its bound and says so, in its output
    and in the --out file's header; `--fix frontend_latency_s` holds it at the scenario's value instead."""
    run = tmp_path / "run"
    run.mkdir()
    _made_run(run, shift_s=FRONTEND_MAX_S + 2.0)
    code, out = cli("calibrate", str(run), "--scenario", str(_scenario(tmp_path)), "--out", str(tmp_path / "fit.yaml"))
    assert code == 0, out
    assert f"note: frontend_latency_s stopped at the fit's bound of {FRONTEND_MAX_S:g} s" in out
    assert "# note: frontend_latency_s stopped" in (tmp_path / "fit.yaml").read_text()
    held = calibrate_from_log(read_run_log(run), RAW, fit_frontend=False)
    assert held.after["frontend_latency_s"] == held.before["frontend_latency_s"] == 0.0
    assert not any(n.startswith("frontend_latency_s") for n in held.notes)
    code, out = cli("calibrate", str(run), "--fix", "mfu")
    assert code == 2 and "--fix holds only the last" in out


def _scenario(folder: Path) -> Path:
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(RAW))
    return path


@pytest.mark.parametrize("name", ["a\nb: 1 #.yaml", "tab\there.yaml", "bell\x07.yaml"])
def test_an_out_name_with_control_characters_is_refused(tmp_path, name):
    run = REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
    code, out = cli("calibrate", str(run), "--out", str(tmp_path / name))
    assert code == 2 and "must not hold control characters" in out
    assert not list(tmp_path.iterdir())


def test_a_preset_files_bad_value_is_named_in_that_file(tmp_path):
    (tmp_path / "fit.yaml").write_text("roofline:\n  frontend_latency_s: -1\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**RAW, "roofline": {"preset": "fit.yaml"}}))
    code, out = cli("run", str(tmp_path / "s.yaml"), "--no-capacity")
    assert code == 2
    assert "fit.yaml: roofline.frontend_latency_s: Input should be greater than or equal to 0 (got -1)" in out


@pytest.mark.parametrize(
    "lifecycle",
    [
        {"start": "cold", "cold_start_s": {"dist": "lognormal", "mean": 100, "cv": 1}},
        {"start": "cold", "provision_s": {"dist": "uniform", "low": 10, "high": 90}},
    ],
)
def test_a_pipelines_random_cold_start_is_refused(lifecycle):
    raw = {**PP, "fleet": {**PP["fleet"], "lifecycle": lifecycle}}
    frame = validate_frame(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [100], "output_tokens": [5]}))
    with pytest.raises(FleetsimError, match=r"fleet\.lifecycle\.\w+: with fleet\.pp = 2 .* give a fixed duration"):
        simulate(parse_config(raw), frame, measure_capacity=False)
    fixed = {**PP, "fleet": {**PP["fleet"], "lifecycle": {"start": "cold", "cold_start_s": 60}}}
    r = simulate(parse_config(fixed), frame, measure_capacity=False).replicas
    assert r["ready_at_s"].nunique() == 1  # (both engines of the server ready together)
