"""Hostile inputs from an eighth fuzzing pass, over studies, catalogs, imports, reports and model files: a model file
whose head count is a huge prime (the valid-TP list scanned to it: a hang), stored sweep points and study markers
edited into shapes no run writes (tracebacks, or negative costs printed as results), run folders whose replica instants
or work were edited (negative GPU-hours, an MFU of 1e283), meta.json figures past the scenario's own bounds,
config.json files that are not UTF-8, nest too deep or repeat a key, and plans whose outputs or scale values clash.
Each now ends in one line naming the file or field, the rule and the value, exit code 2, and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import one_line_error
from tests.test_hostile_inputs_7 import SMALL  # (a small scenario: 20 s of Poisson arrivals on one H100)

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LLAMA = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
}


def _model(tmp_path: Path, text: str | bytes, name: str = "m.json") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _roofline(model: Path, *extra: str) -> list[str]:
    return ["roofline", "--model", str(model), "--gpu", "h100-sxm", "--tp", "2", *extra]


# --- model config.json files ------------------------------------------------------------------------------------------
def test_a_huge_prime_head_count_is_refused_at_once_not_scanned_to(tmp_path):
    """The valid-TP list in the message was every divisor of the head count found by trial up to it: 10^10 steps."""
    heads = 9_999_999_967
    model = _model(tmp_path, json.dumps(LLAMA | {"num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": 128}))
    one_line_error(_roofline(model), f"tp=2 must divide num_attention_heads={heads}")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (json.dumps(LLAMA)[:-1] + ', "hidden_size": 8}', "key 'hidden_size' is given twice"),
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
        (json.dumps(LLAMA | {"model_type": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"), "not UTF-8 text"),
        (
            json.dumps(LLAMA | {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": [1]}}),
            "quantization_config.config_groups must be a mapping",
        ),
    ],
)
def test_a_config_json_is_held_to_the_input_file_rules(tmp_path, text, says):
    """A key given twice was kept silently (the last), deep nesting and Latin-1 bytes ended in RecursionError and
    UnicodeDecodeError tracebacks, a list of compressed-tensors groups in an AttributeError."""
    one_line_error(_roofline(_model(tmp_path, text)), says)


# --- sweep points and study markers --------------------------------------------------------------------------------------
def _sweep(tmp_path: Path, **change: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": str(CONFIGS / "default.yaml"), "set": {"trace.end_s": 20}} | change))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("swept")
    sweep, out = _sweep(tmp), tmp / "out"
    res = runner.invoke(app, ["sweep", str(sweep), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return sweep, out


def _copy(swept: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    sweep, out = swept
    mine = tmp_path / "out"
    shutil.copytree(out, mine)
    return sweep, mine


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda row: row.iloc[:0], "holds 0 rows, not 1"),
        (lambda row: row.assign(labels="{{"), "whose labels are not a JSON list of column names"),
        (lambda row: row.assign(labels="5"), "whose labels are not a JSON list of column names"),
        (lambda row: row.assign(p99_ttft_ms="abc"), "whose p99_ttft_ms is not a finite number >= 0 (got 'abc')"),
        (lambda row: row.assign(usd_per_1k_tokens=-1.0), "whose usd_per_1k_tokens is not a finite number >= 0 (got -1.0)"),
        (lambda row: row.assign(wall_s="x"), "whose wall_s is not a finite number >= 0"),
    ],
)
def test_a_stored_point_holding_what_no_run_writes_is_refused_on_resume(swept, tmp_path, edit, says):
    """Read back as the sweep resumed: IndexError, JSONDecodeError and TypeError tracebacks, or a cost of -499 $/1M
    tokens printed with exit 0."""
    sweep, out = _copy(swept, tmp_path)
    point = next((out / "points").glob("*.parquet"))
    edit(pd.read_parquet(point)).to_parquet(point, index=False)
    one_line_error(["sweep", str(sweep), "--out", str(out), "--no-progress"], f"{point}: a stored point {says}")


def test_a_stored_point_replaced_by_a_folder_is_refused_not_dropped(swept, tmp_path):
    """The seed silently vanished from the results, which still said "0 could not run"."""
    sweep, out = _copy(swept, tmp_path)
    point = next((out / "points").glob("*.parquet"))
    point.unlink()
    point.mkdir()
    one_line_error(["sweep", str(sweep), "--out", str(out), "--no-progress"], "holds 0 rows, not 1")


@pytest.mark.parametrize(
    "marker",
    ['{"kind": "plan"}', '{"kind": "sweep", "name": "zz", "overrides": 5}', '{"kind": null}', "{garbage"],
)
def test_a_study_marker_fleetsim_did_not_write_is_refused(swept, tmp_path, marker):
    """KeyError, TypeError and AttributeError tracebacks in sweep and report; invalid JSON let any study take over."""
    sweep, out = _copy(swept, tmp_path)
    (out / ".fleetsim-sweep").write_text(marker)
    one_line_error(["sweep", str(sweep), "--out", str(out), "--no-progress"], "not a marker fleetsim wrote")
    one_line_error(["report", str(out)], "not a marker fleetsim wrote")


@pytest.mark.parametrize("name", ["a\x00b", "a\nb"])
def test_a_study_name_is_printable(tmp_path, name):
    """A NUL ended in "ValueError: embedded null byte"; a newline made a folder named over two lines."""
    one_line_error(["sweep", str(_sweep(tmp_path, name=name)), "--no-progress"], "must be a plain name of printable characters")


def test_an_axis_value_given_twice_is_refused(tmp_path):
    """Two identical points, run and ranked against each other."""
    one_line_error(
        ["sweep", str(_sweep(tmp_path, cross={"fleet.gpu": ["h100-sxm", "h100-sxm"]})), "--no-progress"],
        "cross.fleet.gpu: the value 'h100-sxm' is given twice",
    )


# --- plans -------------------------------------------------------------------------------------------------------------
def _plan(tmp_path: Path, **change: object) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text((CONFIGS / "default.yaml").read_text().replace("../traces/", str(CONFIGS.parent / "traces") + "/"))
    plan = tmp_path / "p.yaml"
    spec = {"base": "base.yaml", "set": {"trace.end_s": 30}, "scale": {"path": "fleet.autoscaler.replicas", "from": 1, "to": 2}}
    plan.write_text(yaml.safe_dump(spec | {"slo": {"p99_ttft_ms": 20000}, "seeds": 1} | change))
    return plan


def test_plan_manifests_stay_out_of_the_plans_folder_and_off_its_plot(tmp_path):
    """`--manifests out/ranking.parquet` wrote YAML over the ranking (exit 0), `--manifests out/.fleetsim-sweep` over
    the marker, and `--manifests x.png --plot x.png` left YAML in the picture."""
    plan, out = _plan(tmp_path), tmp_path / "out"
    out.mkdir()  # (a plan's folder from an earlier run)
    one_line_error(
        ["plan", str(plan), "--out", str(out), "--manifests", str(out / "ranking.parquet")], "inside the plan's folder"
    )
    picture = tmp_path / "x.png"
    one_line_error(["plan", str(plan), "--out", str(out), "--manifests", str(picture), "--plot", str(picture)], "is also --plot")
    assert not any(out.iterdir()) and not picture.exists()


@pytest.mark.slow
def test_a_plan_over_tp_judges_each_value_not_the_smallest(tmp_path):
    """`scale: {path: fleet.tp, from: 1, to: 2}` with a 70B model: TP 1 does not fit an H100, so the screen ruled the
    whole group out ("no configuration meets the SLO") without trying TP 2."""
    plan = _plan(
        tmp_path,
        set={"trace.end_s": 20, "model": "llama-3.1-70b", "fleet.gpu": "h100-sxm"},
        scale={"path": "fleet.tp", "from": 1, "to": 2},
    )
    res = runner.invoke(app, ["plan", str(plan), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    pick = json.loads(res.output)["pick"]
    assert pick is not None and pick["fleet.tp"] == 2


# --- run folders ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "r"
    res = runner.invoke(
        app, ["run", str(CONFIGS / "default.yaml"), "--set", "trace.end_s=60", "--out", str(run), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    return run


def _edited(run_dir: Path, tmp_path: Path, name: str, edit) -> Path:
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    if name == "meta.json":
        meta = json.loads((edited / name).read_text())
        edit(meta)
        (edited / name).write_text(json.dumps(meta))
    else:
        edit(pd.read_parquet(edited / name)).to_parquet(edited / name, index=False)
    return edited


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda r: r.assign(drain_at_s=-10.0), "drain_at_s = -10.0"),
        (lambda r: r.assign(ready_at_s=float("nan")), "its busy seconds before draining fit between ready_at_s and drain_at_s"),
        (lambda r: r.assign(busy_before_drain_s=r["busy_s"] + 10), "busy_before_drain_s must be within 0..busy_s"),
        (lambda r: r.assign(lost_s=-10.0), "lost_s = -10.0"),
        (lambda r: r.assign(flops=1e300), "more than 100% of the peak"),
        (lambda r: r.assign(gpu="zzz"), "gpu and tp must be its pool's"),
        (lambda r: r.assign(pool="zzz"), "pool must be one of meta.json's pools"),
        (lambda r: r.assign(capacity="zzz"), "capacity must be one of reserved, on_demand, spot"),
    ],
)
def test_replica_records_no_run_writes_are_refused_by_the_report(run_dir, tmp_path, edit, says):
    """Printed with exit 0: idle GPU-seconds of -148, lost GPU-seconds of -20, an MFU of 2.3e283; or refused with
    "its records do not add up (StopIteration: '')", naming no field."""
    one_line_error(["report", str(_edited(run_dir, tmp_path, "replicas.parquet", edit))], says)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda m: m["scenario"]["pricing"].update(billing_granularity_s=1e300), "scenario.pricing.billing_granularity_s"),
        (lambda m: m.update(usd_per_gpu_hour=1e300), "usd_per_gpu_hour: Input should be less than or equal to 1000000"),
        (lambda m: m.update(peak_flops_per_s_per_gpu=1e-300), "peak_flops_per_s_per_gpu"),
        (lambda m: m["scenario"].update(slo={"ttft_ms": -5}), "scenario.slo.ttft_ms: Input should be greater than 0"),
        (lambda m: m["capacity"].update(rel_se=-1), "capacity.rel_se"),
        (lambda m: m["wall_s"].update(build=-5), "wall_s.build"),
        (lambda m: m.update(without_losses=5), "without_losses"),
    ],
)
def test_meta_figures_past_the_scenarios_bounds_are_refused_by_the_report(run_dir, tmp_path, edit, says):
    """A billing period of 1e300 s read as ZeroDivisionError in text and -136.9 rounding seconds in JSON, a price of
    1e300 $/h as a cost of 3.8e298 USD, a peak of 1e-300 FLOP/s as an MFU of inf, an SLO of -5 ms as 0% within it."""
    one_line_error(["report", str(_edited(run_dir, tmp_path, "meta.json", edit))], says)


# --- import and roofline ----------------------------------------------------------------------------------------------------
def test_an_imported_value_refused_names_its_manifest_field(tmp_path):
    """`--max-num-seqs 0` in a Deployment's args: "the imported scenario: engine.max_num_seqs: ..." named no file."""
    manifest = tmp_path / "d.yaml"
    manifest.write_text(
        (CONFIGS / "cluster" / "deployment-hpa.yaml").read_text().replace("--max-num-seqs 128", "--max-num-seqs 0")
    )
    one_line_error(
        ["import", str(manifest)],
        f"{manifest} (document 2) spec.template.spec.containers[0].args: --max-num-seqs: engine.max_num_seqs",
    )


def test_roofline_lengths_past_the_context_and_tiny_prices_are_told_plainly(tmp_path):
    """A 10^10-token prefill was priced (46 billion seconds) on a 131,072-token model; a price of 1e-300 $/h printed a
    300-digit "x cheaper than the API"."""
    args = ["roofline", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "4"]
    one_line_error([*args, "--prefill-lengths", "200000"], "--prefill-lengths: 200,000 tokens do not fit llama-3.1-70b's context")
    res = runner.invoke(app, [*args, "--price-per-gpu-hour", "1e-300"])
    assert res.exit_code == 0 and max(len(w) for w in res.output.split()) < 40, res.output


# --- devices, outputs, traces and run logs (a second pass over scenarios and traces) ---------------------------------------
def test_a_device_given_as_a_model_file_is_refused_not_read(tmp_path):
    """`model: /dev/zero` read until 24 GB of memory; a FIFO blocked forever."""
    one_line_error(["roofline", "--model", "/dev/zero", "--gpu", "h100-sxm"], "/dev/zero: not a regular file")


def test_a_rate_table_that_is_a_device_is_refused(tmp_path):
    """`trace.arrivals.rate_table: /dev/zero` hung in pandas' CSV reader."""
    from sim.workload.synthetic import load_rate_table

    with pytest.raises(Exception, match="not a regular file; a rate table is a CSV file"):
        load_rate_table("/dev/zero")


def test_run_outputs_do_not_overlap(tmp_path):
    """`--out D --html D` simulated, wrote the page at D, then failed on "--out D: exists and is not a folder" (the
    page left behind); `--plot x --html x` kept one of the two silently."""
    base = ["run", str(CONFIGS / "default.yaml"), "--set", "trace.end_s=10", "--no-progress"]
    out = tmp_path / "o"
    one_line_error([*base, "--out", str(out), "--html", str(out)], "is the --out folder")
    page = tmp_path / "p.png"
    one_line_error([*base, "--out", str(out), "--plot", str(page), "--html", str(page)], "is also --plot")
    assert not out.exists() and not page.exists()


def test_a_deeply_nested_json_lines_trace_is_refused_before_pyarrow(tmp_path):
    """20,000 brackets on one line crashed the process in pyarrow's reader (SIGSEGV); 1,000 on a line the exact
    reader re-read ended in a RecursionError traceback."""
    deep = tmp_path / "d.jsonl"
    row = '{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
    deep.write_text(row + '{"timestamp": 1, "input_length": 10, "output_length": 5, "x": ' + "[" * 20000 + "]" * 20000 + "}\n")
    one_line_error(["trace", "inspect", str(deep)], f"{deep} line 2: JSON nested more than 64 levels deep")


@pytest.mark.parametrize(
    ("values", "unit", "says"),
    [
        ([True, False, True], "s", "column 't' holds booleans, not numbers of s"),
        ([True, False, True], "datetime", "column 't' holds bool, not date-times"),
        ([1, 2, 3], "datetime", "column 't' holds int64, not date-times"),
        (["0", "abc", "2"], "s", "row 2: column 't' must be a number of s (got 'abc')"),
        (["2024-01-01", "x", "2024-01-02"], "datetime", "row 2: column 't' must be a date-time (got 'x')"),
    ],
)
def test_a_generic_parquet_time_column_is_type_checked(tmp_path, values, unit, says):
    """Booleans read as 0/1 s, integers as nanoseconds, text as "arrival_at_s is missing", and a bool column under
    --time-unit datetime ended in a TypeError traceback."""
    path = tmp_path / "g.parquet"
    pd.DataFrame({"t": values, "in": [10, 20, 30], "out": [5, 6, 7]}).to_parquet(path)
    columns = "arrival_at_s=t,prompt_tokens=in,output_tokens=out"
    one_line_error(["trace", "inspect", str(path), "--columns", columns, "--time-unit", unit], says)


def test_a_column_mapping_reads_each_field_from_its_own_column(tmp_path):
    """Two fields mapped to one column, or one field mapped twice, ended in pyarrow's KeyError traceback."""
    path = tmp_path / "g.csv"
    path.write_text("t,in,out\n0,10,5\n")
    one_line_error(
        ["trace", "inspect", str(path), "--columns", "arrival_at_s=t,prompt_tokens=in,output_tokens=in"],
        "column 'in' is mapped to two fields",
    )
    one_line_error(
        ["trace", "inspect", str(path), "--columns", "arrival_at_s=t,prompt_tokens=in,output_tokens=out,arrival_at_s=in"],
        "'arrival_at_s' is given twice",
    )


def test_an_onoff_process_of_billions_of_periods_is_refused_before_allocating(tmp_path):
    """A 715 GiB allocation (numpy's MemoryError traceback)."""
    one_line_error(
        ["trace", "gen", "--process", "onoff", "--rate", "1e-6", "--mean-on-s", "0.001", "--mean-off-s", "1e6", "--requests", "10",
         "--out", str(tmp_path / "g.csv")],
        "on/off periods",
    )  # fmt: skip
    assert not (tmp_path / "g.csv").exists()


def test_a_run_log_with_no_time_between_tokens_is_refused(tmp_path):
    """Every request's tokens at its arrival: validate printed a table of 0.0 ms and calibrate fitted mfu = mbu = 1."""
    rows = [
        {"input_toks": 100, "output_toks": 50, "queued_ts": t, "scheduled_ts": t, "first_token_ts": t, "last_token_ts": t}
        for t in (0.0, 1.0, 2.0)
    ]
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 1}}))
    one_line_error(["validate", str(tmp_path), "--scenario", str(scenario)], "every request's latency is 0")
    for r in rows:
        r["first_token_ts"] = r["last_token_ts"] = r["queued_ts"] + 0.5
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_line_error(["validate", str(tmp_path), "--scenario", str(scenario)], "no request's tokens are spread in time")


def test_a_batch_job_that_stretches_the_run_is_named(tmp_path):
    """A job submitted at 1e12 s was refused as "fleet.timeline_interval_s=60 over a trace of 1e12 s", naming the
    timeline rather than the job."""
    job = {
        "job_id": "j", "requests": 10, "submit_at_s": 1e12, "deadline_s": 3600,
        "prompt_tokens": {"dist": "fixed", "tokens": 500}, "output_tokens": {"dist": "fixed", "tokens": 50},
    }  # fmt: skip
    one_line_error(
        ["run", str(CONFIGS / "batch-backfill.yaml"), "--set", "trace.duration_s=120", "--set", f"batch.jobs=[{json.dumps(job)}]",
         "--out", str(tmp_path / "o"), "--no-progress"],
        "the last request is batch job 'j''s: batch.jobs submit_at_s",
    )  # fmt: skip


def test_a_state_with_no_time_reads_zero_not_a_float_residue():
    """A dedicated batch pool's idle GPU-seconds read -2.5e-14 in summary.json (differences of float sums)."""
    from sim.results.cost import ReplicaLife, state_seconds

    busy = 0.1 + 0.2  # (0.30000000000000004)
    life = ReplicaLife(0.0, 0.0, 0.0, 0.3, 0.3, busy, busy)
    seconds = state_seconds(life)
    assert seconds["idle"] == 0.0 and seconds["draining"] == 0.0 and min(seconds.values()) >= 0.0


def test_roofline_config_reads_the_scenarios_speculation_and_refuses_a_platform(tmp_path):
    """`roofline --config configs/speculative.yaml` printed the report without speculation (a draft larger than its
    target accepted); `--config configs/platform.yaml` priced the first deployment's model on the scenario's own fleet
    ("does not fit on 1x h100-sxm"), naming neither file nor field."""
    res = runner.invoke(app, ["roofline", "--config", str(CONFIGS / "speculative.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)["speculative"]
    assert spec["method"] == "draft" and spec["num_speculative_tokens"] == 4 and spec["draft_model"] == "llama-3.1-8b"
    big = "engine.speculative={method: draft, num_speculative_tokens: 4, acceptance_rate: 0.7, draft_model: llama-3.1-405b}"
    one_line_error(["roofline", "--config", str(CONFIGS / "speculative.yaml"), "--set", big], "engine.speculative:")
    one_line_error(["roofline", "--config", str(CONFIGS / "platform.yaml")], "a platform of 2 deployments (chat, assistant)")
    moe = ["--set", "model=qwen3-30b-a3b", "--set", "fleet.gpu=h100-sxm", "--set", "fleet.tp=1", "--set", "fleet.dp=3"]
    one_line_error(
        ["roofline", "--config", str(CONFIGS / "default.yaml"), *moe, "--set", "fleet.expert_parallel=true"],
        f"{CONFIGS / 'default.yaml'} (with --set): fleet.expert_parallel: 128 experts",
    )


def test_a_validate_csv_names_each_column_once_and_holds_numbers(tmp_path):
    """A header naming `arrival` twice was read (pandas renamed the second `arrival.1`); `true` read as 1 token."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 1}}))
    twice = tmp_path / "d.csv"
    twice.write_text("arrival,prompt,output,ttft,e2e,arrival\n0,100,10,0.05,0.5,1\n")
    one_line_error(["validate", str(twice), "--scenario", str(scenario)], "column 'arrival' is named twice in the header")
    flags = tmp_path / "b.csv"
    flags.write_text("arrival,prompt,output,ttft,e2e\n0,true,10,0.05,0.5\n1,false,10,0.05,0.5\n")
    one_line_error(["validate", str(flags), "--scenario", str(scenario)], "column 'prompt': must be a whole number >= 1")


def test_time_series_ticks_past_the_replay_are_left_out_with_a_note(tmp_path):
    """A tick at 1e11 s was compared with the replay's last sample (searchsorted clipped), silently."""
    from sim.studies.validate import validate
    from sim.workload.runlog import read_run_log

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b", run)
    series = pd.read_csv(run / "timeseries.csv")
    far = series.iloc[[-1]].assign(t=1e11)
    pd.concat([series, far]).to_csv(run / "timeseries.csv", index=False)
    cmp = validate(read_run_log(run))
    assert cmp.series is not None and len(cmp.series) == len(series) and cmp.series["t_s"].max() < 1e11
    assert any("1 of the time series'" in note for note in cmp.notes)


def test_a_slow_replicas_capacity_probe_is_not_stopped_by_the_timeline_bound(tmp_path):
    """A GPU of 0.001 TFLOP/s: the run itself took seconds, but the capacity probe's saturated run sampled its timeline
    every 10 s for 20 million simulated seconds, then failed the whole run ("the run went on for 2,000,000 timeline
    samples") after 84 s."""
    slow = "roofline.gpu_overrides={a100-80gb: {bf16_tflops: 0.001}}"
    res = runner.invoke(
        app,
        ["run", str(CONFIGS / "default.yaml"), "--set", "trace.end_s=60", "--set", slow, "--json", "--out", str(tmp_path / "o")],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["max_tokens_per_s_per_replica"] > 0 and summary["throughput_utilization"] is not None


def test_repeating_a_trace_millions_of_times_is_one_take_of_its_rows():
    """`trace convert one.csv out.csv --repeat 5000000` (a copy and a column write per repeat) ran past 90 s: the cap
    of 100 million rows allowed hours. Now one take; the copies as before, each shifted by its start."""
    import numpy as np

    from sim.workload.transforms import repeat

    one = pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [10], "output_tokens": [5], "request_id": ["a"]})
    out = repeat(one, 1_000_000, shift_s=0.5)
    assert len(out) == 1_000_000 and out["arrival_at_s"].iloc[-1] == 999_999 * 0.5
    assert out["request_id"].iloc[-1] == "a#999999" and (np.diff(out["arrival_at_s"].to_numpy()) > 0).all()
    three = pd.DataFrame(
        {
            "arrival_at_s": [0.0, 0.3, 1.7],
            "prompt_tokens": [1, 2, 3],
            "output_tokens": [4, 5, 6],
            "deadline_at_s": [np.nan, 5.0, 9.1],
        }
    )
    twice = repeat(three, 2, shift_s=2.5)
    assert twice["arrival_at_s"].tolist() == [0.0, 0.3, 1.7, 2.5, 0.3 + 2.5, 1.7 + 2.5]
    assert twice["deadline_at_s"].iloc[3:].tolist()[1:] == [7.5, 9.1 + 2.5] and np.isnan(twice["deadline_at_s"].iloc[3])


@pytest.mark.parametrize(("entry", "says"), [({"": {}}, "got ''"), ({"x": {"aliases": [" "]}}, "an alias must be printable")])
def test_a_gpu_catalogs_names_are_names(tmp_path, entry, says):
    """A GPU named '' was accepted, and the unknown-GPU message listed "valid names: , a100-40gb, ..."."""
    spec = {"bf16_tflops": 900, "hbm_gb": 80, "hbm_bw_gb_per_s": 3000, "interconnect_gb_per_s": 900}
    catalog = tmp_path / "gpus.yaml"
    catalog.write_text(yaml.safe_dump({name: spec | body for name, body in entry.items()}))
    one_line_error(["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpu-catalog", str(catalog)], says)


@pytest.mark.parametrize(
    ("head", "rows"),
    [
        ("arrival_at_s,prompt_tokens,output_tokens,klass,deadline_at_s", ["0,10,5,batch,", "1,10,5,batch,nan"]),
        ("arrival_at_s,prompt_tokens,output_tokens,priority", ["0,10,5,", "1,10,5,nan"]),
    ],
)
def test_the_text_nan_in_an_optional_column_is_refused_an_empty_cell_is_none(tmp_path, head, rows):
    """`deadline_at_s` = nan on a batch row read as "no deadline" (and `priority` = nan as none): the README refuses NaN
    anywhere; an empty cell is how a row says it has none."""
    column = head.rsplit(",", 1)[-1]
    path = tmp_path / "t.csv"
    path.write_text("\n".join([head, *rows]) + "\n")
    one_line_error(["trace", "inspect", str(path)], f"{path} line 3: {column} is NaN; leave the cell empty for none")
    path.write_text(path.read_text().replace("nan", "7"))
    assert runner.invoke(app, ["trace", "inspect", str(path)]).exit_code == 0


def test_validate_draws_its_plot_to_a_png_name(tmp_path):
    """`validate --plot p.txt` wrote a PNG under a .txt name (run --plot checks the extension)."""
    run = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
    one_line_error(["validate", str(run), "--plot", str(tmp_path / "p.txt")], "the file name must end in .png")
    assert not (tmp_path / "p.txt").exists()


# --- what the checks above must still accept (a review of them found these refused) -----------------------------------
def test_a_sweep_with_batch_jobs_resumes_its_own_points(tmp_path):
    """A batch run's summary has a text figure, `batch_cost_method`: its stored point was refused as "not a finite
    number" on the sweep's first pass."""
    job = {
        "job_id": "j", "requests": 40, "deadline_s": 3600,
        "prompt_tokens": {"dist": "fixed", "tokens": 300}, "output_tokens": {"dist": "fixed", "tokens": 30},
    }  # fmt: skip
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**SMALL, "batch": {"fleet": "backfill", "jobs": [job]}}))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": "base.yaml", "cross": {"engine.max_num_seqs": [128, 256]}}))
    for _ in range(2):  # (the second resumes from the stored points)
        res = runner.invoke(app, ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--no-progress"])
        assert res.exit_code == 0, res.output


def test_brackets_in_a_traces_text_fields_do_not_add_up_across_lines(tmp_path):
    """A note of "see [1" on every line: the depth carried from line to line until line 64 was refused."""
    rows = [json.dumps({"timestamp": i, "input_length": 10, "output_length": 5, "note": "see [1 {{"}) for i in range(200)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["trace", "inspect", str(path)])
    assert res.exit_code == 0 and "200" in res.output, res.output


def test_a_compressed_csv_run_log_and_trailing_commas_are_read(tmp_path):
    """The repeated-header check opened a .csv.gz as text (UnicodeDecodeError traceback) and took two empty names
    from trailing commas for a repeated column."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 1}}))
    text = "arrival,prompt,output,ttft,e2e,,\n0,100,10,0.05,0.5,,\n1,100,10,0.05,0.6,,\n"
    (tmp_path / "trail.csv").write_text(text)
    pd.read_csv(tmp_path / "trail.csv").to_csv(tmp_path / "log.csv.gz", index=False)
    for log in ("trail.csv", "log.csv.gz"):
        res = runner.invoke(app, ["validate", str(tmp_path / log), "--scenario", str(scenario), "--layout", "csv"])
        assert res.exit_code == 0, res.output
