"""The SLO-driven HPA: scaling on a latency quantile of the fleet (p90/p99 TTFT or TPOT over a window of completed
requests), as a KEDA Prometheus trigger on vLLM's latency histograms runs it; its import and export."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim.policies.autoscale import Hpa, HpaConfig, Observation
from sim.run.engine.records import RequestLog
from sim.run.engine.sequence import Seq
from sim.run.fleet.latency import LatencyWatch
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame


def obs(now, n_ready, latency):
    return Observation(now, n_ready, 0, 0, 10, 0, None, None, latency)


def test_the_hpa_on_a_latency_quantile_scales_by_its_ratio_to_the_target_and_holds_without_a_reading():
    cfg = HpaConfig(metric="p90_ttft_s", target=2.0, min_replicas=1, max_replicas=20, scale_up_pods=10)
    hpa = Hpa(cfg)
    assert hpa.decide(obs(15, 4, {"p90_ttft_s": 5.0})) == 10  # ceil(4 x 5 / 2): a fleet-wide value, not per replica
    assert hpa.decide(obs(30, 10, None)) == 10  # nothing completed in the window: hold
    assert hpa.decide(obs(45, 10, {"p90_ttft_s": 2.1})) == 10  # within the tolerance
    tpot = Hpa(HpaConfig(metric="p99_tpot_s", target=0.05, min_replicas=1, max_replicas=20))
    assert tpot.decide(obs(15, 2, {"p90_ttft_s": 9.0, "p99_tpot_s": 0.1})) == 4


def test_the_watch_keeps_the_window_of_completed_interactive_requests():
    arrival = np.array([0.0, 1.0, 2.0, 3.0])
    log = RequestLog(arrival, np.array([10, 10, 10, 10]), np.array([1, 11, 21, 5]))
    log.first_token_at_s[:] = arrival + np.array([0.5, 1.0, 2.0, 4.0])
    log.completed_at_s[:] = [1.0, 12.0, 24.0, 30.0]
    from sim.run.engine.records import COMPLETED

    log.status[:] = COMPLETED
    watch = LatencyWatch(log, window_s=20.0)
    for i in range(4):
        watch.finished(None, Seq(i, float(arrival[i]), 10, int(log.output_tokens[i]), 0, i == 3))  # the last is batch
    q = watch.quantiles(25.0)  # the window (5, 25]: requests 1 and 2 (0 too old, 3 batch)
    assert q["p90_ttft_s"] == pytest.approx(np.percentile([1.0, 2.0], 90))
    tpot = [(12.0 - 2.0) / 10, (24.0 - 4.0) / 20]
    assert q["p99_tpot_s"] == pytest.approx(np.percentile(tpot, 99))
    assert watch.quantiles(100.0) is None


def test_a_fleet_scaled_on_p90_ttft_grows_under_a_burst_and_stays_small_when_light():
    rng = np.random.default_rng(1)

    def trace(rate):
        t = np.sort(rng.uniform(0, 600, int(rate * 600)))
        return validate_frame(
            pd.DataFrame(
                {
                    "arrival_at_s": t,
                    "prompt_tokens": rng.integers(500, 3000, len(t)),
                    "output_tokens": rng.integers(20, 300, len(t)),
                }
            ),
            source="t",
        )

    def run(tr):
        sc = parse_config(
            {
                "model": "llama-3.1-8b",
                "fleet": {
                    "gpu": "a100-80gb",
                    "autoscaler": {"policy": "hpa", "metric": "p90_ttft_s", "target": 1.0, "min_replicas": 1, "max_replicas": 12},
                    "lifecycle": {"cold_start_s": 30},
                },
            }
        )
        return simulate(sc, tr, measure_capacity=False).summary()

    light_trace, heavy_trace = trace(0.5), trace(15)
    light, heavy = run(light_trace), run(heavy_trace)
    assert light["replicas_launched"] == 1 and light["p90_ttft_ms"] < 1000
    assert heavy["replicas_max"] > 4 and heavy["completed"] == len(heavy_trace)


def test_keda_latency_triggers_import_as_the_slo_hpa_and_export_back(tmp_path):
    from sim.scenario.exporter import export_manifests
    from sim.scenario.importer import import_files

    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {
                "gpu": "h100-sxm",
                "autoscaler": {
                    "policy": "hpa",
                    "metric": "p99_tpot_s",
                    "target": 0.08,
                    "min_replicas": 1,
                    "max_replicas": 6,
                    "latency_window_s": 30,
                },
            },
        }
    )
    docs, _notes = export_manifests(sc, name="svc")
    trig = docs[1]["spec"]["triggers"][0]
    assert trig["metricType"] == "Value" and "histogram_quantile(0.99" in trig["metadata"]["query"]
    assert "time_per_output_token_seconds_bucket" in trig["metadata"]["query"] and "[30s]" in trig["metadata"]["query"]
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    back = import_files([path])
    auto = back.values["fleet.autoscaler"]
    assert (auto["policy"], auto["metric"], auto["target"], auto["latency_window_s"]) == ("hpa", "p99_tpot_s", 0.08, 30.0)


# --- the predictive autoscaler (Dynamo's planner, load-based) --------------------------------------------------------
def pobs(now, arrivals, current=1):
    return Observation(now, current, 0, 0, 0, 0, None, None, None, arrivals)


def test_the_predictors_by_hand():
    from sim.policies.autoscale import Predictive, PredictiveConfig

    base = {"min_replicas": 1, "max_replicas": 100, "interval_s": 60, "scale_down_stabilization_s": 0}
    # 2 req/s for 10 minutes, then 8 req/s
    arrivals = lambda t: 2 * min(t, 600) + 8 * max(0, t - 600)  # noqa: E731
    const = Predictive(PredictiveConfig(predictor="constant", **base), lead_s=0, per_replica=1.0)
    avg = Predictive(PredictiveConfig(predictor="moving_average", window_s=300, **base), lead_s=0, per_replica=1.0)
    for t in range(60, 721, 60):
        c, a = const.decide(pobs(t, arrivals(t))), avg.decide(pobs(t, arrivals(t)))
    # at 720 s: the last interval at 8/s -> ceil(8 / 0.8) = 10; the 5-minute average (2 min at 8, 3 at 2: 4.4) -> 6
    assert c == 10 and a == 6
    assert const.predict(720) == pytest.approx(8.0) and avg.predict(720) == pytest.approx(4.4)
    # seasonal: a day of 600 s whose second half is busy; a season later the planner provisions ahead of the rise
    day = 600.0
    rate = lambda t: 1.0 if (t % day) < 300 else 9.0  # noqa: E731
    cum = lambda t: sum(rate(x + 0.5) for x in range(int(t)))  # noqa: E731
    seas = Predictive(PredictiveConfig(predictor="seasonal", season_s=day, window_s=60, **base), lead_s=120, per_replica=1.0)
    for t in range(60, 1201, 60):
        n = seas.decide(pobs(t, cum(t)))
        if t == 840:  # the busy half starts at 900: with 120 s of lead, it is already provisioned for
            assert n == math.ceil(9.0 / 0.8)
    avg2 = Predictive(PredictiveConfig(predictor="moving_average", window_s=60, **base), lead_s=120, per_replica=1.0)
    for t in range(60, 841, 60):
        n2 = avg2.decide(pobs(t, cum(t)))
    assert n2 == math.ceil(1.0 / 0.8)  # the moving average has not seen it yet


def test_a_predictive_fleet_measures_one_replicas_rate_and_provisions_for_the_load():
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 900, 9000))  # 10 req/s
    tr = validate_frame(
        pd.DataFrame(
            {"arrival_at_s": t, "prompt_tokens": rng.integers(200, 1500, len(t)), "output_tokens": rng.integers(20, 200, len(t))}
        ),
        source="t",
    )
    auto = {"policy": "predictive", "min_replicas": 1, "max_replicas": 32, "window_s": 120}
    sc = parse_config(
        {"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb", "autoscaler": auto, "lifecycle": {"cold_start_s": 30}}}
    )
    s = simulate(sc, tr, measure_capacity=True).summary()
    per_replica = s["max_tokens_per_s_per_replica"] / float((tr["prompt_tokens"] + tr["output_tokens"]).mean())
    expected = math.ceil(10.0 / (per_replica * 0.8))
    assert s["completed"] == 9000 and expected - 1 <= s["replicas_max"] <= expected + 1
    given = parse_config(
        {"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb", "autoscaler": {**auto, "requests_per_replica_s": 1.0}}}
    )
    assert simulate(given, tr, measure_capacity=False).summary()["replicas_max"] >= math.ceil(9.0 / 0.8)  # ~10/s at 1 per replica
