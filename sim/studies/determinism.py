"""Does a run's seed change anything? A scenario whose every part is deterministic (a trace file replayed as it
is, fixed lengths, deterministic routers, fixed cold starts, no speculation) gives identical records for every
seed, so running it under several seeds costs time and yields zero-width intervals; sweeps and plans run such a
scenario under one seed and say why.

What draws from the seed is what takes a stream from `RunStreams` (`sim/streams.py`): `CONSUMERS` names, for each
stream, the scenario settings that make a run draw from it, and `seed_consumers` checks them. A test runs a range
of scenarios under two seeds and requires identical records exactly when `seed_consumers` finds nothing, and
another that `CONSUMERS` covers every stream, so a new stream cannot be added without updating this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.policies.lifecycle import LifecycleConfig
    from sim.scenario.config import EngineConfig, Scenario

CONSUMERS: dict[str, str] = {  # RunStreams stream -> what in a scenario draws from it
    "arrivals": "a synthetic trace without its own seed (every arrival process draws)",
    "prompt_lengths": "a synthetic trace without its own seed whose prompt lengths are not fixed",
    "output_lengths": "a synthetic trace without its own seed whose output lengths are not fixed",
    "router": "the power_of_two router where requests are routed (the fleet, its dedicated batch pool, a prefill pool)",
    "lifecycle": "a cold-start stage drawn from a distribution (uniform or lognormal), in any pool",
    "autoscaler": "nothing yet (reserved for randomized autoscaling policies)",
    "trace_sample": "sampling a trace file (sample < 1), the scenario's or a batch job's without its own seed",
    "batch_prompt": "a generated batch job without its own seed whose prompt lengths are not fixed",
    "batch_output": "a generated batch job without its own seed whose output lengths are not fixed",
    "speculative": "speculative decoding with an acceptance rate strictly between 0 and 1, in any pool",
    "hazards": "random failures or spot reclaims (fleet.capacity with a failure MTBF or a spot interruption rate)",
    "shortages": "launches failing at random (fleet.capacity.<class>.launch_failure_probability strictly between 0 and 1)",
    "adapters": "LoRA adapters drawn for the trace (an adapters block with more than one adapter or a base share), on the "
    "scenario's trace file or a synthetic trace without its own seed",
    "models": "a platform's deployment drawn for each request (deployments with shares, more than one of them)",
}


def seed_consumers(scenario: Scenario) -> list[str]:
    """What in `scenario` draws from the run's seed, one phrase each (the setting and the stream); an empty list
    means the seed changes nothing, so one seed gives every seed's answer.

    Random consumers (the streams of `sim.streams.RunStreams`, see `CONSUMERS`): a synthetic trace (`arrivals`;
    `prompt_lengths` and `output_lengths` unless fixed) unless the block has its own `seed`; `sample` < 1 on a
    trace file (`trace_sample`), the scenario's or a batch job's file; a generated batch job's lengths unless
    fixed (`batch_prompt`, `batch_output`) or the job has its own `seed`; the `power_of_two` router (`router`) of
    the fleet or a disaggregated prefill pool (a decode pool's router routes nothing: KV transfers pick the
    decode replica by KV room); a cold-start stage given as a distribution (`lifecycle`), in any
    pool; speculative decoding with an acceptance rate strictly between 0 and 1 (`speculative`), in any pool's
    engine; random failures or spot reclaims (`hazards`: `fleet.capacity.failures`, a spot interruption rate); launches
    failing at random (`shortages`: a class's `launch_failure_probability`); LoRA adapters drawn for the trace
    (`adapters`: an `adapters:` block mixing more than one adapter or the base model, unless on a synthetic trace with
    its own `seed`). The
    `autoscaler` stream has no consumer. Conservative where a setting may not be exercised (a
    lifecycle distribution on a fleet that never cold-starts, a power_of_two router with one replica): it may
    call such a scenario random, never a random one deterministic."""
    from sim.run.pools import pool_scenario

    POOLS = ("prefill", "decode")
    from sim.workload.synthetic import Fixed, SyntheticSpec
    from sim.workload.transforms import TraceFile

    out: list[str] = []
    if scenario.deployments:  # a platform: each deployment's draws, and the deployment drawn for each request
        from sim.scenario.config import deployment_scenario

        if len(scenario.deployments) > 1 and scenario.deployments[0].share is not None:
            out.append("deployments: shares (a deployment drawn for each request)")
        for i, d in enumerate(scenario.deployments):
            sub = deployment_scenario(scenario, i)
            out += [f"deployments.{i} ({d.name}): {what}" for what in seed_consumers(sub) if not what.startswith("trace")]
        return [*[w for w in seed_consumers(scenario.model_copy(update={"deployments": []})) if w.startswith("trace")], *out]
    trace = scenario.trace
    if isinstance(trace, SyntheticSpec) and trace.seed is None:
        out.append("trace: a synthetic generator (arrivals)")
        out += [f"trace.{k}: not fixed" for k in ("prompt_tokens", "output_tokens") if not isinstance(getattr(trace, k), Fixed)]
    if isinstance(trace, TraceFile) and trace.sample is not None and trace.sample < 1:
        out.append(f"trace.sample {trace.sample:g} (sampling)")
    mix = trace.adapters if isinstance(trace, TraceFile | SyntheticSpec) else None
    seeded = isinstance(trace, SyntheticSpec) and trace.seed is not None
    if mix is not None and not seeded and (mix.count > 1 or mix.base_share > 0):
        out.append("trace.adapters (adapters drawn)")
    for i, job in enumerate(scenario.batch.jobs if scenario.batch is not None else []):
        if job.seed is not None:
            continue
        if isinstance(job.file, TraceFile) and job.file.sample is not None and job.file.sample < 1:
            out.append(f"batch.jobs.{i}.file.sample {job.file.sample:g} (sampling)")
        out += [
            f"batch.jobs.{i}.{k}: not fixed"
            for k in ("prompt_tokens", "output_tokens")
            if getattr(job, k) is not None and not isinstance(getattr(job, k), Fixed)
        ]
    fleet = scenario.fleet
    blocks = {}  # where each pool's capacity block is written -> it (the fleet's, shared by both pools: said once)
    for name in fleet.pool_names:
        own = name != "online" and getattr(fleet, name).capacity is not None
        blocks[f"fleet.{name}.capacity" if own else "fleet.capacity"] = fleet.capacity_of(name)
    for where, capacity in blocks.items():
        if capacity.failures is not None:
            out.append(f"{where}.failures (random failures)")
        if capacity.spot is not None and (capacity.spot.rate_per_s > 0 or scenario.pricing.provider is not None):
            out.append(f"{where}.spot (random reclaims)")  # (with a provider, its interruption band may give the rate)
        for klass in capacity.order:
            if 0 < capacity.limits(klass).launch_failure_probability < 1:
                out.append(f"{where}.{klass}.launch_failure_probability (random launch failures)")
        for i, fb in enumerate(capacity.fallback):
            if 0 < fb.launch_failure_probability < 1:
                out.append(f"{where}.fallback.{i}.launch_failure_probability (random launch failures)")
    pools = [scenario] if scenario.fleet.mode == "colocated" else [pool_scenario(scenario, name) for name in POOLS]
    for where, pool in zip(["fleet"] if len(pools) == 1 else [f"fleet.{name}" for name in POOLS], pools, strict=True):
        if pool.fleet.router == "power_of_two" and where != "fleet.decode":  # transfers pick decode replicas, not its router
            out.append(f"{where}.router power_of_two")
        out += [f"{where}.lifecycle.{k}: a distribution" for k in _random_stages(pool.fleet.lifecycle)]
        if _random_speculation(pool.engine):
            out.append(f"{'engine' if len(pools) == 1 else where + '.engine'}.speculative acceptance")
    return out


def _random_stages(life: LifecycleConfig) -> list[str]:
    from sim.policies.lifecycle import LognormalDuration, UniformDuration

    stages = ("cold_start_s",) if life.cold_start_s is not None else ("provision_s", "image_pull_s", "warmup_s")
    return [k for k in stages if isinstance(getattr(life, k), UniformDuration | LognormalDuration)]


def _random_speculation(engine: EngineConfig) -> bool:
    spec = engine.speculative
    return spec is not None and any(0 < a < 1 for a in spec.alphas)


def seed_note(consumers: list[str]) -> str:
    """Why one seed is enough (for an empty list), or what draws from the seed."""
    if not consumers:
        return (
            "the seed changes nothing here (no sampling, synthetic traffic, generated batch lengths, power_of_two "
            "routing, random cold starts or speculative acceptance)"
        )
    return "the seed draws " + "; ".join(consumers)
