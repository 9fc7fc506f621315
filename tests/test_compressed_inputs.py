"""Gzip-compressed traces and run logs (`*.csv.gz`, `*.jsonl.gz`, `*.json.gz`) are read as what they decompress to:
they were refused as "not UTF-8" (a trace) or "not a vllm bench JSON" (a run log)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.workload.compressed import decompressed
from sim.workload.readers import load_trace, trace_windows
from sim.workload.runlog import read_run_log

REPO = Path(__file__).resolve().parents[1]


def gz(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


@pytest.mark.parametrize("name", ["azure2023_code.csv", "mooncake_synthetic.jsonl"])
def test_a_compressed_trace_reads_as_the_plain_one(tmp_path, name):
    plain = REPO / "traces" / name
    packed = gz(plain, tmp_path / (name + ".gz"))
    a, b = load_trace(plain), load_trace(packed)
    assert a.attrs["format"] == b.attrs["format"]
    pd_cols = ["arrival_at_s", "prompt_tokens", "output_tokens"]
    assert a[pd_cols].equals(b[pd_cols])
    assert b.attrs["source"] == str(packed)
    assert trace_windows(packed) is None  # (read whole)


def test_a_compressed_run_log_folder_file_and_its_errors_name_the_gz(tmp_path):
    run = REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b" / "requests.jsonl"
    log = read_run_log(gz(run, tmp_path / "requests.jsonl.gz"))
    plain = read_run_log(run)
    assert log.source.endswith("requests.jsonl.gz") and log.trace.equals(plain.trace)
    bench = tmp_path / "bench.json.gz"
    bench.write_bytes(gzip.compress(json.dumps({"input_lens": [1]}).encode()))
    with pytest.raises(FleetsimError, match=r"^" + str(bench).replace(".", r"\.") + ": "):
        read_run_log(bench)


@pytest.mark.parametrize(
    ("payload", "says"),
    [  # (mtime=0 and named cases: pytest-xdist's workers must collect the same test ids)
        (gzip.compress(b"TIMESTAMP,ContextTokens,GeneratedTokens\n", mtime=0)[:12], "not a readable gzip file"),
        (b"plain text, not gzip\n", "not a readable gzip file (Not a gzipped file"),
        (gzip.compress(b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,-1,5\n", mtime=0), "line 2: ContextTokens"),
    ],
    ids=["truncated", "not-gzip", "bad-row"],
)
def test_a_bad_compressed_trace_is_one_line_naming_the_gz(tmp_path, payload, says):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(payload)
    r = CliRunner().invoke(app, ["trace", "inspect", str(path)])
    assert r.exit_code == 2, r.output
    assert says in r.output and str(path) in r.output and "fleetsim-gz-" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_gzip_bomb_is_refused_before_it_is_written_out(tmp_path):
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(b"0" * (8 << 20)))
    with pytest.raises(FleetsimError, match="decompresses to more than"), decompressed(path, limit=1 << 20):
        pass


def test_a_run_replays_a_compressed_trace(tmp_path):
    packed = gz(REPO / "traces" / "azure2023_code.csv", tmp_path / "code.csv.gz")
    args = ["run", str(REPO / "configs" / "default.yaml"), "--no-capacity", "--no-progress", "--json"]
    a = CliRunner().invoke(app, [*args, "--set", f"trace={{file: {packed}, end_s: 300}}"])
    shutil.copy(REPO / "traces" / "azure2023_code.csv", tmp_path / "code.csv")
    b = CliRunner().invoke(app, [*args, "--set", f"trace={{file: {tmp_path / 'code.csv'}, end_s: 300}}"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout)["completed"] == json.loads(b.stdout)["completed"] > 0


@pytest.mark.parametrize(("column", "meant"), [("deadline_s", "deadline_at_s"), ("adaptor", "adapter"), ("class", "klass")])
def test_a_canonical_column_spelt_nearly_right_is_refused_not_dropped(tmp_path, column, meant):
    """(Beside the compressed inputs: another way a trace's values were lost without a word.) A canonical CSV's extra
    columns are not read; one spelt like a schema column the file lacks is a typo whose values would vanish."""
    path = tmp_path / "t.csv"
    path.write_text(f"arrival_at_s,prompt_tokens,output_tokens,{column}\n0,10,5,1\n")
    with pytest.raises(FleetsimError, match=f"column '{column}' is not a canonical column; did you mean '{meant}'"):
        load_trace(path)
    path.write_text("arrival_at_s,prompt_tokens,output_tokens,user_id,request\n0,10,5,7,x\n")
    assert len(load_trace(path)) == 1  # (columns of other names are still passed over)
