"""`fleetsim import` / `fleetsim export`: real-looking manifests (tests/data/cluster, each citing its upstream schema)
read into scenarios, vLLM command lines parsed as vLLM parses them, bad manifests refused in one line, and the round
trip: import(export(scenario)) is the scenario for everything both express."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.physics.models import load_model_catalog
from sim.scenario.config import parse_config
from sim.scenario.exporter import export_manifests, render_manifests
from sim.scenario.importer import AMD_PRODUCT, GFD_PRODUCT, gpu_from_label, import_files, nest, scenario_values
from sim.scenario.vllm_args import find_vllm, parse_args, split_command

DATA = Path(__file__).resolve().parents[1] / "configs" / "cluster"
runner = CliRunner()


def imported(*names: str, **kw: Any) -> tuple[dict[str, Any], list[str]]:
    imp = import_files([DATA / n for n in names])
    return nest(scenario_values(imp, **kw)), imp.notes


# --- vLLM's command line ------------------------------------------------------------------------------
def test_vllm_arguments_parse_as_vllm_reads_them():
    words = split_command(
        "sh -c 'vllm serve org/m -tp 4 --max-num-seqs=64 --no-enable-prefix-caching --enforce-eager --port 80 && true'", "x"
    )
    words = split_command(words[2], "x")
    args = find_vllm(words)
    assert args == [
        "--model",
        "org/m",
        "-tp",
        "4",
        "--max-num-seqs=64",
        "--no-enable-prefix-caching",
        "--enforce-eager",
        "--port",
        "80",
    ]
    opts = parse_args(args, "x")
    assert opts == {
        "model": "org/m",
        "tensor_parallel_size": "4",
        "max_num_seqs": "64",
        "enable_prefix_caching": False,
        "enforce_eager": True,
        "port": "80",
    }
    assert find_vllm(["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"]) == ["--model", "m"]
    assert find_vllm(["python3", "server.py"]) is None
    with pytest.raises(FleetsimError, match="--max-num-seqs needs a value"):
        parse_args(["--max-num-seqs"], "x")
    with pytest.raises(FleetsimError, match="'stray' is not an option"):
        parse_args(["--enforce-eager", "stray"], "x")


@pytest.mark.parametrize(
    ("key", "value", "gpu"),
    [
        ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3", "h100-sxm"),
        ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB", "a100-40gb"),
        ("nvidia.com/gpu.product", "NVIDIA-L4", "l4"),
        ("cloud.google.com/gke-accelerator", "nvidia-tesla-a100", "a100-40gb"),
        ("cloud.google.com/gke-accelerator", "nvidia-h200-141gb", "h200"),
        ("karpenter.k8s.aws/instance-gpu-name", "a10g", "a10g"),
        ("node.kubernetes.io/instance-type", "p5.48xlarge", "h100-sxm"),
        ("node.kubernetes.io/instance-type", "g6e.12xlarge", "l40s"),
        ("node.kubernetes.io/instance-type", "m5.large", None),
        ("nvidia.com/gpu.product", "Tesla-V100-SXM2-16GB", "v100-16gb"),
        ("nvidia.com/gpu.product", "Tesla-K80", None),
    ],
)
def test_gpu_labels_name_catalog_gpus(key, value, gpu):
    assert gpu_from_label(key, value) == gpu


# --- the samples ------------------------------------------------------------------------------------------
def test_a_deployment_with_an_hpa_on_running_plus_waiting():
    sc, notes = imported("deployment-hpa.yaml")
    assert sc["model"] == "llama-3.1-8b" and sc["fleet"]["gpu"] == "h100-sxm" and sc["fleet"]["tp"] == 1
    assert sc["fleet"]["autoscaler"] == {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": 24.0,
        "min_replicas": 1,
        "max_replicas": 8,
        "initial_replicas": 2,  # the Deployment's replicas
        "scale_down_stabilization_s": 600.0,
        "scale_up_percent": 100.0,
        "scale_up_pods": 2,
        "interval_s": 15.0,
    }
    assert sc["engine"] == {
        "max_num_seqs": 128,
        "max_model_len": 8192,
        "prefix_caching": True,
        "async_scheduling": True,
        "max_num_batched_tokens": 8192,
    }  # vLLM's H100 default
    assert sc["roofline"] == {"gpu_memory_utilization": 0.92}
    said = "\n".join(notes)
    for what in ("Service llama-8b", "--port: no bearing", "Resource cpu: not modelled"):
        assert what in said
    assert "max-model-len" not in said  # (mapped)


def test_keda_on_kv_use_and_a_tp2_api_server():
    sc, notes = imported("keda.yaml")
    assert sc["model"] == "qwen3-32b" and sc["fleet"]["tp"] == 2 and sc["fleet"]["gpu"] == "h100-sxm"
    assert sc["fleet"]["autoscaler"] == {
        "policy": "hpa",
        "metric": "kv_use",
        "target": 0.75,
        "min_replicas": 1,
        "max_replicas": 6,
    }
    assert sc["engine"] == {
        "max_num_batched_tokens": 4096,
        "policy": "prefill_first",
        "prefix_caching": True,
        "async_scheduling": True,
        "max_num_seqs": 1024,
    }
    assert sc["roofline"] == {"kv_bits": 8}
    assert any("cooldownPeriod" in n for n in notes)


def test_knative_kpa_with_the_target_utilization_default():
    sc, _ = imported("knative.yaml")
    auto = sc["fleet"]["autoscaler"]
    assert auto["policy"] == "kpa" and auto["target_concurrency"] == pytest.approx(16 * 0.7)  # Knative's default 70%
    assert (auto["min_replicas"], auto["max_replicas"], auto["stable_window_s"], auto["scale_to_zero_grace_s"]) == (
        0,
        10,
        120.0,
        300.0,
    )
    assert sc["fleet"]["max_outstanding_per_replica"] == 32 and sc["fleet"]["gpu"] == "l40s"


def test_kserve_huggingface_runtime():
    sc, _ = imported("kserve.yaml")
    assert sc["model"] == "llama-3.1-70b" and sc["fleet"]["tp"] == 4 and sc["fleet"]["gpu"] == "a100-80gb"
    auto = sc["fleet"]["autoscaler"]
    assert (auto["policy"], auto["min_replicas"], auto["max_replicas"]) == ("kpa", 1, 4)
    assert auto["target_concurrency"] == pytest.approx(48 * 0.7)


def test_a_shell_script_and_the_gpu_option():
    sc, _ = imported("serve.sh", gpu="a100-80gb")
    assert sc["fleet"] == {"gpu": "a100-80gb", "autoscaler": {"policy": "fixed", "replicas": 1}}
    assert sc["engine"] == {
        "max_num_seqs": 256,
        "max_num_batched_tokens": 8192,
        "policy": "chunked",
        "prefix_caching": True,
        "async_scheduling": True,
    }
    # vLLM's defaults where the command line is silent: an A100 (and any GPU under 70 GiB) gets 256 and 2,048
    sc, _ = imported("serve.sh", gpu="l40s")
    assert sc["engine"]["max_num_seqs"] == 256
    bare = DATA.parent.parent / "configs" / "cluster" / "serve.sh"
    assert bare.exists()
    with pytest.raises(FleetsimError, match=r"no GPU type found.*pass --gpu"):
        imported("serve.sh")


def test_the_imported_scenario_runs(tmp_path):
    out = tmp_path / "sc.yaml"
    r = runner.invoke(app, ["import", str(DATA / "deployment-hpa.yaml"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert f"max_replicas: 8  # {DATA / 'deployment-hpa.yaml'} (document 3) spec.maxReplicas" in text
    sc = parse_config(yaml.safe_load(text))
    assert sc.fleet.autoscaler.policy == "hpa" and sc.engine.prefix_caching
    r = runner.invoke(app, ["run", str(out), "--trace", str(DATA.parents[1] / "traces" / "azure2023_conv.csv"), "--set", "trace.end_s=120",
                            "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output


# --- bad manifests ----------------------------------------------------------------------------------------
BAD = [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "kind 'Pod' (apiVersion v1) is not one fleetsim reads"),
    (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: '{{ .Values.replicas }}'\n",
        "spec.replicas holds unrendered templating",
    ),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n", "spec.template is missing"),
    (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: nginx}]\n",
        "no container of spec.template.spec.containers runs vLLM",
    ),
    (
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\nspec: {scaleTargetRef: {name: x}}\n",
        "spec.maxReplicas is missing",
    ),
    (
        "a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "too large",
    ),
    ("- just\n- a list\n", "a manifest must be a YAML mapping"),
    ("", "empty (no YAML document)"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_manifests_fail_in_one_line_and_write_nothing(tmp_path, text, message):
    src = tmp_path / "bad.yaml"
    src.write_text(text)
    out = tmp_path / "out.yaml"
    r = runner.invoke(app, ["import", str(src), "--out", str(out), "--gpu", "h100-sxm"])
    assert r.exit_code == 2, r.output
    assert message in r.output and str(src) in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_two_workloads_and_an_unknown_model_are_refused(tmp_path):
    two = tmp_path / "two.yaml"
    one = (DATA / "keda.yaml").read_text().split("---")[0]
    two.write_text(one + "---\n" + one.replace("name: qwen-32b", "name: other"))
    with pytest.raises(FleetsimError, match="a second vLLM workload"):
        import_files([two])
    unknown = tmp_path / "u.sh"
    unknown.write_text("vllm serve someone/SomeModel-13B")
    with pytest.raises(FleetsimError, match=r"not in the model catalog.*--model"):
        scenario_values(import_files([unknown]), gpu="l4")


# --- the round trip ---------------------------------------------------------------------------------------
CATALOG = sorted(load_model_catalog().models)
GPUS = sorted(GFD_PRODUCT) + sorted(AMD_PRODUCT)
seconds = st.integers(0, 3600).map(float)


@st.composite
def autoscalers(draw):
    policy = draw(st.sampled_from(["fixed", "hpa", "kpa", "queue"]))
    if policy == "fixed":
        return {"policy": "fixed", "replicas": draw(st.integers(1, 64))}
    lo = draw(st.integers(0 if policy != "hpa" else 1, 8))
    hi = draw(st.integers(max(lo, 1), 64))
    out: dict[str, Any] = {"policy": policy, "min_replicas": lo, "max_replicas": hi}
    if draw(st.booleans()):
        out["initial_replicas"] = draw(st.integers(lo, hi))
    interval = float(draw(st.integers(1, 120)))
    if policy == "hpa":
        metric = draw(st.sampled_from(["busy_fraction", "outstanding_per_replica", "kv_use"]))
        target = draw(st.floats(0.05, 1.0) if metric != "outstanding_per_replica" else st.floats(0.5, 512))
        out |= {
            "metric": metric,
            "target": target,
            "tolerance": draw(st.floats(0, 0.5)),
            "interval_s": interval,
            "scale_down_stabilization_s": draw(seconds),
            "scale_up_percent": float(draw(st.integers(1, 900))),
            "scale_up_pods": draw(st.integers(1, 16)),
        }
    elif policy == "queue":
        out |= {"target_waiting": draw(st.floats(0.5, 64)), "interval_s": interval, "scale_down_delay_s": draw(seconds)}
    else:
        out |= {
            "target_concurrency": draw(st.floats(1, 512)),
            "stable_window_s": float(draw(st.integers(6, 3600))),
            "panic_window_percentage": float(draw(st.integers(1, 100))),
            "panic_threshold_percentage": float(draw(st.integers(110, 1000))),
            "scale_to_zero_grace_s": draw(seconds),
        }
    return out


@st.composite
def scenarios(draw):
    auto = draw(autoscalers())
    fleet: dict[str, Any] = {"gpu": draw(st.sampled_from(GPUS)), "tp": draw(st.sampled_from([1, 2, 4, 8])), "autoscaler": auto}
    if auto["policy"] == "kpa" and draw(st.booleans()):
        fleet["max_outstanding_per_replica"] = draw(st.integers(1, 512))
    seqs = draw(st.integers(1, 1024))
    engine = {
        "policy": draw(st.sampled_from(["chunked", "prefill_first"])),
        "max_num_seqs": seqs,
        "max_num_batched_tokens": draw(st.none() | st.integers(max(16, seqs), 65_536)),  # (vLLM: >= max_num_seqs)
        "block_size": draw(st.sampled_from([8, 16, 32])),
        "num_gpu_blocks_override": draw(st.none() | st.integers(1, 100_000)),
        "prefix_caching": draw(st.booleans()),
        "enforce_eager": draw(st.booleans()),
        "preempt_for_priority": draw(st.booleans()),
    }
    roofline = {
        "gpu_memory_utilization": draw(st.floats(0.3, 0.99)),
        "kv_bits": draw(st.sampled_from([8, 16])),
        "weight_bits": draw(st.sampled_from([None, 8])),  # (None: as shipped; 16 has no vLLM flag for an FP8 checkpoint)
    }
    return parse_config({"model": draw(st.sampled_from(CATALOG)), "fleet": fleet, "engine": engine, "roofline": roofline})


def expressed(sc) -> dict[str, Any]:
    auto = sc.fleet.autoscaler.model_dump()
    if "initial_replicas" in auto:
        auto["initial_replicas"] = sc.fleet.autoscaler.start_replicas
    if auto["policy"] == "queue":
        auto.pop("scale_down_busy")
    engine = sc.engine.model_dump(
        include={
            "policy",
            "max_num_seqs",
            "max_num_batched_tokens",
            "block_size",
            "num_gpu_blocks_override",
            "prefix_caching",
            "enforce_eager",
            "preempt_for_priority",
        }
    )
    engine["max_num_batched_tokens"] = sc.engine.batched_tokens(load_model_catalog().models[sc.model].max_context_tokens)
    out = {
        "model": sc.model,
        "gpu": sc.fleet.gpu,
        "tp": sc.fleet.tp,
        "autoscaler": auto,
        "engine": engine,
        "roofline": sc.roofline.model_dump(include={"gpu_memory_utilization", "kv_bits", "weight_bits"}),
    }
    if auto["policy"] == "kpa":
        out["max_outstanding"] = cc = sc.fleet.max_outstanding_per_replica
        if cc is not None:  # Knative caps the target at containerConcurrency
            auto["target_concurrency"] = min(auto["target_concurrency"], cc)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sc=scenarios())
def test_import_of_export_is_the_scenario(tmp_path, sc):
    docs, notes = export_manifests(sc, name="svc")
    path = tmp_path / "m.yaml"
    path.write_text(render_manifests(docs, notes, "a scenario"))
    back = parse_config(nest(scenario_values(import_files([path]))))
    assert expressed(back) == expressed(sc)


@pytest.mark.parametrize(
    "dp, auto",
    [
        (2, {"policy": "fixed", "replicas": 4}),
        (
            2,
            {
                "policy": "hpa",
                "metric": "outstanding_per_replica",
                "target": 6.5,
                "min_replicas": 2,
                "max_replicas": 8,
                "initial_replicas": 4,
            },
        ),
        (4, {"policy": "hpa", "metric": "kv_use", "target": 0.7, "min_replicas": 4, "max_replicas": 16}),
        (2, {"policy": "queue", "target_waiting": 3.0, "min_replicas": 0, "max_replicas": 6}),
        (4, {"policy": "kpa", "target_concurrency": 5.0, "min_replicas": 0, "max_replicas": 8}),
    ],
)
def test_an_moe_fleet_of_dp_ranks_exports_as_pods_of_dp_ranks_and_imports_back(tmp_path, dp, auto):
    """An MoE fleet of DP ranks (fleet.dp, expert parallel, a DeepEP backend) is written as pods of one vLLM server of
    --data-parallel-size dp each (tp x dp GPUs, the replica counts and a pod's request targets in pods), and `import`
    reads it back as the same fleet."""
    fleet: dict[str, Any] = {"gpu": "h100-sxm", "tp": 1, "dp": dp, "expert_parallel": True, "autoscaler": auto}
    fleet["all2all_backend"] = "deepep_low_latency"
    if auto["policy"] == "kpa":
        fleet["max_outstanding_per_replica"] = 16
    sc = parse_config({"model": "qwen3-30b-a3b", "fleet": fleet})
    docs, notes = export_manifests(sc, name="moe")
    pod = docs[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--data-parallel-size") + 1] == str(dp) and "--enable-expert-parallel" in args
    assert args[args.index("--all2all-backend") + 1] == "deepep_low_latency"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == dp
    if auto["policy"] == "fixed":
        assert docs[0]["spec"]["replicas"] == 4 // dp
    elif auto["policy"] == "kpa":
        ann = docs[0]["spec"]["template"]["metadata"]["annotations"]
        assert ann["autoscaling.knative.dev/max-scale"] == str(8 // dp) and pod["containerConcurrency"] == 16 * dp
        assert float(ann["autoscaling.knative.dev/target"]) == 5.0 * dp
    else:
        spec = docs[1]["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (auto["min_replicas"] // dp, auto["max_replicas"] // dp)
        trigger = spec["triggers"][0]["metadata"]
        if auto.get("metric") == "kv_use":  # one rank's mean KV use: the pod's dp ranks' sum, divided
            assert trigger["query"].endswith(f" / {dp}") and float(trigger["threshold"]) == 0.7
        else:
            assert float(trigger["threshold"]) == (auto.get("target") or auto.get("target_waiting")) * dp
    assert not any("fleet.dp" in n for n in notes)
    path = tmp_path / "m.yaml"
    path.write_text(render_manifests(docs, notes, "a scenario"))
    back = parse_config(nest(scenario_values(import_files([path]))))
    assert expressed(back) == expressed(sc)
    assert (back.fleet.dp, back.fleet.expert_parallel, back.fleet.all2all_backend) == (dp, True, "deepep_low_latency")
    assert back.fleet.max_outstanding_per_replica == sc.fleet.max_outstanding_per_replica


def test_export_refuses_what_it_cannot_write(tmp_path):
    base = {"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm"}}
    sched = parse_config(
        {**base, "fleet": {"gpu": "h100-sxm", "autoscaler": {"policy": "scheduled", "table": [{"at_s": 0, "replicas": 1}]}}}
    )
    with pytest.raises(FleetsimError, match="scheduled: export has no manifest form"):
        export_manifests(sched)
    with pytest.raises(FleetsimError, match="no Kubernetes node label"):
        export_manifests(parse_config({**base, "fleet": {"gpu": "nonexistent"}}))
    small = parse_config({**base, "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 128}})
    with pytest.raises(FleetsimError, match=r"max_num_batched_tokens 128 is below engine\.max_num_seqs 256: vLLM refuses"):
        export_manifests(small)  # (simulated as given; the manifest would not start)
    odd = parse_config({**base, "fleet": {"gpu": "h100-sxm", "dp": 2, "autoscaler": {"policy": "fixed", "replicas": 3}}})
    with pytest.raises(FleetsimError, match=r"fleet.autoscaler.replicas 3: not a multiple of fleet.dp 2"):
        export_manifests(odd)  # (a dense model's ranks need not come in groups; a pod of dp ranks does)
    src = tmp_path / "s.yaml"
    src.write_text(yaml.safe_dump(base))
    r = runner.invoke(app, ["export", str(src), "--name", "Bad_Name", "--out", str(tmp_path / "o.yaml")])
    assert r.exit_code == 2 and "a Kubernetes name" in r.output and not (tmp_path / "o.yaml").exists()


# --- traces from production logs ----------------------------------------------------------------------------
def test_otel_spans_give_one_request_per_llm_call():
    from sim.workload import load_trace

    t = load_trace(DATA / "otel.json")
    assert t.attrs["format"] == "otel"
    # the HTTP span is not a request; vLLM's server span inside the gateway's client span (same counts) is the same call
    assert t["arrival_at_s"].tolist() == pytest.approx([0.0, 0.699, 1.401])
    assert t["prompt_tokens"].tolist() == [412, 96, 530] and t["output_tokens"].tolist() == [128, 64, 200]


def test_a_vllm_bench_result_is_a_trace_without_its_failed_requests():
    from sim.workload import load_trace

    t = load_trace(DATA / "bench.json")
    assert t.attrs["format"] == "vllm-bench"
    assert t["prompt_tokens"].tolist() == [412, 96, 530, 180, 191]  # the 4th failed: no output length
    assert t["arrival_at_s"].tolist() == pytest.approx([0.0, 0.585, 1.277, 2.252, 2.879])


def _spans(*spans: dict) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


def _llm(start: int, tin: Any, tout: Any, model: str = "m") -> dict:
    attrs = [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(tin)}},
             {"key": "gen_ai.usage.output_tokens", "value": {"intValue": str(tout)}},
             {"key": "gen_ai.request.model", "value": {"stringValue": model}}]  # fmt: skip
    return {"traceId": f"t{start}", "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 10), "attributes": attrs}


@pytest.mark.parametrize(
    ("body", "kw", "message"),
    [
        (_spans(_llm(0, 5, 5, "a"), _llm(1, 5, 5, "b")), {}, "LLM spans for 2 models (a, b); pick one (--model)"),
        (_spans(_llm(0, 5, 5, "a")), {"model": "z"}, "no LLM span for model 'z'; the spans name a"),
        (_spans({"traceId": "x", "startTimeUnixNano": "1", "attributes": []}), {}, "no LLM span"),
        (_spans(_llm(0, "1.5", 5)), {}, "gen_ai.usage.input_tokens: must be a whole number of tokens"),
        ('{"resourceSpans": [', {}, "invalid JSON"),
    ],
)
def test_bad_otel_exports_say_what_and_where(tmp_path, body, kw, message):
    from sim.workload.otel import read_otel

    p = tmp_path / "spans.json"
    p.write_text(body)
    with pytest.raises(FleetsimError, match=re.escape(message)):
        read_otel(p, **kw)
    if kw.get("model") is None and "2 models" in message:
        assert read_otel(p, model="b")["prompt_tokens"].tolist() == [5]
        both = read_otel(p, model="*")  # every model's spans, named (a platform's deployments)
        assert both["model"].tolist() == ["a", "b"] and both["arrival_at_s"].tolist() == [0.0, 1e-9]


def test_the_weights_tier_follows_the_volumes(tmp_path):
    sc, notes = imported("deployment-hpa.yaml")
    assert sc["fleet"]["lifecycle"] == {"weights_from": "network_disk"}  # the HF cache on a PVC
    assert any("the first start downloads" in n for n in notes)
    assert imported("keda.yaml")[0]["fleet"]["lifecycle"] == {"weights_from": "object_store"}  # from the Hub each time
    local = (DATA / "keda.yaml").read_text().split("---")[0]
    local = local.replace("--model=Qwen/Qwen3-32B", "--model=/models/Qwen3-32B").replace(
        "      containers:", "      volumes: [{name: m, hostPath: {path: /mnt/nvme/models}}]\n      containers:"
    )
    local = local.replace("          resources:", "          volumeMounts: [{name: m, mountPath: /models}]\n          resources:")
    (tmp_path / "local.yaml").write_text(local)
    imp = import_files([tmp_path / "local.yaml"])
    sc = nest(scenario_values(imp))
    assert sc["model"] == "qwen3-32b" and sc["fleet"]["lifecycle"] == {"weights_from": "local_nvme"}


def test_a_ray_serve_llm_config_and_the_same_in_a_rayservice(tmp_path):
    sc, notes = imported("ray-serve.yaml")
    assert sc["model"] == "llama-3.1-70b" and sc["fleet"]["tp"] == 4 and sc["fleet"]["gpu"] == "h100-sxm"
    assert sc["fleet"]["max_outstanding_per_replica"] == 96
    auto = sc["fleet"]["autoscaler"]
    assert (auto["policy"], auto["metric"], auto["target"], auto["min_replicas"], auto["max_replicas"]) == (
        "hpa", "outstanding_per_replica", 32.0, 1, 6
    )  # fmt: skip
    assert auto["scale_down_stabilization_s"] == 300.0 and auto["interval_s"] == 10.0 and auto["tolerance"] == 0.0
    assert sc["engine"] == {
        "policy": "chunked",
        "max_num_batched_tokens": 2048,
        "prefix_caching": True,
        "async_scheduling": True,
        "max_num_seqs": 1024,
        "max_model_len": 16384,
    }
    assert any("upscale_delay_s 30: not modelled" in n for n in notes)
    body = (DATA / "ray-serve.yaml").read_text()
    wrapped = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "llm"}, "spec": {"serveConfigV2": body}}
    (tmp_path / "rayservice.yaml").write_text(yaml.safe_dump(wrapped))
    again = nest(scenario_values(import_files([tmp_path / "rayservice.yaml"])))
    assert again == sc
    parse_config(sc)


# --- a trace from Prometheus's record -------------------------------------------------------------------------
PROM = DATA / "prometheus"


def test_a_spec_from_prometheus_keeps_the_rate_curve_and_the_mean_lengths(tmp_path):
    from sim.workload.prometheus import read_series, spec_from_metrics
    from sim.workload.synthetic import generate, parse_spec

    spec, starts, rates, notes = spec_from_metrics(
        requests=PROM / "requests.json",
        prompt_buckets=PROM / "prompt_buckets.json",
        output_buckets=PROM / "output_buckets.json",
        prompt_tokens=PROM / "prompt_tokens.json",
        output_tokens=PROM / "output_tokens.json",
    )
    t, r = read_series(PROM / "requests.json")  # four series (2 pods x 2 finish reasons), summed
    assert starts.tolist() == (t - t[0]).tolist() and rates.tolist() == r.tolist() and len(t) == 120
    n = float((r * 60).sum())
    assert spec["duration_s"] == 7200.0 and spec["arrivals"]["mean_rate_per_s"] == pytest.approx(n / 7200)
    # the sample's token rates are 1,130 and 236 tokens per request at every step: the means are those
    assert spec["prompt_tokens"]["mean"] == pytest.approx(1130, rel=1e-6) and spec["output_tokens"]["mean"] == pytest.approx(
        236, rel=1e-6
    )
    assert spec["prompt_tokens"]["max"] == 5000 and 0.8 < spec["prompt_tokens"]["cv"] < 1.1  # drawn with CV 1.1, clipped
    assert any("a lower bound" in note for note in notes)
    (tmp_path / "rates.csv").write_text(
        "window_start_s,rate\n" + "".join(f"{a},{b}\n" for a, b in zip(starts, rates, strict=True))
    )
    spec["arrivals"]["rate_table"] = "rates.csv"
    trace = generate(parse_spec(spec), base_dir=tmp_path)
    assert abs(len(trace) - n) < 4 * n**0.5  # Poisson around the observed count
    busy = trace["arrival_at_s"].between(50 * 60, 65 * 60).sum() / (15 * 60)
    calm = trace["arrival_at_s"].between(0, 15 * 60).sum() / (15 * 60)
    assert busy / calm == pytest.approx(rates[50:65].mean() / rates[:15].mean(), rel=0.15)  # the lunchtime peak kept


def test_histogram_moments_by_hand():
    from sim.workload.prometheus import histogram_moments

    # buckets (.., 10], (10, 20], +Inf: 2 requests uniform on [1, 10], 1 on [10, 20], 1 at 20 (the +Inf bucket)
    mean, cv = histogram_moments(np.array([10.0, 20.0]), np.array([2.0, 1.0, 1.0]))
    ex2 = (2 * (1 + 10 + 100) / 3 + (100 + 200 + 400) / 3 + 400) / 4
    assert mean == pytest.approx((2 * 5.5 + 15 + 20) / 4) and cv == pytest.approx((ex2 - mean**2) ** 0.5 / mean)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "error", "error": "bad query"}, "not a Prometheus API answer"),
        ({"status": "success", "data": {"result": []}}, "the query returned no series"),
        ({"status": "success", "data": {"result": [{"metric": {}, "values": [[0, "NaN"], [60, "1"]]}]}}, "NaN"),
        ({"status": "success", "data": {"result": [{"metric": {}, "values": [[0, "1"]]}]}}, "at least two samples"),
        ({"status": "success", "data": {"result": [{"metric": {}, "value": [0, "1"]}]}}, "a range query"),
    ],
)
def test_bad_prometheus_answers(tmp_path, body, message):
    from sim.workload.prometheus import read_series

    p = tmp_path / "q.json"
    p.write_text(json.dumps(body))
    with pytest.raises(FleetsimError, match=re.escape(message)):
        read_series(p)


def test_bad_histograms_and_nothing_written(tmp_path):
    from sim.workload.prometheus import read_histogram

    def hist(*pairs):
        return {"status": "success", "data": {"result": [{"metric": {"le": le}, "value": [0, v]} for le, v in pairs]}}

    for body, message in (
        (hist(("10", "5"), ("20", "7")), "needs its +Inf bucket"),
        (hist(("10", "5"), ("+Inf", "3")), "must not decrease"),
        ({"status": "success", "data": {"result": [{"metric": {}, "value": [0, "1"]}]}}, "no le label"),
    ):
        p = tmp_path / "h.json"
        p.write_text(json.dumps(body))
        with pytest.raises(FleetsimError, match=re.escape(message)):
            read_histogram(p)
    out = tmp_path / "spec.yaml"
    r = runner.invoke(app, ["trace", "from-metrics", "--requests", str(PROM / "requests.json"), "--prompt-buckets", str(p),
                            "--output-buckets", str(PROM / "output_buckets.json"), "--out", str(out)])  # fmt: skip
    assert r.exit_code == 2 and "no le label" in r.output and not out.exists() and not (tmp_path / "spec.rates.csv").exists()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("spec: 'no'\n", "x.yaml: spec must be a mapping (got str 'no')"),
        (
            "spec: {replicas: 1, template: {spec: {containers: oops}}}\n",
            "containers must be a list of containers (got str 'oops')",
        ),
        ("spec: {replicas: 1, template: [1, 2]}\n", "spec.template must be a mapping (got list [1, 2])"),
        ("spec: {replicas: 1, template: {spec: {containers: []}}}\n", "spec.template.spec.containers is missing"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_named_by_the_field_that_is_wrong(tmp_path, body, says):
    """A value of the wrong kind where a mapping or list belongs is not reported as missing (found fuzzing `import`)."""
    (tmp_path / "x.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n" + body)
    res = CliRunner().invoke(app, ["import", str(tmp_path / "x.yaml")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and says in res.output, res.output


def test_a_second_vllm_server_in_the_pod_is_named_not_dropped_silently(tmp_path):
    """A pod running two vLLM containers is two servers; the import maps the first as the pod's replica and said nothing
    of the second."""
    doc = next(d for d in yaml.safe_load_all((DATA / "deployment-hpa.yaml").read_text()) if d["kind"] == "Deployment")
    containers = doc["spec"]["template"]["spec"]["containers"]
    second = {**containers[0], "name": "vllm2"}
    doc["spec"]["template"]["spec"]["containers"] = [containers[0], second]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc))
    notes = "\n".join(import_files([path]).notes)
    assert "spec.template.spec.containers[1] (vllm2): a second vLLM server in the pod; only" in notes, notes
