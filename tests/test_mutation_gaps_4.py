"""More behaviour that mutation testing found unpinned: the count of given hazard instants that found no replica, the
latency watch's p90 TPOT, the reserved price's and the spot rate's sources, a transfer cut on the wire leaving no
decode replica in the records, the batch lane's activator at the pool's cap, and the deadline scaling's arithmetic
(less than a second left, the replica-seconds it measures from), and the feed's decorated path handing a request
over with its arrival.

Survivors judged equivalent (no test can tell them from the real code), for the record:
- `Transfers.prefill_lost` clearing `_blocked` whenever it is set (`or` for `and`) when a lost prefill replica had
  transfers waiting: `_blocked` only narrows the next search for the same head to the decode replicas marked dirty
  since its failed search, and every event that can give a decode replica room (a resolution, a preemption, a
  reservation cancelled, becoming ready) marks it dirty (`Transfers.freed`), so the replicas the narrowed search skips
  have no room and the full search chooses the same one (`room_for` reads, never changes, state). With `_blocked`
  None the mutant only sets it to None again. (300 random disaggregated runs with prefill losses, 42 of them where
  the mutant cleared a head that was not lost, gave the same requests, frame for frame.)
- `BatchLane.replicas_needed` adding new replicas when `covered <= remaining` (not `<`): they differ only when
  `covered == remaining`, where the mutant adds `ceil(0 / (rate * useful))` = 0 (rate > 0: a zero rate was answered
  before; useful > 0 by the same condition), so the ask is the same.
- `SpecGroup` allocating 257 rather than 256 slots for `held` (its growth follows `inc`'s length: one unused slot),
  the draft-free run pricing's unused per-drafter terms at 1.0 (`steps` is empty: never read), `verify` pricing its
  logits at None rather than every position (a verify samples at all its positions: the same step either way),
  `Chunked.plan`'s `reserve` defaulting to 1 (every caller passes it), `StepLine._k_at` taking the split instant with
  `<` (the two quadratic forms meet there; the estimate is corrected against `total` anyway), and `Supply.take`
  failing a launch at `random() <= p` (differs from `<` only when a uniform draw equals p exactly).
- From the partial rerun at d1f3cc5: `hash_list` taking the Python path for an array too (the same ints), `stop`
  clearing `_stepping` to "" (falsy: no step ends after a stop), the eviction heap's serial counting down (it only
  orders two items for the same entry), `_make_room` evicting for a shortfall of 0 (evicts nothing), a release
  leaving `blocks`/`shared` None (a released sequence's are set again before use: it is re-matched or done),
  `SpecGroup.advance` summing `inc` with no tokens given for k > 1 (every caller of a multi-step advance gives them),
  and the speculative run's memo-filling call reading 1 cached token (the memo depends on the token count only);
  `Supply.next_try` counting a back-off that ends at `now` (a class whose back-off ends now was tried now: it
  failed again, backed off past now, or launched), and `LeastLoaded.remove` without its default (only ready replicas,
  which the index holds, leave it). Not yet analysed: `BatchLane._next_seq` (`and` -> `or`) and
  `BatchLane.replicas_needed` trimming its rate history at 2 entries rather than 3.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from sim.physics.prices import capacity_price
from sim.run.engine.records import COMPLETED, RequestLog
from sim.run.engine.replica import Replica
from sim.run.engine.sequence import Seq
from sim.run.fleet.latency import LatencyWatch
from sim.run.fleet.supply import class_prices, spot_rate_per_s
from sim.run.simulate import simulate
from sim.scenario.config import PricingConfig, SpotConfig, parse_config
from tests.test_batch_jobs import deadline_lane, job
from tests.test_capacity import frame
from tests.test_capacity import run as run_capacity
from tests.test_capacity import scenario as capacity_scenario
from tests.test_disagg_capacity import disagg
from tests.test_disagg_capacity import run as run_disagg

# --- hazards: given instants that find no ready replica ----------------------------------------------------------------


def test_given_instants_with_no_ready_replica_to_hit_are_counted_in_meta() -> None:
    """One spot replica cold-starting (ready at 40 s): the failure at 10 s and the reclaim at 20 s find no ready
    replica and do nothing; the failure at 60 s takes the replica (a replacement launched). meta.json counts the two
    instants missed, as a positive count (kills `missed -= 1`)."""
    sc = capacity_scenario(
        {"failures": {"fail_at_s": [10.0, 60.0]}, "spot": {"reclaim_at_s": [20.0], "notice_s": 0}},
        lifecycle={"start": "cold", "cold_start_s": 40.0},
    )
    r = run_capacity(sc, frame([(0.0, 500, 200), (45.0, 500, 3000)]))
    s = r.summary()
    assert (s["replicas_failed"], s["replicas_launched"], s["completed"]) == (1, 2, 2)
    reps = r.replicas.set_index("replica_id")
    assert reps.loc[0, "ready_at_s"] == 40.0 and reps.loc[0, "released_at_s"] == 60.0
    assert reps.loc[0, "interrupted"] == "failure"
    assert r.meta["hazards"] == {"missed_instants": 2}


# --- the latency watch -------------------------------------------------------------------------------------------------


def test_the_latency_watch_p90_tpot_is_numpys_linear_90th_percentile() -> None:
    """Eleven interactive requests of 11 output tokens, TPOTs 0, 1, ..., 10 s (completed 10 x TPOT after their first
    token): p90 TPOT 9.0 s, p99 9.9 s (kills the 91st percentile: 9.1 s)."""
    n = 11
    log = RequestLog(np.zeros(n), np.full(n, 10), np.full(n, 11))
    log.first_token_at_s[:] = 1.0
    log.completed_at_s[:] = 1.0 + 10.0 * np.arange(n, dtype=np.float64)
    log.status[:] = COMPLETED
    watch = LatencyWatch(log, window_s=1000.0)
    for i in range(n):
        watch.finished(cast(Replica, None), Seq(i, 0.0, 10, 11))
    q = watch.quantiles(200.0)
    assert q is not None
    assert q["p90_tpot_s"] == pytest.approx(9.0)
    assert q["p99_tpot_s"] == pytest.approx(9.9)
    assert q["p90_ttft_s"] == pytest.approx(1.0)  # (each first token 1 s after its arrival)


# --- capacity prices and the spot rate: their sources ----------------------------------------------------------------


def test_the_reserved_price_from_the_sheet_says_it_is_the_1_year_price() -> None:
    """Azure's sheet has a 1-year reserved price for H100 SXM: the reserved class is priced from it, and its source
        names the sheet's row and says "1-year" (kills "1-YEAR"); meta.json's supply block carries it, and the reserved
    replica is billed as reserved."""
    sheet = capacity_price("h100-sxm", "azure")
    assert sheet.reserved_1y is not None
    where = f"capacity price sheet: azure ({sheet.source}, {sheet.as_of})"
    prices = class_prices(PricingConfig(provider="azure"), "h100-sxm", sheet.on_demand, spot=False)
    assert (prices["reserved"].usd_per_gpu_hour, prices["reserved"].source) == (sheet.reserved_1y, where + ", 1-year")
    assert prices["on_demand"].source == where
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "reserved_replicas": 1,
                "autoscaler": {"policy": "fixed", "replicas": 2},
                "capacity": {"on_demand": {"max_replicas": 4}},  # (a capacity block: meta.json gets its supply)
            },
            "pricing": {"provider": "azure"},
        }
    )
    r = simulate(sc, frame([(0.0, 100, 5)]), measure_capacity=False)
    assert r.replicas["capacity"].tolist() == ["reserved", "on_demand"]
    supply = r.meta["supply"]
    assert supply["prices"]["reserved"] == {"usd_per_gpu_hour": sheet.reserved_1y, "source": where + ", 1-year"}


def test_a_spot_rate_given_in_the_spot_block_says_so() -> None:
    """A rate in `fleet.capacity.spot` (per hour or monthly) is used as given, even with a provider whose sheet has a
    band, and its source is "fleet.capacity.spot" (kills a garbled label), as meta.json's supply block says."""
    aws = PricingConfig(provider="aws")
    assert spot_rate_per_s(SpotConfig(interruptions_per_hour=0.5), aws, "h100-sxm") == (0.5 / 3600, "fleet.capacity.spot")
    monthly = SpotConfig(monthly_interruption_frequency=0.1)
    assert spot_rate_per_s(monthly, aws, "h100-sxm") == (monthly.rate_per_s, "fleet.capacity.spot")
    assert spot_rate_per_s(SpotConfig(), aws, "h100-sxm")[1] == "aws interruption band >20%"  # (none given: the sheet's)
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "capacity": {"spot": {"interruptions_per_hour": 0.5}}},
            "pricing": {"spot_usd_per_gpu_hour": 1.5},
        }
    )
    supply = simulate(sc, frame([(0.0, 100, 5)]), measure_capacity=False).meta["supply"]
    assert supply["spot_reclaims_per_hour"] == pytest.approx(0.5)
    assert supply["spot_rate_source"] == "fleet.capacity.spot"


# --- disaggregated: a transfer cut on the wire -------------------------------------------------------------------------


def test_a_transfer_cut_on_the_wire_leaves_no_decode_replica_in_the_records() -> None:
    """A 10 s link: the six transfers are on the wire (each had reserved room on the decode replica) when their prefill
    replica fails at 5 s. Each is cut and its request recomputed on the decode pool, routed there as a request (its
    `replica_id` the decode replica): no transfer reached a decode replica, so `decode_replica_id` is -1 (kills -2: the
    value set when the transfer is cut is never written again), and the decode replica counts each request once."""
    trace = frame([(0.0, 500 + i, 50) for i in range(6)])
    sc = disagg(prefill={"capacity": {"failures": {"fail_at_s": [5.0]}}}, link={"preset": "infiniband_400g", "latency_s": 10.0})
    r = run_disagg(sc, trace)
    req, reps = r.requests, r.replicas.set_index("replica_id")
    decode = int(reps.index[reps["pool"] == "decode"][0])
    assert r.summary()["completed"] == 6 and r.summary()["requests_requeued"] == 6
    assert req["transfer_start_at_s"].isna().all() and req["transfer_end_at_s"].isna().all()
    assert (req["replica_id"] == decode).all()
    assert (req["decode_replica_id"] == -1).all()
    assert int(reps.loc[decode, "requests"]) == 6


# --- the batch lane: its activator at the pool's cap -------------------------------------------------------------------


def test_batch_work_launches_no_replica_while_a_draining_one_holds_the_pools_cap() -> None:
    """One spot replica (fleet and quota: one GPU) serves a long interactive request and a 6-request batch job, two
    batch requests at a time. The reclaim notice at 5 s drains it; its replacement is owed to the GPU quota (the
    draining replica still holds the GPU). The two batch requests on it finish at 6.3 s and the lane pumps with four
    waiting, nothing ready and nothing coming, but the pool is at its cap (1 held): no launch then (kills `<=`, which
    launches a second replica at 6.3 s, over the quota). The replacement launches when the notice ends (65 s)."""
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "max_gpus": 1,
                "autoscaler": {"policy": "fixed", "replicas": 1},
                "lifecycle": {"cold_start_s": 40.0},
                "capacity": {"spot": {"reclaim_at_s": [5.0], "notice_s": 60}},
            },
            "batch": {"jobs": [job(6, prompt=100, output=1000)], "max_per_replica": 2},
            "pricing": {"spot_usd_per_gpu_hour": 1.5},
        }
    )
    r = simulate(sc, frame([(0.0, 100, 20000)]), measure_capacity=False)
    reps = r.replicas.set_index("replica_id")
    assert reps.index.tolist() == [0, 1]
    assert (reps.loc[0, "drain_at_s"], reps.loc[0, "released_at_s"]) == (5.0, 65.0)
    assert reps.loc[1, "provision_at_s"] == 65.0 and reps.loc[1, "ready_at_s"] == 105.0
    assert r.summary()["completed"] == 7
    batch = r.requests.iloc[1:]  # (the interactive request is the trace's, first)
    assert (batch["replica_id"] == 0).sum() == 2 and (batch.loc[batch["replica_id"] == 1, "first_token_at_s"] > 105.0).all()


# --- deadline scaling ----------------------------------------------------------------------------------------------


def test_deadline_scaling_with_under_a_second_left_counts_the_ready_replicas_for_that_time_only() -> None:
    """100 tok/s a replica, no cold start. Deadline 0.625 s away: 0.8 x 0.625 = 0.5 s left, in which the ready replica
    serves 50 of 1,000 tokens; the other 950 need ceil(950 / 50) = 19 more: 20 (kills `max(left, 1.0)`, which counts
    a whole second: 19). Past the deadline, the ready replica covers nothing, so the one starting is kept too: 2 for 50
    tokens (the mutant counts a second for the ready one, covers the 50 and drops the starting one: 1)."""
    _env, lane = deadline_lane(rate=100.0)
    lane._pending, lane.remaining_tokens = {0.625: 1}, 1000
    assert lane.replicas_needed(1) == 20
    env, lane = deadline_lane(rate=100.0, starting=(0.0,))
    env.now = 10.0
    lane._pending, lane.remaining_tokens = {5.0: 1}, 50
    assert lane.replicas_needed(1) == 2


def test_deadline_scaling_measures_replica_seconds_from_zero() -> None:
    """Ticks at 0 and 0.1 s with one replica ready: 0.1 replica-seconds, in which 10 tokens were done by 10 completions
    (a full batch: cap 1), so the measured rate is 10 / 0.1 = 100 tok/s (not the saturated 50). Due at 100.1 s: 0.8 x
    100 = 80 s left, in which one replica serves exactly the 8,000 tokens remaining: one replica. (Replica-seconds
    counted from 1.0, not 0.0, give 1.1 - 1.0 = 0.10000000000000009, a rate just under 100 and an ask of 2: that
    mutant differs from the real code only by this rounding, the offset cancelling in the window's difference.)"""
    env, lane = deadline_lane(cap=1, rate=50.0)
    lane._pending, lane.remaining_tokens = {100.1: 1}, 8000
    assert lane.replicas_needed(1) == 2  # (nothing measured yet: 50 tok/s)
    env.now, lane.done_tokens, lane.n_done = 0.1, 10, 10
    lane._asked.clear()
    assert lane.replicas_needed(1) == 1
    assert [h[2] for h in lane._history] == [0.0, 0.1]


@pytest.mark.parametrize(("hashes", "adapters"), [(True, False), (False, True), (True, True)])
def test_the_feed_hands_each_request_over_with_its_arrival_its_prefix_ids_and_its_adapter(hashes, adapters) -> None:
    """A request fed with prefix ids or an adapter (the feed's decorated path) carries its own arrival instant: the
    replica's waiting queue orders by it (priority, arrival, index), and a sequence from the batch lane compares with
    it there. (A survivor of the sample: the decorated path built its sequence without the arrival.)"""
    import pandas as pd
    import simpy

    from sim.run.fleet.feed import Feed
    from sim.workload import validate_frame

    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 0.5, 0.5, 2.25],
                "prompt_tokens": [64, 128, 64, 200],
                "output_tokens": [2, 3, 4, 5],
                "prefix_hash_ids": [[1], [1, 2], [3], [4, 5, 6]],
                "adapter": [3, -1, 0, 3],
            }
        )
    )
    env = simpy.Environment()
    log = RequestLog(trace["arrival_at_s"].to_numpy(), trace["prompt_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    got: list[tuple[float, float, list[int] | None, int]] = []
    Feed(
        env,
        trace,
        log,
        lambda seq: got.append((env.now, seq.arrival_at_s, seq.hashes, seq.adapter)),
        hashes=hashes,
        adapters=adapters,
    )
    env.run()
    assert [g[0] for g in got] == [g[1] for g in got] == [0.0, 0.5, 0.5, 2.25]
    assert [g[2] for g in got] == ([[1], [1, 2], [3], [4, 5, 6]] if hashes else [None] * 4)
    assert [g[3] for g in got] == ([3, -1, 0, 3] if adapters else [-1] * 4)


def test_every_launch_that_waits_for_capacity_is_made_when_it_returns() -> None:
    """Three replicas wanted, no on-demand GPU until 100 s: the three launches wait (counted one by one) and all three
    start when the back-off ends — not one. (A survivor of the rerun: the waiting launches were counted as one.)"""
    cap = {"on_demand": {"obtainable_gpus": [[0, 0], [100, 8]]}}
    sc = capacity_scenario(cap, replicas=3, lifecycle={"start": "cold", "cold_start_s": 40.0})
    r = run_capacity(sc, frame([(0.0, 300, 20), (5.0, 300, 20)]))
    assert r.replicas["provision_at_s"].tolist() == [300.0, 300.0, 300.0]
    assert r.summary()["completed"] == 2
