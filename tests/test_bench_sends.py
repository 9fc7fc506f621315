"""A `vllm bench serve` result without `start_times` (every vLLM before 2026) replays where its send times follow from
the run itself: at request rate inf all at once, and with `--max-concurrency` as its closed loop sent them, rebuilt from
the measured latencies; a finite rate's random sends are refused in one line."""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli.commands import app
from sim.errors import FleetsimError
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.studies.validate import scenario_from_meta, validate
from sim.workload import validate_frame
from sim.workload.runlog import closed_loop_sends, read_run_log

E2E = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e"


def bench(e2e, ttft, prompt, output, **extra):
    """A bench result whose request i lasts e2e[i] (its gaps even), without send times."""
    itls = [[(e - t) / (o - 1)] * (o - 1) if o > 1 else [] for e, t, o in zip(e2e, ttft, output, strict=True)]
    return {
        "backend": "vllm",
        "request_rate": "inf",
        "max_concurrency": None,
        "input_lens": [int(x) for x in prompt],
        "output_lens": [int(x) for x in output],
        "ttfts": [float(x) for x in ttft],
        "itls": itls,
        "errors": [""] * len(e2e),
        **extra,
    }


def test_a_closed_loop_sends_each_request_when_the_earliest_in_flight_ends():
    # concurrency 2: the first two at 0; ends {3, 1}: the third at 1 (ends {3, 3}), the fourth at 3 (ends {3, 8}),
    # the fifth at 3
    assert closed_loop_sends(np.array([3.0, 1.0, 2.0, 5.0, 1.0]), 2).tolist() == [0.0, 0.0, 1.0, 3.0, 3.0]
    assert closed_loop_sends(np.array([3.0, 1.0, 2.0]), 5).tolist() == [0.0, 0.0, 0.0]  # (never full)
    assert closed_loop_sends(np.array([2.0, 1.0, 4.0]), 1).tolist() == [0.0, 2.0, 3.0]  # (one at a time: back to back)


def test_send_times_are_rebuilt_from_the_run_and_said_so(tmp_path):
    data = bench([3.0, 1.0, 2.0, 5.0, 1.0], [0.2] * 5, [100] * 5, [11] * 5, max_concurrency=2)
    (tmp_path / "c.json").write_text(json.dumps(data))
    log = read_run_log(tmp_path / "c.json")
    assert log.trace["arrival_at_s"].tolist() == pytest.approx([0.0, 0.0, 1.0, 3.0, 3.0])  # (E2E: TTFT + its gaps)
    assert "closed loop of max_concurrency 2" in log.sends_rebuilt and "failed" not in log.sends_rebuilt
    # a failed request (no time saved) frees its slot at once: the third is sent at 0 (ends {3, 2}), the fourth at 2,
    # the fifth at 3
    data["ttfts"][1], data["itls"][1], data["errors"][1] = 0.0, [], "Bad Request"
    (tmp_path / "f.json").write_text(json.dumps(data))
    log = read_run_log(tmp_path / "f.json")
    assert log.dropped == 1 and log.trace["arrival_at_s"].tolist() == pytest.approx([0.0, 0.0, 2.0, 3.0])
    assert "its 1 failed requests held their slots while they streamed" in log.sends_rebuilt
    # one that failed mid-stream (vLLM keeps its TTFT and gaps) held its slot while it streamed
    mid = bench([2.0, 10.0, 2.0], [0.2, 1.0, 0.2], [100] * 3, [11] * 3, max_concurrency=1)
    mid["itls"][1], mid["errors"][1] = [1.0] * 9, "ClientPayloadError"
    (tmp_path / "m.json").write_text(json.dumps(mid))
    assert read_run_log(tmp_path / "m.json").trace["arrival_at_s"].tolist() == pytest.approx([0.0, 12.0])
    # send times saved as null are not saved
    (tmp_path / "n.json").write_text(json.dumps(data | {"start_times": None}))
    assert read_run_log(tmp_path / "n.json").trace.equals(log.trace)
    # no concurrency cap: all sent at once (a JSON Infinity reads as inf too)
    text = json.dumps(bench([3.0, 1.0], [0.2] * 2, [100] * 2, [11] * 2)).replace('"inf"', "Infinity")
    (tmp_path / "a.json").write_text(text)
    log = read_run_log(tmp_path / "a.json")
    assert log.trace["arrival_at_s"].tolist() == [0.0, 0.0] and "sent at once" in log.sends_rebuilt
    # logged send times are read as logged
    data = bench([3.0, 1.0], [0.2] * 2, [100] * 2, [11] * 2, start_times=[5.0, 6.0], max_concurrency=1)
    (tmp_path / "s.json").write_text(json.dumps(data))
    log = read_run_log(tmp_path / "s.json")
    assert log.trace["arrival_at_s"].tolist() == [0.0, 1.0] and log.sends_rebuilt == ""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"request_rate": 4.0}, "its request_rate is 4.0, not inf"),
        ({"request_rate": None}, "its request_rate is None, not inf"),
        ({"ramp_up_strategy": "linear"}, "it ramped its rate up"),
        ({"max_concurrency": 0}, "its max_concurrency must be a whole number >= 1 or null"),
        ({"max_concurrency": "8"}, "its max_concurrency must be a whole number >= 1 or null"),
        ({"max_concurrency": True}, "its max_concurrency must be a whole number >= 1 or null"),
    ],
)
def test_sends_that_cannot_be_rebuilt_are_a_one_line_refusal(tmp_path, edit, message):
    data = bench([3.0, 1.0], [0.2] * 2, [100] * 2, [11] * 2) | edit
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(FleetsimError, match="missing start_times") as err:
        read_run_log(tmp_path / "b.json")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_closed_loop_run_a_result_does_not_time_is_refused_by_its_duration(tmp_path):
    """Sends rebuilt as a closed loop must fit the benchmark's duration: a result of an open-loop run labelled with
    a concurrency cap does not."""
    data = bench([3.0, 3.0, 3.0], [0.2] * 3, [100] * 3, [11] * 3, max_concurrency=1, duration=3.5)
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(FleetsimError, match=r"ttfts\[1\]: the request ends 6.000 s after the first send"):
        read_run_log(tmp_path / "d.json")


def test_a_closed_loop_run_fleetsim_made_replays_exactly_from_its_latencies(tmp_path):
    """A closed loop of 3 on one H100, made by fleetsim (its sends a fixed point: each request sent when one in
    flight ended, in the run's own latencies), saved as vllm bench saves it, without send times: the replay rebuilds
    the sends and reproduces every latency."""
    raw = {"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", "tp": 1, "autoscaler": {"policy": "fixed", "replicas": 1}}}
    sc = parse_config(raw)
    rng = np.random.default_rng(1)
    n, conc = 24, 3
    prompt, output = rng.integers(50, 400, n), rng.integers(5, 60, n)
    sends = np.zeros(n)
    for _ in range(50):
        frame = validate_frame(pd.DataFrame({"arrival_at_s": sends, "prompt_tokens": prompt, "output_tokens": output}))
        req = simulate(sc, frame, measure_capacity=False).requests
        ttft = (req["first_token_at_s"] - req["arrival_at_s"]).to_numpy()
        data = bench((req["completed_at_s"] - req["arrival_at_s"]).to_numpy(), ttft, prompt, output, max_concurrency=conc)
        # (each E2E as the reader sums it from the saved gaps: the client's sends follow those to the last bit, and a
        # send at the instant a step ends joins that step or the next by it)
        e2e = np.array([t + float(np.array(g).sum()) for t, g in zip(ttft.tolist(), data["itls"], strict=True)])
        again = closed_loop_sends(e2e, conc)
        if np.array_equal(again, sends):
            break
        sends = again
    else:
        pytest.fail("the closed loop's sends did not settle")
    data["duration"] = float((sends + e2e).max())
    (tmp_path / "run.json").write_text(json.dumps(data))
    log = read_run_log(tmp_path / "run.json")
    assert log.trace["arrival_at_s"].to_numpy() == pytest.approx(sends, abs=1e-9)
    cmp = validate(log, raw)
    assert any("closed loop of max_concurrency 3" in note for note in cmp.notes)
    for row in cmp.rows:
        if row["metric"] in ("ttft", "tpot", "e2e"):
            assert row["error"] == pytest.approx(0.0, abs=1e-6), row
    # calibrating from it says so too
    (tmp_path / "sc.yaml").write_text(json.dumps(raw))
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "run.json"), "--scenario", str(tmp_path / "sc.yaml")])
    assert res.exit_code == 0, res.output
    assert "note: send times: none in the result; rebuilt as its closed loop of max_concurrency 3" in res.output


def test_the_a100_all_at_once_result_replays_as_its_folder_does(tmp_path):
    """The llm-k8s A100 TP 8 result at rate inf (vLLM 0.8.3: no start_times) read as it was saved gives the folder's
    requests (`convert_vllm_bench.py` sent them all at 0), and `fleetsim validate` replays it with a note."""
    folder = E2E / "a100-40gb-llama-3.3-70b-tp8-qpsinf"
    (tmp_path / "inf.json").write_bytes(gzip.decompress((folder / "vllm_bench_result.json.gz").read_bytes()))
    raw_log, run = read_run_log(tmp_path / "inf.json"), read_run_log(folder)
    assert raw_log.trace.equals(run.trace)
    # (the folder's times: to the microsecond)
    assert raw_log.ttft_s == pytest.approx(run.ttft_s, abs=1e-6)
    assert raw_log.e2e_s == pytest.approx(run.e2e_s, abs=1e-6)
    (tmp_path / "sc.yaml").write_text("model: llama-3.1-70b\nfleet: {gpu: a100-40gb, tp: 8}\n")
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "inf.json"), "--scenario", str(tmp_path / "sc.yaml")])
    assert res.exit_code == 0, res.output
    assert "every request was sent at once (t = 0)" in res.output and "TTFT   mean" in res.output


def test_a_synchronous_run_older_than_any_host_measurement_says_its_host_time_is_left_out():
    """vLLM 0.6 (V0 only, no async scheduling) predates every host-loop measurement: the replay prices no host time
    and says so, where 0.8 takes its measured loop and an async run none."""

    def notes(version, **kw):
        meta = {"vllm_version": version, "engine_kwargs": {"model": "meta-llama/Llama-3.1-8B", **kw}}
        meta["hardware"] = {"device_name": "NVIDIA H100 80GB HBM3"}
        raw, said = scenario_from_meta(meta)
        return raw, [n for n in said if n.startswith("host loop")]

    raw, said = notes("0.6.3.post1")
    assert len(said) == 1 and "none measured for vLLM 0.6" in said[0] and "step_overhead_s" not in raw.get("roofline", {})
    raw, said = notes("0.8.3")
    assert len(said) == 1 and "us a step" in said[0] and raw["roofline"]["step_overhead_s"] > 0
    assert notes("0.19.0")[1] == []  # (async scheduling by default: the loop runs under the GPU's step)
