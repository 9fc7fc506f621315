"""`fleetsim sweep`: a base scenario over axes and seeds, on local processes or a Dask cluster, resumable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import Interrupted, emit_json, positive, stopped
from sim.determinism import seed_note
from sim.errors import FleetsimError


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.4g}"
    return str(x)


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
) -> None:
    """Run a scenario over axes and seeds; write results.parquet and stats.parquet (95% CIs across seeds)."""
    from rich.console import Console

    from sim.study_dir import MARKER
    from sim.sweep import STAT_METRICS, check_sweep_dir, jobs_for, load_sweep, seed_stats

    positive("--workers", workers)
    if not (math.isfinite(precision) and 0 < precision < 1):
        raise FleetsimError(f"--precision must be in (0, 1) (got {precision})")
    spec = load_sweep(sweep_file, trace=trace)
    out_dir = out if out is not None else Path("sweeps") / spec.name
    check_sweep_dir(out_dir, force=force, owner=spec.owner())
    if spec.trace_note is not None:
        typer.echo(f"note: {spec.trace_note}", err=True)
    console = Console(stderr=True)
    n_runs = spec.n_runs
    bar = progress and not as_json and console.is_terminal
    try:
        rows = _run(spec, out_dir, workers=workers, scheduler=scheduler, force=force, console=console if bar else None)
    except (KeyboardInterrupt, Interrupted) as err:
        if not (out_dir / MARKER).exists():
            raise  # nothing was written yet
        done = sum(Path(j.out_file).exists() for j in jobs_for(spec, out_dir))
        raise stopped(err, f"{done} of {n_runs} runs are kept in {out_dir}/points: rerun the same command to resume") from None
    stats = seed_stats(rows, spec.axes, precision=precision)
    if precision != 0.05:
        stats.to_parquet(out_dir / "stats.parquet", index=False)
    if as_json:
        emit_json(stats.to_dict(orient="records"))
        return
    errors = rows["error"].notna().sum() if "error" in rows else 0
    typer.echo(
        f"fleetsim sweep {spec.name}: {len(spec.points)} points x {len(spec.seeds)} seeds = {n_runs} runs ({errors} could not run)"
    )
    fixed = [pt.index for pt in spec.points if pt.deterministic]
    if fixed and len(spec.seeds) > 1:
        which = "every point" if len(fixed) == len(spec.points) else f"points {', '.join(map(str, fixed))}"
        typer.echo(f"  one seed for {which}: {seed_note([])}")
    header = ["point", *spec.axes, "seeds", *(f"{m} mean [95% CI]" for m in STAT_METRICS), "seeds needed"]
    typer.echo("  " + " | ".join(header))
    for rec in stats.to_dict(orient="records"):
        cells = [_fmt(rec["point"]), *(_fmt(rec[a]) for a in spec.axes), f"{rec['n_seeds'] - rec['errors']}/{rec['n_seeds']}"]
        for m in STAT_METRICS:
            mean, lo, hi = rec[f"{m}_mean"], rec[f"{m}_ci_low"], rec[f"{m}_ci_high"]
            cells.append(_fmt(mean) + ("" if math.isnan(lo) else f" [{_fmt(lo)}, {_fmt(hi)}]"))
        cells.append(_fmt(rec["seeds_needed"]))
        typer.echo("  " + " | ".join(cells))
    failed = rows[rows["error"].notna()] if "error" in rows else rows.iloc[0:0]
    for _, r in failed.drop_duplicates("point").iterrows():
        typer.echo(f"  point {r['point']} could not run: {r['error']}")
    typer.echo(f"wrote {out_dir}/ (results.parquet: {len(rows)} rows; stats.parquet; points/ for resuming)")


def _run(spec: Any, out_dir: Path, *, workers: int, scheduler: str | None, force: bool, console: Any) -> Any:
    """The sweep's rows, with a progress bar (runs done of all, elapsed, time left) on `console` if given."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sim.sweep import run_sweep

    if console is None:
        return run_sweep(spec, out_dir, workers=workers, scheduler=scheduler, force=force)
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
