from pathlib import Path

import pytest

from sim.errors import FleetsimError
from sim.scenario.config import load_config, parse_config, roofline_config
from sim.scenario.resolve import resolve_scenario

REPO = Path(__file__).resolve().parents[1]


def test_bundled_configs_load_and_resolve():
    """Every bundled scenario resolves; every bundled sweep and plan (configs/sweep-*.yaml, plan-*.yaml)
    validates all its points."""
    from sim.studies.plan import load_plan
    from sim.studies.sweep import load_sweep

    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("sweep-"):
            assert load_sweep(path).points
            continue
        if path.name.startswith("plan-"):
            assert load_plan(path).groups
            continue
        scenario = load_config(path)
        from sim.scenario.config import deployment_scenario

        # a platform: each deployment resolves (its top-level blocks are only the deployments' defaults)
        subs = [deployment_scenario(scenario, i) for i in range(len(scenario.deployments))] or [scenario]
        for sub in subs:
            setup = resolve_scenario(sub, base_dir=path.parent)
            assert setup.tp == sub.fleet.tp


def test_seed_config_resolves_to_the_article_numbers():
    setup = resolve_scenario(load_config(REPO / "configs" / "seed.yaml"))
    assert setup.effective_flops_per_s == pytest.approx(200e12)
    assert setup.effective_hbm_bw_bytes_per_s == pytest.approx(1.3e12)
    assert setup.gpu.hbm_bw_bytes_per_s == pytest.approx(2.0e12)
    assert (setup.attention, setup.comm, setup.step_overhead_s) == (False, False, 0.0)
    assert setup.usd_per_replica_s == pytest.approx(4.42 / 3600)


def test_preset_values_can_be_overridden():
    cfg = roofline_config("seed", attention=True, gpu_memory_utilization=0.9)
    assert cfg.attention is True and cfg.comm is False and cfg.gpu_memory_utilization == 0.9
    assert cfg.preset == "seed"
    assert cfg.gpu_overrides["a100-80gb"].hbm_bw_gb_per_s == 2000


def test_config_is_frozen():
    s = parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb"}})
    with pytest.raises(Exception, match="frozen"):
        s.seed = 3  # type: ignore[misc]


def test_unknown_key_is_rejected_with_its_path():
    with pytest.raises(FleetsimError, match=r"^x.yaml: fleet.gpus: unknown key \(got 'h100'\)"):
        parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb", "gpus": "h100"}}, where="x.yaml")


def test_an_autoscaler_block_of_a_fixed_fleets_keys_alone_is_the_default_fixed_kind():
    """`--set fleet.autoscaler.replicas=3` on a scenario with no autoscaler block asked for a policy (the default is
    fixed); other keys without a policy still do (above)."""
    sc = parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb", "autoscaler": {"replicas": 3}}})
    assert (sc.fleet.autoscaler.policy, sc.fleet.autoscaler.replicas) == ("fixed", 3)
    with pytest.raises(FleetsimError, match=r"fleet.autoscaler.replicas: Input should be greater than or equal to 1 \(got 0\)"):
        parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb", "autoscaler": {"replicas": 0}}})


def test_bad_value_names_path_rule_and_value():
    with pytest.raises(FleetsimError, match=r"x.yaml: fleet.tp: Input should be greater than or equal to 1 \(got 0\)"):
        parse_config({"model": "m", "fleet": {"gpu": "a100-80gb", "tp": 0}}, where="x.yaml")
    with pytest.raises(FleetsimError, match=r"roofline.weight_bits: Input should be 4, 8, 16 or 32 \(got 12\)"):
        parse_config({"model": "m", "fleet": {"gpu": "g"}, "roofline": {"weight_bits": 12}})


def test_a_tagged_block_without_or_with_an_unknown_kind_says_which_kinds_there_are():
    fleet = {"gpu": "a100-80gb", "autoscaler": {"min_replicas": 0}}
    with pytest.raises(FleetsimError, match=r"^x.yaml: fleet.autoscaler: needs a 'policy' key \(the kind of block it is\) \(got"):
        parse_config({"model": "llama-2-7b", "fleet": fleet}, where="x.yaml")
    fleet = {"gpu": "a100-80gb", "autoscaler": {"policy": "bogus"}}
    with pytest.raises(FleetsimError, match=r"fleet.autoscaler: policy must be one of 'fixed', 'hpa', .* \(got 'bogus'\)$"):
        parse_config({"model": "llama-2-7b", "fleet": fleet}, where="x.yaml")


def test_missing_required_block():
    with pytest.raises(FleetsimError, match=r"fleet: Field required$"):
        parse_config({"model": "llama-2-7b"})


def test_unknown_preset_lists_valid():
    with pytest.raises(FleetsimError, match=r"unknown roofline preset 'sed'; valid names: seed"):
        parse_config({"model": "m", "fleet": {"gpu": "g"}, "roofline": {"preset": "sed"}})


def test_unknown_gpu_and_model_in_scenario():
    with pytest.raises(FleetsimError, match=r"unknown gpu 'a200'; valid names: .*a100-80gb"):
        resolve_scenario(parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a200"}}))
    with pytest.raises(FleetsimError, match=r"unknown model 'gpt-5'"):
        resolve_scenario(parse_config({"model": "gpt-5", "fleet": {"gpu": "a100-80gb"}}))


def test_unknown_gpu_override_name():
    s = parse_config(
        {"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb"}, "roofline": {"gpu_overrides": {"a100-80": {"mfu": 0.5}}}}
    )
    with pytest.raises(FleetsimError, match=r"roofline.gpu_overrides: unknown gpu 'a100-80'"):
        resolve_scenario(s)


def test_model_from_config_json_relative_to_scenario(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(
        '{"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,'
        ' "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072}'
    )
    (tmp_path / "s.yaml").write_text("model: m/config.json\nfleet: {gpu: l4, tp: 1}\nroofline: {weight_bits: 8}\n")
    setup = resolve_scenario(load_config(tmp_path / "s.yaml"), base_dir=tmp_path)
    assert setup.model.n_params / 1e9 == pytest.approx(8.03, rel=0.01)


def test_user_gpu_catalog(tmp_path):
    (tmp_path / "gpus.yaml").write_text(
        "my-gpu:\n  bf16_tflops: 100\n  hbm_gb: 200\n  hbm_bw_gb_per_s: 1000\n  interconnect_gb_per_s: 100\n"
    )
    (tmp_path / "s.yaml").write_text("model: llama-2-70b\ngpu_catalog: gpus.yaml\nfleet: {gpu: my-gpu}\n")
    setup = resolve_scenario(load_config(tmp_path / "s.yaml"), base_dir=tmp_path)
    assert setup.gpu.hbm_bytes == 200e9 and setup.usd_per_gpu_hour is None


def test_bad_user_gpu_catalog(tmp_path):
    (tmp_path / "gpus.yaml").write_text(
        "my-gpu:\n  bf16_tflops: -1\n  hbm_gb: 1\n  hbm_bw_gb_per_s: 1\n  interconnect_gb_per_s: 1\n"
    )
    from sim.physics.hardware import load_gpu_catalog

    with pytest.raises(
        FleetsimError, match=r"gpus.yaml: my-gpu.bf16_tflops: Input should be greater than or equal to 0.001 \(got -1\)"
    ):
        load_gpu_catalog(tmp_path / "gpus.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(FleetsimError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FleetsimError, match=r"nope.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(FleetsimError, match=r"a scenario must be a YAML mapping \(got list\)"):
        load_config(tmp_path / "list.yaml")


def test_exponent_numbers_read_as_numbers_in_files_and_sets(tmp_path):
    """YAML 1.2 numbers such as 1e-5 (PyYAML's 1.1 rules would read a string) in a file and in --set."""
    from sim.scenario.config import apply_sets, load_config

    path = tmp_path / "s.yaml"
    path.write_text("model: llama-3.1-8b\nfleet: {gpu: h100-sxm, tp: 1}\nroofline: {step_overhead_s: 1e-3}\n")
    sc = load_config(path, sets=["roofline.gpu_overrides.h100-sxm.allreduce_latency_s=2E-5"])
    assert sc.roofline.step_overhead_s == 1e-3
    assert sc.roofline.gpu_overrides["h100-sxm"].allreduce_latency_s == 2e-5
    assert apply_sets({}, ["a=1e", "b=abc"]) == {"a": "1e", "b": "abc"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[" * 10_000 + "]" * 10_000, "is nested more than 50 levels deep"),  # was a RecursionError
        ("[" * 60 + "]" * 60, "is nested more than 50 levels deep"),
        ("x" * 1_000_001, "is larger than 1,000,000 bytes"),
        ("[" + ", ".join(["&a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", *["*a"] * 20_000]) + "]", "is more than 100,000 values"),
    ],
)
def test_a_set_value_has_the_scenario_files_bounds(value, problem):
    from sim.scenario.config import apply_sets

    with pytest.raises(FleetsimError) as err:
        apply_sets({}, [f"engine.x={value}"])
    message = str(err.value)
    assert message.startswith("--set engine.x: the value '") and problem in message and len(message) < 200
