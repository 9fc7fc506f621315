"""The compiled build against the pure-Python modules: each benchmark below run in child processes, alternately on the
pure-Python modules (FLEETSIM_PURE_PYTHON=1) and on the compiled ones, --rounds times each; prints each mode's
simulated requests per CPU second (best and median of the rounds, each round the benchmark's own best of its runs) and
the ratio of the bests. Needs a current build (`fleetsim compile`).
    python benchmarks/compiled_speed.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from sim import compiled

HERE = Path(__file__).resolve().parent

BENCHMARKS = {  # name: the benchmark's command line (its first "N per CPU-s" figure is the one compared)
    "fleet_speed (16-replica HPA fleet, Azure conversation hour)": ["fleet_speed.py", "--runs", "3"],
    "fleet_speed --fixed 8": ["fleet_speed.py", "--runs", "3", "--fixed", "8"],
    "dense_speed (AISimulate's shape: Llama-3.1-8B on 4x B200)": ["dense_speed.py"],
    "spec_speed (speculative decoding, fast-forward)": ["spec_speed.py"],
    "moe_speed (Qwen3-30B-A3B, DP 2 + EP)": ["moe_speed.py"],
}
FIGURE = {  # (the benchmarks that time several modes: the line of the one compared)
    "spec_speed.py": r"speculative, fast-forward:.*?([\d,]+) per CPU-s",
    "moe_speed.py": r"MoE DP2\+EP.*?\n\s*([\d,]+) per CPU-s",
}


def figure(args: list[str], *, pure: bool) -> float:
    env = {**os.environ, "FLEETSIM_PURE_PYTHON": "1" if pure else "0"}
    out = subprocess.run(
        [sys.executable, str(HERE / args[0]), *args[1:]], env=env, capture_output=True, text=True, check=True
    ).stdout
    match = re.search(FIGURE.get(args[0], r"([\d,]+) per CPU-s"), out, flags=re.S)
    if match is None:
        raise SystemExit(f"no 'per CPU-s' figure in the output of {' '.join(args)}:\n{out}")
    return float(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=None, help="run only the benchmarks whose name contains this")
    args = parser.parse_args()
    ok, why = compiled.status()
    if not ok:
        raise SystemExit(f"the compiled modules would not run ({why}); build them with `fleetsim compile`")
    print("| benchmark | pure Python: best / median req per CPU-s | compiled: best / median | compiled / pure (best) |")
    print("|---|---|---|---|")
    for name, cmd in BENCHMARKS.items():
        if args.only and args.only not in name:
            continue
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for pure in (True, False):
                runs[pure].append(figure(cmd, pure=pure))
        p, c = runs[True], runs[False]
        print(
            f"| {name} | {max(p):,.0f} / {statistics.median(p):,.0f} | {max(c):,.0f} / {statistics.median(c):,.0f} |"
            f" {max(c) / max(p):.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
