"""Fit the step-time model's free parameters to measured (or profile-predicted) step times.

Input: a CSV of step shapes and their times. Two layouts are read:

- **steps** (the layout of `benchmarks/steptimes/`, Vidur's and AISimulate's per-step predictions, or any
  profiler that logs each engine step with its batch): `kind` (prefill | decode | mixed), `batch`
  (sequences in the step; for `mixed`, the prefilling ones), `new_tokens_per_seq` (a prefill's prompt
  tokens this step; 1 for decode), `context_tokens` (a decode's cached context; a prefill has none cached),
  optional `decode_seqs` (the decodes in a `mixed` step), `total_ms`. Other columns are ignored.
- **vllm-latency** (one row per `vllm bench latency` run: its `--batch-size`, `--input-len`, `--output-len`
  and the `avg_latency` of its JSON output, in seconds): `batch_size`, `input_len`, `output_len`,
  `avg_latency`. A run is modelled as one prefill step of the whole batch (keep batch x input_len within
  the engine's max_num_batched_tokens so vLLM does it in one step) and output_len - 1 decode steps.
- **kernels** (a folder: LLMServingSim's per-layer kernel profile of one model at one TP degree,
  `profiler/perf/<GPU>/<model>/<dtype>/tp<N>/`, measured with vLLM on one GPU at the per-rank shapes): `dense.csv`
  (`layer`, `tokens`, `time_us`: each operator of a layer, and the embedding and final norm), `attention.csv`
  (`prefill_chunk`, `kv_prefill`, `n_decode`, `kv_decode`, `time_us`; `kv_decode` per decoding sequence) and
  `per_sequence.csv` (`layer`, `sequences`, `time_us`: the LM head and the sampler). Each attention row of a step
  that only prefills (one chunk after `kv_prefill` cached tokens) or only decodes becomes a shape, timed as vLLM
  runs it: the embedding, then per layer (the model's layer count) two RMSNorms (`layernorm`, as the profiler's
  architecture files list it) and every other per-layer operator at the step's tokens plus that attention row,
  then the final norm, the LM head and the sampler at its sequences. The profile has no all-reduce (TP ranks are
  profiled as one GPU at their shapes), so the fit prices none; its kernels ran without CUDA graphs
  (`enforce_eager`), so its per-layer overhead is an eager one. An MoE model's folder also holds `moe.csv` (`tokens`,
  `activated_experts`, `time_us`: the MoE block at TP 1, the profiler's only degree for it), read at the experts a
  step's tokens touch under uniform routing.

The model (`sim.physics.roofline.step_cost`): t = max(C, M) + (1 - overlap) min(C, M) + 2 L (latency + ring bytes
/ link) + U layer_overhead_s + step_overhead_s + scheduled sequences x seq_overhead_s, with C = FLOPs / (tp peak
mfu), M = bytes / (tp HBM mbu) (an MoE model's routed experts a second such max of their own, at the same mfu, mbu
and overlap) and U the L layers in units of a Llama layer's kernels (`ModelSpec.layer_units`). Free parameters:
mfu, mbu, layer_overhead_s, allreduce_latency_s (only when tp > 1: at tp 1 there is no all-reduce to see) and
overlap; the host terms (step_overhead_s, seq_overhead_s) are the scenario's, not fitted.
They are fitted by least squares on the relative error (scipy's trust-region reflective method, inside physical
bounds), so a 10 ms step and a 1 s step weigh alike. The leave-one-out error (refit without each shape, predict it)
says how well the fit generalizes to a shape it has not seen; a leave-one-out error far above the in-sample one is
overfitting.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError
from sim.physics.hardware import GpuSpec
from sim.physics.models import ModelSpec
from sim.physics.roofline import (
    RooflineSetup,
    allreduce_time_s,
    expected_experts_touched,
    host_overhead_s,
    scheduled_seqs,
    step_cost,
)
from sim.spec import MAX_STEP_OVERHEAD_S

PARAMS = ("mfu", "mbu", "layer_overhead_s", "allreduce_latency_s", "overlap")
BOUNDS: dict[str, tuple[float, float]] = {
    "mfu": (0.05, 1.0),
    "mbu": (0.05, 1.0),
    "layer_overhead_s": (0.0, 1e-3),
    "allreduce_latency_s": (0.0, 1e-3),
    "overlap": (0.0, 1.0),
}
STEP_COLUMNS = ("kind", "batch", "new_tokens_per_seq", "context_tokens", "total_ms")
VLLM_COLUMNS = ("batch_size", "input_len", "output_len", "avg_latency")
MAX_COUNT = 10**9  # a batch, token or sequence count beyond any engine step (an infinity cast to int64 is garbage)
MAX_ROWS = 100_000  # a table holds one row per measured shape; a profiler's per-step log is aggregated first
MAX_STEPS = 1_000_000  # the engine steps a vllm-latency table's runs add up to (1 prefill + output_len - 1 decodes each)
MAX_LOO_SHAPES = 200  # leave-one-out refits once per shape: above this it is skipped (and says so)


@dataclass(frozen=True, slots=True)
class Shape:
    """One measured row: the steps it consists of and their measured total."""

    label: str
    steps: tuple[tuple[int, float, float, int], ...]  # (new tokens, attention pairs, KV tokens read, logit rows) per step
    measured_s: float


def _fail(path: str, row: int | None, rule: str) -> FleetsimError:
    where = f"{path}" if row is None else f"{path}: row {row}"
    return FleetsimError(f"{where}: {rule}")


def _int_col(df: pd.DataFrame, col: str, path: str, *, minimum: int) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | (values < minimum) | (values != np.floor(values))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, i + 2, f"{col} must be an integer >= {minimum} (got {str(df[col].iloc[i])!r})")
    bad = ~(values <= MAX_COUNT)  # infinity too
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, i + 2, f"{col} must be at most {MAX_COUNT:,} (got {str(df[col].iloc[i])!r})")
    out: np.ndarray = values.to_numpy(dtype=np.int64)
    return out


def _pos_col(df: pd.DataFrame, col: str, path: str, *, low: float, high: float, unit: str) -> np.ndarray:
    """A time column within [low, high] (a nanosecond to an hour a step): the fit weighs relative errors, so a time
    of 1e-300 made them overflow (a traceback from the solver) and one of 1e300 was fitted as a figure."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, i + 2, f"{col} must be a positive number (got {str(df[col].iloc[i])!r})")
    bad = (values < low) | (values > high)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, i + 2, f"{col} must be within {low:g}..{high:g} {unit} (got {str(df[col].iloc[i])!r})")
    out: np.ndarray = values.to_numpy(dtype=np.float64)
    return out


def _csv_table(path: Path, max_rows: int) -> pd.DataFrame:
    """A calibration table's first `max_rows` + 1 rows, its column names stripped. A name given twice (`time_us` and
    ` time_us` too: stripped, they are one) is refused: pandas kept both and a column read as a table (a traceback)."""
    from sim.workload.readers import read_header

    try:
        header = read_header(path)  # a first line of unbounded length is refused before pandas holds it
        df = pd.read_csv(path, nrows=max_rows + 1)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, csv.Error, UnicodeDecodeError, OSError) as err:
        raise FleetsimError(f"{path}: not a readable CSV ({' '.join(str(err).split())[:120]})") from None
    twice = next((c for c in header if c and header.count(c) > 1), None)
    if twice is not None:
        raise FleetsimError(f"{path}: column {twice!r} is named twice in the header")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_shapes(
    path: str | Path, layout: str = "auto", *, max_rows: int = MAX_ROWS, max_context: int | None = None
) -> list[Shape]:
    """Read a step-time CSV (see the module docstring) into shapes; one-line errors name the row. At most
    `max_rows` rows are read: a longer file is refused, not truncated. `max_context`: the model's context, which no
    row's sequence may pass (its cached and new tokens, or a run's input and output)."""
    name = str(path)
    path = Path(path)
    if layout == "kernels" or (layout == "auto" and is_kernel_profile(path)):
        raise FleetsimError(
            f"{name}: the kernels layout is read with its model (read_kernel_profile; fleetsim calibrate FOLDER --model M --gpu G)"
        )
    if path.is_dir():
        raise FleetsimError(
            f"{name}: is a folder, not a step-time CSV (calibrate takes one table, or a kernel profile folder holding "
            f"{', '.join(KERNEL_FILES)})"
        )
    if not path.is_file():
        raise FleetsimError(f"{name}: no such file")
    df = _csv_table(path, max_rows)
    if len(df) > max_rows:
        raise FleetsimError(
            f"{name}: more than {max_rows:,} rows; a step-time table holds one row per measured shape "
            "(aggregate or sample a per-step log first)"
        )
    if layout == "auto":
        layout = "vllm-latency" if set(VLLM_COLUMNS) <= set(df.columns) else "steps"
    if layout not in ("steps", "vllm-latency"):
        raise FleetsimError(f"--layout must be auto, steps, vllm-latency, kernels, requests or vllm-bench (got {layout!r})")
    need = STEP_COLUMNS if layout == "steps" else VLLM_COLUMNS
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise FleetsimError(
            f"{name}: missing column(s) {', '.join(missing)} for the {layout} layout (has: {', '.join(df.columns)})"
        )
    if df.empty:
        raise FleetsimError(f"{name}: no rows")
    shapes = _steps_layout(df, name) if layout == "steps" else _vllm_layout(df, name)
    if max_context is not None:
        if layout == "steps":
            longest = pd.to_numeric(df["context_tokens"]) + pd.to_numeric(df["new_tokens_per_seq"])
            what = "context_tokens + new_tokens_per_seq"
        else:
            longest = pd.to_numeric(df["input_len"]) + pd.to_numeric(df["output_len"])
            what = "input_len + output_len"
        over = np.flatnonzero((longest > max_context).to_numpy())
        if over.size:
            i = int(over[0])
            raise _fail(
                name,
                i + 2,
                f"{what} must be at most the model's context of {max_context:,} tokens (got {int(longest.iloc[i]):,})",
            )
    return shapes


def _steps_layout(df: pd.DataFrame, path: str) -> list[Shape]:
    kinds = df["kind"].astype(str).str.strip().str.lower()
    bad = ~kinds.isin(["prefill", "decode", "mixed"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(path, i + 2, f"kind must be prefill, decode or mixed (got {str(df['kind'].iloc[i])!r})")
    batch = _int_col(df, "batch", path, minimum=1)
    new = _int_col(df, "new_tokens_per_seq", path, minimum=1)
    ctx = _int_col(df, "context_tokens", path, minimum=0)
    ms = _pos_col(df, "total_ms", path, low=1e-6, high=MAX_STEP_OVERHEAD_S * 1e3, unit="ms")
    dec = _int_col(df, "decode_seqs", path, minimum=0) if "decode_seqs" in df.columns else np.zeros(len(df), np.int64)
    out = []
    for i, kind in enumerate(kinds):
        b, n, c = int(batch[i]), int(new[i]), int(ctx[i])
        if kind == "decode":
            step = (b * n, b * (n * c + n * (n + 1) / 2), float(b * c), b)
        elif kind == "prefill":
            step = (b * n, b * n * (n + 1) / 2, 0.0, b)
        else:  # b prefill chunks of n (nothing cached) plus decode_seqs decodes at context c
            d = int(dec[i])
            step = (b * n + d, b * n * (n + 1) / 2 + d * (c + 1), float(d * c), b + d)
        label = f"{kind} b={b} n={n} ctx={c}" + (f" +{int(dec[i])} decodes" if kind == "mixed" else "")
        out.append(Shape(label, (step,), float(ms[i]) / 1e3))
    return out


def _vllm_layout(df: pd.DataFrame, path: str) -> list[Shape]:
    batch = _int_col(df, "batch_size", path, minimum=1)
    inp = _int_col(df, "input_len", path, minimum=1)
    outl = _int_col(df, "output_len", path, minimum=1)
    lat = _pos_col(df, "avg_latency", path, low=1e-9, high=MAX_STEP_OVERHEAD_S * MAX_STEPS, unit="s")
    steps_total = int(outl.sum(dtype=np.float64))
    if steps_total > MAX_STEPS:
        raise FleetsimError(
            f"{path}: the runs add up to {steps_total:,} engine steps (one per output token), more than {MAX_STEPS:,}; "
            "calibrate on shorter runs"
        )
    out = []
    for i in range(len(df)):
        b, p, o = int(batch[i]), int(inp[i]), int(outl[i])
        steps = [(b * p, b * p * (p + 1) / 2, 0.0, b)]
        steps += [(b, float(b * (p + j + 1)), float(b * (p + j)), b) for j in range(o - 1)]  # context p + j cached
        out.append(Shape(f"run b={b} in={p} out={o}", tuple(steps), float(lat[i])))
    return out


KERNEL_FILES = ("dense.csv", "attention.csv", "per_sequence.csv")
KERNEL_COLUMNS = {
    "moe.csv": ("tokens", "activated_experts", "time_us"),
    "dense.csv": ("layer", "tokens", "time_us"),
    "attention.csv": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"),
    "per_sequence.csv": ("layer", "sequences", "time_us"),
}
KERNEL_NEEDED = {
    "dense.csv": ("embedding", "final_layernorm", "layernorm", "qkv_proj", "o_proj"),
    "per_sequence.csv": ("lm_head",),
}
ONCE = ("embedding", "final_layernorm")  # dense.csv rows run once a step, not once a layer
TWICE = ("layernorm",)  # a decoder layer's input and post-attention RMSNorm


def is_kernel_profile(path: Path) -> bool:
    return path.is_dir() and (path / "dense.csv").is_file()


def _kernel_table(folder: Path, file: str, max_rows: int) -> pd.DataFrame:
    path = folder / file
    name = str(path)
    if not path.is_file():
        raise FleetsimError(f"{name}: missing (a kernel profile folder holds {', '.join(KERNEL_FILES)})")
    df = _csv_table(path, max_rows)
    if len(df) > max_rows:
        raise FleetsimError(f"{name}: more than {max_rows:,} rows; a kernel profile's table is a grid of shapes")
    missing = [c for c in KERNEL_COLUMNS[file] if c not in df.columns]
    if missing:
        raise FleetsimError(f"{name}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    if df.empty:
        raise FleetsimError(f"{name}: no rows")
    for col in KERNEL_COLUMNS[file]:
        if col == "layer":
            df[col] = df[col].astype(str).str.strip()
        elif col == "time_us":
            df[col] = _pos_col(df, col, name, low=1e-3, high=MAX_STEP_OVERHEAD_S * 1e6, unit="us")
        else:
            df[col] = _int_col(df, col, name, minimum=0 if file == "attention.csv" else 1)
    for layer in KERNEL_NEEDED.get(file, ()):
        if layer not in set(df["layer"]):
            raise FleetsimError(f"{name}: no {layer!r} rows (a decoder layer's operators are needed)")
    return df


def _moe_table(path: Path, model: ModelSpec, max_rows: int) -> dict[int, float]:
    """`moe.csv` (`tokens`, `activated_experts`, `time_us`: the MoE block, router included, at TP 1) as microseconds
    by token count: at the experts that many tokens touch under uniform routing (`expected_experts_touched`),
    linear between the profiled counts of activated experts (the nearest end outside them)."""
    name = str(path)
    df = _kernel_table(path.parent, "moe.csv", max_rows)
    bad = df["activated_experts"] > model.n_experts
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(
            name,
            i + 2,
            f"activated_experts is at most {model.name}'s {model.n_experts} experts (got {df['activated_experts'].iloc[i]})",
        )
    out: dict[int, float] = {}
    for tokens, rows in df.groupby("tokens", sort=True):
        curve = rows.groupby("activated_experts", sort=True)["time_us"].median()
        want = expected_experts_touched(model, int(tokens))
        out[int(tokens)] = float(np.interp(want, curve.index.to_numpy(dtype=np.float64), curve.to_numpy()))
    return out


def check_kernel_folder(folder: str | Path, model: ModelSpec, gpu: GpuSpec, tp: int) -> None:
    """A kernel profile folder says what it profiled: its name the TP degree (LLMServingSim's `tp2/`, or a copy's
    `..._tp2`), its `meta.yaml` (in the folder, or above its `tpN/`) the model and the GPU. Calibrating it as another
    (`--tp`, `--model`, `--gpu`) would fit that one's efficiencies to this one's kernel times: refused, naming both."""
    import re

    from sim.physics.hardware import gpu_of_device
    from sim.physics.models import load_model_catalog
    from sim.scenario.importer import model_from_name
    from sim.yaml_input import read_yaml

    folder = Path(folder)
    m = re.search(r"(?:^|_)tp(\d+)$", folder.name.lower())
    if m and int(m.group(1)) != tp:
        raise FleetsimError(
            f"{folder}: a TP {int(m.group(1))} profile (its name), calibrated with --tp {tp}; give --tp {m.group(1)}"
        )
    meta_path = next((p for p in (folder / "meta.yaml", folder.parent / "meta.yaml") if p.is_file()), None)
    if meta_path is None:
        return
    meta = read_yaml(meta_path, what="kernel profile meta.yaml")
    if not isinstance(meta, dict):
        return
    named = meta.get("model")
    if isinstance(named, str) and (found := model_from_name(named)) is not None:
        profiled = load_model_catalog().get(found)  # (compared by architecture: --model may be a config.json of it)
        if profiled.n_layers != model.n_layers or abs(profiled.n_params - model.n_params) > 0.01 * profiled.n_params:
            raise FleetsimError(f"{meta_path} model: {named} (the catalog's {found}), calibrated as --model {model.name}")
    device = meta.get("gpu")
    if isinstance(device, str):
        card = gpu_of_device(device)  # (None: a GPU the catalog lacks; --gpu says which entry stands for it)
        if card is not None and card != gpu.name:
            raise FleetsimError(f"{meta_path} gpu: {device} (the catalog's {card}), calibrated as --gpu {gpu.name}")


def read_kernel_profile(folder: str | Path, model: ModelSpec, *, max_rows: int = MAX_ROWS) -> list[Shape]:
    """The shapes of a kernel profile folder (the `kernels` layout, see the module docstring) of `model`: every
    attention row of a step that only prefills or only decodes whose token and sequence counts the other tables hold
    (an MoE model's: and whose token count `moe.csv` holds)."""
    folder = Path(folder)
    name = str(folder)
    n_layers = model.n_layers
    if not folder.is_dir():
        raise FleetsimError(f"{name}: no such folder (a kernel profile folder holds {', '.join(KERNEL_FILES)})")
    has_moe = (folder / "moe.csv").exists()
    if has_moe and not model.is_moe:
        raise FleetsimError(f"{name}: holds moe.csv (an MoE model's profile), but {model.name} has no experts")
    if model.is_moe and not has_moe:
        raise FleetsimError(
            f"{name}: {model.name} is an MoE model and the folder has no moe.csv (the profiler times the experts at "
            "TP 1 only: calibrate an MoE model on its tp1 folder)"
        )
    moe_at = _moe_table(folder / "moe.csv", model, max_rows) if has_moe else None
    dense = _kernel_table(folder, "dense.csv", max_rows)
    attn = _kernel_table(folder, "attention.csv", max_rows)
    per_seq = _kernel_table(folder, "per_sequence.csv", max_rows)
    # per token count: the layer's operators (each at its count a layer) and the step's once-only ones
    ops = dense.groupby(["layer", "tokens"], sort=True)["time_us"].median()
    layers = sorted(set(dense["layer"]) - set(ONCE))
    by_tokens: dict[int, tuple[float, float]] = {}
    for tokens in sorted(set(dense["tokens"])):
        got = {layer: ops.get((layer, tokens)) for layer in [*layers, *ONCE]}
        hole = next((layer for layer, v in got.items() if v is None), None)
        if hole is not None:  # (dropped, a stray or misspelt operator's row left too few shapes, a fit error naming none)
            raise FleetsimError(
                f"{folder / 'dense.csv'}: operator {hole!r} has no row at tokens = {tokens}, which other operators have "
                "(a step's time needs each operator at its token count: the profiler times every one on one grid)"
            )
        per_layer = sum(float(got[layer]) * (2 if layer in TWICE else 1) for layer in layers)
        by_tokens[int(tokens)] = (per_layer, sum(float(got[layer]) for layer in ONCE))
    seq = per_seq.groupby(["layer", "sequences"], sort=True)["time_us"].median()
    heads = {
        int(n): float(seq[("lm_head", n)]) + float(seq.get(("sampler", n), 0.0))
        for n in set(per_seq["sequences"])
        if ("lm_head", n) in seq.index
    }
    out: list[Shape] = []
    rows = attn.groupby(["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"], sort=True)["time_us"].median()
    for (c, k, n, kv), t_attn in rows.items():
        c, k, n, kv = int(c), int(k), int(n), int(kv)
        if (c > 0) == (n > 0):
            continue  # mixed (or empty) steps: not used
        tokens, seqs = (c, 1) if c else (n, n)
        if tokens not in by_tokens or seqs not in heads:
            continue
        per_layer, once = by_tokens[tokens]
        if moe_at is not None:
            moe_us = moe_at.get(tokens)
            if moe_us is None:
                continue
            per_layer += moe_us
        us = n_layers * (per_layer + float(t_attn)) + once + heads[seqs]
        if c:
            step = (c, c * k + c * (c + 1) / 2, float(k), 1)
            label = f"prefill n={c} ctx={k}"
        else:
            step = (n, float(n * (kv + 1)), float(n * kv), n)
            label = f"decode b={n} ctx={kv}"
        out.append(Shape(label, (step,), us / 1e6))
    if not out:
        raise FleetsimError(
            f"{name}: no attention row of a prefill-only or decode-only step whose token count dense.csv holds "
            "(and whose sequence count per_sequence.csv holds)"
        )
    return out


@dataclass(frozen=True)
class _Terms:
    """Parameter-free parts of every step of every shape, flattened; `row` maps a step to its shape."""

    compute_at_peak: np.ndarray  # seconds at mfu 1
    memory_at_peak: np.ndarray  # seconds at mbu 1
    expert_compute_at_peak: np.ndarray  # an MoE model's routed experts, their own roofline (0 for a dense model)
    expert_memory_at_peak: np.ndarray
    ar_bytes_s: np.ndarray  # the all-reduces' bandwidth seconds (latency 0)
    row: np.ndarray
    n_rows: int
    n_layers: int
    layer_units: float  # what the per-layer overhead multiplies (`RooflineSetup.layer_units`)
    tp: int
    step_overhead_s: float
    host_s: np.ndarray  # host seconds each step's scheduled sequences add (`seq_overhead_s`; not fitted)
    comm: bool


def _terms(setup: RooflineSetup, shapes: Sequence[Shape]) -> _Terms:
    base = replace(
        setup,
        effective_flops_per_s=setup.peak_flops_per_s,
        effective_hbm_bw_bytes_per_s=setup.gpu.hbm_bw_bytes_per_s,
        comm=False,
        step_overhead_s=0.0,
        layer_overhead_s=0.0,
        overlap=1.0,
    )
    gpu0 = replace(setup.gpu, allreduce_latency_s=0.0)
    model = setup.model
    c, m, ec, em, ar, host, row = [], [], [], [], [], [], []
    for i, shape in enumerate(shapes):
        for n, pairs, kv, logits in shape.steps:
            cost = step_cost(base, n_tokens=n, attention_pairs=pairs, kv_read_tokens=kv, logit_tokens=logits)
            host.append(host_overhead_s(setup, scheduled_seqs(logits, 0, n)))  # (as `step_cost` counts them)
            c.append(cost.compute_s)
            m.append(cost.memory_s)
            ec.append(cost.expert_compute_s)
            em.append(cost.expert_memory_s)
            act = n * model.hidden_size * setup.activation_bits / 8
            ar.append(2 * model.n_layers * allreduce_time_s(gpu0, tp=setup.tp, n_bytes=act) if setup.tp > 1 else 0.0)
            row.append(i)
    return _Terms(
        np.array(c),
        np.array(m),
        np.array(ec),
        np.array(em),
        np.array(ar),
        np.array(row),
        len(shapes),
        model.n_layers,
        setup.layer_units,
        setup.tp,
        setup.step_overhead_s,
        np.array(host),
        setup.comm,
    )


def _predict(t: _Terms, p: Mapping[str, float]) -> np.ndarray:
    def roof(compute_at_peak: np.ndarray, memory_at_peak: np.ndarray) -> np.ndarray:
        cmp, mem = compute_at_peak / p["mfu"], memory_at_peak / p["mbu"]
        return np.maximum(cmp, mem) + (1.0 - p["overlap"]) * np.minimum(cmp, mem)

    # (an MoE model's routed experts a roofline of their own, `step_cost`; a dense model's are zeros)
    step = roof(t.compute_at_peak, t.memory_at_peak) + t.layer_units * p["layer_overhead_s"] + t.step_overhead_s + t.host_s
    step = step + roof(t.expert_compute_at_peak, t.expert_memory_at_peak)
    if t.comm and t.tp > 1:
        step = step + t.ar_bytes_s + 2 * t.n_layers * p["allreduce_latency_s"]
    return np.bincount(t.row, weights=step, minlength=t.n_rows)


def params_of(setup: RooflineSetup) -> dict[str, float]:
    """The model's free parameters as a resolved setup has them."""
    return {
        "mfu": setup.effective_flops_per_s / setup.peak_flops_per_s,
        "mbu": setup.effective_hbm_bw_bytes_per_s / setup.gpu.hbm_bw_bytes_per_s,
        "layer_overhead_s": setup.layer_overhead_s,
        "allreduce_latency_s": setup.gpu.allreduce_latency_s,
        "overlap": setup.overlap,
    }


def with_params(setup: RooflineSetup, p: Mapping[str, float]) -> RooflineSetup:
    """The setup with these parameter values (the inverse of `params_of`)."""
    gpu: GpuSpec = replace(setup.gpu, allreduce_latency_s=p["allreduce_latency_s"])
    return replace(
        setup,
        gpu=gpu,
        effective_flops_per_s=setup.peak_flops_per_s * p["mfu"],
        effective_hbm_bw_bytes_per_s=setup.gpu.hbm_bw_bytes_per_s * p["mbu"],
        layer_overhead_s=p["layer_overhead_s"],
        overlap=p["overlap"],
    )


def predict(setup: RooflineSetup, shapes: Sequence[Shape]) -> np.ndarray:
    """Seconds the setup's step-time model gives each shape."""
    return _predict(_terms(setup, shapes), params_of(setup))


@dataclass(frozen=True)
class Table:
    """Shapes measured on one setup; `group` names the parameters it shares with other tables in a joint fit."""

    name: str
    setup: RooflineSetup
    shapes: Sequence[Shape]
    group: str = ""
    measured: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measured", np.array([s.measured_s for s in self.shapes]))


def free_params(setup: RooflineSetup, fix: Sequence[str] = ()) -> list[str]:
    """What one table can fit: all but the fixed ones; no all-reduce latency without an all-reduce; and at
    tp > 1 not both the per-layer overhead and the all-reduce latency, which then each cost a constant per
    layer and step (one table cannot tell them apart): the latency is fitted, the per-layer overhead held
    (fit it on a TP1 table of the same GPU, or `--fix allreduce_latency_s` to fit it instead)."""
    free = [p for p in PARAMS if p not in fix and not (p == "allreduce_latency_s" and (setup.tp <= 1 or not setup.comm))]
    if "allreduce_latency_s" in free and "layer_overhead_s" in free:
        free.remove("layer_overhead_s")
    return free


def fit_joint(
    tables: Sequence[Table],
    *,
    per_group: Sequence[str] | Mapping[str, Sequence[str]],
    shared: Sequence[str],
    start: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Least squares on the relative error of every shape of every table at once: `per_group` parameters
    (one list for every group, or a list per group) take one value per table group, `shared` ones a single
    value; the rest stay as each setup has them. Returns {group: parameters}."""
    from scipy.optimize import least_squares

    groups = sorted({t.group for t in tables})
    own = per_group if isinstance(per_group, Mapping) else {g: per_group for g in groups}
    names: list[tuple[str, str]] = [(g, p) for g in groups for p in own.get(g, ())] + [("", p) for p in shared]
    terms = [_terms(t.setup, t.shapes) for t in tables]
    first = {t.group: params_of(t.setup) for t in tables}

    def x0(g: str, p: str) -> float:
        v = (start or {}).get(p, first[g or groups[0]][p])
        lo, hi = BOUNDS[p]
        return float(min(max(v, lo + 1e-12), hi - 1e-12)) if hi > lo else v

    def unpack(x: np.ndarray, t: Table) -> dict[str, float]:
        p = params_of(t.setup)
        for (g, name), v in zip(names, x, strict=True):
            if g in ("", t.group):
                p[name] = float(v)
        return p

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([_predict(tt, unpack(x, t)) / t.measured - 1.0 for t, tt in zip(tables, terms, strict=True)])

    scale = [BOUNDS[p][1] - BOUNDS[p][0] for _, p in names]
    if names:
        result = least_squares(
            residuals,
            np.array([x0(g, p) for g, p in names]),
            bounds=([BOUNDS[p][0] for _, p in names], [BOUNDS[p][1] for _, p in names]),
            x_scale=np.array(scale),
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=2000,
        )
        x = result.x
    else:
        x = np.array([])
    return {t.group: unpack(x, t) for t in tables}


def fit(setup: RooflineSetup, shapes: Sequence[Shape], fix: Sequence[str] = ()) -> dict[str, float]:
    """The free parameters that best fit one table (see `fit_joint`)."""
    table = Table("", setup, shapes)
    return fit_joint([table], per_group=free_params(setup, fix), shared=[])[""]


@dataclass(frozen=True)
class Calibration:
    shapes: Sequence[Shape]
    before_s: np.ndarray
    after_s: np.ndarray
    loo_s: np.ndarray | None  # each shape predicted by a fit without it; None when skipped (`loo_skipped` says why)
    before: dict[str, float]
    after: dict[str, float]
    fitted: list[str]
    loo_skipped: str | None = None

    def errors(self, which: str) -> np.ndarray:
        pred = {"before": self.before_s, "after": self.after_s, "loo": self.loo_s}[which]
        if pred is None:
            return np.array([])
        measured = np.array([s.measured_s for s in self.shapes])
        out: np.ndarray = pred / measured - 1.0
        return out


def check_enough_shapes(shapes: Sequence[Shape], free: Sequence[str], *, source: str = "") -> None:
    """A fit needs more distinct shapes than free parameters: with as many (one shape, four parameters) it passes
    through every point and reports 0% error, which says nothing. Repeated measurements of a shape count once."""
    distinct = len({s.steps for s in shapes})
    if distinct <= len(free):
        head = f"{source}: " if source else ""
        raise FleetsimError(
            f"{head}{distinct} distinct shape{'s' if distinct != 1 else ''} for {len(free)} free parameter{'s' if len(free) != 1 else ''} "
            f"({', '.join(free)}): a fit needs at least {len(free) + 1}, one more than its parameters, or its error "
            "is 0 by construction; add shapes, or hold parameters with --fix"
        )


def calibrate(
    setup: RooflineSetup, shapes: Sequence[Shape], fix: Sequence[str] = (), loo: bool = True, *, source: str = ""
) -> Calibration:
    """Fit, and measure the error before, after and leave-one-out (`source` names the table in errors)."""
    free = free_params(setup, fix)
    check_enough_shapes(shapes, free, source=source)
    after = fit(setup, shapes, fix)
    fitted = with_params(setup, after)
    loo_s = None
    skipped = None
    if loo and len(shapes) <= len(free) + 1:
        skipped = "too few shapes for leave-one-out"
    elif loo and len(shapes) > MAX_LOO_SHAPES:
        skipped = f"leave-one-out skipped above {MAX_LOO_SHAPES} shapes (it refits once per shape)"
    elif loo:
        loo_s = np.empty(len(shapes))
        for i in range(len(shapes)):
            rest = [s for j, s in enumerate(shapes) if j != i]
            p = fit(setup, rest, fix)
            loo_s[i] = predict(with_params(setup, p), [shapes[i]])[0]
    return Calibration(
        shapes=shapes,
        before_s=predict(setup, shapes),
        after_s=predict(fitted, shapes),
        loo_s=loo_s,
        before=params_of(setup),
        after=after,
        fitted=free,
        loo_skipped=skipped,
    )


def overrides_block(gpu: str, params: Mapping[str, float], fitted: Sequence[str]) -> dict[str, Any]:
    """The `roofline:` block a scenario can use (directly, or as `roofline: {preset: FILE}`): the GPU's fitted
    parameters, and a fitted frontend latency (`frontend_latency_s`, not the GPU's) beside them."""
    body = {p: float(f"{params[p]:.6g}") for p in PARAMS if p in fitted}
    roofline: dict[str, Any] = {"gpu_overrides": {gpu: body}}
    if "frontend_latency_s" in fitted:
        roofline = {"frontend_latency_s": float(f"{params['frontend_latency_s']:.6g}"), **roofline}
    return {"roofline": roofline}


def reference_tables(folder: str | Path, roofline: Any = None) -> list[Table]:
    """Every `SOURCE_GPU_MODEL_tpN.csv` in a folder, with the setup the default (or given) roofline builds
    for it; grouped by GPU (a joint fit gives each GPU its own efficiencies)."""
    import re

    from sim.physics.hardware import load_gpu_catalog
    from sim.physics.models import load_model_catalog, resolve_model
    from sim.scenario.config import roofline_config
    from sim.scenario.resolve import build_setup

    gpus, models = load_gpu_catalog(), load_model_catalog()
    roofline = roofline if roofline is not None else roofline_config()
    out = []
    for path in sorted(Path(folder).glob("*.csv")):
        match = re.fullmatch(r"(?P<source>[^_]+)_(?P<gpu>[^_]+)_(?P<model>[^_]+)_tp(?P<tp>\d+)", path.stem)
        if not match:
            raise FleetsimError(f"{path}: a reference table is named SOURCE_GPU_MODEL_tpN.csv")
        gpu = gpus.get(match["gpu"])
        model = resolve_model(match["model"], models)
        setup = build_setup(model, gpu, tp=int(match["tp"]), roofline=roofline)
        out.append(Table(path.stem, setup, read_shapes(path, "steps"), group=gpu.name))
    return out


# --- the defaults and their accuracy (benchmarks/steptime_defaults.py, steptime_accuracy.py, tests) ---------
DEFAULT_PER_GPU = ("mfu", "mbu")
DEFAULT_SHARED = ("layer_overhead_s", "overlap")


def fit_defaults(tables: Sequence[Table]) -> dict[str, dict[str, float]]:
    """The catalog's defaults as fitted: mfu and mbu per GPU, the layer overhead and the overlap shared by all,
    all-reduce latencies as the catalog has them (published measurements, not fitted)."""
    return fit_joint(tables, per_group=DEFAULT_PER_GPU, shared=DEFAULT_SHARED)


def previous_model(setup: RooflineSetup) -> RooflineSetup:
    """The step-time model before per-layer overheads and partial overlap: max(compute, memory) plus 10 us
    all-reduces, the seed article's efficiencies (mfu 200/312, mbu 0.65) for every GPU. For comparison only."""
    return replace(
        setup,
        effective_flops_per_s=setup.peak_flops_per_s * 200 / 312,
        effective_hbm_bw_bytes_per_s=setup.gpu.hbm_bw_bytes_per_s * 0.65,
        layer_overhead_s=0.0,
        overlap=1.0,
        gpu=replace(setup.gpu, allreduce_latency_s=1e-5),
    )


@dataclass(frozen=True)
class Accuracy:
    table: str
    shapes: int
    previous_mean: float
    previous_max: float
    default_mean: float
    default_max: float
    held_out_mean: float | None  # the defaults refitted without this table, then tested on it
    calibrated_mean: float
    calibrated_max: float
    loo_mean: float | None


def _abs(e: np.ndarray) -> tuple[float, float]:
    return float(np.mean(np.abs(e))), float(np.max(np.abs(e)))


def accuracy(tables: Sequence[Table], *, held_out: bool = True, loo: bool = True) -> list[Accuracy]:
    """Mean and max |relative error| per table: the defaults as they are; the defaults refitted on the other
    tables only (a GPU with no other table takes the mean of the other GPUs' fitted mfu/mbu, the catalog's rule
    for a GPU without a reference); `fleetsim calibrate` on the table (in-sample and leave-one-shape-out)."""
    out = []
    for i, t in enumerate(tables):
        p_mean, p_max = _abs(predict(previous_model(t.setup), t.shapes) / t.measured - 1)
        d_mean, d_max = _abs(predict(t.setup, t.shapes) / t.measured - 1)
        ho = None
        rest = [u for j, u in enumerate(tables) if j != i]
        if held_out and rest:
            fitted = fit_defaults(rest)
            p = params_of(t.setup)
            for k in DEFAULT_PER_GPU:
                p[k] = fitted[t.group][k] if t.group in fitted else float(np.mean([f[k] for f in fitted.values()]))
            p.update({k: next(iter(fitted.values()))[k] for k in DEFAULT_SHARED})
            ho = _abs(predict(with_params(t.setup, p), t.shapes) / t.measured - 1)[0]
        cal = calibrate(t.setup, t.shapes, loo=loo)
        c_mean, c_max = _abs(cal.errors("after"))
        loo_e = cal.errors("loo")
        out.append(
            Accuracy(
                t.name, len(t.shapes), p_mean, p_max, d_mean, d_max, ho, c_mean, c_max, _abs(loo_e)[0] if loo_e.size else None
            )
        )
    return out
