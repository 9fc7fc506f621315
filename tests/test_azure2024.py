"""Azure's 2024 week-long LLM inference traces (`AzureLLMInferenceTrace_code_1week.csv`, `_conv_1week.csv`): the 2023
layout, with timestamps that carry a UTC offset (`2024-05-10 00:00:00.009930+00:00`) and drop their fractional
seconds when those are zero. They were refused (`must be a date-time without a zone offset`)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.workload.readers import load_trace

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROWS_2024 = (
    "2024-05-10 00:00:00.009930+00:00,2162,5\n"
    "2024-05-10 00:00:01+00:00,1209,3\n"
    "2024-05-10 00:00:01.018007+00:00,2162,2\n"
    "2024-05-10 00:00:02.085022+00:00,3700,8\n"
)


def test_a_2024_trace_reads_with_its_offsets_and_mixed_fractions(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_code_1week.csv"
    path.write_text(HEADER + ROWS_2024)
    frame = load_trace(path)
    assert frame.attrs["format"] == "azure"
    np.testing.assert_allclose(frame["arrival_at_s"], [0.0, 0.99007, 1.008077, 2.075092], atol=1e-9)
    assert frame["prompt_tokens"].tolist() == [2162, 1209, 2162, 3700]
    assert frame["output_tokens"].tolist() == [5, 3, 2, 8]


def test_offsets_that_differ_are_read_in_utc(tmp_path):
    """00:00 at +02:00 is 22:00 UTC: a row at 23:00:01 UTC comes 3,601 s later, not an hour earlier."""
    path = tmp_path / "az.csv"
    path.write_text(HEADER + "2024-05-10 00:00:00+02:00,100,5\n2024-05-09 23:00:01Z,100,5\n")
    assert load_trace(path, format="azure")["arrival_at_s"].tolist() == [0.0, 3601.0]


def test_a_2024_trace_equals_the_same_trace_written_without_offsets(tmp_path):
    zoned = tmp_path / "zoned.csv"
    zoned.write_text(HEADER + ROWS_2024)
    naive = tmp_path / "naive.csv"
    naive.write_text(HEADER + ROWS_2024.replace("+00:00", ""))
    a, b = load_trace(zoned), load_trace(naive)
    assert a[["arrival_at_s", "prompt_tokens", "output_tokens"]].equals(b[["arrival_at_s", "prompt_tokens", "output_tokens"]])


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        (
            "2024-05-10 00:00:00.5+00:00,100,5\n2024-05-10 00:00:01,100,5\n",
            "az.csv line 3: TIMESTAMP must be a date-time with a zone offset, as the first row's (got '2024-05-10 00:00:01')",
        ),
        (
            "2024-05-10 00:00:00.5+00:00,100,5\n2024-05-10 00:00:00.1+00:00,100,5\n",
            "az.csv line 3: TIMESTAMP must be non-decreasing",
        ),
        (
            "2024-05-10 00:00:00+00:00,100,5\n2024-13-10 00:00:01+00:00,100,5\n",
            "az.csv line 3: TIMESTAMP must be a date-time (got '2024-13-10 00:00:01+00:00')",
        ),
    ],
)
def test_a_2024_row_that_breaks_the_rules_is_named_with_its_line(tmp_path, rows, says):
    path = tmp_path / "az.csv"
    path.write_text(HEADER + rows)
    r = CliRunner().invoke(app, ["trace", "inspect", str(path)])
    assert r.exit_code == 2, r.output
    assert says in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_a_run_replays_a_2024_trace(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_conv_1week.csv"
    path.write_text(HEADER + ROWS_2024)
    r = CliRunner().invoke(
        app,
        [
            "run",
            "configs/default.yaml",
            "--set",
            f"trace={{file: {path}}}",
            "--no-capacity",
            "--no-progress",
            "--json",
            "--out",
            str(tmp_path / "run"),  # (not the main job's runs/default)
        ],
    )
    assert r.exit_code == 0, r.output
    assert '"completed": 4' in r.output


def test_a_generic_parquet_of_zoned_text_reads_in_utc_and_names_a_row_that_differs(tmp_path):
    import pandas as pd

    cols = {"arrival_at_s": "ts", "prompt_tokens": "i", "output_tokens": "o"}
    frame = pd.DataFrame({"ts": ["2024-05-10 00:00:00+02:00", "2024-05-09 22:00:01.5Z"], "i": [10, 20], "o": [1, 2]})
    frame.to_parquet(tmp_path / "zoned.parquet")
    read = load_trace(tmp_path / "zoned.parquet", format="generic", columns=cols, time_unit="datetime")
    assert read["arrival_at_s"].tolist() == [0.0, 1.5]
    frame.assign(ts=["2024-05-10 00:00:00", "2024-05-10 00:00:01Z"]).to_parquet(tmp_path / "mixed.parquet")
    r = CliRunner().invoke(
        app,
        [
            "trace",
            "inspect",
            str(tmp_path / "mixed.parquet"),
            "--format",
            "generic",
            "--time-unit",
            "datetime",
            "--columns",
            "arrival_at_s=ts,prompt_tokens=i,output_tokens=o",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "row 2: column 'ts' must be a date-time without a zone offset, as the first row's" in r.output
