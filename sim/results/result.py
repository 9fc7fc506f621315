"""The result of a run, as records: what a simulation leaves behind once its clock has stopped.

- `requests`: one row per request (instants on the simulation clock, token counts, the replica that
  served it, its status and, if rejected, why);
- `replicas`: one row per replica ever launched (lifecycle instants, seconds by state, the work it did:
  busy / prefill / decode seconds, FLOPs, bytes, steps, KV blocks);
- `timeline`: the fleet sampled every `fleet.timeline_interval_s`;
- `itl`: every inter-token gap, exactly and compactly (`metrics.GapDistribution`);
- `meta`: a plain dict: the scenario as run, the seed, what the catalogs resolved to, the simulated
  end, SimPy events, the saturated capacity, wall seconds by phase, the fleetsim version.

`summary()` is computed from these alone (metrics, billing, cost, utilization), so a result pickles,
travels between processes, and `SimResult.load(run_dir)` rebuilds one from a run folder with an
identical summary. Nothing here imports the engine or the fleet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError
from sim.physics.prices import ApiPrice, api_price
from sim.results.cost import ReplicaLife, attribute_cost, batch_cost, fleet_bill
from sim.results.metrics import (
    GapDistribution,
    class_summary,
    job_summary,
    prefix_summary,
    status_codes,
    summarize,
    transfer_summary,
)
from sim.results.records_check import (
    check_against_requests,
    check_itl,
    check_links,
    check_replicas,
    check_replicas_against_meta,
    check_requests,
    check_timeline,
)
from sim.results.run_meta import check_meta
from sim.schema import STATUS_LABELS, SUMMARY_KEYS, RequestStatus

TRANSFER_KEYS = ("kv_transfers", *(f"{s}_{w}_ms" for w in ("transfer_wait", "transfer") for s in ("mean", "median", "p99")))
PREFIX_KEYS = ("prefix_cached_tokens", "prefix_hit_rate_tokens", "prefix_hit_rate_blocks", "prefill_tokens_saved")

# The run folder's record files (written by `report.write_run`, read by `SimResult.load`).
RECORD_FILES = ("requests.parquet", "replicas.parquet", "timeline.parquet", "itl.parquet", "meta.json")


def fleet_words(fleet: dict[str, Any], meta: dict[str, Any]) -> str:
    """The fleet in a few words: "1 replica of 2x a100-80gb", "hpa 4-24 replicas of 2x h100-sxm"."""
    if fleet.get("mode") == "disaggregated" and "pools" in meta:
        parts = []
        for name in ("prefill", "decode"):
            pool = meta["pools"][name]
            auto = fleet[name]["autoscaler"]
            count = (
                str(auto["replicas"])
                if auto["policy"] == "fixed"
                else f"{auto['policy']} {auto['min_replicas']}-{auto['max_replicas']}"
            )
            parts.append(f"{count} {name} of {pool['tp']}x {pool['gpu']}")
        return "disaggregated: " + " + ".join(parts)
    replica = f"{meta['tp']}x {meta['gpu']}"
    fallback = ((meta.get("pools") or {}).get("online") or {}).get("fallback") or []
    if fallback:  # other GPU types a launch falls back to
        replica += ", falling back to " + ", ".join(f"{f['tp']}x {f['gpu']}" for f in fallback)
    auto = fleet["autoscaler"]
    if auto["policy"] == "fixed":
        n = auto["replicas"]
        return f"{n} replica{'' if n == 1 else 's'} of {replica}"
    return f"{auto['policy']} {auto['min_replicas']}-{auto['max_replicas']} replicas of {replica}"


def loss_summary(reps: pd.DataFrame, tp: int, pool_tp: dict[str, int] | None = None) -> dict[str, Any]:
    """Replicas lost to failures and reclaims and what it cost (zeros without `fleet.capacity`; a run folder written
    before these columns: null). GPU-seconds at each replica's pool's TP (`pool_tp`, by pool name), else `tp`."""
    if "interrupted" not in reps.columns:
        return dict.fromkeys(
            ("replicas_failed", "replicas_reclaimed", "requests_requeued", "tokens_recomputed", "gpu_seconds_lost")
        )
    how = reps["interrupted"].astype(str)
    return {
        "replicas_failed": int((how == "failure").sum()),
        "replicas_reclaimed": int((how == "reclaim").sum()),
        "requests_requeued": int(reps["requeued"].sum()),
        "tokens_recomputed": int(reps["tokens_lost"].sum()),
        "gpu_seconds_lost": float((reps["lost_s"].to_numpy(dtype=np.float64) * _replica_tp(reps, tp, pool_tp)).sum()),
    }


def _replica_tp(reps: pd.DataFrame, tp: int, pool_tp: dict[str, int] | None) -> np.ndarray:
    """Each replica's GPUs: its pool's TP where known, else `tp`."""
    if not pool_tp or "pool" not in reps.columns:
        return np.full(len(reps), tp, dtype=np.float64)
    return np.array([pool_tp.get(str(p), tp) for p in reps["pool"]], dtype=np.float64)


def availability(reps: pd.DataFrame, minimum: int, horizon_s: float) -> float | None:
    """The share of the run, from the instant the pool first had `minimum` replicas ready, that it had at least that
    many (a draining replica no longer counts); 1.0 with a minimum of 0, 0.0 if it never got there."""
    return joint_availability([(reps, minimum)], horizon_s)


def _ready_count(reps: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A pool's ready replicas as a step function: the instants it changes and the count from each on."""
    ready = reps["ready_at_s"].to_numpy(dtype=np.float64)
    gone = np.fmin(reps["drain_at_s"].to_numpy(dtype=np.float64), reps["end_at_s"].to_numpy(dtype=np.float64))
    keep = ~np.isnan(ready) & (gone > ready)
    times = np.concatenate([ready[keep], gone[keep]])
    steps = np.concatenate([np.ones(int(keep.sum()), np.int64), -np.ones(int(keep.sum()), np.int64)])
    order = np.lexsort((steps, times))  # at one instant, departures before arrivals
    return times[order], np.cumsum(steps[order])


def joint_availability(pools: list[tuple[pd.DataFrame, int]], horizon_s: float) -> float:
    """`availability` of several pools together (a disaggregated fleet's prefill and decode pools): the share of the
    run, from the first instant every pool had its minimum ready, that every pool had it."""
    pools = [(reps, minimum) for reps, minimum in pools if minimum > 0]
    if not pools:
        return 1.0
    steps = [_ready_count(reps) for reps, _ in pools]
    if any(not len(t) for t, _ in steps):  # a pool never had a replica ready
        return 0.0
    times = np.unique(np.concatenate([t for t, _ in steps]))
    met = np.ones(len(times), dtype=bool)
    for (t, count), (_, minimum) in zip(steps, pools, strict=True):
        at = np.searchsorted(t, times, side="right") - 1  # the last change at or before each instant
        met &= (at >= 0) & (count[np.maximum(at, 0)] >= minimum)
    if not met.any():
        return 0.0
    first = float(times[np.argmax(met)])
    if horizon_s <= first:
        return 1.0
    ends = np.append(times[1:], horizon_s).clip(max=horizon_s)  # each count holds until the next event
    span = np.clip(ends - np.maximum(times, first), 0, None)
    return float(span[met].sum()) / (horizon_s - first)


def supply_summary(result: SimResult) -> dict[str, Any]:
    """Launches that found no capacity, availability of the fleet's minimum, the same run without losses."""
    meta, sc = result.meta, result.scenario
    lines = [q for p in (meta.get("pools") or {}).values() for q in (p, *(p.get("fallback") or []))]
    supplies = [q["supply"] for q in lines if q.get("supply") is not None]
    supplies = supplies or ([meta["supply"]] if meta.get("supply") is not None else [])
    failed = sum(int(sum(s["launches_failed"].values())) for s in supplies)
    reps = result.replicas
    fleet = sc["fleet"]
    names = ("prefill", "decode") if fleet.get("mode", "colocated") == "disaggregated" else ("online",)
    minima = []
    for name in names:
        auto = fleet.get(name, {}).get("autoscaler") if name != "online" else fleet.get("autoscaler")
        minimum = None if auto is None else auto.get("min_replicas")
        minimum = auto.get("replicas") if minimum is None and auto is not None else minimum
        if minimum is not None:
            minima.append((reps[reps["pool"] == name] if "pool" in reps.columns else reps, int(minimum)))
    avail = joint_availability(minima, result.horizon_s) if len(minima) == len(names) else None
    return {
        "launches_failed": failed,
        "availability": avail,
        "without_losses": meta.get("without_losses"),
    }


@dataclass
class SimResult:
    requests: pd.DataFrame
    replicas: pd.DataFrame
    timeline: pd.DataFrame
    itl: GapDistribution
    meta: dict[str, Any]

    # --- views of meta ---------------------------------------------------------------------------------
    @property
    def horizon_s(self) -> float:
        """The simulated end: the instant the last request was resolved."""
        return float(self.meta["horizon_s"])

    @property
    def n_events(self) -> int:
        return int(self.meta["n_events"])

    @property
    def scenario(self) -> dict[str, Any]:
        """The scenario as run (defaults filled in, file paths absolute), as plain data."""
        scenario: dict[str, Any] = self.meta["scenario"]
        return scenario

    @property
    def max_tokens_per_s(self) -> float | None:
        """One replica's saturated throughput (prompt + output tokens/s) for this length mix, if measured."""
        value = self.meta["capacity"]["max_tokens_per_s_per_replica"]
        return None if value is None else float(value)

    # --- derived ----------------------------------------------------------------------------------------
    def lives(self) -> list[ReplicaLife]:
        r = self.replicas
        cols = [
            r[c].to_numpy(dtype=np.float64)
            for c in ("provision_at_s", "loading_at_s", "ready_at_s", "drain_at_s", "end_at_s", "busy_s", "busy_before_drain_s")
        ]
        return [ReplicaLife(*(float(c[i]) for c in cols)) for i in range(len(r))]

    def capacity_classes(self) -> list[str] | None:
        """Each replica's capacity class as recorded (None for a run folder written before classes)."""
        r = self.replicas
        return None if "capacity" not in r.columns else [str(c) for c in r["capacity"]]

    def _class_price(self, klass: str, default: float | None) -> float | None:
        """A capacity class's $/GPU-hour as the run resolved it (meta.json's `supply`), else `default`."""
        return _price_in({}, klass, default, self.meta)

    def summary(self) -> dict[str, Any]:
        meta, sc, reps = self.meta, self.scenario, self.replicas
        slo = {k.removesuffix("_ms"): v for k, v in sc["slo"].items() if v is not None}
        records = self.records_summary(slo or None)
        out = dict(records["latency"])
        pricing, tp = sc["pricing"], int(meta["tp"])
        groups = self._group_bills(tp, pricing) if "pools" in meta else None
        if groups is not None:  # each pool and GPU type billed at its own GPUs and price
            bill = _sum_bills([b for *_, b in groups])
        else:
            bill = fleet_bill(
                self.lives(),
                horizon_s=self.horizon_s,
                tp=tp,
                usd_per_gpu_hour=meta["usd_per_gpu_hour"],
                reserved_usd_per_gpu_hour=self._class_price("reserved", pricing["reserved_usd_per_gpu_hour"]),
                reserved_replicas=sc["fleet"]["reserved_replicas"],
                granularity_s=pricing["billing_granularity_s"],
                minimum_s=pricing["billing_minimum_s"],
                classes=self.capacity_classes(),
                spot_usd_per_gpu_hour=self._class_price("spot", None),
            )
        billed = bill["billed_gpu_seconds"]
        by_pool = None
        if groups is not None and len({g[0] for g in groups}) > 1:
            names = sorted({g[0] for g in groups})
            by_pool = {
                name: _pool_row(sum(g[3] for g in groups if g[0] == name), _sum_bills([g[4] for g in groups if g[0] == name]))
                for name in names
            }
        out |= bill
        out["by_gpu"] = _by_gpu(groups)
        out |= attribute_cost(
            bill["cost_usd"],
            prefill_busy_s=float(reps["prefill_busy_s"].sum()),
            decode_busy_s=float(reps["decode_busy_s"].sum()),
            prompt_tokens=out["total_input_tokens"],
            output_tokens=out["total_output_tokens"],
            api=api_price(pricing["compare_api"]),
        )
        served_by = reps[~np.isnan(reps["ready_at_s"].to_numpy(dtype=np.float64))]  # replicas that became ready
        known = meta["step_time"] == "roofline" and len(served_by) > 0  # FLOPs and bytes are the roofline's
        out["gpu_time_utilization"] = bill["gpu_seconds_by_state"]["busy"] / billed if billed else None
        peak_flops, peak_bytes = meta["peak_flops_per_s_per_gpu"] * billed, meta["hbm_bw_bytes_per_s_per_gpu"] * billed
        if groups is not None:  # each pool's and GPU type's GPU-seconds at its own GPU's peaks
            peak_flops = sum(own["peak_flops_per_s_per_gpu"] * b["billed_gpu_seconds"] for _, _, own, _, b in groups)
            peak_bytes = sum(own["hbm_bw_bytes_per_s_per_gpu"] * b["billed_gpu_seconds"] for _, _, own, _, b in groups)
        out["mfu"] = float(reps["flops"].sum()) / peak_flops if billed and known else None
        out["mbu"] = float(reps["bytes"].sum()) / peak_bytes if billed and known else None
        served = out["total_input_tokens"] + out["total_output_tokens"]
        cap = meta["capacity"]
        per_gpu_s = cap.get("tokens_per_gpu_s")
        if per_gpu_s is None and cap.get("max_tokens_per_s_per_replica") is not None:  # (a run folder of 0.1)
            per_gpu_s = cap["max_tokens_per_s_per_replica"] / tp
        capacity = None if per_gpu_s is None else per_gpu_s * billed
        theirs = [(name, own, b["billed_gpu_seconds"]) for name, k, own, _, b in groups or [] if k >= 0]
        if capacity is not None and theirs:  # fallback GPU types: their GPU-seconds at their own capacity
            measured = cap.get("fallback") or {}
            per = [(measured.get(f"{name}.{own['gpu']}.{own['tp']}"), gpu_s) for name, own, gpu_s in theirs]
            if any(c is None for c, gpu_s in per if gpu_s):
                capacity = None  # (not measured: a disaggregated fleet's fallback, or none measured)
            else:
                capacity = per_gpu_s * (billed - sum(g for _, g in per)) + sum(c * g for c, g in per if c is not None)
        out["max_tokens_per_s_per_replica"] = self.max_tokens_per_s
        out["capacity_tokens_per_gpu_s"] = per_gpu_s
        out["throughput_utilization"] = served / capacity if capacity else None
        out["throughput_utilization_rel_se"] = cap.get("rel_se") if capacity else None
        t = self.timeline
        out["replicas_max"] = int(t["replicas_ready"].max()) if len(t) else len(served_by)
        out["replicas_launched"] = len(reps)
        out["replicas_woken"] = int(reps["woke"].sum())  # (sleep mode: launches that woke a sleeping replica)
        out |= loss_summary(reps, int(meta["tp"]), {n: int(p["tp"]) for n, p in (meta.get("pools") or {}).items()})
        out["n_steps"] = int(reps["n_steps"].sum())
        out["n_events"] = self.n_events
        out["kv_blocks"] = int(served_by["kv_blocks"].iloc[0]) if len(served_by) else 0
        out["kv_peak_blocks"] = int(reps["kv_peak_blocks"].max()) if len(reps) else 0
        out["by_class"] = records["by_class"]
        out["by_pool"] = by_pool
        out |= supply_summary(self)
        out |= records["transfers"] or dict.fromkeys(TRANSFER_KEYS)
        out |= records["prefix"] or dict.fromkeys(PREFIX_KEYS)
        by_job = records["by_job"]
        if by_job is not None:
            hours = {name: pool["billed_gpu_seconds"] / 3600 for name, pool in (by_pool or {}).items()}
            batch_hours = hours.get("batch", billed / 3600)  # the dedicated pool's, else the whole fleet's (shared)
            for rec in by_job.values():
                rec["tokens_per_gpu_hour"] = rec["tokens"] / batch_hours if batch_hours else None
        out["by_job"] = by_job
        out["batch_cost"] = self._batch_cost(records["batch_tokens"], out, by_pool, api_price(pricing["compare_api"]))
        verifies = int(reps["verifies"].sum())
        out["spec_tokens_per_verify_step"] = float(reps["verify_tokens"].sum()) / verifies if verifies else None
        lora = meta.get("lora") is not None
        out["lora_loads"] = int(reps["lora_loads"].sum()) if lora else None
        out["lora_load_s"] = float(reps["lora_load_s"].sum()) if lora else None
        woke, slept = reps["woke"].to_numpy(dtype=bool), reps["slept"].to_numpy(dtype=bool)
        swaps = (reps["loading_s"].to_numpy() * woke + reps["sleep_s"].to_numpy()) * reps["tp"].to_numpy()
        out["sleep_wake_gpu_seconds"] = float(swaps.sum()) if woke.any() or slept.any() else None
        out["scenario"] = meta.get("name")  # (a run folder from before names has none)
        out["fleet"] = fleet_words(sc["fleet"], meta)
        assert set(out) == set(SUMMARY_KEYS), set(out) ^ set(SUMMARY_KEYS)
        return {k: out[k] for k in SUMMARY_KEYS}

    def records_summary(self, slo: dict[str, float] | None) -> dict[str, Any]:
        """The summary's parts read from the request and gap records: `latency` (`metrics.summarize`), `by_class`,
        `transfers`, `prefix`, `by_job`, and `batch_tokens` (the completed batch requests' prompt and output tokens;
        None without batch requests). A stored run's (`sim.results.stored`) are computed in passes over its files."""
        r = self.requests
        batch = (r["klass"] == "batch").to_numpy()
        done = batch & (status_codes(r) == RequestStatus.COMPLETED)
        tokens = (int(r["prompt_tokens"].to_numpy()[done].sum()), int(r["output_tokens"].to_numpy()[done].sum()))
        return {
            "latency": summarize(r, self.itl, slo=slo),
            "by_class": class_summary(r, slo=slo),
            "transfers": transfer_summary(r, self.meta),
            "prefix": prefix_summary(r, self.meta),
            "by_job": job_summary(r),
            "batch_tokens": tokens if batch.any() else None,
        }

    def _batch_cost(
        self, tokens: tuple[int, int] | None, out: dict[str, Any], by_pool: dict[str, Any] | None, api: ApiPrice
    ) -> dict[str, Any] | None:
        """What the batch work cost (`sim.results.cost.batch_cost`); None without batch requests."""
        if tokens is None:
            return None
        return batch_cost(
            prompt_tokens=tokens[0],
            output_tokens=tokens[1],
            dedicated=(by_pool or {}).get("batch"),
            billed_gpu_seconds=out["billed_gpu_seconds"],
            cost_usd=out["cost_usd"],
            without_batch=self.meta.get("without_batch"),
            api=api,
        )

    def _group_bills(self, tp: int, pricing: dict[str, Any]) -> list[tuple[str, int, dict[str, Any], int, dict[str, Any]]] | None:
        """With more than one pool (a dedicated batch pool; a disaggregated fleet's prefill and decode pools) or more
        than one GPU type in a pool (`fleet.capacity.fallback`): each (pool, GPU type)'s line of meta.json, replicas
        and bill at its own GPUs' count and price (the fleet's reserved replicas belong to the online or prefill
        pool's own GPU type); None with one pool of one GPU type."""
        reps = self.replicas
        if "pool" not in reps.columns:
            return None
        meta_pools = self.meta.get("pools") or {}
        pools = reps["pool"].astype(str).to_numpy()
        kinds = list(zip(reps["gpu"].astype(str), reps["tp"].astype(int), strict=True)) if "gpu" in reps.columns else None
        keys = []
        for i, name in enumerate(pools):
            own = meta_pools.get(name, {})
            k = -1  # the pool's own GPU type
            if kinds is not None and kinds[i][0] and kinds[i] != (own.get("gpu"), own.get("tp")):
                k = next(j for j, fb in enumerate(own.get("fallback") or []) if (fb["gpu"], fb["tp"]) == kinds[i])
            keys.append((name, k))
        if set(keys) <= {("online", -1)}:
            return None
        lives = self.lives()
        classes = self.capacity_classes()
        out = []
        for name, k in sorted(set(keys)):
            mine = np.array([key == (name, k) for key in keys])
            pool = meta_pools.get(name, {})
            own = pool if k < 0 else pool["fallback"][k]
            bill = fleet_bill(
                [life for life, m in zip(lives, mine, strict=True) if m],
                horizon_s=self.horizon_s,
                tp=int(own.get("tp", tp)),
                usd_per_gpu_hour=own.get("usd_per_gpu_hour", self.meta["usd_per_gpu_hour"]),
                reserved_usd_per_gpu_hour=_price_in(own, "reserved", pricing["reserved_usd_per_gpu_hour"], self.meta),
                reserved_replicas=0
                if k >= 0
                else own.get(
                    "reserved_replicas", self.scenario["fleet"]["reserved_replicas"] if name in ("online", "prefill") else 0
                ),
                granularity_s=pricing["billing_granularity_s"],
                minimum_s=pricing["billing_minimum_s"],
                classes=None if classes is None else [c for c, m in zip(classes, mine, strict=True) if m],
                spot_usd_per_gpu_hour=_price_in(own, "spot", None, self.meta if k < 0 else None),
            )
            out.append((name, k, own, int(mine.sum()), bill))
        return out

    # --- persistence -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path) -> SimResult:
        """Rebuild a result from a run folder written by `fleetsim run` (or `report.write_run`)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            what = "a file, not a folder" if run_dir.exists() else "no such folder"
            raise FleetsimError(f"{run_dir}: not a run folder ({what})")
        missing = [name for name in RECORD_FILES if not (run_dir / name).is_file()]
        if missing:
            raise FleetsimError(f"{run_dir}: not a complete run folder (missing {', '.join(missing)})")
        try:
            meta = check_meta(json.loads((run_dir / "meta.json").read_text()), run_dir)
            requests = pd.read_parquet(run_dir / "requests.parquet")
            check_requests(run_dir / "requests.parquet", requests)
            requests["status"] = pd.Categorical(requests["status"].astype(str), categories=STATUS_LABELS)
            replicas = pd.read_parquet(run_dir / "replicas.parquet")
            check_replicas(run_dir / "replicas.parquet", replicas)
            check_replicas_against_meta(run_dir / "replicas.parquet", replicas, meta)
            check_links(run_dir / "replicas.parquet", requests, replicas)
            itl = pd.read_parquet(run_dir / "itl.parquet")
            check_itl(run_dir / "itl.parquet", itl, replicas)
            check_against_requests(run_dir, requests, replicas, itl)
            timeline = pd.read_parquet(run_dir / "timeline.parquet")
            check_timeline(run_dir / "timeline.parquet", timeline)
            return cls(
                requests=requests,
                replicas=replicas,
                timeline=timeline,
                itl=GapDistribution.from_frame(itl),
                meta=meta,
            )
        except FleetsimError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise FleetsimError(f"{run_dir}: cannot read the run folder ({type(err).__name__}: {err})") from None


def _price_in(own: dict[str, Any], klass: str, default: float | None, meta: dict[str, Any] | None) -> float | None:
    """A capacity class's $/GPU-hour as the run resolved it: a pool's or GPU type's meta.json line's `supply`, else
    the run's `supply` (`meta`, when given), else `default`."""
    supply = own.get("supply") or (meta or {}).get("supply") or {}
    prices = supply.get("prices") or {}
    return prices[klass]["usd_per_gpu_hour"] if klass in prices else default


def _by_gpu(groups: list[tuple[str, int, dict[str, Any], int, dict[str, Any]]] | None) -> dict[str, Any] | None:
    """`by_gpu`: with more than one GPU type (pools of different GPUs, a fallback's replicas), per "TPx GPU" the
    replicas launched, GPU-seconds billed and dollars; None with one."""
    if groups is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for _, _, own, n, bill in groups:
        row = out.setdefault(f"{own['tp']}x {own['gpu']}", {"replicas_launched": 0, "billed_gpu_seconds": 0.0, "cost_usd": 0.0})
        row["replicas_launched"] += n
        row["billed_gpu_seconds"] += bill["billed_gpu_seconds"]
        row["cost_usd"] = None if row["cost_usd"] is None or bill["cost_usd"] is None else row["cost_usd"] + bill["cost_usd"]
    return out if len(out) > 1 else None


def _pool_row(n_replicas: int, bill: dict[str, Any]) -> dict[str, Any]:
    """A pool's line of `by_pool`."""
    billed, states = bill["billed_gpu_seconds"], bill["gpu_seconds_by_state"]
    return {
        "replicas_launched": n_replicas,
        "billed_gpu_seconds": billed,
        "busy_gpu_seconds": states["busy"],
        "gpu_time_utilization": states["busy"] / billed if billed else None,
        "gpu_seconds_by_state": dict(states),
        "cost_usd": bill["cost_usd"],
    }


def _sum_bills(bills: list[dict[str, Any]]) -> dict[str, Any]:
    """Pools' bills added up (a cost is unknown if any pool's is)."""
    states = {k: sum(b["gpu_seconds_by_state"][k] for b in bills) for k in bills[0]["gpu_seconds_by_state"]}
    costs = [b["cost_usd"] for b in bills]
    by_class: dict[str, dict[str, Any]] = {}
    for b in bills:
        for klass, row in b["cost_by_capacity"].items():
            mine = by_class.setdefault(
                klass, {"replicas": 0, "billed_gpu_seconds": 0.0, "usd_per_gpu_hour": row["usd_per_gpu_hour"], "cost_usd": 0.0}
            )
            if mine["usd_per_gpu_hour"] != row["usd_per_gpu_hour"]:
                mine["usd_per_gpu_hour"] = None  # (pools priced it differently: no one price)
            mine["replicas"] += row["replicas"]
            mine["billed_gpu_seconds"] += row["billed_gpu_seconds"]
            mine["cost_usd"] = None if mine["cost_usd"] is None or row["cost_usd"] is None else mine["cost_usd"] + row["cost_usd"]
    return {
        "billed_gpu_seconds": sum(b["billed_gpu_seconds"] for b in bills),
        "gpu_seconds_by_state": states,
        "cost_usd": None if any(c is None for c in costs) else sum(costs),
        "cost_by_capacity": by_class,
    }


def json_safe(value: Any) -> Any:
    """Non-finite floats as null (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
