"""Requests from OpenTelemetry spans: an OTLP/JSON export (the Collector's `file` exporter writes one
`ExportTraceServiceRequest` object per line; a single object is read too) of LLM calls, as the GenAI semantic
conventions describe them (opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/):
  arrival         the span's `startTimeUnixNano` (from the first span's, in seconds)
  prompt tokens   `gen_ai.usage.input_tokens` (earlier conventions and vLLM's own spans: `gen_ai.usage.prompt_tokens`)
  output tokens   `gen_ai.usage.output_tokens` (`gen_ai.usage.completion_tokens`)
  model           `gen_ai.request.model` (or `gen_ai.response.model`): with several, name the one to keep, or "*" to
                  keep them all in a `model` column (a platform's deployments)
Spans without both token counts (HTTP, database, tool spans) are not requests. A request seen by two
instrumented layers (a client span and the server's, in one trace, with the same token counts, one inside the
other) counts once, at the outer span's start. Every problem is one line naming the file, the line and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import FleetsimError, _short
from sim.spec import MAX_TOKENS
from sim.workload.schema import validate_frame

INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model")
ALL_MODELS = "*"  # the `model` setting that keeps every model's spans, named in a `model` column
MAX_SPANS = 10_000_000
MAX_NS = 2**63 - 1024  # the largest float64 below 2**63: a span's instant, int64 nanoseconds since 1970 (year 2262)


def _value(v: Any) -> Any:
    """An OTLP AnyValue: {"intValue": "12"} (int64 as a string in OTLP/JSON), {"stringValue": ...}, {"doubleValue": ...}."""
    if not isinstance(v, dict):
        return None
    for key in ("intValue", "doubleValue", "stringValue", "boolValue"):
        if key in v:
            return v[key]
    return None


def _count(
    raw: Any, where: str, *, unit: str = "tokens", limit: float = MAX_TOKENS, said: str = f"at most {MAX_TOKENS:,}"
) -> int:
    """A whole number within 0..`limit` (tokens; a span's instant in nanoseconds since 1970: below 2**63, int64)."""
    try:
        x = float(raw)
    except (TypeError, ValueError):
        raise FleetsimError(f"{where}: must be a whole number of {unit} (got {_short(raw)})") from None
    if not x.is_integer() or x < 0:
        raise FleetsimError(f"{where}: must be a whole number of {unit} >= 0 (got {_short(raw)})")
    if x > limit:  # (past int64 the arrays that order the spans overflow)
        raise FleetsimError(f"{where}: must be {said} {unit} (got {_short(raw)})")
    return int(x)


def read_otel(path: Path, *, model: str | None = None) -> pd.DataFrame:
    """The canonical trace (arrival_at_s, prompt_tokens, output_tokens) of the LLM spans in an OTLP/JSON export."""
    try:
        return _read_otel(path, model=model)
    except (AttributeError, TypeError, KeyError, IndexError) as err:  # a part of another shape than OTLP's
        raise FleetsimError(f"{path}: not the OTLP/JSON shape ({type(err).__name__}: {err})") from None


def _read_otel(path: Path, *, model: str | None) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    try:
        if stripped.startswith("{") and "\n{" not in stripped.rstrip():
            objects = [(1, json.loads(stripped))]
        else:
            objects = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    except json.JSONDecodeError as err:
        raise FleetsimError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
        raise FleetsimError(f"{path}: unreadable JSON: nested too deep or a number too long ({str(err)[:80]})") from None
    spans: list[tuple[str, int, int, int, int, str | None]] = []  # trace id, start ns, end ns, in, out, model
    for line, obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("resourceSpans"), list):
            raise FleetsimError(f"{path} line {line}: not an OTLP/JSON trace export (no resourceSpans list)")
        for r, res in enumerate(obj["resourceSpans"]):
            scopes = (res or {}).get("scopeSpans") or (res or {}).get("instrumentationLibrarySpans") or []
            for s, scope in enumerate(scopes):
                for k, span in enumerate((scope or {}).get("spans") or []):
                    where = f"{path} line {line} resourceSpans[{r}].scopeSpans[{s}].spans[{k}]"
                    attrs = {a.get("key"): _value(a.get("value")) for a in span.get("attributes") or [] if isinstance(a, dict)}
                    tin = next((attrs[key] for key in INPUT_KEYS if attrs.get(key) is not None), None)
                    tout = next((attrs[key] for key in OUTPUT_KEYS if attrs.get(key) is not None), None)
                    if tin is None or tout is None:
                        continue
                    if len(spans) >= MAX_SPANS:
                        raise FleetsimError(f"{path}: more than {MAX_SPANS:,} LLM spans; split the export")
                    start = _count(
                        span.get("startTimeUnixNano"), f"{where}.startTimeUnixNano", unit="ns", limit=MAX_NS, said="below 2**63"
                    )
                    end = _count(
                        span.get("endTimeUnixNano", start),
                        f"{where}.endTimeUnixNano",
                        unit="ns",
                        limit=MAX_NS,
                        said="below 2**63",
                    )
                    name = next((str(attrs[key]) for key in MODEL_KEYS if attrs.get(key)), None)
                    spans.append(
                        (
                            str(span.get("traceId", "")),
                            start,
                            end,
                            _count(tin, f"{where} {INPUT_KEYS[0]}"),
                            _count(tout, f"{where} {OUTPUT_KEYS[0]}"),
                            name,
                        )
                    )
    if not spans:
        raise FleetsimError(
            f"{path}: no LLM span (a span with {INPUT_KEYS[0]} and {OUTPUT_KEYS[0]} attributes, GenAI semantic conventions)"
        )
    models = sorted({m for *_, m in spans if m is not None})
    every = model == ALL_MODELS
    if every and any(sp[5] is None for sp in spans):
        raise FleetsimError(f"{path}: model {ALL_MODELS!r} keeps every model's spans by name, but some LLM spans name no model")
    if model is not None and not every:
        spans = [sp for sp in spans if sp[5] == model]
        if not spans:
            raise FleetsimError(f"{path}: no LLM span for model {model!r}; the spans name {', '.join(models) or 'no model'}")
    elif len(models) > 1 and not every:
        raise FleetsimError(
            f"{path}: LLM spans for {len(models)} models ({', '.join(models)}); pick one (--model), or keep them all with "
            f"model {ALL_MODELS!r} (a `model` column, for a platform's deployments)"
        )
    keep = _outermost(spans)
    order = np.argsort(np.array([sp[1] for sp in keep], dtype=np.int64), kind="stable")
    a = np.array([(sp[1], sp[3], sp[4]) for sp in keep], dtype=np.int64)[order]
    frame = pd.DataFrame({"arrival_at_s": (a[:, 0] - a[0, 0]) / 1e9, "prompt_tokens": a[:, 1], "output_tokens": a[:, 2]})
    if every:
        frame["model"] = [keep[i][5] for i in order]
    return validate_frame(frame, source=str(path))


def _outermost(spans: list[tuple[str, int, int, int, int, str | None]]) -> list[tuple[str, int, int, int, int, str | None]]:
    """One span per request: within a trace, a span inside another with the same token counts is the same call."""
    by_key: dict[tuple[str, int, int], list[tuple[str, int, int, int, int, str | None]]] = {}
    for sp in spans:
        by_key.setdefault((sp[0], sp[3], sp[4]), []).append(sp)
    keep = []
    for (trace, _, _), group in by_key.items():
        if not trace or len(group) == 1:
            keep.extend(group)
            continue
        group.sort(key=lambda sp: (sp[1], -sp[2]))
        outer: list[tuple[str, int, int, int, int, str | None]] = []
        for sp in group:
            if any(o[1] <= sp[1] and sp[2] <= o[2] for o in outer):
                continue
            outer.append(sp)
        keep.extend(outer)
    return keep
