"""Every case of the bad-input corpus (corpus.py) ends as it should: bad input -> exit 2, one line on
stderr, no traceback, nothing written, in bounded time; good-but-unusual input -> exit 0 and a whole run
folder. The corpus's size by class is checked too, so it cannot quietly shrink."""

import time
from collections import Counter
from pathlib import Path

import pytest

from sim.cli import main
from sim.report import RUN_FILES, RUN_MARKER

from .corpus import CASES, Case

REPO = Path(__file__).resolve().parents[2]
SECONDS = 10  # a generous bound: every case takes well under a second here


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def test_the_corpus_has_its_size():
    by_class = Counter(c.klass for c in CASES)
    assert len(CASES) >= 100 and all(by_class[k] >= 10 for k in ("scenario", "trace", "cli", "good")), by_class
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
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert elapsed < SECONDS
    if case.expect is None:
        assert exit_info.value.code == 0, err
        folder = tmp_path / argv[argv.index("--out") + 1]
        assert sorted(p.name for p in folder.iterdir()) == sorted([*RUN_FILES, RUN_MARKER])
        return
    assert exit_info.value.code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert case.expect in err, err
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written
