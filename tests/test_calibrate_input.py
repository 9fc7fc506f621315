"""`fleetsim calibrate`'s inputs (issue 23): a folder, a table too long to hold, too few distinct shapes for the
parameters fitted, and an --out file it did not write; each one line and exit 2, nothing written or replaced."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.studies.calibrate import MAX_LOO_SHAPES, calibrate, read_shapes
from tests.conftest import make_setup

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "steptimes" / "aisimulate-vllm0.24_h100-sxm_llama-3.1-8b_tp1.csv"
STEPS = "kind,batch,new_tokens_per_seq,context_tokens,total_ms\n"
ARGS = ["--model", "llama-3.1-8b", "--gpu", "h100-sxm"]
runner = CliRunner()


def one_line_exit_2(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_a_folder_is_named(tmp_path):
    one_line_exit_2(runner.invoke(app, ["calibrate", str(tmp_path), *ARGS]), "is a folder, not a step-time CSV")


def test_a_table_longer_than_the_cap_is_refused_not_truncated(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(STEPS + "".join(f"decode,{b},1,{b * 10},{3 + b / 10}\n" for b in range(1, 8)))
    assert len(read_shapes(path, max_rows=7)) == 7
    with pytest.raises(FleetsimError, match=r"t\.csv: more than 6 rows; a step-time table holds one row per measured shape"):
        read_shapes(path, max_rows=6)


def test_ten_million_rows_are_refused_without_reading_them(tmp_path):
    """The default cap, on a file that stands for ten million rows: only the cap's rows (plus one) are parsed."""
    import tracemalloc

    from sim.studies.calibrate import MAX_ROWS

    path = tmp_path / "t.csv"
    with path.open("w") as f:
        f.write(STEPS)
        line = "decode,1,1,10,3\n" * 10_000
        for _ in range(MAX_ROWS // 10_000 + 2):
            f.write(line)
    tracemalloc.start()
    try:
        with pytest.raises(FleetsimError, match=f"more than {MAX_ROWS:,} rows;"):
            read_shapes(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20


def test_a_header_line_of_fifty_megabytes_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"kind," + b"x," * 25_000_000)
    one_line_exit_2(runner.invoke(app, ["calibrate", str(path), *ARGS]), "the first line is longer than 1,048,576 bytes")


def test_vllm_runs_of_more_steps_than_the_cap_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("batch_size,input_len,output_len,avg_latency\n1,128,1000000000,3.0\n")
    one_line_exit_2(runner.invoke(app, ["calibrate", str(path), *ARGS]), "1,000,000,000 engine steps")


@pytest.mark.parametrize(
    ("rows", "fix", "message"),
    [
        (["decode,1,1,0,3"], [], "1 distinct shape for 4 free parameters (mfu, mbu, layer_overhead_s, overlap)"),
        (["decode,1,1,0,3"] * 9, [], "1 distinct shape for 4 free parameters"),  # repeats count once
        ([f"decode,{b},1,0,{b}" for b in range(1, 5)], [], "4 distinct shapes for 4 free parameters"),
        (["decode,1,1,0,3"], ["--fix", "mfu,mbu,overlap"], "1 distinct shape for 1 free parameter (layer_overhead_s)"),
    ],
)
def test_too_few_distinct_shapes_for_the_parameters_are_refused(tmp_path, rows, fix, message):
    path = tmp_path / "t.csv"
    path.write_text(STEPS + "\n".join(rows) + "\n")
    out = tmp_path / "fit.yaml"
    r = runner.invoke(app, ["calibrate", str(path), *ARGS, "--out", str(out), *fix])
    one_line_exit_2(r, f"{path}: {message}")
    assert "add shapes, or hold parameters with --fix" in r.output and not out.exists()


def test_one_more_shape_than_parameters_fits():
    setup = make_setup("llama-3.1-8b", "h100-sxm", tp=1)
    shapes = read_shapes(TABLE)[:5]
    cal = calibrate(setup, shapes)
    assert cal.loo_s is None and cal.loo_skipped == "too few shapes for leave-one-out"


def test_leave_one_out_is_skipped_and_said_so_above_its_cap():
    setup = make_setup("llama-3.1-8b", "h100-sxm", tp=1)
    shapes = read_shapes(TABLE)
    many = list(shapes) * (MAX_LOO_SHAPES // len(shapes) + 1)
    cal = calibrate(setup, many)
    assert cal.loo_s is None and cal.loo_skipped is not None and str(MAX_LOO_SHAPES) in cal.loo_skipped


def test_out_onto_a_user_file_is_refused_without_force(tmp_path):
    out = tmp_path / "notes.yaml"
    out.write_text("my notes\n")
    r = runner.invoke(app, ["calibrate", str(TABLE), *ARGS, "--out", str(out)])
    one_line_exit_2(r, f"--out {out}: the file exists and fleetsim calibrate did not write it")
    assert out.read_text() == "my notes\n"
    r = runner.invoke(app, ["calibrate", str(TABLE), *ARGS, "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("# fleetsim calibrate ")


def test_out_onto_its_own_earlier_file_is_replaced(tmp_path):
    out = tmp_path / "fit.yaml"
    assert runner.invoke(app, ["calibrate", str(TABLE), *ARGS, "--out", str(out)]).exit_code == 0
    first = out.read_text()
    r = runner.invoke(app, ["calibrate", str(TABLE), *ARGS, "--out", str(out), "--fix", "overlap"])
    assert r.exit_code == 0, r.output
    assert out.read_text() != first


@pytest.mark.parametrize("value", ["inf", "1000000000000"])
def test_a_count_beyond_any_engine_step_is_refused_not_cast_to_garbage(tmp_path, value):
    """An infinite or huge batch was cast to int64 (-2^63) and fitted."""
    path = tmp_path / "t.csv"
    path.write_text(STEPS + f"decode,{value},1,0,3\n")
    with pytest.raises(FleetsimError, match=rf"row 2: batch must be at most 1,000,000,000 \(got '{value}'\)"):
        read_shapes(path)


def test_a_fit_that_failed_is_not_written_as_a_preset(tmp_path):
    """The reference table in seconds where the layout says ms: mfu and mbu pinned at 0.05, the per-layer overhead at
    its 1 ms cap, 98% mean error, and the fit was written as a usable preset. Now nothing is written (exit 2), and
    without --out the table prints with a warning; the same table in ms still fits and is written."""
    lines = TABLE.read_text().splitlines()
    col = lines[0].split(",").index("total_ms")
    rows = [line.split(",") for line in lines[1:]]
    for r in rows:
        r[col] = str(float(r[col]) * 1000)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    out = tmp_path / "fit.yaml"
    r = runner.invoke(app, ["calibrate", str(bad), *ARGS, "--tp", "1", "--out", str(out)])
    one_line_exit_2(r, "the fit failed: mean |error| 98%")
    assert "mfu 0.05 (bounds 0.05-1)" in r.stderr and "not written" in r.stderr and not out.exists()
    warned = runner.invoke(app, ["calibrate", str(bad), *ARGS, "--tp", "1"])
    assert warned.exit_code == 0 and warned.stderr.startswith("warning: the fit failed"), warned.output
    good = runner.invoke(app, ["calibrate", str(TABLE), *ARGS, "--tp", "1", "--out", str(out)])
    assert good.exit_code == 0 and out.is_file() and "warning" not in good.stderr


def test_a_row_past_the_models_context_is_refused(tmp_path):
    """A decode at 10,000,000 cached tokens on a 131,072-token model fitted with a 15,000% error, exit 0."""
    table = tmp_path / "long.csv"
    table.write_text(STEPS + "decode,8,1,1024,20.0\ndecode,8,1,10000000,25.0\nprefill,1,512,0,12.0\n")
    r = runner.invoke(app, ["calibrate", str(table), *ARGS, "--tp", "1"])
    one_line_exit_2(
        r,
        f"{table}: row 3: context_tokens + new_tokens_per_seq must be at most the model's context of 131,072 tokens (got 10,000,001)",
    )
