"""Prefix hash ids in every format (canonical CSV and Parquet, Mooncake JSONL, frames built in Python): refused with
the row and the value when they are not integers in [0, 2^53 - 1], kept as int64 otherwise."""

import json

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.workload import load_trace, validate_frame
from sim.workload.hash_ids import MAX_HASH_ID
from sim.workload.writer import write_trace

H = "arrival_at_s,prompt_tokens,output_tokens,prefix_hash_ids\n"


def moon(*hash_ids) -> str:
    return "".join(
        json.dumps({"timestamp": i, "input_length": 100, "output_length": 6, "hash_ids": h}) + "\n"
        for i, h in enumerate(hash_ids)
    )


def parquet(tmp_path, ids) -> str:
    path = tmp_path / "t.parquet"
    n = len(ids)
    pd.DataFrame(
        {"arrival_at_s": np.arange(n, dtype=float), "prompt_tokens": [10] * n, "output_tokens": [5] * n, "prefix_hash_ids": ids}
    ).to_parquet(path)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (moon([1, 2], ["a", "b"]), "t.jsonl line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got 'a')"),
        (moon([[1], [2]]), "t.jsonl line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got [1])"),
        (moon([0], [3, -1]), "line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got -1)"),
        (moon([2**53 + 1, 2**53]), "line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got 9007199254740993)"),
        (moon([1], [1.5]), "line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got 1.5)"),
        (moon([10**23]), "line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got 100000000000000000000000)"),
        (moon(7), "line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got 7)"),
        (moon([1], 7), "line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got 7)"),
        (moon([True]), "line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got True)"),
        (moon([1, None]), "line 1: hash_ids must be a list of integers in [0, 2^53 - 1] (got None)"),
    ],
)
def test_mooncake_hash_ids_are_refused_with_the_line_and_the_value(tmp_path, text, message):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(FleetsimError) as err:
        load_trace(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_int_beside_a_float_is_named_as_written_not_as_json_coerced_it(tmp_path):
    """pyarrow's JSON reader types the whole column as float when one id is a float: 2^53 + 1 would read as 2^53."""
    path = tmp_path / "t.jsonl"
    path.write_text(moon([2**53 + 1], [2.0]))
    with pytest.raises(FleetsimError, match=r"line 1: .* \(got 9007199254740993\)"):
        load_trace(path)


def test_good_mooncake_ids_stay_exact_int64(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(moon([0, MAX_HASH_ID], None, [], [3.0]))
    ids = load_trace(path)["prefix_hash_ids"].tolist()
    assert [None if h is None else (h.dtype, h.tolist()) for h in ids] == [
        (np.int64, [0, MAX_HASH_ID]),
        None,
        (np.int64, []),
        (np.int64, [3]),
    ]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1 a", "line 3: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 'a')"),
        ("[[1]]", "line 3: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got '[[1]]')"),
        ("1 -2", "(got '-2')"),
        ("9007199254740993", "(got '9007199254740993')"),
        ("1.5", "(got '1.5')"),
    ],
)
def test_csv_hash_ids_are_refused_with_the_line_and_the_value(tmp_path, cell, message):
    path = tmp_path / "t.csv"
    path.write_text(H + "0,10,5,1 2\n" + f"1,10,5,{cell}\n")
    with pytest.raises(FleetsimError) as err:
        load_trace(path)
    assert f"{path} {message}" in str(err.value) or message in str(err.value)


def test_csv_ids_beside_an_empty_cell_stay_exact(tmp_path):
    """One id per row and an empty cell: pyarrow inferred float64 for the column (2^53 - 1 read as 2^53)."""
    path = tmp_path / "t.csv"
    path.write_text(H + f"0,10,5,{MAX_HASH_ID}\n1,10,5,\n2,10,5,{MAX_HASH_ID - 1}\n")
    ids = load_trace(path)["prefix_hash_ids"].tolist()
    assert ids[1] is None and ids[0].tolist() == [MAX_HASH_ID] and ids[2].tolist() == [MAX_HASH_ID - 1]
    assert ids[0].dtype == np.int64


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([["a", "b"]], "row 1: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 'a')"),
        ([[[1], [2]], [[3]]], "row 1: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got [1])"),
        ([[1], [-1]], "row 2: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got -1)"),
        (
            [np.array([2**53], dtype=np.int64)],
            "row 1: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 9007199254740992)",
        ),
        ([[0.5]], "(got 0.5)"),
        ([[True]], "(got True)"),
    ],
)
def test_parquet_hash_ids_are_refused_with_the_row_and_the_value(tmp_path, ids, message):
    with pytest.raises(FleetsimError) as err:
        load_trace(parquet(tmp_path, ids))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hash_ids_round_trip_through_csv_and_parquet_as_int64(tmp_path):
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 1.0, 2.0],
                "prompt_tokens": [10, 20, 30],
                "output_tokens": [1, 2, 3],
                "prefix_hash_ids": [[MAX_HASH_ID, 1], None, [2, 3]],  # equal lengths: still one list per row
            }
        )
    )
    for name in ("t.csv", "t.parquet"):
        back = load_trace(write_trace(frame, tmp_path / name))["prefix_hash_ids"].tolist()
        assert back[1] is None and back[0].tolist() == [MAX_HASH_ID, 1] and back[2].tolist() == [2, 3], name
        assert back[0].dtype == np.int64
