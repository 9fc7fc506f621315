"""Host time a scheduled sequence a step (`roofline.seq_overhead_s`): the engine loop's scheduling, input preparation
and output processing, which walk the scheduled requests, priced where the GPU waits for them. Each check by hand on a
small case: the roofline's reference arithmetic, the engine's step model and its closed-form decode runs, a speculative
verify (its sequences, not its logit positions), and whole runs fast-forwarded against the per-step reference."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from sim.physics.roofline import decode_cost, prefill_cost
from sim.run.engine.speculative import SpeculativeStepTime
from sim.run.engine.step_time import RooflineStepTime
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests, random_trace

H = 5e-5  # 50 µs a sequence: the size the multi-GPU runs' residual reads (docs/steptime.md)


def setup_with(h: float, model: str = "llama-3.1-8b", **fleet):
    raw = {"model": model, "fleet": {"gpu": "a100-80gb", "tp": 1, **fleet}, "roofline": {"seq_overhead_s": h}}
    return resolve_scenario(parse_config(raw))


def test_the_reference_adds_the_host_seconds_of_each_scheduled_sequence():
    base, host = setup_with(0.0), setup_with(H)
    for batch in (1, 7, 64):
        d0, d1 = decode_cost(base, batch=batch, context_tokens=500), decode_cost(host, batch=batch, context_tokens=500)
        assert d1.time_s - d0.time_s == pytest.approx(batch * H, rel=1e-9)
        assert (d1.flops, d1.bytes) == (d0.flops, d0.bytes)  # host time does no GPU work
    # a prefill step of 3 prompts schedules 3 sequences, whatever their tokens
    p0, p1 = prefill_cost(base, prompt_tokens=400, batch=3), prefill_cost(host, prompt_tokens=400, batch=3)
    assert p1.time_s - p0.time_s == pytest.approx(3 * H, rel=1e-9)


def test_the_engine_prices_a_step_as_the_reference_and_its_decode_runs_in_closed_form():
    s = setup_with(H)
    model = RooflineStepTime(s)
    n, ctx = 12, 12 * 300
    # a decode step of n sequences: the reference's time
    dt = model.step(0, n, ctx + n, ctx, ctx, n)[0]
    assert dt == pytest.approx(decode_cost(s, batch=n, context_tokens=300).time_s, rel=1e-12)
    # a mixed step: 2 prompts' chunks (200 tokens) and 5 decoders schedule 7 sequences
    mixed = model.step(200, 5, 5 * 101 + 20_100, 500, 500, 7)[0]
    plain = RooflineStepTime(setup_with(0.0)).step(200, 5, 5 * 101 + 20_100, 500, 500, 7)[0]
    assert mixed - plain == pytest.approx(7 * H, rel=1e-9)
    # `seqs` wins over the logit positions when given
    assert model.step(200, 5, 5 * 101 + 20_100, 500, 500, 7, seqs=2)[0] - plain == pytest.approx(2 * H, rel=1e-9)
    # a decode run's steps: the line, the step-by-step sum, and each step alike
    line = model.decode_line(n_seqs=n, context_sum=ctx)
    for j in range(5):
        c = ctx + n * j
        assert line.at(j) == pytest.approx(model.step(0, n, c + n, c, c, n)[0], rel=1e-12)
    assert model.decode_sum(n, ctx, 5) == pytest.approx(line.total(5), rel=1e-12)
    # without the host part (a speculative step's drafts): n * H less a step
    assert model.decode_sum(n, ctx, 5) - model.decode_sum(n, ctx, 5, False) == pytest.approx(5 * n * H, rel=1e-9)


def test_a_speculative_verify_counts_its_sequences_once_and_its_drafts_none():
    s = setup_with(H)
    k, n, ctx = 3, 6, 6 * 400
    spec = SpeculativeStepTime(RooflineStepTime(s), None, method="mtp", k=k, draft_cost=0.1)
    plain = SpeculativeStepTime(RooflineStepTime(setup_with(0.0)), None, method="mtp", k=k, draft_cost=0.1)
    # n sequences verify k drafts each: n host costs (not n (k + 1)); the drafts (k target decode steps at 0.1 each)
    # add none
    assert spec.verify(n, ctx)[0] - plain.verify(n, ctx)[0] == pytest.approx(n * H, rel=1e-9)
    # the fast-forward's priced run: the same floats as the step-by-step verify
    ends, _, _ = spec.run_fn(n)(ctx, [n * 2, n * 4, n * 6])
    c = ctx
    t = 0.0
    for j, through in enumerate([n * 2, n * 4, n * 6]):
        t += spec.verify(n, c)[0]
        assert ends[j] == pytest.approx(t, rel=1e-12)
        c = ctx + through


def run(h: float, *, fast_forward: bool, frame: pd.DataFrame, **extra):
    engine = {"max_num_seqs": 16, "max_num_batched_tokens": 512, "fast_forward": fast_forward, **extra.pop("engine", {})}
    fleet = {"gpu": "a100-80gb", "tp": 1, "autoscaler": {"policy": "fixed", "replicas": 1}, **extra.pop("fleet", {})}
    raw = {"model": extra.pop("model", "llama-3.1-8b"), "fleet": fleet, "engine": engine, "roofline": {"seq_overhead_s": h}}
    return simulate(parse_config(raw), frame, measure_capacity=False)


def test_one_request_alone_decodes_each_token_one_host_cost_later():
    frame = validate_frame(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [100], "output_tokens": [50]}))
    r0 = run(0.0, fast_forward=True, frame=frame).requests.iloc[0]
    r1 = run(H, fast_forward=True, frame=frame).requests.iloc[0]
    tpot0 = (r0["completed_at_s"] - r0["first_token_at_s"]) / 49
    tpot1 = (r1["completed_at_s"] - r1["first_token_at_s"]) / 49
    assert tpot1 - tpot0 == pytest.approx(H, rel=1e-6)
    assert r1["first_token_at_s"] - r0["first_token_at_s"] == pytest.approx(H, rel=1e-6)  # its prefill step: one sequence


# the fleets a step-time term is checked on, fast-forward against per-step: (scenario extras, ids)
FLEETS = (
    [
        {},
        {"engine": {"speculative": {"method": "mtp", "num_speculative_tokens": 2, "acceptance_rate": 0.7}}},
        {"model": "qwen3-30b-a3b", "fleet": {"dp": 2, "expert_parallel": True, "autoscaler": {"policy": "fixed", "replicas": 2}}},
        {"engine": {"prefix_caching": True}},
    ],
    ["plain", "speculative", "dp2-ep", "prefix-caching"],
)


@pytest.mark.parametrize("extra", FLEETS[0], ids=FLEETS[1])
def test_fast_forward_matches_the_per_step_reference_with_host_time(extra):
    frame = random_trace(7, 120, 12.0, max_prompt=599, max_output=119)
    fast = run(H, fast_forward=True, frame=frame, **dict(extra))
    slow = run(H, fast_forward=False, frame=frame, **dict(extra))
    assert_same_requests(fast, slow)
    base = run(0.0, fast_forward=True, frame=frame, **dict(extra))
    # the host time is paid: the run's mean TPOT and E2E grow (not every request's: batches form differently)
    assert fast.summary()["mean_tpot_ms"] > base.summary()["mean_tpot_ms"]
    assert fast.summary()["mean_e2el_ms"] > base.summary()["mean_e2el_ms"]


def test_the_knob_is_checked():
    from sim.errors import FleetsimError

    with pytest.raises((FleetsimError, ValueError), match="seq_overhead_s"):
        parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb"}, "roofline": {"seq_overhead_s": -1e-6}})
    assert dataclasses.fields(setup_with(H))  # (resolves)
    assert setup_with(H).seq_overhead_s == H


def test_validate_prices_the_measured_engine_loop_of_a_synchronous_vllm():
    """`fleetsim validate` adds vLLM's engine-core host time (benchmarks/host/: measured, not fitted) where the run's
    vLLM schedules synchronously: the latest measurement at or before its version, of the V1 engine core or, for a
    pipeline that vLLM before 0.9 served on its V0 engine, of that engine's loop; none with async scheduling or before
    any measured version."""
    import json
    from pathlib import Path

    from sim.studies.validate import HOST_LOOP, HOST_LOOP_V0, HOST_WORKER, HOST_WORKER_V0, host_loop, scenario_from_meta

    (_, v083, a083, b083), (_, v011, a011, b011) = HOST_LOOP
    ((_, v0, a0, b0),) = HOST_LOOP_V0
    (w083_since, w083, aw083, bw083), (w011_since, w011, aw, bw) = HOST_WORKER
    assert b0 > 10 * b083  # V0 walks Python objects a request at every stage (its own measurement, not V1's)
    assert (w083_since, w011_since) == ((0, 8), (0, 11))
    # the model runner's own host time adds to the engine core's (both wait for the GPU in turn), each the latest
    # measured at or before the version
    both083 = ((a083 + aw083, b083 + bw083), f"{v083} and {w083}")
    assert host_loop((0, 8), asynchronous=False, v0=False) == both083
    assert host_loop((0, 10), asynchronous=False, v0=False) == both083
    assert host_loop((0, 11), asynchronous=False, v0=False) == ((a011 + aw, b011 + bw), f"{v011} and {w011}")
    assert host_loop((0, 13), asynchronous=False, v0=False) == ((a011 + aw, b011 + bw), f"{v011} and {w011}")
    assert host_loop((0, 19), asynchronous=True, v0=False) is None
    ((_, wv0, awv0, bwv0),) = HOST_WORKER_V0
    both_v0 = ((a0 + awv0, b0 + bwv0), f"{v0} and {wv0}")
    assert host_loop((0, 8), asynchronous=False, v0=True) == both_v0
    assert host_loop((0, 7), asynchronous=False, v0=True) is None
    assert host_loop((0, 7), asynchronous=False, v0=False) is None
    assert host_loop(None, asynchronous=False, v0=False) is None
    e2e = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e"
    sync, _ = scenario_from_meta(json.loads((e2e / "a100-40gb-llama-3.3-70b-tp8-qps1" / "meta.json").read_text()))
    assert (sync["roofline"]["step_overhead_s"], sync["roofline"]["seq_overhead_s"]) == (a083 + aw083, b083 + bw083)
    raw, notes = scenario_from_meta(json.loads((e2e / "rtx4090-llama-3.1-8b" / "meta.json").read_text()))
    assert "seq_overhead_s" not in raw["roofline"] and not any(n.startswith("host loop") for n in notes)  # async
    pipe, notes = scenario_from_meta(json.loads((e2e / "a100-40gb-llama-3.3-70b-tp4-pp2-qps1" / "meta.json").read_text()))
    assert (pipe["roofline"]["step_overhead_s"], pipe["roofline"]["seq_overhead_s"]) == both_v0[0]  # vLLM 0.8.3's V0
    assert any(n.startswith("host loop") and "V0 engine loop" in n for n in notes)
    h100, notes = scenario_from_meta(json.loads((e2e / "h100-sxm-llama-2-7b-guidellm-sweep" / "meta.json").read_text()))
    assert (h100["roofline"]["step_overhead_s"], h100["roofline"]["seq_overhead_s"]) == (a011 + aw, b011 + bw)  # 0.11, sync
    assert any(n.startswith("host loop") and "model runner" in n for n in notes)


def test_the_roofline_report_counts_a_speculating_steps_host_time_as_the_engine_does():
    """`fleetsim roofline`'s speculative figures (sim.physics.speculative) charge a verify's host time once a sequence
    and a draft step none, as the engine's step model does: the host cost adds n h to a step on both paths."""
    from sim.physics.speculative import draft_time_s, verify_cost

    k, n, c = 3, 32, 400

    def physics(h: float) -> float:
        s = setup_with(h)
        return verify_cost(s, batch=n, k=k, context_tokens=c).time_s + draft_time_s(
            "mtp", k=k, batch=n, context_tokens=c, target=s, draft=None, draft_cost=0.1
        )

    def engine(h: float) -> float:
        return SpeculativeStepTime(RooflineStepTime(setup_with(h)), None, method="mtp", k=k, draft_cost=0.1).verify(n, n * c)[0]

    assert physics(H) - physics(0.0) == pytest.approx(n * H, rel=1e-9)
    assert engine(H) - engine(0.0) == pytest.approx(n * H, rel=1e-9)
