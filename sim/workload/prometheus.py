"""A synthetic trace from what Prometheus recorded of a vLLM fleet: the observed request-rate curve and length
distributions, as a generator spec (`sim.workload.synthetic`) and its rate table.

Inputs: the JSON the Prometheus HTTP API returns (`/api/v1/query_range` for a matrix, `/api/v1/query` for a vector;
prometheus.io/docs/prometheus/latest/querying/api/), one file per query; series of one query are summed (per pod,
per finish reason). The queries, on vLLM's metrics (docs.vllm.ai, "Production Metrics"):
  requests        sum(rate(vllm:request_success_total[1m]))        range query: requests/s over time
  prompt buckets  sum by (le) (increase(vllm:request_prompt_tokens_bucket[<window>]))       instant (or range:
  output buckets  sum by (le) (increase(vllm:request_generation_tokens_bucket[<window>]))   the last sample)
  prompt tokens   sum(rate(vllm:prompt_tokens_total[1m]))          optional, range: the exact mean prompt length
  output tokens   sum(rate(vllm:generation_tokens_total[1m]))      optional, range: the exact mean output length
The arrivals are a non-homogeneous Poisson process through the rate curve (the `diurnal` process over a rate table,
one window per sample). Each length is lognormal with the mean from the token counters (the ratio of the token
rate's integral to the request rate's) or else from the histogram, and the CV from the histogram (its mass
spread evenly within each bucket; the +Inf bucket's at the last finite bound, so that CV is a lower bound when
the +Inf bucket holds requests), clipped at the last finite bound. Poisson arrivals within a window are an
assumption a minute-resolution counter cannot check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import FleetsimError
from sim.spec import MAX_TOKENS
from sim.yaml_input import read_text

MAX_BYTES = 100_000_000
MAX_ABS = 1e12  # any figure a query returns: a Unix time (s), a rate (/s) or a count of requests or tokens


def _load(path: Path) -> list[dict[str, Any]]:
    text = read_text(path, max_bytes=MAX_BYTES, what="Prometheus query result (JSON)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise FleetsimError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
        raise FleetsimError(f"{path}: unreadable JSON: nested too deep or a number too long ({str(err)[:80]})") from None
    if not isinstance(data, dict) or data.get("status") != "success" or not isinstance(data.get("data"), dict):
        raise FleetsimError(f"{path}: not a Prometheus API answer (status: success, data: ...)")
    result = data["data"].get("result")
    if not isinstance(result, list) or not result:
        raise FleetsimError(f"{path}: the query returned no series")
    for i, series in enumerate(result):
        if not isinstance(series, dict):
            raise FleetsimError(f"{path}: data.result[{i}] must be an object")
    return result


def _number(path: Path, where: str, text: Any) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise FleetsimError(f"{path} {where}: not a number ({text!r})") from None
    if math.isnan(x):
        raise FleetsimError(f"{path} {where}: NaN (a rate over a window with no samples); query a wider range")
    if not math.isfinite(x) or abs(x) > MAX_ABS:  # (an instant, a rate or a count: sums and spans of them overflow)
        raise FleetsimError(f"{path} {where}: must be a finite number within +-{MAX_ABS:g} (got {text!r})")
    return x


def _shape(read: Any) -> Any:
    """A reader whose input of another shape than the Prometheus API's is one line naming the file."""

    def wrapped(path: Path) -> Any:
        try:
            return read(path)
        except (AttributeError, TypeError, KeyError, IndexError) as err:
            raise FleetsimError(f"{path}: not the Prometheus API's shape ({type(err).__name__}: {err})") from None

    wrapped.__doc__ = read.__doc__
    return wrapped


@_shape
def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A range query's samples summed over its series: (timestamps s, values), by timestamp."""
    sums: dict[float, float] = {}
    for i, series in enumerate(_load(path)):
        values = series.get("values")
        if not isinstance(values, list):
            raise FleetsimError(f"{path}: data.result[{i}] has no values (a range query, /api/v1/query_range, is needed)")
        seen: set[float] = set()  # (series add up at a time; within one, a time given twice added its rates up too)
        for j, pair in enumerate(values):
            if not isinstance(pair, list) or len(pair) != 2:
                raise FleetsimError(f"{path}: data.result[{i}].values[{j}] must be [time, value]")
            at = _number(path, f"data.result[{i}].values[{j}][0]", pair[0])
            v = _number(path, f"data.result[{i}].values[{j}][1]", pair[1])
            if v < 0:
                raise FleetsimError(f"{path}: data.result[{i}].values[{j}]: a rate must be >= 0 (got {v:g})")
            if at in seen:
                raise FleetsimError(
                    f"{path}: data.result[{i}].values[{j}]: time {pair[0]!r} is given twice in one series (a range query "
                    "has one sample a step)"
                )
            seen.add(at)
            sums[at] = sums.get(at, 0.0) + v
    times = sorted(sums)
    if len(times) < 2:
        raise FleetsimError(f"{path}: a rate curve needs at least two samples (got {len(times)})")
    return np.array(times), np.array([sums[x] for x in times])


@_shape
def read_histogram(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative bucket counts by upper bound `le` (the last sample of a range query), summed over the series of each
    bound: (finite bounds, counts per bucket incl. +Inf as the last)."""
    by_le: dict[float, float] = {}
    for i, series in enumerate(_load(path)):
        le = (series.get("metric") or {}).get("le")
        if le is None:
            raise FleetsimError(f"{path}: data.result[{i}] has no le label (query the _bucket series by le)")
        bound = math.inf if le in ("+Inf", "Inf", "inf") else _number(path, f"data.result[{i}].metric.le", le)
        if bound != math.inf and not 1 <= bound <= MAX_TOKENS:  # (the first bucket is read as from 1 token)
            raise FleetsimError(
                f"{path} data.result[{i}].metric.le: a token bucket's bound must be within 1..{MAX_TOKENS:,} (got {le!r})"
            )
        if "value" in series:
            raw = series["value"]
        elif series.get("values"):
            raw = series["values"][-1]
        else:
            raise FleetsimError(f"{path}: data.result[{i}] has no value")
        count = _number(path, f"data.result[{i}].value", raw[1])
        if count < 0:
            raise FleetsimError(f"{path} data.result[{i}].value: a bucket's count must be >= 0 (got {raw[1]!r})")
        by_le[bound] = by_le.get(bound, 0.0) + count
    bounds = np.array(sorted(by_le))
    if not math.isinf(bounds[-1]) or bounds.size < 2:
        raise FleetsimError(f"{path}: a histogram needs its +Inf bucket and at least one finite bound")
    cum = np.array([by_le[b] for b in bounds])
    if np.any(np.diff(cum) < -1e-9 * max(1.0, cum[-1])):
        raise FleetsimError(f"{path}: bucket counts must not decrease with le (a cumulative histogram)")
    if cum[-1] <= 0:
        raise FleetsimError(f"{path}: the histogram counts no request")
    return bounds[:-1], np.diff(np.concatenate(([0.0], np.maximum.accumulate(cum))))


def histogram_moments(bounds: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Mean and CV of a histogram whose mass is spread evenly within each finite bucket (the first from 1 token) and
    sits at the last finite bound in the +Inf bucket."""
    lo = np.concatenate(([1.0], bounds[:-1]))
    hi = bounds
    w = counts[:-1]
    mid = (lo + hi) / 2
    second = (lo**2 + lo * hi + hi**2) / 3  # E[x^2] of a uniform on [lo, hi]
    n = w.sum() + counts[-1]
    mean = (float((w * mid).sum()) + counts[-1] * bounds[-1]) / n
    ex2 = (float((w * second).sum()) + counts[-1] * bounds[-1] ** 2) / n
    var = max(0.0, ex2 - mean * mean)
    return float(mean), float(math.sqrt(var) / mean)


def spec_from_metrics(
    *,
    requests: Path,
    prompt_buckets: Path,
    output_buckets: Path,
    prompt_tokens: Path | None = None,
    output_tokens: Path | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, list[str]]:
    """A generator spec (its rate table's path left for the caller to set), the rate table (window starts s from 0,
    rates), and notes on how each number was obtained."""
    t, rate = read_series(requests)
    step = float(t[-1] - t[-2])  # (the last window as wide as the one before it, as the diurnal process reads tables)
    duration = float(t[-1] - t[0] + step)
    width = np.diff(np.append(t, t[-1] + step))
    n_requests = float(np.sum(rate * width))
    if n_requests <= 0:
        raise FleetsimError(f"{requests}: the request rate is 0 throughout")
    notes = [f"{requests}: {t.size} samples, {n_requests:,.0f} requests over {duration:,.0f} s"]
    spec: dict[str, Any] = {
        "arrivals": {"process": "diurnal", "mean_rate_per_s": float(n_requests / duration), "rate_table": None},
        "duration_s": duration,
    }
    for name, buckets, tokens in (
        ("prompt_tokens", prompt_buckets, prompt_tokens),
        ("output_tokens", output_buckets, output_tokens),
    ):
        bounds, counts = read_histogram(buckets)
        h_mean, cv = histogram_moments(bounds, counts)
        mean = h_mean
        how = f"the histogram {buckets}"
        if tokens is not None:
            tt, tr = read_series(tokens)
            tw = np.diff(np.append(tt, tt[-1] + float(tt[-1] - tt[-2])))
            mean = float(np.sum(tr * tw)) / n_requests
            how = f"{tokens} over {requests}"
        top = int(bounds[-1])
        inf_share = counts[-1] / counts.sum()
        notes.append(
            f"{name}: lognormal, mean {mean:,.1f} ({how}), CV {cv:.2f} (from {buckets}"
            + (f"; {inf_share:.1%} above {top:,}: a lower bound" if inf_share > 0 else "")
            + f"), clipped at {top:,}"
        )
        spec[name] = {"dist": "lognormal", "mean": max(1.0, float(mean)), "cv": max(float(cv), 1e-3), "max": max(1, top)}
    return spec, t - t[0], rate, notes
