"""`fleetsim sweep`: points, seeds, resuming, worker deaths, executors, statistics, errors."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.studies.sweep import load_sweep, run_one, run_sweep, seed_stats

runner = CliRunner()

BASE = """\
model: llama-3.1-8b
fleet: {gpu: a100-80gb, tp: 1}
engine:
  max_num_seqs: 4
  step_time: {kind: constant, prefill_s_per_token: 0.0002, decode_step_s: 0.02}
trace:
  arrivals: {process: poisson, rate_per_s: 3}
  n_requests: 60
  prompt_tokens: {dist: uniform, low: 50, high: 400}
  output_tokens: {dist: uniform, low: 10, high: 60}
"""

SWEEP = """\
name: t
base: base.yaml
cross:
  engine.max_num_seqs: [2, 8]
zip:
  fleet.autoscaler: [{policy: fixed, replicas: 1}, {policy: fixed, replicas: 2}]
  engine.max_num_batched_tokens: {from: 512, to: 1024, step: 512}
seeds: 3
"""


def make(tmp_path, sweep=SWEEP, base=BASE):
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "sweep.yaml").write_text(sweep)
    return load_sweep(tmp_path / "sweep.yaml")


def stable(rows):
    return rows.drop(columns=["wall_s"])


def test_points_are_the_cross_product_times_the_zip_rows(tmp_path):
    sw = make(tmp_path)
    assert sw.axes == ["engine.max_num_seqs", "fleet.autoscaler", "engine.max_num_batched_tokens"]
    assert [p.values["engine.max_num_seqs"] for p in sw.points] == [2, 2, 8, 8]
    assert [p.values["engine.max_num_batched_tokens"] for p in sw.points] == [512, 1024, 512, 1024]
    assert [p.values["fleet.autoscaler"]["replicas"] for p in sw.points] == [1, 2, 1, 2]
    assert sw.seeds == [0, 1, 2]


def test_rows_per_point_and_seed_and_the_same_rows_for_any_worker_count(tmp_path):
    sw = make(tmp_path)
    one = run_sweep(sw, tmp_path / "one", workers=1)
    three = run_sweep(sw, tmp_path / "three", workers=3)
    assert len(one) == 4 * 3 and one["error"].isna().all()
    assert one[["point", "seed"]].values.tolist() == [[p, s] for p in range(4) for s in range(3)]
    pd.testing.assert_frame_equal(stable(one), stable(three))
    assert (one["completed"] == 60).all()
    on_disk = pd.read_parquet(tmp_path / "one" / "results.parquet")
    pd.testing.assert_frame_equal(stable(on_disk), stable(one))
    # each row is the run itself: the same scenario and seed through `simulate` directly
    from sim.run.simulate import simulate
    from sim.scenario.config import parse_config

    direct = simulate(parse_config(sw.scenario_raw(sw.points[3], 2), base_dir=tmp_path), base_dir=tmp_path).summary()
    row = one[(one["point"] == 3) & (one["seed"] == 2)].iloc[0]
    assert row["p99_ttft_ms"] == direct["p99_ttft_ms"] and row["cost_usd"] == direct["cost_usd"]


def test_a_dask_cluster_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    sw = make(tmp_path)
    local = run_sweep(sw, tmp_path / "local", workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = run_sweep(sw, tmp_path / "dask", scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(stable(local), stable(dask))


def test_an_interrupted_sweep_computes_only_what_is_missing(tmp_path):
    sw = make(tmp_path)
    first = run_sweep(sw, tmp_path / "o")
    lost = sorted((tmp_path / "o" / "points").glob("*.parquet"))[:2]
    for f in lost:
        f.unlink()
    calls = []

    def counting(raw, base_dir, row, out_file):
        calls.append(Path(out_file).name)
        return run_one(raw, base_dir, row, out_file)

    again = run_sweep(sw, tmp_path / "o", task=counting)
    assert sorted(calls) == sorted(f.name for f in lost)
    pd.testing.assert_frame_equal(stable(first), stable(again))
    # an edited base is a different run: nothing stale is reused
    (tmp_path / "base.yaml").write_text(BASE.replace("rate_per_s: 3", "rate_per_s: 4"))
    calls.clear()
    run_sweep(load_sweep(tmp_path / "sweep.yaml"), tmp_path / "o", task=counting)
    assert len(calls) == 12


def test_an_interrupted_rerun_of_an_edited_sweep_leaves_no_results_that_look_complete(tmp_path):
    """The earlier run's results.parquet and stats.parquet stayed beside the edited sweep's first new points when its
    rerun was interrupted: a finished-looking sweep of the old settings."""
    run_sweep(make(tmp_path), tmp_path / "o")
    assert (tmp_path / "o" / "results.parquet").is_file()
    (tmp_path / "base.yaml").write_text(BASE.replace("rate_per_s: 3", "rate_per_s: 4"))
    done = []

    def interrupted(raw, base_dir, row, out_file):
        if done:
            raise KeyboardInterrupt
        done.append(run_one(raw, base_dir, row, out_file))
        return done[-1]

    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(tmp_path / "sweep.yaml"), tmp_path / "o", task=interrupted)
    assert not (tmp_path / "o" / "results.parquet").exists() and not (tmp_path / "o" / "stats.parquet").exists()
    assert len(run_sweep(load_sweep(tmp_path / "sweep.yaml"), tmp_path / "o")) == 12  # the rerun finishes it


def dies_once(raw, base_dir, row, out_file):
    marker = Path(out_file).parent.parent / f"died-{row['run_id']}"
    if row["point"] == 1 and row["seed"] == 0 and not marker.exists():
        marker.touch()
        os._exit(3)
    return run_one(raw, base_dir, row, out_file)


def always_dies(raw, base_dir, row, out_file):
    if row["point"] == 1:
        os._exit(3)
    return run_one(raw, base_dir, row, out_file)


def test_a_worker_that_dies_loses_only_its_run_which_is_retried(tmp_path):
    sw = make(tmp_path)
    reference = run_sweep(sw, tmp_path / "ref", workers=1)
    rows = run_sweep(sw, tmp_path / "o", workers=2, task=dies_once)
    assert len(list((tmp_path / "o").glob("died-*"))) == 1
    pd.testing.assert_frame_equal(stable(reference), stable(rows))


def test_a_run_that_always_kills_its_worker_is_recorded_as_an_error(tmp_path):
    sw = make(tmp_path)
    rows = run_sweep(sw, tmp_path / "o", workers=2, task=always_dies)
    bad = rows[rows["point"] == 1]
    assert bad["error"].str.startswith("worker died 3 times").all()
    assert rows[rows["point"] != 1]["error"].isna().all() and len(rows) == 12


def test_a_point_that_cannot_run_is_a_row_with_its_reason(tmp_path):
    sweep = "base: base.yaml\ncross:\n  model: [llama-3.1-8b, llama-2-70b]\nseeds: 2\n"
    sw = make(tmp_path, sweep=sweep)
    rows = run_sweep(sw, tmp_path / "o")
    ok, bad = rows[rows["point"] == 0], rows[rows["point"] == 1]
    assert ok["error"].isna().all() and len(bad) == 2
    assert bad["error"].str.contains("does not fit on 1x a100-80gb").all() and bad["p99_ttft_ms"].isna().all()
    stats = seed_stats(rows, sw.axes)
    assert stats["errors"].tolist() == [0, 2] and np.isnan(stats.loc[1, "p99_ttft_ms_mean"])


def test_seed_statistics_by_hand():
    x = np.array([100.0, 110.0, 90.0, 105.0, 95.0])
    rows = pd.DataFrame(
        {
            "point": 0,
            "a": "x",
            "seed": range(5),
            "error": None,
            "p99_ttft_ms": x,
            "p99_tpot_ms": 7.0,
            "usd_per_1k_tokens": x / 1e5,
        }
    )
    s = seed_stats(rows, ["a"], precision=0.05).iloc[0]
    assert s["p99_ttft_ms_mean"] == pytest.approx(100.0)
    assert s["p99_ttft_ms_ci_low"] < 100.0 < s["p99_ttft_ms_ci_high"]
    assert s["p99_ttft_ms_ci_low"] >= 90.0 and s["p99_ttft_ms_ci_high"] <= 110.0
    # seeds for a 5% half-width: (1.96 x sd / (0.05 x mean))^2 with sd = 7.906
    assert s["p99_ttft_ms_seeds_needed"] == np.ceil((1.959964 * x.std(ddof=1) / 5.0) ** 2)
    assert s["p99_tpot_ms_ci_low"] == s["p99_tpot_ms_ci_high"] == 7.0 and s["p99_tpot_ms_seeds_needed"] == 2
    assert np.isnan(s["throughput_utilization_mean"])  # not in the rows
    again = seed_stats(rows, ["a"], precision=0.05).iloc[0]
    assert again["p99_ttft_ms_ci_low"] == s["p99_ttft_ms_ci_low"]  # a fixed generator: the same interval


def test_the_bootstrap_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _trial in range(200):
        x = rng.normal(50.0, 5.0, 20)
        rows = pd.DataFrame({"point": 0, "seed": range(20), "error": None, "p99_ttft_ms": x})
        s = seed_stats(rows, []).iloc[0]
        hits += s["p99_ttft_ms_ci_low"] <= 50.0 <= s["p99_ttft_ms_ci_high"]
    assert 0.88 <= hits / 200 <= 0.99


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            "base: base.yaml\ncross:\n  engine.max_num_seq: [1, 2]\n",
            "point 0 (engine.max_num_seq=1): engine.max_num_seq: unknown key",
        ),
        ("base: base.yaml\nzip:\n  engine.max_num_seqs: [1, 2]\n  engine.block_size: [16]\n", "zip axes must have equal lengths"),
        ("base: base.yaml\ncross:\n  seed: [1, 2]\n", "seed is not an axis"),
        (
            "base: base.yaml\ncross:\n  fleet.autoscaler: [{policy: fixed, replicas: 1}]\n  fleet.autoscaler.replicas: [1, 2]\n",
            "the axes fleet.autoscaler (cross) and fleet.autoscaler.replicas (cross) overlap",
        ),
        (
            "base: base.yaml\nset: {engine.max_num_seqs: 4}\ncross:\n  engine.max_num_seqs: [2, 8]\n",
            "engine.max_num_seqs is both in set and in cross",
        ),
        ("base: base.yaml\nzip:\n  engine.max_num_seqs: [2, 2]\n  engine.block_size: [16, 16]\n", "zip row 1 repeats row 0"),
        ("base: base.yaml\ncross:\n  fleet..gpu: [a]\n", "cross.fleet..gpu: a path is field names joined by dots"),
        ("base: base.yaml\ncross:\n  model.x: [1]\n", "model is a value ('llama-3.1-8b'), not a block"),
        ("base: base.yaml\ncross:\n  fleet.tp: {from: 1, to: 1e9}\n", "cross.fleet.tp: more than 10,000 values"),
        ("base: base.yaml\ncross:\n  engine.max_num_seqs: {from: 4, to: 1}\n", "to must be >= from"),
        ("base: base.yaml\nseeds: 0\n", "seeds"),
        ("base: missing.yaml\n", "missing.yaml"),
        ("base: base.yaml\ncross:\n  fleet.gpu: []\n", "cross.fleet.gpu: no values"),
        ("cross: {}\n", "base"),
    ],
)
def test_a_bad_sweep_is_one_line_and_exit_2(tmp_path, sweep, message):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(sweep)
    with pytest.raises(FleetsimError) as info:
        load_sweep(tmp_path / "sweep.yaml")
    assert message in str(info.value)
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and message in r.output
    assert not (tmp_path / "o").exists()


def test_cli_prints_the_table_resumes_and_guards_its_folder(tmp_path):
    make(tmp_path)
    out = tmp_path / "o"
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "4 points x 3 seeds: 12 runs (0 could not run)" in r.stdout
    assert_readable_table(r.stdout)
    j = json.loads(runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--json"]).stdout)
    assert len(j) == 4 and {"p99_ttft_ms_ci_low", "seeds_needed"} <= set(j[0])
    again = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out)])
    assert f"12 runs (0 could not run; 12 resumed from {out}/points)" in again.stdout  # (a rerun says what it reused)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(other)])
    assert r.exit_code == 2 and "not a fleetsim sweep folder" in r.output and (other / "keep.txt").read_text() == "mine"


def test_a_run_stored_by_another_sweep_is_relabelled_not_duplicated(tmp_path):
    """Runs are stored by content: a second sweep that reaches the same scenario under another axis name and
    index reuses the figures with its own labels."""
    sw = make(tmp_path)
    first = run_sweep(sw, tmp_path / "o")
    (tmp_path / "other.yaml").write_text(
        "base: base.yaml\nset: {engine.max_num_seqs: 8, fleet.autoscaler: {policy: fixed, replicas: 2}}\n"
        "cross:\n  engine.max_num_batched_tokens: [1024]\nseeds: [2]\n"
    )
    calls = []

    def counting(raw, base_dir, row, out_file):
        calls.append(row)
        return run_one(raw, base_dir, row, out_file)

    with pytest.raises(FleetsimError, match="holds the results of sweep 't'"):  # another sweep's folder: refused
        run_sweep(load_sweep(tmp_path / "other.yaml"), tmp_path / "o", task=counting)
    rows = run_sweep(load_sweep(tmp_path / "other.yaml"), tmp_path / "o", task=counting, force=True)
    assert calls == [] and list(rows.columns[:4]) == ["point", "engine.max_num_batched_tokens", "seed", "run_id"]
    assert rows["point"].tolist() == [0] and "engine.max_num_seqs" not in rows.columns
    same = first[(first["point"] == 3) & (first["seed"] == 2)].iloc[0]
    assert rows["p99_ttft_ms"].iloc[0] == same["p99_ttft_ms"]


REPLAY = BASE.replace(
    """trace:
  arrivals: {process: poisson, rate_per_s: 3}
  n_requests: 60
  prompt_tokens: {dist: uniform, low: 50, high: 400}
  output_tokens: {dist: uniform, low: 10, high: 60}
""",
    "trace: {file: t.csv}\n",
)


def test_a_point_the_seed_changes_nothing_in_runs_one_seed_and_says_why(tmp_path):
    """A trace replayed as it is: seeds 0, 1, 2 would give three identical rows; a sampled one needs all three."""
    pd.DataFrame({"arrival_at_s": np.arange(40) * 0.5, "prompt_tokens": 100, "output_tokens": 20}).to_csv(
        tmp_path / "t.csv", index=False
    )
    sw = make(tmp_path, sweep="base: base.yaml\ncross:\n  trace.sample: [1.0, 0.5]\nseeds: 3\n", base=REPLAY)
    assert [p.deterministic for p in sw.points] == [True, False] and sw.n_runs == 4
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert rows[["point", "seed"]].values.tolist() == [[0, 0], [1, 0], [1, 1], [1, 2]]
    assert ": 4 runs" in r.stdout and "one seed for points 0: the seed changes nothing here" in r.stdout
    stats = pd.read_parquet(tmp_path / "o" / "stats.parquet")
    assert stats["n_seeds"].tolist() == [1, 3] and np.isnan(stats.loc[0, "p99_ttft_ms_ci_low"])


def test_a_folder_belongs_to_its_study_and_another_is_refused(tmp_path, monkeypatch):
    """The marker names the sweep or plan that owns the folder: the same one resumes, another (same name from
    another file, another kind, other overrides) is one line and exit 2, with nothing replaced, unless --force."""
    make(tmp_path, sweep="name: same\nbase: base.yaml\ncross:\n  engine.max_num_seqs: [2]\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy.yaml").write_text((tmp_path / "sweep.yaml").read_text().replace("[2]", "[4]"))
    assert runner.invoke(app, ["sweep", "sweep.yaml", "--no-progress"]).exit_code == 0
    first = (tmp_path / "sweeps" / "same" / "results.parquet").read_bytes()
    assert json.loads((tmp_path / "sweeps" / "same" / ".fleetsim-sweep").read_text())["file"] == str(tmp_path / "sweep.yaml")
    r = runner.invoke(app, ["sweep", "copy.yaml", "--no-progress"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert (
        f"holds the results of sweep 'same' ({tmp_path / 'sweep.yaml'}); this is sweep 'same' ({tmp_path / 'copy.yaml'})"
        in r.output
    )
    assert (tmp_path / "sweeps" / "same" / "results.parquet").read_bytes() == first
    (tmp_path / "plan.yaml").write_text(
        "name: same\nbase: base.yaml\nsearch: {fleet.gpu: [h100-sxm]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\n"
        "set: {fleet.autoscaler: {policy: fixed, replicas: 1}}\nslo: {p99_ttft_ms: 60000}\n"
    )
    r = runner.invoke(app, ["plan", "plan.yaml", "--out", "sweeps/same"])
    assert (
        r.exit_code == 2 and "this is plan 'same'" in r.output and not (tmp_path / "sweeps" / "same" / "ranking.parquet").exists()
    )
    assert runner.invoke(app, ["plan", "plan.yaml", "--out", "plans/same"]).exit_code == 0
    r = runner.invoke(app, ["plan", "plan.yaml", "--out", "plans/same", "--set", "engine.max_num_seqs=3"])
    assert r.exit_code == 2 and "with --set engine.max_num_seqs=3" in r.output  # other overrides: another plan
    assert runner.invoke(app, ["sweep", "sweep.yaml", "--no-progress"]).exit_code == 0  # the owner resumes
    r = runner.invoke(app, ["sweep", "copy.yaml", "--no-progress", "--force"])
    assert r.exit_code == 0 and json.loads((tmp_path / "sweeps" / "same" / ".fleetsim-sweep").read_text())["file"].endswith(
        "copy.yaml"
    )
    (tmp_path / "sweeps" / "same" / ".fleetsim-sweep").write_text("")  # a marker from before owners were recorded
    assert runner.invoke(app, ["sweep", "sweep.yaml", "--no-progress"]).exit_code == 0


@pytest.mark.parametrize("where", ["cross", "set"])
def test_a_gpu_name_typo_is_one_line_with_the_valid_names(tmp_path, where):
    """A typo is the user's to fix: not a point that 'cannot run' (an error row) among the results."""
    axis = "cross:\n  fleet.gpu: [h100-sxm, h1000]\n" if where == "cross" else "set: {fleet.gpu: a1000}\n"
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(f"base: base.yaml\n{axis}")
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "fleet.gpu: unknown gpu" in r.output and "valid names: a10, a100-40gb, a100-40gb-pcie, a100-80gb" in r.output
    assert not (tmp_path / "o").exists()


def test_a_huge_cross_product_is_refused_from_the_axes_lengths(tmp_path, monkeypatch):
    """Three axes of 1,000 values (10^9 points) used to be built, point by point, before the run cap was applied:
    the cap is now checked on the axes' lengths, before any point exists."""
    import itertools

    def built(*_args, **_kwargs):
        raise AssertionError("the cross product was built before the run cap was checked")

    monkeypatch.setattr(itertools, "product", built)
    axes = "".join(f"  {k}: {{from: 1, to: 1000}}\n" for k in ("engine.max_num_seqs", "engine.block_size", "fleet.tp"))
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(f"base: base.yaml\ncross:\n{axes}")
    with pytest.raises(FleetsimError, match="1,000,000,000 points x 1 seeds is more than 100,000 runs"):
        load_sweep(tmp_path / "sweep.yaml")


def test_a_dead_scheduler_leaves_no_folder(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import sim.studies.sweep

    monkeypatch.setattr(sim.studies.sweep, "CONNECT_TIMEOUT", "0.5s", raising=False)
    make(tmp_path)
    for command in (["sweep", str(tmp_path / "sweep.yaml")], ["plan", str(PLAN_FILE(tmp_path))]):
        out = tmp_path / f"o-{command[0]}"
        r = runner.invoke(app, [*command, "--scheduler", "tcp://127.0.0.1:1", "--out", str(out)])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert "--scheduler tcp://127.0.0.1:1: cannot connect" in r.output and not out.exists()


def PLAN_FILE(tmp_path):
    (tmp_path / "plan.yaml").write_text(
        "base: base.yaml\nsearch: {fleet.gpu: [h100-sxm]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\n"
        "set: {fleet.autoscaler: {policy: fixed, replicas: 1}}\nslo: {p99_ttft_ms: 60000}\n"
    )
    return tmp_path / "plan.yaml"


def assert_readable_table(stdout: str) -> None:
    """The per-point table fits 100 columns, gives every figure with its unit and writes no number in e-notation."""
    import re

    lines = [line for line in stdout.splitlines() if not line.startswith("wrote ")]  # the folder's path aside
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    heads = [line for line in lines if line.startswith("  point  ")]
    for unit in ("p99 TTFT (s)", "p99 TPOT (ms)", "$/1M tokens", "throughput util. (%)", "within SLO (%)", "seeds needed"):
        assert any(unit in h for h in heads), unit
    assert not re.search(r"\d[eE][+-]?\d", stdout)


def test_the_table_is_split_to_fit_and_keeps_its_figures(tmp_path):
    """Axis values too wide to repeat beside the figures: the points first, then the figures by point, in two
    tables that fit; the figures are the statistics' own, in their units (by hand from stats.parquet)."""
    make(tmp_path)
    r = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert_readable_table(r.stdout)
    stats = pd.read_parquet(tmp_path / "o" / "stats.parquet").iloc[3]
    legend, *figures = [line for line in r.stdout.splitlines() if line.startswith("      3  ")]
    assert "{policy: fixed, replicas: 2}" in legend and len(figures) == 2  # YAML as written, not JSON
    ttft = stats["p99_ttft_ms_mean"] / 1000
    assert f" {ttft:.{max(0, 2 - int(np.floor(np.log10(ttft))))}f} [" in figures[0]
    assert f" {stats['throughput_utilization_mean'] * 100:.1f} [" in figures[0]
    assert figures[1].split()[-1] == f"{stats['seeds_needed']:,.0f}"
