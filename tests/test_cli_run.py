import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_default_scenario_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "runs" / "default"
    r = run("run", REPO / "configs" / "default.yaml", "--out", out)
    assert r.exit_code == 0, r.output
    assert "Simulation Result" in r.stdout and "Mean TTFT (ms):" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "completed",
        "duration",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p90_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "mean_itl_ms",
        "p99_itl_ms",
        "mean_e2el_ms",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "request_goodput",
        "rejected",
        "cost_usd",
        "usd_per_1k_tokens",
    ):
        assert key in summary, key
    requests = pd.read_parquet(out / "requests.parquet")
    assert list(requests.columns[:10]) == [
        "request_id",
        "arrival_at_s",
        "scheduled_at_s",
        "first_token_at_s",
        "completed_at_s",
        "prompt_tokens",
        "output_tokens",
        "n_preemptions",
        "replica_id",
        "status",
    ]
    assert len(requests) == summary["completed"] + summary["rejected"]
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert Path(resolved["trace"]["file"]).is_absolute()
    again = run("run", out / "config.resolved.yaml", "--out", tmp_path / "again", "--json")
    assert json.loads(again.stdout)["mean_ttft_ms"] == summary["mean_ttft_ms"]  # deterministic, re-runnable


def test_trace_and_seed_options(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": "llama-3.1-8b",
                "fleet": {"gpu": "h100-sxm"},
                "trace": {
                    "arrivals": {"process": "poisson", "rate_per_s": 5},
                    "prompt_tokens": {"dist": "fixed", "tokens": 200},
                    "output_tokens": {"dist": "lognormal", "mean": 100, "cv": 1},
                    "duration_s": 60,
                },
            }
        )
    )
    a = json.loads(run("run", cfg, "--out", tmp_path / "a", "--json", "--seed", "1").stdout)
    b = json.loads(run("run", cfg, "--out", tmp_path / "b", "--json", "--seed", "1").stdout)
    c = json.loads(run("run", cfg, "--out", tmp_path / "c", "--json", "--seed", "2").stdout)
    assert a == b  # same seed, same summary (this was or-ed with the next check, so it could not fail alone)
    assert a["completed"] != c["completed"] or a["mean_e2el_ms"] != c["mean_e2el_ms"]
    d = json.loads(run("run", cfg, "--out", tmp_path / "d", "--json", "--trace", REPO / "traces" / "azure2023_code.csv").stdout)
    assert d["completed"] + d["rejected"] == 8819


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"engine": {"block_size": 24}}, "engine.block_size: must be a power of two (got 24)"),
        ({"engine": {"max_num_seqs": 0}}, "engine.max_num_seqs: Input should be greater than or equal to 1 (got 0)"),
        ({"engine": {"max_num_batched_tokens": -5}}, "engine.max_num_batched_tokens: Input should be greater than or equal to 1"),
        ({"engine": {"step_time": {"kind": "constant"}}}, "kind constant needs decode_step_s"),
        ({"trace": {"file": "nope.csv"}}, "nope.csv: no such trace file"),
        ({"trace": None}, "no trace: give `trace:` in the scenario"),
        ({"slo": {"ttft_ms": 0}}, "slo.ttft_ms: Input should be greater than 0"),
    ],
)
def test_bad_scenarios_fail_with_one_line_and_write_nothing(tmp_path, body, message):
    base = {"model": "llama-2-70b", "fleet": {"gpu": "a100-80gb", "tp": 2}, "trace": str(REPO / "traces" / "azure2023_conv.csv")}
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(base | body))
    out = tmp_path / "out"
    r = run("run", cfg, "--out", out)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and message in r.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_malformed_trace_option(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,5,1\n1,5,nan\n")
    r = run("run", REPO / "configs" / "default.yaml", "--trace", bad, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "t.csv line 3: output_tokens must be an integer (got 'nan')" in r.stderr


def test_goodput_option_like_vllm(tmp_path):
    base = ["run", REPO / "configs" / "default.yaml", "--json"]
    strict = json.loads(run(*base, "--out", tmp_path / "a", "--goodput", "ttft:500 tpot:100").stdout)
    loose = json.loads(run(*base, "--out", tmp_path / "b", "--goodput", "ttft:60000").stdout)
    assert 0 < strict["request_goodput"] < loose["request_goodput"] <= loose["request_throughput"]
    bad = run(*base, "--out", tmp_path / "c", "--goodput", "itl:5")
    assert bad.exit_code == 2 and "--goodput takes METRIC:MS pairs" in bad.stderr


def test_python_api():
    from sim import load_config, load_trace, simulate

    result = simulate(
        load_config(REPO / "configs" / "default.yaml"),
        load_trace(REPO / "traces" / "azure2023_conv.csv").head(50),
        base_dir=REPO / "configs",
    )
    assert result.summary()["completed"] + result.summary()["rejected"] == 50
    assert len(result.requests) == 50


def test_progress_callback_reaches_the_end_and_changes_nothing():
    from sim import load_config, simulate

    seen = []
    scenario = load_config(REPO / "configs" / "startup-autoscale.yaml")
    with_bar = simulate(scenario, progress=lambda now, horizon: seen.append((now, horizon)), measure_capacity=False)
    without = simulate(scenario, measure_capacity=False)
    assert len(seen) > 50 and seen[-1][0] == with_bar.horizon_s
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen))
    assert with_bar.requests.equals(without.requests)


def test_plot_option_writes_a_png(tmp_path):
    png = tmp_path / "fleet.png"
    r = run("run", REPO / "configs" / "startup-autoscale.yaml", "--out", tmp_path / "o", "--plot", png)
    assert r.exit_code == 0, r.output
    assert "Replicas launched / most ready:" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    for name in ("summary.json", "requests.parquet", "timeline.parquet", "replicas.parquet", "config.resolved.yaml"):
        assert (tmp_path / "o" / name).exists()
    timeline = pd.read_parquet(tmp_path / "o" / "timeline.parquet")
    assert timeline["replicas_ready"].max() > 2  # it scaled out


def test_prefill_first_rejects_only_the_prompts_over_its_budget(tmp_path):
    """vLLM v0 ignores a prompt longer than max_num_batched_tokens and serves the rest: so does the
    simulator, with the reason on each rejected request (it used to refuse the whole scenario)."""
    base = {
        "model": "llama-2-70b",
        "fleet": {"gpu": "a100-80gb", "tp": 2},
        "engine": {"policy": "prefill_first", "max_num_batched_tokens": 1000},
        "trace": str(REPO / "traces" / "azure2023_conv.csv"),
    }
    cfg = tmp_path / "pf.yaml"
    cfg.write_text(yaml.safe_dump(base))
    r = run("run", cfg, "--out", tmp_path / "out", "--no-capacity")
    assert r.exit_code == 0, r.output
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    fits_context = requests["prompt_tokens"] + requests["output_tokens"] <= 4096
    over = fits_context & (requests["prompt_tokens"] > 1000)
    assert over.sum() > 0
    assert (requests.loc[over, "status"] == "rejected").all()
    assert requests.loc[over, "reject_reason"].str.contains("exceeds max_num_batched_tokens=1000").all()
    served = requests.loc[fits_context & ~over]
    dropped = served["status"] != "completed"  # preempted, and their recompute outgrew the budget: vLLM v0 drops those too
    assert (
        served.loc[dropped, "reject_reason"].str.startswith("preempted or handed back by a lost replica, and its recompute").all()
    )
    assert dropped.sum() < 0.01 * len(served)


def test_the_summary_names_the_fleet_not_just_one_replica(tmp_path):
    """A multi-replica run says how many replicas of what (and the autoscaler), not "on 2x <gpu>"."""
    r = run("run", REPO / "configs" / "startup-autoscale.yaml", "--out", tmp_path / "s", "--no-capacity", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "startup-autoscale: llama-2-70b, hpa 1-16 replicas of 2x a100-80gb, chunked" in r.stdout


def test_report_writes_the_timeline_as_openmetrics(tmp_path):
    """`fleetsim report RUN_DIR --openmetrics FILE`: the timeline under vLLM's metric names, parsed by
    prometheus_client's OpenMetrics parser, every sample equal to timeline.parquet at epoch + t."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    out = tmp_path / "run"
    assert run("run", REPO / "configs" / "startup-autoscale.yaml", "--out", out, "--no-capacity", "--no-progress").exit_code == 0
    prom = tmp_path / "run.om"
    r = run("report", out, "--openmetrics", prom, "--epoch", "1700000000")
    assert r.exit_code == 0, r.output
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    timeline = pd.read_parquet(out / "timeline.parquet")
    for name, column in (("vllm:num_requests_running", "running"), ("vllm:num_requests_waiting", "waiting")):
        samples = families[name].samples
        assert [s.value for s in samples] == timeline[column].astype(float).tolist()
        assert [float(s.timestamp) for s in samples] == (1_700_000_000 + timeline["t_s"]).tolist()
        assert samples[0].labels == {"scenario": "startup-autoscale", "model": "llama-2-70b", "gpu": "a100-80gb"}
    kv = [s.value for s in families["vllm:kv_cache_usage_perc"].samples]
    assert np.allclose(kv, timeline["kv_use"], equal_nan=True)
    ready = [s.value for s in families["fleetsim:replicas"].samples if s.labels["state"] == "ready"]
    assert ready == timeline["replicas_ready"].astype(float).tolist()
    bad = run("report", out, "--openmetrics", tmp_path / "nowhere" / "x.om")
    assert bad.exit_code != 0 and "does not exist" in bad.output


def test_run_plot_carries_its_numbers(tmp_path):
    """The --plot figure says which run it is and its key figures, in readable type, with every legend
    beside the data rather than on it."""
    from sim.results.plots import run_figure
    from sim.results.result import SimResult

    out = tmp_path / "run"
    png = tmp_path / "run.png"
    r = run("run", REPO / "configs" / "startup-autoscale.yaml", "--out", out, "--no-progress", "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = SimResult.load(out)
    s = result.summary()
    fig = run_figure(result, s)
    title = fig._suptitle.get_text()
    assert title.startswith("startup-autoscale: llama-2-70b, hpa 1-16 replicas of 2x a100-80gb")
    assert f"p99 TTFT {s['p99_ttft_ms'] / 1000:.2f} s" in title and f"${s['usd_per_1k_tokens']:.5f} per 1K tokens" in title
    assert f"throughput utilization {s['throughput_utilization']:.0%}" in title
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes, not over the data
        assert ax.title.get_fontsize() >= 12 and ax.xaxis.label.get_fontsize() >= 11


def test_set_overrides_a_scenario_field_and_names_a_bad_one(tmp_path):
    """`--set PATH=VALUE` (VALUE read as YAML) changes the scenario before it is validated; a wrong path or
    value is one line naming it, exit 2, nothing written."""
    out = tmp_path / "set"
    r = run(
        "run", REPO / "configs" / "default.yaml", "--out", out, "--no-progress", "--no-capacity",
        "--set", "fleet.gpu=h100-sxm", "--set", "engine.max_num_seqs=64", "--set", "slo={ttft_ms: 500}",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["fleet"]["gpu"] == "h100-sxm" and resolved["engine"]["max_num_seqs"] == 64
    assert resolved["slo"]["ttft_ms"] == 500 and resolved["slo"]["tpot_ms"] is None
    assert "1 replica of 2x h100-sxm" in r.stdout
    for bad, message in (
        ("engine.max_num_seq=5", "(with --set): engine.max_num_seq: unknown key"),
        ("engine.max_num_seqs=-1", "engine.max_num_seqs: Input should be greater than or equal to 1"),
        ("nokey", "give PATH=VALUE"),
        ("fleet..gpu=x", "give PATH=VALUE"),
        ("model.name=x", "model is a value ('llama-2-70b'), not a block"),
        ("fleet.gpu=[unclosed", "--set fleet.gpu: the value '[unclosed' is"),
    ):
        r = run("run", REPO / "configs" / "default.yaml", "--out", tmp_path / "bad", "--set", bad)
        assert r.exit_code == 2, (bad, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, (bad, r.output)
        assert not (tmp_path / "bad").exists()
    roof = run("roofline", "--config", REPO / "configs" / "default.yaml", "--set", "fleet.tp=4", "--json")
    assert roof.exit_code == 0 and json.loads(roof.stdout)["tp"] == 4
    assert run("roofline", "--model", "llama-2-7b", "--gpu", "l4", "--set", "fleet.tp=1").exit_code == 2


def test_the_summary_shows_slo_attainment_and_the_prefix_cache(tmp_path):
    r = run("run", REPO / "configs" / "default.yaml", "--set", "trace.end_s=600", "--out", tmp_path / "a", "--no-capacity")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert f"Within the SLO (share):                 {summary['slo_attainment']:.3f}" in r.stdout
    assert "Prefix cache" not in r.stdout and "warning" not in r.stderr
    r = run("run", REPO / "configs" / "prefix-cache.yaml", "--set", "trace.end_s=300", "--out", tmp_path / "b", "--no-capacity")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    rates = f"{s['prefix_hit_rate_tokens']:.1%} / {s['prefix_hit_rate_blocks']:.1%}"
    assert f"Hit rate, tokens / blocks:              {rates}" in r.stdout
    assert f"Prefill tokens saved:                   {s['prefill_tokens_saved']:,}" in r.stdout
    assert s["prefill_tokens_saved"] > 0 and "warning" not in r.stderr


def test_prefix_caching_on_a_trace_without_prefix_ids_warns_once(tmp_path):
    """It silently ran uncached: now one warning line on stderr, not an error (the run is a valid uncached run)."""
    args = ["--set", "engine.prefix_caching=true", "--set", "trace.end_s=300", "--no-capacity"]
    r = run("run", REPO / "configs" / "default.yaml", *args, "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("warning: engine.prefix_caching is on, but the trace has no")
    assert json.loads(r.stdout)["completed"] > 0  # stdout is the JSON alone


@pytest.mark.parametrize(
    ("command", "what", "reader"),
    [
        (["run", "sweep-gpus.yaml"], "is a sweep file, not a scenario", "fleetsim sweep"),
        (["run", "plan-llama70b.yaml"], "is a plan file, not a scenario", "fleetsim plan"),
        (["sweep", "default.yaml"], "is a scenario, not a sweep file", "fleetsim run"),
        (["plan", "sweep-gpus.yaml"], "is a sweep file, not a plan file", "fleetsim sweep"),
    ],
)
def test_a_file_given_to_the_wrong_command_says_which_reads_it(tmp_path, command, what, reader):
    r = run(command[0], REPO / "configs" / command[1], "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and what in r.stderr
    assert f"`{reader} {REPO / 'configs' / command[1]}` reads it" in r.stderr and not (tmp_path / "o").exists()


def test_report_on_a_sweep_or_plan_folder_says_what_it_is(tmp_path):
    base = "model: llama-3.1-8b\nfleet: {gpu: h100-sxm}\ntrace: {arrivals: {process: poisson, rate_per_s: 2}, n_requests: 20,\n"
    base += "  prompt_tokens: {dist: fixed, tokens: 100}, output_tokens: {dist: fixed, tokens: 10}}\n"
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "s.yaml").write_text("name: s\nbase: base.yaml\ncross: {engine.max_num_seqs: [4]}\n")
    assert run("sweep", tmp_path / "s.yaml", "--out", tmp_path / "sw", "--no-progress").exit_code == 0
    r = run("report", tmp_path / "sw")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"is the folder of sweep 's' ({tmp_path / 's.yaml'}), not a run folder" in r.stderr
    assert f"`fleetsim sweep {tmp_path / 's.yaml'} --out {tmp_path / 'sw'}` reprints its tables" in r.stderr
