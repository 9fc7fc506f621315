"""Hostile inputs from a third fuzzing pass: each was a traceback, an exit-0 run with impossible figures (token counts
wrapped past int64), or an error naming the wrong thing. Each now ends in one line naming the file or field, the rule
and the value, exit code 2, and writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import one_line_error

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_a_token_count_past_int64_is_refused_not_wrapped_negative(tmp_path, suffix):
    """1e19 output tokens read as float64 and cast to int64 became -9.2e18: `run` exited 0 with a run folder its own
    `report` refused, or raised 'negative delay' from the clock."""
    path = tmp_path / f"t.{suffix}"
    if suffix == "jsonl":
        rows = [
            {"timestamp": 0, "input_length": 10, "output_length": 1e19},
            {"timestamp": 1, "input_length": 10, "output_length": 5},
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [10.0, 10.0], "output_tokens": [1e19, 20.0]}).to_parquet(path)
    out = tmp_path / "run"
    one_line_error(
        ["run", str(REPO / "configs" / "default.yaml"), "--trace", str(path), "--out", str(out)], "must be <= 10,000,000,000"
    )
    assert not out.exists()
    one_line_error(["trace", "convert", str(path), str(tmp_path / "c.csv")], "must be <= 10,000,000,000")
    assert not (tmp_path / "c.csv").exists()


def test_generators_cannot_draw_past_the_token_or_numeric_limits(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        "arrivals: {process: poisson, rate_per_s: 1}\nprompt_tokens: {dist: lognormal, mean: 1e300, cv: 1}\n"
        "output_tokens: {dist: fixed, tokens: 10}\nn_requests: 5\n"
    )
    one_line_error(["trace", "gen", "--spec", str(spec), "--out", str(tmp_path / "x.csv")], "prompt_tokens.mean")
    spec.write_text(
        "arrivals: {process: gamma, rate_per_s: 1, cv: 1e-300}\nprompt_tokens: {dist: fixed, tokens: 10}\n"
        "output_tokens: {dist: fixed, tokens: 10}\nn_requests: 5\n"
    )
    one_line_error(["trace", "gen", "--spec", str(spec), "--out", str(tmp_path / "x.csv")], "arrivals.cv")
    spec.write_text(
        "arrivals: {process: onoff, on_rate_per_s: 1, mean_on_s: 1e-9, mean_off_s: 1e-9}\n"
        "prompt_tokens: {dist: fixed, tokens: 10}\noutput_tokens: {dist: fixed, tokens: 10}\nduration_s: 1000\n"
    )
    one_line_error(["trace", "gen", "--spec", str(spec), "--out", str(tmp_path / "x.csv")], "mean_on_s")
    assert not (tmp_path / "x.csv").exists()


def test_a_column_named_twice_is_refused_rather_than_the_first_read(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens,prompt_tokens\n0,100,10,-5\n1,200,20,abc\n")
    one_line_error(["trace", "inspect", str(path)], "column 'prompt_tokens' appears 2 times in the header")


def test_a_burstgpt_negative_response_count_is_an_error_not_a_dropped_request(tmp_path):
    path = tmp_path / "bg.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,ChatGPT,100,10,110,Conversation log\n"
        "1,ChatGPT,100,-3,97,Conversation log\n"
    )
    one_line_error(["trace", "inspect", str(path)], "line 3: Response tokens must be >= 1 (got -3)")


@pytest.mark.parametrize(
    ("errors", "says"),
    [(5, "(got 5)"), ({"a": 1}, "(got {'a': 1})"), ("x", "(got 'x')"), (["", ""], None)],
)
def test_a_bench_result_errors_field_must_be_a_list_of_strings(tmp_path, errors, says):
    bench = {
        "input_lens": [100, 120, 90],
        "output_lens": [5, 6, 4],
        "ttfts": [0.05, 0.06, 0.04],
        "itls": [[0.01] * 4, [0.01] * 5, [0.01] * 3],
        "start_times": [0.0, 0.5, 1.0],
        "errors": errors if errors != ["", ""] else ["", "", ""],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    if says is None:
        assert runner.invoke(app, ["trace", "inspect", str(path)]).exit_code == 0
        return
    one_line_error(
        ["trace", "inspect", str(path)], f"errors: must be a list of 3 strings (empty where the request succeeded) {says}"
    )
    bench["errors"] = ["", "", ""]
    bench["itls"][0] = [1e308, 1e308, 0.01, 0.01]
    path.write_text(json.dumps(bench))
    one_line_error(["trace", "inspect", str(path)], "itls[0][0]: must be within +-1e+12 s")


@pytest.mark.parametrize("seeds", ["[5, 5]", "-3", "[9223372036854775000]", "[0, 99999999999999999999999]"])
def test_study_seeds_are_checked_for_plans_as_for_sweeps_and_bounded(tmp_path, seeds):
    """A plan's seeds were not validated (a pydantic traceback), and a sweep's only against the first seed (an int64
    overflow writing rows, a plan's verification seed past 2**63)."""
    base = f"base: {REPO / 'configs' / 'default.yaml'}\n"
    (tmp_path / "p.yaml").write_text(
        base + "search: {fleet.gpu: [h100-sxm]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\n"
        f"slo: {{p99_ttft_ms: 2000}}\nseeds: {seeds}\n"
    )
    one_line_error(["plan", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "po")], "seeds")
    (tmp_path / "s.yaml").write_text(base + f"axes: {{fleet.gpu: [h100-sxm]}}\nseeds: {seeds}\n")
    one_line_error(["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "so")], "seeds")
    assert not (tmp_path / "po").exists() and not (tmp_path / "so").exists()


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("pricing.billing_granularity_s=1e308", "pricing.billing_granularity_s"),
        ("pricing.billing_minimum_s=1e308", "pricing.billing_minimum_s"),
        ("pricing.usd_per_gpu_hour=1e308", "pricing.usd_per_gpu_hour"),
        ("roofline.memory_reserve_gb=1e308", "roofline.memory_reserve_gb"),
        ("roofline.step_overhead_s=1e308", "roofline.step_overhead_s"),
        ("roofline.gpu_overrides={a100-80gb: {hbm_bw_gb_per_s: 1e-300}}", "hbm_bw_gb_per_s"),
    ],
)
def test_figures_past_any_physical_value_are_refused_before_they_overflow(tmp_path, setting, field):
    """1e308 where a price, a billing period or an overhead goes printed inf/nan costs with exit 0, or ended in a
    ZeroDivisionError or OverflowError traceback after the run folder was written."""
    out = tmp_path / "run"
    one_line_error(["run", str(REPO / "configs" / "default.yaml"), "--set", setting, "--out", str(out)], field)
    assert not out.exists()


def test_a_user_gpu_catalog_is_bounded_too(tmp_path):
    entry = "myg:\n  bf16_tflops: 100\n  hbm_gb: 80\n  hbm_bw_gb_per_s: 2000\n  interconnect_gb_per_s: 64\n{extra}"
    for extra, field in (
        ("", "hbm_gb"),
        ("  layer_overhead_s: 1e308\n", "layer_overhead_s"),
        ("  allreduce_latency_s: 1e308\n", "allreduce_latency_s"),
        ("  allreduce_gb_per_s: 1e-300\n", "allreduce_gb_per_s"),
        ("  device_memory_bytes: 99999999999999999999999\n", "device_memory_bytes"),
    ):
        text = entry.format(extra=extra)
        if not extra:
            text = text.replace("hbm_gb: 80", "hbm_gb: 1e308")
        (tmp_path / "g.yaml").write_text(text)
        args = ["roofline", "--model", "llama-3.1-8b", "--gpu", "myg", "--gpu-catalog", str(tmp_path / "g.yaml")]
        one_line_error(args, f"myg.{field}")
    one_line_error(
        ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--price-per-gpu-hour", "1e308"], "--price-per-gpu-hour"
    )


def test_an_empty_model_name_and_a_device_as_a_trace_are_named_as_such(tmp_path):
    one_line_error(["roofline", "--model", "", "--gpu", "h100-sxm"], "model: the name is empty")
    one_line_error(["trace", "inspect", os.devnull], "not a regular file")
    os.mkfifo(tmp_path / "fifo.csv")
    one_line_error(["trace", "inspect", str(tmp_path / "fifo.csv")], "not a regular file")


def test_trace_windows_and_rate_scales_must_be_finite_and_bounded(tmp_path):
    """`--end-s nan` read as "no requests left" and `--rate-scale 1e300` wrote every arrival as 0.000000000."""
    src = tmp_path / "t.csv"
    src.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n1,10,5\n")
    dst = tmp_path / "o.csv"
    one_line_error(["trace", "convert", str(src), str(dst), "--end-s", "nan"], "window: end_s must be a finite time >= 0")
    one_line_error(["trace", "convert", str(src), str(dst), "--start-s", "inf"], "window: start_s must be a finite time >= 0")
    one_line_error(
        ["trace", "convert", str(src), str(dst), "--rate-scale", "1e300"], "rate scale factor must be a finite number between"
    )
    assert not dst.exists()
    one_line_error(
        ["run", str(REPO / "configs" / "default.yaml"), "--set", "trace.rate_scale=1e300", "--out", str(tmp_path / "r")],
        "trace.rate_scale",
    )
    assert runner.invoke(app, ["trace", "convert", str(src), str(dst), "--rate-scale", "2"]).exit_code == 0


def test_roofline_says_when_the_prompt_does_not_fit_and_refuses_counts_past_the_limit():
    args = ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm"]
    res = runner.invoke(app, [*args, "--prompt-tokens", "200000", "--json"])
    r = json.loads(res.stdout)
    assert r["prompt_fits"] is False and r["max_context_tokens"] == 131_072
    text = runner.invoke(app, [*args, "--prompt-tokens", "200000"]).stdout
    assert "(does not fit: the model's context is 131,072 tokens" in text
    assert json.loads(runner.invoke(app, [*args, "--json"]).stdout)["prompt_fits"] is True
    one_line_error([*args, "--prompt-tokens", "99999999999999"], "--prompt-tokens must be <= 10,000,000,000")
    one_line_error([*args, "--context-tokens", "99999999999"], "--context-tokens must be <= 10,000,000,000")
