"""What a run folder's records must satisfy to be read back: the invariants every run `fleetsim run` writes holds.

A folder edited by hand (or corrupted) can hold records no simulation leaves: a request whose first token precedes its
arrival, negative token counts, an unknown status, NaN or infinite instants, negative replica seconds, negative
inter-token gaps, a request served by a replica the run never launched. Summarizing such records prints impossible figures with exit 0, so `SimResult.load` checks them
first and names the file, the row, the rule and the value in one line. Each check is vectorized: a million-request
folder costs a few array passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError
from sim.schema import REPLICA_COLUMNS, REQUEST_COLUMNS, STATUS_LABELS, TIMELINE_COLUMNS
from sim.spec import MAX_TIME_S, MAX_TOKENS

CAPACITY_CLASSES = ("reserved", "on_demand", "spot")  # (`sim.results.cost.CLASSES`; not imported: it loads the bill)
TOLERANCE_S = 1e-6  # instants are written as float64 seconds; an order may only be off by rounding
REPLICA_SECONDS = ("provisioning_s", "loading_s", "busy_s", "idle_s", "draining_s", "prefill_busy_s", "decode_busy_s")
ITL_COLUMNS = ("a", "b", "j0", "j1", "weight")
REPLICA_COUNTS = (
    "tp", "flops", "bytes", "n_steps", "n_runs", "kv_blocks", "kv_peak_blocks", "requests", "verifies", "verify_tokens",
    "lora_loads", "requeued", "tokens_lost",
)  # fmt: skip


def _fail(path: Path, frame: pd.DataFrame, bad: np.ndarray, rule: str, column: str, id_column: str | None) -> None:
    """Raise naming the first row of `frame` where `bad` holds."""
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    which = f"row {i}" + (f" ({id_column} {frame[id_column].iloc[i]!s})" if id_column else "")
    value = frame[column].iloc[i]
    value = value.item() if isinstance(value, np.generic) else value
    raise FleetsimError(f"{path}: {which}: {rule} (got {column} = {value!r}); was the folder edited? nothing written")


def _unique(path: Path, frame: pd.DataFrame, column: str) -> None:
    _fail(path, frame, frame[column].duplicated().to_numpy(), f"each {column} must appear once", column, None)


def _missing(path: Path, frame: pd.DataFrame, columns: dict[str, str] | tuple[str, ...]) -> None:
    gone = [c for c in columns if c not in frame.columns]
    if gone:
        raise FleetsimError(f"{path}: missing column {', '.join(gone)}; was the folder edited? nothing written")


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    try:
        values: np.ndarray = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        return values
    except (TypeError, ValueError):
        raise FleetsimError(
            f"{path}: column {column} must hold numbers (got {frame[column].dtype}); was the folder edited? nothing written"
        ) from None


def check_requests(path: Path, requests: pd.DataFrame) -> None:
    """requests.parquet: every column; known statuses; finite arrivals >= 0; token counts >= 0; a completed request's
    instants finite and in order (arrival <= scheduled <= first token <= completion)."""
    _missing(path, requests, REQUEST_COLUMNS)
    if requests.empty:  # (a trace holds at least one request, and a run writes a row for each)
        raise FleetsimError(
            f"{path}: holds no request (a run writes one row per trace request); was the folder edited? nothing written"
        )
    ids = "request_id"
    status = requests["status"].astype(str).to_numpy()
    _fail(path, requests, ~np.isin(status, STATUS_LABELS), f"status must be one of {', '.join(STATUS_LABELS)}", "status", ids)
    arrival = _numbers(path, requests, "arrival_at_s")
    _fail(path, requests, ~(np.isfinite(arrival) & (arrival >= 0)), "arrival must be a finite time >= 0", "arrival_at_s", ids)
    _fail(path, requests, arrival > MAX_TIME_S, f"instants must be <= {MAX_TIME_S:g} s", "arrival_at_s", ids)
    _unique(path, requests, ids)
    for column in ("prompt_tokens", "output_tokens", "n_preemptions"):
        v = _numbers(path, requests, column)
        _fail(path, requests, ~(np.isfinite(v) & (v >= 0)), "token and preemption counts must be >= 0", column, ids)
        _fail(path, requests, v > MAX_TOKENS, f"token and preemption counts must be <= {MAX_TOKENS:,}", column, ids)
    prompt, cached = _numbers(path, requests, "prompt_tokens"), _numbers(path, requests, "cached_tokens")
    with np.errstate(invalid="ignore"):  # (NaN: no prefix caching, or a request never scheduled)
        bad_cache = (cached < 0) | (cached > prompt) | np.isinf(cached)
    _fail(path, requests, bad_cache, "cached_tokens must be within 0..prompt_tokens", "cached_tokens", ids)
    done = status == "completed"
    output = _numbers(path, requests, "output_tokens")
    _fail(path, requests, done & (output < 1), "a completed request has produced a token", "output_tokens", ids)
    earlier, earlier_name = arrival, "arrival_at_s"
    for column in ("scheduled_at_s", "first_token_at_s", "completed_at_s"):
        t = _numbers(path, requests, column)
        _fail(path, requests, done & ~np.isfinite(t), "a completed request's instants must be finite", column, ids)
        _fail(path, requests, done & (t > MAX_TIME_S), f"instants must be <= {MAX_TIME_S:g} s", column, ids)
        with np.errstate(invalid="ignore"):
            _fail(path, requests, done & (t < earlier - TOLERANCE_S), f"{column} must not precede {earlier_name}", column, ids)
        earlier, earlier_name = t, column


def check_replicas(path: Path, replicas: pd.DataFrame) -> None:
    """replicas.parquet: every column; seconds by state finite and >= 0; a replica's end not before its provisioning."""
    _missing(path, replicas, REPLICA_COLUMNS)
    _unique(path, replicas, "replica_id")
    for column in REPLICA_SECONDS:
        v = _numbers(path, replicas, column)
        ok = np.isfinite(v) & (v >= -TOLERANCE_S) & (v <= MAX_TIME_S)  # (sums of float seconds: -6e-14 is a zero)
        _fail(path, replicas, ~ok, f"seconds must be finite, >= 0 and <= {MAX_TIME_S:g}", column, "replica_id")
    for column in REPLICA_COUNTS:
        v = _numbers(path, replicas, column)
        low = 1 if column == "tp" else 0
        _fail(path, replicas, ~(np.isfinite(v) & (v >= low)), f"counts must be finite and >= {low}", column, "replica_id")
    start, end = _numbers(path, replicas, "provision_at_s"), _numbers(path, replicas, "end_at_s")
    for column, t in (("provision_at_s", start), ("end_at_s", end)):
        ok = np.isfinite(t) & (t >= 0) & (t <= MAX_TIME_S)
        _fail(path, replicas, ~ok, f"instants must be finite, within 0..{MAX_TIME_S:g} s", column, "replica_id")
    with np.errstate(invalid="ignore"):
        _fail(path, replicas, end < start - TOLERANCE_S, "end_at_s must not precede provision_at_s", "end_at_s", "replica_id")
    life = end - start  # (a state's seconds are spent within the replica's life: else busy shares past 100%)
    for column in REPLICA_SECONDS:
        v = _numbers(path, replicas, column)
        rule = f"{column} must not exceed the replica's life, end_at_s - provision_at_s"
        _fail(path, replicas, v > life * (1 + 1e-9) + TOLERANCE_S, rule, column, "replica_id")
    for column in ("lost_s", "lora_load_s", "sleep_s"):
        v = _numbers(path, replicas, column)
        ok = np.isfinite(v) & (v >= -TOLERANCE_S) & (v <= MAX_TIME_S)
        _fail(path, replicas, ~ok, f"seconds must be finite, >= 0 and <= {MAX_TIME_S:g}", column, "replica_id")
    # the instants it reached each state (NaN: never), none before its provisioning
    for column in ("loading_at_s", "ready_at_s", "drain_at_s", "released_at_s"):
        t = _numbers(path, replicas, column)
        with np.errstate(invalid="ignore"):
            bad = np.isinf(t) | (t < start - TOLERANCE_S) | (t > MAX_TIME_S)
        rule = f"instants must be NaN (never) or within provision_at_s..{MAX_TIME_S:g} s"
        _fail(path, replicas, bad, rule, column, "replica_id")
    busy, before = _numbers(path, replicas, "busy_s"), _numbers(path, replicas, "busy_before_drain_s")
    ok = np.isfinite(before) & (before >= -TOLERANCE_S) & (before <= busy + TOLERANCE_S)
    _fail(path, replicas, ~ok, "busy_before_drain_s must be within 0..busy_s", "busy_before_drain_s", "replica_id")
    # the GPU-seconds by state the bill adds up (`sim.results.cost.state_seconds`), each >= 0: a replica busy before
    # it was ready, or drained before it was, has none to give
    loading, ready, drain = (
        np.fmin(np.where(np.isnan(t), end, t), end)
        for t in (_numbers(path, replicas, c) for c in ("loading_at_s", "ready_at_s", "drain_at_s"))
    )
    slack = TOLERANCE_S + 1e-9 * np.abs(life)
    states = {
        "loading_at_s": loading - start,
        "ready_at_s": ready - loading,
        "drain_at_s": (drain - ready) - before,
        "end_at_s": (end - drain) - (busy - before),
    }
    rules = {
        "loading_at_s": "the replica loads after it is provisioned",
        "ready_at_s": "the replica is ready after it loads",
        "drain_at_s": "its busy seconds before draining fit between ready_at_s and drain_at_s",
        "end_at_s": "its busy seconds while draining fit between drain_at_s and end_at_s",
    }
    for column, seconds in states.items():
        _fail(path, replicas, seconds < -slack, rules[column], column, "replica_id")


def check_replicas_against_meta(path: Path, replicas: pd.DataFrame, meta: dict[str, Any]) -> None:
    """replicas.parquet against meta.json: the run's work within its GPUs' peaks; each replica's pool one of the run's,
    its GPU type and tp that pool's own or one of its fallbacks' (the bill prices it by them), its capacity class a
    known one."""
    pools = meta.get("pools")
    _work_within_peaks(path, replicas, meta)
    if "capacity" in replicas.columns:
        klass = replicas["capacity"].astype(str).to_numpy()
        bad = ~np.isin(klass, CAPACITY_CLASSES)
        _fail(path, replicas, bad, f"capacity must be one of {', '.join(CAPACITY_CLASSES)}", "capacity", "replica_id")
    if not isinstance(pools, dict) or "pool" not in replicas.columns:
        return
    names = replicas["pool"].astype(str).to_numpy()
    _fail(
        path,
        replicas,
        ~np.isin(names, list(pools)),
        f"pool must be one of meta.json's pools ({', '.join(pools)})",
        "pool",
        "replica_id",
    )
    if "gpu" not in replicas.columns:
        return
    kinds: dict[str, set[tuple[str, Any]]] = {}
    for name, own in pools.items():
        own = own if isinstance(own, dict) else {}
        kinds[name] = {
            (str(own.get("gpu")), own.get("tp")),
            *((str(fb.get("gpu")), fb.get("tp")) for fb in own.get("fallback") or [] if isinstance(fb, dict)),
        }
    gpus, tps = replicas["gpu"].astype(str).to_numpy(), _numbers(path, replicas, "tp")
    bad = np.array([bool(g) and (g, int(t)) not in kinds[n] for n, g, t in zip(names, gpus, tps, strict=True)], dtype=bool)
    _fail(
        path, replicas, bad, "gpu and tp must be its pool's, as meta.json's pools give them, or a fallback's", "gpu", "replica_id"
    )


def _peaks(meta: Any, key: str) -> list[float]:
    """Every `key` figure in meta.json (the run's GPU, each pool's, each fallback's)."""
    if isinstance(meta, dict):
        own = [float(v) for k, v in meta.items() if k == key and isinstance(v, int | float)]
        return own + [p for k, v in meta.items() if k != "scenario" for p in _peaks(v, key)]
    if isinstance(meta, list):
        return [p for v in meta for p in _peaks(v, key)]
    return []


def _work_within_peaks(path: Path, replicas: pd.DataFrame, meta: dict[str, Any]) -> None:
    """The run's FLOPs and bytes fit its busy GPU-seconds at the fastest GPU's peaks (a step's time is at least its
    work at the peak: MFU and MBU are at most 1). Summed over the run: a DP rank's step counts the group's work."""
    gpu_busy = float((_numbers(path, replicas, "tp") * _numbers(path, replicas, "busy_s")).sum())
    for column, key in (("flops", "peak_flops_per_s_per_gpu"), ("bytes", "hbm_bw_bytes_per_s_per_gpu")):
        peaks = _peaks(meta, key)
        if not peaks:
            continue
        work = _numbers(path, replicas, column)
        if float(work.sum()) > max(peaks) * gpu_busy * 1.01 + 1.0:
            raise FleetsimError(
                f"{path}: the replicas' {column} ({float(work.sum()):.4g}) exceed their busy GPU-seconds at the GPU's "
                f"peak ({max(peaks):.4g}/s x {gpu_busy:.4g} s): more than 100% of the peak; was the folder edited? nothing written"
            )


def check_links(path: Path, requests: pd.DataFrame, replicas: pd.DataFrame) -> None:
    """requests.parquet against replicas.parquet (`path`): the replica a request ran on (`replica_id`; -1: none, a
    request rejected or never scheduled) and its decode replica (`decode_replica_id`; -1: no transfer) are replicas
    the run launched, and a run that served requests launched a replica."""
    served = requests["status"].astype(str).to_numpy() == "completed"
    if replicas.empty and served.any():
        raise FleetsimError(
            f"{path}: holds no replica while {int(served.sum()):,} requests were served; was the folder edited? nothing written"
        )
    known = _numbers(path, replicas, "replica_id")
    for column in ("replica_id", "decode_replica_id"):
        v = _numbers(path, requests, column)
        bad = (v != -1) & ~np.isin(v, known)
        _fail(
            path.with_name("requests.parquet"),
            requests,
            bad,
            f"{column} must be -1 or a replica of {path.name}",
            column,
            "request_id",
        )


def check_itl(path: Path, itl: pd.DataFrame, replicas: pd.DataFrame) -> None:
    """itl.parquet: gaps a + b j for j in [j0, j1) with a weight; every gap and weight finite and >= 0, and no gap
    longer than the run (than replicas.parquet's last `end_at_s`: a gap is spent on a replica)."""
    _missing(path, itl, ITL_COLUMNS)
    col = {c: _numbers(path, itl, c) for c in ITL_COLUMNS}
    for c in ITL_COLUMNS:
        _fail(path, itl, ~np.isfinite(col[c]), "must be finite", c, None)
    _fail(path, itl, col["weight"] < 0, "weights must be >= 0", "weight", None)
    _fail(path, itl, col["j0"] < 0, "a piece's j0 (a gap's index) must be >= 0", "j0", None)
    _fail(path, itl, col["j1"] < col["j0"], "a piece's j1 must not be below its j0", "j1", None)
    last = np.maximum(col["j1"] - 1, col["j0"])
    low = np.minimum(col["a"] + col["b"] * col["j0"], col["a"] + col["b"] * last)
    _fail(path, itl, low < -TOLERANCE_S, "gaps must be >= 0", "a", None)
    end = _numbers(path, replicas, "end_at_s")
    horizon = float(end.max()) if end.size else 0.0
    high = np.maximum(col["a"] + col["b"] * col["j0"], col["a"] + col["b"] * last)
    rule = f"gaps must not exceed the run's last instant ({horizon:g} s, replicas.parquet's end_at_s)"
    _fail(path, itl.assign(gap=high), high > horizon * (1 + 1e-9) + TOLERANCE_S, rule, "gap", None)


def check_against_requests(run_dir: Path, requests: pd.DataFrame, replicas: pd.DataFrame, itl: pd.DataFrame) -> None:
    """The records against each other: a request completes while the run's replicas are up (by replicas.parquet's
    last `end_at_s`), and the gap record holds a gap for each token after a request's first: at least the completed
    requests' (output_tokens - 1), at most every request's tokens (a requeued request's tokens are not recorded again)."""
    status = requests["status"].astype(str).to_numpy()
    done = status == "completed"
    end = _numbers(run_dir / "replicas.parquet", replicas, "end_at_s")
    if end.size and done.any():
        horizon = float(np.nanmax(end))
        completed = _numbers(run_dir / "requests.parquet", requests, "completed_at_s")
        late = done & (completed > horizon + max(1.0, horizon) * 1e-9 + TOLERANCE_S)
        rule = f"a request completes while the run's replicas are up (completed_at_s <= replicas.parquet's last end_at_s, {horizon:g} s)"
        _fail(run_dir / "requests.parquet", requests, late, rule, "completed_at_s", "request_id")
    output = _numbers(run_dir / "requests.parquet", requests, "output_tokens")
    weight, j0, j1 = (_numbers(run_dir / "itl.parquet", itl, c) for c in ("weight", "j0", "j1"))
    gaps = float(np.sum(weight * (j1 - j0)))
    least = float(np.sum(output[done] - 1))
    most = float(output.sum())
    if not least - 0.5 <= gaps <= most + 0.5:
        said = (
            f"fewer than the {least:,.0f} tokens the completed requests emitted after their first"
            if gaps < least
            else f"more than the {most:,.0f} tokens the requests hold"
        )
        raise FleetsimError(
            f"{run_dir / 'itl.parquet'}: holds {gaps:,.0f} inter-token gaps, {said} (requests.parquet's output_tokens); "
            "was the folder edited? nothing written"
        )


def check_timeline(path: Path, timeline: pd.DataFrame) -> None:
    """timeline.parquet: every column; sample instants finite, >= 0 and in order; counts >= 0; rates finite and >= 0;
    the busy fraction within 0..1 and KV use >= 0 (NaN: no replica to sample)."""
    _missing(path, timeline, tuple(TIMELINE_COLUMNS))
    col = {c: _numbers(path, timeline, c) for c in TIMELINE_COLUMNS}
    t = col["t_s"]
    _fail(
        path, timeline, ~(np.isfinite(t) & (t >= 0) & (t <= MAX_TIME_S)), "sample instants must be finite and >= 0", "t_s", None
    )
    _fail(path, timeline, np.diff(t, prepend=-np.inf) < 0, "samples must be in time order", "t_s", None)
    for c, v in col.items():
        if c == "t_s":
            continue
        if c == "busy_fraction":
            bad = (v < 0) | (v > 1 + TOLERANCE_S) | np.isinf(v)
            rule = "fractions must be within 0..1"
        elif c == "kv_use":  # (NaN: no replica up)
            bad = (v < 0) | (v > 1 + TOLERANCE_S) | np.isinf(v)
            rule = "KV use must be within 0..1"
        else:
            bad = ~(np.isfinite(v) & (v >= 0))
            rule = "counts and rates must be finite and >= 0"
        _fail(path, timeline, bad, rule, c, None)
