"""`fleetsim import` (manifests and vLLM command lines into a scenario) and `fleetsim export` (a scenario into
manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sim.cli.common import ForceOpt, check_new_file, check_out_file
from sim.errors import FleetsimError


def import_(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Kubernetes manifests (YAML, multi-document) or folders of them, a vLLM --config YAML, or a file holding a vllm serve command line (.sh, .txt).",
            metavar="FILE...",
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Write the scenario here (default: print it).")] = None,
    model: Annotated[
        str | None, typer.Option(help="The model (a catalog name or config.json), if the files name none fleetsim knows.")
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="The GPU (catalog name), if no node selector says.")] = None,
    trace: Annotated[str | None, typer.Option(help="A trace file for the scenario's trace key.")] = None,
    force: ForceOpt = False,
) -> None:
    """Write a scenario from what the cluster runs: every value commented with its source, what was not mapped listed."""
    from sim.atomic import atomic_file
    from sim.scenario.config import parse_config
    from sim.scenario.importer import import_files, render, scenario_values, source_files
    from sim.yaml_input import parse_yaml

    if out is not None:
        check_out_file(out, "--out", inputs=[f for s in sources if s.exists() for f in source_files(s)])
        check_new_file(out, "--out", force)
    if gpu is not None:
        from sim.physics.hardware import load_gpu_catalog

        gpu = load_gpu_catalog().get(gpu).name
    imp = import_files(sources)
    values = scenario_values(imp, model=model, gpu=gpu)
    text = render(imp, values, [str(s) for s in sources], trace=trace)
    raw = parse_yaml(text, where="the imported scenario")
    try:
        imported = parse_config(raw, where="the imported scenario")
    except FleetsimError as err:  # name the manifest field the refused value came from, not the generated scenario
        raise FleetsimError(_from_manifest(str(err), imp.sources, sources)) from None
    _resolvable(imported, f"the scenario imported from {', '.join(map(str, sources))}")
    if out is None:
        typer.echo(text, nl=False)
        return
    with atomic_file(out, "--out") as tmp:
        tmp.write_text(text)
    typer.echo(
        f"wrote {out}: {len(imp.sources)} values from {len(sources)} source(s), {len(imp.notes)} not mapped (listed in it)"
    )


def _from_manifest(message: str, sources: dict[str, str], files: list[Path]) -> str:
    """A refusal of the imported scenario (`the imported scenario: KEY: problem`) told against the source of KEY
    (`Imported.sources`: the file, document and field it was read from), else against the files given."""
    rest = message.removeprefix("the imported scenario: ")
    for key in sorted(sources, key=len, reverse=True):
        if rest.startswith(f"{key}:") or rest.startswith(f"{key}."):
            return f"{sources[key]}: {rest}"
    return f"the scenario imported from {', '.join(map(str, files))}: {rest}"


def export(
    scenario: Annotated[Path, typer.Argument(help="The scenario to export.")],
    out: Annotated[Path | None, typer.Option(help="Write the manifests here (default: print them).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a scenario key first: PATH=VALUE (a plan's pick).")
    ] = None,
    name: Annotated[str, typer.Option(help="The Deployment's (and autoscaler's) name.")] = "llm",
    force: ForceOpt = False,
) -> None:
    """Write the Deployment (or Knative Service) and autoscaler manifests that run the scenario's fleet."""
    import re

    from sim.atomic import atomic_file
    from sim.scenario.config import load_config
    from sim.scenario.exporter import export_manifests, render_manifests

    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,51}[a-z0-9])?", name):
        raise FleetsimError(
            f"--name {name!r}: a Kubernetes name here is lower-case letters, digits and '-', starting with a letter, at most 53 characters"
        )
    if out is not None:
        check_out_file(out, "--out", inputs=[scenario])
        check_new_file(out, "--out", force)
    sc = load_config(scenario, set_ or [])
    if sc.deployments:
        raise FleetsimError(
            f"{scenario}: a platform of {len(sc.deployments)} deployments; export writes one fleet's manifests "
            "(export a scenario per deployment)"
        )
    source = f"{scenario}{' (with --set)' if set_ else ''}"
    _resolvable(sc, source)
    try:
        docs, notes = export_manifests(sc, name=name)
    except FleetsimError as err:  # (the field named, and the file it came from)
        raise FleetsimError(f"{source}: {err}") from None
    text = render_manifests(docs, notes, str(scenario))
    if out is None:
        typer.echo(text, nl=False)
        return
    with atomic_file(out, "--out") as tmp:
        tmp.write_text(text)
    typer.echo(f"wrote {out}: {', '.join(d['kind'] for d in docs)}")


def _resolvable(sc: Any, where: str) -> None:
    """The scenario's model on its GPU at its TP, as `fleetsim run` resolves it (a TP that does not divide the heads, a
    model that does not fit, an unknown model or GPU), before anything is written."""
    from sim.scenario.resolve import resolve_scenario

    try:
        resolve_scenario(sc)
    except FleetsimError as err:
        raise FleetsimError(f"{where}: {err}") from None
