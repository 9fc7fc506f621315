"""Hostile inputs from a fourth fuzzing pass: each was accepted with impossible figures, ended in an error naming the
wrong thing (or no line), or printed warnings beside it. Each now ends in one line naming the file or field, the rule
and the value, exit code 2, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.conftest import edited_run_copy, one_line_error, three_request_trace
from tests.test_sweep import BASE as SWEEP_BASE_YAML

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _bench(tmp_path: Path, **change: object) -> Path:
    bench = {
        "input_lens": [100, 120, 90],
        "output_lens": [5, 6, 4],
        "ttfts": [0.05, 0.06, 0.04],
        "itls": [[0.01] * 4, [0.01] * 5, [0.01] * 3],
        "start_times": [0.0, 0.5, 1.0],
    } | change
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    return path


def test_a_bench_result_ttft_of_the_wrong_type_is_refused_not_dropped_as_failed(tmp_path):
    """`ttfts: [.., false, ..]` compared equal to 0 (vLLM's mark of a failed request): the request was silently left
    out and the rest replayed."""
    path = _bench(tmp_path, ttfts=[0.05, False, 0.04])
    one_line_error(["trace", "inspect", str(path)], "ttfts[1]: must be a finite number (got False)")
    one_line_error(["validate", str(path), "--scenario", str(REPO / "configs" / "default.yaml")], "ttfts[1]")


def test_a_bench_result_with_more_gaps_than_tokens_is_refused(tmp_path):
    """400 inter-token gaps for a 5-token request were pooled into the measured ITLs and summed into its E2E."""
    path = _bench(tmp_path, itls=[[0.01] * 400, [0.01] * 5, [0.01] * 3])
    one_line_error(["trace", "inspect", str(path)], "itls[0]: must hold at most output_lens[0] = 5 gaps")
    # fewer gaps than tokens is a real log's: a streamed chunk can carry several tokens
    assert runner.invoke(app, ["trace", "inspect", str(_bench(tmp_path, itls=[[0.02] * 2, [], [0.01] * 3]))]).exit_code == 0


def _vector(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = [{"metric": {"le": le}, "value": [0, str(v)]} for le, v in pairs]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def _matrix(values: list[tuple[object, object]]) -> dict[str, object]:
    result = [{"metric": {}, "values": [[t, str(v)] for t, v in values]}]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


@pytest.mark.parametrize(
    ("requests", "buckets", "says"),
    [
        (
            None,
            [("-10", 5), ("100", 20), ("+Inf", 25)],
            "metric.le: a token bucket's bound must be within 1..10,000,000,000 (got '-10')",
        ),
        (None, [("10", -5), ("100", -5), ("+Inf", 25)], "data.result[0].value: a bucket's count must be >= 0 (got '-5')"),
        (None, [("10", 5), ("100", "Inf"), ("+Inf", "Inf")], "data.result[1].value: must be a finite number"),
        (None, [("10", 5), ("1e300", 20), ("+Inf", 25)], "data.result[1].metric.le: must be a finite number"),
        ([(0, 1), ("Inf", 2), (120, 1.5)], None, "values[1][0]: must be a finite number within +-1e+12 (got 'Inf')"),
        ([(0, 1e300), (60, 2)], None, "values[0][1]: must be a finite number within +-1e+12"),
    ],
)
def test_from_metrics_refuses_negative_bounds_and_counts_and_non_finite_figures(tmp_path, requests, buckets, says):
    """A negative bucket bound or count gave a spec with a wrong mean and CV (`120.0% above 100`); an infinite count or
    time printed numpy's RuntimeWarning and then an error naming the generated spec, not the file."""
    req = tmp_path / "req.json"
    req.write_text(json.dumps(_matrix(requests or [(0, 1), (60, 2), (120, 1.5)])))
    hist = tmp_path / "hist.json"
    hist.write_text(json.dumps(_vector(buckets or [("10", 5), ("100", 20), ("+Inf", 25)])))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_vector([("10", 5), ("100", 20), ("+Inf", 25)])))
    out = tmp_path / "spec.yaml"
    args = ["trace", "from-metrics", "--requests", str(req), "--prompt-buckets", str(hist), "--output-buckets", str(good)]
    one_line_error([*args, "--out", str(out)], says)
    assert not out.exists() and not (tmp_path / "spec.rates.csv").exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("+100", "line 3: prompt_tokens must be an integer without a + sign (got '+100')"),
        ("123456789012345678901234", "line 3: prompt_tokens must be <= 10,000,000,000 (got '123456789012345678901234')"),
        ("-123456789012345678901234", "line 3: prompt_tokens must be >= 1"),
    ],
)
def test_a_csv_token_count_pyarrow_cannot_read_is_named_with_its_line(tmp_path, value, says):
    """pyarrow refuses `+100` and integers past int64, the text scan meant to locate them accepted both: the error
    was pyarrow's, with no line (`In CSV column #1: CSV conversion error to int64`)."""
    path = tmp_path / "t.csv"
    path.write_text(f"arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,{value},10\n")
    one_line_error(["trace", "inspect", str(path)], says)


def test_a_gpu_too_slow_to_run_a_step_in_an_hour_is_refused_before_the_run(tmp_path):
    """0.001 GB/s and 0.001 TFLOP/s (each within its bounds) made a decode step take 106,149 s: the run simulated
    20,000,000 s for 40 s of wall time, then failed saying to raise fleet.timeline_interval_s."""
    out = tmp_path / "run"
    one_line_error(
        [
            "run",
            str(REPO / "configs" / "default.yaml"),
            "--set",
            "roofline.gpu_overrides.a100-80gb.hbm_bw_gb_per_s=0.001",
            "--set",
            "roofline.gpu_overrides.a100-80gb.bf16_tflops=0.001",
            "--out",
            str(out),
        ],
        "one decode step of one request of llama-2-70b on 2x a100-80gb takes 106,149 s",
    )
    assert not out.exists()


@pytest.mark.parametrize("field", ["decode_step_s", "prefill_s_per_token"])
def test_constant_step_times_are_bounded(tmp_path, field):
    """`engine.step_time` had no upper bound: 1e300 s a step ran until the timeline's limit."""
    sets = ["engine.step_time.kind=constant", "engine.step_time.decode_step_s=0.01", f"engine.step_time.{field}=1e300"]
    args = ["run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    one_line_error(args, f"engine.step_time.{field}: Input should be less than or equal to 3600 (got 1e+300)")


def test_a_run_that_never_resolves_says_how_far_it_got(tmp_path, monkeypatch):
    """Slow steps within the bounds still ran to the timeline's limit, and the error only said to raise
    fleet.timeline_interval_s or check the cold starts: now it says what was left and how busy the replicas were."""
    import sim.run.fleet.control as control

    monkeypatch.setattr(control, "MAX_TIMELINE_SAMPLES", 50)
    sets = ["engine.step_time.kind=constant", "engine.step_time.decode_step_s=3000"]
    args = ["run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    one_line_error(args, "running at the end, replicas 100% busy): the replicas are far too slow for the trace")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    trace = three_request_trace(tmp_path_factory.mktemp("trace"))
    config = str(REPO / "configs" / "default.yaml")
    res = runner.invoke(
        app, ["run", config, "--set", f"trace={trace}", "--set", "fleet.timeline_interval_s=0.2", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out / "timeline.parquet")) > 2
    return out


EDITS = {  # file, edit, what the one-line error says
    "a replica ending in 1e300 s": ("replicas", lambda r: r.assign(end_at_s=1e300), "end_at_s = 1e+300"),
    "a replica listed twice": ("replicas", lambda r: pd.concat([r, r]), "each replica_id must appear once"),
    "negative FLOPs": ("replicas", lambda r: r.assign(flops=-1.0), "counts must be finite and >= 0 (got flops = -1.0)"),
    "negative steps": ("replicas", lambda r: r.assign(n_steps=-1), "(got n_steps = -1)"),
    "TP 0": ("replicas", lambda r: r.assign(tp=0), "counts must be finite and >= 1 (got tp = 0)"),
    "a prompt of 2**62 tokens": ("requests", lambda r: r.assign(prompt_tokens=2**62), "must be <= 10,000,000,000"),
    "one request id for all": ("requests", lambda r: r.assign(request_id=0), "each request_id must appear once"),
    "a completed request of no token": ("requests", lambda r: r.assign(output_tokens=0), "has produced a token"),
    "no request at all": ("requests", lambda r: r.iloc[:0], "holds no request"),
    "a negative gap index": ("itl", lambda r: r.assign(j0=-5), "j0 (a gap's index) must be >= 0"),
    "a negative queue": ("timeline", lambda r: r.assign(waiting=-5), "(got waiting = -5)"),
    "replicas 300% busy": ("timeline", lambda r: r.assign(busy_fraction=3.0), "fractions must be within 0..1"),
    "KV use of 120%": ("timeline", lambda r: r.assign(kv_use=1.2), "KV use must be within 0..1"),
    "a NaN sample time": ("timeline", lambda r: r.assign(t_s=np.nan), "sample instants must be finite"),
    "samples out of order": ("timeline", lambda r: r.iloc[::-1], "samples must be in time order"),
    "an infinite arrival rate": ("timeline", lambda r: r.assign(arrival_rate_per_s=np.inf), "arrival_rate_per_s = inf"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_more_impossible_records_fail_in_one_line_and_write_nothing(run_dir, tmp_path, case):
    """`report` printed these as figures with exit 0 (a cost of 300 digits, API prices of -$6.9e12, MFU -0.000, twice
    the cost for a replica listed twice, a negative queue in the OpenMetrics), or failed on an opaque
    `StopIteration`, `TypeError` or with numpy warnings: timeline.parquet was not checked at all."""
    name, edit, says = EDITS[case]
    edited = edited_run_copy(run_dir, tmp_path, name, edit)
    html, om = tmp_path / "p.html", tmp_path / "m.txt"
    one_line_error(["report", str(edited), "--html", str(html), "--openmetrics", str(om)], says)
    assert not html.exists() and not om.exists()
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0  # the folder as written reads back


@pytest.mark.parametrize(("value", "says"), [(1e-300, "got '1e-300'"), (1e300, "got '1e+300'")])
def test_calibrate_step_times_are_bounded(tmp_path, value, says):
    """A step of 1e-300 ms made the fit's relative residuals overflow: a ValueError traceback from the solver; one of
    1e300 ms was fitted and written as a roofline block."""
    path = tmp_path / "steps.csv"
    rows = [("prefill", 1, 512, 0, 37.3), ("prefill", 1, 2048, 0, 130.2), ("decode", 8, 1, 1024, 9.1)]
    rows += [("decode", 32, 1, 2048, 14.8), ("decode", 64, 1, 512, 15.5), ("prefill", 2, 1024, 0, value)]
    pd.DataFrame(rows, columns=["kind", "batch", "new_tokens_per_seq", "context_tokens", "total_ms"]).to_csv(path, index=False)
    out = tmp_path / "fit.yaml"
    args = ["calibrate", str(path), "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--out", str(out)]
    one_line_error(args, f"row 7: total_ms must be within 1e-06..3.6e+06 ms ({says})")
    assert not out.exists()


_HF = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"num_attention_heads": 10**6}, "hidden_size=4096 over num_attention_heads=1000000 leaves no head dimension"),
        ({"hidden_size": None, "text_config": 5}, "field 'text_config' must be an object (got int)"),
        ({"attention_bias": "no"}, "field 'attention_bias' must be true or false (got 'no')"),
        ({"tie_word_embeddings": "yes"}, "field 'tie_word_embeddings' must be true or false (got 'yes')"),
        ({"max_position_embeddings": 10**30}, "field 'max_position_embeddings' must be <= 10,000,000,000"),
    ],
)
def test_a_hugging_face_config_of_impossible_fields_is_refused(tmp_path, change, says):
    """More heads than hidden units gave a head dimension of 0 (a ZeroDivisionError traceback); a text_config that
    is not an object, a TypeError traceback; "no" as attention_bias was truthy (a bias counted); integers of 30
    digits were taken, to end in `need 1.6e53 GB`."""
    cfg = {k: v for k, v in (_HF | change).items() if v is not None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    one_line_error(["roofline", "--model", str(path), "--gpu", "h100-sxm"], says)


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ("1,5,0,10\n2,-6,0,12\n", "line 3 column 'running': must be a whole number within 0..10,000,000 (got -6)"),
        ("1,5,0,10\n2,6,0,1200\n", "line 3 column 'kv_cache_pct': must be a percentage within 0..100 (got 1200)"),
        ("3,5,0,10\n2,6,0,12\n", "line 3 column 't': must be within +-1e+12 s and after the tick before (got 2)"),
        ("", "no tick"),
    ],
)
def test_a_run_logs_time_series_is_checked(tmp_path, rows, says):
    """timeseries.csv was only checked for numbers: a negative running count, 1200% KV use, ticks out of order or none
    at all were plotted beside the replay as the run's."""
    folder = tmp_path / "run"
    folder.mkdir()
    reqs = [
        {"input_toks": 100, "output_toks": 5, "queued_ts": q, "first_token_ts": q + 0.1, "last_token_ts": q + 0.5}
        for q in (0.0, 1.0, 2.0)
    ]
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reqs))
    (folder / "timeseries.csv").write_text("t,running,waiting,kv_cache_pct\n" + rows)
    plot = tmp_path / "v.png"
    one_line_error(["validate", str(folder), "--scenario", str(REPO / "configs" / "default.yaml"), "--plot", str(plot)], says)
    assert not plot.exists()


def test_a_priority_past_int32_is_refused_not_wrapped(tmp_path):
    """`trace merge --priority 99999999999999999999` was an OverflowError traceback; a trace's priority of 1e20 or
    1e300 passed as "an integer" and was cast to int64 in the run's records."""
    a = tmp_path / "a.csv"
    a.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,100,10\n")
    out = tmp_path / "m.csv"
    one_line_error(
        ["trace", "merge", str(out), f"{a}=batch", "--priority", "99999999999999999999"],
        "--priority must be within -2,147,483,648..2,147,483,647 (got 99999999999999999999)",
    )
    assert not out.exists()
    p = tmp_path / "p.csv"
    p.write_text("arrival_at_s,prompt_tokens,output_tokens,klass,priority\n0,100,10,batch,-3\n1,100,10,batch,1e300\n")
    one_line_error(["trace", "inspect", str(p)], "line 3: priority must be an integer within -2,147,483,648..")


def test_import_refuses_a_negative_gpu_count(tmp_path):
    """`nvidia.com/gpu: "-2"` in a container's limits was imported, the scenario written with a note of '-2 GPUs
    per pod'."""
    text = (REPO / "configs" / "cluster" / "deployment-hpa.yaml").read_text()
    assert 'nvidia.com/gpu: "1"' in text
    path = tmp_path / "d.yaml"
    path.write_text(text.replace('nvidia.com/gpu: "1"', 'nvidia.com/gpu: "-2"'))
    out = tmp_path / "s.yaml"
    one_line_error(["import", str(path), "--out", str(out)], "resources.limits.nvidia.com/gpu must be >= 0 (got '-2')")
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("t.csv", "arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n1e300,10,5\n", "line 3: arrival_at_s must be within"),
        (
            "t.jsonl",
            '{"timestamp":0,"input_length":10,"output_length":5}\n{"timestamp":1e300,"input_length":10,"output_length":5}\n',
            "line 2: timestamp must be within +-1e+12 s (got 1e+297 s)",
        ),
    ],
)
def test_an_arrival_of_1e300_seconds_is_refused_where_it_is_read(tmp_path, name, text, says):
    """The readers took it: `trace inspect` printed a 300-digit duration, and `run` asked to raise
    fleet.timeline_interval_s 'to at least 5e+293' in a line of 900 digits."""
    path = tmp_path / name
    path.write_text(text)
    one_line_error(["trace", "inspect", str(path)], says)
    out = tmp_path / "run"
    one_line_error(["run", str(REPO / "configs" / "default.yaml"), "--trace", str(path), "--out", str(out)], says)
    assert not out.exists()


def test_a_max_context_past_int64_is_refused_not_an_overflow(tmp_path):
    """`trace convert --max-context 99999999999999999999999` and `trace.max_context` of the same were an
    OverflowError traceback from numpy's clip."""
    a = tmp_path / "a.csv"
    a.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,100,10\n")
    big = "99999999999999999999999"
    one_line_error(
        ["trace", "convert", str(a), str(tmp_path / "c.csv"), "--max-context", big], "must be within 2..10,000,000,000"
    )
    assert not (tmp_path / "c.csv").exists()
    args = ["run", str(REPO / "configs" / "default.yaml"), "--trace", str(a), "--set", "trace.sample=null"]
    one_line_error([*args, "--set", f"trace.max_context={big}", "--out", str(tmp_path / "r")], "trace.max_context")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("epoch", ["1e300", "1.7e12", "-1", "nan"])
def test_an_openmetrics_epoch_past_the_year_2286_is_refused(run_dir, tmp_path, epoch):
    """`report --openmetrics --epoch 1e300` wrote every sample stamped 1e+300 (epoch + t rounds to epoch): a series
    of one instant that looked complete; an epoch in milliseconds (1.7e12) was taken as seconds."""
    om = tmp_path / "m.txt"
    one_line_error(["report", str(run_dir), "--openmetrics", str(om), "--epoch", epoch], "--epoch must be Unix seconds")
    assert not om.exists()


def test_run_seed_is_bounded_as_the_scenarios_seed_is(tmp_path):
    """`run --seed 99999999999999999999999` bypassed the scenario's bound (2**63 - 1): the run wrote a
    config.resolved.yaml that `fleetsim run` then refused to load."""
    a = tmp_path / "a.csv"
    a.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,100,10\n")
    out = tmp_path / "r"
    args = ["run", str(REPO / "configs" / "default.yaml"), "--trace", str(a), "--set", "trace.sample=null", "--out", str(out)]
    one_line_error([*args, "--seed", "99999999999999999999999"], "--seed must be <= 9223372036854775807")
    assert not out.exists()
    one_line_error(
        ["trace", "convert", str(a), str(tmp_path / "c.csv"), "--seed", "99999999999999999999999"], "--seed must be <= "
    )


def test_a_sweep_whose_every_point_fails_is_an_error_not_results(tmp_path):
    """Every point could not run (a 70B model on one A100): `sweep` exited 0 and wrote a results.parquet made only
    of error rows, which read as a finished sweep. A sweep with some points that run still writes its results."""
    (tmp_path / "base.yaml").write_text(SWEEP_BASE_YAML)
    (tmp_path / "sweep.yaml").write_text("name: t\nbase: base.yaml\ncross:\n  model: [llama-2-70b, llama-3.1-70b]\nseeds: 2\n")
    out = tmp_path / "o"
    one_line_error(
        ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--no-progress"],
        "sweep t: all 2 points failed (4 runs); point 0: fleet.gpu, fleet.tp: llama-2-70b does not fit on 1x a100-80gb",
    )
    assert not (out / "results.parquet").exists() and not (out / "stats.parquet").exists()
    (tmp_path / "sweep.yaml").write_text("name: t2\nbase: base.yaml\ncross:\n  model: [llama-3.1-8b, llama-2-70b]\nseeds: 1\n")
    res = runner.invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert res.exit_code == 0 and "(1 could not run)" in res.output, res.output
    assert len(pd.read_parquet(tmp_path / "o2" / "results.parquet")) == 2


LINKS = {  # file, edit, what the one-line error says
    "a request on a replica never launched": (
        "requests",
        lambda r: r.assign(replica_id=np.int32(7)),
        "(request_id 0): replica_id must be -1 or a replica of replicas.parquet (got replica_id = 7)",
    ),
    "a decode replica never launched": (
        "requests",
        lambda r: r.assign(decode_replica_id=np.int32(9)),
        "decode_replica_id must be -1 or a replica of replicas.parquet (got decode_replica_id = 9)",
    ),
    "no replica at all": ("replicas", lambda r: r.iloc[:0], "replicas.parquet: holds no replica while 3 requests were served"),
    "more cached tokens than the prompt": (
        "requests",
        lambda r: r.assign(cached_tokens=r["prompt_tokens"] + 1.0),
        "cached_tokens must be within 0..prompt_tokens (got cached_tokens = 51.0)",
    ),
    "negative cached tokens": (
        "requests",
        lambda r: r.assign(cached_tokens=-1.0),
        "cached_tokens must be within 0..prompt_tokens",
    ),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_requests_must_name_replicas_the_run_launched_and_cache_at_most_their_prompt(run_dir, tmp_path, case):
    """`report` read these with exit 0: requests served by a replica missing from replicas.parquet (or by none, the
    file emptied) were summed without a replica to bill, and a request with more cached tokens than its prompt gave a
    cache hit rate over 100%. A rejected request's replica -1 and NaN cached tokens (no caching) stay valid."""
    name, edit, says = LINKS[case]
    edited = edited_run_copy(run_dir, tmp_path, name, edit)
    html = tmp_path / "p.html"
    one_line_error(["report", str(edited), "--html", str(html)], says)
    assert not html.exists()
    requests = pd.read_parquet(run_dir / "requests.parquet")
    assert requests["cached_tokens"].isna().all() and (requests["decode_replica_id"] == -1).all()
    (edited / "replicas.parquet").write_bytes((run_dir / "replicas.parquet").read_bytes())
    rejected = requests.assign(replica_id=np.int32(-1), status=pd.Categorical(["rejected", "completed", "completed"]))
    rejected.to_parquet(edited / "requests.parquet", index=False)
    res = runner.invoke(app, ["report", str(edited)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("name", "old", "new", "says"),
    [
        (
            "deployment-hpa.yaml",
            "maxReplicas: 8",
            'maxReplicas: "8"',
            "spec.maxReplicas must be an integer, not a string (got '8')",
        ),
        ("deployment-hpa.yaml", "replicas: 2", 'replicas: "2"', "spec.replicas must be an integer, not a string (got '2')"),
        ("deployment-hpa.yaml", "minReplicas: 1", "minReplicas: 1.5", "spec.minReplicas must be an integer, not float (got 1.5)"),
        ("kserve.yaml", "maxReplicas: 4", 'maxReplicas: "4"', "spec.predictor.maxReplicas must be an integer, not a string"),
    ],
)
def test_import_refuses_an_integer_field_given_as_a_string(tmp_path, name, old, new, says):
    """An HPA's `maxReplicas: "8"` (Kubernetes refuses it: the field is an integer) was read as 8 and imported. A
    resource quantity (`nvidia.com/gpu: "1"`) is text in Kubernetes and stays accepted."""
    text = (REPO / "configs" / "cluster" / name).read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    out = tmp_path / "s.yaml"
    one_line_error(["import", str(path), "--out", str(out)], says)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--job-id", ""], "b.csv: --job-id must not be empty"),
        (["--job-id", "  "], "b.csv: --job-id must not be empty"),
        (["--deadline-s", "1e300"], "--deadline-s must be a number of seconds > 0 and <= 1e+12 (got 1e+300)"),
    ],
)
def test_trace_merge_refuses_an_empty_job_id_and_a_deadline_past_any_run(tmp_path, monkeypatch, option, says):
    """`--job-id ""` was silently replaced by the file's name (an empty id is falsy), and `--deadline-s 1e300`
    wrote a 300-digit deadline_at_s field into the merged CSV."""
    monkeypatch.chdir(tmp_path)
    Path("b.csv").write_text("arrival_at_s,prompt_tokens,output_tokens\n0,10,5\n1,10,5\n")
    one_line_error(["trace", "merge", "m.csv", "b.csv=batch", *option], says)
    assert not Path("m.csv").exists()


def test_a_trace_deadline_past_any_run_is_refused_with_its_line(tmp_path):
    """A trace's `deadline_at_s` of 1e300 was read (only its order against the arrival was checked) and written
    back by `trace merge` / `convert` as a 300-digit field; arrivals were already bounded at 1e12 s."""
    path = tmp_path / "t.csv"
    path.write_text("arrival_at_s,prompt_tokens,output_tokens,klass,deadline_at_s\n0,10,5,batch,100\n1,10,5,batch,1e300\n")
    one_line_error(
        ["trace", "inspect", str(path)], "line 3: deadline_at_s must be within 1e+12 s of the first arrival (got 1e+300)"
    )


@pytest.mark.parametrize("goodput", ["ttft:5 ttft:6", "ttft:5,tpot:100,ttft:6"])
def test_goodput_refuses_a_metric_given_twice(tmp_path, goodput):
    """`--goodput "ttft:5 ttft:6"` silently kept the last figure (6 ms): a repeat is most likely a typo for another
    metric, and the SLO the run reported against was not the one written first."""
    out = tmp_path / "r"
    one_line_error(
        ["run", str(REPO / "configs" / "default.yaml"), "--goodput", goodput, "--out", str(out)],
        f"--goodput names ttft twice (got {goodput!r}); give each metric once",
    )
    assert not out.exists()


MOONCAKE = '{"timestamp":0,"input_length":10,"output_length":5%s}\n{"timestamp":1,"input_length":10,"output_length":5%s}\n'


@pytest.mark.parametrize(
    ("first", "second", "says"),
    [
        (',"x":1', ',"x":"a"', "line 2: field x is a string, on earlier lines a number (one type per field)"),
        (',"x":{"a":1}', ',"x":[1]', "line 2: field x is an array, on earlier lines an object"),
        (',"x":[1]', ',"x":["a"]', "line 2: field x[] is a string, on earlier lines a number"),
        ("", ',"input_length":12', "line 2: field input_length is given twice"),
        ("", ',"x":{"a":1,"a":2}', "line 2: field a is given twice"),
    ],
)
def test_a_mooncake_line_pyarrow_refuses_is_named(tmp_path, first, second, says):
    """An extra field whose type changes between lines, or a key given twice, was refused by pyarrow's reader with
    no line (`cannot parse as JSON lines (... in row 1)`, its row counted within a block): Python's reader, which
    locates the bad line, accepts both. A field that is null on some lines, or an integer beside a float, stays valid."""
    path = tmp_path / "t.jsonl"
    path.write_text(MOONCAKE % (first, second))
    one_line_error(["trace", "inspect", str(path)], says)
    path.write_text(MOONCAKE % (',"x":1', ',"x":null') + '{"timestamp":2,"input_length":10,"output_length":5,"x":2.5}\n')
    assert runner.invoke(app, ["trace", "inspect", str(path)]).exit_code == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0x10", "line 3: prompt_tokens must be a decimal integer (got '0x10')"),
        ("0XFFFFFFFFFFFFFFFF", "line 3: prompt_tokens must be a decimal integer (got '0XFFFFFFFFFFFFFFFF')"),
    ],
)
def test_a_csv_token_count_in_hexadecimal_is_refused_with_its_line(tmp_path, value, says):
    """pyarrow's int64 parser reads `0x10` as 16 (and `0xFFFFFFFFFFFFFFFF` as -1): a hexadecimal token count was
    accepted as a decimal one, where `+100` is refused. Spaces around a decimal count stay accepted, as before."""
    path = tmp_path / "t.csv"
    path.write_text(f"arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1,{value},10\n")
    one_line_error(["trace", "inspect", str(path)], says)
    path.write_text("arrival_at_s,prompt_tokens,output_tokens\n0,100,10\n1, 16 ,10\n")
    assert runner.invoke(app, ["trace", "inspect", str(path)]).exit_code == 0
