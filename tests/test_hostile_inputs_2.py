"""Hostile inputs, round 2 of the second series: a full disk under every writer (the run folder, a stored run's mapped
columns, plan --plot, sweep --precision's statistics), files in a study's points/ that fleetsim did not write, and
trace gen's options that it would not read."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app

runner = CliRunner()
SCENARIO = "model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: t.csv\n"
CSV = "arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n0.5,20,3\n1.0,30,2\n"
FULL = "No space left on device"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, FULL)


def _inputs(folder: Path) -> None:
    (folder / "s.yaml").write_text(SCENARIO)
    (folder / "t.csv").write_text(CSV)


def _only(folder: Path, *names: str) -> None:
    """Nothing beside the inputs: no output, no temporary .part or .old, no stored trace's folder."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def _run(*args: str):
    return runner.invoke(app, ["run", "s.yaml", "--no-capacity", "--no-progress", *args])


def test_a_full_disk_while_the_run_folder_is_written_is_one_line_and_nothing(tmp_path, monkeypatch):
    # (the OSError escaped write_atomically: a traceback, exit 1)
    import sim.results.report as report

    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    real = report.write_chunks

    def half(chunks, path):
        real(chunks, path)  # a file written, then the disk is full
        _disk_full()

    monkeypatch.setattr(report, "write_chunks", half)
    r = _run("--out", "out")
    assert r.exit_code == 2, r.output
    assert r.stderr == f"error: --out out: cannot write the run folder ({FULL}); nothing written\n"
    _only(tmp_path, "s.yaml", "t.csv")


def test_a_failed_final_rename_puts_the_earlier_run_folder_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    assert _run("--out", "out").exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real = os.replace

    def refused(src, dst):
        if str(src).endswith(".part"):  # the new folder into place: refused
            _disk_full()
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    r = _run("--out", "out", "--seed", "1")
    assert r.exit_code == 2 and r.stderr.endswith("nothing written\n") and r.stderr.count("\n") == 1, r.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    _only(tmp_path, "s.yaml", "t.csv", "out")


def test_a_stored_run_claims_its_columns_disk_blocks_before_writing_them(tmp_path, monkeypatch):
    # (the columns were sparse files written through a mapping: on a full disk the kernel killed the process with
    # SIGBUS, no message, exit 135, the .part and .trace folders left behind)
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    real = os.posix_fallocate
    reserved: list[int] = []

    def counted(fd, offset, size):
        reserved.append(size)
        return real(fd, offset, size)

    monkeypatch.setattr(os, "posix_fallocate", counted)
    assert _run("--stored", "--out", "kept").exit_code == 0
    assert reserved and all(size >= 1 for size in reserved)
    monkeypatch.setattr(os, "posix_fallocate", _disk_full)
    r = _run("--stored", "--out", "out")
    assert r.exit_code == 2, r.output
    assert r.stderr == f"error: --out out: cannot write the run folder ({FULL}); nothing written\n"
    _only(tmp_path, "s.yaml", "t.csv", "kept")


def test_a_file_system_without_fallocate_keeps_the_columns_sparse(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")

    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    assert _run("--stored", "--out", "out").exit_code == 0
    assert (tmp_path / "out" / "requests.parquet").is_file()


def test_a_full_disk_under_the_stored_trace_is_one_line(tmp_path, monkeypatch):
    import sim.run.store as store

    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    monkeypatch.setattr(store.np, "ascontiguousarray", _disk_full)  # (the trace's columns written to their files)
    r = _run("--stored", "--out", "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert r.stderr.startswith("error: --out out: cannot write the trace's files in ") and FULL in r.stderr
    _only(tmp_path, "s.yaml", "t.csv")


STUDY_BASE = "name: {name}\nbase: s.yaml\n"
SWEEP = STUDY_BASE.format(name="sw") + "cross:\n  engine.max_num_seqs: [8, 16]\nseeds: 1\n"
PLAN = (
    STUDY_BASE.format(name="pl")
    + "search:\n  fleet.gpu: [a100-80gb]\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 2}\n"
    + "slo: {p99_ttft_ms: 2000}\nseeds: 1\nset:\n  fleet.autoscaler: {policy: fixed, replicas: 1}\n"
)


def test_plan_plot_on_a_full_disk_is_one_line_and_no_half_image(tmp_path, monkeypatch):
    # (fig.savefig straight to the path: a traceback, and whatever the write had reached left as the image)
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    (tmp_path / "p.yaml").write_text(PLAN)

    def half(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        _disk_full()

    monkeypatch.setattr(Figure, "savefig", half)
    r = runner.invoke(app, ["plan", "p.yaml", "--out", "plan", "--plot", "p.png"])
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[-1] == f"error: --plot p.png: cannot write it ({FULL}); nothing written"
    assert "Traceback" not in r.output
    assert not (tmp_path / "p.png").exists() and not list(tmp_path.glob(".p.png*"))


def _sweep(*args: str):
    return runner.invoke(app, ["sweep", "sw.yaml", "--out", "out", "--no-progress", *args])


def test_sweep_precision_statistics_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    # (stats.parquet was rewritten in place: a full disk left half a file over the whole one, and a traceback)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    (tmp_path / "sw.yaml").write_text(SWEEP)
    assert _sweep().exit_code == 0
    stats = tmp_path / "out" / "stats.parquet"
    before = stats.read_bytes()
    real = pd.DataFrame.to_parquet
    writes: list[str] = []

    def half(self, path, *args, **kwargs):
        if "stats.parquet" in str(path):
            writes.append(str(path))
            if len(writes) == 2:  # (the first: the sweep's, at 5%; the second: the command's, at --precision)
                Path(path).write_bytes(b"PAR1 half")
                _disk_full()
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half)
    r = _sweep("--precision", "0.1")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and FULL in r.stderr, r.output
    assert len(writes) == 2 and stats.read_bytes() == before  # (the sweep's own, at 5% as before)
    assert sorted(p.name for p in stats.parent.iterdir() if p.name.startswith(".stats")) == []


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ({"x": [1]}, "a stored point has no error column: not a point fleetsim wrote (its columns: x)"),
        ({"error": [None], "wall_s": [1.0]}, "a stored point has neither an error nor a run's summary (no completed column)"),
    ],
    ids=["other-columns", "no-summary"],
)
def test_a_point_file_fleetsim_did_not_write_is_refused(tmp_path, monkeypatch, frame, says):
    # (a Parquet file of other columns was read as a point whose figures were all missing: exit 0, its columns in
    # results.parquet)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    (tmp_path / "sw.yaml").write_text(SWEEP)
    assert _sweep().exit_code == 0
    point = sorted((tmp_path / "out" / "points").iterdir())[0]
    pd.DataFrame(frame).to_parquet(point, index=False)
    r = _sweep()
    assert r.exit_code == 2, r.output
    assert r.stderr == f"error: {point.relative_to(tmp_path)}: {says}; delete it and rerun (the point is simulated again)\n"
    point.unlink()
    assert _sweep().exit_code == 0  # (as it says: simulated again)


GEN = ["trace", "gen", "--out", "g.csv"]
SPEC = "arrivals: {process: poisson, rate_per_s: 1}\nprompt_tokens: {dist: fixed, tokens: 10}\n"
SPEC += "output_tokens: {dist: fixed, tokens: 5}\nduration_s: 10\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--rate", "1", "--duration-s", "9", "--cv", "3"], "--cv: only --process gamma reads it (got --process poisson)"),
        (
            ["--process", "gamma", "--cv", "2", "--rate", "1", "--duration-s", "9", "--amplitude", "0.9"],
            "--amplitude: only --process diurnal reads it (got --process gamma)",
        ),
        (["--rate", "1", "--duration-s", "9", "--mean-on-s", "1"], "--mean-on-s: only --process onoff reads it"),
        (["--rate", "1", "--duration-s", "9", "--rate-table", "r.csv"], "--rate-table: only --process diurnal reads it"),
        (["--spec", "spec.yaml", "--duration-s", "100"], "--duration-s: not read with --spec"),
        (["--spec", "spec.yaml", "--seed", "3"], "--seed: not read with --spec"),
        (["--spec", "spec.yaml", "--prompt", "fixed:3"], "--prompt: not read with --spec"),
    ],
    ids=["cv-poisson", "amplitude-gamma", "onoff-poisson", "table-poisson", "spec-duration", "spec-seed", "spec-prompt"],
)
def test_trace_gen_refuses_an_option_it_would_not_read(tmp_path, monkeypatch, argv, says):
    # (each was ignored without a word: --process poisson --cv 3 wrote a Poisson trace, --spec with --duration-s
    # 100 the spec's 10 s)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    r = runner.invoke(app, [*GEN, *argv])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.output
    assert not (tmp_path / "g.csv").exists()


def test_trace_gen_still_takes_each_process_options_and_a_spec_with_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    for argv in (
        ["--process", "gamma", "--rate", "1", "--cv", "2", "--duration-s", "9", "--seed", "1"],
        ["--process", "onoff", "--rate", "1", "--mean-on-s", "1", "--mean-off-s", "2", "--off-rate", "0.1", "--requests", "5"],
        ["--process", "diurnal", "--rate", "1", "--amplitude", "0.3", "--period-s", "100", "--duration-s", "9"],
        ["--spec", "spec.yaml", "--klass", "batch", "--job-id", "nightly"],
    ):
        r = runner.invoke(app, [*GEN, *argv, "--force"])  # (each over the last one's g.csv)
        assert r.exit_code == 0, (argv, r.output)


HF = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 32000,
    "sliding_window": 4096,
}


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"model_type": ["mistral"]}, "field 'model_type' must be a string such as 'llama' (got ['mistral'])"),
        ({"model_type": 7}, "field 'model_type' must be a string such as 'llama' (got 7)"),
        ({"use_sliding_window": "false"}, "field 'use_sliding_window' must be true or false (got 'false')"),
    ],
    ids=["type-list", "type-number", "window-flag-text"],
)
def test_config_json_fields_of_the_wrong_type_are_named(tmp_path, edit, says):
    # (model_type was str()-ed: "['mistral']" named no family, so its sliding layers went unread; the string "false"
    # is not False, so the window it turns off was used)
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**HF, **edit}))
    r = runner.invoke(app, ["roofline", "--model", str(config), "--gpu", "h100-sxm"])
    assert r.exit_code == 2 and r.stderr == f"error: {config}: {says}\n", r.output


def test_config_json_null_model_type_and_window_flag_read_as_absent(tmp_path):
    import json

    from sim.physics.models import model_from_hf_config

    spec = model_from_hf_config({**HF, "use_sliding_window": None}, name="m")
    assert (spec.sliding_window, spec.n_sliding_layers) == (4096, 32)
    assert model_from_hf_config({**HF, "use_sliding_window": False}, name="m").sliding_window == 0
    assert model_from_hf_config({**HF, "model_type": None}, name="m").model_type == ""
    (tmp_path / "config.json").write_text(json.dumps({**HF, "model_type": None}))
    assert runner.invoke(app, ["roofline", "--model", str(tmp_path / "config.json"), "--gpu", "h100-sxm"]).exit_code == 0


@pytest.mark.parametrize(
    ("argv", "label"),
    [
        (["trace", "convert", "t.csv", "t.csv", "--sample", "0.5"], ""),
        (["trace", "merge", "t.csv", "u.csv=interactive", "t.csv=batch"], ""),
        ([*GEN, "--rate", "1", "--duration-s", "5", "--prompt", "empirical:g.csv:prompt_tokens"], "--out "),
        ([*GEN, "--process", "diurnal", "--rate", "1", "--rate-table", "g.csv", "--duration-s", "5"], "--out "),
        ([*GEN, "--spec", "reads-g.yaml"], "--out "),
    ],
    ids=["convert", "merge", "gen-empirical", "gen-rate-table", "gen-spec-empirical"],
)
def test_a_trace_command_never_writes_over_a_file_it_reads(tmp_path, monkeypatch, argv, label):
    # (each replaced its input with its output: a convert with --sample 0.5 kept half the trace and lost the rest)
    monkeypatch.chdir(tmp_path)
    table = "window_start_s,rate\n0,1\n1,2\n"
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "u.csv").write_text(CSV)
    (tmp_path / "g.csv").write_text(table if "--rate-table" in argv else CSV)
    (tmp_path / "reads-g.yaml").write_text(
        SPEC.replace("{dist: fixed, tokens: 10}", "{dist: empirical, trace: g.csv, column: prompt_tokens}")
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    written = "g.csv" if argv[:2] == ["trace", "gen"] else "t.csv"
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert r.stderr == f"error: {label}{written}: is a file this command reads ({written}); write the output to another file\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


TIME_UNIT = (
    "time unit 'ms' is read by the generic format only (with its column mapping); a canonical trace's times have their "
    "format's unit"
)
MODEL = "model 'GPT-4': only BurstGPT and OpenTelemetry traces are filtered by model, not a canonical trace"


@pytest.mark.parametrize(
    ("argv", "says"), [(["--time-unit", "ms"], TIME_UNIT), (["--model", "GPT-4"], MODEL)], ids=["time-unit", "model"]
)
def test_a_reader_setting_the_format_does_not_read_is_refused(tmp_path, monkeypatch, argv, says):
    # (both were ignored: a canonical trace's seconds read as seconds under --time-unit ms, its `model` column not
    # filtered by --model, exit 0)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    r = runner.invoke(app, ["trace", "inspect", "t.csv", *argv])
    assert r.exit_code == 2 and r.stderr == f"error: t.csv: {says}\n", r.output
    key = {"--time-unit": "time_unit", "--model": "model"}[argv[0]]
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("trace: t.csv", f"trace: {{file: t.csv, {key}: {argv[1]}}}"))
    for stored in ([], ["--stored"]):
        r = _run("--out", "out", *stored)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.output
    _only(tmp_path, "s.yaml", "t.csv")
    generic = ["--columns", "arrival_at_s=arrival_at_s,prompt_tokens=prompt_tokens,output_tokens=output_tokens"]
    assert runner.invoke(app, ["trace", "inspect", "t.csv", *generic, "--time-unit", "ms"]).exit_code == 0


RICH = """model: llama-3.1-8b
fleet:
  gpu: h100-sxm
  autoscaler: {policy: fixed, replicas: 3}
  capacity:
    on_demand: {max_replicas: 1}
    spot: {interruptions_per_hour: 30, notice_s: 30, max_replicas: 1}
    launch_order: [spot, on_demand]
    fallback: [{gpu: a100-80gb, max_replicas: 2}]
pricing: {provider: aws}
trace: {arrivals: {process: poisson, rate_per_s: 5}, prompt_tokens: {dist: fixed, tokens: 200},
        output_tokens: {dist: fixed, tokens: 50}, duration_s: 300}
"""


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory):
    """A run folder whose meta.json has a fallback GPU type, capacity classes' supply and a measured fallback."""
    folder = tmp_path_factory.mktemp("rich")
    (folder / "s.yaml").write_text(RICH)
    r = runner.invoke(app, ["run", str(folder / "s.yaml"), "--out", str(folder / "run"), "--no-progress"])
    assert r.exit_code == 0, r.output
    return folder / "run"


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("pools", "online", "fallback"), "x", "pools.online.fallback"),
        (("pools", "online", "fallback", 0, "tp"), "2", "pools.online.fallback.0.tp"),
        (("pools", "online", "supply"), 7, "pools.online.supply"),
        (("pools", "online", "supply", "launches_failed"), None, "pools.online.supply.launches_failed"),
        (("pools", "online", "fallback", 0, "supply", "launches_failed"), [], "pools.online.fallback.0.supply.launches_failed"),
        (("pools", "online", "supply", "prices", "spot", "usd_per_gpu_hour"), "x", "pools.online.supply.prices.spot"),
        (("capacity", "fallback"), 1e308, "capacity.fallback"),
    ],
    ids=["fallback", "fallback-tp", "supply", "launches-failed", "fallback-supply", "class-price", "capacity-fallback"],
)
def test_meta_json_pools_fallback_and_supply_are_checked_on_load(tmp_path, rich_run, path, value, says):
    # (they were read unchecked: a fallback or a supply of another shape was an AttributeError or a TypeError from
    # `fleetsim report`, exit 1)
    import json
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(rich_run, folder)
    meta = json.loads((folder / "meta.json").read_text())
    node = meta
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    r = runner.invoke(app, ["report", str(folder)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.output
    assert runner.invoke(app, ["report", str(rich_run)]).exit_code == 0


def test_a_run_log_written_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Windows tools start UTF-8 files with a byte-order mark: requests.jsonl and meta.json read as without one."""
    import shutil

    from sim.workload.runlog import read_run_log

    src = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
    run = tmp_path / "run"
    shutil.copytree(src, run)
    for name in ("requests.jsonl", "meta.json"):
        (run / name).write_bytes(b"\xef\xbb\xbf" + (src / name).read_bytes())
    plain, marked = read_run_log(src), read_run_log(run)
    assert marked.trace.equals(plain.trace) and marked.meta == plain.meta


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1]", "--speculative-config must be a JSON object (got [1])"),
        ('{"num_speculative_tokens": -1}', "num_speculative_tokens must be a whole number >= 1 (got -1)"),
        ('{"num_speculative_tokens": "3"}', "num_speculative_tokens must be a whole number >= 1 (got '3')"),
    ],
)
def test_an_impossible_speculative_config_is_refused_not_noted(value, message):
    from sim.errors import FleetsimError
    from sim.scenario.vllm_args import map_options, parse_args

    with pytest.raises(
        FleetsimError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        map_options(parse_args(["--speculative-config", value], "cmd"), "cmd")
    ok = map_options(parse_args(["--speculative-config", '{"method": "eagle3", "num_speculative_tokens": 3}'], "cmd"), "cmd")
    assert any("method eagle3, 3 tokens" in n for n in ok.notes)
