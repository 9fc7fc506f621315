"""The optional compiled build (`sim.compiled`, `fleetsim compile`): built with mypyc in a scratch copy of the
repository, it must give what the pure-Python modules give, value for value, on a scenario of every feature, and pass
the engine's property tests (fast-forward against the per-step reference, random feature combinations); a stale or
partial build must never run."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim import compiled
from sim.cli import main
from tests import compiled_runs

REPO = Path(__file__).resolve().parents[1]
# a test that replaces a compiled class's method from outside (compiled code calls its own, natively): pure Python only
PATCHES_A_METHOD = "tests/test_lockstep.py::test_a_group_steps_as_long_as_its_slowest_rank_and_idle_ranks_run_dummy_batches"


def _cannot_compile() -> str | None:
    return compiled.missing_tool()


def _env(root: Path, *, pure: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "FLEETSIM_PURE_PYTHON": "1" if pure else "0"}
    env.pop("COVERAGE_PROCESS_START", None)
    return env


def _copy_repo(dst: Path) -> Path:
    skip = shutil.ignore_patterns("*.so", "__pycache__", "_compiled.json", "*.part")
    for name in ("sim", "configs", "traces", "tests"):
        shutil.copytree(REPO / name, dst / name, ignore=skip)
    shutil.copy2(REPO / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with the compiled modules built in it (`fleetsim compile`)."""
    reason = _cannot_compile()
    if reason is not None:
        pytest.skip(f"the compiled build cannot be made here: {reason}")
    root = _copy_repo(tmp_path_factory.mktemp("compiled"))
    log = root / "compile.log"
    proc = _run(root, "-m", "sim", "compile", "--log", str(log), pure=False)
    assert proc.returncode == 0, proc.stderr + (log.read_text()[-3000:] if log.exists() else "")
    # everything inside the package (importable however `sim` is found: an editable install's console script has the
    # package on its path, not the folder that holds it)
    outside = [p.name for p in root.iterdir() if p.name.endswith((".so", ".pyd"))]
    assert outside == [] and compiled.GROUP.startswith("sim.")
    return root


def _run(root: Path, *args: str, pure: bool, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in `root` (its copy of the package first on the path), on the pure or the compiled modules."""
    env = {**_env(root, pure=pure), **(extra or {})}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=1200, check=False)


def _python(root: Path, code: str, *, pure: bool) -> subprocess.CompletedProcess[str]:
    return _run(root, "-c", code, pure=pure)


def _same(a: object, b: object, where: str) -> None:
    if isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), where
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_the_compiled_modules_give_the_pure_python_results_on_every_feature(built: Path, tmp_path: Path) -> None:
    runs = {}
    for pure in (True, False):
        out = tmp_path / f"{'pure' if pure else 'compiled'}.pickle"
        proc = _run(built, str(built / "tests" / "compiled_runs.py"), str(out), pure=pure)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[pure] = pickle.loads(out.read_bytes())
    pure, fast = runs[True], runs[False]
    assert pure.pop("_sim") == fast.pop("_sim") == str(built / "sim" / "__init__.py")  # the copy's package, not the repo's
    assert (pure.pop("_compiled"), pure.pop("_compiled_after")) == (False, False)
    assert (fast.pop("_compiled"), fast.pop("_compiled_after")) == (True, True)  # (so the comparison is not vacuous)
    assert pure.keys() == fast.keys() == {*compiled_runs.FILES, "moe-dp-ep", "platform", "swap"}
    for name in pure:
        _same(pure[name], fast[name], name)


@pytest.mark.slow
def test_the_compiled_engine_passes_the_engine_property_tests(built: Path) -> None:
    """Fast-forward against the per-step reference, and random combinations of features, on the compiled modules."""
    files = ["tests/test_engine_equivalence.py", "tests/test_combinations.py", "tests/test_lockstep.py"]
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "--deselect", PATCHES_A_METHOD]
    proc = _run(built, *args, pure=False, extra={"FLEETSIM_HYPOTHESIS_PROFILE": "ci"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    probe = _python(built, "import sim.compiled as c, sim.run.engine.replica as r; print(c.active(), r.__file__)", pure=False)
    assert probe.stdout.split()[0] == "True", probe.stdout + probe.stderr


@pytest.mark.slow
def test_a_stale_or_partial_build_runs_the_pure_python_modules(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    probe = "import sim.compiled as c, sim.run.engine.replica as r; print(c.active(), r.__file__.endswith('.py'))"
    assert _python(copy, probe, pure=False).stdout.split() == ["True", "False"]
    assert _python(copy, probe, pure=True).stdout.split() == ["False", "True"]  # FLEETSIM_PURE_PYTHON=1: the reference
    source = copy / "sim" / "run" / "engine" / "kv.py"  # a source edited after the build: stale
    source.write_text(source.read_text() + "\n# edited\n")
    stale = _python(copy, probe, pure=False)
    assert stale.stdout.split() == ["False", "True"]
    assert stale.stderr.strip().startswith("fleetsim: running the pure-Python modules, not the compiled ones: stale")
    assert len(stale.stderr.strip().splitlines()) == 1
    (copy / "sim" / "_compiled.json").unlink()  # no manifest (an interrupted build): never run, even with sources as built
    source.write_text(source.read_text().removesuffix("\n# edited\n"))
    assert _python(copy, probe, pure=False).stdout.split() == ["False", "True"]
    clean = _run(copy, "-m", "sim", "compile", "--clean", pure=False)
    assert clean.returncode == 0, clean.stderr
    assert not list(copy.rglob("*.so"))
    status = _run(copy, "-m", "sim", "compile", "--status", pure=False)
    assert status.stdout.startswith("pure Python: no compiled modules")


def test_without_a_compiler_compile_says_so_in_one_line_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CC", "/nonexistent/fleetsim-cc")
    before = compiled.present(), compiled.MANIFEST.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["compile"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("compiling")  # (the progress line, then the error)
    assert err[1].startswith("error: the compiled build needs ")
    assert (compiled.present(), compiled.MANIFEST.exists()) == before


def test_the_suite_runs_the_pure_python_reference() -> None:
    """conftest.py sets FLEETSIM_PURE_PYTHON (the tests that patch an engine method need the Python one)."""
    import sim.run.engine.replica as replica

    assert os.environ["FLEETSIM_PURE_PYTHON"] == "1" or not compiled.present()
    assert replica.__file__ is not None and replica.__file__.endswith(".py")
    assert compiled.active() is False


@pytest.mark.parametrize(
    "args, says",
    [
        (["compile", "--clean", "--status"], "--clean and --status do not combine"),
        (["compile", "--log", "/nonexistent/fleetsim/compile.log"], ""),  # (or: no compiler, no mypyc, here)
    ],
)
def test_compile_refuses_bad_options_in_one_line_and_changes_nothing(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = compiled.present(), compiled.MANIFEST.exists()
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and says in err[0]
    if "--log" in args and _cannot_compile() is None:
        assert "/nonexistent/fleetsim/compile.log: cannot write" in err[0]
    assert (compiled.present(), compiled.MANIFEST.exists()) == before
