"""A platform's records (`sim.run.platform`): one run per deployment (`SimResult`, the one record schema) and the
platform's own figures — the GPU budget (GPUs of each type, the most held at once, launch tries it refused) and the
totals over deployments.

Platform summary (summary.json of a platform run folder):
  requests, completed, rejected, in_flight, total_input_tokens, total_output_tokens   summed over deployments
  duration                     s, the platform's end: every deployment's last request resolved
  billed_gpu_seconds, cost_usd summed; usd_per_1k_tokens = cost_usd / (input + output tokens of completed requests) x 1000
  slo_attainment               requests meeting their own deployment's SLO over all requests of deployments with one
  {mean,median,std,p90,p99}_{ttft,tpot,itl,e2el}_ms   over every deployment's requests together (exact, as a run's)
  gpu_time_utilization         busy GPU-seconds over billed GPU-seconds, all deployments
  throughput_utilization       tokens served over what the GPU-seconds billed would serve saturated, each deployment's at
                               its own replica's measured capacity (None unless every deployment's was measured)
  billed_gpu_seconds_by_gpu    {GPU type: GPU-seconds billed}
  gpu_budget                   {GPU type: {gpus, peak_held}}; launches_held_back {deployment: launch tries refused}
  replicas_preempted           {deployment: its replicas preempted for a higher-priority one's launch}
  gpu_seconds_swapping         GPU-seconds spent waking replicas and putting them to sleep (sleep mode), all deployments
  gpu_seconds_adapter_loads    GPU-seconds of steps stalled by LoRA adapter loads (each replica's stall x its TP)
  deployments                  {name: that deployment's summary (as a run of its own)}

A platform run folder holds summary.json, platform.json (the platform's meta) and `deployments/<name>/`, each a run
folder of its own (`fleetsim report` reads either).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import FleetsimError
from sim.results.metrics import GapDistribution, summarize
from sim.results.result import SimResult
from sim.schema import LATENCY, STATS

PLATFORM_FILE = "platform.json"
DEPLOYMENTS_DIR = "deployments"
PLATFORM_KEYS = (
    "scenario",
    "requests",
    "completed",
    "rejected",
    "in_flight",
    "duration",
    "total_input_tokens",
    "total_output_tokens",
    "billed_gpu_seconds",
    "cost_usd",
    "usd_per_1k_tokens",
    "slo_attainment",
    *(f"{stat}_{metric}_ms" for metric in LATENCY for stat in STATS),
    "gpu_time_utilization",
    "throughput_utilization",
    "billed_gpu_seconds_by_gpu",
    "gpu_budget",
    "launches_held_back",
    "replicas_preempted",
    "gpu_seconds_swapping",
    "gpu_seconds_adapter_loads",
    "deployments",
)


@dataclass
class PlatformResult:
    deployments: dict[str, SimResult]  # by deployment name, in the scenario's order
    meta: dict[str, Any]

    @property
    def horizon_s(self) -> float:
        return float(self.meta["horizon_s"])

    def summary(self) -> dict[str, Any]:
        per = {name: r.summary() for name, r in self.deployments.items()}
        runs = list(zip(self.deployments.values(), per.values(), strict=True))

        def total(key: str) -> Any:
            return sum(s[key] for s in per.values())

        tokens = total("total_input_tokens") + total("total_output_tokens")
        costs = [s["cost_usd"] for s in per.values()]
        cost = None if any(c is None for c in costs) else float(sum(costs))
        billed = float(total("billed_gpu_seconds"))
        busy = float(sum(s["gpu_seconds_by_state"]["busy"] for s in per.values()))
        judged = [(s["slo_attainment"], len(r.requests)) for r, s in runs if s["slo_attainment"] is not None]
        n_judged = sum(n for _, n in judged)
        capacities = [s["capacity_tokens_per_gpu_s"] for s in per.values()]
        capacity = (
            None
            if any(c is None for c in capacities)
            else sum(c * s["billed_gpu_seconds"] for c, s in zip(capacities, per.values(), strict=True))
        )
        by_gpu: dict[str, float] = {}
        for r, s in runs:
            groups = s["by_gpu"]
            if groups:
                for gpu, row in groups.items():
                    by_gpu[gpu] = by_gpu.get(gpu, 0.0) + row["billed_gpu_seconds"]
            else:
                by_gpu[r.meta["gpu"]] = by_gpu.get(r.meta["gpu"], 0.0) + s["billed_gpu_seconds"]
        every = pd.concat([r.requests for r in self.deployments.values()], ignore_index=True)
        gaps = GapDistribution.from_frame(pd.concat([r.itl.to_frame() for r in self.deployments.values()], ignore_index=True))
        latency = summarize(every, gaps)
        out = {
            **{k: latency[k] for k in PLATFORM_KEYS if k.endswith("_ms")},
            "scenario": self.meta.get("name"),
            "requests": sum(len(r.requests) for r in self.deployments.values()),
            "completed": total("completed"),
            "rejected": total("rejected"),
            "in_flight": total("in_flight"),
            "duration": self.horizon_s,
            "total_input_tokens": total("total_input_tokens"),
            "total_output_tokens": total("total_output_tokens"),
            "billed_gpu_seconds": billed,
            "cost_usd": cost,
            "usd_per_1k_tokens": cost / tokens * 1000 if cost is not None and tokens else None,
            "slo_attainment": sum(a * n for a, n in judged) / n_judged if n_judged else None,
            "gpu_time_utilization": busy / billed if billed else None,
            "throughput_utilization": tokens / capacity if capacity else None,
            "billed_gpu_seconds_by_gpu": dict(sorted(by_gpu.items())),
            "gpu_budget": self.meta["gpu_budget"],
            "launches_held_back": self.meta["launches_held_back"],
            "replicas_preempted": {
                name: int((r.replicas["interrupted"].astype(str) == "preempted").sum()) for name, r in self.deployments.items()
            },
            "gpu_seconds_swapping": float(sum(s["sleep_wake_gpu_seconds"] or 0.0 for s in per.values())),
            "gpu_seconds_adapter_loads": float(
                sum((r.replicas["lora_load_s"] * r.replicas["tp"]).sum() for r in self.deployments.values())
            ),
            "deployments": per,
        }
        assert set(out) == set(PLATFORM_KEYS)
        return {k: out[k] for k in PLATFORM_KEYS}

    def gpus_held(self) -> pd.DataFrame:
        """GPUs each deployment held (its replicas from provisioning to their end, draining and falling asleep
        included, times their TP), by GPU type, at every instant one changed: columns t_s, gpu, then one per deployment
        (a step function: the counts hold until the next row)."""
        events: list[tuple[float, str, str, int]] = []
        for name, run in self.deployments.items():
            r = run.replicas
            for a, b, gpu, tp in zip(r["provision_at_s"], r["end_at_s"], r["gpu"], r["tp"], strict=True):
                events += [(float(a), str(gpu), name, int(tp)), (float(b), str(gpu), name, -int(tp))]
        events.sort(key=lambda e: (e[0], e[3]))  # (a release before a launch at one instant, as the budget hands on)
        held: dict[tuple[str, str], int] = {}
        rows = []
        for t, gpu, name, d in events:
            held[(gpu, name)] = held.get((gpu, name), 0) + d
            rows.append({"t_s": t, "gpu": gpu, **{n: held.get((gpu, n), 0) for n in self.deployments}})
        frame = pd.DataFrame(rows, columns=["t_s", "gpu", *self.deployments])
        return frame.drop_duplicates(subset=["t_s", "gpu"], keep="last").reset_index(drop=True)

    @classmethod
    def load(cls, run_dir: str | Path) -> PlatformResult:
        """Rebuild a platform's result from its run folder."""
        run_dir = Path(run_dir)
        try:
            meta = json.loads((run_dir / PLATFORM_FILE).read_text())
            names = [d["name"] for d in meta["deployments"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FleetsimError(f"{run_dir}: cannot read the platform run folder ({type(err).__name__}: {err})") from None
        return cls({name: SimResult.load(run_dir / DEPLOYMENTS_DIR / name) for name in names}, meta)


def is_platform_folder(run_dir: str | Path) -> bool:
    return (Path(run_dir) / PLATFORM_FILE).is_file()
