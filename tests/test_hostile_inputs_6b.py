"""Hostile inputs from a sixth fuzzing pass (files): traces, run logs and run folders that were accepted with impossible
figures, ended in a traceback, or in an error that named no line. Each now ends in one line naming the file (and
line, row or field), the rule and the value, exit code 2, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import edited_run_copy, one_line_error, three_request_trace

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "configs" / "default.yaml")
runner = CliRunner()


def test_azure_timestamps_centuries_apart_do_not_wrap_into_order(tmp_path):
    """Arrivals are nanoseconds from the first, in int64: a row of 1700 after one of 2262 wrapped to +22 years, so an
    unsorted trace was read as sorted (`trace inspect` printed a duration of 711,761,674 s)."""
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2262-01-01 00:00:00,100,10\n1700-01-01 00:00:00,100,10\n")
    one_line_error(["trace", "inspect", str(path)], "line 3: TIMESTAMP must be non-decreasing (got -17734982400 after 0)")
    out = tmp_path / "c.csv"
    one_line_error(["trace", "convert", str(path), str(out)], "line 3: TIMESTAMP must be non-decreasing")
    assert not out.exists()


@pytest.mark.parametrize(
    ("stamp", "says"),
    [
        (
            "2023-11-16 18:15:47+00:00",
            "line 3: TIMESTAMP must be a date-time without a zone offset, as the first row's (got '2023-11-16 18:15:47+00:00')",
        ),
        ("2023-11-16T18:15:47Z", "line 3: TIMESTAMP must be a date-time without a zone offset, as the first row's"),
        (
            "0001-01-01 00:00:00",
            "line 3: TIMESTAMP must be a date-time within 1677-09-21..2262-04-11 (got '0001-01-01 00:00:00')",
        ),
    ],
)
def test_an_azure_timestamp_pyarrow_refuses_is_named_with_its_line(tmp_path, stamp, says):
    """pyarrow refuses a zone offset and a year outside int64 nanoseconds, but the text scan meant to locate the value
    accepted both (pandas reads them): the error was pyarrow's, with no line (`In CSV column #0: CSV conversion error
    to timestamp[ns]`), or pandas' advice to `Pass utc=True in to_datetime` for offsets that differ."""
    path = tmp_path / "az.csv"
    path.write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,100,10\n{stamp},100,10\n")
    one_line_error(["trace", "inspect", str(path)], says)


def _otel(tmp_path: Path, start: object, tokens_in: object) -> Path:
    def span(start: object, tokens_in: object) -> dict[str, object]:
        attrs = [("gen_ai.usage.input_tokens", tokens_in), ("gen_ai.usage.output_tokens", 5)]
        return {
            "traceId": "a",
            "startTimeUnixNano": start,
            "endTimeUnixNano": start,
            "attributes": [{"key": k, "value": {"intValue": v}} for k, v in attrs],
        }

    path = tmp_path / "spans.json"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span("1000", 10), span(start, tokens_in)]}]}]}))
    return path


@pytest.mark.parametrize(
    ("start", "tokens_in", "says"),
    [
        ("2000", 10**30, "spans[1] gen_ai.usage.input_tokens: must be at most 10,000,000,000 tokens"),
        ("99999999999999999999999", 10, "spans[1].startTimeUnixNano: must be below 2**63 ns (got '99999999999999999999999')"),
    ],
)
def test_an_otel_count_or_instant_past_int64_is_refused_not_an_overflow(tmp_path, start, tokens_in, says):
    """A token count of 10**30 or a start of 10**23 ns was an `OverflowError: Python int too large to convert to C
    long` traceback (the spans' int64 arrays)."""
    one_line_error(["trace", "inspect", str(_otel(tmp_path, start, tokens_in))], says)


def test_a_bench_result_whose_input_lens_is_not_a_list_is_refused(tmp_path):
    """`"input_lens": 5` was a `TypeError: object of type 'int' has no len()` traceback in `trace inspect` and
    `validate`."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"input_lens": 5, "output_lens": [1], "ttfts": [0.1], "itls": [[]], "start_times": [0]}))
    one_line_error(["trace", "inspect", str(path)], "input_lens: must be a list, one entry per request (got 'int')")
    one_line_error(["validate", str(path), "--scenario", DEFAULT], "input_lens: must be a list")


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("1,1e30,10,0.1,0.5", "line 3 column 'prompt': must be at most 10,000,000,000 (got 1e+30)"),
        ("1,100,10,0.1,1e308", "line 3 column 'e2e': must be within +-1e+12 (got 1e+308)"),
        ("1e300,100,10,0.1,0.5", "line 3 column 'arrival': must be within +-1e+12 (got 1e+300)"),
    ],
)
def test_a_csv_run_log_is_bounded_as_the_other_layouts(tmp_path, row, says):
    """A CSV run log's counts and times had no upper bound: a prompt of 1e30 tokens printed numpy's `invalid value
    encountered in cast` and then `row 1: prompt_tokens must be >= 1 (got -9.2e+18)`; an E2E of 1e308 s was compared
    as `inf ms` (-100.0%) with exit 0."""
    path = tmp_path / "log.csv"
    path.write_text(f"arrival,prompt,output,ttft,e2e\n0,100,10,0.1,0.5\n{row}\n")
    one_line_error(["validate", str(path), "--scenario", DEFAULT], says)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    trace = three_request_trace(tmp_path_factory.mktemp("trace"))
    res = runner.invoke(app, ["run", DEFAULT, "--set", f"trace={trace}", "--out", str(out), "--no-capacity"])
    assert res.exit_code == 0, res.output
    return out


def test_an_inter_token_gap_longer_than_the_run_is_refused(run_dir, tmp_path):
    """A piece of gaps `a + b j` whose j1 was edited to 2**62 (each gap within 0..inf, the only check) gave a mean
    ITL of 289,370,568,365,689 ms, with exit 0, from a run of seconds."""
    itl = pd.read_parquet(run_dir / "itl.parquet")
    assert (itl["j0"] > 0).any() and (itl["b"] > 0).any()  # pieces, not only single gaps
    edited = edited_run_copy(run_dir, tmp_path, "itl", lambda r: r.assign(j1=r["j1"].where(r["j0"] == 0, 2**62)))
    html = tmp_path / "p.html"
    one_line_error(["report", str(edited), "--html", str(html)], "gaps must not exceed the run's last instant")
    assert not html.exists()


def test_a_replica_busy_longer_than_it_lived_is_refused(run_dir, tmp_path):
    """`busy_s` of 1e6 s on a replica that lived 1.5 s was reported as `busy (GPU-h, share): 555.556 (5882352.9%)` and
    a busy fraction of 58823, with exit 0."""
    edited = edited_run_copy(run_dir, tmp_path, "replicas", lambda r: r.assign(busy_s=1e6))
    one_line_error(
        ["report", str(edited)],
        "(replica_id 0): busy_s must not exceed the replica's life, end_at_s - provision_at_s (got busy_s = 1000000.0)",
    )
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0


@pytest.mark.parametrize(
    ("rows", "args", "says"),
    [
        ("0,5\n1e11,5\n", ["--requests", "10"], "rt.csv: the rate table spans 2e+11 s (time_scale 1), about 2e+11 requests"),
        ("0,1\n1e-300,1\n", ["--duration-s", "100"], "repeated over 100 s it is 1e+302 windows, more than 100,000,000"),
        ("0,1\n10,1e308\n", ["--requests", "10"], "rt.csv line 3: window start and rate must be numbers"),
        ("0,1\n\xff,1\n", ["--requests", "10"], "rt.csv: cannot read rate table (not UTF-8: byte 0xff"),
    ],
)
def test_a_rate_table_that_would_not_fit_in_memory_or_time_is_refused(tmp_path, rows, args, says):
    """`trace gen --rate-table` drew the table's whole span before cutting n requests: a table spanning 1e11 s was a
    `numpy ArrayMemoryError: Unable to allocate 1.46 TiB`; windows of 1e-300 s repeated over the duration never ended;
    a rate of 1e308 printed numpy's overflow warning and then `only 0 arrivals in the horizon`; a byte that is not
    UTF-8 was a `UnicodeDecodeError` traceback."""
    table = tmp_path / "rt.csv"
    table.write_bytes(("window_start_s,total_rate_rps\n" + rows).encode("latin-1"))
    out = tmp_path / "g.csv"
    one_line_error(
        ["trace", "gen", "--out", str(out), "--process", "diurnal", "--rate", "1", "--rate-table", str(table), *args], says
    )
    assert not out.exists()


def test_a_diurnal_period_too_long_for_n_requests_is_refused(tmp_path):
    """`trace gen --process diurnal --period-s 1e300 --requests 10` drew candidates over a horizon of a period: a
    `ValueError: lam value too large` traceback (and a period of 1e10 s, an allocation of terabytes)."""
    out = tmp_path / "g.csv"
    args = ["trace", "gen", "--out", str(out), "--process", "diurnal", "--rate", "1", "--period-s", "1e300", "--requests", "10"]
    one_line_error(args, "n_requests with a diurnal period of 1e+300 s draws about 1.5e+300 candidate arrivals")
    assert not out.exists()


def test_a_parquet_arrival_of_durations_is_refused_not_read_in_microseconds(tmp_path):
    """A Parquet trace whose arrival_at_s holds durations (timedelta64) was read as their count of microseconds: 1 s
    became 1,000,000 s (`trace inspect`: a duration of 2,000,000 s for 2 s), with exit 0; a deadline_at_s of durations
    and a generic trace's time column of date-times with --time-unit s were read the same way."""
    path = tmp_path / "t.parquet"
    times = pd.to_timedelta([0, 1, 2], unit="s")
    pd.DataFrame({"arrival_at_s": times, "prompt_tokens": [100] * 3, "output_tokens": [10] * 3}).to_parquet(path, index=False)
    one_line_error(["trace", "inspect", str(path)], "arrival_at_s must be numbers (got a column of type timedelta64")
    out = tmp_path / "c.csv"
    one_line_error(["trace", "convert", str(path), str(out)], "arrival_at_s must be numbers")
    assert not out.exists()
    deadline = pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [9, 9], "output_tokens": [9, 9]})
    deadline.assign(deadline_at_s=pd.to_timedelta([5, 6], unit="s")).to_parquet(path, index=False)
    one_line_error(["trace", "inspect", str(path)], "deadline_at_s must be numbers (got a column of type timedelta64")
    generic = tmp_path / "g.parquet"
    stamps = pd.to_datetime(["2023-01-01", "2023-01-02", "2023-01-03"])
    pd.DataFrame({"t": stamps, "p": [100] * 3, "o": [10] * 3}).to_parquet(generic, index=False)
    args = [
        "trace",
        "inspect",
        str(generic),
        "--format",
        "generic",
        "--columns",
        "arrival_at_s=t,prompt_tokens=p,output_tokens=o",
    ]
    one_line_error(args, "column 't' holds date-times (datetime64")
    assert runner.invoke(app, [*args, "--time-unit", "datetime"]).exit_code == 0


def test_a_csv_row_of_more_fields_than_the_header_is_named_with_its_line(tmp_path):
    """pyarrow refuses a row of 4 fields under a header of 3 without its line (`cannot parse (CSV parse error:
    Expected 3 columns, got 4: 2,100,10,7)`), and the text scan meant to locate bad values read only the mapped
    columns, so it found nothing."""
    path = tmp_path / "t.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n\n2,100,10,7\n")
    one_line_error(["trace", "inspect", str(path)], "t.csv line 4: 4 fields where the header has 3 (got '2,100,10,7')")


def test_trace_merge_does_not_write_request_ids_its_reader_refuses(tmp_path):
    """`trace merge` wrote a trace with request_id 7 twice (a trace merged with itself, or two with the same ids), or
    with empty ids beside numbered ones read back as 7.000000000 and NaN: `wrote m.csv: 4 requests`, exit 0, and then
    every reader refused the file (`line 3: request_id must be unique`)."""
    ids = tmp_path / "ids.csv"
    ids.write_text("arrival_at_s,prompt_tokens,output_tokens,request_id\n0,100,10,7\n1,100,10,8\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,100,10\n")
    out = tmp_path / "m.csv"
    one_line_error(
        ["trace", "merge", str(out), f"{ids}=interactive", f"{ids}=batch"],
        "request_id '7' is in " + str(ids) + " and in " + str(ids) + " (input 2); request ids must be unique",
    )
    one_line_error(
        ["trace", "merge", str(out), f"{plain}=interactive", f"{ids}=batch"],
        f"merge: {ids} has request ids and {plain} has none",
    )
    assert not out.exists()
    other = tmp_path / "other.csv"
    other.write_text("arrival_at_s,prompt_tokens,output_tokens,request_id\n0,100,10,a\n1,100,10,b\n")
    assert runner.invoke(app, ["trace", "merge", str(out), f"{ids}=interactive", f"{other}=batch"]).exit_code == 0
    assert runner.invoke(app, ["trace", "inspect", str(out)]).exit_code == 0
