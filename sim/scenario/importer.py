"""`fleetsim import`: a scenario from what a cluster already runs.

Reads, never runs: a `vllm serve` command line (a shell script or a text file), a vLLM `--config` YAML, and
Kubernetes manifests (a multi-document file or a folder of them):
- Deployment / StatefulSet (apps/v1): the container running vLLM (its command and args), its GPU request
  (`nvidia.com/gpu`, `amd.com/gpu`), the GPU type from its node selector or required node affinity (the GPU
  Feature Discovery label `nvidia.com/gpu.product`, GKE's `cloud.google.com/gke-accelerator`, Karpenter's
  `karpenter.k8s.aws/instance-gpu-name`, or the instance type), and its replica count;
- HorizontalPodAutoscaler (autoscaling/v2): min/max replicas, the metric and target (vLLM's Prometheus metrics
  through an adapter: `vllm:num_requests_running`/`_waiting`, `vllm:kv_cache_usage_perc`, DCGM's GPU
  utilization), `behavior` (scale-down stabilization window, scale-up policies);
- KEDA ScaledObject (keda.sh/v1alpha1): min/max replica counts, a Prometheus trigger's query and threshold,
  `advanced.horizontalPodAutoscalerConfig.behavior`;
- Knative Service (serving.knative.dev/v1) and KServe InferenceService (serving.kserve.io/v1beta1): the KPA's
  annotations (target, window, panic window and threshold, min/max/initial scale, scale-to-zero retention),
  `containerConcurrency`, a predictor's min/max replicas and scale target.
Every value set says where it came from (file, document, field) as a comment in the written scenario; what was
read and not mapped is listed with the reason. Schemas: Kubernetes API reference v1.33 (apps/v1 Deployment,
autoscaling/v2 HorizontalPodAutoscaler), KEDA 2.17 ScaledObject spec and Prometheus scaler, Knative Serving
autoscaling annotations (knative.dev/docs/serving/autoscaling), KServe v1beta1 InferenceService.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import load_model_catalog
from sim.policies.autoscale import LATENCY_METRICS
from sim.scenario.vllm_args import Mapped, find_vllm, map_options, options_from_mapping, parse_args, split_command
from sim.yaml_input import parse_yaml_documents, read_text

# --- GPU labels ------------------------------------------------------------------------------------------
# GPU Feature Discovery's `nvidia.com/gpu.product` (the CUDA device name, spaces as dashes) for each catalog GPU:
# what `fleetsim export` writes, and read back first on import
GFD_PRODUCT = {
    "a100-40gb": "NVIDIA-A100-SXM4-40GB",
    "a100-80gb": "NVIDIA-A100-SXM4-80GB",
    "h100-sxm": "NVIDIA-H100-80GB-HBM3",
    "h100-pcie": "NVIDIA-H100-PCIe",
    "h200": "NVIDIA-H200",
    "b200": "NVIDIA-B200",
    "l4": "NVIDIA-L4",
    "l40s": "NVIDIA-L40S",
    "l40": "NVIDIA-L40",
    "a10g": "NVIDIA-A10G",
    "rtx-4090": "NVIDIA-GeForce-RTX-4090",
    "rtx-5090": "NVIDIA-GeForce-RTX-5090",
    "rtx-a6000": "NVIDIA-RTX-A6000",
    "rtx-pro-6000": "NVIDIA-RTX-PRO-6000-Blackwell-Workstation-Edition",
}
# AMD's device plugin labels nodes with `amd.com/gpu.product-name`
AMD_PRODUCT = {"mi300x": "AMD_Instinct_MI300X"}
# GKE's accelerator names (cloud.google.com/gke-accelerator; GKE docs "GPUs" page)
GKE_ACCELERATOR = {
    "nvidia-tesla-a100": "a100-40gb",
    "nvidia-a100-80gb": "a100-80gb",
    "nvidia-h100-80gb": "h100-sxm",
    "nvidia-h100-mega-80gb": "h100-sxm",
    "nvidia-h200-141gb": "h200",
    "nvidia-b200": "b200",
    "nvidia-l4": "l4",
}
# instance types by family prefix (AWS EC2 accelerated computing, Google Cloud accelerator-optimized machine series,
# Azure ND/NC series docs)
INSTANCE_FAMILY = {
    "p4d.": "a100-40gb",
    "p4de.": "a100-80gb",
    "p5.": "h100-sxm",
    "p5e.": "h200",
    "p5en.": "h200",
    "p6-b200.": "b200",
    "g5.": "a10g",
    "g6.": "l4",
    "g6e.": "l40s",
    "a2-highgpu-": "a100-40gb",
    "a2-megagpu-": "a100-40gb",
    "a2-ultragpu-": "a100-80gb",
    "a3-highgpu-": "h100-sxm",
    "a3-megagpu-": "h100-sxm",
    "a3-ultragpu-": "h200",
    "a4-highgpu-": "b200",
    "g2-standard-": "l4",
    "standard_nd96asr_v4": "a100-40gb",
    "standard_nd96amsr_a100_v4": "a100-80gb",
    "standard_nc24ads_a100_v4": "a100-80gb",
    "standard_nd96isr_h100_v5": "h100-sxm",
    "standard_nd96isr_h200_v5": "h200",
    "standard_nd96isr_mi300x_v5": "mi300x",
}
GPU_LABELS = (
    "nvidia.com/gpu.product",
    "amd.com/gpu.product-name",
    "cloud.google.com/gke-accelerator",
    "karpenter.k8s.aws/instance-gpu-name",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
)
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


def gpu_from_label(key: str, value: str) -> str | None:
    """The catalog GPU a node label's value denotes, or None."""
    v = str(value).strip()
    low = v.lower()
    for name, product in (*GFD_PRODUCT.items(), *AMD_PRODUCT.items()):
        if low == product.lower():
            return name
    if key == "cloud.google.com/gke-accelerator" and low in GKE_ACCELERATOR:
        return GKE_ACCELERATOR[low]
    if key.endswith("instance-type"):
        for prefix, name in INSTANCE_FAMILY.items():
            if low.startswith(prefix):
                return name
        return None
    catalog = load_gpu_catalog()
    bare = low.removeprefix("nvidia-").removeprefix("nvidia ").removeprefix("tesla-")
    for candidate in (low, bare, bare.replace("-", " "), bare.replace("_", "-")):
        try:
            return catalog.get(candidate).name
        except FleetsimError:
            continue
    return None


# suffixes a Hugging Face repo adds to a model's name without changing its architecture: the tuning (instruct, chat),
# the packaging (hf) and the quantized releases (`weight_bits_from_name` reads their precision)
_NAME_SUFFIXES = (
    "-instruct", "-chat", "-hf", "-it", "-base", "-turbo",
    "-fp8-dynamic", "-fp8", "-dynamic", "-int8", "-int4", "-w8a8", "-w8a16", "-w4a16", "-awq", "-gptq",
    "-nvfp4", "-mxfp4", "-fp4", "-bnb-4bit", "-4bit", "-8bit", "-quantized",
)  # fmt: skip
_QUANT_BITS = (("fp8", 8), ("int8", 8), ("w8a8", 8), ("w8a16", 8), ("8bit", 8), ("int4", 4), ("w4a16", 4), ("awq", 4),
               ("gptq", 4), ("nvfp4", 4), ("mxfp4", 4), ("fp4", 4), ("4bit", 4))  # fmt: skip


def _name_stem(text: str) -> str:
    """A repo id's model name without its organisation, its `meta-` prefix (Meta-Llama-3.1-8B), its version after
    a size (Mistral-7B-v0.3; DeepSeek-V3's V3 is the model: DeepSeek-V2 is another) and the suffixes of
    `_NAME_SUFFIXES`, repeatedly (Llama-2-7b-chat-hf, Llama-3.3-70B-Instruct-FP8-dynamic)."""
    tail = text.strip().rstrip("/").lower().split("/")[-1].removeprefix("meta-")
    while True:
        before = tail
        version = re.search(r"-v\d+(\.\d+)*$", tail)
        if version and re.search(r"\d+(\.\d+)?[bm](-|$)", tail[: version.start()]):
            tail = tail[: version.start()]
        for suffix in _NAME_SUFFIXES:
            tail = tail.removesuffix(suffix)
        if tail == before:
            return tail


def weight_bits_from_name(name: str) -> int | None:
    """The weight precision a quantized release's name says (`-FP8`, `-AWQ`, `-W4A16`, ...), None for none; None too
    when the catalog entry it names ships quantized (gpt-oss's MXFP4 experts beside 16-bit attention, DeepSeek's FP8):
    the name says what the entry already knows, not that every weight is at that precision."""
    found = model_from_name(name)
    if found is not None and load_model_catalog().get(found).shipped_quant:
        return None
    tokens = re.split(r"[-_.]", name.strip().rstrip("/").lower().split("/")[-1])  # (the name model_from_name reads)
    for tag, bits in _QUANT_BITS:
        if tag in tokens:
            return bits
    return None


def model_from_name(name: str) -> str | None:
    """The catalog model a vLLM model argument (a Hugging Face repo id or a local path) denotes, or None: by name,
    by repo id or an alias (a repo of the same architecture, models.yaml), or by the name stripped of its
    organisation, tuning, packaging and quantization suffixes (`_name_stem`)."""
    catalog = load_model_catalog()
    key = name.strip().rstrip("/").lower()
    if key in catalog.models:
        return key
    aliases = model_aliases()
    for k, spec in catalog.models.items():
        if key in (spec.hf_repo.lower(), *aliases.get(k, ())):
            return k
    stem = _name_stem(key)
    if not stem:
        return None
    for k, spec in catalog.models.items():
        if stem in (_name_stem(spec.hf_repo), _name_stem(k), *(_name_stem(a) for a in aliases.get(k, ()))):
            return k
    return None


@functools.cache
def model_aliases() -> dict[str, tuple[str, ...]]:
    """Each catalog model's `aliases` (models.yaml: repos of the same architecture), lower-cased."""
    raw = yaml.safe_load(resources.files("sim.data").joinpath("models.yaml").read_text())
    return {name: tuple(str(a).lower() for a in body.get("aliases", ())) for name, body in raw.items()}


# --- the import --------------------------------------------------------------------------------------------
@dataclass
class Imported:
    """What the files said: scenario keys (dotted path -> value), each key's source, and the notes."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    replicas: tuple[int, str] | None = None  # the workload's replica count and where it was read
    gpus_per_pod: tuple[int, str] | None = None
    data_parallel: int = 1
    pipeline_parallel: int = 1
    workload: str | None = None  # the Deployment/Service name an autoscaler should target
    autoscaler_from: str | None = None
    unknown_gpus: list[str] = field(default_factory=list)  # GPU labels read whose values no catalog GPU answers to

    def set(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source

    def merge(self, mapped: Mapped) -> None:
        for key, value in mapped.values.items():
            if key == "data_parallel_size":
                self.data_parallel = int(value)
                if int(value) > 1:
                    self.set("fleet.dp", int(value), mapped.sources[key])
            elif key == "pipeline_parallel_size":
                self.pipeline_parallel = int(value)
                if int(value) > 1:
                    self.set("fleet.pp", int(value), mapped.sources[key])
            else:
                self.set(key, value, mapped.sources[key])
        self.notes.extend(mapped.notes)


IGNORED_KINDS = {
    "Service": "networking",
    "Ingress": "networking",
    "HTTPRoute": "networking",
    "Gateway": "networking",
    "NetworkPolicy": "networking",
    "ConfigMap": "configuration data",
    "Secret": "credentials",
    "PersistentVolumeClaim": "storage",
    "PersistentVolume": "storage",
    "StorageClass": "storage",
    "ServiceAccount": "access control",
    "Role": "access control",
    "RoleBinding": "access control",
    "ClusterRole": "access control",
    "ClusterRoleBinding": "access control",
    "Namespace": "a namespace",
    "PodDisruptionBudget": "voluntary-disruption limits",
    "ServiceMonitor": "metrics scraping",
    "PodMonitor": "metrics scraping",
    "PrometheusRule": "alerting rules",
    "TriggerAuthentication": "KEDA credentials",
}
KNOWN_KINDS = (
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "Service (Knative)",
    "InferenceService",
    "RayService",
)
TEMPLATE = re.compile(r"\{\{|\{%")  # Helm / Jinja (JSON never opens "{{": a key is a string)


class Doc:
    """One manifest document and how to name its fields in an error or a source comment."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def src(self, path: str) -> str:
        return f"{self.where} {path}"

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def need(self, path: str) -> Any:
        value = self.get(path)
        if value is None:
            raise FleetsimError(f"{self.where}: {self.why_not(path)}")
        return value

    def why_not(self, path: str) -> str:
        """Why `path` has no value: the first part of it that is missing, or that holds something other than a
        mapping where the path goes on (a manifest's `spec: "no"` is not a missing spec)."""
        node: Any = self.data
        done: list[str] = []
        for part in path.split("."):
            if not isinstance(node, dict):
                return f"{'.'.join(done) or 'the manifest'} must be a mapping (got {type(node).__name__} {_short(node)})"
            if part not in node or node[part] is None:
                return f"{'.'.join([*done, part])} is missing"
            node = node[part]
            done.append(part)
        return f"{path} is missing"

    def int_at(self, path: str, value: Any, *, minimum: int | None = None, text: bool = False) -> int:
        """An integer field: an integer in the manifest (Kubernetes refuses `maxReplicas: "8"`), or with `text` also
        its decimal text (a resource quantity's `nvidia.com/gpu: "1"`)."""
        if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and not text):
            what = "a string" if isinstance(value, str) else type(value).__name__
            raise FleetsimError(f"{self.where}: {path} must be an integer, not {what} (got {value!r})")
        try:
            n = int(value)
        except ValueError:
            raise FleetsimError(f"{self.where}: {path} must be an integer (got {value!r})") from None
        if minimum is not None and n < minimum:  # (a value the scenario does not check again: a note's figure)
            raise FleetsimError(f"{self.where}: {path} must be >= {minimum} (got {value!r})")
        return n


def _check_templating(node: Any, where: str, path: str = "") -> None:
    """Helm/Jinja templating left in a manifest (`{{ .Values.x }}`): render it first (helm template)."""
    if isinstance(node, str):
        if TEMPLATE.search(node):
            raise FleetsimError(
                f"{where}: {path or 'the document'} holds unrendered templating ({node[:60]!r}); render it first (helm template, kustomize build)"
            )
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_templating(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_templating(v, where, f"{path}[{i}]")


def quantity(text: Any, where: str) -> float:
    """A Kubernetes quantity ("800m", "2", "1.5", "4k", "1Ki") as a number."""
    if isinstance(text, bool):
        raise FleetsimError(f"{where}: not a quantity ({text!r})")
    if isinstance(text, int | float):
        return float(text)
    s = str(text).strip()
    suffixes = {"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    suffix = next((x for x in suffixes if s.endswith(x)), "")
    number, scale = (s[: -len(suffix)], suffixes[suffix]) if suffix else (s, 1.0)
    try:
        return float(number) * scale
    except ValueError:
        raise FleetsimError(f"{where}: not a Kubernetes quantity ({text!r})") from None


# --- vLLM in a pod ----------------------------------------------------------------------------------------------
SHELLS = ("sh", "bash", "dash", "ash", "zsh")
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _container_args(container: dict[str, Any], where: str, env: dict[str, str]) -> list[str] | None:
    """The vLLM arguments of a container: Kubernetes passes each `command`/`args` item as one word (a shell's
    `-c` script is split as the shell would), `$(VAR)` expanded from the container's env as the kubelet does; with
    no command, the vLLM image's entrypoint (`vllm serve`) runs the args."""
    lists = []
    for part in ("command", "args"):
        value = container.get(part) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise FleetsimError(f"{where}.{part} must be a list of strings")
        lists.append([VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(item)) for item in value])
    command, args = lists
    words = [*command, *args]
    if words and words[0].rsplit("/", 1)[-1] in SHELLS and "-c" in words:
        script = words[words.index("-c") + 1 :]
        words = split_command(" ".join(script), where) if script else []
    found = find_vllm(words)
    if found is None and not command and "vllm" in str(container.get("image", "")):
        return find_vllm(["vllm", "serve", *args])  # the image's entrypoint
    return found


def _short(value: Any) -> str:
    """A value as a manifest holds it, cut for a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pod_spec(imp: Imported, doc: Doc, spec_path: str) -> None:
    """The vLLM container of a pod template (its args, GPUs) and the GPU type from node selection."""
    spec = doc.get(spec_path)
    if not isinstance(spec, dict):
        why = (
            doc.why_not(spec_path)
            if spec is None
            else f"{spec_path} must be a mapping (got {type(spec).__name__} {_short(spec)})"
        )
        raise FleetsimError(f"{doc.where}: {why}")
    containers = spec.get("containers")
    if containers is None or containers == []:
        raise FleetsimError(f"{doc.where}: {spec_path}.containers is missing")
    if not isinstance(containers, list):
        raise FleetsimError(
            f"{doc.where}: {spec_path}.containers must be a list of containers (got {type(containers).__name__} "
            f"{_short(containers)})"
        )
    servers = []  # the containers that run vLLM: (index, container, its arguments, its environment)
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            raise FleetsimError(f"{doc.where}: {spec_path}.containers[{i}] must be a mapping")
        env = {str(e.get("name")): str(e.get("value", "")) for e in c.get("env") or [] if isinstance(e, dict)}
        args = _container_args(c, f"{doc.where}: {spec_path}.containers[{i}]", env)
        if args is not None:
            servers.append((i, c, args, env))
    if not servers:
        raise FleetsimError(
            f"{doc.where}: no container of {spec_path}.containers runs vLLM (vllm serve, or python -m vllm.entrypoints.openai.api_server)"
        )
    i, container, args, env_vars = servers[0]
    cpath = f"{spec_path}.containers[{i}]"
    for j, other, _, _ in servers[1:]:  # a second server in the pod is a second replica nobody mapped: say so
        imp.notes.append(
            f"{doc.src(f'{spec_path}.containers[{j}]')} ({other.get('name', 'unnamed')}): a second vLLM server in the "
            f"pod; only {cpath} ({container.get('name', 'unnamed')}) is mapped, as one replica a pod"
        )
    imp.merge(map_options(parse_args(args, doc.src(cpath)), doc.src(f"{cpath}.args")))
    for name in env_vars:
        if name.startswith("VLLM_"):
            imp.notes.append(f"{doc.src(cpath)}.env {name}: vLLM environment settings are not mapped")
    _weights_tier(imp, doc, spec, container, cpath, spec_path, env_vars)
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        block = resources.get(section) or {}
        for res in GPU_RESOURCES:
            if res in block:
                imp.gpus_per_pod = (
                    doc.int_at(f"{cpath}.resources.{section}.{res}", block[res], minimum=0, text=True),
                    doc.src(f"{cpath}.resources.{section}"),
                )
                break
        if imp.gpus_per_pod is not None:
            break
    labels: list[tuple[str, str, str]] = []
    selector = spec.get("nodeSelector") or {}
    if isinstance(selector, dict):
        labels += [(k, str(v), f"{spec_path}.nodeSelector.{k}") for k, v in selector.items() if k in GPU_LABELS]
    terms = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    ).get("nodeSelectorTerms") or []
    for t, term in enumerate(terms if isinstance(terms, list) else []):
        for e, expr in enumerate((term or {}).get("matchExpressions") or []):
            if isinstance(expr, dict) and expr.get("key") in GPU_LABELS and expr.get("operator") == "In":
                values = expr.get("values") or []
                if len(values) > 1:
                    imp.notes.append(
                        f"{doc.src(spec_path)}.affinity: {expr['key']} allows {', '.join(map(str, values))}; the first is simulated"
                    )
                if values:
                    labels.append(
                        (expr["key"], str(values[0]), f"{spec_path}.affinity...nodeSelectorTerms[{t}].matchExpressions[{e}]")
                    )
    for key, value, path in labels:
        gpu = gpu_from_label(key, value)
        if gpu is not None:
            imp.set("fleet.gpu", gpu, doc.src(f"{path} {value}"))
            break
        imp.notes.append(f"{doc.src(path)} {value}: no catalog GPU is known by this label value")
        imp.unknown_gpus.append(f"{doc.src(path)} {value}")


def volume_tier(volume: dict[str, Any]) -> tuple[str, str] | None:
    """The storage tier (`sim.policies.lifecycle.STORAGE_TIERS`) a pod volume reads weights from, and why."""
    if "hostPath" in volume:
        return "local_nvme", "a hostPath volume (the node's local disk)"
    if "emptyDir" in volume:
        if str((volume["emptyDir"] or {}).get("medium", "")) == "Memory":
            return "host_ram", "an emptyDir in memory"
        return None  # filled at start: the weights come from wherever they are downloaded
    if "persistentVolumeClaim" in volume or "nfs" in volume:
        return "network_disk", "a persistent volume claim (network block or file storage)"
    driver = str(((volume.get("csi") or {}).get("driver")) or "")
    if driver in ("s3.csi.aws.com", "gcsfuse.csi.storage.gke.io", "blob.csi.azure.com"):
        return "object_store", f"the {driver} object-store mount"
    return None


def _weights_tier(
    imp: Imported, doc: Doc, spec: dict[str, Any], container: dict[str, Any], cpath: str, spec_path: str, env: dict[str, str]
) -> None:
    """Where the weights load from at a cold start: the volume holding the model path, or the volume caching Hugging
    Face downloads (HF_HOME, --download-dir, ~/.cache/huggingface); with neither, the Hub (an object store)."""
    model = str(imp.values.get("model", ""))
    volumes = {str(v.get("name")): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    mounts = [
        (str(m.get("mountPath", "")), str(m.get("name"))) for m in container.get("volumeMounts") or [] if isinstance(m, dict)
    ]
    cache_dirs = [d for d in (env.get("HF_HOME"), env.get("HF_HUB_CACHE"), "/root/.cache/huggingface") if d]
    where_from = model if model.startswith("/") else None
    for path in [where_from] if where_from else cache_dirs:
        for mount_path, name in sorted(mounts, key=lambda m: -len(m[0])):
            if mount_path and (path == mount_path or path.startswith(mount_path.rstrip("/") + "/")):
                tier = volume_tier(volumes.get(name, {}))
                if tier is not None:
                    what = "the model path" if where_from else "the Hugging Face cache"
                    imp.set("fleet.lifecycle.weights_from", tier[0], doc.src(f"{spec_path}.volumes {name}: {what} on {tier[1]}"))
                    if not where_from:
                        imp.notes.append(
                            f"{doc.src(cpath)}: the first start downloads {model} into the cache; later ones read it"
                        )
                    return
    if not where_from and model:
        imp.set(
            "fleet.lifecycle.weights_from",
            "object_store",
            doc.src(f"{cpath}: {model} downloaded from the Hugging Face Hub at each start"),
        )


def _workload(imp: Imported, doc: Doc) -> None:
    _workload_name(imp, doc)
    _pod_spec(imp, doc, "spec.template.spec")
    if doc.get("spec.replicas") is not None:
        n = doc.int_at("spec.replicas", doc.get("spec.replicas"))
        if n < 0:
            raise FleetsimError(f"{doc.where}: spec.replicas must be >= 0 (got {n})")
        imp.replicas = (n, doc.src("spec.replicas"))


# --- autoscalers ---------------------------------------------------------------------------------------------
def metric_of(text: str) -> str | None:
    """fleetsim's autoscaling signal for a metric name or a PromQL query: outstanding_per_replica (vLLM's running
    plus waiting requests), running (running only), waiting, kv_use, busy_fraction (GPU utilization), or None."""
    t = text.lower().replace(":", "_")
    latency = latency_metric_of(t)
    if latency is not None:
        return latency
    running = "num_requests_running" in t
    waiting = "num_requests_waiting" in t or (running and "waiting" in t)  # (an adapter rule's running_plus_waiting)
    if "kv_cache_usage" in t or "gpu_cache_usage" in t:
        return "kv_use"
    if running and waiting:
        return "outstanding_per_replica"
    if running:
        return "running"
    if waiting:
        return "waiting"
    if "dcgm_fi_dev_gpu_util" in t:
        return "busy_percent"
    if "dcgm_fi_prof_gr_engine_active" in t:
        return "busy_fraction"
    return None


def latency_metric_of(t: str) -> str | None:
    """A histogram_quantile over vLLM's TTFT or per-output-token histogram: p90_ttft_s, p99_ttft_s, p90_tpot_s or
    p99_tpot_s (other quantiles: the nearer of 0.9 and 0.99), else None."""
    m = re.search(r"histogram_quantile\(\s*([0-9.]+)", t)
    if m is None:
        return None
    which = "ttft" if "time_to_first_token" in t else "tpot" if ("time_per_output_token" in t or "inter_token" in t) else None
    if which is None:
        return None
    q = float(m.group(1))
    return f"{'p90' if abs(q - 0.9) <= abs(q - 0.99) else 'p99'}_{which}_s"


def latency_window_of(query: str) -> float | None:
    """The range of a PromQL rate(...[1m]) in seconds (s, m, h), or None."""
    m = re.search(r"\[(\d+(?:\.\d+)?)([smh])\]", query)
    return None if m is None else float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def _set_metric(imp: Imported, kind: str, target: float, source: str, auto: dict[str, Any]) -> None:
    if kind in LATENCY_METRICS:  # a fleet-wide value: the SLO-driven HPA
        auto.update(policy="hpa", metric=kind, target=target)
    elif kind in ("outstanding_per_replica", "running"):
        auto.update(policy="hpa", metric="outstanding_per_replica", target=target)
        if kind == "running":
            imp.notes.append(
                f"{source}: vllm:num_requests_running alone; fleetsim's outstanding_per_replica also counts waiting requests"
            )
    elif kind == "waiting":
        auto.update(policy="queue", target_waiting=target)
        imp.notes.append(
            f"{source}: waiting requests per replica, as fleetsim's queue policy (one replica per target_waiting waiting)"
        )
    elif kind == "kv_use":
        if target > 1:
            imp.notes.append(f"{source}: KV use target {target:g} read as a percentage")
            target /= 100
        auto.update(policy="hpa", metric="kv_use", target=target)
    else:
        if kind == "busy_percent":
            target /= 100
        auto.update(policy="hpa", metric="busy_fraction", target=target)
    imp.sources["fleet.autoscaler.target"] = source


def _behavior(imp: Imported, doc: Doc, path: str, auto: dict[str, Any]) -> None:
    """The HPA's `behavior`: the scale-down stabilization window; the scale-up policies, which fleetsim's hpa applies
    as one limit per control interval, max(percent of the current count, pods) (`selectPolicy: Max`, the HPA's
    default); its tolerance (Kubernetes 1.33, alpha)."""
    behavior = doc.get(path)
    if behavior is None:
        return
    if not isinstance(behavior, dict):
        raise FleetsimError(f"{doc.where}: {path} must be a mapping")
    down, up = behavior.get("scaleDown") or {}, behavior.get("scaleUp") or {}
    for side, block in (("scaleDown", down), ("scaleUp", up)):
        if not isinstance(block, dict):
            raise FleetsimError(f"{doc.where}: {path}.{side} must be a mapping")
    if down.get("stabilizationWindowSeconds") is not None:
        where = f"{path}.scaleDown.stabilizationWindowSeconds"
        auto["scale_down_stabilization_s"] = float(doc.int_at(where, down["stabilizationWindowSeconds"]))
        imp.sources["fleet.autoscaler.scale_down_stabilization_s"] = doc.src(where)
    if down.get("policies"):
        imp.notes.append(f"{doc.src(path)}.scaleDown.policies: scale-down rate limits are not modelled")
    if down.get("selectPolicy") == "Disabled":
        imp.notes.append(f"{doc.src(path)}.scaleDown.selectPolicy Disabled: not modelled (fleetsim's hpa scales down)")
    if up.get("stabilizationWindowSeconds"):
        imp.notes.append(f"{doc.src(path)}.scaleUp.stabilizationWindowSeconds: a scale-up stabilization window is not modelled")
    tolerances = {side: block["tolerance"] for side, block in (("scaleUp", up), ("scaleDown", down)) if "tolerance" in block}
    if tolerances:
        side, value = next(iter(tolerances.items()))
        auto["tolerance"] = quantity(value, doc.src(f"{path}.{side}.tolerance"))
        imp.sources["fleet.autoscaler.tolerance"] = doc.src(f"{path}.{side}.tolerance")
        if len({quantity(v, doc.where) for v in tolerances.values()}) > 1:
            imp.notes.append(f"{doc.src(path)}: scale-up and scale-down tolerances differ; fleetsim's hpa has one ({side}'s)")
    policies = up.get("policies") or []
    if not isinstance(policies, list):
        raise FleetsimError(f"{doc.where}: {path}.scaleUp.policies must be a list")
    select = up.get("selectPolicy", "Max")
    if select != "Max" and policies:
        imp.notes.append(f"{doc.src(path)}.scaleUp.selectPolicy {select}: read as Max (fleetsim's hpa takes the larger limit)")
    kinds = set()
    periods = set()
    for i, policy in enumerate(policies):
        where = f"{path}.scaleUp.policies[{i}]"
        if not isinstance(policy, dict):
            raise FleetsimError(f"{doc.where}: {where} must be a mapping")
        kind = policy.get("type")
        value = doc.int_at(f"{where}.value", policy.get("value"))
        if kind == "Percent":
            auto["scale_up_percent"] = float(value)
            imp.sources["fleet.autoscaler.scale_up_percent"] = doc.src(where)
        elif kind == "Pods":
            auto["scale_up_pods"] = value
            imp.sources["fleet.autoscaler.scale_up_pods"] = doc.src(where)
        else:
            raise FleetsimError(f"{doc.where}: {where}.type must be Percent or Pods (got {kind!r})")
        kinds.add(kind)
        if policy.get("periodSeconds") is not None:
            periods.add(doc.int_at(f"{where}.periodSeconds", policy["periodSeconds"]))
    if kinds == {"Pods"}:  # no percent limit: the pods alone
        auto["scale_up_percent"] = 1e-9
        imp.sources["fleet.autoscaler.scale_up_percent"] = doc.src(f"{path}.scaleUp.policies: no Percent policy")
    elif kinds == {"Percent"}:
        auto["scale_up_pods"] = 1
        imp.sources["fleet.autoscaler.scale_up_pods"] = doc.src(f"{path}.scaleUp.policies: no Pods policy (1, the least)")
    if periods:
        auto["interval_s"] = float(max(periods))
        imp.sources["fleet.autoscaler.interval_s"] = doc.src(f"{path}.scaleUp.policies periodSeconds")
        imp.notes.append(
            f"{doc.src(path)}.scaleUp.policies: fleetsim's hpa acts and applies its scale-up limit once per interval, set to "
            f"the policies' period {max(periods)} s (the HPA itself syncs every 15 s and limits over a sliding period)"
        )


def _policy_keys(imp: Imported, doc: Doc, auto: dict[str, Any]) -> None:
    """The queue policy (a waiting-requests metric) has a scale-down delay where the HPA has a stabilization window,
    and no scale-up limits or tolerance."""
    if auto["policy"] != "queue":
        return
    if "scale_down_stabilization_s" in auto:
        auto["scale_down_delay_s"] = auto.pop("scale_down_stabilization_s")
        imp.sources["fleet.autoscaler.scale_down_delay_s"] = imp.sources.pop("fleet.autoscaler.scale_down_stabilization_s")
    for key in ("scale_up_percent", "scale_up_pods", "tolerance"):
        if auto.pop(key, None) is not None:
            imp.notes.append(f"{doc.where}: behavior {key}: fleetsim's queue policy has no such limit (left out)")


def _min_max(
    imp: Imported, doc: Doc, auto: dict[str, Any], lo_path: str, hi_path: str, lo_default: int, *, hi_default: int | None = None
) -> None:
    lo = doc.get(lo_path, lo_default)
    hi = doc.get(hi_path, hi_default)
    if hi is None:
        raise FleetsimError(f"{doc.where}: {hi_path} is missing (fleetsim needs the autoscaler's ceiling)")
    auto["min_replicas"] = doc.int_at(lo_path, lo)
    auto["max_replicas"] = doc.int_at(hi_path, hi)
    imp.sources["fleet.autoscaler.min_replicas"] = doc.src(
        lo_path if doc.get(lo_path) is not None else f"{lo_path} (default {lo_default})"
    )
    imp.sources["fleet.autoscaler.max_replicas"] = doc.src(
        hi_path if doc.get(hi_path) is not None else f"{hi_path} (default {hi_default})"
    )


def _claim_autoscaler(imp: Imported, doc: Doc) -> None:
    if imp.autoscaler_from is not None:
        raise FleetsimError(f"{doc.where}: a second autoscaler (after {imp.autoscaler_from}); a workload has one")
    imp.autoscaler_from = doc.where


def _hpa(imp: Imported, doc: Doc, target_name: str) -> None:
    _claim_autoscaler(imp, doc)
    auto: dict[str, Any] = {}
    _min_max(imp, doc, auto, "spec.minReplicas", "spec.maxReplicas", 1)
    chosen = None
    for i, metric in enumerate(doc.get("spec.metrics") or []):
        where = f"spec.metrics[{i}]"
        kind = metric.get("type") if isinstance(metric, dict) else None
        block = (
            metric.get(
                {"Pods": "pods", "Object": "object", "External": "external", "Resource": "resource"}.get(kind or "", ""), {}
            )
            if kind
            else {}
        )
        name = ((block or {}).get("metric") or {}).get("name") or (block or {}).get("name") or ""
        signal = metric_of(str(name))
        if signal is None or chosen is not None:
            why = (
                "a second metric (the HPA takes the largest recommendation; fleetsim follows one)"
                if signal
                else "no fleetsim counterpart"
            )
            imp.notes.append(f"{doc.src(where)} {kind} {name}: not modelled ({why})")
            continue
        target = (block or {}).get("target") or {}
        value = target.get("averageValue", target.get("value"))
        if value is None and target.get("averageUtilization") is not None:
            value = target["averageUtilization"]
        if value is None:
            raise FleetsimError(f"{doc.where}: {where}.{(kind or '').lower()}.target needs averageValue or value")
        if "averageValue" not in target:
            imp.notes.append(f"{doc.src(where)}: a target {target.get('type')} is read as a per-replica average")
        chosen = (signal, quantity(value, doc.src(f"{where} target")), doc.src(f"{where} {name}"))
    if chosen is None:
        fixed = imp.replicas[0] if imp.replicas else auto["min_replicas"]
        imp.notes.append(f"{doc.where}: no metric fleetsim models; the fleet runs fixed at {fixed} replicas")
        imp.values["fleet.autoscaler"] = {"policy": "fixed", "replicas": max(1, fixed)}
        imp.sources["fleet.autoscaler"] = doc.where
        return
    _set_metric(imp, *chosen, auto)
    _behavior(imp, doc, "spec.behavior", auto)
    _policy_keys(imp, doc, auto)
    imp.values["fleet.autoscaler"] = auto
    imp.sources["fleet.autoscaler"] = doc.src(f"spec.scaleTargetRef {target_name}")


def _keda(imp: Imported, doc: Doc) -> None:
    _claim_autoscaler(imp, doc)
    auto: dict[str, Any] = {}
    _min_max(imp, doc, auto, "spec.minReplicaCount", "spec.maxReplicaCount", 0, hi_default=100)
    for key in ("idleReplicaCount", "fallback"):
        if doc.get(f"spec.{key}") is not None:
            imp.notes.append(f"{doc.src('spec.' + key)}: not modelled")
    chosen = None
    triggers = doc.get("spec.triggers") or []
    if not isinstance(triggers, list):
        raise FleetsimError(f"{doc.where}: spec.triggers must be a list")
    for i, trig in enumerate(triggers):
        where = f"spec.triggers[{i}]"
        meta = trig.get("metadata") if isinstance(trig, dict) else None
        if not isinstance(meta, dict):
            raise FleetsimError(f"{doc.where}: {where}.metadata must be a mapping")
        query = str(meta.get("query") or meta.get("metricName") or "")
        if meta.get("activationThreshold") is not None:
            imp.notes.append(f"{doc.src(where)}.metadata.activationThreshold: KEDA's activation (0 <-> 1) is not modelled apart")
        if re.match(r"\s*avg\b", query) and str(trig.get("metricType") or "AverageValue") == "AverageValue":
            imp.notes.append(
                f"{doc.src(where)}.metadata.query: avg(...) with AverageValue divides the average by the replicas again; "
                "read as the per-replica target (sum(...) is what AverageValue expects)"
            )
        signal = metric_of(query) if trig.get("type") == "prometheus" else None
        if signal is None or chosen is not None:
            why = "a second trigger (fleetsim follows one)" if signal else "no fleetsim counterpart"
            imp.notes.append(f"{doc.src(where)} {trig.get('type')}: not modelled ({why})")
            continue
        if meta.get("threshold") is None:
            raise FleetsimError(f"{doc.where}: {where}.metadata.threshold is missing")
        kind = str(trig.get("metricType") or "AverageValue")
        if signal in LATENCY_METRICS:
            if kind != "Value":
                imp.notes.append(f"{doc.src(where)}: metricType {kind} on a latency quantile read as Value (fleet-wide)")
            window = latency_window_of(query)
            if window is not None:
                auto["latency_window_s"] = window
                imp.sources["fleet.autoscaler.latency_window_s"] = doc.src(f"{where}.metadata.query")
        elif kind != "AverageValue":
            imp.notes.append(f"{doc.src(where)}: metricType {kind} read as AverageValue (per replica)")
        chosen = (signal, quantity(meta["threshold"], doc.src(f"{where}.metadata.threshold")), doc.src(f"{where}.metadata.query"))
    if chosen is None:
        raise FleetsimError(f"{doc.where}: spec.triggers has no Prometheus trigger on a vLLM or DCGM metric fleetsim models")
    _set_metric(imp, *chosen, auto)
    _behavior(imp, doc, "spec.advanced.horizontalPodAutoscalerConfig.behavior", auto)
    _policy_keys(imp, doc, auto)
    for key in ("pollingInterval", "cooldownPeriod"):
        if doc.get(f"spec.{key}") is not None:
            imp.notes.append(
                f"{doc.src('spec.' + key)}: KEDA's activation polling and cool-down (0 <-> 1) are not modelled apart"
            )
    imp.values["fleet.autoscaler"] = auto
    imp.sources["fleet.autoscaler"] = doc.src("spec.scaleTargetRef")


KN = "autoscaling.knative.dev/"


def _kpa(imp: Imported, doc: Doc, annotations: dict[str, Any], apath: str, bounds: dict[str, Any], concurrency: Any) -> None:
    """Knative's autoscaler from a revision's annotations (KServe's predictor fields in `bounds` win)."""
    _claim_autoscaler(imp, doc)
    cls = str(annotations.get(KN + "class", "kpa.autoscaling.knative.dev"))
    metric = str(annotations.get(KN + "metric", "concurrency"))
    if cls != "kpa.autoscaling.knative.dev" or metric != "concurrency":
        raise FleetsimError(
            f"{doc.where}: {apath} class {cls} / metric {metric}: fleetsim models Knative's KPA on concurrency only"
        )
    auto: dict[str, Any] = {"policy": "kpa"}
    if not isinstance(annotations, dict):
        raise FleetsimError(f"{doc.where}: {apath} must be a mapping")
    for old_name, name in (("minScale", "min-scale"), ("maxScale", "max-scale"), ("initialScale", "initial-scale")):
        if KN + old_name in annotations and KN + name not in annotations:  # (the older spellings)
            annotations = {**annotations, KN + name: annotations[KN + old_name]}

    def take(key: str, ann: str, convert: Any, default: Any = None) -> None:
        if bounds.get(key) is not None:
            value, where = bounds[key]
        elif KN + ann in annotations:
            value, where = annotations[KN + ann], f"{apath}.{KN}{ann}"
        elif default is not None:
            value, where = default, f"{apath}.{KN}{ann} (Knative's default {default})"
        else:
            return
        auto[key] = convert(value, doc.src(where))
        imp.sources[f"fleet.autoscaler.{key}"] = doc.src(where)

    def integer(value: Any, where: str) -> int:
        return int(quantity(value, where))

    take("min_replicas", "min-scale", integer, 0)
    take("max_replicas", "max-scale", integer)
    if auto.get("max_replicas") in (None, 0):
        raise FleetsimError(f"{doc.where}: {apath}.{KN}max-scale is missing or 0 (unbounded); fleetsim needs the ceiling")
    take("initial_replicas", "initial-scale", integer)
    # Knative's target: the annotation (default 100), capped at containerConcurrency when that is set (which is the
    # target when no annotation is), times target-utilization-percentage (default 70)
    cc = None
    if concurrency is not None:
        cc_value, cc_where = concurrency
        cc = doc.int_at(cc_where, cc_value)
        if cc > 0:
            imp.set("fleet.max_outstanding_per_replica", cc, doc.src(cc_where))
    given = bounds.get("target_concurrency") is not None or KN + "target" in annotations
    take("target_concurrency", "target", quantity, 100 if not (cc and cc > 0) else None)
    if cc and cc > 0 and (not given or auto["target_concurrency"] > cc):
        auto["target_concurrency"] = float(cc)
        imp.sources["fleet.autoscaler.target_concurrency"] = doc.src(f"{concurrency[1]} (the target: containerConcurrency)")
    util = quantity(
        annotations.get(KN + "target-utilization-percentage", 70), doc.src(f"{apath}.{KN}target-utilization-percentage")
    )
    if util != 100:
        auto["target_concurrency"] = auto["target_concurrency"] * util / 100
        imp.notes.append(
            f"{doc.src(apath)}: target x target-utilization-percentage {util:g}% = {auto['target_concurrency']:g} concurrent requests per replica"
        )
    take("stable_window_s", "window", go_duration)
    take("panic_window_percentage", "panic-window-percentage", quantity)
    take("panic_threshold_percentage", "panic-threshold-percentage", quantity)
    take("scale_to_zero_grace_s", "scale-to-zero-pod-retention-period", go_duration)
    for ann in ("scale-down-delay", "activation-scale", "target-burst-capacity", "metric-aggregation-algorithm"):
        if KN + ann in annotations:
            imp.notes.append(f"{doc.src(apath)}.{KN}{ann} {annotations[KN + ann]}: not modelled")
    if auto.get("initial_replicas") is not None and auto["initial_replicas"] < auto["min_replicas"]:
        imp.notes.append(f"{doc.src(apath)}: initial-scale below min-scale; fleetsim starts at min-scale")
        auto.pop("initial_replicas")
    imp.values["fleet.autoscaler"] = auto
    imp.sources["fleet.autoscaler"] = doc.src(apath)


GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


def go_duration(value: Any, where: str) -> float:
    """A Go duration ("90s", "1m30s", "1h", "500ms"; a bare number: seconds) in seconds."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise FleetsimError(f"{where}: not a duration ({value!r}; e.g. 90s, 1m30s, 1h)")
    return sum(float(n) * GO_UNITS[u] for n, u in parts)


def _knative(imp: Imported, doc: Doc) -> None:
    _workload_name(imp, doc)
    _pod_spec(imp, doc, "spec.template.spec")
    annotations = doc.get("spec.template.metadata.annotations") or {}
    cc = doc.get("spec.template.spec.containerConcurrency")
    _kpa(
        imp,
        doc,
        annotations,
        "spec.template.metadata.annotations",
        {},
        (cc, "spec.template.spec.containerConcurrency") if cc is not None else None,
    )


def _workload_name(imp: Imported, doc: Doc) -> None:
    if imp.workload is not None:
        raise FleetsimError(
            f"{doc.where}: a second vLLM workload ({doc.get('metadata.name')!r} after {imp.workload!r}); import one deployment at a time"
        )
    imp.workload = str(doc.get("metadata.name") or "")


def _kserve(imp: Imported, doc: Doc) -> None:
    _workload_name(imp, doc)
    pred = doc.need("spec.predictor")
    if not isinstance(pred, dict):
        raise FleetsimError(f"{doc.where}: spec.predictor must be a mapping")
    if "containers" in pred:
        _pod_spec(imp, doc, "spec.predictor")
    elif isinstance(pred.get("model"), dict):
        model = pred["model"]
        raw_args = model.get("args") or []
        if not isinstance(raw_args, list):
            raise FleetsimError(f"{doc.where}: spec.predictor.model.args must be a list")
        args = [str(a) for a in raw_args]
        opts: dict[str, Any] = {}
        rest: list[str] = []
        i = 0
        while i < len(args):  # KServe's Hugging Face runtime: --model_id and --model_name, the rest passed to vLLM
            a = args[i]
            name, eq, value = a.partition("=")
            i += 1
            if name in ("--model_id", "--model-id", "--model_name", "--model-name", "--backend") and not eq:
                value = args[i] if i < len(args) else ""
                i += 1
            if name in ("--model_id", "--model-id"):
                opts["model"] = value
            elif name in ("--model_name", "--model-name", "--backend"):
                imp.notes.append(f"{doc.src('spec.predictor.model.args')} {name} {value}: no bearing on the simulation")
            else:
                rest.append(a)
        if "model" not in opts and model.get("storageUri"):
            opts["model"] = str(model["storageUri"]).rstrip("/").split("/")[-1]
            imp.notes.append(f"{doc.src('spec.predictor.model.storageUri')}: the model named by the URI's last part")
        opts.update(parse_args(rest, doc.src("spec.predictor.model.args")))
        imp.merge(map_options(opts, doc.src("spec.predictor.model.args")))
        resources = model.get("resources") or {}
        limits = (resources.get("limits") if isinstance(resources, dict) else None) or {}
        if not isinstance(limits, dict):
            raise FleetsimError(f"{doc.where}: spec.predictor.model.resources.limits must be a mapping")
        for res in GPU_RESOURCES:
            if res in limits:
                imp.gpus_per_pod = (
                    doc.int_at(f"spec.predictor.model.resources.limits.{res}", limits[res], minimum=0, text=True),
                    doc.src("spec.predictor.model.resources.limits"),
                )
        selector = pred.get("nodeSelector") or {}
        for k, v in selector.items() if isinstance(selector, dict) else ():
            gpu = gpu_from_label(k, str(v)) if k in GPU_LABELS else None
            if gpu is not None:
                imp.set("fleet.gpu", gpu, doc.src(f"spec.predictor.nodeSelector.{k} {v}"))
            elif k in GPU_LABELS:
                imp.unknown_gpus.append(f"{doc.src(f'spec.predictor.nodeSelector.{k}')} {v}")
    else:
        raise FleetsimError(f"{doc.where}: spec.predictor needs containers or model")
    annotations = doc.get("metadata.annotations") or {}
    mode = str(annotations.get("serving.kserve.io/deploymentMode", "Serverless"))
    bounds: dict[str, Any] = {}
    for key, field_name in (("min_replicas", "minReplicas"), ("max_replicas", "maxReplicas")):
        if pred.get(field_name) is not None:
            where = f"spec.predictor.{field_name}"
            bounds[key] = (doc.int_at(where, pred[field_name]), where)
    metric = str(pred.get("scaleMetric", "concurrency"))
    if pred.get("scaleTarget") is not None:
        if metric == "concurrency":
            bounds["target_concurrency"] = (
                doc.int_at("spec.predictor.scaleTarget", pred["scaleTarget"]),
                "spec.predictor.scaleTarget",
            )
        else:
            imp.notes.append(
                f"{doc.src('spec.predictor.scaleMetric')} {metric}: not modelled (fleetsim's KPA scales on concurrency)"
            )
    if mode == "Serverless":
        if "min_replicas" not in bounds:
            bounds["min_replicas"] = (1, "spec.predictor.minReplicas (KServe's default 1)")
        cc = pred.get("containerConcurrency")
        _kpa(
            imp,
            doc,
            annotations,
            "metadata.annotations",
            bounds,
            (cc, "spec.predictor.containerConcurrency") if cc is not None else None,
        )
    else:
        imp.notes.append(
            f"{doc.src('metadata.annotations')} deploymentMode {mode}: its HPA scales on CPU, which fleetsim does not model"
        )
        n = bounds.get("min_replicas", (1, ""))[0]
        imp.replicas = (doc.int_at("spec.predictor.minReplicas", n), doc.src("spec.predictor.minReplicas"))


# Ray's accelerator types (ray.util.accelerators) by catalog GPU
RAY_ACCELERATOR = {
    "a100-40g": "a100-40gb",
    "a100-80g": "a100-80gb",
    "h100": "h100-sxm",
    "h200": "h200",
    "b200": "b200",
    "a10g": "a10g",
    "l4": "l4",
    "l40s": "l40s",
    "amd-instinct-mi300x-oam": "mi300x",
}


def _ray_serve(imp: Imported, doc: Doc, config: Any, base: str) -> None:
    """A Ray Serve config (`serve deploy` YAML, or a RayService's serveConfigV2): the `ray.serve.llm` application's
    LLM config (`llm_configs`: the model, `accelerator_type`, vLLM's `engine_kwargs`, `deployment_config` with
    `autoscaling_config` and `max_ongoing_requests`). Ray's autoscaler asks for ceil(ongoing requests /
    `target_ongoing_requests`) replicas after `upscale_delay_s` / `downscale_delay_s` (Ray Serve docs,
    "Advanced autoscaling"): read as fleetsim's hpa on outstanding requests per replica, without scale-up limits."""
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise FleetsimError(f"{doc.where}: {base}applications is missing (a Ray Serve config lists its applications)")
    found = []
    for a, app in enumerate(config["applications"]):
        llm = (((app or {}).get("args") or {}).get("llm_configs")) or []
        for i, cfg in enumerate(llm if isinstance(llm, list) else []):
            found.append((f"{base}applications[{a}].args.llm_configs[{i}]", cfg))
    if not found:
        raise FleetsimError(f"{doc.where}: no ray.serve.llm application (args.llm_configs) in {base}applications")
    if len(found) > 1:
        raise FleetsimError(f"{doc.where}: {len(found)} LLM configs; import one model at a time")
    path, cfg = found[0]
    if not isinstance(cfg, dict):
        raise FleetsimError(f"{doc.where}: {path} must be a mapping")
    _workload_name(
        imp, Doc({"metadata": {"name": str((cfg.get("model_loading_config") or {}).get("model_id", "llm"))}}, doc.where)
    )
    loading = cfg.get("model_loading_config") or {}
    opts = options_from_mapping(cfg.get("engine_kwargs") or {})
    source = loading.get("model_source") or loading.get("model_id")
    if source is None:
        raise FleetsimError(f"{doc.where}: {path}.model_loading_config.model_id is missing")
    opts["model"] = str(source)
    imp.merge(map_options(opts, doc.src(f"{path}.engine_kwargs")))
    imp.sources["model"] = doc.src(f"{path}.model_loading_config")
    acc = cfg.get("accelerator_type")
    if acc is not None:
        gpu = RAY_ACCELERATOR.get(str(acc).lower()) or gpu_from_label("nvidia.com/gpu.product", str(acc))
        if gpu is None:
            imp.notes.append(f"{doc.src(path)}.accelerator_type {acc}: no catalog GPU is known by this name")
        else:
            imp.set("fleet.gpu", gpu, doc.src(f"{path}.accelerator_type {acc}"))
    dep = cfg.get("deployment_config") or {}
    dpath = f"{path}.deployment_config"
    if dep.get("max_ongoing_requests") is not None:
        imp.set(
            "fleet.max_outstanding_per_replica",
            doc.int_at(f"{dpath}.max_ongoing_requests", dep["max_ongoing_requests"]),
            doc.src(f"{dpath}.max_ongoing_requests"),
        )
    auto = dep.get("autoscaling_config")
    if not isinstance(auto, dict):
        n = dep.get("num_replicas", 1)
        imp.replicas = (doc.int_at(f"{dpath}.num_replicas", n), doc.src(f"{dpath}.num_replicas"))
        return
    _claim_autoscaler(imp, doc)
    apath = f"{dpath}.autoscaling_config"
    target = auto.get("target_ongoing_requests", auto.get("target_num_ongoing_requests_per_replica"))
    out: dict[str, Any] = {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": float(target if target is not None else 2.0),
        "min_replicas": doc.int_at(f"{apath}.min_replicas", auto.get("min_replicas", 1)),
        "max_replicas": doc.int_at(f"{apath}.max_replicas", auto.get("max_replicas", 1)),
        "tolerance": 0.0,
        "scale_up_percent": 1e4,  # (Ray does not rate-limit a scale-up)
        "interval_s": float(auto.get("metrics_interval_s", 10.0)),
        "scale_down_stabilization_s": float(auto.get("downscale_delay_s", 600.0)),
    }
    for key, ray_key, default in (
        ("target", "target_ongoing_requests", "2 (Ray's default)"),
        ("min_replicas", "min_replicas", "1"),
        ("max_replicas", "max_replicas", "1"),
        ("interval_s", "metrics_interval_s", "10 s"),
        ("scale_down_stabilization_s", "downscale_delay_s", "600 s"),
    ):
        given = ray_key in auto or (ray_key == "target_ongoing_requests" and target is not None)
        imp.sources[f"fleet.autoscaler.{key}"] = doc.src(f"{apath}.{ray_key}" + ("" if given else f" (default {default})"))
    imp.sources["fleet.autoscaler.scale_up_percent"] = doc.src(f"{apath}: Ray does not rate-limit a scale-up")
    imp.sources["fleet.autoscaler.tolerance"] = doc.src(f"{apath}: Ray scales on the ratio itself, with no tolerance band")
    if auto.get("initial_replicas") is not None:
        out["initial_replicas"] = doc.int_at(f"{apath}.initial_replicas", auto["initial_replicas"])
    for key in ("upscale_delay_s", "upscaling_factor", "downscaling_factor", "look_back_period_s", "smoothing_factor"):
        if key in auto:
            imp.notes.append(f"{doc.src(apath)}.{key} {auto[key]}: not modelled (fleetsim's hpa acts on each interval's mean)")
    imp.values["fleet.autoscaler"] = out
    imp.sources["fleet.autoscaler"] = doc.src(apath)


def source_files(path: Path) -> list[Path]:
    """The files an import of `path` reads: the file, or every .yaml/.yml/.sh/.txt file of a folder (sorted)."""
    return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".sh", ".txt")) if path.is_dir() else [path]


def read_documents(path: Path) -> list[tuple[dict[str, Any] | str, str]]:
    """The documents of a file (each with its name for messages), or of every .yaml/.yml/.sh/.txt file of a folder
    (sorted). A file that is not YAML mappings is a command line."""
    files = source_files(path)
    if not files:
        raise FleetsimError(f"{path}: a folder with no .yaml, .yml, .sh or .txt file")
    out: list[tuple[dict[str, Any] | str, str]] = []
    for f in files:
        text = read_text(f, what="manifest or command line")
        if f.suffix in (".sh", ".txt"):
            out.append((text, str(f)))
            continue
        docs = parse_yaml_documents(text, where=str(f))
        if not docs:
            raise FleetsimError(f"{f}: empty (no YAML document)")
        for i, doc in enumerate(docs):
            where = f"{f}" if len(docs) == 1 else f"{f} (document {i + 1})"
            if not isinstance(doc, dict):
                raise FleetsimError(f"{where}: a manifest must be a YAML mapping (got {type(doc).__name__})")
            out.append((doc, where))
    return out


def import_files(paths: Sequence[Path]) -> Imported:
    """Read manifests, vLLM config files and command lines into one import (see the module docstring). A field of an
    unexpected shape anywhere (a list where a mapping belongs, text where a number does) is one line naming the
    document, never a traceback."""
    imp = Imported()
    autoscalers: list[tuple[Doc, str]] = []
    for path in paths:
        for doc_data, where in read_documents(Path(path)):
            with _shapes(where):
                _document(imp, doc_data, where, autoscalers)
    for doc, kind in autoscalers:
        with _shapes(doc.where):
            ref = str(doc.get("spec.scaleTargetRef.name") or "")
            if imp.workload is not None and ref and ref != imp.workload:
                imp.notes.append(f"{doc.where}: scales {ref!r}, not the vLLM workload {imp.workload!r} (left out)")
                continue
            if kind == "hpa":
                _hpa(imp, doc, ref)
            else:
                _keda(imp, doc)
    return imp


@contextmanager
def _shapes(where: str) -> Iterator[None]:
    try:
        yield
    except FleetsimError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as err:
        raise FleetsimError(f"{where}: a field has a shape fleetsim cannot read ({type(err).__name__}: {err})") from None


def _document(imp: Imported, doc_data: dict[str, Any] | str, where: str, autoscalers: list[tuple[Doc, str]]) -> None:
    if isinstance(doc_data, str):
        args = find_vllm(split_command(doc_data, where))
        if args is None:
            raise FleetsimError(f"{where}: no vLLM command line (vllm serve MODEL ...) in it")
        _workload_name(imp, Doc({"metadata": {"name": Path(where).stem}}, where))
        imp.merge(map_options(parse_args(args, where), where))
        return
    _check_templating(doc_data, where)
    doc = Doc(doc_data, where)
    kind = doc_data.get("kind")
    api = str(doc_data.get("apiVersion") or "")
    if kind is None and "applications" in doc_data:
        _ray_serve(imp, doc, doc_data, "")
        return
    if kind is None:
        if "apiVersion" in doc_data:
            raise FleetsimError(f"{where}: kind is missing")
        # a vLLM --config file: option names as keys
        _workload_name(imp, Doc({"metadata": {"name": Path(where.split(" ")[0]).stem}}, where))
        imp.merge(map_options(options_from_mapping(doc_data), where))
        return
    if kind in ("Deployment", "StatefulSet") and api.startswith("apps/"):
        _workload(imp, doc)
    elif kind == "HorizontalPodAutoscaler":
        if not api.startswith("autoscaling/v2"):
            raise FleetsimError(f"{where}: apiVersion {api}: fleetsim reads autoscaling/v2 HorizontalPodAutoscalers")
        autoscalers.append((doc, "hpa"))
    elif kind == "ScaledObject" and api.startswith("keda.sh/"):
        autoscalers.append((doc, "keda"))
    elif kind == "Service" and api.startswith("serving.knative.dev/"):
        _knative(imp, doc)
    elif kind == "InferenceService" and api.startswith("serving.kserve.io/"):
        _kserve(imp, doc)
    elif kind == "RayService" and api.startswith("ray.io/"):
        text = str(doc.need("spec.serveConfigV2"))
        docs = parse_yaml_documents(text, where=f"{where} spec.serveConfigV2")
        if not docs:
            raise FleetsimError(f"{where}: spec.serveConfigV2 is empty")
        _ray_serve(imp, doc, docs[0], "spec.serveConfigV2.")
    elif kind in IGNORED_KINDS:
        imp.notes.append(f"{where}: {kind} {doc.get('metadata.name', '')}: not mapped ({IGNORED_KINDS[kind]})")
    else:
        raise FleetsimError(
            f"{where}: kind {kind!r} (apiVersion {api or '?'}) is not one fleetsim reads; known: {', '.join(KNOWN_KINDS)}"
        )


def scenario_values(imp: Imported, *, model: str | None = None, gpu: str | None = None) -> dict[str, Any]:
    """The import as scenario keys, with the model and GPU resolved to catalog names (`model`/`gpu` override what
    the files say), the replica count as the autoscaler's, and the GPU request checked against the layout."""
    values = dict(imp.values)
    if imp.workload is None:
        raise FleetsimError(
            "no vLLM workload found (a Deployment, StatefulSet, Knative Service or InferenceService running vLLM, or a vllm serve command line)"
        )
    if model is not None:
        values["model"] = model
        imp.sources["model"] = "--model"
    elif "model" in values:
        name = model_from_name(str(values["model"]))
        if name is None:
            raise FleetsimError(
                f"{imp.sources['model']} {values['model']}: not in the model catalog (fleetsim models); pass --model NAME or a config.json"
            )
        bits = weight_bits_from_name(str(values["model"]))
        if bits is not None and "roofline.weight_bits" not in values:  # (vLLM reads a quantized checkpoint's config)
            values["roofline.weight_bits"] = bits
            imp.sources["roofline.weight_bits"] = f"the model's name, {values['model']} ({bits}-bit weights)"
        values["model"] = name
    else:
        raise FleetsimError("the vLLM arguments name no model; pass --model")
    if gpu is not None:
        values["fleet.gpu"] = gpu
        imp.sources["fleet.gpu"] = "--gpu"
    elif "fleet.gpu" not in values:
        if imp.unknown_gpus:
            raise FleetsimError(
                f"{imp.unknown_gpus[0]}: no catalog GPU is known by this label value (fleetsim gpus lists them); pass --gpu NAME"
            )
        raise FleetsimError(
            f"no GPU type found (a node selector or required affinity on {', '.join(GPU_LABELS[:3])}, ...); pass --gpu NAME"
        )
    # vLLM's defaults where the command line is silent (vllm/engine/arg_utils.py, the OpenAI server's context): prefix
    # caching on (V1); 1,024 sequences and 8,192 batched tokens on GPUs of 70 GiB or more other than the A100, else 256
    # and 2,048
    if "engine.prefix_caching" not in values:
        values["engine.prefix_caching"] = True
        imp.sources["engine.prefix_caching"] = "vLLM's default (V1: on); it caches only with prefix_hash_ids in the trace"
    if "engine.async_scheduling" not in values:
        values["engine.async_scheduling"] = True
        imp.sources["engine.async_scheduling"] = "vLLM's default (on since PR #27614, vLLM 0.14)"
    spec = load_gpu_catalog().get(str(values["fleet.gpu"]))
    big = spec.total_memory_bytes >= 70 * 2**30 and not spec.name.startswith("a100")
    for key, large, small in (("engine.max_num_seqs", 1024, 256), ("engine.max_num_batched_tokens", 8192, 2048)):
        if key not in values and not (key.endswith("batched_tokens") and values.get("engine.policy") == "prefill_first"):
            values[key] = large if big else small
            imp.sources[key] = (
                f"vLLM's default on {spec.name} ({'70 GiB or more, not an A100' if big else 'under 70 GiB, or an A100'})"
            )
    mnbt, mns = values.get("engine.max_num_batched_tokens"), values.get("engine.max_num_seqs")
    if mnbt is not None and int(mnbt) < 1:  # (refused by the schema where it was given, not capped at nor compared)
        mnbt = None
    if (
        mnbt is not None
        and mns is not None
        and int(mnbt) < int(mns)
        and str(imp.sources.get("engine.max_num_seqs", "")).startswith("vLLM's default")
    ):
        # (vLLM caps its default sequence count at the token budget given: EngineArgs' defaults)
        values["engine.max_num_seqs"] = mns = int(mnbt)
        imp.sources["engine.max_num_seqs"] = "vLLM's default, capped at max_num_batched_tokens as vLLM caps it"
    if mnbt is not None and mns is not None and int(mnbt) < int(mns):  # (vLLM's SchedulerConfig refuses to start so)
        raise FleetsimError(
            f"max_num_batched_tokens {mnbt} ({imp.sources.get('engine.max_num_batched_tokens', 'given')}) is under "
            f"max_num_seqs {mns} ({imp.sources.get('engine.max_num_seqs', 'given')}): vLLM refuses to start so "
            "(max_num_batched_tokens must be >= max_num_seqs); raise --max-num-batched-tokens or lower --max-num-seqs"
        )
    tp = int(values.get("fleet.tp", 1))
    if imp.gpus_per_pod is not None:
        n, where = imp.gpus_per_pod
        layout = tp * imp.data_parallel * imp.pipeline_parallel
        if n != layout:
            pp = f" x pp {imp.pipeline_parallel}" if imp.pipeline_parallel > 1 else ""
            imp.notes.append(
                f"{where}: {n} GPUs per pod, the vLLM layout uses {layout} (tp {tp} x dp {imp.data_parallel}{pp}); fleetsim bills the layout's"
            )
    auto = values.get("fleet.autoscaler")
    dp = imp.data_parallel * imp.pipeline_parallel  # (each DP rank's each virtual engine is a fleetsim replica)
    if auto is None:
        n, where = imp.replicas if imp.replicas is not None else (1, "the workload (no replica count: 1)")
        if n < 1:
            imp.notes.append(f"{where}: {n} replicas (scaled to zero); the fixed fleet is written with 1, to have one to run")
        values["fleet.autoscaler"] = {"policy": "fixed", "replicas": max(1, n) * dp}
        imp.sources["fleet.autoscaler"] = where
    else:
        if imp.replicas is not None and auto.get("policy") != "fixed" and auto.get("initial_replicas") is None:
            n, where = imp.replicas
            if auto["min_replicas"] <= n <= auto["max_replicas"] and n != auto["min_replicas"]:
                auto["initial_replicas"] = n
                imp.sources["fleet.autoscaler.initial_replicas"] = where
        if dp > 1:
            for key in ("min_replicas", "max_replicas", "initial_replicas", "replicas"):
                if auto.get(key) is not None:
                    auto[key] *= dp
            per_pod = [k for k in ("target", "target_concurrency", "target_waiting") if k in auto]
            for key in per_pod:  # (a per-pod count of requests: per rank, a dp-th of it; fractions stay)
                if key != "target" or auto.get("metric") == "outstanding_per_replica":
                    auto[key] = auto[key] / dp
            imp.notes.append(
                f"replica bounds x {dp} (data_parallel_size x pipeline_parallel_size), per-pod request targets / {dp}: each DP "
                "rank's each virtual engine is a fleetsim replica"
            )
    auto = values.get("fleet.autoscaler")
    if imp.pipeline_parallel > 1 and auto is not None and auto.get("policy") != "fixed":
        # (a pipeline's virtual engines are modelled on a fixed fleet of whole servers: `sim.run.pools.check_pipeline`)
        held = auto.get("initial_replicas") or auto.get("min_replicas") or dp
        held = max(dp, -(-int(held) // dp) * dp)
        values["fleet.autoscaler"] = {"policy": "fixed", "replicas": held}
        imp.notes.append(
            f"fleet.autoscaler: the {auto.get('policy')} autoscaler is not written: fleetsim models a pipeline-parallel "
            f"server (pipeline_parallel_size {imp.pipeline_parallel}) on a fixed fleet of whole servers only; held at "
            f"{held // dp} server(s), {held} replicas"
        )
    if dp > 1 and values.get("fleet.max_outstanding_per_replica") is not None:
        values["fleet.max_outstanding_per_replica"] = max(1, int(values["fleet.max_outstanding_per_replica"]) // dp)
    return values


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested blocks."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _scalar(value: Any) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text.removesuffix("\n...").strip()


def render(imp: Imported, values: dict[str, Any], sources_read: Sequence[str], *, trace: str | None = None) -> str:
    """The scenario as commented YAML: each value with where it came from, then what was not mapped."""
    lines = [
        "# A fleetsim scenario imported from: " + ", ".join(sources_read),
        "# (fleetsim import: each value says where it came from; see 'not mapped' at the end)",
    ]
    if trace is not None:
        values = {**values, "trace": trace}
        imp.sources["trace"] = "--trace"
    tree = nest(values)

    def emit(node: dict[str, Any], prefix: str, indent: int) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            src = imp.sources.get(path)
            comment = f"  # {src}" if src else ""
            pad = "  " * indent
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:{comment}")
                emit(value, path, indent + 1)
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}{comment}")

    emit(tree, "", 0)
    lines.append("")
    lines.append("# at fleetsim's defaults (the files do not say): the cold-start stages' durations, fleet.router, pricing, slo,")
    lines.append("# the roofline's efficiencies; set them here or with --set")
    lines.append("# not mapped, or mapped approximately:" if imp.notes else "# not mapped: nothing")
    lines.extend(f"#   - {note}" for note in imp.notes)
    return "\n".join(lines) + "\n"
