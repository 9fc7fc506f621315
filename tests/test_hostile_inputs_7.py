"""Hostile inputs from a seventh fuzzing pass: a speculative engine whose token budget no decoder fits (the run spun
until the loop guard, then blamed the step times), an MoE fleet whose caps held part of a DP group (half a group
launched, billed and served), a CSV trace's deadlines read in the wrong time base, and messages naming the wrong rule.
Each now ends in one line naming the field, the rule and the value, exit code 2, and writes nothing (or, for the
deadlines, reads the file as its Parquet twin is read)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.workload.readers import load_trace
from tests.conftest import one_line_error

runner = CliRunner()
SMALL = {
    "model": "llama-3.1-8b",
    "trace": {
        "arrivals": {"process": "poisson", "rate_per_s": 2},
        "duration_s": 20,
        "prompt_tokens": {"dist": "fixed", "tokens": 200},
        "output_tokens": {"dist": "fixed", "tokens": 20},
    },
    "fleet": {"gpu": "h100-sxm", "tp": 1},
}


def _scenario(tmp_path: Path, **change: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SMALL | change))
    return path


def test_a_speculative_budget_smaller_than_a_verify_step_is_refused(tmp_path):
    """With 4 drafts a decoding sequence puts 5 tokens through a step: a budget of 4 scheduled no decoder ever, and
    the run went on for 20,000,000 simulated seconds before its guard blamed the replicas' speed."""
    spec = {"method": "ngram", "num_speculative_tokens": 4, "acceptance_rate": 0.9}
    path = _scenario(tmp_path, engine={"speculative": spec, "max_num_batched_tokens": 4})
    out = tmp_path / "run"
    one_line_error(
        ["run", str(path), "--out", str(out), "--no-progress"],
        "engine.max_num_batched_tokens: with speculative decoding a decoding sequence puts 1 + num_speculative_tokens "
        "= 5 tokens through each step; give at least 5 (got 4)",
    )
    assert not out.exists()
    ok = _scenario(tmp_path, engine={"speculative": spec, "max_num_batched_tokens": 5})
    assert runner.invoke(app, ["run", str(ok), "--out", str(tmp_path / "ok"), "--no-progress"]).exit_code == 0


MOE = SMALL | {"model": "qwen3-30b-a3b", "fleet": {"gpu": "h100-sxm", "tp": 2, "dp": 2}}


@pytest.mark.parametrize(
    ("fleet", "says"),
    [
        (
            {"max_gpus": 2},
            "fleet.max_gpus: an MoE model's DP ranks share its experts, so a fleet holds whole groups of fleet.dp = 2 ranks of fleet.tp = 2 GPUs; give a multiple of 4 GPUs (got 2)",
        ),
        ({"max_gpus": 6, "autoscaler": {"policy": "fixed", "replicas": 4}}, "give a multiple of 4 GPUs (got 6)"),
        (
            {"capacity": {"on_demand": {"max_replicas": 1}}},
            "fleet.capacity: its classes' max_replicas and fleet.reserved_replicas hold at most 1 replicas at once, part of a group of fleet.dp = 2 ranks",
        ),
        (
            {
                "capacity": {"on_demand": {"max_replicas": 2}, "spot": {"max_replicas": 1, "reclaim_at_s": [5]}},
                "autoscaler": {"policy": "fixed", "replicas": 4},
            },
            "hold at most 3 replicas at once",
        ),
    ],
)
def test_an_moe_fleets_caps_hold_whole_dp_groups(tmp_path, fleet, says):
    """A cap of fewer ranks than a group launched part of it: `fleet.max_gpus: 2` with dp 2 x tp 2 ran one rank of a
    two-rank group, served every request and billed half the GPUs (a sweep priced that point at half the cost)."""
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(MOE | {"fleet": MOE["fleet"] | {"autoscaler": {"policy": "fixed", "replicas": 2}} | fleet}))
    # (a reserved seat and an on-demand one hold a group between them: the total binds, not each class)
    out = tmp_path / "run"
    one_line_error(["run", str(path), "--out", str(out), "--no-progress"], says)
    assert not out.exists()


def test_an_moe_dedicated_batch_pool_holds_whole_dp_groups(tmp_path):
    jobs = [
        {
            "job_id": "j",
            "requests": 10,
            "prompt_tokens": {"dist": "fixed", "tokens": 100},
            "output_tokens": {"dist": "fixed", "tokens": 10},
            "deadline_s": 600,
        }
    ]
    fleet = MOE["fleet"] | {"autoscaler": {"policy": "fixed", "replicas": 2}}
    for key, value in (("replicas", 1), ("max_replicas", 3)):
        path = tmp_path / f"{key}.yaml"
        dedicated = {"replicas": 2, key: value} if key == "max_replicas" else {key: value}
        path.write_text(
            yaml.safe_dump(MOE | {"fleet": fleet, "batch": {"fleet": "dedicated", "dedicated": dedicated, "jobs": jobs}})
        )
        one_line_error(
            ["run", str(path), "--out", str(tmp_path / key), "--no-progress"],
            f"batch.dedicated.{key}: an MoE model's DP ranks share its experts, so a pool holds whole groups of fleet.dp = 2 ranks; give a multiple of 2 (got {value})",
        )


def test_a_csv_traces_deadlines_are_read_in_the_files_time_base_as_parquets_are(tmp_path):
    """The CSV reader re-based the arrivals to the first, then checked and re-based the deadlines against the re-based
    arrivals: a deadline before its request's arrival was accepted, and a deadline of 150 s on an arrival at 100 s
    kept 150 (the Parquet reader: 50)."""
    rows = pd.DataFrame(
        {
            "arrival_at_s": [100.0, 101.0],
            "prompt_tokens": [10, 10],
            "output_tokens": [5, 5],
            "deadline_at_s": [150.0, 400.0],
            "klass": ["batch", "interactive"],
        }
    )
    rows.to_csv(tmp_path / "d.csv", index=False)
    rows.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv, from_parquet = load_trace(tmp_path / "d.csv"), load_trace(tmp_path / "d.parquet")
    assert from_csv["deadline_at_s"].tolist() == from_parquet["deadline_at_s"].tolist() == [50.0, 300.0]
    assert from_csv["arrival_at_s"].tolist() == [0.0, 1.0]
    (tmp_path / "bad.csv").write_text("arrival_at_s,prompt_tokens,output_tokens,deadline_at_s,klass\n5,10,5,1,batch\n")
    one_line_error(
        ["trace", "inspect", str(tmp_path / "bad.csv")],
        "line 2: deadline_at_s must be >= arrival_at_s (got 1 with arrival_at_s 5)",
    )
    rows.assign(deadline_at_s=[1.0, 400.0]).to_parquet(tmp_path / "bad.parquet", index=False)
    one_line_error(
        ["trace", "inspect", str(tmp_path / "bad.parquet")], "deadline_at_s must be >= arrival_at_s (got 1 with arrival_at_s 100)"
    )


def test_a_config_json_with_a_zero_intermediate_size_says_so(tmp_path):
    cfg = {
        "hidden_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "vocab_size": 1000,
        "intermediate_size": 0,
        "max_position_embeddings": 4096,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    path = _scenario(tmp_path, model=str(tmp_path / "config.json"))
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"], "field 'intermediate_size' must be >= 1 (got 0)"
    )


def test_two_deployments_of_one_name_are_named_as_such(tmp_path):
    """The served-name check ran first and said "the model name 'a' is served by both 'a' and 'a'"."""
    deployments = [{"name": "a", "model": "llama-3.1-8b"}, {"name": "a", "model": "qwen3-8b"}]
    path = _scenario(tmp_path, deployments=deployments)
    one_line_error(
        ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"],
        "deployments.1.name: each deployment needs a name of its own ('a' is taken)",
    )
