"""Write a run folder: summary.json, requests.parquet, timeline.parquet, replicas.parquet,
config.resolved.yaml.

Written into a temporary sibling folder and renamed into place at the end, so an interrupted or
failed run never leaves a folder that looks complete. An existing folder is replaced only once the
new one is whole.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sim.errors import FleetsimError
from sim.result import SimResult


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def write_run(result: SimResult, out_dir: Path, *, summary: dict[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FleetsimError(f"{out_dir}: cannot create folder {parent} ({err.strerror})") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise FleetsimError(f"{out_dir}: exists and is not a folder")
    summary = dict(summary if summary is not None else result.summary())
    summary["resolved"] = result.resolved()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        (tmp / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
        result.requests.to_parquet(tmp / "requests.parquet", index=False)
        result.timeline.to_parquet(tmp / "timeline.parquet", index=False)
        result.replicas_frame().to_parquet(tmp / "replicas.parquet", index=False)
        (tmp / "config.resolved.yaml").write_text(
            "# The scenario as run: defaults filled in, file paths absolute; `fleetsim run` accepts it as is.\n"
            + yaml.safe_dump(result.scenario_as_run(), sort_keys=False)
        )
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
