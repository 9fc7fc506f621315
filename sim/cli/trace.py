"""`fleetsim trace ...`: inspect, generate, convert and merge request traces."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")

from sim.cli.common import ForceOpt, check_new_file, check_plot_path, check_seed, emit_json, input_at, user_errors
from sim.errors import FleetsimError
from sim.streams import RunStreams
from sim.workload import load_trace
from sim.workload import transforms as tf
from sim.workload.compressed import plain_name
from sim.workload.jobs import label
from sim.workload.stats import describe
from sim.workload.synthetic import generate, parse_lengths, parse_spec
from sim.workload.writer import check_trace_path, write_trace
from sim.yaml_input import read_yaml

trace_app = typer.Typer(help="Inspect, generate, convert and merge request traces.", no_args_is_help=True)

FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="azure | burstgpt | mooncake | bailian | vidur | canonical | generic | vllm-bench | otel (default: detect).",
    ),
]
ColumnsOpt = Annotated[str | None, typer.Option(help="Generic format: arrival_at_s=COL,prompt_tokens=COL,output_tokens=COL.")]
TimeUnitOpt = Annotated[str, typer.Option(help="Generic format: s | ms | us | ns | datetime.")]
ModelOpt = Annotated[str | None, typer.Option(help="BurstGPT: keep only this Model (e.g. GPT-4).")]


KlassOpt = Annotated[str | None, typer.Option(help="Label every request: interactive | batch.")]
PriorityOpt = Annotated[int | None, typer.Option(help="Label every request with this priority (lower is served first).")]
DeadlineOpt = Annotated[float | None, typer.Option(help="Batch: the job is due this many seconds after its first arrival.")]
JobOpt = Annotated[str | None, typer.Option(help="Batch: the job id of every request.")]


def _columns(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    mapping = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise FleetsimError(f"--columns must be CANONICAL=SOURCE pairs separated by commas (got {part!r})")
        if key.strip() in mapping:
            raise FleetsimError(f"--columns: {key.strip()!r} is given twice (got {text!r})")
        mapping[key.strip()] = value.strip()
    return mapping


def _load(path: Path, fmt: str | None, columns: str | None, time_unit: str, model: str | None) -> pd.DataFrame:
    return load_trace(path, format=fmt, columns=_columns(columns), time_unit=time_unit, model=model)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


@trace_app.command()
@user_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="A trace file.", metavar="FILE")],
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = "s",
    model: ModelOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: arrivals per minute and token histograms.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    force: ForceOpt = False,
) -> None:
    """Requests, duration, rate, burstiness (inter-arrival CV, per-minute peak/mean) and token statistics."""
    if plot is not None:
        check_plot_path(plot, force)
    frame = _load(file, fmt, columns, time_unit, model)
    stats = describe(frame)
    stats["format"] = frame.attrs.get("format")
    for key in ("dropped_failed", "dropped_other_models"):
        if key in frame.attrs:
            stats[key] = frame.attrs[key]
    if plot is not None:
        from sim.results.plots import plot_trace

        plot_trace(frame, plot, title=str(file))
    if as_json:
        emit_json(stats)
        return
    typer.echo(f"{file} ({stats['format']})")
    for key, value in stats.items():
        if key != "format":
            typer.echo(f"  {key:<24}{_fmt(value)}")


@trace_app.command()
@user_errors
def gen(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet).")],
    spec: Annotated[
        Path | None, typer.Option(help="YAML spec: arrivals, prompt_tokens, output_tokens, duration_s | n_requests, seed.")
    ] = None,
    process: Annotated[str, typer.Option(help="poisson | gamma | onoff | diurnal.")] = "poisson",
    rate: Annotated[float | None, typer.Option(help="Mean requests/s (onoff: the on-period rate).")] = None,
    cv: Annotated[float | None, typer.Option(help="gamma: inter-arrival CV.")] = None,
    off_rate: Annotated[float, typer.Option(help="onoff: rate in off periods.")] = 0.0,
    mean_on_s: Annotated[float | None, typer.Option(help="onoff: mean on-period length.")] = None,
    mean_off_s: Annotated[float | None, typer.Option(help="onoff: mean off-period length.")] = None,
    amplitude: Annotated[float, typer.Option(help="diurnal: relative amplitude of the sinusoid.")] = 0.5,
    period_s: Annotated[float, typer.Option(help="diurnal: period of the sinusoid.")] = 86_400.0,
    rate_table: Annotated[str | None, typer.Option(help="diurnal: CSV of window_start_s, rate (e.g. ServeGen).")] = None,
    time_scale: Annotated[float, typer.Option(help="diurnal rate table: compress its clock by this factor.")] = 1.0,
    duration_s: Annotated[float | None, typer.Option(help="Length of the trace in seconds.")] = None,
    requests: Annotated[int | None, typer.Option(help="Number of requests (instead of --duration-s).")] = None,
    prompt: Annotated[
        str, typer.Option(help="fixed:N | uniform:LOW:HIGH | lognormal:MEAN:CV[:MAX] | empirical:TRACE:COLUMN")
    ] = "lognormal:1024:1.0",
    output: Annotated[str, typer.Option(help="Output-length distribution, same forms as --prompt.")] = "lognormal:256:1.0",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    klass: KlassOpt = None,
    priority: PriorityOpt = None,
    deadline_s: DeadlineOpt = None,
    job_id: JobOpt = None,
    force: ForceOpt = False,
) -> None:
    """Write a seeded synthetic trace (same spec and seed => the same file)."""
    _check_gen_options(ctx, spec=spec is not None, process=process)
    check_trace_path(out, "--out")  # before any work
    base_dir = Path(".")
    if spec is not None:
        parsed = parse_spec(read_yaml(spec), where=str(spec))
        base_dir = spec.parent
    else:
        arrivals: dict[str, Any] = {"process": process}
        if process in ("poisson", "gamma"):
            arrivals |= {"rate_per_s": rate, "cv": cv} if process == "gamma" else {"rate_per_s": rate}
        elif process == "onoff":
            arrivals |= {"on_rate_per_s": rate, "off_rate_per_s": off_rate, "mean_on_s": mean_on_s, "mean_off_s": mean_off_s}
        elif process == "diurnal":
            arrivals |= {
                "mean_rate_per_s": rate,
                "amplitude": amplitude,
                "period_s": period_s,
                "rate_table": rate_table,
                "time_scale": time_scale,
            }
        else:
            raise FleetsimError(f"--process must be poisson, gamma, onoff or diurnal (got {process!r}); spikes need --spec")
        raw = {
            "arrivals": arrivals,
            "prompt_tokens": parse_lengths(prompt).model_dump(),
            "output_tokens": parse_lengths(output).model_dump(),
            "duration_s": duration_s,
            "n_requests": requests,
            "seed": seed,
        }
        parsed = parse_spec(raw, where="trace gen")
    read = [spec] if spec is not None else []
    read += [base_dir / x.trace for x in (parsed.prompt_tokens, parsed.output_tokens) if x.dist == "empirical"]
    rate_table_file = getattr(parsed.arrivals, "rate_table", None)
    read += [base_dir / rate_table_file] if rate_table_file is not None else []
    _not_read(out, read, "--out")
    check_new_file(out, "--out", force)
    frame = generate(parsed, base_dir=base_dir)
    frame = label(frame, klass=klass, priority=priority, deadline_s=deadline_s, job_id=job_id, source="trace gen")
    write_trace(frame, out, "--out")
    stats = describe(frame)
    typer.echo(
        f"wrote {out}: {stats['requests']:,} requests over {stats['duration_s']:,.1f} s, rate {_fmt(stats['mean_rate_per_s'])}/s, "
        f"IAT CV {_fmt(stats['iat_cv'])}, per-minute peak/mean {_fmt(stats['peak_to_mean_per_min'])}"
    )


def _not_read(dst: Path, sources: Iterable[str | Path], label: str = "") -> None:
    """The trace written is none of the files the command reads: written over its input (convert a.csv a.csv
    --sample 0.1, merge a.csv a.csv=batch, gen --prompt empirical:a.csv:prompt_tokens --out a.csv), the input was
    replaced by the output, and what the output left out was lost."""
    source = input_at(dst, sources)
    if source is not None:
        head = f"{label} {dst}" if label else str(dst)
        raise FleetsimError(f"{head}: is a file this command reads ({source}); write the output to another file")


# trace gen's options that describe the arrivals, lengths and seed (a --spec gives them all), and the processes that
# read each arrival option
_GEN_SPEC_OPTIONS = (
    "process", "rate", "cv", "off_rate", "mean_on_s", "mean_off_s", "amplitude", "period_s", "rate_table", "time_scale",
    "duration_s", "requests", "prompt", "output", "seed",
)  # fmt: skip
_GEN_PROCESS_OPTIONS = {
    "cv": ("gamma",),
    "off_rate": ("onoff",),
    "mean_on_s": ("onoff",),
    "mean_off_s": ("onoff",),
    "amplitude": ("diurnal",),
    "period_s": ("diurnal",),
    "rate_table": ("diurnal",),
    "time_scale": ("diurnal",),
}


def _check_gen_options(ctx: typer.Context, *, spec: bool, process: str) -> None:
    """An option trace gen would not read is refused, not ignored: every arrival and length option beside --spec
    (the spec gives them), and another process's options (--cv with poisson: the trace looked like one of CV 3)."""

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name != "DEFAULT"

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    if spec:
        extra = next((name for name in _GEN_SPEC_OPTIONS if given(name)), None)
        if extra is not None:
            raise FleetsimError(
                f"{flag(extra)}: not read with --spec (the spec gives the arrivals, lengths, duration and seed); set it in "
                "the spec instead"
            )
        return
    for name, processes in _GEN_PROCESS_OPTIONS.items():
        if given(name) and process not in processes:
            raise FleetsimError(f"{flag(name)}: only --process {' or '.join(processes)} reads it (got --process {process})")


@trace_app.command()
@user_errors
def convert(
    src: Annotated[Path, typer.Argument(help="The trace to read.", metavar="SRC")],
    dst: Annotated[Path, typer.Argument(help="The file to write (.csv or .parquet).", metavar="DST")],
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = "s",
    model: ModelOpt = None,
    start_s: Annotated[float | None, typer.Option(help="Keep arrivals at or after this time (s from the first).")] = None,
    end_s: Annotated[float | None, typer.Option(help="Keep arrivals before this time.")] = None,
    rate_scale: Annotated[float | None, typer.Option(help="Multiply the arrival rate (compress time).")] = None,
    sample: Annotated[float | None, typer.Option(help="Keep each request with this probability.")] = None,
    max_context: Annotated[int | None, typer.Option(help="Clip prompt + output to this many tokens.")] = None,
    repeat: Annotated[int | None, typer.Option(help="Concatenate this many copies back to back.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --sample.")] = 0,
    force: ForceOpt = False,
) -> None:
    """Read any supported format, apply transforms (window, rate, sample, clip, repeat), write canonical CSV/Parquet."""
    check_seed(seed)
    check_trace_path(dst)
    _not_read(dst, [src])
    check_new_file(dst, "DST", force)
    frame = _load(src, fmt, columns, time_unit, model)
    if start_s is not None or end_s is not None:
        frame = tf.window(frame, start_s=start_s or 0.0, end_s=end_s)
    if rate_scale is not None:
        frame = tf.scale_rate(frame, rate_scale)
    if sample is not None:
        frame = tf.subsample(frame, sample, RunStreams(seed).generator("trace_sample"))
    if max_context is not None:
        frame = tf.clip_tokens(frame, max_context)
    if repeat is not None:
        frame = tf.repeat(frame, repeat)
    write_trace(frame, dst)
    typer.echo(f"wrote {dst}: {len(frame):,} requests")


@trace_app.command()
@user_errors
def merge(
    dst: Annotated[Path, typer.Argument(help="The file to write (.csv or .parquet).", metavar="DST")],
    inputs: Annotated[
        list[str],
        typer.Argument(help="FILE=KLASS pairs (KLASS interactive or batch), or FILE with --klass.", metavar="FILE=KLASS..."),
    ],
    klass: Annotated[str | None, typer.Option(help="The class of inputs given without =KLASS.")] = None,
    priority: Annotated[
        int | None, typer.Option(help="Priority of batch inputs that carry none (default 1; interactive 0).")
    ] = None,
    deadline_s: Annotated[
        float | None, typer.Option(help="Batch inputs without deadlines: due this long after their first arrival.")
    ] = None,
    job_id: Annotated[
        str | None, typer.Option(help="Job id of batch inputs that carry none (default: the file's name without suffix).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Interleave traces by arrival time, labelling each request's klass by its source (batch inputs: job, priority, deadline)."""
    check_trace_path(dst)
    frames: dict[str, pd.DataFrame] = {}
    klasses: dict[str, str] = {}
    for item in inputs:
        path, sep, name = item.rpartition("=")
        if not sep:
            path, name = item, klass or ""
            if not name:
                raise FleetsimError(f"merge inputs are FILE=KLASS, or FILE with --klass (got {item!r})")
        if not path:
            raise FleetsimError(f"merge inputs are FILE=KLASS (got {item!r})")
        _not_read(dst, [path])
        frame = load_trace(path)
        if name == "batch":
            frame = label(
                frame,
                klass="batch",
                priority=priority if "priority" not in frame.columns and priority is not None else None,
                deadline_s=deadline_s if "deadline_at_s" not in frame.columns else None,
                job_id=(plain_name(Path(path)).stem if job_id is None else job_id) if "job_id" not in frame.columns else None,
                source=path,
            )
        key = path if path not in frames else f"{path} (input {len(frames) + 1})"
        frames[key] = frame
        klasses[key] = name
    check_new_file(dst, "DST", force)
    write_trace(tf.merge(frames, klass=klasses), dst)
    typer.echo(f"wrote {dst}: {sum(len(f) for f in frames.values()):,} requests")


@trace_app.command(name="from-metrics")
@user_errors
def from_metrics(
    requests: Annotated[Path, typer.Option(help="Range query: sum(rate(vllm:request_success_total[1m])).")],
    prompt_buckets: Annotated[Path, typer.Option(help="sum by (le) (increase(vllm:request_prompt_tokens_bucket[W])).")],
    output_buckets: Annotated[Path, typer.Option(help="sum by (le) (increase(vllm:request_generation_tokens_bucket[W])).")],
    out: Annotated[Path, typer.Option(help="The generator spec to write (YAML); its rate table goes beside it.")],
    prompt_tokens: Annotated[Path | None, typer.Option(help="Range query: sum(rate(vllm:prompt_tokens_total[1m])).")] = None,
    output_tokens: Annotated[Path | None, typer.Option(help="Range query: sum(rate(vllm:generation_tokens_total[1m])).")] = None,
    seed: Annotated[int, typer.Option(help="The spec's seed.")] = 0,
    force: ForceOpt = False,
) -> None:
    """A generator spec with Prometheus's observed request-rate curve and length distributions (then: trace gen --spec)."""
    import yaml

    from sim.atomic import atomic_file
    from sim.cli.common import check_out_file
    from sim.workload.prometheus import spec_from_metrics

    check_out_file(out, "--out")
    check_new_file(out, "--out", force)
    check_new_file(out.with_name(out.stem + ".rates.csv"), "--out (its rate table)", force)
    if out.suffix not in (".yaml", ".yml"):
        raise FleetsimError(f"--out {out}: a generator spec is a .yaml file")
    spec, starts, rates, notes = spec_from_metrics(
        requests=requests,
        prompt_buckets=prompt_buckets,
        output_buckets=output_buckets,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )
    table = out.with_name(out.stem + ".rates.csv")
    spec["arrivals"]["rate_table"] = table.name
    spec["seed"] = seed
    parse_spec(spec, where="the spec from the metrics")
    head = "".join(
        f"# {n}\n" for n in ["A generator spec from Prometheus's record of a vLLM fleet (fleetsim trace from-metrics):", *notes]
    )
    with atomic_file(out, "--out") as tmp_spec, atomic_file(table, "--out") as tmp_table:  # (the table lands first)
        tmp_table.write_text(
            "window_start_s,rate_per_s\n"
            + "".join(f"{t!r},{r!r}\n" for t, r in zip(starts.tolist(), rates.tolist(), strict=True))
        )
        tmp_spec.write_text(head + yaml.safe_dump(spec, sort_keys=False))
    typer.echo(f"wrote {out} and {table}")
    for note in notes:
        typer.echo(f"  {note}")
