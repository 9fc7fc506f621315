"""Behaviour a fresh mutation sample (seed 11, at d34141f: 210 of 233 killed) found unpinned: the gap record written
in row groups of any size, a decode run's step-by-step sum across the compute/memory crossover, a speculative
replica's bytes read on the fast path, a pool's launches on their way counting those waiting for capacity, the
KV-transfer queue's peak when nothing waited, and a lost replica's mid-run views.

Survivors judged equivalent (no test can tell them from the real code), for the record:
- `GapDistribution.from_frame` / `from_lists` reading columns without a float64 cast (the frame's columns and the
  singles are float64 or int64 already; the running sum of int64 weights is exact, as the float64 one is below
  2^53), `order_statistic` bisecting 201 times rather than 200 (it stops when the bracket closes, long before);
- `Replica._advance` taking a run's split step when `line.split > k` rather than `>=` (equal, both give k), `_step_end`
  starting with `emitted` True (only regroups more often: speed, the outputs the same, as the line's pragma says),
  `_admit_whole` returning rather than breaking (nothing follows the loop), `_decode_with_preemption` capping a chunk
  with `<` (equal pending and cap give the same n), `SpecGroup.advance` moving its window at a third rather than a
  half (speed only) and its zero fill without int64 (read back through `int()` and integer sums);
- `BatchLane.guard_tick` starting from None rather than False (read as a truth value), `replicas_needed`'s unused
  default fourth field, `Pool._pump_due` starting True (every pool's first replica becomes ready through `pump`, which
  clears it, before anything calls `pump_soon`), and a spot notice's call at no event priority (its instant is a
  continuous random draw: no other event shares it).
Killed here (checked by hand against these tests, each mutant applied and reverted):
  `frame_chunks`' two, `decode_sum`'s three, `SpecReplica._run_end`'s bytes, `Pool.coming`, `Transfers.peak_waiting`,
  `Replica._clear_run`, `with_priority_preemption`'s prepend: 10, so 220 of the 233 (94.4%), the other 13 equivalent.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sim.run.engine.step_time import RooflineStepTime
from sim.run.simulate import _build, _resolve, run, simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame


def _frame(n: int, rate: float = 4.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(1 / rate, n)),
                "prompt_tokens": rng.integers(20, 400, n),
                "output_tokens": rng.integers(2, 80, n),
            }
        )
    )


def test_the_gap_record_in_small_row_groups_is_the_whole_record():
    result = simulate(parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100"}}), _frame(40), measure_capacity=False)
    whole = result.itl.to_frame()
    assert len(whole) > 7  # (several groups of 3 rows each, singles and pieces)
    chunked = pd.concat(list(result.itl.frame_chunks(3)), ignore_index=True)
    pd.testing.assert_frame_equal(chunked, whole.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "deepseek-v3"])
def test_a_decode_runs_step_sum_is_its_steps_one_by_one_across_the_crossover(model):
    """Compute time grows with the context faster or slower than memory time depending on the model and the GPU's
    effective FLOP/s: runs that start just before or after the context where a step turns from one bound to the
    other cross it, where the closed form must not be used."""
    gpu, tp = ("h200", 8) if model == "deepseek-v3" else ("h100", 1)
    crossed = 0
    for mfu, n in itertools.product((0.01, 0.05, 0.3, 0.9), (1, 16, 128, 512)):
        setup = resolve_scenario(parse_config({"model": model, "fleet": {"gpu": gpu, "tp": tp}, "roofline": {"mfu": mfu}}))
        st = RooflineStepTime(setup)
        matmul, weights, _ = st._batch_terms(n)
        f, b, attn, kv = st._flops_per_s, st._bytes_per_s, st._attn, st._kv
        slope = attn / f - kv / b  # d(compute - memory) / d(context)
        # the context where a step turns from one bound to the other, and runs starting just before or after it
        at = (weights / b - matmul / f) / slope if slope else -1.0
        starts = [0, 1_000 * n, 20_000 * n]
        if at > 0:
            starts += [max(0, int(at) - n * d) for d in (1, 3, 50, 500)] + [int(at) + n * d for d in (0, 2)]
        for context_sum in starts:
            for k in (2, 9, 200, 2_000):
                one_by_one = sum(st.decode_sum(n, context_sum + n * j, 1) for j in range(k))
                assert st.decode_sum(n, context_sum, k) == pytest.approx(one_by_one, rel=1e-12), (n, context_sum, k)
                first = (matmul + attn * (context_sum + n)) / f >= (weights + kv * (context_sum + n)) / b
                last = (matmul + attn * (context_sum + n * k)) / f >= (weights + kv * (context_sum + n * k)) / b
                crossed += first != last
    assert crossed


def test_a_speculative_replicas_work_is_the_per_step_references():
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {"gpu": "h100", "autoscaler": {"policy": "fixed", "replicas": 2}},
        "engine": {"speculative": {"method": "mtp", "num_speculative_tokens": 3, "acceptance_rate": [0.8, 0.6, 0.4]}},
    }
    frame = _frame(60, rate=8.0, seed=3)
    fast = simulate(parse_config(raw), frame, measure_capacity=False).replicas
    raw["engine"]["fast_forward"] = False
    slow = simulate(parse_config(raw), frame, measure_capacity=False).replicas
    assert (fast["bytes"] > 0).all()
    np.testing.assert_allclose(fast["bytes"], slow["bytes"], rtol=1e-9)
    np.testing.assert_allclose(fast["flops"], slow["flops"], rtol=1e-9)


def test_launches_waiting_for_capacity_count_as_on_their_way():
    """Two cold starts asked for, one GPU obtainable: one starts, one waits; both are on their way (the autoscaler's
    `n_starting`)."""
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {
            "gpu": "h100",
            "autoscaler": {"policy": "hpa", "min_replicas": 2, "max_replicas": 3, "initial_replicas": 2},
            "lifecycle": {"cold_start_s": 30, "start": "cold"},
            "capacity": {"on_demand": {"obtainable_gpus": [[0, 1], [60, 8]]}, "backoff": {"initial_s": 60, "max_s": 60}},
        },
    }
    sc = parse_config(raw)
    _, full, specs = _resolve(sc, _frame(5), sc.base_dir)
    built = _build(sc, specs, full)
    built.env.run(until=1.0)
    pool = built.pools[0]
    assert (len(pool.starting), pool.pending) == (1, 1)
    assert pool.coming() == 2 and pool.observe().n_starting == 2


def test_a_disaggregated_run_with_no_transfer_reports_none_waiting():
    """Requests of one output token end at their prefill: nothing is transferred, nothing waits."""
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {
            "gpu": "h100",
            "mode": "disaggregated",
            "prefill": {"autoscaler": {"policy": "fixed", "replicas": 1}},
            "decode": {"autoscaler": {"policy": "fixed", "replicas": 1}},
        },
    }
    frame = _frame(3, rate=0.2).assign(output_tokens=1)
    result = simulate(parse_config(raw), frame, measure_capacity=False)
    assert result.summary()["completed"] == 3
    assert result.meta["link"]["peak_transfers_waiting"] == 0


def test_a_lost_replicas_mid_run_views_are_its_plain_state():
    """A replica lost in the middle of a decode run (`Replica.stop`): its views of a run in progress report none."""
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {
            "gpu": "h100",
            "autoscaler": {"policy": "fixed", "replicas": 2},
            "capacity": {"failures": {"fail_at_s": [4.0]}},
        },
    }
    sc = parse_config(raw)
    _, full, specs = _resolve(sc, _frame(30, rate=8.0), sc.base_dir)
    built = _build(sc, specs, full)
    run(built)
    lost = [slot for slot in built.replicas.slots if slot.interrupted == "failure"]
    assert len(lost) == 1 and lost[0].engine is not None and lost[0].requeued > 0
    engine = lost[0].engine
    assert engine.steps_done_in_run(built.env.now) == 0
    assert engine.kv_blocks_used_at(built.env.now) == engine.kv.used


def test_priority_victims_join_the_batchs_own_preempted_ahead_of_them():
    """A plan that preempts for KV room (its `preempted`) and still cannot admit the queue's high-priority head: the
    priority victims are put before the batch's own preempted sequences, none of which is dropped."""
    from sim.run.engine.scheduler import Batch, Limits, with_priority_preemption
    from sim.run.engine.sequence import Seq

    head = Seq(0, 0.0, 10, 5, priority=0)
    low_a, low_b = Seq(1, 0.0, 10, 5, priority=2, blocks=1, admit_no=1), Seq(2, 0.0, 10, 5, priority=2, blocks=1, admit_no=2)
    kv_victim = Seq(3, 0.0, 10, 5, priority=1, blocks=1, admit_no=3)
    calls = []

    def plan(waiting, running, free_blocks, limits, reserve):
        calls.append(len(running))
        batch = Batch()
        batch.preempted.append(kv_victim)  # (every plan preempts it for room)
        if len(running) == 0:  # room for the head once both low-priority sequences are out
            batch.admitted.append(head)
        return batch

    limits = Limits(max_num_seqs=8, max_num_batched_tokens=64, block_size=16, preempt_for_priority=True)
    batch = with_priority_preemption(plan, [head], [low_a, low_b], 0, limits)
    assert calls == [2, 1, 0]
    assert batch.preempted == [low_b, low_a, kv_victim]  # (the most recently admitted of the lowest priority first)
