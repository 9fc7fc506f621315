"""The optional compiled build: the event loop and the engine's hot modules compiled to C extensions with mypyc.

    pip install -e '.[compiled]' && fleetsim compile     # needs a C compiler; about a minute
    fleetsim compile --status                            # which modules run, and why
    fleetsim compile --clean                             # back to pure Python
    FLEETSIM_PURE_PYTHON=1 fleetsim run ...              # the pure-Python modules, even when compiled ones are present

The compiled modules are the same source (`HOT_MODULES`, annotated Python that mypy checks strictly), compiled
whole: the results are identical, float for float (mypyc keeps Python's float and integer semantics and the order of
every operation), and the pure-Python modules stay the reference (`tests/test_compiled.py` builds them and compares
runs of every feature). Python loads a compiled module in place of its source when both are in the package; which
one a process runs is settled when `sim` is first imported (`select`):

- the compiled modules, when the build's manifest (`_compiled.json`, written last by `build`) matches this Python and
  the digest of every source file under `sim/` (a change anywhere could change what the compiled code assumed);
- the pure-Python modules otherwise: no build, `FLEETSIM_PURE_PYTHON` set, a build for another Python, or sources
  changed since the build (stale: one line on stderr says so, once per process; `fleetsim compile` rebuilds).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # where the package sits (the repository, or site-packages)
MANIFEST = PACKAGE / "_compiled.json"
# the shared library every compiled module links: sim/fleetsim__mypyc.<suffix>, inside the package (a module beside it
# would not be importable where only the package is on the path, as with an editable install's console script)
GROUP = "sim.fleetsim"
PURE_ENV = "FLEETSIM_PURE_PYTHON"

# the modules the event loop spends its time in (a profile of `benchmarks/fleet_speed.py`), and those whose classes
# subclass theirs (a compiled class's subclass is compiled too, so that calls stay native)
HOT_MODULES = (
    "sim.run.clock",
    "sim.run.engine.sequence",
    "sim.run.engine.records",
    "sim.run.engine.kv",
    "sim.run.engine.scheduler",
    "sim.run.engine.step_time",
    "sim.run.engine.group",
    "sim.run.engine.replica",
    "sim.run.engine.lockstep",
    "sim.run.engine.spec_replica",
    "sim.run.engine.spec_group",
    "sim.run.engine.speculative",
    "sim.run.engine.prefix_cache",
    "sim.run.fleet.feed",
    "sim.run.fleet.load_index",
    "sim.run.fleet.cluster",
)

# the mypy settings the compile needs (those of pyproject.toml's [tool.mypy] that decide types; strictness aside)
MYPY_INI = """[mypy]
python_version = {major}.{minor}
plugins = pydantic.mypy

[mypy-simpy.*,scipy.*,pyarrow.*,pandas.*]
ignore_missing_imports = True
"""

_BUILD_SCRIPT = """import os
import sys
from mypyc.build import mypycify
from setuptools import setup

paths = sys.argv[1:]
sys.argv = [sys.argv[0], "build_ext", "--inplace", "--parallel", str(os.cpu_count() or 1)]
setup(name="fleetsim-compiled", ext_modules=mypycify(paths, opt_level="3", group_name={group!r}))
"""


class CompileError(Exception):
    """The build cannot be made or failed: the message says why in one line (not a FleetsimError: `sim.errors` imports
    pydantic, and this module is imported with `sim`)."""


def missing_tool() -> str | None:
    """What the build needs and this machine lacks (mypyc, setuptools, a C compiler, Python's headers), or None."""
    import shutil
    import sysconfig

    for name in ("mypyc", "setuptools"):
        if importlib.util.find_spec(name) is None:
            return f"{name} (pip install -e '.[compiled]')"
    cc = os.environ.get("CC", str(sysconfig.get_config_var("CC") or "cc")).split()[0]
    if shutil.which(cc) is None:
        return f"a C compiler ({cc!r} not found)"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "Python's headers (Python.h)"
    return None


def _source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's own (".cpython-311-x86_64-linux-gnu.so")


def _extension(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_name(module.rsplit(".", 1)[1] + _suffix())


def _group_library() -> Path:
    return PACKAGE / f"{GROUP.rsplit('.', 1)[1]}__mypyc{_suffix()}"


def sources_digest() -> str:
    """SHA-256 over every Python source under the package, by relative path (what a build compiled against)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _python_tag() -> str:
    return f"{sys.implementation.cache_tag}{_suffix()}"


def present() -> list[Path]:
    """The compiled files beside the sources: every extension module in the package (this build's or an earlier
    one's, of another module list) and the group library."""
    return sorted(PACKAGE.rglob(f"*{_suffix()}"))


def _compiled_names() -> set[str]:
    """The modules with an extension beside their source."""
    group = _group_library()
    return {".".join(p.relative_to(ROOT).with_name(p.name.removesuffix(_suffix())).parts) for p in present() if p != group}


def status() -> tuple[bool, str]:
    """(whether the compiled modules would run, why), from the manifest, the sources and the environment."""
    if not present():
        return False, "no compiled modules (`fleetsim compile` builds them)"
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False, f"{PURE_ENV} is set"
    if not MANIFEST.exists():
        return False, "compiled modules without a complete build's manifest (`fleetsim compile` rebuilds them)"
    try:
        manifest = json.loads(MANIFEST.read_text())
        tag, digest = manifest["python"], manifest["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"unreadable manifest {MANIFEST} (`fleetsim compile` rebuilds it)"
    if tag != _python_tag():
        return False, f"compiled for another Python ({tag}; this is {_python_tag()}): `fleetsim compile` rebuilds them"
    if _compiled_names() != set(HOT_MODULES) or not _group_library().exists():
        return False, "some compiled modules are missing or left from another build (`fleetsim compile` rebuilds them)"
    if digest != sources_digest():
        return False, "stale: sources under sim/ changed since `fleetsim compile` (run it again)"
    return True, f"{len(HOT_MODULES)} modules; {MANIFEST.name} matches the sources"


class _SourceFinder:
    """Imports `names` from their sources, ahead of the compiled extensions beside them (a meta-path finder; not
    derived from `importlib.abc.MetaPathFinder`, whose import costs `import sim` a few milliseconds)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


_selected: bool | None = None


def select() -> bool:
    """Settle, once per process, whether the compiled modules run (see the module docstring); True if they do.
    Called when `sim` is imported, before any hot module is."""
    global _selected
    if _selected is not None:
        return _selected
    if not present():  # the common case: nothing built, nothing to do
        _selected = False
        return False
    ok, why = status()
    if not ok:
        sys.meta_path.insert(0, _SourceFinder(_compiled_names() | set(HOT_MODULES)))
        if os.environ.get(PURE_ENV, "") in ("", "0"):  # (asked for: nothing to say)
            print(f"fleetsim: running the pure-Python modules, not the compiled ones: {why}", file=sys.stderr)
    _selected = ok
    return ok


def active() -> bool:
    """Whether this process runs the compiled modules (a loaded hot module is an extension)."""
    mod = sys.modules.get("sim.run.engine.replica")
    if mod is not None:
        return not str(getattr(mod, "__file__", "")).endswith(".py")
    return select()


def clean() -> list[Path]:
    """Remove the compiled files (the manifest first, so that a partial removal is never taken for a build)."""
    removed = []
    if MANIFEST.exists():
        MANIFEST.unlink()
        removed.append(MANIFEST)
    for p in present():
        p.unlink()
        removed.append(p)
    return removed


def _write_log(log: Path | None, text: str) -> None:
    if log is None:
        return
    try:
        log.write_text(text)
    except OSError as err:
        raise CompileError(f"--log {log}: cannot write the compiler's output ({err.strerror or err})") from None


def build(*, log: Path | None = None) -> list[Path]:
    """Compile `HOT_MODULES` with mypyc in a scratch copy of the package, then move the extensions beside the sources
    and write the manifest last (an interrupted build leaves no manifest: the pure-Python modules run). Raises
    `CompileError` when mypy, setuptools or a C compiler is missing, or the compile fails (its output in `log`)."""
    import shutil
    import subprocess
    import tempfile

    lacks = missing_tool()
    if lacks is not None:
        raise CompileError(f"the compiled build needs {lacks}; the pure-Python modules run as they are")
    _write_log(log, "")  # (checked before a minute of compiling)
    digest = sources_digest()
    with tempfile.TemporaryDirectory(prefix="fleetsim-compile-") as tmp:
        work = Path(tmp)
        shutil.copytree(PACKAGE, work / "sim", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "_compiled.json"))
        (work / "mypy.ini").write_text(MYPY_INI.format(major=sys.version_info[0], minor=sys.version_info[1]))
        (work / "build_compiled.py").write_text(_BUILD_SCRIPT.format(group=GROUP))
        paths = [_source(m).relative_to(ROOT).as_posix() for m in HOT_MODULES]
        proc = subprocess.run(
            [sys.executable, "build_compiled.py", "--config-file=mypy.ini", *paths],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        output = proc.stdout + proc.stderr
        _write_log(log, output)
        if proc.returncode != 0:
            lines = [ln for ln in output.splitlines() if "error:" in ln] or output.splitlines()[-1:] or ["no output"]
            raise CompileError(f"the compile failed ({lines[0].strip()}){f'; its output: {log}' if log else ''}")
        built = {m: work.joinpath(*m.split(".")).with_name(m.rsplit(".", 1)[1] + _suffix()) for m in HOT_MODULES}
        group = work / "sim" / _group_library().name
        missing = [p.name for p in [*built.values(), group] if not p.exists()]
        if missing:
            raise CompileError(f"the compile did not produce {', '.join(missing)}")
        placed = []
        try:
            clean()
            for src, dst in [*((built[m], _extension(m)) for m in HOT_MODULES), (group, _group_library())]:
                part = dst.with_name(dst.name + ".part")
                shutil.copy2(src, part)
                os.replace(part, dst)  # (a new file: a process that has the old one loaded keeps it)
                placed.append(dst)
        except OSError as err:  # (e.g. a package installed where this user cannot write): no manifest, nothing runs
            raise CompileError(f"cannot place the compiled modules beside the sources in {PACKAGE}: {err}") from None
    if sources_digest() != digest:
        clean()
        raise CompileError("sources under sim/ changed during the compile; run it again")
    part = MANIFEST.with_name(MANIFEST.name + ".part")
    part.write_text(json.dumps({"python": _python_tag(), "sources": digest, "modules": list(HOT_MODULES)}, indent=1))
    os.replace(part, MANIFEST)
    return placed
