"""A small fuzzer: hostile values at random places of a valid scenario, and random trace rows. Whatever
comes in, the outcome is a one-line `FleetsimError` or a valid run; never another exception."""

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import parse_config
from sim.errors import FleetsimError
from sim.simulation import simulate
from sim.workload import load_trace, validate_frame

BASE = {
    "model": "llama-3.1-8b",
    "seed": 0,
    "fleet": {
        "gpu": "a100-80gb",
        "tp": 1,
        "router": "least_outstanding",
        "autoscaler": {"policy": "hpa", "min_replicas": 1, "max_replicas": 3, "interval_s": 1},
        "lifecycle": {"provision_s": 2, "image_pull_s": 1, "weights_from": "host_ram", "warmup_s": 1},
        "timeline_interval_s": 1,
    },
    "engine": {"policy": "chunked", "max_num_seqs": 8, "max_num_batched_tokens": 512, "num_gpu_blocks_override": 64},
    "roofline": {"weight_bits": 16},
    "pricing": {"usd_per_gpu_hour": 2.0},
    "slo": {"ttft_ms": 500},
}
PATHS = [
    ("model",),
    ("seed",),
    ("fleet",),
    ("fleet", "gpu"),
    ("fleet", "tp"),
    ("fleet", "router"),
    ("fleet", "autoscaler"),
    ("fleet", "autoscaler", "policy"),
    ("fleet", "autoscaler", "min_replicas"),
    ("fleet", "autoscaler", "max_replicas"),
    ("fleet", "autoscaler", "interval_s"),
    ("fleet", "autoscaler", "target"),
    ("fleet", "autoscaler", "metric"),
    ("fleet", "lifecycle", "provision_s"),
    ("fleet", "lifecycle", "warmup_s"),
    ("fleet", "lifecycle", "weights_from"),
    ("fleet", "lifecycle", "load_gb_per_s"),
    ("fleet", "lifecycle", "start"),
    ("fleet", "max_gpus"),
    ("fleet", "reserved_replicas"),
    ("fleet", "queue_max"),
    ("fleet", "queue_timeout_s"),
    ("fleet", "timeline_interval_s"),
    ("engine", "policy"),
    ("engine", "max_num_seqs"),
    ("engine", "max_num_batched_tokens"),
    ("engine", "block_size"),
    ("engine", "num_gpu_blocks_override"),
    ("engine", "fast_forward"),
    ("engine", "step_time"),
    ("roofline", "weight_bits"),
    ("roofline", "mfu"),
    ("roofline", "gpu_memory_utilization"),
    ("roofline", "preset"),
    ("pricing", "usd_per_gpu_hour"),
    ("pricing", "billing_granularity_s"),
    ("pricing", "compare_api"),
    ("slo", "ttft_ms"),
    ("trace",),
    ("colour",),
]
BENIGN = st.sampled_from([1, 2, 4, 16, 0.9, 100, 3600, "least_kv", "power_of_two", "prefill_first", "kv_use", "busy_fraction"])
HOSTILE = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        2,
        3,
        7,
        64,
        2**31,
        2**63,
        0.5,
        -0.5,
        1e-09,
        1000000000000.0,
        math.nan,
        math.inf,
        -math.inf,
        "",
        "x",
        "llama-2-7b",
        "a100-80gb",
        "hpa",
        "kpa",
        "queue",
        "fixed",
        "prefill_first",
        "seed",
        [],
        [1, 2],
        {},
        {"policy": "kpa"},
        {"policy": "queue", "min_replicas": 0},
        {"kind": "constant", "decode_step_s": 0.01},
        {"dist": "uniform", "low": 1, "high": 3},
        {"dist": "lognormal", "mean": 5, "cv": 20},
    ]
)
NASTY = st.one_of(HOSTILE, BENIGN)


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _copy(x):
    return {k: _copy(v) for k, v in x.items()} if isinstance(x, dict) else x


TRACE = validate_frame(
    pd.DataFrame(
        {"arrival_at_s": [0.0, 0.2, 0.2, 1.5, 3.0], "prompt_tokens": [10, 200, 50, 900, 30], "output_tokens": [5, 40, 1, 20, 60]}
    )
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), NASTY), min_size=1, max_size=3))
def test_hostile_scenarios_give_one_line_or_a_valid_run(edits):
    raw = _copy(BASE)
    for path, value in edits:
        _set(raw, path, value)
    try:
        result = simulate(parse_config(raw, where="fuzz.yaml"), TRACE, measure_capacity=False)
    except FleetsimError as err:
        assert "\n" not in str(err) and str(err)
        return
    summary = result.summary()
    assert summary["completed"] + summary["rejected"] == len(TRACE)


CELLS = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(["", "x", "1e3", "true", " 7", "NaN", "-0", "١٢"]),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=0, max_size=12), sort=st.booleans())
def test_random_trace_rows_give_one_line_or_a_valid_frame(rows, sort, tmp_path):
    frame = pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"])
    if sort and len(frame):
        frame = frame.iloc[np.argsort(pd.to_numeric(frame["arrival_at_s"], errors="coerce").fillna(0).to_numpy(), kind="stable")]
    path = tmp_path / "fuzz.csv"
    frame.to_csv(path, index=False)
    try:
        trace = load_trace(path)
    except FleetsimError as err:
        assert "\n" not in str(err) and "fuzz.csv" in str(err)
        return
    assert (trace["prompt_tokens"] >= 1).all() and (trace["output_tokens"] >= 1).all()
    assert trace["arrival_at_s"].is_monotonic_increasing and np.isfinite(trace["arrival_at_s"]).all()
    try:
        result = simulate(parse_config(BASE), trace, measure_capacity=False)
    except FleetsimError as err:  # e.g. a time span too long for the timeline's bound
        assert "\n" not in str(err) and str(err)
        return
    assert result.summary()["completed"] + result.summary()["rejected"] == len(trace)
