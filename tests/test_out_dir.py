"""`fleetsim run --out` never destroys a folder that is not a run folder, and checks outputs first."""

from pathlib import Path

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
