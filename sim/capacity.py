"""One replica's saturated throughput for a workload: the denominator of `throughput_utilization`.

Measured, not guessed: one replica of the resolved setup, under the scenario's own engine settings,
is given a sample of the trace's servable requests (up to `SAMPLE_SIZE`, a fixed seeded sample, so
the figure is a property of the setup and the length mix, not of the run's seed), all queued at
t = 0, and its prompt + output tokens per second are measured until its queue first empties.

Its uncertainty: the figure depends on which requests were sampled and in which order they share the
batch; over the bundled traces, samples and orders move it by about 1-2% (this, not a bias, is why a
saturated fleet can read a throughput utilization slightly above 1). Each measurement reports its
relative standard error by batch means: the saturated stretch after the first 20% of completions is cut
into 5 equal windows and the spread of their token rates gives `rel_se`.

The figure is cached on the resolved content — the model and GPU specs as resolved (a user catalog
or a `gpu_overrides` block included), TP, the roofline's numbers, the engine block and the length
mix — never on names, so two catalogs that give one name to different GPUs never share an entry.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config import EngineConfig
from sim.roofline import RooflineSetup
from sim.states import RequestStatus

SAMPLE_SIZE = 1000
SAMPLE_SEED = 0  # the sample is part of the measurement's definition, independent of the run's seed
_CACHE_SIZE = 64
_cache: OrderedDict[str, tuple[float | None, float | None]] = OrderedDict()
N_WINDOWS = 5


@dataclass(frozen=True, slots=True)
class Capacity:
    max_tokens_per_s_per_replica: float | None  # None: nothing servable to measure
    rel_se: float | None  # relative standard error of the figure (batch means), None if not estimable
    wall_s: float  # spent measuring (0 when cached)
    cached: bool


def cache_key(setup: RooflineSetup, engine: EngineConfig, lengths: np.ndarray) -> str:
    """A digest of everything the measurement depends on, by content."""
    h = hashlib.sha256()
    h.update(repr(setup).encode())  # frozen dataclasses of numbers: model spec, GPU spec, TP, efficiencies
    h.update(engine.model_dump_json().encode())
    h.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
    return h.hexdigest()


def sample_requests(lengths: np.ndarray, max_context_tokens: int) -> np.ndarray:
    """(prompt, output) rows the replica can serve, at most SAMPLE_SIZE of them (seeded, fixed)."""
    pool: np.ndarray = lengths[lengths.sum(axis=1) <= max_context_tokens]
    if len(pool) > SAMPLE_SIZE:
        rng = np.random.default_rng(SAMPLE_SEED)
        pool = pool[rng.choice(len(pool), size=SAMPLE_SIZE, replace=False)]
    return pool


def _saturated_stretch(requests: pd.DataFrame) -> tuple[float, np.ndarray] | None:
    """The instant the last request was scheduled (until then the queue was never empty) and which
    requests had completed by then; None if nothing was scheduled."""
    scheduled = requests["scheduled_at_s"].to_numpy(dtype=np.float64)
    if np.isnan(scheduled).all():
        return None
    cut = float(np.nanmax(scheduled))
    status = np.asarray(requests["status"].cat.codes.to_numpy())
    done = (status == RequestStatus.COMPLETED) & (requests["completed_at_s"].to_numpy() <= cut)
    return cut, done


def tokens_per_s_until_queue_empties(requests: pd.DataFrame) -> float | None:
    """Throughput of a saturated run (records of a closed batch queued at t = 0): tokens of the requests
    completed by the instant the last request was scheduled."""
    stretch = _saturated_stretch(requests)
    if stretch is None or stretch[0] <= 0 or not stretch[1].any():
        return None
    cut, done = stretch
    tokens = requests["prompt_tokens"].to_numpy()[done].sum() + requests["output_tokens"].to_numpy()[done].sum()
    return float(tokens / cut)


def relative_standard_error(requests: pd.DataFrame) -> float | None:
    """Batch means over the saturated stretch: after the first 20% of completions (the batch filling up)
    until the queue first empties, cut into N_WINDOWS equal windows; tokens count at completion."""
    stretch = _saturated_stretch(requests)
    if stretch is None or stretch[1].sum() < 5 * N_WINDOWS:  # too few completions to spread over the windows
        return None
    cut, done = stretch
    completed = requests["completed_at_s"].to_numpy(dtype=np.float64)[done]
    start = float(np.quantile(completed, 0.2))
    if cut <= start:
        return None
    tokens = (requests["prompt_tokens"].to_numpy() + requests["output_tokens"].to_numpy())[done]
    edges = np.linspace(start, cut, N_WINDOWS + 1)
    per_window = np.histogram(completed, bins=edges, weights=tokens)[0] / np.diff(edges)
    mean = float(per_window.mean())
    return float(per_window.std(ddof=1) / np.sqrt(N_WINDOWS) / mean) if mean > 0 else None


def saturated_capacity(
    setup: RooflineSetup,
    engine: EngineConfig,
    lengths: np.ndarray,
    *,
    run_saturated: Callable[[pd.DataFrame], pd.DataFrame],
) -> Capacity:
    """`lengths`: the trace's (prompt, output) rows; `run_saturated(frame)` simulates one replica of this
    setup on `frame` and returns its `requests` records."""
    key = cache_key(setup, engine, lengths)
    if key in _cache:
        _cache.move_to_end(key)
        value, rel_se = _cache[key]
        return Capacity(value, rel_se, 0.0, cached=True)
    start = time.perf_counter()
    pick = sample_requests(lengths, setup.model.max_context_tokens)
    value = rel_se = None
    if len(pick):
        frame = pd.DataFrame({"arrival_at_s": np.zeros(len(pick)), "prompt_tokens": pick[:, 0], "output_tokens": pick[:, 1]})
        records = run_saturated(frame)
        value = tokens_per_s_until_queue_empties(records)
        rel_se = relative_standard_error(records) if value is not None else None
    _cache[key] = (value, rel_se)
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return Capacity(value, rel_se, time.perf_counter() - start, cached=False)
