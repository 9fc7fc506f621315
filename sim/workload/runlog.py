"""Real serving runs, per request: what a run's logs say happened, for `fleetsim validate` to replay and compare.

Layouts, detected from the file (or forced with `layout`):
  requests    JSON lines, one per request: `input_toks`, `output_toks`, `queued_ts`, `first_token_ts`,
              `last_token_ts` (seconds, one monotonic clock; `scheduled_ts` optional) — the engine-side timestamps
              vLLM's request stats carry, as LLMServingSim's benchmark writes them. A folder holding
              `requests.jsonl` is read with its `meta.json` (the engine arguments, vLLM's resolved configuration, KV
              cache size, hardware) and `timeseries.csv` (per tick: `t`, `running`, `waiting`, `kv_cache_pct`), if there.
  vllm-bench  `vllm bench serve --save-result` JSON: per request `input_lens`, `output_lens`, `ttfts` (s), `itls`
              (s, the gaps after the first token) and `start_times` (s; the client's send time: needs a vLLM recent
              enough to save it), `errors` (a request with an error is left out). Client-side times: they include the
              HTTP and tokenizer overheads the engine-side layout does not. Without `start_times`, the send times of a
              benchmark at `request_rate` inf are what it did (`sends_rebuilt`): all at 0 without `max_concurrency`;
              with it, a closed loop, rebuilt from the measured latencies (the first `max_concurrency` requests sent
              at 0, each later one, in the result's order, the moment a request in flight ended: the benchmark's
              semaphore wakes its waiters in order; a failed request holds its slot while it streamed, at once
              without a first token). At a finite rate the sends were random draws the result does not keep: refused.
  csv         a CSV with a column mapping (`columns`: arrival, prompt, output, ttft, e2e -> the file's names) and a
              time unit: per request its arrival, prompt and output tokens, TTFT and end-to-end latency.

Definitions (vLLM's and its benchmark's): arrival = the request's queued (or send) time; TTFT = first token -
arrival; E2E = last token - arrival; TPOT = (E2E - TTFT) / (output tokens - 1), for requests of 2 or more tokens.
Every problem is a one-line `FleetsimError` naming the file, the line or field, the rule and the value.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError, _short
from sim.spec import MAX_TIME_S, MAX_TOKENS
from sim.workload.compressed import decompressed, is_gzip
from sim.workload.schema import RepeatedKey, blank_line, file_line, no_repeated_key, validate_frame

LAYOUTS = ("requests", "vllm-bench", "csv")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
REQUEST_KEYS = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
BENCH_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "start_times")
CSV_FIELDS = ("arrival", "prompt", "output", "ttft", "e2e")
TIMESERIES_COLUMNS = ("t", "running", "waiting", "kv_cache_pct")
MAX_REQUESTS = 10_000_000
MIN_STEP_S = 1e-3  # no engine step of a real model is shorter: a whole log timed under it is on another unit
# one request's tokens never stream faster than this apart (10,000 a second; the fastest served models, speculating,
# stream a few thousand): a log whose typical request does holds copied stamps or a truncated stream
MIN_TOKEN_GAP_S = 1e-4
# a request of one output token has its first token for its last: a log that puts them further apart than this has
# another request's count or time on the row (its E2E compared against a one-token replay: -99%)
ONE_TOKEN_SPAN_S = 1.0


@dataclass(frozen=True, slots=True)
class RunLog:
    """A measured run: its trace (arrivals from 0, prompt and output tokens; request order as logged, sorted by
    arrival), the measured TTFT and E2E per request (s, same order), the inter-token gaps when the log has them,
    and the run's engine metadata and time series when given."""

    source: str
    layout: str
    trace: pd.DataFrame
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    itl_s: np.ndarray | None  # every gap of every request, pooled (None: the log has no per-token times)
    meta: dict[str, Any] | None
    timeseries: pd.DataFrame | None
    dropped: int = 0  # requests the log marks failed (left out)
    sends_rebuilt: str = ""  # how the send times were rebuilt where the log has none ("": as logged)

    @property
    def tpot_s(self) -> np.ndarray:
        out = self.trace["output_tokens"].to_numpy()
        multi = out > 1
        tpot: np.ndarray = (self.e2e_s[multi] - self.ttft_s[multi]) / (out[multi] - 1)
        return tpot


def read_run_log(
    path: str | Path, *, layout: str = "auto", columns: Mapping[str, str] | None = None, time_unit: str = "s"
) -> RunLog:
    """Read a run's per-request log (see the module docstring for the layouts)."""
    p = Path(path)
    if not p.exists():
        raise FleetsimError(f"{p}: no such file or folder (a run log: requests.jsonl, a vllm bench JSON or a CSV)")
    if p.is_dir():
        folder, p = p, p / "requests.jsonl"
        if not p.is_file() and (folder / "requests.jsonl.gz").is_file():
            p = folder / "requests.jsonl.gz"
        if not p.is_file():
            raise FleetsimError(f"{folder}: a run folder must hold requests.jsonl (per-request timestamps)")
    if is_gzip(p):  # (its content, named without .gz: the layout detected as the plain file's; meta.json beside p)
        with decompressed(p) as plain:
            log = _read_run_log(plain, layout, columns, time_unit, beside=p.parent)
        return dataclasses.replace(log, source=str(p))
    return _read_run_log(p, layout, columns, time_unit, beside=p.parent)


def _read_run_log(p: Path, layout: str, columns: Mapping[str, str] | None, time_unit: str, *, beside: Path) -> RunLog:
    """`read_run_log` of a file; a requests log's meta.json and timeseries.csv are read from the folder `beside`
    (a compressed log is read from a temporary copy: its companions are beside the .gz)."""
    meta = timeseries = None
    rebuilt = ""
    if layout == "auto":
        layout = _detect(p)
    if layout not in LAYOUTS:
        raise FleetsimError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    if time_unit not in TIME_UNITS:
        raise FleetsimError(f"time unit must be one of {', '.join(TIME_UNITS)} (got {time_unit!r})")
    if layout == "requests":
        arrival, prompt, output, ttft, e2e, dropped = _read_requests(p)
        itl = None
        # (each read when there at all: a folder of the name was passed over, its time series silently not compared)
        meta_path, ts = beside / "meta.json", beside / "timeseries.csv"
        for companion in (meta_path, ts):
            if companion.exists() and not companion.is_file():
                what = "a folder" if companion.is_dir() else "not a regular file"
                raise FleetsimError(f"{companion}: is {what}; a run folder's {companion.name} is a file (or absent)")
        meta = _read_json_object(meta_path) if meta_path.exists() else None
        timeseries = _read_timeseries(ts) if ts.exists() else None
        _check_within_run(p, meta_path, meta, arrival, e2e)
    elif layout == "vllm-bench":
        arrival, prompt, output, ttft, e2e, itl, dropped, rebuilt = _read_bench(p)
    else:
        arrival, prompt, output, ttft, e2e, dropped = _read_csv(p, columns, TIME_UNITS[time_unit])
        itl = None
    if arrival.size == 0:
        raise FleetsimError(f"{p}: no completed request in the log")
    # (a forward pass of any model takes longer than MIN_STEP_S: a log timing every request, or every request's
    # tokens after the first, in less is on another unit or holds copied stamps; measured against such times, the
    # replay's errors are percentages of 1e15 or inf)
    longest = float(e2e.max())
    if not longest >= MIN_STEP_S:
        said = "0 (first and last token at its arrival)" if longest == 0 else f"under 1 ms (the longest: {longest:.3g} s)"
        raise FleetsimError(
            f"{p}: every request's latency is {said}: no serving run is timed so; check the timestamps' columns and unit"
        )
    if not float(ttft.max()) >= MIN_STEP_S:
        raise FleetsimError(
            f"{p}: every request's first token comes within 1 ms of its arrival (the latest: {float(ttft.max()):.3g} s): "
            "no engine's prefill is that quick; check the timestamps' columns and unit"
        )
    multi = output > 1
    if multi.any() and not (e2e[multi] - ttft[multi] >= MIN_STEP_S).any():
        raise FleetsimError(
            f"{p}: no request's tokens are spread in time (the last token within 1 ms of the first, for all "
            f"{int(multi.sum()):,} requests of more than one token): a log of streamed tokens is needed to compare TPOT"
        )
    if multi.any():
        gap = float(np.median((e2e[multi] - ttft[multi]) / (output[multi] - 1)))
        if gap < MIN_TOKEN_GAP_S:
            raise FleetsimError(
                f"{p}: the requests' tokens come {gap * 1e6:.3g} us apart (the median over {int(multi.sum()):,} requests "
                f"of more than one token), over {round(MIN_TOKEN_GAP_S**-1):,} a second for one request, which no "
                "engine streams; check the timestamps' columns and unit, and that each request's last token is its "
                "stream's end"
            )
    order = np.argsort(arrival, kind="stable")
    t0 = float(arrival[order[0]])
    frame = pd.DataFrame({"arrival_at_s": arrival[order] - t0, "prompt_tokens": prompt[order], "output_tokens": output[order]})
    trace = validate_frame(frame, source=str(p))
    return RunLog(str(p), layout, trace, ttft[order], e2e[order], itl, meta, timeseries, dropped, rebuilt)


def _detect(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "requests"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "vllm-bench"
    raise FleetsimError(f"{p}: cannot tell the layout from the extension {suffix!r}; give one of {', '.join(LAYOUTS)}")


def _fail(p: Path, where: str, rule: str, value: Any) -> FleetsimError:
    if isinstance(value, np.generic):  # (a number read by pandas: shown as the number, not its numpy type)
        value = value.item()
    return FleetsimError(f"{p} {where}: {rule} (got {_short(value)})")


def _number(p: Path, where: str, value: Any, *, integer: bool = False, minimum: float = 0.0) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:  # (no float holds it: refused so)
        raise _fail(p, where, "must be a finite number", value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(p, where, "must be a finite number", value)
    if integer and value != int(value):
        raise _fail(p, where, "must be a whole number", value)
    if value < minimum:
        raise _fail(p, where, f"must be >= {minimum:g}", value)
    if integer and value > MAX_TOKENS:
        raise _fail(p, where, f"must be <= {MAX_TOKENS:,}", value)
    if abs(value) > MAX_TIME_S:  # (differences of such instants overflow to inf)
        raise _fail(p, where, f"must be within +-{MAX_TIME_S:g} s", value)
    return float(value)


def _read_requests(p: Path) -> Any:
    rows: list[tuple[float, float, float, float, float]] = []
    dropped = 0
    ids: dict[str, int] = {}  # request_id -> its line (an id logged twice is one request counted twice)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # (a byte-order mark, as Windows tools write one, is skipped)
    except (OSError, UnicodeDecodeError) as err:
        raise FleetsimError(f"{p}: cannot read ({err})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(rows) >= MAX_REQUESTS:
            raise FleetsimError(f"{p}: more than {MAX_REQUESTS:,} requests; split the log")
        try:
            rec = json.loads(line, object_pairs_hook=no_repeated_key)
        except RepeatedKey as err:
            raise FleetsimError(
                f"{p} line {n}: field {err.args[0]!r} is given twice (a JSON reader keeps one of them silently)"
            ) from None
        except json.JSONDecodeError as err:
            raise FleetsimError(f"{p} line {n}: invalid JSON ({err.msg})") from None
        except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
            raise FleetsimError(
                f"{p} line {n}: unreadable JSON: nested too deep or a number too long ({_short(str(err))})"
            ) from None
        if not isinstance(rec, dict):
            raise _fail(p, f"line {n}", "must be a JSON object", rec)
        missing = [k for k in REQUEST_KEYS if k not in rec]
        if missing:
            raise FleetsimError(f"{p} line {n}: missing {', '.join(missing)} (each request needs {', '.join(REQUEST_KEYS)})")
        rid = rec.get("request_id")
        if rid is not None:
            key = str(rid)
            if key in ids:
                raise FleetsimError(f"{p} line {n} request_id: {_short(rid)} is also on line {ids[key]}; each request once")
            ids[key] = n
        if rec["first_token_ts"] is None or rec["last_token_ts"] is None:
            dropped += 1  # a request that never produced a token (failed or aborted)
            continue
        prompt = _number(p, f"line {n} input_toks", rec["input_toks"], integer=True, minimum=1)
        output = _number(p, f"line {n} output_toks", rec["output_toks"], integer=True, minimum=1)
        queued = _number(p, f"line {n} queued_ts", rec["queued_ts"], minimum=-math.inf)
        first = _number(p, f"line {n} first_token_ts", rec["first_token_ts"], minimum=queued)
        last = _number(p, f"line {n} last_token_ts", rec["last_token_ts"], minimum=first)
        if output == 1 and last - first > ONE_TOKEN_SPAN_S:
            raise _fail(
                p,
                f"line {n} last_token_ts",
                f"is {last - first:.3g} s after first_token_ts for output_toks 1 (one token is its first and its last)",
                rec["last_token_ts"],
            )
        rows.append((queued, prompt, output, first - queued, last - queued))
    if not rows:
        raise FleetsimError(f"{p}: no request in the log")
    a = np.array(rows)
    return a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3], a[:, 4], dropped


def _read_bench(p: Path) -> Any:
    data = _read_json_object(p, "a JSON object (vllm bench serve --save-result)")
    if "start_times" in data and data["start_times"] is None:  # (saved as null: not saved)
        del data["start_times"]
    missing = [k for k in BENCH_KEYS if k not in data]
    closed: int | None = None  # the closed loop's concurrency, where the send times are rebuilt so
    if missing == ["start_times"]:
        closed, why = _unsaved_sends(data)
        if why:
            raise FleetsimError(
                f"{p}: missing start_times (the send times, saved by recent vLLM versions), and they cannot be rebuilt: "
                f"{why}; a vllm bench serve result needs {', '.join(BENCH_KEYS)}"
            )
    elif missing:
        raise FleetsimError(f"{p}: missing {', '.join(missing)}; a vllm bench serve result needs {', '.join(BENCH_KEYS)}")
    rebuild = "start_times" not in data
    keys = [k for k in BENCH_KEYS if k in data]
    n = len(data["input_lens"]) if isinstance(data["input_lens"], list) else 0
    for k in keys:
        if k == "input_lens" and not isinstance(data[k], list):
            raise _fail(p, k, "must be a list, one entry per request", type(data[k]).__name__)
        if not isinstance(data[k], list) or len(data[k]) != n:
            got = f"{len(data[k])} entries" if isinstance(data[k], list) else type(data[k]).__name__
            raise _fail(p, k, f"must be a list of {n} entries, one per request like input_lens", got)
    errors = data.get("errors") or [""] * n
    if not isinstance(errors, list) or len(errors) != n or not all(e is None or isinstance(e, str) for e in errors):
        raise _fail(p, "errors", f"must be a list of {n} strings (empty where the request succeeded)", errors)
    keep, gaps = [], []
    kept: list[int] = []  # (their indices in the lists)
    dropped = 0
    streamed = np.zeros(n)  # (a failed request's time in flight, where it streamed before failing: its slot's)
    for i in range(n):
        t = data["ttfts"][i]
        if (i < len(errors) and errors[i]) or t is None or (type(t) in (int, float) and t == 0):
            dropped += 1  # (a failed request: vLLM saves its TTFT as 0; `false` is no TTFT, and is refused below)
            streamed[i] = _partial_stream_s(t, data["itls"][i])
            continue
        start = 0.0 if rebuild else _number(p, f"start_times[{i}]", data["start_times"][i], minimum=-math.inf)
        prompt = _number(p, f"input_lens[{i}]", data["input_lens"][i], integer=True, minimum=1)
        output = _number(p, f"output_lens[{i}]", data["output_lens"][i], integer=True, minimum=1)
        ttft = _number(p, f"ttfts[{i}]", data["ttfts"][i])
        itl = data["itls"][i]
        if not isinstance(itl, list):
            raise _fail(p, f"itls[{i}]", "must be a list of gaps (s)", itl)
        if len(itl) > output:  # (one gap per streamed chunk after the first: at most one a token, the chat role chunk too)
            raise FleetsimError(
                f"{p} itls[{i}]: must hold at most output_lens[{i}] = {int(output)} gaps, one per streamed chunk after "
                f"the first (got {len(itl)} gaps)"
            )
        g = np.array([_number(p, f"itls[{i}][{j}]", v) for j, v in enumerate(itl)], dtype=np.float64)
        e2e = ttft + float(g.sum())
        if e2e > MAX_TIME_S:  # (each gap was bounded, their sum not: an E2E past it compares as inf)
            raise _fail(p, f"itls[{i}]", f"must sum with ttfts[{i}] to an E2E within {MAX_TIME_S:g} s", e2e)
        gaps.append(g)
        keep.append((start, prompt, output, ttft, e2e))
        kept.append(i)
    if not keep:
        raise FleetsimError(f"{p}: no successful request in the result")
    a = np.array(keep)
    rebuilt = ""
    if rebuild:
        if closed is None:
            rebuilt = "send times: none in the result; at request_rate inf every request was sent at once (t = 0)"
        else:
            held = streamed  # (each request's time in flight: its E2E; a failed one's, what it streamed before failing)
            held[kept] = a[:, 4]
            a[:, 0] = closed_loop_sends(held, closed)[kept]
            failed = (
                f"; its {n - len(kept)} failed requests held their slots while they streamed (at once without a first token)"
                if len(kept) < n
                else ""
            )
            rebuilt = (
                f"send times: none in the result; rebuilt as its closed loop of max_concurrency {closed} sent them (each "
                f"request the moment one in flight ended, from the measured latencies){failed}"
            )
    duration = data.get("duration")  # (the benchmark's wall seconds: every request was sent and answered within it)
    if isinstance(duration, int | float) and not isinstance(duration, bool) and math.isfinite(duration) and duration > 0:
        ends = a[:, 0] - a[:, 0].min() + a[:, 4]
        j = _first_past(ends, duration * 1.01 + 1.0)
        if j is not None:
            raise FleetsimError(
                f"{p} ttfts[{kept[j]}]: the request ends {ends[j]:,.3f} s after the first send (TTFT {a[j, 3]:,.3f} s "
                f"and its gaps), past the benchmark's duration of {duration:,.3f} s: its times are not this run's"
            )
    return a[:, 0], a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3], a[:, 4], np.concatenate(gaps), dropped, rebuilt


def _partial_stream_s(ttft: Any, itls: Any) -> float:
    """How long a failed request of a vllm bench result streamed before it failed (vLLM keeps the TTFT and gaps of a
    stream cut short, and 0 for a request that failed before its first token): its TTFT and gaps where they are
    finite numbers >= 0, else 0."""

    def number(v: Any) -> bool:
        return type(v) in (int, float) and math.isfinite(v) and 0 <= v <= MAX_TIME_S

    if not number(ttft) or ttft == 0:
        return 0.0
    gaps = [g for g in itls if number(g)] if isinstance(itls, list) else []
    return float(ttft) + float(sum(gaps))


def _unsaved_sends(data: dict[str, Any]) -> tuple[int | None, str]:
    """Whether a vllm bench result without `start_times` says when it sent its requests: (the closed loop's
    concurrency or None, "") where it does (`request_rate` inf: all at once, or a closed loop of `max_concurrency`),
    else (None, why not)."""
    rate = data.get("request_rate")
    infinite = rate == "inf" or (isinstance(rate, float) and rate == math.inf)
    if not infinite:
        return None, f"its request_rate is {_short(rate)}, not inf (the benchmark drew its send times at random)"
    ramp = data.get("ramp_up_strategy")
    if ramp is not None:
        return None, f"it ramped its rate up (ramp_up_strategy {_short(ramp)})"
    conc = data.get("max_concurrency")
    if conc is None:
        return None, ""
    if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
        return None, f"its max_concurrency must be a whole number >= 1 or null (got {_short(conc)})"
    return conc, ""


def closed_loop_sends(held_s: np.ndarray, concurrency: int) -> np.ndarray:
    """The send times of a closed loop of `concurrency` over requests in order, each in flight for `held_s`: the
    first `concurrency` at 0, each later one when the earliest in flight ends."""
    sends = np.zeros(len(held_s))
    ends: list[float] = []
    for i, held in enumerate(held_s.tolist()):
        t = heapq.heappop(ends) if len(ends) >= concurrency else 0.0
        sends[i] = t
        heapq.heappush(ends, t + held)
    return sends


def _line(p: Path, i: int) -> int:
    """The file line of the CSV's data row i (pandas skips blank lines; the error path only)."""
    return file_line(p, i, header=True, blank=blank_line)


def _read_csv(p: Path, columns: Mapping[str, str] | None, unit: float) -> Any:
    names = {f: f for f in CSV_FIELDS} | dict(columns or {})
    unknown = sorted(set(names) - set(CSV_FIELDS))
    if unknown:
        raise FleetsimError(f"column mapping: unknown field {unknown[0]!r}; fields: {', '.join(CSV_FIELDS)}")
    df = _csv_frame(p)
    missing = [f"{f} (column {names[f]!r})" for f in CSV_FIELDS if names[f] not in df.columns]
    if missing:
        raise FleetsimError(f"{p}: missing {', '.join(missing)}; columns are {', '.join(map(str, df.columns))}")
    cols = {}
    for f in CSV_FIELDS:
        v = _floats(df[names[f]])
        bad = ~np.isfinite(v) | (v < 0 if f != "arrival" else np.zeros(v.size, dtype=bool))
        if f in ("prompt", "output"):
            bad |= (v < 1) | (v != np.floor(v))
        rule = "a whole number >= 1" if f in ("prompt", "output") else "a finite number" + (" >= 0" if f != "arrival" else "")
        # (bounded as the other layouts are: a count past int64 wrapped negative, an E2E of 1e308 s compared as inf ms)
        far = v > MAX_TOKENS if f in ("prompt", "output") else np.abs(v) > MAX_TIME_S
        limit = f"at most {MAX_TOKENS:,}" if f in ("prompt", "output") else f"within +-{MAX_TIME_S:g}"
        for wrong, said in ((bad, rule), (far, limit)):
            if wrong.any():
                i = int(np.argmax(wrong))
                raise _fail(p, f"line {_line(p, i)} column {names[f]!r}", f"must be {said}", df[names[f]].iloc[i])
        cols[f] = v
    late = cols["e2e"] < cols["ttft"]
    if late.any():
        i = int(np.argmax(late))
        raise _fail(p, f"line {_line(p, i)} column {names['e2e']!r}", "must be >= the TTFT", df[names["e2e"]].iloc[i])
    spread = (cols["output"] == 1) & ((cols["e2e"] - cols["ttft"]) * unit > ONE_TOKEN_SPAN_S)
    if spread.any():
        i = int(np.argmax(spread))
        raise _fail(
            p,
            f"line {_line(p, i)} column {names['e2e']!r}",
            f"must be within {ONE_TOKEN_SPAN_S:g} s of the TTFT for one output token (its first token is its last)",
            df[names["e2e"]].iloc[i],
        )
    return (
        cols["arrival"] * unit,
        cols["prompt"].astype(np.int64),
        cols["output"].astype(np.int64),
        cols["ttft"] * unit,
        cols["e2e"] * unit,
        0,
    )


def _first_past(ends: np.ndarray, limit_s: float) -> int | None:
    """The first request whose end (seconds from the first arrival) is past `limit_s`, or None."""
    late = np.flatnonzero(ends > limit_s)
    return int(late[0]) if late.size else None


def _run_seconds(meta: dict[str, Any] | None) -> float | None:
    """The run's wall seconds from its meta.json's `started_at` and `finished_at` (ISO times), where both read so."""
    if meta is None:
        return None
    start, end = meta.get("started_at"), meta.get("finished_at")
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        seconds = (
            datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
        ).total_seconds()
    except (ValueError, TypeError):  # (not ISO times, or one with a zone and one without)
        return None
    return seconds if seconds > 0 else None


def _check_within_run(p: Path, meta_path: Path, meta: dict[str, Any] | None, arrival: np.ndarray, e2e: np.ndarray) -> None:
    """Every request was sent and answered within the run meta.json times (as a vllm bench result's `duration`
    bounds its requests), to a margin: one that ends far later holds another run's or a corrupted stamp."""
    seconds = _run_seconds(meta)
    if seconds is None or not arrival.size:
        return
    ends = arrival - float(arrival.min()) + e2e
    # (a generous margin: a recorder's start and end stamps may leave out its warm-up or its last flush; a request
    # on another clock or a corrupted stamp is off by orders of magnitude)
    i = _first_past(ends, seconds * 1.5 + 60.0)
    if i is not None:
        raise FleetsimError(
            f"{p}: request {i + 1} (of {arrival.size:,}) ends {float(ends[i]):,.3f} s after the first request's arrival, past "
            f"the run's {seconds:,.3f} s ({meta_path.name}: started_at to finished_at): its times are not this run's"
        )


def _read_json_object(p: Path, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file holding one object (a vllm bench result, a run's meta.json)."""
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"), object_pairs_hook=no_repeated_key)
    except RepeatedKey as err:
        raise FleetsimError(
            f"{p}: key {err.args[0]!r} is given twice in one object (a JSON reader keeps one of them silently)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise FleetsimError(f"{p}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise FleetsimError(f"{p} line {err.lineno}: invalid JSON ({err.msg})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
        raise FleetsimError(f"{p}: unreadable JSON: nested too deep or a number too long ({_short(str(err))})") from None
    if not isinstance(data, dict):
        raise _fail(p, "top level", f"must be {what}", data)
    return data


def _csv_frame(p: Path) -> pd.DataFrame:
    """A CSV file as read, its columns those of its header line: a row with more fields than the header is refused
    (pandas would take the extra leading fields as an index and shift the rest), one with a trailing comma read."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(p, index_col=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FleetsimError(f"{p}: cannot read as CSV ({str(err).splitlines()[0]})") from None
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        raise FleetsimError(f"{p}: a row has more fields than the header's {len(df.columns)} ({', '.join(map(str, df.columns))})")
    # (pandas renames a repeated column `name.1`: which is meant? The header read as a row, compressed or not; empty
    # names, from trailing commas, are no columns anyone maps)
    header = [str(h) for h in pd.read_csv(p, nrows=1, header=None, dtype=str, keep_default_na=False).iloc[0]]
    twice = next((name for name in header if name and header.count(name) > 1), None)
    if twice is not None:
        raise FleetsimError(f"{p}: column {twice!r} is named twice in the header")
    return df


def _floats(column: pd.Series) -> np.ndarray:
    """A column as float64, NaN where a cell is no number (or an integer no float holds: pandas raised on it)."""
    if column.dtype == bool:  # (`true` where a number is meant: not 1)
        return np.full(len(column), np.nan)
    try:
        values: np.ndarray = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        return values
    except (OverflowError, ValueError, TypeError):
        return np.array([_float_or_nan(x) for x in column], dtype=np.float64)


def _float_or_nan(x: Any) -> float:
    try:
        return float(x)
    except (OverflowError, ValueError, TypeError):
        return math.nan


def _read_timeseries(p: Path) -> pd.DataFrame:
    df = _csv_frame(p)
    missing = [c for c in TIMESERIES_COLUMNS if c not in df.columns]
    if missing:
        raise FleetsimError(
            f"{p}: missing column {', '.join(missing)}; a run's time series needs {', '.join(TIMESERIES_COLUMNS)}"
        )
    out = pd.DataFrame({c: _floats(df[c]) for c in TIMESERIES_COLUMNS})
    if out.isna().any().any():
        col = next(c for c in TIMESERIES_COLUMNS if out[c].isna().any())
        i = int(np.argmax(out[col].isna().to_numpy()))
        raise _fail(p, f"line {_line(p, i)} column {col!r}", "must be a number", df[col].iloc[i])
    if out.empty:
        raise FleetsimError(f"{p}: no tick (a run's time series holds one row per tick)")
    v = {c: out[c].to_numpy(dtype=np.float64) for c in TIMESERIES_COLUMNS}
    rules = {  # (a tick's instant on the log's clock; counts of requests; vLLM's KV cache usage in percent)
        "t": (np.abs(v["t"]) <= MAX_TIME_S) & (np.diff(v["t"], prepend=-np.inf) > 0),
        "running": (v["running"] >= 0) & (v["running"] == np.floor(v["running"])) & (v["running"] <= MAX_REQUESTS),
        "waiting": (v["waiting"] >= 0) & (v["waiting"] == np.floor(v["waiting"])) & (v["waiting"] <= MAX_REQUESTS),
        "kv_cache_pct": (v["kv_cache_pct"] >= 0) & (v["kv_cache_pct"] <= 100),
    }
    said = {
        "t": f"must be within +-{MAX_TIME_S:g} s and after the tick before",
        "running": f"must be a whole number within 0..{MAX_REQUESTS:,}",
        "waiting": f"must be a whole number within 0..{MAX_REQUESTS:,}",
        "kv_cache_pct": "must be a percentage within 0..100",
    }
    for col, ok in rules.items():
        if not ok.all():
            i = int(np.argmin(ok))
            raise _fail(p, f"line {_line(p, i)} column {col!r}", said[col], df[col].iloc[i])
    return out
