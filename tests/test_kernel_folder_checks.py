"""`fleetsim calibrate FOLDER` on a kernel profile reads what the folder says it profiled — the TP degree in its name
(`tp2/`, `..._tp2`), the model and GPU in its meta.yaml — and refuses a calibration as another: it fitted one setup's
efficiencies to another's kernel times, silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "benchmarks" / "kernels" / "rtxpro6000_llama-3.1-8b_tp1"


def calibrate(folder: Path, *args: str):
    return CliRunner().invoke(app, ["calibrate", str(folder), *args])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--model", "llama-3.1-8b", "--gpu", "rtx-pro-6000-server", "--tp", "2"],
            "a TP 1 profile (its name), calibrated with --tp 2",
        ),
        (
            ["--model", "qwen3-8b", "--gpu", "rtx-pro-6000-server"],
            "meta.yaml model: meta-llama/Llama-3.1-8B (the catalog's llama-3.1-8b), calibrated as --model qwen3-8b",
        ),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm"], "(the catalog's rtx-pro-6000-server), calibrated as --gpu h100-sxm"),
    ],
)
def test_a_calibration_as_another_setup_is_refused(args, says):
    r = calibrate(FOLDER, *args)
    assert r.exit_code == 2, r.output
    assert says in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_the_folders_own_setup_calibrates_and_so_does_its_model_as_a_config_json(tmp_path):
    assert calibrate(FOLDER, "--model", "llama-3.1-8b", "--gpu", "rtx-pro-6000-server").exit_code == 0
    config = {
        "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072,
    }  # fmt: skip
    (tmp_path / "my-llama").mkdir()
    (tmp_path / "my-llama" / "config.json").write_text(json.dumps(config))
    r = calibrate(FOLDER, "--model", str(tmp_path / "my-llama" / "config.json"), "--gpu", "rtx-pro-6000-server")
    assert r.exit_code == 0, r.output


def test_llmservingsims_own_layout_reads_tp_from_the_subfolder_and_meta_from_above(tmp_path):
    """profiler/perf/<HW>/<org>/<model>/<variant>/meta.yaml with the tables in tp1/, tp2/, ..."""
    variant = tmp_path / "bf16"
    shutil.copytree(FOLDER, variant / "tp1")
    (variant / "tp1" / "meta.yaml").rename(variant / "meta.yaml")
    ok = calibrate(variant / "tp1", "--model", "llama-3.1-8b", "--gpu", "rtx-pro-6000-server")
    assert ok.exit_code == 0, ok.output
    wrong = calibrate(variant / "tp1", "--model", "llama-3.1-8b", "--gpu", "l40s")
    assert wrong.exit_code == 2 and "bf16/meta.yaml gpu:" in wrong.output, wrong.output
