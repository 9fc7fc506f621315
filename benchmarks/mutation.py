"""Mutation testing of the simulation core (sim/run/engine, sim/run/fleet, sim/results/cost.py, sim/results/metrics.py) with
mutmut, configured in pyproject.toml ([tool.mutmut]: the fast test tiers, covered lines only).

All ~2,100 mutants take hours on 2 cores (a mutant of the engine runs every test that reaches it), so by
default a seeded, stratified sample of each module's mutants is run and the kill rate is reported with a
95% Wilson interval; `--sample 1` runs them all. Timeouts (a mutant that loops forever) count as killed,
as mutmut counts them.
    pip install -e '.[test,mutation]'
    python benchmarks/mutation.py [--sample 0.12] [--seed 0] [--children 2]
Survivors are listed at the end; `mutmut show NAME` prints one's diff.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILLED = {"killed", "timeout"}


def statuses() -> dict[str, str]:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            result[name] = status
    return result


def module_of(name: str) -> str:
    head = name.split("__mutmut_")[0]
    parts = head.split(".")
    return ".".join(p for p in parts if not p.startswith("x"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=0.12, help="fraction of each module's mutants to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--children", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    # generate the mutants and the test-coverage stats (running one mutant that does not exist)
    subprocess.run(["mutmut", "run", "--max-children", "1", "no-such-mutant"], cwd=REPO, capture_output=True, check=False)
    every = statuses()
    if not every:
        sys.exit("mutmut produced no mutants (is it installed? pip install -e '.[mutation]')")
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in sorted(every):
        by_module[module_of(name)].append(name)
    rng = random.Random(args.seed)
    picked = []
    for module in sorted(by_module):
        names = by_module[module]
        k = len(names) if args.sample >= 1 else max(1, round(len(names) * args.sample))
        picked += rng.sample(names, k)
    ran = subprocess.run(
        ["mutmut", "run", "--max-children", str(args.children), *picked], cwd=REPO, capture_output=True, text=True, check=False
    )
    done = statuses()
    if not any(done.get(n) in ("killed", "timeout", "survived") for n in picked):
        sys.exit("mutmut ran no mutant; its output ends:\n" + ran.stdout[-2000:].replace("\r", "\n") + ran.stderr[-2000:])
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for name in picked:
        rows[module_of(name)][done.get(name, "missing")] += 1
    print(f"mutmut over {len(every)} mutants; ran {len(picked)} ({args.sample:.0%} of each module, seed {args.seed})")
    print(f"{'module':<22}{'mutants':>8}{'ran':>6}{'killed':>8}{'timeout':>8}{'survived':>9}{'other':>7}{'kill rate':>11}")
    total: Counter[str] = Counter()
    for module in sorted(rows):
        c = rows[module]
        total += c
        ran = sum(c.values())
        other = ran - c["killed"] - c["timeout"] - c["survived"]
        decided = ran - other
        rate = (c["killed"] + c["timeout"]) / decided if decided else math.nan
        print(
            f"{module:<22}{len(by_module[module]):>8}{ran:>6}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}{other:>7}{rate:>11.1%}"
        )
    killed = total["killed"] + total["timeout"]
    decided = killed + total["survived"]
    lo, hi = wilson(killed, decided)
    print(
        f"kill rate {killed}/{decided} = {killed / decided:.1%} (95% interval {lo:.1%}-{hi:.1%}); {time.perf_counter() - start:.0f} s"
    )
    survivors = sorted(n for n in picked if done.get(n) == "survived")
    if survivors:
        print("survived:", " ".join(survivors))


if __name__ == "__main__":
    main()
