import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.workload import load_trace

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_json_keys_and_plot(tmp_path):
    png = tmp_path / "conv.png"
    r = run("trace", "inspect", REPO / "traces" / "azure2023_conv.csv", "--json", "--plot", png)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    for key in (
        "requests",
        "duration_s",
        "mean_rate_per_s",
        "iat_cv",
        "peak_to_mean_per_min",
        "prompt_tokens_mean",
        "prompt_tokens_p50",
        "prompt_tokens_p99",
        "output_tokens_mean",
        "output_tokens_p50",
        "output_tokens_p99",
    ):
        assert key in data
    assert round(data["mean_rate_per_s"], 2) == 5.53 and round(data["iat_cv"], 2) == 1.09
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gen_is_deterministic_and_inspectable(tmp_path):
    args = [
        "trace",
        "gen",
        "--process",
        "gamma",
        "--rate",
        "4",
        "--cv",
        "3",
        "--duration-s",
        "2000",
        "--prompt",
        "uniform:10:20",
        "--output",
        "fixed:7",
        "--seed",
        "5",
    ]
    assert run(*args, "--out", tmp_path / "a.csv").exit_code == 0
    assert run(*args, "--out", tmp_path / "b.csv").exit_code == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    f = load_trace(tmp_path / "a.csv")
    assert set(f["output_tokens"]) == {7}


def test_gen_from_spec_file_with_spikes(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "arrivals: {process: spikes, rate_per_s: 2, spikes: [{at_s: 10, duration_s: 5, multiplier: 10}]}\n"
        "prompt_tokens: {dist: empirical, trace: " + str(REPO / "traces" / "azure2023_code.csv") + ", column: prompt_tokens}\n"
        "output_tokens: {dist: lognormal, mean: 100, cv: 1}\nduration_s: 60\nseed: 1\n"
    )
    r = run("trace", "gen", "--spec", tmp_path / "spec.yaml", "--out", tmp_path / "s.parquet")
    assert r.exit_code == 0, r.output
    assert len(load_trace(tmp_path / "s.parquet")) > 100


def test_convert_applies_transforms(tmp_path):
    out = tmp_path / "w.parquet"
    r = run(
        "trace",
        "convert",
        REPO / "traces" / "azure2023_conv.csv",
        out,
        "--end-s",
        "600",
        "--rate-scale",
        "2",
        "--max-context",
        "2048",
    )
    assert r.exit_code == 0, r.output
    f = load_trace(out)
    assert f["arrival_at_s"].iloc[-1] < 300
    assert (f["prompt_tokens"] + f["output_tokens"]).max() <= 2048


def test_merge_command(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run("trace", "gen", "--rate", "1", "--requests", "5", "--out", a)
    run("trace", "gen", "--rate", "1", "--requests", "3", "--seed", "2", "--out", b)
    r = run("trace", "merge", tmp_path / "m.csv", f"{a}=interactive", f"{b}=batch")
    assert r.exit_code == 0, r.output
    assert sorted(load_trace(tmp_path / "m.csv")["klass"]) == ["batch"] * 3 + ["interactive"] * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "inspect", "nope.csv"], "nope.csv: no such trace file"),
        (
            ["trace", "inspect", REPO / "traces" / "azure2023_conv.csv", "--format", "vidur"],
            "missing column 'arrived_at' for format vidur",
        ),
        (
            ["trace", "inspect", REPO / "traces" / "azure2023_conv.csv", "--columns", "oops"],
            "--columns must be CANONICAL=SOURCE pairs",
        ),
        (["trace", "gen", "--out", "x.csv", "--rate", "1"], "give exactly one of duration_s and n_requests"),
        (["trace", "gen", "--out", "x.txt", "--rate", "1", "--requests", "3"], "output must end in .csv or .parquet"),
        (["trace", "gen", "--out", "x.csv", "--process", "spikes", "--rate", "1", "--requests", "3"], "spikes need --spec"),
        (
            ["trace", "gen", "--out", "x.csv", "--rate", "-1", "--requests", "3"],
            "rate_per_s: Input should be greater than 0 (got -1.0)",
        ),
    ],
)
def test_trace_bad_input_is_one_line_exit_2(args, message):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and message in r.stderr


def test_malformed_file_keeps_output_absent(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,-2,1\n")
    r = run("trace", "convert", bad, tmp_path / "out.csv")
    assert r.exit_code == 2 and "bad.csv line 3: prompt_tokens must be >= 1 (got -2)" in r.stderr
    assert not (tmp_path / "out.csv").exists()


def test_gen_prints_the_per_minute_burstiness(tmp_path):
    """`trace gen` reports the per-minute peak/mean that `trace inspect` computes: on/off periods make
    minute-scale bursts, a Gamma renewal process of the same CV mostly does not."""
    figures = {}
    for name, process in (
        ("gamma", ["--process", "gamma", "--rate", "5", "--cv", "3"]),
        ("onoff", ["--process", "onoff", "--rate", "10", "--mean-on-s", "120", "--mean-off-s", "120"]),
    ):
        out = tmp_path / f"{name}.csv"
        r = run(
            "trace",
            "gen",
            *process,
            "--duration-s",
            "3600",
            "--prompt",
            "fixed:100",
            "--output",
            "fixed:100",
            "--seed",
            "1",
            "--out",
            out,
        )
        assert r.exit_code == 0, r.output
        printed = float(r.stdout.rsplit("per-minute peak/mean ", 1)[1].split()[0])
        inspected = json.loads(run("trace", "inspect", out, "--json").stdout)["peak_to_mean_per_min"]
        assert printed == pytest.approx(inspected, rel=0.01)
        figures[name] = inspected
    assert figures["onoff"] > 2 * figures["gamma"]


def test_convert_refuses_a_negative_seed(tmp_path):
    res = runner.invoke(
        app,
        [
            "trace",
            "convert",
            str(Path(__file__).resolve().parents[1] / "traces" / "azure2023_conv.csv"),
            str(tmp_path / "o.csv"),
            "--sample",
            "0.5",
            "--seed",
            "-1",
        ],
    )
    assert res.exit_code == 2 and res.output.strip() == "error: --seed must be >= 0 (got -1)", res.output
    assert not (tmp_path / "o.csv").exists()
