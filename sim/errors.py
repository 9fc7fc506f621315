"""Errors a user can cause and fix: bad config, bad trace, unknown names, impossible setups.

Every message names where (file, path or field), the rule and the offending value, on one
line. The CLI prints it and exits with status 2; anything else escaping is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError


class FleetsimError(ValueError):
    """A problem with the user's input, explained in one line."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> FleetsimError:
    names = ", ".join(sorted(valid))
    return FleetsimError(f"unknown {kind} {name!r}; valid names: {names}")


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation_error(err: ValidationError, *, where: str = "", prefix: str = "") -> FleetsimError:
    """Turn pydantic's multi-line report into one line per the house rule (first error first)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = _loc(tuple(e["loc"]))
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        value: Any = e.get("input")
        shown = "" if e["type"] == "missing" else f" (got {_short(value)})"
        parts.append(f"{loc or '<top>'}: {msg}{shown}")
    head = f"{where}: " if where else ""
    more = f" (+{len(parts) - 1} more)" if len(parts) > 1 else ""
    return FleetsimError(f"{head}{parts[0]}{more}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
