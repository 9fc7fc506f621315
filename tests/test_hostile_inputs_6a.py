"""Hostile inputs from a sixth fuzzing pass (configs): scenario blocks, `--set` overrides and the commands that read
them (run, plan, sweep, export, import). Each was accepted with impossible figures, hung, or ended in a traceback;
each now ends in one line naming the field, the rule and the value, exit code 2, and writes nothing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import one_line_error

REPO = Path(__file__).resolve().parents[1]

SMALL = """\
model: llama-3.1-8b
trace:
  arrivals: {process: poisson, rate_per_s: 2}
  prompt_tokens: {dist: fixed, tokens: 200}
  output_tokens: {dist: fixed, tokens: 50}
  n_requests: 30
fleet:
  gpu: h100
"""


def _run(tmp_path: Path, *sets: str) -> list[str]:
    """`fleetsim run` of a small synthetic scenario with these `--set`s, into tmp_path/run."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    args = ["run", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--no-capacity"]
    for s in sets:
        args += ["--set", s]
    return args


@contextmanager
def _within(seconds: int) -> Iterator[None]:
    """Fail (not hang) when the body runs past `seconds`: what a hang looked like before its fix."""

    def _alarm(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("autoscaler", "says"),
    [
        (
            "{policy: kpa, max_replicas: 3, stable_window_s: 1e-300}",
            "stable_window_s: Input should be greater than or equal to 0.001",
        ),
        ("{policy: kpa, max_replicas: 3, panic_window_percentage: 1e-300}", "the panic window"),
        ("{policy: kpa, max_replicas: 3, target_concurrency: 1e-320}", "target_concurrency: Input should be greater than"),
        ("{policy: hpa, max_replicas: 3, target: 1e-320}", "target: Input should be greater than or equal to 0.000001"),
        ("{policy: hpa, max_replicas: 3, scale_up_percent: 1e308}", "scale_up_percent: Input should be less than"),
        ("{policy: queue, max_replicas: 3, target_waiting: 1e-320}", "target_waiting: Input should be greater than"),
        ("{policy: predictive, max_replicas: 3, requests_per_replica_s: 1e-320}", "requests_per_replica_s: Input should"),
    ],
)
def test_autoscaler_targets_and_windows_are_bounded_below(tmp_path, autoscaler, says):
    """A KPA stable (or panic) window of 1e-300 s held no sample, not even the tick's own: a ZeroDivisionError
    traceback mid-run; a target of 1e-320 (HPA, KPA) made desired = ceil(inf): an OverflowError traceback."""
    one_line_error(_run(tmp_path, f"fleet.autoscaler={autoscaler}"), says)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("capacity", "says"),
    [
        ("fleet.capacity.failures={gpu_mtbf_hours: 1e-300}", "gpu_mtbf_hours: Input should be greater than or equal to 0.01"),
        (
            "fleet.capacity.spot={interruptions_per_hour: 1e300}",
            "interruptions_per_hour: Input should be less than or equal to 100",
        ),
    ],
)
def test_hazard_rates_are_bounded(tmp_path, capacity, says):
    """A GPU MTBF of 1e-300 hours (or 1e300 spot reclaims an hour) lost each replica the instant it launched and
    launched its replacement at the same instant: the run never advanced its clock, its memory growing until killed."""
    with _within(30):
        one_line_error(_run(tmp_path, capacity, "pricing.spot_usd_per_gpu_hour=1"), says)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["fleet.mode=disaggregated", "fleet.link.gb_per_s_per_gpu=1e-300"], "fleet.link.gb_per_s_per_gpu: Input should be"),
        (["fleet.lifecycle.start=cold", "fleet.lifecycle.load_gb_per_s=1e-300"], "fleet.lifecycle.load_gb_per_s: Input should"),
        (["engine.lora.load_gb_per_s=1e-300"], "engine.lora.load_gb_per_s: Input should be greater than or equal to 0.001"),
        (["engine.lora.host_to_gpu_gb_per_s=1e-300"], "engine.lora.host_to_gpu_gb_per_s: Input should be greater"),
        (["fleet.lifecycle.sleep={level: 1, host_to_gpu_gb_per_s: 1e-300}"], "sleep.host_to_gpu_gb_per_s: Input should be"),
    ],
)
def test_bandwidths_are_bounded_as_the_gpus_are(tmp_path, sets, says):
    """A KV link, weight load or adapter copy of 1e-300 GB/s (only > 0 was asked) took 1e300 s: the run simulated
    20,000,000 s (27 s of wall time for the link) and then blamed the step times, saying "0 waiting and 0 running"
    of requests stuck on the link."""
    one_line_error(_run(tmp_path, *sets), says)
    assert not (tmp_path / "run").exists()


def test_a_yaml_merge_key_is_read_not_called_invalid(tmp_path):
    """`decode: {<<: *pool, tp: 1}` (YAML's merge key, which PyYAML's safe loader reads) was refused as "invalid YAML
    (could not determine a constructor for the tag ...merge)": the duplicate-key check built the `<<` key itself."""
    from sim.scenario.config import load_config

    config = tmp_path / "disagg.yaml"
    config.write_text(
        SMALL
        + "  mode: disaggregated\n"
        + "  prefill: &pool {autoscaler: {policy: fixed, replicas: 2}, tp: 2}\n"
        + "  decode: {<<: *pool, tp: 1}\n"
    )
    fleet = load_config(config).fleet
    assert fleet.decode.autoscaler.max_replicas == 2 and fleet.decode.tp == 1 and fleet.prefill.tp == 2
    config.write_text(SMALL + "  prefill: {<<: {tp: 2}, tp: 1, tp: 4}\n")  # an explicit key given twice still is an error
    one_line_error(["run", str(config), "--out", str(tmp_path / "run")], "line 9: key 'tp' is given twice")


def test_a_plan_whose_largest_scale_cannot_be_built_says_why(tmp_path):
    """`scale: {path: fleet.tp, from: 1, to: 3}`: tp=1 builds (the plan was accepted), tp=3 does not divide the heads;
    bisection ran tp=3 first, every run failed, and the plan ended in a KeyError: 'cost_usd' traceback (a run folder of
    points left behind)."""
    from typer.testing import CliRunner

    from sim.cli import app

    (tmp_path / "small.yaml").write_text(SMALL)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "base: small.yaml\nsearch: {fleet.gpu: [h100]}\nscale: {path: fleet.tp, from: 1, to: 3}\n"
        "slo: {p99_ttft_ms: 2000}\nseeds: 1\n"
    )
    res = CliRunner().invoke(app, ["plan", str(plan), "--out", str(tmp_path / "plan")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "no configuration meets the SLO" in res.output and "tp=3 must divide" in res.output


def test_export_looks_the_gpu_and_model_up_as_run_does(tmp_path):
    """`fleet.gpu: h100` (the catalog's alias of h100-sxm, which `run` reads) and `model: Llama-3.1-8B` (the catalog is
    case-insensitive) were refused by `export`: "no Kubernetes node label is known for it", "needs a catalog model"."""
    from typer.testing import CliRunner

    from sim.cli import app

    config = tmp_path / "small.yaml"
    config.write_text(SMALL.replace("llama-3.1-8b", "Llama-3.1-8B"))
    res = CliRunner().invoke(app, ["export", str(config)])
    assert res.exit_code == 0, res.output
    assert "nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3" in res.output and "meta-llama/Llama-3.1-8B" in res.output


@pytest.mark.parametrize(
    ("autoscaler", "says"),
    [
        ("{policy: hpa, max_replicas: 3, scale_down_stabilization_s: 1e300}", "stabilizationWindowSeconds must be within"),
        ("{policy: queue, max_replicas: 3, scale_down_delay_s: 7200}", "stabilizationWindowSeconds must be within"),
        ("{policy: hpa, max_replicas: 3, interval_s: 3601}", "periodSeconds must be within [1, 1,800] s"),
        (
            "{policy: kpa, max_replicas: 3, stable_window_s: 0.5}",
            "Knative's window must be within [6, 3,600] s, so export cannot write it (got 0.5)",
        ),
        ("{policy: kpa, max_replicas: 3, scale_to_zero_grace_s: 1e300}", "a Kubernetes duration is at most"),
    ],
)
def test_export_refuses_what_the_api_server_would(tmp_path, autoscaler, says):
    """`export` wrote `stabilizationWindowSeconds: 1000000000000000052504760255204420248704...` (a 301-digit integer;
    the HPA takes at most 3600), a Knative window of `1s` (Knative takes 6 s to 1 h) and a retention period of
    `1e+300s` (not a Go duration): manifests the cluster refuses, exit code 0."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "manifests.yaml"
    one_line_error(["export", str(config), "--set", f"fleet.autoscaler={autoscaler}", "--out", str(out)], says)
    assert not out.exists()


def test_export_writes_a_small_retention_period_as_a_go_duration(tmp_path):
    """`scale_to_zero_grace_s: 0.00001` was written `1e-05s`, which Go's time.ParseDuration (Knative's) refuses."""
    from typer.testing import CliRunner

    from sim.cli import app

    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    auto = "fleet.autoscaler={policy: kpa, max_replicas: 3, scale_to_zero_grace_s: 0.00001}"
    res = CliRunner().invoke(app, ["export", str(config), "--set", auto])
    assert res.exit_code == 0 and "scale-to-zero-pod-retention-period: 0.00001s" in res.output, res.output


@pytest.mark.parametrize("dp", ["0", "-2"])
def test_import_refuses_a_data_parallel_size_below_one(tmp_path, dp):
    """`--data-parallel-size 0` (or -2) was imported: a scenario written with a note of "the vLLM layout uses 0 GPUs
    (tp 1 x dp 0)" (or -2), exit code 0; vLLM itself refuses it."""
    text = (REPO / "configs" / "cluster" / "deployment-hpa.yaml").read_text()
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(text.replace("--port 8000", f"--port 8000 --data-parallel-size {dp}", 1))
    out = tmp_path / "scenario.yaml"
    one_line_error(["import", str(manifest), "--out", str(out)], f"vLLM option data_parallel_size must be >= 1 (got {dp})")
    assert not out.exists()


def test_scaling_a_pool_of_100000_replicas_down_is_not_quadratic(tmp_path):
    """A fleet started at 100,000 replicas (the bound) scaled down to 1: each release removed its slot from a list,
    a scan of the pool: 50 s of simulation for 30 requests (a dedicated batch pool of 100,000 released at its end:
    over a minute)."""
    from typer.testing import CliRunner

    from sim.cli import app

    hpa = "{policy: hpa, max_replicas: 100000, initial_replicas: 100000, scale_down_stabilization_s: 0}"
    with _within(25):
        res = CliRunner().invoke(app, _run(tmp_path, f"fleet.autoscaler={hpa}"))
    assert res.exit_code == 0, res.output
    assert "100000 / 100000" in res.output


def test_a_gpu_override_keyed_in_capitals_is_applied_not_ignored(tmp_path):
    """`roofline.gpu_overrides.H100-SXM` passed the name check (made case-blind) but was looked up as given: the
    override was silently left unapplied (100 GB/s of HBM bandwidth ran at the catalog's 3,350: TPOT 6 ms, not 190).
    Its alias (`h100`) was "unknown gpu" although `fleet.gpu: h100` runs."""
    from typer.testing import CliRunner

    from sim.cli import app

    tpot = []
    for key in ("h100-sxm", "H100-SXM"):
        res = CliRunner().invoke(app, [*_run(tmp_path, f"roofline.gpu_overrides.{key}.hbm_bw_gb_per_s=100"), "--json", "--force"])
        assert res.exit_code == 0, res.output
        tpot.append(res.output[res.output.index('"mean_tpot_ms"') :].split(",")[0])
    assert tpot[0] == tpot[1]
    one_line_error(_run(tmp_path, "roofline.gpu_overrides.h100.mfu=0.5"), "'h100' is an alias of 'h100-sxm'")


def test_an_unknown_roofline_preset_names_the_file_and_the_field(tmp_path):
    """`roofline: {preset: turbo}` ended in "error: unknown roofline preset 'turbo'; valid names: seed": neither the
    scenario file nor the key (a deployment's: nor the deployment)."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL + "roofline: {preset: turbo}\n")
    one_line_error(["run", str(config), "--out", str(tmp_path / "run")], f"{config}: roofline.preset: unknown roofline preset")
    config.write_text(
        SMALL.replace("model: llama-3.1-8b\n", "")
        + "deployments:\n  - {name: a, model: llama-3.1-8b, roofline: {preset: turbo}}\n"
    )
    one_line_error(["run", str(config), "--out", str(tmp_path / "run")], "deployments.0 (a): roofline.preset: unknown roofline")


def test_deployment_shares_are_bounded(tmp_path):
    """Two deployments of `share: 1e308` each summed to inf: numpy's draw of each request's deployment ended in a
    ValueError traceback ("probabilities do not sum to 1")."""
    config = tmp_path / "platform.yaml"
    config.write_text(
        SMALL.replace("model: llama-3.1-8b\n", "")
        + "deployments:\n  - {name: a, model: llama-3.1-8b, share: 1e308}\n  - {name: b, model: qwen2.5-7b, share: 1e308}\n"
    )
    one_line_error(["run", str(config), "--out", str(tmp_path / "run")], "deployments[0].share: Input should be less than")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["export", "import", "run --html"])
def test_an_output_file_that_is_the_input_is_refused(tmp_path, command):
    """`export s.yaml --out s.yaml`, `import d.yaml --out d.yaml` (or a file of a folder imported) and
    `run s.yaml --html s.yaml` replaced the file they read (the scenario became manifests, or an HTML page), exit 0."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    manifest = tmp_path / "cluster" / "deployment.yaml"
    manifest.parent.mkdir()
    manifest.write_text((REPO / "configs" / "cluster" / "deployment-hpa.yaml").read_text())
    args = {
        "export": ["export", str(config), "--out", str(config)],
        "import": ["import", str(manifest.parent), "--out", str(manifest)],
        "run --html": ["run", str(config), "--out", str(tmp_path / "run"), "--html", str(config)],
    }[command]
    before = (config.read_text(), manifest.read_text())
    one_line_error(args, "is the file read")
    assert (config.read_text(), manifest.read_text()) == before
    assert not (tmp_path / "run").exists()
