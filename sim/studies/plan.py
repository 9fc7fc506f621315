"""The planner: the cheapest fleet configuration that meets an SLO, with a stated confidence.

A plan file (YAML):

    name: plan-llama70b
    base: default.yaml                       # model, trace, engine, SLO block (for attainment)
    set: {pricing.usd_per_gpu_hour: null}    # overrides for every configuration
    search:                                  # gridded axes (crossed): the configuration groups
      fleet.gpu: [a100-80gb, h100-sxm, h200]
      fleet.tp: [2, 4, 8]
    scale: {path: fleet.autoscaler.replicas, from: 1, to: 32}   # searched per group: the replica count
                                             # (fleet.autoscaler.max_replicas for an autoscaled fleet)
    slo: {p99_ttft_ms: 2000, p99_tpot_ms: 200}                 # and/or attainment: 0.99
    objective: usd_per_1k_tokens             # or usd_per_hour
    seeds: 3
    confidence: 0.95

How it searches. Each group (a combination of the `search` axes) is first checked with the roofline and a
one-replica measurement, before any fleet is simulated: a configuration that does not fit, or whose single
request already breaks the SLO (one p99-length prompt prefilled alone slower than the TTFT target, or one
decode step at batch 1 slower than the TPOT target) is ruled out; and replica counts that could not carry the
trace's token rate even at 1.25x one replica's measured saturated throughput (`sim.run.capacity`; the allowance
covers that figure's sampling error and a finite window's unfinished queue) are never simulated. Then, per group, the replica count: latency falls and cost rises with it, so the smallest
count that meets the SLO is found by bisection over the remaining counts (the largest is tried first: if it
fails, the group is infeasible and its best attempt is the closest miss). `method: grid` simulates every count
instead (the tests check that bisection finds the grid's choice). A configuration meets the SLO when, across
seeds, the `confidence` bootstrap interval of each target metric's mean lies within the target (p99 TTFT and
TPOT: its upper end at or below; attainment, the share of requests meeting the base scenario's `slo`
block: its lower end at or above); with one seed, the value itself. The groups' smallest passing
configurations are ranked by the objective's mean; the cheapest is the pick. It is verified by simulating
it again with new seeds (it must still pass), and its nearest cheaper neighbours (the same group one replica
count down, and the two evaluated configurations closest below it in cost) with new seeds (they must fail).
Every simulation is a sweep run (`sim.studies.sweep`): written as it finishes, resumable, on local processes or Dask.

Disaggregated fleets. `search` may hold `fleet.mode: [colocated, disaggregated]` (side by side) and, for the
disaggregated groups, the plan-only axis `fleet.prefill_share` (the share of a fleet's replicas that prefill, e.g.
[0.25, 0.5]), with any pool field (`fleet.prefill.gpu`, `fleet.decode.tp`, ...). The scale is then the fleet's
replica count n (`scale.path: fleet.autoscaler.replicas`, fixed fleets): a disaggregated group runs
P = max(1, round(n x share)) prefill and D = max(1, n - P) decode replicas, both growing with n, so bisection
still applies. The screen checks the prefill pool's replica against the TTFT target and the decode pool's against
the TPOT target, and the capacity bound uses the pair's capacity per GPU (`sim.run.capacity`). Colocated groups take
no share (their duplicates are dropped).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from sim.errors import FleetsimError
from sim.spec import Frozen
from sim.studies.study_dir import MARKER, check_owner, claim
from sim.studies.sweep import (
    AxisValues,
    Job,
    Point,
    Sweep,
    SweepSpec,
    _values,
    check_axes,
    check_point,
    check_seeds,
    cluster,
    execute,
    jobs_for,
    plain_name,
    read_base,
    read_spec,
    seed_stats,
    swap_base_trace,
)

if TYPE_CHECKING:
    from sim.scenario.config import Scenario

VERIFY_SEED_OFFSET = 1_000_000
SHARE = "fleet.prefill_share"  # the plan-only axis: the share of a disaggregated fleet's replicas that prefill
MAX_GROUPS = 10_000  # each is checked at load and screened: a cross product past this is a mistake
CAPACITY_MARGIN = 0.25  # the capacity bound rules out only fleets 25% short of the trace's token rate


class ScaleAxis(Frozen):
    path: str = Field(min_length=1)
    start: int = Field(alias="from", ge=1)
    to: int = Field(ge=1)
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> ScaleAxis:
        if self.to < self.start:
            raise ValueError("to must be >= from")
        if (self.to - self.start) // self.step > 10_000:
            raise ValueError("more than 10,000 values")
        return self

    def values(self) -> list[int]:
        return list(range(self.start, self.to + 1, self.step))


class PlanSlo(Frozen):
    p99_ttft_ms: float | None = Field(default=None, gt=0)
    p99_tpot_ms: float | None = Field(default=None, gt=0)
    attainment: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _some(self) -> PlanSlo:
        if self.p99_ttft_ms is None and self.p99_tpot_ms is None and self.attainment is None:
            raise ValueError("give at least one of p99_ttft_ms, p99_tpot_ms, attainment")
        return self


class PlanSpec(Frozen):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    plain_name_check = field_validator("name")(plain_name)
    base: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, AxisValues] = Field(default_factory=dict)
    scale: ScaleAxis
    slo: PlanSlo
    objective: Literal["usd_per_1k_tokens", "usd_per_hour"] = "usd_per_1k_tokens"
    seeds: int | list[int] = 3
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    method: Literal["bisect", "grid"] = "bisect"

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        return check_seeds(v)


@dataclass
class Group:
    index: int
    values: dict[str, Any]
    scales: list[int] = field(default_factory=list)  # counts still worth simulating, ascending
    ruled_out: str | None = None  # why the roofline rules the whole group out
    min_replicas: int | None = None  # below this the fleet cannot carry the trace
    lo: int = 0  # bisection window over `scales` (indices)
    hi: int = 0
    best: int | None = None  # index of the smallest passing count found so far
    consumers: tuple[str, ...] | None = None  # what in its scenarios draws from the seed (`sim.studies.determinism`)
    unit: int = 1  # its replica counts are multiples of this (whole DP groups, whole pipeline servers)

    @property
    def deterministic(self) -> bool:
        """The seed changes nothing in its scenarios: one seed answers, and new seeds would replay the same."""
        return self.consumers == ()


@dataclass
class Plan:
    name: str
    spec: PlanSpec
    sweep: Sweep  # base scenario, overrides and seeds; its points are filled as configurations are evaluated
    groups: list[Group]
    axes: list[str]


def load_plan(path: str | Path, sets: Sequence[str] = (), *, trace: str | Path | None = None) -> Plan:
    """Read and check a plan file; `trace` (`--trace FILE`) replaces the base scenario's trace file as `fleetsim
    run --trace` does, and `sets` (`--set PATH=VALUE`) override its base scenario after the plan's own `set:` (an
    explicit override wins); a --set on a search or scale axis, which the search would overwrite, is refused."""
    from sim.scenario.config import parse_set, set_path

    path = Path(path)
    spec: PlanSpec = read_spec(path, PlanSpec, "plan")
    if spec.scale.path in spec.search:
        raise FleetsimError(f"{path}: scale.path must not be a search axis")
    check_axes(path, {"set": spec.set, "search": spec.search, "scale": {spec.scale.path: None}}, valued=("search",))
    base_raw, base_dir = read_base(path, spec.base)
    if isinstance(base_raw, dict) and base_raw.get("deployments"):
        raise FleetsimError(
            f"{path}: base {spec.base} is a platform (deployments:); a plan sizes one fleet: plan each deployment's "
            "scenario, or sweep the platform (fleetsim sweep) over its budget and replica counts"
        )
    cli = {".".join(keys): value for keys, value in map(parse_set, sets)}
    axes = [*spec.search, spec.scale.path]
    for key in cli:
        hit = next((a for a in axes if key == a or key.startswith(f"{a}.")), None)
        if hit is not None:
            what = "the scale axis" if hit == spec.scale.path else "a search axis"
            raise FleetsimError(f"--set {key}: {hit} is {what} of {path}, which sets it per configuration; edit the plan instead")
    overrides = {**{k: v for k, v in spec.set.items() if k not in cli}, **cli}
    base_raw, note = swap_base_trace(base_raw, trace, overrides, axes)
    probe = copy.deepcopy(base_raw)
    for key, value in overrides.items():
        set_path(probe, key.split("."), value, label=f"{path}: {key}")
    fleet = probe.get("fleet")
    base_mode = str(fleet.get("mode", "colocated") if isinstance(fleet, dict) else "colocated")
    modes = set(_values(spec.search["fleet.mode"])) if "fleet.mode" in spec.search else {base_mode}
    if "disaggregated" in modes and spec.scale.path != "fleet.autoscaler.replicas":
        raise FleetsimError(
            f"{path}: scale.path must be fleet.autoscaler.replicas when disaggregated fleets are searched (a fixed "
            f"fleet's replica count, split between the pools by {SHARE}; got {spec.scale.path})"
        )
    if SHARE in spec.search:
        if "disaggregated" not in modes:  # (colocated groups take no share: the axis would only multiply nothing)
            raise FleetsimError(
                f"{path}: search.{SHARE} splits disaggregated fleets, and this plan searches none (fleet.mode is "
                f"{', '.join(sorted(modes))}); search fleet.mode: [disaggregated] too, or drop it"
            )
        shares = _values(spec.search[SHARE])
        bad = [s for s in shares if not (isinstance(s, int | float) and 0 < s < 1)]
        if bad:
            raise FleetsimError(f"{path}: search.{SHARE}: a share must be a number between 0 and 1 (got {bad[0]!r})")
    sweep_spec = SweepSpec(base=spec.base, set=overrides, seeds=spec.seeds)
    given = (*([] if trace is None else [f"--trace {Path(trace).resolve()}"]), *(f"--set {item}" for item in sets))
    derive = functools.partial(split_replicas, scale=spec.scale.path, base_mode=base_mode)
    sweep = Sweep(
        spec.name or path.stem, sweep_spec, base_raw, base_dir, [], axes, sweep_spec.seed_list(), note, str(path), given, derive
    )
    names = list(spec.search)
    n_groups = math.prod(len(_values(spec.search[a])) for a in names)  # from the axes' lengths, before a group is built
    if n_groups > MAX_GROUPS:
        raise FleetsimError(f"{path}: the search axes cross into {n_groups:,} configuration groups, more than {MAX_GROUPS:,}")
    groups: list[Group] = []
    seen: set[str] = set()
    for combo in itertools.product(*(_values(spec.search[a]) for a in names)):
        values = dict(zip(names, combo, strict=True))
        if SHARE in values and values.get("fleet.mode", base_mode) == "colocated":
            key = repr(sorted((k, repr(v)) for k, v in values.items() if k != SHARE))
            if key in seen:
                continue  # a colocated fleet has no share: one group is enough
            seen.add(key)
        groups.append(Group(len(groups), values, scales=spec.scale.values()))
    for g in groups:  # every configuration's scenario is valid before anything runs
        found: list[str] = []
        for n in (spec.scale.start, spec.scale.to):
            point = Point(0, {**g.values, spec.scale.path: n})
            words = ", ".join(f"{k}={v!r}" for k, v in point.values.items())
            checked = check_point(sweep, point, path, f"{path}{' (with --set)' if sets else ''}: group {g.index} ({words})")
            found += checked.consumers or ()
        g.consumers = tuple(dict.fromkeys(found))
    plan = Plan(sweep.name, spec, sweep, groups, axes)
    check_buildable(plan, path)
    return plan


def check_buildable(plan: Plan, path: Path) -> None:
    """Some group can be built (its model runs on its TP degree and fits its GPUs, at some replica count): a plan
    where none can is an input mistake (TP degrees that divide nothing, say), not a plan that no configuration
    meets. Groups that cannot be built are ruled out later, by `screen`, with their reason."""
    from sim.scenario.config import parse_config
    from sim.scenario.resolve import resolve_scenario

    reasons: list[str] = []
    for g in plan.groups:
        why = None
        for n in dict.fromkeys((plan.spec.scale.start, plan.spec.scale.to)):
            raw = plan.sweep.scenario_raw(Point(0, {**g.values, plan.spec.scale.path: n}), plan.sweep.seeds[0])
            try:
                resolve_scenario(parse_config(raw, base_dir=plan.sweep.base_dir), base_dir=plan.sweep.base_dir)
                return
            except FleetsimError as err:
                why = str(err)
        values = ", ".join(f"{k}={v}" for k, v in g.values.items()) or "the base"
        reasons.append(f"group {g.index} ({values}): {why}")
    if reasons:
        more = f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else ""
        raise FleetsimError(f"{path}: no configuration can be built, so none can meet the SLO: {'; '.join(reasons[:2])}{more}")


def split_replicas(values: dict[str, Any], *, scale: str, base_mode: str) -> dict[str, Any]:
    """A plan point's axis values as scenario fields: for a disaggregated fleet, its replica count `scale` split into
    prefill and decode replicas by `fleet.prefill_share` (default a half); the share itself is not a field."""
    out = {k: v for k, v in values.items() if k != SHARE}
    if values.get("fleet.mode", base_mode) != "disaggregated" or scale not in values:
        return out
    n, share = int(values[scale]), float(values.get(SHARE, 0.5))
    prefill = max(1, round(n * share))
    decode = max(1, n - prefill)
    out["fleet.prefill.autoscaler"] = {"policy": "fixed", "replicas": prefill}
    out["fleet.decode.autoscaler"] = {"policy": "fixed", "replicas": decode}
    return out


def fleet_gpus(scenario: Scenario) -> int:
    """GPUs a fleet holds at most (its pools' replica counts, or caps, times their TP)."""
    from sim.policies.autoscale import FixedConfig

    def count(auto: Any) -> int:
        return int(auto.replicas) if isinstance(auto, FixedConfig) else int(auto.max_replicas)

    f = scenario.fleet
    if f.mode == "disaggregated":
        return sum(count(pool.autoscaler) * (pool.tp or f.tp) for pool in (f.prefill, f.decode))
    return count(f.autoscaler) * f.tp


# --- the roofline's screen ---------------------------------------------------------------------------
def screen(plan: Plan) -> None:
    """Rule groups out (or raise their smallest replica count) from physics alone, before simulating fleets."""
    from sim.physics.roofline import decode_step_time_s, prefill_time_s
    from sim.run.pools import pool_specs
    from sim.run.simulate import fleet_capacity, scenario_trace
    from sim.scenario.config import parse_config
    from sim.scenario.resolve import resolve_scenario

    slo = plan.spec.slo
    traces: dict[str, pd.DataFrame] = {}
    base_dir = plan.sweep.base_dir

    def scenario_at(g: Group, n: int) -> Scenario:
        point = Point(0, {**g.values, plan.spec.scale.path: n})
        return parse_config(plan.sweep.scenario_raw(point, plan.sweep.seeds[0]), base_dir=base_dir)

    def trace_of(scenario: Scenario) -> pd.DataFrame:
        key = repr(scenario.trace)
        if key not in traces:
            traces[key] = scenario_trace(scenario, base_dir=base_dir)
        return traces[key]

    def slo_verdict(specs: list[Any], trace: pd.DataFrame) -> str | None:
        """Why one request alone already misses the SLO on these pools (None: it does not)."""
        prefill, decode = specs[0].setup, specs[min(1, len(specs) - 1)].setup if specs[0].role != "colocated" else specs[0].setup
        prompts = trace["prompt_tokens"].to_numpy()
        p99_prompt = int(min(np.percentile(prompts, 99), prefill.context_tokens))
        if slo.p99_ttft_ms is not None:
            alone = prefill_time_s(prefill, prompt_tokens=max(1, p99_prompt)) * 1e3
            if alone > slo.p99_ttft_ms:
                return f"one p99-length prompt ({p99_prompt} tokens) alone takes {alone:,.0f} ms to prefill (SLO {slo.p99_ttft_ms:g} ms)"
        if slo.p99_tpot_ms is not None:
            step = decode_step_time_s(decode, batch=1, context_tokens=int(np.median(prompts))) * 1e3
            if step > slo.p99_tpot_ms:
                return f"one decode step at batch 1 takes {step:,.1f} ms (SLO {slo.p99_tpot_ms:g} ms)"
        return None

    def value_verdict(g: Group, n: int) -> str | None:
        """A scale that shapes the replica (fleet.tp, say): why this value alone cannot serve (None: it may)."""
        try:
            scenario = scenario_at(g, n)
            trace = trace_of(scenario)
            specs = pool_specs(scenario, trace, base_dir=base_dir)
        except FleetsimError as err:
            return str(err)
        return slo_verdict(specs, trace)

    for g in plan.groups:
        if not plan.spec.scale.path.endswith("replicas"):
            # each value is its own replica (it may fit where a smaller one does not): the group is out when none can
            # serve; a value that cannot stays in the search, its runs reporting why (the bisection reads it as a miss)
            verdicts = [value_verdict(g, n) for n in g.scales]
            if all(v is not None for v in verdicts):
                g.ruled_out = verdicts[0]
            else:
                g.lo, g.hi = 0, len(g.scales) - 1
            continue
        scenario = scenario_at(g, plan.spec.scale.start)
        trace = trace_of(scenario)
        try:
            resolved = resolve_scenario(scenario, base_dir=base_dir)
            # an MoE model's DP ranks come in whole groups (`sim.run.pools.check_whole_groups`), a pipeline's virtual
            # engines in whole servers (`check_pipeline`)
            group = resolved.dp_group * resolved.pp
            if group > 1:
                what = (
                    f"an MoE model's DP ranks come in whole groups of fleet.dp = {group}"
                    if resolved.pp == 1
                    else f"a server of fleet.pp = {resolved.pp} pipeline stages runs {group} replicas (its virtual engines)"
                )
                g.unit = group
                g.scales = [n for n in g.scales if n % group == 0]
                if not g.scales:
                    raise FleetsimError(
                        f"{plan.spec.scale.path}: {what}, and no value from {plan.spec.scale.start} to "
                        f"{plan.spec.scale.to} is a multiple of it"
                    )
                scenario = scenario_at(g, g.scales[0])
            specs = pool_specs(scenario, trace, base_dir=base_dir)
        except FleetsimError as err:
            g.ruled_out = str(err)
            continue
        why = slo_verdict(specs, trace)
        if why is not None:
            g.ruled_out = why
            continue
        per_gpu_s = fleet_capacity(scenario, specs, trace).tokens_per_gpu_s
        span = float(trace["arrival_at_s"].iloc[-1] - trace["arrival_at_s"].iloc[0]) if len(trace) > 1 else 0.0
        rate = float((trace["prompt_tokens"] + trace["output_tokens"]).sum()) / span if span > 0 else 0.0
        if per_gpu_s and 0 < rate < math.inf:  # (arrivals 5e-324 s apart: a burst at one instant, as equal ones)
            # a fleet can beat the capacity figure a little (it is measured on a sample, and a finite window can end
            # with a queue that a p99 does not see): rule out only what CAPACITY_MARGIN more would still not carry
            need_gpus = rate / (per_gpu_s * (1 + CAPACITY_MARGIN))
            g.scales = [n for n in g.scales if fleet_gpus(scenario_at(g, n)) >= need_gpus]
            g.min_replicas = g.scales[0] if g.scales else None
            if not g.scales:
                g.ruled_out = (
                    f"the trace's {rate:,.0f} tokens/s need at least {math.ceil(need_gpus)} GPUs at {per_gpu_s:,.0f} tokens/s "
                    f"each (with a {CAPACITY_MARGIN:.0%} allowance; more than {plan.spec.scale.path}={plan.spec.scale.to} holds)"
                )
                continue
        g.lo, g.hi = 0, len(g.scales) - 1


# --- evaluating configurations --------------------------------------------------------------------------
def attainment(rows: pd.DataFrame) -> pd.Series:
    """Share of a run's requests that met the scenario's SLO block (the summary's `slo_attainment`; 0 without one)."""
    out: pd.Series = (
        rows["slo_attainment"].astype(float).fillna(0.0) if "slo_attainment" in rows else pd.Series(0.0, index=rows.index)
    )
    return out


def verdict(stats: dict[str, Any], slo: PlanSlo) -> tuple[bool, str]:
    """Does a configuration meet the SLO at the plan's confidence, and by what margin (in words)."""
    parts, ok = [], True
    for key, target in (("p99_ttft_ms", slo.p99_ttft_ms), ("p99_tpot_ms", slo.p99_tpot_ms)):
        if target is None:
            continue
        mean, hi = stats[f"{key}_mean"], stats[f"{key}_ci_high"]
        bound = mean if math.isnan(hi) else hi
        ok &= bool(bound <= target)
        parts.append(f"{key} {mean:,.0f}{'' if bound == mean else f' (<= {bound:,.0f})'} vs {target:g}")
    if slo.attainment is not None:
        mean, lo = stats["attainment_mean"], stats["attainment_ci_low"]
        bound = mean if math.isnan(lo) else lo
        ok &= bool(bound >= slo.attainment)
        parts.append(f"attainment {mean:.3f}{'' if bound == mean else f' (>= {bound:.3f})'} vs {slo.attainment:g}")
    return (ok and not math.isnan(stats.get("p99_ttft_ms_mean", math.nan))), "; ".join(parts)


@dataclass
class Evaluator:
    plan: Plan
    out: Path
    workers: int = 1
    client: Any = None  # a Dask client (`sim.studies.sweep.cluster`), or local worker processes
    results: dict[tuple[int, int, bool], dict[str, Any]] = field(default_factory=dict)  # (group, count, verify) -> stats
    rows: list[pd.DataFrame] = field(default_factory=list)
    progress: Callable[[str], None] | None = None
    planned: int = 0  # runs the plan may take at most (`planned_runs`), for the progress line
    done: int = 0  # runs taken so far (resumed ones included)
    started_at: float = field(default_factory=time.perf_counter)

    def run(self, configs: list[tuple[Group, int]], *, verify: bool = False) -> None:
        """Simulate these (group, replica count) configurations for every seed (new seeds when verifying)."""
        todo = [(g, n) for g, n in configs if (g.index, n, verify) not in self.results]
        if not todo:
            return
        seeds = [s + VERIFY_SEED_OFFSET for s in self.plan.sweep.seeds] if verify else self.plan.sweep.seeds
        sweep = dataclasses.replace(  # the plan's sweep (base, overrides, how axes become fields), these points
            self.plan.sweep,
            points=[Point(i, {**g.values, self.plan.spec.scale.path: n}, g.consumers) for i, (g, n) in enumerate(todo)],
            seeds=seeds,
        )
        jobs: list[Job] = jobs_for(sweep, self.out)
        if self.progress:
            self.progress(self._status(len(todo), len(jobs), verify))
        rows = execute(jobs, workers=self.workers, client=self.client)
        self.done += len(jobs)
        rows["group"] = [todo[p][0].index for p in rows["point"]]
        rows["verify"] = verify
        ok = rows["error"].isna()
        rows["attainment"] = np.where(ok, attainment(rows), np.nan)
        # every run of the batch failed (its scenario cannot be built at this scale, say): no figures, only errors
        rows["usd_per_hour"] = rows["cost_usd"] / rows["duration"] * 3600 if "cost_usd" in rows else np.nan
        self.rows.append(rows)
        stats = seed_stats(rows, self.plan.axes, confidence=self.plan.spec.confidence, metrics=STAT_KEYS)
        for rec in stats.to_dict(orient="records"):
            g, n = todo[int(rec["point"])]
            rec["meets"], rec["why"] = verdict(rec, self.plan.spec.slo)
            first_error = rows.loc[(rows["point"] == rec["point"]) & rows["error"].notna(), "error"]
            if len(first_error):
                rec["meets"], rec["why"] = False, str(first_error.iloc[0])
            self.results[(g.index, n, verify)] = rec

    def get(self, g: Group, n: int, verify: bool = False) -> dict[str, Any]:
        return self.results[(g.index, n, verify)]

    def _status(self, n_configs: int, n_runs: int, verify: bool) -> str:
        """What is simulated next, of how many runs at most, and about how long the rest may take."""
        what = "verifying" if verify else "simulating"
        total = max(self.planned, self.done + n_runs)
        line = f"{what} {n_configs} configurations ({n_runs} runs); {self.done} of at most {total} runs done"
        if self.done:
            left = (time.perf_counter() - self.started_at) / self.done * (total - self.done)
            line += f", at most ~{left:,.0f} s left"
        return line


def planned_runs(plan: Plan) -> int:
    """The most runs the search and the verification can take once the screen has run: per live group its
    largest count plus a bisection over the rest (or every count, for the grid), times its seeds (one where the
    seed changes nothing); then the pick and three neighbours under new seeds."""
    seeds = len(plan.sweep.seeds)
    total = 0
    for g in plan.groups:
        if g.ruled_out is not None:
            continue
        n = len(g.scales)
        probes = n if plan.spec.method == "grid" else 1 + math.ceil(math.log2(n)) if n > 1 else 1
        total += probes * (1 if g.deterministic else seeds)
    return total + 4 * seeds


STAT_KEYS = ("p99_ttft_ms", "p99_tpot_ms", "usd_per_1k_tokens", "usd_per_hour", "attainment", "throughput_utilization")


def search(ev: Evaluator) -> None:
    """Bisection (or the full grid) over each live group's replica counts, all groups in lock-step rounds."""
    plan = ev.plan
    live = [g for g in plan.groups if g.ruled_out is None]
    if plan.spec.method == "grid":
        ev.run([(g, n) for g in live for n in g.scales])
        for g in live:
            passing = [i for i, n in enumerate(g.scales) if ev.get(g, n)["meets"]]
            g.best = passing[0] if passing else None
        return
    ev.run([(g, g.scales[g.hi]) for g in live])  # the largest first: can the group make it at all?
    active = []
    for g in live:
        if ev.get(g, g.scales[g.hi])["meets"]:
            g.best = g.hi
            g.hi -= 1
            active.append(g)
    while active:
        probes = []
        for g in active:
            if g.lo <= g.hi:
                probes.append((g, (g.lo + g.hi) // 2))
        if not probes:
            break
        ev.run([(g, g.scales[i]) for g, i in probes])
        for g, i in probes:
            if ev.get(g, g.scales[i])["meets"]:
                g.best, g.hi = i, i - 1
            else:
                g.lo = i + 1
        active = [g for g in active if g.lo <= g.hi]


@dataclass
class Outcome:
    ranking: pd.DataFrame  # one row per group: its smallest passing configuration, or why none
    evaluated: pd.DataFrame  # every configuration simulated (mean figures across seeds)
    frontier: pd.DataFrame  # the cost-vs-p99-TTFT Pareto frontier of the evaluated configurations
    pick: dict[str, Any] | None
    verification: list[dict[str, Any]]
    closest_miss: dict[str, Any] | None
    saving: dict[str, Any] | None = None  # the pick against the cheapest passing all-on-demand configuration


def unexportable(plan: Plan) -> str | None:
    """Why a pick of this plan could not be written as manifests, or None: `fleetsim export`'s own refusal of a search
    group's scenario (pipeline stages, a disaggregated fleet, an autoscaler it has no form for), which the base and
    the search axes fix before any run. (A group whose scenario does not even parse is the search's to report.)"""
    from sim.scenario.config import parse_config
    from sim.scenario.exporter import export_manifests

    for g in plan.groups:
        raw = plan.sweep.scenario_raw(Point(0, dict(g.values)), plan.sweep.seeds[0])
        try:
            sc = parse_config(raw, where="the plan's base", base_dir=plan.sweep.base_dir)
        except FleetsimError:
            continue
        try:
            export_manifests(sc)
        except FleetsimError as err:
            return f"{err}" + "".join(f", {k} = {v}" for k, v in g.values.items())
    return None


def pick_scenario(plan: Plan, pick: dict[str, Any]) -> Scenario:
    """The scenario of a plan's pick: its base with the pick's search-axis values and replica count set."""
    from sim.scenario.config import parse_config

    g = plan.groups[int(pick["group"])]
    point = Point(0, {**g.values, plan.spec.scale.path: int(pick[plan.spec.scale.path])})
    return parse_config(
        plan.sweep.scenario_raw(point, plan.sweep.seeds[0]), where="the plan's pick", base_dir=plan.sweep.base_dir
    )


def plan_fleet(
    plan: Plan,
    out: Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> Outcome:
    """Screen, search, rank and verify (see the module docstring); a folder another study owns is refused unless
    `force` (`sim.studies.study_dir`)."""
    if (out / MARKER).exists():
        check_owner(out, plan.sweep.owner("plan"), force=force)
    with cluster(scheduler) as client:  # connected before anything is created
        claim(out, plan.sweep.owner("plan"))
        # an earlier run's tables (of this plan as it was, perhaps edited since) until these are whole: an interrupted
        # rerun, or one with a table left empty, would otherwise leave them, looking complete
        for name in PLAN_TABLES:
            (out / f"{name}.parquet").unlink(missing_ok=True)
        return _plan(plan, out, Evaluator(plan, out, workers=workers, client=client, progress=progress))


PLAN_TABLES = ("runs", "ranking", "evaluated", "frontier")  # a plan folder's tables, written last


def _plan(plan: Plan, out: Path, ev: Evaluator) -> Outcome:
    screen(plan)
    ev.planned, ev.started_at = planned_runs(plan), time.perf_counter()
    search(ev)
    objective = f"{plan.spec.objective}_mean"
    scale = plan.spec.scale.path
    ranking = []
    for g in plan.groups:
        row: dict[str, Any] = {"group": g.index, **g.values, "min_replicas": g.min_replicas}
        if g.ruled_out is not None:
            row |= {"status": "ruled out", "why": g.ruled_out}
        elif g.best is None:
            miss = ev.get(g, g.scales[-1])
            row |= {"status": "infeasible", "why": f"at {scale}={g.scales[-1]}: {miss['why']}"}
        else:
            rec = ev.get(g, g.scales[g.best])
            row |= {"status": "meets", scale: g.scales[g.best], "why": rec["why"]}
            row |= {k: rec[k] for k in rec if k.endswith(("_mean", "_ci_low", "_ci_high"))}
        ranking.append(row)
    table = pd.DataFrame(ranking)
    feasible = table[table["status"] == "meets"]
    if len(feasible):
        feasible = feasible.sort_values(objective, kind="stable")
        table = pd.concat([feasible, table[table["status"] != "meets"]], ignore_index=True)
    evaluated = pd.DataFrame(
        [{"group": gi, scale: n, "verify": v, **rec} for (gi, n, v), rec in ev.results.items() if not v],
        columns=None if ev.results else ["group", scale, "verify", "meets", f"{plan.spec.objective}_mean", "p99_ttft_ms_mean"],
    ).sort_values(["group", scale], kind="stable")
    frontier = pareto(evaluated, objective)
    pick = feasible.iloc[0].to_dict() if len(feasible) else None
    verification: list[dict[str, Any]] = []
    closest = None
    if pick is not None:
        g = plan.groups[int(pick["group"])]
        # new seeds for what the seed changes; a deterministic configuration would replay the same requests, so the
        # pick stands as simulated and its neighbours are checked under the same seed
        checks: list[tuple[Group, int, bool]] = [] if g.deterministic else [(g, int(pick[scale]), True)]
        # the count below, even where the capacity bound ruled it out (of whole DP groups or pipeline servers)
        counts = [n for n in plan.spec.scale.values() if n % g.unit == 0]
        idx = counts.index(int(pick[scale]))
        below = counts[idx - 1] if idx > 0 else None
        if below is not None:
            checks.append((g, below, False))
        cheaper = evaluated[
            (evaluated[objective] < pick[objective]) & ~((evaluated["group"] == g.index) & (evaluated[scale] == below))
        ]
        cheaper = cheaper.sort_values(objective, ascending=False, kind="stable").head(2)
        for _, r in cheaper.iterrows():
            checks.append((plan.groups[int(r["group"])], int(r[scale]), False))
        ev.run([(cg, n) for cg, n, _ in checks if not cg.deterministic], verify=True)
        ev.run([(cg, n) for cg, n, _ in checks if cg.deterministic])
        for cg, n, should_pass in checks:
            rec = ev.get(cg, n, verify=not cg.deterministic)
            verification.append(
                {
                    "group": cg.index,
                    **cg.values,
                    scale: n,
                    "seeds": "same (deterministic)" if cg.deterministic else "new",
                    "expected": "meets" if should_pass else "fails",
                    "observed": "meets" if rec["meets"] else "fails",
                    "confirmed": rec["meets"] == should_pass,
                    "why": rec["why"],
                }
            )
    else:
        tried = evaluated[evaluated["p99_ttft_ms_mean"].notna()] if len(evaluated) else evaluated
        if len(tried):
            closest = _closest_miss(tried, plan.spec.slo)
    all_rows = pd.concat(ev.rows, ignore_index=True) if ev.rows else pd.DataFrame()
    for frame, name in zip((all_rows, table, evaluated, frontier), PLAN_TABLES, strict=True):
        if len(frame):
            _to_parquet(frame, out / f"{name}.parquet")
    return Outcome(table, evaluated, frontier, pick, verification, closest, _saving(plan, feasible, pick))


def on_demand_only(plan: Plan, group: int, n: int) -> bool:
    """Does this configuration run on on-demand capacity alone (no reserved seat, no spot replica possible)?"""
    sc = pick_scenario(plan, {"group": group, plan.spec.scale.path: n})
    fleet = sc.fleet
    return all(
        fleet.reserved_of(name) == 0 and (c.spot is None or c.spot.max_replicas == 0)
        for name, c in zip(fleet.pool_names, fleet.capacities, strict=True)
    )


def _saving(plan: Plan, feasible: pd.DataFrame, pick: dict[str, Any] | None) -> dict[str, Any] | None:
    """With capacity classes searched (`fleet.capacity` or `fleet.reserved_replicas` among the axes) and a pick that is
    not all on demand: the pick's objective against the cheapest passing all-on-demand configuration (its group and
    replica count, its objective, and 1 - pick / it); None when there is no such comparison to make."""
    capacity_axes = (
        "fleet.capacity",
        "fleet.reserved_replicas",
        *(f"fleet.{p}.{k}" for p in ("prefill", "decode") for k in ("capacity", "reserved_replicas")),
    )
    if pick is None or not any(a.startswith(capacity_axes) for a in plan.spec.search):
        return None
    scale, objective = plan.spec.scale.path, f"{plan.spec.objective}_mean"
    if on_demand_only(plan, int(pick["group"]), int(pick[scale])):
        return None
    for r in feasible.to_dict(orient="records"):  # (cheapest first)
        if on_demand_only(plan, int(r["group"]), int(r[scale])):
            return {
                "group": int(r["group"]),
                **plan.groups[int(r["group"])].values,
                scale: int(r[scale]),
                objective: r[objective],
                "saving": 1 - pick[objective] / r[objective] if r[objective] else None,
            }
    return None


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    from sim.studies.sweep import _write_frame

    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    _write_frame(frame, path)


def _closest_miss(evaluated: pd.DataFrame, slo: PlanSlo) -> dict[str, Any]:
    """The evaluated configuration that misses the SLO by the least (the largest ratio of metric to target)."""

    def shortfall(r: pd.Series) -> float:
        worst = 0.0
        if slo.p99_ttft_ms is not None:
            worst = max(worst, r["p99_ttft_ms_mean"] / slo.p99_ttft_ms)
        if slo.p99_tpot_ms is not None:
            worst = max(worst, r["p99_tpot_ms_mean"] / slo.p99_tpot_ms)
        if slo.attainment is not None and r["attainment_mean"] > 0:
            worst = max(worst, slo.attainment / r["attainment_mean"])
        return worst

    scores = evaluated.apply(shortfall, axis=1)
    best: dict[str, Any] = evaluated.loc[scores.idxmin()].to_dict()
    best["shortfall"] = float(scores.min())
    return best


def pareto(evaluated: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Configurations no other beats on both cost and p99 TTFT (lower is better for each)."""
    if not len(evaluated):
        return evaluated
    ok = evaluated[evaluated[objective].notna() & evaluated["p99_ttft_ms_mean"].notna()]
    ordered = ok.sort_values([objective, "p99_ttft_ms_mean"], kind="stable")
    keep, best = [], math.inf
    for i, r in ordered.iterrows():
        if r["p99_ttft_ms_mean"] < best:
            keep.append(i)
            best = r["p99_ttft_ms_mean"]
    return ordered.loc[keep].reset_index(drop=True)


def copy_plan(plan: Plan, **changes: Any) -> Plan:
    """A plan with spec fields changed (e.g. method='grid'), its groups fresh."""
    spec = plan.spec.model_copy(update=changes)
    groups = [Group(g.index, dict(g.values), scales=spec.scale.values()) for g in plan.groups]
    return Plan(plan.name, spec, copy.copy(plan.sweep), groups, list(plan.axes))
