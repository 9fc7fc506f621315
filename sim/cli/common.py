"""Helpers shared by the CLI's command groups."""

from __future__ import annotations

import errno
import json
import math
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sim.errors import FleetsimError
from sim.spec import MAX_SEED

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that every `finally` (the run folder's temporary copy) runs."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM ended work that keeps what it finished (a sweep's or plan's runs): `main` prints the
    message as one line and exits with `code` (130 or 143)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def stopped(err: BaseException, kept: str) -> Stopped:
    """The one line for a study interrupted by `err` (KeyboardInterrupt or Interrupted), saying what was kept."""
    ctrl_c = isinstance(err, KeyboardInterrupt)
    return Stopped(f"{'interrupted' if ctrl_c else 'terminated'}; {kept}", 130 if ctrl_c else 143)


def name_too_long(err: OSError) -> str | None:
    """The one line for a path the system refuses as too long (a part over 255 bytes, or the whole over its limit),
    which any command's first look at a file or folder raises; None for any other OSError."""
    if err.errno != errno.ENAMETOOLONG:
        return None
    name = "a path" if err.filename is None else str(err.filename)
    shown = name if len(name) <= 80 else f"{name[:56]}...{name[-16:]} ({len(name):,} characters)"
    return f"{shown}: a name longer than the system allows (each part of a path at most 255 bytes); use a shorter one"


def user_errors(fn: F) -> F:
    """Turn a FleetsimError (or a path too long for the system) into `error: <one line>` on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FleetsimError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as err:
            line = name_too_long(err)
            if line is None:
                raise
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def int_list(option: str, text: str, maximum: int | None = None) -> list[int]:
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise FleetsimError(f"{option} must be comma-separated integers (got {part.strip()!r})") from None
        if value < 1:
            raise FleetsimError(f"{option} values must be >= 1 (got {value})")
        if maximum is not None and value > maximum:
            raise FleetsimError(f"{option} values must be <= {maximum:,} (got {value:,})")
        values.append(value)
    return values


def positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FleetsimError(f"{option} must be >= 1 (got {value})")


def check_seed(seed: int) -> None:
    """A `--seed`: within a scenario's bound (a `model_copy` does not validate, and a resolved config past it would
    not load again)."""
    if seed < 0:
        raise FleetsimError(f"--seed must be >= 0 (got {seed})")
    if seed > MAX_SEED:
        raise FleetsimError(f"--seed must be <= {MAX_SEED} (got {seed})")


def emit_json(data: Any) -> None:
    """Strict JSON: a non-finite number (which JSON cannot hold) is printed as null."""
    from sim.results.result import json_safe

    typer.echo(json.dumps(json_safe(data), indent=2, allow_nan=False))


PLOT_FORMATS = {".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp"}


ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output file if one is there already.")]


def check_new_file(path: Path | None, option: str, force: bool) -> None:
    """An output file is written over an existing one only when asked (--force): a mistyped name would otherwise
    replace a file fleetsim never wrote."""
    if path is not None and not force and (path.exists() or path.is_symlink()) and not path.is_dir():
        raise FleetsimError(f"{option} {path}: the file exists; pick another name, or pass --force to replace it")


def check_plot_path(path: Path, force: bool) -> None:
    check_new_file(path, "--plot", force)
    if path.is_dir():
        raise FleetsimError(f"--plot {path}: is a folder; give a file name such as run.png")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise FleetsimError(f"--plot {path}: the file name must end in {', '.join(sorted(PLOT_FORMATS))}")
    check_out_file(path, "--plot")


def check_html_name(path: Path | None) -> None:
    """--html writes an HTML page: a name that says another format (run.png) would hold it under a false name."""
    if path is not None and path.suffix.lower() not in (".html", ".htm"):
        raise FleetsimError(f"--html {path}: the file name must end in .html (the page is written as HTML)")


def alias_note(asked: str, resolved: str) -> None:
    """Say once, on stderr, when a GPU name the user gave is the catalog's alias for another."""
    if asked.strip().lower() != resolved.lower():
        typer.echo(f"note: GPU {asked!r} is the catalog's {resolved!r}", err=True)


def check_out_file(path: Path, option: str, *, inputs: Sequence[Path] = ()) -> None:
    """A file an option will write: not a folder, in a folder that exists and can be written, and none of the
    `inputs` the command reads (which it would replace)."""
    from sim.atomic import check_writable

    if any(ord(c) < 32 or ord(c) == 127 for c in path.name):  # (a newline in a name ends up in headers and tables)
        raise FleetsimError(f"{option} {path.name!r}: a file name must not hold control characters (a newline, a tab)")
    check_writable(path, option)
    source = input_at(path, inputs)
    if source is not None:
        raise FleetsimError(f"{option} {path}: is the file read ({source}); write the output to another file")


def input_at(path: Path, inputs: Iterable[str | Path]) -> str | Path | None:
    """The one of `inputs` that is the file at `path` (an output written there would replace it), if any."""
    for source in inputs:
        if path.exists() and Path(source).exists() and path.samefile(source):
            return source
    return None


def write_text_atomically(path: Path, text: str, option: str = "") -> None:
    """Write `text` to `path` through a temporary file beside it: never a half-written file."""
    from sim.atomic import atomic_file

    with atomic_file(path, option) as tmp:
        tmp.write_text(text)


def sig(x: Any, digits: int = 3, *, decimals: int | None = None) -> str:
    """A number for a table: `digits` significant digits (or a fixed number of `decimals`), thousands separated,
    never in e-notation; n/a for a missing or non-finite one."""
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return f"{x:,.{places(x, digits) if decimals is None else decimals}f}"


def places(x: float, digits: int = 3) -> int:
    """Decimals that show `x` to `digits` significant digits (0 for large numbers)."""
    if x == 0 or not math.isfinite(x):
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    keys: int = 1,
    width: int = 100,
    indent: int = 2,
    left: Sequence[int] = (),
) -> list[str]:
    """Rows as aligned text columns (text and the columns in `left` left-aligned, numbers right), two spaces apart,
    under a header and a rule. Wider than `width`, the columns after the first `keys` are split over several
    tables, each repeating the key columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    numeric = [i not in left and bool(rows) and all(_numeric(r[i]) for r in rows) for i in range(len(head))]
    groups: list[list[int]] = []
    base = sum(widths[:keys]) + 2 * keys + indent
    for i in range(keys, len(head)):
        if groups and base + sum(widths[j] + 2 for j in groups[-1]) + widths[i] <= width:
            groups[-1].append(i)
        else:
            groups.append([i])
    out: list[str] = []
    for group in groups or [[]]:
        cols = [*range(keys), *group]

        def line(cells: Sequence[str], cols: list[int] = cols) -> str:
            return (
                " " * indent
                + "  ".join(cells[i].rjust(widths[i]) if numeric[i] else cells[i].ljust(widths[i]) for i in cols).rstrip()
            )

        out += [line(head), " " * indent + "  ".join("-" * widths[i] for i in cols)]
        out += [line(r) for r in rows]
    return out


def _numeric(cell: str) -> bool:
    text = cell.split(" [")[0].replace(",", "").lstrip("$").rstrip("%")
    try:
        float(text)
    except ValueError:
        return cell in ("n/a", "-")
    return True
