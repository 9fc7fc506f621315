"""Hostile inputs, round 16: a resumed sweep after a file it reads was edited; `run --out` into a user's folder of
run-file names, under a marker fleetsim did not write, or through a symbolic link; transforms that stretch a trace
past any horizon; run records edited past what a run writes; GPU failures faster than a cold start; a user GPU
reporting more memory than it has; a generator's rate past any service's; a sweep value written two ways; `import`
of a negative token budget."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tests.test_hostile_inputs_15 import _one_line_error as one_line_error
from tests.test_hostile_inputs_15 import cli

SMALL = (
    "model: llama-3.1-8b\n"
    "trace: {arrivals: {process: poisson, rate_per_s: 2}, n_requests: 30, prompt_tokens: {dist: fixed, tokens: 200}, "
    "output_tokens: {dist: fixed, tokens: 20}}\n"
    "fleet: {gpu: h100-sxm, tp: 1}\n"
)


def test_a_resumed_sweep_runs_again_what_an_edited_trace_file_changed(tmp_path):
    """A stored point is keyed by the scenario and the content of every file it names: a trace rewritten between two
    runs into the same folder is simulated anew, as into a fresh folder."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_at_s,prompt_tokens,output_tokens\n0.0,100,10\n1.0,200,20\n2.0,300,30\n")
    (tmp_path / "base.yaml").write_text("model: llama-3.1-8b\ntrace: t.csv\nfleet: {gpu: h100-sxm, tp: 1}\n")
    (tmp_path / "sw.yaml").write_text("name: sw\nbase: base.yaml\ncross: {engine.max_num_seqs: [8, 16]}\n")
    out = tmp_path / "o"
    code, text = cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(out), "--json")
    assert code == 0, text
    code, text = cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(out))
    assert "2 resumed" in text
    trace.write_text("arrival_at_s,prompt_tokens,output_tokens\n" + "".join(f"{i * 0.05:.2f},4000,50\n" for i in range(40)))
    code, text = cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(out))
    assert code == 0 and "resumed from" not in text, text
    code, fresh = cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(tmp_path / "fresh"), "--json")
    code, again = cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(out), "--json")
    assert again == fresh


def test_run_out_keeps_a_users_folder_of_run_file_names_and_a_forged_marker(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "meta.json").write_text('{"my": "notes"}')
    line = one_line_error(*cli("run", str(tmp_path / "s.yaml"), "--out", str(mine), "--no-capacity"))
    assert "is not a fleetsim run folder" in line and (mine / "meta.json").read_text() == '{"my": "notes"}'
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / ".fleetsim-run").write_text("{}")
    (forged / "requests.parquet").write_text("precious")
    one_line_error(*cli("run", str(tmp_path / "s.yaml"), "--out", str(forged), "--no-capacity"))
    assert (forged / "requests.parquet").read_text() == "precious"
    # a run's own folder is still replaced, and --force replaces the others
    code, text = cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "r"), "--no-capacity")
    assert code == 0, text
    code, text = cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "r"), "--no-capacity", "--seed", "3")
    assert code == 0, text
    code, text = cli("run", str(tmp_path / "s.yaml"), "--out", str(mine), "--no-capacity", "--force")
    assert code == 0 and (mine / ".fleetsim-run").is_file(), text


def test_run_out_through_a_symbolic_link_replaces_the_folder_it_names(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    real = tmp_path / "realrun"
    assert cli("run", str(tmp_path / "s.yaml"), "--out", str(real), "--no-capacity")[0] == 0
    first = (real / "summary.json").read_text()
    (tmp_path / "rl").symlink_to("realrun")
    code, text = cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "rl"), "--no-capacity", "--seed", "5")
    assert code == 0, text
    assert (tmp_path / "rl").is_symlink() and os.readlink(tmp_path / "rl") == "realrun"
    assert (real / "summary.json").read_text() != first  # (the new run, in the folder the link names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["realrun", "rl", "s.yaml"]  # (no .rl.old left behind)


def test_transforms_that_stretch_a_trace_past_any_horizon_are_refused_before_simulating(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n3000,10,5\n3000000,10,5\n")
    (tmp_path / "s.yaml").write_text("model: llama-3.1-8b\ntrace: t.csv\nfleet: {gpu: h100-sxm, tp: 1}\n")
    base = ("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--no-capacity")
    line = one_line_error(*cli(*base, "--set", "trace.rate_scale=0.001", "--set", "trace.repeat=1000"))
    assert "repeat 1,000 puts the trace's arrival_at_s at" in line and "past the 1e+12 s" in line
    line = one_line_error(*cli(*base, "--set", "trace.rate_scale=1e-6"))
    assert "rate scale 1e-06 puts the trace's arrival_at_s at 3e+12 s" in line
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run16")
    (tmp / "s.yaml").write_text(SMALL)
    code, text = cli("run", str(tmp / "s.yaml"), "--out", str(tmp / "run"), "--no-capacity")
    assert code == 0, text
    return tmp / "run"


@pytest.mark.parametrize(
    ("table", "edit", "says"),
    [
        ("requests", lambda d: d.assign(output_tokens=10**9), "fewer than the 29,999,999,970 tokens the completed requests"),
        ("requests", lambda d: d.assign(completed_at_s=d.completed_at_s + 1e9), "a request completes while the run's replicas are up"),
        ("itl", lambda d: d.assign(weight=np.where(d.index == 0, 10**15, d.weight)), "more than the 600 tokens the requests hold"),
    ],
)  # fmt: skip
def test_records_edited_past_what_a_run_writes_are_refused(run_folder, tmp_path, table, edit, says):
    folder = tmp_path / "run"
    folder.mkdir()
    for f in run_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    path = folder / f"{table}.parquet"
    edit(pd.read_parquet(path)).to_parquet(path, index=False)
    line = one_line_error(*cli("report", str(folder)))
    assert says in line and "was the folder edited?" in line


def test_gpu_failures_faster_than_a_cold_start_are_refused_naming_the_field(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    line = one_line_error(
        *cli(
            "run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--no-capacity",
            "--set", "fleet.capacity={failures: {gpu_mtbf_hours: 0.01}}",
            "--set", "fleet.lifecycle={start: cold, cold_start_s: 600}",
        )
    )  # fmt: skip
    assert "fleet.capacity.failures.gpu_mtbf_hours: 0.01 h fails a replica of 1 GPU every 36 s" in line
    assert "cold start (600 s expected): 5.8e-08 of its replicas would come up" in line
    code, text = cli(
        "run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--no-capacity",
        "--set", "fleet.capacity={failures: {gpu_mtbf_hours: 0.01}}", "--set", "fleet.lifecycle={start: cold, cold_start_s: 120}",
    )  # fmt: skip
    assert code == 0, text  # (a few of them come up, 4%: it runs)


def test_a_user_gpu_reporting_more_memory_than_it_has_is_refused(tmp_path):
    (tmp_path / "g.yaml").write_text(
        "mygpu:\n  bf16_tflops: 100\n  interconnect_gb_per_s: 600\n  hbm_gb: 1\n  hbm_bw_gb_per_s: 2000\n"
        "  device_memory_bytes: 900000000000\n  usd_per_gpu_hour: 1\n"
    )
    args = ("roofline", "--model", "llama-3.2-1b", "--gpu", "mygpu", "--tp", "1", "--gpu-catalog", str(tmp_path / "g.yaml"))
    line = one_line_error(*cli(*args))
    assert "device_memory_bytes 900,000,000,000 is more than hbm_gb 1 GiB" in line


def test_a_generated_rate_past_any_service_is_refused(tmp_path):
    out = tmp_path / "t.csv"
    args = ("trace", "gen", "--process", "poisson", "--rate", "1e300", "--requests", "10")
    line = one_line_error(*cli(*args, "--prompt", "fixed:100", "--output", "fixed:10", "--out", str(out)))
    assert "rate_per_s: Input should be less than or equal to 10000000" in line and not out.exists()


@pytest.mark.parametrize(("values", "twice"), [("[1, 1.0]", "1.0"), ("[0.0, -0.0]", "-0.0"), ("[{a: 1}, {a: 1.0}]", None)])
def test_a_sweep_value_written_two_ways_is_given_twice(tmp_path, values, twice):
    (tmp_path / "s.yaml").write_text(SMALL)
    (tmp_path / "sw.yaml").write_text(f"name: d\nbase: s.yaml\ncross: {{pricing.usd_per_gpu_hour: {values}}}\n")
    line = one_line_error(*cli("sweep", str(tmp_path / "sw.yaml"), "--out", str(tmp_path / "o")))
    assert "is given twice" in line and (twice is None or f"the value {twice} is given twice" in line)


def test_import_of_a_negative_token_budget_names_the_option_and_file(tmp_path):
    for flag in ("--max-num-batched-tokens -1", "--max-num-seqs 0"):
        (tmp_path / "serve.sh").write_text(f"vllm serve meta-llama/Llama-3.1-8B-Instruct {flag}\n")
        line = one_line_error(*cli("import", str(tmp_path / "serve.sh"), "--gpu", "h100-sxm"))
        option, value = flag.split()
        field = "engine." + option[2:].replace("-", "_")
        assert f"serve.sh: {option}: {field}: Input should be greater than or equal to 1 (got {value})" in line


def test_a_nul_byte_in_yaml_and_a_step_of_ages_read_in_short_lines(tmp_path):
    (tmp_path / "n.yaml").write_bytes(b"model: llama-3.1-8b\nfleet: {gpu: h100-sxm, tp: 1}\n\x00")
    line = one_line_error(*cli("run", str(tmp_path / "n.yaml"), "--out", str(tmp_path / "o")))
    assert "n.yaml line 3: invalid YAML (character #x0000 is not allowed)" in line
    (tmp_path / "s.yaml").write_text(SMALL)
    line = one_line_error(*cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--set", "roofline.mfu=1e-300"))
    assert "s (effective " in line and "e+" in line.split(" takes ")[1].split(" s ")[0] and len(line) < 400


def test_an_empty_trace_path_is_named_as_empty(tmp_path):
    (tmp_path / "s.yaml").write_text('model: llama-3.1-8b\ntrace: ""\nfleet: {gpu: h100-sxm, tp: 1}\n')
    line = one_line_error(*cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")))
    assert "trace: String should have at least 1 character (got '')" in line
    (tmp_path / "s.yaml").write_text('model: llama-3.1-8b\ntrace: {file: ""}\nfleet: {gpu: h100-sxm, tp: 1}\n')
    line = one_line_error(*cli("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")))
    assert "at least 1 character" in line


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (("--speculative", "4:0.5:"), "--speculative: DRAFT after the second ':' is empty"),
        (("--compare-api", ""), "--compare-api: an API price sheet's name is empty"),
    ],
)
def test_roofline_options_given_empty_are_not_their_defaults(option, says):
    line = one_line_error(*cli("roofline", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--tp", "1", *option))
    assert says in line


def test_a_price_given_as_minus_zero_bills_zero_unsigned(tmp_path):
    import json

    (tmp_path / "s.yaml").write_text(SMALL)
    out = tmp_path / "o"
    code, text = cli(
        "run", str(tmp_path / "s.yaml"), "--out", str(out), "--no-capacity", "--set", "pricing.usd_per_gpu_hour=-0.0"
    )
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost_usd"] == 0.0 and str(summary["cost_usd"]) == "0.0"
    assert "-0" not in json.dumps(summary.get("cost_by_capacity"))
