"""Hostile inputs from a ninth fuzzing pass over the files fleetsim reads (traces, run logs, calibration tables): arrivals
5e-324 s apart (a rate of inf printed, a plan's screen crashed on it), run logs timed in picoseconds (errors of 1e15 %
or +inf%). Each now ends in one line naming the file, the rule and the value, exit code 2, or in a figure left out
where it is no number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import one_line_error
from tests.test_hostile_inputs_8 import LLAMA  # (a Llama-3.1-8B config.json)

runner = CliRunner()


def _scenario(tmp_path: Path) -> Path:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 1}}))
    return scenario


def _log(tmp_path: Path, rows: list[dict[str, float]]) -> Path:
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps({"input_toks": 100, "output_toks": 10} | r) + "\n" for r in rows))
    return tmp_path


# --- run logs ----------------------------------------------------------------------------------------------------
def test_a_run_log_timed_under_a_millisecond_is_refused(tmp_path):
    """Latencies of 2e-12 s passed the "every latency is 0" check: validate printed errors of +1e15 % and calibrate
    fitted mfu = mbu = 1 to them."""
    rows = [{"queued_ts": t, "first_token_ts": t + 1e-12, "last_token_ts": t + 2e-12} for t in (0.0, 1.0, 2.0)]
    log, scenario = _log(tmp_path, rows), _scenario(tmp_path)
    one_line_error(["validate", str(log), "--scenario", str(scenario)], "every request's latency is under 1 ms")
    rows = [{"queued_ts": t, "first_token_ts": t + 0.5, "last_token_ts": t + 0.5 + 1e-9} for t in (0.0, 1.0, 2.0)]
    one_line_error(["validate", str(_log(tmp_path, rows)), "--scenario", str(scenario)], "no request's tokens are spread in time")


def test_a_real_figure_too_small_to_divide_by_has_no_error_not_inf(tmp_path):
    """Most requests' first tokens 5e-324 s after arrival: the p50 and p90 errors printed as +inf% (sim / 5e-324
    overflows). (A log whose requests all last that long is refused: its tokens come faster than any engine streams.)"""
    rows = [{"queued_ts": 0.0, "first_token_ts": 5e-324, "last_token_ts": 1.0}] * 20
    rows.append({"queued_ts": 10.0, "first_token_ts": 10.5, "last_token_ts": 12.0})
    res = runner.invoke(app, ["validate", str(_log(tmp_path, rows)), "--scenario", str(_scenario(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "inf" not in res.output.lower() and "E2E    p99" in res.output


# --- traces -----------------------------------------------------------------------------------------------------
def _tiny_span_trace(tmp_path: Path) -> Path:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_at_s,prompt_tokens,output_tokens\n" + "0,200,20\n" * 5 + "5e-324,200,20\n" * 5)
    return trace


def test_arrivals_a_subnormal_apart_have_no_rate_not_inf(tmp_path):
    """trace inspect printed mean_rate_per_s inf (10 requests over 5e-324 s)."""
    res = runner.invoke(app, ["trace", "inspect", str(_tiny_span_trace(tmp_path))])
    assert res.exit_code == 0 and "inf" not in res.output, res.output
    assert (
        json.loads(runner.invoke(app, ["trace", "inspect", "--json", str(tmp_path / "t.csv")]).output)["mean_rate_per_s"] is None
    )


def test_a_plan_over_a_trace_of_no_span_is_not_screened_on_an_infinite_rate(tmp_path):
    """The plan's capacity screen divided the trace's tokens by a span of 5e-324 s: OverflowError in math.ceil(inf)."""
    _tiny_span_trace(tmp_path)
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"model": "llama-3.1-8b", "trace": {"file": "t.csv"}, "fleet": {"gpu": "h100-sxm", "tp": 1}})
    )
    plan = tmp_path / "p.yaml"
    scale = {"path": "fleet.autoscaler.replicas", "from": 1, "to": 2}
    plan.write_text(yaml.safe_dump({"base": "base.yaml", "scale": scale, "slo": {"p99_ttft_ms": 20000}, "seeds": 1}))
    res = runner.invoke(app, ["plan", str(plan), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output


# --- calibration tables ------------------------------------------------------------------------------------------
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KERNELS = Path(__file__).resolve().parents[1] / "benchmarks" / "kernels" / "rtx4090_llama-3.1-8b_tp1"
STEPS = Path(__file__).resolve().parents[1] / "benchmarks" / "steptimes" / "aisimulate-vllm0.24_h100-sxm_llama-3.1-8b_tp1.csv"


def _kernels(tmp_path: Path, file: str, edit) -> Path:
    folder = tmp_path / "k"
    shutil.copytree(KERNELS, folder)
    lines = (folder / file).read_text().splitlines()
    (folder / file).write_text("\n".join(edit(lines)) + "\n")
    return folder


def test_a_calibration_column_named_twice_is_refused(tmp_path):
    """`time_us, time_us` (stripped: one name twice) made pandas hand a table where a column was meant: a traceback;
    `total_ms,total_ms` silently read the first."""
    folder = _kernels(tmp_path, "attention.csv", lambda ls: [ls[0] + ", time_us", *(r + ",1" for r in ls[1:])])
    one_line_error(["calibrate", str(folder), "--model", "llama-3.1-8b", "--gpu", "rtx-4090"], "'time_us' is named twice")
    lines = STEPS.read_text().splitlines()
    steps = tmp_path / "s.csv"
    steps.write_text("\n".join([lines[0] + ",total_ms", *(r + ",5" for r in lines[1:])]) + "\n")
    one_line_error(["calibrate", str(steps), "--model", "llama-3.1-8b", "--gpu", "h100-sxm"], "'total_ms' is named twice")


def test_a_kernel_operator_missing_from_the_grid_is_named(tmp_path):
    """One stray operator row (a misspelt name) dropped every other token count: the error said "2 distinct shapes for 4
    free parameters", naming neither the row nor the operator."""
    folder = _kernels(tmp_path, "dense.csv", lambda ls: [*ls, "qkv_projj,1,5"])
    one_line_error(
        ["calibrate", str(folder), "--model", "llama-3.1-8b", "--gpu", "rtx-4090"],
        "operator 'qkv_projj' has no row at tokens = 8",
    )


@pytest.mark.parametrize("name", ["timeseries.csv", "meta.json"])
def test_a_run_folders_side_file_that_is_a_folder_is_refused(tmp_path, name):
    """A folder named timeseries.csv was passed over: validate compared no time series and said nothing."""
    log = _log(tmp_path, [{"queued_ts": t, "first_token_ts": t + 0.1, "last_token_ts": t + 1.0} for t in (0.0, 1.0, 2.0)])
    (log / name).mkdir()
    one_line_error(["validate", str(log), "--scenario", str(_scenario(tmp_path))], f"{name}: is a folder")


# --- model config.json ---------------------------------------------------------------------------------------------
QWEN_MOE = {
    "hidden_size": 2048,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "vocab_size": 151936,
}


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (
            LLAMA | {"quantization_config": {"quant_method": "gptq", "bits": 1000}},
            "'quantization_config.bits' must be bits per weight",
        ),
        (
            LLAMA
            | {
                "quantization_config": {
                    "quant_method": "compressed-tensors",
                    "config_groups": {"g": {"weights": {"num_bits": 99}}},
                }
            },
            "num_bits' must be bits per weight",
        ),
        (QWEN_MOE | {"first_k_dense_replace": 3}, "missing required field 'intermediate_size' (the first 3 layers"),
    ],
)
def test_a_config_jsons_quantization_and_dense_layers_are_checked(tmp_path, config, says):
    """A `bits` of 1000 weighed each weight at 1000 bits; an MoE config's leading dense layers without an
    intermediate_size were counted with MLPs of 0 parameters and 0 FLOPs."""
    model = tmp_path / "config.json"
    model.write_text(json.dumps(config))
    one_line_error(["roofline", "--model", str(model), "--gpu", "h100-sxm"], says)


# --- Prometheus answers ------------------------------------------------------------------------------------------------
def test_a_prometheus_series_giving_one_time_twice_is_refused(tmp_path):
    """Every sample of a series stamped at one time: their rates were added up into one window (a curve of 120 samples
    read as one burst) and a spec written."""
    prom = CONFIGS / "cluster" / "prometheus"
    answer = json.loads((prom / "requests.json").read_text())
    values = answer["data"]["result"][0]["values"]
    for pair in values:
        pair[0] = values[0][0]
    requests = tmp_path / "r.json"
    requests.write_text(json.dumps(answer))
    one_line_error(
        ["trace", "from-metrics", "--requests", str(requests), "--prompt-buckets", str(prom / "prompt_buckets.json"),
         "--output-buckets", str(prom / "output_buckets.json"), "--out", str(tmp_path / "spec.yaml")],
        "is given twice in one series",
    )  # fmt: skip
    assert not (tmp_path / "spec.yaml").exists()
