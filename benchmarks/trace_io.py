"""Trace reading speed: rows per second to read and validate an Azure-format CSV, and peak memory.

Generates an N-row file on the fly (default 10 million rows, ~400 MB, in a temporary folder),
then reads it in a fresh process with `sim.workload.load_trace` and reports wall time, rows/s and
the process's peak resident memory; the same for the canonical Parquet written from it; and each read a window at a
time into a stored trace's files, as `fleetsim run --stored` reads it (`trace_windows` -> `stored_trace`).
    python benchmarks/trace_io.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

# The child's own peak (VmHWM, reset at exec): its ru_maxrss would count the parent's resident memory at the fork
PEAK = "def peak_mb(): return next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')) / 1024\n"
READ = (
    PEAK
    + """
import json, sys, time
from sim.workload import load_trace
start = time.perf_counter()
frame = load_trace(sys.argv[1])
wall = time.perf_counter() - start
print(json.dumps({"rows": len(frame), "wall_s": wall, "peak_rss_mb": peak_mb()}))
"""
)

WINDOWED = (
    PEAK
    + """
import json, sys, tempfile, time
from sim.run.store import stored_trace
from sim.workload.readers import trace_windows
start = time.perf_counter()
with tempfile.TemporaryDirectory(dir=sys.argv[2]) as folder:
    frame = stored_trace(trace_windows(sys.argv[1]), folder)
    rows = len(frame)
    del frame
wall = time.perf_counter() - start
print(json.dumps({"rows": rows, "wall_s": wall, "peak_rss_mb": peak_mb()}))
"""
)


def make_azure_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    gaps_ns = rng.exponential(1 / 5.53, rows) * 1e9  # the Azure conv trace's mean rate
    ns = np.datetime64("2023-11-16T18:15:46", "ns").astype(np.int64) + np.cumsum(gaps_ns).astype(np.int64)
    table = pa.table(
        {
            "TIMESTAMP": pa.array(ns, type=pa.int64()).cast(pa.timestamp("ns")).cast(pa.string()),
            "ContextTokens": rng.integers(2, 8000, rows),
            "GeneratedTokens": rng.integers(7, 700, rows),
        }
    )
    pcsv.write_csv(table, path, write_options=pcsv.WriteOptions(quoting_style="none"))


def read_in_fresh_process(path: Path, script: str = READ) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, str(path), str(path.parent)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "azure_like.csv"
        start = time.perf_counter()
        make_azure_csv(csv_path, args.rows)
        print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - start:.1f} s")
        csv = read_in_fresh_process(csv_path)
        print(
            f"azure CSV   : {csv['rows']:,.0f} rows in {csv['wall_s']:.2f} s = {csv['rows'] / csv['wall_s']:,.0f} rows/s, peak RSS {csv['peak_rss_mb']:,.0f} MB"
        )
        from sim.workload import load_trace
        from sim.workload.writer import write_trace

        parquet_path = write_trace(load_trace(csv_path), Path(tmp) / "canonical.parquet")
        pq = read_in_fresh_process(parquet_path)
        print(
            f"parquet     : {pq['rows']:,.0f} rows in {pq['wall_s']:.2f} s = {pq['rows'] / pq['wall_s']:,.0f} rows/s, peak RSS {pq['peak_rss_mb']:,.0f} MB"
        )
        print(f"parquet / CSV read speed: {csv['wall_s'] / pq['wall_s']:.1f}x")
        for name, path in (("azure CSV  ", csv_path), ("parquet    ", parquet_path)):
            w = read_in_fresh_process(path, WINDOWED)
            print(
                f"{name} in windows into a stored trace: {w['rows']:,.0f} rows in {w['wall_s']:.2f} s = "
                f"{w['rows'] / w['wall_s']:,.0f} rows/s, peak RSS {w['peak_rss_mb']:,.0f} MB"
            )


if __name__ == "__main__":
    main()
