"""The README's printed figures are the CLI's real output."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.run.simulate import scenario_trace, simulate

REPO = Path(__file__).resolve().parents[1]


def test_readme_seed_block_matches_cli_output():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```text\n(fleetsim roofline: llama-2-70b.*?)\n```", readme, re.S)
    assert block, "README lost its seed output block"
    out = CliRunner().invoke(app, ["roofline", "--config", str(REPO / "configs" / "seed.yaml")]).stdout
    assert block.group(1) == out.rstrip("\n")


def test_readme_commands_match_ci():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = ci.strip().splitlines()[-1]
    assert test_cmd in readme
    assert "pip install -e '.[test]'" in readme and "pip install --quiet -e '.[test]'" in ci


def test_readme_inspect_block_matches_cli_output(monkeypatch):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```text\n(traces/azure2023_conv.csv \(azure\).*?)\n```", readme, re.S)
    assert block, "README lost its trace inspect block"
    monkeypatch.chdir(REPO)
    out = CliRunner().invoke(app, ["trace", "inspect", "traces/azure2023_conv.csv"]).stdout
    assert block.group(1) == out.rstrip("\n")


def test_readme_run_block_matches_cli_output(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```text\n(=+ Simulation Result =+\n.*?)\n```", readme, re.S)
    assert block, "README lost its run output block"
    out = CliRunner().invoke(app, ["run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "default")]).stdout
    varies = ("wrote ", "timing (wall s)")  # the folder, and wall seconds that differ from machine to machine
    shown = [line for line in block.group(1).splitlines() if not line.startswith(varies)]
    printed = [line for line in out.splitlines() if not line.startswith(varies)]
    assert shown == printed


def test_readme_study_figures_come_from_the_committed_notebook_run():
    """The README quotes the notebook's full run; the notebook is committed with those outputs."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "startup_utilization.ipynb", as_version=4)
    answer = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    readme = (REPO / "README.md").read_text()
    for figure in re.findall(r"(\d+%)", answer):
        assert figure in readme, figure
    assert "serves 13% of what its billed GPUs could" in answer and "it reaches 43%" in answer


def test_readme_batch_table_comes_from_the_committed_notebook_run():
    """The batch study's table and answer quote notebooks/batch_jobs.ipynb's full run (committed with its outputs)."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "batch_jobs.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "day 86400 s, job 1,000,000 requests; small=False" in printed  # the full run, not the reduced one
    answer = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Batch jobs next to interactive traffic") : readme.index("## Speed")]
    for hours in re.findall(r"(\d+\.\d) h", answer):
        assert f"{hours} h" in section, hours
    for dollars in re.findall(r"\$([\d.]+)", answer):
        assert f"${float(dollars):,.2f}" in section, dollars
    for ttft, tpot in re.findall(r"(\d+) ms / ([\d.]+) ms", answer):
        assert f"{ttft} / {tpot} ms" in section, (ttft, tpot)
    for share in re.findall(r"(\d+%)", answer):
        assert share in section, share


def test_readme_disaggregation_figures_come_from_the_committed_notebook_run():
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "disaggregation.ipynb", as_version=4)
    answer = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert answer.startswith("On the same four GPUs, disaggregation pays")
    readme = (REPO / "README.md").read_text()
    section = readme[
        readme.index("## Disaggregated prefill and decode") : readme.index("## Batch jobs next to interactive traffic")
    ]
    numbers = re.findall(r"\d[\d,]*\.?\d*", answer.replace("3:1", "").replace("1:3", "").replace("1:1", "").replace("2:2", ""))
    for number in numbers:
        assert number.rstrip(".") in section, number


def test_readme_speculative_block_matches_cli_output():
    block = re.search(r"```text\n(with speculative decoding:.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert block, "README lost its speculative decoding block"
    args = ["roofline", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "4", "--context-tokens", "1024"]
    r = CliRunner().invoke(app, [*args, "--batches", "1,8,32,128,512", "--speculative", "4:0.7:llama-3.1-8b"])
    assert r.exit_code == 0, r.output
    assert block.group(1) in r.stdout


def test_readme_prefix_cache_table_matches_the_benchmark():
    """Every cell but the speed column comes from `benchmarks/prefix_cache.py`'s runs."""
    import importlib.util
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("prefix_cache_bench", REPO / "benchmarks" / "prefix_cache.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from sim.scenario.config import load_config

    readme = (REPO / "README.md").read_text()
    for name, sets in bench.VARIANTS.items():
        result = simulate(load_config(bench.CONFIG, sets), measure_capacity=False)
        cells = bench.row(name, result.summary(), 0.0).split(" | ")[:-1]
        line = next(line for line in readme.splitlines() if line.startswith(f"| {name} |"))
        assert line.split(" | ")[:-1] == cells, name
    sc = load_config(bench.CONFIG)
    bound = bench.reuse_bound(scenario_trace(sc, base_dir=sc.base_dir))
    assert f"{bound:.1%} of the sample's" in readme or f"blocks, {bound:.1%} carry" in readme


@pytest.mark.slow
def test_readme_batch_run_excerpt_matches_cli_output(tmp_path):
    block = re.search(r"```text\n(-+Class: interactive-+\n.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert block, "README lost its batch run excerpt"
    r = CliRunner().invoke(
        app, ["run", str(REPO / "configs" / "batch-backfill.yaml"), "--out", str(tmp_path / "run"), "--no-capacity"]
    )
    assert r.exit_code == 0, r.output
    assert block.group(1) in r.stdout


def assert_block_is_output(start: str, args: list[str]) -> None:
    """The README's ```text block that begins with `start` is what `fleetsim ARGS` prints (its `wrote` line aside)."""
    block = re.search(r"```text\n(" + re.escape(start) + r".*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert block, f"README lost its {start!r} block"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    shown = [line for line in block.group(1).splitlines() if not line.startswith("wrote ")]
    printed = [line for line in r.stdout.splitlines() if not line.startswith("wrote ")]
    assert shown == printed


@pytest.mark.slow
def test_readme_sweep_block_matches_cli_output(tmp_path):
    args = ["sweep", str(REPO / "configs" / "sweep-gpus.yaml"), "--workers", "2", "--out", str(tmp_path / "s")]
    assert_block_is_output("fleetsim sweep sweep-gpus:", args)


@pytest.mark.slow
def test_readme_plan_block_matches_cli_output(tmp_path):
    args = ["plan", str(REPO / "configs" / "plan-llama70b.yaml"), "--workers", "2", "--out", str(tmp_path / "p")]
    assert_block_is_output("fleetsim plan plan-llama70b:", args)


@pytest.mark.slow
def test_readme_frontier_table_comes_from_the_sweep(tmp_path):
    """The frontier table: each cell is the sweep's mean [95% CI] utilization / mean attainment, as printed."""
    import pandas as pd

    r = CliRunner().invoke(
        app, ["sweep", str(REPO / "configs" / "sweep-startup-frontier.yaml"), "--workers", "2", "--out", str(tmp_path / "f")]
    )
    assert r.exit_code == 0, r.output
    stats = pd.read_parquet(tmp_path / "f" / "stats.parquet")
    readme = (REPO / "README.md").read_text()
    loads = sorted(stats["trace.arrivals.rate_per_s"].unique())
    for target in sorted(stats["fleet.autoscaler.target"].unique()):
        cells = [str(int(target))]
        for load in loads:
            s = stats[(stats["fleet.autoscaler.target"] == target) & (stats["trace.arrivals.rate_per_s"] == load)].iloc[0]
            cells.append(
                f"{s['throughput_utilization_mean']:.0%} [{s['throughput_utilization_ci_low']:.0%}, "
                f"{s['throughput_utilization_ci_high']:.0%}] / {s['slo_attainment_mean']:.0%}"
            )
        assert "| " + " | ".join(cells) + " |" in readme, cells


def test_readme_cluster_section_runs_and_its_import_block_is_real(tmp_path, monkeypatch):
    """The "From your cluster" commands all run (in a scratch folder beside the repository's configs and traces), and
    the import output shown is the CLI's."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From your cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```text\n(# A fleetsim scenario imported from.*?)\n```", section, re.S)
    assert block, "README lost its import output block"
    monkeypatch.chdir(REPO)
    out = CliRunner().invoke(app, ["import", "configs/cluster/deployment-hpa.yaml"]).stdout
    assert block.group(1) == out.rstrip("\n")
    for name in ("configs", "traces"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    commands = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert commands
    ran = 0
    for line in commands.group(1).splitlines():
        args = line.split("#", 1)[0].split()
        assert args[0] == "fleetsim"
        args = [a.strip("'\"") for a in args[1:]]
        if args[0] == "run":
            args += ["--set", "trace.end_s=600", "--no-progress"]  # the run, shortened: the same code path
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (line, r.output)
        ran += 1
    assert ran == 7 and (tmp_path / "manifests.yaml").exists() and (tmp_path / "spans.csv").exists()
    assert (tmp_path / "observed.csv").exists() and (tmp_path / "observed.rates.csv").exists()


def test_readme_capacity_block_is_a_valid_fleet_block():
    import yaml

    from sim.scenario.config import parse_config

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Capacity you cannot count on", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)\n```", section, re.S)
    assert block
    fleet = yaml.safe_load(block.group(1))["fleet"]
    sc = parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "h100-sxm", **fleet}})
    assert sc.fleet.capacity.spot is not None and sc.fleet.capacity.spot.notice_s == 120
    assert sc.fleet.capacity.failures is not None and sc.fleet.capacity.failures.gpu_mtbf_hours == 50700


def test_readme_platform_block_and_budget_table_match_cli_output(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```text\n(=+ Platform Result =+\n.*?)\n```", readme, re.S)
    assert block, "README lost its platform output block"
    config = REPO / "configs" / "platform.yaml"
    out = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "p")]).stdout
    varies = ("wrote ", "timing (wall s)")
    shown = [line for line in block.group(1).splitlines() if not line.startswith(varies)]
    assert shown == [line for line in out.splitlines() if not line.startswith(varies)]
    import json

    for budget in (9, 16):  # two rows of the budget table
        r = CliRunner().invoke(
            app, ["run", str(config), "--set", f"gpu_budget.h100={budget}", "--out", str(tmp_path / f"b{budget}"), "--json"]
        )
        s = json.loads(r.stdout)
        d = s["deployments"]
        att = f"{s['slo_attainment']:.3f} / {d['chat']['slo_attainment']:.3f} / {d['assistant']['slo_attainment']:.3f}"
        reps = f"{d['chat']['replicas_launched']} / {d['chat']['replicas_max']}"
        row = f"| {budget} | {att} | {reps} | {s['billed_gpu_seconds'] / 3600:.2f} | {s['cost_usd']:.2f} |"
        assert row in readme, row


def test_readme_swap_table_matches_cli_output(tmp_path):
    import json

    readme = (REPO / "README.md").read_text()
    config = REPO / "configs" / "swap.yaml"
    for window, sleep, label in ((6, "{level: 1, initial_sleeping: 1}", "level 1"), (60, "null", "none (cold starts)")):
        sets = ["--set", f"fleet.autoscaler.stable_window_s={window}", "--set", f"fleet.lifecycle.sleep={sleep}"]
        r = CliRunner().invoke(app, ["run", str(config), *sets, "--out", str(tmp_path / f"w{window}"), "--json"])
        s = json.loads(r.stdout)
        d = s["deployments"].values()
        p99 = " / ".join(f"{x['p99_ttft_ms']:.0f}" for x in d)
        woken = f"{sum(x['replicas_woken'] for x in d)} / {sum(x['replicas_launched'] for x in d)}"
        row = f"| {window} | {label} | {s['slo_attainment']:.3f} | {p99} | {woken} | {s['billed_gpu_seconds'] / 3600:.3f} | {s['cost_usd']:.2f} |"
        assert row in readme, row


def test_readme_moe_table_comes_from_the_committed_notebook_run():
    """Every cell of the README's MoE cost table is notebooks/moe_cost.ipynb's committed full run: the $ per 1K tokens
    (to the digits the README shows) and the GPUs of the smallest fleet meeting the SLO."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "moe_cost.ipynb", as_version=4)
    plain = [
        "".join(o["data"]["text/plain"])
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/plain" in o.get("data", {})
    ]

    def pivot(text: str) -> dict[tuple[str, float], float]:
        """A pandas pivot printed in column blocks: {(deployment, load): value}."""
        out: dict[tuple[str, float], float] = {}
        blocks = text.split("\n\n")
        for block in blocks:
            lines = [line for line in block.splitlines() if line.strip()]
            names = re.split(r"\s{2,}", lines[0].replace("deployment", "").rstrip(" \\").strip())
            for line in lines[2:]:
                load, *values = line.split()
                for name, v in zip(names, values, strict=True):
                    out[(name, float(load))] = float(v)
        return out

    cost, gpus = pivot(plain[0]), pivot(plain[1])
    columns = [
        "Llama-3.1-70B dense, 2x H200",
        "Qwen3-235B-A22B MoE, 4x H200",
        "DeepSeek-V3 MoE, 8x H200",
        "gpt-oss-120b MoE, 1x H200",
    ]
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| load (req/s) | Llama-3.1-70B dense, FP8") :].split("\n\n")[0].splitlines()[2:]
    assert len(table) == 5
    for row in table:
        load, *cells = [c.strip() for c in row.strip("|").split("|")]
        for name, cell in zip(columns, cells, strict=True):
            dollars, n = re.match(r"\$([\d.]+)(?: per 1K)? \((\d+)(?: GPUs?)?\)", cell).groups()
            shown = len(dollars.split(".")[1])
            # (the notebook prints 6 decimals: within half a unit of the README's last digit and of its own)
            assert abs(float(dollars) - cost[(name, float(load))]) <= 0.5 * 10**-shown + 0.5e-6, (load, name)
            assert int(n) == gpus[(name, float(load))], (load, name)
