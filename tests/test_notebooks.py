"""The notebooks run end to end (with the reduced sweep the notebook offers for tests)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ANSWERS = {  # what each notebook's last cell says when it has run to the end
    "startup_utilization.ipynb": "of what its billed GPUs could",
    "fleet_planning.ipynb": "the cheapest fleet for Llama-2-70B",
    "batch_jobs.ipynb": "Backfilling the online fleet finishes",
    "disaggregation.ipynb": "On the same four GPUs, disaggregation pays",
    "spot_capacity.ipynb": "On spot with an on-demand fallback the startup fleet costs",
    "moe_cost.ipynb": "the smallest SLO-meeting fleet costs",
    "autoscalers.ipynb": "Against the startup fleet's HPA",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_executes(name, monkeypatch):
    monkeypatch.setenv("FLEETSIM_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Traceback" not in printed
    assert ANSWERS[name] in printed  # the answer cell ran and printed its sentence
    assert os.environ["FLEETSIM_NOTEBOOK_SMALL"] == "1"


def test_the_documented_rerun_command_executes_a_notebook_in_place(tmp_path):
    """`python notebooks/run.py NAME` (the README's rerun command) executes the cells and saves the outputs."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sim\nprint('ran', 6 * 7)")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    subprocess.run([sys.executable, str(NOTEBOOKS / "run.py"), str(path)], check=True, capture_output=True, text=True)
    out = nbformat.read(path, as_version=4)
    assert "ran 42" in "".join(o.get("text", "") for o in out.cells[0].outputs)


def test_the_rerun_command_takes_a_path_from_the_working_folder(tmp_path):
    """`python notebooks/run.py notebooks/x.ipynb` from the repository's root took the path relative to notebooks/
    (notebooks/notebooks/x.ipynb: no such notebook); a name alone still means one in notebooks/."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('ran', 6 * 7)")]
    (tmp_path / "sub").mkdir()
    nbformat.write(nb, tmp_path / "sub" / "tiny.ipynb")
    r = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "run.py"), "sub/tiny.ipynb"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    out = nbformat.read(tmp_path / "sub" / "tiny.ipynb", as_version=4)
    assert "ran 42" in "".join(o.get("text", "") for o in out.cells[0].outputs)
    r = subprocess.run([sys.executable, str(NOTEBOOKS / "run.py"), "no-such.ipynb"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and f"{NOTEBOOKS / 'no-such.ipynb'}: no such notebook" in r.stderr
