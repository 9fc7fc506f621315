"""`fleetsim calibrate`: fit the step-time model to measured step times and say how good the fit is."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import alias_note, check_out_file, emit_json, positive, write_text_atomically
from sim.errors import FleetsimError

RUN_LOG_LAYOUTS = ("requests", "vllm-bench")


def calibrate(
    steptimes: Annotated[
        Path,
        typer.Argument(
            help="CSV of step shapes and times (steps or vllm-latency layout), a kernel profile folder (kernels: "
            "LLMServingSim's dense.csv, attention.csv, per_sequence.csv), or a real run's log (requests: a folder "
            "with requests.jsonl and meta.json; vllm-bench: a vllm bench serve JSON)."
        ),
    ],
    model: Annotated[str | None, typer.Option(help="Catalog name or path to a Hugging Face config.json.")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU catalog name (see `fleetsim gpus`).")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree the times were measured at.")] = 1,
    layout: Annotated[
        str, typer.Option(help="auto, steps, vllm-latency, kernels, requests or vllm-bench (see docs/steptime.md).")
    ] = "auto",
    scenario: Annotated[
        Path | None, typer.Option(help="A run log's scenario (model, GPU, TP, engine); default: the run's meta.json.")
    ] = None,
    fit_share: Annotated[float, typer.Option(help="A run log: the share of its requests (by arrival) fitted.")] = 0.5,
    warm_prompts: Annotated[
        bool | None,
        typer.Option(
            "--warm-prompts/--cold-prompts",
            help="A run log: the server had served the same prompts just before (default: meta.json's "
            "benchmark.prompts_served_before, else cold); see `fleetsim validate`.",
        ),
    ] = None,
    fix: Annotated[
        str, typer.Option(help="Parameters to hold at their defaults, comma-separated (mfu, mbu, layer_overhead_s, ...).")
    ] = "",
    out: Annotated[Path | None, typer.Option(help="Write the fitted `roofline:` block to this YAML file.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if it is a file that fleetsim calibrate did not write.")
    ] = False,
    gpu_catalog: Annotated[Path | None, typer.Option(help="YAML file with extra GPUs (catalog format).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Fit the step-time model (mfu, mbu, overheads, all-reduce latency, overlap) to measured step times, or mfu, mbu
    and the frontend latency to a real run's per-request latencies, scored on the requests it did not fit."""
    import yaml

    from sim.studies.calibrate import is_kernel_profile
    from sim.workload.compressed import plain_name

    layouts = ("auto", "steps", "vllm-latency", "kernels", *RUN_LOG_LAYOUTS)
    if layout not in layouts:
        raise FleetsimError(f"--layout: must be one of {', '.join(layouts)} (got {layout!r})")
    kernels = layout == "kernels" or (layout == "auto" and is_kernel_profile(steptimes))
    logged = (steptimes / "requests.jsonl").is_file() or (steptimes / "requests.jsonl.gz").is_file()
    run_folder = steptimes.is_dir() and not kernels and (logged or model is None)
    suffix = plain_name(steptimes).suffix.lower()  # (a run log compressed: bench.json.gz is a vllm bench JSON)
    if layout in RUN_LOG_LAYOUTS or (layout == "auto" and (run_folder or suffix in (".jsonl", ".ndjson", ".json"))):
        held = [p.strip() for p in fix.split(",") if p.strip()]
        if any(p != "frontend_latency_s" for p in held):
            raise FleetsimError(
                f"--fix {fix}: a run log's calibration fits mfu, mbu and frontend_latency_s; --fix holds only the last "
                "(at the scenario's value) there"
            )
        given = [name for name, v in (("--model", model), ("--gpu", gpu), ("--gpu-catalog", gpu_catalog)) if v is not None]
        if tp != 1:
            given.append("--tp")
        if given:  # (a run log's setup is its meta.json's, or --scenario's)
            raise FleetsimError(
                f"{given[0]}: a run log's model, GPU and TP come from its meta.json or --scenario (the option is for step times)"
            )
        _calibrate_run_log(steptimes, layout, scenario, fit_share, out, force, as_json, warm_prompts, bool(held))
        return
    if model is None or gpu is None:
        raise FleetsimError("--model and --gpu are required to calibrate on step times (a run log's come from its meta.json)")

    from sim.physics.hardware import load_gpu_catalog
    from sim.physics.models import load_model_catalog, resolve_model
    from sim.scenario.config import roofline_config
    from sim.scenario.resolve import build_setup
    from sim.studies.calibrate import BOUNDS, PARAMS, check_kernel_folder, overrides_block, read_kernel_profile, read_shapes
    from sim.studies.calibrate import calibrate as run_calibration

    positive("--tp", tp)
    held = [p.strip() for p in fix.split(",") if p.strip()]
    unknown = [p for p in held if p not in PARAMS]
    if unknown:
        raise FleetsimError(f"--fix: unknown parameter {unknown[0]!r}; valid: {', '.join(PARAMS)}")
    if out is not None:
        _check_out(out, force)
    spec = resolve_model(model, load_model_catalog())
    gpus = load_gpu_catalog(gpu_catalog)
    gpu_spec = gpus.get(gpu)
    if kernels:
        check_kernel_folder(steptimes, spec, gpu_spec, tp)
    shapes = (
        read_kernel_profile(steptimes, spec) if kernels else read_shapes(steptimes, layout, max_context=spec.max_context_tokens)
    )
    alias_note(gpu, gpu_spec.name)
    setup = build_setup(spec, gpu_spec, tp=tp, roofline=roofline_config())
    if kernels:  # per-rank kernels, no all-reduce: the fit prices none
        setup = dataclasses.replace(setup, comm=False)
    cal = run_calibration(setup, shapes, fix=held, source=str(steptimes))
    # kernels profiled without CUDA graphs: their per-layer overhead is an eager one, which a served (graph) step
    # does not pay, so the block a scenario takes leaves it at the catalog's (the fit still reports it)
    kept = [p for p in cal.fitted if not (kernels and p == "layer_overhead_s")]
    block = overrides_block(gpu_spec.name, cal.after, kept)
    before, after, loo = cal.errors("before"), cal.errors("after"), cal.errors("loo")
    summary: dict[str, Any] = {
        "model": setup.model.name,
        "gpu": gpu_spec.name,
        "tp": tp,
        "file": str(steptimes),
        "shapes": [
            {
                "shape": s.label,
                "measured_ms": s.measured_s * 1e3,
                "default_ms": b * 1e3,
                "default_error": eb,
                "fitted_ms": a * 1e3,
                "fitted_error": ea,
                "leave_one_out_error": None if loo.size == 0 else float(loo[i]),
            }
            for i, (s, b, a, eb, ea) in enumerate(zip(shapes, cal.before_s, cal.after_s, before, after, strict=True))
        ],
        "mean_abs_error": {
            "default": float(abs(before).mean()),
            "fitted": float(abs(after).mean()),
            "leave_one_out": None if loo.size == 0 else float(abs(loo).mean()),
        },
        "max_abs_error": {"default": float(abs(before).max()), "fitted": float(abs(after).max())},
        "default": cal.before,
        "fitted": {p: cal.after[p] for p in cal.fitted},
        "roofline": block["roofline"],
    }
    failed = _failed_fit(cal.after, cal.fitted, float(abs(after).mean()), BOUNDS)
    if failed is not None and out is not None:  # (a preset that reads as usable and is not: nothing written)
        raise FleetsimError(f"{steptimes}: {failed}; --out {out} not written")
    if failed is not None:
        typer.echo(f"warning: {failed}", err=True)
    if out is not None:
        header = (
            f"{HEADER}{steptimes.name}: {setup.model.name} on {tp}x {gpu_spec.name}, {len(shapes)} shapes;\n"
            f"# mean |error| {abs(before).mean():.1%} with the defaults, {abs(after).mean():.1%} fitted"
            + ("" if loo.size == 0 else f", {abs(loo).mean():.1%} leave-one-out")
            + ".\n# Use it in a scenario as `roofline: {preset: "
            + out.name
            + "}` (a path relative to the scenario), or paste the block.\n"
        )
        write_text_atomically(out, header + yaml.safe_dump(block, sort_keys=False))
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"fleetsim calibrate: {setup.model.name} on {tp}x {gpu_spec.name}, {len(shapes)} shapes from {steptimes}")
    width = max(len(s.label) for s in shapes)
    typer.echo(f"  {'shape':<{width}}  {'measured':>10}  {'default':>10} {'error':>7}  {'fitted':>10} {'error':>7}")
    for row in summary["shapes"]:
        typer.echo(
            f"  {row['shape']:<{width}}  {row['measured_ms']:>8.2f}ms  {row['default_ms']:>8.2f}ms {row['default_error']:>+7.1%}"
            f"  {row['fitted_ms']:>8.2f}ms {row['fitted_error']:>+7.1%}"
        )
    m, x = summary["mean_abs_error"], summary["max_abs_error"]
    typer.echo(
        f"  mean |error| {m['default']:.1%} -> {m['fitted']:.1%} (max {x['default']:.1%} -> {x['fitted']:.1%})"
        + ("; leave-one-out mean " + f"{m['leave_one_out']:.1%}" if m["leave_one_out"] is not None else f"; {cal.loo_skipped}")
    )
    typer.echo("parameters            default      fitted")
    for p in PARAMS:
        val = f"{cal.after[p]:>11.4g}" if p in cal.fitted else f"{'(held)':>11}"
        typer.echo(f"  {p:<20}{cal.before[p]:>9.4g}  {val}")
    if tp > 1 and "layer_overhead_s" not in held and "layer_overhead_s" not in cal.fitted:
        typer.echo(
            "  (at tp > 1 the per-layer overhead and the all-reduce latency each cost a constant per layer: one table"
            " cannot separate them, so the latency is fitted and the overhead held; see docs/steptime.md)"
        )
    if kernels and "layer_overhead_s" in cal.fitted:
        typer.echo(
            "  (the kernels ran without CUDA graphs: the per-layer overhead fitted here is an eager one, so the "
            "roofline block leaves it at the catalog's; see docs/steptime.md)"
        )
    if out is not None:
        typer.echo(f"wrote {out}: use it as `roofline: {{preset: {out.name}}}` in a scenario beside it")


HEADER = "# fleetsim calibrate "  # the first line of every --out file this command writes
FAILED_FIT_ERROR = 0.5  # a fit this far off the table on average, with parameters pinned at their bounds, has failed


def _failed_fit(
    fitted: dict[str, float], names: Sequence[str], mean_error: float, bounds: dict[str, tuple[float, float]]
) -> str | None:
    """Why the fit failed, if it did: its mean |error| stays above `FAILED_FIT_ERROR` with fitted parameters pinned
    at their bounds (a table in another unit, or of another setup, drives them there); else None."""
    if mean_error <= FAILED_FIT_ERROR:
        return None
    pinned = []
    for p in names:
        lo, hi = bounds[p]
        tol = 1e-6 * (hi - lo)
        if fitted[p] <= lo + tol or fitted[p] >= hi - tol:
            pinned.append(f"{p} {fitted[p]:.3g} (bounds {lo:g}-{hi:g})")
    if not pinned:
        return None
    return (
        f"the fit failed: mean |error| {mean_error:.0%} with {', '.join(pinned)} at a bound; the times are likely in "
        "another unit than the layout's, or from another model, GPU or TP"
    )


def _check_out(out: Path, force: bool) -> None:
    """--out: a YAML file name (the block is used as `roofline: {preset: NAME}`, and a preset file is told from a
    bundled preset's name by its .yaml or .yml: `x.json` was written, then refused as an unknown preset), in a folder
    that can be written, not a file calibrate did not write (unless --force)."""
    check_out_file(out, "--out")
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise FleetsimError(
            f"--out {out}: the file name must end in .yaml or .yml (a scenario reads it as roofline: {{preset: {out.stem}.yaml}})"
        )
    if out.exists() and not force and not _written_by_calibrate(out):
        raise FleetsimError(
            f"--out {out}: the file exists and fleetsim calibrate did not write it; pick another name, or pass --force to replace it"
        )


def _calibrate_run_log(
    path: Path,
    layout: str,
    scenario: Path | None,
    fit_share: float,
    out: Path | None,
    force: bool,
    as_json: bool,
    warm_prompts: bool | None = None,
    hold_frontend: bool = False,
) -> None:
    import yaml

    from sim.studies.calibrate import overrides_block
    from sim.studies.validate import calibrate_from_log
    from sim.workload.runlog import read_run_log
    from sim.yaml_input import check_kind, read_yaml

    if out is not None:
        _check_out(out, force)
    log = read_run_log(path, layout="auto" if layout == "auto" else layout)
    raw, base_dir = None, None
    if scenario is not None:
        raw = read_yaml(scenario)
        check_kind(scenario, raw, expected="scenario")
        if not isinstance(raw, dict):
            raise FleetsimError(f"{scenario}: a scenario must be a YAML mapping")
        base_dir = scenario.parent
    given_as = str(scenario) if scenario is not None else "--scenario"
    cal = calibrate_from_log(
        log,
        raw,
        base_dir=base_dir,
        fit_share=fit_share,
        warm_prompts=warm_prompts,
        given_as=given_as,
        fit_frontend=not hold_frontend,
    )
    block = overrides_block(cal.gpu, cal.after, list(cal.after))
    summary = {
        "file": log.source,
        "gpu": cal.gpu,
        "fit_requests": cal.fit_requests,
        "held_out_requests": cal.held_out_requests,
        "replays": cal.replays,
        "default": cal.before,
        "fitted": cal.after,
        "errors": cal.rows,
        "roofline": block["roofline"],
        "notes": list(cal.notes) + ([log.sends_rebuilt] if log.sends_rebuilt else []),
    }
    fitted_errors = [cal.error("fit", "after", m) for m in ("ttft", "tpot", "e2e")]
    known = [abs(e) for e in fitted_errors if e is not None]
    mean_error = sum(known) / len(known) if known else math.inf
    failed = None
    if mean_error > FAILED_FIT_ERROR and cal.notes:  # (the notes name the parameters that stopped at a bound)
        failed = (
            f"the fit failed: the fitted requests' mean |error| stays {mean_error:.0%} with "
            f"{'; '.join(cal.notes)}; the log's times are likely in another unit, or from another model, GPU or TP"
        )
    if failed is not None and out is not None:  # (a preset that reads as usable and is not: nothing written)
        raise FleetsimError(f"{path}: {failed}; --out {out} not written")
    if failed is not None:
        typer.echo(f"warning: {failed}", err=True)
    summary["fit_failed"] = failed  # (None, or why: a --json reader sees it too)
    if out is not None:
        errors = {m: cal.error("held_out", "after", m) for m in ("ttft", "tpot", "e2e")}
        held = ", ".join(f"{m} {'-' if e is None else f'{e:+.1%}'}" for m, e in errors.items())
        header = (
            f"{HEADER}{path.name}: {cal.fit_requests} requests fitted, {cal.held_out_requests} held out;\n"
            f"# held-out mean errors after the fit: {held}.\n"
            + "".join(f"# note: {n}\n" for n in cal.notes)
            + f"# Use it in a scenario as `roofline: {{preset: {out.name}}}` (a path relative to the scenario), or paste the block.\n"
        )
        write_text_atomically(out, header + yaml.safe_dump(block, sort_keys=False))
    if as_json:
        emit_json(summary)
        return
    typer.echo(
        f"fleetsim calibrate: {cal.gpu}, fitted on the first {cal.fit_requests} requests of {log.source}, "
        f"{cal.held_out_requests} held out ({cal.replays} replays)"
    )
    typer.echo("parameters              default    fitted")
    for p in cal.after:
        typer.echo(f"  {p:<20}{cal.before[p]:>9.4g}{cal.after[p]:>10.4g}")
    typer.echo("mean error        fitted requests       held-out requests")
    typer.echo("                  default    fitted     default    fitted")
    for m in ("ttft", "tpot", "e2e"):
        cells = [cal.error(part, when, m) for part in ("fit", "held_out") for when in ("before", "after")]
        typer.echo(f"  {m.upper():<14}" + "".join(f"{c:>+10.1%}" if c is not None else f"{'-':>10}" for c in cells))
    for n in (*cal.notes, *([log.sends_rebuilt] if log.sends_rebuilt else [])):
        typer.echo(f"note: {n}")
    if out is not None:
        typer.echo(f"wrote {out}: use it as `roofline: {{preset: {out.name}}}` in a scenario beside it")


def _written_by_calibrate(path: Path) -> bool:
    """A file this command wrote (and may replace, as `run` replaces its own run folders)."""
    try:
        with path.open("rb") as f:
            return f.read(len(HEADER)) == HEADER.encode()
    except OSError:
        return False
