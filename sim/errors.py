"""Errors a user can cause and fix: bad config, bad trace, unknown names, impossible setups.

Every message names where (file, path or field), the rule and the offending value, on one
line. The CLI prints it and exits with status 2; anything else escaping is a bug.
"""

from __future__ import annotations

import reprlib
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


def _user_loc(loc: Sequence[int | str], data: Any) -> tuple[list[int | str], tuple[int | str, ...]]:
    """The error's path as the user wrote it, and the union tags it went through: pydantic adds the
    name of the union member or the discriminator value it tried (`trace.TraceFile.smaple`,
    `fleet.autoscaler.hpa.target`); parts that are not keys or indices of the input at that point are
    such tags and are dropped; a key missing from a mapping is kept as the last part."""
    out: list[int | str] = []
    tags: list[int | str] = []
    node: Any = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (mypy narrows the branches apart)
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and i == len(loc) - 1 and not (isinstance(part, str) and ("[" in part or "(" in part)):
            out.append(part)  # a missing key (not a union member's tag such as "function-after[...]")
        else:
            tags.append(part)
    return out, tuple(tags)


# Which of several errors to show: a key nobody knows (a typo) first, then a missing key, then a
# value out of range; a type mismatch last (it says what the input is not, rarely what is wrong).
def _rank(e: Any) -> int:
    kind = e["type"]
    if kind == "extra_forbidden":
        return 0
    if kind == "missing":
        return 1
    if _is_type_error(e):
        return 3
    return 2


def _is_type_error(e: Any) -> bool:
    kind = e["type"]
    return bool(kind.endswith("_type") or kind.endswith("_parsing") or kind in ("union_tag_invalid", "literal_error"))


def from_validation_error(err: ValidationError, *, where: str = "", prefix: str = "", data: Any = None) -> FleetsimError:
    """Turn pydantic's multi-line report into one line per the house rule: the most telling error, its
    path as written in the input `data` if given, the rule and the value. With a union, the member the
    input came closest to is the one explained: the fewest errors, type mismatches aside."""
    errors = err.errors(include_url=False)
    located = [_user_loc(tuple(e["loc"]), data) if data is not None else (list(e["loc"]), ()) for e in errors]
    branches: dict[tuple[int | str, ...], list[int]] = {}
    for k, (_, tags) in enumerate(located):
        branches.setdefault(tags, []).append(k)

    def closeness(members: list[int]) -> tuple[bool, int]:
        return all(_is_type_error(errors[k]) for k in members), len(members)

    best_branch = min(branches.values(), key=lambda m: (closeness(m), m[0]))
    best = min(best_branch, key=lambda k: (_rank(errors[k]), -len(errors[k]["loc"]), k))
    e = errors[best]
    loc = _loc(located[best][0])
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] in ("union_tag_not_found", "union_tag_invalid"):  # a tagged union: say which tags it takes
        ctx = e.get("ctx", {})
        tag = str(ctx.get("discriminator", "")).strip("'")
        if e["type"] == "union_tag_not_found":
            msg = f"needs a {tag!r} key (the kind of block it is)"
        else:
            msg = f"{tag} must be one of {ctx.get('expected_tags')}"
            e = {**e, "input": ctx.get("tag")}
    value: Any = e.get("input")
    # (a model validator's message names the values it compared, "(got 5 > 2)": the block's whole dict after it says
    # nothing more)
    shown = "" if e["type"] == "missing" or (e["type"] == "value_error" and "(got " in msg) else f" (got {_short(value)})"
    head = f"{where}: " if where else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return FleetsimError(f"{head}{loc or '<top>'}: {msg}{shown}{more}")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 40, 40


def _short(value: Any) -> str:
    """A bounded rendering of any value (an alias bomb or a huge string costs nothing to print)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
