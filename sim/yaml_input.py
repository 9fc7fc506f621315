"""Reading a user's YAML file (scenario, GPU catalog, generator spec) defensively: one line naming the
file and the problem for anything that is not a small, well-formed UTF-8 YAML document.

Refused: a missing or unreadable file, a folder, a file over `MAX_BYTES`, bytes that are not UTF-8 (a
gzip or binary file, Latin-1 text), invalid YAML, a key given twice in one mapping (YAML says keys are
unique; PyYAML would silently keep the last), nesting deeper than `MAX_DEPTH`, and a document whose
aliases expand to more than `MAX_NODES` values (an "alias bomb").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from sim.errors import FleetsimError

MAX_BYTES = 1_000_000  # a scenario is a page of text; a megabyte is far beyond any real one
MAX_DEPTH = 50
MAX_NODES = 100_000


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged by the base constructor, explicit keys win
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let the base constructor report it
            break
        if duplicate:
            raise FleetsimError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
# YAML 1.2's numbers, not 1.1's: PyYAML reads `1:30` as 90 (base 60) and `010` as 8 (octal), which no one writing a
# scenario means; here both are strings, which the schema refuses with the field named (YAML 1.2 reads `010` as 10:
# a leading zero is refused rather than guessed). The 1.1 int and float resolvers are replaced by theirs less those
# two forms (0x and 0b stay).
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?0|[-+]?[1-9][0-9_]*)$"), list("-+0123456789")
)
_UniqueKeyLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
# YAML 1.2 reads `1e-5` and `3E4` as numbers; PyYAML's YAML 1.1 rules need a dot and a signed exponent
# (`1.0e-5`) and would hand the scenario the string "1e-5". Accept the 1.2 forms too.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_depth(text: str) -> None:
    """Nesting over `MAX_DEPTH`, found in PyYAML's event stream (an iterative parser) before the recursive composer
    builds anything: 10,000 brackets cost 51 events, not a RecursionError after thousands of frames."""
    depth = 0
    for event in yaml.parse(text, Loader=_UniqueKeyLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise FleetsimError(f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_value(text: str) -> Any:
    """One YAML value (a `--set` VALUE), read with the same rules as a scenario file: at most `MAX_BYTES`, nested
    at most `MAX_DEPTH` levels, `MAX_NODES` values once aliases are expanded (FleetsimError otherwise)."""
    if len(text) > MAX_BYTES:
        raise FleetsimError(f"larger than {MAX_BYTES:,} bytes")
    _check_depth(text)
    value = yaml.load(text, Loader=_UniqueKeyLoader)
    _check_size(value)
    return value


def _check_size(value: Any) -> None:
    """Walk the loaded value (aliases counted each time they are reached), bounded in nodes and depth."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise FleetsimError(f"more than {MAX_NODES:,} values once aliases are expanded")
        if depth > MAX_DEPTH:
            raise FleetsimError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _load(text: str, where: str, many: bool) -> Any:
    try:
        _check_depth(text)
    except FleetsimError as err:
        raise FleetsimError(f"{where}: too large ({err})") from None
    except yaml.YAMLError:
        pass  # invalid YAML: the load below names the line
    try:
        value = list(yaml.load_all(text, Loader=_UniqueKeyLoader)) if many else yaml.load(text, Loader=_UniqueKeyLoader)
    except FleetsimError as err:
        raise FleetsimError(f"{where} {err}") from None
    except yaml.reader.ReaderError as err:  # (a character YAML does not allow: where it is, and which)
        at = text[: max(0, err.position)].count("\n") + 1
        code = ord(err.character) if isinstance(err.character, str) else err.character
        raise FleetsimError(f"{where} line {at}: invalid YAML (character #x{code:04x} is not allowed)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise FleetsimError(f"{where}{line}: invalid YAML ({problem})") from None
    except RecursionError:
        raise FleetsimError(f"{where}: invalid YAML (nested more than the parser can follow)") from None
    try:
        _check_size(value)
    except FleetsimError as err:
        raise FleetsimError(f"{where}: too large ({err})") from None
    return value


def parse_yaml(text: str, *, where: str) -> Any:
    return _load(text, where, many=False)


def parse_yaml_documents(text: str, *, where: str) -> list[Any]:
    """Every document of a multi-document YAML stream (Kubernetes manifests: `---` between them), read with the
    rules of `parse_yaml` (the depth and expanded-size bounds apply to the stream as a whole); empty documents are
    left out."""
    return [doc for doc in _load(text, where, many=True) if doc is not None]


def read_text(path: Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> str:
    """A small UTF-8 text file (a BOM is allowed), or one line saying why not."""
    if path.is_dir():
        raise FleetsimError(f"{path}: is a folder, not a {what}")
    if path.exists() and not path.is_file():  # a device, a pipe or a socket: a read may never end
        raise FleetsimError(f"{path}: not a regular file (a device, pipe or socket); give a {what}")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise FleetsimError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise FleetsimError(f"{path}: larger than {max_bytes:,} bytes; a {what} is a small text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FleetsimError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None


def read_json(path: Path, *, what: str = "JSON file") -> Any:
    """A small UTF-8 JSON file (`read_text`'s rules), or one line naming it and the problem: invalid JSON, a key given
    twice in one object (JSON parsers keep the last silently), nesting too deep for the parser, a number too long."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FleetsimError(f"{path}: key {key!r} is given twice in one object")
            out[key] = value
        return out

    text = read_text(Path(path), what=what)
    try:
        return json.loads(text, object_pairs_hook=unique)
    except FleetsimError:
        raise
    except json.JSONDecodeError as err:
        raise FleetsimError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
        raise FleetsimError(f"{path}: unreadable JSON: nested too deep or a number too long ({str(err)[:80]})") from None


def read_yaml(path: Path, *, what: str = "YAML file") -> Any:
    return parse_yaml(read_text(Path(path), what=what), where=str(path))


def study_kind(raw: dict[str, Any]) -> str | None:
    """What a YAML mapping is: a plan (a base scenario and a search: scale, search, slo targets), a sweep (a base
    scenario), a scenario (a model or a fleet), or None when it shows none of these (its schema then says what
    is missing)."""
    if "base" in raw and "model" not in raw:
        return "plan" if {"scale", "search", "slo", "objective", "confidence", "method"} & set(raw) else "sweep"
    if "model" in raw or "fleet" in raw:
        return "scenario"
    return None


def check_kind(path: Path, raw: Any, *, expected: str) -> None:
    """A sweep or plan file where a scenario is expected, or the reverse, says what it is and which command reads it."""
    if not isinstance(raw, dict):
        return
    kind = study_kind(raw)
    if kind is not None and kind != expected:
        what = {"scenario": "a scenario", "sweep": "a sweep file", "plan": "a plan file"}
        command = "run" if kind == "scenario" else kind
        raise FleetsimError(f"{path}: is {what[kind]}, not {what[expected]}; `fleetsim {command} {path}` reads it")
