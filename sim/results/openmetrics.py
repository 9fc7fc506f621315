"""A run's timeline as OpenMetrics text, under vLLM's Prometheus names where one exists, so a simulated
run can be loaded into Prometheus (`promtool tsdb create-blocks-from openmetrics FILE DIR`) and shown on
the dashboards that watch a real deployment. Reads records only (the `timeline` frame and `meta`).

Each timeline column is a gauge family; every sample carries its timestamp (`epoch_s` + the simulated
instant) and the run's labels (`scenario`, `model`, `gpu`). vLLM reports per engine; these are the
fleet's figures, summed (requests) or averaged (KV use) over replicas as `docs/metrics.md` defines them.
"""

from __future__ import annotations

import math
from typing import Any

from sim.results.result import SimResult

# (metric family, timeline column, help); vLLM's own names first (vllm/v1/metrics/loggers.py)
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vllm:num_requests_running", "running", "Requests in the replicas' running batches, summed over replicas."),
    ("vllm:num_requests_waiting", "waiting", "Requests waiting: the fleet queue plus every replica's waiting queue."),
    (
        "vllm:kv_cache_usage_perc",
        "kv_use",
        "KV-cache blocks in use over blocks, mean over ready and draining replicas (1 = 100%).",
    ),
    ("fleetsim:arrival_rate_per_second", "arrival_rate_per_s", "Arrivals in the last sampling interval over the interval."),
    (
        "fleetsim:busy_fraction",
        "busy_fraction",
        "Share of the last interval spent in engine steps, mean over ready and draining replicas.",
    ),
    (
        "fleetsim:kv_transfers_waiting",
        "kv_transfers_waiting",
        "Disaggregated: prefilled requests waiting for a decode replica with room (0 when colocated).",
    ),
)
REPLICA_STATES = ("provisioning", "loading", "ready", "draining")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(x: Any) -> str:
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


def to_openmetrics(result: SimResult, *, epoch_s: float = 0.0) -> str:
    """The timeline as an OpenMetrics exposition (text), one sample per timeline row and family."""
    meta = result.meta
    labels = {"scenario": meta.get("name") or "", "model": meta["model"], "gpu": meta["gpu"]}
    base = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items() if v != "")
    t = result.timeline
    stamps = [_number(epoch_s + s) for s in t["t_s"].to_numpy()]
    lines: list[str] = []
    for name, column, text in FAMILIES:
        lines += [f"# TYPE {name} gauge", f"# HELP {name} {text}"]
        lines += [f"{name}{{{base}}} {_number(v)} {ts}" for v, ts in zip(t[column].to_numpy(), stamps, strict=True)]
    name = "fleetsim:replicas"
    lines += [f"# TYPE {name} gauge", f"# HELP {name} Replicas in each lifecycle state."]
    for state in REPLICA_STATES:
        series = f'{name}{{{base}{"," if base else ""}state="{state}"}}'
        lines += [f"{series} {_number(v)} {ts}" for v, ts in zip(t[f"replicas_{state}"].to_numpy(), stamps, strict=True)]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
