"""`fleetsim run`: simulate a scenario, print the summary, write the run folder."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sim.cli.common import (
    ForceOpt,
    alias_note,
    check_html_name,
    check_new_file,
    check_out_file,
    check_plot_path,
    check_seed,
    emit_json,
    write_text_atomically,
)
from sim.errors import FleetsimError, _short
from sim.scenario.config import Scenario, SloConfig, load_config

if TYPE_CHECKING:
    from sim.results.result import SimResult

SECTIONS = [
    ("Time to First Token", "ttft", "TTFT"),
    ("Time per Output Token (excl. 1st token)", "tpot", "TPOT"),
    ("Inter-token Latency", "itl", "ITL"),
    ("End-to-end Latency", "e2el", "E2EL"),
]


def _line(label: str, value: Any, fmt: str = "{:.2f}") -> str:
    shown = "n/a" if value is None else (fmt.format(value) if isinstance(value, float) else str(value))
    return f"{label:<40}{shown}"


def render_summary(result: SimResult, summary: dict[str, Any]) -> str:
    meta = result.meta
    lines = [
        "{s:{c}^50}".format(s=" Simulation Result ", c="="),
        _line(
            "Scenario:",
            (f"{summary['scenario']}: " if summary.get("scenario") else "")
            + f"{meta['model']}, {summary['fleet']}, {meta['engine_policy']}",
        ),
        _line("Successful requests:", summary["completed"]),
        _line("Rejected requests:", summary["rejected"]),
        _line("Preemptions:", summary["n_preemptions"]),
        _line("Benchmark duration (s):", summary["duration"]),
        _line("Total input tokens:", summary["total_input_tokens"]),
        _line("Total generated tokens:", summary["total_output_tokens"]),
        _line("Request throughput (req/s):", summary["request_throughput"]),
    ]
    if summary["request_goodput"] is not None:
        lines.append(_line("Request goodput (req/s):", summary["request_goodput"]))
    if summary.get("slo_attainment") is not None and "batch" not in (summary.get("by_class") or {}):
        # with batch work, each class's share is in its section (batch answers to its deadline, not the SLO)
        lines.append(_line("Within the SLO (share):", summary["slo_attainment"], "{:.3f}"))
    lines += [
        _line("Output token throughput (tok/s):", summary["output_throughput"]),
        _line("Total token throughput (tok/s):", summary["total_token_throughput"]),
    ]
    for title, key, short in SECTIONS:
        lines.append("{s:{c}^50}".format(s=title, c="-"))
        for stat, label in (("mean", "Mean"), ("median", "Median"), ("p99", "P99")):
            lines.append(_line(f"{label} {short} (ms):", summary[f"{stat}_{key}_ms"]))
    for name, rec in (summary.get("by_class") or {}).items():
        lines.append("{s:{c}^50}".format(s=f"Class: {name}", c="-"))
        lines.append(_line("Requests (completed / all):", f"{rec['completed']} / {rec['requests']}"))
        lines.append(_line("P99 TTFT (ms):", rec["p99_ttft_ms"]))
        lines.append(_line("P99 TPOT (ms):", rec["p99_tpot_ms"]))
        lines.append(_line("P99 E2EL (ms):", rec["p99_e2el_ms"]))
        if rec["slo_attainment"] is not None and name != "batch":  # batch work answers to its deadline (below)
            lines.append(_line("Within the SLO (share):", rec["slo_attainment"], "{:.3f}"))
    for name, rec in (summary.get("by_job") or {}).items():
        lines.append("{s:{c}^50}".format(s=f"Job: {name}", c="-"))
        lines.append(_line("Requests (completed / all):", f"{rec['completed']} / {rec['requests']}"))
        done = rec["completed_at_s"]
        lines.append(_line("Finished at (h):", "unfinished" if done is None else f"{done / 3600:.2f}"))
        if rec["deadline_at_s"] is not None:
            verdict = "met" if rec["deadline_met"] else ("missed" if done is None else f"missed by {rec['late_s'] / 3600:.2f} h")
            lines.append(_line(f"Deadline ({rec['deadline_at_s'] / 3600:.2f} h):", verdict))
        if rec["tokens_per_gpu_hour"] is not None:
            lines.append(_line("Tokens per GPU-hour:", f"{rec['tokens_per_gpu_hour']:,.0f}"))
    cost = summary["batch_cost"]
    if cost is not None:
        lines.append("{s:{c}^50}".format(s="Batch work's cost", c="-"))
        lines.append(_line(f"Cost (USD, {cost['method']}):", _money(cost["cost_usd"])))
        if cost["usd_per_1k_tokens"] is not None:
            lines.append(_line("USD per 1K batch tokens:", f"{cost['usd_per_1k_tokens']:.6f}"))
        lines.append(
            _line("Same tokens, batch API (USD):", f"{_money(cost['api_batch_usd_for_same_tokens'])} ({summary['api']}, 50%)")
        )
    if summary.get("kv_transfers") is not None:
        lines.append("{s:{c}^50}".format(s="KV transfers (prefill -> decode)", c="-"))
        lines.append(_line("Transfers:", summary["kv_transfers"]))
        lines.append(
            _line(
                "Mean / P99 wait for a decode slot (ms):",
                f"{_ms(summary['mean_transfer_wait_ms'])} / {_ms(summary['p99_transfer_wait_ms'])}",
            )
        )
        lines.append(
            _line("Mean / P99 transfer (ms):", f"{_ms(summary['mean_transfer_ms'])} / {_ms(summary['p99_transfer_ms'])}")
        )
    if summary.get("prefix_cached_tokens") is not None:
        lines.append("{s:{c}^50}".format(s="Prefix cache", c="-"))
        rates = (summary["prefix_hit_rate_tokens"], summary["prefix_hit_rate_blocks"])
        lines.append(_line("Hit rate, tokens / blocks:", " / ".join("n/a" if r is None else f"{r:.1%}" for r in rates)))
        lines.append(_line("Cached prompt tokens:", f"{summary['prefix_cached_tokens']:,}"))
        lines.append(_line("Prefill tokens saved:", f"{summary['prefill_tokens_saved']:,}"))
    if summary["spec_tokens_per_verify_step"] is not None:
        lines.append(_line("Tokens per verify step (spec.):", summary["spec_tokens_per_verify_step"], "{:.3f}"))
    if summary["lora_loads"] is not None:
        lines.append(_line("LoRA adapters loaded / stall (s):", f"{summary['lora_loads']:,} / {summary['lora_load_s']:.2f}"))
    for name, rec in (summary.get("by_pool") or {}).items():
        lines.append(_line(f"Pool {name}: replicas, $:", f"{rec['replicas_launched']}, {_money(rec['cost_usd'])}"))
    for name, rec in (summary.get("by_gpu") or {}).items():
        lines.append(_line(f"GPU {name}: replicas, $:", f"{rec['replicas_launched']}, {_money(rec['cost_usd'])}"))
    lines += fleet_lines(summary)
    lines.append("=" * 50)
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _utilization(summary: dict[str, Any]) -> str | None:
    value, rel_se = summary["throughput_utilization"], summary["throughput_utilization_rel_se"]
    if value is None:
        return None
    return f"{value:.3f}" if rel_se is None else f"{value:.3f} +- {value * rel_se:.3f}"


def timing_line(meta: dict[str, Any]) -> str:
    """Wall seconds by phase (they vary from machine to machine, unlike everything above)."""
    wall = meta["wall_s"]
    capacity = meta["capacity"]
    if not capacity["measured"]:
        cap = f"capacity not measured ({capacity.get('reason', '--no-capacity')})"
    elif wall.get("capacity_cached"):
        cap = "capacity cached"
    else:
        cap = f"capacity {wall['capacity']:.2f}"
    write = "" if wall.get("write") is None else f", write {wall['write']:.2f}"
    return f"timing (wall s): build {wall['build']:.2f}, simulate {wall['simulate']:.2f}, {cap}{write}"


def fleet_lines(summary: dict[str, Any]) -> list[str]:
    states = summary["gpu_seconds_by_state"]
    billed = summary["billed_gpu_seconds"]
    lines = ["{s:{c}^50}".format(s="Fleet and cost", c="-")]
    lines.append(_line("Replicas launched / most ready:", f"{summary['replicas_launched']} / {summary['replicas_max']}"))
    if summary["replicas_woken"]:
        lines.append(_line("  of the launches, woken from sleep:", summary["replicas_woken"]))
    lines.append(_line("Billed GPU-hours:", billed / 3600, "{:.3f}"))
    for state in ("busy", "idle", "provisioning", "loading", "draining", "billing_rounding", "reserved_unused"):
        if states[state] > 0:
            lines.append(_line(f"  {state} (GPU-h, share):", f"{states[state] / 3600:.3f} ({states[state] / billed:.1%})"))
    lines += [
        _line("GPU time busy (fraction):", summary["gpu_time_utilization"], "{:.3f}"),
        _line("Throughput utilization:", _utilization(summary)),
        _line("MFU / MBU:", None if summary["mfu"] is None else f"{summary['mfu']:.3f} / {summary['mbu']:.3f}"),
        _line("Cost (USD):", summary["cost_usd"], "{:.4f}"),
        _line("USD per 1K tokens (all):", summary["usd_per_1k_tokens"], "{:.6f}"),
        _line(
            "USD per 1K prompt / completion:",
            None
            if summary["usd_per_1k_prompt_tokens"] is None
            else f"{summary['usd_per_1k_prompt_tokens']:.6f} / {summary['usd_per_1k_completion_tokens']:.6f}",
        ),
        _line("Same tokens at API prices (USD):", f"{summary['api_usd_for_same_tokens']:.4f} ({summary['api']})"),
    ]
    return lines + capacity_lines(summary)


def capacity_lines(summary: dict[str, Any]) -> list[str]:
    """Cost by capacity class and what was lost, when the fleet had more than on-demand capacity or lost replicas."""
    by = summary["cost_by_capacity"] or {}
    lost = summary["replicas_failed"] or summary["replicas_reclaimed"] or summary["launches_failed"]
    lines: list[str] = []
    used = {k: row for k, row in by.items() if row["replicas"] or row["billed_gpu_seconds"]}
    if set(used) - {"on_demand"}:
        for klass, row in used.items():
            usd = "n/a" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
            lines.append(
                _line(f"  {klass} (replicas, GPU-h, USD):", f"{row['replicas']}, {row['billed_gpu_seconds'] / 3600:.3f}, {usd}")
            )
    if lost or summary["without_losses"] is not None:
        lines.append(_line("Replicas failed / reclaimed:", f"{summary['replicas_failed']} / {summary['replicas_reclaimed']}"))
        lines.append(
            _line("Requests re-queued / tokens recomputed:", f"{summary['requests_requeued']} / {summary['tokens_recomputed']}")
        )
        lines.append(_line("GPU-hours lost (work under way):", summary["gpu_seconds_lost"] / 3600, "{:.4f}"))
        lines.append(_line("Launches that found no capacity:", summary["launches_failed"]))
        lines.append(_line("Availability (minimum ready):", summary["availability"], "{:.4f}"))
        cf = summary["without_losses"]
        if cf is not None:
            att = "n/a" if cf["slo_attainment"] is None else f"{cf['slo_attainment']:.4f}"
            usd = "n/a" if cf["cost_usd"] is None else f"{cf['cost_usd']:.4f}"
            lines.append(_line("Without losses: SLO attainment / USD:", f"{att} / {usd}"))
    return lines


def uncached_prefix_caching(scenario: Scenario, meta: dict[str, Any]) -> bool:
    """Prefix caching asked for (by the scenario's engine or a pool's) but never set up: the trace carries no
    prefix hash ids, so the run is an uncached one."""
    engines = [scenario.engine, scenario.fleet.prefill.engine, scenario.fleet.decode.engine]
    return any(e is not None and e.prefix_caching for e in engines) and meta.get("prefix_cache") is None


def parse_goodput(text: str) -> SloConfig:
    """vLLM's --goodput syntax: space-separated METRIC:MILLISECONDS pairs, metrics ttft, tpot, e2el."""
    values: dict[str, float] = {}
    for part in text.replace(",", " ").split():
        key, sep, value = part.partition(":")
        if not sep or key not in ("ttft", "tpot", "e2el"):
            raise FleetsimError(f"--goodput takes METRIC:MS pairs with METRIC ttft, tpot or e2el (got {part!r})")
        try:
            ms = float(value)
        except ValueError:
            raise FleetsimError(f"--goodput {key}: milliseconds must be a number (got {value!r})") from None
        if not (ms > 0 and math.isfinite(ms)):
            raise FleetsimError(f"--goodput {key}: milliseconds must be a finite number > 0 (got {value})")
        if f"{key}_ms" in values:  # (vLLM keeps the last; a repeat is a typo for another metric)
            raise FleetsimError(f"--goodput names {key} twice (got {text!r}); give each metric once")
        values[f"{key}_ms"] = ms
    if not values:
        raise FleetsimError("--goodput needs at least one METRIC:MS pair, e.g. ttft:2000")
    return SloConfig(**values)


def _distinct_outputs(out_dir: Path, plot: Path | None, html_file: Path | None) -> None:
    """--plot and --html name files of their own, not the --out folder, nor its records, nor each other (the run
    would write one over the other, or end after simulating with an error about a file it wrote itself)."""
    folder = out_dir.resolve()
    seen: dict[Path, str] = {}
    for option, path in (("--plot", plot), ("--html", html_file)):
        if path is None:
            continue
        where = path.resolve()
        if where == folder:
            raise FleetsimError(f"{option} {path}: is the --out folder {out_dir}; give a file beside it")
        if folder in where.parents:
            raise FleetsimError(
                f"{option} {path}: is in the --out folder {out_dir}, which the run replaces whole once written; write it "
                "beside the folder"
            )
        if where in seen:
            raise FleetsimError(f"{option} {path}: is also {seen[where]}; write them to two files")
        seen[where] = option


def run(
    config: Annotated[Path, typer.Argument(help="Scenario YAML.", metavar="CONFIG")],
    trace: Annotated[
        Path | None,
        typer.Option(
            help="Replay this trace file instead of the scenario's, with the scenario's transforms (then --set trace.*)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to write (default: runs/<scenario name>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over simulated time.")] = True,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG: load, replicas by state and TTFT over time.")] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the run as one self-contained HTML page to this file.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a scenario field: --set fleet.gpu=l40s --set engine.max_num_seqs=128 (VALUE as YAML)."
        ),
    ] = None,
    goodput: Annotated[
        str | None,
        typer.Option(help="SLOs in ms, as vLLM's --goodput: \"ttft:2000 tpot:200 e2el:30000\" (overrides the scenario's slo)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace --out even if it holds files and is not a fleetsim run folder, and --plot or --html if there.",
        ),
    ] = False,
    capacity: Annotated[
        bool,
        typer.Option(
            "--capacity/--no-capacity",
            help="Measure one replica's saturated throughput for throughput_utilization (--no-capacity: reported as n/a).",
        ),
    ] = True,
    stored: Annotated[
        bool,
        typer.Option(
            "--stored",
            help="A run larger than memory: the request records live in the run folder's files as the run goes, and the "
            "summary is computed in passes over them (the same figures).",
        ),
    ] = False,
) -> None:
    """Simulate a scenario: its fleet replays the trace; prints vLLM-style metrics, cost and utilization; writes a run folder."""
    from rich.console import Console  # the simulator is imported by the commands that run it

    from sim.results.report import check_out_dir, write_run
    from sim.run.simulate import simulate

    scenario = load_config(config, sets=set_ or (), trace=trace)
    if seed is not None:
        check_seed(seed)
        scenario = scenario.model_copy(update={"seed": seed})
    if goodput is not None:
        scenario = scenario.model_copy(update={"slo": parse_goodput(goodput)})
    out_dir = out if out is not None else Path("runs") / config.stem
    reads: list[Path] = [config] if trace is None else [config, trace]
    named = scenario.trace if isinstance(scenario.trace, str) else getattr(scenario.trace, "file", None)
    if named:  # (the trace file the scenario names, relative to it)
        reads.append(config.parent / named)
    check_out_dir(out_dir, force=force, inputs=reads)  # every output path is checked before anything is simulated
    if plot is not None:
        check_plot_path(plot, force)
    if html_file is not None:
        check_out_file(html_file, "--html", inputs=reads)
        check_new_file(html_file, "--html", force)
    _distinct_outputs(out_dir, plot, html_file)
    check_html_name(html_file)
    console = Console(stderr=True)
    show = progress and not as_json and console.is_terminal
    if stored:
        if plot is not None or html_file is not None:
            raise FleetsimError(
                f"--stored: {'--plot' if plot is not None else '--html'} draws from the records in memory; leave out "
                "--stored, or draw the run later with `fleetsim report`"
            )
        if scenario.deployments:
            raise FleetsimError("--stored: a platform's deployments run in memory; leave out --stored")
        _run_stored(scenario, config, out_dir, as_json=as_json, capacity=capacity, force=force, console=console if show else None)
        return
    if scenario.deployments:  # a platform: several deployments on one GPU budget
        if plot is not None:
            raise FleetsimError(
                f"--plot: a platform run draws each deployment on its own: `fleetsim report {out_dir}/deployments/NAME "
                "--html FILE` after this run, or --html FILE for the platform's page"
            )
        _run_platform(
            scenario,
            config,
            out_dir,
            as_json=as_json,
            capacity=capacity,
            force=force,
            html_file=html_file,
            console=console if show else None,
        )
        return
    with progress_bar(console if show else None) as tick:
        result = simulate(scenario, base_dir=config.parent, progress=tick, measure_capacity=capacity)
    _warn(scenario, result.meta, adapters_named=bool((result.requests["adapter"] >= 0).any()))
    summary = result.summary()
    if plot is not None:  # before the run folder: a run folder is the last thing written
        from sim.results.plots import plot_run

        plot_run(result, plot, summary)
    if html_file is not None:
        from sim.results.html_report import render_html

        write_text_atomically(html_file, render_html(result, summary))
    write_run(result, out_dir, summary=summary, force=force)
    _print_run(result, summary, out_dir, as_json=as_json)


def _run_stored(
    scenario: Scenario, config: Path, out_dir: Path, *, as_json: bool, capacity: bool, force: bool, console: Any
) -> None:
    """`fleetsim run --stored`: the scenario's trace moved into files beside the run folder (a trace file read a
    window at a time where its format allows, else generated or read whole; either way the trace a run in memory
    reads), then `simulate_stored` (`sim.run.store`)."""
    import shutil
    import tempfile

    from sim.results.stored import StoredResult
    from sim.run.simulate import scenario_trace, scenario_trace_windows, simulate_stored
    from sim.run.store import stored_trace
    from sim.workload.schema import REQUIRED

    windows = scenario_trace_windows(scenario, base_dir=config.parent)
    frame = scenario_trace(scenario, base_dir=config.parent) if windows is None else None
    adapters_named = frame is not None and "adapter" in frame.columns and bool((frame["adapter"].to_numpy() >= 0).any())
    parent = out_dir.resolve().parent
    beside = next(p for p in (parent, *parent.parents) if p.exists())  # (no folder made for a run that may fail)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.trace.", dir=beside))
    except OSError as err:
        raise FleetsimError(f"--out {out_dir}: cannot write the trace's files in {beside} ({err.strerror or err})") from None
    try:
        try:
            if windows is not None:  # a trace file read a window at a time: never whole in memory
                trace = stored_trace(windows, folder)
            elif frame is not None and list(frame.columns) == list(REQUIRED) and len(frame):
                rows = 1 << 20  # (a trace with more columns stays in memory)
                trace = stored_trace((frame.iloc[lo : lo + rows] for lo in range(0, len(frame), rows)), folder)
                del frame
            else:
                trace = frame
        except OSError as err:  # (a full disk: the trace's files are written beside the run folder first)
            raise FleetsimError(
                f"--out {out_dir}: cannot write the trace's files in {beside} ({err.strerror or err}); nothing written"
            ) from None
        with progress_bar(console) as tick:
            summary = simulate_stored(
                scenario, out_dir, trace, base_dir=config.parent, progress=tick, measure_capacity=capacity, force=force
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = StoredResult.open(out_dir)
    _warn(scenario, result.meta, adapters_named=adapters_named)
    _print_run(result, summary, out_dir, as_json=as_json)


def _warn(scenario: Scenario, meta: dict[str, Any], *, adapters_named: bool) -> None:
    """What a run should not have done silently (on stderr, so that --json stays JSON), then the trace's note."""
    alias_note(scenario.fleet.gpu, meta["gpu"])
    if uncached_prefix_caching(scenario, meta):
        typer.echo(
            "warning: engine.prefix_caching is on, but the trace has no prefix_hash_ids (the Mooncake and Bailian readers give "
            "them; others do not), so nothing was cached",
            err=True,
        )
    lora = meta.get("lora")
    if lora is not None and not lora["requests_with_adapter"]:
        typer.echo(
            "warning: engine.lora is on, but the trace names no adapter (its `adapter` column), so none was loaded", err=True
        )
    elif lora is None and adapters_named:
        typer.echo(
            "warning: the trace names LoRA adapters (its `adapter` column), but engine.lora is off: every request ran on "
            "the base model",
            err=True,
        )
    missed = (meta.get("hazards") or {}).get("missed_instants", 0)
    if missed:
        typer.echo(
            f"warning: {missed} of fleet.capacity's given instants (fail_at_s, reclaim_at_s) found no ready replica to hit",
            err=True,
        )
    if scenario.trace_note is not None:  # right before the summary
        typer.echo(f"note: {scenario.trace_note}", err=True)


def _print_run(result: Any, summary: dict[str, Any], out_dir: Path, *, as_json: bool) -> None:
    """The summary (as JSON, or vLLM's table), the run folder written and the wall seconds by phase."""
    from sim.results.report import RUN_FILES

    if as_json:
        emit_json(summary)
    else:
        typer.echo(render_summary(result, summary))
        typer.echo(f"wrote {out_dir}/ ({', '.join(RUN_FILES)})")
        typer.echo(timing_line(result.meta))
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(console: Any) -> Iterator[Callable[[float, float], None] | None]:
    """A bar over simulated time on `console` while the block runs, and its tick (None: no console, no bar)."""
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.fields[sim]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("sim", total=1.0, sim="")

        def tick(now: float, horizon: float) -> None:
            done = min(1.0, now / horizon) if horizon else 1.0
            bar.update(task, completed=done, sim=f"{now:,.0f} / {horizon:,.0f} s simulated")

        yield tick


def _run_platform(
    scenario: Scenario,
    config: Path,
    out_dir: Path,
    *,
    as_json: bool,
    capacity: bool,
    force: bool,
    html_file: Path | None,
    console: Any = None,
) -> None:
    """`fleetsim run` on a platform (`deployments:`); `console`: where to draw a progress bar (None: none)."""
    from sim.results.report import write_platform
    from sim.run.platform import simulate_platform

    if scenario.trace_note is not None:
        typer.echo(f"note: {scenario.trace_note}", err=True)
    with progress_bar(console) as tick:
        result = simulate_platform(scenario, base_dir=config.parent, measure_capacity=capacity, progress=tick)
    summary = result.summary()
    if html_file is not None:  # (before the run folder: a run folder is the last thing written)
        from sim.results.html_report import render_platform_html

        write_text_atomically(html_file, render_platform_html(result, summary))
    write_platform(result, out_dir, summary=summary, force=force)
    if as_json:
        emit_json(summary)
    else:
        typer.echo(render_platform(summary))
        typer.echo(f"wrote {out_dir}/ (summary.json, platform.json, deployments/<name>/: a run folder each)")
        wall = result.meta["wall_s"]
        typer.echo(
            f"timing (wall s): build {wall['build']:.2f}, simulate {wall['simulate']:.2f}, capacity {wall['capacity']:.2f}"
        )
    sys.stdout.flush()


def render_platform(summary: dict[str, Any]) -> str:
    """A platform's summary: a line per deployment, the platform's totals and its GPU budget."""
    lines = ["{s:{c}^100}".format(s=" Platform Result ", c="=")]
    if summary.get("scenario"):
        lines.append(f"Scenario: {summary['scenario']}")
    head = (
        "deployment",
        "requests",
        "done",
        "P50 TTFT",
        "P99 TTFT",
        "P99 TPOT",
        "in SLO",
        "replicas",
        "GPU-h",
        "USD",
        "$/1K tok",
    )
    lines.append("{:<16}{:>9}{:>8}{:>10}{:>10}{:>10}{:>8}{:>10}{:>8}{:>9}{:>10}".format(*head))
    for name, d in summary["deployments"].items():
        n = d["completed"] + d["rejected"] + d["in_flight"]
        lines.append(
            "{:<16}{:>9}{:>8}{:>10}{:>10}{:>10}{:>8}{:>10}{:>8}{:>9}{:>10}".format(
                name[:15],
                n,
                d["completed"],
                _ms(d["median_ttft_ms"]),
                _ms(d["p99_ttft_ms"]),
                _ms(d["p99_tpot_ms"]),
                "n/a" if d["slo_attainment"] is None else f"{d['slo_attainment']:.3f}",
                f"{d['replicas_launched']}/{d['replicas_max']}",
                f"{d['billed_gpu_seconds'] / 3600:.2f}",
                _money(d["cost_usd"]),
                "n/a" if d["usd_per_1k_tokens"] is None else f"{d['usd_per_1k_tokens']:.5f}",
            )
        )
    lines.append("(latencies in ms; replicas: launched/most ready)")
    lines.append("{s:{c}^100}".format(s=" Platform ", c="-"))
    lines += [
        _line("Requests (completed / all):", f"{summary['completed']} / {summary['requests']}"),
        _line("Within their SLO (share):", summary["slo_attainment"], "{:.3f}"),
        _line("Billed GPU-hours:", summary["billed_gpu_seconds"] / 3600, "{:.3f}"),
        _line("GPU time busy (fraction):", summary["gpu_time_utilization"], "{:.3f}"),
        _line("Throughput utilization:", summary["throughput_utilization"], "{:.3f}"),
        _line("Cost (USD):", summary["cost_usd"], "{:.4f}"),
        _line("USD per 1K tokens (all):", summary["usd_per_1k_tokens"], "{:.6f}"),
    ]
    for gpu, row in summary["gpu_budget"].items():
        lines.append(_line(f"GPU budget {gpu} (most held / GPUs):", f"{row['peak_held']} / {row['gpus']}"))
    if summary["gpu_seconds_swapping"]:
        lines.append(_line("GPU-hours waking and putting to sleep:", summary["gpu_seconds_swapping"] / 3600, "{:.4f}"))
    if summary["gpu_seconds_adapter_loads"]:
        lines.append(_line("GPU-hours stalled on adapter loads:", summary["gpu_seconds_adapter_loads"] / 3600, "{:.4f}"))
    preempted = {k: v for k, v in summary["replicas_preempted"].items() if v}
    if preempted:
        lines.append(_line("Replicas preempted:", ", ".join(f"{k} {v}" for k, v in preempted.items())))
    held = {k: v for k, v in summary["launches_held_back"].items() if v}
    if held:
        lines.append(_line("Launch tries held back by the budget:", ", ".join(f"{k} {v}" for k, v in held.items())))
    lines.append("=" * 100)
    return "\n".join(lines)


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `fleetsim run`.", metavar="RUN_DIR")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    openmetrics: Annotated[
        Path | None,
        typer.Option(help="Also write the timeline as OpenMetrics text (vLLM's metric names) to this file."),
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the run as one self-contained HTML page to this file.")
    ] = None,
    epoch: Annotated[
        float, typer.Option(help="With --openmetrics: the Unix time of the trace's start (samples are stamped epoch + t).")
    ] = 0.0,
    force: ForceOpt = False,
) -> None:
    """Reprint a run's summary from its run folder (recomputed from its records)."""
    from sim.results.result import SimResult
    from sim.studies.study_dir import check_not_a_study_folder

    if openmetrics is not None:
        check_out_file(openmetrics, "--openmetrics")
    if html_file is not None:
        check_out_file(html_file, "--html")
    if not (math.isfinite(epoch) and 0 <= epoch <= 1e10):  # (1e300 + t is 1e300: every sample at one instant)
        raise FleetsimError(f"--epoch must be Unix seconds within 0..1e10, before the year 2286 (got {epoch:g})")
    if epoch and openmetrics is None:  # (it stamps the OpenMetrics samples only: ignored, it looked applied)
        raise FleetsimError("--epoch stamps the --openmetrics samples: give --openmetrics FILE too")
    check_not_a_study_folder(run_dir)
    for option, out in (("--openmetrics", openmetrics), ("--html", html_file)):
        if out is not None and run_dir.resolve() in out.resolve().parents:
            raise FleetsimError(f"{option} {out}: inside the run folder it reads; give a path outside {run_dir}")
    if openmetrics is not None and html_file is not None and openmetrics.resolve() == html_file.resolve():
        # (the page was written over the metrics, exit 0)
        raise FleetsimError(f"--html {html_file}: is also --openmetrics; write them to two files")
    check_new_file(openmetrics, "--openmetrics", force)
    check_new_file(html_file, "--html", force)
    check_html_name(html_file)
    from sim.results.platform import PlatformResult, is_platform_folder

    if is_platform_folder(run_dir):
        if openmetrics is not None:
            raise FleetsimError(
                f"--openmetrics: {run_dir} is a platform run; give one deployment's folder, {run_dir}/deployments/NAME"
            )
        platform = PlatformResult.load(run_dir)
        summary = platform.summary()
        if html_file is not None:
            from sim.results.html_report import render_platform_html

            write_text_atomically(html_file, render_platform_html(platform, summary))
        if as_json:
            emit_json(summary)
        else:
            typer.echo(render_platform(summary))
        return
    result = SimResult.load(run_dir)
    try:  # everything computed before anything is written: a folder edited by hand fails in one line, writing nothing
        metrics_text = None
        if openmetrics is not None:
            from sim.results.openmetrics import to_openmetrics

            metrics_text = to_openmetrics(result, epoch_s=epoch)
        summary = result.summary()
        page = None
        if html_file is not None:
            from sim.results.html_report import render_html

            page = render_html(result, summary)
        text = None if as_json else render_summary(result, summary) + "\n" + timing_line(result.meta)
    except FleetsimError:
        raise
    except (KeyError, ValueError, TypeError, StopIteration, IndexError, OverflowError, ZeroDivisionError) as err:
        raise FleetsimError(
            f"{run_dir}: its records do not add up ({type(err).__name__}: {_short(str(err))}); was the folder edited? "
            "nothing written"
        ) from None
    if openmetrics is not None and metrics_text is not None:
        write_text_atomically(openmetrics, metrics_text)
    if html_file is not None and page is not None:
        write_text_atomically(html_file, page)
    if as_json:
        emit_json(summary)
    else:
        typer.echo(text)
