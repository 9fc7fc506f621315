"""A run folder whose meta.json another fleetsim version wrote, or that lacks keys: `SimResult.load` and `fleetsim
report` say in one line which version wrote it and what is missing or wrong (it was a KeyError traceback from deep
in the summary); keys this version does not read, a newer version's included, are let through."""

import json
import shutil

import pandas as pd
import pytest

from sim.cli import main
from sim.errors import FleetsimError
from sim.results.report import write_run
from sim.results.result import SimResult
from sim.results.run_meta import this_version
from sim.run.simulate import simulate
from sim.scenario.config import parse_config
from sim.workload import validate_frame

HEAD = "meta.json was written by"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    trace = validate_frame(pd.DataFrame({"arrival_at_s": [0.0, 0.5], "prompt_tokens": [10, 20], "output_tokens": [3, 4]}))
    result = simulate(parse_config({"model": "llama-2-7b", "fleet": {"gpu": "a100-80gb"}}), trace, measure_capacity=False)
    return write_run(result, tmp_path_factory.mktemp("meta") / "run")


def edited(run_folder, tmp_path, edit):
    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    meta = json.loads((folder / "meta.json").read_text())
    replaced = edit(meta)
    meta = meta if replaced is None else replaced
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def drop(*paths):
    def edit(meta):
        for path in paths:
            node = meta
            keys = path.split(".")
            for key in keys[:-1]:
                node = node[key]
            del node[keys[-1]]

    return edit


def older(edit):
    def both(meta):
        meta["fleetsim_version"] = "0.0.1"
        return edit(meta)

    return both


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop("wall_s.build"), f"{HEAD} fleetsim {this_version()} (this version) and lacks wall_s.build"),
        (
            older(drop("capacity.measured")),
            f"{HEAD} fleetsim 0.0.1 (this is {this_version()}) and lacks capacity.measured; rerun its scenario"
            " (config.resolved.yaml) with this version",
        ),
        (older(drop("horizon_s")), f"{HEAD} fleetsim 0.0.1 (this is {this_version()}) and lacks horizon_s"),
        (
            drop("fleetsim_version", "model", "gpu"),
            f"{HEAD} an unstamped fleetsim (this is {this_version()}) and lacks model, gpu;",
        ),
        (
            older(drop("scenario.slo", "scenario.fleet.autoscaler.policy")),
            "and lacks scenario.slo, scenario.fleet.autoscaler.policy",
        ),
        (lambda m: m.update(capacity=5), "(this version): capacity: Input should be a valid dictionary"),
        (lambda m: m.update(tp="x"), "(this version): tp: Input should be a valid integer"),
        (
            lambda m: m["scenario"]["fleet"].update(reserved_replicas="two"),
            "(this version): scenario.fleet.reserved_replicas: Input should be a valid integer",
        ),
        (
            lambda m: m["scenario"]["fleet"]["autoscaler"].update(policy="hpa"),
            "scenario.fleet.autoscaler: a hpa autoscaler needs min_replicas and max_replicas",
        ),
        (lambda m: [], "and is not a JSON object (got list)"),
    ],
)
def test_a_meta_json_this_version_cannot_read_is_one_line(run_folder, tmp_path, capsys, edit, message):
    folder = edited(run_folder, tmp_path, edit)
    with pytest.raises(FleetsimError) as err:
        SimResult.load(folder)
    assert str(err.value).startswith(f"{folder}: {HEAD}") and message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(folder)])
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {err.value}\n"


def test_keys_this_version_does_not_read_are_let_through(run_folder, tmp_path):
    def newer(meta):
        meta["fleetsim_version"] = "9.0.0"
        meta["scenario"]["colour"] = "blue"
        meta["capacity"]["method"] = "new"
        meta["energy"] = {"joules": 1.0}

    folder = edited(run_folder, tmp_path, newer)
    assert SimResult.load(folder).summary() == SimResult.load(run_folder).summary()
