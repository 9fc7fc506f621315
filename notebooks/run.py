"""Rerun the notebooks and save their outputs in place (what the README's figures come from).

pip install -e '.[test]'                 # nbclient and ipykernel come with the test extra
python notebooks/run.py                  # every notebook here, the full sweeps (minutes)
python notebooks/run.py startup_utilization.ipynb --small   # the reduced sweep the tests run
python notebooks/run.py notebooks/batch_jobs.ipynb          # a path from the working folder works too

A notebook named on the command line is looked up from the working folder first, then in this folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, small: bool = False, timeout_s: int = 3600) -> None:
    """Run every cell of the notebook at `path` (in its own folder) and write it back with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    if small:
        os.environ["FLEETSIM_NOTEBOOK_SMALL"] = "1"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)


def notebook_path(name: str) -> Path:
    """A notebook named as the user typed it: a path from the working folder (`notebooks/x.ipynb` from the
    repository's root, `x.ipynb` from notebooks/), else a name in this folder (`x.ipynb` from anywhere)."""
    given = Path(name)
    if given.is_absolute() or given.exists():
        return given.resolve()
    return HERE / given


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rerun notebooks in place.")
    parser.add_argument("names", nargs="*", help="notebook files (default: every *.ipynb next to this script)")
    parser.add_argument("--small", action="store_true", help="the reduced sweep the test suite uses")
    args = parser.parse_args(argv)
    paths = [notebook_path(n) for n in args.names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            sys.exit(f"error: {path}: no such notebook")
        print(f"running {path.name} ...", flush=True)
        execute(path, small=args.small)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
