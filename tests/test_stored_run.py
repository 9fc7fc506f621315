"""A run larger than memory (`simulate_stored`): its request columns in files, its gap record spilled, its records
written a row group at a time, its summary computed in passes (exact percentiles by radix selection). Judged
against the in-memory run of the same scenario and trace: the same records, the same summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.results.streamed as streamed
from sim.errors import FleetsimError
from sim.results.metrics import GapDistribution, _gap_stats, _stats
from sim.results.result import SimResult
from sim.results.stored import StoredResult
from sim.run import store
from sim.run.capacity import Lengths, sample_requests
from sim.run.engine import records
from sim.run.simulate import scenario_trace, simulate, simulate_stored
from sim.scenario.config import load_config, parse_config
from sim.workload.synthetic import SyntheticSpec, generate, generate_windows

REPO = Path(__file__).resolve().parents[1]


def differences(a: object, b: object, path: str = "", rel: float = 1e-12) -> list[tuple[str, object, object]]:
    """Where two summaries differ: floats beyond `rel` (means are summed in another order), anything else at all."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}", rel)]
    if isinstance(a, float) and isinstance(b, float):
        same = a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(abs(a), abs(b))
        return [] if same else [(path, a, b)]
    return [] if a == b else [(path, a, b)]


@pytest.fixture
def often(monkeypatch):
    """Hand the pages back and spill the gap record every 64 arrivals (a long run's every 262,144)."""
    monkeypatch.setattr(records, "RELEASE_EVERY", 64)


def small_batch_scenario(tmp_path: Path):
    """configs/batch-backfill.yaml with an hour of its trace and a job of 300 requests due in it."""
    raw = yaml.safe_load((REPO / "configs" / "batch-backfill.yaml").read_text())
    raw["trace"]["arrivals"]["rate_table"] = str(REPO / "traces" / "servegen_m-large_rate.csv")
    raw["trace"]["duration_s"] = 3600
    raw["batch"]["jobs"][0] |= {"requests": 300, "deadline_s": 3600}
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.mark.parametrize("config", ["default.yaml", "disagg.yaml", "batch", "startup-spot.yaml", "prefix-cache.yaml"])
def test_a_stored_run_gives_the_records_and_summary_of_the_run_in_memory(config, tmp_path, often):
    sc = small_batch_scenario(tmp_path) if config == "batch" else load_config(REPO / "configs" / config)
    trace = scenario_trace(sc, base_dir=sc.base_dir)
    trace = trace[trace["arrival_at_s"] <= trace["arrival_at_s"].quantile(0.15)]  # (its first stretch: quicker)
    result = simulate(sc, trace)
    summary = simulate_stored(sc, tmp_path / "run", trace)
    assert differences(summary, result.summary()) == []
    loaded = SimResult.load(tmp_path / "run")  # the folder is a whole run folder, as write_run writes one
    assert differences(loaded.summary(), result.summary()) == []
    pd.testing.assert_frame_equal(loaded.requests, result.requests.assign(status=loaded.requests["status"]))
    assert (loaded.requests["status"].astype(str) == result.requests["status"].astype(str)).all()
    assert loaded.itl.count == result.itl.count
    for q in (0, 50, 99, 100):
        assert loaded.itl.percentile(q) == result.itl.percentile(q)
    assert not (tmp_path / "run" / ".store").exists()


def test_a_stored_trace_replays_as_the_same_trace_in_memory(tmp_path, often):
    sc = load_config(REPO / "configs" / "default.yaml")
    frame = scenario_trace(sc, base_dir=sc.base_dir)[["arrival_at_s", "prompt_tokens", "output_tokens"]].head(700)
    windows = (frame.iloc[lo : lo + 97] for lo in range(0, len(frame), 97))
    trace = store.stored_trace(windows, tmp_path / "trace")
    assert trace["arrival_at_s"].to_numpy().base is not None  # a view of the files, not a copy
    pd.testing.assert_frame_equal(trace, frame.reset_index(drop=True), check_dtype=False)
    a = simulate_stored(sc, tmp_path / "run", trace, measure_capacity=False)
    b = simulate(sc, frame, measure_capacity=False).summary()
    assert differences(a, b) == []


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([pd.DataFrame({"arrival_at_s": [0.0, 2.0], "prompt_tokens": [5, 5], "output_tokens": [3, 3]}),
          pd.DataFrame({"arrival_at_s": [1.0], "prompt_tokens": [5], "output_tokens": [3]})],
         "row 2: arrival_at_s must be non-decreasing (got 1 after 2)"),
        ([pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [5, -1], "output_tokens": [3, 3]})],
         "row 1: prompt_tokens must be >= 1 (got -1)"),
        ([pd.DataFrame({"arrival_at_s": [-1.0], "prompt_tokens": [5], "output_tokens": [3]})], "arrival_at_s must be >= 0"),
        ([pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [5], "output_tokens": [3], "klass": ["batch"]})],
         "a window holds column 'klass'"),
        ([pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [5]})], "misses column 'output_tokens'"),
        ([], "the trace has no requests"),
    ],
)  # fmt: skip
def test_a_stored_traces_windows_are_checked_as_a_trace_files_rows(windows, message, tmp_path):
    with pytest.raises(FleetsimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        store.stored_trace(iter(windows), tmp_path / "trace")


def test_handing_the_pages_back_keeps_the_data(tmp_path):
    columns = store.FileColumns(tmp_path / "cols")
    x = columns.column("x", 100_000, np.float64, np.nan)
    assert np.isnan(x).all()
    x[::7] = np.arange(x[::7].size)
    before = x.copy()
    columns.release()
    np.testing.assert_array_equal(x, before)
    assert (tmp_path / "cols" / "x.bin").stat().st_size == 800_000


def test_a_failed_stored_run_leaves_no_folder(tmp_path, monkeypatch):
    import sim.results.stored as stored_module

    def broken(self):
        raise RuntimeError("the disk filled")

    monkeypatch.setattr(stored_module.StoredResult, "summary", broken)
    sc = load_config(REPO / "configs" / "default.yaml")
    with pytest.raises(RuntimeError):
        simulate_stored(sc, tmp_path / "run", measure_capacity=False)
    assert not (tmp_path / "run").exists() and list(tmp_path.iterdir()) == []


def test_a_stored_run_refuses_what_a_run_refuses(tmp_path):
    sc = parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 3}})
    trace = pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [5], "output_tokens": [3]})
    with pytest.raises(FleetsimError, match="tp"):
        simulate_stored(sc, tmp_path / "run", trace)
    assert not (tmp_path / "run").exists()


# --- exact statistics in passes --------------------------------------------------------------------------------
def passes(x: np.ndarray, rows: int):
    return lambda: (x[i : i + rows] for i in range(0, x.size, rows))


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=400),
    st.integers(1, 50),
    st.booleans(),
)
def test_value_statistics_in_passes_are_numpys(values, rows, small):
    x = np.asarray(values)
    old = streamed.LIMIT, streamed.BITS
    try:
        if small:  # gathering at most 3 values, 2 bits a counting pass: every level of the selection runs
            streamed.LIMIT, streamed.BITS = 3, 2
        got = streamed.value_stats("t", passes(x * 1000, rows), (0, 37.5, 90, 99, 100))
    finally:
        streamed.LIMIT, streamed.BITS = old
    want = _stats("t", x.copy(), (0, 37.5, 90, 99, 100))
    for key, value in want.items():
        if key.startswith(("mean", "std")):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-6)
        else:
            assert got[key] == value, key


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32), st.integers(1, 400), st.booleans())
def test_gap_order_statistics_in_passes_are_the_gap_records(gap_search, seed, rows, small):
    rng = np.random.default_rng(seed)
    p = int(rng.integers(0, 60))
    pieces = list(
        zip(
            rng.choice([0.01, 0.02, 0.5], p) + rng.uniform(0, 1e-3, p),
            rng.choice([0.0, 1e-7, -1e-6, 1e-3], p),
            (j0 := rng.integers(1, 30, p)),
            j0 + rng.integers(1, 80, p),
            rng.integers(1, 9, p),
            strict=True,
        )
    )
    singles = list(rng.choice([0.0, 0.02, 0.3], int(rng.integers(0, 40))) + rng.uniform(0, 1e-3))
    grouped = [(float(v), int(w)) for v, w in zip(rng.uniform(0, 0.1, 5), rng.integers(1, 30, 5), strict=True)]
    gaps = GapDistribution.from_lists(singles, pieces, grouped)
    frame = gaps.to_frame().sample(frac=1, random_state=seed % 1000).reset_index(drop=True)
    chunks = lambda: (frame.iloc[i : i + rows] for i in range(0, len(frame), rows))  # noqa: E731
    old = streamed.PIECE_LIMIT, streamed.PIECE_BITS, streamed.BITS
    try:
        if small:
            streamed.PIECE_LIMIT, streamed.PIECE_BITS, streamed.BITS = 2, 2, 5
        got = streamed.gap_stats(chunks, (0, 12.5, 90, 99, 100))
    finally:
        streamed.PIECE_LIMIT, streamed.PIECE_BITS, streamed.BITS = old
    want = _gap_stats(gaps, (0, 12.5, 90, 99, 100))
    for key, value in want.items():  # (a gap a + b*j within a rounding of a bracket's end may count on either side)
        rel = 1e-9 if key.startswith(("mean", "std")) else 1e-14
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-9), key


def test_a_stored_results_summary_reads_the_folder_in_passes(tmp_path, monkeypatch):
    sc = load_config(REPO / "configs" / "default.yaml")
    result = simulate(sc, scenario_trace(sc, base_dir=sc.base_dir).head(500))
    from sim.results.report import write_run

    write_run(result, tmp_path / "run")
    monkeypatch.setattr("sim.results.stored.ROWS", 50)  # many row groups' worth of passes
    assert differences(StoredResult.open(tmp_path / "run").summary(), result.summary()) == []


# --- the trace in windows, the length mix in blocks ----------------------------------------------------------------
def test_a_synthetic_trace_in_windows_is_the_same_process(tmp_path):
    raw = {
        "arrivals": {
            "process": "diurnal",
            "mean_rate_per_s": 20,
            "rate_table": str(REPO / "traces" / "servegen_m-large_rate.csv"),
        },
        "prompt_tokens": {"dist": "lognormal", "mean": 500, "cv": 1.0},
        "output_tokens": {"dist": "uniform", "low": 10, "high": 300},
        "duration_s": 7200,
        "seed": 3,
    }
    spec = SyntheticSpec.model_validate(raw)
    windows = list(generate_windows(spec, 600.0))
    again = pd.concat(list(generate_windows(spec, 600.0)), ignore_index=True)
    frame = pd.concat(windows, ignore_index=True)
    pd.testing.assert_frame_equal(frame, again)  # the same seed and window: the same trace
    assert np.all(np.diff(frame["arrival_at_s"]) >= 0) and frame["arrival_at_s"].iloc[-1] < 7200
    whole = generate(spec)
    # the same process: counts per 10 minutes within 5 standard deviations of the whole draw's (Poisson)
    a = np.histogram(frame["arrival_at_s"], bins=12, range=(0, 7200))[0]
    b = np.histogram(whole["arrival_at_s"], bins=12, range=(0, 7200))[0]
    assert np.all(np.abs(a - b) <= 5 * np.sqrt(2 * b))
    assert frame["output_tokens"].between(10, 300).all()
    assert abs(frame["prompt_tokens"].mean() / whole["prompt_tokens"].mean() - 1) < 0.05


@pytest.mark.parametrize(
    ("arrivals", "extra", "message"),
    [
        ({"process": "gamma", "rate_per_s": 5, "cv": 2}, {}, "gamma arrivals are not independent"),
        ({"process": "poisson", "rate_per_s": 5}, {"n_requests": 10, "duration_s": None}, "give duration_s"),
    ],
)
def test_arrivals_that_cannot_be_drawn_in_windows_are_refused(arrivals, extra, message):
    raw = {"arrivals": arrivals, "prompt_tokens": {"dist": "fixed", "tokens": 5}, "output_tokens": {"dist": "fixed", "tokens": 5},
           "duration_s": 60, **extra}  # fmt: skip
    with pytest.raises(FleetsimError, match=message):
        next(generate_windows(SyntheticSpec.model_validate({k: v for k, v in raw.items() if v is not None}), 10.0))


def test_the_capacity_probes_sample_drawn_in_blocks_is_the_whole_arrays(monkeypatch):
    rng = np.random.default_rng(5)
    lengths = np.column_stack((rng.integers(1, 4000, 5000), rng.integers(1, 2000, 5000)))

    def whole(ctx: int) -> np.ndarray:  # the sample as drawn from one array (the code before blocks)
        pool = lengths[lengths.sum(axis=1) <= ctx]
        return pool[np.random.default_rng(7).choice(len(pool), size=1000, replace=len(pool) < 1000)]

    monkeypatch.setattr("sim.run.capacity.SAMPLE_SEED", 7)
    monkeypatch.setattr(Lengths, "ROWS", 333)
    for ctx in (5000, 1500, 300):  # (1,000 of many; of fewer, with replacement)
        np.testing.assert_array_equal(sample_requests(lengths, ctx), whole(ctx))
    assert sample_requests(lengths, 1).shape == (0, 2)


# --- the command line ------------------------------------------------------------------------------------------------
def test_fleetsim_run_stored_prints_and_writes_what_a_run_in_memory_does(tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    runner = CliRunner()
    config = REPO / "configs" / "default.yaml"
    a = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "a"), "--no-progress", "--json"])
    b = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "b"), "--no-progress", "--json", "--stored"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    import json

    assert differences(json.loads(b.stdout), json.loads(a.stdout)) == []
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # (the trace's files beside it: removed)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--plot", "x.png"], "--stored: --plot draws from the records in memory"), (["--html", "x.html"], "--stored: --html")],
)
def test_fleetsim_run_stored_refuses_what_needs_the_records_in_memory(extra, message, tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    r = CliRunner().invoke(app, ["run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "a"), "--stored", *extra])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "arrivals",
    [
        {"process": "poisson", "rate_per_s": 40},
        {"process": "diurnal", "mean_rate_per_s": 40, "period_s": 900, "amplitude": 0.8},
        {"process": "spikes", "rate_per_s": 10, "spikes": [{"at_s": 400, "duration_s": 200, "multiplier": 9}]},
    ],
)
def test_every_windowed_process_draws_as_many_arrivals_as_the_whole_one(arrivals):
    spec = SyntheticSpec.model_validate(
        {
            "arrivals": arrivals,
            "prompt_tokens": {"dist": "fixed", "tokens": 5},
            "output_tokens": {"dist": "fixed", "tokens": 5},
            "duration_s": 1800,
            "seed": 9,
        }
    )
    frame = pd.concat(list(generate_windows(spec, 250.0)), ignore_index=True)
    whole = generate(spec)
    t = frame["arrival_at_s"].to_numpy()
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 1800
    for lo, hi in ((0, 600), (600, 1800)):  # the rate's shape, not only the total
        a, b = int(((t >= lo) & (t < hi)).sum()), int(whole["arrival_at_s"].between(lo, hi, inclusive="left").sum())
        assert abs(a - b) <= 5 * math.sqrt(2 * b)


def test_fleetsim_run_stored_warns_as_a_run_in_memory_does(tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    args = ["run", str(REPO / "configs" / "default.yaml"), "--no-progress", "--set", "engine.prefix_caching=true"]
    for extra in ([], ["--stored"]):
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / f"run{len(extra)}"), *extra])
        assert r.exit_code == 0, r.output
        assert "warning: engine.prefix_caching is on, but the trace has no prefix_hash_ids" in r.output


def test_a_failed_fleetsim_run_stored_makes_no_folder(tmp_path):
    from typer.testing import CliRunner

    from sim.cli import app

    out = tmp_path / "p" / "q" / "run"
    r = CliRunner().invoke(
        app, ["run", str(REPO / "configs" / "default.yaml"), "--out", str(out), "--stored", "--set", "fleet.gpu=nope"]
    )
    assert r.exit_code == 2 and "nope" in r.output
    assert list(tmp_path.iterdir()) == []
