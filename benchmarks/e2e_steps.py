"""A real run's decode step against its price, by the number of requests running.

For a run folder whose `vllm_bench_result.json.gz` holds the client's per-token gaps (`itls`) beside `requests.jsonl`
(the llm-k8s runs in benchmarks/e2e/): every token after a request's first is stamped with the number of requests
running then (those between their first and last token) and the mean context of those requests (prompt plus the share
of their output emitted, linearly); tokens are grouped by that number, and each group's median gap is the measured
step. Its price is the roofline's decode step at that batch and mean context on the run's own setup (its meta.json, as
`fleetsim validate` replays it: the host loop of a synchronous vLLM included; a pipeline's engines each take an equal
share of the running requests). A measured step that follows the price and then jumps away from it at some batch is a
kernel's change, one that grows with every request a cost per request.

    python benchmarks/e2e_steps.py benchmarks/e2e/a100-40gb-llama-3.3-70b-tp8-qps16 [...]
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from sim.errors import FleetsimError
from sim.physics.roofline import decode_cost
from sim.scenario.resolve import resolve_scenario
from sim.studies.validate import replay_scenario
from sim.workload.runlog import read_run_log

BINS = (1, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 256, 512, 1024)
MIN_TOKENS = 50  # a group with fewer tokens is not printed


def _rows(folder: Path) -> tuple[list[dict], list]:
    """requests.jsonl's rows and the bench JSON's per-request gaps, each row's fields and request id checked (an id
    indexes the gaps: the bench JSON's order)."""
    bench = folder / "vllm_bench_result.json.gz"
    if not bench.exists():
        raise FleetsimError(f"{bench}: not found (this script reads a `vllm bench serve --save-result` JSON's per-token gaps)")
    path = folder / "requests.jsonl"
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        r = json.loads(line)
        if not isinstance(r, dict):
            raise FleetsimError(f"{path}: line {i}: a request must be a JSON object")
        for key in ("request_id", "input_toks", "output_toks", "first_token_ts", "last_token_ts"):
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0:
                raise FleetsimError(f"{path}: line {i}: {key} must be a number >= 0 (got {v!r})")
        rows.append(r)
    if not rows:
        raise FleetsimError(f"{path}: no requests")
    data = json.loads(gzip.decompress(bench.read_bytes()))
    itls = data.get("itls") if isinstance(data, dict) else None
    if not isinstance(itls, list):
        raise FleetsimError(f"{bench}: no per-request 'itls' list")
    seen = set()
    for i, r in enumerate(rows, start=1):
        rid = r["request_id"]
        if not float(rid).is_integer() or not 0 <= rid < len(itls) or rid in seen:
            raise FleetsimError(
                f"{path}: line {i}: request_id must be a distinct whole number below the bench JSON's {len(itls)} "
                f"requests (got {rid!r})"
            )
        seen.add(rid)
        if not isinstance(itls[int(rid)], list):
            raise FleetsimError(f"{bench}: itls[{int(rid)}] must be a list of gaps")
    return rows, itls


def steps(folder: Path) -> list[tuple[float, float, float, int]]:
    """(mean running, mean context a request, median gap s, tokens) per group of tokens by the number running."""
    rows, itls = _rows(folder)
    first = np.array([r["first_token_ts"] for r in rows], dtype=np.float64)
    last = np.array([r["last_token_ts"] for r in rows], dtype=np.float64)
    prompt = np.array([r["input_toks"] for r in rows], dtype=np.float64)
    output = np.array([r["output_toks"] for r in rows], dtype=np.float64)
    times, gaps = [], []
    for r in rows:  # (requests.jsonl keeps the bench JSON's request ids: its order)
        g = np.asarray(itls[int(r["request_id"])], dtype=np.float64)
        times.append(r["first_token_ts"] + np.cumsum(g))
        gaps.append(g)
    if not sum(len(g) for g in gaps):
        return []
    t, gap = np.concatenate(times), np.concatenate(gaps)
    running = (first[None, :] <= t[:, None]) & (last[None, :] >= t[:, None])
    share = np.clip((t[:, None] - first[None, :]) / np.maximum(last - first, 1e-9)[None, :], 0.0, 1.0)
    n = running.sum(axis=1)
    context = ((prompt[None, :] + share * output[None, :]) * running).sum(axis=1) / np.maximum(n, 1)
    out = []
    for lo, hi in itertools.pairwise(BINS):
        m = (n >= lo) & (n < hi)
        if m.sum() >= MIN_TOKENS:
            out.append((float(n[m].mean()), float(context[m].mean()), float(np.median(gap[m])), int(m.sum())))
    return out


def main() -> None:
    folders = [Path(p) for p in sys.argv[1:]]
    if not folders:
        sys.exit("usage: python benchmarks/e2e_steps.py RUN_FOLDER [...] (folders with vllm_bench_result.json.gz)")
    failed = False
    for folder in folders:
        try:  # (everything read and checked before a line of the folder's table is printed)
            sc, _ = replay_scenario(read_run_log(folder), None)
            setup = resolve_scenario(sc)
            table = steps(folder)
        except FleetsimError as err:  # (it names its file)
            print(f"error: {err}".replace("\n", " "), file=sys.stderr)
            failed = True
            continue
        except (OSError, ValueError, TypeError, KeyError, EOFError) as err:
            print(f"error: {folder}: {err}".replace("\n", " "), file=sys.stderr)
            failed = True
            continue
        pp = sc.fleet.pp
        print(f"{folder.name}: {setup.model.name} on {setup.tp}x {setup.gpu.name}" + (f" x {pp} stages" if pp > 1 else ""))
        print(f"  {'running':>8} {'context':>8} {'tokens':>7} {'measured ms':>12} {'priced ms':>10} {'diff ms':>8}")
        for running, context, measured, tokens in table:
            batch = max(1, round(running / pp))  # (a pipeline's engines share the running requests)
            priced = decode_cost(setup, batch=batch, context_tokens=round(context)).time_s
            print(
                f"  {running:8.1f} {context:8.0f} {tokens:7d} {measured * 1e3:12.2f} {priced * 1e3:10.2f} "
                f"{(measured - priced) * 1e3:+8.2f}"
            )
    if failed:
        sys.exit(2)


if __name__ == "__main__":
    main()
