"""`seed_consumers`: a scenario gives identical records under two seeds exactly when it finds nothing that draws
from the seed (issue 23), over a range of scenarios; and it accounts for every stream RunStreams hands out."""

import json

import numpy as np
import pandas as pd
import pytest

from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.streams import STREAMS
from sim.studies.determinism import CONSUMERS, seed_consumers

FAST = {"step_time": {"kind": "constant", "prefill_s_per_token": 2e-4, "decode_step_s": 0.02}, "max_num_seqs": 8}
GEN = {
    "arrivals": {"process": "poisson", "rate_per_s": 4},
    "n_requests": 120,
    "prompt_tokens": {"dist": "fixed", "tokens": 300},
    "output_tokens": {"dist": "fixed", "tokens": 40},
}
TWO = {"policy": "fixed", "replicas": 2}
THREE = {"policy": "fixed", "replicas": 3}  # power_of_two draws two of three (of two it takes both: no draw)
JOB = {"job_id": "j", "requests": 60, "submit_at_s": 5, "deadline_s": 3600}
SPEC = {"method": "mtp", "num_speculative_tokens": 2}

# name -> (scenario changes over the base, is the seed expected to matter)
CASES = {
    "trace file": ({}, False),
    "trace file, sample 1": ({"trace": {"file": "t.csv", "sample": 1.0}}, False),
    "trace file, sample 0.5": ({"trace": {"file": "t.csv", "sample": 0.5}}, True),
    "trace file, transforms": (
        {"trace": {"file": "t.csv", "end_s": 20, "rate_scale": 2, "repeat": 2, "max_context": 350}},
        False,
    ),
    "synthetic": ({"trace": GEN}, True),
    "synthetic, its own seed": ({"trace": {**GEN, "seed": 5}}, False),
    "round_robin": ({"fleet": {"gpu": "h100-sxm", "router": "round_robin", "autoscaler": TWO}}, False),
    "power_of_two": ({"fleet": {"gpu": "h100-sxm", "router": "power_of_two", "autoscaler": THREE}}, True),
    "hpa, fixed cold starts": (
        {
            "fleet": {
                "gpu": "h100-sxm",
                "autoscaler": {"policy": "hpa", "target": 2, "max_replicas": 4},
                "lifecycle": {"cold_start_s": 30},
            }
        },
        False,
    ),
    "cold starts drawn": (
        {
            "fleet": {
                "gpu": "h100-sxm",
                "autoscaler": TWO,
                "lifecycle": {"cold_start_s": {"dist": "uniform", "low": 10, "high": 60}, "start": "cold"},
            }
        },
        True,
    ),
    "batch job, fixed lengths": (
        {
            "batch": {
                "jobs": [
                    {**JOB, "prompt_tokens": {"dist": "fixed", "tokens": 200}, "output_tokens": {"dist": "fixed", "tokens": 20}}
                ]
            }
        },
        False,
    ),
    "batch job, drawn lengths": (
        {
            "batch": {
                "jobs": [
                    {
                        **JOB,
                        "prompt_tokens": {"dist": "uniform", "low": 50, "high": 400},
                        "output_tokens": {"dist": "fixed", "tokens": 20},
                    }
                ]
            }
        },
        True,
    ),
    "batch job, drawn lengths, its own seed": (
        {
            "batch": {
                "jobs": [
                    {
                        **JOB,
                        "seed": 3,
                        "prompt_tokens": {"dist": "uniform", "low": 50, "high": 400},
                        "output_tokens": {"dist": "fixed", "tokens": 20},
                    }
                ]
            }
        },
        False,
    ),
    "batch job file, sampled": ({"batch": {"jobs": [{"job_id": "f", "file": {"file": "t.csv", "sample": 0.5}}]}}, True),
    "speculative, acceptance 0.6": ({"engine": {"speculative": {**SPEC, "acceptance_rate": 0.6}}}, True),
    "speculative, acceptance 1": ({"engine": {"speculative": {**SPEC, "acceptance_rate": 1.0}}}, False),
    "disaggregated": ({"fleet": {"gpu": "h100-sxm", "mode": "disaggregated", "decode": {"autoscaler": TWO}}}, False),
    "disaggregated, power_of_two prefill": (
        {"fleet": {"gpu": "h100-sxm", "mode": "disaggregated", "prefill": {"router": "power_of_two", "autoscaler": THREE}}},
        True,
    ),
    "disaggregated, power_of_two decode (transfers choose)": (
        {"fleet": {"gpu": "h100-sxm", "mode": "disaggregated", "decode": {"router": "power_of_two", "autoscaler": THREE}}},
        False,
    ),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(0.25, 160))
    frame = pd.DataFrame(
        {"arrival_at_s": t - t[0], "prompt_tokens": rng.integers(50, 600, 160), "output_tokens": rng.integers(5, 80, 160)}
    )
    frame.to_csv(tmp / "t.csv", index=False)
    return tmp


def scenario(folder, changes, seed):
    raw = {"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm"}, "trace": "t.csv", "engine": FAST, "seed": seed}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if key == "engine" else value
    if "speculative" in raw["engine"]:  # speculation runs on the roofline (its step model)
        raw["engine"] = {k: v for k, v in raw["engine"].items() if k != "step_time"}
    return parse_config(raw, base_dir=folder)


def records(result):
    summary = json.dumps(result.summary(), sort_keys=True, default=str)
    return result.requests, result.replicas, result.timeline, summary, result.meta["capacity"]


def identical(a, b) -> bool:
    return all(x.equals(y) for x, y in zip(a[:3], b[:3], strict=True)) and a[3:] == b[3:]


@pytest.mark.parametrize("name", CASES)
def test_two_seeds_give_identical_records_exactly_when_nothing_draws_from_the_seed(folder, name):
    changes, random = CASES[name]
    one, two = (scenario(folder, changes, seed) for seed in (0, 1))
    found = seed_consumers(one)
    assert bool(found) == random, found
    runs = [records(simulate(sc, base_dir=folder)) for sc in (one, two)]
    assert identical(*runs) == (not found), name


def test_every_stream_of_runstreams_is_accounted_for():
    """A new stream in sim/streams.py must say here what draws from it (and `seed_consumers` check for it)."""
    assert set(CONSUMERS) == set(STREAMS)
