"""`fleetsim sweep`: a base scenario over axes and seeds, on local processes or a Dask cluster, resumable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import Interrupted, emit_json, places, positive, sig, stopped, table
from sim.errors import FleetsimError
from sim.studies.determinism import seed_note

# the figures a sweep prints: summary key, column head (with its unit), scale from the key's unit, fixed decimals
COLUMNS = (
    ("p99_ttft_ms", "p99 TTFT (s)", 1e-3, None),
    ("p99_tpot_ms", "p99 TPOT (ms)", 1.0, None),
    ("usd_per_1k_tokens", "$/1M tokens", 1e3, None),
    ("throughput_utilization", "throughput util. (%)", 100.0, 1),
    ("slo_attainment", "within SLO (%)", 100.0, 1),
)


def _axis_value(x: Any) -> str:
    """An axis value as the sweep file would write it (a mapping or list in YAML's flow style, not JSON)."""
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:g}"
    if isinstance(x, str) and x[:1] in "{[":
        import json

        import yaml

        try:
            return str(yaml.safe_dump(json.loads(x), default_flow_style=True, sort_keys=False, width=10_000)).strip()
        except ValueError:
            return x
    return str(x)


def stats_table(records: list[dict[str, Any]], axes: list[str]) -> list[str]:
    """The per-point statistics as a table that fits 100 columns (split in two when it would not): each figure in
    its unit, the mean over seeds and its 95% interval in the mean's precision; the seeds column only when the
    points ran under different numbers of seeds (a deterministic point, a run that could not run)."""
    seeds = [rec["n_seeds"] - rec["errors"] for rec in records]
    show_seeds = len({(s, rec["n_seeds"]) for s, rec in zip(seeds, records, strict=True)}) > 1
    head = ["point", *axes, *(["seeds"] if show_seeds else []), *(h for _, h, _, _ in COLUMNS), "seeds needed"]
    cells: list[list[str]] = []
    for rec, ok in zip(records, seeds, strict=True):
        row = [str(rec["point"]), *(_axis_value(rec[a]) for a in axes)]
        if show_seeds:
            row.append(str(ok) if not rec["errors"] else f"{ok}/{rec['n_seeds']}")
        cells.append(row)
    for key, _, scale, fixed in COLUMNS:
        texts = []
        for r in records:
            mean, lo, hi = (r[f"{key}_{part}"] * scale for part in ("mean", "ci_low", "ci_high"))
            decimals = places(mean) if fixed is None else fixed
            ci = "" if math.isnan(lo) else f" [{sig(lo, decimals=decimals)}, {sig(hi, decimals=decimals)}]"
            texts.append((sig(mean, decimals=decimals), ci))
        width = max(len(m) for m, _ in texts) if texts else 0
        for row, (mean_text, ci) in zip(cells, texts, strict=True):
            row.append(mean_text.rjust(width) + ci)
    for row, rec in zip(cells, records, strict=True):
        row.append("-" if math.isnan(rec["seeds_needed"]) else f"{rec['seeds_needed']:,.0f}")
    first = len(head) - len(COLUMNS) - 1
    figures = range(first, first + len(COLUMNS))
    keys = 1 + len(axes)
    widest_key = sum(max(len(head[i]), *(len(r[i]) for r in cells)) + 2 for i in range(keys)) if cells else 0
    if widest_key + max((len(r[i]) for r in cells for i in figures), default=0) + 4 <= 100:
        return table(head, cells, keys=keys, left=figures)
    # axis values too wide to repeat beside the figures: the points first, then the figures by point
    legend = table(head[:keys], [r[:keys] for r in cells], keys=keys, width=10_000)
    rest = [0, *range(keys, len(head))]
    figures_by_point = table([head[i] for i in rest], [[r[i] for i in rest] for r in cells], left=[i - keys + 1 for i in figures])
    return legend + figures_by_point


def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML (base scenario, axes, seeds).", metavar="SWEEP")],
    out: Annotated[Path | None, typer.Option(help="Sweep folder (default: sweeps/<sweep name>); rerun to resume.")] = None,
    trace: Annotated[
        Path | None,
        typer.Option(help="Replay this trace file instead of the base scenario's, with its transforms (as fleetsim run)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="A Dask scheduler address (tcp://host:port) to run the points on instead.")
    ] = None,
    precision: Annotated[float, typer.Option(help="Relative precision the seeds-needed figure aims at.")] = 0.05,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even if it holds other files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-point statistics as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the runs.")] = True,
    log_progress: Annotated[
        bool, typer.Option("--log-progress", help="Print a line on stderr as each run finishes (for logs, instead of the bar).")
    ] = False,
) -> None:
    """Run a scenario over axes and seeds; write results.parquet and stats.parquet (95% CIs across seeds)."""
    from rich.console import Console

    from sim.atomic import atomic_file
    from sim.studies.study_dir import MARKER
    from sim.studies.sweep import MIN_PRECISION, check_sweep_dir, jobs_for, load_sweep, seed_stats

    positive("--workers", workers)
    if not (math.isfinite(precision) and MIN_PRECISION <= precision < 1):
        raise FleetsimError(f"--precision must be in [{MIN_PRECISION:g}, 1) (got {precision})")
    spec = load_sweep(sweep_file, trace=trace)
    out_dir = out if out is not None else Path("sweeps") / spec.name
    check_sweep_dir(out_dir, force=force, owner=spec.owner())
    if spec.trace_note is not None:
        typer.echo(f"note: {spec.trace_note}", err=True)
    console = Console(stderr=True)
    n_runs = spec.n_runs
    # a rerun: the runs it takes from the folder (said with the table, not before it: an error stays one line)
    kept = sum(Path(j.out_file).exists() for j in jobs_for(spec, out_dir)) if (out_dir / MARKER).exists() else 0
    bar = progress and not as_json and console.is_terminal and not log_progress
    try:
        rows = _run(
            spec, out_dir, workers=workers, scheduler=scheduler, force=force, console=console if bar else None, lines=log_progress
        )
    except (KeyboardInterrupt, Interrupted) as err:
        if not (out_dir / MARKER).exists():
            raise  # nothing was written yet
        done = sum(Path(j.out_file).exists() for j in jobs_for(spec, out_dir))
        raise stopped(err, f"{done} of {n_runs} runs are kept in {out_dir}/points: rerun the same command to resume") from None
    stats = seed_stats(rows, spec.axes, precision=precision)
    if precision != 0.05:  # (replaced whole or not at all: a half-written stats.parquet would not read)
        with atomic_file(out_dir / "stats.parquet") as tmp:
            stats.to_parquet(tmp, index=False)
    if as_json:
        emit_json(stats.to_dict(orient="records"))
        return
    errors = rows["error"].notna().sum() if "error" in rows else 0
    resumed = f"; {kept} resumed from {out_dir}/points" if kept else ""
    typer.echo(
        f"fleetsim sweep {spec.name}: {len(spec.points)} points x {len(spec.seeds)} seeds: {n_runs} runs ({errors} could not "
        f"run{resumed})"
    )
    fixed = [pt.index for pt in spec.points if pt.deterministic]
    if fixed and len(spec.seeds) > 1:
        which = "every point" if len(fixed) == len(spec.points) else f"points {', '.join(map(str, fixed))}"
        typer.echo(f"  one seed for {which}: {seed_note([])}")
    typer.echo("  each figure: the mean over the point's seeds [its 95% bootstrap confidence interval]")
    for line in stats_table(stats.to_dict(orient="records"), spec.axes):
        typer.echo(line)
    failed = rows[rows["error"].notna()] if "error" in rows else rows.iloc[0:0]
    for _, r in failed.drop_duplicates("point").iterrows():
        typer.echo(f"  point {r['point']} could not run: {r['error']}")
    typer.echo(f"wrote {out_dir}/ (results.parquet: {len(rows)} rows; stats.parquet; points/ for resuming)")


def _run(spec: Any, out_dir: Path, *, workers: int, scheduler: str | None, force: bool, console: Any, lines: bool = False) -> Any:
    """The sweep's rows, with a progress bar (runs done of all, elapsed, time left) on `console` if given, or with
    `lines` a line on stderr per finished run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sim.studies.sweep import run_sweep

    if console is None:

        def line(done: int, total: int) -> None:
            typer.echo(f"sweep {spec.name}: {done} of {total} runs done", err=True)

        return run_sweep(spec, out_dir, workers=workers, scheduler=scheduler, force=force, progress=line if lines else None)
    columns = (
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=spec.n_runs)
        return run_sweep(
            spec, out_dir, workers=workers, scheduler=scheduler, progress=lambda d, t: bar.update(task, completed=d), force=force
        )
