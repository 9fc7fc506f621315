"""The engine against queueing theory and the roofline.

With `max_num_seqs: 1` and `ConstantStepTime` a replica is a single FCFS server whose service time
is S = prompt * prefill_s_per_token + (output - 1) * decode_step_s. Waiting time = scheduled - arrival.
- Sample path: the waiting times equal Lindley's recursion on the same arrivals and services, exactly.
- Theory: the mean wait matches M/D/1 (fixed lengths) and M/G/1 Pollaczek-Khinchine (random output
  lengths) within 3% at utilizations 0.5 and 0.8; averaged over 4 seeds, first 10% of each run cut
  as warm-up. Run lengths are chosen so that 3% is about 3 standard errors at rho = 0.8 (the error
  of a mean wait shrinks slowly there: successive waits are strongly correlated).
- Little's law: the time-average number in system, sampled from the engine's queues, = arrival rate x
  mean sojourn from the request records.
"""

import numpy as np
import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

A, D, PROMPT = 1e-3, 0.01, 100  # s per prompt token, s per decode step, prompt tokens
SEEDS = (11, 12, 13, 14)


def server(policy="chunked"):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb"},
            "engine": {
                "policy": policy,
                "max_num_seqs": 1,
                "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D},
            },
        }
    )


def service(output):
    return PROMPT * A + (output - 1) * D


def poisson_trace(rate, outputs, seed):
    rng = np.random.default_rng(seed)
    n = len(outputs)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(1 / rate, n)),
                "prompt_tokens": np.full(n, PROMPT),
                "output_tokens": outputs,
            }
        )
    )


def waits(result):
    r = result.requests
    return (r["scheduled_at_s"] - r["arrival_at_s"]).to_numpy()


def lindley(arrivals, services):
    """W_n = max(0, W_{n-1} + S_{n-1} - (a_n - a_{n-1})), vectorized as X_n - min_k X_k."""
    x = np.concatenate(([0.0], np.cumsum(services[:-1] - np.diff(arrivals))))
    return x - np.minimum.accumulate(x)


def test_waits_equal_lindley_recursion_exactly():
    rng = np.random.default_rng(3)
    outputs = rng.integers(1, 30, 5000)
    trace = poisson_trace(0.85 / service(outputs.mean()), outputs, seed=3)
    for policy in ("chunked", "prefill_first"):
        w = waits(simulate(server(policy), trace))
        expected = lindley(trace["arrival_at_s"].to_numpy(), service(trace["output_tokens"].to_numpy()))
        assert np.max(np.abs(w - expected)) < 1e-9


def mean_wait(outputs_for_seed, rate):
    means = []
    for seed in SEEDS:
        outputs = outputs_for_seed(seed)
        w = waits(simulate(server(), poisson_trace(rate, outputs, seed)))
        means.append(w[len(w) // 10 :].mean())
    return float(np.mean(means))


@pytest.mark.slow
@pytest.mark.parametrize(("rho", "n"), [(0.5, 40_000), (0.8, 150_000)])
def test_md1_mean_wait(rho, n):
    s = service(10)
    rate = rho / s
    theory = rho * s / (2 * (1 - rho))  # M/D/1
    assert mean_wait(lambda seed: np.full(n, 10), rate) == pytest.approx(theory, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize(("rho", "n"), [(0.5, 40_000), (0.8, 150_000)])
def test_mg1_pollaczek_khinchine(rho, n):
    outputs = np.arange(1, 20)  # output tokens uniform on 1..19
    s = service(outputs)
    es, es2 = s.mean(), (s**2).mean()
    rate = rho / es
    theory = rate * es2 / (2 * (1 - rho))  # Pollaczek-Khinchine
    measured = mean_wait(lambda seed: np.random.default_rng(seed + 100).integers(1, 20, n), rate)
    assert measured == pytest.approx(theory, rel=0.03)


def test_littles_law_from_the_sampled_queue_and_the_records():
    """Two code paths: the timeline samples the engine's queues (waiting + running) every 20 ms; the
    records give each request's arrival and completion. Little's law: the time-average number in the
    system (the samples' Riemann sum) = arrival rate x mean sojourn (from the records)."""
    rng = np.random.default_rng(8)
    outputs = rng.integers(1, 40, 3000)
    trace = poisson_trace(0.7 / service(outputs.mean()), outputs, seed=8)
    sc = parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {"gpu": "a100-80gb", "tp": 2, "timeline_interval_s": 0.02},
            "engine": {"max_num_seqs": 8},
        }
    )
    result = simulate(sc, trace, measure_capacity=False)
    r, t = result.requests, result.timeline
    arrive, leave = r["arrival_at_s"].to_numpy(), r["completed_at_s"].to_numpy()
    horizon = leave.max()
    sampled_mean_n = float((t["waiting"] + t["running"]).sum()) * 0.02 / horizon
    littles = len(r) / horizon * (leave - arrive).mean()
    assert sampled_mean_n == pytest.approx(littles, rel=0.01)
    assert littles > 0.5  # a loaded system, not a trivial one
