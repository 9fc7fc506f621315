"""Offline batch jobs: classes and jobs in the trace, the gateway's batch lane (backfill and dedicated pools),
priority preemption, the latency guard, deadline scaling, and per-job / per-class / per-pool reporting."""

import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import FleetsimError
from sim.results.metrics import status_codes
from sim.run.engine.scheduler import Chunked, Limits, PrefillFirst
from sim.run.engine.sequence import Seq
from sim.run.engine.step_time import RooflineStepTime
from sim.run.simulate import simulate, with_batch_jobs
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.states import RequestStatus
from sim.workload import validate_frame
from sim.workload.jobs import label, with_classes
from tests.test_engine_equivalence import assert_same_requests


def poisson_trace(rate, duration, seed=0, prompt=(200, 1200), output=(20, 200)):
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, duration, n)),
                "prompt_tokens": rng.integers(prompt[0], prompt[1], n),
                "output_tokens": rng.integers(output[0], output[1], n),
            }
        )
    )


def scenario(*, batch=None, engine=None, fleet=None, slo=None, seed=0):
    raw = {
        "model": "llama-3.1-8b",
        "seed": seed,
        "fleet": {"gpu": "h100-sxm", "tp": 1, **(fleet or {})},
        "engine": {"policy": "chunked", "max_num_batched_tokens": 2048, **(engine or {})},
        "slo": slo or {},
    }
    if batch is not None:
        raw["batch"] = batch
    return parse_config(raw)


def job(n, prompt=1000, output=100, **kw):
    return {
        "job_id": kw.pop("job_id", "j"),
        "requests": n,
        "prompt_tokens": {"dist": "fixed", "tokens": prompt},
        "output_tokens": {"dist": "fixed", "tokens": output},
        **kw,
    }


# --- the scheduler: priority preemption ------------------------------------------------------------------
def seq(idx, prompt, output, priority, *, computed=0, generated=0, admit_no=0, blocks=0):
    s = Seq(idx, 0.0, prompt, output, priority)
    s.computed, s.generated, s.admit_no, s.blocks = computed, generated, admit_no, blocks
    return s


@pytest.mark.parametrize("policy", [Chunked, PrefillFirst])
def test_a_waiting_interactive_request_preempts_the_lowest_priority_most_recent_batch_sequence(policy):
    limits = Limits(max_num_seqs=3, max_num_batched_tokens=4096, block_size=16, n_blocks=1000, preempt_for_priority=True)
    running = [
        seq(0, 100, 50, 1, computed=110, generated=10, admit_no=1, blocks=7),
        seq(1, 100, 50, 2, computed=110, generated=10, admit_no=2, blocks=7),
        seq(2, 100, 50, 1, computed=110, generated=10, admit_no=3, blocks=7),
    ]
    head = seq(3, 64, 10, 0)
    batch = policy().next_batch([head], list(running), free_blocks=979, limits=limits)
    assert batch.preempted == [running[1]]  # priority 2 is the lowest, though not the most recent
    assert batch.admitted == [head]
    # without the option, max_num_seqs holds the request back
    off = Limits(max_num_seqs=3, max_num_batched_tokens=4096, block_size=16, n_blocks=1000)
    batch = policy().next_batch([head], list(running), free_blocks=979, limits=off)
    assert not batch.preempted and not batch.admitted


def test_priority_preemption_never_preempts_work_of_equal_or_higher_priority():
    limits = Limits(max_num_seqs=1, max_num_batched_tokens=4096, block_size=16, n_blocks=1000, preempt_for_priority=True)
    running = [seq(0, 100, 50, 1, computed=110, generated=10, admit_no=1, blocks=7)]
    batch = Chunked().next_batch([seq(1, 64, 10, 1)], list(running), free_blocks=993, limits=limits)
    assert not batch.preempted and not batch.admitted


# --- jobs in the trace ----------------------------------------------------------------------------------
def test_jobs_merge_into_the_trace_with_class_job_priority_and_deadline():
    sc = scenario(batch={"jobs": [job(5, submit_at_s=2.0, window_s=10.0, deadline_s=100.0), job(3, job_id="k", priority=4)]})
    trace = poisson_trace(1.0, 10)
    merged = with_batch_jobs(sc, trace, base_dir=sc.base_dir)
    assert len(merged) == len(trace) + 8
    assert np.all(np.diff(merged["arrival_at_s"].to_numpy()) >= 0)
    b = merged[merged["klass"] == "batch"]
    j = b[b["job_id"] == "j"]
    assert j["arrival_at_s"].tolist() == pytest.approx([2.0, 4.0, 6.0, 8.0, 10.0])  # evenly over the window
    assert set(j["deadline_at_s"]) == {102.0} and set(j["priority"]) == {1}
    k = b[b["job_id"] == "k"]
    assert set(k["arrival_at_s"]) == {0.0} and set(k["deadline_at_s"]) == {86_400.0} and set(k["priority"]) == {4}
    i = merged[merged["klass"] == "interactive"]
    assert set(i["priority"]) == {0} and i["job_id"].isna().all() and i["deadline_at_s"].isna().all()


def test_classes_default_from_a_labelled_trace():
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [0.0, 5.0, 7.0],
                "prompt_tokens": [10, 10, 10],
                "output_tokens": [2, 2, 2],
                "klass": ["interactive", "batch", None],
            }
        )
    )
    out = with_classes(trace)
    assert out["klass"].tolist() == ["interactive", "batch", "interactive"]
    assert out["priority"].tolist() == [0, 1, 0]
    assert out["job_id"].tolist()[1] == "batch" and out["deadline_at_s"].tolist()[1] == 5.0 + 86_400.0


def test_label_needs_the_batch_class_for_jobs_and_deadlines():
    frame = poisson_trace(1.0, 10)
    with pytest.raises(FleetsimError, match="--klass batch"):
        label(frame, job_id="x")
    out = label(frame, klass="batch", job_id="x", deadline_s=60.0, priority=3)
    assert set(out["deadline_at_s"]) == {float(frame["arrival_at_s"].iloc[0]) + 60.0}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"jobs": [{"job_id": "a", "requests": 10}]}, "prompt_tokens and output_tokens"),
        ({"jobs": [job(1), job(1)]}, "job_id must be unique"),
        ({"jobs": [job(1, deadline_s=0)]}, "deadline_s"),
        ({"fleet": "elsewhere"}, "batch.fleet"),
    ],
)
def test_bad_batch_blocks_are_one_line_errors(block, message):
    with pytest.raises(FleetsimError, match=message) as err:
        scenario(batch=block)
    assert "\n" not in str(err.value)


# --- the roofline's prediction for a batch job alone ------------------------------------------------------
def test_a_batch_job_alone_finishes_when_the_roofline_predicts_for_its_tokens_at_the_configured_batch():
    # N identical requests submitted at once, B at a time (the lane's cap): each wave prefills its B prompts in
    # one step (prefill_first, budget >= B x P) and decodes O - 1 steps at batch B; the next wave starts at once.
    n, b, p, o = 64, 16, 512, 64
    sc = scenario(
        batch={"jobs": [job(n, prompt=p, output=o)], "max_per_replica": b},
        engine={"policy": "prefill_first", "max_num_batched_tokens": b * p, "max_num_seqs": 256},
    )
    result = simulate(sc)  # no trace: the job alone
    model = RooflineStepTime(resolve_scenario(sc, base_dir=sc.base_dir))
    wave = model.step(b * p, 0, b * (p * (p + 1) // 2), 0, 0, b)[0]  # (the LM head runs once per prompt)
    for j in range(1, o):  # decode step j: each sequence holds p + j - 1 cached tokens and adds one
        c = p + j - 1
        wave += model.step(0, b, b * (c + 1), b * c)[0]
    predicted = (n // b) * wave
    report = result.summary()["by_job"]["j"]
    assert report["makespan_s"] == pytest.approx(predicted, rel=1e-6)
    assert report["deadline_met"] is True


# --- fast-forward and the reference agree with batch work, priorities and preemption ---------------------------
@settings(
    max_examples=int(os.environ.get("FLEETSIM_EXAMPLES", "15")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    cap=st.integers(1, 8),
    max_num_seqs=st.integers(3, 8),
    n_blocks=st.integers(150, 400),
    policy=st.sampled_from(["chunked", "prefill_first"]),
    preempt=st.booleans(),
)
def test_fast_forward_equals_the_per_step_reference_with_a_batch_lane(seed, cap, max_num_seqs, n_blocks, policy, preempt):
    # full slots and a small KV cache: interactive arrivals preempt batch work (priority) and KV pressure preempts too
    trace = poisson_trace(6.0, 20, seed=seed % 1000, prompt=(20, 300), output=(2, 60))
    batch = {"jobs": [job(60, prompt=150, output=60, window_s=5.0)], "max_per_replica": cap}
    kw = {
        "num_gpu_blocks_override": n_blocks,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": 512,
        "policy": policy,
        "preempt_for_priority": preempt,
    }
    fast = simulate(scenario(batch=batch, engine={**kw, "fast_forward": True}), trace, measure_capacity=False)
    slow = simulate(scenario(batch=batch, engine={**kw, "fast_forward": False}), trace, measure_capacity=False)
    assert_same_requests(fast, slow)


def test_priority_preemption_serves_interactive_requests_ahead_of_batch_work():
    trace = poisson_trace(6.0, 20, seed=0, prompt=(20, 300), output=(2, 60))
    batch = {"jobs": [job(60, prompt=150, output=60, window_s=5.0)], "max_per_replica": 6}
    kw = {"num_gpu_blocks_override": 250, "max_num_seqs": 6, "max_num_batched_tokens": 512}
    runs = {
        p: simulate(scenario(batch=batch, engine={**kw, "preempt_for_priority": p}), trace, measure_capacity=False)
        for p in (False, True)
    }
    preempted = {p: r.requests.groupby("klass", observed=True)["n_preemptions"].sum().to_dict() for p, r in runs.items()}
    assert preempted[False] == {"interactive": 0, "batch": 0}
    assert preempted[True]["interactive"] == 0 and preempted[True]["batch"] > 0  # only batch work is preempted
    ttft = {p: r.summary()["by_class"]["interactive"]["p99_ttft_ms"] for p, r in runs.items()}
    assert ttft[True] < ttft[False] / 3


# --- conservation, determinism, honesty of deadlines ------------------------------------------------------------
def test_requests_and_tokens_are_conserved_per_class_and_job():
    sc = scenario(batch={"jobs": [job(300, prompt=800, output=80), job(200, job_id="k", submit_at_s=30.0)]})
    trace = poisson_trace(3.0, 120)
    result = simulate(sc, trace, measure_capacity=False)
    s, r = result.summary(), result.requests
    status = status_codes(r)
    assert s["by_class"]["batch"]["requests"] == 500 and s["by_class"]["interactive"]["requests"] == len(trace)
    for name, rec in s["by_class"].items():
        assert rec["completed"] + rec["rejected"] == rec["requests"], name
    done = status == RequestStatus.COMPLETED
    for name, rec in s["by_job"].items():
        mine = (r["job_id"] == name).fillna(False).to_numpy(dtype=bool)
        assert rec["requests"] == mine.sum()
        assert rec["tokens"] == int((r["prompt_tokens"] + r["output_tokens"]).to_numpy()[mine & done].sum())
    for name, rec in s["by_class"].items():  # each class's figures from its own requests' records
        mine = (r["klass"] == name).to_numpy()
        assert rec["total_output_tokens"] == int(r["output_tokens"].to_numpy()[mine & done].sum())
        assert rec["completed"] == int((mine & done).sum())
    assert result.itl.count == int((r["output_tokens"].to_numpy()[done] - 1).sum())  # the engine emitted every token
    again = simulate(sc, trace, measure_capacity=False)
    pd.testing.assert_frame_equal(r, again.requests)


def test_deadlines_are_reported_as_the_records_show():
    # one replica, two jobs: a generous deadline and one it cannot make
    sc = scenario(
        batch={
            "jobs": [
                job(400, prompt=2000, output=200, deadline_s=5.0, job_id="tight"),
                job(50, job_id="easy", deadline_s=86_400.0),
            ]
        }
    )
    result = simulate(sc, poisson_trace(0.5, 30), measure_capacity=False)
    jobs, r = result.summary()["by_job"], result.requests
    for name, rec in jobs.items():
        mine = r[r["job_id"] == name]
        last = float(mine["completed_at_s"].max())
        assert rec["completed_at_s"] == pytest.approx(last)
        assert rec["deadline_met"] == (last <= rec["deadline_at_s"])
        assert rec["late_s"] == pytest.approx(max(0.0, last - rec["deadline_at_s"]))
        assert rec["on_time_share"] == pytest.approx(float((mine["completed_at_s"] <= rec["deadline_at_s"]).mean()))
    assert jobs["tight"]["deadline_met"] is False and jobs["tight"]["late_s"] > 0
    assert jobs["easy"]["deadline_met"] is True


def test_a_job_with_a_rejected_request_is_not_finished():
    sc = scenario(batch={"jobs": [job(5, prompt=200_000, output=10)]})  # longer than the model's context
    jobs = simulate(sc, poisson_trace(0.5, 10), measure_capacity=False).summary()["by_job"]
    assert jobs["j"]["rejected"] == 5 and jobs["j"]["completed_at_s"] is None and jobs["j"]["deadline_met"] is False


# --- backfill and the guard --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_guard_keeps_interactive_p99_latency_within_its_targets():
    trace = poisson_trace(2.0, 1200, seed=3, prompt=(200, 2000), output=(20, 300))
    slo = {"ttft_ms": 1000, "tpot_ms": 40}
    alone = simulate(scenario(slo=slo), trace, measure_capacity=False).summary()
    assert alone["p99_tpot_ms"] < 40 and alone["p99_ttft_ms"] < 1000  # the targets hold without batch work
    work = {"jobs": [job(20_000, prompt=1500, output=150)]}
    engine = {"preempt_for_priority": True, "max_num_batched_tokens": 8192}
    unguarded = simulate(scenario(batch=work, engine=engine, slo=slo), trace, measure_capacity=False).summary()
    run = simulate(scenario(batch={**work, "guard": {"interval_s": 30}}, engine=engine, slo=slo), trace, measure_capacity=False)
    guarded = run.summary()
    assert unguarded["by_class"]["interactive"]["p99_tpot_ms"] > 40  # batch work breaks the TPOT target ...
    # ... and the guard holds it once its slow start (doubling the cap each interval until latency objects) has
    # overshot once and been halved: from 300 s on; over the whole run it at least halves the damage
    r = run.requests
    late = (r["klass"] == "interactive") & (r["completed_at_s"] > 300) & (r["output_tokens"] > 1)
    tpot = (r["completed_at_s"] - r["first_token_at_s"])[late] / (r["output_tokens"][late] - 1)
    assert float(np.percentile(tpot, 99)) * 1000 <= 40
    assert guarded["by_class"]["interactive"]["p99_tpot_ms"] < unguarded["by_class"]["interactive"]["p99_tpot_ms"] / 2
    assert guarded["by_class"]["interactive"]["p99_ttft_ms"] <= 1000
    assert guarded["by_class"]["batch"]["completed"] == 20_000  # while the batch work still gets done


def test_batch_work_waits_at_the_gateway_not_on_the_replicas():
    sc = scenario(batch={"jobs": [job(500)], "max_per_replica": 8})
    result = simulate(sc, poisson_trace(1.0, 60), measure_capacity=False)
    assert result.timeline["waiting"].max() > 400  # the lane's queue, counted in the timeline
    assert result.summary()["by_class"]["batch"]["completed"] == 500


# --- what batch work cost ----------------------------------------------------------------------------------------------
def batch_tokens(result):
    r = result.requests
    done = (r["klass"] == "batch").to_numpy() & (status_codes(r) == RequestStatus.COMPLETED)
    return int(r["prompt_tokens"].to_numpy()[done].sum() + r["output_tokens"].to_numpy()[done].sum())


def test_backfilled_batch_work_costs_what_it_adds_to_the_bill():
    """A job that runs past the interactive traffic keeps the fleet billed: its cost is the run's bill less the same
    interactive trace's bill without it (simulated here apart), not $0."""
    from sim.physics.prices import api_price

    def raw(batch):
        return {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "tp": 1, "autoscaler": {"policy": "fixed", "replicas": 1}},
            "engine": {"policy": "chunked", "max_num_batched_tokens": 2048},
            "pricing": {"usd_per_gpu_hour": 3.0, "billing_granularity_s": 0},
            "batch": batch,
        }

    sc = parse_config(raw({"jobs": [job(6000)]}))
    interactive = poisson_trace(0.5, 60)
    result = simulate(sc, interactive)
    alone = simulate(parse_config(raw(None)), interactive, measure_capacity=False)
    s, a = result.summary(), alone.summary()
    cost = s["batch_cost"]
    assert cost["method"] == "marginal"
    assert cost["cost_usd"] == pytest.approx(s["cost_usd"] - a["cost_usd"], abs=1e-9)
    assert cost["gpu_seconds"] == pytest.approx(s["billed_gpu_seconds"] - a["billed_gpu_seconds"], abs=1e-6)
    # one GPU billed from t = 0 to the last completion: the job's cost is the time it keeps the replica past the
    # interactive traffic's own end, at the GPU's price
    assert s["duration"] > a["duration"] + 30
    assert cost["cost_usd"] == pytest.approx((s["duration"] - a["duration"]) * 3.0 / 3600)
    assert cost["tokens"] == batch_tokens(result) == 6000 * 1100
    assert cost["usd_per_1k_tokens"] == pytest.approx(cost["cost_usd"] / cost["tokens"] * 1000)
    api = api_price(sc.pricing.compare_api)
    expected_api = 0.5 * (6000 * api.usd_per_1k_prompt_tokens + 600 * api.usd_per_1k_completion_tokens)
    assert cost["api_batch_usd_for_same_tokens"] == pytest.approx(expected_api)


def test_a_dedicated_pools_batch_cost_is_its_bill_and_a_run_without_batch_work_has_none():
    sc = scenario(batch={"jobs": [job(300, deadline_s=600.0)], "fleet": "dedicated", "deadline_margin_s": 60.0})
    s = simulate(sc, poisson_trace(0.5, 120), measure_capacity=False).summary()
    assert s["batch_cost"]["method"] == "dedicated pool"
    assert s["batch_cost"]["cost_usd"] == s["by_pool"]["batch"]["cost_usd"] > 0
    backfill = scenario(batch={"jobs": [job(50)]})
    assert simulate(backfill, poisson_trace(0.5, 60), measure_capacity=False).summary()["batch_cost"]["method"] == "not measured"
    assert simulate(scenario(), poisson_trace(0.5, 60), measure_capacity=False).summary()["batch_cost"] is None


# --- dedicated pools and deadline scaling ----------------------------------------------------------------------------
def test_a_dedicated_pool_serves_only_batch_work_and_is_released_when_it_is_done():
    sc = scenario(batch={"jobs": [job(600, deadline_s=600.0)], "fleet": "dedicated", "deadline_margin_s": 60.0})
    result = simulate(sc, poisson_trace(1.0, 300), measure_capacity=False)
    r, reps = result.requests, result.replicas
    pool_of = dict(zip(reps["replica_id"], reps["pool"], strict=True))
    served = r["replica_id"].map(pool_of)
    assert set(served[r["klass"] == "batch"]) == {"batch"} and set(served[r["klass"] == "interactive"]) == {"online"}
    batch_reps = reps[reps["pool"] == "batch"]
    last = float(r.loc[r["klass"] == "batch", "completed_at_s"].max())
    assert np.allclose(batch_reps["released_at_s"], last)
    s = result.summary()
    assert s["by_pool"]["batch"]["replicas_launched"] == len(batch_reps)
    assert s["cost_usd"] == pytest.approx(sum(p["cost_usd"] for p in s["by_pool"].values()))
    assert s["by_job"]["j"]["deadline_met"] is True


def test_auto_sizing_takes_the_tokens_over_the_saturated_rate_and_the_window():
    from sim.run.simulate import colocated_capacity

    sc = scenario(batch={"jobs": [job(3000, deadline_s=900.0)], "fleet": "dedicated", "deadline_margin_s": 300.0})
    trace = with_batch_jobs(sc, poisson_trace(0.2, 60), base_dir=sc.base_dir)
    b = trace[trace["klass"] == "batch"]
    rate = colocated_capacity(sc, resolve_scenario(sc, base_dir=sc.base_dir), b).max_tokens_per_s_per_replica
    expected = math.ceil(3000 * 1100 / (rate * 600.0))
    result = simulate(sc, poisson_trace(0.2, 60), measure_capacity=False)
    assert int((result.replicas["pool"] == "batch").sum()) == expected
    assert result.summary()["by_job"]["j"]["deadline_met"] is True


def test_deadline_scaling_adds_replicas_only_when_the_deadline_is_at_risk():
    # a schedule that holds one replica: what the batch backlog adds is deadline scaling's doing alone
    auto = {"policy": "scheduled", "table": [{"at_s": 0, "replicas": 1}], "min_replicas": 1, "max_replicas": 8, "interval_s": 15}
    fleet = {"autoscaler": auto, "lifecycle": {"start": "warm"}}
    trace = poisson_trace(0.5, 60)
    tight = {"jobs": [job(20_000, deadline_s=400.0)], "deadline_margin_s": 60.0}
    plain = simulate(scenario(batch=tight, fleet=fleet), trace, measure_capacity=False).summary()
    scaled = simulate(scenario(batch={**tight, "deadline_scaling": True}, fleet=fleet), trace, measure_capacity=False).summary()
    assert plain["by_job"]["j"]["deadline_met"] is False
    assert scaled["by_job"]["j"]["deadline_met"] is True and scaled["replicas_launched"] > plain["replicas_launched"]
    easy = {"jobs": [job(200, deadline_s=86_400.0)], "deadline_scaling": True}
    relaxed = simulate(scenario(batch=easy, fleet=fleet), trace, measure_capacity=False).summary()
    assert (
        relaxed["replicas_launched"]
        == simulate(scenario(batch={"jobs": [job(200)]}, fleet=fleet), trace, measure_capacity=False).summary()[
            "replicas_launched"
        ]
    )


def test_deadline_scaling_of_a_fixed_backfill_fleet_is_refused():
    sc = scenario(batch={"jobs": [job(10)], "deadline_scaling": True})
    with pytest.raises(FleetsimError, match="deadline_scaling"):
        simulate(sc, poisson_trace(0.5, 10), measure_capacity=False)


# --- records, the CLI ----------------------------------------------------------------------------------------------------
def test_a_run_folder_with_jobs_gives_the_same_summary(tmp_path):
    from sim.results.report import write_run
    from sim.results.result import SimResult

    sc = scenario(batch={"jobs": [job(200)], "fleet": "dedicated"}, slo={"ttft_ms": 500})
    result = simulate(sc, poisson_trace(1.0, 60), measure_capacity=False)
    summary = result.summary()
    write_run(result, tmp_path / "run", summary=summary)
    again = SimResult.load(tmp_path / "run").summary()
    for key in ("by_job", "by_class", "by_pool", "cost_usd"):
        assert again[key] == summary[key], key


def test_trace_gen_and_merge_label_jobs(tmp_path):
    from typer.testing import CliRunner

    from sim.cli.commands import app
    from sim.workload import load_trace

    runner = CliRunner()
    job_file, chat, mixed = tmp_path / "job.csv", tmp_path / "chat.csv", tmp_path / "mixed.csv"
    args = ["trace", "gen", "--rate", "10", "--requests", "50", "--out", str(job_file)]
    out = runner.invoke(app, [*args, "--klass", "batch", "--job-id", "nightly", "--deadline-s", "3600", "--priority", "2"])
    assert out.exit_code == 0, out.output
    frame = load_trace(job_file)
    assert set(frame["job_id"]) == {"nightly"} and set(frame["priority"]) == {2}
    assert set(frame["deadline_at_s"]) == {3600.0}
    assert runner.invoke(app, ["trace", "gen", "--rate", "1", "--duration-s", "60", "--out", str(chat)]).exit_code == 0
    out = runner.invoke(app, ["trace", "merge", str(mixed), f"{chat}=interactive", str(job_file), "--klass", "batch"])
    assert out.exit_code == 0, out.output
    merged = load_trace(mixed)
    assert (merged["klass"] == "batch").sum() == 50 and merged.loc[merged["klass"] == "interactive", "job_id"].isna().all()
    bad = runner.invoke(app, [*args[:-1], str(tmp_path / "bad.csv"), "--job-id", "x"])
    assert bad.exit_code == 2 and "--klass batch" in bad.output
    result = simulate(scenario(), merged, measure_capacity=False)  # a labelled trace runs through the batch lane
    assert result.summary()["by_job"]["nightly"]["completed"] == 50


def test_the_html_report_shows_classes_jobs_and_pools():
    from sim.results.html_report import render_html

    sc = scenario(batch={"jobs": [job(100)], "fleet": "dedicated"}, slo={"ttft_ms": 500})
    page = render_html(simulate(sc, poisson_trace(1.0, 30), measure_capacity=False))
    assert 'id="classes"' in page and 'id="jobs"' in page and 'id="pools"' in page
    assert ">j<" in page and "met" in page


def deadline_lane(*, rate=100.0, cold_start_s=0.0, starting=(), cap=16):
    """A lane for `replicas_needed` alone: its clock, pool and backlog set by hand."""
    from types import SimpleNamespace

    from sim.run.fleet.batch import BatchLane

    env = SimpleNamespace(now=0.0)
    pool = SimpleNamespace(starting=[SimpleNamespace(provision_at_s=t) for t in starting])
    lane = BatchLane(
        env,
        None,
        pool=pool,
        priority=np.zeros(0, dtype=np.int64),
        hashes=None,
        deadline_at_s=np.zeros(0),
        n_batch=0,
        cap=cap,
        replica_tokens_per_s=rate,
        cold_start_s=cold_start_s,
    )
    return env, lane


def test_deadline_scaling_asks_for_the_replicas_the_backlog_needs_by_hand():
    """AIM = 0.8 of the time left; ready replicas first, then those starting (from the end of their cold start), then
    new ones a whole cold start later; the highest ask held for HOLD_S. Figures worked by hand."""
    env, lane = deadline_lane()
    assert lane.replicas_needed(3) == 0 and lane.last_ask == 0  # nothing pending
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 150_000
    # left 800 s: 3 ready replicas could serve 240,000 tokens; 150,000 need ceil(150,000 / 80,000) = 2 of them
    assert lane.replicas_needed(3) == 2
    env, lane = deadline_lane(cold_start_s=300.0, starting=(-100.0,))
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 200_000
    # 1 ready: 80,000; the one starting serves from t = 200: 60,000 more; 60,000 left over 500 useful s of a new
    # replica at 100 tok/s: 2 more -> 4
    assert lane.replicas_needed(1) == 4
    env.now = 100.0
    lane.remaining_tokens = 1_000
    assert lane.replicas_needed(1) == 4  # held
    env.now = 1_901.0
    lane._pending = {3_000.0: 1}
    assert lane.replicas_needed(1) == 1  # the hold expired: ceil(1,000 / (100 x 879.2))


@pytest.mark.parametrize(("completions", "expected"), [(40, 2), (10, 3)])
def test_deadline_scaling_measures_the_rate_over_its_window_once_a_batch_completed_per_replica(completions, expected):
    """Ticks at 0, 100 and 500 s with 2 replicas ready: the window (300 s) keeps the ticks at 100 and 500, 800
    replica-seconds apart, in which 120,000 tokens were done: 150 tok/s per replica, if at least cap x replicas
    (16 x 2) requests completed in it, else the saturated rate (100). 230,000 tokens are due at 1,500 s: 0.8 of the
    1,000 s left is 800 s, in which 2 replicas at 150 tok/s serve 240,000 (2 suffice), at 100 tok/s 160,000 (one more)."""
    env, lane = deadline_lane(cap=16)
    lane._pending, lane.remaining_tokens = {1_500.0: 1}, 230_000
    lane.replicas_needed(2)
    env.now, lane.done_tokens, lane.n_done = 100.0, 10_000, 20
    lane.replicas_needed(2)
    env.now, lane.done_tokens, lane.n_done = 500.0, 130_000, 20 + completions
    lane._asked.clear()
    assert lane.replicas_needed(2) == expected


def test_the_guards_watch_counts_interactive_completions_only():
    from types import SimpleNamespace

    from sim.run.engine.records import COMPLETED, IN_FLIGHT
    from sim.run.fleet.batch import InteractiveWatch

    log = SimpleNamespace(status=np.array([COMPLETED, COMPLETED, IN_FLIGHT]))
    watch = InteractiveWatch(log)
    for idx, batch in ((0, False), (1, True), (2, False)):
        watch.finished(None, SimpleNamespace(idx=idx, batch=batch))
    assert watch.completed == [0]


def test_the_lane_hands_out_requests_in_priority_then_arrival_order():
    """In-order arrivals queue in a FIFO, an out-of-order one (a more urgent priority) in a heap; the lane pops
    the smaller (priority, arrival, index) of the two heads."""
    from types import SimpleNamespace

    _env, lane = deadline_lane()
    lane.pool.inadmissible = {}
    lane.priority = np.array([1, 1, 0, 1, 0])
    lane.deadline_at_s = np.full(5, 100.0)
    lane.log = SimpleNamespace(
        status=np.zeros(5, dtype=np.int8),
        arrival_at_s=np.array([0.0, 1.0, 2.0, 3.0, 4.0]),
        prompt_tokens=np.full(5, 10),
        output_tokens=np.full(5, 5),
    )
    lane._pump_due = True  # (no dispatch: the test pops by hand)
    for idx in range(5):
        lane.add(idx)
    assert lane.n_queued == 5 and lane.remaining_tokens == 75
    assert [lane._pop() for _ in range(5)] == [2, 4, 0, 1, 3]


def test_a_resolved_batch_request_leaves_the_backlog_and_counts_as_done_only_if_completed():
    """Each resolution takes its prompt + output tokens off the backlog; completed ones add them to the done tokens
    (the deadline scaling's measured rate), rejected ones do not; the deadline is pending until its last request."""
    from types import SimpleNamespace

    from sim.run.engine.records import COMPLETED, REJECTED

    _env, lane = deadline_lane()
    lane.log = SimpleNamespace(status=np.array([COMPLETED, COMPLETED, REJECTED]))
    lane.deadline_at_s = np.full(3, 100.0)
    lane._pending, lane.remaining_tokens = {100.0: 3}, (300 + 20) + (500 + 40) + (70 + 7)
    lane._done(Seq(0, 0.0, 300, 20, 0, True))
    assert (lane.done_tokens, lane.n_done, lane.remaining_tokens) == (320, 1, 617)
    lane._done(Seq(1, 0.0, 500, 40, 0, True))
    assert (lane.done_tokens, lane.n_done, lane.remaining_tokens) == (860, 2, 77)
    assert lane.earliest_deadline() == 100.0
    lane._done(Seq(2, 0.0, 70, 7, 0, True))
    assert (lane.done_tokens, lane.n_done, lane.remaining_tokens) == (860, 2, 0)
    assert lane.earliest_deadline() is None and lane.n_resolved == 3


@pytest.mark.parametrize(("cap", "launches"), [(0, []), (1, [1])])
def test_a_lane_the_guard_closed_does_not_wake_a_pool_scaled_to_zero(cap, launches):
    """Queued batch work wakes a pool scaled to zero (the activator) only while the guard lets some through."""
    from types import SimpleNamespace

    _env, lane = deadline_lane()
    asked = []
    lane.pool = SimpleNamespace(ready=[], coming=lambda: 0, held=lambda: 0, max_replicas=2, launch=asked.append)
    lane.cap, lane.n_queued = cap, 3
    lane._pump()
    assert asked == launches


def test_deadline_scaling_counts_a_starting_replica_from_the_end_of_its_cold_start():
    """Cold start 300 s, a replica launched 100 s ago serves from t = 200: 100 tok/s x (800 - 200) = 60,000 tokens;
    with the ready one's 80,000, 190,000 due leave 50,000 for new replicas, each serving 500 useful s: one more."""
    _env, lane = deadline_lane(cold_start_s=300.0, starting=(-100.0,))
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 190_000
    assert lane.replicas_needed(1) == 3


def test_the_guards_slow_start_doubles_the_cap_until_latency_objects_then_halves_it():
    """No objection: 1, 2, 4, 8, then (capped at max_per_replica 12) 12; an objection halves it and ends the slow
    start; then it grows by guard_step (2)."""
    from types import SimpleNamespace

    from sim.run.fleet.batch import BatchLane

    env = SimpleNamespace(now=0.0)
    lane = BatchLane(env, None, pool=SimpleNamespace(), priority=np.zeros(0, dtype=np.int64), hashes=None,
                     deadline_at_s=np.zeros(0), n_batch=0, cap=12, guard=(0.5, None), guard_step=2)  # fmt: skip
    lane.watch = SimpleNamespace(completed=[])
    lane.log = SimpleNamespace(
        first_token_at_s=np.array([1.0, 9.0]), arrival_at_s=np.array([0.9, 0.0]), output_tokens=np.array([1, 1])
    )  # (one-token requests: no TPOT)
    caps = []
    for _ in range(5):
        lane.guard_tick()
        caps.append(lane.cap)
    assert caps == [2, 4, 8, 12, 12]
    lane.watch.completed.append(1)  # a TTFT of 9 s over the 0.5 s target
    lane.guard_tick()
    assert lane.cap == 6 and not lane._slow_start
    lane.watch.completed.append(0)  # 0.1 s: within it
    lane.guard_tick()
    assert lane.cap == 8 and [c for _, c in lane.cap_changes] == [2, 4, 8, 12, 6, 8]


def test_deadline_scaling_adds_no_replica_when_those_starting_cover_the_backlog():
    """Nothing ready, one replica starting (its cold start over, serving from now): 100 tok/s x 800 s = 80,000
    tokens cover the 10,000 due; no new one."""
    _env, lane = deadline_lane(cold_start_s=100.0, starting=(-100.0,))
    lane._pending, lane.remaining_tokens = {1000.0: 1}, 10_000
    assert lane.replicas_needed(0) == 1
