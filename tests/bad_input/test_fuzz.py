"""A small fuzzer: hostile values at random places of a valid scenario, and random trace rows. Whatever
comes in, the outcome is a one-line `FleetsimError` or a valid run; never another exception."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
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


PLATFORM = {
    **{k: v for k, v in BASE.items() if k != "model"},
    "gpu_budget": {"a100-80gb": 3},
    "deployments": [{"name": "a", "model": "llama-3.1-8b"}, {"name": "b", "model": "llama-2-7b", "priority": 1}],
}
PLATFORM_PATHS = [
    ("gpu_budget",),
    ("gpu_budget", "a100-80gb"),
    ("gpu_budget", "h100"),
    ("deployments",),
    ("fleet", "lifecycle", "sleep"),
    ("fleet", "lifecycle", "sleep", "level"),
    ("fleet", "lifecycle", "sleep", "max_sleeping"),
    ("fleet", "lifecycle", "sleep", "initial_sleeping"),
    ("fleet", "lifecycle", "sleep", "host_to_gpu_gb_per_s"),
    ("fleet", "autoscaler", "min_replicas"),
    ("fleet", "autoscaler", "max_replicas"),
    ("fleet", "tp"),
]
DEPLOYMENT_KEYS = st.sampled_from(["name", "model", "share", "priority", "serves", "fleet", "engine", "slo", "colour"])
MODELS = st.sampled_from(["a", "b", "c", "", 7])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(PLATFORM_PATHS), NASTY), max_size=2),
    deployment_edits=st.lists(st.tuples(st.integers(0, 1), DEPLOYMENT_KEYS, NASTY), max_size=2),
    models=st.one_of(st.lists(st.sampled_from(["a", "b"]), min_size=5, max_size=5), st.lists(MODELS, min_size=5, max_size=5)),
)
def test_hostile_platforms_give_one_line_or_a_valid_run(edits, deployment_edits, models):
    raw = _copy(PLATFORM)
    raw["deployments"] = [_copy(d) for d in PLATFORM["deployments"]]
    for path, value in edits:
        _set(raw, path, value)
    for i, key, value in deployment_edits:
        if isinstance(raw.get("deployments"), list) and len(raw["deployments"]) > i and isinstance(raw["deployments"][i], dict):
            raw["deployments"][i][key] = value
    from sim.run.platform import simulate_platform

    trace = TRACE.assign(model=[str(m) if m != 7 else 7 for m in models])
    try:
        scenario = parse_config(raw, where="fuzz.yaml")
        if scenario.deployments:
            trace = validate_frame(trace)
            result = simulate_platform(scenario, trace, measure_capacity=False)
        else:
            result = simulate(scenario, TRACE, measure_capacity=False)
    except FleetsimError as err:
        assert "\n" not in str(err) and str(err)
        return
    summary = result.summary()
    n = summary.get("requests", len(TRACE))
    assert summary["completed"] + summary["rejected"] == n == len(TRACE)


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


# --- sweep and plan files ------------------------------------------------------------------------------
# Hostile values at the places of a sweep or plan file, over a valid base scenario (the fuzz BASE). Ranges and
# value lists stay short, so that a valid file has a few dozen points: a fuzz example reads, it does not run.
BASE_FILE = {**BASE, "trace": "t.csv"}
NUMBERS = st.sampled_from([0, 1, 2, 3, -1, 0.5, 1e12, math.nan, math.inf, True, "2", None])
RANGE = st.fixed_dictionaries(
    {"from": NUMBERS, "to": NUMBERS}, optional={"step": st.sampled_from([1, 0.5, 2, 0, -1, 1e-9, math.nan, "x"])}
)
AXIS_PATHS = st.sampled_from(
    [".".join(p) for p in PATHS] + ["", ".", "fleet..tp", "seed", "fleet.tp.x", "engine.max_num_seqs", "trace.sample"]
)
AXIS_VALUES = st.one_of(st.lists(NASTY, max_size=3), RANGE, NASTY)
SEEDS = st.sampled_from([1, 3, 0, -1, 10_001, [0, 0], [], [0, 7], "x", 2.5, True, None])
BASES = st.sampled_from(["base.yaml", "base.yaml", "base.yaml", "", "nowhere.yaml", ".", "sweep.yaml", 7, None])


def _study_file(tmp_path, name: str, body: dict) -> object:
    import yaml

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE_FILE))
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n0.5,20,3\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, allow_unicode=True))
    return path


def _one_line(err: FleetsimError) -> None:
    assert str(err) and "\n" not in str(err), str(err)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {"base": BASES},
        optional={
            "name": st.sampled_from(["s", "", "x" * 300, 5]),
            "set": st.dictionaries(AXIS_PATHS, NASTY, max_size=2),
            "cross": st.dictionaries(AXIS_PATHS, AXIS_VALUES, max_size=2),
            "zip": st.dictionaries(AXIS_PATHS, AXIS_VALUES, max_size=2),
            "seeds": SEEDS,
            "colour": NASTY,
        },
    )
)
def test_hostile_sweep_files_give_one_line_or_a_valid_sweep(body, tmp_path):
    from sim.studies.sweep import load_sweep

    try:
        sweep = load_sweep(_study_file(tmp_path, "sweep.yaml", body))
    except FleetsimError as err:
        _one_line(err)
        return
    assert sweep.points and sweep.seeds and len(set(sweep.seeds)) == len(sweep.seeds)
    assert all(set(p.values) == set(sweep.axes) for p in sweep.points)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {
            "base": BASES,
            "scale": st.one_of(
                st.fixed_dictionaries(
                    {"path": st.sampled_from(["fleet.autoscaler.replicas", "fleet.tp", ""]), "from": NUMBERS, "to": NUMBERS}
                ),
                NASTY,
            ),
            "slo": st.one_of(
                st.fixed_dictionaries({}, optional={"p99_ttft_ms": NUMBERS, "p99_tpot_ms": NUMBERS, "attainment": NUMBERS}), NASTY
            ),
        },
        optional={
            "set": st.dictionaries(AXIS_PATHS, NASTY, max_size=2),
            "search": st.dictionaries(AXIS_PATHS, AXIS_VALUES, max_size=2),
            "objective": st.sampled_from(["usd_per_1k_tokens", "usd_per_hour", "speed", 1]),
            "seeds": SEEDS,
            "confidence": NUMBERS,
            "method": st.sampled_from(["bisect", "grid", "guess"]),
        },
    )
)
def test_hostile_plan_files_give_one_line_or_a_valid_plan(body, tmp_path):
    from sim.studies.plan import load_plan

    try:
        plan = load_plan(_study_file(tmp_path, "plan.yaml", body))
    except FleetsimError as err:
        _one_line(err)
        return
    assert plan.groups and plan.axes[-1] == plan.spec.scale.path


# --- calibrate inputs --------------------------------------------------------------------------------
KINDS = st.sampled_from(["prefill", "decode", "mixed", "Decode ", "split", "", "1"])


@pytest.fixture(scope="module")
def calibrate_setup():
    from tests.conftest import make_setup

    return make_setup("llama-3.1-8b", "h100-sxm", tp=1)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(KINDS, CELLS, CELLS, CELLS, CELLS), min_size=0, max_size=10),
    vllm=st.booleans(),
    fix=st.sampled_from([(), ("overlap",), ("mfu", "mbu", "overlap")]),
)
def test_random_calibrate_tables_give_one_line_or_a_sane_fit(rows, vllm, fix, tmp_path, calibrate_setup):
    from sim.studies.calibrate import BOUNDS, calibrate, read_shapes

    columns = ["kind", "batch", "new_tokens_per_seq", "context_tokens", "total_ms"]
    frame = pd.DataFrame(rows, columns=columns)
    if vllm:  # the same cells as a vllm-latency table (its runs' decode steps are capped by MAX_STEPS)
        frame = frame.drop(columns="kind").set_axis(["batch_size", "input_len", "output_len", "avg_latency"], axis=1)
    path = tmp_path / "steps.csv"
    frame.to_csv(path, index=False)
    try:
        shapes = read_shapes(path)
        cal = calibrate(calibrate_setup, shapes, fix=fix, loo=False, source=str(path))
    except FleetsimError as err:
        _one_line(err)
        assert "steps.csv" in str(err) or "--layout" in str(err), str(err)
        return
    assert len({s.steps for s in shapes}) > len(cal.fitted)
    assert np.isfinite(cal.after_s).all() and (cal.after_s > 0).all()
    assert all(BOUNDS[p][0] <= cal.after[p] <= BOUNDS[p][1] for p in cal.fitted)


# --- prefix hash ids (Mooncake hash_ids; the canonical prefix_hash_ids column) ---------------------------
MAX_ID = 2**53 - 1
JSON_IDS = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, 1, MAX_ID, MAX_ID + 1, MAX_ID + 2, -1, 2**63, 2**64]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([1.0, 2.5, 2.0**53, 1e23, -0.0]),
        st.text(max_size=3),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


def _exact_ids(value: object) -> list[int] | None:
    """What a row's ids must read as if they are accepted: Python's exact integers, or None (no ids)."""
    if value is None:
        return None
    assert isinstance(value, list)
    return [int(v) for v in value]


def _acceptable(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, list):
        return False
    return all(
        not isinstance(v, bool) and isinstance(v, int | float) and 0 <= v <= MAX_ID and float(v).is_integer() for v in value
    )


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.one_of(JSON_IDS, st.just("absent")), min_size=1, max_size=6))
def test_random_mooncake_hash_ids_give_one_line_or_exact_int64(ids, tmp_path):
    import json

    lines = []
    for i, h in enumerate(ids):
        row = {"timestamp": i, "input_length": 100, "output_length": 6}
        if h != "absent":
            row["hash_ids"] = h
        lines.append(json.dumps(row))
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        trace = load_trace(path)
    except FleetsimError as err:
        _one_line(err)
        assert "fuzz.jsonl" in str(err)
        assert not all(_acceptable(None if h == "absent" else h) for h in ids) or "cannot parse" in str(err), str(err)
        return
    expected = [_exact_ids(None if h == "absent" else h) for h in ids]
    assert all(_acceptable(None if h == "absent" else h) for h in ids)
    if "prefix_hash_ids" not in trace.columns:
        assert all(e is None for e in expected)
        return
    got = [None if h is None else (h.dtype, h.tolist()) for h in trace["prefix_hash_ids"]]
    assert got == [None if e is None else (np.dtype(np.int64), e) for e in expected]


CSV_IDS = st.one_of(
    st.lists(st.sampled_from([0, 1, 7, MAX_ID, MAX_ID + 1, -1, 2**63]), max_size=4).map(lambda v: " ".join(map(str, v))),
    st.text(alphabet="0123456789 -+.[],ex", max_size=12),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cells=st.lists(CSV_IDS, min_size=1, max_size=6))
def test_random_csv_prefix_hash_ids_give_one_line_or_exact_int64(cells, tmp_path):
    path = tmp_path / "fuzz.csv"
    rows = [f"{i},10,3,{c}" for i, c in enumerate(cells)]
    path.write_text("arrival_at_s,prompt_tokens,output_tokens,prefix_hash_ids\n" + "\n".join(rows) + "\n")
    tokens = [c.split() for c in cells]
    fine = all(t.isascii() and t.isdigit() and int(t) <= MAX_ID for cell in tokens for t in cell)
    try:
        trace = load_trace(path)
    except FleetsimError as err:
        _one_line(err)
        assert "fuzz.csv" in str(err) and not fine, str(err)
        return
    assert fine
    for cell, got in zip(tokens, trace["prefix_hash_ids"], strict=True):
        if not cell and got is None:
            continue  # an empty cell: no ids
        assert got.dtype == np.int64 and got.tolist() == [int(t) for t in cell]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(
        st.one_of(
            st.none(),
            st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
            st.lists(st.sampled_from([0, 1, MAX_ID, MAX_ID + 1, -1]), max_size=4),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_parquet_prefix_hash_ids_give_one_line_or_exact_int64(ids, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(ids)
    try:
        column = pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return  # not a column any Parquet writer could hold
    table = pa.table(
        {
            "arrival_at_s": [float(i) for i in range(n)],
            "prompt_tokens": [10] * n,
            "output_tokens": [3] * n,
            "prefix_hash_ids": column,
        }
    )
    path = tmp_path / "fuzz.parquet"
    pq.write_table(table, path)
    fine = all(_acceptable(h) for h in column.to_pylist())
    try:
        trace = load_trace(path)
    except FleetsimError as err:
        _one_line(err)
        assert "fuzz.parquet" in str(err) and not fine, str(err)
        return
    assert fine
    for value, got in zip(column.to_pylist(), trace["prefix_hash_ids"], strict=True):
        assert (got is None) if value is None else (got.dtype == np.int64 and got.tolist() == [int(v) for v in value])
