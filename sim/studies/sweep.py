"""Sweeps: one base scenario, axes over any of its fields, several seeds; every point an independent run.

A sweep file (YAML):

    name: gpu-by-replicas          # default: the file's name
    base: default.yaml             # the scenario, relative to the sweep file
    set: {trace.sample: 0.05}      # overrides for every point (dotted paths, as `--set`)
    cross:                         # every combination of these
      fleet.gpu: [a100-80gb, h100-sxm]
      fleet.autoscaler.replicas: {from: 1, to: 4}          # inclusive; `step` defaults to 1
    zip:                           # these move together (equal lengths), crossed with the rest
      fleet.tp: [2, 4]
      engine.max_num_seqs: [128, 256]
    seeds: 3                       # seeds 0, 1, 2; or a list [0, 7, 42]

Points are enumerated in a fixed order (the cross axes as written, the last fastest, then the zip rows) and
each (point, seed) is one simulation, run on local worker processes or on a Dask cluster. Each finished run is
written at once, atomically, as one small Parquet file under `OUT/points/`, named by a digest of everything
that determines it (the base scenario's content, the point's values, the seed), so a sweep interrupted and
rerun with the same arguments computes only what is missing, and an edited base never reuses stale rows.
When every run is in, `OUT/results.parquet` holds a row per point and seed (the point's index and axis
values, the seed, every summary key, `wall_s`, and `error` for a point that cannot run: a model that does
not fit, say; a sweep whose every point fails is an error, and writes neither file) and `OUT/stats.parquet` the statistics across seeds (see `seed_stats`). A run depends only on
its scenario and seed, so any worker count and either executor give identical rows (`wall_s` aside). A
worker that dies loses only the run it had; it is retried (twice) and then recorded as an error row.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from sim.atomic import atomic_file
from sim.errors import FleetsimError, from_validation_error
from sim.spec import Frozen
from sim.studies.study_dir import MARKER, check_kind, check_owner, claim, study_owner
from sim.yaml_input import read_yaml

if TYPE_CHECKING:
    from sim.physics.hardware import GpuCatalog

STAT_METRICS = ("p99_ttft_ms", "p99_tpot_ms", "usd_per_1k_tokens", "throughput_utilization", "slo_attainment")
STRING_KEYS = frozenset({"api", "scenario", "fleet", "error", "batch_cost_method"})  # a summary's text figures
RETRIES = 2
# The finest relative precision a seeds-needed figure aims at: past a millionth, (z s / (precision mean))^2 counts more
# seeds than any sweep runs, and at 1e-300 it overflowed a float
MIN_PRECISION = 1e-6


class Range(Frozen):
    """An inclusive arithmetic range of axis values. Whole `from` and `step` give integers, counted exactly (a seed of
    15 digits was rounded to 12: `{from: 123456789012345, to: 123456789012347}` gave 123456789012000 three times)."""

    start: int | float = Field(alias="from")
    to: int | float
    step: int | float = 1

    @field_validator("start", "to", "step")
    @classmethod
    def _a_float(cls, v: int | float) -> int | float:
        if isinstance(v, int) and abs(v) > sys.float_info.max:
            raise ValueError(f"must be within +-{sys.float_info.max:.4g}")
        return v

    @model_validator(mode="after")
    def _sane(self) -> Range:
        if self.step <= 0:
            raise ValueError("step must be > 0")
        if self.to < self.start:
            raise ValueError("to must be >= from")
        if self._whole:
            too_many = (self._last - int(self.start)) // int(self.step) > 10_000
        else:
            too_many = (float(self.to) - float(self.start)) / self.step > 10_000
        if too_many:
            raise ValueError("more than 10,000 values")
        return self

    @property
    def _whole(self) -> bool:
        return all(float(x).is_integer() for x in (self.start, self.step))

    @property
    def _last(self) -> int:
        """The last whole value a whole range may reach (a float `to` a billionth short of it reaches it)."""
        return self.to if isinstance(self.to, int) else math.floor(self.to + 1e-9 * max(1.0, abs(self.to)))

    def values(self) -> list[Any]:
        if self._whole:  # (exact: integers past 2**53 or 12 digits are not rounded)
            start, step = int(self.start), int(self.step)
            return list(range(start, self._last + 1, step))
        n = round((self.to - self.start) / self.step) + 1
        vals = [float(f"{self.start + i * self.step:.12g}") for i in range(n)]
        return [v for v in vals if v <= self.to + 1e-9 * max(1.0, abs(self.to))]


AxisValues = list[Any] | Range


MAX_STUDY_SEED = 2**62  # a study's seeds (a plan verifies under seed + 1,000,000; a scenario's seed is < 2**63)


def check_seeds(v: int | list[int]) -> int | list[int]:
    """`seeds:` of a sweep or plan: a count (1 to 10,000) or a list of distinct seeds in [0, MAX_STUDY_SEED]."""
    if isinstance(v, int):
        if not 1 <= v <= 10_000:
            raise ValueError("must be between 1 and 10,000 (or a list of seeds)")
    else:
        if not v:
            raise ValueError("must not be empty")
        if any(not 0 <= s <= MAX_STUDY_SEED for s in v) or len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, >= 0 and <= 2**62 ({MAX_STUDY_SEED:,})")
    return v


def plain_name(v: str | None) -> str | None:
    """A study's name, which names its default --out folder (sweeps/NAME, plans/NAME): a name, not a path."""
    if v is not None and ("/" in v or "\\" in v or v.strip() in (".", "..")):
        raise ValueError("must be a plain name: it names the default output folder")
    if v is not None and any(not c.isprintable() for c in v):  # a NUL, a newline, a tab: not a folder name to type
        raise ValueError("must be a plain name of printable characters: it names the default output folder")
    return v


class SweepSpec(Frozen):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    plain_name_check = field_validator("name")(plain_name)
    base: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    cross: dict[str, AxisValues] = Field(default_factory=dict)
    zip: dict[str, AxisValues] = Field(default_factory=dict)
    seeds: int | list[int] = 1

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        return check_seeds(v)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Point:
    index: int
    values: dict[str, Any]  # axis path -> value
    consumers: tuple[str, ...] | None = (
        None  # what in its scenario draws from the seed (`sim.studies.determinism`); None: unknown
    )

    @property
    def deterministic(self) -> bool:
        """Its scenario gives the same records for every seed: one seed answers for all."""
        return self.consumers == ()


@dataclass(frozen=True)
class Sweep:
    name: str
    spec: SweepSpec
    base_raw: dict[str, Any]
    base_dir: Path
    points: list[Point]
    axes: list[str]
    seeds: list[int]
    trace_note: str | None = None  # with --trace FILE: what it made of the base scenario's trace (one line)
    source: str | None = None  # the sweep or plan file
    overrides: tuple[str, ...] = ()  # the command line's --trace and --set, as they own a folder (`sim.studies.study_dir`)
    # a point's axis values -> the scenario fields they set (a plan's `fleet.prefill_share` becomes the pools' replica
    # counts); None: the values are fields themselves
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def owner(self, kind: str = "sweep") -> dict[str, Any]:
        return study_owner(kind, self.name, self.source, self.overrides)

    def seeds_for(self, point: Point) -> list[int]:
        """The seeds a point runs under: all of them, or the first alone when the seed changes nothing in it."""
        return self.seeds[:1] if point.deterministic else self.seeds

    def runs(self) -> Iterator[tuple[Point, int]]:
        for point in self.points:
            for seed in self.seeds_for(point):
                yield point, seed

    @property
    def n_runs(self) -> int:
        return sum(len(self.seeds_for(p)) for p in self.points)

    def scenario_raw(self, point: Point, seed: int) -> dict[str, Any]:
        from sim.scenario.config import set_path

        raw = copy.deepcopy(self.base_raw)
        values = point.values if self.derive is None else self.derive(point.values)
        for path, value in {**self.spec.set, **values}.items():
            set_path(raw, path.split("."), value, label=f"sweep {path}")
        raw["seed"] = seed
        return raw

    def run_id(self, point: Point, seed: int) -> str:
        """What determines the run, digested: the scenario it runs (base, overrides, seed) and the content of every file
        it names (a trace, a model's config.json, a GPU catalog, a preset: a file edited since a point was stored is
        another run, and a resumed study runs it again)."""
        raw = self.scenario_raw(point, seed)
        text = json.dumps(raw, sort_keys=True, default=str)
        h = hashlib.sha256(text.encode())
        for name, digest in sorted(named_files(raw, self.base_dir).items()):
            h.update(f"\0{name}\0{digest}".encode())
        return h.hexdigest()[:20]


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> its content's digest, once a process


def named_files(raw: Any, base_dir: Path) -> dict[str, str]:
    """Every string in a scenario's raw data that names a file (from `base_dir`, as the scenario reads its paths, or
    absolute) -> a digest of its content. A catalog name names no file (unless a file of that name is there: its
    content then counts too, harmlessly)."""
    out: dict[str, str] = {}
    stack = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, str) and node and len(node) < 4096 and "\0" not in node:
            path = Path(node) if Path(node).is_absolute() else base_dir / node
            try:
                if not path.is_file():
                    continue
                st = path.stat()
            except (OSError, ValueError):  # (a name too long for a path, a value no file system takes)
                continue
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
            digest = _FILE_DIGESTS.get(key)
            if digest is None:
                h = hashlib.sha256()
                try:
                    with path.open("rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                except OSError:  # (unreadable: the run itself says so, naming it)
                    continue
                digest = _FILE_DIGESTS[key] = h.hexdigest()
            out[node] = digest
    return out


def _values(v: AxisValues) -> list[Any]:
    return v.values() if isinstance(v, Range) else list(v)


def read_spec(path: Path, model: type[Frozen], what: str) -> Any:
    """A sweep or plan file read and validated against its schema (one-line errors naming the file)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise FleetsimError(f"{path}: a {what} must be a YAML mapping (got {type(raw).__name__})")
    check_kind(path, raw, expected=what)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, where=str(path), data=raw) from None


def read_base(path: Path, base: str) -> tuple[dict[str, Any], Path]:
    """The base scenario a sweep or plan file names (relative to it): its raw data and its folder."""
    base_path = path.parent / base
    base_raw = read_yaml(base_path)
    if not isinstance(base_raw, dict):
        raise FleetsimError(f"{base_path}: a scenario must be a YAML mapping")
    return base_raw, base_path.parent


def swap_base_trace(
    base_raw: dict[str, Any], trace: str | Path | None, overrides: Mapping[str, Any], axes: Sequence[str]
) -> tuple[dict[str, Any], str | None]:
    """`--trace FILE` on a sweep's or plan's base scenario, as `fleetsim run` does it (`sim.scenario.config.with_trace_file`):
    the new base and a line on the trace as run once the study's `overrides` (its `set:`, and a plan's --set) apply."""
    if trace is None:
        return base_raw, None
    if not Path(trace).is_file():  # (as `fleetsim run --trace` says it, before a point is run or a folder made)
        raise FleetsimError(f"--trace {trace}: no such trace file")
    from sim.scenario.config import set_path, with_trace_file
    from sim.workload.transforms import trace_note

    swapped_raw, swapped, dropped = with_trace_file(base_raw, trace)
    final = copy.deepcopy(swapped_raw)
    for key, value in overrides.items():
        set_path(final, key.split("."), value, label=key)
    note = trace_note(str(trace), swapped, dropped, final.get("trace"))
    varying = [a for a in axes if a == "trace" or a.startswith("trace.")]
    if varying:
        note += f"; per point: {', '.join(varying)}"
    return swapped_raw, note


def check_axes(path: Path, blocks: Mapping[str, Mapping[str, Any]], *, valued: Sequence[str]) -> None:
    """Axis and override paths are dotted field names (no empty part, not the seed); the `valued` blocks'
    axes have at least one value."""
    for name, block in blocks.items():
        for key, vals in block.items():
            if not all(part.strip() for part in str(key).split(".")):
                raise FleetsimError(f"{path}: {name}.{key}: a path is field names joined by dots, with no empty part")
            if key == "seed":
                raise FleetsimError(f"{path}: seed is not an axis; give the seeds as `seeds:` (a count or a list)")
            if name in valued and not _values(vals):
                raise FleetsimError(f"{path}: {name}.{key}: no values")
            if name in valued and name != "zip":  # (a value twice runs its points twice; a zip pairs values by position)
                seen: set[str] = set()
                for v in _values(vals):
                    text = json.dumps(_same_value(v), sort_keys=True, default=str)
                    if text in seen:
                        raise FleetsimError(f"{path}: {name}.{key}: the value {v!r} is given twice")
                    seen.add(text)
    # a path given twice, or an axis inside another axis, runs with one of them silently winning
    where: dict[str, str] = {}
    for name, block in blocks.items():
        for key in block:
            if str(key) in where:
                raise FleetsimError(
                    f"{path}: {key} is both in {where[str(key)]} and in {name}; one would silently override the other"
                )
            where[str(key)] = name
    axes = sorted(str(k) for name, block in blocks.items() if name != "set" for k in block)
    for a in axes:
        for b in axes:
            if b.startswith(a + "."):
                raise FleetsimError(
                    f"{path}: the axes {a} ({where[a]}) and {b} ({where[b]}) overlap: {b}'s value would silently replace "
                    f"part of {a}'s; vary one of them"
                )
    zipped = blocks.get("zip") or {}
    if zipped and all(_values(v) for v in zipped.values()):
        rows = list(zip(*(_values(v) for v in zipped.values()), strict=False))
        seen_rows: dict[str, int] = {}
        for i, row in enumerate(rows):
            text = json.dumps(_same_value(list(row)), sort_keys=True, default=str)
            if text in seen_rows:
                raise FleetsimError(f"{path}: zip row {i} repeats row {seen_rows[text]} (its points would run twice)")
            seen_rows[text] = i


def _same_value(v: Any) -> Any:
    """A value in the form that makes equal values compare equal as text: a whole float as the integer it equals (1.0
    is 1), -0.0 as 0 (a scenario reads them alike)."""
    if isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {k: _same_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_same_value(x) for x in v]
    return v


def check_point(sweep: Sweep, point: Point, path: Path, where: str) -> Point:
    """A point's scenario is valid (the error names the file and the point); returned with what in it draws
    from the seed (`sim.studies.determinism.seed_consumers`)."""
    from sim.scenario.config import parse_config
    from sim.scenario.resolve import check_names
    from sim.studies.determinism import seed_consumers

    try:
        raw_point = sweep.scenario_raw(point, sweep.seeds[0])
    except FleetsimError as err:
        raise FleetsimError(f"{path}: {err}") from None
    scenario = parse_config(raw_point, where=where, base_dir=sweep.base_dir)
    try:  # a GPU or model name typo is the user's to fix now, not a point that "cannot run"
        check_names(scenario, base_dir=sweep.base_dir, gpus=_gpu_catalog(scenario.gpu_catalog, sweep.base_dir))
    except FleetsimError as err:
        raise FleetsimError(f"{where}: {err}") from None
    return Point(point.index, point.values, tuple(seed_consumers(scenario)))


def _gpu_catalog(extra: str | None, base_dir: Path) -> GpuCatalog:
    """The GPU catalog a point's scenario sees (the bundled one, or with its gpu_catalog file), read once per file."""
    path = None if extra is None else (Path(extra) if Path(extra).is_absolute() else base_dir / extra)
    stamp = path.stat().st_mtime_ns if path is not None and path.is_file() else 0
    return _read_gpu_catalog(path, stamp)


@functools.lru_cache(maxsize=8)
def _read_gpu_catalog(path: Path | None, _stamp: int) -> GpuCatalog:
    from sim.physics.hardware import load_gpu_catalog

    return load_gpu_catalog(path)


MAX_RUNS = 100_000


def check_size(path: Path, n_points: int, n_seeds: int) -> None:
    """A sweep's size, from its axes' lengths: at most MAX_RUNS runs (a cross product of long axes is refused
    before any of its points is built)."""
    if n_points * n_seeds > MAX_RUNS:
        raise FleetsimError(f"{path}: {n_points:,} points x {n_seeds:,} seeds is more than {MAX_RUNS:,} runs")


def load_sweep(path: str | Path, *, trace: str | Path | None = None) -> Sweep:
    """Read and check a sweep file (`trace`: `--trace FILE`, replacing the base scenario's trace file as
    `fleetsim run --trace` does); every point's scenario is validated now, so a typo in an axis stops the
    sweep before anything runs (one line naming the point and the field)."""
    path = Path(path)
    spec: SweepSpec = read_spec(path, SweepSpec, "sweep")
    base_raw, base_dir = read_base(path, spec.base)
    check_axes(path, {"set": spec.set, "cross": spec.cross, "zip": spec.zip}, valued=("cross", "zip"))
    base_raw, note = swap_base_trace(base_raw, trace, spec.set, [*spec.cross, *spec.zip])
    overlap = set(spec.cross) & set(spec.zip)
    if overlap:
        raise FleetsimError(f"{path}: {sorted(overlap)[0]} is both a cross and a zip axis")
    zip_lens = {axis: len(_values(v)) for axis, v in spec.zip.items()}
    if len(set(zip_lens.values())) > 1:
        raise FleetsimError(f"{path}: zip axes must have equal lengths (got {zip_lens})")
    cross_axes = list(spec.cross)
    cross_vals = [_values(spec.cross[a]) for a in cross_axes]
    zip_axes = list(spec.zip)
    n_points = math.prod(len(v) for v in cross_vals) * (next(iter(zip_lens.values())) if zip_lens else 1)
    check_size(path, n_points, len(spec.seed_list()))  # from the axes' lengths, before a point is built
    zip_rows = list(zip(*(_values(spec.zip[a]) for a in zip_axes), strict=True)) if zip_axes else [()]
    points: list[Point] = []
    for combo in itertools.product(*cross_vals):
        for zrow in zip_rows:
            points.append(
                Point(len(points), {**dict(zip(cross_axes, combo, strict=True)), **dict(zip(zip_axes, zrow, strict=True))})
            )
    overrides = () if trace is None else (f"--trace {Path(trace).resolve()}",)
    axes = cross_axes + zip_axes
    sweep = Sweep(spec.name or path.stem, spec, base_raw, base_dir, points, axes, spec.seed_list(), note, str(path), overrides)
    for i, point in enumerate(points):
        values = ", ".join(f"{k}={v!r}" for k, v in point.values.items()) or "the base"
        points[i] = check_point(sweep, point, path, f"{path}: point {point.index} ({values})")
    return sweep


# --- one run ---------------------------------------------------------------------------------------
def run_one(raw: dict[str, Any], base_dir: str, row: dict[str, Any], out_file: str) -> dict[str, Any]:
    """Simulate one (point, seed) and write its row to `out_file` atomically; a point that cannot run (the
    build refuses it) becomes a row with `error`. Runs in a worker process."""
    from sim.run.simulate import simulate
    from sim.scenario.config import parse_config

    start = time.perf_counter()
    row = {**row, "labels": json.dumps(list(row))}  # which columns name the run (the rest are its figures)
    try:
        scenario = parse_config(raw, where="sweep point", base_dir=Path(base_dir))
        if scenario.deployments:  # a platform: its totals, and each deployment's figures as `<name>.<key>`
            from sim.run.platform import simulate_platform

            row.update(flatten_platform(simulate_platform(scenario, base_dir=Path(base_dir)).summary()))
        else:
            row.update(flatten(simulate(scenario, base_dir=Path(base_dir)).summary()))
        row["error"] = None
    except FleetsimError as err:
        row["error"] = str(err)
    row["wall_s"] = time.perf_counter() - start
    write_row(row, Path(out_file))
    return row


def flatten(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}_{sub}"] = v
        else:
            out[key] = value
    return out


def flatten_platform(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A platform's summary as a sweep row: its totals (the keys a run's summary shares with it: the cost, the SLO's
    share, throughput utilization), then each deployment's flattened summary under `<name>.`."""
    out = flatten({k: v for k, v in summary.items() if k != "deployments"})
    for name, per in summary["deployments"].items():
        out.update({f"{name}.{k}": v for k, v in flatten(per).items()})
    return out


def _column(key: str, values: Sequence[Any]) -> Any:
    """A column of a point's row file: strings, whole numbers and booleans as they are, other numbers (and
    a missing figure) as float64; a mapping or list (an axis value) as its JSON text."""
    import pyarrow as pa

    vals = [json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in values]
    if key in STRING_KEYS or any(isinstance(v, str) for v in vals):
        return pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    if vals and all(isinstance(v, bool) for v in vals):
        return pa.array(vals, type=pa.bool_())
    if vals and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in vals):
        return pa.array(vals, type=pa.int64())
    return pa.array([np.nan if v is None else float(v) for v in vals], type=pa.float64())


def write_row(row: Mapping[str, Any], path: Path) -> None:
    """One row as a Parquet file, through a temporary file beside it (never a half-written file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: _column(k, [v]) for k, v in row.items()})
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


# --- running a sweep -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    key: str
    raw: dict[str, Any]
    base_dir: str
    row: dict[str, Any]
    out_file: str


Task = Callable[[dict[str, Any], str, dict[str, Any], str], dict[str, Any]]


def check_sweep_dir(out: Path, *, force: bool = False, owner: dict[str, Any] | None = None) -> None:
    """A sweep folder: new, empty, or one this study made (its marker names `owner`; `sim.studies.study_dir`)."""
    from sim.results.report import check_out_dir

    resolved = out.resolve()
    if resolved.exists() and resolved.is_dir():
        names = {p.name for p in resolved.iterdir()}
        if names and MARKER not in names and not force:
            raise FleetsimError(
                f"--out {out}: the folder holds files and is not a fleetsim sweep folder (no {MARKER}); "
                "pick another folder, or pass --force to write into it"
            )
        if MARKER in names:
            check_owner(out, owner, force=force)
            return
    check_out_dir(out, force=True)


def jobs_for(sweep: Sweep, out: Path) -> list[Job]:
    """One job per (point, seed) it runs under (`Sweep.seeds_for`)."""
    jobs = []
    for point, seed in sweep.runs():
        key = sweep.run_id(point, seed)
        row = {"point": point.index, **{axis: point.values[axis] for axis in sweep.axes}, "seed": seed, "run_id": key}
        jobs.append(Job(key, sweep.scenario_raw(point, seed), str(sweep.base_dir), row, str(out / "points" / f"{key}.parquet")))
    return jobs


def execute(
    jobs: Sequence[Job],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    task: Task = run_one,
    client: Any = None,
) -> pd.DataFrame:
    """Run the jobs whose row file is not there yet, on `client` (a Dask client: `cluster`), the cluster at
    `scheduler`, or `workers` local processes; return every job's row (in the jobs' order)."""
    todo = [j for j in jobs if not Path(j.out_file).exists()]
    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))

    def finished(_row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(jobs))

    if client is not None:
        _run_dask(todo, client, task, finished)
    elif scheduler is not None:
        with cluster(scheduler) as own:
            _run_dask(todo, own, task, finished)
    elif workers <= 1:
        for job in todo:
            finished(task(job.raw, job.base_dir, job.row, job.out_file))
    else:
        _run_processes(todo, workers, task, finished)
    return pd.concat([_read_row(j) for j in jobs], ignore_index=True)


def _read_row(job: Job) -> pd.DataFrame:
    """A run's stored row, labelled as this job: the file is named by the run's content, so an earlier sweep or
    plan (another enumeration, other axis names) may have written it; its figures hold, its labels are ours."""
    try:
        row = pd.read_parquet(job.out_file)
    except Exception as err:  # (pyarrow's errors are not OSError alone: ArrowInvalid for a file that is no Parquet)
        raise FleetsimError(
            f"{job.out_file}: a stored point that cannot be read ({str(err).splitlines()[0][:120]}); delete it and rerun "
            "(the point is simulated again)"
        ) from None
    labels = _check_row(row, job)
    row = row.drop(columns=[c for c in {*labels, *job.row, "labels"} if c in row.columns])
    front = {k: [json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v] for k, v in job.row.items()}
    return pd.concat([pd.DataFrame(front), row.reset_index(drop=True)], axis=1)


def _json_collection(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict | list)
    except json.JSONDecodeError:
        return False


def _check_row(row: pd.DataFrame, job: Job) -> list[str]:
    """A stored point as `run_one` writes it, or one line naming the file, the column and the value (a file edited, or
    left by another program, would otherwise end in a traceback or print its figures as results): one row; `labels`
    a JSON list of column names; every figure a number, finite and not negative (a summary's figures are counts,
    times, rates, shares and dollars), or missing; the text columns text. Returns the labels."""

    def bad(what: str) -> FleetsimError:
        return FleetsimError(f"{job.out_file}: a stored point {what}; delete it and rerun (the point is simulated again)")

    if len(row) != 1:
        raise bad(f"holds {len(row)} rows, not 1")
    # (run_one writes `error` on every row, and a run's or a platform's summary on a row without one: a file of other
    # columns was read as a point whose figures are all missing, and its columns joined the results)
    if "error" not in row:
        names = ", ".join(map(str, row.columns))
        raise bad(
            f"has no error column: not a point fleetsim wrote (its columns: {names[:80]}{'...' if len(names) > 80 else ''})"
        )
    failed = row["error"].iloc[0]
    if (failed is None or (isinstance(failed, float) and math.isnan(failed))) and "completed" not in row:
        raise bad("has neither an error nor a run's summary (no completed column)")
    labels: Any = []
    if "labels" in row:
        text = row["labels"].iloc[0]
        try:
            labels = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            labels = None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise bad(f"whose labels are not a JSON list of column names (got {str(text)[:60]!r})")
    named = {*labels, *job.row, "labels"}
    for column in row.columns:
        if column in named:
            continue
        value = row[column].iloc[0]
        value = value.item() if isinstance(value, np.generic) else value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if str(column).rsplit(".", 1)[-1] in STRING_KEYS:  # (a platform's deployments: `<name>.<key>`)
            if not isinstance(value, str):
                raise bad(f"whose {column} is not text (got {value!r})")
            continue
        if isinstance(value, bool | np.bool_) or (isinstance(value, str) and _json_collection(value)):
            continue  # (a figure that is a mapping or a list, a pool's bill say, is stored as its JSON text)
        if not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(value) or value < 0:
            raise bad(f"whose {column} is not a finite number >= 0 (got {value!r})")
    return [str(x) for x in labels]


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    task: Task = run_one,
    force: bool = False,
) -> pd.DataFrame:
    """Run every (point, seed) not already in `out`, then write and return the results (sorted by point, seed).
    A folder another study owns is refused unless `force` (`sim.studies.study_dir`)."""
    if (out / MARKER).exists():
        check_owner(out, sweep.owner(), force=force)
    with cluster(scheduler) as client:  # connected before anything is created
        claim(out, sweep.owner())
        # an earlier run's results (of this sweep as it was, perhaps edited since) until these are whole: an
        # interrupted rerun would otherwise leave them beside the new points, looking complete
        for name in ("results.parquet", "stats.parquet"):
            (out / name).unlink(missing_ok=True)
        rows = execute(jobs_for(sweep, out), workers=workers, progress=progress, task=task, client=client)
    rows = rows.sort_values(["point", "seed"], kind="stable").reset_index(drop=True)
    if "error" in rows and len(rows) and rows["error"].notna().all():
        # results made only of error rows would read as a finished sweep: refuse it (no results are left behind: the
        # earlier run's were removed before these ran)
        first = rows.iloc[0]
        raise FleetsimError(
            f"sweep {sweep.name}: all {len(sweep.points)} points failed ({len(rows)} runs); "
            f"point {first['point']}: {first['error']}"
        )
    stats = seed_stats(rows, sweep.axes)
    _write_frame(rows, out / "results.parquet")
    _write_frame(stats, out / "stats.parquet")
    return rows


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _failed_row(job: Job, why: str) -> dict[str, Any]:
    row = {**job.row, "labels": json.dumps(list(job.row)), "error": why, "wall_s": float("nan")}
    write_row(row, Path(job.out_file))
    return row


def _worker(task: Task, conn: Any) -> None:
    """A worker process: run the jobs it is sent, one at a time, until told to stop (None). Ctrl-C reaches the
    whole process group; the parent alone answers it (and ends the workers), so a worker ignores it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(("done", task(job.raw, job.base_dir, job.row, job.out_file)))
        except Exception as err:  # a bug in one run: reported, the worker goes on
            conn.send(("error", f"internal error: {type(err).__name__}: {err}"))


def _run_processes(todo: list[Job], workers: int, task: Task, finished: Callable[[dict[str, Any]], None]) -> None:
    """Local worker processes, each sent one run at a time, so the parent always knows which run a worker
    holds: a worker that dies loses that run only; it is retried (RETRIES times, then recorded as an error)
    and the worker replaced."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context()
    queue = list(reversed(todo))  # popped from the end: in order
    attempts = dict.fromkeys((j.key for j in todo), 0)
    procs: dict[int, tuple[Any, Any]] = {}  # slot -> (process, parent end of its pipe)
    busy: dict[int, Job] = {}

    def start(slot: int) -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(task, child), daemon=True)
        proc.start()
        child.close()
        procs[slot] = (proc, parent)

    try:
        for slot in range(min(workers, len(todo))):
            start(slot)
        while queue or busy:
            for slot, (_proc, conn) in procs.items():
                if slot not in busy and queue:
                    busy[slot] = queue.pop()
                    conn.send(busy[slot])
            ready = wait([c for _, c in procs.values()] + [p.sentinel for p, _ in procs.values()])
            for slot in list(procs):
                proc, conn = procs[slot]
                if conn in ready:
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):
                        kind, payload = "died", None
                    if kind != "died":
                        job = busy.pop(slot)
                        finished(payload if kind == "done" else _failed_row(job, payload))
                        continue
                if proc.sentinel in ready or not proc.is_alive():
                    job_or_none = busy.pop(slot, None)
                    proc.join()
                    conn.close()
                    if job_or_none is not None:
                        attempts[job_or_none.key] += 1
                        if attempts[job_or_none.key] > RETRIES:
                            why = f"worker died {attempts[job_or_none.key]} times running this point (exit {proc.exitcode})"
                            finished(_failed_row(job_or_none, why))
                        else:
                            queue.append(job_or_none)
                    del procs[slot]
                    if queue or busy:
                        start(slot)
    except BaseException:  # interrupted (or a bug): the runs in progress are lost anyway, end them now
        for proc, _conn in procs.values():
            proc.kill()
        for proc, _conn in procs.values():
            proc.join(timeout=5)
        for job in busy.values():  # a worker killed while writing its row leaves the temporary file: not a row
            out = Path(job.out_file)
            for part in out.parent.glob(f".{out.name}.*.part"):
                part.unlink(missing_ok=True)
        raise
    finally:
        for proc, conn in procs.values():
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
            conn.close()


CONNECT_TIMEOUT = "10s"


def connect(scheduler: str) -> Any:
    """A Dask client of the cluster at `scheduler`; one line if dask is missing or the cluster cannot be reached.
    Called before a study creates its folder, so a dead address leaves nothing behind."""
    try:
        from distributed import Client
    except ImportError:
        raise FleetsimError("--scheduler needs dask.distributed: pip install 'fleetsim[dask]'") from None
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as err:
        raise FleetsimError(f"--scheduler {scheduler}: cannot connect ({' '.join(str(err).split())[:120]})") from None


@contextlib.contextmanager
def cluster(scheduler: str | None) -> Iterator[Any]:
    """The client of `connect(scheduler)` for the duration (None without a scheduler), closed at the end."""
    client = connect(scheduler) if scheduler is not None else None
    try:
        yield client
    finally:
        if client is not None:
            client.close()


def _run_dask(todo: list[Job], client: Any, task: Task, finished: Callable[[dict[str, Any]], None]) -> None:
    from distributed import as_completed

    futures = {
        client.submit(task, j.raw, j.base_dir, j.row, j.out_file, key=f"fleetsim-{j.key}", retries=RETRIES, pure=False): j
        for j in todo
    }
    for fut in as_completed(list(futures)):  # type: ignore[no-untyped-call]
        job = futures[fut]
        try:
            finished(fut.result())
        except Exception as err:  # the scheduler gave up on it (worker deaths beyond the retries, or a bug)
            finished(_failed_row(job, f"{type(err).__name__}: {err}"))


# --- statistics across seeds -----------------------------------------------------------------------
def seed_stats(
    rows: pd.DataFrame,
    axes: Sequence[str],
    *,
    precision: float = 0.05,
    confidence: float = 0.95,
    metrics: Sequence[str] = STAT_METRICS,
) -> pd.DataFrame:
    """Per point: for each of `metrics` (default STAT_METRICS) the mean over seeds, a `confidence` interval of the mean by the
    bootstrap (scipy.stats.bootstrap, percentile method, 9,999 resamples, a fixed generator: the same rows give
    the same interval), and the seeds needed for the interval's half-width to be within `precision` of the
    mean (normal approximation from the sample's spread: n = (z s / (precision |mean|))^2, at least 2);
    `seeds_needed` is the largest over the metrics."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2))
    out = []
    for point, group in rows.groupby("point", sort=True):
        rec: dict[str, Any] = {"point": point, **{a: group[a].iloc[0] for a in axes}, "n_seeds": len(group)}
        ok = group[group["error"].isna()] if "error" in group else group
        rec["errors"] = len(group) - len(ok)
        needed = []
        for m in metrics:
            x = ok[m].to_numpy(dtype=float) if m in ok else np.array([])
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if x.size else math.nan
            lo = hi = math.nan
            if x.size >= 2 and np.ptp(x) > 0:
                res = stats.bootstrap(
                    (x,),
                    np.mean,
                    confidence_level=confidence,
                    n_resamples=9999,
                    method="percentile",
                    rng=np.random.default_rng(0),
                )
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            elif x.size >= 2:
                lo = hi = mean
            n_need = math.nan
            if x.size >= 2 and mean != 0:
                sd = float(x.std(ddof=1))
                den = precision * abs(mean)
                # (where the product underflows, a mean of 1e-319 $ at a precision of 1e-5: the spread over the mean first)
                ratio = z * sd / den if den > 0 else z * sd / abs(mean) / precision
                n_need = max(2.0, math.ceil(ratio**2))
                needed.append(n_need)
            rec |= {f"{m}_mean": mean, f"{m}_ci_low": lo, f"{m}_ci_high": hi, f"{m}_seeds_needed": n_need}
        rec["seeds_needed"] = max(needed) if needed else math.nan
        out.append(rec)
    return pd.DataFrame(out)
