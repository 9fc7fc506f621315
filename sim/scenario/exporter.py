"""`fleetsim export`: a scenario (or a plan's pick) as the manifests that would run it.

A colocated fleet becomes a Deployment running `vllm serve` with the scenario's engine settings (its GPUs
requested, the GPU type selected by GPU Feature Discovery's `nvidia.com/gpu.product` label), scaled by:
- `fixed`: the Deployment's replica count;
- `hpa` and `queue`: a KEDA ScaledObject whose Prometheus trigger sums vLLM's (or DCGM's) metric over the
  replicas with an AverageValue threshold — the HPA then computes ceil(sum / threshold), fleetsim's
  ceil(current x average / target) — and whose `advanced.horizontalPodAutoscalerConfig.behavior` holds the
  stabilization window, the scale-up policies (their period: fleetsim's control interval) and the tolerance;
- `kpa`: a Knative Service with the KPA's annotations (target-utilization-percentage 100, so that the target is
  the scenario's concurrency per replica) and `containerConcurrency` from `max_outstanding_per_replica`.
What the manifests cannot say (cold-start stages, prices, SLOs, the router, the trace, the roofline's
efficiencies) is listed in the file's header. `fleetsim import` reads the file back to the same scenario for
everything both express (a property test holds them together).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.policies.autoscale import LATENCY_METRICS, autoscaler_counts
from sim.scenario.config import Scenario
from sim.scenario.importer import AMD_PRODUCT, GFD_PRODUCT
from sim.scenario.vllm_args import engine_args

PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"  # the Prometheus Operator's default service: adjust
IMAGE = "vllm/vllm-openai:latest"


class _NoAliases(yaml.SafeDumper):
    """Repeated blocks (the labels) written out each time, as manifests are, not as YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _whole(x: float, field: str, notes: list[str], *, within: tuple[int, int] | None = None, what: str = "") -> int:
    """Kubernetes' integer fields (seconds, percentages): a fractional value rounded up, and said; one outside the
    range the API server accepts (`within`, as `what` documents it) is an error, not a manifest it would refuse."""
    n = math.ceil(x)
    if within is not None and not within[0] <= n <= within[1]:
        raise FleetsimError(
            f"{field}: {what} must be within [{within[0]:,}, {within[1]:,}] s, so export cannot write it (got {x:g})"
        )
    if not float(x).is_integer():
        notes.append(f"{field} {x:g} rounded up to {n} (an integer field)")
    return n


GO_DURATION_MAX_S = (2**63 - 1) / 1e9  # a Go time.Duration (int64 nanoseconds): about 292 years


def _duration(x: float, field: str) -> str:
    """A Go duration string ("30.0s", never "1e-05s", which Go does not parse)."""
    if x > GO_DURATION_MAX_S:
        raise FleetsimError(
            f"{field}: a Kubernetes duration is at most {GO_DURATION_MAX_S:,.0f} s, so export cannot write it (got {x:g})"
        )
    text = repr(float(x))
    return f"{f'{x:.9f}'.rstrip('0').rstrip('.') if 'e' in text else text}s"


def _queries(name: str, repo: str, dp: int = 1) -> dict[str, str]:
    sel = f'{{model_name="{repo}"}}'
    # (vLLM reports each DP rank's KV use: a pod of dp ranks reports dp of them, and the target is one rank's mean)
    per_rank = "" if dp == 1 else f" / {dp}"
    return {
        "outstanding_per_replica": f"sum(vllm:num_requests_running{sel}) + sum(vllm:num_requests_waiting{sel})",
        "kv_use": f"sum(vllm:kv_cache_usage_perc{sel}){per_rank}",
        "busy_fraction": f'sum(avg by (pod) (DCGM_FI_PROF_GR_ENGINE_ACTIVE{{pod=~"{name}-.*"}}))',
        "waiting": f"sum(vllm:num_requests_waiting{sel})",
    }


def latency_query(metric: str, repo: str, window_s: float) -> str:
    """A latency quantile of the fleet over a window, from vLLM's histograms (TTFT; TPOT as its inter-token one)."""
    quantile = "0.9" if metric.startswith("p90") else "0.99"
    hist = "vllm:time_to_first_token_seconds" if "ttft" in metric else "vllm:time_per_output_token_seconds"
    window = f"{window_s:g}s" if not float(window_s / 60).is_integer() else f"{int(window_s // 60)}m"
    return f'histogram_quantile({quantile}, sum by (le) (rate({hist}_bucket{{model_name="{repo}"}}[{window}])))'


def scenario_keys(sc: Scenario) -> dict[str, Any]:
    """The scenario's keys the manifests express (dotted paths, as `fleetsim import` sets them)."""
    e, r = sc.engine, sc.roofline
    return {
        "fleet.tp": sc.fleet.tp,
        "fleet.dp": sc.fleet.dp if sc.fleet.dp > 1 else None,
        "fleet.expert_parallel": sc.fleet.expert_parallel or None,
        # (vLLM's default backend is not written: a server of another version keeps its own default)
        "fleet.all2all_backend": None if sc.fleet.all2all_backend == "allgather_reducescatter" else sc.fleet.all2all_backend,
        "engine.max_num_seqs": e.max_num_seqs,
        "engine.max_num_batched_tokens": e.max_num_batched_tokens,
        "engine.block_size": e.block_size,
        "engine.num_gpu_blocks_override": e.num_gpu_blocks_override,
        "roofline.gpu_memory_utilization": r.gpu_memory_utilization,
        "engine.policy": e.policy,
        "engine.prefix_caching": e.prefix_caching,
        "engine.async_scheduling": e.async_scheduling,
        "engine.enforce_eager": e.enforce_eager,
        "engine.disable_hybrid_kv_cache_manager": e.disable_hybrid_kv_cache_manager,
        "engine.preempt_for_priority": e.preempt_for_priority,
        "engine.long_prefill_token_threshold": e.long_prefill_token_threshold or None,
        "engine.max_model_len": e.max_model_len,
        "roofline.kv_bits": r.kv_bits,
        "roofline.weight_bits": r.weight_bits,
        "engine.lora": None
        if e.lora is None
        else {"max_loras": e.lora.max_loras, "max_lora_rank": e.lora.max_lora_rank, "max_cpu_loras": e.lora.max_cpu_loras},
        "fleet.lifecycle.sleep": None if sc.fleet.lifecycle.sleep is None else {"level": 1},
    }


def not_expressed(sc: Scenario) -> list[str]:
    out = [
        "fleet.lifecycle (cold-start stages: provisioning, image pull, weight loading, warm-up)",
        "pricing, slo, trace, seed",
        f"fleet.router {sc.fleet.router} (a Kubernetes Service balances connections round-robin; an inference gateway routes by load)",
        "roofline efficiencies (mfu, mbu, overheads): properties of the hardware, not of the deployment",
        f"engine.watermark {sc.engine.watermark}, engine.admission {sc.engine.admission}: vLLM has no flags for them",
    ]
    if sc.fleet.reserved_replicas:
        out.append(f"fleet.reserved_replicas {sc.fleet.reserved_replicas} (a billing commitment)")
    if sc.fleet.expert_load_imbalance != 1:
        out.append(
            f"fleet.expert_load_imbalance {sc.fleet.expert_load_imbalance:g} (how unevenly the router spreads tokens over "
            "the experts: the model's and the traffic's, not a flag)"
        )
    if any(c.shapes_supply for c in sc.fleet.capacities):
        out.append(
            "fleet.capacity (capacity classes, spot, failures, fallback GPU types: the node pools' capacity types and "
            "instance types, e.g. Karpenter's karpenter.sh/capacity-type and node.kubernetes.io/instance-type "
            "requirements, decide them; shortages and reclaims are the provider's)"
        )
    if sc.fleet.max_gpus is not None:
        out.append(f"fleet.max_gpus {sc.fleet.max_gpus} (a quota: set it as the namespace's ResourceQuota)")
    if sc.fleet.queue_max is not None or sc.fleet.queue_timeout_s is not None:
        out.append("fleet.queue_max / queue_timeout_s (the gateway's queue)")
    if sc.fleet.max_outstanding_per_replica is not None and sc.fleet.autoscaler.policy != "kpa":
        out.append(
            f"fleet.max_outstanding_per_replica {sc.fleet.max_outstanding_per_replica} (the router's cap; Knative's containerConcurrency with kpa)"
        )
    if sc.engine.speculative is not None:
        out.append("engine.speculative (its acceptance rate is a property of the traffic; pass --speculative-config yourself)")
    if sc.engine.lora is not None:
        lo = sc.engine.lora
        out.append(
            f"engine.lora target_modules {lo.target_modules}, adapters_from {lo.adapters_from}: the adapters themselves "
            "(--lora-modules, or loaded at run time) are yours to give"
        )
    sleep = sc.fleet.lifecycle.sleep
    if sleep is not None:
        out.append(
            f"fleet.lifecycle.sleep level {sleep.level}, max_sleeping {sleep.max_sleeping}: --enable-sleep-mode lets a "
            "replica sleep; putting it to sleep (POST /sleep?level=N) and waking it are your autoscaler's or router's "
            "calls, not a Deployment's"
        )
    if sc.roofline.weight_bits == 4:
        out.append("roofline.weight_bits 4 (serve a 4-bit checkpoint, AWQ/GPTQ/MXFP4: the model argument changes)")
    if sc.batch is not None:
        out.append("batch jobs")
    return out


def export_manifests(sc: Scenario, *, name: str = "llm") -> tuple[list[dict[str, Any]], list[str]]:
    """The manifests for the scenario's fleet, and what they do not express."""
    fleet = sc.fleet
    if fleet.mode != "colocated":
        raise FleetsimError("fleet.mode disaggregated: export writes colocated fleets only (one Deployment of vLLM)")
    if fleet.pp > 1:
        raise FleetsimError(
            f"fleet.pp {fleet.pp}: export writes one pod a server, and a pipeline of {fleet.pp} stages across nodes needs a "
            "multi-pod group (a LeaderWorkerSet with Ray) that it has no form for yet"
        )
    auto = fleet.autoscaler
    extra: list[str] = []  # what the manifests say only approximately
    if auto.policy == "scheduled":
        raise FleetsimError(
            "fleet.autoscaler.policy scheduled: export has no manifest form for a schedule yet (KEDA cron triggers)"
        )
    if auto.policy == "predictive":
        raise FleetsimError(
            "fleet.autoscaler.policy predictive: export has no manifest form for it (a planner such as Dynamo's runs it)"
        )
    catalog = load_model_catalog()
    spec = catalog.models.get(sc.model.strip().lower())  # as `run` looks names up: case aside, aliases resolved
    if spec is None:
        raise FleetsimError(f"model {sc.model!r}: export needs a catalog model (its Hugging Face repo names the weights)")
    repo = spec.hf_repo
    gpu = fleet.gpu.strip().lower()
    gpu = load_gpu_catalog().aliases.get(gpu, gpu)
    if gpu in GFD_PRODUCT:
        label, product, resource = "nvidia.com/gpu.product", GFD_PRODUCT[gpu], "nvidia.com/gpu"
    elif gpu in AMD_PRODUCT:
        label, product, resource = "amd.com/gpu.product-name", AMD_PRODUCT[gpu], "amd.com/gpu"
    else:
        raise FleetsimError(f"fleet.gpu {fleet.gpu!r}: no Kubernetes node label is known for it")
    dp = fleet.dp  # (a pod is one vLLM server of --data-parallel-size dp: dp fleetsim replicas, tp x dp GPUs)
    if dp > 1:
        for key, n in autoscaler_counts(auto).items():
            if n is not None and n % dp:
                raise FleetsimError(
                    f"fleet.autoscaler.{key} {n}: not a multiple of fleet.dp {dp}, and export writes a pod a server of "
                    f"--data-parallel-size {dp} ({dp} replicas a pod; a dense model's ranks share nothing, so fleet.dp 1 "
                    "exports the same fleet a pod a rank)"
                )
    values = {k: v for k, v in scenario_keys(sc).items() if v is not None}
    # the batched-token budget fleetsim runs with (its default differs from vLLM's): always written
    values["engine.max_num_batched_tokens"] = budget = sc.engine.batched_tokens(spec.max_context_tokens)
    if budget < sc.engine.max_num_seqs:  # (vLLM's SchedulerConfig refuses it: the server would not start)
        raise FleetsimError(
            f"engine.max_num_batched_tokens {budget} is below engine.max_num_seqs {sc.engine.max_num_seqs}: vLLM refuses "
            "to start with a token budget smaller than its batch (it must be >= max_num_seqs); raise it or lower max_num_seqs"
        )
    container = {
        "name": "vllm",
        "image": IMAGE,
        "command": ["vllm"],
        "args": engine_args(values, hf_repo=repo),
        "ports": [{"containerPort": 8000, "name": "http1" if auto.policy == "kpa" else "http"}],  # (Knative: http1 or h2c)
        "resources": {"limits": {resource: fleet.tp * dp}, "requests": {resource: fleet.tp * dp}},
    }
    pod: dict[str, Any] = {"nodeSelector": {label: product}, "containers": [container]}
    labels = {"app": name}
    if auto.policy == "kpa":
        window = _whole(
            auto.stable_window_s, "fleet.autoscaler.stable_window_s", extra, within=(6, 3600), what="Knative's window"
        )
        ann = {
            "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "concurrency",
            "autoscaling.knative.dev/target": str(auto.target_concurrency * dp),  # (a pod's: its dp ranks')
            "autoscaling.knative.dev/target-utilization-percentage": "100",
            "autoscaling.knative.dev/min-scale": str(auto.min_replicas // dp),
            "autoscaling.knative.dev/max-scale": str(auto.max_replicas // dp),
            "autoscaling.knative.dev/window": f"{window}s",
            "autoscaling.knative.dev/panic-window-percentage": str(auto.panic_window_percentage),
            "autoscaling.knative.dev/panic-threshold-percentage": str(auto.panic_threshold_percentage),
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period": _duration(
                auto.scale_to_zero_grace_s, "fleet.autoscaler.scale_to_zero_grace_s"
            ),
        }
        if auto.initial_replicas is not None:
            ann["autoscaling.knative.dev/initial-scale"] = str(auto.initial_replicas // dp)
        pod["containerConcurrency"] = cc = (fleet.max_outstanding_per_replica or 0) * dp
        if cc and auto.target_concurrency * dp > cc:
            extra.append(
                f"target_concurrency {auto.target_concurrency:g} above max_outstanding_per_replica "
                f"{fleet.max_outstanding_per_replica}: Knative targets the pod's containerConcurrency {cc}"
            )
        service = {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"template": {"metadata": {"annotations": ann, "labels": labels}, "spec": pod}},
        }
        extra.append(
            "the Knative Service selects the GPU with a nodeSelector: Knative accepts it with the "
            "kubernetes.podspec-nodeselector feature enabled (config-features)"
        )
        return [service], not_expressed(sc) + extra
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": auto.start_replicas // dp,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    if auto.policy == "fixed":
        return [deployment], not_expressed(sc) + extra
    metric = auto.metric if auto.policy == "hpa" else "waiting"
    threshold = auto.target if auto.policy == "hpa" else auto.target_waiting
    if metric in ("outstanding_per_replica", "waiting"):  # (a pod's requests: its dp ranks')
        threshold *= dp
    period = _whole(
        auto.interval_s,
        "fleet.autoscaler.interval_s (the policies' periodSeconds)",
        extra,
        within=(1, 1800),
        what="an HPA scaling policy's periodSeconds",
    )
    if auto.policy == "hpa":
        up = {
            "policies": [
                {
                    "type": "Percent",
                    "value": _whole(auto.scale_up_percent, "fleet.autoscaler.scale_up_percent", extra),
                    "periodSeconds": period,
                },
                {"type": "Pods", "value": auto.scale_up_pods, "periodSeconds": period},
            ],
            "selectPolicy": "Max",
        }
        window = _whole(
            auto.scale_down_stabilization_s,
            "fleet.autoscaler.scale_down_stabilization_s",
            extra,
            within=(0, 3600),
            what="an HPA's stabilizationWindowSeconds",
        )
        down: dict[str, Any] = {"stabilizationWindowSeconds": window}
        if auto.tolerance != 0.1:  # (the controller's default otherwise; the field is alpha in Kubernetes 1.33)
            up["tolerance"] = down["tolerance"] = str(auto.tolerance)
            extra.append(
                f"fleet.autoscaler.tolerance {auto.tolerance:g}: behavior's tolerance needs Kubernetes 1.33 with the "
                "HPAConfigurableTolerance feature gate (else set --horizontal-pod-autoscaler-tolerance)"
            )
        behavior: dict[str, Any] = {"scaleUp": up, "scaleDown": down}
    else:
        behavior = {
            "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": period}]},
            "scaleDown": {
                "stabilizationWindowSeconds": _whole(
                    auto.scale_down_delay_s,
                    "fleet.autoscaler.scale_down_delay_s",
                    extra,
                    within=(0, 3600),
                    what="an HPA's stabilizationWindowSeconds",
                )
            },
        }
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": auto.min_replicas // dp,
            "maxReplicaCount": auto.max_replicas // dp,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "Value" if metric in LATENCY_METRICS else "AverageValue",
                    "metadata": {
                        "serverAddress": PROMETHEUS,
                        "query": latency_query(metric, repo, getattr(auto, "latency_window_s", 60.0))
                        if metric in LATENCY_METRICS
                        else _queries(name, repo, dp)[metric],
                        "threshold": str(threshold),
                    },
                }
            ],
        },
    }
    notes = not_expressed(sc) + extra
    if auto.policy == "queue":
        notes.append(
            "fleet.autoscaler queue: written as a KEDA trigger on waiting requests (one replica per target_waiting); "
            "its scale_down_busy has no counterpart"
        )
    return [deployment, scaled], notes


def render_manifests(docs: list[dict[str, Any]], notes: list[str], source: str) -> str:
    head = [f"# Manifests for the fleet of {source}, written by fleetsim export.", "# Not expressed here:"]
    head += [f"#   - {n}" for n in notes]
    if any(d["kind"] == "ScaledObject" for d in docs):
        head.append(f"# (the KEDA trigger's serverAddress is {PROMETHEUS}: set your Prometheus)")
    body = "---\n".join(yaml.dump(d, Dumper=_NoAliases, sort_keys=False, width=1_000_000) for d in docs)
    return "\n".join(head) + "\n" + body
