"""Sweep and plan folders: who owns one, and refusing to mix another study into it.

A sweep or plan folder carries a marker file (`.fleetsim-sweep`) naming its owner: the kind (sweep or plan), the
study's name, its file (absolute) and the command-line overrides it ran with (`--trace`, a plan's `--set`). A rerun
of the same study resumes in the folder; another study (another file, another kind, other overrides) is refused
with one line unless `--force`, since its results and ranking would replace the owner's. A marker written before
owners were recorded (an empty file) is taken over by the next study to run there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.errors import FleetsimError
from sim.yaml_input import check_kind, study_kind

__all__ = ["check_kind", "study_kind"]  # (they classify a YAML file; `sim.yaml_input` holds them)

MARKER = ".fleetsim-sweep"


def study_owner(kind: str, name: str, source: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """What identifies a study in its folder's marker."""
    return {
        "kind": kind,
        "name": name,
        "file": None if source is None else str(Path(source).resolve()),
        "overrides": list(overrides),
    }


def read_owner(folder: Path) -> dict[str, Any] | None:
    """The owner a folder's marker names; None when it has no marker or an old one that names nobody (empty); a marker
    that is neither is refused, naming it."""
    try:
        text = (folder / MARKER).read_text()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as err:
        raise FleetsimError(f"{folder}: cannot read {MARKER} ({err.strerror})") from None
    if not text.strip():
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        owner = None
    if not _is_owner(owner):
        raise FleetsimError(
            f"{folder / MARKER}: not a marker fleetsim wrote (a JSON object with kind sweep or plan, a name, the study's "
            f"file and its overrides; got {text.strip()[:80]!r}); delete the file to let a study take the folder over"
        )
    return owner  # type: ignore[no-any-return]


def _is_owner(owner: Any) -> bool:
    return (
        isinstance(owner, dict)
        and owner.get("kind") in ("sweep", "plan")
        and isinstance(owner.get("name"), str)
        and (owner.get("file") is None or isinstance(owner.get("file"), str))
        and isinstance(owner.get("overrides", []), list)
        and all(isinstance(x, str) for x in owner.get("overrides", []))
    )


def describe_owner(owner: dict[str, Any]) -> str:
    over = f" with {' '.join(owner['overrides'])}" if owner.get("overrides") else ""
    source = f" ({owner['file']}{over})" if owner.get("file") else over
    return f"{owner['kind']} {owner['name']!r}{source}"


def check_owner(folder: Path, owner: dict[str, Any] | None, *, force: bool = False) -> None:
    """Refuse a folder another study owns (one line naming both), unless `force`."""
    if owner is None or force:
        return
    current = read_owner(folder)
    if current is None or _same(current, owner):
        return
    raise FleetsimError(
        f"--out {folder}: holds the results of {describe_owner(current)}; this is {describe_owner(owner)}: "
        "pick another --out, or pass --force to write into it (its results would be replaced)"
    )


def claim(folder: Path, owner: dict[str, Any] | None) -> None:
    """Create the folder (and its `points/`) and write the marker: the folder now belongs to `owner` (a bare marker
    when the study is not named). A folder the file system refuses ends in one line."""
    try:
        (folder / "points").mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(json.dumps(owner, indent=2) + "\n" if owner is not None else "")
    except OSError as err:
        raise FleetsimError(f"--out {folder}: cannot write there ({err.strerror or err})") from None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("kind", "name", "file", "overrides"))


def check_not_a_study_folder(folder: Path) -> None:
    """A sweep or plan folder given where a run folder is expected: one line saying what it is and which command
    reprints it."""
    if not (folder / MARKER).is_file():
        return
    owner = read_owner(folder)
    if owner is None:
        raise FleetsimError(
            f"{folder}: is a sweep or plan folder ({MARKER}), not a run folder; rerun the `fleetsim sweep` or `fleetsim "
            f"plan` command that wrote it to reprint its tables (it resumes: nothing new is simulated)"
        )
    kind = owner["kind"]
    command = " ".join(
        ["fleetsim", kind, owner.get("file") or f"{kind.upper()}.yaml", *owner.get("overrides", []), "--out", str(folder)]
    )
    tables = "results.parquet and stats.parquet" if kind == "sweep" else "ranking, evaluated, frontier and runs .parquet"
    raise FleetsimError(
        f"{folder}: is the folder of {describe_owner(owner)}, not a run folder; `{command}` reprints its tables "
        f"(it resumes: nothing new is simulated), which are {tables}"
    )
