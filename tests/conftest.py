from __future__ import annotations

import os

# The suite tests the pure-Python modules, the reference, even where `fleetsim compile` has built the compiled ones
# (tests/test_compiled.py runs those in subprocesses and compares them with these). Set before `sim` is first imported;
# FLEETSIM_PURE_PYTHON=0 runs the suite on a compiled build (the few tests that patch an engine method then fail).
os.environ.setdefault("FLEETSIM_PURE_PYTHON", "1")

from pathlib import Path

import pytest
from hypothesis import settings

from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.physics.roofline import RooflineSetup
from sim.scenario.config import roofline_config
from sim.scenario.resolve import build_setup

# Property-test profiles, chosen by FLEETSIM_HYPOTHESIS_PROFILE (default: `ci` under CI, else `dev`):
# - ci: the same 50 examples per property every run (derandomized: a landing never hinges on a new draw);
# - dev: 50 new examples per property each run;
# - nightly: 500 new examples per property (about 10x the suite's property time), for a scheduled run:
#     FLEETSIM_HYPOTHESIS_PROFILE=nightly python -m pytest tests/test_engine_equivalence.py tests/test_fleet_properties.py
settings.register_profile("ci", max_examples=50, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=50)
settings.register_profile("nightly", max_examples=500, print_blob=True)
settings.load_profile(os.environ.get("FLEETSIM_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def models():
    return load_model_catalog()


@pytest.fixture(scope="session")
def gpus():
    return load_gpu_catalog()


def make_setup(model: str, gpu: str, *, tp: int, preset: str | None = None, **roofline) -> RooflineSetup:
    return build_setup(
        load_model_catalog().get(model),
        load_gpu_catalog().get(gpu),
        tp=tp,
        roofline=roofline_config(preset, **roofline),
    )


@pytest.fixture(scope="session")
def seed2() -> RooflineSetup:
    """The seed article's setup: Llama-2-70B, 16-bit, on 2x A100-80GB at $2.21/GPU-h."""
    return make_setup("llama-2-70b", "a100-80gb", tp=2, preset="seed")


@pytest.fixture(scope="session")
def seed8() -> RooflineSetup:
    return make_setup("llama-2-70b", "a100-80gb", tp=8, preset="seed")


@pytest.fixture
def observations(monkeypatch):
    """Every `Observation` the autoscaler's policy is given during the test's simulations, in order."""
    import sim.run.pools as build

    seen = []
    real = build.make_policy

    def spy(cfg, **kwargs):
        policy = real(cfg, **kwargs)

        class Recorder:
            def decide(self, obs):
                seen.append(obs)
                return policy.decide(obs)

        return Recorder()

    monkeypatch.setattr(build, "make_policy", spy)
    return seen


class View:
    """A ready replica as a router sees it (`sim.policies.router.ReplicaView`), from plain numbers."""

    def __init__(self, n_outstanding=0, kv_use=0.0, pending_prompt_tokens=0, matched=0):
        self.n_outstanding, self.pending_prompt_tokens = n_outstanding, pending_prompt_tokens
        self._kv, self._matched = kv_use, matched

    def kv_use_at(self, now):
        return self._kv

    def prefix_match(self, seq):
        return self._matched


def views(outstanding, kv=None, prompt=None):
    """Views of replicas with these outstanding requests (and KV use, pending prompt tokens)."""
    n = len(outstanding)
    kv = kv or [0.0] * n
    prompt = prompt or [0] * n
    return [View(o, k, p) for o, k, p in zip(outstanding, kv, prompt, strict=True)]


def one_line_error(args: list[str], says: str) -> None:
    """`fleetsim ARGS` ends in one line saying `says`, exit code 2, no traceback (the bad-input contract)."""
    from typer.testing import CliRunner

    from sim.cli import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and says in res.output, res.output
    assert "Traceback" not in res.output


def edited_run_copy(run_dir, tmp_path, name: str, edit):
    """A copy of the run folder `run_dir` (in `tmp_path`/edited) with `edit` applied to its `name`.parquet: a run
    folder tampered with, for the record checks."""
    import pandas as pd

    edited = tmp_path / "edited"
    edited.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (edited / f.name).write_bytes(f.read_bytes())
    edit(pd.read_parquet(edited / f"{name}.parquet")).to_parquet(edited / f"{name}.parquet", index=False)
    return edited


def three_request_trace(folder: Path) -> Path:
    """A trace of three short requests (t.csv in `folder`): the run folder the hostile-input tests tamper with."""
    import pandas as pd

    trace = Path(folder) / "t.csv"
    pd.DataFrame({"arrival_at_s": [0.0, 0.5, 1.0], "prompt_tokens": [50, 60, 70], "output_tokens": [5, 6, 7]}).to_csv(
        trace, index=False
    )
    return trace


@pytest.fixture(params=["sorted", "bisection"])
def gap_search(request, monkeypatch):
    """Both ways `GapDistribution` finds an order statistic: its gaps sorted whole (a record of at most
    `GATHER_LIMIT` values), or bisection on the value (a larger one; forced here by a limit of 0)."""
    if request.param == "bisection":
        monkeypatch.setattr("sim.results.metrics.GATHER_LIMIT", 0)
    return request.param
