"""Hostile inputs from a ninth fuzzing pass, over scenario configs and the CLI options of run, sweep, plan and roofline:
extreme numbers in fields that had no bound on one side, ranges of large integers, and unusual but valid combinations
of features. Each now ends in one line naming the field, the rule and the value, exit code 2, and writes nothing, or
runs as asked."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.studies.sweep import Range
from tests.conftest import one_line_error
from tests.test_hostile_inputs_7 import SMALL  # (a small scenario: 20 s of Poisson arrivals on one H100)

runner = CliRunner()


def _scenario(tmp_path: Path, data: dict | None = None, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data or SMALL))
    return path


def _run_json(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{") :])


def test_a_billing_granularity_far_below_a_long_lifes_resolution_bills_the_life(tmp_path):
    """`pricing.billing_granularity_s: 1e-300` on a replica living years: the count of granules overflowed to inf and
    math.ceil raised OverflowError (a traceback)."""
    path = _scenario(tmp_path)
    sets = ["trace.arrivals.rate_per_s=1e-8", "trace.duration_s=4e8", "fleet.timeline_interval_s=1e9"]
    args = ["run", str(path), "--out", str(tmp_path / "run"), "--no-capacity"]
    fine = _run_json([*args, *(f"--set={s}" for s in [*sets, "pricing.billing_granularity_s=1e-300"])])
    plain = _run_json([*args, "--force", *(f"--set={s}" for s in [*sets, "pricing.billing_granularity_s=0"])])
    assert fine["billed_gpu_seconds"] == plain["billed_gpu_seconds"] > 1.8e8  # (past 1.8e8 s the count overflowed)


def test_a_range_of_large_integers_is_counted_exactly():
    """`{from: 123456789012345, to: 123456789012347}` was rounded to 12 digits: 123456789012000 three times (and the
    sweep said the user had given that value twice)."""
    assert Range.model_validate({"from": 123456789012345, "to": 123456789012347}).values() == [
        123456789012345,
        123456789012346,
        123456789012347,
    ]
    assert Range.model_validate({"from": 2**63 - 3, "to": 2**63 - 1, "step": 2}).values() == [2**63 - 3, 2**63 - 1]
    # (unchanged: whole ranges with a float end, fractional ranges)
    assert Range.model_validate({"from": 1, "to": 2.9999999999}).values() == [1, 2, 3]
    assert Range.model_validate({"from": 0.1, "to": 0.3, "step": 0.1}).values() == [0.1, 0.2, 0.3]


def test_a_sweep_over_a_range_of_large_seeds_runs_each_and_a_range_past_floats_is_refused(tmp_path):
    base = _scenario(tmp_path)
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {"base": str(base), "set": {"trace.duration_s": 2}, "cross": {"trace.seed": {"from": 10**14, "to": 10**14 + 1}}}
        )
    )
    res = runner.invoke(app, ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    assert [p["trace.seed"] for p in json.loads(res.output)] == [10**14, 10**14 + 1]
    sweep.write_text(yaml.safe_dump({"base": str(base), "cross": {"trace.seed": {"from": 0, "to": 10**400}}}))
    res = runner.invoke(app, ["sweep", str(sweep), "--out", str(tmp_path / "out2"), "--no-progress"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "must be within" in res.output, res.output
    assert not (tmp_path / "out2").exists()


def test_a_plan_over_a_scale_that_is_not_a_replica_count_names_it(tmp_path):
    """`scale: {path: engine.max_num_seqs}` with no search axes: "pick: , 1 replicas at ...", "new seeds,  x1", and a
    `replicas` column holding max_num_seqs values."""
    _scenario(tmp_path, name="base.yaml")
    plan = tmp_path / "p.yaml"
    spec = {"base": "base.yaml", "set": {"trace.duration_s": 5}, "scale": {"path": "engine.max_num_seqs", "from": 1, "to": 2}}
    plan.write_text(yaml.safe_dump(spec | {"slo": {"p99_ttft_ms": 20000}, "seeds": 1}))
    res = runner.invoke(app, ["plan", str(plan), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "pick: engine.max_num_seqs=1 at $" in res.output and "new seeds, engine.max_num_seqs=1: should meet" in res.output
    assert "replicas" not in res.output and ", ," not in res.output


def test_memory_refusals_name_what_took_the_memory(tmp_path):
    """A million batched tokens was "does not fit ...; raise tp or lower weight_bits" (the profiling run's activations
    took 42 GB, the weights 16), and 256 LoRA slots of rank 512 "the KV cache holds no block of 16 tokens" without a
    word on the 687 GB of slots."""
    path = _scenario(tmp_path)
    one_line_error(
        ["run", str(path), "--set", "engine.max_num_batched_tokens=1000000"],
        "lower engine.max_num_batched_tokens (the profiling run's 1,000,000 tokens take",
    )
    one_line_error(
        ["run", str(path), "--set", "engine.lora={max_loras: 256, max_lora_rank: 512}"],
        "holds no block of 16 tokens on 1x h100-sxm after 256 LoRA slots of rank 512 (687.2 GB; lower engine.lora.max_loras",
    )
    one_line_error(["run", str(path), "--set", "model=llama-3.1-70b"], "before any KV cache); raise tp or lower weight_bits")


def test_seeds_needed_neither_overflows_nor_divides_by_an_underflowed_mean(tmp_path):
    """`--precision 1e-300` overflowed (z s / (precision mean))^2 (OverflowError), and a price of 1e-316 $/h made the
    mean cost so small that precision x mean was 0 (ZeroDivisionError): tracebacks after every run had finished."""
    base = _scenario(tmp_path)
    sweep = tmp_path / "sw.yaml"
    body = {"base": str(base), "set": {"trace.duration_s": 3}, "seeds": 3, "cross": {"engine.max_num_seqs": [4]}}
    sweep.write_text(yaml.safe_dump(body))
    one_line_error(["sweep", str(sweep), "--precision", "1e-300"], "--precision must be in [1e-06, 1) (got 1e-300)")
    sweep.write_text(yaml.safe_dump(body | {"set": {"trace.duration_s": 3, "pricing.usd_per_gpu_hour": 1e-316}}))
    res = runner.invoke(
        app, ["sweep", str(sweep), "--out", str(tmp_path / "o"), "--no-progress", "--precision", "1e-5", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["usd_per_1k_tokens_seeds_needed"] >= 2


def test_report_writes_its_page_and_its_metrics_to_two_files(tmp_path):
    """`report RUN --html x --openmetrics x` wrote the page over the metrics (exit 0)."""
    run = tmp_path / "run"
    _run_json(["run", str(_scenario(tmp_path)), "--out", str(run), "--no-capacity", "--set", "trace.duration_s=2"])
    both = tmp_path / "x.txt"
    one_line_error(["report", str(run), "--html", str(both), "--openmetrics", str(both)], "is also --openmetrics")
    assert not both.exists()
