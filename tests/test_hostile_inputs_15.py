"""Hostile inputs, round 15 (a review of the less-trodden commands): a path too long for the system; a key given twice
in a run log's JSON; YAML 1.1's base-60 and octal numbers; a calibration from a log on another clock writes no
preset; logs whose first tokens come at arrival, whose tokens come faster than any engine streams, or whose request
ends after the run; `import` of vLLM arguments vLLM refuses; `--kv-blocks logged` against a scenario's own count; a
validate table whose figures outgrow its columns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.workload.runlog import read_run_log
from sim.yaml_input import parse_yaml

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"  # a real run's folder: requests.jsonl, meta.json
LONG = "a" * 300  # (a path part past the 255 bytes every common file system allows)


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def _one_line_error(code: int, out: str) -> str:
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("fleetsim: running the pure-Python")]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    return lines[0]


def _copy_run(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(parents=True)
    for name in ("requests.jsonl", "meta.json"):
        shutil.copy(RUN / name, folder / name)
    return folder


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines() if line.strip()]


def _write_rows(folder: Path, rows: list[dict]) -> None:
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "args",
    [
        ("run", "{long}.yaml"),
        ("run", "configs/default.yaml", "--out", "{long}"),
        ("validate", "{long}"),
        ("calibrate", "{long}"),
        ("roofline", "--model", "{long}.json", "--gpu", "h100-sxm"),
        ("import", "{long}.sh"),
        ("export", "configs/default.yaml", "--out", "{long}.yaml"),
    ],
)
def test_a_path_too_long_for_the_system_is_one_line(tmp_path, monkeypatch, args):
    """Every command's first look at a file (`is_dir`, `exists`) raised ENAMETOOLONG as a traceback and exit 1."""
    monkeypatch.chdir(REPO)
    long = str(tmp_path / LONG)
    line = _one_line_error(*cli(*(a.replace("{long}", long) for a in args)))
    # (the name shortened, with its length: the line stays one readable line)
    assert "longer than the system allows" in line and "characters)" in line and LONG not in line
    assert not any(p.name.startswith("a" * 50) for p in tmp_path.iterdir())  # nothing written


def test_a_key_given_twice_in_a_run_logs_json_is_refused(tmp_path):
    """json.loads keeps the last of two equal keys: a log whose row or meta.json says two things was replayed on
    one of them silently (an H100 for an RTX 4090 run, ten times its KV cache)."""
    folder = _copy_run(tmp_path)
    text = (folder / "requests.jsonl").read_text().splitlines()
    text[0] = text[0].replace('"output_toks": ', '"output_toks": 5, "output_toks": ', 1)
    (folder / "requests.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(FleetsimError, match=r"line 1: field 'output_toks' is given twice"):
        read_run_log(folder)
    folder = _copy_run(tmp_path / "b")
    meta = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(meta.replace('"model":', '"model": "llama-3.1-70b", "model":', 1))
    with pytest.raises(FleetsimError, match=r"meta.json: key 'model' is given twice"):
        read_run_log(folder)


def test_yaml_1_1_base_60_and_octal_numbers_are_not_read_as_numbers():
    """PyYAML read `1:30` as 90 and `010` as 8; under YAML 1.2 the first is a string and the second 10."""
    assert parse_yaml("a: 1:30", where="x") == {"a": "1:30"}
    assert parse_yaml("a: 010", where="x") == {"a": "010"}
    assert parse_yaml("a: 190:20:30.15", where="x") == {"a": "190:20:30.15"}
    # (every other number reads as before)
    assert parse_yaml("{a: 0x10, b: 0b11, c: 1_000, d: 1.5, e: .5, f: -3, g: 1e-5, h: .inf, i: 0, j: 3.}", where="x") == {
        "a": 16, "b": 3, "c": 1000, "d": 1.5, "e": 0.5, "f": -3, "g": 1e-5, "h": float("inf"), "i": 0, "j": 3.0
    }  # fmt: skip


def test_a_scenario_with_a_base_60_rate_or_an_octal_tp_is_refused(tmp_path):
    base = (REPO / "configs" / "default.yaml").read_text()
    path = tmp_path / "tp.yaml"
    path.write_text(base + "\n")
    code, out = cli("run", str(path), "--set", "fleet.tp=010", "--out", str(tmp_path / "o"))
    line = _one_line_error(code, out)
    assert "fleet.tp" in line and "'010'" in line
    assert not (tmp_path / "o").exists()


def test_a_calibration_from_a_log_on_another_clock_writes_no_preset(tmp_path):
    """Timestamps 1,000 times too large (a millisecond clock read as seconds): the fit drove mfu and mbu to their
    floor and the latency to its ceiling, errors -100%, and --out was written as if usable."""
    folder = _copy_run(tmp_path)
    rows = _rows(folder)[:80]
    for r in rows:
        for k in ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts"):
            r[k] = r[k] * 1000.0
        r["arrival_time"] = r["arrival_time"] * 1000.0
    _write_rows(folder, rows)
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("started_at", None)  # (the run's wall times no longer bound the stretched requests)
    meta.pop("finished_at", None)
    (folder / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "fit.yaml"
    line = _one_line_error(*cli("calibrate", str(folder), "--out", str(out)))
    assert "the fit failed" in line and "not written" in line
    assert not out.exists()


def test_a_log_whose_first_tokens_come_at_arrival_is_refused(tmp_path):
    folder = _copy_run(tmp_path)
    rows = _rows(folder)
    for r in rows:
        r["first_token_ts"] = r["queued_ts"]
    _write_rows(folder, rows)
    with pytest.raises(FleetsimError, match="every request's first token comes within 1 ms of its arrival"):
        read_run_log(folder)


def test_a_log_whose_tokens_come_faster_than_any_engine_streams_is_refused(tmp_path):
    """Last tokens 2 ms after the first for outputs of hundreds of tokens: the TPOT compared was 0.0 ms."""
    folder = _copy_run(tmp_path)
    rows = _rows(folder)
    for r in rows:
        r["last_token_ts"] = r["first_token_ts"] + 0.002
    _write_rows(folder, rows)
    with pytest.raises(FleetsimError, match=r"tokens come .* us apart .* which no engine streams"):
        read_run_log(folder)


def test_a_request_ending_after_the_run_is_refused(tmp_path):
    """meta.json's started_at and finished_at bound every request, as a vllm bench result's duration does."""
    folder = _copy_run(tmp_path)
    rows = _rows(folder)
    rows[3]["last_token_ts"] = rows[3]["first_token_ts"] + 1e9
    _write_rows(folder, rows)
    with pytest.raises(FleetsimError, match=r"request 4 \(of 300\) ends .* past the run's .* started_at to finished_at"):
        read_run_log(folder)
    read_run_log(RUN)  # (the run itself is within its times)


def test_import_refuses_a_token_budget_under_the_sequence_count_and_caps_the_default(tmp_path):
    """vLLM refuses max_num_batched_tokens < max_num_seqs, and caps its own default sequence count at a budget given."""
    sh = tmp_path / "serve.sh"
    sh.write_text("vllm serve meta-llama/Llama-3.1-8B-Instruct --max-num-batched-tokens 10 --max-num-seqs 256\n")
    line = _one_line_error(*cli("import", str(sh), "--gpu", "h100-sxm", "--out", str(tmp_path / "a.yaml")))
    assert "max_num_batched_tokens 10" in line and "max_num_seqs 256" in line and "vLLM refuses" in line
    assert not (tmp_path / "a.yaml").exists()
    sh.write_text("vllm serve meta-llama/Llama-3.1-8B-Instruct --max-num-batched-tokens 512\n")
    code, out = cli("import", str(sh), "--gpu", "h100-sxm", "--out", str(tmp_path / "b.yaml"))
    assert code == 0, out
    engine = parse_yaml((tmp_path / "b.yaml").read_text(), where="b")["engine"]
    assert engine["max_num_batched_tokens"] == 512 and engine["max_num_seqs"] == 512  # (1,024 on an H100, capped)


def test_kv_blocks_logged_against_a_scenarios_own_count_is_refused():
    line = _one_line_error(*cli("validate", str(RUN), "--kv-blocks", "logged", "--set", "engine.num_gpu_blocks_override=5"))
    assert "num_gpu_blocks_override is 5" in line and "2588" in line


def test_the_validate_table_widens_for_wide_figures(tmp_path):
    """Figures of a dozen digits ran into the next column ('32.5 ms+1035030.5%')."""
    code, out = cli("validate", str(RUN), "--set", "fleet.max_outstanding_per_replica=1")
    assert code == 0, out
    rows = [ln for ln in out.splitlines() if ln.startswith(("  TTFT", "  TPOT", "  E2E"))]
    assert rows
    for ln in rows:
        # each figure ends in "ms" and is followed by at least two spaces before the next
        assert " ms " in ln.replace(" ms  ", " ms ") and "ms+" not in ln and "ms-" not in ln


def test_kv_blocks_logged_accepts_a_pipeline_runs_own_override(tmp_path):
    """A pipeline run's meta.json override is the server's count: --kv-blocks logged splits it over the engines, and the
    run is not in conflict with itself."""
    src = REPO / "benchmarks" / "e2e" / "a100-40gb-llama-3.3-70b-tp4-pp2-qps16"
    folder = tmp_path / "pp"
    shutil.copytree(src, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["engine_kwargs"]["num_gpu_blocks_override"] = meta["kv_cache"]["num_gpu_blocks"]
    (folder / "meta.json").write_text(json.dumps(meta))
    code, out = cli("validate", str(folder), "--kv-blocks", "logged")
    assert code == 0, out
