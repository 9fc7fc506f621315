"""`fleetsim plan`: the cheapest fleet configuration that meets an SLO, searched, ranked and verified."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import Interrupted, check_new_file, check_out_file, check_plot_path, emit_json, positive, stopped, table
from sim.errors import FleetsimError
from sim.studies.determinism import seed_note


def _num(x: Any, fmt: str = "{:,.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def _configuration(pairs: list[tuple[str, Any]], scale: str, n: Any) -> str:
    """A configuration in words: its search values, then its scale value, as `n replicas` when the scale counts
    replicas, else as `PATH=n` (a plan over engine.max_num_seqs was told as "pick: , 4 replicas")."""
    count = _num(n) if isinstance(n, int | float) else str(n)
    last = f"{count} replicas" if scale.endswith("replicas") else f"{scale}={count}"
    return ", ".join([*(f"{k}={v}" for k, v in pairs), last])


def _short_configuration(values: list[str], scale: str, n: Any) -> str:
    """A verified configuration, tersely: its search values, then `xN` replicas, or `PATH=n` for another scale."""
    last = f"x{n}" if scale.endswith("replicas") else f"{scale}={n}"
    return " ".join([", ".join(values), last]) if values else last


def _ci(r: dict[str, Any], key: str, fmt: str) -> str:
    mean, lo, hi = r.get(f"{key}_mean"), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    text = _num(mean, fmt)
    if lo is not None and not (isinstance(lo, float) and math.isnan(lo)) and lo != hi:
        text += f" [{_num(lo, fmt)}, {_num(hi, fmt)}]"
    return text


def plan(
    plan_file: Annotated[Path, typer.Argument(help="Plan YAML (base scenario, search axes, scale, SLO).", metavar="PLAN")],
    out: Annotated[Path | None, typer.Option(help="Plan folder (default: plans/<plan name>); rerun to resume.")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="A Dask scheduler address (tcp://host:port).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field of the base scenario (PATH=VALUE, as fleetsim run), after the plan's set:."),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(help="Replay this trace file instead of the base scenario's, with its transforms (as fleetsim run)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write the cost vs p99 TTFT plot (PNG, SVG, ...).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds other files; replace --plot and --manifests.")
    ] = False,
    manifests: Annotated[
        Path | None, typer.Option(help="Also write the pick as Kubernetes manifests (as fleetsim export) to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Find the cheapest GPU / TP / replica count that meets an SLO: screened, bisected, ranked and verified."""
    from sim.studies.plan import load_plan, plan_fleet, unexportable
    from sim.studies.study_dir import MARKER
    from sim.studies.sweep import check_sweep_dir

    positive("--workers", workers)
    p = load_plan(plan_file, sets=set_ or (), trace=trace)
    out_dir = out if out is not None else Path("plans") / p.name
    check_sweep_dir(out_dir, force=force, owner=p.sweep.owner("plan"))
    if plot is not None:
        check_plot_path(plot, force)
    if manifests is not None:
        sources = [plan_file, plan_file.parent / p.spec.base, *([trace] if trace is not None else [])]
        check_out_file(manifests, "--manifests", inputs=sources)
        check_new_file(manifests, "--manifests", force)
        where = manifests.resolve()
        if where == out_dir.resolve() or out_dir.resolve() in where.parents:
            raise FleetsimError(f"--manifests {manifests}: inside the plan's folder it writes; give a path outside {out_dir}")
        if plot is not None and where == plot.resolve():
            raise FleetsimError(f"--manifests {manifests}: is also --plot; write them to two files")
        why = unexportable(p)  # (before any run: the search would be wasted)
        if why is not None:
            raise FleetsimError(f"--manifests {manifests}: {plan_file}: {why}")
    if p.sweep.trace_note is not None:
        typer.echo(f"note: {p.sweep.trace_note}", err=True)
    note = None if as_json else (lambda msg: typer.echo(f"  {msg}", err=True))
    try:
        outcome = plan_fleet(p, out_dir, workers=workers, scheduler=scheduler, progress=note, force=force)
    except (KeyboardInterrupt, Interrupted) as err:
        if not (out_dir / MARKER).exists():
            raise  # nothing was written yet
        done = len(list((out_dir / "points").glob("*.parquet")))
        raise stopped(err, f"{done} runs are kept in {out_dir}/points: rerun the same command to resume") from None
    scale = p.spec.scale.path
    if plot is not None:
        _plot(outcome, p, plot)
    if manifests is not None:
        _write_manifests(manifests, p, outcome.pick, plan_file)  # (before the report: an error here loses no output)
    if as_json:
        emit_json(
            {
                "pick": outcome.pick,
                "ranking": outcome.ranking.to_dict(orient="records"),
                "frontier": outcome.frontier.to_dict(orient="records"),
                "verification": outcome.verification,
                "closest_miss": outcome.closest_miss,
                "saving": outcome.saving,
            }
        )
        return
    slo = p.spec.slo
    targets = ", ".join(
        t
        for t in (
            None if slo.p99_ttft_ms is None else f"p99 TTFT <= {slo.p99_ttft_ms:g} ms",
            None if slo.p99_tpot_ms is None else f"p99 TPOT <= {slo.p99_tpot_ms:g} ms",
            None if slo.attainment is None else f"{slo.attainment:.1%} of requests within the scenario's slo",
        )
        if t
    )
    say(f"fleetsim plan {p.name}: the cheapest configuration by {p.spec.objective} meeting {targets}")
    say(f"  {_confidence(p)}")
    axes = list(p.spec.search)
    unit = "replicas" if scale.endswith("replicas") else scale
    head = ["rank", *axes, unit, "$/1K tokens", "$/hour", "p99 TTFT (ms)", "p99 TPOT (ms)", "status"]
    rows, reasons, rank = [], [], 0
    for r in outcome.ranking.to_dict(orient="records"):
        if r["status"] == "meets":
            rank += 1
            cells = [str(rank), *(str(r[a]) for a in axes), _num(r[scale])]
            cells += [_ci(r, "usd_per_1k_tokens", "{:.6f}"), _ci(r, "usd_per_hour", "{:,.2f}")]
            cells += [_ci(r, "p99_ttft_ms", "{:,.0f}"), _ci(r, "p99_tpot_ms", "{:,.1f}"), "meets"]
        else:
            cells = ["-", *(str(r[a]) for a in axes), "-", "-", "-", "-", "-", r["status"]]
            reasons.append(f"  {', '.join(f'{a}={r[a]}' for a in axes) or 'the base'}: {r['status']}: {r['why']}")
        rows.append(cells)
    for line in table(head, rows, keys=len(axes) + 2):  # split in two when the intervals would not fit 100 columns
        typer.echo(line)
    for line in reasons:
        say(line)
    ev = outcome.evaluated
    n_all = len(p.groups) * len(p.spec.scale.values())
    how = "bisection" if p.spec.method == "bisect" else "the grid"
    say(
        f"  ({len(ev)} of {n_all} configurations simulated: the roofline and the capacity bound ruled the rest out,"
        f" or {how} did not need them)"
    )
    if len(outcome.frontier):
        typer.echo("Pareto frontier (cost against p99 TTFT: each cheaper configuration is slower):")
        cost = "$/1K tokens" if p.spec.objective == "usd_per_1k_tokens" else "$/hour"
        fmt = "{:.6f}" if p.spec.objective == "usd_per_1k_tokens" else "{:,.2f}"
        front = [
            [*(str(f[a]) for a in axes), _num(f[scale]), fmt.format(f[f"{p.spec.objective}_mean"]), _num(f["p99_ttft_ms_mean"])]
            for f in outcome.frontier.to_dict(orient="records")
        ]
        for line in table([*axes, unit, cost, "p99 TTFT (ms)"], front, keys=len(axes) + 3, width=10_000):
            typer.echo(line)
    if outcome.pick is not None:
        pk = outcome.pick
        say(
            f"pick: {_configuration([(a, pk[a]) for a in axes], scale, pk[scale])} at "
            f"${pk[f'{p.spec.objective}_mean']:.3g} ({p.spec.objective})"
        )
        if p.groups[int(pk["group"])].deterministic:
            say("  (a deterministic replay: new seeds would replay the same requests, so the pick stands as simulated)")
        sv = outcome.saving
        if sv is not None:
            g = p.groups[sv["group"]]
            say(
                f"  saves {sv['saving']:.1%} against the cheapest all-on-demand configuration meeting the SLO "
                f"({_configuration(list(g.values.items()), scale, sv[scale])} at "
                f"${sv[f'{p.spec.objective}_mean']:.3g})"
            )
        for v in outcome.verification:
            mark = "confirmed" if v["confirmed"] else "NOT confirmed"
            how = "new seeds" if v["seeds"] == "new" else "cheaper neighbour"
            say(
                f"  {how}, {_short_configuration([str(v[a]) for a in axes], scale, v[scale])}: "
                f"should {v['expected'].removesuffix('s')}, "
                f"{v['observed']} ({mark}; {v['why']})"
            )
    else:
        typer.echo("no configuration meets the SLO")
        cm = outcome.closest_miss
        if cm is None:
            say("every configuration was ruled out before simulation (the reasons are above)")
        else:
            g = p.groups[int(cm["group"])]
            say(
                f"closest miss: {_configuration(list(g.values.items()), scale, cm[scale])}: "
                f"{cm['why']} ({cm['shortfall']:.2f}x the target)"
            )
    typer.echo(f"wrote {out_dir}/ (ranking, evaluated, frontier, runs .parquet)" + (f" and {plot}" if plot else ""))


def _write_manifests(path: Path, p: Any, pick: dict[str, Any] | None, plan_file: Path) -> None:
    """The pick as manifests (`sim.scenario.exporter`); no pick: nothing written, and the command says so."""
    from sim.atomic import atomic_file
    from sim.scenario.exporter import export_manifests, render_manifests
    from sim.studies.plan import pick_scenario

    if pick is None:
        typer.echo(
            f"--manifests {path}: no configuration meets the SLO, so there is no pick to write (nothing written)", err=True
        )
        return
    name = re.sub(r"[^a-z0-9-]+", "-", p.name.lower()).lstrip("-0123456789")[:53].rstrip("-") or "llm"
    docs, notes = export_manifests(pick_scenario(p, pick), name=name)
    with atomic_file(path, "--manifests") as tmp:
        tmp.write_text(render_manifests(docs, notes, f"the pick of {plan_file}"))
    typer.echo(f"wrote {path}: the pick as {', '.join(d['kind'] for d in docs)}", err=True)


def say(text: str) -> None:
    """A line of prose, wrapped at 100 columns (continuations indented under it)."""
    indent = " " * (len(text) - len(text.lstrip()) + 2)
    typer.echo(textwrap.fill(text, width=100, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))


def _confidence(p: Any) -> str:
    """How sure the verdicts are, in words: a deterministic replay has no spread to be confident over, and one
    seed of a random scenario gives a value, not an interval."""
    n = len(p.sweep.seeds)
    fixed = [g.deterministic for g in p.groups]
    if all(fixed):
        return "one deterministic replay per configuration: " + seed_note([])
    if n == 1:
        return "one seed per configuration: each verdict on that seed's value, with no confidence interval"
    some = "; one seed where the seed changes nothing" if any(fixed) else ""
    return f"{p.spec.confidence:.0%} confidence over {n} seeds{some}"


def _plot(outcome: Any, p: Any, path: Path) -> None:
    from sim.results.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ev = outcome.evaluated
    objective = f"{p.spec.objective}_mean"
    for gi, grp in ev.groupby("group"):
        label = ", ".join(str(v) for v in p.groups[int(gi)].values.values()) or "configurations"
        ax.scatter(grp["p99_ttft_ms_mean"] / 1e3, grp[objective], label=label, s=24)
    fr = outcome.frontier
    if len(fr):
        ax.plot(fr["p99_ttft_ms_mean"] / 1e3, fr[objective], color="0.3", lw=1, label="Pareto frontier")
    if p.spec.slo.p99_ttft_ms is not None:
        ax.axvline(p.spec.slo.p99_ttft_ms / 1e3, color="tab:red", ls="--", lw=1, label="p99 TTFT target")
    if outcome.pick is not None:
        ax.scatter(
            [outcome.pick["p99_ttft_ms_mean"] / 1e3],
            [outcome.pick[objective]],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="pick",
        )
    ax.set(
        xscale="log",
        xlabel="p99 TTFT (s, mean over seeds)",
        ylabel=p.spec.objective.replace("_", " "),
        title=f"fleetsim plan {p.name}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)  # (through a temporary file: a full disk is one line and no half image)
