"""Helpers shared by the CLI's command groups."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer

from sim.errors import FleetsimError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a FleetsimError into `error: <one line>` on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FleetsimError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def int_list(option: str, text: str) -> list[int]:
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise FleetsimError(f"{option} must be comma-separated integers (got {part.strip()!r})") from None
        if value < 1:
            raise FleetsimError(f"{option} values must be >= 1 (got {value})")
        values.append(value)
    return values


def positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FleetsimError(f"{option} must be >= 1 (got {value})")


def emit_json(data: Any) -> None:
    """Strict JSON: a non-finite number (which JSON cannot hold) is printed as null."""
    from sim.result import json_safe

    typer.echo(json.dumps(json_safe(data), indent=2, allow_nan=False))


PLOT_FORMATS = {".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp"}


def check_plot_path(path: Path) -> None:
    if path.is_dir():
        raise FleetsimError(f"--plot {path}: is a folder; give a file name such as run.png")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise FleetsimError(f"--plot {path}: the file name must end in {', '.join(sorted(PLOT_FORMATS))}")
    check_out_file(path, "--plot")


def alias_note(asked: str, resolved: str) -> None:
    """Say once, on stderr, when a GPU name the user gave is the catalog's alias for another."""
    if asked.strip().lower() != resolved.lower():
        typer.echo(f"note: GPU {asked!r} is the catalog's {resolved!r}", err=True)


def check_out_file(path: Path, option: str) -> None:
    """A file an option will write: not a folder, in a folder that exists and can be written."""
    from sim.atomic import check_writable

    check_writable(path, option)


def write_text_atomically(path: Path, text: str, option: str = "") -> None:
    """Write `text` to `path` through a temporary file beside it: never a half-written file."""
    from sim.atomic import atomic_file

    with atomic_file(path, option) as tmp:
        tmp.write_text(text)
