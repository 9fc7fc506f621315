"""One owner of randomness: named streams that never share a sequence and never shift each other."""

import itertools

import numpy as np
import pandas as pd
import pytest

from sim.policies.router import ROUTERS, PowerOfTwo
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.streams import STREAMS, RunStreams
from sim.workload import validate_frame
from sim.workload.synthetic import SyntheticSpec, generate


def draws(streams: RunStreams, name: str, n: int = 16) -> np.ndarray:
    return streams.generator(name).random(n)


def test_no_two_streams_draw_the_same_sequence():
    for seed in (0, 1, 12345):
        s = RunStreams(seed)
        seqs = {name: draws(s, name) for name in STREAMS}
        for a, b in itertools.combinations(STREAMS, 2):
            assert not np.allclose(seqs[a], seqs[b]), (seed, a, b)


def test_a_stream_depends_only_on_seed_and_name():
    first = draws(RunStreams(3), "router")
    other = RunStreams(3)
    for name in STREAMS:  # asking for every other stream first changes nothing
        other.generator(name).random(1000)
    assert np.array_equal(draws(other, "router"), first)
    assert not np.array_equal(draws(RunStreams(4), "router"), first)
    with pytest.raises(KeyError, match="unknown random stream 'routr'"):
        RunStreams(0).generator("routr")


def test_spawn_keys_are_pinned_so_adding_a_stream_never_renumbers_one():
    # traces generated before RunStreams existed used SeedSequence(seed).spawn(3): arrivals, prompt, output
    children = np.random.SeedSequence(7).spawn(3)
    for name, child in zip(("arrivals", "prompt_lengths", "output_lengths"), children, strict=True):
        assert np.array_equal(draws(RunStreams(7), name), np.random.default_rng(child).random(16))
    assert sorted(STREAMS.values()) == list(range(len(STREAMS)))  # keys are distinct and dense


def test_synthetic_trace_without_its_own_seed_and_the_router_draw_differently(monkeypatch):
    """The bug this replaced: with no trace seed, the router replayed the arrival gaps' random numbers."""
    seen = []

    class Spy(PowerOfTwo):
        def __init__(self, rng):
            seen.append(rng.bit_generator.state)
            super().__init__(rng)

    monkeypatch.setitem(ROUTERS, "power_of_two", lambda rng, slack: Spy(rng))
    spec = SyntheticSpec.model_validate(
        {
            "arrivals": {"process": "poisson", "rate_per_s": 2},
            "prompt_tokens": {"dist": "fixed", "tokens": 50},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 40},
            "n_requests": 40,
        }
    )
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "seed": 9,
            "trace": spec.model_dump(),
            "fleet": {"gpu": "a100-80gb", "router": "power_of_two", "autoscaler": {"policy": "fixed", "replicas": 3}},
        }
    )
    simulate(sc, measure_capacity=False)
    streams = RunStreams(9)
    assert seen == [streams.generator("router").bit_generator.state]
    assert seen[0] != streams.generator("arrivals").bit_generator.state
    assert seen[0] != streams.generator("output_lengths").bit_generator.state
    # and the trace itself is the one its streams give, whatever the router drew
    assert (
        generate(spec, default_seed=9)["output_tokens"].tolist()
        == streams.generator("output_lengths").integers(1, 41, 40).tolist()
    )


def test_trace_sampling_has_its_own_stream():
    frame = validate_frame(pd.DataFrame({"arrival_at_s": np.arange(200.0), "prompt_tokens": 5, "output_tokens": 5}))
    from sim.workload.transforms import subsample

    a = subsample(frame, 0.5, RunStreams(0).generator("trace_sample"))
    b = subsample(frame, 0.5, RunStreams(0).generator("trace_sample"))
    c = subsample(frame, 0.5, RunStreams(1).generator("trace_sample"))
    assert a.equals(b) and not a.equals(c)
