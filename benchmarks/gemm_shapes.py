"""GEMM efficiency by per-GPU shape in Vidur's kernel profiles, against the roofline's form with four fill laws.

Reads Vidur's `mlp.csv` profiles (github.com/microsoft/vidur, `data/profiling/compute/{a100,h100}/<model>/mlp.csv`,
MIT; not bundled: give the folder) and fits each GPU's four linear layers (QKV, output, up/gate, down projections,
their median times) GEMM by GEMM with the roofline's form, time = max(C/fill, M) + (1 - overlap) min(C/fill, M) + t0,
C = FLOPs / (peak x e), M = bytes / (bandwidth x b), under each fill law (1: none; wave quantization of 128 x 128
tiles over the SMs; the best of four tilings; a smooth law in the GEMM's FLOPs). Prints the fitted parameters and the
mean error of a layer's four GEMMs summed, by TP and row count: the TP spread at 128-512 rows is what no law removes.
    python benchmarks/gemm_shapes.py VIDUR/data/profiling/compute
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

PEAK = {"a100": 312e12, "h100": 989e12}  # dense BF16 (datasheets; the profiles' 80 GB SXM parts)
BW = {"a100": 2.039e12, "h100": 3.35e12}
SM = {"a100": 108, "h100": 132}
ROWS = [8, 16, 32, 64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048, 3072, 4096]


def gemms(root: Path) -> pd.DataFrame:
    rows = []
    for gpu in PEAK:
        for f in sorted((root / gpu).glob("*/*/mlp.csv")):
            d = pd.read_csv(f)
            for r in d.itertuples():
                tp, m, h = r.num_tensor_parallel_workers, r.num_tokens, r.n_embd
                if m not in ROWS:
                    continue
                hd = h // r.n_head
                q, kv, ff = (r.n_head // tp) * hd, max(1, r.n_kv_head // tp) * hd, r.n_expanded_embd // tp
                shapes = {
                    "attn_pre_proj": (h, q + 2 * kv),
                    "attn_post_proj": (q, h),
                    "mlp_up_proj": (h, ff * (2 if r.use_gated_mlp else 1)),
                    "mlp_down_proj": (ff, h),
                }
                for op, (k, n) in shapes.items():
                    t = getattr(r, f"_{list(d.columns).index(f'time_stats.{op}.median') + 1}") * 1e-3
                    rows.append({"gpu": gpu, "model": f.parent.name, "tp": tp, "M": m, "K": k, "N": n, "t": t})
    df = pd.DataFrame(rows)
    df["fl"] = 2.0 * df.M * df.K * df.N
    df["wb"] = 2.0 * (df.K * df.N + df.M * df.K + df.M * df.N)
    return df[df.model != "phi-2"]  # (a model of 2.7B: its GEMMs are all small)


def fill(d: pd.DataFrame, sms: int, law: str, c: np.ndarray) -> np.ndarray | float:
    if law == "none":
        return 1.0
    if law == "wave":
        t = np.ceil(d.M / 128) * np.ceil(d.N / 128)
        return np.asarray(t / (np.ceil(t / sms) * sms))
    if law == "tilings":
        best = np.zeros(len(d))
        for (tm, tn), e in zip(((128, 256), (128, 128), (64, 128), (64, 64)), (1.0, *c), strict=True):
            t = np.ceil(d.M / tm) * np.ceil(d.N / tn)
            best = np.maximum(best, e * t / (np.ceil(t / sms) * sms))
        return best
    w = d.fl / 1e9  # "flops": a GEMM's GFLOPs over themselves plus a fitted half-efficiency point
    return np.asarray(w / (w + c[0]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path, help="Vidur's data/profiling/compute folder")
    args = ap.parse_args()
    df = gemms(args.root)
    for gpu in PEAK:
        d = df[df.gpu == gpu]
        if d.empty:
            continue
        for law, nc in (("none", 0), ("wave", 0), ("tilings", 3), ("flops", 1)):

            def model(p: np.ndarray, d: pd.DataFrame = d, law: str = law, gpu: str = gpu) -> np.ndarray:
                e, b, o, t0 = p[:4]
                comp = d.fl / (PEAK[gpu] * e) / fill(d, SM[gpu], law, p[4:])
                mem = d.wb / (BW[gpu] * b)
                return np.asarray(np.maximum(comp, mem) + (1 - o) * np.minimum(comp, mem) + t0 * 1e-6)

            x0 = [0.75, 0.8, 0.7, 3.0] + ([0.8, 0.6, 0.4] if law == "tilings" else [1.0] * nc)
            hi = [1, 1, 1, 50] + [1.0 if law == "tilings" else 100.0] * nc
            fit = least_squares(lambda p, d=d, m=model: np.log(m(p) / d.t), x0, bounds=([0.3, 0.3, 0, 0] + [0] * nc, hi))
            g = d.assign(p=model(fit.x)).groupby(["model", "tp", "M"])
            err = (g.p.sum() / g.t.sum() - 1).rename("err").reset_index()
            print(
                f"{gpu} {law}: e, b, overlap, t0 (us), law's = {np.round(fit.x, 3).tolist()}; "
                f"a layer's GEMMs: mean |error| {err.err.abs().mean():.1%}"
            )
            sel = err[err.M.isin([64, 128, 256, 384, 512, 1024, 2048])]
            print((sel.groupby(["tp", "M"]).err.mean() * 100).round(1).unstack("M").to_string())


if __name__ == "__main__":
    main()
