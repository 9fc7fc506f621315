"""Trace characterization: the figures `fleetsim trace inspect` prints (keys in DESIGN.md).

rate = requests / (last - first arrival); inter-arrival CV = population std / mean of the gaps;
peak-to-mean of per-minute counts over every minute from the first arrival (empty ones included);
token percentiles with numpy's linear interpolation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")


def describe(frame: pd.DataFrame) -> dict[str, Any]:
    t = frame["arrival_at_s"].to_numpy()
    n = len(t)
    duration = float(t[-1] - t[0]) if n else 0.0
    gaps = np.diff(t)
    # per-minute counts without an array over every minute (a trace may span years): the busiest
    # minute over the mean of all minutes from the first arrival, empty ones included
    minutes = np.floor((t - t[0]) / 60.0) if n else np.zeros(0)
    _, counts = np.unique(minutes, return_counts=True)
    n_minutes = float(minutes[-1]) + 1 if n else 1.0
    out: dict[str, Any] = {
        "requests": n,
        "duration_s": duration,
        "mean_rate_per_s": _ratio(n, duration),
        "iat_cv": _ratio(gaps.std(), gaps.mean()) if gaps.size else None,
        "peak_to_mean_per_min": float(counts.max() / (n / n_minutes)) if n else 0.0,
    }
    for col, short in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        x = frame[col].to_numpy()
        out[f"{short}_tokens_mean"] = float(x.mean())
        out[f"{short}_tokens_p50"] = float(np.percentile(x, 50))
        out[f"{short}_tokens_p99"] = float(np.percentile(x, 99))
    out["total_prompt_tokens"] = int(frame["prompt_tokens"].sum())
    out["total_output_tokens"] = int(frame["output_tokens"].sum())
    return out


def _ratio(num: float, den: float) -> float | None:
    """num / den; None where it is no figure: a span of no time, or one so short (arrivals 5e-324 s apart) that the
    ratio overflows to inf."""
    if not den > 0:
        return None
    with np.errstate(over="ignore"):
        value = float(np.float64(num) / np.float64(den))
    return value if np.isfinite(value) else None


def arrivals_per_minute(frame: pd.DataFrame, *, max_bins: int = 100_000) -> tuple[np.ndarray, float]:
    """Arrivals per bin and the bin's width in seconds: one minute, or wider (a whole number of minutes)
    when the trace spans more than `max_bins` minutes, so the array stays small whatever the span."""
    t = frame["arrival_at_s"].to_numpy()
    if t.size == 0:
        return np.zeros(1, dtype=np.int64), 60.0
    span_min = float(t[-1] - t[0]) / 60.0
    width = 60.0 * max(1.0, float(np.ceil((span_min + 1) / max_bins)))
    return np.bincount(np.floor((t - t[0]) / width).astype(np.int64)), width
