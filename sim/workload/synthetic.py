"""Seeded synthetic traces: arrival processes x length distributions -> the canonical frame.

Arrival processes (rates in requests/s, times in s):
  poisson   homogeneous Poisson
  gamma     renewal with Gamma gaps of a given CV (vLLM's --burstiness b is CV = 1/sqrt(b))
  onoff     two-state Markov-modulated Poisson (MMPP-2): exponential on/off periods, a rate in each
  diurnal   non-homogeneous Poisson: a sinusoid (period, amplitude) by thinning, or a rate table
            (window_start_s, rate) such as ServeGen's, scaled to a target mean and optionally
            compressed in time, as exact piecewise-constant segments
  spikes    a base Poisson rate multiplied inside given windows
Lengths: fixed, uniform (integers, inclusive), lognormal (mean and CV; clipped to [1, max]),
empirical (resampled from a trace's column).
Randomness: the `arrivals`, `prompt_lengths` and `output_lengths` streams of `RunStreams(seed)` (sim/streams.py),
seed = the generator block's own `seed`, else the scenario's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from sim.distributions import lognormal
from sim.lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # only what reads or builds a trace needs pandas

from sim.errors import FleetsimError, from_validation_error
from sim.spec import MAX_COUNT, MAX_SEED, MAX_TIME_S, MAX_TOKENS, Frozen
from sim.streams import RunStreams
from sim.workload.adapters import AdapterMix, assign_adapters
from sim.workload.schema import MAX_REQUESTS, canonical_frame

MAX_RATE_PER_S = float(MAX_COUNT)  # a rate table's rate (requests/s): 10 million, past any real service's


class Poisson(Frozen):
    process: Literal["poisson"] = "poisson"
    rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S)


class GammaRenewal(Frozen):
    process: Literal["gamma"] = "gamma"
    rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S)
    cv: float = Field(ge=0.01, le=1000)  # (real traces: 1 to ~15; beyond these the gamma draws lose precision)


class OnOff(Frozen):
    process: Literal["onoff"] = "onoff"
    on_rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S)
    off_rate_per_s: float = Field(default=0.0, ge=0, le=MAX_RATE_PER_S)
    mean_on_s: float = Field(ge=0.001)  # (phases shorter than a millisecond: a phase per microsecond of trace)
    mean_off_s: float = Field(ge=0.001)


class Diurnal(Frozen):
    process: Literal["diurnal"] = "diurnal"
    mean_rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S)
    period_s: float = Field(default=86_400.0, gt=0)
    amplitude: float = Field(default=0.5, ge=0, le=1)  # rate = mean * (1 + a sin(2 pi (t - phase)/period))
    phase_s: float = 0.0
    rate_table: str | None = None  # CSV: window_start_s, rate (any second column name)
    time_scale: float = Field(default=1.0, gt=0)  # >1 compresses the table's clock


class Spike(Frozen):
    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    multiplier: float = Field(ge=0)


class Spikes(Frozen):
    process: Literal["spikes"] = "spikes"
    rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S)
    spikes: list[Spike] = Field(min_length=1)


Arrivals = Annotated[Poisson | GammaRenewal | OnOff | Diurnal | Spikes, Field(discriminator="process")]


class Fixed(Frozen):
    dist: Literal["fixed"] = "fixed"
    tokens: int = Field(ge=1, le=MAX_TOKENS)


class Uniform(Frozen):
    dist: Literal["uniform"] = "uniform"
    low: int = Field(ge=1, le=MAX_TOKENS)
    high: int = Field(ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high must be >= low (got {self.high} < {self.low})")
        return self


class Lognormal(Frozen):
    dist: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0, le=MAX_TOKENS)
    cv: float = Field(gt=0, le=1000)
    max: int | None = Field(default=None, ge=1, le=MAX_TOKENS)


class Empirical(Frozen):
    dist: Literal["empirical"] = "empirical"
    trace: str
    column: Literal["prompt_tokens", "output_tokens"]


Lengths = Annotated[Fixed | Uniform | Lognormal | Empirical, Field(discriminator="dist")]


def peak_rate_per_s(arrivals: Poisson | GammaRenewal | OnOff | Diurnal | Spikes) -> float:
    """An upper bound on the process's mean rate over any long window (the table's peak is not known
    before it is read; its scaled mean is used)."""
    if isinstance(arrivals, OnOff):
        return max(arrivals.on_rate_per_s, arrivals.off_rate_per_s)
    if isinstance(arrivals, Diurnal):
        return arrivals.mean_rate_per_s * (1 + arrivals.amplitude if arrivals.rate_table is None else 1)
    if isinstance(arrivals, Spikes):
        return arrivals.rate_per_s * max(1.0, *(s.multiplier for s in arrivals.spikes))
    return arrivals.rate_per_s


class SyntheticSpec(Frozen):
    arrivals: Arrivals
    prompt_tokens: Lengths
    output_tokens: Lengths
    duration_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    n_requests: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # None: 0, or the scenario's seed inside a scenario
    max_context: int | None = Field(default=None, ge=2, le=MAX_TOKENS)  # clip each request into this context
    adapters: AdapterMix | None = None  # LoRA adapters drawn for the requests (`sim.workload.adapters`)

    @model_validator(mode="after")
    def _one_length(self) -> SyntheticSpec:
        if (self.duration_s is None) == (self.n_requests is None):
            raise ValueError("give exactly one of duration_s and n_requests")
        if self.n_requests is not None and self.n_requests > MAX_REQUESTS:
            raise ValueError(f"n_requests must be <= {MAX_REQUESTS:,} (got {self.n_requests:,})")
        arrivals = self.arrivals
        if self.n_requests is not None and self.n_requests / peak_rate_per_s(arrivals) > MAX_TIME_S:
            # (a rate of 1e-300: arrivals 1e300 s apart, written by `trace gen` and refused by every reader, or a run
            # refused for the timeline samples its span needs, a 300-digit number)
            span = self.n_requests / peak_rate_per_s(arrivals)
            raise ValueError(
                f"n_requests={self.n_requests:,} at {peak_rate_per_s(arrivals):.3g} requests/s (the process's peak) span at "
                f"least {span:.3g} s, past the {MAX_TIME_S:g} s a trace may; raise the rate or lower n_requests"
            )
        if self.n_requests is not None and isinstance(arrivals, Diurnal) and arrivals.rate_table is None:
            # (the sinusoid's horizon is 4 n / rate + a period: a period of 1e300 s asks numpy for 1e300 draws)
            expected = peak_rate_per_s(arrivals) * (4.0 * self.n_requests / arrivals.mean_rate_per_s + arrivals.period_s)
            if expected > MAX_REQUESTS:
                raise ValueError(
                    f"n_requests with a diurnal period of {arrivals.period_s:g} s draws about {expected:.3g} candidate "
                    f"arrivals, more than {MAX_REQUESTS:,}; give duration_s, or a shorter period"
                )
        if self.duration_s is not None:
            expected = peak_rate_per_s(self.arrivals) * self.duration_s
            if expected > MAX_REQUESTS:
                raise ValueError(
                    f"duration_s x rate asks for about {expected:.3g} requests, more than {MAX_REQUESTS:,}; "
                    "shorten the duration or lower the rate"
                )
        return self


def parse_spec(raw: object, *, where: str = "<spec>") -> SyntheticSpec:
    try:
        return SyntheticSpec.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, where=where, data=raw) from None


# --- arrival processes ---------------------------------------------------------------------------
def _renewal(
    draw_gaps: Callable[[np.random.Generator, int], np.ndarray],
    rng: np.random.Generator,
    *,
    rate: float,
    duration_s: float | None,
    n: int | None,
) -> np.ndarray:
    """Arrival instants of a renewal process whose first arrival is at 0."""
    if n is not None:
        gaps = draw_gaps(rng, n - 1)
        return np.concatenate(([0.0], np.cumsum(gaps)))
    assert duration_s is not None
    chunks, total, t_end = [np.zeros(1)], 0.0, duration_s
    block = max(1024, int(rate * duration_s * 1.1) + 16)
    while total < t_end:
        gaps = draw_gaps(rng, block)
        times = total + np.cumsum(gaps)
        chunks.append(times)
        total = float(times[-1])
    t = np.concatenate(chunks)
    return t[t < t_end]


def _piecewise_poisson(starts: np.ndarray, rates: np.ndarray, end_s: float, rng: np.random.Generator) -> np.ndarray:
    """Exact non-homogeneous Poisson arrivals with a piecewise-constant rate."""
    ends = np.append(starts[1:], end_s)
    lengths = np.clip(ends - starts, 0, None)
    counts = rng.poisson(rates * lengths)
    seg = np.repeat(np.arange(len(starts)), counts)
    t = starts[seg] + rng.random(seg.size) * lengths[seg]
    return np.sort(t, kind="stable")


MAX_ONOFF_PERIODS = 10_000_000  # an on/off process's periods over its horizon (drawn at once: 160 MB)


def _until(t: np.ndarray, n: int | None, what: str) -> np.ndarray:
    if n is not None:
        if t.size < n:
            raise FleetsimError(f"{what}: only {t.size} arrivals in the horizon, fewer than n_requests={n}; use duration_s")
        return t[:n]
    return t


def arrival_times(spec: Arrivals, rng: np.random.Generator, *, duration_s: float | None, n: int | None) -> np.ndarray:
    """Arrival instants (s) of `spec`, in [0, duration_s) or the first `n`."""
    if isinstance(spec, Poisson):
        return _renewal(lambda g, k: g.exponential(1 / spec.rate_per_s, k), rng, rate=spec.rate_per_s, duration_s=duration_s, n=n)
    if isinstance(spec, GammaRenewal):
        shape = 1.0 / spec.cv**2
        scale = 1.0 / (spec.rate_per_s * shape)
        return _renewal(lambda g, k: g.gamma(shape, scale, k), rng, rate=spec.rate_per_s, duration_s=duration_s, n=n)
    if isinstance(spec, OnOff):
        mean_rate = (spec.on_rate_per_s * spec.mean_on_s + spec.off_rate_per_s * spec.mean_off_s) / (
            spec.mean_on_s + spec.mean_off_s
        )
        horizon = duration_s if duration_s is not None else 4.0 * (n or 1) / mean_rate + 10 * (spec.mean_on_s + spec.mean_off_s)
        cycle = spec.mean_on_s + spec.mean_off_s
        if horizon / cycle > MAX_ONOFF_PERIODS:  # (drawn up front: 16 bytes a period)
            raise FleetsimError(
                f"onoff: a horizon of {horizon:.3g} s holds about {horizon / cycle:.3g} on/off periods of {cycle:.3g} s, more "
                f"than {MAX_ONOFF_PERIODS:,}; give longer mean_on_s / mean_off_s, a higher rate or a shorter duration_s"
            )
        blocks = []
        covered = 0.0
        while covered < horizon:  # alternate on, off, on, ... until the horizon is covered
            k = int((horizon - covered) / cycle * 1.2) + 16
            block = np.empty(2 * k)
            block[0::2] = rng.exponential(spec.mean_on_s, k)
            block[1::2] = rng.exponential(spec.mean_off_s, k)
            blocks.append(block)
            covered += float(block.sum())
        durations = np.concatenate(blocks)
        starts = np.concatenate(([0.0], np.cumsum(durations)[:-1]))
        rates = np.where(np.arange(durations.size) % 2 == 0, spec.on_rate_per_s, spec.off_rate_per_s)
        keep = starts < horizon
        t = _piecewise_poisson(starts[keep], rates[keep], horizon, rng)
        return _until(t, n, "onoff")
    if isinstance(spec, Diurnal):
        return _diurnal(spec, rng, duration_s=duration_s, n=n)
    if isinstance(spec, Spikes):
        horizon = duration_s if duration_s is not None else _spike_horizon(spec, n or 1)
        edges = sorted({0.0, horizon, *(s.at_s for s in spec.spikes), *(s.at_s + s.duration_s for s in spec.spikes)})
        starts = np.array([e for e in edges if e < horizon])
        rates = np.array([_spike_rate(spec, s) for s in starts])
        return _until(_piecewise_poisson(starts, rates, horizon, rng), n, "spikes")
    raise AssertionError(spec)


def _spike_rate(spec: Spikes, t: float) -> float:
    rate = spec.rate_per_s
    for s in spec.spikes:
        if s.at_s <= t < s.at_s + s.duration_s:
            rate *= s.multiplier
    return rate


def _spike_horizon(spec: Spikes, n: int) -> float:
    return 4.0 * n / spec.rate_per_s + max(s.at_s + s.duration_s for s in spec.spikes)


def load_rate_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A two-column CSV: window start (s, increasing) and the rate in that window."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, a device or a pipe: a read may never end
        raise FleetsimError(f"{path}: not a regular file; a rate table is a CSV file")
    try:
        table = pd.read_csv(path)
    except UnicodeDecodeError as err:
        raise FleetsimError(
            f"{path}: cannot read rate table (not UTF-8: byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FleetsimError(f"{path}: cannot read rate table ({str(err).splitlines()[0]})") from None
    if table.shape[1] != 2 or len(table) == 0:
        raise FleetsimError(
            f"{path}: a rate table has two columns (window_start_s, rate) and at least one row (got {table.shape})"
        )
    starts = pd.to_numeric(table.iloc[:, 0], errors="coerce").to_numpy(dtype=np.float64)
    rates = pd.to_numeric(table.iloc[:, 1], errors="coerce").to_numpy(dtype=np.float64)
    # (bounded as a trace's instants are; a rate past MAX_RATE_PER_S overflows the table's mean to inf)
    bad = np.flatnonzero(~(np.abs(starts) <= MAX_TIME_S) | ~((rates >= 0) & (rates <= MAX_RATE_PER_S)))
    if bad.size:
        i = int(bad[0])
        raise FleetsimError(
            f"{path} line {i + 2}: window start and rate must be numbers, the start within +-{MAX_TIME_S:g} s and the "
            f"rate within 0..{MAX_RATE_PER_S:,.0f}/s (got {_cell(table.iloc[i, 0])}, {_cell(table.iloc[i, 1])})"
        )
    if np.any(np.diff(starts) <= 0):
        i = int(np.flatnonzero(np.diff(starts) <= 0)[0]) + 1
        raise FleetsimError(f"{path} line {i + 2}: window starts must increase (got {starts[i]:g} after {starts[i - 1]:g})")
    return starts - starts[0], rates


def _cell(value: object) -> str:
    """A CSV cell as written (a number read by pandas: the number, not its numpy type)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _diurnal(spec: Diurnal, rng: np.random.Generator, *, duration_s: float | None, n: int | None) -> np.ndarray:
    if spec.rate_table is not None:
        starts, rates, horizon = _table_segments(spec, duration_s)
        return _until(_piecewise_poisson(starts, rates, horizon, rng), n, "diurnal")
    horizon = duration_s if duration_s is not None else 4.0 * (n or 1) / spec.mean_rate_per_s + spec.period_s
    return _until(_thinned(spec, 0.0, horizon, rng), n, "diurnal")


def _thinned(spec: Diurnal, t0: float, t1: float, rng: np.random.Generator) -> np.ndarray:
    """A sinusoidal diurnal process's arrivals in [t0, t1), by thinning a Poisson process at its peak rate."""
    peak = spec.mean_rate_per_s * (1 + spec.amplitude)
    candidates = _piecewise_poisson(np.array([t0]), np.array([peak]), t1, rng)
    rate = spec.mean_rate_per_s * (1 + spec.amplitude * np.sin(2 * np.pi * (candidates - spec.phase_s) / spec.period_s))
    out: np.ndarray = candidates[rng.random(candidates.size) * peak < rate]
    return out


def _table_segments(spec: Diurnal, duration_s: float | None, *, whole: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """A rate table's piecewise-constant rate over the horizon (the table wrapped around): starts, rates, horizon.
    `whole`: the trace is drawn as one frame (at most MAX_REQUESTS requests); else a window at a time."""
    assert spec.rate_table is not None
    starts, rates = load_rate_table(spec.rate_table)
    width = np.diff(np.append(starts, starts[-1] + (starts[-1] - starts[-2] if len(starts) > 1 else 1.0)))
    span = float(starts[-1] + width[-1])
    mean = float(np.sum(rates * width) / span)
    if mean <= 0:
        raise FleetsimError(f"{spec.rate_table}: the rate table's mean rate is 0")
    starts, span = starts / spec.time_scale, span / spec.time_scale
    rates = rates * (spec.mean_rate_per_s / mean)
    horizon = duration_s if duration_s is not None else span
    expected = spec.mean_rate_per_s * horizon
    if whole and expected > MAX_REQUESTS:  # (n_requests: the table's whole span is drawn, then cut)
        raise FleetsimError(
            f"{spec.rate_table}: the rate table spans {span:.3g} s (time_scale {spec.time_scale:g}), about "
            f"{expected:.3g} requests at mean_rate_per_s {spec.mean_rate_per_s:g}, more than {MAX_REQUESTS:,}; "
            "give duration_s, or compress the table's clock (time_scale)"
        )
    if horizon / span * len(starts) > MAX_REQUESTS:  # (each window of each repeat is an array entry)
        raise FleetsimError(
            f"{spec.rate_table}: the rate table spans {span:.3g} s (time_scale {spec.time_scale:g}): repeated over "
            f"{horizon:g} s it is {horizon / span * len(starts):.3g} windows, more than {MAX_REQUESTS:,}; "
            "give a lower time_scale or wider windows"
        )
    if horizon > span:  # wrap the table around
        reps = int(np.ceil(horizon / span))
        starts = np.concatenate([starts + k * span for k in range(reps)])
        rates = np.tile(rates, reps)
    keep = starts < horizon
    return starts[keep], rates[keep], horizon


# --- lengths -------------------------------------------------------------------------------------------
def draw_lengths(spec: Lengths, rng: np.random.Generator, n: int, *, base_dir: Path = Path(".")) -> np.ndarray:
    if isinstance(spec, Fixed):
        return np.full(n, spec.tokens, dtype=np.int64)
    if isinstance(spec, Uniform):
        return rng.integers(spec.low, spec.high + 1, n, dtype=np.int64)
    if isinstance(spec, Lognormal):
        x = np.rint(lognormal(rng, mean=spec.mean, cv=spec.cv, size=n))
        return np.asarray(np.clip(x, 1, spec.max or MAX_TOKENS), dtype=np.int64)
    if isinstance(spec, Empirical):
        return rng.choice(_empirical_source(spec, base_dir), n, replace=True).astype(np.int64)
    raise AssertionError(spec)


def _empirical_source(spec: Empirical, base_dir: Path) -> np.ndarray:
    from sim.workload.readers import load_trace

    path = Path(spec.trace)
    source: np.ndarray = load_trace(path if path.is_absolute() else base_dir / path)[spec.column].to_numpy()
    return source


def _lengths(field: str, spec: Lengths, rng: np.random.Generator, n: int, *, base_dir: Path) -> np.ndarray:
    """`draw_lengths`, its errors naming the field (an empirical source trace's own errors name only the file)."""
    try:
        return draw_lengths(spec, rng, n, base_dir=base_dir)
    except FleetsimError as err:
        if isinstance(spec, Empirical):
            raise FleetsimError(f"{field}: empirical: {err}") from None
        raise


def generate(spec: SyntheticSpec, *, base_dir: Path = Path("."), default_seed: int = 0) -> pd.DataFrame:
    """The canonical frame of a synthetic trace; same spec and seed => identical frame."""
    seed = spec.seed if spec.seed is not None else default_seed
    streams = RunStreams(seed)
    arrivals_rng, prompt_rng, output_rng = (streams.generator(name) for name in ("arrivals", "prompt_lengths", "output_lengths"))
    arrivals = spec.arrivals
    if isinstance(arrivals, Diurnal) and arrivals.rate_table is not None and not Path(arrivals.rate_table).is_absolute():
        arrivals = arrivals.model_copy(update={"rate_table": str(base_dir / arrivals.rate_table)})
    t = arrival_times(arrivals, arrivals_rng, duration_s=spec.duration_s, n=spec.n_requests)
    if t.size == 0:
        raise FleetsimError("synthetic trace: no arrivals in the horizon; raise duration_s or the rate")
    n = t.size
    frame = canonical_frame(
        t,
        _lengths("prompt_tokens", spec.prompt_tokens, prompt_rng, n, base_dir=base_dir),
        _lengths("output_tokens", spec.output_tokens, output_rng, n, base_dir=base_dir),
        source=f"synthetic:{spec.arrivals.process}",
    )
    frame.attrs["format"] = "synthetic"
    if spec.max_context is not None:  # lengths drawn apart can add up past a model's context: fit them in
        from sim.workload.transforms import clip_tokens

        frame = clip_tokens(frame, spec.max_context)
        frame.attrs["format"] = "synthetic"
    if spec.adapters is not None:
        frame = assign_adapters(frame, spec.adapters, seed)
        frame.attrs["format"] = "synthetic"
    return frame


def parse_lengths(text: str) -> Lengths:
    """CLI shorthand: fixed:N | uniform:LOW:HIGH | lognormal:MEAN:CV[:MAX] | empirical:TRACE:COLUMN."""
    kind, _, rest = text.partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind == "fixed" and len(args) == 1:
            return Fixed(tokens=int(args[0]))
        if kind == "uniform" and len(args) == 2:
            return Uniform(low=int(args[0]), high=int(args[1]))
        if kind == "lognormal" and len(args) in (2, 3):
            return Lognormal(mean=float(args[0]), cv=float(args[1]), max=int(args[2]) if len(args) == 3 else None)
        if kind == "empirical" and len(args) == 2:
            return Empirical.model_validate({"trace": args[0], "column": args[1]})
    except (ValueError, ValidationError) as err:
        detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        raise FleetsimError(f"length distribution {text!r}: {detail}") from None
    raise FleetsimError(
        f"length distribution {text!r}: expected fixed:N, uniform:LOW:HIGH, lognormal:MEAN:CV[:MAX] or empirical:TRACE:COLUMN"
    )


def generate_windows(
    spec: SyntheticSpec, window_s: float, *, base_dir: Path = Path("."), default_seed: int = 0
) -> Iterator[pd.DataFrame]:
    """`generate`, `window_s` seconds of the trace at a time, for a trace larger than memory (`sim.run.store.stored_trace`
    writes the windows to files). Each window's arrivals and lengths are drawn on the window's own sub-streams of the
    seed, so the windows together are the same process as `generate`'s (Poisson, spikes and diurnal arrivals have
    independent increments), a different draw of it; the same spec, seed and window give the same trace. Renewal
    and on-off arrivals (whose increments are not independent), `n_requests` and `adapters` are refused."""
    arrivals = spec.arrivals
    if spec.duration_s is None:
        raise FleetsimError("synthetic trace in windows: give duration_s (n_requests is drawn whole)")
    if spec.adapters is not None:
        raise FleetsimError("synthetic trace in windows: adapters are assigned over the whole trace; generate it whole")
    if not window_s > 0:
        raise FleetsimError(f"synthetic trace in windows: the window must be > 0 s (got {window_s:g})")
    if isinstance(arrivals, Diurnal) and arrivals.rate_table is not None and not Path(arrivals.rate_table).is_absolute():
        arrivals = arrivals.model_copy(update={"rate_table": str(base_dir / arrivals.rate_table)})
    horizon = spec.duration_s
    if isinstance(arrivals, Poisson):
        starts, rates = np.zeros(1), np.array([arrivals.rate_per_s])
    elif isinstance(arrivals, Diurnal) and arrivals.rate_table is not None:
        starts, rates, horizon = _table_segments(arrivals, horizon, whole=False)
    elif isinstance(arrivals, Spikes):
        edges = sorted({0.0, horizon, *(s.at_s for s in arrivals.spikes), *(s.at_s + s.duration_s for s in arrivals.spikes)})
        starts = np.array([e for e in edges if e < horizon])
        rates = np.array([_spike_rate(arrivals, s) for s in starts])
    elif not isinstance(arrivals, Diurnal):
        raise FleetsimError(
            f"synthetic trace in windows: {arrivals.process} arrivals are not independent from one window to the next; "
            "use poisson, diurnal or spikes, or generate the trace whole"
        )
    seed = spec.seed if spec.seed is not None else default_seed
    streams = RunStreams(seed)
    sources: dict[str, np.ndarray] = {}
    for w in range(int(np.ceil(horizon / window_s))):
        t0, t1 = w * window_s, min((w + 1) * window_s, horizon)
        rng = streams.sub_generator("arrivals", w)
        if isinstance(arrivals, Diurnal) and arrivals.rate_table is None:
            t = _thinned(arrivals, t0, t1, rng)
        else:
            first = max(int(np.searchsorted(starts, t0, side="right")) - 1, 0)
            last = int(np.searchsorted(starts, t1, side="left"))
            seg = np.maximum(starts[first:last], t0)
            t = _piecewise_poisson(seg, rates[first:last], t1, rng)
        n = t.size
        if not n:
            continue
        lengths = [
            _window_lengths(name, length_spec, streams.sub_generator(stream, w), n, base_dir, sources)
            for name, length_spec, stream in (
                ("prompt_tokens", spec.prompt_tokens, "prompt_lengths"),
                ("output_tokens", spec.output_tokens, "output_lengths"),
            )
        ]
        frame = pd.DataFrame({"arrival_at_s": t, "prompt_tokens": lengths[0], "output_tokens": lengths[1]})
        if spec.max_context is not None:
            from sim.workload.transforms import clip_tokens

            frame = clip_tokens(frame, spec.max_context)[["arrival_at_s", "prompt_tokens", "output_tokens"]]
        yield frame


def _window_lengths(
    field: str, spec: Lengths, rng: np.random.Generator, n: int, base_dir: Path, sources: dict[str, np.ndarray]
) -> np.ndarray:
    """A window's lengths: `_lengths`, an empirical source trace read once for all the windows."""
    if isinstance(spec, Empirical):
        if field not in sources:
            try:
                sources[field] = _empirical_source(spec, base_dir)
            except FleetsimError as err:
                raise FleetsimError(f"{field}: empirical: {err}") from None
        return rng.choice(sources[field], n, replace=True).astype(np.int64)
    return _lengths(field, spec, rng, n, base_dir=base_dir)
