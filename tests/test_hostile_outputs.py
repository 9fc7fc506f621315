"""Outputs and round trips a careless or hostile command line can break (found by fuzzing the CLI): files written by
replacing what is at the path refuse links, devices and pipes; `report` never writes into the folder it reads, and a
folder edited by hand fails in one line with nothing written; `import` and `export` check the fleet they write as
`fleetsim run` would."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import three_request_trace

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    trace = three_request_trace(tmp_path_factory.mktemp("trace"))
    res = runner.invoke(app, ["run", str(REPO / "configs" / "default.yaml"), "--set", f"trace={trace}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def one_line_error(res, text: str) -> None:
    assert res.exit_code == 2 and res.output.count("\n") == 1 and text in res.output, res.output


def test_a_link_or_a_pipe_at_an_output_path_is_refused_not_replaced(tmp_path):
    (tmp_path / "target.yaml").write_text("mine\n")
    os.symlink(tmp_path / "target.yaml", tmp_path / "link.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    scenario = str(REPO / "configs" / "default.yaml")
    one_line_error(runner.invoke(app, ["export", scenario, "--out", str(tmp_path / "link.yaml")]), "is a symbolic link")
    one_line_error(runner.invoke(app, ["export", scenario, "--out", str(tmp_path / "fifo.yaml")]), "is not an ordinary file")
    assert (tmp_path / "link.yaml").is_symlink() and (tmp_path / "target.yaml").read_text() == "mine\n"


def test_report_writes_nothing_into_the_folder_it_reads(run_dir):
    before = (run_dir / "requests.parquet").read_bytes()
    res = runner.invoke(app, ["report", str(run_dir), "--openmetrics", str(run_dir / "requests.parquet")])
    one_line_error(res, "inside the run folder it reads")
    assert (run_dir / "requests.parquet").read_bytes() == before


def test_a_run_folder_edited_by_hand_fails_in_one_line_and_writes_nothing(run_dir, tmp_path):
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (edited / f.name).write_bytes(f.read_bytes())
    replicas = pd.read_parquet(edited / "replicas.parquet")
    replicas.drop(columns=["busy_s"]).to_parquet(edited / "replicas.parquet", index=False)
    res = runner.invoke(
        app, ["report", str(edited), "--openmetrics", str(tmp_path / "m.txt"), "--html", str(tmp_path / "p.html")]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert not (tmp_path / "m.txt").exists() and not (tmp_path / "p.html").exists()


def _copy(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (to / f.name).write_bytes(f.read_bytes())
    return to


EDITS = {  # file, edit, what the one-line error says
    "output tokens below zero": ("requests", lambda r: r.assign(output_tokens=r["output_tokens"] - 100), "output_tokens = -"),
    "first token before arrival": (
        "requests",
        lambda r: r.assign(first_token_at_s=r["arrival_at_s"] - 5, scheduled_at_s=r["arrival_at_s"] - 5),
        "scheduled_at_s must not precede arrival_at_s",
    ),
    "completion before first token": (
        "requests",
        lambda r: r.assign(completed_at_s=r["first_token_at_s"] - 0.5),
        "completed_at_s = ",
    ),
    "an unknown status": ("requests", lambda r: r.assign(status="done"), "status must be one of"),
    "a NaN arrival": ("requests", lambda r: r.assign(arrival_at_s=float("nan")), "arrival must be a finite time >= 0"),
    "an infinite completion": ("requests", lambda r: r.assign(completed_at_s=float("inf")), "instants must be finite"),
    "text for numbers": ("requests", lambda r: r.assign(prompt_tokens="many"), "column prompt_tokens must hold numbers"),
    "negative busy seconds": ("replicas", lambda r: r.assign(busy_s=-1.0), "busy_s = -1.0"),
    "a negative gap": ("itl", lambda r: r.assign(a=-1.0, b=0.0), "gaps must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_impossible_records_fail_in_one_line_naming_the_file_row_rule_and_value(run_dir, tmp_path, case):
    """Records no simulation leaves (found fuzzing: `report` printed them as figures, exit 0) are refused before any
    figure is computed or any file written."""
    name, edit, says = EDITS[case]
    edited = _copy(run_dir, tmp_path / "edited")
    frame = pd.read_parquet(edited / f"{name}.parquet")
    edit(frame).to_parquet(edited / f"{name}.parquet", index=False)
    res = runner.invoke(app, ["report", str(edited), "--html", str(tmp_path / "p.html")])
    one_line_error(res, says)
    assert f"{name}.parquet" in res.output and "nothing written" in res.output
    assert not (tmp_path / "p.html").exists()
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0  # the folder as written reads back


def test_import_and_export_check_the_fleet_they_write(tmp_path):
    (tmp_path / "m.sh").write_text("vllm serve /models/foo\n")
    res = runner.invoke(app, ["import", str(tmp_path / "m.sh"), "--gpu", "h100-sxm", "--model", "no-such-model"])
    one_line_error(res, "the scenario imported from")
    scenario = str(REPO / "configs" / "default.yaml")
    one_line_error(runner.invoke(app, ["export", scenario, "--set", "fleet.tp=3"]), "fleet.tp: tp=3 must divide")
    one_line_error(runner.invoke(app, ["export", str(REPO / "configs" / "platform.yaml")]), "a platform of 2 deployments")


def test_import_refuses_a_negative_replica_count_and_an_unknown_kv_cache_type(tmp_path):
    manifest = """apiVersion: apps/v1
kind: Deployment
metadata: {name: llm}
spec:
  replicas: %s
  template:
    spec:
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      containers:
      - name: vllm
        image: vllm/vllm-openai
        args: [--model, meta-llama/Llama-3.1-8B-Instruct%s]
        resources: {limits: {nvidia.com/gpu: 1}}
"""
    (tmp_path / "d.yaml").write_text(manifest % ("-3", ""))
    one_line_error(runner.invoke(app, ["import", str(tmp_path / "d.yaml")]), "spec.replicas must be >= 0 (got -3)")
    (tmp_path / "d.yaml").write_text(manifest % ("0", ""))
    res = runner.invoke(app, ["import", str(tmp_path / "d.yaml")])
    assert res.exit_code == 0 and "0 replicas (scaled to zero)" in res.output, res.output
    (tmp_path / "d.yaml").write_text(manifest % ("1", ", --kv-cache-dtype, fp3"))
    one_line_error(runner.invoke(app, ["import", str(tmp_path / "d.yaml")]), "--kv-cache-dtype 'fp3': not a KV cache type")
