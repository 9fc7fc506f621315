"""End-to-end validation: run logs read as they are written, the replay of a real vLLM run within the project's
accuracy goal, a run fleetsim itself produced replayed exactly, and bad logs as one-line errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.studies.validate import gpu_name_of_device, scenario_from_meta, validate
from sim.workload import validate_frame
from sim.workload.runlog import read_run_log

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"


def test_the_shared_run_reads_as_vllm_defines_its_latencies():
    """300 requests; TTFT, TPOT and E2E means as the run's README states them (65.5 s, 32.4 ms, 86.6 s)."""
    log = read_run_log(RUN)
    assert len(log.trace) == 300 and log.layout == "requests" and log.dropped == 0
    assert log.trace["arrival_at_s"].iloc[0] == 0.0 and log.trace["arrival_at_s"].is_monotonic_increasing
    assert log.ttft_s.mean() == pytest.approx(65.46, abs=0.01)
    assert log.tpot_s.mean() == pytest.approx(0.03245, abs=1e-4)
    assert log.e2e_s.mean() == pytest.approx(86.58, abs=0.01)
    assert log.meta["kv_cache"]["num_gpu_blocks"] == 2588 and len(log.timeseries) == 184


def test_the_runs_meta_describes_its_scenario():
    log = read_run_log(RUN)
    raw, notes = scenario_from_meta(log.meta)
    assert raw["model"] == "llama-3.1-8b" and raw["fleet"]["gpu"] == "rtx-4090" and raw["fleet"]["tp"] == 1
    assert raw["fleet"]["autoscaler"] == {"policy": "fixed", "replicas": 1}
    assert raw["engine"] == {
        "policy": "chunked",
        "max_num_seqs": 256,
        "block_size": 16,
        "max_num_batched_tokens": 2048,
        "async_scheduling": True,  # (the run's resolved config)
        "disable_hybrid_kv_cache_manager": False,  # (likewise)
    }
    assert raw["roofline"] == {
        "gpu_memory_utilization": 0.9,
        "weight_bits": None,
        "kv_bits": 16,
    }  # (None: as the checkpoint ships)
    assert any("prefix caching" in n for n in notes)
    assert gpu_name_of_device("NVIDIA GeForce RTX 4090") == "rtx-4090"
    with pytest.raises(FleetsimError, match="no catalog GPU is named 'NVIDIA Quadro P400'"):
        gpu_name_of_device("NVIDIA Quadro P400")
    # a data-parallel MoE deployment: each DP rank a replica of its own, the model found by its Hugging Face name
    moe = {
        "engine_kwargs": {"model": "Qwen/Qwen3-30B-A3B", "tensor_parallel_size": 1, "data_parallel_size": 2,
                          "enable_expert_parallel": True, "max_num_seqs": 128},
        "hardware": {"device_name": "NVIDIA H100 80GB HBM3"},
    }  # fmt: skip
    raw, notes = scenario_from_meta(moe)
    assert raw["model"] == "qwen3-30b-a3b" and raw["fleet"]["gpu"] == "h100-sxm"
    assert raw["fleet"]["autoscaler"] == {"policy": "fixed", "replicas": 2}
    assert raw["fleet"]["dp"] == 2 and raw["fleet"]["expert_parallel"] is True  # the ranks share the experts
    assert any("data_parallel_size=2" in n and "lock-step, in groups of dp" in n for n in notes)
    assert "all2all_backend" not in raw["fleet"]  # (vLLM's default: allgather_reducescatter)
    moe["engine_kwargs"]["all2all_backend"] = "deepep_low_latency"
    assert scenario_from_meta(moe)[0]["fleet"]["all2all_backend"] == "deepep_low_latency"
    # the same through `fleetsim import` of a command line
    from sim.scenario.vllm_args import map_options, parse_args

    mapped = map_options(parse_args(["--enable-expert-parallel", "--all2all-backend", "pplx"], "cmd"), "cmd")
    assert mapped.values["fleet.all2all_backend"] == "pplx" and mapped.values["fleet.expert_parallel"] is True


def test_engine_arguments_stand_in_for_a_resolved_config_the_run_did_not_log():
    """A meta.json with only `engine_kwargs` (the arguments the run passed) is read as vLLM would have started:
    chunked prefill off, block size, memory share, eager mode, the block override and the long-prefill threshold all
    come from the arguments; a resolved value wins where both are there; speculative decoding and 32-bit activations
    are said to be left out."""
    meta = {
        "engine_kwargs": {
            "model": "meta-llama/Llama-3.1-8B", "enable_chunked_prefill": False, "block_size": 32,
            "gpu_memory_utilization": 0.85, "enforce_eager": True, "num_gpu_blocks_override": 4000,
            "long_prefill_token_threshold": 512, "speculative_config": {"method": "eagle3", "num_speculative_tokens": 3},
            "dtype": "float32",
        },
        "hardware": {"device_name": "NVIDIA H100 80GB HBM3"},
    }  # fmt: skip
    raw, notes = scenario_from_meta(meta)
    engine = raw["engine"]
    assert engine["policy"] == "prefill_first" and engine["block_size"] == 32
    assert engine["enforce_eager"] is True and engine["num_gpu_blocks_override"] == 4000
    assert engine["long_prefill_token_threshold"] == 512
    assert raw["roofline"]["gpu_memory_utilization"] == 0.85
    assert any(n.startswith("speculative_config") for n in notes) and any(n.startswith("dtype=float32") for n in notes)
    assert any(n.startswith("enforce_eager") for n in notes)
    parse_config(raw)  # (a scenario fleetsim accepts)
    # what vLLM resolved wins over what it was given
    meta["resolved_config"] = {
        "scheduler_config": {"enable_chunked_prefill": True, "long_prefill_token_threshold": 0},
        "cache_config": {"block_size": 16, "gpu_memory_utilization": 0.9},
        "model_config": {"enforce_eager": False},
    }
    raw, _ = scenario_from_meta(meta)
    assert raw["engine"]["policy"] == "chunked" and raw["engine"]["block_size"] == 16
    assert "enforce_eager" not in raw["engine"] and "long_prefill_token_threshold" not in raw["engine"]
    assert raw["roofline"]["gpu_memory_utilization"] == 0.9
    # a bad argument is named where it sits
    with pytest.raises(FleetsimError, match=r"meta.json engine_kwargs.enforce_eager: must be true or false \(got 'yes'\)"):
        scenario_from_meta({**meta, "resolved_config": {}, "engine_kwargs": {**meta["engine_kwargs"], "enforce_eager": "yes"}})
    with pytest.raises(FleetsimError, match=r"meta.json engine_kwargs.gpu_memory_utilization: must be in \(0, 1\]"):
        scenario_from_meta(
            {**meta, "resolved_config": {}, "engine_kwargs": {**meta["engine_kwargs"], "gpu_memory_utilization": 2}}
        )


@pytest.mark.slow
def test_the_real_rtx_4090_run_is_replayed_within_ten_percent():
    """Uncalibrated (datasheets and published microbenchmarks): mean TTFT, TPOT and E2E within 10% of the real run,
    with the KV cache sized by fleetsim and with vLLM's own count; the running and waiting series follow the run's."""
    log = read_run_log(RUN)
    for kv in ("computed", "logged"):
        cmp = validate(log, kv_blocks=kv)
        for metric in ("ttft", "tpot", "e2e"):
            assert abs(cmp.error(metric)) < 0.10, (kv, metric, cmp.error(metric))
        s = cmp.series
        assert abs(s["sim_waiting"].mean() / s["real_waiting"].mean() - 1) < 0.10
        assert abs(s["sim_running"].mean() / s["real_running"].mean() - 1) < 0.10
    assert cmp.kv_blocks == {"simulated": 2588, "logged": 2588, "logged_server": 2588}


def write_requests_log(folder: Path, result, meta: dict) -> None:
    """A fleetsim run written as the requests layout (engine timestamps on one clock, offset as a real one is)."""
    r = result.requests
    base = 27_000.0
    with (folder / "requests.jsonl").open("w") as f:
        for row in r.itertuples():
            rec = {
                "request_id": f"r{row.Index}",
                "input_toks": int(row.prompt_tokens),
                "output_toks": int(row.output_tokens),
                "queued_ts": base + row.arrival_at_s,
                "scheduled_ts": base + row.scheduled_at_s,
                "first_token_ts": base + row.first_token_at_s,
                "last_token_ts": base + row.completed_at_s,
            }
            f.write(json.dumps(rec) + "\n")
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_run_fleetsim_made_is_replayed_exactly(tmp_path):
    """The harness against a second code path: a run simulated with a scenario, logged in the requests layout,
    replayed with the same scenario gives back the same latencies (errors ~0)."""
    rng = np.random.default_rng(3)
    n = 200
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 40, n)),
                "prompt_tokens": rng.integers(50, 3000, n),
                "output_tokens": rng.integers(2, 400, n),
            }
        )
    )
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {"gpu": "l40s", "tp": 1},
        "engine": {"max_num_seqs": 64, "max_num_batched_tokens": 2048},
    }
    result = simulate(parse_config(raw), trace, measure_capacity=False)
    write_requests_log(tmp_path, result, {})
    cmp = validate(read_run_log(tmp_path), raw)
    for row in cmp.rows:
        assert row["error"] == pytest.approx(0.0, abs=1e-9), row


def test_a_vllm_bench_result_and_a_mapped_csv_read_the_same_requests(tmp_path):
    """`vllm bench serve --save-result` keeps per request its send time, lengths, TTFT and gaps; a failed request
    (an error, no TTFT) is left out and counted. A CSV says the same through a column mapping, in ms."""
    bench = {
        "date": "20261201-120000",
        "backend": "vllm",
        "model_id": "meta-llama/Llama-3.1-8B",
        "input_lens": [100, 200, 300],
        "output_lens": [3, 2, 4],
        "start_times": [10.0, 10.5, 11.0],
        "ttfts": [0.05, 0.0, 0.07],
        "itls": [[0.02, 0.03], [], [0.01, 0.01, 0.02]],
        "errors": ["", "Bad Request", ""],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    log = read_run_log(tmp_path / "bench.json")
    assert log.layout == "vllm-bench" and log.dropped == 1
    assert log.trace["arrival_at_s"].tolist() == [0.0, 1.0] and log.trace["prompt_tokens"].tolist() == [100, 300]
    assert log.ttft_s.tolist() == [0.05, 0.07] and log.e2e_s == pytest.approx([0.10, 0.11])
    assert log.itl_s.tolist() == [0.02, 0.03, 0.01, 0.01, 0.02]
    assert log.tpot_s == pytest.approx([0.025, 0.04 / 3])
    (tmp_path / "log.csv").write_text("t_ms,in,out,first_ms,total_ms\n10000,100,3,50,100\n11000,300,4,70,110\n")
    cols = {"arrival": "t_ms", "prompt": "in", "output": "out", "ttft": "first_ms", "e2e": "total_ms"}
    csv = read_run_log(tmp_path / "log.csv", columns=cols, time_unit="ms")
    assert csv.trace.equals(log.trace) and csv.ttft_s == pytest.approx(log.ttft_s) and csv.e2e_s == pytest.approx(log.e2e_s)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("r.jsonl", "", "no request in the log"),
        ("r.jsonl", '{"input_toks": 5}\n', "line 1: missing output_toks, queued_ts, first_token_ts, last_token_ts"),
        ("r.jsonl", "{not json\n", "line 1: invalid JSON"),
        (
            "r.jsonl",
            '{"input_toks": -5, "output_toks": 3, "queued_ts": 1, "first_token_ts": 2, "last_token_ts": 3}\n',
            r"line 1 input_toks: must be >= 1 \(got -5\)",
        ),
        (
            "r.jsonl",
            '{"input_toks": 5, "output_toks": "x", "queued_ts": 1, "first_token_ts": 2, "last_token_ts": 3}\n',
            r"line 1 output_toks: must be a finite number \(got 'x'\)",
        ),
        (
            "r.jsonl",
            '{"input_toks": 5, "output_toks": 3, "queued_ts": 5, "first_token_ts": 2, "last_token_ts": 3}\n',
            r"line 1 first_token_ts: must be >= 5 \(got 2\)",
        ),
        ("b.json", '{"input_lens": [1]}', "missing output_lens, ttfts, itls, start_times"),
        ("b.json", "[1, 2]", "top level: must be a JSON object"),
        ("l.csv", "arrival,prompt,output,ttft\n0,5,3,1\n", "missing e2e"),
        ("l.csv", "arrival,prompt,output,ttft,e2e\n0,5,3,1,0.5\n", "line 2 column 'e2e': must be >= the TTFT"),
        ("l.csv", "arrival,prompt,output,ttft,e2e\n0,5.5,3,1,2\n", "line 2 column 'prompt': must be a whole number >= 1"),
        ("l.csv", "arrival,prompt,output,ttft,e2e\n1,5,3,1,2\n0,5,3,1,2\n", None),
        ("x.txt", "hello", "cannot tell the layout from the extension"),
    ],
)
def test_bad_run_logs_are_one_line_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    if message is None:  # an unsorted log is sorted by arrival (logs are written in completion order)
        assert read_run_log(path).trace["arrival_at_s"].tolist() == [0.0, 1.0]
        return
    with pytest.raises(FleetsimError, match=message) as err:
        read_run_log(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    res = CliRunner().invoke(app, ["validate", str(path), "--scenario", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output


def test_the_cli_prints_the_table_and_writes_the_figure(tmp_path):
    res = CliRunner().invoke(app, ["validate", str(RUN), "--kv-blocks", "logged", "--plot", str(tmp_path / "v.png")])
    assert res.exit_code == 0, res.output
    assert "KV cache: 2,588 blocks simulated (logged), vLLM logged 2,588" in res.output
    assert "TTFT   mean" in res.output and "TPOT   p99" in res.output and "waiting" in res.output
    assert (tmp_path / "v.png").stat().st_size > 10_000
    res = CliRunner().invoke(app, ["validate", str(RUN), "--json", "--set", "engine.max_num_seqs=64"])
    data = json.loads(res.output)
    assert data["requests"] == 300 and data["scenario"]["engine"]["max_num_seqs"] == 64
    assert {(m["metric"], m["stat"]) for m in data["metrics"]} >= {("ttft", "mean"), ("e2e", "p99")}


def test_calibration_from_a_run_log_recovers_the_parameters_it_was_made_with(tmp_path):
    """A run fleetsim made with mfu 0.5 and mbu 0.62 on an L40S, fitted from the catalog's defaults on its first half:
    the fit finds them (within 0.5%) and both halves are reproduced (mean errors under 0.5%)."""
    from sim.studies.validate import calibrate_from_log

    rng = np.random.default_rng(5)
    n = 400
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 60, n)),
                "prompt_tokens": rng.integers(100, 3000, n),
                "output_tokens": rng.integers(20, 600, n),
            }
        )
    )
    raw = {
        "model": "llama-3.1-8b",
        "fleet": {"gpu": "l40s", "tp": 1},
        "engine": {"max_num_seqs": 128, "max_num_batched_tokens": 2048},
    }
    truth = {"mfu": 0.5, "mbu": 0.62}
    made = simulate(parse_config({**raw, "roofline": {"gpu_overrides": {"l40s": truth}}}), trace, measure_capacity=False)
    write_requests_log(tmp_path, made, {})
    cal = calibrate_from_log(read_run_log(tmp_path), raw)
    assert cal.fit_requests == cal.held_out_requests == 200
    for p, v in truth.items():
        assert cal.after[p] == pytest.approx(v, rel=5e-3), p
    for part in ("fit", "held_out"):
        assert abs(cal.error(part, "before", "e2e")) > 0.2  # the defaults are far off ...
        for m in ("ttft", "tpot", "e2e"):
            assert abs(cal.error(part, "after", m)) < 5e-3, (part, m)  # ... the fitted values are not


@pytest.mark.slow
def test_calibrated_on_the_real_runs_first_half_its_second_half_is_within_six_percent(tmp_path):
    """The issue's goal is 3%. It held (+2.1% each) until the replay held back, under async scheduling, the seats and
    blocks finishing requests give back for a step (as vLLM's scheduler does): now +3.6 / +5.2 / +3.8% (TTFT / TPOT /
    E2E), where the uncalibrated defaults read +2.8 / +3.8 / +2.9%; with the frontend latency fitted too (89 ms here,
    against a minute's queueing) +2.9 / +4.4 / +3.1%. This bounds the regression, not the goal."""
    res = CliRunner().invoke(app, ["calibrate", str(RUN), "--json", "--out", str(tmp_path / "cal.yaml")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["fit_requests"] == 150 and data["held_out_requests"] == 150
    held = {r["metric"]: r["error"] for r in data["errors"]["held_out"]["after"] if r["stat"] == "mean"}
    assert all(abs(held[m]) < 0.06 for m in ("ttft", "tpot", "e2e")), held
    assert "rtx-4090" in (tmp_path / "cal.yaml").read_text() and set(data["fitted"]) == {"mfu", "mbu", "frontend_latency_s"}
    # (a run queued for a minute leaves the frontend latency barely identifiable: whatever it is, it is in the block)
    assert data["roofline"]["frontend_latency_s"] == pytest.approx(data["fitted"]["frontend_latency_s"], rel=1e-5)


def test_the_cli_replays_a_csv_log_on_a_scenario_file(tmp_path):
    """A CSV log (ms, mapped columns) of a run fleetsim made, replayed with `--scenario` on the same scenario file:
    every error is 0; without a scenario or meta.json the command says what it needs."""
    import yaml

    trace = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 0.5, 1.0, 4.0], "prompt_tokens": [500, 2000, 100, 800],
                                         "output_tokens": [50, 200, 2, 90]}))  # fmt: skip
    raw = {"model": "llama-3.1-8b", "fleet": {"gpu": "rtx-4090", "tp": 1}, "engine": {"max_num_batched_tokens": 1024}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    r = simulate(parse_config(raw), trace, measure_capacity=False).requests
    pd.DataFrame(
        {
            "t": r["arrival_at_s"] * 1e3 + 5_000,
            "in": r["prompt_tokens"],
            "out": r["output_tokens"],
            "first": (r["first_token_at_s"] - r["arrival_at_s"]) * 1e3,
            "total": (r["completed_at_s"] - r["arrival_at_s"]) * 1e3,
        }
    ).to_csv(tmp_path / "log.csv", index=False)
    cols = "arrival=t,prompt=in,output=out,ttft=first,e2e=total"
    args = ["validate", str(tmp_path / "log.csv"), "--columns", cols, "--time-unit", "ms", "--json"]
    res = CliRunner().invoke(app, [*args, "--scenario", str(tmp_path / "s.yaml")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["layout"] == "csv" and data["time_series"] is None and data["kv_blocks"]["logged"] is None
    assert all(abs(m["error"]) < 1e-9 for m in data["metrics"]), data["metrics"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "no meta.json beside the log; pass --scenario" in res.output


def test_the_real_dp2_ep_moe_run_is_replayed_in_lock_step_within_ten_percent_on_decode():
    """Qwen3-30B-A3B as DP 2 + EP on two RTX PRO 6000 over PCIe (benchmarks/e2e/README.md): its two ranks a lock-step
    group, the MoE layers' tokens all-gathered (vLLM's default exchange) at NCCL's default bus bandwidth. TPOT and E2E
    within 10% uncalibrated (7-8% fast today, as the TP 2 run on the same box; 11-12% at the tuned 40 GB/s); TTFT is
    the overloaded run's queue and is not bounded here."""
    run = RUN.parent / "rtxpro6000-qwen3-30b-a3b-dp2-ep"
    cmp = validate(read_run_log(run), kv_blocks="computed")
    for metric in ("tpot", "e2e"):
        assert abs(cmp.error(metric)) < 0.10, (metric, cmp.error(metric))


def test_the_real_tp2_pcie_run_is_replayed_within_thirteen_percent():
    """Qwen3-32B at TP 2 on two RTX PRO 6000 Server Edition over PCIe (benchmarks/e2e/README.md): its all-reduces at
    NCCL's default bus bandwidth (22.2 GB/s, the catalog) put every mean within 13% (-12 / -9 / -10% today); at the
    ~40 GB/s of tuned NCCL the replay read -24 / -16 / -19%, so this bounds the link the catalog gives the card. (It
    read -11 / -8 / -9% before the defaults were refitted with NCCL's measured NVLink bus bandwidths: the refit's
    higher generic mfu and overlap, which took the one-GPU run on this card from +6% to +2%, apply to both.)"""
    run = RUN.parent / "rtxpro6000-qwen3-32b-tp2"
    cmp = validate(read_run_log(run), kv_blocks="computed")
    for metric in ("ttft", "tpot", "e2e"):
        assert abs(cmp.error(metric)) < 0.13, (metric, cmp.error(metric))


def test_the_real_a100_tp8_run_prefills_at_nccls_bus_bandwidth():
    """Llama-3.3-70B at TP 8 on A100-40GB over NVLink (benchmarks/e2e/README.md): decode within 3%; TTFT, set by
    prefills whose all-reduces carry tens of MB, within 18% (-16% today, with the engine loop's measured host time) at
    NCCL's measured 150 GB/s bus bandwidth. At the datasheet's 300 GB/s a direction it reads 4 points lower: this bounds
    the figure the catalog gives the link."""
    run = RUN.parent / "a100-40gb-llama-3.3-70b-tp8-qps1"
    cmp = validate(read_run_log(run), kv_blocks="computed")
    assert abs(cmp.error("tpot")) < 0.03 and abs(cmp.error("e2e")) < 0.03, (cmp.error("tpot"), cmp.error("e2e"))
    assert -0.18 < cmp.error("ttft") < 0, cmp.error("ttft")
    log = read_run_log(run)
    raw, _ = scenario_from_meta(log.meta)
    raw["roofline"] = {**(raw.get("roofline") or {}), "gpu_overrides": {"a100-40gb": {"allreduce_gb_per_s": 300}}}
    datasheet = validate(log, raw)
    assert datasheet.error("ttft") < cmp.error("ttft") - 0.04, (datasheet.error("ttft"), cmp.error("ttft"))


def run_folder(tmp_path: Path, meta_edit) -> Path:
    """The real RTX 4090 run's first 20 requests with its meta.json edited by `meta_edit(meta)`."""
    folder = tmp_path / "run"
    folder.mkdir()
    lines = (RUN / "requests.jsonl").read_text().splitlines()[:20]
    (folder / "requests.jsonl").write_text("\n".join(lines) + "\n")
    meta = json.loads((RUN / "meta.json").read_text())
    meta_edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _set(path: str, value):
    def edit(meta):
        *parents, key = path.split(".")
        d = meta
        for p in parents:
            d = d.setdefault(p, {})
        d[key] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _set("engine_kwargs.tensor_parallel_size", "two"),
            r"engine_kwargs.tensor_parallel_size: must be a whole number >= 1 \(got 'two'\)",
        ),
        (
            _set("engine_kwargs.tensor_parallel_size", 0),
            r"engine_kwargs.tensor_parallel_size: must be a whole number >= 1 \(got 0\)",
        ),
        (_set("engine_kwargs.tensor_parallel_size", 1.9), r"tensor_parallel_size: must be a whole number >= 1 \(got 1.9\)"),
        (_set("engine_kwargs.max_num_seqs", [2]), r"engine_kwargs.max_num_seqs: must be a whole number"),
        (_set("engine_kwargs", [1]), r"meta.json engine_kwargs: must be a JSON object \(got \[1\]\)"),
        (_set("hardware", [1]), r"meta.json hardware: must be a JSON object"),
        (_set("kv_cache.gpu_memory_utilization", "x"), r"kv_cache.gpu_memory_utilization: must be in \(0, 1\] \(got 'x'\)"),
        (_set("kv_cache.block_size", 0), r"kv_cache.block_size: must be a whole number >= 1 \(got 0\)"),
        (_set("engine_kwargs.enable_expert_parallel", "false"), r"enable_expert_parallel: must be true or false \(got 'false'\)"),
        (_set("engine_kwargs.async_scheduling", "false"), r"engine_kwargs.async_scheduling: must be true or false"),
        (_set("tick_seconds", "x"), r"meta.json tick_seconds: must be in \[0.001, 3600\] seconds \(got 'x'\)"),
        (
            _set("engine_kwargs.kv_cache_dtype", "fp3"),
            r"meta.json engine_kwargs.kv_cache_dtype: not a KV cache type .* \(got 'fp3'\)",
        ),
        (
            lambda meta: (_set("engine_kwargs.tensor_parallel_size", 3)(meta), _set("hardware.device_count", 3)(meta)),
            r"the scenario replayed from .*meta.json: fleet.tp: tp=3 must divide",
        ),
        (
            _set("engine_kwargs.tensor_parallel_size", 2),
            r"meta.json hardware.device_count: 1 GPUs, fewer than the layout takes \(.* = 2 x 1 x 1 = 2\)",
        ),
    ],
)
def test_a_badly_typed_meta_json_field_is_named_in_one_line(tmp_path, edit, message):
    folder = run_folder(tmp_path, edit)
    for command in ("validate", "calibrate"):
        res = CliRunner().invoke(app, [command, str(folder)])
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert __import__("re").search(message, res.output), res.output


def test_json_nested_too_deep_or_with_a_huge_number_is_a_one_line_error(tmp_path):
    folder = run_folder(tmp_path, lambda meta: None)
    (folder / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    res = CliRunner().invoke(app, ["validate", str(folder)])
    assert res.exit_code == 2 and "meta.json: unreadable JSON: nested too deep" in res.output, res.output
    (folder / "meta.json").write_text((RUN / "meta.json").read_text())
    (folder / "requests.jsonl").write_text('{"input_toks": ' + "9" * 5000 + "}\n")
    res = CliRunner().invoke(app, ["validate", str(folder)])
    assert res.exit_code == 2 and "requests.jsonl line 1: unreadable JSON" in res.output, res.output


def test_a_scenario_given_to_validate_is_checked_before_its_fleet_is_replaced(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "model: llama-3.1-8b\nfleet: {gpu: rtx-4090, autoscaler: {policy: hpa, min_replicas: 5, max_replicas: 2}}\n"
    )
    res = CliRunner().invoke(app, ["validate", str(RUN), "--scenario", str(tmp_path / "s.yaml")])
    assert (
        res.exit_code == 2 and f"{tmp_path / 's.yaml'}: fleet.autoscaler.hpa: min_replicas must be <= max_replicas" in res.output
    )


def test_calibrating_a_run_log_refuses_fix_but_of_the_frontend_latency():
    res = CliRunner().invoke(app, ["calibrate", str(RUN), "--fix", "mfu"])
    assert res.exit_code == 2 and "a run log's calibration fits mfu, mbu and frontend_latency_s" in res.output
    res = CliRunner().invoke(app, ["calibrate", str(RUN), "--fix", "frontend_latency_s,mbu"])
    assert res.exit_code == 2 and "--fix holds only the last" in res.output


def test_a_request_logged_twice_is_refused_and_failed_ones_are_counted_aloud(tmp_path):
    """An id on two lines is one request counted twice (refused, both lines named); a request with no token (failed or
    aborted) is left out, and the first line says how many were."""
    rows = (RUN / "requests.jsonl").read_text().splitlines()
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "requests.jsonl").write_text("\n".join([rows[0], rows[1], rows[0]]) + "\n")
    with pytest.raises(FleetsimError, match=r"requests\.jsonl line 3 request_id: 'bench-0' is also on line 1"):
        read_run_log(twice)
    failed = tmp_path / "failed"
    failed.mkdir()
    rec = json.loads(rows[1]) | {"first_token_ts": None, "last_token_ts": None}
    (failed / "requests.jsonl").write_text("\n".join([rows[0], json.dumps(rec), *rows[2:]]) + "\n")
    (failed / "meta.json").write_text((RUN / "meta.json").read_text())
    r = CliRunner().invoke(app, ["validate", str(failed)])
    assert r.exit_code == 0, r.output
    assert f"fleetsim validate: {len(rows) - 1} requests from" in r.stdout
    assert "(requests; 1 left out: no token (failed or aborted))" in r.stdout.splitlines()[0]


def test_a_bad_meta_json_is_named_by_its_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.jsonl").write_text((RUN / "requests.jsonl").read_text())
    meta = json.loads((RUN / "meta.json").read_text())
    meta["kv_cache"]["block_size"] = "x"
    (run / "meta.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(app, ["validate", str(run)])
    assert (
        r.exit_code == 2
        and r.stderr == f"error: {run / 'meta.json'} kv_cache.block_size: must be a whole number >= 1 (got 'x')\n"
    )


def test_a_bench_list_of_the_wrong_length_says_its_length(tmp_path):
    bench = tmp_path / "bench.json"
    n = 4
    data = {
        "input_lens": [10] * n,
        "output_lens": [5] * 6,
        "ttfts": [0.1] * n,
        "itls": [[0.01] * 4] * n,
        "start_times": [0.0, 0.1, 0.2, 0.3],
    }
    bench.write_text(json.dumps(data))
    with pytest.raises(
        FleetsimError,
        match=r"bench\.json output_lens: must be a list of 4 entries, one per request like input_lens \(got '6 entries'\)",
    ):
        read_run_log(bench)


def test_a_bench_request_ending_after_the_benchmark_is_refused(tmp_path):
    """A TTFT of 10^6 s in a 4.6 s benchmark was compared as if real."""
    bench = tmp_path / "bench.json"
    data = {
        "duration": 4.6,
        "input_lens": [10, 10],
        "output_lens": [3, 3],
        "ttfts": [0.1, 1e6],
        "itls": [[0.01, 0.01], [0.01, 0.01]],
        "start_times": [100.0, 101.0],
    }
    bench.write_text(json.dumps(data))
    with pytest.raises(FleetsimError, match=r"bench\.json ttfts\[1\]: the request ends 1,000,001\.020 s after the first send"):
        read_run_log(bench)
    data["ttfts"][1] = 0.2
    bench.write_text(json.dumps(data))
    assert len(read_run_log(bench).trace) == 2


def test_a_scenario_of_another_model_is_noted_as_a_what_if():
    """The 8B run replayed on the 70B default scenario reported +260% TTFT with no word that the models differ."""
    r = CliRunner().invoke(app, ["validate", str(RUN), "--scenario", str(RUN.parents[2] / "configs" / "default.yaml")])
    assert r.exit_code == 0, r.output
    assert "note: model: the scenario replays llama-2-70b, the run served meta-llama/Llama-3.1-8B (meta.json)" in r.stdout
    same = CliRunner().invoke(app, ["validate", str(RUN)])
    assert "note: model:" not in same.stdout
