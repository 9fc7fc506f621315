"""Hostile inputs, round 11: compressed traces and run logs, run folders' meta.json."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.workload.readers import load_trace, trace_windows
from sim.workload.runlog import read_run_log

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
CSV = b"arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n1,20,6\n"


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def test_gzip_content_under_a_plain_name_is_read_as_what_it_holds(tmp_path):
    plain = tmp_path / "t.csv"
    plain.write_bytes(gzip.compress(CSV))
    assert load_trace(plain)["prompt_tokens"].tolist() == [10, 20]
    assert trace_windows(plain) is None  # (read whole, as a .gz is)


def test_a_run_folder_whose_log_is_compressed_reads_its_meta_and_time_series(tmp_path):
    # (the log was decompressed to a temporary folder and its meta.json, timeseries.csv looked for there: "no
    # meta.json beside the log", the time series silently not compared)
    for name in ("meta.json", "timeseries.csv"):
        shutil.copy(RUN / name, tmp_path / name)
    packed = gzip.compress((RUN / "requests.jsonl").read_bytes())
    (tmp_path / "requests.jsonl.gz").write_bytes(packed)
    for given in (tmp_path, tmp_path / "requests.jsonl.gz"):
        log = read_run_log(given)
        assert log.meta is not None and log.timeseries is not None and log.source.endswith("requests.jsonl.gz")
    (tmp_path / "requests.jsonl.gz").rename(tmp_path / "requests.jsonl")  # compressed in place, named plainly
    log = read_run_log(tmp_path)
    assert log.meta is not None and len(log.trace) == len(read_run_log(RUN).trace)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: gzip.compress(gzip.compress(CSV)), "compressed twice"),
        (lambda: _tar_gz("t.csv", CSV), "a compressed tar archive (first member 't.csv')"),
    ],
)
def test_gzip_of_gzip_or_of_a_tar_is_named_as_such(tmp_path, make, says):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(make())
    code, out = cli("trace", "inspect", str(path))
    assert code == 2 and says in out and str(path) in out and len(out.strip().splitlines()) == 1, out


def _tar_gz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_an_unknown_header_is_shown_bounded(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(",".join(f"col{i}" for i in range(5000)) + "\n1\n")
    with pytest.raises(FleetsimError, match=r"\(\+4,992 more\)\]") as err:
        load_trace(path)
    assert len(str(err.value)) < 500


def test_calibrate_takes_a_compressed_run_log_as_a_run_log(tmp_path):
    # (`bench.json.gz` fell to the step-time branch: "--model and --gpu are required")
    bench = tmp_path / "bench.json.gz"
    bench.write_bytes(gzip.compress(json.dumps({"input_lens": [1]}).encode()))
    code, out = cli("calibrate", str(bench))
    assert code == 2 and "--model and --gpu" not in out and str(bench) in out, out


def test_merge_of_a_trace_with_prefix_ids_and_one_without_writes_csv(tmp_path):
    # (a traceback: the rows without ids were NaN, "'float' object is not iterable")
    azure = tmp_path / "code.csv.gz"
    azure.write_bytes(gzip.compress(CSV))
    mooncake = tmp_path / "m.jsonl"
    mooncake.write_text('{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}\n')
    out = tmp_path / "merged.csv"
    code, text = cli("trace", "merge", str(out), f"{azure}=batch", f"{mooncake}=interactive")
    assert code == 0, text
    back = load_trace(out)
    assert back["prefix_hash_ids"].map(lambda h: 0 if h is None else len(h)).tolist() == [0, 2, 0]  # (ties: the order given)
    assert set(back["job_id"].dropna()) == {"code"}  # (the name without .csv.gz, not "code.csv")


def _run_with_meta(tmp_path: Path, **kwargs: object) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(RUN / "requests.jsonl", folder / "requests.jsonl")
    meta = json.loads((RUN / "meta.json").read_text())
    for key, value in kwargs.items():
        meta["engine_kwargs"][key] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_expert_parallel_on_a_dense_model_is_replayed_without_it(tmp_path):
    # (vLLM runs a dense model with --enable-expert-parallel, ignoring it; the replay was refused, its message keyed
    # twice: "fleet.gpu, fleet.tp: fleet.expert_parallel: llama-3.1-8b is not a mixture-of-experts model")
    from sim.studies.validate import scenario_from_meta

    folder = _run_with_meta(tmp_path, enable_expert_parallel=True, all2all_backend="deepep_low_latency")
    scenario, notes = scenario_from_meta(json.loads((folder / "meta.json").read_text()))
    assert scenario["fleet"]["expert_parallel"] is False and "all2all_backend" not in scenario["fleet"]
    assert any("has no experts (vLLM ignores them" in n for n in notes)


def test_a_scenario_key_checked_while_resolving_is_named_once(tmp_path):
    code, out = cli(
        "run",
        str(REPO / "configs" / "default.yaml"),
        "--no-capacity",
        "--no-progress",
        "--out",
        str(tmp_path / "o"),
        "--set",
        "fleet.expert_parallel=true",
    )
    assert code == 2 and "fleet.gpu, fleet.tp" not in out and ": fleet.expert_parallel: llama-2-70b is not a" in out, out


def test_a_tick_the_replay_cannot_sample_at_names_meta_json(tmp_path):
    # (tick_seconds=0.0001 passed meta.json's check, then the replayed scenario's fleet.timeline_interval_s refused it)
    folder = _run_with_meta(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["tick_seconds"] = 0.0001
    (folder / "meta.json").write_text(json.dumps(meta))
    code, out = cli("validate", str(folder))
    assert code == 2 and "meta.json tick_seconds: must be in [0.001, 3600] seconds (got 0.0001)" in out, out
