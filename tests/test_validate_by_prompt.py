"""`fleetsim validate --by-prompt N`: mean TTFT over N groups of the requests by prompt length, and a line
TTFT = a + b x prompt tokens through each side, so a user tells an error in the prefill's price (the slope) from one
every request pays (the intercept: the wait for the step under way, queueing, the front end, the client)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.studies.validate import by_prompt, measured, per_request, validate
from sim.workload.runlog import read_run_log
from tests.test_validate_by_arrival import RAW, RUN, made_run


def test_a_run_replayed_on_its_own_setup_has_the_same_groups_and_line(tmp_path):
    log = read_run_log(made_run(tmp_path))
    cmp = validate(log, RAW)
    assert cmp.result is not None
    got = by_prompt(log, cmp.result, 4)
    groups = got["groups"]
    assert [g["requests"] for g in groups] == [15, 14, 14, 14]  # as numpy's array_split splits 57
    assert all(a["to_tokens"] <= b["from_tokens"] for a, b in itertools.pairwise(groups))  # by prompt length
    prompt = log.trace["prompt_tokens"].to_numpy()
    assert groups[0]["from_tokens"] == prompt.min() and groups[-1]["to_tokens"] == prompt.max()
    real = measured(log)["ttft"]
    order = np.argsort(prompt, kind="stable")
    for g, idx in zip(groups, np.array_split(order, 4), strict=True):
        assert g["ttft"]["real_s"] == pytest.approx(np.mean(real[idx]))
        assert g["ttft"]["error"] == pytest.approx(0.0, abs=1e-9)
    line = got["line"]
    assert line["real"]["intercept_s"] == pytest.approx(line["sim"]["intercept_s"])
    assert line["real"]["s_per_token"] == pytest.approx(line["sim"]["s_per_token"])
    # a prefill costs more the longer the prompt: the replay's line rises
    assert line["sim"]["s_per_token"] > 0


def test_the_line_recovers_a_known_intercept_and_slope(tmp_path):
    """A log whose TTFTs are exactly 30 ms + 80 µs a prompt token (E2E moved with them): the fitted line is that one,
    and the replay's own line is what its requests say."""
    log = read_run_log(made_run(tmp_path))
    prompt = log.trace["prompt_tokens"].to_numpy(dtype=np.float64)
    ttft = 0.030 + 80e-6 * prompt
    log = dataclasses.replace(log, ttft_s=ttft, e2e_s=log.e2e_s - log.ttft_s + ttft)
    cmp = validate(log, RAW)
    assert cmp.result is not None
    line = by_prompt(log, cmp.result, 3)["line"]
    assert line["real"]["intercept_s"] == pytest.approx(0.030, rel=1e-9)
    assert line["real"]["s_per_token"] == pytest.approx(80e-6, rel=1e-9)
    sim = per_request(cmp.result)["ttft"]
    slope, intercept = np.polyfit(prompt, sim, 1)
    assert line["sim"]["s_per_token"] == pytest.approx(slope) and line["sim"]["intercept_s"] == pytest.approx(intercept)


def test_one_group_is_the_whole_runs_mean_and_too_many_are_refused():
    log = read_run_log(RUN)
    cmp = validate(log)
    assert cmp.result is not None
    (one,) = by_prompt(log, cmp.result, 1)["groups"]
    assert one["ttft"]["error"] == pytest.approx(cmp.error("ttft"))
    with pytest.raises(FleetsimError, match="301 groups of 300 requests"):
        by_prompt(log, cmp.result, 301)


def test_the_cli_prints_and_emits_the_groups_and_refuses_impossible_counts():
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(RUN), "--by-prompt", "3", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["by_prompt"]
    assert [g["requests"] for g in got["groups"]] == [100, 100, 100]
    assert set(got["line"]) == {"real", "sim"}
    res = runner.invoke(app, ["validate", str(RUN), "--by-prompt", "3"])
    assert res.exit_code == 0 and "by prompt (tokens)" in res.output and res.output.count("TTFT line, ") == 2
    assert "by_prompt" not in json.loads(runner.invoke(app, ["validate", str(RUN), "--json"]).output)
    for bad, says in (("-1", "must be >= 1, or 0 for none (got -1)"), ("301", "301 groups of 300 requests")):
        res = runner.invoke(app, ["validate", str(RUN), "--by-prompt", bad])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1
