"""Ctrl-C and SIGTERM mid-run: one line, exit 130 / 143, and nothing written (no run folder, no .part).

Nothing here waits on a clock. The signal is raised from inside the run at a chosen point, through the operating
system (`signal.raise_signal`, so `main`'s own handlers take it as they would a terminal's Ctrl-C or a `kill`):
while the simulation runs, and while the run folder is half written. One test does it across processes: the
child says on a pipe that its simulation has started and then spins until the signal arrives; the parent reads
that line (blocking, no timer) and sends the signal.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import main
from sim.run.clock import CountingEnvironment
from sim.workload.synthetic import generate, parse_spec
from sim.workload.writer import write_trace

SCENARIO = "model: llama-3.1-8b\nfleet: {gpu: h100-sxm}\ntrace: t.csv\n"
TRACE = "arrival_at_s,prompt_tokens,output_tokens\n0,50,5\n0.5,60,4\n1.0,70,3\n"
SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.fixture
def scenario_folder(tmp_path, monkeypatch):
    (tmp_path / "s.yaml").write_text(SCENARIO)
    (tmp_path / "t.csv").write_text(TRACE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _interrupt_once(sig):
    """A function that raises `sig` the first time it is called, then does nothing."""
    fired = []

    def fire():
        if not fired:
            fired.append(sig)
            signal.raise_signal(sig)  # the handler runs before raise_signal returns

    return fire, fired


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("s.yaml", "t.csv"))


@pytest.mark.parametrize(("sig", "code", "message"), SIGNALS)
def test_a_signal_while_simulating_leaves_nothing(scenario_folder, monkeypatch, capsys, sig, code, message):
    fire, fired = _interrupt_once(sig)
    run_until = CountingEnvironment.run_until

    def interrupted_run(env, until):
        fire()
        return run_until(env, until)

    monkeypatch.setattr(CountingEnvironment, "run_until", interrupted_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "s.yaml", "--out", "out", "--no-capacity"])
    assert fired == [sig]
    assert exit_info.value.code == code
    assert capsys.readouterr().err == f"error: {message}; nothing written\n"
    assert _left_behind(scenario_folder) == []


@pytest.mark.parametrize(("sig", "code", "message"), SIGNALS)
def test_a_signal_while_writing_the_run_folder_leaves_nothing(scenario_folder, monkeypatch, capsys, sig, code, message):
    """The run folder is written into a .part folder first: a signal then removes it, and no run folder appears."""
    fire, fired = _interrupt_once(sig)
    to_parquet = pd.DataFrame.to_parquet
    seen_part = []

    def interrupted_write(frame, path, *args, **kwargs):
        if ".part" in str(path):  # a record file of the half-written run folder
            seen_part.append(Path(path).parent.name)
            fire()
        return to_parquet(frame, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted_write)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "s.yaml", "--out", "out", "--no-capacity"])
    assert fired == [sig] and seen_part and seen_part[0].startswith(".out.")
    assert exit_info.value.code == code
    assert capsys.readouterr().err == f"error: {message}; nothing written\n"
    assert _left_behind(scenario_folder) == []


CHILD = """\
import sys
from sim.run.clock import CountingEnvironment

def simulating(env, until):
    print("simulating", flush=True)
    while True:  # bytecode, so the signal's handler runs as soon as the signal arrives
        pass

CountingEnvironment.run_until = simulating
from sim.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("sig", "code", "message"), SIGNALS)
def test_a_signal_from_another_process_mid_run(tmp_path, sig, code, message):
    (tmp_path / "s.yaml").write_text(SCENARIO)
    (tmp_path / "t.csv").write_text(TRACE)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "run", "s.yaml", "--out", "out", "--no-capacity"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the child's simulation has started
    assert line == "simulating\n", proc.communicate()
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate()
    assert proc.returncode == code, stderr
    assert stderr == f"error: {message}; nothing written\n"
    assert _left_behind(tmp_path) == []


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
        [*command, "--log-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stderr is not None
    while (line := proc.stderr.readline()) and not line.startswith("sweep sweep: 1 of"):
        pass  # a blocking read: the first finished run's line (no clock, no polling)
    assert proc.poll() is None, line
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the parent and its workers
    _stdout, rest = proc.communicate(timeout=60)
    stderr = "".join(x for x in rest.splitlines(keepends=True) if not x.startswith("sweep sweep:"))
    kept = len(list((tmp_path / "o" / "points").glob("*.parquet")))
    assert proc.returncode == 130, stderr
    assert stderr == f"error: interrupted; {kept} of 12 runs are kept in o/points: rerun the same command to resume\n"
    assert 1 <= kept < 12 and not list((tmp_path / "o" / "points").glob(".*"))  # no half-written row file
    again = subprocess.run([*command, "--json"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "o" / "points").glob("*.parquet"))) == 12


def test_a_ctrl_c_while_the_cli_loads_is_one_line_and_130(monkeypatch, capsys):
    """`main` installs its handlers once the commands are imported; a Ctrl-C during that import (the first half second
    of a run) printed a KeyboardInterrupt traceback."""
    import builtins

    real = builtins.__import__

    def interrupting(name, *args, **kwargs):
        if name == "sim.cli.commands":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupting)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "s.yaml"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted; nothing written\n"
