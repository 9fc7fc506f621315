"""`--trace FILE` replaces the scenario's trace file only: the scenario's transforms are kept, `--set trace.*`
applies after it, and the run says what was kept, set and dropped (issue 30). The same rule for sweep and plan."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app

runner = CliRunner()

SCENARIO = {
    "model": "llama-3.1-8b",
    "fleet": {"gpu": "h100-sxm"},
    "engine": {"step_time": {"kind": "constant", "prefill_s_per_token": 1e-5, "decode_step_s": 0.001}},
}
N = 100


def trace_csv(path: Path, prompt0: int, output: int) -> Path:
    """N requests, one a second from 0 s, prompts prompt0 + i tokens, `output` output tokens each."""
    i = np.arange(N)
    pd.DataFrame({"arrival_at_s": i.astype(float), "prompt_tokens": prompt0 + i, "output_tokens": output}).to_csv(
        path, index=False
    )
    return path


def from_other(r: pd.DataFrame) -> bool:
    """The requests came from other.csv (10 output tokens; own.csv's 20 clip to 1 under a small max_context)."""
    return bool(r["output_tokens"].max() == 10)


def kept_by_sampling(fraction: float, seed: int = 0) -> int:
    """How many of N requests Bernoulli thinning keeps: the `trace_sample` stream (spawn key 6) of the seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6,)))
    return int((rng.random(N) < fraction).sum())


# transform -> (the scenario's value, the --set value, what each does to the N-request trace: a check)
TRANSFORMS = {
    "start_s": (20, 50, lambda v: lambda r: len(r) == N - v),
    "end_s": (30, 60, lambda v: lambda r: len(r) == v),
    "rate_scale": (2, 4, lambda v: lambda r: len(r) == N and r["arrival_at_s"].max() == pytest.approx((N - 1) / v)),
    "sample": (0.5, 0.25, lambda v: lambda r: len(r) == kept_by_sampling(v)),
    "max_context": (
        150,
        120,
        lambda v: lambda r: r["prompt_tokens"].max() == v - 1 and (r["prompt_tokens"] + r["output_tokens"]).max() == v,
    ),
    "repeat": (2, 3, lambda v: lambda r: len(r) == N * v),
}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    trace_csv(tmp_path / "own.csv", 1000, 20)
    trace_csv(tmp_path / "other.csv", 100, 10)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def scenario_file(folder: Path, trace, name="s.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({**SCENARIO, "trace": trace}))
    return path


def run(*args):
    r = runner.invoke(app, ["run", *map(str, args), "--no-capacity", "--no-progress"])
    assert r.exit_code == 0, r.output
    return r


def requests(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "requests.parquet").sort_values("arrival_at_s", kind="stable")


@pytest.mark.parametrize("key", TRANSFORMS)
def test_trace_keeps_the_scenarios_transform(folder, key):
    own, _, check = TRANSFORMS[key]
    cfg = scenario_file(folder, {"file": "own.csv", key: own})
    r = run(cfg, "--trace", "other.csv", "--out", folder / "o")
    rows = requests(folder / "o")
    assert check(own)(rows) and from_other(rows)  # the --trace file, transformed as the scenario says
    assert f"kept from the scenario: {key} {own}" in r.stderr and "dropped: file own.csv" in r.stderr
    resolved = yaml.safe_load((folder / "o" / "config.resolved.yaml").read_text())["trace"]
    assert resolved["file"] == str(folder / "other.csv") and resolved[key] == own  # the trace block as run


@pytest.mark.parametrize("key", TRANSFORMS)
def test_set_after_trace_applies(folder, key):
    _, value, check = TRANSFORMS[key]
    cfg = scenario_file(folder, "own.csv")  # a bare path: no transforms of its own
    r = run(cfg, "--trace", "other.csv", "--set", f"trace.{key}={value}", "--out", folder / "o")
    rows = requests(folder / "o")
    assert check(value)(rows) and from_other(rows)
    assert f"from --set: {key} {value}" in r.stderr and "no transforms kept from the scenario" in r.stderr


@pytest.mark.parametrize("key", TRANSFORMS)
def test_set_wins_over_the_scenarios_transform_with_trace(folder, key):
    own, value, check = TRANSFORMS[key]
    cfg = scenario_file(folder, {"file": "own.csv", key: own})
    r = run(cfg, "--trace", "other.csv", "--set", f"trace.{key}={value}", "--out", folder / "o")
    rows = requests(folder / "o")
    assert check(value)(rows) and not check(own)(rows) and from_other(rows)
    assert f"from --set: {key} {value}" in r.stderr


@pytest.mark.parametrize("key", TRANSFORMS)
def test_set_on_a_bare_trace_path_applies(folder, key):
    """`trace: FILE` is the block {file: FILE}: --set trace.KEY gives it a transform (it was refused as 'a value')."""
    _, value, check = TRANSFORMS[key]
    cfg = scenario_file(folder, "own.csv")
    run(cfg, "--set", f"trace.{key}={value}", "--out", folder / "o")
    rows = requests(folder / "o")
    assert check(value)(rows) and not from_other(rows)


def test_the_default_scenario_with_another_trace_and_end_s(folder):
    """The issue's command: --set trace.end_s=300 is honoured, and sample 0.1 and max_context 4096 are kept."""
    repo = Path(__file__).resolve().parents[1]
    code = repo / "traces" / "azure2023_code.csv"
    args = ["run", str(repo / "configs" / "default.yaml"), "--trace", str(code), "--set", "trace.end_s=300"]
    r = runner.invoke(app, [*args, "--out", str(folder / "o"), "--no-capacity", "--json"])
    assert r.exit_code == 0, r.output
    rows = requests(folder / "o")
    assert rows["arrival_at_s"].max() < 300 and (rows["prompt_tokens"] + rows["output_tokens"]).max() <= 4096
    whole = pd.read_csv(code)
    assert (
        len(rows)
        < 0.2 * (pd.to_datetime(whole["TIMESTAMP"]) < pd.to_datetime(whole["TIMESTAMP"]).min() + pd.Timedelta(300, "s")).sum()
    )
    assert json.loads(r.stdout)["completed"] == len(rows)  # the note went to stderr: stdout is the JSON alone
    assert r.stderr.startswith("note: trace as run: azure2023_code.csv (end_s 300, sample 0.1, max_context 4096)")


def test_a_generator_block_is_replaced_and_reader_settings_dropped(folder):
    gen = {
        "arrivals": {"process": "poisson", "rate_per_s": 5},
        "prompt_tokens": {"dist": "fixed", "tokens": 3000},
        "output_tokens": {"dist": "fixed", "tokens": 5},
        "duration_s": 10,
        "max_context": 130,
    }
    r = run(scenario_file(folder, gen), "--trace", "other.csv", "--out", folder / "o")
    rows = requests(folder / "o")
    assert len(rows) == N and rows["prompt_tokens"].max() == 129  # the file, clipped by the generator's max_context
    assert "dropped: the synthetic generator" in r.stderr and "kept from the scenario: max_context 130" in r.stderr
    # a file block's reader settings describe its own file: dropped, and said so
    (folder / "az.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n")
    r = run(
        scenario_file(folder, {"file": "az.csv", "format": "azure", "sample": 0.5}), "--trace", "other.csv", "--out", folder / "p"
    )
    assert len(requests(folder / "p")) == kept_by_sampling(0.5)
    assert "its reader settings format=azure" in r.stderr


def test_html_names_the_trace_as_run(folder):
    cfg = scenario_file(folder, {"file": "own.csv", "end_s": 30})
    run(cfg, "--trace", "other.csv", "--set", "trace.rate_scale=2", "--out", folder / "o", "--html", folder / "o.html")
    assert "trace other.csv (end_s 30, rate_scale 2): 30 requests" in (folder / "o.html").read_text()
    r = runner.invoke(app, ["report", str(folder / "o"), "--html", str(folder / "again.html")])
    assert r.exit_code == 0 and "trace other.csv (end_s 30, rate_scale 2): 30 requests" in (folder / "again.html").read_text()


def test_sweep_and_plan_take_trace_with_the_same_rule(folder):
    scenario_file(folder, {"file": "own.csv", "end_s": 40}, name="base.yaml")
    (folder / "sweep.yaml").write_text("base: base.yaml\ncross:\n  trace.rate_scale: [1, 2]\n")
    r = runner.invoke(app, ["sweep", "sweep.yaml", "--trace", "other.csv", "--out", "sw", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "kept from the scenario: end_s 40" in r.stderr and "per point: trace.rate_scale" in r.stderr
    rows = pd.read_parquet(folder / "sw" / "results.parquet")
    assert rows["completed"].tolist() == [40, 40] and rows["total_input_tokens"].tolist() == [sum(range(100, 140))] * 2
    (folder / "plan.yaml").write_text(
        "base: base.yaml\nset: {trace.end_s: 40, fleet.autoscaler: {policy: fixed, replicas: 1}}\nsearch: {fleet.gpu: [h100-sxm]}\n"
        "scale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\nslo: {p99_ttft_ms: 60000}\nseeds: 1\n"
    )
    r = runner.invoke(app, ["plan", "plan.yaml", "--trace", "other.csv", "--set", "trace.end_s=20", "--out", "pl"])
    assert r.exit_code == 0, r.output
    assert "from --set: end_s 20" in r.stderr  # the command line wins over the plan's own set:
    runs = pd.read_parquet(folder / "pl" / "runs.parquet")
    assert (runs["completed"] == 20).all() and (runs["total_input_tokens"] == sum(range(100, 120))).all()


def test_plan_refuses_a_set_that_its_search_would_overwrite(folder):
    scenario_file(folder, "own.csv", name="base.yaml")
    (folder / "plan.yaml").write_text(
        "base: base.yaml\nsearch: {fleet.gpu: [h100-sxm]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\n"
        "slo: {p99_ttft_ms: 60000}\n"
    )
    for item, axis in (("fleet.gpu=a100-80gb", "a search axis"), ("fleet.autoscaler.replicas=3", "the scale axis")):
        r = runner.invoke(app, ["plan", "plan.yaml", "--set", item, "--out", "pl"])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and axis in r.output
        assert not (folder / "pl").exists()
