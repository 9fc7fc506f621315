"""`fleetsim validate --warm-prompts` (meta.json's `benchmark.prompts_served_before`): a run whose server had just
served the same prompts (a benchmark sweeping request rates on one server) starts with their blocks in the prefix
cache; the replay serves them once first and compares the run alone, on its own clock."""

from __future__ import annotations

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
from sim.studies.validate import validate
from sim.workload import validate_frame
from sim.workload.runlog import read_run_log
from tests.test_validate import write_requests_log

A, D, BS = 1e-3, 0.01, 16  # constant step time: s per prompt token, s per decode step; block size
RAW = {
    "model": "llama-3.1-8b",
    "fleet": {"gpu": "h100-sxm", "tp": 1},
    "engine": {
        "block_size": BS,
        "watermark": 0.0,
        "step_time": {"kind": "constant", "prefill_s_per_token": A, "decode_step_s": D},
    },
}
E2E = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e"


def made_run(tmp_path: Path, meta: dict, n: int = 8) -> tuple[Path, pd.DataFrame]:
    """n requests far apart (each alone on the replica), logged in the requests layout with `meta`."""
    rng = np.random.default_rng(5)
    trace = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.arange(n) * 30.0,
                "prompt_tokens": rng.integers(20, 900, n),
                "output_tokens": rng.integers(2, 50, n),
            }
        )
    )
    write_requests_log(tmp_path, simulate(parse_config(RAW), trace, measure_capacity=False), meta)
    return tmp_path, trace


def test_warm_prompts_start_in_the_prefix_cache_and_the_run_keeps_its_clock(tmp_path):
    folder, trace = made_run(tmp_path, {"benchmark": {"prompts_served_before": True}})
    cmp = validate(read_run_log(folder), RAW)
    r = cmp.result.requests
    prompts = trace["prompt_tokens"].to_numpy()
    hit = (prompts - 1) // BS * BS  # every full block short of the last token
    assert r["cached_tokens"].tolist() == hit.tolist()
    assert r["arrival_at_s"].to_numpy() == pytest.approx(trace["arrival_at_s"].to_numpy(), abs=1e-9)
    # alone on the replica: the first token after the uncached rest of the prompt
    assert (r["first_token_at_s"] - r["arrival_at_s"]).to_numpy() == pytest.approx((prompts - hit) * A)
    assert cmp.result.timeline["t_s"].iloc[0] >= 0 and len(cmp.result.requests) == 8
    assert any(n.startswith("warm prompts") for n in cmp.notes)
    cold = validate(read_run_log(folder), RAW, warm_prompts=False)
    assert cold.result.requests["cached_tokens"].isna().all() or (cold.result.requests["cached_tokens"].fillna(0) == 0).all()
    assert cold.error("ttft") == pytest.approx(0.0, abs=1e-9)  # the log was made cold: replayed cold, exact
    assert cmp.error("ttft") < -0.5


def test_the_cli_flag_overrides_meta_and_a_run_without_prefix_caching_cannot_be_warm(tmp_path):
    folder, _ = made_run(tmp_path, {"resolved_config": {"cache_config": {"enable_prefix_caching": False}}})
    (tmp_path / "s.yaml").write_text(json.dumps(RAW))
    with pytest.raises(FleetsimError, match="enable_prefix_caching: false"):
        validate(read_run_log(folder), RAW, warm_prompts=True)
    out = CliRunner().invoke(app, ["validate", str(folder), "--scenario", str(tmp_path / "s.yaml"), "--warm-prompts"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "need the prefix cache" in out.output and "--cold-prompts" in out.output
    out = CliRunner().invoke(app, ["validate", str(folder), "--scenario", str(tmp_path / "s.yaml"), "--cold-prompts"])
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("bad", ["yes", 1, [True]])
def test_a_badly_typed_prompts_served_before_is_named(tmp_path, bad):
    folder, _ = made_run(tmp_path, {"benchmark": {"prompts_served_before": bad}})
    with pytest.raises(FleetsimError, match=r"benchmark\.prompts_served_before: must be true or false"):
        validate(read_run_log(folder), RAW)


def test_the_a100_rate_sweep_rerun_at_once_is_replayed_warm():
    """The A100 TP 8 server's fourth run (benchmarks/e2e/README.md): the 200 prompts of its three earlier runs again,
    all at once. Replayed cold (every prompt prefilled, 42,659 tokens in 2,048-token steps) the mean TTFT read 8x
    the measured 360 ms; warm, each prompt computes only its last partial block and all 200 are admitted in one
    step (-43% today: the client-side TTFT includes the API server's handling of 200 requests at once, which is not
    simulated). Bounds of this regression: TTFT within -60% and +0%, TPOT and E2E within 20%."""
    log = read_run_log(E2E / "a100-40gb-llama-3.3-70b-tp8-qpsinf")
    warm = validate(log)
    cold = validate(log, warm_prompts=False)
    assert cold.error("ttft") > 3.0, cold.error("ttft")
    assert -0.6 < warm.error("ttft") < 0.0, warm.error("ttft")
    for metric in ("tpot", "e2e"):
        assert abs(warm.error(metric)) < 0.20, (metric, warm.error(metric))


def test_a_prompt_the_setup_cannot_serve_stays_uncached_and_the_rest_are_compared(tmp_path):
    """A replayed setup that refuses some prompts (max_model_len below them) refuses them in the warm-up and in the run
    alike: the others are still warm and compared, the refusals noted; one that refuses every prompt is one line."""
    folder, trace = made_run(tmp_path, {"benchmark": {"prompts_served_before": True}})
    prompts = trace["prompt_tokens"].to_numpy()
    total = prompts + trace["output_tokens"].to_numpy()
    limit = int(np.sort(total)[-3])  # the two longest requests do not fit
    raw = {**RAW, "engine": {**RAW["engine"], "max_model_len": limit}}
    cmp = validate(read_run_log(folder), raw)
    r = cmp.result.requests
    served = (r["status"].astype(str) == "completed").to_numpy()
    assert served.tolist() == (total <= limit).tolist() and served.sum() == 6
    assert any("not completed" in n for n in cmp.notes)
    hit = (prompts - 1) // BS * BS
    assert r["cached_tokens"].to_numpy()[served].tolist() == hit[served].tolist()
    tiny = {**RAW, "engine": {**RAW["engine"], "max_model_len": 10}}
    with pytest.raises(FleetsimError, match=r"the warm-up .* served no prompt .*the first refused"):
        validate(read_run_log(folder), tiny)


def test_calibrate_takes_the_same_flag(tmp_path):
    folder, _ = made_run(tmp_path, {"resolved_config": {"cache_config": {"enable_prefix_caching": False}}}, n=24)
    (tmp_path / "s.yaml").write_text(json.dumps(RAW))
    out = CliRunner().invoke(app, ["calibrate", str(folder), "--scenario", str(tmp_path / "s.yaml"), "--warm-prompts"])
    assert out.exit_code == 2 and "warm prompts" in out.output and "--cold-prompts" in out.output
