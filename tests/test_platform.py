"""Several models on one GPU budget (`sim.run.platform`): deployments built as fleets of their own on one clock, the
trace split by its `model` column or by shares, the budget never passed and handed out by priority, records per
deployment plus the platform's totals, and every bad input one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import simpy
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.results.platform import PlatformResult
from sim.run.fleet.supply import GpuBudget
from sim.run.platform import assign, simulate_platform
from sim.run.simulate import simulate
from sim.scenario.config import deployment_scenario, parse_config
from sim.workload import load_trace, validate_frame
from tests.test_engine_equivalence import assert_same_requests

runner = CliRunner()

TRACE = {
    "arrivals": {"process": "poisson", "rate_per_s": 4},
    "duration_s": 60,
    "prompt_tokens": {"dist": "uniform", "low": 50, "high": 900},
    "output_tokens": {"dist": "uniform", "low": 5, "high": 120},
}


def platform(**over) -> dict:
    raw = {
        "name": "p",
        "seed": 4,
        "trace": TRACE,
        "fleet": {"gpu": "h100", "autoscaler": {"policy": "fixed", "replicas": 1}, "lifecycle": {"cold_start_s": 20}},
        "pricing": {"usd_per_gpu_hour": 2.0, "billing_granularity_s": 0},
        "deployments": [
            {"name": "chat", "model": "llama-3.1-8b", "share": 0.6, "fleet": {"tp": 2}},
            {"name": "small", "model": "qwen2.5-7b", "share": 0.4},
        ],
    }
    raw.update(over)
    return raw


def held_over_time(result: PlatformResult, gpu: str) -> int:
    """The most GPUs of `gpu` the deployments' replicas held at once, from their records (a release before a launch
    at the same instant, as the budget hands a freed GPU on)."""
    events = []
    for run in result.deployments.values():
        r = run.replicas
        mine = r[r["gpu"] == gpu]
        for start, end, tp in zip(mine["provision_at_s"], mine["end_at_s"], mine["tp"], strict=True):
            events += [(float(start), int(tp)), (float(end), -int(tp))]
    held = peak = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        held += d
        peak = max(peak, held)
    return peak


def test_one_deployment_is_the_plain_run():
    """A platform of one deployment (no random draw in the fleet) gives the plain scenario's records exactly."""
    plain = {k: v for k, v in platform().items() if k != "deployments"} | {"model": "llama-3.1-8b"}
    plain["fleet"] = {**plain["fleet"], "tp": 2}
    alone = simulate(parse_config(plain), measure_capacity=False)
    one = platform(deployments=[{"name": "chat", "model": "llama-3.1-8b", "share": 1.0, "fleet": {"tp": 2}}])
    got = simulate_platform(parse_config(one), measure_capacity=False).deployments["chat"]
    assert_same_requests(got, alone)
    a, b = got.summary(), alone.summary()
    for key in ("completed", "billed_gpu_seconds", "cost_usd", "p99_ttft_ms", "mean_tpot_ms", "n_steps"):
        assert a[key] == b[key], key


def test_the_trace_is_split_by_model_and_every_request_is_accounted_for():
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.arange(30) * 0.5,
                "prompt_tokens": np.full(30, 100),
                "output_tokens": np.full(30, 10),
                "model": ["gpt-a", "gpt-b", "other-b"] * 10,
            }
        )
    )
    raw = platform(
        deployments=[
            {"name": "a", "model": "llama-3.1-8b", "serves": ["gpt-a"]},
            {"name": "b", "model": "qwen2.5-7b", "serves": ["gpt-b", "other-b"]},
        ]
    )
    sc = parse_config(raw)
    assert assign(sc, frame).tolist() == [0, 1, 1] * 10
    result = simulate_platform(sc, frame, measure_capacity=False)
    s = result.summary()
    assert [len(r.requests) for r in result.deployments.values()] == [10, 20]
    assert s["requests"] == 30 and s["completed"] == 30
    assert s["total_output_tokens"] == 300
    # each deployment's requests at the instants the trace gave them (one clock)
    assert result.deployments["a"].requests["arrival_at_s"].tolist() == (np.arange(0, 30, 3) * 0.5).tolist()
    # totals are the deployments' sums; $/1K the platform's cost over its tokens
    per = s["deployments"]
    assert s["cost_usd"] == pytest.approx(per["a"]["cost_usd"] + per["b"]["cost_usd"])
    assert s["usd_per_1k_tokens"] == pytest.approx(s["cost_usd"] / (s["total_input_tokens"] + s["total_output_tokens"]) * 1000)
    # one GPU each (TP 1, fixed) from 0 s to the platform's end (granularity 0): billed by hand
    assert s["billed_gpu_seconds"] == pytest.approx(2 * s["duration"])


def test_shares_draw_the_deployment_of_each_request_deterministically():
    sc = parse_config(platform())
    frame = validate_frame(pd.DataFrame({"arrival_at_s": np.arange(4000.0), "prompt_tokens": 10, "output_tokens": 2}))
    which = assign(sc, frame)
    assert np.array_equal(which, assign(sc, frame))
    assert abs(np.mean(which == 0) - 0.6) < 0.03  # the shares, within sampling error (n = 4,000)


def test_the_budget_is_never_passed_and_holds_launches_back():
    auto = {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": 4,
        "min_replicas": 1,
        "max_replicas": 4,
        "interval_s": 5,
        "scale_down_stabilization_s": 30,
    }
    burst = {**TRACE, "arrivals": {"process": "poisson", "rate_per_s": 40}, "duration_s": 120}
    raw = platform(trace=burst, fleet={**platform()["fleet"], "autoscaler": auto}, gpu_budget={"h100-sxm": 5})
    result = simulate_platform(parse_config(raw), measure_capacity=False)
    s = result.summary()
    assert s["completed"] == s["requests"]
    assert held_over_time(result, "h100-sxm") <= 5
    assert s["gpu_budget"]["h100-sxm"] == {"gpus": 5, "peak_held": 5}
    assert sum(s["launches_held_back"].values()) > 0
    # without the budget the same load takes more GPUs at once (the budget bound something)
    free = simulate_platform(parse_config({**raw, "gpu_budget": {}}), measure_capacity=False)
    assert held_over_time(free, "h100-sxm") > 5


def test_freed_gpus_go_to_the_highest_priority_waiting_first():
    """hog gives a GPU back at 100 s; low asked for one at 30 s, high at 60 s: high gets it."""

    def sched(*table):
        return {
            "policy": "scheduled",
            "min_replicas": 1,
            "max_replicas": 2,
            "interval_s": 10,
            "table": [{"at_s": t, "replicas": n} for t, n in table],
        }

    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 150.0, 150.0, 150.0],
                "prompt_tokens": 100,
                "output_tokens": 5,
                "model": ["hog", "hog", "low", "high"],
            }
        )
    )
    raw = platform(
        fleet={"gpu": "h100", "lifecycle": {"cold_start_s": 10, "start": "warm"}},
        gpu_budget={"h100": 4},
        deployments=[
            {"name": "hog", "model": "qwen2.5-7b", "fleet": {"autoscaler": {**sched((0, 2), (95, 1)), "initial_replicas": 2}}},
            {"name": "low", "model": "qwen2.5-7b", "fleet": {"autoscaler": sched((0, 1), (25, 2))}},
            {"name": "high", "model": "qwen2.5-7b", "priority": 5, "fleet": {"autoscaler": sched((0, 1), (55, 2))}},
        ],
    )
    result = simulate_platform(parse_config(raw), frame, measure_capacity=False)
    launched = {name: sorted(r.replicas["provision_at_s"].tolist()) for name, r in result.deployments.items()}
    assert launched["high"] == [0.0, 100.0]  # the GPU hog freed at its 100 s tick, though low waited longer
    assert launched["low"] == [0.0]  # still waiting: nothing freed after
    assert launched["hog"] == [0.0, 0.0]
    assert result.summary()["launches_held_back"]["low"] >= 1


def test_budget_waiters_are_tried_by_priority_then_by_arrival():
    env = simpy.Environment()
    budget = GpuBudget(env, {"h100-sxm": 2})
    budget.take("h100-sxm", 2)
    calls = []
    budget.wait(lambda: calls.append("a0"), 0)
    budget.wait(lambda: calls.append("b3"), 3)
    budget.wait(lambda: calls.append("c0"), 0)
    budget.wait(lambda: calls.append("d3"), 3)
    assert not budget.room("h100-sxm", 1) and budget.room("l40s", 99)  # (a type not in the budget: no limit)
    budget.give_back("h100-sxm", 1)
    env.run()
    assert calls == ["b3", "d3", "a0", "c0"]
    assert budget.held["h100-sxm"] == 1 and budget.peak["h100-sxm"] == 2


def test_runs_are_deterministic_and_deployments_draw_apart():
    raw = platform(fleet={**platform()["fleet"], "router": "power_of_two", "autoscaler": {"policy": "fixed", "replicas": 2}})
    a = simulate_platform(parse_config(raw), measure_capacity=False).summary()
    b = simulate_platform(parse_config(raw), measure_capacity=False).summary()
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    from sim.streams import RunStreams

    x, y = RunStreams(4, domain="chat").generator("router"), RunStreams(4, domain="small").generator("router")
    assert x.random() != y.random()


def test_deployment_blocks_merge_over_the_scenario():
    sc = parse_config(
        platform(
            engine={"max_num_seqs": 64, "policy": "chunked"},
            deployments=[
                {"name": "a", "model": "llama-3.1-8b", "share": 1, "engine": {"max_num_seqs": 8}, "slo": {"ttft_ms": 500}},
                {"name": "b", "model": "qwen2.5-7b", "share": 1, "fleet": {"gpu": "l40s", "router": "round_robin"}},
            ],
        )
    )
    a, b = deployment_scenario(sc, 0), deployment_scenario(sc, 1)
    assert (a.engine.max_num_seqs, a.engine.policy, a.slo.ttft_ms, a.fleet.gpu) == (8, "chunked", 500, "h100")
    assert (b.engine.max_num_seqs, b.fleet.gpu, b.fleet.router, b.fleet.lifecycle.cold_start_s) == (64, "l40s", "round_robin", 20)
    assert (a.name, b.model) == ("a", "qwen2.5-7b")


def test_a_deployment_no_request_is_for_is_billed_all_the_same():
    frame = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 5.0], "prompt_tokens": 10, "output_tokens": 3, "model": "chat"}))
    result = simulate_platform(parse_config(platform()), frame, measure_capacity=False)
    s = result.summary()
    assert s["deployments"]["small"]["completed"] == 0 and s["completed"] == 2
    assert s["deployments"]["small"]["billed_gpu_seconds"] == pytest.approx(s["duration"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gpu_budget": {"h100": 2}}, "gpu_budget.h100-sxm: 2 GPUs cannot hold deployment 'chat'"),
        ({"gpu_budget": {"h200x": 4}}, "gpu_budget.h200x: unknown gpu 'h200x'"),
        ({"gpu_budget": {"h100": 0}}, "gpu_budget.h100: must be an integer in [1,"),
        # (the two counts were added up: a budget of 6, not 4 or 2)
        ({"gpu_budget": {"h100": 4, "H100-SXM": 2}}, "GPU 'h100-sxm' is given twice (as 'H100-SXM' and 'h100')"),
        # (a budget of a GPU nobody runs on was ignored: the deployments ran without one)
        ({"gpu_budget": {"a100-80gb": 8}}, "gpu_budget.a100-80gb: no deployment runs on a100-80gb (they run on h100-sxm)"),
        (
            {"deployments": [{"name": "a", "model": "llama-3.1-8b"}, {"name": "b", "model": "qwen2.5-7b", "serves": ["a"]}]},
            "the model name 'a' is served by both 'a' and 'b'",
        ),
        (
            {"deployments": [{"name": "a", "model": "llama-3.1-8b", "share": 1}, {"name": "b", "model": "qwen2.5-7b"}]},
            "give every deployment a share, or none",
        ),
        (
            {"deployments": [{"name": "a", "model": "llama-3.1-8b"}, {"name": "b", "model": "qwen2.5-7b"}]},
            "the trace has no `model` column",
        ),
        (
            {"deployments": [{"name": "a", "model": "llama-3.1-70b", "share": 1, "fleet": {"gpu": "l4"}}]},
            "deployments.0 (a):",
        ),
        (
            {"deployments": [{"name": "a", "model": "llama-3.1-8b", "share": 1, "fleet": {"tp": 3}}]},
            "deployments.0 (a): fleet.tp",
        ),
        ({"deployments": [{"name": "a b", "model": "llama-3.1-8b"}]}, "deployments[0].name"),
        ({"batch": {"jobs": []}}, "batch jobs on a platform of several deployments are not modelled"),
    ],
)
def test_bad_platforms_end_in_one_line(tmp_path, change, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(platform(**change)))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_request_for_a_model_no_deployment_serves_is_an_error(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,chat\n1,10,2,nobody\n")
    raw = platform(trace="t.csv", deployments=[{"name": "chat", "model": "llama-3.1-8b"}])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    r = runner.invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "request 1 is for model 'nobody', which no deployment serves (they serve: chat" in r.stderr
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,chat\n1,10,2,\n")
    r = runner.invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "request 1 names no model (its `model` is empty); the deployments serve: chat" in r.stderr
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,chat\n1,10,2," + "m" * 201 + "\n")
    r = runner.invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "t.csv line 3: model must be a name of at most 200 characters" in r.stderr


def test_burstgpt_models_are_read_as_the_model_column(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,100,20,120,Conversation log\n1,GPT-4,50,0,50,Conversation log\n2,GPT-4,80,30,110,API log\n"
    )
    frame = load_trace(path)
    assert frame["model"].tolist() == ["ChatGPT", "GPT-4"]  # (the failed request, 0 tokens out, dropped)


def test_cli_writes_a_platform_folder_that_report_reads_back(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(platform(gpu_budget={"h100": 3})))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(path), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert set(printed["deployments"]) == {"chat", "small"}
    assert (out / ".fleetsim-run").is_file() and (out / "deployments" / "chat" / "requests.parquet").is_file()
    again = runner.invoke(app, ["report", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == printed
    one = runner.invoke(app, ["report", str(out / "deployments" / "small"), "--json"])  # a deployment: a run folder
    assert one.exit_code == 0 and json.loads(one.stdout)["completed"] == printed["deployments"]["small"]["completed"]
    text = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert text.exit_code == 0 and "GPU budget h100-sxm (most held / GPUs):" in text.stdout
    with pytest.raises(FleetsimError, match="simulate_platform"):
        simulate(parse_config(platform()))


def test_model_names_of_digits_are_names(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,1\n1,10,2,2\n")
    frame = load_trace(tmp_path / "t.csv")
    assert frame["model"].tolist() == ["1", "2"]
    (tmp_path / "u.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,1.5\n1,10,2,2\n")
    with pytest.raises(FleetsimError, match=r"u\.csv line 2: model must be a name of at most 200 characters"):
        load_trace(tmp_path / "u.csv")
    # an empty cell names no model: a plain run, which reads no model, runs it
    (tmp_path / "v.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,model\n0,10,2,\n1,10,2,x\n")
    assert load_trace(tmp_path / "v.csv")["model"].tolist() == ["", "x"]


def test_the_platform_page_has_a_section_per_deployment_and_unique_ids(tmp_path):
    import re

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(platform(gpu_budget={"h100": 3})))
    page = tmp_path / "p.html"
    r = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    ids = re.findall(r' id="([^"]+)"', text)
    assert len(ids) == len(set(ids))
    assert {"deployment-chat", "deployment-small", "chat-summary", "small-states", "deployments", "budget"} <= set(ids)
    assert text.count("<h2>Deployment ") == 2 and 'href="#deployment-chat"' in text
    assert "GPUs held by each of 2 deployments" in text and "h100-sxm: 3 of 3" in text  # (the cluster's view, its budget)
    again = tmp_path / "q.html"
    assert runner.invoke(app, ["report", str(tmp_path / "run"), "--html", str(again)]).exit_code == 0
    assert again.read_text().count("<section") == 2


def test_platform_latency_is_over_every_request_together():
    result = simulate_platform(parse_config(platform()), measure_capacity=False)
    s = result.summary()
    per = s["deployments"]
    n = {k: d["completed"] for k, d in per.items()}
    mean = sum(per[k]["mean_ttft_ms"] * n[k] for k in per) / sum(n.values())
    assert s["mean_ttft_ms"] == pytest.approx(mean)
    assert min(d["p99_ttft_ms"] for d in per.values()) <= s["p99_ttft_ms"] <= max(d["p99_ttft_ms"] for d in per.values())
    itl = sum(per[k]["mean_itl_ms"] * result.deployments[k].itl.count for k in per) / sum(
        r.itl.count for r in result.deployments.values()
    )
    assert s["mean_itl_ms"] == pytest.approx(itl)
    one = simulate_platform(
        parse_config(platform(deployments=[platform()["deployments"][0] | {"share": 1.0}])), measure_capacity=False
    )
    alone = one.summary()
    for key in ("p99_ttft_ms", "median_tpot_ms", "p90_itl_ms", "p99_e2el_ms"):
        assert alone[key] == alone["deployments"]["chat"][key], key


def test_a_sweep_over_a_platform_reports_its_totals_and_each_deployment(tmp_path):
    base = tmp_path / "p.yaml"
    base.write_text(yaml.safe_dump(platform(gpu_budget={"h100": 3})))
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "p.yaml", "cross": {"deployments.1.share": [0.2, 0.6]}, "seeds": 1})
    )
    r = runner.invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet").sort_values("deployments.1.share")
    assert rows["error"].isna().all()
    assert rows["small.completed"].tolist()[0] < rows["small.completed"].tolist()[1]  # (the share drawn for it)
    assert (rows["completed"] == rows["chat.completed"] + rows["small.completed"]).all()
    assert rows["p99_ttft_ms"].notna().all() and rows["gpu_budget_h100-sxm"].notna().all()


def test_a_plan_of_a_platform_is_refused_in_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(platform()))
    plan = {
        "name": "x",
        "base": "p.yaml",
        "search": {"fleet.gpu": ["h100"]},
        "scale": {"path": "fleet.autoscaler.replicas", "from": 1, "to": 2},
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump({**plan, "slo": {"p99_ttft_ms": 2000}}))
    r = runner.invoke(app, ["plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "is a platform (deployments:); a plan sizes one fleet" in r.stderr


def test_a_higher_priority_launch_preempts_the_newest_lower_priority_replica():
    """Two H100s, both held by `low` (2 fixed replicas); a request for `high` (priority 5, preemption on, scaled to
    zero) at 100 s takes the GPU of low's newest replica at once; low's replacement waits until high lets it go."""
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 100.0, 100.5, 300.0],
                "prompt_tokens": 100,
                "output_tokens": [5, 5, 400, 5],
                "model": ["low", "high", "low", "low"],
            }
        )
    )
    kpa = {"policy": "kpa", "min_replicas": 0, "max_replicas": 1, "initial_replicas": 0, "stable_window_s": 6}
    raw = platform(
        fleet={"gpu": "h100", "lifecycle": {"cold_start_s": 10, "start": "warm"}},
        gpu_budget={"h100": 2},
        deployments=[
            {"name": "low", "model": "llama-3.1-8b", "fleet": {"autoscaler": {"policy": "fixed", "replicas": 2}}},
            {"name": "high", "model": "qwen2.5-7b", "priority": 5, "preemption": "lower_priority", "fleet": {"autoscaler": kpa}},
        ],
    )
    result = simulate_platform(parse_config(raw), frame, measure_capacity=False)
    low, high = result.deployments["low"].replicas, result.deployments["high"].replicas
    assert low["interrupted"].tolist()[:2] == ["", "preempted"]  # the newest of the two
    assert low["end_at_s"].iloc[1] == 100.0 and high["provision_at_s"].iloc[0] == 100.0
    assert high["ready_at_s"].iloc[0] == pytest.approx(110.0)
    replacement = low.iloc[2]  # launched when high gave its GPU back (scaled to zero)
    assert replacement["provision_at_s"] == pytest.approx(high["end_at_s"].iloc[0])
    s = result.summary()
    assert s["replicas_preempted"] == {"low": 1, "high": 0} and s["completed"] == 4
    assert s["gpu_budget"]["h100-sxm"]["peak_held"] == 2 and held_over_time(result, "h100-sxm") == 2
    # without preemption, high waits for a GPU that low never gives back: refused as a budget that can starve it
    never = {**raw, "deployments": [raw["deployments"][0], {**raw["deployments"][1], "preemption": "never"}]}
    with pytest.raises(FleetsimError, match="cannot hold deployment 'high'"):
        simulate_platform(parse_config(never), frame, measure_capacity=False)


def test_the_glossary_documents_the_platform_summary():
    from sim.results.platform import PLATFORM_KEYS
    from tests.test_core_records import glossary_names

    documented = glossary_names()
    missing = [k for k in PLATFORM_KEYS if k not in documented]
    assert not missing, missing


def test_what_in_a_platform_draws_from_the_seed():
    from sim.studies.determinism import seed_consumers

    drawn = seed_consumers(parse_config(platform(fleet={**platform()["fleet"], "router": "power_of_two"})))
    assert "deployments: shares (a deployment drawn for each request)" in drawn
    assert "deployments.0 (chat): fleet.router power_of_two" in drawn and "trace: a synthetic generator (arrivals)" in drawn
    by_model = platform(trace="t.csv", deployments=[{"name": "a", "model": "llama-3.1-8b"}])
    assert seed_consumers(parse_config(by_model)) == []  # (a trace file naming each request's model: nothing drawn)


def test_a_platform_run_with_a_progress_callback_ends_and_gives_the_same_records():
    """The progress loop waits on the platform's end by ticks (a nested SimPy condition would lose its callbacks)."""
    sc = parse_config(platform())
    ticks: list[float] = []
    with_progress = simulate_platform(sc, measure_capacity=False, progress=lambda now, horizon: ticks.append(now))
    plain = simulate_platform(sc, measure_capacity=False)
    assert ticks and with_progress.horizon_s == plain.horizon_s
    for name, run in plain.deployments.items():
        assert_same_requests(with_progress.deployments[name], run)
