"""The bad-input corpus: scenarios, traces in every format and CLI invocations, each with its expected
outcome. A bad case must end with exit status 2, exactly one line on stderr (`error: ...`, naming the
file, key or option and containing `expect`), no traceback, nothing written, within a few seconds. A
good-but-unusual case must exit 0 and leave a whole run folder.

A case is (id, class, files, argv, expect): `files` maps a name to its bytes (written into a fresh
folder that is the working directory; a name ending in / is an empty folder), `argv` is the command line after `fleetsim`, `expect` a piece
of the error line (bad) or None (good). `{repo}` in argv is the repository root.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

import pandas as pd

SCENARIO = "model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: t.csv\n"
CSV = "arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n0.5,20,3\n1.0,30,2\n"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:50.99,396,109\n"
BURST = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n"
MOON = '{"timestamp": 0, "input_length": 100, "output_length": 6, "hash_ids": [0]}\n'


@dataclass(frozen=True)
class Case:
    id: str
    klass: str
    files: dict[str, bytes]
    argv: list[str]
    expect: str | None  # None: a good case


def _b(text: str) -> bytes:
    return text.encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


GOOD_PARQUET = _parquet(pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [10, 20], "output_tokens": [3, 4]}))


def scenario(body: str, expect: str, id: str, trace: str = CSV) -> Case:
    return Case(
        id, "scenario", {"s.yaml": _b(body), "t.csv": _b(trace)}, ["run", "s.yaml", "--out", "out", "--no-capacity"], expect
    )


def trace(name: str, data: bytes, expect: str, id: str, *extra: str) -> list[Case]:
    """The same bad trace through `trace inspect` and through `run --trace`."""
    return [
        Case(f"inspect-{id}", "trace", {name: data}, ["trace", "inspect", name, *extra], expect),
        Case(
            f"run-{id}", "trace", {name: data, "s.yaml": _b(SCENARIO)}, ["run", "s.yaml", "--trace", name, "--out", "out"], expect
        )
        if not extra
        else None,
    ]


BAD_SCENARIOS = [
    scenario("", "a scenario must be a YAML mapping", "empty"),
    scenario("- model\n- fleet\n", "a scenario must be a YAML mapping", "a-list"),
    scenario(SCENARIO + "colour: blue\n", "colour: unknown key", "unknown-top-key"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: {file: t.csv, smaple: 0.1}\n",
        "trace.smaple: unknown key",
        "typo-union",
    ),
    scenario(SCENARIO + "model: llama-2-13b\n", "key 'model' is given twice", "duplicate-key"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: hpa, targett: 3}}\n", "autoscaler.targett", "typo-nested"
    ),
    scenario("model: llama-9-999b\nfleet: {gpu: a100-80gb}\n", "model: unknown model 'llama-9-999b'", "unknown-model"),
    scenario("model: ./missing/config.json\nfleet: {gpu: a100-80gb}\n", "config.json", "missing-hf-config"),
    scenario("model: llama-2-7b\nfleet: {gpu: h1000}\n", "fleet.gpu: unknown gpu 'h1000'", "unknown-gpu"),
    scenario("model: llama-2-70b\nfleet: {gpu: a100-80gb, tp: 3}\n", "fleet.tp: tp=3 must divide", "tp-heads"),
    scenario("model: llama-2-70b\nfleet: {gpu: l4}\n", "does not fit on 1x l4", "does-not-fit"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, tp: 0}\n", "fleet.tp", "tp-zero"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, tp: true}\n", "fleet.tp: Input should be a valid integer", "tp-bool"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, tp: '2'}\n", "fleet.tp", "tp-string"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, tp: 2.5}\n", "fleet.tp", "tp-float"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: hpa, min_replicas: 8, max_replicas: 4}}\n",
        "min_replicas must be <= max_replicas",
        "min-over-max",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: hpa, max_replicas: 4, initial_replicas: 9}}\n",
        "initial_replicas",
        "initial-out-of-bounds",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {provision_s: -100}}\n", "provision_s", "negative-cold-start"
    ),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {provision_s: .nan}}\n", "finite number", "nan-cold-start"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {warmup_s: .inf}}\n", "finite number", "inf-cold-start"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {image_pull_s: {dist: uniform, low: 5, high: 1}}}\n",
        "high must be >= low",
        "uniform-reversed",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {provision_s: {dist: gamma, mean: 5}}}\n",
        "provision_s",
        "unknown-duration-dist",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {weights_from: floppy}}\ntrace: t.csv\n",
        "storage tier",
        "unknown-tier",
    ),
    scenario(SCENARIO + "pricing: {usd_per_gpu_hour: .inf}\n", "pricing.usd_per_gpu_hour", "inf-price"),
    scenario(SCENARIO + "pricing: {usd_per_gpu_hour: -2}\n", "pricing.usd_per_gpu_hour", "negative-price"),
    scenario(SCENARIO + "pricing: {compare_api: gpt-99}\n", "unknown API price sheet", "unknown-api"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, timeline_interval_s: 1.0e-9}\n", "timeline_interval_s", "tiny-interval"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: kpa, interval_s: 0}}\n", "interval_s", "zero-tick"),
    scenario("model: llama-2-70b\nfleet: {gpu: a100-80gb, tp: 2, max_gpus: 1}\n", "max_gpus must be >= tp", "gpu-cap-below-tp"),
    scenario(SCENARIO + "engine: {block_size: 12}\n", "engine.block_size: must be a power of two", "block-size"),
    scenario(SCENARIO + "engine: {max_num_seqs: 0}\n", "engine.max_num_seqs", "max-num-seqs-zero"),
    scenario(SCENARIO + "engine: {policy: fastest}\n", "engine.policy", "unknown-policy"),
    scenario(SCENARIO + "engine: {num_gpu_blocks_override: 0}\n", "num_gpu_blocks_override", "zero-blocks"),
    scenario(SCENARIO + "engine: {step_time: {kind: constant}}\n", "decode_step_s", "constant-without-times"),
    scenario(SCENARIO + "roofline: {weight_bits: 12}\n", "roofline.weight_bits", "weight-bits"),
    scenario(SCENARIO + "roofline: {gpu_memory_utilization: 1.5}\n", "gpu_memory_utilization", "memory-utilization"),
    scenario(SCENARIO + "roofline: {preset: turbo}\n", "unknown roofline preset 'turbo'", "unknown-preset"),
    scenario(SCENARIO + "roofline: {gpu_overrides: {h1000: {mfu: 0.5}}}\n", "roofline.gpu_overrides", "override-unknown-gpu"),
    scenario(SCENARIO + "roofline: {mfu: 0}\n", "roofline.mfu", "mfu-zero"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, router: random}\n", "fleet.router", "unknown-router"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: vpa}}\n", "fleet.autoscaler", "unknown-autoscaler"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, autoscaler: {policy: scheduled, table: []}}\n", "table", "empty-schedule"
    ),
    scenario("model: llama-2-7b\ntrace: t.csv\n", "fleet: Field required", "missing-fleet"),
    scenario("fleet: {gpu: a100-80gb}\ntrace: t.csv\n", "model: Field required", "missing-model"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb}\n", "no trace", "no-trace"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: nowhere.csv\n", "no such trace file", "trace-missing"),
    scenario("model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: .\n", "is a folder, not a trace file", "trace-folder"),
    scenario(SCENARIO + "gpu_catalog: nowhere.yaml\n", "nowhere.yaml: cannot read", "catalog-missing"),
    scenario(SCENARIO + "seed: -1\n", "seed", "negative-seed"),
    scenario(SCENARIO + "seed: false\n", "seed", "bool-seed"),
    scenario(SCENARIO + "slo: {ttft_ms: -5}\n", "slo.ttft_ms", "negative-slo"),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\n"
        "trace: {arrivals: {process: poisson, rate_per_s: .inf}, prompt_tokens: {dist: fixed, tokens: 5},"
        " output_tokens: {dist: fixed, tokens: 5}, duration_s: 10}\n",
        "rate_per_s",
        "synthetic-inf-rate",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\n"
        "trace: {arrivals: {process: poisson, rate_per_s: 5}, prompt_tokens: {dist: fixed, tokens: 5},"
        " output_tokens: {dist: fixed, tokens: 5}, n_requests: 100000000000}\n",
        "n_requests must be <= 100,000,000",
        "synthetic-too-many",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\n"
        "trace: {arrivals: {process: poisson, rate_per_s: 5}, prompt_tokens: {dist: fixed, tokens: 5},"
        " output_tokens: {dist: fixed, tokens: 5}}\n",
        "give exactly one of duration_s and n_requests",
        "synthetic-no-length",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\nengine: {lora: {max_loras: 8, max_cpu_loras: 2}}\ntrace: t.csv\n",
        "engine.lora: max_cpu_loras must be >= max_loras (got 2 < 8)",
        "lora-cpu-below-gpu",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb}\ntrace: t.csv\n"
        "engine: {lora: {max_loras: 1}, speculative: {method: ngram, num_speculative_tokens: 2, acceptance_rate: 0.5}}\n",
        "engine.lora: LoRA adapters with speculative decoding are not modelled",
        "lora-with-speculation",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, capacity: {fallback: [{gpu: h900}]}}\ntrace: t.csv\n",
        "fleet.capacity.fallback.0.gpu: unknown gpu 'h900'",
        "fallback-unknown-gpu",
    ),
    scenario(
        "model: llama-3.1-8b\nfleet: {gpu: a100-80gb, capacity: {fallback: [{gpu: l4}]}}\ntrace: t.csv\n",
        "fleet.capacity.fallback.0: 1x l4 cannot serve 1 request(s) 1x a100-80gb serves",
        "fallback-too-small",
        trace="arrival_at_s,prompt_tokens,output_tokens\n0,60000,10\n",
    ),
    scenario(
        SCENARIO,
        "timeline_interval_s=10 over a trace",
        "span-too-long",
        trace="arrival_at_s,prompt_tokens,output_tokens\n0,5,5\n1e11,5,5\n",
    ),
    scenario(
        SCENARIO + "engine: {speculative: {method: draft, num_speculative_tokens: 3, acceptance_rate: 0.7,"
        " draft_model: llama-2-13b}}\n",
        "engine.speculative.draft_model: the draft model llama-2-13b (13.0B parameters) must be smaller than the target",
        "draft-larger-than-target",
    ),
    scenario(
        SCENARIO + "engine: {speculative: {method: draft, num_speculative_tokens: 3, acceptance_rate: 0.7,"
        " draft_model: llama-2-7b}}\n",
        "must be smaller than the target model llama-2-7b",
        "draft-is-the-target",
    ),
    Case("bytes-not-utf8", "scenario", {"s.yaml": b"model: caf\xe9\n"}, ["run", "s.yaml", "--out", "out"], "not UTF-8"),
    Case("bytes-gzip", "scenario", {"s.yaml": gzip.compress(_b(SCENARIO))}, ["run", "s.yaml", "--out", "out"], "not UTF-8"),
    Case("bytes-random", "scenario", {"s.yaml": bytes(range(256)) * 8}, ["run", "s.yaml", "--out", "out"], "s.yaml"),
    Case(
        "alias-bomb",
        "scenario",
        {
            "s.yaml": _b(
                "a: &a [1,1,1,1,1,1,1,1,1]\n"
                + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
                + "model: [*h, *h, *h]\n"
            )
        },
        ["run", "s.yaml", "--out", "out"],
        "too large",
    ),
    Case(
        "deep-nesting",
        "scenario",
        {"s.yaml": _b("model: " + "[" * 5000 + "]" * 5000)},
        ["run", "s.yaml", "--out", "out"],
        "s.yaml",
    ),
    Case("huge-line", "scenario", {"s.yaml": _b("model: " + "x" * 2_000_000)}, ["run", "s.yaml", "--out", "out"], "larger than"),
    Case("invalid-yaml", "scenario", {"s.yaml": _b("model: [unclosed\n")}, ["run", "s.yaml", "--out", "out"], "invalid YAML"),
    Case("scenario-missing", "scenario", {}, ["run", "nowhere.yaml", "--out", "out"], "nowhere.yaml: cannot read"),
    Case("scenario-folder", "scenario", {}, ["run", ".", "--out", "out"], "is a folder"),
    Case(
        "catalog-not-utf8",
        "scenario",
        {"s.yaml": _b(SCENARIO + "gpu_catalog: g.yaml\n"), "t.csv": _b(CSV), "g.yaml": b"\xff\xfe\x00"},
        ["run", "s.yaml", "--out", "out"],
        "g.yaml: not UTF-8",
    ),
    Case(
        "catalog-bad-entry",
        "scenario",
        {"s.yaml": _b(SCENARIO + "gpu_catalog: g.yaml\n"), "t.csv": _b(CSV), "g.yaml": _b("x1: {bf16_tflops: -1}\n")},
        ["run", "s.yaml", "--out", "out"],
        "g.yaml",
    ),
]

_H = "arrival_at_s,prompt_tokens,output_tokens\n"
_HP = "arrival_at_s,prompt_tokens,output_tokens,prefix_hash_ids\n"


def moon_ids(hash_ids: str) -> str:
    """A Mooncake trace whose second line carries these hash_ids (as JSON text)."""
    return MOON + f'{{"timestamp": 1, "input_length": 100, "output_length": 6, "hash_ids": {hash_ids}}}\n'


def _ids_frame(ids: list) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "arrival_at_s": [float(i) for i in range(n)],
            "prompt_tokens": [10] * n,
            "output_tokens": [3] * n,
            "prefix_hash_ids": ids,
        }
    )


BAD_TRACES = [
    *trace("t.csv", b"", "empty file", "empty"),
    *trace("t.csv", _b(_H), "t.csv", "header-only"),
    *trace("t.csv", _b("arrival_at_s,prompt_tokens\n0,5\n"), "t.csv", "missing-column"),
    *trace("t.csv", _b(_H + "0,-5,3\n"), "t.csv", "negative-tokens"),
    *trace("t.csv", _b(_H + "0,0,3\n"), "t.csv", "zero-tokens"),
    *trace("t.csv", _b(_H + "0,abc,3\n"), "t.csv", "non-numeric-tokens"),
    *trace("t.csv", _b(_H + "0,1.5,3\n"), "t.csv", "fractional-tokens"),
    *trace("t.csv", _b(_H + "0,,3\n"), "t.csv", "missing-value"),
    *trace("t.csv", _b(_H + "5,10,3\n1,10,3\n"), "t.csv", "unsorted"),
    *trace("t.csv", _b(_H + "nan,10,3\n"), "t.csv", "nan-time"),
    *trace("t.csv", _b(_H + "0,1e400,3\n"), "t.csv", "overflow-tokens"),
    *trace("t.csv", _b(_H + "0,10,3\n").replace(b"10", b"1\xe90"), "not UTF-8", "latin1"),
    # (gzip content under a plain name is read as gzip: its rows are checked as the plain file's)
    *trace("t.csv", gzip.compress(_b(_H + "0,-1,3\n")), "t.csv line 2: prompt_tokens must be >= 1", "gzip-named-csv"),
    *trace("t.csv", bytes(range(256)) * 20, "t.csv", "binary"),
    *trace("t.csv", _b("a" * 3_000_000), "t.csv", "one-huge-line"),
    *trace("t.csv", _b("foo,bar,baz\n1,2,3\n"), "cannot tell the trace format", "unknown-header"),
    *trace("t.parquet", GOOD_PARQUET[:100], "t.parquet", "truncated-parquet"),
    *trace("t.parquet", b"PAR1" + bytes(200) + b"PAR1", "t.parquet", "corrupt-parquet"),
    *trace("t.parquet", _parquet(pd.DataFrame({"x": [1.0], "y": [2]})), "t.parquet", "parquet-missing-columns"),
    *trace(
        "t.parquet",
        _parquet(pd.DataFrame({"arrival_at_s": [0.0], "prompt_tokens": [-1], "output_tokens": [1]})),
        "t.parquet",
        "parquet-negative",
    ),
    *trace("t.jsonl", _b(MOON + "{not json\n"), "t.jsonl", "mooncake-bad-json"),
    *trace("t.jsonl", _b('{"timestamp": 0, "input_length": 100}\n'), "t.jsonl", "mooncake-missing-field"),
    *trace("t.jsonl", _b('{"timestamp": 0, "input_length": -4, "output_length": 6}\n'), "t.jsonl", "mooncake-negative"),
    *trace(
        "t.jsonl",
        _b(moon_ids('["a", "b"]')),
        "hash_ids must be a list of integers in [0, 2^53 - 1] (got 'a')",
        "mooncake-hash-strings",
    ),
    *trace("t.jsonl", _b(moon_ids("[[1], [2]]")), "t.jsonl line 2: hash_ids must be a list", "mooncake-hash-nested"),
    *trace(
        "t.jsonl",
        _b(moon_ids("[3, -1]")),
        "t.jsonl line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got -1)",
        "mooncake-hash-negative",
    ),
    *trace("t.jsonl", _b(moon_ids(f"[{2**53 + 1}, 5]")), "(got 9007199254740993)", "mooncake-hash-above-2-53"),
    *trace("t.jsonl", _b(moon_ids("[1e23]")), "t.jsonl line 2: hash_ids must be a list of integers", "mooncake-hash-float-huge"),
    *trace(
        "t.jsonl",
        _b(moon_ids("7")),
        "t.jsonl line 2: hash_ids must be a list of integers in [0, 2^53 - 1] (got 7)",
        "mooncake-hash-scalar",
    ),
    *trace(
        "t.csv",
        _b(_HP + "0,10,3,1 2\n1,10,3,1 x\n"),
        "t.csv line 3: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 'x')",
        "csv-hash-string",
    ),
    *trace("t.csv", _b(_HP + "0,10,3,[[1]]\n"), "t.csv line 2: prefix_hash_ids must be a list of integers", "csv-hash-nested"),
    *trace(
        "t.csv",
        _b("arrival_at_s,prompt_tokens,output_tokens,adapter\n0,10,3,2\n1,10,3,-5\n"),
        "t.csv line 3: adapter must be an integer in [0, 2147483647] (or empty / -1: the base model) (got -5)",
        "csv-adapter-negative",
    ),
    *trace(
        "t.csv",
        _b("arrival_at_s,prompt_tokens,output_tokens,adapter\n0,10,3,lora-a\n"),
        "t.csv line 2: adapter must be an integer in [0, 2147483647] (or empty / -1: the base model) (got 'lora-a')",
        "csv-adapter-name",
    ),
    *trace(
        "t.csv",
        _b(_HP + "0,10,3,4 -1\n"),
        "t.csv line 2: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got '-1')",
        "csv-hash-negative",
    ),
    *trace(
        "t.csv",
        _b(_HP + f"0,10,3,{2**53 + 1}\n1,10,3,\n"),
        "t.csv line 2: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got '9007199254740993')",
        "csv-hash-above-2-53",
    ),
    *trace(
        "t.parquet",
        _parquet(_ids_frame([["a"]])),
        "t.parquet row 1: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 'a')",
        "parquet-hash-strings",
    ),
    *trace(
        "t.parquet", _parquet(_ids_frame([[[1], [2]]])), "t.parquet row 1: prefix_hash_ids must be a list", "parquet-hash-nested"
    ),
    *trace(
        "t.parquet",
        _parquet(_ids_frame([[1], [-1]])),
        "t.parquet row 2: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got -1)",
        "parquet-hash-negative",
    ),
    *trace(
        "t.parquet",
        _parquet(_ids_frame([[2**53 + 1]])),
        "t.parquet row 1: prefix_hash_ids must be a list of integers in [0, 2^53 - 1] (got 9007199254740993)",
        "parquet-hash-above-2-53",
    ),
    *trace(
        "t.parquet",
        _parquet(pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [True, True], "output_tokens": [3, 4]})),
        "t.parquet: prompt_tokens must be numbers (got a column of type bool)",
        "parquet-bool-tokens",
    ),
    *trace(
        "t.csv",
        b"prompt_tokens," + b"7," * 1_000_000,
        "t.csv: the first line is longer than 1,048,576 bytes",
        "one-line-many-fields",
    ),
    *trace("t.csv", _b(AZURE.replace("374", "x")), "t.csv", "azure-non-numeric"),
    *trace("t.csv", _b(AZURE.replace("2023-11-16 18:15:50.99", "not a time")), "t.csv", "azure-bad-time"),
    *trace("t.csv", _b(BURST.replace("472", "-472")), "t.csv", "burstgpt-negative"),
    *trace("t.csv", _b(_H + "0,10,3\n"), "unknown trace format", "bad-format-option", "--format", "csv2"),
    *trace(
        "t.csv",
        _b("ts,in,out\n0,1,1\n"),
        "t.csv",
        "generic-wrong-column",
        "--columns",
        "arrival_at_s=ts,prompt_tokens=inp,output_tokens=out",
    ),
    *trace(
        "t.csv",
        _b("ts,in,out\n0,1,1\n"),
        "time unit",
        "generic-bad-unit",
        "--columns",
        "arrival_at_s=ts,prompt_tokens=in,output_tokens=out",
        "--time-unit",
        "fortnight",
    ),
    Case("trace-missing", "trace", {}, ["trace", "inspect", "nowhere.csv"], "no such trace file"),
    Case("trace-folder", "trace", {}, ["trace", "inspect", "."], "is a folder"),
]
BAD_TRACES = [c for c in BAD_TRACES if c is not None]

_RUN = ["run", "s.yaml", "--no-capacity"]
_FILES = {"s.yaml": _b(SCENARIO), "t.csv": _b(CSV)}
BAD_CLI = [
    Case("no-command-arg", "cli", {}, ["run"], "Missing argument"),
    Case("unknown-command", "cli", {}, ["rn"], "No such command"),
    Case("unknown-option", "cli", _FILES, [*_RUN, "--bogus"], "No such option"),
    Case("seed-not-int", "cli", _FILES, [*_RUN, "--seed", "x"], "--seed"),
    Case("seed-negative", "cli", _FILES, [*_RUN, "--seed", "-3"], "--seed must be >= 0"),
    Case("out-dot", "cli", _FILES, [*_RUN, "--out", "."], "is the working folder"),
    Case("out-parent", "cli", _FILES, [*_RUN, "--out", ".."], "a parent of the working"),
    Case("out-user-folder", "cli", {**_FILES, "docs/keep.txt": b"x"}, [*_RUN, "--out", "docs"], "not a fleetsim run folder"),
    Case("out-is-file", "cli", {**_FILES, "f.txt": b"x"}, [*_RUN, "--out", "f.txt"], "exists and is not a folder"),
    Case("out-under-file", "cli", {**_FILES, "f.txt": b"x"}, [*_RUN, "--out", "f.txt/run"], "cannot write in"),
    Case("plot-missing-folder", "cli", _FILES, [*_RUN, "--out", "out", "--plot", "no/p.png"], "does not exist"),
    Case("plot-is-folder", "cli", {**_FILES, "d/x": b""}, [*_RUN, "--out", "out", "--plot", "d"], "is a folder"),
    Case("plot-bad-format", "cli", _FILES, [*_RUN, "--out", "out", "--plot", "p.xyz"], "must end in"),
    Case("inspect-plot-bad-format", "cli", {"t.csv": _b(CSV)}, ["trace", "inspect", "t.csv", "--plot", "p.xyz"], "must end in"),
    Case("goodput-bad-metric", "cli", _FILES, [*_RUN, "--out", "out", "--goodput", "latency:5"], "--goodput"),
    Case("goodput-negative", "cli", _FILES, [*_RUN, "--out", "out", "--goodput", "ttft:-5"], "--goodput"),
    Case("goodput-infinite", "cli", _FILES, [*_RUN, "--out", "out", "--goodput", "ttft:inf"], "finite number"),
    Case(
        "convert-rate-scale-inf",
        "cli",
        {"t.csv": _b(CSV)},
        ["trace", "convert", "t.csv", "c.csv", "--rate-scale", "inf"],
        "finite",
    ),
    Case(
        "convert-repeat-huge",
        "cli",
        {"t.csv": _b(CSV)},
        ["trace", "convert", "t.csv", "c.csv", "--repeat", "100000000"],
        "repeat",
    ),
    Case("goodput-empty", "cli", _FILES, [*_RUN, "--out", "out", "--goodput", " "], "--goodput"),
    Case(
        "roofline-tp-zero",
        "cli",
        {},
        ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--tp", "0"],
        "--tp must be >= 1",
    ),
    Case(
        "roofline-price-nan",
        "cli",
        {},
        ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--price-per-gpu-hour", "nan"],
        "--price-per-gpu-hour",
    ),
    Case(
        "roofline-price-negative",
        "cli",
        {},
        ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--price-per-gpu-hour", "-1"],
        "--price-per-gpu-hour",
    ),
    Case("roofline-unknown-model", "cli", {}, ["roofline", "--model", "gpt-5", "--gpu", "a100-80gb"], "unknown model"),
    Case("roofline-no-gpu", "cli", {}, ["roofline", "--model", "llama-2-7b"], "needs --model and --gpu"),
    Case(
        "roofline-bad-batches",
        "cli",
        {},
        ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--batches", "1,x"],
        "--batches",
    ),
    Case("roofline-tp-heads", "cli", {}, ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--tp", "3"], "tp=3"),
    Case(
        "gen-too-many",
        "cli",
        {},
        ["trace", "gen", "--rate", "5", "--requests", "100000000000", "--out", "g.csv"],
        "n_requests must be",
    ),
    Case("gen-inf-rate", "cli", {}, ["trace", "gen", "--rate", "inf", "--duration-s", "10", "--out", "g.csv"], "finite number"),
    Case(
        "gen-rate-times-duration",
        "cli",
        {},
        ["trace", "gen", "--rate", "1e6", "--duration-s", "3600", "--out", "g.csv"],
        "more than 100,000,000",
    ),
    Case(
        "gen-bad-lengths",
        "cli",
        {},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--prompt", "zipf:3", "--out", "g.csv"],
        "length distribution",
    ),
    Case(
        "gen-bad-suffix",
        "cli",
        {},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--out", "g.txt"],
        "must end in .csv or .parquet",
    ),
    Case(
        "gen-missing-folder",
        "cli",
        {},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--out", "no/g.csv"],
        "does not exist",
    ),
    Case("convert-sample-zero", "cli", {"t.csv": _b(CSV)}, ["trace", "convert", "t.csv", "c.csv", "--sample", "0"], "fraction"),
    Case("merge-bad-klass", "cli", {"t.csv": _b(CSV)}, ["trace", "merge", "m.csv", "t.csv=urgent"], "urgent"),
    Case("report-missing", "cli", {}, ["report", "nowhere"], "not a run folder"),
    Case("report-not-a-run", "cli", {"d/x.txt": b"x"}, ["report", "d"], "not a complete run folder"),
    Case(
        "report-meta-empty",
        "cli",
        {"d/" + n: b"x" for n in ("requests.parquet", "replicas.parquet", "timeline.parquet", "itl.parquet")}
        | {"d/meta.json": b"{}"},
        ["report", "d"],
        "meta.json was written by an unstamped fleetsim",
    ),
    Case(
        "report-corrupt-parquet",
        "cli",
        {"d/" + n: b"x" for n in ("requests.parquet", "replicas.parquet", "timeline.parquet", "itl.parquet", "meta.json")},
        ["report", "d"],
        "cannot read the run folder",
    ),
    Case("inspect-no-arg", "cli", {}, ["trace", "inspect"], "Missing argument"),
    Case(
        "report-meta-older-version",
        "cli",
        {"d/" + n: b"x" for n in ("requests.parquet", "replicas.parquet", "timeline.parquet", "itl.parquet")}
        | {"d/meta.json": _b('{"fleetsim_version": "0.0.1", "seed": 0, "model": "llama-2-7b"}')},
        ["report", "d"],
        "d: meta.json was written by fleetsim 0.0.1 (this is",
    ),
    Case(
        "set-deeply-nested",
        "cli",
        _FILES,
        [*_RUN, "--out", "out", "--set", "x=" + "[" * 10_000 + "]" * 10_000],
        "--set x: the value '[[[[[[[[",
    ),
    Case(
        "gen-empirical-one-line",
        "cli",
        {"big.csv": b"prompt_tokens," + b"7," * 1_000_000},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--prompt", "empirical:big.csv:prompt_tokens", "--out", "g.csv"],
        "prompt_tokens: empirical: big.csv: the first line is longer than 1,048,576 bytes",
    ),
    Case(
        "gen-out-under-file",
        "cli",
        {"f.txt": b"x"},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--out", "f.txt/g.csv"],
        "--out f.txt/g.csv: f.txt is a file, not a folder",
    ),
    Case(
        "gen-out-is-folder",
        "cli",
        {"g.csv/": b""},
        ["trace", "gen", "--rate", "5", "--requests", "10", "--out", "g.csv"],
        "--out g.csv: is a folder",
    ),
    Case(
        "convert-out-under-file",
        "cli",
        {"t.csv": _b(CSV), "f.txt": b"x"},
        ["trace", "convert", "t.csv", "f.txt/c.csv"],
        "f.txt is a file",
    ),
    Case(
        "merge-out-under-file",
        "cli",
        {"t.csv": _b(CSV), "f.txt": b"x"},
        ["trace", "merge", "f.txt/m.csv", "t.csv=batch"],
        "f.txt is a file",
    ),
    Case(
        "plot-under-file",
        "cli",
        {**_FILES, "f.txt": b"x"},
        [*_RUN, "--out", "out", "--plot", "f.txt/p.png"],
        "--plot f.txt/p.png: f.txt is a file",
    ),
    Case(
        "report-openmetrics-under-file",
        "cli",
        {"f.txt": b"x"},
        ["report", "d", "--openmetrics", "f.txt/m.txt"],
        "--openmetrics f.txt/m.txt: f.txt is a file",
    ),
    Case(
        "roofline-draft-larger",
        "cli",
        {},
        ["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--speculative", "4:0.7:llama-2-13b"],
        "--speculative: the draft model llama-2-13b",
    ),
]

STEPS = "kind,batch,new_tokens_per_seq,context_tokens,total_ms\n"
TABLE = "{repo}/benchmarks/steptimes/aisimulate-vllm0.24_h100-sxm_llama-3.1-8b_tp1.csv"
_CAL = ["--model", "llama-3.1-8b", "--gpu", "h100-sxm"]


def calibrate(id: str, files: dict[str, bytes], args: list[str], expect: str) -> Case:
    return Case(id, "calibrate", files, ["calibrate", *args, *_CAL], expect)


BAD_CALIBRATE = [
    calibrate("folder", {"d/": b""}, ["d"], "d: is a folder, not a step-time CSV"),
    calibrate("missing", {}, ["nowhere.csv"], "nowhere.csv: no such file"),
    calibrate("one-row", {"s.csv": _b(STEPS + "decode,1,1,0,3\n")}, ["s.csv"], "s.csv: 1 distinct shape for 4 free parameters"),
    calibrate(
        "one-shape-repeated",
        {"s.csv": _b(STEPS + "decode,8,1,512,9\n" * 50)},
        ["s.csv", "--out", "fit.yaml"],
        "1 distinct shape for 4 free parameters",
    ),
    calibrate(
        "too-many-rows",
        {"s.csv": _b(STEPS + "decode,1,1,10,3\n" * 100_001)},
        ["s.csv"],
        "s.csv: more than 100,000 rows",
    ),
    calibrate(
        "vllm-steps",
        {"v.csv": _b("batch_size,input_len,output_len,avg_latency\n1,128,1000000000,3.0\n")},
        ["v.csv"],
        "engine steps (one per output token), more than 1,000,000",
    ),
    calibrate("one-huge-line", {"s.csv": b"kind," + b"x," * 1_000_000}, ["s.csv"], "the first line is longer than"),
    calibrate("binary", {"s.csv": bytes(range(256)) * 8}, ["s.csv"], "s.csv"),
    calibrate("out-user-file", {"notes.yaml": b"mine\n"}, [TABLE, "--out", "notes.yaml"], "--out notes.yaml: the file exists"),
    calibrate("out-under-file", {"f.txt": b"x"}, [TABLE, "--out", "f.txt/fit.yaml"], "--out f.txt/fit.yaml: f.txt is a file"),
    calibrate("out-folder", {"fit.yaml/": b""}, [TABLE, "--out", "fit.yaml"], "--out fit.yaml: is a folder"),
    calibrate("fix-unknown", {}, [TABLE, "--fix", "speed"], "--fix: unknown parameter 'speed'"),
]

_GOOD_RUN = ["run", "s.yaml", "--out", "out"]
GOOD = [
    Case("csv-bom", "good", {"s.yaml": _b(SCENARIO), "t.csv": b"\xef\xbb\xbf" + _b(CSV)}, _GOOD_RUN, None),
    Case("csv-crlf", "good", {"s.yaml": _b(SCENARIO), "t.csv": _b(CSV.replace("\n", "\r\n"))}, _GOOD_RUN, None),
    Case(
        "scenario-bom-crlf",
        "good",
        {"s.yaml": b"\xef\xbb\xbf" + _b(SCENARIO.replace("\n", "\r\n")), "t.csv": _b(CSV)},
        _GOOD_RUN,
        None,
    ),
    Case(
        "duplicate-timestamps",
        "good",
        {"s.yaml": _b(SCENARIO), "t.csv": _b(_H + "0,10,5\n0,10,5\n0,10,5\n1,5,5\n1,5,5\n")},
        _GOOD_RUN,
        None,
    ),
    Case("one-request", "good", {"s.yaml": _b(SCENARIO), "t.csv": _b(_H + "0,10,5\n")}, _GOOD_RUN, None),
    Case(  # prefill_first with prompts over its token budget: those requests are rejected, the run goes on
        "prefill-first-budget",
        "good",
        {"s.yaml": _b(SCENARIO + "engine: {policy: prefill_first, max_num_batched_tokens: 16}\n"), "t.csv": _b(CSV)},
        _GOOD_RUN,
        None,
    ),
    Case("all-rejected", "good", {"s.yaml": _b(SCENARIO), "t.csv": _b(_H + "0,5000,5\n1,4000,200\n")}, _GOOD_RUN, None),
    Case(
        "shorter-than-a-sample",
        "good",
        {"s.yaml": _b(SCENARIO), "t.csv": _b(_H + "0,10,2\n")},
        [*_GOOD_RUN, "--plot", "p.png"],
        None,
    ),
    Case("csv-named-txt", "good", {"s.yaml": _b(SCENARIO.replace("t.csv", "t.txt")), "t.txt": _b(CSV)}, _GOOD_RUN, None),
    Case(
        "extra-columns",
        "good",
        {"s.yaml": _b(SCENARIO), "t.csv": _b("arrival_at_s,prompt_tokens,output_tokens,user\n0,10,5,ann\n")},
        _GOOD_RUN,
        None,
    ),
    Case(
        "parquet-trace",
        "good",
        {"s.yaml": _b(SCENARIO.replace("t.csv", "t.parquet")), "t.parquet": GOOD_PARQUET},
        _GOOD_RUN,
        None,
    ),
    Case(
        "mooncake-trace", "good", {"s.yaml": _b(SCENARIO.replace("t.csv", "t.jsonl")), "t.jsonl": _b(MOON * 3)}, _GOOD_RUN, None
    ),
    Case("azure-trace", "good", {"s.yaml": _b(SCENARIO), "t.csv": _b(AZURE)}, _GOOD_RUN, None),
    Case("empty-out-folder", "good", {"s.yaml": _b(SCENARIO), "t.csv": _b(CSV), "out/": b""}, _GOOD_RUN, None),
    Case(  # ids at the top of the exact range, a request without ids, prefix caching on
        "csv-hash-ids-exact",
        "good",
        {
            "s.yaml": _b(SCENARIO + "engine: {prefix_caching: true}\n"),
            "t.csv": _b(_HP + f"0,1100,5,{2**53 - 1} 7\n0.5,1100,3,\n1.0,1100,2,{2**53 - 1} 7\n"),
        },
        _GOOD_RUN,
        None,
    ),
    Case(
        "mooncake-hash-ids-empty-and-null",
        "good",
        {
            "s.yaml": _b(SCENARIO.replace("t.csv", "t.jsonl") + "engine: {prefix_caching: true}\n"),
            "t.jsonl": _b(moon_ids("[]") + '{"timestamp": 2, "input_length": 100, "output_length": 6, "hash_ids": null}\n'),
        },
        _GOOD_RUN,
        None,
    ),
]

_PLATFORM = (
    "fleet: {gpu: a100-80gb}\ntrace: t.csv\ndeployments:\n  - {name: a, model: llama-2-7b}\n  - {name: b, model: llama-3.1-8b}\n"
)
_MODELS = "arrival_at_s,prompt_tokens,output_tokens,model\n0,10,5,a\n0.5,20,3,b\n1.0,30,2,a\n"
BAD_PLATFORMS = [
    scenario(_PLATFORM, "the trace has no `model` column", "platform-no-model-column"),
    scenario(
        _PLATFORM,
        "request 1 is for model 'c', which no deployment serves",
        "platform-unserved-model",
        _MODELS.replace(",b\n", ",c\n"),
    ),
    scenario(
        _PLATFORM,
        "trace: request 1 names no model (its `model` is empty)",
        "platform-empty-model",
        _MODELS.replace(",b\n", ",\n"),
    ),
    scenario(
        _PLATFORM + "gpu_budget: {a100-80gb: 1, h900: 2}\n",
        "gpu_budget.h900: unknown gpu 'h900'",
        "platform-budget-unknown-gpu",
        _MODELS,
    ),
    scenario(
        _PLATFORM + "gpu_budget: {a100-80gb: 1}\n",
        "gpu_budget.a100-80gb: 1 GPUs cannot hold deployment",
        "platform-budget-too-small",
        _MODELS,
    ),
    scenario(_PLATFORM + "gpu_budget: {a100-80gb: '4'}\n", "gpu_budget.a100-80gb", "platform-budget-string", _MODELS),
    scenario(
        _PLATFORM.replace("model: llama-3.1-8b}", "model: llama-3.1-8b, fleet: {tp: 3}}"),
        "deployments.1 (b): fleet.tp",
        "platform-deployment-tp",
        _MODELS,
    ),
    scenario(
        _PLATFORM.replace("{name: b,", "{name: a,"),
        "deployments.1.name: each deployment needs a name of its own ('a' is taken)",
        "platform-duplicate-name",
        _MODELS,
    ),
    scenario(
        _PLATFORM.replace("model: llama-3.1-8b}", "model: llama-3.1-8b, fleet: 3}"),
        "deployments[1].fleet",
        "platform-fleet-not-a-block",
        _MODELS,
    ),
    scenario(_PLATFORM + "batch: {jobs: []}\n", "batch jobs on a platform", "platform-batch", _MODELS),
    scenario(
        _PLATFORM,
        "trace: request 1 is a batch-class request (1 in all); batch work on a platform",
        "platform-batch-class-request",
        "arrival_at_s,prompt_tokens,output_tokens,model,klass\n0,10,5,a,interactive\n0.5,20,3,b,batch\n1.0,30,2,a,\n",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {sleep: {level: 3}}}\ntrace: t.csv\n",
        "sleep.level",
        "sleep-level-3",
    ),
    scenario(
        "model: llama-2-7b\nfleet: {gpu: a100-80gb, lifecycle: {sleep: {max_sleeping: 1, initial_sleeping: 2}}}\ntrace: t.csv\n",
        "initial_sleeping must be <= max_sleeping (got 2 > 1)",
        "sleep-initial-over-max",
    ),
]
GOOD += [
    Case("platform-by-model", "good", {"s.yaml": _b(_PLATFORM), "t.csv": _b(_MODELS)}, _GOOD_RUN, None),
    Case(  # request classes, all interactive, and priorities: filled in as a plain run's are
        "platform-interactive-classes",
        "good",
        {
            "s.yaml": _b(_PLATFORM),
            "t.csv": _b("arrival_at_s,prompt_tokens,output_tokens,model,klass,priority\n0,10,5,a,interactive,\n0.5,20,3,b,,2\n"),
        },
        _GOOD_RUN,
        None,
    ),
    Case(  # a deployment no request is for, and sleep mode on a scaled-to-zero fleet
        "platform-idle-deployment-sleeping",
        "good",
        {
            "s.yaml": _b(
                _PLATFORM.replace(
                    "fleet: {gpu: a100-80gb}", "fleet: {gpu: a100-80gb, lifecycle: {cold_start_s: 5, sleep: {level: 2}}}"
                )
                + "gpu_budget: {a100-80gb: 2}\n"
            ),
            "t.csv": _b(_MODELS.replace(",b\n", ",a\n")),
        },
        _GOOD_RUN,
        None,
    ),
]

CASES: list[Case] = [*BAD_SCENARIOS, *BAD_TRACES, *BAD_CLI, *BAD_CALIBRATE, *BAD_PLATFORMS, *GOOD]
