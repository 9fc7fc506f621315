"""A run ends as records: the result pickles, rebuilds from its run folder with an identical summary,
and the modules that read it import nothing from the engine or the fleet."""

import ast
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import FleetsimError
from sim.results.report import RUN_FILES, RUN_MARKER, write_run
from sim.results.result import SimResult
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.schema import REPLICA_COLUMNS, REQUEST_COLUMNS, SUMMARY_KEYS, TIMELINE_COLUMNS
from sim.workload import validate_frame

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / "sim"


def fleet_scenario(seed=0):
    return parse_config(
        {
            "model": "llama-3.1-8b",
            "seed": seed,
            "fleet": {
                "gpu": "a100-80gb",
                "router": "power_of_two",
                "autoscaler": {
                    "policy": "hpa",
                    "metric": "outstanding_per_replica",
                    "target": 3,
                    "max_replicas": 4,
                    "interval_s": 2,
                },
                "lifecycle": {
                    "provision_s": {"dist": "uniform", "low": 1, "high": 5},
                    "image_pull_s": 1,
                    "load_gb_per_s": 16,
                    "warmup_s": 1,
                },
                "timeline_interval_s": 1.0,
            },
            "engine": {"max_num_seqs": 8, "num_gpu_blocks_override": 300},
            "slo": {"ttft_ms": 500, "tpot_ms": 50},
            "pricing": {"usd_per_gpu_hour": 3.0, "billing_granularity_s": 10},
        }
    )


def busy_trace(n=600, seed=1):
    rng = np.random.default_rng(seed)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.cumsum(rng.exponential(0.04, n)),
                "prompt_tokens": rng.integers(10, 900, n),
                "output_tokens": rng.integers(1, 300, n),
            }
        )
    )


@pytest.fixture(scope="module")
def result():
    return simulate(fleet_scenario(), busy_trace())


def test_result_holds_records_only(result):
    assert isinstance(result.requests, pd.DataFrame) and isinstance(result.replicas, pd.DataFrame)
    assert isinstance(result.timeline, pd.DataFrame) and isinstance(result.meta, dict)
    assert set(vars(result)) == {"requests", "replicas", "timeline", "itl", "meta"}
    json.dumps(result.meta)  # meta is plain data
    assert result.summary()["replicas_launched"] == len(result.replicas) > 1  # the fleet did scale


def test_result_pickles_with_an_identical_summary(result):
    again = pickle.loads(pickle.dumps(result))
    assert again.summary() == result.summary()
    assert again.requests.equals(result.requests)


def test_load_rebuilds_the_result_from_a_run_folder(result, tmp_path):
    out = write_run(result, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, RUN_MARKER])
    loaded = SimResult.load(out)
    assert loaded.summary() == result.summary()
    for name in ("requests", "replicas", "timeline"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(result, name), check_dtype=False)
    assert np.array_equal(loaded.itl.singles, result.itl.singles) and np.array_equal(loaded.itl.a, result.itl.a)
    assert loaded.meta["wall_s"]["write"] is not None
    summary_file = json.loads((out / "summary.json").read_text())
    assert summary_file["p99_itl_ms"] == result.summary()["p99_itl_ms"]


def test_load_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(FleetsimError, match="not a run folder"):
        SimResult.load(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "summary.json").write_text("{}")
    with pytest.raises(FleetsimError, match=r"not a complete run folder \(missing requests.parquet"):
        SimResult.load(tmp_path / "half")


def test_fleetsim_report_reprints_the_run(tmp_path):
    runner = CliRunner()
    out = tmp_path / "default"
    ran = runner.invoke(app, ["run", str(REPO / "configs" / "default.yaml"), "--out", str(out), "--json"])
    assert ran.exit_code == 0, ran.output
    again = runner.invoke(app, ["report", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(ran.stdout)
    text = runner.invoke(app, ["report", str(out)])
    assert "Simulation Result" in text.stdout and "default: llama-2-70b, 1 replica of 2x a100-80gb, chunked" in text.stdout
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a run folder" in missing.stderr


def test_no_capacity_reports_utilization_as_not_available(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["run", str(REPO / "configs" / "default.yaml"), "--out", str(tmp_path / "d"), "--no-capacity"])
    assert r.exit_code == 0, r.output
    assert "Throughput utilization:                 n/a" in r.stdout
    assert "capacity not measured (--no-capacity)" in r.stdout


def test_same_seed_gives_identical_run_folders(tmp_path):
    folders = [write_run(simulate(fleet_scenario(seed=5), busy_trace()), tmp_path / f"run{i}") for i in range(2)]
    for name in RUN_FILES:
        a, b = ((f / name).read_bytes() for f in folders)
        if name == "meta.json":  # wall seconds differ; everything else must not
            a, b = (json.loads(x) for x in (a, b))
            a.pop("wall_s"), b.pop("wall_s")
        assert a == b, name
    other = simulate(fleet_scenario(seed=6), busy_trace())
    assert not other.requests.equals(SimResult.load(folders[0]).requests)  # another seed: other draws


# --- module boundaries ------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every `sim` module -> the `sim` modules it imports (anywhere in the file, type-checking blocks too)."""
    modules = {_module_name(p): p for p in SIM.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def external_imports(module: str) -> set[str]:
    """The top-level packages outside `sim` a module imports (anywhere in the file)."""
    path = REPO / (module.replace(".", "/") + ".py")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out - {"sim"}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# The layers of `sim/`, bottom up (the README's layout section): a module imports only from its own layer and the
# layers below it. `sim` itself, the public API, re-exports lazily from any layer.
LAYERS = (
    (
        "base",
        (
            "sim.errors",
            "sim.spec",
            "sim.lazy",
            "sim.atomic",
            "sim.yaml_input",
            "sim.distributions",
            "sim.schema",
            "sim.states",
            "sim.streams",
            "sim.data",
            "sim.compiled",
        ),
    ),
    ("physics", ("sim.physics",)),
    ("policies", ("sim.policies",)),
    ("workload", ("sim.workload",)),
    ("scenario", ("sim.scenario",)),
    ("results", ("sim.results",)),
    ("run", ("sim.run",)),
    ("studies", ("sim.studies",)),
    ("cli", ("sim.cli", "sim.__main__")),
)


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and the README's layout")


def test_each_layer_imports_only_the_layers_below_it():
    graph = import_graph()
    for module, targets in graph.items():
        if module == "sim":
            continue
        mine = layer_of(module)
        for target in targets - {"sim"}:
            assert layer_of(target) <= mine, f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"


def test_results_import_nothing_from_the_run():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("sim.results")):
        assert not {m for m in reachable(graph, module) if m.startswith("sim.run")}, module


def test_pure_modules_stay_pure():
    graph = import_graph()
    assert not {
        m for m in reachable(graph, "sim.policies.autoscale") if m.startswith("sim.run.fleet")
    }  # policies without the fleet
    assert "sim.physics.roofline" not in reachable(graph, "sim.scenario.config") and "sim.scenario.resolve" not in reachable(
        graph, "sim.scenario.config"
    )
    for module in (
        "sim.policies.autoscale",
        "sim.policies.router",
        "sim.run.engine.scheduler",
        "sim.results.cost",
        "sim.results.metrics",
    ):
        assert "simpy" not in external_imports(module), module  # `import simpy`, `from simpy import ...`, anywhere


def test_no_import_cycles():
    graph = import_graph()
    packages = {m for m in graph if (SIM / Path(*m.split(".")[1:]) / "__init__.py").exists() or m == "sim"}
    # a package's __init__ re-exporting its submodules is not a cycle of the code
    inner = {m: {t for t in e if t not in packages} for m, e in graph.items()}
    for module in inner:
        assert module not in reachable(inner, module), f"{module} imports itself through {sorted(reachable(inner, module))}"


def glossary_names() -> set[str]:
    """The names docs/metrics.md documents: `name`, and `{a,b}_name` patterns expanded (`{…}_x` takes the
    statistics of the first pattern of its table)."""
    glossary = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`([a-z0-9_]+)`", glossary))
    stats = ["mean", "median", "std", "p90", "p99"]
    for head, tail in re.findall(r"`\{([a-z0-9_,…]+)\}(_[a-z0-9_]+)`", glossary):
        parts = stats if head == "…" else head.split(",")
        documented |= {p + tail for p in parts}
    return documented


def test_the_schema_is_the_glossary():
    """Every summary key and record column of the one schema is documented, and every run has exactly them."""
    names = set(SUMMARY_KEYS) | set(REQUEST_COLUMNS) | set(REPLICA_COLUMNS) | set(TIMELINE_COLUMNS)
    assert not names - glossary_names()


def test_the_metrics_glossary_documents_every_key_and_column(result, tmp_path):
    documented = glossary_names()
    out = write_run(result, tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    names = set(summary) | set(summary["gpu_seconds_by_state"]) | set(summary["resolved"])
    for table in ("requests", "replicas", "timeline", "itl"):
        names |= set(pd.read_parquet(out / f"{table}.parquet").columns)
    names |= set(result.meta) | set(result.meta["wall_s"]) | set(result.meta["capacity"])
    for state in ("provisioning", "loading", "busy", "idle", "draining"):
        names.discard(state + "_s")  # written once as provisioning_s, loading_s, ...
        documented.add(state)
    assert not names - documented


def test_capacity_is_cached_on_resolved_content_not_on_names(tmp_path):
    """A user catalog that redefines a GPU name gets its own saturated capacity (the stale-cache bug)."""
    slow = tmp_path / "gpus.yaml"
    slow.write_text(
        "a100-80gb:\n  description: an A100 at half the bandwidth\n  bf16_tflops: 312\n  hbm_gb: 80\n"
        "  hbm_bw_gb_per_s: 1019.5\n  interconnect: NVLink3\n  interconnect_gb_per_s: 600\n"
        "  allreduce_latency_s: 1.0e-5\n  mfu: 0.641\n  mbu: 0.65\n  usd_per_gpu_hour: 1.0\n"
        "  price_source: test\n  price_as_of: '2026'\n"
    )
    base = {"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb"}, "engine": {"max_num_seqs": 4}}
    trace = busy_trace(n=60)
    plain = simulate(parse_config(base), trace)
    user = simulate(parse_config({**base, "gpu_catalog": str(slow)}), trace)
    again = simulate(parse_config(base), trace)
    assert user.max_tokens_per_s < 0.75 * plain.max_tokens_per_s  # decode-bound: about half as fast
    assert again.meta["wall_s"]["capacity_cached"] and again.max_tokens_per_s == plain.max_tokens_per_s
    assert not user.meta["wall_s"]["capacity_cached"]


def test_saturated_capacity_of_a_single_server_is_its_service_rate():
    """max_num_seqs 1, constant step times, identical requests: one request at a time, each taking
    S = P x a + (O - 1) x d seconds, so the replica serves (P + O) / S tokens per second, exactly."""
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "a100-80gb"},
            "engine": {"max_num_seqs": 1, "step_time": {"kind": "constant", "prefill_s_per_token": 0.001, "decode_step_s": 0.02}},
        }
    )
    n, p, o = 400, 300, 51
    trace = validate_frame(pd.DataFrame({"arrival_at_s": np.arange(n) * 100.0, "prompt_tokens": p, "output_tokens": o}))
    r = simulate(sc, trace)
    assert r.max_tokens_per_s == pytest.approx((p + o) / (p * 0.001 + (o - 1) * 0.02), rel=1e-9)
    assert r.meta["capacity"]["rel_se"] < 0.01  # windows cut through a request now and then; nothing else varies
    s = r.summary()
    assert s["throughput_utilization"] == pytest.approx(n * (p + o) / (r.max_tokens_per_s * s["billed_gpu_seconds"]))


def test_capacity_reports_its_uncertainty(result):
    rel_se = result.meta["capacity"]["rel_se"]
    assert 0 < rel_se < 0.1
    assert result.summary()["throughput_utilization_rel_se"] == rel_se


def test_request_classes_are_recorded_and_summarized_per_class(tmp_path):
    """A trace labelled interactive/batch: requests.parquet keeps klass and priority; `by_class` is each class's
    own figures, computed from its requests alone (checked against numpy), and survives a run folder's reload."""
    from sim.results.report import write_run
    from sim.results.result import SimResult
    from sim.run.simulate import simulate
    from sim.scenario.config import parse_config
    from sim.workload import validate_frame

    rng = np.random.default_rng(0)
    n = 300
    frame = validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": np.sort(rng.uniform(0, 100, n)),
                "prompt_tokens": rng.integers(50, 800, n),
                "output_tokens": rng.integers(2, 200, n),
                "klass": np.where(rng.random(n) < 0.3, "batch", "interactive"),
                "priority": 0,
            }
        )
    )
    frame.loc[frame["klass"] == "batch", "priority"] = 1
    sc = parse_config({"model": "llama-3.1-8b", "fleet": {"gpu": "a100-80gb"}, "slo": {"ttft_ms": 100, "tpot_ms": 30}})
    result = simulate(sc, frame)
    req = result.requests
    assert req["klass"].tolist() == frame["klass"].tolist() and req["priority"].tolist() == frame["priority"].tolist()
    s = result.summary()
    assert set(s["by_class"]) == {"batch", "interactive"}
    for name, rec in s["by_class"].items():
        mine = req[req["klass"] == name]
        ttft = (mine["first_token_at_s"] - mine["arrival_at_s"]).to_numpy() * 1000
        tpot = ((mine["completed_at_s"] - mine["first_token_at_s"]) / (mine["output_tokens"] - 1)).to_numpy() * 1000
        assert rec["requests"] == rec["completed"] == len(mine)
        assert rec["p99_ttft_ms"] == pytest.approx(np.percentile(ttft, 99))
        assert rec["mean_tpot_ms"] == pytest.approx(tpot.mean())
        assert rec["slo_attainment"] == pytest.approx(np.mean((ttft <= 100) & (tpot <= 30)))
    assert sum(r["completed"] for r in s["by_class"].values()) == s["completed"]
    out = write_run(result, tmp_path / "run")
    again = SimResult.load(out).summary()
    assert again["by_class"] == s["by_class"]
