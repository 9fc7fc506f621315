"""A trace file read a window at a time (`sim.workload.readers.trace_windows`), for a run larger than memory: the
windows, put together, are the frame `load_trace` reads (value for value, dtype for dtype), each window checked as it
is read, with the errors a whole read gives; formats and transforms that need the whole file say so (None) and are
read whole. `fleetsim run --stored` on such a trace never holds it whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.workload.readers as readers
from sim.errors import FleetsimError
from sim.workload.readers import load_trace, trace_windows
from sim.workload.schema import REQUIRED
from sim.workload.transforms import TraceFile, load_trace_file, trace_file_windows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_blocks(monkeypatch):
    """CSV blocks of 4 KiB: a few hundred rows a window."""
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1 << 12)


def frame(n: int = 2000, t0: float = 12.5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "arrival_at_s": t0 + np.cumsum(rng.exponential(0.3, n)),
            "prompt_tokens": rng.integers(1, 4000, n),
            "output_tokens": rng.integers(1, 900, n),
        }
    )


def assert_same(windows, whole: pd.DataFrame) -> int:
    parts = list(windows)
    cat = pd.concat(parts, ignore_index=True)
    assert list(cat.columns) == list(REQUIRED)
    for c in REQUIRED:
        assert cat[c].dtype == whole[c].dtype
        np.testing.assert_array_equal(cat[c].to_numpy(), whole[c].to_numpy())
    return len(parts)


def test_a_bundled_azure_trace_in_windows_is_the_trace_read_whole(small_blocks):
    path = REPO / "traces" / "azure2023_code.csv"  # wall-clock times, re-based to the first
    assert assert_same(trace_windows(path), load_trace(path)) > 10


def test_canonical_and_generic_csv_in_windows(small_blocks, tmp_path):
    df = frame()
    df.to_csv(tmp_path / "c.csv", index=False)
    assert assert_same(trace_windows(tmp_path / "c.csv"), load_trace(tmp_path / "c.csv")) > 5
    g = df.rename(columns={"arrival_at_s": "t", "prompt_tokens": "a", "output_tokens": "b"})
    g["t"] *= 1000
    g.to_csv(tmp_path / "g.csv", index=False)
    kw = {"columns": {"arrival_at_s": "t", "prompt_tokens": "a", "output_tokens": "b"}, "time_unit": "ms"}
    assert assert_same(trace_windows(tmp_path / "g.csv", **kw), load_trace(tmp_path / "g.csv", **kw)) > 5


def test_a_canonical_parquet_trace_is_read_a_row_group_at_a_time(tmp_path):
    pq.write_table(pa.Table.from_pandas(frame(), preserve_index=False), tmp_path / "c.parquet", row_group_size=300)
    assert assert_same(trace_windows(tmp_path / "c.parquet"), load_trace(tmp_path / "c.parquet")) == 7


def test_what_needs_the_whole_file_is_read_whole(tmp_path):
    assert trace_windows(REPO / "traces" / "mooncake_synthetic.jsonl") is None  # prefix hash ids
    df = frame(50)
    df["priority"] = 1  # a canonical optional column: a stored trace holds the three required ones only
    df.to_csv(tmp_path / "o.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "o.parquet")
    assert trace_windows(tmp_path / "o.csv") is None and trace_windows(tmp_path / "o.parquet") is None
    burst = pd.DataFrame(
        {"Timestamp": [0.0, 1.0], "Model": ["ChatGPT", "GPT-4"], "Request tokens": [5, 6], "Response tokens": [7, 0]}
    )
    burst.to_csv(tmp_path / "b.csv", index=False)
    assert trace_windows(tmp_path / "b.csv") is None  # BurstGPT keeps its model column
    spec = TraceFile(file=str(tmp_path / "o.csv"), sample=0.5)
    assert trace_file_windows(spec, base_dir=tmp_path) is None


def test_row_by_row_transforms_apply_to_each_window(small_blocks, tmp_path):
    frame().to_csv(tmp_path / "c.csv", index=False)
    spec = TraceFile(file="c.csv", rate_scale=3.0, max_context=2048)
    windows = trace_file_windows(spec, base_dir=tmp_path)
    assert windows is not None
    assert assert_same(windows, load_trace_file(spec, base_dir=tmp_path, seed=0)) > 5


def same_error(path: Path) -> str:
    """The error a whole read gives, which the windows give too (once read that far)."""
    with pytest.raises(FleetsimError) as whole:
        load_trace(path)
    windows = trace_windows(path)
    assert windows is not None
    with pytest.raises(FleetsimError) as windowed:
        list(windows)
    assert str(windowed.value) == str(whole.value)
    return str(whole.value)


def _bad_rows(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    df = df.astype({"prompt_tokens": object})
    if kind == "unsorted":
        df.loc[1500, "arrival_at_s"] = df.loc[1499, "arrival_at_s"] - 1.0
    elif kind == "negative":
        df.loc[1500, "prompt_tokens"] = -3
    elif kind == "text":
        df.loc[1500, "prompt_tokens"] = "many"
    return df


@pytest.mark.parametrize("kind", ["unsorted", "negative", "text"])
def test_a_bad_row_late_in_a_csv_is_the_same_error(small_blocks, tmp_path, kind):
    path = tmp_path / "c.csv"
    _bad_rows(frame(), kind).to_csv(path, index=False)
    assert "line 1502" in same_error(path)


@pytest.mark.parametrize("kind", ["unsorted", "negative"])
def test_a_bad_row_in_a_later_row_group_is_the_same_error(tmp_path, kind):
    path = tmp_path / "c.parquet"
    df = _bad_rows(frame(), kind).astype({"prompt_tokens": np.int64})
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=400)
    assert "row 1501" in same_error(path)


def test_a_rule_broken_in_a_later_row_group_that_the_whole_file_checks_first_is_the_same_error(tmp_path):
    """The whole-file check runs each rule over all rows (times before token counts; within times, finite before
    sorted): a bad count in group 1 and an unsorted time in group 4 is the unsorted time, in windows too."""
    path = tmp_path / "c.parquet"
    df = _bad_rows(frame(), "unsorted")
    df.loc[10, "prompt_tokens"] = 0
    df.loc[20, "arrival_at_s"] = df.loc[19, "arrival_at_s"] - 1.0
    df.loc[1700, "arrival_at_s"] = np.nan
    pq.write_table(pa.Table.from_pandas(df.astype({"prompt_tokens": np.int64}), preserve_index=False), path, row_group_size=400)
    assert same_error(path) == f"{path} row 1701: arrival_at_s is missing"


def test_a_block_that_holds_the_header_alone_is_no_empty_window(tmp_path, monkeypatch):
    """Blocks of 64 bytes: the header (40) and an Azure row (36) overrun one, and pyarrow gives an empty batch for the
    header alone, which a datetime column's origin (and the token checks) must not see."""
    path = tmp_path / "azure.csv"
    stamps = pd.Timestamp("2023-11-16 18:15:46.6805900") + pd.to_timedelta(np.arange(50) * 0.137, unit="s")
    rows = "".join(f"{s:%Y-%m-%d %H:%M:%S.%f}0,{100 + i},{1 + i % 9}\n" for i, s in enumerate(stamps))
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    whole = load_trace(path)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 64)
    assert_same([load_trace(path)], whole)
    assert assert_same(trace_windows(path), whole) > 10


def test_empty_files_are_refused_as_a_whole_read_refuses_them(tmp_path):
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("arrival_at_s,prompt_tokens,output_tokens\n")
    pq.write_table(pa.Table.from_pandas(frame(0), preserve_index=False), tmp_path / "e.parquet")
    for name in ("e.csv", "h.csv", "e.parquet"):
        with pytest.raises(FleetsimError) as whole:
            load_trace(tmp_path / name)
        with pytest.raises(FleetsimError) as windowed:
            windows = trace_windows(tmp_path / name)
            assert windows is not None
            list(windows)
        assert str(windowed.value) == str(whole.value), name


def test_fleetsim_run_stored_reads_a_trace_file_in_windows(small_blocks, tmp_path, monkeypatch):
    """The same summary as the run in memory, and the stored run never reads the trace whole."""
    from typer.testing import CliRunner

    import sim.run.simulate as simulate_module
    from sim.cli import app

    frame(400, seed=3).to_csv(tmp_path / "t.csv", index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        (REPO / "configs" / "default.yaml")
        .read_text()
        .replace("file: ../traces/azure2023_conv.csv", f"file: {tmp_path / 't.csv'}")
    )
    args = ["run", str(config), "--no-progress", "--json", "--no-capacity", "--set", "trace.sample=null"]
    a = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert a.exit_code == 0, a.output

    def whole(*_args, **_kwargs):
        raise AssertionError("read whole")

    monkeypatch.setattr(simulate_module, "scenario_trace", whole)
    b = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--stored"])
    assert b.exit_code == 0, b.output
    sa, sb = json.loads(a.stdout), json.loads(b.stdout)
    assert sa["completed"] == sb["completed"] == 400
    assert sa.keys() == sb.keys()
    for k, v in sa.items():  # (standard deviations are summed a chunk at a time: the same to the last bits)
        assert v == sb[k] or (isinstance(v, float) and v == pytest.approx(sb[k], rel=1e-12)), k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.floats(0, 50, allow_nan=False), st.integers(1, 5000), st.integers(1, 900)), min_size=1, max_size=300
    ),
    spoil=st.one_of(
        st.none(), st.tuples(st.integers(0, 299), st.sampled_from(["-1", "x", "", "2.5", "1e400", "0"]), st.integers(0, 2))
    ),
    crlf=st.booleans(),
    block=st.sampled_from([64, 256, 4096]),
)
def test_any_csv_in_windows_is_the_csv_read_whole_or_the_same_error(tmp_path_factory, monkeypatch, rows, spoil, crlf, block):
    """Random rows (sorted or not), one field perhaps spoiled, LF or CRLF, blocks of 64 bytes up: the windows put
    together are the whole read's frame, or both refuse the file with the same line."""
    monkeypatch.setattr(readers, "BLOCK_BYTES", block)
    lines = [[f"{t!r}", str(p), str(o)] for t, p, o in sorted(rows)]
    if spoil is not None:
        i, value, col = spoil
        lines[i % len(lines)][col] = value
    end = "\r\n" if crlf else "\n"
    path = tmp_path_factory.mktemp("w") / "t.csv"
    path.write_bytes((end.join(["arrival_at_s,prompt_tokens,output_tokens", *(",".join(r) for r in lines)]) + end).encode())
    try:
        whole = load_trace(path)
    except FleetsimError:
        same_error(path)
        return
    windows = trace_windows(path)
    assert windows is not None
    assert_same(windows, whole)


def test_a_scenario_reads_its_trace_file_in_windows_unless_it_needs_the_whole(tmp_path):
    """A trace file with row-by-row transforms streams; sampling, a generated trace or batch jobs (merged into the
    trace) do not."""
    import yaml

    from sim.run.simulate import scenario_trace, scenario_trace_windows
    from sim.scenario.config import parse_config

    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["trace"] = {"file": str(REPO / "traces" / "azure2023_code.csv"), "max_context": 4096}
    windows = scenario_trace_windows(parse_config(raw))
    assert windows is not None
    assert_same(windows, scenario_trace(parse_config(raw)))
    assert scenario_trace_windows(parse_config({**raw, "trace": {**raw["trace"], "sample": 0.5}})) is None
    backfill = yaml.safe_load((REPO / "configs" / "batch-backfill.yaml").read_text())
    assert scenario_trace_windows(parse_config(backfill)) is None  # (generated)
    assert scenario_trace_windows(parse_config({**backfill, "trace": raw["trace"]})) is None  # (batch jobs)
