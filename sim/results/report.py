"""Write a run folder: the records (requests, replicas, timeline, itl as Parquet; meta.json), the
summary (summary.json) and the scenario as run (config.resolved.yaml). `SimResult.load` reads it back.

Written into a temporary sibling folder and renamed into place at the end, so an interrupted or
failed run never leaves a folder that looks complete. A run folder carries a marker file
(`.fleetsim-run`); an existing folder is replaced only if it is empty or an earlier run folder (or
with `force`), and only once the new one is whole. The working folder, its parents, the home folder
and its parents are never replaced, `force` or not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.errors import FleetsimError
from sim.results.platform import DEPLOYMENTS_DIR, PLATFORM_FILE, PlatformResult
from sim.results.result import SimResult, json_safe

RUN_MARKER = ".fleetsim-run"
RUN_FILES = (
    "summary.json",
    "requests.parquet",
    "timeline.parquet",
    "replicas.parquet",
    "itl.parquet",
    "meta.json",
    "config.resolved.yaml",
)


def summary_with_resolved(result: SimResult, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """What summary.json holds: the summary and what the scenario resolved to."""
    out = dict(summary if summary is not None else result.summary())
    out["resolved"] = result.meta["resolved"]
    return out


def write_chunks(chunks: Iterable[pd.DataFrame], path: Path) -> None:
    """One Parquet file from frames of one schema, a row group each (memory bounded by one chunk)."""
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in chunks:
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


CHUNK_ROWS = 1 << 18  # rows per Parquet row group of the large tables: bounds the memory a write takes


def _row_chunks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for lo in range(0, max(len(frame), 1), CHUNK_ROWS):
        yield frame.iloc[lo : lo + CHUNK_ROWS]


FLEETSIM_ENTRIES = frozenset({*RUN_FILES, RUN_MARKER, PLATFORM_FILE, DEPLOYMENTS_DIR})  # what a run folder holds


def check_out_dir(out_dir: Path, *, force: bool = False, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse, before anything is simulated, a run folder that would destroy data or cannot be written: a folder that
    is not a run folder, or a run folder holding files a run does not write (replacing it would delete them), unless
    `force`; a folder holding one of the `inputs` the run reads, always (it would be gone once the run is written)."""
    resolved = Path(out_dir).resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    protected = {cwd, home, *cwd.parents, *home.parents}
    if resolved in protected:
        what = (
            "the working folder"
            if resolved == cwd
            else "the home folder"
            if resolved == home
            else "a parent of the working or home folder"
        )
        raise FleetsimError(f"--out {out_dir}: is {what}; a run needs a folder of its own, e.g. runs/NAME")
    for source in inputs:
        where = Path(source).resolve()
        if where == resolved or resolved in where.parents:
            raise FleetsimError(
                f"--out {out_dir}: holds {source}, which this run reads, and a run replaces its folder whole; write the "
                "run to another folder"
            )
    if resolved.exists():
        if not resolved.is_dir():
            raise FleetsimError(f"--out {out_dir}: exists and is not a folder")
        try:
            names = {p.name for p in resolved.iterdir()}
        except OSError as err:
            raise FleetsimError(f"--out {out_dir}: cannot read the folder ({err.strerror})") from None
        run_folder = _is_run_folder(resolved, names)
        if names and not run_folder and not force:
            raise FleetsimError(
                f"--out {out_dir}: the folder holds files and is not a fleetsim run folder (no {RUN_MARKER}); "
                "pick another folder, or pass --force to replace it"
            )
        foreign = sorted(names - FLEETSIM_ENTRIES)
        if foreign and not force:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise FleetsimError(
                f"--out {out_dir}: a fleetsim run folder, but it also holds {foreign[0]!r}{more}, which a run does not "
                "write and replacing the folder would delete; move it out, pick another folder, or pass --force"
            )
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FleetsimError(f"--out {out_dir}: cannot write in {existing}")


# what a run folder's marker says (then the fleetsim version): a marker that does not begin so, fleetsim did not write
RUN_MARKER_TEXT = "A fleetsim run folder: `fleetsim run --out` may replace it."
PLATFORM_MARKER_TEXT = "A fleetsim platform run folder: `fleetsim run --out` may replace it."


def _is_run_folder(folder: Path, names: set[str]) -> bool:
    """A folder a run wrote: its marker says so (as fleetsim writes it: a file named so holding anything else is not
    one), or, without one (written before the marker was), it holds nothing but run files, among them a meta.json
    that names the fleetsim version which wrote it (a user's own files of those names are not a run)."""
    if RUN_MARKER in names:
        try:
            return (
                (folder / RUN_MARKER)
                .read_text(encoding="utf-8", errors="replace")
                .startswith((RUN_MARKER_TEXT, PLATFORM_MARKER_TEXT))
            )
        except OSError:  # (a folder of that name, an unreadable file)
            return False
    if not names <= set(RUN_FILES) or "meta.json" not in names:
        return False
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("fleetsim_version"), str)


def _write_files(result: SimResult, folder: Path, summary: dict[str, Any] | None, start: float, *, records: bool = True) -> None:
    """A run's files into `folder` (the marker, the records, the summary, the scenario as run, meta.json last).
    `records` False: requests.parquet and itl.parquet are there already (a stored run writes them as it goes)."""
    full = summary_with_resolved(result, summary)
    (folder / RUN_MARKER).write_text(f"{RUN_MARKER_TEXT} {result.meta['fleetsim_version']}\n")
    (folder / "summary.json").write_text(json.dumps(json_safe(full), indent=2) + "\n")
    if records:
        write_chunks(_row_chunks(result.requests), folder / "requests.parquet")
        write_chunks(result.itl.frame_chunks(CHUNK_ROWS), folder / "itl.parquet")
    result.timeline.to_parquet(folder / "timeline.parquet", index=False)
    result.replicas.to_parquet(folder / "replicas.parquet", index=False)
    (folder / "config.resolved.yaml").write_text(
        "# The scenario as run: defaults filled in, file paths absolute; `fleetsim run` accepts it as is.\n"
        + yaml.safe_dump(result.scenario, sort_keys=False)
    )
    result.meta["wall_s"]["write"] = time.perf_counter() - start
    (folder / "meta.json").write_text(json.dumps(json_safe(result.meta), indent=2) + "\n")  # last: the write time


def write_run(result: SimResult, out_dir: Path, *, summary: dict[str, Any] | None = None, force: bool = False) -> Path:
    start = time.perf_counter()
    return write_atomically(out_dir, lambda tmp: _write_files(result, tmp, summary, start), force=force)


def write_platform(result: PlatformResult, out_dir: Path, *, summary: dict[str, Any] | None = None, force: bool = False) -> Path:
    """A platform's run folder: its summary and platform.json, and each deployment's run folder under deployments/."""
    start = time.perf_counter()
    summary = summary if summary is not None else result.summary()

    def write(tmp: Path) -> None:
        version = next(iter(result.deployments.values())).meta["fleetsim_version"]
        (tmp / RUN_MARKER).write_text(f"{PLATFORM_MARKER_TEXT} {version}\n")
        for name, run in result.deployments.items():
            folder = tmp / DEPLOYMENTS_DIR / name
            folder.mkdir(parents=True)
            _write_files(run, folder, summary["deployments"][name], start)
        (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        result.meta["wall_s"]["write"] = time.perf_counter() - start
        (tmp / PLATFORM_FILE).write_text(json.dumps(json_safe(result.meta), indent=2) + "\n")  # last

    return write_atomically(out_dir, write, force=force)


def write_atomically(out_dir: Path, write: Callable[[Path], None], *, force: bool) -> Path:
    """`write(tmp)` fills a temporary sibling folder, renamed into place once whole (see the module docstring)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force=force)
    given = out_dir
    if out_dir.is_symlink():  # (written through: the folder it names is replaced, the link kept; renaming the link
        out_dir = out_dir.resolve()  # itself would leave it beside the new folder as .NAME.old)
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FleetsimError(f"{out_dir}: cannot create folder {parent} ({err.strerror})") from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=parent))
    except OSError as err:
        raise FleetsimError(f"{out_dir}: cannot write there ({err.strerror or err})") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        write(tmp)
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except OSError:
                os.replace(old, out_dir)  # (the earlier run folder back in place)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OSError as err:  # a full disk, a quota, a folder gone read-only: one line, the partial folder removed
        raise FleetsimError(f"--out {given}: cannot write the run folder ({err.strerror or err}); nothing written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return given
