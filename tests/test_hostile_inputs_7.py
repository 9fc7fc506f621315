"""Hostile inputs from a seventh fuzzing pass: a speculative engine whose token budget no decoder fits (the run spun
until the loop guard, then blamed the step times), an MoE fleet whose caps held part of a DP group (half a group
launched, billed and served), a CSV trace's deadlines read in the wrong time base, and messages naming the wrong rule.
Each now ends in one line naming the field, the rule and the value, exit code 2, and writes nothing (or, for the
deadlines, reads the file as its Parquet twin is read)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.workload.readers import load_trace
from tests.conftest import one_line_error

runner = CliRunner()
SMALL = {
    "model": "llama-3.1-8b",
    "trace": {
        "arrivals": {"process": "poisson", "rate_per_s": 2},
        "duration_s": 20,
        "prompt_tokens": {"dist": "fixed", "tokens": 200},
        "output_tokens": {"dist": "fixed", "tokens": 20},
    },
    "fleet": {"gpu": "h100-sxm", "tp": 1},
}


def _scenario(tmp_path: Path, **change: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SMALL | change))
    return path


def test_a_speculative_budget_smaller_than_a_verify_step_is_refused(tmp_path):
    """With 4 drafts a decoding sequence puts 5 tokens through a step: a budget of 4 scheduled no decoder ever, and
    the run went on for 20,000,000 simulated seconds before its guard blamed the replicas' speed."""
    spec = {"method": "ngram", "num_speculative_tokens": 4, "acceptance_rate": 0.9}
    path = _scenario(tmp_path, engine={"speculative": spec, "max_num_batched_tokens": 4})
    out = tmp_path / "run"
    one_line_error(
        ["run", str(path), "--out", str(out), "--no-progress"],
        "engine.max_num_batched_tokens: with speculative decoding a decoding sequence puts 1 + num_speculative_tokens "
        "= 5 tokens through each step; give at least 5 (got 4)",
    )
    assert not out.exists()
    ok = _scenario(tmp_path, engine={"speculative": spec, "max_num_batched_tokens": 5})
    assert runner.invoke(app, ["run", str(ok), "--out", str(tmp_path / "ok"), "--no-progress"]).exit_code == 0


MOE = SMALL | {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "tp": 2, "dp": 2}}


@pytest.mark.parametrize(
    ("fleet", "says"),
    [
        (
            {"max_gpus": 2},
            "fleet.max_gpus: an MoE model's DP ranks share its experts, so a fleet holds whole groups of fleet.dp = 2 ranks of fleet.tp = 2 GPUs; give a multiple of 4 GPUs (got 2)",
        ),
        ({"max_gpus": 6, "autoscaler": {"policy": "fixed", "replicas": 4}}, "give a multiple of 4 GPUs (got 6)"),
        (
            {"capacity": {"on_demand": {"max_replicas": 1}}},
            "fleet.capacity: its classes' max_replicas and fleet.reserved_replicas hold at most 1 replicas at once, part of a group of fleet.dp = 2 ranks",
        ),
        (
            {
                "capacity": {"on_demand": {"max_replicas": 2}, "spot": {"max_replicas": 1, "reclaim_at_s": [5]}},
                "autoscaler": {"policy": "fixed", "replicas": 4},
            },
            "hold at most 3 replicas at once",
        ),
    ],
)
def test_an_moe_fleets_caps_hold_whole_dp_groups(tmp_path, fleet, says):
    """A cap of fewer ranks than a group launched part of it: `fleet.max_gpus: 2` with dp 2 x tp 2 ran one rank of a
    two-rank group, served every request and billed half the GPUs (a sweep priced that point at half the cost)."""
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(MOE | {"fleet": MOE["fleet"] | {"autoscaler": {"policy": "fixed", "replicas": 2}} | fleet}))
    # (a reserved seat and an on-demand one hold a group between them: the total binds, not each class)
    out = tmp_path / "run"
    one_line_error(["run", str(path), "--out", str(out), "--no-progress"], says)
    assert not out.exists()


def test_an_moe_dedicated_batch_pool_holds_whole_dp_groups(tmp_path):
    jobs = [
        {
            "job_id": "j",
            "requests": 10,
            "prompt_tokens": {"dist": "fixed", "tokens": 100},
            "output_tokens": {"dist": "fixed", "tokens": 10},
            "deadline_s": 600,
        }
    ]
    fleet = MOE["fleet"] | {"autoscaler": {"policy": "fixed", "replicas": 2}}
    for key, value in (("replicas", 1), ("max_replicas", 3)):
        path = tmp_path / f"{key}.yaml"
        dedicated = {"replicas": 2, key: value} if key == "max_replicas" else {key: value}
        path.write_text(
            yaml.safe_dump(MOE | {"fleet": fleet, "batch": {"fleet": "dedicated", "dedicated": dedicated, "jobs": jobs}})
        )
        one_line_error(
            ["run", str(path), "--out", str(tmp_path / key), "--no-progress"],
            f"batch.dedicated.{key}: an MoE model's DP ranks share its experts, so a pool holds whole groups of fleet.dp = 2 ranks; give a multiple of 2 (got {value})",
        )


def test_a_csv_traces_deadlines_are_read_in_the_files_time_base_as_parquets_are(tmp_path):
    """The CSV reader re-based the arrivals to the first, then checked and re-based the deadlines against the re-based
    arrivals: a deadline before its request's arrival was accepted, and a deadline of 150 s on an arrival at 100 s
    kept 150 (the Parquet reader: 50)."""
    rows = pd.DataFrame(
        {
            "arrival_at_s": [100.0, 101.0],
            "prompt_tokens": [10, 10],
            "output_tokens": [5, 5],
            "deadline_at_s": [150.0, 400.0],
            "klass": ["batch", "interactive"],
        }
    )
    rows.to_csv(tmp_path / "d.csv", index=False)
    rows.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv, from_parquet = load_trace(tmp_path / "d.csv"), load_trace(tmp_path / "d.parquet")
    assert from_csv["deadline_at_s"].tolist() == from_parquet["deadline_at_s"].tolist() == [50.0, 300.0]
    assert from_csv["arrival_at_s"].tolist() == [0.0, 1.0]
    (tmp_path / "bad.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,deadline_at_s,klass\n5,10,5,1,batch\n")
    one_line_error(
        ["trace", "inspect", str(tmp_path / "bad.csv")],
        "line 2: deadline_at_s must be >= arrival_at_s (got 1 with arrival_at_s 5)",
    )
    rows.assign(deadline_at_s=[1.0, 400.0]).to_parquet(tmp_path / "bad.parquet", index=False)
    one_line_error(
        ["trace", "inspect", str(tmp_path / "bad.parquet")], "deadline_at_s must be >= arrival_at_s (got 1 with arrival_at_s 100)"
    )


def test_a_config_json_with_a_zero_intermediate_size_says_so(tmp_path):
    cfg = {
        "hidden_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "vocab_size": 1000,
        "intermediate_size": 0,
        "max_position_embeddings": 4096,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    path = _scenario(tmp_path, model=str(tmp_path / "config.json"))
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"], "field 'intermediate_size' must be >= 1 (got 0)"
    )


def test_two_deployments_of_one_name_are_named_as_such(tmp_path):
    """The served-name check ran first and said "the model name 'a' is served by both 'a' and 'a'"."""
    deployments = [{"name": "a", "model": "llama-3.1-8b"}, {"name": "a", "model": "qwen3-8b"}]
    path = _scenario(tmp_path, deployments=deployments)
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"],
        "deployments.1.name: each deployment needs a name of its own ('a' is taken)",
    )


# --- run logs (`fleetsim validate`, `fleetsim calibrate`) ------------------------------------------------------------
RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e" / "rtx4090-llama-3.1-8b"


def _run_copy(tmp_path: Path, *, n: int = 40, lines=None, meta=None, series: bool = True) -> Path:
    """The shared RTX 4090 run's first `n` requests (each line edited by `lines(i, row)`), its meta.json (edited by
    `meta`) and time series."""
    folder = tmp_path / "run"
    folder.mkdir(parents=True)
    rows = [json.loads(s) for s in (RUN / "requests.jsonl").read_text().splitlines()[:n]]
    if lines is not None:
        rows = [lines(i, r) or r for i, r in enumerate(rows)]
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = json.loads((RUN / "meta.json").read_text())
    if meta is not None:
        meta(m)
    (folder / "meta.json").write_text(json.dumps(m))
    if series:
        (folder / "timeseries.csv").write_text((RUN / "timeseries.csv").read_text())
    return folder


def test_a_run_shorter_than_a_tick_is_compared_without_its_time_series(tmp_path):
    """One request served in 10 ms: the replay's timeline had no sample and the comparison indexed it (IndexError)."""
    one = {"input_toks": 5, "output_toks": 1, "queued_ts": 1.0, "first_token_ts": 1.01, "last_token_ts": 1.01}
    folder = _run_copy(tmp_path, n=1, lines=lambda i, r: one)
    res = runner.invoke(app, ["validate", str(folder)])
    assert res.exit_code == 0 and "Traceback" not in res.output and "TTFT" in res.output, res.output


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        (lambda m: m.update(tick_seconds=10**400), "meta.json tick_seconds: must be in [0.001, 3600] seconds"),
        (lambda m: m.update(tick_seconds=5000), "meta.json tick_seconds: must be in [0.001, 3600] seconds (got 5000)"),
        (
            lambda m: m["engine_kwargs"].update(max_num_batched_tokens=1),
            "meta.json: max_num_batched_tokens must be >= max_num_seqs, as vLLM requires (got 1 and 256)",
        ),
    ],
)
def test_a_meta_json_vllm_would_not_have_run_is_refused(tmp_path, meta, says):
    one_line_error(["validate", str(_run_copy(tmp_path, meta=meta))], says)


def test_integers_no_float_holds_are_refused_in_one_line(tmp_path):
    """A 401-digit token count or timestamp raised OverflowError (math.isfinite, pandas' to_numeric) with a traceback."""
    big = 10**400
    folder = _run_copy(tmp_path, lines=lambda i, r: r | {"input_toks": big} if i == 3 else r)
    one_line_error(["validate", str(folder)], "line 4 input_toks: must be a finite number")
    csv = tmp_path / "big.csv"
    csv.write_text(f"arrival,prompt,output,ttft,e2e\n0,10,5,0.1,0.5\n1,{big},5,0.1,0.5\n")
    one_line_error(
        ["validate", str(csv), "--scenario", str(_scenario(tmp_path))], "line 3 column 'prompt': must be a whole number >= 1"
    )
    folder2 = tmp_path / "ts"
    folder2.mkdir()
    for f in ("requests.jsonl", "meta.json"):
        (folder2 / f).write_text((folder / f).read_text().replace(str(big), "10"))
    (folder2 / "timeseries.csv").write_text(f"t,prompt_throughput,gen_throughput,running,waiting,kv_cache_pct\n1,0,0,{big},0,0\n")
    one_line_error(["validate", str(folder2)], "line 2 column 'running': must be a number")


def test_a_csv_row_longer_than_its_header_is_refused_not_shifted(tmp_path):
    """pandas took a long row's extra leading fields as an index and shifted the rest: `1,2,3,1,5,6,7` under five
    columns was replayed as TTFT 6 s and E2E 7 s."""
    sc = str(_scenario(tmp_path))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("arrival,prompt,output,ttft,e2e\n1,2,3,1,5,6,7\n2,20,5,0.1,0.5\n")
    one_line_error(["validate", str(ragged), "--scenario", sc], "a row has more fields than the header's 5")
    (tmp_path / "later.csv").write_text("arrival,prompt,output,ttft,e2e\n0,20,5,0.1,0.5\n1,2,3,1,5,6,7\n")  # (pandas: its own)
    one_line_error(["validate", str(tmp_path / "later.csv"), "--scenario", sc], "Expected 5 fields in line 3, saw 7")
    trailing = tmp_path / "trailing.csv"  # (a comma after every row's last field is read as the row)
    trailing.write_text("arrival,prompt,output,ttft,e2e,\n0,20,5,0.1,0.5,\n1,30,10,0.1,0.9,\n")
    assert runner.invoke(app, ["validate", str(trailing), "--scenario", sc]).exit_code == 0


def test_a_replay_that_completes_nothing_is_an_error_not_an_empty_table(tmp_path):
    """vLLM's logged block count of 1 held no request: the comparison printed no row and exited 0, --plot drew it."""
    folder = _run_copy(tmp_path, meta=lambda m: m["kv_cache"].update(num_gpu_blocks=1))
    plot = tmp_path / "p.png"
    one_line_error(
        ["validate", str(folder), "--kv-blocks", "logged", "--plot", str(plot)],
        "no request completed in the replay, so there is nothing to compare",
    )
    assert not plot.exists()


def test_one_request_on_another_clock_names_the_log(tmp_path):
    """A queued_ts on the epoch's clock stretched the replay to decades; the error blamed fleet.timeline_interval_s."""

    def epoch(i: int, r: dict) -> dict:
        return {k: v + 9e11 if k.endswith("_ts") else v for k, v in r.items()} if i == 39 else r

    folder = _run_copy(tmp_path, lines=epoch)
    one_line_error(["validate", str(folder)], "requests.jsonl: request 40 (of 40) ends")  # (past meta.json's run times)


def test_validate_and_calibrate_options_name_themselves(tmp_path):
    folder = str(_run_copy(tmp_path))
    one_line_error(["validate", folder, "--set", "fleet.tp=abc"], "--set (over meta.json's scenario): fleet.tp")
    one_line_error(["validate", folder, "--columns", "arrival=a"], "--columns: for the csv layout only")
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,output,ttft,e2e\n0,20,5,0.1,0.5\n")
    one_line_error(["validate", str(csv), "--columns", "arrival=a,prompt=b,arrival=b"], "--columns: field 'arrival' given twice")
    one_line_error(["calibrate", folder, "--layout", "zzz"], "--layout: must be one of")
    one_line_error(
        ["calibrate", folder, "--gpu", "h100-sxm"], "--gpu: a run log's model, GPU and TP come from its meta.json or --scenario"
    )
    one_line_error(["calibrate", folder, "--tp", "-5"], "--tp: a run log's model")


def test_a_bench_results_gaps_summing_past_the_time_bound_are_refused(tmp_path):
    bench = {
        "input_lens": [100, 120],
        "output_lens": [5, 6],
        "ttfts": [0.05, 0.06],
        "itls": [[0.01] * 4, [9e11, 9e11]],
        "start_times": [0.0, 0.5],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    one_line_error(
        ["validate", str(path), "--scenario", str(_scenario(tmp_path))], "itls[1]: must sum with ttfts[1] to an E2E within"
    )


def test_calibrate_out_writes_a_held_out_error_it_cannot_define_as_a_dash(tmp_path):
    """Held-out requests of one output token have no TPOT: `--out` formatted None and crashed (TypeError)."""
    folder = _run_copy(
        tmp_path, n=24, lines=lambda i, r: r | {"output_toks": 1, "last_token_ts": r["first_token_ts"]} if i >= 12 else r
    )
    out = tmp_path / "fit.yaml"
    res = runner.invoke(app, ["calibrate", str(folder), "--out", str(out)])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "tpot -" in out.read_text()
    no_tpot = _run_copy(tmp_path / "b", n=24, lines=lambda i, r: r | {"output_toks": 1, "last_token_ts": r["first_token_ts"]})
    one_line_error(["calibrate", str(no_tpot)], "has more than one output token: no TPOT to fit on")


def test_a_platform_budget_must_hold_what_each_deployment_needs_to_serve_at_all(tmp_path):
    """The budget check let a deployment count its decode replica as "one replica": a disaggregated deployment whose
    prefill pool scales from zero could hold its decode replica and never a prefill one while another held the rest,
    so its requests waited until the loop guard blamed the step times (found by the random platform combinations:
    an MoE deployment's fixed groups held 8 of 13 GPUs). Each pool needs a replica, an MoE model's DP ranks a group."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,100,10,a\n1,100,10,b\n")
    hpa = {"policy": "hpa", "metric": "outstanding_per_replica", "target": 4, "min_replicas": 0, "max_replicas": 2}
    a = {
        "name": "a",
        "model": "llama-3.1-8b",
        "fleet": {
            "mode": "disaggregated",
            "prefill": {"autoscaler": hpa},
            "decode": {"autoscaler": {"policy": "fixed", "replicas": 1}},
        },
    }
    b = {"name": "b", "model": "llama-3.1-8b", "priority": 1, "fleet": {"autoscaler": {"policy": "fixed", "replicas": 3}}}
    raw = {"trace": str(trace), "fleet": {"gpu": "a100-80gb"}, "gpu_budget": {"a100-80gb": 4}, "deployments": [a, b]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    one_line_error(
        ["run", str(path), "--out", str(out), "--no-progress", "--no-capacity"],
        "gpu_budget.a100-80gb: 4 GPUs cannot hold deployment 'a''s 2 while the others hold their minimum 3",
    )
    assert not out.exists()
    path.write_text(yaml.safe_dump(raw | {"gpu_budget": {"a100-80gb": 5}}))
    assert runner.invoke(app, ["run", str(path), "--out", str(out), "--no-progress", "--no-capacity"]).exit_code == 0
    moe = {
        "name": "a",
        "model": "qwen3-30b-a3b",
        "fleet": {"dp": 2, "autoscaler": hpa | {"max_replicas": 4}},
    }  # (a group: 2 GPUs)
    path.write_text(yaml.safe_dump(raw | {"deployments": [moe, b]}))
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "moe"), "--no-progress", "--no-capacity"],
        "gpu_budget.a100-80gb: 4 GPUs cannot hold deployment 'a''s 2 while the others hold their minimum 3",
    )


# --- studies and reports (`sweep`, `plan`, `report`, `roofline`) ------------------------------------------------------
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _sweep(tmp_path: Path, **change: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": str(CONFIGS / "default.yaml"), "set": {"trace.end_s": 20}} | change))
    return path


def test_a_stored_point_that_cannot_be_read_names_itself_on_resume(tmp_path):
    """A corrupt row file in points/ raised pyarrow's ArrowInvalid with a traceback when the sweep resumed."""
    sweep, out = _sweep(tmp_path), tmp_path / "out"
    assert runner.invoke(app, ["sweep", str(sweep), "--out", str(out), "--no-progress"]).exit_code == 0
    point = next((out / "points").glob("*.parquet"))
    point.write_text("garbage")
    one_line_error(["sweep", str(sweep), "--out", str(out), "--no-progress"], f"{point}: a stored point that cannot be read")


def test_an_output_folder_the_file_system_refuses_ends_in_one_line(tmp_path):
    """/proc/x passes the permission check and fails at mkdir: a FileNotFoundError traceback in run, sweep and plan."""
    one_line_error(["run", str(CONFIGS / "default.yaml"), "--out", "/proc/x", "--no-progress"], "/proc/x: cannot write there")
    one_line_error(["sweep", str(_sweep(tmp_path)), "--out", "/proc/x", "--no-progress"], "--out /proc/x: cannot write there")


def test_a_study_name_is_a_name_not_a_path(tmp_path):
    """`name: ../../evil` wrote the sweep's results two folders above sweeps/ (an absolute name: anywhere)."""
    one_line_error(["sweep", str(_sweep(tmp_path, name="../../evil")), "--no-progress"], "name: must be a plain name")


def test_plan_manifests_do_not_replace_the_plans_own_files(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text((CONFIGS / "default.yaml").read_text().replace("../traces/", str(CONFIGS.parent / "traces") + "/"))
    plan = tmp_path / "p.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "base": "base.yaml",
                "scale": {"path": "fleet.autoscaler.replicas", "from": 1, "to": 2},
                "slo": {"p99_ttft_ms": 2000},
            }
        )
    )
    for target in (base, plan):
        one_line_error(["plan", str(plan), "--out", str(tmp_path / "out"), "--manifests", str(target)], "--manifests")
        assert "apiVersion" not in target.read_text()


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda m: m.update(tp=0), "tp: Input should be greater than or equal to 1 (got 0)"),
        (lambda m: m.update(tp="2"), "tp: Input should be a valid integer"),
        (lambda m: m.update(usd_per_gpu_hour=-1), "usd_per_gpu_hour: Input should be greater than or equal to 0"),
        (lambda m: m.update(horizon_s=float("nan")), "horizon_s: Input should be a finite number"),
        (lambda m: m["scenario"]["fleet"].update(reserved_replicas=-1), "scenario.fleet.reserved_replicas"),
        (lambda m: m["scenario"]["pricing"].update(billing_granularity_s=-1), "scenario.pricing.billing_granularity_s"),
    ],
)
def test_a_run_folders_impossible_meta_figures_are_refused_by_the_report(tmp_path, edit, says):
    """`report` checked meta.json's types, not its ranges: tp 0 billed 0 GPU-hours, a price of -1 cost -1.95 USD, a
    NaN horizon printed nan, and the text "2" for tp passed (the checked copy was thrown away)."""
    run = tmp_path / "run"
    assert runner.invoke(app, ["run", str(CONFIGS / "default.yaml"), "--out", str(run), "--no-progress"]).exit_code == 0
    meta = json.loads((run / "meta.json").read_text())
    edit(meta)
    (run / "meta.json").write_text(json.dumps(meta))
    one_line_error(["report", str(run)], says)


def test_roofline_tables_bound_their_lengths_and_batches():
    args = ["roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "2"]
    one_line_error([*args, "--prefill-lengths", "99999999999999999999999"], "--prefill-lengths values must be <= 10,000,000,000")
    one_line_error([*args, "--batches", "1,99999999999999999999999999"], "--batches values must be <= 10,000,000,000")


GPU = "  bf16_tflops: 99\n  hbm_gb: 80\n  hbm_bw_gb_per_s: 2000\n  interconnect: NVLink\n  interconnect_gb_per_s: 600\n"


def test_a_user_gpu_catalog_names_and_aliases_are_unambiguous(tmp_path):
    """A user GPU named as a bundled alias (`a100`) was listed but unreachable (the alias won); two user GPUs sharing an
    alias resolved it to the last; an empty catalog was "not a mapping (got dict)"."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("a100:\n" + GPU.replace("99", "999"))
    res = runner.invoke(
        app, ["roofline", "--model", "llama-2-70b", "--gpu", "a100", "--tp", "2", "--gpu-catalog", str(mine), "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["gpu"] == "a100", res.output
    twice = tmp_path / "twice.yaml"
    twice.write_text("g1:\n" + GPU + "  aliases: [zz]\ng2:\n" + GPU + "  aliases: [zz]\n")
    one_line_error(["gpus", "--gpu-catalog", str(twice)], "g2.aliases: 'zz' is already g1's alias")
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    one_line_error(["gpus", "--gpu-catalog", str(empty)], "a GPU catalog must name at least one GPU")


def test_a_study_with_a_missing_trace_says_so_before_running(tmp_path):
    """`sweep --trace /missing` printed the trace note, made the folder and failed every point (two lines)."""
    out = tmp_path / "out"
    one_line_error(
        ["sweep", str(_sweep(tmp_path)), "--trace", str(tmp_path / "missing.csv"), "--out", str(out), "--no-progress"],
        "missing.csv: no such trace file",
    )
    assert not out.exists()


def test_a_disaggregated_pools_autoscaler_is_named_with_its_pool(tmp_path):
    """The pool's error read "fleet.prefill: fleet.autoscaler.replicas: ..." where the field is fleet.prefill.autoscaler."""
    fixed = {"policy": "fixed", "replicas": 3}
    raw = MOE | {
        "fleet": MOE["fleet"]
        | {"mode": "disaggregated", "prefill": {"autoscaler": fixed}, "decode": {"autoscaler": fixed | {"replicas": 2}}}
    }
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"],
        "fleet.prefill.autoscaler.replicas: an MoE model's DP ranks",
    )
