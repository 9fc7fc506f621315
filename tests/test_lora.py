"""LoRA adapters: an adapter's size and slot memory by hand, the batch's `max_loras` (skipped requests keep their
place), load times from storage and from host memory, the step's extra cost, the fast-forward against the per-step
reference, the LoRA-aware router's rule, the trace's `adapters:` block, and bad input."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.physics import lora as L
from sim.physics.models import load_model_catalog
from sim.policies.router import prefix_choice
from sim.run.pools import kv_blocks, lora_costs
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.scenario.resolve import resolve_scenario
from sim.workload import validate_frame
from sim.workload.adapters import AdapterMix, adapter_probabilities, assign_adapters
from tests.test_engine_equivalence import assert_same_requests

MODELS = load_model_catalog()
A, D = 1e-4, 0.01  # constant step time: s per prompt token, s per decode step


def test_a_llama_8b_rank_16_adapter_by_hand():
    """Llama-3.1-8B (d 4096, 32 heads of 128, 8 KV heads, MLP 14336, 32 layers), rank 16 on every linear layer:
    q, o 16 x (4096 + 4096); k, v 16 x (4096 + 1024); gate, up, down 16 x (4096 + 14336): 1,310,720 a layer,
    41.9 M in all, 83.9 MB at 16 bits (the size of a PEFT checkpoint of that shape)."""
    m = MODELS.get("llama-3.1-8b")
    per_layer = 2 * 16 * 8192 + 2 * 16 * 5120 + 3 * 16 * 18432
    assert per_layer == 1_310_720
    assert L.adapter_params(m, rank=16, target="all_linear") == 32 * per_layer
    assert L.adapter_bytes(m, rank=16, target="all_linear") == 2 * 32 * per_layer
    assert L.adapter_params(m, rank=16, target="attention") == 32 * (2 * 16 * 8192 + 2 * 16 * 5120)
    assert L.flops_per_token(m, rank=8, target="all_linear") == 2 * 32 * per_layer // 2
    # TP 2: column-parallel layers keep A whole and halve B, row-parallel ones halve A and keep B
    col = 16 * (4096 + 4096 / 2) + 2 * 16 * (4096 + 1024 / 2) + 2 * 16 * (4096 + 14336 / 2)
    row = 16 * (4096 / 2 + 4096) + 16 * (14336 / 2 + 4096)
    assert L.slot_bytes(m, rank=16, target="all_linear", tp=2) == pytest.approx(2 * 32 * (col + row))
    assert L.slot_bytes(m, rank=16, target="all_linear", tp=1) == L.adapter_bytes(m, rank=16, target="all_linear")


def test_moe_and_mla_models_carry_adapters_on_attention_and_dense_mlps_only():
    ds = MODELS.get("deepseek-v3")
    names = {mod.name for mod in L.modules(ds, "all_linear")}
    assert {"q_a", "q_b", "kv_a", "kv_b", "o", "gate", "up", "down"} == names
    mlps = [mod for mod in L.modules(ds, "all_linear") if mod.name == "down"]
    assert sorted(mod.layers for mod in mlps) == [3, 58]  # 3 dense layers, the shared expert of 58 MoE layers
    qwen = MODELS.get("qwen3-30b-a3b")  # no dense layer, no shared expert: attention only
    assert L.adapter_params(qwen, rank=8, target="all_linear") == L.adapter_params(qwen, rank=8, target="attention")


def scenario(lora, *, ff=True, replicas=1, router="least_outstanding", step="constant", **engine):
    st_ = {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D} if step == "constant" else {"kind": "roofline"}
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "router": router, "autoscaler": {"policy": "fixed", "replicas": replicas}},
            "engine": {"fast_forward": ff, "step_time": st_, "lora": lora, **engine},
        }
    )


def trace(rows):
    """rows: (arrival, prompt, output, adapter)."""
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": [r[0] for r in rows],
                "prompt_tokens": [r[1] for r in rows],
                "output_tokens": [r[2] for r in rows],
                "adapter": [r[3] for r in rows],
            }
        )
    )


def test_the_slots_come_out_of_the_kv_cache():
    """vLLM allocates max_loras adapter slots at start: 4 slots of 83.9 MB on one H100 leave that much less KV."""
    from sim.physics.roofline import kv_capacity_tokens

    sc = scenario({"max_loras": 4}, step="roofline")
    setup = resolve_scenario(sc)
    costs = lora_costs(sc.engine, setup)
    assert costs is not None and costs.slot_bytes == L.adapter_bytes(setup.model, rank=16, target="all_linear")
    tokens = kv_capacity_tokens(setup)
    assert kv_blocks(sc, setup, None) == tokens // 16
    assert kv_blocks(sc, setup, None, costs) == (tokens - math.ceil(4 * costs.slot_bytes / setup.kv_bytes_per_token)) // 16


def test_max_loras_skips_requests_whose_adapter_would_pass_it_and_they_keep_their_place():
    """max_loras 1: A (adapter 0), B (adapter 1), C (adapter 0), D (base model) arrive together. The first step
    admits A, C and D; B waits (skipped, not dropped) until adapter 0 is no longer running, then runs."""
    rows = [(0.0, 100, 3, 0), (0.0, 100, 3, 1), (0.0, 100, 3, 0), (0.0, 100, 3, -1)]
    r = simulate(scenario({"max_loras": 1, "max_cpu_loras": 2}), trace(rows), measure_capacity=False).requests
    t = r["scheduled_at_s"].to_numpy()
    assert t[0] == t[2] == t[3] < t[1]
    assert t[1] >= max(r["completed_at_s"].to_numpy()[[0, 2]]) - 1e-12  # after adapter 0's requests finished
    # with two slots, all four in the first step
    r2 = simulate(scenario({"max_loras": 2}), trace(rows), measure_capacity=False).requests
    assert len(set(r2["scheduled_at_s"])) == 1


def test_a_load_stalls_the_step_that_admits_it_from_storage_then_from_host_memory():
    """A step admitting a request whose adapter is in no GPU slot waits for its load: storage (local NVMe, then host
    memory) the first time, host memory only once it is cached there but evicted from its slot."""
    lora = {"max_loras": 1, "max_cpu_loras": 2, "load_gb_per_s": 1.0, "host_to_gpu_gb_per_s": 10.0}
    size = L.adapter_bytes(MODELS.get("llama-3.1-8b"), rank=16, target="all_linear")
    load, copy = size / 1e9, size / 10e9
    rows = [(0.0, 100, 1, 0), (10.0, 100, 1, 1), (20.0, 100, 1, 0), (30.0, 100, 1, -1)]
    res = simulate(scenario(lora), trace(rows), measure_capacity=False)
    ttft = (res.requests["first_token_at_s"] - res.requests["arrival_at_s"]).to_numpy()
    assert ttft[0] == pytest.approx(load + copy + 100 * A, rel=1e-9)
    assert ttft[1] == pytest.approx(load + copy + 100 * A, rel=1e-9)  # adapter 1 evicts adapter 0 from the slot
    assert ttft[2] == pytest.approx(copy + 100 * A, rel=1e-9)  # adapter 0 still in host memory
    assert ttft[3] == pytest.approx(100 * A, rel=1e-9)  # the base model loads nothing
    s = res.summary()
    assert s["lora_loads"] == 3 and s["lora_load_s"] == pytest.approx(2 * load + 3 * copy, rel=1e-9)
    assert res.meta["lora"]["adapters_in_trace"] == 2 and res.meta["lora"]["requests_with_adapter"] == 3
    # host memory is least recently used too: 0, 1, 0 again, then 2 evicts 1 (not 0) from host memory
    rows = [(0.0, 100, 1, 0), (10.0, 100, 1, 1), (20.0, 100, 1, 0), (30.0, 100, 1, 2), (40.0, 100, 1, 0), (50.0, 100, 1, 1)]
    r = simulate(scenario(lora), trace(rows), measure_capacity=False).requests
    ttft = (r["first_token_at_s"] - r["arrival_at_s"]).to_numpy() - 100 * A
    assert ttft == pytest.approx([load + copy, load + copy, copy, load + copy, copy, load + copy], rel=1e-9)


def test_a_running_adapter_adds_its_kernels_to_each_step():
    """On the roofline, a decode step of one request with an adapter costs the base step plus the adapter's FLOPs at
    the replica's effective FLOP/s and its slot's bytes at its effective bandwidth."""
    from sim.run.engine.lora import LoraState, LoraStepTime
    from sim.run.pools import replica_step_time

    sc = scenario({"max_loras": 2}, step="roofline")
    setup = resolve_scenario(sc)
    costs = lora_costs(sc.engine, setup)
    assert costs is not None
    state = LoraState(costs)
    model = LoraStepTime(replica_step_time(sc.model_copy(update={"engine": sc.engine.model_copy(update={"lora": None})})), state)
    base = model.inner.step(0, 4, 4 * 1001, 4000, 4000, 4)
    assert model.step(0, 4, 4 * 1001, 4000, 4000, 4) == base  # no adapter running: nothing added
    state.start(3)
    state.start(5)
    dt, flops, n_bytes = model.step(0, 4, 4 * 1001, 4000, 4000, 4)
    extra_f, extra_b = 4 * costs.flops_per_token, 2 * costs.slot_bytes
    assert (flops - base[1], n_bytes - base[2]) == pytest.approx((extra_f, extra_b))
    assert dt - base[0] == pytest.approx(extra_f / costs.flops_per_s + extra_b / costs.bytes_per_s, rel=1e-9)
    line = model.decode_line(n_seqs=4, context_sum=4000)  # a decode run's steps pay the same
    assert line.at(0) == pytest.approx(dt, rel=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    max_loras=st.integers(1, 4),
    n_adapters=st.integers(1, 8),
    replicas=st.integers(1, 3),
    router=st.sampled_from(["least_outstanding", "lora_aware"]),
    policy=st.sampled_from(["chunked", "prefill_first"]),
    blocks=st.sampled_from([None, 60]),
)
def test_the_fast_forward_equals_the_per_step_reference_with_lora(seed, max_loras, n_adapters, replicas, router, policy, blocks):
    rng = np.random.default_rng(seed)
    n = 80
    rows = [
        (float(t), int(p), int(o), int(a))
        for t, p, o, a in zip(
            np.cumsum(rng.exponential(0.05, n)),
            rng.integers(16, 600, n),
            rng.integers(1, 80, n),
            rng.integers(-1, n_adapters, n),
            strict=True,
        )
    ]
    frame = trace(rows)
    extra = {"policy": policy, "num_gpu_blocks_override": blocks, "max_num_seqs": 16}
    lora = {"max_loras": max_loras, "max_cpu_loras": max_loras + 1}
    out = {
        ff: simulate(
            scenario(lora, ff=ff, replicas=replicas, router=router, step="roofline", **extra), frame, measure_capacity=False
        )
        for ff in (True, False)
    }
    assert_same_requests(out[True], out[False])
    assert out[True].summary()["lora_loads"] == out[False].summary()["lora_loads"]


def test_the_lora_aware_rule():
    """Within the slack, a replica holding the adapter wins; past it, the least loaded does."""
    assert prefix_choice([3, 0, 5], [1, 0, 1], slack=4) == 0
    assert prefix_choice([6, 0, 5], [1, 0, 0], slack=4) == 1
    assert prefix_choice([2, 2, 2], [0, 1, 1], slack=0) == 1


def test_lora_aware_routing_loads_fewer_adapters_than_least_outstanding():
    rows = []
    rng = np.random.default_rng(5)
    for i in range(300):
        rows.append((i * 0.02, int(rng.integers(50, 400)), int(rng.integers(5, 60)), int(rng.integers(0, 6))))
    loads = {}
    for router in ("least_outstanding", "lora_aware"):
        res = simulate(
            scenario({"max_loras": 2, "max_cpu_loras": 6}, replicas=3, router=router), trace(rows), measure_capacity=False
        )
        loads[router] = res.summary()["lora_loads"]
    assert loads["lora_aware"] < loads["least_outstanding"]


def test_an_adapters_block_draws_a_zipf_mix_with_a_base_share():
    base = validate_frame(pd.DataFrame({"arrival_at_s": np.arange(20000.0), "prompt_tokens": 10, "output_tokens": 5}))
    mix = AdapterMix(count=10, zipf=1.0, base_share=0.25)
    a = assign_adapters(base, mix, seed=3)["adapter"].to_numpy()
    assert abs((a == -1).mean() - 0.25) < 0.02
    p = adapter_probabilities(mix)
    assert p[0] / p[1] == pytest.approx(2.0) and p.sum() == pytest.approx(1.0)
    named = a[a >= 0]
    assert abs((named == 0).mean() - p[0]) < 0.02 and named.max() <= 9
    assert (assign_adapters(base, mix, seed=3)["adapter"].to_numpy() == a).all()
    assert not (assign_adapters(base, mix, seed=4)["adapter"].to_numpy() == a).all()


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"max_loras": 4, "max_cpu_loras": 2}, "max_cpu_loras must be >= max_loras (got 2 < 4)"),
        ({"adapters_from": "floppy"}, "adapters_from: unknown storage tier 'floppy'"),
        ({"max_loras": 0}, "engine.lora.max_loras"),
    ],
)
def test_bad_lora_blocks_are_one_line_errors(lora, message):
    with pytest.raises(FleetsimError, match=re.escape(message)):
        scenario(lora)


def test_lora_with_speculative_decoding_is_refused_at_build():
    sc = scenario({"max_loras": 1}, speculative={"method": "ngram", "num_speculative_tokens": 2, "acceptance_rate": 0.5})
    with pytest.raises(FleetsimError, match=re.escape("engine.lora: LoRA adapters with speculative decoding are not modelled")):
        simulate(sc, trace([(0.0, 10, 2, 0)]), measure_capacity=False)


@pytest.mark.parametrize(("cell", "shown"), [("1.5", "1.5"), ("-2", "-2"), ("x", "'x'"), ("2147483648", "2147483648")])
def test_a_bad_adapter_cell_names_the_line_and_exits_2(tmp_path, cell, shown):
    path = tmp_path / "t.csv"
    path.write_text(f"arrival_at_s,prompt_tokens,output_tokens,adapter\n0,10,5,3\n1,10,5,{cell}\n")
    r = CliRunner().invoke(app, ["trace", "inspect", str(path)])
    assert r.exit_code == 2
    assert (
        f"t.csv line 3: adapter must be an integer in [0, 2147483647] (or empty / -1: the base model) (got {shown})" in r.output
    )


def test_the_run_warns_when_adapters_and_lora_do_not_meet(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens,adapter\n0,10,5,3\n1,10,5,\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"model: llama-3.1-8b\nfleet: {{gpu: h100-sxm}}\ntrace: {path}\n")
    r = CliRunner().invoke(app, ["run", str(plain), "--out", str(tmp_path / "o1")])
    assert r.exit_code == 0, r.output
    assert "the trace names LoRA adapters (its `adapter` column), but engine.lora is off" in r.output
    bare = tmp_path / "bare.csv"
    bare.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n")
    on = tmp_path / "on.yaml"
    on.write_text(f"model: llama-3.1-8b\nfleet: {{gpu: h100-sxm}}\nengine: {{lora: {{max_loras: 2}}}}\ntrace: {bare}\n")
    r = CliRunner().invoke(app, ["run", str(on), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0, r.output
    assert "engine.lora is on, but the trace names no adapter" in r.output


def test_the_html_report_shows_the_adapters():
    from sim.results.html_report import render_html

    rows = [(0.0, 100, 3, 0), (0.0, 100, 3, 1), (1.0, 100, 3, -1)]
    page = render_html(simulate(scenario({"max_loras": 2}), trace(rows), measure_capacity=False))
    assert 'id="lora"' in page and "2 / 2" in page and "2 x rank 16 (84 MB each)" in page
    plain = render_html(simulate(scenario(None), trace(rows), measure_capacity=False))
    assert 'id="lora"' not in plain


def test_the_lora_wrapper_passes_every_argument_through_with_the_protocols_defaults():
    """`LoraStepTime.step` adds its adapters' cost to the wrapped model's step for the same arguments — its defaults
    (no decoders' context, logits everywhere, decode pairs from the decoders) and an explicit `decode_pairs` (an MLA
    model prices decoding queries apart) alike; with no adapter running it adds nothing."""
    from sim.run.engine.lora import LoraState, LoraStepTime
    from sim.run.engine.step_time import RooflineStepTime

    sc = parse_config({"model": "deepseek-v3", "fleet": {"gpu": "h200", "tp": 8}, "engine": {"lora": {"max_loras": 2}}})
    setup = resolve_scenario(sc)
    costs = lora_costs(sc.engine, setup)
    assert costs is not None
    inner = RooflineStepTime(setup)
    state = LoraState(costs)
    model = LoraStepTime(inner, state)
    assert model.step(300, 4, 5000, 3000) == inner.step(300, 4, 5000, 3000)
    state.start(1)
    for call, tokens in (((300, 4, 5000, 3000), 304), ((0, 8, 8000, 7992, 7992, 8, 20_000), 8)):
        base, got, extra = inner.step(*call), model.step(*call), state.extra(tokens)
        assert got == pytest.approx(tuple(b + e for b, e in zip(base, extra, strict=True)), rel=1e-12)
    assert model.step(0, 8, 8000, 7992, 7992, 8, 20_000)[1] != model.step(0, 8, 8000, 7992, 7992, 8)[1]
