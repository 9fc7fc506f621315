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
