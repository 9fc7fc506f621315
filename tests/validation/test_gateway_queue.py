"""The fleet queue with `max_outstanding_per_replica` against queueing theory: c replicas of `max_num_seqs: 1`
with a cap of 1 are one M/M/c queue (Poisson arrivals, exponential service, one FIFO line for c servers), whose
mean wait is Erlang C's. Service: a prompt of exponential length (mean 1,000 tokens, 1 ms a token, one token
out), so S ~ Exp(1 s) up to 1 ms of rounding. Sample path: every wait equals the c-server FIFO recursion
(Kiefer-Wolfowitz: each arrival starts on the earliest-free server) on the same arrivals and services.
Theory: 4 replicas at rho = 0.5 and 0.8, 8 seeds of 200,000 requests each, the first 10% cut as warm-up
(successive waits are correlated: with 4 seeds of 60,000 the seeds' means spread by 10% at rho = 0.8; this
is sized so 3% is about 3 standard errors; measured: +1.2% and +0.8%). Without the cap the router sends each request to the least-loaded replica at
arrival, where it waits in that replica's own line: a longer mean wait than the pooled line's."""

import math

import numpy as np
import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

C, MEAN_TOKENS, A = 4, 1000, 1e-3
SEEDS = tuple(range(31, 39))


def fleet(cap):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "a100-80gb",
                "autoscaler": {"policy": "fixed", "replicas": C},
                "max_outstanding_per_replica": cap,
            },
            "engine": {
                "max_num_seqs": 1,
                "max_num_batched_tokens": 100_000,
                "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": 0.01},
            },
        }
    )


def trace(seed, lam, n):
    rng = np.random.default_rng(seed)
    prompts = np.minimum(np.ceil(rng.exponential(MEAN_TOKENS, n)), 60_000).astype(int)
    return validate_frame(
        pd.DataFrame({"arrival_at_s": np.cumsum(rng.exponential(1 / lam, n)), "prompt_tokens": prompts, "output_tokens": 1})
    )


def erlang_c_wait(c, lam, mu):
    a = lam / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


def mean_wait(cap, lam, n=200_000, seeds=SEEDS):
    waits = []
    for seed in seeds:
        t = trace(seed, lam, n)
        r = simulate(fleet(cap), t, measure_capacity=False).requests
        service = r["prompt_tokens"].to_numpy() * A
        w = r["completed_at_s"].to_numpy() - r["arrival_at_s"].to_numpy() - service
        waits.append(w[n // 10 :].mean())
    return float(np.mean(waits))


def test_capped_fleet_waits_are_the_multi_server_fifo_recursion():
    import heapq

    t = trace(5, 0.8 * C, 20_000)
    r = simulate(fleet(1), t, measure_capacity=False).requests
    arrival, service = r["arrival_at_s"].to_numpy(), r["prompt_tokens"].to_numpy() * A
    free, want = [0.0] * C, []
    for a, s in zip(arrival, service, strict=True):
        start = max(a, heapq.heappop(free))
        want.append(start - a)
        heapq.heappush(free, start + s)
    got = r["completed_at_s"].to_numpy() - arrival - service
    assert np.abs(got - np.array(want)).max() < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_capped_fleet_is_an_mmc_queue(rho):
    mu = 1 / (MEAN_TOKENS * A)
    lam = rho * C * mu
    want = erlang_c_wait(C, lam, mu)
    got = mean_wait(1, lam)
    assert got == pytest.approx(want, rel=0.03), (got, want)


@pytest.mark.slow
def test_without_the_cap_requests_wait_longer_in_per_replica_lines():
    mu = 1 / (MEAN_TOKENS * A)
    lam = 0.8 * C * mu
    pooled, routed = mean_wait(1, lam, n=20_000, seeds=SEEDS[:2]), mean_wait(None, lam, n=20_000, seeds=SEEDS[:2])
    assert routed > 1.2 * pooled


def test_the_fleet_queue_dispatches_in_priority_then_arrival_order():
    """One replica, cap 1: the first request runs; of the three that wait, the priority-0 one goes first, then
    the others by arrival (the replica frees its slot at t = 1 s, 2 s, 3 s)."""
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 0.1, 0.2, 0.3],
                "prompt_tokens": [1000, 1000, 1000, 1000],
                "output_tokens": [1, 1, 1, 1],
                "priority": [1, 1, 1, 0],
            }
        )
    )
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb", "autoscaler": {"policy": "fixed", "replicas": 1}, "max_outstanding_per_replica": 1},
            "engine": {"max_num_seqs": 8, "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": 0.01}},
        }
    )
    r = simulate(sc, frame, measure_capacity=False).requests
    assert r["completed_at_s"].tolist() == pytest.approx([1.0, 3.0, 4.0, 2.0])
    # without the cap the replica holds all four (max_num_seqs 8): the three admitted together at 1 s
    free = simulate(
        sc.model_copy(update={"fleet": sc.fleet.model_copy(update={"max_outstanding_per_replica": None})}), frame
    ).requests
    assert free["scheduled_at_s"].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0])  # all admitted at the first boundary
