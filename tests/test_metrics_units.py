"""Pure metrics and billing against independent computations: the compact gap record against numpy on
the expanded gaps, throughputs of an empty run, a reserved seat reused by successive replicas."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.results import metrics
from sim.results.cost import ReplicaLife, fleet_bill
from sim.results.metrics import GapDistribution, summarize
from sim.states import STATUS_LABELS, RequestStatus

PIECE = st.tuples(
    st.floats(0.001, 1.0),  # a
    st.floats(-0.001, 0.001),  # b (the step time may shrink or grow along a run)
    st.integers(1, 30),  # j0 (pieces start at a run's second gap or later)
    st.integers(1, 40),  # length
    st.integers(1, 5),  # weight
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # (gap_search: per test)
@given(
    singles=st.lists(st.floats(0.0001, 2.0), max_size=30),
    pieces=st.lists(PIECE, max_size=8),
    grouped=st.lists(st.tuples(st.floats(0.0001, 2.0), st.integers(1, 6)), max_size=8),
)
def test_gap_distribution_equals_numpy_on_the_expanded_gaps(gap_search, singles, pieces, grouped):
    rows = [(a, b, j0, j0 + n, w) for a, b, j0, n, w in pieces]
    gaps = GapDistribution.from_lists(singles, rows, grouped)
    expanded = np.array(
        singles
        + [v for v, w in grouped for _ in range(w)]
        + [a + b * j for a, b, j0, j1, w in rows for j in range(j0, j1) for _ in range(w)]
    )
    if expanded.size == 0:
        assert gaps.count == 0
        return
    assert gaps.count == expanded.size
    assert gaps.mean() == pytest.approx(expanded.mean(), rel=1e-9, abs=1e-12)
    assert gaps.std() == pytest.approx(expanded.std(), rel=1e-6, abs=1e-9)
    for q in (0, 10, 50, 90, 99, 100):
        assert gaps.percentile(q) == pytest.approx(np.percentile(expanded, q), rel=1e-9, abs=1e-12), q
    again = GapDistribution.from_frame(gaps.to_frame())
    assert again.count == gaps.count and again.percentile(50) == gaps.percentile(50)


@settings(deadline=None)
@given(
    singles=st.lists(st.floats(0.0001, 2.0), max_size=30),
    pieces=st.lists(PIECE, max_size=8),
    grouped=st.lists(st.tuples(st.floats(0.0001, 2.0), st.integers(1, 6)), max_size=8),
    ranks=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
)
def test_sorted_order_statistics_are_the_gaps_themselves_and_bisection_agrees_to_rounding(singles, pieces, grouped, ranks):
    """A record sorted whole gives the k-th smallest of its gaps a + b*j exactly as computed; bisection on the value
    (a record of more than GATHER_LIMIT values) finds the same gap to within a rounding (a gap lying within a rounding
    of a bracket's end counts on either side of it)."""
    rows = [(a, b, j0, j0 + n, w) for a, b, j0, n, w in pieces]
    expanded = np.sort(
        np.array(
            singles
            + [v for v, w in grouped for _ in range(w)]
            + [a + b * j for a, b, j0, j1, w in rows for j in range(j0, j1) for _ in range(w)]
        )
    )
    if expanded.size == 0:
        return
    sorted_whole = GapDistribution.from_lists(singles, rows, grouped)
    old = metrics.GATHER_LIMIT
    try:
        metrics.GATHER_LIMIT = 0
        bisected = GapDistribution.from_lists(singles, rows, grouped)
        bisected.order_statistic(0)  # (the record decides how it searches on its first statistic)
    finally:
        metrics.GATHER_LIMIT = old
    for r in ranks:
        k = min(int(r * expanded.size), expanded.size - 1)
        assert sorted_whole.order_statistic(k) == expanded[k], k
        assert bisected.order_statistic(k) == pytest.approx(expanded[k], rel=1e-14, abs=1e-15), k


def frame(statuses, arrival, first, completed, prompt, output):
    n = len(statuses)
    return pd.DataFrame(
        {
            "arrival_at_s": arrival,
            "first_token_at_s": first,
            "completed_at_s": completed,
            "prompt_tokens": prompt,
            "output_tokens": output,
            "n_preemptions": np.zeros(n, dtype=np.int32),
            "status": pd.Categorical.from_codes(statuses, categories=STATUS_LABELS),
        }
    )


def test_a_run_with_nothing_completed_has_zero_throughputs():
    nan = math.nan
    r = frame([RequestStatus.REJECTED] * 2, [0.0, 1.0], [nan, nan], [nan, nan], [5000, 6000], [5, 5])
    s = summarize(r, GapDistribution.from_lists([], []), slo={"ttft": 100.0})
    assert s["completed"] == 0 and s["rejected"] == 2 and s["duration"] == 0.0
    assert s["request_throughput"] == s["output_throughput"] == s["total_token_throughput"] == 0.0
    assert s["request_goodput"] == 0.0 and s["mean_ttft_ms"] is None and s["mean_itl_ms"] is None


def test_goodput_counts_requests_meeting_every_slo():
    # ttft 0.1 / 0.5 / 0.1 s; tpot 0.01 / 0.01 / 0.2 s: only the first meets both 200 ms TTFT and 50 ms TPOT
    done = [RequestStatus.COMPLETED] * 3
    r = frame(done, [0.0, 0.0, 0.0], [0.1, 0.5, 0.1], [0.2, 0.6, 2.1], [10, 10, 10], [11, 11, 11])
    s = summarize(r, GapDistribution.from_lists([], []), slo={"ttft": 200.0, "tpot": 50.0})
    assert s["request_goodput"] == pytest.approx(1 / 2.1)
    s = summarize(r, GapDistribution.from_lists([], []), slo={"tpot": 50.0, "ttft": 200.0})
    assert s["request_goodput"] == pytest.approx(1 / 2.1)
    # an end-to-end SLO of 1 s: the first two (0.2 s, 0.6 s) meet it, the third (2.1 s) does not
    s = summarize(r, GapDistribution.from_lists([], []), slo={"e2el": 1000.0})
    assert s["request_goodput"] == pytest.approx(2 / 2.1) and s["slo_attainment"] == pytest.approx(2 / 3)


def test_a_reserved_seat_serves_successive_replicas():
    # one reserved seat over 1000 s; replica A sits on it for [0, 300], replica B for [400, 900]; C starts
    # at 100 while the seat is taken: on demand. Unused reservation: 1000 - 300 - 500 = 200 s.
    lives = [
        ReplicaLife(0, math.nan, 0, math.nan, 300, 0, 0),
        ReplicaLife(100, math.nan, 100, math.nan, 200, 0, 0),
        ReplicaLife(400, math.nan, 400, math.nan, 900, 0, 0),
    ]
    bill = fleet_bill(
        lives,
        horizon_s=1000,
        tp=1,
        usd_per_gpu_hour=3.6,
        reserved_usd_per_gpu_hour=1.8,
        reserved_replicas=1,
        granularity_s=0,
        minimum_s=0,
    )
    assert bill["gpu_seconds_by_state"]["reserved_unused"] == pytest.approx(200)
    assert bill["billed_gpu_seconds"] == pytest.approx(1000 + 100)
    assert bill["cost_usd"] == pytest.approx((1000 * 1.8 + 100 * 3.6) / 3600)


def test_gap_distribution_survives_replace_and_pickle():
    """The singles' weights live in a field (their running sum), so a copy keeps them."""
    import dataclasses
    import pickle

    gaps = GapDistribution.from_lists([0.5], [(0.1, 0.0, 1, 3, 2)], [(0.2, 7)])
    for copy in (dataclasses.replace(gaps), pickle.loads(pickle.dumps(gaps))):
        assert copy.count == gaps.count == 1 + 4 + 7
        assert copy.percentile(50) == gaps.percentile(50) and copy.mean() == gaps.mean()


def test_a_request_meets_an_slo_at_its_bound_and_misses_it_just_past():
    """SLOs are in ms, the records in seconds: a TTFT, TPOT or E2E equal to the bound meets it, 0.1 ms more misses;
    a 1-token request's TPOT counts as 0."""
    from sim.results.metrics import _meets_slo

    ttft = np.array([0.5, 0.5001, 0.2, 0.2])
    multi = np.array([True, True, True, False])
    tpot = np.array([0.02, 0.02, 0.0201])
    e2el = np.array([1.0, 1.0, 1.0, 1.0001])
    assert _meets_slo({"ttft": 500.0}, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el).tolist() == [True, False, True, True]
    assert _meets_slo({"tpot": 20.0}, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el).tolist() == [True, True, False, True]
    assert _meets_slo({"e2el": 1000.0}, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el).tolist() == [True, True, True, False]
    both = _meets_slo({"ttft": 500.0, "tpot": 20.0, "e2el": 1000.0}, ttft=ttft, tpot=tpot, multi=multi, e2el=e2el)
    assert both.tolist() == [True, False, False, False]


def test_per_class_and_per_job_summaries_by_hand():
    """Two classes: interactive (2 completed) and batch (2 completed of job a, 1 rejected of job b). Per class:
    counts, goodput over the class's own duration and attainment over all its requests, with the SLO keys null
    without an SLO; per job, rejections are its own."""
    from sim.results.metrics import class_summary, job_summary

    nan, ok, no = math.nan, RequestStatus.COMPLETED, RequestStatus.REJECTED
    r = frame([ok, ok, ok, ok, no], [0.0, 1.0, 0.0, 2.0, 3.0], [0.1, 1.9, 1.0, 4.0, nan], [1.0, 3.0, 5.0, 6.0, nan],
              [10] * 5, [11] * 5)  # fmt: skip
    r["klass"] = ["interactive", "interactive", "batch", "batch", "batch"]
    r["job_id"] = pd.array([None, None, "a", "a", "b"], dtype="string")
    r["deadline_at_s"] = [nan, nan, 10.0, 10.0, 10.0]
    plain = class_summary(r)
    assert plain["interactive"]["request_goodput"] is None and plain["interactive"]["slo_attainment"] is None
    assert plain["batch"]["requests"] == 3 and plain["batch"]["completed"] == 2 and plain["batch"]["rejected"] == 1
    s = class_summary(r, slo={"ttft": 500.0})  # interactive TTFT 0.1 and 0.9 s: one meets it; batch 1.0 and 2.0: none
    assert s["interactive"]["request_goodput"] == pytest.approx(1 / 3.0) and s["interactive"]["slo_attainment"] == 0.5
    assert s["batch"]["request_goodput"] == 0.0 and s["batch"]["slo_attainment"] == 0.0
    jobs = job_summary(r)
    assert (jobs["a"]["requests"], jobs["a"]["completed"], jobs["a"]["rejected"]) == (2, 2, 0)
    assert (jobs["b"]["requests"], jobs["b"]["completed"], jobs["b"]["rejected"]) == (1, 0, 1)
    assert jobs["a"]["deadline_met"] is True and jobs["b"]["completed_at_s"] is None and jobs["a"]["tokens"] == 42


def test_a_fleet_without_a_price_has_no_cost_but_its_gpu_seconds():
    """No price: `cost_usd` is None (not 0, not a string); the GPU-seconds are billed as with one."""
    nan = math.nan
    lives = [ReplicaLife(start_at_s=0.0, loading_at_s=5.0, ready_at_s=10.0, drain_at_s=nan, end_at_s=110.0, busy_s=50.0,
                         busy_before_drain_s=50.0)]  # fmt: skip
    bill = fleet_bill(lives, horizon_s=110.0, tp=2, usd_per_gpu_hour=None, reserved_usd_per_gpu_hour=None,
                      reserved_replicas=0, granularity_s=1.0, minimum_s=0.0)  # fmt: skip
    assert bill["cost_usd"] is None and bill["billed_gpu_seconds"] == 220.0
    priced = fleet_bill(lives, horizon_s=110.0, tp=2, usd_per_gpu_hour=3.6, reserved_usd_per_gpu_hour=None,
                        reserved_replicas=0, granularity_s=1.0, minimum_s=0.0)  # fmt: skip
    assert priced["cost_usd"] == pytest.approx(0.22)
