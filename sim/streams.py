"""Randomness for one run: one owner, named streams.

A `RunStreams(seed)` hands out one `numpy.random.Generator` per named consumer. Each name has a
fixed spawn key, so a stream's draws depend only on (seed, name): adding a consumer, or asking for
streams in another order, never changes another's numbers, and no two names share a sequence.
Nothing else in `sim/` seeds a generator from a run's seed.

Streams (spawn key in brackets; append new names, never renumber):
  arrivals [0], prompt_lengths [1], output_lengths [2]   synthetic traces (with the trace's own seed if given)
  router [3]                                           randomized routers (power_of_two)
  lifecycle [4]                                        cold-start stage durations drawn from distributions
  autoscaler [5]                                       reserved for randomized autoscaling policies
  trace_sample [6]                                     subsampling a trace file (`sample:`, `trace convert --sample`)
  batch_prompt [7, job], batch_output [8, job]         a generated batch job's lengths (one stream per job in the list)
  speculative [9, replica]                             accepted draft tokens (one stream per replica)
  hazards [10]                                         random failures and spot reclaims
  shortages [11]                                       launches failing for want of capacity (a probability per try)
  adapters [12]                                        LoRA adapters drawn for a trace's requests (`adapters:`)
  models [13]                                          a platform's deployment drawn for each request (`deployments[].share`)

A platform's deployments (`sim.run.platform`) each draw from streams of their own: `RunStreams(seed, domain=name)` keys
every stream under the deployment's name (so adding a deployment never changes another's draws).

A new stream is also named in `sim.studies.determinism.CONSUMERS` (what in a scenario draws from it), so that sweeps and
plans know when the seed changes nothing (a test fails until it is).
"""

from __future__ import annotations

import zlib

import numpy as np

STREAMS: dict[str, int] = {
    "arrivals": 0,
    "prompt_lengths": 1,
    "output_lengths": 2,
    "router": 3,
    "lifecycle": 4,
    "autoscaler": 5,
    "trace_sample": 6,
    "batch_prompt": 7,
    "batch_output": 8,
    "speculative": 9,
    "hazards": 10,
    "shortages": 11,
    "adapters": 12,
    "models": 13,
}
DOMAIN_BASE = 2**32  # a domain's key lies above every stream's own (STREAMS' values, sub-stream indices)


class RunStreams:
    """Named, independent random streams of one run (see the module docstring)."""

    def __init__(self, seed: int, *, domain: str | None = None) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (got {seed})")
        self.seed = seed
        self._root = np.random.SeedSequence(seed)
        self._domain: tuple[int, ...] = () if domain is None else (DOMAIN_BASE + zlib.crc32(domain.encode()),)

    def sequence(self, name: str) -> np.random.SeedSequence:
        if name not in STREAMS:
            raise KeyError(f"unknown random stream {name!r}; known: {', '.join(STREAMS)}")
        return np.random.SeedSequence(self._root.entropy, spawn_key=(*self._domain, STREAMS[name]))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for `name`: the same (seed, name) always gives the same draws."""
        return np.random.default_rng(self.sequence(name))

    def sub_generator(self, name: str, k: int) -> np.random.Generator:
        """Stream `name`'s k-th independent sub-stream (one per batch job, say)."""
        if name not in STREAMS:
            raise KeyError(f"unknown random stream {name!r}; known: {', '.join(STREAMS)}")
        return np.random.default_rng(np.random.SeedSequence(self._root.entropy, spawn_key=(*self._domain, STREAMS[name], k)))
