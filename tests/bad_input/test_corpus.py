"""Every case of the bad-input corpus (corpus.py) ends as it should: bad input -> exit 2, one line on
stderr, no traceback, nothing written, refused before the simulation clock starts and with its Python
allocations bounded; good-but-unusual input -> exit 0 and a whole run folder. The corpus's size by class is checked too,
so it cannot quietly shrink.

Nothing here reads a clock: "fails early" is that the simulation never started (the clock's `run_until` was
not called), and "bounded work" is a bound on the memory Python allocated (tracemalloc's peak; pyarrow's
own buffers are not counted), both the same on a fast machine and a loaded one."""

import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from sim.cli import main
from sim.results.report import RUN_FILES, RUN_MARKER
from sim.run.clock import CountingEnvironment

from .corpus import CASES, Case

REPO = Path(__file__).resolve().parents[2]
PEAK_BYTES = 256 << 20  # far above any case (the largest inputs are a few MB), far below reading a 50 MB line whole


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def test_the_corpus_has_its_size():
    by_class = Counter(c.klass for c in CASES)
    assert len(CASES) >= 100 and all(by_class[k] >= 10 for k in ("scenario", "trace", "cli", "calibrate", "good")), by_class
    assert len({(c.klass, c.id) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.klass}-{c.id}")
def test_case(case: Case, tmp_path, monkeypatch, capsys):
    for name, data in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(data)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    argv = [a.replace("{repo}", str(REPO)) for a in case.argv]
    clock_starts = []
    run_until = CountingEnvironment.run_until
    monkeypatch.setattr(CountingEnvironment, "run_until", lambda env, until: clock_starts.append(1) or run_until(env, until))
    if case.expect is not None:  # (a good case simulates: traced, it would take several times as long)
        tracemalloc.start()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert peak < PEAK_BYTES, f"{peak / 2**20:.0f} MiB allocated"
    if case.expect is None:
        assert exit_info.value.code == 0, err
        folder = tmp_path / argv[argv.index("--out") + 1]
        if (folder / "platform.json").exists():  # a platform: its summary, and a whole run folder per deployment
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                ["deployments", "platform.json", "summary.json", RUN_MARKER]
            )
            for sub in (folder / "deployments").iterdir():
                assert sorted(p.name for p in sub.iterdir()) == sorted([*RUN_FILES, RUN_MARKER])
            return
        assert sorted(p.name for p in folder.iterdir()) == sorted([*RUN_FILES, RUN_MARKER])
        return
    assert exit_info.value.code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert case.expect in err, err
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written
    assert not clock_starts  # refused before anything was simulated
