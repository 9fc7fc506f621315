"""Every feature with every other (hypothesis): colocated or disaggregated x batch jobs (none, backfilled, a
dedicated pool; with or without the guard) x prefix caching x speculative decoding x LoRA adapters (not with speculation:
refused) x every router x every
autoscaler x the router's cap x sleep mode x a max_model_len x a host cost a scheduled sequence x pipeline stages x a frontend latency, on random traces; and platforms of 1-3 such deployments on one GPU budget. On each: requests conserved; every token the engine emitted
accounted for (the gap record holds one gap per token after a request's first, counted by the engine, not copied
from the trace); every replica's KV blocks back to zero (or to its cache's unpinned entries) and nothing held for a
transfer; GPU-seconds billed = the replicas' lives recomputed from their instants; and the fast-forwarded engine
gives the per-step reference's per-request instants; and the same run stored (`simulate_stored`) gives the same
summary."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sim.run.engine import records
from sim.run.engine.kv import PrefixCachingKv
from sim.run.freeze import freeze
from sim.run.simulate import _build, _resolve, run, simulate_stored
from sim.scenario.config import parse_config
from sim.schema import RequestStatus
from sim.workload import validate_frame
from tests.test_engine_equivalence import assert_same_requests
from tests.test_stored_run import differences

AUTOSCALERS = {
    "fixed": {"policy": "fixed", "replicas": 2},
    "hpa": {
        "policy": "hpa",
        "metric": "outstanding_per_replica",
        "target": 3,
        "min_replicas": 1,
        "max_replicas": 3,
        "interval_s": 2,
        "scale_down_stabilization_s": 6,
    },
    "hpa_slo": {  # on the fleet's p90 TTFT (the latency watch listens to every replica)
        "policy": "hpa",
        "metric": "p90_ttft_s",
        "target": 0.5,
        "min_replicas": 1,
        "max_replicas": 3,
        "interval_s": 2,
        "scale_down_stabilization_s": 6,
        "latency_window_s": 5,
    },
    "predictive": {
        "policy": "predictive",
        "predictor": "seasonal",
        "season_s": 6,
        "window_s": 2,
        "requests_per_replica_s": 2.0,
        "min_replicas": 1,
        "max_replicas": 3,
        "interval_s": 1,
        "scale_down_stabilization_s": 3,
    },
    "kpa": {
        "policy": "kpa",
        "target_concurrency": 3,
        "min_replicas": 0,
        "max_replicas": 3,
        "initial_replicas": 1,
        "scale_to_zero_grace_s": 4,
    },
    "queue": {
        "policy": "queue",
        "target_waiting": 2,
        "min_replicas": 1,
        "max_replicas": 3,
        "interval_s": 2,
        "scale_down_delay_s": 6,
    },
    "scheduled": {
        "policy": "scheduled",
        "min_replicas": 0,
        "max_replicas": 3,
        "interval_s": 2,
        "period_s": 30,
        "table": [{"at_s": 0, "replicas": 1}, {"at_s": 10, "replicas": 3}, {"at_s": 20, "replicas": 0}],
    },
}
ROUTERS = ["round_robin", "least_outstanding", "least_kv", "power_of_two", "least_prompt_tokens", "prefix_aware", "lora_aware"]
SPECULATION = {
    "off": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": 2, "acceptance_rate": 0.6},
    "mtp": {"method": "mtp", "num_speculative_tokens": 3, "acceptance_rate": [0.8, 0.6, 0.4]},
}
HASH_TOKENS = 64


def trace(seed: int, n: int, rate: float, *, prefixes: bool, adapters: bool = False, gap: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    t[n // 2 :] += gap  # (a lull mid-trace: autoscalers scale down, then up again — sleepers wake)
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": t,
                "prompt_tokens": rng.integers(1, 300, n),
                "output_tokens": rng.integers(1, 60, n),
            }
        )
    )
    if prefixes:  # a few shared system prompts (ids 0-2) and then each request's own blocks
        ids = []
        for i, p in enumerate(frame["prompt_tokens"].to_numpy()):
            k = int(p) // HASH_TOKENS
            head = int(rng.integers(0, 3))
            ids.append(np.asarray([head, *[1000 * (i + 1) + j for j in range(1, k)]][:k], dtype=np.int64))
        frame["prefix_hash_ids"] = ids
    if adapters:  # five adapters and the base model
        frame["adapter"] = rng.integers(-1, 5, len(frame))
    return frame


def lora_on(draw: dict) -> bool:
    return bool(draw["lora"]) and draw["speculation"] == "off"  # (LoRA with speculative decoding: refused)


def groups_of(auto: dict, dp: int) -> dict:
    """An autoscaler's counts in whole DP groups (an MoE model's ranks share its experts: a fleet holds groups)."""
    out = {k: v * dp if k in ("replicas", "min_replicas", "max_replicas", "initial_replicas") else v for k, v in auto.items()}
    if "table" in auto:
        out["table"] = [{**e, "replicas": e["replicas"] * dp} for e in auto["table"]]
    return out


def scenario(draw: dict, fast_forward: bool) -> dict:
    engine = {
        "policy": draw["engine_policy"],
        "fast_forward": fast_forward,
        "max_num_batched_tokens": 512,
        "max_num_seqs": 8,
        "num_gpu_blocks_override": draw["blocks"],
        "block_size": 16,
        "prefix_caching": draw["prefix"],
        "prefix_hash_block_tokens": HASH_TOKENS,
        "speculative": SPECULATION[draw["speculation"]],
        "preempt_for_priority": draw["preempt_for_priority"],
        "step_time": {"kind": "roofline"},
        "enforce_eager": draw["eager"],
        "lora": {"max_loras": draw["lora"], "max_cpu_loras": 2 * draw["lora"]} if lora_on(draw) else None,
        "long_prefill_token_threshold": draw["long_prefill"],
        "async_scheduling": draw.get("async", False),
        "max_model_len": draw.get("max_model_len"),
        "disable_hybrid_kv_cache_manager": draw.get("hybrid_off"),
    }
    dp = 2 if draw.get("moe") else 1

    def auto(name: str) -> dict:
        return groups_of(AUTOSCALERS[name], dp)

    fleet = {
        "gpu": "h100-sxm" if draw.get("fp8") else "a100-80gb",  # (FP8 GEMMs: a GPU with FP8 tensor cores)
        "tp": 1,
        "router": draw["router"],
        "autoscaler": auto(draw["autoscaler"]),
        "max_outstanding_per_replica": draw["cap"],
        "timeline_interval_s": 1.0,
        "lifecycle": {"provision_s": 1.5, "image_pull_s": 0.5, "load_gb_per_s": 64.0, "warmup_s": 0.2},
    }
    if draw.get("sleep"):  # sleep mode: scaled-down replicas sleep (their weights out at 8 GB/s), launches wake them
        fleet["lifecycle"]["sleep"] = {"level": draw["sleep"], "host_to_gpu_gb_per_s": 8.0, "max_sleeping": 1}
    capacity = None

    def groups(n: int | None) -> int | None:  # an MoE fleet's caps hold whole DP groups (`check_whole_group_caps`)
        return None if n is None else n * dp

    if draw["hazards"] != "none":
        at = draw["hazard_at_s"]
        spot = draw["hazards"] in ("reclaim", "both")
        capacity = {
            "failures": {"fail_at_s": at, "gpu_mtbf_hours": 0.01} if draw["hazards"] in ("failure", "both") else None,
            "spot": {"reclaim_at_s": at, "notice_s": 1.0, "max_replicas": groups(draw["spot_max"])} if spot else None,
            "launch_order": (["on_demand", "spot"] if draw["on_demand_first"] else ["spot", "on_demand"]) if spot else None,
            "on_demand": {"launch_failure_probability": draw["launch_failure"], "max_replicas": groups(draw["on_demand_max"])},
            "backoff": {"initial_s": 2.0, "max_s": 8.0},
            # another GPU type when every class of the fleet's own is out (its own step times and price)
            "fallback": [{"gpu": draw["fallback"], "max_replicas": dp, "usd_per_gpu_hour": 1.1}] if draw["fallback"] else [],
        }
        fleet["reserved_replicas"] = groups(draw["reserved"])
    # the two pools' blocks (used when disaggregated; said either way: on a platform a deployment's fleet block merges
    # over the first one's, whose pools may be another model's, counted in another group size)
    fleet["prefill"] = {"autoscaler": auto(draw["autoscaler"]), "router": draw["router"]}
    fleet["decode"] = {"autoscaler": auto("fixed")}
    if draw["mode"] == "disaggregated":
        fleet["mode"] = "disaggregated"
        fleet["link"] = {"preset": "roce_200g"} if draw["link"] == "fast" else {"preset": "ethernet_100g", "latency_s": 0.5}
        if capacity is not None and draw["capacity_of"] != "fleet":  # one pool's own capacity block
            fleet[draw["capacity_of"]]["capacity"] = capacity
            capacity = None
    # (said either way: on a platform a deployment's fleet block merges over the first one's, whose caps may be counted
    # in another group size)
    fleet["capacity"] = capacity if capacity is not None else {}
    # an MoE model's DP ranks with expert parallelism: each group of two steps in lock-step (said either way: on a
    # platform a deployment's fleet block merges over the first one's)
    fleet["dp"], fleet["expert_parallel"] = (2, True) if draw.get("moe") else (1, False)
    # pipeline stages: a fixed colocated fleet of whole servers (what would split a server is refused: test_pipeline)
    if (
        draw.get("pp")
        and draw["mode"] == "colocated"
        and draw["autoscaler"] == "fixed"
        and draw["hazards"] == "none"
        and draw["speculation"] == "off"
        and draw["batch"] != "dedicated"
        and not draw.get("moe")
    ):
        fleet["pp"] = 2
    # its exchange (vLLM's default or a per-destination dispatch) and a hot GPU's share; said either way, as above
    moe = bool(draw.get("moe"))
    fleet["all2all_backend"] = draw.get("a2a", "allgather_reducescatter") if moe else "allgather_reducescatter"
    fleet["expert_load_imbalance"] = draw.get("imbalance", 1.0) if moe else 1.0
    raw = {
        # gpt-oss-20b: sliding-window layers (and vLLM's hybrid KV cache), an MoE model with DP ranks or without
        "model": "gpt-oss-20b" if draw.get("window") else "qwen3-30b-a3b" if draw.get("moe") else "llama-3.1-8b",
        "seed": draw["seed"] % 1000,
        "fleet": fleet,
        "engine": engine,
        "pricing": {"usd_per_gpu_hour": 2.0, "spot_usd_per_gpu_hour": 0.8, "billing_granularity_s": 0},
        "slo": {"ttft_ms": 800, "tpot_ms": 60},
        "roofline": {
            "logits": draw["logits"],
            "kv_memory": draw["kv_memory"],
            "seq_overhead_s": draw.get("host", 0.0),
            "frontend_latency_s": draw.get("frontend", 0.0),
            # FP8 GEMMs, attention at BF16 (`attention_time_factor`)
            **({"compute_dtype": "fp8"} if draw.get("fp8") else {}),
        },  # (the blocks are given: sizing is built, not used)
    }
    if draw["batch"] != "none":
        job = {
            "job_id": "j",
            "requests": draw["n_batch"],
            "prompt_tokens": {"dist": "uniform", "low": 1, "high": 200},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 40},
            "submit_at_s": draw["submit_at_s"],
            "deadline_s": 60,
        }
        raw["batch"] = {"jobs": [job], "fleet": draw["batch"], "max_per_replica": 3}
        if draw["batch"] == "dedicated":
            raw["batch"]["dedicated"] = {"replicas": dp}
        elif draw["guard"]:
            raw["batch"]["guard"] = {"interval_s": 2}
    return raw


@contextlib.contextmanager
def released_every(arrivals: int) -> Iterator[None]:
    """A stored run hands its pages back and spills its gap record every `arrivals` (a long run's: every 262,144)."""
    old = records.RELEASE_EVERY
    records.RELEASE_EVERY = arrivals
    try:
        yield
    finally:
        records.RELEASE_EVERY = old


def simulate_and_inspect(raw: dict, frame: pd.DataFrame):
    """The run's records, and its replicas' engines as the run left them."""
    sc = parse_config(raw)
    setup, full, specs = _resolve(sc, frame, sc.base_dir)
    built = _build(sc, specs, full)
    run(built)
    engines = [slot.engine for slot in built.replicas.slots if slot.engine is not None]
    return freeze(built, sc, setup, sc.base_dir, full), engines


# cases the search found once, kept (each was a real gap between the fast-forward and the reference, or a crash)
FOUND = dict(
    mode="colocated", batch="none", guard=False, n_batch=1, submit_at_s=0.0, prefix=True, router="round_robin",
    autoscaler="fixed", cap=None, engine_policy="chunked", preempt_for_priority=False, blocks=40, logits="sampled",
    kv_memory="vllm", eager=False, spot_max=None, on_demand_first=False, launch_failure=0.0, on_demand_max=None,
    reserved=0, fallback=None, capacity_of="fleet", link="fast", lora=0, long_prefill=48, sleep=0, gap=0.0,
    moe=False,
)  # fmt: skip


DRAW = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31),
        "mode": st.sampled_from(["colocated", "disaggregated"]),
        "batch": st.sampled_from(["none", "backfill", "dedicated"]),
        "guard": st.booleans(),
        "n_batch": st.integers(1, 12),
        "submit_at_s": st.floats(0, 5),
        "prefix": st.booleans(),
        "speculation": st.sampled_from(sorted(SPECULATION)),
        "router": st.sampled_from(ROUTERS),
        "autoscaler": st.sampled_from(sorted(AUTOSCALERS)),
        "cap": st.sampled_from([None, 2]),
        "engine_policy": st.sampled_from(["chunked", "prefill_first"]),
        "preempt_for_priority": st.booleans(),
        "blocks": st.integers(40, 120),
        "n": st.integers(1, 30),
        "rate": st.floats(0.5, 20),
        "logits": st.sampled_from(["sampled", "every_token"]),
        "kv_memory": st.sampled_from(["vllm", "reserve"]),
        "eager": st.booleans(),
        "hazards": st.sampled_from(["none", "failure", "reclaim", "both"]),
        "hazard_at_s": st.lists(st.floats(0, 8), min_size=1, max_size=3),
        "spot_max": st.sampled_from([None, 1, 2]),
        "on_demand_first": st.booleans(),
        "launch_failure": st.sampled_from([0.0, 0.5, 1.0]),
        "on_demand_max": st.sampled_from([None, 2]),
        "reserved": st.integers(0, 1),
        "fallback": st.sampled_from([None, "h100-sxm", "l40s"]),
        "capacity_of": st.sampled_from(["fleet", "prefill", "decode"]),  # (disaggregated: whose capacity block)
        "link": st.sampled_from(["fast", "slow"]),  # (slow: transfers on the wire when a replica is lost)
        "lora": st.sampled_from([0, 1, 3]),  # LoRA's max_loras (0: off)
        "long_prefill": st.sampled_from([0, 48]),  # chunked: a request's most prompt tokens a step (0: no cap)
        "sleep": st.sampled_from([0, 1, 2]),  # sleep mode's level (0: off)
        "gap": st.sampled_from([0.0, 40.0]),  # a lull mid-trace (s)
        "moe": st.booleans(),  # Qwen3-30B-A3B as DP 2 + EP (lock-step ranks) instead of Llama-3.1-8B
        "window": st.booleans(),  # gpt-oss-20b (half its layers attend to 128 tokens) instead of either
        "a2a": st.sampled_from(["allgather_reducescatter", "deepep_low_latency"]),  # (moe: its token exchange)
        "imbalance": st.sampled_from([1.0, 1.5]),  # (moe: the hottest GPU's routed tokens over the mean)
        "async": st.booleans(),  # vLLM's async scheduling: an arrival mid-step joins the step after the next
        "max_model_len": st.sampled_from([None, 300]),  # vLLM's --max-model-len: longer requests refused at the door
        # vLLM's --disable-hybrid-kv-cache-manager (None: its default, off in disaggregated pools; with gpt-oss: a
        # sliding-window layer's KV kept whole or held apart)
        "hybrid_off": st.sampled_from([None, False, True]),
        "pp": st.booleans(),  # two pipeline stages a server (where the fleet allows them), each replica an engine
        "host": st.sampled_from([0.0, 2e-4]),  # host seconds a scheduled sequence a step (`roofline.seq_overhead_s`)
        "fp8": st.booleans(),  # FP8 GEMMs on an H100 (attention at BF16) instead of BF16 on an A100
        "frontend": st.sampled_from([0.0, 0.004]),  # each request's delay before the engine (`roofline.frontend_latency_s`)
    }
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(DRAW)
@example(  # the prefix cache's look-ahead match estimated a step's admissions without the long-prefill cap
    draw={**FOUND, "seed": 0, "speculation": "mtp", "autoscaler": "scheduled", "n": 8, "rate": 1.0, "hazards": "none",
          "hazard_at_s": [0.0]}
)  # fmt: skip
@example(  # a decode run grew into evictable cached blocks while the queue's head could be admitted once one went
    draw={**FOUND, "seed": 1, "speculation": "off", "n": 10, "rate": 3.0, "hazards": "both", "hazard_at_s": [0.0]}
)  # fmt: skip
@example(  # a replica lost while falling asleep orphaned the launch that had called it back: no replica ever came
    draw={**FOUND, "seed": 1294311, "batch": "backfill", "guard": True, "autoscaler": "hpa_slo", "router": "power_of_two",
          "rate": 0.5, "prefix": False, "speculation": "off", "n": 25, "hazards": "both", "hazard_at_s": [0.0], "lora": 1,
          "gap": 40.0, "sleep": 1, "cap": 2, "moe": True, "on_demand_max": 2, "blocks": 47, "logits": "every_token",
          "link": "slow", "capacity_of": "prefill"}
)  # fmt: skip
@example(  # a DP rank released while its group planned still counted as running dummy batches for the whole run
    draw={**FOUND, "seed": 2**31, "speculation": "off", "n": 3, "rate": 1.0, "hazards": "reclaim", "hazard_at_s": [0.25],
          "long_prefill": 0, "moe": True, "prefix": False}
)  # fmt: skip
@example(  # async scheduling cut a run at the boundary after the next, and a transfer arriving then no longer cut it
    draw={**FOUND, "seed": 705108, "mode": "disaggregated", "speculation": "off", "autoscaler": "kpa", "cap": 2, "blocks": 93,
          "n": 24, "rate": 3.0, "hazards": "both", "hazard_at_s": [0.0, 3.5625], "link": "slow", "long_prefill": 0,
          "async": True}
)  # fmt: skip
@example(  # a speculating replica lost mid-run: the step under way counted no work (a run's first step, its start)
    draw={**FOUND, "seed": 429, "prefix": False, "speculation": "mtp", "autoscaler": "hpa", "n": 26, "rate": 0.5,
          "hazards": "failure", "hazard_at_s": [0.0], "gap": 40.0}
)  # fmt: skip
@example(  # a decode replica's run priced its LoRA adapters at its end, after a transfer had started another
    draw={**FOUND, "seed": 0, "mode": "disaggregated", "prefix": False, "speculation": "off", "n": 4, "rate": 1.0,
          "hazards": "none", "hazard_at_s": [0.0], "lora": 3, "long_prefill": 0}
)  # fmt: skip
@example(  # pipeline stages (each replica one of a server's two virtual engines) with a host cost a sequence
    draw={**FOUND, "seed": 5, "speculation": "off", "n": 20, "rate": 5.0, "hazards": "none", "hazard_at_s": [0.0],
          "pp": True, "host": 2e-4, "lora": 1}
)  # fmt: skip
@example(  # FP8 GEMMs with attention at BF16: a speculating MoE DP group with prefix caching and hazards
    draw={**FOUND, "seed": 3, "speculation": "mtp", "n": 24, "rate": 4.0, "hazards": "both", "hazard_at_s": [1.0],
          "moe": True, "fp8": True}
)  # fmt: skip
def test_every_combination_conserves_and_matches_the_reference(draw):
    frame = trace(draw["seed"], draw["n"], draw["rate"], prefixes=draw["prefix"], adapters=draw["lora"] > 0, gap=draw["gap"])
    raw = scenario(draw, fast_forward=True)
    result, engines = simulate_and_inspect(raw, frame)
    r = result.requests
    s = result.summary()
    n_all = len(r)

    # requests: every one completed or rejected with a reason
    status = r["status"].cat.codes.to_numpy()
    assert np.all((status == RequestStatus.COMPLETED) | (status == RequestStatus.REJECTED))
    assert r.loc[status == RequestStatus.REJECTED, "reject_reason"].notna().all()
    assert s["completed"] + s["rejected"] == n_all

    # tokens: the engine emitted one gap per token after each completed request's first
    done = status == RequestStatus.COMPLETED
    # (a request rejected after streaming — its replica lost, and no capacity ever to be had again — left its gaps)
    cut = (status == RequestStatus.REJECTED) & r["first_token_at_s"].notna().to_numpy()
    whole = int((r["output_tokens"].to_numpy()[done] - 1).sum())
    assert whole <= result.itl.count <= whole + int((r["output_tokens"].to_numpy()[cut] - 1).sum())
    if not cut.any():
        assert result.itl.count == whole

    # KV: every block back (a prefix cache keeps only its unpinned entries), nothing held for a transfer
    for e in engines:
        assert e.held_blocks == 0 and e.n_incoming == 0 and not e.waiting and e.n_running == 0
        if isinstance(e.kv, PrefixCachingKv):
            assert e.kv.pins() == 0 and e.kv.used == e.kv.cache.n_unpinned * e.kv.cache.blocks_per_entry
        else:
            assert e.kv.used == 0
        if lora_on(draw):  # no adapter counted as running once every request is resolved
            assert e.kv.lora.running == {} and len(e.kv.lora.gpu) <= draw["lora"]

    # GPU-seconds: each replica from provisioning to its end, times its TP (granularity 0)
    reps = result.replicas
    lives = (reps["end_at_s"] - reps["provision_at_s"]).to_numpy() * reps["tp"].to_numpy()
    for name, pool in result.meta["pools"].items():  # each replica is of its pool's GPU type or a fallback's
        kinds = {(pool["gpu"], pool["tp"]), *((f["gpu"], f["tp"]) for f in pool["fallback"])}
        assert set(zip(reps.loc[reps["pool"] == name, "gpu"], reps.loc[reps["pool"] == name, "tp"], strict=True)) <= kinds
    unused = s["gpu_seconds_by_state"]["reserved_unused"]  # (a reserved seat is billed whether a replica sat on it)
    assert abs(s["billed_gpu_seconds"] - lives.sum() - unused) <= 1e-6 * (1 + s["billed_gpu_seconds"])

    # the bill by capacity class adds up: GPU-seconds and dollars, each class at its price
    by = s["cost_by_capacity"]
    assert abs(sum(c["billed_gpu_seconds"] for c in by.values()) - s["billed_gpu_seconds"]) <= 1e-6 * (
        1 + s["billed_gpu_seconds"]
    )
    assert abs(sum(c["cost_usd"] for c in by.values()) - s["cost_usd"]) <= 1e-9 * (1 + s["cost_usd"])
    assert sum(c["replicas"] for c in by.values()) == s["replicas_launched"]
    assert set(reps["capacity"]) <= {"reserved", "on_demand", "spot"}
    # reclaims take spot replicas only
    assert set(reps.loc[reps["interrupted"] == "reclaim", "capacity"]) <= {"spot"}

    # busy time splits into prompt and decode work on every replica, speculative runs and lost steps included
    assert ((reps["prefill_busy_s"] + reps["decode_busy_s"] - reps["busy_s"]).abs() <= 1e-6 * (1 + reps["busy_s"])).all()
    # the API comparison is the ratio of the two bills
    if s["api_usd_for_same_tokens"]:
        assert s["cost_vs_api"] == s["cost_usd"] / s["api_usd_for_same_tokens"]

    # stored (its request columns in files, its gap record spilled, its summary computed in passes): the same summary
    with tempfile.TemporaryDirectory() as tmp, released_every(16):
        stored = simulate_stored(parse_config(raw), Path(tmp) / "run", frame, measure_capacity=False)
    assert differences(stored, s) == []

    # the fast-forward against the per-step reference: the requests, and each replica's work (a lost one's included:
    # the step under way when it was lost counts, as a step's work does from its start)
    slow, _ = simulate_and_inspect(scenario(draw, fast_forward=False), frame)
    assert_same_requests(result, slow)
    a, b = result.replicas.sort_values("replica_id"), slow.replicas.sort_values("replica_id")
    for col in ("busy_s", "prefill_busy_s", "decode_busy_s", "flops", "bytes"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, atol=1e-6, err_msg=col)


def platform(draws: list[dict], fast_forward: bool, budget: int, preempt: bool = False) -> dict:
    """Each draw a deployment (no batch jobs, no pipeline stages: a platform refuses them), on one a100-80gb budget
    (so BF16 GEMMs); with `preempt`, the higher-priority ones preempt the others' replicas."""
    deployments = []
    draws = [{**d, "pp": False, "fp8": False} for d in draws]
    for i, draw in enumerate(draws):
        raw = scenario({**draw, "batch": "none"}, fast_forward)
        deployments.append(
            {
                "name": f"d{i}",
                "priority": i % 2,
                "preemption": "lower_priority" if preempt else "never",
                **{k: raw[k] for k in ("model", "fleet", "engine", "slo", "roofline")},
            }
        )
    first = scenario({**draws[0], "batch": "none"}, fast_forward)
    return {**first, "deployments": deployments, "gpu_budget": {"a100-80gb": budget}}


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], max_examples=50)
@given(st.lists(DRAW, min_size=1, max_size=3), st.integers(0, 3), st.booleans())
@example(  # a preempted replica's replacement took the GPUs an outer preemption was freeing (the budget passed)
    draws=[
        {**FOUND, "seed": 1, "mode": "disaggregated", "prefix": False, "speculation": "mtp", "autoscaler": "hpa", "n": 1,
         "rate": 0.5, "hazards": "reclaim", "hazard_at_s": [1.0], "link": "slow", "long_prefill": 0},
        {**FOUND, "seed": 0, "prefix": False, "speculation": "mtp", "n": 1, "rate": 1.0, "hazards": "none",
         "hazard_at_s": [0.0], "long_prefill": 0},
    ],
    extra=0,
    preempt=True,
)  # fmt: skip
@example(  # an idle DP-group deployment (queue policy) stepped down a rank at a time, rounded back up to its group:
    # it never shrank, and the lower-priority deployment waited for its GPUs for ever
    draws=[
        {'n': 30, 'hazards': 'none', 'moe': False, 'n_batch': 5, 'on_demand_first': False, 'blocks': 100, 'speculation': 'off', 'fallback': None, 'seed': 479001599, 'link': 'fast', 'gap': 0.0, 'on_demand_max': None, 'a2a': 'deepep_low_latency', 'preempt_for_priority': True, 'logits': 'sampled', 'cap': 2, 'lora': 0, 'prefix': False, 'engine_policy': 'chunked', 'async': True, 'kv_memory': 'reserve', 'hazard_at_s': [5.80865145338984], 'eager': False, 'guard': True, 'sleep': 1, 'max_model_len': None, 'long_prefill': 0, 'autoscaler': 'hpa', 'mode': 'colocated', 'rate': 13.440691473238733, 'router': 'least_prompt_tokens', 'capacity_of': 'decode', 'spot_max': 2, 'reserved': 1, 'launch_failure': 1.0, 'batch': 'dedicated', 'imbalance': 1.0, 'submit_at_s': 3.3715992766134613},
        {'engine_policy': 'prefill_first', 'mode': 'colocated', 'guard': True, 'preempt_for_priority': True, 'max_model_len': 300, 'kv_memory': 'vllm', 'sleep': 2, 'prefix': False, 'fallback': None, 'hazards': 'both', 'capacity_of': 'decode', 'blocks': 100, 'cap': 2, 'imbalance': 1.5, 'n_batch': 7, 'seed': 1866620, 'rate': 5.472777870267828, 'on_demand_first': True, 'async': True, 'link': 'slow', 'launch_failure': 0.5, 'autoscaler': 'queue', 'hazard_at_s': [1.099262396192023, 6.664053450234487, 2.9520436869816984], 'submit_at_s': 4.0580162334390115, 'reserved': 0, 'speculation': 'off', 'on_demand_max': None, 'n': 11, 'a2a': 'deepep_low_latency', 'batch': 'backfill', 'gap': 40.0, 'moe': True, 'logits': 'every_token', 'spot_max': None, 'lora': 3, 'router': 'round_robin', 'long_prefill': 48, 'eager': False},
    ],
    extra=0,
    preempt=True,
)  # fmt: skip
def test_platforms_of_any_combination_conserve_keep_the_budget_and_match_the_reference(draws, extra, preempt):
    """A platform of 1-3 deployments, each any combination above, on a shared budget (what their minimums need plus
    0-3 GPUs), with or without preemption by priority: every request of the trace in exactly one deployment and resolved, the budget never passed (from the
    records), and the fast-forward = the per-step reference on every deployment."""
    from hypothesis import assume

    from sim.errors import FleetsimError
    from sim.run.platform import simulate_platform

    n = draws[0]["n"] * len(draws)
    frame = trace(draws[0]["seed"], n, draws[0]["rate"], prefixes=draws[0]["prefix"], adapters=True)
    frame["model"] = [f"d{i % len(draws)}" for i in range(n)]
    floor = sum(1 if d["mode"] == "colocated" else 3 for d in draws) + 2  # (fixed: 2; a decode pool: 2 more)
    budget = floor + extra
    try:
        fast = simulate_platform(parse_config(platform(draws, True, budget, preempt)), frame, measure_capacity=False)
    except FleetsimError as err:
        assume("gpu_budget" not in str(err))  # (a budget below what the deployments' minimums hold: refused, as it says)
        raise
    slow = simulate_platform(parse_config(platform(draws, False, budget, preempt)), frame, measure_capacity=False)
    s = fast.summary()
    assert s["requests"] == n and s["completed"] + s["rejected"] == n and s["in_flight"] == 0
    assert sorted(len(r.requests) for r in fast.deployments.values()) == sorted(
        int((frame["model"] == f"d{i}").sum()) for i in range(len(draws))
    )
    events = []
    for r in fast.deployments.values():
        mine = r.replicas[r.replicas["gpu"] == "a100-80gb"]
        for a, b, tp in zip(mine["provision_at_s"], mine["end_at_s"], mine["tp"], strict=True):
            events += [(float(a), int(tp)), (float(b), -int(tp))]
    held = 0
    for _, d in sorted(events):
        held += d
        assert held <= budget
    assert s["gpu_budget"]["a100-80gb"]["peak_held"] <= budget
    for name, got in fast.deployments.items():
        assert_same_requests(got, slow.deployments[name])
