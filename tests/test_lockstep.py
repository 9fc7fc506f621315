"""An MoE model's DP ranks step in lock-step (`sim.run.engine.lockstep`): a group's step lasts as long as its slowest
rank's, an idle rank runs a dummy batch, a request reaching a rank mid-step waits for the group's boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

PREFILL_S, DECODE_S = 1e-3, 0.01  # the constant step-time model: a second per 1,000 prompt tokens, 10 ms a decode


def scenario(model="qwen3-30b-a3b", *, dp=2, replicas=2, step="constant", **fleet):
    engine = {"max_num_batched_tokens": 4096}
    if step == "constant":
        engine["step_time"] = {"kind": "constant", "prefill_s_per_token": PREFILL_S, "decode_step_s": DECODE_S}
    return parse_config(
        {
            "model": model,
            "fleet": {
                "gpu": "h100-sxm",
                "dp": dp,
                "expert_parallel": dp > 1 and model != "llama-3.1-8b",
                "router": "round_robin",
                "autoscaler": {"policy": "fixed", "replicas": replicas},
                **fleet,
            },
            "engine": engine,
        }
    )


def frame(rows):
    t, p, o = zip(*rows, strict=True)
    return validate_frame(pd.DataFrame({"arrival_at_s": t, "prompt_tokens": p, "output_tokens": o}), source="test")


def test_a_long_prompt_on_one_rank_holds_the_other_ranks_decoders_by_hand():
    # A (10-token prompt, 5 tokens) reaches rank 0 at 0; B (1,000-token prompt, 1 token) reaches rank 1 at 1 ms.
    # t=0: rank 0 prefills A (10 ms), rank 1 idle: a dummy batch (one decode, 10 ms); the group steps 10 ms.
    # 1 ms: B waits for the group's boundary. t=10 ms: A's first token; rank 0 decodes A (10 ms), rank 1 prefills B
    # (1 s): the group steps 1 s. t=1.01: A's second token, B's only one; then A decodes against rank 1's dummy
    # batches: its last three tokens at 1.02, 1.03, 1.04.
    trace = frame([(0.0, 10, 5), (0.001, 1000, 1)])
    r = simulate(scenario(), trace, measure_capacity=False).requests
    assert r["replica_id"].tolist() != [r["replica_id"][0]] * 2  # one request on each rank
    assert r["first_token_at_s"].tolist() == pytest.approx([0.01, 1.01])
    assert r["completed_at_s"].tolist() == pytest.approx([1.04, 1.01])
    # independent ranks (a dense model's, which share nothing) serve each at its own pace
    free = simulate(scenario("llama-3.1-8b"), trace, measure_capacity=False).requests
    assert free["first_token_at_s"].tolist() == pytest.approx([0.01, 1.001])
    assert free["completed_at_s"].tolist() == pytest.approx([0.05, 1.001])


def test_a_group_steps_as_long_as_its_slowest_rank_and_idle_ranks_run_dummy_batches():
    from sim.run.engine.lockstep import LockStep

    seen: list[LockStep] = []
    orig = LockStep.join

    def join(self, rank):
        if self not in seen:
            seen.append(self)
        orig(self, rank)

    LockStep.join = join
    try:
        trace = frame([(0.0, 10, 5), (0.001, 1000, 1)])
        res = simulate(scenario(), trace, measure_capacity=False)
    finally:
        LockStep.join = orig
    assert len(seen) == 1 and seen[0].dp == 2 and len(seen[0].ranks) == 2  # two ranks: one group
    group = seen[0]
    # steps: A's prefill, A's decode with B's prefill, A's three decodes: 5 group steps; rank 1 idle in 4 of them
    assert group.n_steps == 5 and group.dummy_steps == 4
    # rank 0 waited 0.99 s on B's prefill; dummy batches cost what a decode does here: no other wait
    assert group.wait_s == pytest.approx(1.0 - DECODE_S)
    reps = res.replicas.sort_values("replica_id")
    assert reps["n_steps"].tolist() == [5, 1]  # a dummy batch is not a step of the rank's own
    # a rank is busy for its group's steps: rank 0 all 1.04 s of them, rank 1 the 1 s of B's prefill
    assert reps["busy_s"].tolist() == pytest.approx([1.04, 1.0])


def test_four_ranks_form_two_groups_and_groups_do_not_wait_on_each_other():
    # ranks 0,1 are group one, ranks 2,3 group two (round robin: requests 0..3 on ranks 0..3); a long prompt on
    # rank 1 holds rank 0's decoder, not rank 2's
    trace = frame([(0.0, 10, 4), (0.0, 2000, 1), (0.0, 10, 4), (0.0, 10, 1)])
    r = simulate(scenario(replicas=4), trace, measure_capacity=False).requests.sort_values("replica_id")
    done = r["completed_at_s"].tolist()
    # group one: t=0 both prefill (max 2 s); then rank 0 decodes 3 more (10 ms each) against a dummy batch
    assert done[0] == pytest.approx(2.0 + 3 * DECODE_S) and done[1] == pytest.approx(2.0)
    # group two: 10 ms prefills, then rank 2's three decodes
    assert done[2] == pytest.approx(0.01 + 3 * DECODE_S) and done[3] == pytest.approx(0.01)


def test_a_dense_model_with_dp_is_unchanged_and_dp_one_is_unchanged():
    rng = np.random.default_rng(3)
    n = 80
    t = np.sort(rng.uniform(0, 10, n))
    trace = frame(list(zip(t, rng.integers(20, 1500, n), rng.integers(2, 200, n), strict=True)))
    for model, dp in (("llama-3.1-8b", 2), ("qwen3-30b-a3b", 1)):
        a = simulate(scenario(model, dp=dp, step="roofline"), trace, measure_capacity=False).requests
        sc = scenario(model, dp=dp, step="roofline")
        sc = sc.model_copy(update={"engine": sc.engine.model_copy(update={"fast_forward": False})})
        b = simulate(sc, trace, measure_capacity=False).requests
        pd.testing.assert_series_equal(a["completed_at_s"], b["completed_at_s"], rtol=1e-9)


# an HPA on requests in flight over 2-6 ranks (whole groups of dp 2), quick to scale
HPA = {
    "policy": "hpa",
    "min_replicas": 2,
    "max_replicas": 6,
    "target": 2,
    "metric": "outstanding_per_replica",
    "interval_s": 5,
    "scale_down_stabilization_s": 10,
}


def test_lock_step_conserves_tokens_and_is_deterministic_on_a_random_autoscaled_moe_fleet():
    rng = np.random.default_rng(11)
    n = 300
    t = np.sort(rng.uniform(0, 60, n))
    trace = frame(list(zip(t, rng.integers(20, 3000, n), rng.integers(1, 300, n), strict=True)))
    sc = parse_config(
        {
            "model": "qwen3-30b-a3b",
            "fleet": {
                "gpu": "h100-sxm",
                "dp": 2,
                "expert_parallel": True,
                "autoscaler": HPA,
                "capacity": {"failures": {"fail_at_s": [20.0, 35.0]}},
            },
            "engine": {"max_num_seqs": 8},
        }
    )
    a = simulate(sc, trace, measure_capacity=False)
    b = simulate(sc, trace, measure_capacity=False)
    s = a.summary()
    assert s["completed"] + s["rejected"] == n
    done = a.requests[a.requests["status"] == "completed"]
    assert (done["first_token_at_s"] >= done["arrival_at_s"]).all()
    pd.testing.assert_frame_equal(a.requests, b.requests)


def test_an_autoscaled_moe_fleet_scales_by_whole_groups():
    """A burst then a lull, an HPA on 3 requests in flight a rank: it wants odd counts on the way (without whole groups
    the pool drained ranks one and three at a time and held an odd count ready), the pool launches and drains whole
    groups of dp 2 — the ranks it drains at an instant are whole groups, and the ready count is always even."""
    rng = np.random.default_rng(1)
    t = np.sort(np.concatenate([rng.uniform(0, 20, 250), rng.uniform(20, 150, 30)]))
    n = len(t)
    trace = frame(list(zip(t, rng.integers(20, 3000, n), rng.integers(1, 300, n), strict=True)))
    fleet = {"lifecycle": {"cold_start_s": 5.0}, "autoscaler": {**HPA, "target": 3}}
    res = simulate(scenario(step="roofline", **fleet), trace, measure_capacity=False)
    reps = res.replicas.sort_values("replica_id")
    drained = reps.loc[reps["drain_at_s"].notna()]
    assert len(drained) >= 2
    for _, at in drained.groupby("drain_at_s"):  # a group's ranks joined it together, in launch order
        ids = at["replica_id"].to_numpy()
        assert len(ids) % 2 == 0 and (ids[0::2] % 2 == 0).all() and (ids[1::2] == ids[0::2] + 1).all(), ids
    assert (res.timeline["replicas_ready"] % 2 == 0).all() and res.timeline["replicas_ready"].max() > 2


def test_an_moe_fleet_of_dp_ranks_holds_whole_groups():
    """A rank of a group short of ranks would serve with the experts no other rank holds: one rank of dp 2 read a
    throughput utilization of 2. Counts that are not whole groups are refused; a dense model's DP ranks share nothing,
    so any count of them is a fleet."""
    with pytest.raises(
        FleetsimError, match=r"fleet.autoscaler.replicas: an MoE model's DP ranks share its experts.*multiple of 2 \(got 3\)"
    ):
        simulate(scenario(replicas=3), frame([(0.0, 10, 2)]), measure_capacity=False)
    hpa = {"policy": "hpa", "min_replicas": 2, "max_replicas": 5}
    with pytest.raises(FleetsimError, match=r"fleet.autoscaler.max_replicas: .*\(got 5\)"):
        simulate(scenario(autoscaler=hpa), frame([(0.0, 10, 2)]), measure_capacity=False)
    simulate(scenario("llama-3.1-8b", replicas=3, expert_parallel=False), frame([(0.0, 10, 2)]), measure_capacity=False)


def _ranks_alike(fast, slow):
    from tests.test_engine_equivalence import assert_same_requests

    assert_same_requests(fast, slow)
    a, b = fast.replicas.sort_values("replica_id"), slow.replicas.sort_values("replica_id")
    for col in ("busy_s", "prefill_busy_s", "decode_busy_s", "flops", "bytes"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, atol=1e-9, err_msg=col)
    assert fast.itl.count == slow.itl.count
    assert fast.itl.mean() == pytest.approx(slow.itl.mean(), rel=1e-9)


@pytest.mark.parametrize("dp, imbalance, seed", [(2, 1.0, 0), (4, 1.0, 1), (4, 2.5, 2), (8, 1.5, 3)])
def test_a_groups_fast_forwarded_runs_match_its_ranks_stepped_one_step_at_a_time(dp, imbalance, seed):
    # the group's run (the upper envelope of its ranks' lines, cut by arrivals at any rank) against the reference:
    # every rank planned every step, each group step the slowest rank's
    rng = np.random.default_rng(seed)
    n = 250
    t = np.sort(rng.uniform(0, 30, n))
    trace = frame(list(zip(t, rng.integers(20, 6000, n), rng.integers(1, 400, n), strict=True)))
    runs = []
    for ff in (True, False):
        sc = parse_config(
            {
                "model": "qwen3-30b-a3b",
                "fleet": {
                    "gpu": "h100-sxm",
                    "dp": dp,
                    "expert_parallel": True,
                    "expert_load_imbalance": imbalance,
                    "router": "least_outstanding",
                    "autoscaler": {"policy": "fixed", "replicas": 2 * dp},
                    # a rank lost at 4 s leaves its group short of a rank until its replacement is ready at 14 s
                    "capacity": {"failures": {"fail_at_s": [4.0]}},
                    "lifecycle": {"cold_start_s": 10.0},
                },
                "engine": {"fast_forward": ff, "max_num_seqs": 32, "num_gpu_blocks_override": 600},
            }
        )
        runs.append(simulate(sc, trace, measure_capacity=False))
    fast, slow = runs
    assert fast.summary()["completed"] == n
    _ranks_alike(fast, slow)
    assert fast.summary()["n_events"] < slow.summary()["n_events"] / 3  # (it does fast-forward)


def test_the_group_line_is_the_upper_envelope_of_its_ranks_steps():
    from sim.run.engine.lockstep import GroupLine

    rng = np.random.default_rng(5)
    for _ in range(200):
        lines = [(float(a), float(b)) for a, b in zip(rng.uniform(0, 5, 5), rng.uniform(-0.5, 0.5, 5), strict=True)]
        k = int(rng.integers(1, 60))
        g = GroupLine(lines, k)
        steps = [max(a + b * j for a, b in lines) for j in range(k)]
        assert [g.at(j) for j in range(k)] == pytest.approx(steps, rel=1e-12)
        totals = np.cumsum([0.0, *steps])
        assert [g.total(j) for j in range(k + 1)] == pytest.approx(totals.tolist(), rel=1e-9, abs=1e-12)
        for x in rng.uniform(0, totals[-1] * 1.1, 5):
            done = g.steps_done_by(x, k)
            assert totals[done] <= x + 1e-12 and (done == k or totals[done + 1] > x - 1e-12)
            kb, tb = g.boundary(x, k)
            assert tb == pytest.approx(totals[kb]) and (kb == k or totals[kb] >= x - 1e-12)
            assert kb == 1 or totals[kb - 1] < x + 1e-12


def test_a_groups_step_is_priced_with_the_tokens_its_ranks_put_through_the_shared_layers():
    from sim.run.engine.step_time import RooflineStepTime
    from sim.scenario.resolve import resolve_scenario

    sc = scenario(step="roofline")
    rt = RooflineStepTime(resolve_scenario(sc))
    # a 2,000-token prompt on rank 0, rank 1 idle: above the largest captured CUDA graph (min(256 x 2, 512) = 512
    # tokens), so no padding; the MoE layers see its 2,000 tokens and rank 1's dummy one
    res = simulate(sc, frame([(0.0, 2000, 1)]), measure_capacity=False)
    r = res.requests
    alone, flops, n_bytes = rt.step(2000, 0, 2000 * 2001 / 2, 0, 0, 1, group_tokens=2001)
    assert r["first_token_at_s"][0] == pytest.approx(alone, rel=1e-12)
    # the rank counts that step's FLOPs and bytes as priced in the group (the planned step is priced once, there)
    rank = res.replicas.set_index("replica_id").loc[r["replica_id"][0]]
    assert (rank["flops"], rank["bytes"]) == pytest.approx((flops, n_bytes), rel=1e-12)
    assert alone < rt.step(2000, 0, 2000 * 2001 / 2, 0, 0, 1)[0]  # (cheaper than if both ranks carried 2,000)
    # 100 and 300-token prompts, one on each rank, both captured: vLLM pads both ranks to 300 tokens, 600 in all
    r = simulate(sc, frame([(0.0, 100, 1), (0.0, 300, 1)]), measure_capacity=False).requests
    big = rt.step(300, 0, 300 * 301 / 2, 0, 0, 1, group_tokens=600)[0]
    small = rt.step(100, 0, 100 * 101 / 2, 0, 0, 1, group_tokens=600)[0]
    assert r["first_token_at_s"].tolist() == pytest.approx([max(big, small)] * 2, rel=1e-12)
    # with enforce_eager nothing is padded: 400 tokens
    eager = sc.model_copy(update={"engine": sc.engine.model_copy(update={"enforce_eager": True})})
    rt_eager = RooflineStepTime(resolve_scenario(eager))
    r = simulate(eager, frame([(0.0, 100, 1), (0.0, 300, 1)]), measure_capacity=False).requests
    big = rt_eager.step(300, 0, 300 * 301 / 2, 0, 0, 1, group_tokens=400)[0]
    assert r["first_token_at_s"].tolist() == pytest.approx([big] * 2, rel=1e-12)
