"""`fleetsim plan`: roofline screen, bisection against the grid, ranking, verification, infeasible plans."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.studies.plan import copy_plan, load_plan, plan_fleet
from sim.studies.sweep import Point

runner = CliRunner()

BASE = """\
model: llama-3.1-8b
fleet: {gpu: a100-80gb, tp: 1, autoscaler: {policy: fixed, replicas: 1}}
engine: {max_num_seqs: 32}
trace:
  arrivals: {process: poisson, rate_per_s: 15}
  n_requests: 800
  prompt_tokens: {dist: uniform, low: 200, high: 2000}
  output_tokens: {dist: uniform, low: 50, high: 300}
slo: {ttft_ms: 500, tpot_ms: 50}
"""


def plan_file(tmp_path, slo="{p99_ttft_ms: 1000, p99_tpot_ms: 60}", search="fleet.gpu: [a100-80gb, h100-sxm, l4]", extra=""):
    (tmp_path / "base.yaml").write_text(BASE)
    text = (
        "base: base.yaml\nset: {pricing.usd_per_gpu_hour: null}\n"
        f"search:\n  {search}\n"
        "scale: {path: fleet.autoscaler.replicas, from: 1, to: 16}\n"
        f"slo: {slo}\nseeds: 2\n{extra}"
    )
    (tmp_path / "plan.yaml").write_text(text)
    return tmp_path / "plan.yaml"


def summary(outcome):
    def count(r):
        n = r.get("fleet.autoscaler.replicas")
        return None if n is None or n != n else int(n)

    return [(r["group"], r["status"], count(r)) for r in outcome.ranking.to_dict(orient="records")]


@pytest.mark.parametrize("slo", ["{p99_ttft_ms: 1000, p99_tpot_ms: 60}", "{p99_ttft_ms: 220}", "{attainment: 0.9}"])
def test_bisection_finds_the_grids_choice(tmp_path, slo):
    p = load_plan(plan_file(tmp_path, slo=slo))
    bisect = plan_fleet(p, tmp_path / "b", workers=2)
    grid = plan_fleet(copy_plan(p, method="grid"), tmp_path / "g", workers=2)
    assert summary(bisect) == summary(grid)
    assert bisect.pick is not None and bisect.pick["group"] == grid.pick["group"]
    assert len(bisect.evaluated) < len(grid.evaluated)  # and it simulated less


def test_the_roofline_screen_and_the_capacity_bound(tmp_path):
    p = load_plan(plan_file(tmp_path, search="fleet.gpu: [a100-80gb, l4]\n  model: [llama-3.1-8b, llama-2-70b]"))
    out = plan_fleet(p, tmp_path / "o")
    by = {(r["fleet.gpu"], r["model"]): r for r in out.ranking.to_dict(orient="records")}
    assert by[("l4", "llama-3.1-8b")]["status"] == "ruled out"
    assert "one decode step at batch 1 takes" in by[("l4", "llama-3.1-8b")]["why"]
    assert "does not fit on 1x a100-80gb" in by[("a100-80gb", "llama-2-70b")]["why"]
    ok = by[("a100-80gb", "llama-3.1-8b")]
    assert ok["status"] == "meets" and ok["fleet.autoscaler.replicas"] >= ok["min_replicas"] >= 2
    # nothing below the capacity bound was simulated in the search; the verification shows the count below fails
    assert out.evaluated["fleet.autoscaler.replicas"].min() >= ok["min_replicas"]
    below = [v for v in out.verification if v["expected"] == "fails"]
    assert below and all(v["confirmed"] for v in out.verification)


def test_the_pick_is_the_cheapest_passing_configuration_and_is_verified(tmp_path):
    out = plan_fleet(load_plan(plan_file(tmp_path)), tmp_path / "o", workers=2)
    meets = out.ranking[out.ranking["status"] == "meets"]
    assert out.pick["usd_per_1k_tokens_mean"] == meets["usd_per_1k_tokens_mean"].min()
    assert out.verification[0]["expected"] == "meets" and out.verification[0]["confirmed"]
    assert out.verification[1]["fleet.autoscaler.replicas"] == out.pick["fleet.autoscaler.replicas"] - 1
    assert out.verification[1]["observed"] == "fails"
    # every evaluated configuration that meets the SLO costs at least the pick
    ev = out.evaluated
    assert (ev[ev["meets"]]["usd_per_1k_tokens_mean"] >= out.pick["usd_per_1k_tokens_mean"] - 1e-12).all()
    # the frontier is non-dominated: cheaper means slower along it
    fr = out.frontier
    assert fr["usd_per_1k_tokens_mean"].is_monotonic_increasing and fr["p99_ttft_ms_mean"].is_monotonic_decreasing


def test_an_infeasible_plan_says_so_with_the_closest_miss(tmp_path):
    path = plan_file(tmp_path, slo="{p99_ttft_ms: 46}", search="fleet.gpu: [a100-80gb, h100-sxm]")
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o"), "--manifests", str(tmp_path / "m.yaml")])
    assert r.exit_code == 0, r.output
    assert "no pick to write (nothing written)" in r.stderr and not (tmp_path / "m.yaml").exists()
    assert "no configuration meets the SLO" in r.stdout and "closest miss: fleet.gpu=h100-sxm" in r.stdout
    assert "x the target" in r.stdout and "ruled out: one p99-length prompt" in r.stdout  # the A100 never simulated


def test_a_plan_ruled_out_entirely_by_the_roofline_simulates_nothing(tmp_path):
    path = plan_file(tmp_path, slo="{p99_ttft_ms: 30}", search="fleet.gpu: [a100-80gb, h100-sxm]")
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "every configuration was ruled out before simulation" in r.stdout
    assert not list((tmp_path / "o" / "points").iterdir())


def test_cli_prints_ranking_frontier_and_pick_and_resumes(tmp_path):
    path = plan_file(tmp_path)
    out = tmp_path / "o"
    r = runner.invoke(app, ["plan", str(path), "--out", str(out), "--workers", "2", "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    assert "  rank  fleet.gpu  replicas  " in r.stdout and "$/1K tokens" in r.stdout and "p99 TPOT (ms)" in r.stdout
    assert "pick: fleet.gpu=" in r.stdout
    assert "Pareto frontier" in r.stdout and "  fleet.gpu  replicas  $/1K tokens  p99 TTFT (ms)" in r.stdout  # as a table
    assert max(len(line) for line in r.stdout.splitlines() if not line.startswith("wrote ")) <= 100
    progress = [line for line in r.stderr.splitlines() if "runs done" in line]
    assert progress[0].startswith("  simulating") and "; 0 of at most " in progress[0]
    assert all("s left" in line for line in progress[1:]) and len(progress) >= 2
    assert "(confirmed;" in r.stdout and (tmp_path / "p.png").stat().st_size > 10_000
    files = sorted(p.name for p in (out / "points").iterdir())
    j = json.loads(runner.invoke(app, ["plan", str(path), "--out", str(out), "--json"]).stdout)
    assert sorted(p.name for p in (out / "points").iterdir()) == files  # the rerun simulated nothing new
    assert j["pick"]["fleet.gpu"] in ("a100-80gb", "h100-sxm") and j["verification"][0]["confirmed"]
    # the pick as manifests (a rerun: nothing new simulated): the GPU selected, the replica count, the TP's GPUs
    m = tmp_path / "pick.yaml"
    r = runner.invoke(app, ["plan", str(path), "--out", str(out), "--manifests", str(m)])
    assert r.exit_code == 0, r.output
    deployment = next(d for d in yaml.safe_load_all(m.read_text()) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    from sim.scenario.importer import GFD_PRODUCT

    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == GFD_PRODUCT[j["pick"]["fleet.gpu"]]
    assert deployment["spec"]["replicas"] == j["pick"]["fleet.autoscaler.replicas"]
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o2"), "--set", "trace.n_requests=400"])
    assert r.exit_code == 0 and "pick:" in r.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: base.yaml\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 4}\n", "slo"),
        ("base: base.yaml\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 4}\nslo: {}\n", "give at least one"),
        (
            "base: base.yaml\nsearch: {fleet.autoscaler.replicas: [1]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 4}\n"
            "slo: {p99_ttft_ms: 100}\n",
            "scale.path must not be a search axis",
        ),
        (
            "base: base.yaml\nsearch: {fleet.prefill_share: [0.25, 0.5]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 4}\n"
            "slo: {p99_ttft_ms: 100}\n",
            "search.fleet.prefill_share splits disaggregated fleets, and this plan searches none (fleet.mode is colocated)",
        ),
        (
            "base: base.yaml\nsearch: {fleet.gpuu: [h100-sxm]}\nscale: {path: fleet.autoscaler.replicas, from: 1, to: 4}\n"
            "slo: {p99_ttft_ms: 100}\n",
            "fleet.gpuu: unknown key",
        ),
        (
            "base: base.yaml\nscale: {path: fleet.autoscaler.replicas, from: 4, to: 1}\nslo: {p99_ttft_ms: 100}\n",
            "to must be >= from",
        ),
    ],
)
def test_a_bad_plan_is_one_line_and_exit_2(tmp_path, text, message):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "plan.yaml").write_text(text)
    with pytest.raises(FleetsimError) as info:
        load_plan(tmp_path / "plan.yaml")
    assert message in str(info.value)
    r = runner.invoke(app, ["plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and message in r.output


def test_a_deterministic_replay_runs_one_seed_and_words_its_confidence_honestly(tmp_path):
    """The base replays a trace file as it is: seeds: 3 would triple the work for identical answers, and 'new seeds'
    would replay the same requests."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    pd.DataFrame(
        {
            "arrival_at_s": np.cumsum(rng.exponential(1 / 15, 800)),
            "prompt_tokens": rng.integers(200, 2000, 800),
            "output_tokens": rng.integers(50, 300, 800),
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    path = plan_file(tmp_path)
    (tmp_path / "base.yaml").write_text(BASE.split("trace:")[0] + "trace: t.csv\nslo: {ttft_ms: 500, tpot_ms: 50}\n")
    (tmp_path / "plan.yaml").write_text(path.read_text().replace("seeds: 2", "seeds: 3"))
    p = load_plan(path)
    assert all(g.deterministic for g in p.groups)
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    runs = pd.read_parquet(tmp_path / "o" / "runs.parquet")
    assert (runs["seed"] == 0).all() and not runs.duplicated(["group", "fleet.autoscaler.replicas"]).any()
    said = " ".join(r.stdout.split())  # the prose is wrapped at 100 columns
    assert "one deterministic replay per configuration: the seed changes nothing here" in said
    assert "confidence over" not in said and " new seeds," not in said
    assert "pick stands as simulated" in said and "cheaper neighbour," in said


def test_one_seed_of_a_random_scenario_claims_no_confidence(tmp_path):
    path = plan_file(tmp_path, search="fleet.gpu: [h100-sxm]")
    path.write_text(path.read_text().replace("seeds: 2", "seeds: 1"))
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.split())
    assert "one seed per configuration: each verdict on that seed's value, with no confidence interval" in said
    assert "new seeds, h100-sxm" in said and "95% confidence" not in said


def test_a_gpu_name_typo_is_an_error_not_a_ruled_out_group(tmp_path):
    path = plan_file(tmp_path, search="fleet.gpu: [a100-80gb, h1000]")
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "group 1 (fleet.gpu='h1000'" in r.output and "fleet.gpu: unknown gpu 'h1000'; valid names: a10, a100-40gb" in r.output
    assert not (tmp_path / "o").exists()


def test_tp_degrees_that_divide_nothing_say_nothing_could_be_built(tmp_path):
    """Not 'no configuration meets the SLO': no configuration was ever valid."""
    path = plan_file(tmp_path, search="fleet.tp: [3, 5, 7]")
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "no configuration can be built, so none can meet the SLO: group 0 (fleet.tp=3): fleet.tp:" in r.output
    assert "(+1 more)" in r.output and not (tmp_path / "o").exists()
    # one that can be built among them: the others are ruled out, with their reason, in the table
    path = plan_file(tmp_path, search="fleet.tp: [3, 1]")
    r = runner.invoke(app, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "ruled out: fleet.tp: tp=3 must divide" in r.stdout


def test_a_huge_search_is_refused_from_the_axes_lengths(tmp_path):
    search = "fleet.tp: {from: 1, to: 1000}\n  engine.max_num_seqs: {from: 1, to: 1000}"
    with pytest.raises(FleetsimError, match="cross into 1,000,000 configuration groups, more than 10,000"):
        load_plan(plan_file(tmp_path, search=search))


def test_a_plan_searches_disaggregated_splits_next_to_colocated_fleets(tmp_path):
    """fleet.mode and the plan-only fleet.prefill_share as axes: a disaggregated group of n replicas runs
    round(n x share) prefill and the rest decode replicas (its runs say so), colocated groups take no share, and
    bisection still finds the grid's choice."""
    search = "fleet.mode: [colocated, disaggregated]\n  fleet.prefill_share: [0.25, 0.5]"
    p = load_plan(plan_file(tmp_path, search=search, extra=""))
    modes = [(g.values["fleet.mode"], g.values["fleet.prefill_share"]) for g in p.groups]
    assert modes == [("colocated", 0.25), ("disaggregated", 0.25), ("disaggregated", 0.5)]  # one colocated group
    raw = p.sweep.scenario_raw(Point(0, {**p.groups[1].values, "fleet.autoscaler.replicas": 8}), 0)
    assert raw["fleet"]["prefill"]["autoscaler"] == {"policy": "fixed", "replicas": 2}
    assert raw["fleet"]["decode"]["autoscaler"] == {"policy": "fixed", "replicas": 6}
    assert "prefill_share" not in raw["fleet"]
    bisect = plan_fleet(p, tmp_path / "b", workers=2)
    grid = plan_fleet(copy_plan(p, method="grid"), tmp_path / "g", workers=2)
    assert summary(bisect) == summary(grid)
    rows = {(r["fleet.mode"], r["fleet.prefill_share"]): r for r in bisect.ranking.to_dict(orient="records")}
    assert all(r["status"] in ("meets", "infeasible", "ruled out") for r in rows.values())
    assert any(mode == "disaggregated" and r["status"] == "meets" for (mode, _), r in rows.items())


def test_a_disaggregated_plan_must_scale_the_replica_count(tmp_path):
    p = plan_file(tmp_path, search="fleet.mode: [colocated, disaggregated]")
    p.write_text(p.read_text().replace("fleet.autoscaler.replicas", "engine.max_num_seqs"))
    with pytest.raises(FleetsimError, match=r"scale\.path must be fleet\.autoscaler\.replicas"):
        load_plan(p)


def test_a_plan_over_capacity_classes_picks_spot_and_states_the_saving_against_all_on_demand(tmp_path):
    """Spot at 40% of the on-demand price, reclaimed now and then (two-minute notice): the same replica count meets
    the SLO on either, so the pick is spot, saving ~60% of the $/1K tokens against the all-on-demand group."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "plan.yaml").write_text(
        "base: base.yaml\n"
        "set:\n  pricing.usd_per_gpu_hour: 2.0\n  pricing.spot_usd_per_gpu_hour: 0.8\n"
        "  fleet.capacity.spot: {interruptions_per_hour: 2.0, notice_s: 120}\n"
        "search:\n  fleet.capacity.spot.max_replicas: [0, 16]\n"
        "scale: {path: fleet.autoscaler.replicas, from: 1, to: 16}\n"
        "slo: {p99_ttft_ms: 1000, p99_tpot_ms: 60}\nseeds: 2\n"
    )
    r = runner.invoke(app, ["plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["pick"]["fleet.capacity.spot.max_replicas"] == 16
    sv = out["saving"]
    assert sv["fleet.capacity.spot.max_replicas"] == 0 and 0.4 < sv["saving"] < 0.7
    assert sv["saving"] == pytest.approx(1 - out["pick"]["usd_per_1k_tokens_mean"] / sv["usd_per_1k_tokens_mean"])
    text = runner.invoke(app, ["plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "o")])
    assert "against the cheapest all-on-demand configuration meeting the SLO" in text.stdout


def test_an_moe_models_dp_groups_are_searched_in_whole_groups(tmp_path):
    """fleet.dp 2 of an MoE model: the replica counts searched are the multiples of 2 (one rank alone is no fleet), and
    the dense-like dp 1 group keeps every count; both are planned, not ruled out at the first count."""
    base = BASE.replace("model: llama-3.1-8b", "model: qwen3-30b-a3b").replace("tp: 1,", "tp: 1, expert_parallel: true,")
    path = plan_file(tmp_path, search="fleet.dp: [1, 2]")
    (tmp_path / "base.yaml").write_text(base.replace("gpu: a100-80gb", "gpu: h100-sxm"))
    out = plan_fleet(load_plan(path), tmp_path / "p", workers=1)
    rows = out.evaluated
    dp2 = rows.loc[rows["fleet.dp"] == 2, "fleet.autoscaler.replicas"].astype(int)
    assert len(dp2) and (dp2 % 2 == 0).all()
    assert set(out.ranking["status"]) <= {"meets", "misses"}  # (neither group ruled out)
    (tmp_path / "odd.yaml").write_text(path.read_text().replace("from: 1, to: 16", "from: 1, to: 1"))
    odd = plan_fleet(load_plan(tmp_path / "odd.yaml"), tmp_path / "o", workers=1).ranking
    why = odd.loc[odd["fleet.dp"] == 2, "why"].iloc[0]
    assert "whole groups of fleet.dp = 2, and no value from 1 to 1 is a multiple of it" in why
