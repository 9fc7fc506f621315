"""`fleetsim run --out` never destroys a folder that is not a run folder, and checks outputs first."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "configs" / "default.yaml")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["run", DEFAULT, "--no-capacity", *args])


def test_a_folder_of_user_files_is_refused_and_kept(tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    r = run("--out", str(user))
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "is not a fleetsim run folder" in r.stderr and "--force" in r.stderr
    assert [p.name for p in user.iterdir()] == ["chapter1.tex"]
    assert not list(tmp_path.glob(".*part"))  # nothing half-written beside it either


def test_force_replaces_a_user_folder_but_never_the_working_or_home_folder(tmp_path, monkeypatch):
    user = tmp_path / "scratch"
    user.mkdir()
    (user / "old.txt").write_text("x")
    r = run("--out", str(user), "--force")
    assert r.exit_code == 0, r.output
    assert (user / "summary.json").is_file() and not (user / "old.txt").exists()
    monkeypatch.chdir(user)
    for target in (".", "..", str(Path.home()), "/"):
        r = run("--out", target, "--force")
        assert r.exit_code == 2 and r.stderr.startswith("error: --out"), (target, r.output)
    assert (user / "summary.json").is_file()


def test_a_run_folder_is_replaced_by_the_next_run(tmp_path):
    out = tmp_path / "runs" / "a"
    assert run("--out", str(out)).exit_code == 0
    first = (out / "meta.json").stat().st_mtime_ns
    assert run("--out", str(out)).exit_code == 0
    assert (out / "meta.json").stat().st_mtime_ns >= first and (out / ".fleetsim-run").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("--out", str(empty)).exit_code == 0  # an empty folder is fine too


def test_bad_output_paths_fail_before_simulating(tmp_path):
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    for args, message in [
        (["--out", str(afile)], "exists and is not a folder"),
        (["--out", str(tmp_path / "ok"), "--plot", str(tmp_path / "missing" / "p.png")], "does not exist"),
        (["--out", str(tmp_path / "ok"), "--plot", str(tmp_path)], "is a folder"),
    ]:
        r = run(*args)
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)
        assert not (tmp_path / "ok").exists()


def test_a_folder_under_a_file_is_refused(tmp_path):
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    r = run("--out", str(afile / "run"))
    assert r.exit_code == 2 and f"cannot write in {afile}" in r.stderr


def _only(folder: Path, *names: str) -> None:
    """Nothing written beside the inputs: no output, no temporary .part."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


GEN = ["trace", "gen", "--rate", "5", "--requests", "10"]


def test_trace_outputs_under_a_file_or_onto_a_folder_are_one_line(tmp_path, monkeypatch):
    """They were NotADirectoryError / IsADirectoryError tracebacks from the trace writer."""
    monkeypatch.chdir(tmp_path)
    Path("f.txt").write_text("x")
    Path("t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens\n0,1,1\n")
    Path("d.csv").mkdir()
    cases = [
        ([*GEN, "--out", "f.txt/g.csv"], "error: --out f.txt/g.csv: f.txt is a file, not a folder\n"),
        ([*GEN, "--out", "d.csv"], "error: --out d.csv: is a folder; give a file name\n"),
        (["trace", "convert", "t.csv", "f.txt/c.csv"], "error: f.txt/c.csv: f.txt is a file, not a folder\n"),
        (["trace", "merge", "f.txt/m.parquet", "t.csv=batch"], "error: f.txt/m.parquet: f.txt is a file, not a folder\n"),
        (["trace", "inspect", "t.csv", "--plot", "f.txt/p.png"], "error: --plot f.txt/p.png: f.txt is a file, not a folder\n"),
    ]
    for argv, message in cases:
        r = runner.invoke(app, argv)
        assert r.exit_code == 2 and r.stderr == message, (argv, r.output)
    _only(tmp_path, "f.txt", "t.csv", "d.csv")


def test_a_folder_the_file_system_refuses_is_one_line_and_nothing_half_written(tmp_path, monkeypatch):
    """A read-only folder (as root every folder is writable, so the refusal is the file system's, simulated)."""
    import tempfile

    from sim.atomic import atomic_file
    from sim.errors import FleetsimError

    monkeypatch.chdir(tmp_path)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    r = runner.invoke(app, [*GEN, "--out", "g.csv"])
    assert r.exit_code == 2 and r.stderr == "error: --out g.csv: cannot write there (Permission denied)\n", r.output
    monkeypatch.undo()
    with_file = tmp_path / "kept.yaml"
    with_file.write_text("mine")
    try:  # a write that fails midway (a full disk) leaves the old file and no .part
        with atomic_file(with_file, "--out") as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    except FleetsimError as err:
        assert str(err) == f"--out {with_file}: cannot write it (No space left on device); nothing written"
    else:
        raise AssertionError("no error")
    assert with_file.read_text() == "mine"
    _only(tmp_path, "kept.yaml")


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != Path("locked"))
    for argv, option in (
        ([*GEN, "--out", "locked/g.csv"], "--out"),
        (["calibrate", "x.csv", "--model", "m", "--gpu", "g", "--out", "locked/f.yaml"], "--out"),
    ):
        r = runner.invoke(app, argv)
        assert r.exit_code == 2 and r.stderr.startswith(f"error: {option} locked/"), r.output
        assert "cannot write in locked (no permission)" in r.stderr
    assert not list(locked.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_a_really_read_only_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = runner.invoke(app, [*GEN, "--out", "locked/g.csv"])
        assert r.exit_code == 2 and r.stderr == "error: --out locked/g.csv: cannot write in locked (no permission)\n"
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_a_run_folder_holding_other_files_is_kept_unless_forced(tmp_path):
    """Rerunning into a run folder replaced it whole, with the notes and the trace a user had put in it (the rerun read
    that trace, then deleted it, and its config.resolved.yaml named a file gone)."""
    short = ["--set", "trace.end_s=10"]
    out = tmp_path / "R"
    assert run("--out", str(out), *short).exit_code == 0
    assert run("--out", str(out), *short).exit_code == 0  # a run folder of run files alone: replaced
    (out / "notes.txt").write_text("precious")
    r = run("--out", str(out), *short)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "also holds 'notes.txt'" in r.stderr and "--force" in r.stderr, r.stderr
    assert (out / "notes.txt").read_text() == "precious"
    trace = out / "mine.csv"
    trace.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n0.5,20,3\n")
    for extra in ([], ["--force"]):  # a folder holding what the run reads: never, forced or not
        r = run("--out", str(out), "--trace", str(trace), *extra)
        assert r.exit_code == 2 and f"holds {trace}, which this run reads" in r.stderr, r.stderr
        assert trace.is_file()
    assert run("--out", str(out), *short, "--force").exit_code == 0
    assert not (out / "notes.txt").exists() and (out / "summary.json").is_file()
    r = run("--out", str(out), *short, "--html", str(out / "page.html"))
    assert r.exit_code == 2 and "is in the --out folder" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["trace", "gen", "--rate", "5", "--requests", "3", "--out", "{f}"],
        ["trace", "convert", str(REPO / "traces" / "azure2023_conv.csv"), "{f}", "--end-s", "5"],
        ["export", str(REPO / "configs" / "default.yaml"), "--out", "{f}"],
    ],
    ids=["trace-gen", "trace-convert", "export"],
)
def test_an_output_file_is_replaced_only_when_forced(tmp_path, argv):
    """`trace gen --out x.csv` (and convert, export, import, report --html, validate --plot) wrote over any file there."""
    name = tmp_path / ("m.yaml" if argv[0] == "export" else "x.csv")
    name.write_text("precious\n")
    args = [a.replace("{f}", str(name)) for a in argv]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "the file exists; pick another name, or pass --force to replace it" in r.stderr
    assert name.read_text() == "precious\n"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert name.read_text() != "precious\n"


def test_report_on_a_file_and_a_run_nothing_could_be_measured_on_say_why(tmp_path):
    afile = tmp_path / "summary.json"
    afile.write_text("{}")
    r = runner.invoke(app, ["report", str(afile)])
    assert r.exit_code == 2 and r.stderr == f"error: {afile}: not a run folder (a file, not a folder)\n"
    r = run("--out", str(tmp_path / "R"), "--set", "trace.end_s=10", "--set", "engine.max_model_len=10", "--capacity")
    assert r.exit_code == 0, r.output  # every request refused (longer than the context): nothing to measure, not --no-capacity
    assert "capacity not measured (no request the replicas can serve to measure it with)" in r.stdout
