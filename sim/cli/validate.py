"""`fleetsim validate`: replay a real serving run and say how far the simulated latencies are from the measured ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import ForceOpt, check_new_file, check_out_file, emit_json
from sim.errors import FleetsimError


def _columns(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        field, sep, name = item.partition("=")
        if not sep or not field.strip() or not name.strip():
            raise FleetsimError(f"--columns: each entry must be FIELD=COLUMN (got {item!r})")
        if field.strip() in out:
            raise FleetsimError(f"--columns: field {field.strip()!r} given twice (got {text!r})")
        out[field.strip()] = name.strip()
    return out


def validate(
    run_log: Annotated[
        Path, typer.Argument(help="A run folder (requests.jsonl + meta.json), a vllm bench serve JSON, or a CSV.")
    ],
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario YAML with the run's model, GPU, TP and engine (default: the run's meta.json).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario key: PATH=VALUE (repeatable).")] = None,
    layout: Annotated[str, typer.Option(help="auto, requests, vllm-bench or csv.")] = "auto",
    columns: Annotated[
        str, typer.Option(help="csv layout: FIELD=COLUMN pairs, comma-separated (fields: arrival, prompt, output, ttft, e2e).")
    ] = "",
    time_unit: Annotated[str, typer.Option(help="csv layout: unit of the time columns (s, ms, us).")] = "s",
    kv_blocks: Annotated[
        str, typer.Option(help="computed (fleetsim sizes the KV cache) or logged (vLLM's count from meta.json).")
    ] = "computed",
    warm_prompts: Annotated[
        bool | None,
        typer.Option(
            "--warm-prompts/--cold-prompts",
            help="The server had served the same prompts just before (a benchmark rerun): their blocks start in the "
            "prefix cache (default: meta.json's benchmark.prompts_served_before, else cold).",
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the CDFs and time series side by side to this PNG.")] = None,
    by_arrival: Annotated[
        int, typer.Option(help="Also compare mean TTFT, TPOT and E2E over this many groups of requests in arrival order.")
    ] = 0,
    by_batch: Annotated[
        int,
        typer.Option(
            help="Also compare mean TPOT over this many groups of the requests by the batch they decoded in, with the "
            "difference a running request a step."
        ),
    ] = 0,
    by_prompt: Annotated[
        int,
        typer.Option(
            help="Also compare mean TTFT over this many groups of the requests by prompt length, with a line TTFT = a + "
            "b x prompt tokens fitted to each side (b: the prefill's price; a: what every request pays)."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    force: ForceOpt = False,
) -> None:
    """Replay a real run's requests on its setup and compare TTFT, TPOT, ITL and E2E with the measured ones."""
    import numpy as np

    from sim.scenario.config import apply_sets
    from sim.studies.validate import validate as run_validation
    from sim.workload.runlog import read_run_log
    from sim.yaml_input import check_kind, read_yaml

    if plot is not None:
        if plot.suffix.lower() != ".png":  # (it is drawn as a PNG, whatever the name says)
            raise FleetsimError(f"--plot {plot}: the file name must end in .png (the CDFs are drawn as a PNG)")
        check_out_file(plot, "--plot")
        check_new_file(plot, "--plot", force)
    if by_arrival < 0:
        raise FleetsimError(f"--by-arrival: groups must be >= 1, or 0 for none (got {by_arrival})")
    if by_batch < 0:
        raise FleetsimError(f"--by-batch: groups must be >= 1, or 0 for none (got {by_batch})")
    if by_prompt < 0:
        raise FleetsimError(f"--by-prompt: groups must be >= 1, or 0 for none (got {by_prompt})")
    log = read_run_log(run_log, layout=layout, columns=_columns(columns), time_unit=time_unit)
    if by_arrival > len(log.trace):
        raise FleetsimError(
            f"--by-arrival: {by_arrival} groups of {len(log.trace)} requests ({log.source}); at most one group a request"
        )
    for option, value, default in (("--columns", columns, ""), ("--time-unit", time_unit, "s")):
        if value != default and log.layout != "csv":
            raise FleetsimError(f"{option}: for the csv layout only ({log.source} reads as {log.layout}; got {value!r})")
    raw: dict[str, Any] | None = None
    base_dir = None
    if scenario is not None:
        loaded = read_yaml(scenario)
        check_kind(scenario, loaded, expected="scenario")
        if not isinstance(loaded, dict):
            raise FleetsimError(f"{scenario}: a scenario must be a YAML mapping")
        raw, base_dir = loaded, scenario.parent
    if set_:
        if raw is None:
            from sim.studies.validate import log_scenario

            if log.meta is None:
                raise FleetsimError(f"{log.source}: --set needs --scenario or a meta.json beside the log")
            raw = log_scenario(log)[0]
        raw = apply_sets(raw, set_)
    given_as = f"{scenario}{' (with --set)' if set_ else ''}" if scenario is not None else "--set (over meta.json's scenario)"
    cmp = run_validation(log, raw, kv_blocks=kv_blocks, base_dir=base_dir, given_as=given_as, warm_prompts=warm_prompts)
    series = cmp.series
    drift = None
    if series is not None:
        drift = {
            c: {
                "real_mean": float(series[f"real_{c}"].mean()),
                "sim_mean": float(series[f"sim_{c}"].mean()),
                "mean_abs_diff": float(np.abs(series[f"real_{c}"] - series[f"sim_{c}"]).mean()),
            }
            for c in ("running", "waiting", "kv_use")
        }
    from sim.studies.validate import by_arrival as arrival_groups
    from sim.studies.validate import by_batch as batch_groups
    from sim.studies.validate import by_prompt as prompt_groups

    groups = _grouped("--by-arrival", arrival_groups, log, cmp, by_arrival)
    batches = _grouped("--by-batch", batch_groups, log, cmp, by_batch)
    prompts = _grouped("--by-prompt", prompt_groups, log, cmp, by_prompt)
    if plot is not None:
        _write_plot(plot, log, cmp)
    summary = {
        "run_log": log.source,
        "layout": log.layout,
        "requests": len(log.trace),
        "dropped": log.dropped,
        "scenario": cmp.result.meta["scenario"] if cmp.result is not None else None,
        "kv_blocks": cmp.kv_blocks,
        "metrics": cmp.rows,
        "time_series": drift,
        "notes": cmp.notes,
    }
    if groups is not None:
        summary["by_arrival"] = groups
    if batches is not None:
        summary["by_batch"] = batches
    if prompts is not None:
        summary["by_prompt"] = prompts
    if as_json:
        emit_json(summary)
        return
    blocks = cmp.kv_blocks
    logged = f", vLLM logged {blocks['logged_server']:,}" if blocks["logged_server"] is not None else ""
    if blocks["logged_server"] is not None and blocks["logged"] != blocks["logged_server"]:
        logged += f" ({blocks['logged']:,} a virtual engine)"
    left_out = f"; {log.dropped:,} left out: no token (failed or aborted)" if log.dropped else ""
    typer.echo(f"fleetsim validate: {len(log.trace)} requests from {log.source} ({log.layout}{left_out})")
    typer.echo(f"  KV cache: {blocks['simulated']:,} blocks simulated ({kv_blocks}){logged}")
    figures = [
        (r["metric"].upper(), r["stat"], _ms(r["real_s"]), _ms(r["sim_s"]), "" if r["error"] is None else f"{r['error']:+.1%}")
        for r in cmp.rows
    ]
    wide = max([14] + [len(c[k]) + 2 for c in figures for k in (2, 3)])  # (a column as wide as its widest figure)
    werr = max([9] + [len(c[4]) + 2 for c in figures])
    typer.echo(f"  {'metric':<7}{'stat':<6}{'real':>{wide}}{'fleetsim':>{wide}}{'error':>{werr}}")
    for metric, stat, real, simulated, err in figures:
        typer.echo(f"  {metric:<7}{stat:<6}{real:>{wide}}{simulated:>{wide}}{err:>{werr}}")
    if drift is not None:
        typer.echo("  over time (the run's ticks)   real mean   fleetsim mean   mean |diff|")
        for c, d in drift.items():
            typer.echo(f"    {c:<26}{d['real_mean']:>10.2f}{d['sim_mean']:>16.2f}{d['mean_abs_diff']:>14.2f}")
    if groups is not None:
        head = f"    {'by arrival (mean)':<20}{'requests':>8}   {'TTFT real / fleetsim / error':<36}  {'TPOT real / fleetsim / error':<36}  E2E error"
        typer.echo(head)
        for g in groups:
            cells = []
            for m in ("ttft", "tpot"):
                got = g.get(m)
                cells.append(
                    "-"
                    if got is None
                    else f"{_ms(got['real_s'])} / {_ms(got['sim_s'])} / "
                    + ("-" if got["error"] is None else f"{got['error']:+.1%}")
                )
            e2e = g.get("e2e")
            e2e_err = "-" if e2e is None or e2e["error"] is None else f"{e2e['error']:+.1%}"
            span = f"{g['from_s']:.1f}-{g['to_s']:.1f} s"
            typer.echo(f"    {span:<20}{g['requests']:>8}   {cells[0]:<36}  {cells[1]:<36}  {e2e_err:>9}")
    if batches is not None:
        typer.echo(
            f"    {'by decode batch':<20}{'requests':>8}   {'batch real / fleetsim':<22}  {'TPOT real / fleetsim / error':<36}  a running request a step"
        )
        for g in batches:
            span = f"{g['from_batch']:.1f}-{g['to_batch']:.1f}"
            sim_b = "-" if g["batch"]["sim"] is None else f"{g['batch']['sim']:.1f}"
            t = g["tpot"]
            err = "-" if t["error"] is None else f"{t['error']:+.1%}"
            cell = f"{_ms(t['real_s'])} / {_ms(t['sim_s'])} / {err}"
            batch = f"{g['batch']['real']:.1f} / {sim_b}"
            gap = f"{g['gap_per_running_s'] * 1e6:+,.0f} µs"
            typer.echo(f"    {span:<20}{g['requests']:>8}   {batch:<22}  {cell:<36}  {gap:>10}")
    if prompts is not None:
        typer.echo(f"    {'by prompt (tokens)':<20}{'requests':>8}   TTFT real / fleetsim / error")
        for g in prompts["groups"]:
            t = g["ttft"]
            err = "-" if t["error"] is None else f"{t['error']:+.1%}"
            span = f"{g['from_tokens']:,}-{g['to_tokens']:,}"
            typer.echo(f"    {span:<20}{g['requests']:>8}   {_ms(t['real_s'])} / {_ms(t['sim_s'])} / {err}")
        if prompts["line"]["real"] is None:
            typer.echo("    TTFT line: none (the requests' prompts are all one length: no slope to fit)")
        for side, name in (("real", "real"), ("sim", "fleetsim")):
            line = prompts["line"][side]
            if line is not None:
                typer.echo(
                    f"    TTFT line, {name:<8} {line['intercept_s'] * 1e3:,.1f} ms + {line['s_per_token'] * 1e6:,.1f} µs a prompt token"
                )
    for note in cmp.notes:
        typer.echo(f"  note: {note}")
    if plot is not None:
        typer.echo(f"wrote {plot}")


def _grouped(option: str, groups: Any, log: Any, cmp: Any, bins: int) -> Any:
    """`--by-batch N` / `--by-prompt N`: the replay's groups (None for 0), a refusal named by the option."""
    if not bins:
        return None
    assert cmp.result is not None
    try:
        return groups(log, cmp.result, bins)
    except FleetsimError as refused:
        said = f"{option.removeprefix('--').replace('-', ' ')}: "  # ("by batch: ...")
        raise FleetsimError(f"{option}: {str(refused).removeprefix(said)} ({log.source})") from None


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _write_plot(path: Path, log: Any, cmp: Any) -> None:
    import numpy as np

    from sim.atomic import atomic_file
    from sim.results.plots import pyplot, validation_figure
    from sim.studies.validate import measured, per_request

    assert cmp.result is not None
    sim = {k: v[~np.isnan(v)] for k, v in per_request(cmp.result).items()}
    real = {k: v[~np.isnan(v)] for k, v in measured(log).items()}
    if log.itl_s is not None and cmp.result.itl.count:
        real["itl"] = log.itl_s
        sim["itl"] = np.array([cmp.result.itl.percentile(q) for q in np.linspace(0, 100, 1001)])
    fig = validation_figure(real, sim, cmp.series, title=f"{Path(log.source).parent.name or log.source}: real vs fleetsim")
    with atomic_file(path, "--plot") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)
