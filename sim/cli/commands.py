"""`fleetsim` command line. Input errors print one line and exit 2; a traceback is a bug."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.calibrate import calibrate as calibrate_command
from sim.cli.cluster import export as export_command
from sim.cli.cluster import import_ as import_command
from sim.cli.common import Interrupted, Stopped, alias_note, emit_json, int_list, name_too_long, positive, user_errors
from sim.cli.plan import plan as plan_command
from sim.cli.roofline import render_text, roofline_report
from sim.cli.run import report as report_command
from sim.cli.run import run as run_command
from sim.cli.sweep import sweep as sweep_command
from sim.cli.trace import trace_app
from sim.cli.validate import validate as validate_command
from sim.errors import FleetsimError
from sim.physics.hardware import load_gpu_catalog
from sim.physics.models import check_draft, load_model_catalog, resolve_model
from sim.physics.prices import api_price
from sim.scenario.config import DEFAULT_API, RooflineConfig, load_config, preset_names, roofline_config
from sim.scenario.resolve import build_setup, check_override_names, on_demand_price
from sim.spec import MAX_TOKENS, MAX_USD_PER_GPU_HOUR

app = typer.Typer(
    name="fleetsim",
    help="Discrete-event simulator of an LLM-inference GPU fleet: roofline step times, cost and latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(trace_app, name="trace")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fleetsim {version('fleetsim')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Discrete-event simulator of an LLM-inference GPU fleet: roofline step times, cost and latency."""


app.command(name="run")(user_errors(run_command))
app.command(name="report")(user_errors(report_command))
app.command(name="calibrate")(user_errors(calibrate_command))
app.command(name="sweep")(user_errors(sweep_command))
app.command(name="plan")(user_errors(plan_command))
app.command(name="validate")(user_errors(validate_command))
app.command(name="import")(user_errors(import_command))
app.command(name="export")(user_errors(export_command))


@app.command()
@user_errors
def roofline(
    model: Annotated[str | None, typer.Option(help="Catalog name or path to a Hugging Face config.json.")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU catalog name (see `fleetsim gpus`).")] = None,
    tp: Annotated[int | None, typer.Option(help="Tensor-parallel degree (GPUs per replica).")] = None,
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs one node's NVLink joins (default 8): a larger TP spans nodes.")
    ] = None,
    pp: Annotated[
        int | None,
        typer.Option(
            help="Pipeline stages of --tp GPUs each (vLLM's --pipeline-parallel-size): figures for one of its virtual engines."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Scenario YAML giving model, fleet.gpu/tp (and its DP layout), engine, roofline, pricing.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="With --config: override a scenario field (PATH=VALUE, VALUE as YAML).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Roofline assumptions preset, e.g. `seed`.")] = None,
    price_per_gpu_hour: Annotated[float | None, typer.Option(help="USD per GPU-hour (default: the catalog's).")] = None,
    weight_bits: Annotated[int | None, typer.Option(help="Weight precision in bits (4, 8, 16, 32).")] = None,
    kv_bits: Annotated[int | None, typer.Option(help="KV-cache precision in bits (8, 16, 32).")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="Share of HBM the engine may use.")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for the prefill throughput and cost.")] = 2048,
    prefill_lengths: Annotated[str, typer.Option(help="Prompt lengths for batch-1 prefill latency.")] = "512,1536",
    batches: Annotated[str, typer.Option(help="Decode batch sizes to price.")] = "1,8,32",
    context_tokens: Annotated[int, typer.Option(help="KV context per decoding sequence (0: weights only, as the seed).")] = 0,
    fit_context_tokens: Annotated[
        int | None, typer.Option(help="Sequence length for the largest batch that fits (default min(4096, model max)).")
    ] = None,
    compare_api: Annotated[str | None, typer.Option(help="API price sheet to compare against.")] = None,
    gpu_catalog: Annotated[Path | None, typer.Option(help="YAML file with extra GPUs (catalog format).")] = None,
    speculative: Annotated[
        str | None,
        typer.Option(
            help="K:ALPHA[:DRAFT]: decode with K draft tokens accepted at rate ALPHA; DRAFT a draft model, or mtp (default) or ngram."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """The seed article's cost/latency analysis for a model on a GPU type at a TP degree."""
    positive("--prompt-tokens", prompt_tokens)
    if set_ and config is None:
        raise FleetsimError("--set overrides a scenario: give --config too")
    positive("--fit-context-tokens", fit_context_tokens)
    positive("--tp", tp)
    positive("--gpus-per-node", gpus_per_node)
    positive("--pp", pp)
    if pp is not None and pp > 64:  # (the scenario's fleet.pp bound)
        raise FleetsimError(f"--pp must be at most 64 (got {pp})")
    if gpus_per_node is not None and gpus_per_node > 1024:  # (the scenario's fleet.gpus_per_node bound)
        raise FleetsimError(f"--gpus-per-node must be at most 1024 (got {gpus_per_node})")
    if price_per_gpu_hour is not None and not (0 <= price_per_gpu_hour <= MAX_USD_PER_GPU_HOUR):
        raise FleetsimError(f"--price-per-gpu-hour must be between 0 and {MAX_USD_PER_GPU_HOUR:,.0f} (got {price_per_gpu_hour})")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise FleetsimError(f"--gpu-memory-utilization must be in (0, 1] (got {gpu_memory_utilization})")
    if context_tokens < 0:
        raise FleetsimError(f"--context-tokens must be >= 0 (got {context_tokens})")
    for option, tokens in (
        ("--prompt-tokens", prompt_tokens),
        ("--context-tokens", context_tokens),
        ("--fit-context-tokens", fit_context_tokens),
    ):
        if tokens is not None and tokens > MAX_TOKENS:
            raise FleetsimError(f"{option} must be <= {MAX_TOKENS:,} (got {tokens:,})")
    lengths = int_list("--prefill-lengths", prefill_lengths, MAX_TOKENS)
    batch_sizes = int_list("--batches", batches, MAX_TOKENS)  # (a batch of sequences holds at least as many tokens)

    base_dir = Path(".")
    scale_out = "infiniband_400g"
    rcfg: RooflineConfig
    if compare_api is not None and not compare_api.strip():  # (an empty name is not the default sheet)
        raise FleetsimError("--compare-api: an API price sheet's name is empty; leave the option out for the default")
    api_name = compare_api
    overrides: dict[str, Any] = {"weight_bits": weight_bits, "kv_bits": kv_bits, "gpu_memory_utilization": gpu_memory_utilization}
    layout: dict[str, Any] = {}  # with --config: the replica as `run` builds it (its engine, its DP group's layout)
    provider = None
    scenario_spec = None  # the scenario's speculative decoding, priced unless --speculative replaces it
    if config is not None:
        scenario = load_config(config, sets=set_ or ())
        if scenario.deployments:  # (it read the first deployment's model with the scenario's own fleet)
            raise FleetsimError(
                f"{config}: a platform of {len(scenario.deployments)} deployments "
                f"({', '.join(d.name for d in scenario.deployments)}); roofline analyses one replica: give that "
                "deployment's --model, --gpu and --tp, or a scenario of one fleet"
            )
        scenario_spec = scenario.engine.speculative
        fleet = scenario.fleet
        layout = {
            "engine": scenario.engine,
            "dp": fleet.dp,
            "expert_parallel": fleet.expert_parallel,
            "expert_load_imbalance": fleet.expert_load_imbalance,
            "all2all_backend": fleet.all2all_backend,
        }
        provider = scenario.pricing.provider
        base_dir = config.parent
        model = model or scenario.model
        gpu = gpu or scenario.fleet.gpu
        tp = tp or scenario.fleet.tp
        pp = pp or scenario.fleet.pp
        gpus_per_node = gpus_per_node or scenario.fleet.gpus_per_node
        scale_out = scenario.fleet.scale_out
        price_per_gpu_hour = price_per_gpu_hour if price_per_gpu_hour is not None else scenario.pricing.usd_per_gpu_hour
        api_name = api_name or scenario.pricing.compare_api
        rcfg = roofline_config(preset, base=scenario.roofline.model_dump(exclude_defaults=True), **overrides)
        if gpu_catalog is None and scenario.gpu_catalog:
            gpu_catalog = base_dir / scenario.gpu_catalog
    else:
        rcfg = roofline_config(preset, **overrides)
    if model is None or gpu is None:
        raise FleetsimError("roofline needs --model and --gpu (or --config with a scenario)")
    gpus = load_gpu_catalog(gpu_catalog)
    check_override_names(rcfg, gpus)
    models = load_model_catalog()
    if model.strip().lower() not in models.models and not Path(model).is_absolute():
        model = str(base_dir / model) if config is not None else model
    gpu_spec = gpus.get(gpu)
    alias_note(gpu, gpu_spec.name)
    try:
        setup = build_setup(
            resolve_model(model, models),
            gpu_spec,
            tp=tp or 1,
            roofline=rcfg,
            usd_per_gpu_hour=on_demand_price(price_per_gpu_hour, provider, gpu_spec.name),
            gpus_per_node=gpus_per_node or 8,
            scale_out=scale_out,
            pp=pp or 1,
            **layout,
        )
    except FleetsimError as err:  # (with --config: name the file the replica was read from, as `run` does)
        if config is None and str(err).startswith("fleet.pp:"):  # (the option that gave it)
            raise FleetsimError(f"--pp{str(err)[len('fleet.pp') :]}") from None
        if config is None or str(err).startswith(str(config)):
            raise
        raise FleetsimError(f"{config}{' (with --set)' if set_ else ''}: {err}") from None
    limit = setup.context_tokens  # (the engine's max_model_len with --config, else the model's context)
    fit = [fit_context_tokens] if fit_context_tokens is not None else []
    for option, values in (("--prefill-lengths", lengths), ("--context-tokens", [context_tokens]), ("--fit-context-tokens", fit)):
        longer = [n for n in values if n > limit]
        if longer:
            raise FleetsimError(
                f"{option}: {longer[0]:,} tokens do not fit {setup.model.name}'s context of {limit:,} tokens "
                "(a prompt, or a sequence's KV, is at most that long)"
            )
    spec = None
    draft_cost = None
    chosen, label = None, "--speculative"
    if speculative is not None:
        chosen = parse_speculative(speculative)
    elif scenario_spec is not None:  # (--config's engine.speculative, as `run` decodes with it)
        chosen, label = (scenario_spec.method, scenario_spec.alphas, scenario_spec.draft_model), "engine.speculative"
        draft_cost = scenario_spec.draft_cost
    if chosen is not None and setup.pp > 1:  # (as `run` refuses it: `sim.run.pools.check_pipeline`)
        raise FleetsimError(
            f"{label}: with {setup.pp} pipeline stages speculative decoding is not modelled (vLLM's V0 engine, which "
            "runs PP, has no PP with it)"
        )
    if chosen is not None:
        method, alphas, draft_name = chosen
        draft = None
        if draft_name is not None:
            if draft_name.strip().lower() not in models.models and not Path(draft_name).is_absolute():
                draft_name = str(base_dir / draft_name) if config is not None else draft_name
            try:
                draft = build_setup(
                    resolve_model(draft_name, models), gpu_spec, tp=tp or 1, roofline=rcfg, usd_per_gpu_hour=price_per_gpu_hour
                )
                check_draft(draft.model, setup.model)
            except FleetsimError as err:
                raise FleetsimError(f"{label}: {err}") from None
        spec = (method, alphas, draft)
    report = roofline_report(
        setup,
        api=api_price(api_name or DEFAULT_API),
        prompt_tokens=prompt_tokens,
        prefill_lengths=lengths,
        batches=batch_sizes,
        context_tokens=context_tokens,
        fit_context_tokens=fit_context_tokens,
        preset=rcfg.preset,
        speculative=spec,
        draft_cost=draft_cost,
    )
    if as_json:
        emit_json(report)
    else:
        typer.echo(render_text(report))


def parse_speculative(text: str) -> tuple[str, list[float], str | None]:
    """`K:ALPHA[:DRAFT]` -> (method, per-position acceptance rates, draft model or None)."""
    parts = text.split(":")
    try:
        k, alpha = int(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise FleetsimError(f"--speculative must be K:ALPHA[:DRAFT], e.g. 4:0.7 or 4:0.7:llama-3.1-8b (got {text!r})") from None
    if not 1 <= k <= 32:
        raise FleetsimError(f"--speculative: K must be within [1, 32] (got {k})")
    if not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise FleetsimError(f"--speculative: ALPHA must be within [0, 1] (got {parts[1]})")
    if len(parts) > 2 and not ":".join(parts[2:]).strip():  # (a trailing ':' names no draft: not the default's mtp)
        raise FleetsimError(f"--speculative: DRAFT after the second ':' is empty (got {text!r}); leave it out for mtp")
    rest = ":".join(parts[2:]) or "mtp"
    if rest in ("mtp", "ngram"):
        return rest, [alpha] * k, None
    return "draft", [alpha] * k, rest


@app.command()
@user_errors
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the model catalog with derived parameter counts and KV bytes per token."""
    rows: list[dict[str, Any]] = []
    for name, m in load_model_catalog().models.items():
        rows.append(
            {
                "name": name,
                "hf_repo": m.hf_repo,
                "n_params": m.n_params,
                "n_active_params": m.n_active_params,
                "n_layers": m.n_layers,
                "n_heads": m.n_heads,
                "n_kv_heads": m.n_kv_heads,
                "attention": m.attention_kind,
                "sliding_window": m.sliding_window or None,  # (tokens its sliding-window layers attend to)
                "n_sliding_layers": m.n_sliding_layers,
                "kv_bytes_per_token": m.kv_bytes_per_token(16),
                "max_context_tokens": m.max_context_tokens,
                "n_experts": m.n_experts,
                "n_experts_per_tok": m.n_experts_per_tok,
                "precision": m.shipped_words,
                "weight_bytes": m.weight_bytes(None),
            }
        )
    if as_json:
        emit_json(rows)
        return
    w = max([len("name"), *(len(str(r["name"])) for r in rows)]) + 1  # (the name column as wide as its longest)
    typer.echo(
        f"{'name':<{w}}{'params':>9}{'active':>9}{'experts':>10}  {'weights':<14}{'GB':>7}{'layers':>7}{'heads':>7}{'kv':>5}"
        f"  {'attn':<7}{'KV B/token':>12}{'max ctx':>9}  hf repo"
    )
    for r in rows:
        experts = f"{r['n_experts']} top-{r['n_experts_per_tok']}" if r["n_experts"] else "-"
        if r["sliding_window"]:  # (its sliding-window layers: "GQA/SW" and a note after the table)
            r["attention"] = f"{r['attention']}/SW"
        typer.echo(
            f"{r['name']:<{w}}{r['n_params'] / 1e9:>8.2f}B{r['n_active_params'] / 1e9:>8.2f}B{experts:>10}  {r['precision']:<14}"
            f"{r['weight_bytes'] / 1e9:>7.1f}{r['n_layers']:>7}{r['n_heads']:>7}"
            f"{r['n_kv_heads']:>5}  {r['attention']:<7}{r['kv_bytes_per_token']:>12,.0f}{r['max_context_tokens']:>9}  {r['hf_repo']}"
        )
    windows = [
        f"{r['name']} {r['n_sliding_layers']} of {r['n_layers']} layers, {r['sliding_window']} tokens"
        for r in rows
        if r["sliding_window"]
    ]
    if windows:
        typer.echo("/SW: sliding-window layers (" + "; ".join(windows) + ")")


@app.command()
@user_errors
def gpus(
    gpu_catalog: Annotated[Path | None, typer.Option(help="YAML file with extra GPUs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the GPU catalog (dense peaks, memory, bandwidth, default price and its source)."""
    catalog = load_gpu_catalog(gpu_catalog)
    rows = [
        {
            "name": g.name,
            "description": g.description,
            "bf16_tflops": g.bf16_flops_per_s / 1e12,
            "fp8_tflops": None if g.fp8_flops_per_s is None else g.fp8_flops_per_s / 1e12,
            "fp4_tflops": None if g.fp4_flops_per_s is None else g.fp4_flops_per_s / 1e12,
            "hbm_gb": g.hbm_bytes / 1e9,
            "hbm_bw_gb_per_s": g.hbm_bw_bytes_per_s / 1e9,
            "interconnect": g.interconnect,
            "interconnect_gb_per_s": g.interconnect_bw_bytes_per_s / 1e9,
            "mfu": g.mfu,
            "mbu": g.mbu,
            "layer_overhead_s": g.layer_overhead_s,
            "overlap": g.overlap,
            "allreduce_latency_s": g.allreduce_latency_s,
            "allreduce_gb_per_s": g.collective_bw_bytes_per_s / 1e9,
            "usd_per_gpu_hour": g.usd_per_gpu_hour,
            "price_source": g.price_source,
            "price_as_of": g.price_as_of,
        }
        for g in (catalog.gpus[n] for n in catalog.names())
    ]
    if as_json:
        emit_json(rows)
        return
    links = [f"{r['interconnect']} {r['interconnect_gb_per_s']:.0f}" for r in rows]
    w_name = max([len("name"), *(len(str(r["name"])) for r in rows)]) + 1  # (columns as wide as their longest entry)
    w_link = max([len("interconnect"), *map(len, links)]) + 1
    typer.echo(
        f"{'name':<{w_name}}{'bf16 TF':>8}{'fp8 TF':>8}{'fp4 TF':>8}{'HBM GB':>8}{'GB/s':>7}  {'interconnect':<{w_link}}"
        f"{'$/GPU-h':>8}  price source"
    )
    for r, link in zip(rows, links, strict=True):
        fp8 = "-" if r["fp8_tflops"] is None else f"{r['fp8_tflops']:.0f}"
        fp4 = "-" if r["fp4_tflops"] is None else f"{r['fp4_tflops']:.0f}"
        price = "-" if r["usd_per_gpu_hour"] is None else f"{r['usd_per_gpu_hour']:.2f}"
        typer.echo(
            f"{r['name']:<{w_name}}{r['bf16_tflops']:>8.0f}{fp8:>8}{fp4:>8}{r['hbm_gb']:>8.0f}{r['hbm_bw_gb_per_s']:>7.0f}  "
            f"{link:<{w_link}}{price:>8}  {r['price_source']} ({r['price_as_of']})"
        )


@app.command(name="compile")
@user_errors
def compile_(
    clean: Annotated[bool, typer.Option("--clean", help="Remove the compiled modules (back to pure Python).")] = False,
    status: Annotated[bool, typer.Option("--status", help="Say which modules run, and why; build nothing.")] = False,
    log: Annotated[Path | None, typer.Option("--log", help="Write the compiler's output to this file.")] = None,
) -> None:
    """Compile the event loop and the engine's hot modules with mypyc (optional: about 2x the simulated requests per
    CPU second, identical results). Needs a C compiler and `pip install -e '.[compiled]'`; without them everything
    runs as pure Python. FLEETSIM_PURE_PYTHON=1 runs the pure-Python modules even when compiled ones are present."""
    from sim import compiled

    if clean and status:
        raise FleetsimError("--clean and --status do not combine (pick one)")
    if status:
        ok, why = compiled.status()
        typer.echo(f"{'compiled' if ok else 'pure Python'}: {why}")
        return
    if clean:
        try:
            removed = compiled.clean()
        except OSError as err:
            raise FleetsimError(f"cannot remove the compiled modules: {err}") from None
        typer.echo(f"removed {len(removed)} compiled files; the pure-Python modules run")
        return
    typer.echo(f"compiling {len(compiled.HOT_MODULES)} modules with mypyc (about a minute)...", err=True)
    try:
        placed = compiled.build(log=log)
    except compiled.CompileError as err:
        raise FleetsimError(str(err)) from None
    typer.echo(f"compiled {len(compiled.HOT_MODULES)} modules ({len(placed)} files beside the sources); new processes run them")


@app.command()
@user_errors
def presets() -> None:
    """List the bundled roofline presets."""
    from sim.scenario.config import load_preset

    for name in preset_names():
        typer.echo(f"{name:<10}{load_preset(name).get('description', '')}")


try:  # recent typer vendors click (and does not install it); earlier versions use click itself
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx  # type: ignore[no-redef, import-not-found, unused-ignore]

_NO_ARGS = getattr(cx, "NoArgsIsHelpError", ())


def _terminate(signum: int, frame: object) -> None:
    raise Interrupted()


def main(argv: list[str] | None = None) -> None:
    """The console script: every user error, a usage mistake included, ends in one line on stderr and
    exit status 2; an interrupt (Ctrl-C, SIGTERM) in one line and 130 / 143, with nothing half-written."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent ignored it
    try:
        code = app(args=argv, prog_name="fleetsim", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C inside a command into a silent exit status 130
            raise KeyboardInterrupt
    except _NO_ARGS as err:  # `fleetsim` or `fleetsim trace` alone: the help
        typer.echo(err.ctx.get_help() if err.ctx is not None else str(err))
        code = 0
    except cx.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "fleetsim"
        message = " ".join(err.format_message().split())
        typer.echo(f"error: {message} (see {command} --help)", err=True)
        code = 2
    except cx.ClickException as err:  # e.g. a file option that cannot be opened
        typer.echo(f"error: {' '.join(err.format_message().split())}", err=True)
        code = 2
    except FleetsimError as err:  # raised outside a command (should not happen)
        typer.echo(f"error: {err}", err=True)
        code = 2
    except OSError as err:  # a path too long for the system, met outside a command's own handling
        line = name_too_long(err)
        if line is None:
            raise
        typer.echo(f"error: {line}", err=True)
        code = 2
    except Stopped as err:  # a study interrupted: its finished runs are kept, and the line says so
        typer.echo(f"error: {err}", err=True)
        code = err.code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("error: interrupted; nothing written", err=True)
        code = 130
    except Interrupted:
        typer.echo("error: terminated; nothing written", err=True)
        code = 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
