from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.workload import load_trace, readers, validate_frame
from sim.workload.writer import write_trace

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "traces"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n2023-11-16 18:17:05.5,100,1\n"


def test_azure_hand_made(tmp_path):
    f = load_trace(write(tmp_path, "a.csv", AZURE))
    assert f.attrs["format"] == "azure"
    assert f["arrival_at_s"].tolist() == pytest.approx([0.0, 0.052, 1.52004])
    assert f["prompt_tokens"].tolist() == [4808, 3180, 100]
    assert f["output_tokens"].dtype == np.int64


def test_bundled_azure_and_mooncake_read():
    conv = load_trace(TRACES / "azure2023_conv.csv")
    assert len(conv) == 19_366 and conv["arrival_at_s"].iloc[0] == 0.0
    moon = load_trace(TRACES / "mooncake_synthetic.jsonl")
    assert len(moon) == 3_993 and moon.attrs["format"] == "mooncake"
    assert list(moon["prefix_hash_ids"].iloc[0][:3]) == [0, 1, 2]


def test_burstgpt_filters_model_and_drops_failures(tmp_path):
    text = (
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,100,20,120,Conversation log\n"
        "6,GPT-4,200,0,200,API log\n"
        "7,GPT-4,300,30,330,API log\n"
        "9,ChatGPT,50,5,55,Conversation log\n"
    )
    path = write(tmp_path, "b.csv", text)
    all_models = load_trace(path)
    assert all_models["prompt_tokens"].tolist() == [100, 300, 50]
    assert all_models.attrs["dropped_failed"] == 1
    gpt4 = load_trace(path, model="GPT-4")
    assert gpt4["prompt_tokens"].tolist() == [300] and gpt4["arrival_at_s"].tolist() == [0.0]
    assert gpt4.attrs["dropped_failed"] == 1 and gpt4.attrs["dropped_other_models"] == 2


def test_vidur_and_generic(tmp_path):
    v = load_trace(write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n1.5,10,2\n2.0,20,3\n"))
    assert v.attrs["format"] == "vidur" and v["arrival_at_s"].tolist() == [0.0, 0.5]
    g = load_trace(
        write(tmp_path, "g.csv", "ts,in,out\n1000,10,2\n1250,20,3\n"),
        columns={"arrival_at_s": "ts", "prompt_tokens": "in", "output_tokens": "out"},
        time_unit="ms",
    )
    assert g["arrival_at_s"].tolist() == [0.0, 0.25]


def test_duplicate_timestamps_are_legal(tmp_path):
    f = load_trace(write(tmp_path, "d.csv", "arrival_at_s,prompt_tokens,output_tokens\n0,1,1\n0,2,2\n1,3,3\n"))
    assert f["prompt_tokens"].tolist() == [1, 2, 3]


def test_canonical_roundtrip_csv_and_parquet_with_optional_columns(tmp_path):
    frame = pd.DataFrame(
        {
            "arrival_at_s": [0.0, 0.5, 0.5],
            "prompt_tokens": [5, 6, 7],
            "output_tokens": [1, 2, 3],
            "request_id": ["a", "b", "c"],
            "klass": ["interactive", "batch", "batch"],
            "priority": [0, 1, 1],
            "deadline_at_s": [10.0, 20.0, 30.0],
            "prefix_hash_ids": [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])],
        }
    )
    for name in ("t.csv", "t.parquet"):
        back = load_trace(write_trace(validate_frame(frame), tmp_path / name))
        assert back["prompt_tokens"].tolist() == [5, 6, 7]
        assert back["klass"].tolist() == ["interactive", "batch", "batch"]
        assert back["deadline_at_s"].tolist() == [10.0, 20.0, 30.0]
        assert [list(h) for h in back["prefix_hash_ids"]] == [[1, 2], [3], [4, 5, 6]]


def test_write_is_atomic_and_leaves_no_partial_file(tmp_path, monkeypatch):
    frame = validate_frame(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [1], "output_tokens": [1]}))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError):
        write_trace(frame, tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,5\n", "cannot tell the trace format"),
        (
            "x.csv",
            "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,abc,2\n",
            "x.csv line 3: prompt_tokens must be an integer (got 'abc')",
        ),
        (
            "x.csv",
            "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,-3,2\n",
            "x.csv line 3: prompt_tokens must be >= 1 (got -3)",
        ),
        ("x.csv", "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,4,0\n", "x.csv line 3: output_tokens must be >= 1 (got 0)"),
        ("x.csv", "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,,2\n", "x.csv line 3: prompt_tokens is missing"),
        (
            "x.csv",
            "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\nnan,4,2\n",
            "x.csv line 3: arrival_at_s must be a finite number (got nan)",
        ),
        (
            "x.csv",
            "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n2,4,2\n1,4,2\n",
            "x.csv line 4: arrival_at_s must be non-decreasing (got 1 after 2)",
        ),
        (
            "x.csv",
            "arrival_at_s,prompt_tokens,output_tokens\n0,5,1\nsoon,4,2\n",
            "x.csv line 3: arrival_at_s must be a number (got 'soon')",
        ),
        ("x.csv", "", "x.csv: empty file"),
        ("x.csv", "arrival_at_s,prompt_tokens,output_tokens\n", "x.csv: the trace has no requests"),
        ("a.csv", AZURE.replace("4808", "4808.5"), "a.csv line 2: ContextTokens must be an integer (got '4808.5')"),
        (
            "a.csv",
            AZURE.replace("2023-11-16 18:17:04.0319600", "yesterday"),
            "a.csv line 3: TIMESTAMP must be a date-time (got 'yesterday')",
        ),
        (
            "m.jsonl",
            '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 5, "input_length": 5\n',
            "m.jsonl line 2: invalid JSON",
        ),
        (
            "m.jsonl",
            '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 5, "input_length": "x", "output_length": 1}\n',
            "m.jsonl line 2: input_length must be a number (got 'x')",
        ),
        (
            "m.jsonl",
            '{"timestamp": 9, "input_length": 5, "output_length": 1}\n{"timestamp": 5, "input_length": 5, "output_length": 1}\n',
            "m.jsonl line 2: timestamp must be non-decreasing",
        ),
        ("m.jsonl", '{"timestamp": 0, "input_len": 5, "output_length": 1}\n', "m.jsonl: missing field 'input_length'"),
    ],
)
def test_malformed_traces_name_file_line_and_value(tmp_path, name, text, message):
    with pytest.raises(FleetsimError) as err:
        load_trace(write(tmp_path, name, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_format_forced(tmp_path):
    path = write(tmp_path, "a.csv", AZURE)
    with pytest.raises(FleetsimError, match=r"a.csv: missing column 'Timestamp' for format burstgpt"):
        load_trace(path, format="burstgpt")
    with pytest.raises(FleetsimError, match=r"unknown trace format 'csv'"):
        load_trace(path, format="csv")


def test_unsorted_across_block_boundary_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BLOCK_BYTES", 64)
    rows = [f"{t},5,1" for t in range(50)] + ["10,5,1"] + [f"{t},5,1" for t in range(60, 70)]
    path = write(tmp_path, "u.csv", "arrival_at_s,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    with pytest.raises(FleetsimError, match=r"u.csv line 52: arrival_at_s must be non-decreasing \(got 10 after 49\)"):
        load_trace(path)
    ok = write(
        tmp_path, "ok.csv", "arrival_at_s,prompt_tokens,output_tokens\n" + "\n".join(f"{t},5,1" for t in range(200)) + "\n"
    )
    assert load_trace(ok)["arrival_at_s"].iloc[-1] == 199.0


def test_missing_file_and_bad_parquet(tmp_path):
    with pytest.raises(FleetsimError, match=r"nope.csv: no such trace file"):
        load_trace(tmp_path / "nope.csv")
    bad = write(tmp_path, "b.parquet", "not parquet")
    with pytest.raises(FleetsimError, match=r"b.parquet: "):
        load_trace(bad, format="canonical")


def test_validate_frame_rules():
    base = {"arrival_at_s": [0.0, 1.0], "prompt_tokens": [1, 2], "output_tokens": [1, 2]}
    with pytest.raises(FleetsimError, match=r"row 1: klass must be one of interactive, batch \(got 'bulk'\)"):
        validate_frame(pd.DataFrame(base | {"klass": ["interactive", "bulk"]}))
    with pytest.raises(FleetsimError, match=r"request_id must be unique"):
        validate_frame(pd.DataFrame(base | {"request_id": ["a", "a"]}))
    with pytest.raises(FleetsimError, match=r"deadline_at_s must be >= arrival_at_s"):
        validate_frame(pd.DataFrame(base | {"deadline_at_s": [5.0, 0.5]}))
    with pytest.raises(FleetsimError, match=r"unknown column 'user'"):
        validate_frame(pd.DataFrame(base | {"user": ["u", "v"]}))


def test_parquet_boolean_token_columns_are_refused(tmp_path):
    """pandas reads True as 1: a Parquet trace of booleans would run as one-token requests."""
    path = tmp_path / "t.parquet"
    pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [True, True], "output_tokens": [3, 4]}).to_parquet(path)
    with pytest.raises(FleetsimError) as err:
        load_trace(path)
    assert str(err.value) == f"{path}: prompt_tokens must be numbers (got a column of type bool)"


def test_a_boolean_among_python_values_is_refused_with_its_row():
    frame = pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [5, True], "output_tokens": [1, 1]}, dtype=object)
    with pytest.raises(FleetsimError, match=r"row 1: prompt_tokens must be a number \(got True\)"):
        validate_frame(frame)


def test_a_fifty_megabyte_first_line_is_refused_without_holding_it(tmp_path, monkeypatch, capsys):
    """`trace gen --prompt empirical:FILE`: the file's header was read whole (millions of fields as Python strings)."""
    import tracemalloc

    from sim.cli import main

    (tmp_path / "big.csv").write_bytes(b"prompt_tokens," + b"7," * 25_000_000)
    monkeypatch.chdir(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "trace",
                    "gen",
                    "--rate",
                    "5",
                    "--requests",
                    "10",
                    "--prompt",
                    "empirical:big.csv:prompt_tokens",
                    "--out",
                    "g.csv",
                ]
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == (
        "error: prompt_tokens: empirical: big.csv: the first line is longer than 1,048,576 bytes; a CSV header names"
        " a few columns (this reader reads no further)\n"
    )
    assert peak < 32 << 20 and sorted(p.name for p in tmp_path.iterdir()) == ["big.csv"]


def test_a_line_longer_than_the_read_block_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1 << 10)
    path = write(tmp_path, "t.csv", "arrival_at_s,prompt_tokens,output_tokens\n0,1,1\n" + "1,2,3" + ",4" * 2000 + "\n")
    with pytest.raises(FleetsimError, match=r"t.csv: a line is longer than 1,024 bytes \(the reader's block\)"):
        load_trace(path)
