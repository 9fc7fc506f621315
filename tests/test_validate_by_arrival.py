"""`fleetsim validate --by-arrival N`: mean TTFT, TPOT and E2E over N groups of the requests in arrival order, so a
user sees where in a run the replay's error sits (a queue's ramp, its saturation, its drain)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.studies.validate import by_arrival, measured, validate
from sim.workload import validate_frame
from sim.workload.runlog import read_run_log
from tests.test_validate import write_requests_log

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
RAW = {"model": "llama-3.1-8b", "fleet": {"gpu": "l40s", "tp": 1}, "engine": {"max_num_seqs": 64}}


def made_run(tmp_path: Path, n: int = 57) -> Path:
    rng = np.random.default_rng(2)
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 20, n)),
                "prompt_tokens": rng.integers(50, 2000, n),
                "output_tokens": rng.integers(2, 300, n),
            }
        )
    )
    write_requests_log(tmp_path, simulate(parse_config(RAW), trace, measure_capacity=False), {})
    return tmp_path


def test_a_run_replayed_on_its_own_setup_is_exact_in_every_group(tmp_path):
    log = read_run_log(made_run(tmp_path))
    cmp = validate(log, RAW)
    assert cmp.result is not None
    groups = by_arrival(log, cmp.result, 4)
    assert [g["requests"] for g in groups] == [15, 14, 14, 14]  # as numpy's array_split splits 57
    arrival = log.trace["arrival_at_s"].to_numpy()
    assert groups[0]["from_s"] == arrival[0] and groups[-1]["to_s"] == arrival[-1]
    assert all(a["to_s"] <= b["from_s"] for a, b in itertools.pairwise(groups))
    real = measured(log)
    for g, idx in zip(groups, np.array_split(np.arange(len(arrival)), 4), strict=True):
        for m in ("ttft", "tpot", "e2e"):
            assert g[m]["real_s"] == pytest.approx(np.nanmean(real[m][idx]))
            assert g[m]["error"] == pytest.approx(0.0, abs=1e-9)


def test_the_groups_are_the_whole_runs_means_when_there_is_one(tmp_path):
    log = read_run_log(RUN)
    cmp = validate(log)
    assert cmp.result is not None
    (one,) = by_arrival(log, cmp.result, 1)
    for m in ("ttft", "tpot", "e2e"):
        assert one[m]["error"] == pytest.approx(cmp.error(m))
    with pytest.raises(FleetsimError, match="groups of 300 requests"):
        by_arrival(log, cmp.result, 301)


def test_the_cli_prints_and_emits_the_groups_and_refuses_impossible_counts(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(RUN), "--by-arrival", "3", "--json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output)["by_arrival"]
    assert [g["requests"] for g in groups] == [100, 100, 100]
    assert {"ttft", "tpot", "e2e"} <= set(groups[0])
    res = runner.invoke(app, ["validate", str(RUN), "--by-arrival", "3"])
    assert res.exit_code == 0 and res.output.count(" ms / ") >= 6 and "by arrival (mean)" in res.output
    assert "by_arrival" not in json.loads(runner.invoke(app, ["validate", str(RUN), "--json"]).output)
    for bad, says in (("-1", "must be >= 1, or 0 for none (got -1)"), ("301", "301 groups of 300 requests")):
        res = runner.invoke(app, ["validate", str(RUN), "--by-arrival", bad])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output
