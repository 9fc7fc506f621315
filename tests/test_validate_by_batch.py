"""`fleetsim validate --by-batch N`: mean TPOT over N groups of the requests by the batch they decoded in (measured
from the requests' own instants), and the difference a running request a step, which tells a cost the replay misses
for each running request (steady across groups) from one it misses for each step (falling)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.studies.validate import by_batch, decode_concurrency, validate
from sim.workload.runlog import read_run_log
from tests.test_validate_by_arrival import RAW, made_run

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"


def test_the_batch_a_request_decoded_in_by_hand():
    """A decodes over [0, 10], B over [5, 15], C alone over [20, 30], D has one token (no decode), E never finished:
    A and B each decode half their time alone and half together (1.5), C alone (1), D and E none."""
    arrival = np.array([0.0, 0.0, 18.0, 0.0, 0.0])
    ttft = np.array([0.0, 5.0, 2.0, 3.0, np.nan])
    e2e = np.array([10.0, 15.0, 12.0, 3.0, np.nan])
    got = decode_concurrency(arrival, ttft, e2e)
    assert got[:3] == pytest.approx([1.5, 1.5, 1.0])
    assert np.isnan(got[3]) and np.isnan(got[4])
    # two starting as one ends, at the same instant: each counts the other only while both decode
    got = decode_concurrency(np.zeros(3), np.array([0.0, 4.0, 4.0]), np.array([4.0, 8.0, 6.0]))
    assert got == pytest.approx([1.0, 1.5, 2.0])


def test_a_run_replayed_on_its_own_setup_has_no_gap_in_any_group(tmp_path):
    log = read_run_log(made_run(tmp_path))
    cmp = validate(log, RAW)
    assert cmp.result is not None
    groups = by_batch(log, cmp.result, 3)
    assert sum(g["requests"] for g in groups) == int(np.isfinite(log.tpot_s).sum())
    assert all(a["to_batch"] <= b["from_batch"] for a, b in itertools.pairwise(groups))
    for g in groups:
        assert g["tpot"]["error"] == pytest.approx(0.0, abs=1e-9)
        assert g["gap_per_running_s"] == pytest.approx(0.0, abs=1e-12)
        assert g["batch"]["sim"] == pytest.approx(g["batch"]["real"])
    with pytest.raises(FleetsimError, match="groups of"):
        by_batch(log, cmp.result, 10_000)


def test_the_cli_prints_and_emits_the_groups_and_refuses_impossible_counts():
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(RUN), "--by-batch", "3", "--json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output)["by_batch"]
    assert len(groups) == 3 and {"batch", "tpot", "gap_per_running_s"} <= set(groups[0])
    res = runner.invoke(app, ["validate", str(RUN), "--by-batch", "3"])
    assert res.exit_code == 0 and "by decode batch" in res.output and res.output.count(" µs") >= 3
    for bad, says in (("-1", "must be >= 1, or 0 for none (got -1)"), ("100000", "100000 groups of")):
        res = runner.invoke(app, ["validate", str(RUN), "--by-batch", bad])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output
