"""Simultaneous events happen in the documented order (sim/run/clock.py), pinned with exact times.

Step times are powers of two so that instants are exact in binary floating point: an arrival and a
step end really are the same float.
"""

import pandas as pd
import pytest
import simpy

from sim.run.clock import ARRIVAL, LIFECYCLE, OBSERVE, SAMPLE, At
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

STEP = {"kind": "constant", "prefill_s_per_token": 0.0625, "decode_step_s": 0.125}


def frame(rows):
    return validate_frame(pd.DataFrame(rows, columns=["arrival_at_s", "prompt_tokens", "output_tokens"]))


def one_replica(policy="chunked", fast_forward=True):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb"},
            "engine": {"policy": policy, "fast_forward": fast_forward, "step_time": STEP, "max_num_batched_tokens": 64},
        }
    )


def test_the_priorities_are_ordered_as_documented():
    env = simpy.Environment()
    seen = []
    for name, prio in (("sample", SAMPLE), ("observe", OBSERVE), ("arrival", ARRIVAL), ("lifecycle", LIFECYCLE)):
        At(env, 1.0, prio).callbacks.append(lambda _e, name=name: seen.append(name))
    env.timeout(1.0).callbacks.append(lambda _e: seen.append("step end"))
    env.run()
    assert seen == ["lifecycle", "arrival", "step end", "observe", "sample"]


@pytest.mark.parametrize("ff", [True, False])
@pytest.mark.parametrize("policy", ["chunked", "prefill_first"])
def test_an_arrival_at_a_step_end_is_in_the_next_batch(policy, ff):
    # A: prompt 4 -> prefill 4 x 0.0625 = 0.25 s, first token at 0.25; then a decode step to 0.375.
    # C arrives mid-step (0.3); B at exactly 0.375, the step's end. B's arrival event is created after
    # the step's end event (at 0.3, when C is delivered), yet the step planned at 0.375 takes B as well.
    r = simulate(one_replica(policy, ff), frame([(0.0, 4, 6), (0.3, 2, 2), (0.375, 2, 2)])).requests
    assert r["scheduled_at_s"].tolist() == [0.0, 0.375, 0.375]
    if policy == "chunked":  # decode A + prefill C and B: 0.125 + 4 x 0.0625 = 0.375 s
        assert r["first_token_at_s"].tolist() == [0.25, 0.75, 0.75]
    else:  # a prefill-only step of 4 x 0.0625 = 0.25 s: A waits
        assert r["first_token_at_s"].tolist() == [0.25, 0.625, 0.625]


def test_a_replica_ready_at_a_tick_is_observed_ready_and_the_sample_follows_the_decision(observations):
    # cold start: 10 + 5 + weights 1 s (137.95 GB at 137.95 GB/s) + 14 = 30 s, a multiple of the 15 s tick
    sc = parse_config(
        {
            "model": "llama-2-70b",
            "fleet": {
                "gpu": "a100-80gb",
                "tp": 2,
                "autoscaler": {"policy": "queue", "min_replicas": 0, "max_replicas": 3, "initial_replicas": 0, "interval_s": 15},
                "lifecycle": {"provision_s": 10, "image_pull_s": 5, "load_gb_per_s": 137.953296384, "warmup_s": 14},
                "timeline_interval_s": 15,
            },
            "engine": {"step_time": STEP, "max_num_seqs": 1},
        }
    )
    # a request at t = 0 launches a replica at once (scale from zero); eight more arrive at t = 30
    r = simulate(sc, frame([(0.0, 2, 2000)] + [(30.0, 2, 2000)] * 8), measure_capacity=False)
    assert r.replicas["ready_at_s"].iloc[0] == 30.0
    at_30 = next(o for o in observations if o.now == 30.0)
    assert at_30.n_ready == 1 and at_30.n_starting == 0  # the replica that became ready at 30 counts
    assert at_30.waiting == 8  # the arrivals at 30 are seen too (routed to it, waiting: max_num_seqs 1)
    assert at_30.in_flight == 9  # and the one it is running
    t = r.timeline.set_index("t_s")
    # provisioning + image pull end at exactly 15: the sample at 15 already sees it loading
    assert t.loc[15.0, "replicas_loading"] == 1 and t.loc[15.0, "replicas_provisioning"] == 0
    # the queue policy asks at 30 for one more replica (8 waiting, 4 held per ready replica: excess 4 = one
    # replica's worth); the sample at 30 comes after that decision and shows it provisioning
    assert t.loc[30.0, "replicas_ready"] == 1 and t.loc[30.0, "replicas_provisioning"] == 1
    assert t.loc[30.0, "waiting"] == 8 and t.loc[30.0, "running"] == 1
