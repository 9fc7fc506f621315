"""More behaviour that mutation testing found unpinned: the gap record's sums over more pieces than one block and its
warning-free percentiles, the speculating decode group past its first window, the lost time of a speculating replica's
step, the batch lane's prefix hashes and its ask before it has made one.

Survivors judged equivalent (no test can tell them from the real code), for the record:
- `SpecGroup._enter` growing its step buffers 3x instead of 2x: the buffers are read only relative to `base`, and
  both growths hold every step a member reaches; a larger buffer only moves its window less often.
- `RooflineStepTime._batch_terms` looking up `None` (always missing its memo): it recomputes the same pure terms.
- `BatchLane.guard_tick` without `dtype=np.int64`: the completions are Python ints (numpy's int64); an empty list
  gives an empty float array, which the guard reads only through `idx.size` (0).
- `Transfers._pump` filling 2.0 rather than 1.0 for a decode replica with no room: `least_kv_with_room` reads the KV
  use of replicas with room only.
- `Replica.stop` with `callbacks or any(...)`: an event still queued has a callbacks list; the mutant only rebuilds
  a list whose filter removes nothing (the same callbacks, in order), and nothing holds the old list.
- `SpecReplica._clear_run` leaving `""` rather than None: only `stop` calls it, a replica stops once (the pool
  releases it first), and nothing reads the field after.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.results.metrics import _BLOCK, GapDistribution
from sim.run.simulate import simulate
from sim.scenario.config import Scenario, parse_config
from sim.workload import validate_frame

CONSTANT_STEP = {"kind": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02}


def expand(a: np.ndarray, b: np.ndarray, j0: np.ndarray, j1: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every gap a + b*j, j in [j0, j1), of each piece, with its piece's weight."""
    n = j1 - j0
    piece = np.repeat(np.arange(a.size), n)
    j = j0[piece] + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return a[piece] + b[piece] * j, w[piece].astype(np.float64)


# --- scenarios --------------------------------------------------------------------------------------------------------


def frame(rows: list[tuple[float, int, int]], **columns: list[Any]) -> pd.DataFrame:
    data: dict[str, list[Any]] = {
        "arrival_at_s": [r[0] for r in rows],
        "prompt_tokens": [r[1] for r in rows],
        "output_tokens": [r[2] for r in rows],
        **columns,
    }
    return validate_frame(pd.DataFrame(data))


def engine_scenario(**engine: Any) -> Scenario:
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "tp": 1},
            "engine": {"policy": "chunked", "step_time": CONSTANT_STEP, **engine},
        }
    )


# --- the gap record ---------------------------------------------------------------------------------------------------


def test_mean_and_spread_of_a_record_longer_than_one_block_count_each_piece_once() -> None:
    """A long run's gap record holds more pieces than one evaluation block (the sums go a block at a time): the mean
    and standard deviation are those of every gap, each piece counted once — numpy's over the expanded gaps."""
    rng = np.random.default_rng(5)
    n = _BLOCK + 7
    a = rng.uniform(0.01, 0.05, n)
    b = rng.choice([-1e-4, 0.0, 2e-4], n)
    j0 = rng.integers(1, 6, n)  # int64, as the engine records them
    j1 = j0 + rng.integers(1, 4, n)
    w = rng.integers(1, 4, n)
    singles = rng.uniform(0.01, 0.05, 30)
    gaps = GapDistribution.from_arrays(singles, np.array([0.03]), np.array([4.0]), a, b, j0, j1, w)
    values, weights = expand(a, b, j0, j1, w)
    values = np.concatenate((values, singles, [0.03]))
    weights = np.concatenate((weights, np.ones(singles.size), [4.0]))
    assert gaps.count == int(weights.sum())
    mean = float(np.sum(weights * values) / weights.sum())
    assert gaps.mean() == pytest.approx(mean, rel=1e-9)
    assert gaps.std() == pytest.approx(float(np.sqrt(np.sum(weights * (values - mean) ** 2) / weights.sum())), rel=1e-6)


def test_percentiles_of_flat_pieces_at_the_queried_value_are_exact_and_warn_nothing(gap_search: str) -> None:
    """Flat pieces (a constant step time's decode runs: b = 0) whose value is the one a count is taken at — the
    smallest gap, where every percentile's search starts — count whole, and the summary's statistics raise no
    floating-point warning (numpy's 0/0 for them is handled, not reported)."""
    singles = [0.02, 0.03, 0.05]
    pieces = [(0.01, 0.0, 1, 5, 2), (0.04, 0.0, 1, 3, 1), (0.015, 0.001, 1, 10, 1), (0.06, -0.002, 2, 6, 3)]
    gaps = GapDistribution.from_lists(singles, pieces)
    expanded = list(singles)
    for a, b, j0, j1, w in pieces:
        expanded += [a + b * j for j in range(j0, j1) for _ in range(w)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [gaps.percentile(q) for q in (0, 10, 25, 50, 90, 99, 100)]
        spread = (gaps.mean(), gaps.std())
    assert got == pytest.approx(np.percentile(expanded, [0, 10, 25, 50, 90, 99, 100]), rel=1e-9, abs=1e-12)
    assert spread == pytest.approx((np.mean(expanded), np.std(expanded)), rel=1e-9)


def test_a_constant_step_time_runs_summary_raises_no_floating_point_warning() -> None:
    """A run with a constant step time records flat decode pieces; its summary (ITL percentiles among them) is
    computed without a numpy warning, and its ITL is the per-step engine's."""
    trace = frame([(0.0, 100, 40), (0.0, 100, 40), (0.3, 50, 30)])
    runs = []
    for ff in (True, False):
        r = simulate(engine_scenario(fast_forward=ff), trace, measure_capacity=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runs.append(r.summary())
    fast, slow = runs
    for key in ("mean_itl_ms", "median_itl_ms", "p90_itl_ms", "p99_itl_ms", "std_itl_ms"):
        assert fast[key] == pytest.approx(slow[key], rel=1e-9, abs=1e-9), key


# --- speculative decoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [257, 258, 259, 300])
def test_a_speculating_decoder_whose_future_outgrows_the_groups_first_window_decodes_as_per_step(output: int) -> None:
    """The speculating decode group keeps its members' futures by group step in a window it grows (256 steps at
    first): a decoder whose trajectory ends exactly at the window's end, one step past it or well past it (no draft
    accepted: one token a step, output - 1 steps after its first token), with a second joining later, gets the
    per-step engine's timestamps and verify counts."""
    spec = {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.0}
    trace = frame([(0.0, 100, output), (0.5, 50, 100)])
    fast, slow = (
        simulate(engine_scenario(fast_forward=ff, speculative=spec), trace, measure_capacity=False) for ff in (True, False)
    )
    assert fast.replicas.loc[0, "n_runs"] > 0 and slow.replicas.loc[0, "n_runs"] == 0  # (the group: fast-forward's)
    assert fast.requests["status"].eq("completed").all()
    for col in ("first_token_at_s", "completed_at_s"):
        assert fast.requests[col].to_numpy() == pytest.approx(slow.requests[col].to_numpy(), abs=1e-9)
    assert fast.replicas.loc[0, "verify_tokens"] == slow.replicas.loc[0, "verify_tokens"] == output - 1 + 99
    assert fast.replicas.loc[0, "verifies"] == slow.replicas.loc[0, "verifies"] == output - 1 + 99


# --- the replica ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ff", [True, False])
def test_a_speculating_replica_lost_mid_prompt_step_splits_the_lost_time_by_the_verify_steps_own_cost(ff: bool) -> None:
    """A step with prompt work lost mid-way counts its lost part as busy, the decodes' own share of it (what their step
    would cost alone) as decode work, the rest as prompt work. Constant step times (1 ms a prompt token, 50 ms a
    decode step) with 3 n-gram drafts, none accepted: a verify step alone costs 50 + 3 x 1 = 53 ms. A's prompt (10
    tokens) takes 10 ms, then it verifies alone; B (4,000 tokens) arrives at 1 s and joins at the next boundary
    (1.017 s: 19 verify steps) in one 4.053 s step; the replica fails at 2 s: 0.983 s lost, 53 ms of it decode work."""
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "autoscaler": {"policy": "fixed", "replicas": 1},
                "lifecycle": {"cold_start_s": 40.0},
                "capacity": {"failures": {"fail_at_s": [2.0]}},
            },
            "engine": {
                "fast_forward": ff,
                "speculative": {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.0},
                "step_time": {"kind": "constant", "prefill_s_per_token": 1e-3, "decode_step_s": 0.05},
            },
        }
    )
    r = simulate(sc, frame([(0.0, 10, 1000), (1.0, 4000, 10)]), measure_capacity=False)
    assert r.requests["status"].eq("completed").all()
    lost = r.replicas.loc[0]
    assert lost["interrupted"] == "failure" and lost["busy_s"] == pytest.approx(2.0, abs=1e-9)
    assert lost["lost_s"] == pytest.approx(2.0 - (0.01 + 19 * 0.053), abs=1e-9)
    assert lost["decode_busy_s"] == pytest.approx(19 * 0.053 + 0.053, abs=1e-9)
    assert lost["prefill_busy_s"] == pytest.approx(0.01 + lost["lost_s"] - 0.053, abs=1e-9)


# --- the batch lane ---------------------------------------------------------------------------------------------------


def test_batch_requests_carry_their_prefix_hashes_to_the_replica() -> None:
    """With prefix caching, a batch request dispatched by the lane brings its prefix hash ids: the second of two batch
    requests sharing three 16-token blocks of a 64-token prompt finds them cached (48 tokens) and prefills only the
    other 16 (1.6 ms at 0.1 ms a token), as an interactive request would."""
    trace = frame([(0.0, 64, 3), (1.0, 64, 3)], prefix_hash_ids=[[1, 2, 3, 4], [1, 2, 3, 5]], klass=["batch", "batch"])
    sc = engine_scenario(prefix_caching=True, prefix_hash_block_tokens=16)
    q = simulate(sc, trace, measure_capacity=False).requests
    assert q["klass"].tolist() == ["batch", "batch"] and q["status"].eq("completed").all()
    assert q["cached_tokens"].tolist() == [0, 48]
    assert q["first_token_at_s"].tolist() == pytest.approx([64e-4, 1.0 + 16e-4], abs=1e-12)
    interactive = simulate(sc, trace.assign(klass=["interactive"] * 2), measure_capacity=False).requests
    assert interactive["cached_tokens"].tolist() == [0, 48]


def test_a_decode_pool_is_not_held_by_a_batch_lane_that_has_asked_nothing() -> None:
    """Deadline scaling in a disaggregated fleet holds the decode pool at the lane's latest ask (in the pools'
    proportion); before the lane has asked anything (the prefill pool's autoscaler ticks every 100 s, the decode
    pool's every 10 s) there is no ask, so at 10 s the decode pool follows its own autoscaler from 3 replicas down to
    1 (the batch job is long done)."""
    one = [{"at_s": 0, "replicas": 1}]
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "tp": 1,
                "mode": "disaggregated",
                "lifecycle": {"start": "warm"},
                "prefill": {
                    "autoscaler": {"policy": "scheduled", "table": one, "min_replicas": 1, "max_replicas": 2, "interval_s": 100}
                },
                "decode": {
                    "autoscaler": {
                        "policy": "scheduled",
                        "table": one,
                        "min_replicas": 1,
                        "max_replicas": 4,
                        "initial_replicas": 3,
                        "interval_s": 10,
                    },
                    "engine": {"policy": "chunked", "step_time": CONSTANT_STEP},
                },
                "link": {"preset": "infiniband_400g"},
            },
            "engine": {"policy": "chunked", "max_num_batched_tokens": 8192, "step_time": CONSTANT_STEP},
            "batch": {
                "jobs": [
                    {
                        "job_id": "j",
                        "requests": 3,
                        "prompt_tokens": {"dist": "fixed", "tokens": 100},
                        "output_tokens": {"dist": "fixed", "tokens": 10},
                    }
                ],
                "deadline_scaling": True,
            },
        }
    )
    r = simulate(sc, frame([(0.0, 100, 5), (30.0, 100, 5)]), measure_capacity=False)
    q = r.requests
    assert q["status"].eq("completed").all() and q.loc[q["klass"] == "batch", "completed_at_s"].max() < 10.0
    decode = r.replicas[r.replicas["pool"] == "decode"]
    assert len(decode) == 3
    assert sorted(decode["drain_at_s"].fillna(-1.0).tolist()) == [-1.0, 10.0, 10.0]
    assert q["decode_replica_id"].iloc[-1] in decode.loc[decode["drain_at_s"].isna(), "replica_id"].tolist()
