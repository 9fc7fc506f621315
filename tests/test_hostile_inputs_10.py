"""Tenth bad-input pass: Azure 2024 zoned date-times, Qwen Bailian traces and prefix hash block sizes, model names
from run logs and manifests, and the new catalog entries."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.workload.readers import load_trace

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


# --- date-times with a zone offset -----------------------------------------------------------------------------
@pytest.mark.parametrize("later", ["2024-05-10 00:00:01+00", "2024-05-10 00:00:01+00:0", "2024-05-10 00:00:01 Z"])
def test_a_naive_trace_names_a_row_with_an_offset_in_any_form_pandas_reads(tmp_path, later):
    """`+00` (hours only) and `+00:0` escaped the zone pattern: pandas then parsed that row zoned among naive ones (a
    TypeError traceback from the CSV reader, 'Mixed timezones ... Pass utc=True' from the Parquet one)."""
    path = tmp_path / "az.csv"
    path.write_text(AZURE + f"2024-05-10 00:00:00,10,5\n{later},10,5\n")
    with pytest.raises(FleetsimError, match=r"line 3: TIMESTAMP must be a date-time without a zone offset, as the first"):
        load_trace(path, format="azure")
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"t": ["2024-05-10 00:00:00", later], "p": [10, 10], "o": [5, 5]}).to_parquet(parquet)
    columns = {"arrival_at_s": "t", "prompt_tokens": "p", "output_tokens": "o"}
    with pytest.raises(FleetsimError, match=r"row 2: column 't' must be a date-time without a zone offset, as the first"):
        load_trace(parquet, format="generic", columns=columns, time_unit="datetime")


def test_an_hours_only_offset_reads_as_a_zone(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE + "2024-05-10 01:00:00+01,10,5\n2024-05-10 00:00:01+00,10,5\n")
    assert load_trace(path, format="azure")["arrival_at_s"].tolist() == [0.0, 1.0]


def test_a_date_alone_is_not_taken_for_an_offset(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE + "2024-05-10,10,5\n2024-05-11,10,5\n")
    assert load_trace(path, format="azure")["arrival_at_s"].tolist() == [0.0, 86400.0]


@pytest.mark.parametrize(
    "value", ["2024-05-10 00:00:01 +00:00", "2024-05-10 00:00:01.123456789123+00:00", " 2024-05-10 00:00:01+00:00"]
)
def test_a_date_time_pyarrow_cannot_read_is_located(tmp_path, value):
    """pandas reads a space before the offset, twelve fractional digits and surrounding spaces, pyarrow does not: the
    error was 'cannot parse (... Row #2 ...)', a block's row, not the file's line."""
    path = tmp_path / "az.csv"
    path.write_text(AZURE + f"2024-05-10 00:00:00+00:00,10,5\n{value},10,5\n")
    with pytest.raises(FleetsimError, match=re.escape(f"line 3: TIMESTAMP must be a date-time (got '{value}')")):
        load_trace(path, format="azure")


# --- prefix hash block sizes ---------------------------------------------------------------------------------
def test_a_mooncake_trace_cut_to_a_context_keeps_its_block_size_check_quiet():
    """`max_context` cuts prompts but not their ids (the engine reads those within the prompt): a valid run of the
    Mooncake sample at a 4,096-token context was refused, its 512-token ids 'standing for about 89 tokens each'."""
    from sim.run.pools import check_hash_blocks
    from sim.workload.transforms import clip_tokens

    frame = load_trace("traces/mooncake_synthetic.jsonl").iloc[:50]
    clipped = clip_tokens(frame, 4096)
    check_hash_blocks(clipped, 512)
    with pytest.raises(FleetsimError, match="its mooncake hash ids stand for 512 tokens each"):
        check_hash_blocks(clipped, 16)  # (the declared size still checked)
    finer = clipped.copy()
    finer["prompt_tokens"] = 1000  # (under the cap: its ids are counted)
    with pytest.raises(FleetsimError, match=r"trace row 0: \d+ prefix hash ids for 1000 prompt tokens"):
        check_hash_blocks(finer, 512)


# --- model names -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("deepseek-ai/DeepSeek-V2", "deepseek-v2"),
        ("deepseek-ai/DeepSeek-V2.5-1210", "deepseek-v2"),
        ("deepseek-ai/DeepSeek-V2.5", "deepseek-v2"),
        ("deepseek-ai/DeepSeek-V2-Lite", None),
        ("deepseek", None),
    ],
)
def test_a_deepseek_generation_is_not_stripped_as_a_version(name, model):
    """`-V3` was stripped like Mistral's `-v0.3`, so DeepSeek-V2 (another architecture) stemmed to `deepseek`, as
    DeepSeek-V3 did, and replayed as V3 without a word. V2 and V2.5 are now the catalog's `deepseek-v2` (by name, as
    its aliases list them), never V3; a generation the catalog does not hold is no model at all."""
    from sim.scenario.importer import model_from_name

    assert model_from_name(name) == model


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("deepseek-ai/DeepSeek-V3-Base", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek-v3"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ],
)
def test_versions_after_a_size_still_stem(name, model):
    from sim.scenario.importer import model_from_name

    assert model_from_name(name) == model


def test_a_local_path_with_a_trailing_slash_keeps_its_quantization():
    """model_from_name drops the trailing slash; weight_bits_from_name read the empty part after it: an FP8
    checkpoint's folder replayed at 16-bit weights."""
    from sim.scenario.importer import model_from_name, weight_bits_from_name

    name = "/models/Llama-3.1-8B-Instruct-FP8/"
    assert model_from_name(name) == "llama-3.1-8b"
    assert weight_bits_from_name(name) == 8


def test_report_epoch_without_openmetrics_and_a_huge_gpus_per_node_are_refused(tmp_path):
    """`report --epoch` stamps OpenMetrics samples only (without --openmetrics it was ignored, and looked applied);
    `roofline --gpus-per-node` had no upper bound where the scenario's is 1024."""
    from typer.testing import CliRunner

    from sim.cli import app

    run = CliRunner().invoke(
        app,
        [
            "run",
            "configs/default.yaml",
            "--set",
            "trace.end_s=60",
            "--no-capacity",
            "--no-progress",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert run.exit_code == 0, run.output
    r = CliRunner().invoke(app, ["report", str(tmp_path / "r"), "--epoch", "1700000000"])
    assert r.exit_code == 2 and "--epoch stamps the --openmetrics samples" in r.output, r.output
    r = CliRunner().invoke(
        app, ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "1", "--gpus-per-node", "100000"]
    )
    assert r.exit_code == 2 and "--gpus-per-node must be at most 1024 (got 100000)" in r.output, r.output
