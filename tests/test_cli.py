import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SEED = ["roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "2", "--preset", "seed"]


def run(*args: str):
    return runner.invoke(app, list(args))


# (pattern in the printed text, the article's figure) -- SEED.md's table; the README states a 2% tolerance
ARTICLE = [
    (r"FLOPs per token\s+([\d.]+) GFLOP", 140.0),
    (r"KV cache per token\s+([\d,]+) B", 327_680),
    (r"compute-bound above\s+(\d+) prompt tokens at peak rates", 156),
    (r"throughput\s+([\d,]+) tok/s \(one 2048-token prompt\)", 2857),
    (r"cost\s+\$([\d.]+) / 1K prompt tokens", 0.00042),
    (r"latency,\s+512 tokens\s+([\d.]+) s", 0.175),  # the article: ~0.17-0.18 s
    (r"latency,\s+1536 tokens\s+([\d.]+) s", 0.53),
    (r"\n\s+1\s+([\d.]+)\s+\$", 18.6),  # decode tok/s at batch 1
    (r"\n\s+1\s+[\d.]+\s+\$([\d.]+)", 0.066),  # $/1K completion at batch 1
    (r"\n\s+8\s+[\d.]+\s+\$([\d.]+)", 0.00825),
    (r"\n\s+32\s+[\d.]+\s+\$([\d.]+)", 0.00206),
]


@pytest.mark.parametrize(("pattern", "article"), ARTICLE)
def test_seed_roofline_text_prints_the_article_figures(pattern, article):
    r = run(*SEED)
    assert r.exit_code == 0, r.output
    match = re.search(pattern, r.stdout)
    assert match, pattern
    printed = float(match.group(1).replace(",", ""))
    assert printed == pytest.approx(article, rel=0.02)


def test_seed_roofline_text_prints_price_and_kv_fit():
    out = run(*SEED).stdout
    assert "$4.42/h" in out and "largest batch whose KV fits at 4096" in out


def test_roofline_json_has_the_design_keys():
    r = run(*SEED, "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    for key in [
        "flops_per_token",
        "kv_bytes_per_token",
        "prompt_tokens_per_s",
        "usd_per_1k_prompt_tokens",
        "decode_tokens_per_s",
        "usd_per_1k_completion_tokens",
        "kv_capacity_tokens",
        "crossover_prompt_tokens",
    ]:
        assert key in data, key
    assert set(data["decode_tokens_per_s"]) == {"1", "8", "32"}
    assert data["usd_per_1k_completion_tokens"]["1"] == pytest.approx(0.066, rel=0.02)
    assert data["api"]["usd_per_1k_completion_tokens"] == 0.002
    assert data["preset"] == "seed"


def test_config_gives_the_same_report_as_flags():
    by_flags = json.loads(run(*SEED, "--json").stdout)
    by_config = json.loads(run("roofline", "--config", str(REPO / "configs" / "seed.yaml"), "--json").stdout)
    assert by_config == by_flags


def test_price_and_batches_options():
    data = json.loads(run(*SEED, "--json", "--price-per-gpu-hour", "4.42", "--batches", "2,64").stdout)
    assert data["usd_per_replica_hour"] == pytest.approx(8.84)
    assert set(data["usd_per_1k_completion_tokens"]) == {"2", "64"}


def test_context_tokens_slow_decode():
    flat = json.loads(run(*SEED, "--json").stdout)["decode_tokens_per_s"]["32"]
    long = json.loads(run(*SEED, "--json", "--context-tokens", "1024").stdout)["decode_tokens_per_s"]["32"]
    assert long < flat


def test_default_assumptions_differ_from_seed():
    data = json.loads(run("roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "2", "--json").stdout)
    assert data["preset"] is None
    assert data["assumptions"]["attention"] is True and data["assumptions"]["comm"] is True
    assert data["assumptions"]["gpu_memory_utilization"] == 0.9


def test_models_and_gpus_listings():
    r = run("models")
    assert r.exit_code == 0 and "deepseek-v3" in r.stdout and "MLA" in r.stdout
    rows = json.loads(run("gpus", "--json").stdout)
    assert {row["name"] for row in rows} >= {"a100-80gb", "mi300x"}
    lines = run("gpus").stdout.splitlines()  # the table's columns line up, however long a name or link is
    starts = {line.index(" 1597 ") for line in lines if line.startswith("rtx-pro-6000-server ")}
    starts |= {line.index(" 1555 ") for line in lines if line.startswith("a100-40gb ")}
    assert len(starts) == 1 and lines[0].index("GB/s") + 4 == next(iter(starts)) + 5
    assert "seed" in run("presets").stdout
    header, *table = run("models").stdout.splitlines()
    col = header.index("hf repo")  # every row's repository starts under its header, the longest name included
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in table if not line.startswith("/SW"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "llama-9", "--gpu", "a100-80gb"],
            "unknown model 'llama-9'; valid names: deepseek-r1, deepseek-v2, deepseek-v3, ",
        ),
        (["--model", "llama-2-70b", "--gpu", "p100", "--tp", "2"], "unknown gpu 'p100'; valid names: a10, a100-40gb"),
        (["--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "3"], "tp=3 must divide num_attention_heads=64"),
        (["--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "1"], "short by 63.8 GB"),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--batches", "0,8"], "--batches values must be >= 1 (got 0)"),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--batches", "x"], "--batches must be comma-separated integers"),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--prompt-tokens", "-5"], "--prompt-tokens must be >= 1 (got -5)"),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--context-tokens", "-1"], "--context-tokens must be >= 0"),
        (
            ["--model", "llama-2-7b", "--gpu", "a100-80gb", "--weight-bits", "3"],
            "roofline.weight_bits: Input should be 4, 8, 16 or 32 (got 3)",
        ),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--preset", "nope"], "unknown roofline preset 'nope'"),
        (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--compare-api", "gpt-9"], "unknown API price sheet 'gpt-9'"),
        (["--model", "llama-2-7b"], "roofline needs --model and --gpu"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = run("roofline", *args)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]


def test_bad_config_files(tmp_path):
    (tmp_path / "s.yaml").write_text("model: llama-2-7b\nfleet: {gpu: a100-80gb}\nautoscaler: {policy: hpa}\n")
    r = run("roofline", "--config", str(tmp_path / "s.yaml"))
    assert r.exit_code == 2 and "s.yaml: autoscaler: unknown key" in r.stderr
    (tmp_path / "config.json").write_text('{"hidden_size": 4096, "num_attention_heads": 32}')
    r = run("roofline", "--model", str(tmp_path / "config.json"), "--gpu", "a100-80gb")
    assert r.exit_code == 2 and "missing required field 'num_hidden_layers'" in r.stderr


def test_process_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "sim", *SEED], capture_output=True, text=True, cwd=REPO, check=False)
    assert ok.returncode == 0 and "$0.0651" in ok.stdout


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.startswith("fleetsim 0.")
    assert all(cmd in run("--help").stdout for cmd in ("run", "roofline", "trace", "models", "gpus", "presets"))


def test_the_cli_imports_the_simulator_only_when_a_command_needs_it():
    """`fleetsim --version` and `fleetsim roofline` start fast: building the CLI loads neither pandas,
    pyarrow, SimPy nor rich (they are imported by the commands that simulate or read traces)."""
    import subprocess
    import sys

    heavy = ("pandas", "pyarrow", "simpy", "rich", "matplotlib")
    code = (
        "import sys, types, sim.cli.commands; "
        f"print(','.join(m for m in {heavy!r} if type(sys.modules.get(m)) is types.ModuleType))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
    version = subprocess.run(
        [sys.executable, "-c", "import sys; from sim.cli import main; main(['--version'])\n"],
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0 and version.stdout.startswith("fleetsim ")


def test_a_user_supplied_price_is_not_credited_to_the_catalog():
    """`--price-per-gpu-hour` replaces the catalog's price: the report says so instead of citing the
    catalog's source and date."""
    from typer.testing import CliRunner

    from sim.cli import app

    runner = CliRunner()
    mine = runner.invoke(
        app, ["roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "2", "--price-per-gpu-hour", "1.5"]
    )
    assert mine.exit_code == 0, mine.output
    assert "$1.5/GPU-h: user-supplied)" in mine.stdout and "CoreWeave" not in mine.stdout
    stock = runner.invoke(app, ["roofline", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "2"])
    assert "CoreWeave" in stock.stdout


def test_a_gpu_alias_is_named_once(tmp_path):
    """`--gpu h100` is the catalog's h100-sxm: the CLI says so on stderr instead of silently choosing."""
    from typer.testing import CliRunner

    from sim.cli import app

    r = CliRunner().invoke(app, ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100"])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("note: GPU 'h100' is the catalog's 'h100-sxm'") == 1
    exact = CliRunner().invoke(app, ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm"])
    assert "note:" not in exact.stderr


def test_roofline_at_a_price_of_zero_says_free_rather_than_dividing_by_it():
    from typer.testing import CliRunner as _Runner

    from sim.cli import app as _app

    res = _Runner().invoke(_app, ["roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--price-per-gpu-hour", "0"])
    assert res.exit_code == 0 and "free at the price given" in res.output, res.output


def test_roofline_decode_rows_whose_kv_does_not_fit_say_so():
    """A decode row is the roofline's figure for that batch; where the batch's KV (context + the decoded token, at least
    one token a sequence) exceeds the replica's cache the row says so, so that 10^9 sequences do not read as a rate."""
    args = ["roofline", "--model", "llama-3.1-70b", "--gpu", "a100-80gb", "--tp", "2", "--context-tokens", "4096"]
    res = run(*args, "--json", "--batches", "1,5,6,1000000000")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    fit = r["max_batch"]["batch"]
    assert fit == r["kv_capacity_tokens"] // 4096 == 5
    assert r["decode_kv_fits"] == {"1": True, "5": True, "6": False, "1000000000": False}
    text = run(*args, "--batches", "5,6").stdout
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith(("5 ", "6 "))}
    assert (
        "does not fit" not in rows["5"]
        and f"KV does not fit: 24,576 tokens, the cache holds {r['kv_capacity_tokens']:,}" in rows["6"]
    )
    # at no context every sequence still holds the token it decodes
    zero = json.loads(run("roofline", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--json", "--batches", "1,10000000").stdout)
    assert zero["decode_kv_fits"] == {"1": True, "10000000": zero["kv_capacity_tokens"] >= 10_000_000}
    assert zero["decode_kv_fits"]["10000000"] is False
