"""vLLM's async scheduling (`engine.async_scheduling`, its `--async-scheduling`): the engine schedules step N+1 as soon
as step N is launched, so a request arriving while N runs is first scheduled at N's end, into N+2 — one step later
than a synchronous scheduler admits it. An idle engine schedules an arrival at once, and so does one whose next step
would have been empty. Likewise a request finishing at N still holds its seat and blocks in N+1: the queue gets them
in N+2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.vllm_args import engine_args, map_options, parse_args
from sim.studies.validate import scenario_from_meta, vllm_version
from sim.workload import validate_frame

PREFILL_S, DECODE_S = 1e-3, 0.01  # the constant step-time model: a second per 1,000 prompt tokens, 10 ms a decode


def scenario(*, asynchronous: bool, fast_forward: bool = True, model: str = "llama-3.1-8b", dp: int = 1, replicas: int = 1):
    return parse_config(
        {
            "model": model,
            "fleet": {
                "gpu": "h100-sxm",
                "dp": dp,
                "expert_parallel": dp > 1,
                "router": "round_robin",
                "autoscaler": {"policy": "fixed", "replicas": replicas},
            },
            "engine": {
                "async_scheduling": asynchronous,
                "fast_forward": fast_forward,
                "step_time": {"kind": "constant", "prefill_s_per_token": PREFILL_S, "decode_step_s": DECODE_S},
            },
        }
    )


def frame(rows):
    t, p, o = zip(*rows, strict=True)
    return validate_frame(pd.DataFrame({"arrival_at_s": t, "prompt_tokens": p, "output_tokens": o}), source="test")


def times(sc, trace):
    r = simulate(sc, trace, measure_capacity=False).requests
    return r["first_token_at_s"].round(9).tolist(), r["completed_at_s"].round(9).tolist()


@pytest.mark.parametrize("fast_forward", [True, False])
def test_an_arrival_mid_step_joins_the_step_after_the_next_by_hand(fast_forward):
    # A (10-token prompt, 5 tokens) at 0: prefill [0, 10 ms], decodes end at 20, 30, 40, 50 ms ... B (10, 2) at 15 ms,
    # while A's first decode step [10, 20] runs.
    trace = frame([(0.0, 10, 5), (0.015, 10, 2)])
    # synchronous: B is scheduled at 20 ms, its prefill with A's decode [20, 40] (10 ms of prompt + a decode)
    first, done = times(scenario(asynchronous=False, fast_forward=fast_forward), trace)
    assert first == [0.01, 0.04] and done == [0.06, 0.05]
    # async: the step [20, 30] was scheduled at 10 ms, without B; B is scheduled at 30 ms into [30, 50]
    first, done = times(scenario(asynchronous=True, fast_forward=fast_forward), trace)
    assert first == [0.01, 0.05] and done == [0.06, 0.06]


@pytest.mark.parametrize("fast_forward", [True, False])
def test_a_seat_a_finishing_request_frees_is_taken_a_step_later_by_hand(fast_forward):
    # two seats: A (10-token prompt, 2 tokens) and C (10, 6) prefill together [0, 20 ms], decode [20, 30]: A is done
    # at 30 ms. B (10, 2), queued at 0 for want of a seat, takes A's.
    raw = scenario(asynchronous=False, fast_forward=fast_forward).model_dump()
    trace = frame([(0.0, 10, 2), (0.0, 10, 6), (0.0, 10, 2)])

    def first_tokens(asynchronous):
        engine = {**raw["engine"], "async_scheduling": asynchronous, "max_num_seqs": 2}
        first, _ = times(parse_config({**raw, "engine": engine}), trace)
        return first

    # synchronous: B is scheduled at 30 ms, its prefill with C's decode [30, 50]
    assert first_tokens(False) == [0.02, 0.02, 0.05]
    # async: the step [30, 40] was scheduled when [20, 30] launched, A still in it (vLLM skips a request it knows
    # has reached max_tokens, but its seat and blocks are freed only when that step's output is processed): C decodes
    # alone, and B is scheduled at 40 ms into [40, 60]
    assert first_tokens(True) == [0.02, 0.02, 0.06]


@pytest.mark.parametrize("fast_forward", [True, False])
def test_an_idle_engine_and_an_empty_next_step_schedule_an_arrival_at_once(fast_forward):
    # idle: B at 1 s, after A finished, is prefilled at once either way
    trace = frame([(0.0, 10, 2), (1.0, 10, 1)])
    assert times(scenario(asynchronous=True, fast_forward=fast_forward), trace) == times(
        scenario(asynchronous=False, fast_forward=fast_forward), trace
    )
    # A (one token) finishes with its prefill [0, 10 ms]: the step after it was empty, so B (at 5 ms) runs next
    trace = frame([(0.0, 10, 1), (0.005, 10, 1)])
    first, _ = times(scenario(asynchronous=True, fast_forward=fast_forward), trace)
    assert first == [0.01, 0.02]


def test_arrivals_mid_run_cut_it_a_step_later_and_the_fast_forward_matches_the_per_step_engine():
    # a decode run in progress: an arrival cuts it at the boundary after the next; Poisson arrivals over a busy
    # replica, fast-forwarded and stepped one step at a time, give the same times
    rng = np.random.default_rng(7)
    n = 120
    trace = frame(
        list(
            zip(
                np.cumsum(rng.exponential(0.05, n)).tolist(),
                rng.integers(5, 400, n).tolist(),
                rng.integers(1, 60, n).tolist(),
                strict=True,
            )
        )
    )
    for model, dp, replicas in (("llama-3.1-8b", 1, 2), ("qwen3-30b-a3b", 2, 2)):
        fast = times(scenario(asynchronous=True, model=model, dp=dp, replicas=replicas), trace)
        slow = times(scenario(asynchronous=True, fast_forward=False, model=model, dp=dp, replicas=replicas), trace)
        assert fast[0] == pytest.approx(slow[0], abs=1e-9) and fast[1] == pytest.approx(slow[1], abs=1e-9)
        # (and it schedules otherwise: a queue that builds while a long step runs is admitted in two cohorts, those
        # that came before the step began and those that came while it ran, where a synchronous scheduler admits
        # them all at its end)
        assert fast != times(scenario(asynchronous=False, model=model, dp=dp, replicas=replicas), trace)


def test_a_lock_step_group_sees_a_ranks_arrival_a_group_step_later_by_hand():
    # two DP ranks (round robin: A on rank 0, B on rank 1). A (10, 5) at 0: prefill [0, 10 ms] against rank 1's dummy
    # batch, then decodes. B (10, 2) at 15 ms, mid-step [10, 20], on rank 1 (then busy with dummy batches: seen at once,
    # as an idle engine schedules): its prefill joins the group's step at 20 ms either way
    trace = frame([(0.0, 10, 5), (0.015, 10, 2)])
    sync = times(scenario(asynchronous=False, model="qwen3-30b-a3b", dp=2, replicas=2), trace)
    asyn = times(scenario(asynchronous=True, model="qwen3-30b-a3b", dp=2, replicas=2), trace)
    assert sync == asyn and sync[0] == [0.01, 0.03]
    # C (10, 2) at 25 ms on rank 0, working (A's decodes): the group step [30, 40] was scheduled without it; it joins
    # at 40 ms (synchronous: at 30 ms)
    trace = frame([(0.0, 10, 8), (0.015, 10, 2), (0.025, 10, 2)])
    sync = times(scenario(asynchronous=False, model="qwen3-30b-a3b", dp=2, replicas=2), trace)
    asyn = times(scenario(asynchronous=True, model="qwen3-30b-a3b", dp=2, replicas=2), trace)
    assert sync[0][2] == pytest.approx(0.05) and asyn[0][2] == pytest.approx(0.06)


def test_vllm_args_and_a_run_logs_version_set_it():
    for flag, value in (("--no-async-scheduling", False), ("--async-scheduling", True)):
        m = map_options(parse_args(["--model", "meta-llama/Llama-3.1-8B", flag], "args"), "args")
        assert m.values["engine.async_scheduling"] is value
        assert flag in engine_args(m.values, hf_repo="meta-llama/Llama-3.1-8B")  # (exported as it was said)
    assert vllm_version("0.19.0") == (0, 19) and vllm_version("v0.8.3") == (0, 8) and vllm_version(None) is None
    meta = {"model": "meta-llama/Llama-3.1-8B", "hardware": {"device_name": "NVIDIA H100 80GB HBM3"}}
    raw, notes = scenario_from_meta({**meta, "vllm_version": "0.19.0"})
    on = raw["engine"]["async_scheduling"]
    assert "async scheduling: on, vLLM 0.19's default" in notes  # (the replay says what it assumed)
    off = scenario_from_meta({**meta, "vllm_version": "0.8.3"})[0]["engine"]["async_scheduling"]
    said = scenario_from_meta({**meta, "vllm_version": "0.19.0", "engine_kwargs": {"async_scheduling": False}})
    unknown, notes = scenario_from_meta(meta)
    assert (on, off, said[0]["engine"]["async_scheduling"]) == (True, False, False)
    assert unknown["engine"]["async_scheduling"] is False and any("version" in n for n in notes)
