"""Ctrl-C and SIGTERM mid-run: one line, exit 130 / 143, and nothing written (no run folder, no .part)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.workload.synthetic import generate, parse_spec
from sim.workload.writer import write_trace

SCENARIO = "model: llama-3.1-8b\nfleet: {gpu: h100-sxm}\ntrace: long.parquet\n"


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    spec = parse_spec(
        {
            "arrivals": {"process": "poisson", "rate_per_s": 50},
            "prompt_tokens": {"dist": "uniform", "low": 50, "high": 500},
            "output_tokens": {"dist": "uniform", "low": 20, "high": 300},
            "n_requests": 600_000,  # tens of seconds of simulation: the signal always lands mid-run
        }
    )
    write_trace(generate(spec), folder / "long.parquet")
    (folder / "s.yaml").write_text(SCENARIO)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "message"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_mid_run_leaves_nothing(long_run, sig, code, message):
    out = long_run / f"out-{sig.name}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "run", "s.yaml", "--out", out.name],
        cwd=long_run,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    time.sleep(8)  # past the imports (a few seconds on a busy machine), inside the simulation
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr == f"error: {message}; nothing written\n"
    assert not out.exists() and not list(Path(long_run).glob(".*part"))


def test_trace_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        spec = parse_spec(
            {
                "arrivals": {"process": "poisson", "rate_per_s": 5},
                "prompt_tokens": {"dist": "fixed", "tokens": 5},
                "output_tokens": {"dist": "fixed", "tokens": 5},
                "n_requests": 10,
            }
        )
        path = write_trace(generate(spec), tmp_path / "t.csv")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
