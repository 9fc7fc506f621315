"""Hostile inputs, round 13: errors name the file's own line where it holds blank lines the readers skip; an imported
manifest's unknown GPU label is named; model-validator messages, --html names, meta.json paths, one-token spans and
CSV time units."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.workload.readers import load_trace
from sim.workload.runlog import read_run_log
from sim.workload.schema import blank_line, empty_line, file_line

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def test_file_line_counts_the_lines_a_reader_skips(tmp_path):
    path = tmp_path / "probe.csv"
    path.write_bytes(b"".join([b"a,b\n", b"1,2\n", b"\n", b"\r\n", b"  \n", b"3,4\n"]))
    # CSV (pyarrow skips empty lines only: the whitespace line is a row of its own)
    assert [file_line(path, i, header=True, blank=empty_line) for i in range(3)] == [2, 5, 6]
    # JSON lines and pandas skip whitespace-only lines too; no header
    assert [file_line(path, i, header=False, blank=blank_line) for i in range(3)] == [1, 2, 6]


@pytest.mark.parametrize("blanks", [0, 1, 3])
def test_a_trace_csv_with_blank_lines_names_the_bad_rows_own_line(tmp_path, blanks):
    path = tmp_path / "t.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n" + "\n" * blanks + "1,10,-5\n")
    with pytest.raises(FleetsimError, match=rf"t\.csv line {3 + blanks}: output_tokens must be >= 1 \(got -5\)"):
        load_trace(path)


def test_a_trace_csv_with_blank_lines_names_unsorted_times_at_their_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens\n5,10,5\n\n\n1,10,5\n")
    with pytest.raises(FleetsimError, match=r"t\.csv line 5: arrival_at_s must be non-decreasing"):
        load_trace(path)


def test_a_jsonl_trace_with_blank_lines_names_the_bad_rows_own_line(tmp_path):
    path = tmp_path / "t.jsonl"
    row = '{{"timestamp": {t}, "input_length": 10, "output_length": {o}}}\n'
    path.write_text(row.format(t=0, o=5) + "\n   \n" + row.format(t=1, o=-5))
    with pytest.raises(FleetsimError, match=r"t\.jsonl line 4: output_length must be >= 1 \(got -5\)"):
        load_trace(path, format="mooncake")


def test_a_run_log_csv_with_blank_lines_names_the_bad_rows_own_line(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("arrival,prompt,output,ttft,e2e\n0,100,10,0.1,1.0\n\n\n0.5,abc,10,0.1,1.0\n")
    with pytest.raises(FleetsimError, match=r"run\.csv line 5 column 'prompt': must be a whole number >= 1"):
        read_run_log(path, layout="csv")
    code, out = cli("validate", str(path), "--layout", "csv", "--scenario", str(REPO / "configs" / "default.yaml"))
    assert code == 2 and "run.csv line 5 column 'prompt'" in out and "Traceback" not in out


def test_a_gzipped_trace_with_blank_lines_names_the_line_of_its_content(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n\n\n1,0,5\n"))
    with pytest.raises(FleetsimError, match=r"line 5: prompt_tokens must be >= 1 \(got 0\)"):
        load_trace(path)


def test_an_unknown_gpu_label_is_named_when_it_leaves_the_import_without_a_gpu(tmp_path):
    text = (REPO / "configs" / "cluster" / "deployment-hpa.yaml").read_text()
    assert "NVIDIA-H100-80GB-HBM3" in text
    path = tmp_path / "unknown-gpu.yaml"
    path.write_text(text.replace("NVIDIA-H100-80GB-HBM3", "NVIDIA-Frobnicator"))
    code, out = cli("import", str(path))
    assert code == 2 and "Traceback" not in out
    assert "nodeSelector.nvidia.com/gpu.product NVIDIA-Frobnicator: no catalog GPU is known by this label value" in out
    assert len(out.strip().splitlines()) == 1
    code, out = cli("import", str(path), "--gpu", "h100-sxm")  # (--gpu still answers it)
    assert code == 0, out


def test_a_model_validators_message_names_its_values_once(tmp_path):
    code, out = cli(
        "run",
        str(REPO / "configs" / "startup-autoscale.yaml"),
        "--set",
        "fleet.autoscaler.min_replicas=5",
        "--set",
        "fleet.autoscaler.max_replicas=2",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and "min_replicas must be <= max_replicas (got 5 > 2)" in out
    assert out.count("(got ") == 1 and "{" not in out  # (not the block's whole dict after it)
    assert not (tmp_path / "out").exists()


def test_html_output_must_be_named_as_html(tmp_path):
    code, out = cli(
        "run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "out"), "--html", str(tmp_path / "page.png")
    )
    assert code == 2 and "--html" in out and "must end in .html" in out and "Traceback" not in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "page.png").exists()


def test_a_meta_json_error_names_the_file_by_its_path(tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b", run)
    meta = json.loads((run / "meta.json").read_text())
    meta["kv_cache"]["num_gpu_blocks"] = -3
    (run / "meta.json").write_text(json.dumps(meta))
    code, out = cli("validate", str(run), "--kv-blocks", "logged")
    assert code == 2 and f"{run / 'meta.json'}" in out.replace("\n", "") and "Traceback" not in out


def test_by_prompt_says_why_there_is_no_line_when_every_prompt_is_one_length(tmp_path):
    import numpy as np
    import pandas as pd

    from sim.run.simulate import simulate
    from sim.scenario.config import parse_config
    from sim.workload import validate_frame
    from tests.test_validate import write_requests_log
    from tests.test_validate_by_arrival import RAW

    n = 30
    rng = np.random.default_rng(3)
    trace = validate_frame(
        pd.DataFrame(
            {"arrival_at_s": np.sort(rng.uniform(0, 10, n)), "prompt_tokens": [500] * n, "output_tokens": rng.integers(2, 50, n)}
        )
    )
    write_requests_log(tmp_path, simulate(parse_config(RAW), trace, measure_capacity=False), {})
    scenario = tmp_path / "s.yaml"
    import yaml

    scenario.write_text(yaml.safe_dump(RAW))
    code, out = cli("validate", str(tmp_path), "--scenario", str(scenario), "--by-prompt", "2")
    assert code == 0, out
    assert "TTFT line: none (the requests' prompts are all one length" in out


def test_a_one_token_request_whose_last_token_is_seconds_after_its_first_is_refused(tmp_path):
    """One output token is the request's first and its last: a log with 17 s between them has another row's count or
    time (replayed, its E2E read -99%)."""
    lines = [
        '{"request_id": 0, "input_toks": 10, "output_toks": 5, "queued_ts": 0.0, "first_token_ts": 0.1, "last_token_ts": 0.5}',
        '{"request_id": 1, "input_toks": 10, "output_toks": 1, "queued_ts": 0.2, "first_token_ts": 0.3, "last_token_ts": 17.3}',
    ]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        FleetsimError, match=r"requests\.jsonl line 2 last_token_ts: is 17 s after first_token_ts for output_toks 1"
    ):
        read_run_log(tmp_path / "requests.jsonl")
    ok = lines[1].replace("17.3", "0.3005")  # (the same instant, as a log stamps it, within a millisecond)
    (tmp_path / "requests.jsonl").write_text("\n".join([lines[0], ok]) + "\n")
    assert len(read_run_log(tmp_path / "requests.jsonl").trace) == 2
    csv = tmp_path / "run.csv"
    csv.write_text("arrival,prompt,output,ttft,e2e\n0,100,10,0.1,1.0\n\n0.5,100,1,0.2,17.0\n")
    with pytest.raises(FleetsimError, match=r"run\.csv line 4 column 'e2e': must be within 1 s of the TTFT for one output token"):
        read_run_log(csv, layout="csv")
    csv.write_text("arrival,prompt,output,ttft,e2e\n0,100,10,100,1000\n500,100,1,200,700\n")  # ms: 0.5 s apart
    assert len(read_run_log(csv, layout="csv", time_unit="ms").trace) == 2


def test_a_csv_log_whose_every_first_token_takes_minutes_gets_a_unit_note(tmp_path):
    """Milliseconds read as seconds: every TTFT minutes long (a run's fastest first token is never so slow)."""
    from sim.studies.validate import validate
    from tests.test_validate_by_arrival import RAW

    csv = tmp_path / "run.csv"
    rows = [f"{i * 500},{100 + i},{20},{150 + i},{2000 + 10 * i}" for i in range(12)]
    csv.write_text("arrival,prompt,output,ttft,e2e\n" + "\n".join(rows) + "\n")
    as_seconds = validate(read_run_log(csv, layout="csv"), RAW)
    assert any("pass --time-unit ms" in n for n in as_seconds.notes)
    as_ms = validate(read_run_log(csv, layout="csv", time_unit="ms"), RAW)
    assert not any("--time-unit" in n for n in as_ms.notes)
