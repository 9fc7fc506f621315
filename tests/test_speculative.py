"""Speculative decoding: tokens per verify step at alpha 1 and 0, the mean accepted length against the formula,
the verify step's cost, the draft model's memory, determinism and conservation, and `fleetsim roofline
--speculative`."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.physics.roofline import kv_capacity_tokens
from sim.physics.speculative import expected_tokens_per_step, verify_cost
from sim.run.engine.speculative import SpeculativeStepTime
from sim.run.pools import replica_step_time
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests

A, D = 1e-4, 0.02


def scenario(spec, *, step="constant", model="llama-3.1-8b", gpu="h100-sxm", tp=1, **engine):
    st = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D} if step == "constant" else {"kind": "roofline"}
    return parse_config(
        {
            "model": model,
            "fleet": {"gpu": gpu, "tp": tp},
            "engine": {"max_num_batched_tokens": 65536, "step_time": st, "speculative": spec, **engine},
        }
    )


def one(prompt, output):
    return validate_frame(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [prompt], "output_tokens": [output]}))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_alpha_one_emits_k_plus_one_tokens_per_verify_step(k):
    p, o = 500, 101
    spec = {"method": "ngram", "num_speculative_tokens": k, "acceptance_rate": 1.0}
    r = simulate(scenario(spec), one(p, o), measure_capacity=False)
    verify_steps = math.ceil((o - 1) / (k + 1))
    req = r.requests.iloc[0]
    assert req["first_token_at_s"] == pytest.approx(p * A)
    assert req["completed_at_s"] == pytest.approx(p * A + verify_steps * (D + k * A))  # a verify: k + 1 tokens' work
    assert r.summary()["n_steps"] == 1 + verify_steps
    assert r.itl.count == o - 1  # every token but the first has a gap: an accepted draft's is 0 (same step)
    zeros = (o - 1) - verify_steps
    assert r.itl.percentile(100 * (zeros - 1) / (o - 2)) == pytest.approx(0.0, abs=1e-12) and r.itl.percentile(
        100
    ) == pytest.approx(D + k * A)


def test_alpha_zero_emits_one_token_per_step_at_the_verify_steps_cost():
    p, o, k = 300, 40, 4
    spec = {"method": "ngram", "num_speculative_tokens": k, "acceptance_rate": 0.0}
    req = simulate(scenario(spec), one(p, o), measure_capacity=False).requests.iloc[0]
    assert req["completed_at_s"] == pytest.approx(p * A + (o - 1) * (D + k * A))


def test_the_verify_step_costs_the_rooflines_k_plus_one_token_step():
    p, k = 2000, 2
    sc = scenario({"method": "ngram", "num_speculative_tokens": k, "acceptance_rate": 0.0}, step="roofline")
    req = simulate(sc, one(p, 2), measure_capacity=False).requests.iloc[0]
    setup = resolve_scenario(sc)
    assert req["completed_at_s"] - req["first_token_at_s"] == pytest.approx(
        verify_cost(setup, batch=1, k=k, context_tokens=p).time_s
    )


@pytest.mark.parametrize("alphas", [[0.6, 0.6, 0.6], [0.9, 0.7, 0.5, 0.3]])
def test_the_mean_accepted_length_matches_the_formula_within_one_percent(alphas):
    o = 60_001
    spec = {"method": "ngram", "num_speculative_tokens": len(alphas), "acceptance_rate": alphas}
    r = simulate(scenario(spec), one(100, o), measure_capacity=False)
    verify_steps = r.summary()["n_steps"] - 1
    assert (o - 1) / verify_steps == pytest.approx(expected_tokens_per_step(alphas), rel=0.01)
    a = alphas[0]
    if len(set(alphas)) == 1:  # the closed form for i.i.d. acceptance
        assert expected_tokens_per_step(alphas) == pytest.approx((1 - a ** (len(alphas) + 1)) / (1 - a))


def test_runs_are_deterministic_and_conserve_tokens():
    rng = np.random.default_rng(0)
    n = 300
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 30, n)),
                "prompt_tokens": rng.integers(10, 2000, n),
                "output_tokens": rng.integers(1, 300, n),
            }
        )
    )
    spec = {"method": "mtp", "num_speculative_tokens": 3, "acceptance_rate": 0.7}
    sc = scenario(spec, step="roofline", num_gpu_blocks_override=600)  # small KV: preemptions with lookahead slots
    a, b = simulate(sc, trace, measure_capacity=False), simulate(sc, trace, measure_capacity=False)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    s = a.summary()
    assert s["completed"] == n
    # what the engine emitted, not what the trace asked: one gap per token after each request's first, and the
    # verify steps' tokens (each step's own plus the accepted drafts) are every decode token but the recomputed ones
    assert a.itl.count == int((trace["output_tokens"] - 1).sum())
    assert int(a.replicas["verify_tokens"].sum()) <= a.itl.count
    assert s["spec_tokens_per_verify_step"] == pytest.approx(a.replicas["verify_tokens"].sum() / a.replicas["verifies"].sum())
    assert 1 < s["spec_tokens_per_verify_step"] <= 1 + 3
    assert s["n_preemptions"] > 0
    plain = simulate(scenario(None, step="roofline", num_gpu_blocks_override=600), trace, measure_capacity=False).summary()
    assert s["mean_tpot_ms"] < plain["mean_tpot_ms"]


def test_a_draft_model_takes_kv_cache_memory_and_time():
    spec = {"method": "draft", "num_speculative_tokens": 4, "acceptance_rate": 0.7, "draft_model": "llama-3.1-8b"}
    sc = scenario(spec, step="roofline", model="llama-3.1-70b", tp=4)
    s = simulate(sc, one(500, 50), measure_capacity=False).summary()
    target, draft = resolve_scenario(sc), resolve_scenario(scenario(None, step="roofline", model="llama-3.1-8b", tp=4))
    expected = (kv_capacity_tokens(target) - math.ceil(draft.weight_bytes / target.kv_bytes_per_token)) // 16
    assert s["kv_blocks"] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "draft", "num_speculative_tokens": 2, "acceptance_rate": 0.5}, "draft_model"),
        ({"method": "mtp", "num_speculative_tokens": 2, "acceptance_rate": [0.5]}, "one per draft position"),
        ({"method": "ngram", "num_speculative_tokens": 2, "acceptance_rate": 1.5}, "within"),
        ({"method": "ngram", "num_speculative_tokens": 0, "acceptance_rate": 0.5}, "num_speculative_tokens"),
    ],
)
def test_bad_speculative_blocks_are_one_line_errors(spec, message):
    with pytest.raises(FleetsimError, match=message) as err:
        scenario(spec)
    assert "\n" not in str(err.value)


def test_roofline_prices_speculative_decoding_by_batch():
    args = ["roofline", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "4", "--batches", "1,512"]
    r = CliRunner().invoke(app, [*args, "--context-tokens", "1024", "--speculative", "3:0.8", "--json"])
    assert r.exit_code == 0, r.output
    import json

    spec = json.loads(r.stdout)["speculative"]
    assert spec["method"] == "mtp" and spec["expected_tokens_per_step"] == pytest.approx(1 + 0.8 + 0.64 + 0.512)
    assert spec["speedup"]["1"] > 2 and spec["speedup"]["512"] < 1.1  # pays at batch 1 (memory-bound), not at 512
    bad = CliRunner().invoke(app, [*args, "--speculative", "4:1.5"])
    assert bad.exit_code == 2 and "ALPHA" in bad.output


@pytest.mark.parametrize("draft", ["llama-3.1-70b", "llama-3.1-8b"])  # larger than the target, and the target itself
def test_a_draft_model_no_smaller_than_its_target_is_refused_at_build(draft):
    spec = {"method": "draft", "num_speculative_tokens": 4, "acceptance_rate": 0.7, "draft_model": draft}
    with pytest.raises(FleetsimError) as err:
        simulate(scenario(spec, step="roofline", model="llama-3.1-8b", tp=4), one(50, 5), measure_capacity=False)
    message = str(err.value)
    assert message.startswith(f"engine.speculative.draft_model: the draft model {draft} (") and "\n" not in message
    assert "must be smaller than the target model llama-3.1-8b (8.0B parameters)" in message


def test_roofline_refuses_a_draft_larger_than_its_target():
    args = ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "4", "--speculative", "3:0.8:llama-3.1-70b"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--speculative: the draft model llama-3.1-70b" in r.output


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["ngram", "mtp", "draft"]),
    k=st.integers(1, 5),
    alpha=st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    blocks=st.integers(60, 400),
    policy=st.sampled_from(["chunked", "prefill_first"]),
    priority=st.booleans(),
)
def test_the_fast_forward_equals_the_per_step_reference(seed, method, k, alpha, blocks, policy, priority):
    """Speculative runs (a group of arrays, runs planned from the draws) against the per-step engine: every
    request's instants, preemptions and replica; the same verify counts and tokens; the same gaps."""
    rng = np.random.default_rng(seed)
    n = 60
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 5, n)),
                "prompt_tokens": rng.integers(1, 600, n),
                "output_tokens": rng.integers(1, 120, n),
            }
        )
    ).assign(priority=rng.integers(0, 2, n))
    spec = {"method": method, "num_speculative_tokens": k, "acceptance_rate": alpha}
    if method == "draft":
        spec["draft_model"] = "llama-3.1-8b"
    model = "llama-3.1-70b" if method == "draft" else "llama-3.1-8b"
    engine = {"num_gpu_blocks_override": blocks, "policy": policy, "max_num_seqs": 24, "preempt_for_priority": priority}
    runs = [
        simulate(
            scenario(spec, step="roofline", model=model, tp=4 if method == "draft" else 1, fast_forward=ff, **engine),
            trace,
            measure_capacity=False,
        )
        for ff in (True, False)
    ]
    fast, slow = runs
    assert_same_requests(fast, slow)
    a, b = fast.summary(), slow.summary()
    assert a["spec_tokens_per_verify_step"] == b["spec_tokens_per_verify_step"]
    assert fast.itl.count == slow.itl.count and a["mean_itl_ms"] == pytest.approx(b["mean_itl_ms"], rel=1e-9)
    assert a["n_steps"] == b["n_steps"]


@pytest.mark.parametrize("method", ["ngram", "mtp", "draft"])
@pytest.mark.parametrize("step", ["roofline", "constant"])
def test_a_priced_run_is_the_step_time_models_steps_float_for_float(method, step):
    """The fast-forward prices a run with `run_fn` (its per-batch terms bound once); each step must be the float the
    per-step engine gets from `step` for the same batch, or the two engines drift apart."""
    spec = {"method": method, "num_speculative_tokens": 3, "acceptance_rate": 0.7}
    if method == "draft":
        spec["draft_model"] = "llama-3.1-8b"
    model = replica_step_time(scenario(spec, step=step, model="llama-3.1-70b", tp=4))
    assert isinstance(model, SpeculativeStepTime)
    rng = np.random.default_rng(7)
    for n in (1, 7, 64):
        ctx = int(rng.integers(n, 50_000))
        tokens = np.cumsum(rng.integers(n, 4 * n, 12)).tolist()
        ends, flops, n_bytes = model.run_fn(n)(ctx, tokens)
        end = 0.0
        for j in range(len(tokens)):
            s = ctx + (tokens[j - 1] if j else 0)
            dt, fl, by = model.step(0, n, s + n, s, s)
            end += dt
            assert (ends[j], flops[j], n_bytes[j]) == (end, fl, by)
        assert model.verify_s(n, ctx) == model.step(0, n, ctx + n, ctx, ctx)[0]


def test_a_verify_step_asks_the_target_for_k_more_tokens_and_their_attention_pairs():
    """A decoding sequence with context c verifying k drafts runs k + 1 query tokens through the target, query i
    attending to c + i + 1 keys: (k + 1) c + (k + 1)(k + 2) / 2 pairs, k c + (k + 1)(k + 2) / 2 - 1 more than its
    decode step's c + 1; the LM head runs at all k + 1 positions of each (rejection sampling needs the target's
    distribution at each). All of a verify's pairs are a decoding query's (MLA prices them in its absorbed form), the
    prompt's are not. The wrapper passes everything else through, and an n-gram draft costs nothing."""
    calls = []

    class Target:
        def step(
            self,
            n_prefill_tokens,
            n_decode_seqs,
            attention_pairs,
            kv_read_tokens,
            decode_context_tokens=0,
            logit_tokens=None,
            decode_pairs=None,
            seqs=None,
        ):
            calls.append(
                (
                    n_prefill_tokens,
                    n_decode_seqs,
                    attention_pairs,
                    kv_read_tokens,
                    decode_context_tokens,
                    logit_tokens,
                    decode_pairs,
                    seqs,
                )
            )
            return 0.25, 1.0, 2.0

    model = SpeculativeStepTime(Target(), None, method="ngram", k=4, draft_cost=0.0)
    # 7 prompt tokens of one prompt (pairs 30) and two decoders with contexts 100 and 200 (decode pairs 302); the step
    # schedules 3 sequences (a host cost a sequence counts them, not the verify's 11 logit positions)
    assert model.step(7, 2, 30 + 302, 300, 300, 1 + 2) == (0.25, 1.0, 2.0)
    assert calls == [(7 + 2 * 4, 2, 30 + 5 * 300 + 2 * 15, 300, 300, 1 + 2 * 5, 5 * 300 + 2 * 15, 3)]


def test_the_replica_record_counts_each_fast_forwarded_run(monkeypatch):
    """`n_runs` in the replica records is the number of runs the speculative group took (counted at the group)."""
    from sim.run.engine.spec_group import SpecGroup

    taken = []
    take = SpecGroup.take_run

    def counting(self, run, k, start):
        taken.append(k)
        return take(self, run, k, start)

    monkeypatch.setattr(SpecGroup, "take_run", counting)
    spec = {"method": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.6}
    trace = validate_frame(
        pd.DataFrame({"arrival_at_s": [0.0, 0.5, 1.0], "prompt_tokens": [300] * 3, "output_tokens": [200] * 3})
    )
    r = simulate(scenario(spec), trace, measure_capacity=False)
    assert len(taken) >= 2 and int(r.replicas["n_runs"].sum()) == len(taken)


def test_a_drafters_steps_sum_in_closed_form_as_step_by_step():
    """`decode_sum` (a draft's k decode steps) sums in closed form when its first and last steps are bound by the same
    of compute and memory, and step by step when the run crosses from one to the other: either way the sum of the
    roofline's own steps, here around the crossover context, below it and above it."""
    from sim.run.engine.step_time import RooflineStepTime

    model = replica_step_time(scenario(None, step="roofline", model="llama-3.1-8b"))
    assert isinstance(model, RooflineStepTime)

    def crossover(n: int) -> float:
        """The context sum at which compute time equals memory time (both linear in it)."""
        mm, wb, _ = model._batch_terms(n)
        return (wb / model._bytes_per_s - mm / model._flops_per_s) / (
            model._attn / model._flops_per_s - model._kv / model._bytes_per_s
        )

    # a batch large enough that a short context is compute-bound (where that batch is depends on the GPU's figures)
    n = next(n for n in range(64, 4096, 64) if crossover(n) > 4 * n)
    cross = crossover(n)
    regimes = set()
    for context_sum in (0, int(cross) - 3 * n, int(cross) - n // 2, int(cross) + 5 * n, 4 * int(cross)):
        context_sum = max(context_sum, 0)
        for k in (1, 2, 5):
            steps = [model.step(0, n, context_sum + n * (j + 1), context_sum + n * j)[0] for j in range(k)]
            assert model.decode_sum(n, context_sum, k) == pytest.approx(sum(steps), rel=1e-12)
            lo, hi = context_sum + n, context_sum + n * k
            regimes.add((lo >= cross, hi >= cross))
    assert regimes == {(False, False), (False, True), (True, True)}
    assert model.decode_sum(n, 1000, 0) == 0.0
