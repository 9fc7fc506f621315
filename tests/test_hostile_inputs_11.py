"""Hostile inputs, round 11: compressed traces and run logs, run folders' meta.json."""

from __future__ import annotations

import gzip
from pathlib import Path

from typer.testing import CliRunner

from sim.cli import app
from sim.workload.readers import load_trace

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"
CSV = b"arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n1,20,6\n"


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


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
