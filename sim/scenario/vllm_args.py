"""vLLM's serving options (`vllm serve` arguments, a `--config` YAML, or a run's `engine_kwargs`) as scenario keys.

One table says, option by option, where it goes in a scenario (`OPTION_KEYS`) or why it has no place there
(`NO_BEARING`: options that do not change what the simulator models, such as the port; `NOT_MODELLED`: options
that would, which fleetsim does not model). The importer (`sim.scenario.importer`) and the exporter
(`sim.scenario.exporter`) both read it, so the two directions agree; `fleetsim validate` maps a run's
`engine_kwargs` with the same functions.

Names as vLLM's `EngineArgs` (vllm/engine/arg_utils.py) spells them: `--tensor-parallel-size` on the command
line, `tensor_parallel_size` in Python and in `--config` files (which accept either spelling).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.errors import FleetsimError, _short

# short options vLLM's parser knows (vllm/engine/arg_utils.py)
SHORT = {"-tp": "tensor_parallel_size", "-pp": "pipeline_parallel_size", "-dp": "data_parallel_size", "-q": "quantization"}
# options that take no value (their `--no-` forms set False)
FLAGS = {
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "enforce_eager",
    "enable_expert_parallel",
    "trust_remote_code",
    "disable_log_requests",
    "disable_log_stats",
    "enable_log_requests",
    "enable_lora",
    "enable_auto_tool_choice",
    "disable_custom_all_reduce",
    "disable_sliding_window",
    "async_scheduling",
    "headless",
    "enable_sleep_mode",
    "skip_tokenizer_init",
    "disable_fastapi_docs",
    "enable_prompt_tokens_details",
    "enable_server_load_tracking",
    "enable_force_include_usage",
    "disable_frontend_multiprocessing",
    "enable_request_id_headers",
    "enable_eplb",
    "enable_dbo",
    "disable_hybrid_kv_cache_manager",
}
# options that take a value (the ones the mapping reads, and common ones): written without one, an error
VALUED = {
    "model",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "num_gpu_blocks_override",
    "gpu_memory_utilization",
    "quantization",
    "kv_cache_dtype",
    "scheduling_policy",
    "dtype",
    "speculative_config",
    "max_loras",
    "max_lora_rank",
    "long_prefill_token_threshold",
    "max_cpu_loras",
    "max_model_len",
    "port",
    "host",
    "served_model_name",
    "config",
}
# options with no bearing on what fleetsim simulates (networking, logging, API surface, tokenizer handling)
NO_BEARING = {
    "host",
    "port",
    "api_key",
    "served_model_name",
    "uvicorn_log_level",
    "disable_log_requests",
    "disable_log_stats",
    "enable_log_requests",
    "trust_remote_code",
    "tokenizer",
    "tokenizer_mode",
    "revision",
    "code_revision",
    "download_dir",
    "load_format",
    "chat_template",
    "response_role",
    "enable_auto_tool_choice",
    "tool_call_parser",
    "reasoning_parser",
    "disable_fastapi_docs",
    "root_path",
    "middleware",
    "ssl_keyfile",
    "ssl_certfile",
    "allowed_origins",
    "seed",
    "hf_overrides",
    "generation_config",
    "skip_tokenizer_init",
    "enable_prompt_tokens_details",
    "enable_server_load_tracking",
    "enable_force_include_usage",
    "disable_frontend_multiprocessing",
    "enable_request_id_headers",
    "max_log_len",
    "headless",
    "distributed_executor_backend",
    "worker_cls",
    "otlp_traces_endpoint",
}
# options that change serving behaviour in ways fleetsim does not model (each says so in the import's notes)
NOT_MODELLED = {
    "enable_eplb": "expert-parallel load balancing",
    "swap_space": "CPU swap space for preempted sequences (fleetsim recomputes)",
    "cpu_offload_gb": "weight offload to CPU memory",
    "kv_offloading_size": "KV-cache offload",
    "max_num_partial_prefills": "concurrent partial prefills",
    "max_long_partial_prefills": "concurrent long partial prefills",
    "lora_modules": "the adapters' names and paths (a trace names adapters by id: its `adapter` column)",
    "compilation_config": "torch.compile settings (fleetsim's step times do not depend on them)",
    "disable_custom_all_reduce": "NCCL instead of the custom all-reduce",
    "disable_sliding_window": "sliding-window attention",
    "kv_transfer_config": "KV transfer between instances (describe a disaggregated fleet in fleet.prefill/decode)",
    "config": "a --config file inside the container (import the file itself)",
    "enable_dbo": "dual-batch overlap",
    "dtype": "an activation dtype other than 16 bits",
    "scheduling_policy": "scheduling policies other than fcfs and priority",
}
# vLLM quantization methods by the weight precision the roofline reads
WEIGHT_BITS = {
    "fp8": 8,
    "fbgemm_fp8": 8,
    "modelopt": 8,
    "ptpc_fp8": 8,
    "compressed-tensors": None,  # the checkpoint says (W8A8, W4A16, ...): not known from the flag
    "awq": 4,
    "awq_marlin": 4,
    "gptq": 4,
    "gptq_marlin": 4,
    "marlin": 4,
    "bitsandbytes": 4,
    "mxfp4": 4,
    "modelopt_fp4": 4,
}
# weight-only methods (W4A16): the GEMMs run in 16 bits (an NVFP4 checkpoint, modelopt_fp4, runs W4A4 on Blackwell)
WEIGHT_ONLY = {"awq", "awq_marlin", "gptq", "gptq_marlin", "marlin", "bitsandbytes"}


@dataclass
class Mapped:
    """Scenario keys (dotted path -> value) an option set, with where each came from, and what was not mapped."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source


def split_command(text: str, where: str) -> list[str]:
    """A shell script's words (quotes honoured within a line; line continuations joined; from a word starting with `#`
    to the line's end a comment; a line's end and `&&`, `;`, `|` kept as separators). A `#` inside a word stays."""
    words: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        try:
            parts = shlex.split(line)
        except ValueError as err:
            raise FleetsimError(f"{where}: cannot split the command line ({err})") from None
        cut = next((i for i, w in enumerate(parts) if w.startswith("#")), len(parts))  # a comment, to the line's end
        if parts[:cut]:
            words += [*parts[:cut], ";"]  # (a line ends a command)
    return words[:-1]


def find_vllm(words: Sequence[str]) -> list[str] | None:
    """The arguments of the first vLLM server invocation among `words` (`vllm serve MODEL ...`, or `python -m
    vllm.entrypoints.openai.api_server ...`), up to a shell separator; None when there is none. The model, when
    given positionally, comes back as `--model MODEL`."""
    stops = {"&&", "||", ";", "|"}
    for i, w in enumerate(words):
        base = w.rsplit("/", 1)[-1]
        if base == "vllm" and i + 1 < len(words) and words[i + 1] == "serve":
            rest = _until(words[i + 2 :], stops)
            if rest and not rest[0].startswith("-"):
                return ["--model", rest[0], *rest[1:]]
            return rest
        if w == "vllm.entrypoints.openai.api_server" and i >= 1 and words[i - 1] == "-m":
            return _until(words[i + 1 :], stops)
    return None


def _until(words: Sequence[str], stops: set[str]) -> list[str]:
    out = []
    for w in words:
        if w in stops:
            break
        out.append(w)
    return out


def _is_option(word: str) -> bool:
    return (word.startswith("--") and len(word) > 2) or word in SHORT or (len(word) > 1 and word[0] == "-" and word[1].isalpha())


def parse_args(args: Sequence[str], where: str) -> dict[str, Any]:
    """vLLM arguments as {option_name: value} (underscored names; a flag is True, its `--no-` form False; values
    are strings as written). vLLM makes every boolean option a `--x` / `--no-x` pair: an option fleetsim does not know
    with no value after it (the next word is an option, or there is none) is read as such a flag."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word in SHORT:
            name, value = SHORT[word], None
        elif word.startswith("--"):
            name, eq, value_text = word[2:].partition("=")
            name = name.replace("-", "_")
            value = value_text if eq else None
        elif word.startswith("-") and "=" in word and word.split("=", 1)[0] in SHORT:
            head, _, value = word.partition("=")
            name = SHORT[head]
        elif word.startswith("-O"):  # -O3, -O.level=3: the compilation config
            out["compilation_config"] = word[2:] or True
            continue
        else:
            raise FleetsimError(f"{where}: vLLM argument {word!r} is not an option (--name VALUE)")
        if value is None:
            negated = name.startswith("no_")
            base = name[3:] if negated else name
            no_value = i >= len(args) or _is_option(args[i])
            if base in FLAGS or (no_value and base not in VALUED):
                out[base] = not negated
                continue
            if no_value:
                raise FleetsimError(f"{where}: vLLM option --{name.replace('_', '-')} needs a value")
            value = args[i]
            i += 1
        out[name] = value
    return out


def options_from_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """A vLLM `--config` YAML's keys (or a run's engine_kwargs): either spelling, as underscored names."""
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _int(name: str, value: Any, where: str) -> int:
    try:
        out = int(str(value).strip())
    except ValueError:
        raise FleetsimError(f"{where}: vLLM option {name} must be an integer (got {value!r})") from None
    return out


def _float(name: str, value: Any, where: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise FleetsimError(f"{where}: vLLM option {name} must be a number (got {value!r})") from None


def _bool(name: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise FleetsimError(f"{where}: vLLM option {name} must be true or false (got {value!r})")


_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def context_length(name: str, value: Any, where: str) -> int | None:
    """vLLM's --max-model-len: a token count, written as vLLM's parser takes it (`human_readable_int_or_auto` in
    vllm/engine/arg_utils.py: "32768", "32k" = 32,000, "32K" = 32,768, "25.6k"), or None for "auto" / -1 (fit the
    limit to the KV cache)."""
    if isinstance(value, bool):
        raise FleetsimError(f"{where}: vLLM option {name} must be a token count (got {value!r})")
    text = str(value).strip()
    if text.lower() == "auto" or text == "-1":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT])", text)
    try:
        if match is None:
            tokens = int(text)
        elif match.group(2) in _DECIMAL:
            tokens = int(float(match.group(1)) * _DECIMAL[match.group(2)])
        else:
            tokens = int(match.group(1)) * _BINARY[match.group(2)]  # (no decimals with a binary suffix, as vLLM)
    except ValueError:
        raise FleetsimError(
            f"{where}: vLLM option {name} must be a token count such as 32768, 32k or 32K, or auto (got {value!r})"
        ) from None
    if tokens < 1:
        raise FleetsimError(f"{where}: vLLM option {name} must be positive, or auto / -1 (got {value!r})")
    return tokens


def weight_bits_of(method: str) -> int | None:
    return WEIGHT_BITS.get(method.strip().lower())


KV_DTYPES_16 = ("auto", "bfloat16", "bf16", "float16", "fp16", "half")


def kv_bits_of(dtype: str) -> int | None:
    """The KV cache's bits for vLLM's --kv-cache-dtype: 8 for its fp8 kinds, 16 for auto and the 16-bit ones, None for
    a type fleetsim does not know (the caller names where it came from)."""
    d = dtype.strip().lower()
    if d.startswith("fp8"):
        return 8
    return 16 if d in KV_DTYPES_16 else None


KV_DTYPES_KNOWN = "auto, bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2"


def map_options(options: dict[str, Any], where: str) -> Mapped:
    """Scenario keys from vLLM options (`parse_args` / `options_from_mapping`); `where` prefixes each source."""
    m = Mapped()
    handlers: dict[str, Callable[[str, Any], None]] = {}

    def src(name: str) -> str:
        return f"{where}: --{name.replace('_', '-')}"

    def direct(key: str, kind: Callable[[str, Any, str], Any]) -> Callable[[str, Any], None]:
        return lambda name, value: m.set(key, kind(name, value, where), src(name))

    handlers["model"] = lambda name, value: m.set("model", str(value), src(name))
    handlers["tensor_parallel_size"] = direct("fleet.tp", _int)
    handlers["max_num_seqs"] = direct("engine.max_num_seqs", _int)
    handlers["max_num_batched_tokens"] = direct("engine.max_num_batched_tokens", _int)
    handlers["block_size"] = direct("engine.block_size", _int)
    handlers["num_gpu_blocks_override"] = direct("engine.num_gpu_blocks_override", _int)
    handlers["gpu_memory_utilization"] = direct("roofline.gpu_memory_utilization", _float)
    handlers["enforce_eager"] = direct("engine.enforce_eager", _bool)
    handlers["disable_hybrid_kv_cache_manager"] = direct("engine.disable_hybrid_kv_cache_manager", _bool)
    handlers["enable_prefix_caching"] = direct("engine.prefix_caching", _bool)
    handlers["async_scheduling"] = direct("engine.async_scheduling", _bool)
    handlers["long_prefill_token_threshold"] = direct("engine.long_prefill_token_threshold", _int)

    def max_model_len(name: str, value: Any) -> None:
        tokens = context_length(name, value, where)
        if tokens is None:
            m.notes.append(
                f"{src(name)} {value}: vLLM fits the limit to its KV cache; fleetsim's default does the same (a request "
                "longer than the cache holds is refused)"
            )
        else:
            m.set("engine.max_model_len", tokens, src(name))

    handlers["max_model_len"] = max_model_len

    def sleep_mode(name: str, value: Any) -> None:
        if _bool(name, value, where):
            m.set("fleet.lifecycle.sleep", {"level": 1}, src(name))
            m.notes.append(
                f"{src(name)}: scaled-down replicas sleep at level 1 (weights to host memory; the level is the /sleep "
                "call's: set fleet.lifecycle.sleep.level 2 for what discards them)"
            )

    handlers["enable_sleep_mode"] = sleep_mode

    def chunked(name: str, value: Any) -> None:
        m.set("engine.policy", "chunked" if _bool(name, value, where) else "prefill_first", src(name))

    def layout_size(note: Callable[[str, int], str], most: int) -> Callable[[str, Any], None]:
        """A degree the importer multiplies the replicas by (each DP rank, each pipeline's virtual engine, a replica),
        at most `most` (the scenario key's bound)."""

        def handle(name: str, value: Any) -> None:
            n = _int(name, value, where)
            if n < 1:  # (vLLM's own check: the importer would multiply the replicas by it)
                raise FleetsimError(f"{where}: vLLM option {name} must be >= 1 (got {n})")
            if n > most:
                raise FleetsimError(f"{where}: vLLM option {name} must be at most {most} here (got {n:,})")
            m.set(name, n, src(name))
            if n > 1:
                m.notes.append(f"{src(name)} {n}: {note(name, n)}")

        return handle

    handlers["data_parallel_size"] = layout_size(
        lambda name, n: (
            "each DP rank is a replica of its own (its scheduler, batch and KV cache) behind the router; "
            "an MoE model's ranks share its experts (fleet.dp) and step in lock-step, in groups of dp"
        ),
        1024,
    )
    handlers["pipeline_parallel_size"] = layout_size(
        lambda name, n: (
            f"the server's layers in {n} stages, run as {n} virtual engines (vLLM's V0 engine, which "
            "serves PP before 0.9), each a fleetsim replica with its own scheduler, batch and share of the KV cache (fleet.pp)"
        ),
        64,
    )
    handlers["enable_expert_parallel"] = direct("fleet.expert_parallel", _bool)
    handlers["all2all_backend"] = lambda name, value: m.set("fleet.all2all_backend", str(value), src(name))

    def quantization(name: str, value: Any) -> None:
        bits = weight_bits_of(str(value))
        if bits is None:
            m.notes.append(f"{src(name)} {value}: its weight precision is not known from the flag (16-bit weights assumed)")
        else:
            m.set("roofline.weight_bits", bits, src(name))
            if str(value).strip().lower() in WEIGHT_ONLY:  # 4-bit weights, 16-bit activations: BF16 GEMMs, even on FP4 GPUs
                m.set("roofline.compute_dtype", "bf16", src(name))

    def kv_dtype(name: str, value: Any) -> None:
        if str(value).strip().lower() != "auto":
            bits = kv_bits_of(str(value))
            if bits is None:
                raise FleetsimError(f"{src(name)} {value!r}: not a KV cache type fleetsim knows ({KV_DTYPES_KNOWN})")
            m.set("roofline.kv_bits", bits, src(name))

    def scheduling(name: str, value: Any) -> None:
        policy = str(value).strip().lower()
        if policy in ("fcfs", "priority"):
            m.set("engine.preempt_for_priority", policy == "priority", src(name))
        else:
            m.notes.append(f"{src(name)} {value}: not modelled ({NOT_MODELLED['scheduling_policy']})")

    def dtype(name: str, value: Any) -> None:
        text = str(value).strip().lower()
        if text in ("auto", "half", "float16", "bfloat16", "fp16", "bf16"):
            return  # 16 bits: fleetsim's default
        m.notes.append(f"{src(name)} {value}: not modelled ({NOT_MODELLED['dtype']})")

    def speculative(name: str, value: Any) -> None:
        try:
            cfg = value if isinstance(value, dict) else json.loads(str(value))
        except json.JSONDecodeError:
            raise FleetsimError(f"{where}: vLLM option --speculative-config must be JSON (got {value!r})") from None
        if not isinstance(cfg, dict):  # (vLLM's SpeculativeConfig is built from an object's keys)
            raise FleetsimError(f"{where}: vLLM option --speculative-config must be a JSON object (got {_short(cfg)})")
        n = cfg.get("num_speculative_tokens")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise FleetsimError(
                f"{where}: vLLM option --speculative-config num_speculative_tokens must be a whole number >= 1 (got {_short(n)})"
            )
        method = cfg.get("method") or ("draft_model" if cfg.get("model") else None)
        m.notes.append(
            f"{src(name)} (method {method}, {n} tokens): not mapped, since it says nothing of the acceptance rate; "
            "set engine.speculative (method, num_speculative_tokens, acceptance_rate measured on your traffic)"
        )

    lora: dict[str, Any] = {}  # --enable-lora and its knobs, mapped together once all are read

    def lora_option(name: str, value: Any) -> None:
        lora[name] = _bool(name, value, where) if name == "enable_lora" else _int(name, value, where)

    handlers.update(
        {
            "enable_lora": lora_option,
            "max_loras": lora_option,
            "max_lora_rank": lora_option,
            "max_cpu_loras": lora_option,
            "enable_chunked_prefill": chunked,
            "quantization": quantization,
            "kv_cache_dtype": kv_dtype,
            "scheduling_policy": scheduling,
            "dtype": dtype,
            "speculative_config": speculative,
        }
    )
    for name, value in options.items():
        if name in handlers:
            handlers[name](name, value)
        elif name in NOT_MODELLED:
            m.notes.append(f"{src(name)} {value}: not modelled ({NOT_MODELLED[name]})")
        elif name in NO_BEARING:
            m.notes.append(f"{src(name)}: no bearing on the simulation")
        else:
            m.notes.append(f"{src(name)} {value}: unknown to fleetsim's mapping (left out)")
    knobs = {k: v for k, v in lora.items() if k != "enable_lora"}
    if lora.get("enable_lora"):
        m.set("engine.lora", knobs, src("enable_lora"))
    elif knobs:
        m.notes.append(f"{', '.join(src(k) for k in knobs)}: no effect without --enable-lora (LoRA off)")
    return m


def engine_args(values: dict[str, Any], *, hf_repo: str) -> list[str]:
    """The `vllm serve` arguments a scenario's keys (dotted paths as `map_options` sets them) stand for: the inverse
    of `map_options` for every key both express."""
    args = ["serve", hf_repo]
    tp = values.get("fleet.tp", 1)
    if tp != 1:
        args += ["--tensor-parallel-size", str(tp)]
    if values.get("fleet.pp", 1) != 1:
        args += ["--pipeline-parallel-size", str(values["fleet.pp"])]
    if values.get("fleet.dp", 1) != 1:
        args += ["--data-parallel-size", str(values["fleet.dp"])]
    if values.get("fleet.expert_parallel"):
        args.append("--enable-expert-parallel")
    if values.get("fleet.all2all_backend") is not None:
        args += ["--all2all-backend", str(values["fleet.all2all_backend"])]
    for key, option in (
        ("engine.max_num_seqs", "--max-num-seqs"),
        ("engine.max_num_batched_tokens", "--max-num-batched-tokens"),
        ("engine.block_size", "--block-size"),
        ("engine.num_gpu_blocks_override", "--num-gpu-blocks-override"),
        ("roofline.gpu_memory_utilization", "--gpu-memory-utilization"),
        ("engine.long_prefill_token_threshold", "--long-prefill-token-threshold"),
        ("engine.max_model_len", "--max-model-len"),
    ):
        if values.get(key) is not None:
            args += [option, str(values[key])]
    policy = values.get("engine.policy")
    if policy is not None:
        args.append("--enable-chunked-prefill" if policy == "chunked" else "--no-enable-chunked-prefill")
    if values.get("engine.prefix_caching") is not None:
        args.append("--enable-prefix-caching" if values["engine.prefix_caching"] else "--no-enable-prefix-caching")
    if values.get("engine.async_scheduling") is not None:  # (vLLM's default is on: off is said explicitly)
        args.append("--async-scheduling" if values["engine.async_scheduling"] else "--no-async-scheduling")
    if values.get("engine.enforce_eager"):
        args.append("--enforce-eager")
    if values.get("engine.disable_hybrid_kv_cache_manager") is not None:  # (None: vLLM's own default)
        hybrid = values["engine.disable_hybrid_kv_cache_manager"]
        args.append("--disable-hybrid-kv-cache-manager" if hybrid else "--no-disable-hybrid-kv-cache-manager")
    if values.get("engine.preempt_for_priority"):
        args += ["--scheduling-policy", "priority"]
    if values.get("roofline.kv_bits") == 8:
        args += ["--kv-cache-dtype", "fp8"]
    if values.get("roofline.weight_bits") == 8:
        args += ["--quantization", "fp8"]
    lora = values.get("engine.lora")
    if lora is not None:
        args.append("--enable-lora")
        for key in ("max_loras", "max_lora_rank", "max_cpu_loras"):
            if lora.get(key) is not None:
                args += [f"--{key.replace('_', '-')}", str(lora[key])]
    if values.get("fleet.lifecycle.sleep") is not None:
        args.append("--enable-sleep-mode")
    return args
