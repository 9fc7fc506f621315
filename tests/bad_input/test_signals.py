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


SWEEP_BASE = """\
model: llama-3.1-8b
fleet: {gpu: h100-sxm}
engine:
  max_num_seqs: 16
  step_time: {kind: constant, prefill_s_per_token: 0.00001, decode_step_s: 0.005}
trace:
  arrivals: {process: poisson, rate_per_s: 20}
  n_requests: 20000
  prompt_tokens: {dist: uniform, low: 50, high: 400}
  output_tokens: {dist: uniform, low: 10, high: 60}
"""


@pytest.mark.slow
def test_ctrl_c_on_a_local_sweep_is_one_line_and_keeps_the_finished_runs(tmp_path):
    """Ctrl-C reaches the whole process group: the workers used to print a traceback each. Now one line, exit
    130, and the finished runs stay for the rerun to resume from."""
    (tmp_path / "base.yaml").write_text(SWEEP_BASE)
    (tmp_path / "sweep.yaml").write_text("base: base.yaml\ncross:\n  engine.max_num_seqs: [8, 16, 32, 64]\nseeds: 3\n")
    command = [sys.executable, "-m", "sim", "sweep", "sweep.yaml", "--out", "o", "--workers", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "o" / "points").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the parent and its workers
    _stdout, stderr = proc.communicate(timeout=60)
    kept = len(list((tmp_path / "o" / "points").glob("*.parquet")))
    assert proc.returncode == 130, stderr
    assert stderr == f"error: interrupted; {kept} of 12 runs are kept in o/points: rerun the same command to resume\n"
    assert 1 <= kept < 12 and not list((tmp_path / "o" / "points").glob(".*"))  # no half-written row file
    again = subprocess.run([*command, "--json"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "o" / "points").glob("*.parquet"))) == 12
