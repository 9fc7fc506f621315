"""More behaviour that mutation testing found unpinned: the prefix summary over a request with no hash ids, the
speculating group's first join on a full KV cache, trajectories drawn only at a sequence's first verify step (not
while its group waits out a prefill), explicit verifiers rejoining the fast-forward, a capacity class obtainable in
exactly one replica's GPUs, the spot price and rate sources, the p99 TTFT of the latency watch, an unfinished job's
lateness, requests with no class, and a step line whose lines crossed before its first step.

Survivors judged equivalent (no test can tell them from the real code), for the record:
- `SpeculativeStepTime.verify` passing `logit_tokens=None` instead of `n_seqs`: the wrapper asks the target for
  n_seqs (k + 1) logit positions, every token of a verify step, and both step-time models subtract unsampled LM-head
  FLOPs only for fewer positions than tokens (`RooflineStepTime.step`: `logit_tokens < n`; the constant model ignores
  it); None means every token: the same floats.
- `SpeculativeStepTime._make_run_fn` setting the drafter's terms to 1.0 when there is no draft model: those terms are
  read only inside `if steps:`, and `steps` is `()` without one.
- `SpecGroup.__init__` with a `held` buffer of 257 (not 256): `held` is read only at indices the same as `inc`'s
  (under `len(inc)`: a window moves once past half of it, a run reads at most 64 steps), `_enter` grows both to the
  same size, and the extra slot is never written.
- `Pool.interrupt` leaving `busy_at_drain_s` None for a ready replica: a ready replica lost at once is never drained
  (`drain_at_s` stays NaN: only a notice or a scale-down sets it, and neither leaves it ready), and the records read
  `busy_at_drain_s` only for a drained replica (`freeze.replica_frame`); nothing else reads it.
- `BatchLane.__init__` with `array("Q")`: request indices are >= 0 and below 2**63, stored and read back the same.
- `BatchLane.__init__` with `_n_ready_prev = 1`: the first `replicas_needed` multiplies it by `now - t_prev` = 0 (no
  history yet: `t_prev` is `now`) and then sets it to the ready count; nothing else reads it.
- `BatchLane.add` appending when the last key is `<` (not `<=`) the new one: a key ends in the request index, each
  request is added once, so two keys are never equal.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.results.metrics import prefix_summary
from sim.results.result import SimResult
from sim.run.engine.records import COMPLETED, RequestLog
from sim.run.engine.replica import Replica
from sim.run.engine.sequence import Seq
from sim.run.fleet.latency import LatencyWatch
from sim.run.fleet.supply import Supply, class_prices
from sim.run.simulate import simulate
from sim.scenario.config import CapacityConfig, ClassConfig, PricingConfig, Scenario, parse_config
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests as same_requests

A, D = 1e-4, 0.02  # constant step time: seconds per prompt token, per decode step
CONSTANT_STEP = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D}


def frame(rows: list[tuple[float, int, int]], **columns: list[Any]) -> pd.DataFrame:
    data: dict[str, list[Any]] = {
        "arrival_at_s": [r[0] for r in rows],
        "prompt_tokens": [r[1] for r in rows],
        "output_tokens": [r[2] for r in rows],
    }
    out = validate_frame(pd.DataFrame(data))
    return out.assign(**columns) if columns else out


def spec_scenario(*, blocks: int, fast_forward: bool, alpha: float, k: int, **engine: Any) -> Scenario:
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "tp": 1},
            "engine": {
                "block_size": 16,
                "watermark": 0.0,
                "num_gpu_blocks_override": blocks,
                "fast_forward": fast_forward,
                "step_time": CONSTANT_STEP,
                "speculative": {"method": "ngram", "num_speculative_tokens": k, "acceptance_rate": alpha},
                **engine,
            },
        }
    )


def assert_same_requests(fast: SimResult, slow: SimResult) -> None:
    """The engine-equivalence check (every request's instants, preemptions, status and replica), and the same steps."""
    same_requests(fast, slow)
    assert fast.summary()["n_steps"] == slow.summary()["n_steps"]


def both_engines(trace: pd.DataFrame, **kw: Any) -> tuple[SimResult, SimResult]:
    """The fast-forwarded run and the per-step reference (`engine.fast_forward: false`)."""
    fast, slow = (simulate(spec_scenario(fast_forward=ff, **kw), trace, measure_capacity=False) for ff in (True, False))
    return fast, slow


# --- the prefix summary -----------------------------------------------------------------------------------------------


def test_a_request_with_no_hash_ids_looks_up_no_blocks_in_the_prefix_summary() -> None:
    """`prefix_blocks` is null for a request without hash ids (docs/metrics.md): admitted, it counts its prompt tokens
    and no hash block looked up. 128 tokens hit of 256 + 100 admitted; 128 / 64 = 2 blocks hit of 4 looked up (the
    request never admitted is left out, its blocks too)."""
    requests = pd.DataFrame(
        {
            "cached_tokens": [128.0, 0.0, np.nan],
            "prompt_tokens": [256, 100, 300],
            "prefix_blocks": pd.array([4, None, 5], dtype="Int64"),
        }
    )
    meta = {"prefix_cache": {"hash_block_tokens": 64, "prefill_tokens_saved": 128}}
    assert prefix_summary(requests, meta) == {
        "prefix_cached_tokens": 128,
        "prefix_hit_rate_tokens": pytest.approx(128 / 356),
        "prefix_hit_rate_blocks": pytest.approx(2 / 4),
        "prefill_tokens_saved": 128,
    }


# --- speculative decoding: the group, trajectories, runs -----------------------------------------------------------


def test_the_first_group_of_a_replica_asks_only_the_blocks_its_members_need() -> None:
    """A 16-token prompt (1 block) is decoding, speculating k = 2: its next verify step holds 16 + 1 + 2 tokens, 2
    blocks, one more. A 113-token prompt (8 blocks) waiting then fits the 10-block cache beside it exactly, and the
    chunked step takes it whole with the verify: 113 + 2 tokens' work (+ D) from 1.6 ms to 33.1 ms, its first token
    there; then both verify (alpha 0: one token each, 2 x 2 drafts' work + D) to 53.5 ms. Three steps, as the
    per-step reference takes them."""
    trace = frame([(0.0, 16, 3), (0.001, 113, 2)])
    fast, slow = both_engines(trace, blocks=10, alpha=0.0, k=2, policy="chunked")
    r = fast.requests
    first, done = 16 * A, 16 * A + 115 * A + D
    assert r["first_token_at_s"].tolist() == pytest.approx([first, done])
    assert r["completed_at_s"].tolist() == pytest.approx([done + 4 * A + D] * 2)
    assert r["n_preemptions"].tolist() == [0, 0]
    assert fast.summary()["n_steps"] == 3
    assert_same_requests(fast, slow)


def priority_trace() -> pd.DataFrame:
    """Prefill first, 20 blocks: a low-priority request (7 blocks) prefills and joins the group; two high-priority ones
    arrive during the prefills; the third's prompt (7 blocks) fits only by preempting the first."""
    return frame([(0.0, 100, 30), (0.005, 100, 30), (0.015, 100, 30)], priority=[1, 0, 0])


def priority_runs() -> tuple[SimResult, SimResult]:
    return both_engines(priority_trace(), blocks=20, alpha=0.5, k=3, policy="prefill_first", preempt_for_priority=True)


def test_a_trajectory_is_drawn_at_the_first_verify_step_not_while_the_group_waits_out_a_prefill() -> None:
    """The first request waits in the group (joined, not yet verified) while the second prefills alone (prefill
    first); then the third preempts it. Its trajectory is drawn when it first verifies (after its recompute), so the
    second and third draw first, in admission order, as the per-step reference reads the stream."""
    fast, slow = priority_runs()
    assert fast.requests["n_preemptions"].tolist() == [1, 0, 0]
    assert_same_requests(fast, slow)
    assert fast.itl.count == slow.itl.count
    assert fast.summary()["spec_tokens_per_verify_step"] == slow.summary()["spec_tokens_per_verify_step"]


def test_a_decoder_that_verified_outside_the_group_rejoins_it_and_runs_fast_forwarded() -> None:
    """`n_runs` counts fast-forwarded runs. After the preemption the second request verifies once outside the group
    (planned per sequence) and joins it at that step's end: with the third it decodes in one run to the third's end;
    the first, recomputed, verifies once beside the group, joins it, and the group runs to the second's end, then the
    first alone to its own: three runs. (The per-step reference takes none.)"""
    fast, slow = priority_runs()
    assert int(fast.replicas["n_runs"].sum()) == 3
    assert int(slow.replicas["n_runs"].sum()) == 0
    assert fast.summary()["n_steps"] == slow.summary()["n_steps"]


# --- capacity classes and prices --------------------------------------------------------------------------------------


def test_a_class_obtainable_in_exactly_one_replicas_gpus_is_not_exhausted() -> None:
    """`Supply.exhausted`: out for good only when a class is obtainable in fewer GPUs than a replica needs now and at
    every later step; exactly a replica's (TP 2: 2 GPUs) can still be launched."""
    for gpus, out in ((2, False), (1, True), (3, False)):
        capacity = CapacityConfig(on_demand=ClassConfig(obtainable_gpus=[(0.0, gpus)]))
        assert Supply(tp=2, reserved=0, capacity=capacity).exhausted(5.0) is out, gpus
    later = CapacityConfig(on_demand=ClassConfig(obtainable_gpus=[(0.0, 0), (100.0, 2)]))
    assert Supply(tp=2, reserved=0, capacity=later).exhausted(5.0) is False  # a later step of exactly 2


def test_a_spot_fleet_without_a_price_or_a_provider_says_so() -> None:
    with pytest.raises(FleetsimError, match=r"spot capacity needs a price \(no pricing\.provider\); give it"):
        class_prices(PricingConfig(), "h100-sxm", 3.0, spot=True)


def test_the_spot_rate_source_with_only_given_reclaim_instants() -> None:
    """Spot with neither a rate nor a provider: no random reclaims, and meta.json says where the (zero) rate came
    from."""
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "capacity": {"spot": {"reclaim_at_s": [50.0], "notice_s": 0}}},
            "engine": {"step_time": CONSTANT_STEP},
            "pricing": {"spot_usd_per_gpu_hour": 1.5},
        }
    )
    supply = simulate(sc, frame([(0.0, 100, 5)]), measure_capacity=False).meta["supply"]
    assert supply["spot_reclaims_per_hour"] == 0.0
    assert supply["spot_rate_source"] == "none given (only fleet.capacity.spot.reclaim_at_s)"


# --- the latency watch ------------------------------------------------------------------------------------------------


def test_the_latency_watch_p99_ttft_is_numpys_linear_99th_percentile_not_the_max() -> None:
    """Eleven interactive requests completed in the window, TTFTs 0, 1, ..., 10 s: p90 9.0 s, p99 9.9 s (linear
    interpolation between the 10th and 11th: 9 + 0.9)."""
    n = 11
    arrival = np.zeros(n)
    log = RequestLog(arrival, np.full(n, 10), np.full(n, 1))
    log.first_token_at_s[:] = np.arange(n, dtype=np.float64)
    log.completed_at_s[:] = np.arange(n, dtype=np.float64) + 0.5
    log.status[:] = COMPLETED
    watch = LatencyWatch(log, window_s=100.0)
    for i in range(n):
        watch.finished(cast(Replica, None), Seq(i, 0.0, 10, 1))
    q = watch.quantiles(20.0)
    assert q is not None
    assert q["p90_ttft_s"] == pytest.approx(9.0)
    assert q["p99_ttft_s"] == pytest.approx(9.9)
    assert "p99_tpot_s" not in q  # one output token each: no TPOT


# --- survivors found later in the same sample -----------------------------------------------------------------------
def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    from sim.schema import STATUS_LABELS

    frame = pd.DataFrame(rows)
    frame["status"] = pd.Categorical(frame["status"], categories=STATUS_LABELS)
    return frame


def test_a_job_that_did_not_finish_has_no_lateness_even_with_a_deadline():
    """Job j: one request completed at 50 s, one rejected; deadline 40 s. It never finished, so it has no completion
    time, no makespan and no lateness (null), though it missed its deadline; its on-time share is 0 of 2."""
    from sim.results.metrics import job_summary

    base = {"prompt_tokens": 10, "output_tokens": 5, "job_id": "j", "deadline_at_s": 40.0, "arrival_at_s": 0.0}
    frame = _frame(
        [
            base | {"completed_at_s": 50.0, "status": "completed"},
            base | {"completed_at_s": float("nan"), "status": "rejected"},
        ]
    )
    rec = cast(dict[str, dict[str, Any]], job_summary(frame))["j"]
    assert (rec["completed"], rec["rejected"], rec["completed_at_s"], rec["makespan_s"]) == (1, 1, None, None)
    assert rec["deadline_met"] is False and rec["late_s"] is None and rec["on_time_share"] == 0.0


def test_requests_without_a_class_count_as_interactive_in_the_class_summary():
    """A run folder whose `klass` is null for some requests (written before classes, or by a reader that left it
    empty): those are interactive, so the summary has the interactive and batch classes, nothing else."""
    from sim.results.metrics import class_summary

    row = {"arrival_at_s": 0.0, "scheduled_at_s": 0.0, "first_token_at_s": 0.1, "completed_at_s": 1.0}
    row |= {"prompt_tokens": 10, "output_tokens": 5, "status": "completed"}
    frame = _frame([row | {"klass": None}, row | {"klass": "interactive"}, row | {"klass": "batch"}])
    out = cast(dict[str, dict[str, Any]], class_summary(frame))
    assert set(out) == {"interactive", "batch"}


@pytest.mark.parametrize("g", [0.0, 0.3])
def test_a_step_line_whose_lines_crossed_before_the_run_is_line_one_from_its_first_step(g: float):
    """l1 = 2 + j, l2 = 1 + 0.5 j cross at j = -2: line 1 is the larger from step 0 on. The closed-form total of k steps
    equals the sum of the steps' own times (`at`), the first step included."""
    from sim.run.engine.step_time import StepLine

    line = StepLine(2.0, 1.0, 1.0, 0.5, 0.25, g)
    for k in (1, 2, 5):
        assert line.total(k) == pytest.approx(sum(line.at(j) for j in range(k)), rel=1e-12)
    assert line.split == 0


def test_a_preemption_tells_the_listeners_that_room_was_freed():
    """The KV-transfer link hears of room freed on a decode replica by `room_freed`: a replica whose KV cache forces
    preemptions tells a listener of each preemption step (at least one call, at most one per preemption), and a
    listener that does not override the event is not called for it. (`RequestLog.n_preemptions` stored as float
    instead of int32 is equivalent: the records cast every column to its schema dtype.)"""
    from sim.run.engine.replica import ReplicaListener
    from sim.run.simulate import _build, _resolve, run
    from tests.test_engine_units import frame as unit_frame
    from tests.test_engine_units import tiny_scenario

    class Room(ReplicaListener):
        def __init__(self) -> None:
            self.calls = 0

        def room_freed(self, replica: Replica) -> None:
            self.calls += 1

    sc = tiny_scenario(num_gpu_blocks_override=8, block_size=16)
    trace = unit_frame([(0.0, 30, 60), (0.0, 30, 60), (0.0, 30, 60)])
    _setup, full, specs = _resolve(sc, trace, sc.base_dir)
    room = Room()
    built = _build(sc, specs, full, extra=[room, ReplicaListener()])
    run(built)
    preemptions = int(built.log.n_preemptions.sum())
    assert preemptions > 0 and 1 <= room.calls <= preemptions
